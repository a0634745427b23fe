"""The simulator of NIRSpec slit exposures and the built-in demo.

Layer 5 of the package: writes files the way the JWST pipeline does (from how the
instrument forms the image, not from the extraction's model) and runs the pipeline on
them.
"""

__all__: list[str] = []  # the modules of this layer are imported by their full names
