"""Diagnostic figures of single steps: the profile outliers, the shutter-offset chi2 and
the sky fit (the figures of ``make_plot=True``).

Object-oriented matplotlib (a :class:`matplotlib.figure.Figure` on an Agg canvas, no
``pyplot`` state): the figure belongs to the caller, nothing is left open in pyplot.
Their layout is matplotlib's own (``tight_layout``, at the ``figure.dpi`` of the
matplotlib settings): they are drawn on request, not in batch runs.
"""

from __future__ import annotations

import numpy as np

__all__ = ["profile_residual_figure", "shutter_offset_figure", "sky_fit_figure"]


def _figure(figsize):
    """A figure of ``figsize`` inches on an Agg canvas, at the default resolution."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig


def profile_residual_figure(yslit, zp, flags):
    """Residual S/N of the profile fit against the distance from the trace.

    Parameters
    ----------
    yslit : numpy.ndarray
        Distance of each pixel from the trace, pixels.
    zp : numpy.ndarray
        Residual of each pixel from the profile model in units of its error (same shape,
        NaN where undefined).
    flags : numpy.ndarray
        Boolean, the pixels flagged as outliers (drawn in red, the others grey).

    Returns
    -------
    matplotlib.figure.Figure
        One axes.
    """
    fig = _figure((6, 3))
    ax = fig.subplots()
    ok = np.isfinite(zp)
    ax.scatter(yslit[ok & ~flags], zp[ok & ~flags], s=1, color="0.5")
    ax.scatter(yslit[ok & flags], zp[ok & flags], s=4, color="r")
    ax.set_xlabel("yslit (pixels)")
    ax.set_ylabel("profile residual S/N")
    fig.tight_layout()
    return fig


def shutter_offset_figure(offsets, chi2, best):
    """The chi2 of the shutter-offset fit against the offset, the fitted offset marked.

    Parameters
    ----------
    offsets : numpy.ndarray
        Trial offsets, pixels.
    chi2 : sequence of float
        The chi2 at each offset.
    best : float
        The fitted offset, pixels (a vertical red line).

    Returns
    -------
    matplotlib.figure.Figure
        One axes.
    """
    fig = _figure((5, 3))
    ax = fig.subplots()
    ax.plot(offsets, chi2)
    ax.axvline(best, color="tab:red")
    ax.set_xlabel("shutter offset (pixels)")
    ax.set_ylabel("chi2")
    fig.tight_layout()
    return fig


def sky_fit_figure(wave, sci, sky2d, used, sky_wave, sky_model, title=""):
    """The pixels of a sky fit with the 1D sky model above, their residuals below.

    Parameters
    ----------
    wave, sci, sky2d : numpy.ndarray
        ``(N, npix)`` wavelength (um), data and sky model (uJy per pixel).
    used : numpy.ndarray
        ``(N, npix)`` boolean, the pixels of the fit.
    sky_wave, sky_model : numpy.ndarray
        The 1D model: wavelength (um) and sky (uJy per pixel).
    title : str
        Figure title.

    Returns
    -------
    matplotlib.figure.Figure
        Two axes sharing the wavelength axis (the data and model; the residuals).
    """
    fig = _figure((8, 5))
    axes = fig.subplots(2, 1, sharex=True, height_ratios=[2, 1])
    axes[0].scatter(wave[used], sci[used], s=1, alpha=0.3, color="0.5", label="sky pixels")
    axes[0].plot(sky_wave, sky_model, color="tab:red", label="sky model")
    axes[0].set_ylabel("uJy / pixel")
    axes[0].legend(loc="upper left")
    axes[1].scatter(wave[used], (sci - sky2d)[used], s=1, alpha=0.3, color="0.3")
    axes[1].axhline(0, color="tab:red")
    axes[1].set_xlabel("wavelength (um)")
    axes[1].set_ylabel("residual")
    fig.suptitle(title)
    fig.tight_layout()
    return fig
