"""Figures: nod differences and the summary of a combined spectrum.

Object-oriented matplotlib only (:class:`matplotlib.figure.Figure` with an Agg canvas):
no ``pyplot``, no global state, safe in batch loops and threads.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ._atomic import atomic_path
from .errors import OutputError

__all__ = ["plot_2d_differences", "summary_figure", "save_figure"]

log = logging.getLogger(__name__)


def _new_figure(figsize):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig


def plot_2d_differences(panels, clip_sigma=5, kws=None, figsize=(6, 2), title=None):
    """Figure of nod-difference images (one row per nod position).

    Parameters
    ----------
    panels : list of dict
        One per nod position with keys ``label`` (str), ``diff`` (``(ny, nx)``
        difference, uJy per pixel), ``err`` (``(ny, nx)`` its error), ``model``
        (``(ny, nx)`` or None) and ``traces`` (list of ``(row_per_column, positive)``).
    clip_sigma : float
        Colour scale +-``clip_sigma`` times the median error.
    kws : dict, optional
        Extra ``imshow`` keywords (override the defaults).
    figsize : (float, float)
        Size of one row of panels, inches.
    title : str, optional
        Figure title.

    Returns
    -------
    matplotlib.figure.Figure
    """
    with_model = any(p.get("model") is not None for p in panels)
    ncol = 3 if with_model else 1
    nrow = max(len(panels), 1)
    fig = _new_figure((figsize[0] * (1 + 0.6 * (ncol - 1)), figsize[1] * nrow))
    axes = fig.subplots(nrow, ncol, squeeze=False)
    for r, panel in enumerate(panels):
        err = panel["err"]
        scale = np.nanmedian(err[np.isfinite(err) & (err > 0)]) if np.isfinite(err).any() else 1.0
        vlim = clip_sigma * (scale if np.isfinite(scale) and scale > 0 else 1.0)
        opts = {
            "origin": "lower",
            "aspect": "auto",
            "cmap": "RdBu_r",
            "vmin": -vlim,
            "vmax": vlim,
            "interpolation": "nearest",
        }
        opts.update(kws or {})
        images = [("difference", panel["diff"])]
        if with_model and panel.get("model") is not None:
            images += [("model", panel["model"]), ("residual", panel["diff"] - panel["model"])]
        for c, (name, img) in enumerate(images):
            ax = axes[r, c]
            ax.imshow(img, **opts)
            x = np.arange(img.shape[1])
            for row, positive in panel.get("traces", []):
                ax.plot(x, row, color="red" if positive else "wheat", lw=0.8, alpha=0.8)
            ax.set_ylim(-0.5, img.shape[0] - 0.5)
            ax.tick_params(labelsize=7, labelleft=c == 0, labelbottom=r == nrow - 1)
            if c == 0:
                ax.set_ylabel(panel["label"], fontsize=8)
            if r == 0:
                ax.set_title(name, fontsize=8)
    for ax in axes[-1]:
        ax.set_xlabel("x (pixel)", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    # Fixed margins: tight_layout would draw the figure once more just to measure it.
    fig.subplots_adjust(
        left=0.07, right=0.99, bottom=0.3 / nrow, top=1 - 0.25 / nrow, wspace=0.04, hspace=0.08
    )
    return fig


def summary_figure(spec, sci2d, wave, y, prof1d=None, title=None, figsize=(9, 5.5)):
    """Rectified 2D spectrum above the 1D spectrum (f_nu), with the collapsed profile.

    Parameters
    ----------
    spec : astropy.table.Table
        The ``SPEC1D`` table (``wave`` um, ``flux``, ``err`` uJy, ``valid``; optionally
        ``flux_boxcar``).
    sci2d : numpy.ndarray
        ``(ny, nwave)`` rectified data, uJy per pixel.
    wave, y : numpy.ndarray
        Wavelength (um) and cross-dispersion (pixels) grids of ``sci2d``.
    prof1d : dict, optional
        ``{'pix', 'profile', 'pfit'}`` collapsed data and model profiles.
    title : str, optional
        Title.
    figsize : (float, float)
        Inches.

    Returns
    -------
    matplotlib.figure.Figure
    """
    fig = _new_figure(figsize)
    gs = fig.add_gridspec(2, 2, height_ratios=[1, 1.6], width_ratios=[6, 1], hspace=0.05)
    ax2 = fig.add_subplot(gs[0, 0])
    ax1 = fig.add_subplot(gs[1, 0], sharex=ax2)
    axp = fig.add_subplot(gs[0, 1], sharey=ax2)
    wave = np.asarray(wave, float)
    valid = np.asarray(spec["valid"], bool)
    flux = np.asarray(getattr(spec["flux"], "value", spec["flux"]), float)
    err = np.asarray(getattr(spec["err"], "value", spec["err"]), float)

    wedges = np.concatenate(
        [
            [wave[0] - 0.5 * (wave[1] - wave[0])],
            0.5 * (wave[1:] + wave[:-1]),
            [wave[-1] + 0.5 * (wave[-1] - wave[-2])],
        ]
    )
    dy = y[1] - y[0] if len(y) > 1 else 1.0
    yedges = np.concatenate([y - 0.5 * dy, [y[-1] + 0.5 * dy]])
    finite = sci2d[np.isfinite(sci2d)]
    if finite.size:
        lo, hi = np.percentile(finite, [5, 99.5])
        vlim = max(abs(lo), abs(hi))
    else:
        vlim = 1.0
    ax2.pcolormesh(wedges, yedges, sci2d, cmap="RdBu_r", vmin=-vlim, vmax=vlim, shading="flat")
    ax2.set_ylabel("y (pixel)")
    ax2.tick_params(labelbottom=False)

    fv = np.where(valid, flux, np.nan)
    ev = np.where(valid, err, np.nan)
    ax1.fill_between(wave, fv - ev, fv + ev, step="mid", color="0.7", lw=0, label="1 sigma")
    ax1.step(wave, fv, where="mid", color="k", lw=0.8, label="optimal")
    if "flux_boxcar" in spec.colnames:
        fb = np.asarray(getattr(spec["flux_boxcar"], "value", spec["flux_boxcar"]), float)
        ax1.step(wave, fb, where="mid", color="tab:orange", lw=0.6, alpha=0.6, label="boxcar")
    ax1.axhline(0, color="0.5", lw=0.5)
    if np.isfinite(fv).any():
        top = np.nanpercentile(fv + ev, 99.5)
        ax1.set_ylim(min(-0.1 * top, np.nanpercentile(fv - ev, 0.5)), 1.15 * top)
    ax1.set_xlabel("wavelength (um)")
    ax1.set_ylabel("f_nu (uJy)")
    ax1.legend(fontsize=7, loc="upper right")
    ax1.set_xlim(wedges[0], wedges[-1])

    if prof1d is not None:
        axp.step(prof1d["profile"], prof1d["pix"], where="mid", color="k", lw=0.8, label="data")
        axp.plot(prof1d["pfit"], prof1d["pix"], color="tab:red", lw=0.8, label="model")
        axp.axvline(0, color="0.5", lw=0.5)
        axp.legend(fontsize=6, loc="lower right")
    axp.tick_params(labelleft=False, labelsize=7)
    axp.set_xlabel("profile", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


def save_figure(fig, path, dpi=100):
    """Write a figure as PNG atomically (temporary file in the same folder, then rename).

    Parameters
    ----------
    fig : matplotlib.figure.Figure
        The figure.
    path : str or path-like
        Output ``.png`` path.
    dpi : int
        Resolution.

    Returns
    -------
    pathlib.Path
        The written path.

    Raises
    ------
    OutputError
        If the file cannot be written.
    """
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            # Light zlib compression: several times faster, files ~20% larger.
            fig.savefig(tmp, format="png", dpi=dpi, pil_kwargs={"compress_level": 2})
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc}") from exc
    return path
