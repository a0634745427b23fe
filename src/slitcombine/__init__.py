"""slitcombine: combine JWST NIRSpec MSA and fixed-slit 2D spectra.

The main entry point is :class:`SlitGroup`, the container of the exposures of one
source, with the public API of ``msaexp.slit_combine.SlitGroup``.
"""

import logging

from ._version import __version__

# combine(): the high-level entry point (files -> 2D + 1D spectrum).  The function
# shadows the module attribute; ``from slitcombine.combine import ...`` still works.
from .combine import CombineResult, combine
from .errors import (
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
from .reading import SlitExposure, read_slit
from .slitgroup import SlitGroup

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
