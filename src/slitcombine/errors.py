"""Exceptions raised by slitcombine.

Every error the package raises on purpose derives from :class:`SlitCombineError`, so
that a batch driver can tell a bad input (recorded, batch continues) from a bug
(anything else).
"""

from __future__ import annotations

__all__ = [
    "SlitCombineError",
    "InputFileError",
    "MissingExtensionError",
    "NotASlitError",
    "IncompatibleExposuresError",
    "ConfigurationError",
    "CalibrationFileError",
    "FitError",
    "OutputError",
]


class SlitCombineError(Exception):
    """Base class of every error raised on purpose by slitcombine."""


class InputFileError(SlitCombineError):
    """An input file is missing, unreadable, truncated or not FITS.

    Parameters
    ----------
    path : str
        The offending file.
    problem : str
        What is wrong with it, in words.
    """

    def __init__(self, path, problem):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class MissingExtensionError(InputFileError):
    """A required FITS extension (SCI, DQ, ASDF/WCS ...) is absent from a slit file."""

    def __init__(self, path, extension):
        self.extension = extension
        super().__init__(path, f"required extension {extension!r} is missing")


class NotASlitError(InputFileError):
    """The file is FITS but not a 2D NIRSpec slit product (an image, an x1d, an s2d ...)."""


class IncompatibleExposuresError(SlitCombineError):
    """The exposures of a group cannot be combined (different sources, gratings, duplicates)."""


class ConfigurationError(SlitCombineError, ValueError):
    """An option has an impossible value."""


class CalibrationFileError(SlitCombineError):
    """A calibration or sky table is missing, malformed, or for another configuration."""


class FitError(SlitCombineError):
    """A fit cannot be done (no valid pixels, no signal, inconsistent bounds)."""


class OutputError(SlitCombineError):
    """An output cannot be written (directory not writable, disk full ...)."""
