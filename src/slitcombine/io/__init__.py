"""Files in and out: exposures, calibration tables, products and their provenance.

Layer 2 of the package: imports :mod:`slitcombine.core` and the top-level modules, never
the group or pipeline layers.
"""

__all__: list[str] = []  # the modules of this layer are imported by their full names
