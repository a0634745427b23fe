"""Pure array functions: no :class:`~slitcombine.SlitGroup`, no files.

Layer 1 of the package.  Modules here import only numpy/scipy/astropy, the top-level
:mod:`slitcombine.errors` and :mod:`slitcombine.instrument`, and each other.  Every
function takes arrays (fluxes in uJy, wavelengths in um, positions in detector pixels
unless its docstring says otherwise) and returns new ones.
"""

__all__: list[str] = []  # the modules of this layer are imported by their full names
