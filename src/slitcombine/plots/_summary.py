"""The summary figure of a combined spectrum (:func:`summary_figure`)."""

from __future__ import annotations

import numpy as np

from slitcombine.plots._axes import (
    _add_axes,
    _add_ticks,
    _axis_label,
    _colour_bar,
    _legend,
    _minus,
    _new_figure,
    _Panel,
    _ticks,
    _title,
)

__all__ = ["summary_figure"]


def _step_band(x, lo, hi):
    """Polygons of a band between ``lo`` and ``hi`` drawn as steps centred on ``x``
    (``fill_between(..., step='mid')``), one per run of finite values.

    Returns
    -------
    list of numpy.ndarray
        ``(2 m, 2)`` vertices of each polygon (upper edge left to right, then the lower
        edge back).
    """
    x, lo, hi = (np.asarray(a, float) for a in (x, lo, hi))
    ok = np.isfinite(x) & np.isfinite(lo) & np.isfinite(hi)
    if x.size < 2 or not ok.any():
        return []
    edges = np.concatenate([[x[0] - 0.5 * (x[1] - x[0])], 0.5 * (x[1:] + x[:-1])])
    edges = np.append(edges, x[-1] + 0.5 * (x[-1] - x[-2]))
    polys = []
    flags = np.concatenate([[False], ok, [False]])
    starts = np.flatnonzero(flags[1:] & ~flags[:-1])
    stops = np.flatnonzero(~flags[1:] & flags[:-1])
    for i, j in zip(starts, stops, strict=True):
        xs = np.repeat(edges[i : j + 1], 2)[1:-1]  # each bin's left and right edges
        up, down = np.repeat(hi[i:j], 2), np.repeat(lo[i:j], 2)
        polys.append(
            np.column_stack([np.concatenate([xs, xs[::-1]]), np.concatenate([up, down[::-1]])])
        )
    return polys


def _mid_edges(centres, lo, hi):
    """Pixel edges half-way between ``centres``, the outer ones at ``lo`` and ``hi``."""
    centres = np.asarray(centres, float)
    return np.concatenate([[lo], 0.5 * (centres[1:] + centres[:-1]), [hi]])


def summary_figure(spec, sci2d, wave, y, prof1d=None, title=None, figsize=(9, 5.5), truth=None):
    """Rectified 2D spectrum above the 1D spectrum (f_nu), with the collapsed profile.

    The 2D image has a colour bar in uJy per pixel on an arcsinh stretch (linear within
    the noise, compressed above: the noisy red end and the lines both readable).  The
    1D panel shows the optimal and boxcar spectra, the +-1 sigma band, and the truth if
    given, with a legend of line samples; when emission lines rise far above the
    continuum the main scale follows the continuum and an inset shows the full range
    (no peak is clipped unseen).

    Parameters
    ----------
    spec : astropy.table.Table
        The ``SPEC1D`` table (``wave`` um, ``flux``, ``err`` uJy, ``valid``; optionally
        ``flux_boxcar`` uJy).
    sci2d : numpy.ndarray
        ``(ny, nwave)`` rectified data, uJy per pixel.
    wave, y : numpy.ndarray
        Wavelength (um) and cross-dispersion (pixels) grids of ``sci2d``.
    prof1d : dict, optional
        ``{'pix', 'profile', 'pfit'}``: rows (pixels) and the collapsed data and
        model profiles (fraction of the flux per row).
    title : str, optional
        Title.
    figsize : (float, float)
        Inches.
    truth : (numpy.ndarray, numpy.ndarray), optional
        ``(wave, flux)``: a known spectrum (um, uJy) to overplot (simulations).

    Returns
    -------
    matplotlib.figure.Figure
        The axes of the 1D spectrum (its legend: artists with ``gid='legend'``), the 2D
        spectrum (a :class:`~slitcombine._pixel_image.PixelImage`), the profile and the
        colour bar (title ``'uJy/px'``), and the inset when there is one.
    """
    wave = np.asarray(wave, float)
    y = np.asarray(y, float)
    dw0 = wave[1] - wave[0] if wave.size > 1 else 0.01
    dw1 = wave[-1] - wave[-2] if wave.size > 1 else 0.01
    xlim = (wave[0] - 0.5 * dw0, wave[-1] + 0.5 * dw1)
    dy = y[1] - y[0] if len(y) > 1 else 1.0
    ylim2 = (y[0] - 0.5 * dy, y[-1] + 0.5 * dy)

    fig = _new_figure(figsize)
    ax1, ax2, axp, bar_rect = _summary_axes(fig, figsize)
    xticks = _ticks(*xlim, 6)
    yticks2 = _ticks(*ylim2, 4, integer=True)
    sci2d = np.asarray(sci2d, float)
    stretch = _stretch(sci2d)
    _draw_2d(ax2, sci2d, stretch[0], (wave, y), (xlim, ylim2), (xticks, yticks2))
    _colour_bar_2d(fig, bar_rect, *stretch)
    _draw_spectrum(ax1, spec, wave, xlim, xticks, truth)
    _draw_profile(axp, prof1d, ylim2, yticks2)
    if title:
        fig.text(0.5, 1 - 0.08 / figsize[1], title, ha="center", va="top", fontsize=10)
    return fig


def _summary_axes(fig, figsize):
    """The 1D, 2D and profile axes at their fixed rectangles, and the colour bar's.

    Returns
    -------
    (Axes, Axes, Axes, (float, float, float, float))
        The spectrum, the 2D image and the profile axes, and the rectangle of the
        colour bar (inches).
    """
    width, height = figsize
    left, bottom, top, gap, pgap, right = 0.85, 0.55, 0.45, 0.08, 0.2, 0.15
    pw = 0.13 * width
    bar_room = 0.65  # the colour bar and its labels
    mw = width - left - pgap - pw - right - bar_room
    h = height - bottom - top - gap
    h1, h2 = h * 1.6 / 2.6, h / 2.6
    ax1 = _add_axes(fig, left, bottom, mw, h1)
    ax2 = _add_axes(fig, left, bottom + h1 + gap, mw, h2)
    axp = _add_axes(fig, left + mw + pgap + bar_room, bottom + h1 + gap, pw, h2)
    return ax1, ax2, axp, (left + mw + 0.08, bottom + h1 + gap, 0.1, h2)


def _stretch(sci2d):
    """The arcsinh stretch of the 2D image: linear within twice the noise (robust
    sigma, uJy per pixel), limits at the 99.9th percentile of ``|sci2d|``.

    Returns
    -------
    (matplotlib.colors.AsinhNorm, float, float)
        The norm, the noise and the limit, uJy per pixel.
    """
    from matplotlib.colors import AsinhNorm

    finite = sci2d[np.isfinite(sci2d)]
    if finite.size:
        noise = 1.4826 * float(np.median(np.abs(finite - np.median(finite)))) or 1.0
        vlim = float(np.percentile(np.abs(finite), 99.9)) or 1.0
    else:
        noise, vlim = 1.0, 1.0
    return AsinhNorm(linear_width=2.0 * noise, vmin=-vlim, vmax=vlim), noise, vlim


def _draw_2d(ax2, sci2d, norm, grids, limits, ticks):
    """The rectified 2D spectrum, its ticks and y label.

    Nearest pixels on the (non-uniform) wavelength grid, coloured here and blitted: the
    picture of a flat pcolormesh with mid-point edges, much faster to draw.
    """
    import matplotlib

    from slitcombine._pixel_image import PixelImage

    (wave, y), (xlim, ylim2), (xticks, yticks2) = grids, limits, ticks
    cmap = matplotlib.colormaps["RdBu_r"]
    ax2.set_xlim(*xlim)
    ax2.set_ylim(*ylim2)
    rgba = cmap(norm(np.ma.masked_invalid(sci2d)), bytes=True)
    ax2.add_artist(
        PixelImage(ax2, rgba, x_edges=_mid_edges(wave, *xlim), y_edges=_mid_edges(y, *ylim2))
    )
    _add_ticks(ax2, "bottom", xticks, [])
    room = _add_ticks(ax2, "left", yticks2, fontsize=9)
    _axis_label(ax2, "left", "y (pixel)", room, fontsize=10)


def _colour_bar_2d(fig, rect, norm, noise, vlim):
    """The colour bar of the 2D image: the ramp is uniform in the stretched scale, the
    ticks where the values fall (0, +-3 noise, +-the limit)."""
    import matplotlib

    cmap = matplotlib.colormaps["RdBu_r"]
    ticks = sorted({0.0, *(round(float(v), 3) for v in (vlim, -vlim, 3 * noise, -3 * noise))})
    ticks = [t for t in ticks if -vlim <= t <= vlim]
    bar, _ = _colour_bar(
        fig,
        rect,
        cmap(np.linspace(0.0, 1.0, 256), bytes=True),
        [float(norm(t)) for t in ticks],
        [_minus(f"{t:.2g}") for t in ticks],
        fontsize=8,
    )
    _title(bar, "uJy/px", fontsize=8, pad=2)


def _column(spec, name):
    """Column ``name`` of ``spec`` as a float array (a Quantity's value)."""
    return np.asarray(getattr(spec[name], "value", spec[name]), float)


def _draw_1d(ax, wave, curves, xlim, lw=0.8):
    """The +-1 sigma band, the boxcar, optimal and true spectra and the zero line.

    ``curves``: ``flux``, ``err`` (NaN where not valid), ``boxcar`` (or None) and
    ``truth`` (``(wave, flux)`` or None), uJy.
    """
    from matplotlib.collections import PolyCollection
    from matplotlib.lines import Line2D

    fv, ev, fb, truth = curves["flux"], curves["err"], curves["boxcar"], curves["truth"]
    band = PolyCollection(
        _step_band(wave, fv - ev, fv + ev), facecolors="tab:blue", alpha=0.3, lw=0
    )
    ax.add_artist(band)
    if fb is not None:
        ax.add_artist(
            Line2D(wave, fb, drawstyle="steps-mid", color="tab:orange", lw=0.6 * lw, alpha=0.7)
        )
    ax.add_artist(Line2D(wave, fv, drawstyle="steps-mid", color="k", lw=lw))
    if truth is not None:
        ax.add_artist(Line2D(*truth, color="tab:red", lw=lw))
    ax.add_artist(Line2D(xlim, (0.0, 0.0), color="0.5", lw=0.5))
    return band


def _spectrum_limits(fv, ev):
    """y limits of the spectrum (the whole range unless a few bins, lines, rise far
    above the continuum) and the top of the full range (NaN without data), uJy."""
    ylim1 = (-1.0, 1.0)
    full_top = np.nan
    if np.isfinite(fv).any():
        top1 = float(np.nanpercentile(fv + ev, 95))
        full_top = float(np.nanmax(fv + ev))
        low1 = float(min(-0.1 * top1, np.nanpercentile(fv - ev, 0.5)))
        if np.isfinite(top1) and top1 > 0 and np.isfinite(low1):
            top = full_top if full_top < 2.0 * top1 else 1.5 * top1
            ylim1 = (low1, 1.15 * top)
    return ylim1, full_top


def _draw_spectrum(ax1, spec, wave, xlim, xticks, truth):
    """The 1D spectrum: curves, ticks, labels, legend, and the inset of the full range
    when peaks rise above the scale."""
    valid = np.asarray(spec["valid"], bool)
    fv = np.where(valid, _column(spec, "flux"), np.nan)
    ev = np.where(valid, _column(spec, "err"), np.nan)
    fb = _column(spec, "flux_boxcar") if "flux_boxcar" in spec.colnames else None
    curves = {"flux": fv, "err": ev, "boxcar": fb, "truth": truth}
    ax1.set_xlim(*xlim)
    _draw_1d(ax1, wave, curves, xlim)
    entries = [("optimal", {"color": "k", "lw": 0.8})]
    if fb is not None:
        entries.append(("boxcar", {"color": "tab:orange", "lw": 0.6, "alpha": 0.7}))
    entries.append(("\u00b11 sigma", {"color": "tab:blue", "alpha": 0.3, "band": True}))
    if truth is not None:
        entries.append(("truth", {"color": "tab:red", "lw": 0.8}))
    ylim1, full_top = _spectrum_limits(fv, ev)
    ax1.set_ylim(*ylim1)
    room = _add_ticks(ax1, "bottom", xticks, fontsize=9)
    _axis_label(ax1, "bottom", "wavelength (um)", room, fontsize=10)
    room = _add_ticks(ax1, "left", _ticks(*ylim1, 5), fontsize=9)
    _axis_label(ax1, "left", "f_nu (uJy)", room, fontsize=10)
    _legend(ax1, entries, fontsize=8)
    if np.isfinite(full_top) and full_top > ylim1[1]:
        # peaks above the scale: the full range in an inset (a panel of ax1)
        inset = _Panel(
            ax1,
            (0.06, 0.5, 0.28, 0.44),
            xlim,
            (ylim1[0], 1.05 * full_top),
            zorder=4.0,
            facecolor="w",
            gid="inset",
        )
        _draw_1d(inset, wave, curves, xlim, lw=0.5)
        _add_ticks(inset, "left", _ticks(0, full_top, 2), fontsize=7)
        _title(inset, "full range", fontsize=7, pad=2)


def _draw_profile(axp, prof1d, ylim2, yticks2):
    """The collapsed data and model profiles (rows vertical, as the 2D image)."""
    from matplotlib.lines import Line2D

    if prof1d is not None:
        pix = np.asarray(prof1d["pix"], float)
        pdata = np.asarray(prof1d["profile"], float)
        pfit = np.asarray(prof1d["pfit"], float)
        axp.add_artist(Line2D(pdata, pix, drawstyle="steps-mid", color="k", lw=0.8))
        axp.add_artist(Line2D(pfit, pix, color="tab:red", lw=0.8))
        both = np.concatenate([pdata, pfit, [0.0]])
        both = both[np.isfinite(both)]
        pad = 0.05 * (both.max() - both.min()) or 0.05
        axp.set_xlim(both.min() - pad, both.max() + pad)
        axp.add_artist(Line2D((0.0, 0.0), ylim2, color="0.5", lw=0.5))
        pticks = _ticks(both.min(), both.max(), 2)
        for i, (text, colour) in enumerate((("data", "k"), ("model", "tab:red"))):
            axp.text(
                0.97,
                0.03 + 0.1 * (1 - i),
                text,
                color=colour,
                fontsize=8,
                ha="right",
                va="bottom",
                transform=axp.transAxes,
            )
    else:
        pticks = []
    axp.set_ylim(*ylim2)
    room = _add_ticks(axp, "bottom", pticks, fontsize=8)
    _add_ticks(axp, "left", yticks2, [])
    _axis_label(axp, "bottom", "profile", room, fontsize=9)
