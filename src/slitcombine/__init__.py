"""slitcombine: combine JWST NIRSpec MSA and fixed-slit 2D spectra.

The main entry point is :class:`SlitGroup`, the container of the exposures of one
source, with the public API of ``msaexp.slit_combine.SlitGroup``.
"""

import logging

from slitcombine._version import __version__
from slitcombine.errors import (
    CalibrationFileError,
    ConfigurationError,
    FitError,
    IncompatibleExposuresError,
    InputFileError,
    MissingExtensionError,
    NotASlitError,
    OutputError,
    SlitCombineError,
)
from slitcombine.group.slitgroup import SlitGroup
from slitcombine.io.reading import SlitExposure, read_slit

# combine(): the high-level entry point (files -> 2D + 1D spectrum).  The function
# shadows the module attribute; ``from slitcombine.pipeline.combine import ...`` still works.
from slitcombine.pipeline.combine import CombineResult, combine

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "__version__",
    "SlitGroup",
    "combine",
    "CombineResult",
    "SlitExposure",
    "read_slit",
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
