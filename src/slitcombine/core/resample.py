"""Wavelength grids and the rectified 2D resampling ("pseudo-drizzle") of a pixel table.

Pure functions, no state.  Inputs are the columns of the pixel table built by
:meth:`slitcombine.SlitGroup.get_flat_diff_arrays`: one row per valid (differenced)
pixel with its wavelength (um), trace-centred cross-dispersion offset ``yslit``
(pixels), value (uJy per pixel), variance (uJy^2) and weight.

Resampling model
----------------
Each input pixel is a *point* in wavelength (no splitting between wavelength bins, so
no correlated noise along the spectrum) and a *segment* of width ``pixfrac`` input
pixels in ``yslit``, sampled by ``oversample`` equally spaced points.  The fraction
``f`` of the segment that falls in each output row is counted exactly, then every
output pixel ``o`` is the weighted mean

``sci_o = sum(w f d) / sum(w f)`` and ``var_o = sum((w f)**2 v) / sum(w f)**2``

over the input pixels that overlap it (weights ``w`` from ``weight_type``).  This is
the exact variance of that weighted mean for independent inputs; the fractions are
summed *before* squaring, which msaexp's ``pseudo_drizzle`` does not do (it sums
``v w**2 / n`` over the sub-samples, over-estimating the variance where a pixel is
split between rows).  Adjacent output rows that share an input pixel are correlated;
that covariance is not stored.  Every sum is one ``np.bincount`` per quantity.
"""

from __future__ import annotations

import logging

import numpy as np

from slitcombine.errors import ConfigurationError, SlitCombineError

__all__ = [
    "DEFAULT_WAVE_SAMPLE",
    "DEFAULT_NY",
    "DEFAULT_OVERSAMPLE",
    "DEFAULT_PIXFRAC",
    "native_dispersion",
    "wavelength_grid",
    "bin_edges",
    "bin_index",
    "cross_dispersion_grid",
    "pseudo_drizzle",
]

log = logging.getLogger(__name__)

#: Output wavelength sampling relative to the native one (>1 = finer), as msaexp.
DEFAULT_WAVE_SAMPLE = 1.0
#: Half-size of the cross-dispersion grid: ``2 * ny + 1`` rows centred on the trace.
DEFAULT_NY = 13
#: Sub-samples of each input pixel in the cross-dispersion direction.
DEFAULT_OVERSAMPLE = 16
#: Width of an input pixel's footprint in y, in input pixels.
DEFAULT_PIXFRAC = 0.8


def native_dispersion(wave, mask=None):
    """The native wavelength of each detector column, from the data's own wavelengths.

    Parameters
    ----------
    wave : numpy.ndarray
        ``(ny, nx)`` or ``(N, ny, nx)`` wavelengths, um (NaN where undefined).
    mask : numpy.ndarray, optional
        Boolean, same shape, True where the pixel may be used.

    Returns
    -------
    x : numpy.ndarray
        Column indices (pixels) with a defined wavelength.
    lam : numpy.ndarray
        Median wavelength of each of these columns, um, strictly increasing (the
        columns are reordered if the dispersion runs the other way).

    Raises
    ------
    SlitCombineError
        If fewer than two columns have a wavelength.
    """
    w = np.asarray(wave, dtype=float)
    if w.ndim == 2:
        w = w[None]
    if mask is not None:
        w = np.where(np.asarray(mask, bool).reshape(w.shape), w, np.nan)
    nx = w.shape[-1]
    cols = np.moveaxis(w, -1, 0).reshape(nx, -1)
    ok = np.isfinite(cols).any(axis=1)
    if ok.sum() < 2:
        raise SlitCombineError("fewer than two detector columns have a defined wavelength")
    lam = np.full(nx, np.nan)
    with np.errstate(all="ignore"):
        lam[ok] = np.nanmedian(cols[ok], axis=1)
    # np.unique below sorts by wavelength and drops repeated values.
    x = np.flatnonzero(ok).astype(float)
    lam, first = np.unique(lam[ok], return_index=True)
    return x[first], lam


def wavelength_grid(wave, mask=None, wave_sample=DEFAULT_WAVE_SAMPLE, wave_range=None):
    """Output wavelength grid at the data's native sampling divided by ``wave_sample``.

    The native sampling is the wavelength step between detector columns along the
    trace (:func:`native_dispersion`); the grid has ``wave_sample`` points per native
    pixel (the default 1: one bin per column, so every bin holds pixels and neighbouring
    bins share none; msaexp's 1.05 makes bins 5% narrower than a column, whose pixels
    are then shared between bins, :func:`slitcombine.core.extract.bin_footprints`), so it
    follows the strongly non-linear PRISM dispersion.

    Parameters
    ----------
    wave : numpy.ndarray
        ``(ny, nx)`` or ``(N, ny, nx)`` wavelengths, um.
    mask : numpy.ndarray, optional
        Valid pixels (same shape as ``wave``).
    wave_sample : float
        Points per native pixel (> 0).
    wave_range : (float, float), optional
        Limits of the grid, um (clipped to the data).

    Returns
    -------
    numpy.ndarray
        Increasing wavelengths (um) of the bin centres.
    """
    if not (np.isfinite(wave_sample) and wave_sample > 0):
        raise ConfigurationError(f"wave_sample must be > 0, got {wave_sample!r}")
    x, lam = native_dispersion(wave, mask)
    xs = x if x[-1] > x[0] else -x
    if not np.all(np.diff(xs) > 0):
        raise SlitCombineError("the wavelength is not monotonic along the detector columns")
    xg = np.arange(xs[0], xs[-1] + 1.0e-9, 1.0 / float(wave_sample))
    grid = np.interp(xg, xs, lam)
    if wave_range is not None:
        lo, hi = (float(v) for v in wave_range)
        grid = grid[(grid >= lo) & (grid <= hi)]
        if grid.size < 2:
            raise SlitCombineError(
                f"wave_range {wave_range} does not overlap the data ({lam[0]:.4f}-{lam[-1]:.4f} um)"
            )
    return grid


def bin_edges(centres):
    """Bin edges half-way between increasing bin centres (ends extrapolated).

    Parameters
    ----------
    centres : array-like
        Strictly increasing bin centres.

    Returns
    -------
    numpy.ndarray
        ``len(centres) + 1`` edges.
    """
    c = np.asarray(centres, dtype=float)
    if c.ndim != 1 or c.size < 2 or not np.all(np.diff(c) > 0):
        raise ConfigurationError("a grid needs at least two strictly increasing values")
    mid = 0.5 * (c[1:] + c[:-1])
    return np.concatenate([[c[0] - (mid[0] - c[0])], mid, [c[-1] + (c[-1] - mid[-1])]])


def bin_index(values, edges):
    """Index of the bin of each value, -1 outside ``[edges[0], edges[-1])`` or NaN.

    Parameters
    ----------
    values : array-like
        Values to bin.
    edges : numpy.ndarray
        Increasing edges.

    Returns
    -------
    numpy.ndarray
        ``int64`` bin indices.
    """
    v = np.asarray(values, dtype=float)
    idx = np.searchsorted(edges, v, side="right") - 1
    bad = ~np.isfinite(v) | (idx < 0) | (idx >= len(edges) - 1)
    idx[bad] = -1
    return idx.astype(np.int64)


def cross_dispersion_grid(ny=DEFAULT_NY, step=1.0):
    """Centres and edges of the rectified cross-dispersion grid.

    Parameters
    ----------
    ny : int
        Half-size: the grid has ``2 * ny + 1`` rows, centred on the trace (row ``ny``
        is ``yslit = 0``).
    step : float
        Row size, detector pixels.

    Returns
    -------
    centres, edges : numpy.ndarray
        Row centres and ``2 * ny + 2`` edges, pixels from the trace.
    """
    if int(ny) < 0 or not (np.isfinite(step) and step > 0):
        raise ConfigurationError(f"need ny >= 0 and step > 0, got ny={ny!r}, step={step!r}")
    centres = (np.arange(2 * int(ny) + 1) - int(ny)) * float(step)
    edges = np.concatenate([centres - 0.5 * step, [centres[-1] + 0.5 * step]])
    return centres, edges


def _row_fractions(y, y_edges, oversample, pixfrac):
    """First output row and fraction of each pixel's y footprint in each following row."""
    if int(oversample) < 1 or not (0 < pixfrac):
        raise ConfigurationError(
            f"need oversample >= 1 and pixfrac > 0, got {oversample!r}, {pixfrac!r}"
        )
    n = int(oversample)
    offsets = ((np.arange(n) + 0.5) / n - 0.5) * float(pixfrac)
    step = y_edges[1] - y_edges[0]
    sub = np.floor((y[:, None] + offsets[None, :] - y_edges[0]) / step).astype(np.int64)
    first = sub[:, 0]
    span = int((sub[:, -1] - first).max()) + 1 if sub.size else 1
    frac = np.empty((y.size, span))
    for k in range(span):
        frac[:, k] = (sub == (first[:, None] + k)).sum(axis=1) / n
    return first, frac


def pseudo_drizzle(
    wave,
    yslit,
    values,
    variances,
    weights,
    wave_grid,
    *,
    ny=DEFAULT_NY,
    step=1.0,
    oversample=DEFAULT_OVERSAMPLE,
    pixfrac=DEFAULT_PIXFRAC,
    extra=None,
    dwave=None,
):
    """Resample a pixel table onto a rectified (wavelength, yslit) grid.

    Parameters
    ----------
    wave, yslit : numpy.ndarray
        ``(n,)`` wavelength (um) and trace-centred offset (pixels) of each input pixel.
    values, variances, weights : numpy.ndarray
        ``(n,)`` values (e.g. uJy per pixel), their variances (squared unit) and
        weights (>= 0; rows with zero or non-finite weight are ignored).
    wave_grid : numpy.ndarray
        Output wavelength bin centres, um (increasing).
    ny, step : int, float
        Cross-dispersion grid (:func:`cross_dispersion_grid`).
    oversample : int
        Sub-samples of each pixel's footprint in y.
    pixfrac : float
        Width of each pixel's footprint in y, input pixels.
    extra : dict of str -> numpy.ndarray, optional
        Further ``(n,)`` quantities resampled with the same weights (e.g. the profile
        model and the sky); their weighted means are returned under the same keys.
    dwave : numpy.ndarray, optional
        ``(n,)`` wavelength step per detector column at each pixel, um: with a grid finer
        than the columns each pixel is spread over the wavelength bins it overlaps
        (:func:`slitcombine.core.extract.bin_footprints`), so that no column of the image is
        empty.  None: each pixel in the bin of its wavelength.

    Returns
    -------
    dict
        ``sci``, ``var`` (NaN where no data), ``wht`` (``1/var``, 0 where no data) and
        ``den`` (sum of weights), each ``(2*ny+1, len(wave_grid))``; ``npix`` (number
        of input pixels touching each output pixel); ``corr_y`` (``(2*ny, nwave)``: the
        correlation coefficient of each output pixel with the one above it, from the
        input pixels whose footprint both share -- neighbouring wavelength bins share no
        input pixel and are independent); ``wave`` and ``y`` (the grids); and the
        ``extra`` keys.
    """
    wave = np.asarray(wave, float)
    yslit = np.asarray(yslit, float)
    d = np.asarray(values, float)
    v = np.asarray(variances, float)
    w = np.asarray(weights, float)
    from slitcombine.core.extract import bin_footprints

    edges_w = bin_edges(wave_grid)
    ycen, yedges = cross_dispersion_grid(ny, step)
    nw, nyo = len(wave_grid), len(ycen)
    ok = np.isfinite(yslit) & np.isfinite(d) & np.isfinite(v) & (w > 0)
    ok &= np.isfinite(w)
    extra = {} if extra is None else {k: np.asarray(a, float) for k, a in extra.items()}
    for a in extra.values():
        ok &= np.isfinite(a)
    rows, ix, fw = bin_footprints(wave, dwave, edges_w)
    keep = ok[rows]
    rows, ix, fw = rows[keep], ix[keep], fw[keep]
    y, d, v, w = yslit[rows], d[rows], v[rows], w[rows] * fw
    ex = {k: a[rows] for k, a in extra.items()}
    first, frac = _row_fractions(y, yedges, oversample, pixfrac)

    size = nyo * nw
    den = np.zeros(size)
    num = np.zeros(size)
    vnum = np.zeros(size)
    npix = np.zeros(size)
    enum = {k: np.zeros(size) for k in ex}
    cnum = np.zeros(size)  # covariance with the next row up, numerator
    for k in range(frac.shape[1] - 1):
        row = first + k
        use = (frac[:, k] > 0) & (frac[:, k + 1] > 0) & (row >= 0) & (row + 1 < nyo)
        if use.any():
            idx = row[use] * nw + ix[use]
            cnum += np.bincount(
                idx, w[use] ** 2 * frac[use, k] * frac[use, k + 1] * v[use], minlength=size
            )
    for k in range(frac.shape[1]):
        row = first + k
        use = (frac[:, k] > 0) & (row >= 0) & (row < nyo)
        if not use.any():
            continue
        idx = row[use] * nw + ix[use]
        wf = w[use] * frac[use, k]
        den += np.bincount(idx, wf, minlength=size)
        num += np.bincount(idx, wf * d[use], minlength=size)
        vnum += np.bincount(idx, wf**2 * v[use], minlength=size)
        npix += np.bincount(idx, minlength=size)
        for key, a in ex.items():
            enum[key] += np.bincount(idx, wf * a[use], minlength=size)

    shape = (nyo, nw)
    has = den > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        sci = np.where(has, num / den, np.nan)
        var = np.where(has, vnum / den**2, np.nan)
        wht = np.where(has & (var > 0), 1.0 / var, 0.0)
    out = {
        "sci": sci.reshape(shape),
        "var": var.reshape(shape),
        "wht": wht.reshape(shape),
        "den": den.reshape(shape),
        "npix": npix.reshape(shape).astype(np.int32),
        "wave": np.asarray(wave_grid, float),
        "y": ycen,
    }
    with np.errstate(invalid="ignore", divide="ignore"):
        for key, a in enum.items():
            out[key] = np.where(has, a / den, np.nan).reshape(shape)
        v2 = var.reshape(shape)
        d2 = den.reshape(shape)
        cov = cnum.reshape(shape)[:-1] / (d2[:-1] * d2[1:])
        out["corr_y"] = cov / np.sqrt(v2[:-1] * v2[1:])
    return out
