"""Version of the slitcombine package."""

__version__ = "0.1.0"
