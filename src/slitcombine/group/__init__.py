"""The stateful facade: :class:`~slitcombine.SlitGroup`, msaexp-compatible.

Layer 3 of the package: holds the exposures of one source and their state, and calls
:mod:`slitcombine.core` for every computation and :mod:`slitcombine.io` for files.
"""

__all__: list[str] = []  # the modules of this layer are imported by their full names
