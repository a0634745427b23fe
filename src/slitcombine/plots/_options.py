"""The figure options: resolution, PNG compression, which figures (``batch.figures``)."""

from __future__ import annotations

import numbers

from slitcombine.errors import ConfigurationError

__all__ = [
    "DEFAULT_DPI",
    "PNG_COMPRESS_LEVEL",
    "FIGURE_CHOICES",
    "DPI_RANGE",
    "check_figure_options",
]


#: Resolution of the PNG figures, dots per inch (documented in :mod:`slitcombine.plots`).
DEFAULT_DPI = 80

#: zlib level of the PNG files (documented in :mod:`slitcombine.plots`).
PNG_COMPRESS_LEVEL = 1

#: Values of the ``figures`` option (documented in :mod:`slitcombine.plots`).
FIGURE_CHOICES = ("all", "summary", "none")

#: Accepted resolutions, dots per inch.
DPI_RANGE = (10, 600)


def check_figure_options(figures=True, dpi=None, names=("figures", "figure_dpi")):
    """The ``figures`` and ``figure_dpi`` options, checked and normalised.

    Parameters
    ----------
    figures : bool or str
        ``'all'``, ``'summary'`` or ``'none'`` (:data:`FIGURE_CHOICES`, any case); True
        means ``'all'``, False and None ``'none'``.
    dpi : float, optional
        Resolution, dots per inch, within :data:`DPI_RANGE`; None for
        :data:`DEFAULT_DPI`.
    names : (str, str)
        How the error messages name the two options (``batch.figures``,
        ``--figure-dpi`` ...).

    Returns
    -------
    (str, int or float)
        The choice and the resolution.

    Raises
    ------
    slitcombine.errors.ConfigurationError
        A value that is not one of these.
    """
    if figures is True:
        figures = "all"
    elif figures is False or figures is None:
        figures = "none"
    elif isinstance(figures, str) and figures.strip().lower() in FIGURE_CHOICES:
        figures = figures.strip().lower()
    else:
        raise ConfigurationError(
            f"{names[0]} must be one of {', '.join(FIGURE_CHOICES)} (or true/false), "
            f"got {figures!r}"
        )
    if dpi is None:
        dpi = DEFAULT_DPI
    lo, hi = DPI_RANGE
    if isinstance(dpi, bool) or not isinstance(dpi, numbers.Real) or not lo <= dpi <= hi:
        raise ConfigurationError(
            f"{names[1]} must be a number of dots per inch from {lo} to {hi}, got {dpi!r}"
        )
    dpi = float(dpi)
    return figures, int(dpi) if dpi.is_integer() else dpi
