"""The own-row model of each pixel and the sampling of the other exposures at its source
position: the two references of the outlier tests of :mod:`slitcombine.core.outliers`.

* :func:`row_model`: the lower of the running medians just left and just right of the
  pixel along its detector row (:func:`side_medians`, with short masked runs filled by
  :func:`fill_short_gaps`);
* :func:`source_frame_coordinates` and :func:`sample_source_frame`: where the pixel's
  source position ``(yslit, wavelength)`` falls in the other exposures, and their
  bilinear samples there.

Array conventions as in :mod:`slitcombine.core.outliers` (per-pixel arrays ``(N, ny*nx)``,
uJy, uJy^2, pixels, um); no function here modifies its inputs.
"""

from __future__ import annotations

import numpy as np

from slitcombine.core.stats import masked_median

__all__ = [
    "side_medians",
    "fill_short_gaps",
    "row_model",
    "source_frame_coordinates",
    "sample_source_frame",
]


def side_medians(values, valid, half, gap=1):
    """Running medians of the elements just left and just right of each element.

    Parameters
    ----------
    values : numpy.ndarray
        ``(..., n)`` array (any unit).
    valid : numpy.ndarray
        Boolean array of the same shape.
    half : int
        The windows cover offsets ``gap + 1 .. half`` on each side (last axis).
    gap : int
        Offsets ``0 .. gap`` (the element and its nearest neighbours) are left out.

    Returns
    -------
    left, n_left, right, n_right : numpy.ndarray
        Medians (NaN where a window holds no valid element) and valid counts.
    """
    half = max(int(half), int(gap) + 1)
    gap = max(int(gap), 0)
    v = np.where(valid & np.isfinite(values), values, np.nan)
    pad = [(0, 0)] * (v.ndim - 1) + [(half, half)]
    vp = np.pad(v, pad, constant_values=np.nan)
    win = np.lib.stride_tricks.sliding_window_view(vp, 2 * half + 1, axis=-1)
    left = win[..., 0 : half - gap]
    right = win[..., half + gap + 1 :]
    ml, nl = masked_median(left, np.isfinite(left), axis=-1)
    mr, nr = masked_median(right, np.isfinite(right), axis=-1)
    return ml, nl, mr, nr


def _median_var_factor(n):
    """Variance of the median of ``n`` normal values, in units of their variance."""
    n = np.asarray(n, float)
    with np.errstate(divide="ignore"):
        large = 0.5 * np.pi / np.maximum(n, 1.0)
    out = np.where(n >= 4, large, np.where(n == 3, 0.449, np.where(n == 2, 0.5, 1.0)))
    return np.where(n > 0, out, np.nan)


def fill_short_gaps(values, valid, max_gap=2):
    """Fill short runs of invalid elements along the last axis with a neighbour.

    A run of at most ``max_gap`` invalid elements with valid elements on both sides is
    filled with the *smaller* of those two (a masked pixel on the wing of an emission
    line is not given the line's flux); longer runs and runs at the ends stay NaN.

    Parameters
    ----------
    values : numpy.ndarray
        ``(..., n)`` array.
    valid : numpy.ndarray
        Boolean array of the same shape.
    max_gap : int
        Longest run that is filled.

    Returns
    -------
    filled : numpy.ndarray
        Float copy of ``values`` with NaN where invalid and not filled.
    """
    v = np.where(valid & np.isfinite(values), values, np.nan)
    good = np.isfinite(v)
    n = v.shape[-1]
    idx = np.broadcast_to(np.arange(n), v.shape)
    left = np.maximum.accumulate(np.where(good, idx, -1), axis=-1)
    right = np.flip(
        np.minimum.accumulate(np.flip(np.where(good, idx, n), axis=-1), axis=-1), axis=-1
    )
    fill = ~good & (left >= 0) & (right < n) & (right - left - 1 <= max_gap)
    if not fill.any():
        return v
    lv = np.take_along_axis(v, np.clip(left, 0, n - 1), axis=-1)
    rv = np.take_along_axis(v, np.clip(right, 0, n - 1), axis=-1)
    return np.where(fill, np.fmin(lv, rv), v)


def row_model(data, valid, sh, size=13, gap=1, min_count=2, var=None):
    """Own-row model: the lower of the running medians on either side along the row.

    ``M = min(median(d[x-half..x-gap-1]), median(d[x+gap+1..x+half]))`` in the same
    exposure and detector row.  It follows the sky and the source continuum; a line
    (or a cosmic ray) in the window raises at most one side, so unlike a centred
    median it stays on the continuum between the close lines of a complex (H-beta +
    [OIII]), and it leaves the pixel and its nearest neighbours (a line's core and
    wings) out.  Isolated masked pixels are first filled (:func:`fill_short_gaps`) so
    that a mask does not change which values the medians pick in one exposure and not
    in another.

    Parameters
    ----------
    data : numpy.ndarray
        ``(N, ny*nx)`` data, uJy per pixel.
    valid : numpy.ndarray
        ``(N, ny*nx)`` valid pixels.
    sh : (int, int)
        ``(ny, nx)``.
    size : int
        Full window length along the row, columns (``half = size // 2``).
    gap : int
        The pixel and its ``gap`` nearest neighbours on each side are left out.
    min_count : int
        Where neither side has this many valid pixels, windows three times longer are
        used.
    var : numpy.ndarray or None
        ``(N, ny*nx)`` variance of ``data`` (uJy^2).  If given, the noise bias of the
        lower of two medians (``-sigma_med / sqrt(pi)``) is removed, so that the
        excess over the model of a pure-noise row is centred on zero.

    Returns
    -------
    model : numpy.ndarray
        ``(N, ny*nx)`` row model, uJy (NaN where even the long windows are empty).
    var_factor : numpy.ndarray
        ``(N, ny*nx)`` variance of the model in units of the pixel variance (median of
        ``n`` values; x0.68 when it is the lower of two).
    """
    n_exp = data.shape[0]
    cube = fill_short_gaps(data.reshape(n_exp, *sh), valid.reshape(n_exp, *sh))
    ok = np.isfinite(cube)
    half = max(int(size) // 2, gap + 1)

    sig = None if var is None else np.sqrt(np.clip(var, 0.0, None)).reshape(cube.shape)

    def lower(h, cube, ok, sig):
        ml, nl, mr, nr = side_medians(cube, ok, h, gap)
        use_l = np.isfinite(ml) & (~np.isfinite(mr) | (ml <= mr))
        model = np.where(use_l, ml, mr)
        n_used = np.where(use_l, nl, nr)
        both = np.isfinite(ml) & np.isfinite(mr)
        vm = _median_var_factor(n_used)
        if sig is not None:
            # E[min(X1, X2)] = mean - sd / sqrt(pi) for two independent normal values
            bias = np.where(both, np.sqrt(vm) * sig / np.sqrt(np.pi), 0.0)
            model = model + np.nan_to_num(bias, nan=0.0)
        vf = vm * np.where(both, 0.68, 1.0)
        return model, vf, np.maximum(nl, nr)

    model, vf, nmax = lower(half, cube, ok, sig)
    short = (nmax < min_count) & ok
    rows = np.nonzero(short.any(axis=-1))
    if rows[0].size:
        sub_sig = None if sig is None else sig[rows]
        m2, v2, _ = lower(3 * half, cube[rows], ok[rows], sub_sig)
        model[rows] = np.where(short[rows], m2, model[rows])
        vf[rows] = np.where(short[rows], v2, vf[rows])
    return model.reshape(data.shape), vf.reshape(data.shape)


def source_frame_coordinates(yslit, wave, sh, i):
    """Where the source position of each pixel of exposure ``i`` falls in the others.

    For pixel ``(y, x)`` of exposure ``i`` the source position is ``(yslit_i,
    wave_i)``.  In exposure ``j`` the same source position is on the row ``y +
    yslit_i - yslit_j`` (trace offsets) and on the column where ``wave_j`` equals
    ``wave_i`` on that row (``x`` plus the shift of a tilted spectral line), found to
    first order from ``wave_j`` and its gradient along the row.

    Parameters
    ----------
    yslit : numpy.ndarray
        ``(N, ny*nx)`` row minus trace, pixels.
    wave : numpy.ndarray
        ``(N, ny*nx)`` wavelength, um (NaN off the slit).
    sh : (int, int)
        ``(ny, nx)``.
    i : int
        The exposure whose pixels are mapped.

    Returns
    -------
    others : numpy.ndarray
        Indices of the other exposures (file order).
    yj, xj : numpy.ndarray
        ``(N-1, ny*nx)`` fractional row and column in each other exposure, pixels.
    """
    n_exp = yslit.shape[0]
    ny, nx = sh
    others = np.array([j for j in range(n_exp) if j != i], int)
    yy = np.repeat(np.arange(ny, dtype=float), nx)
    xx = np.tile(np.arange(nx, dtype=float), ny)
    if others.size == 0:
        empty = np.empty((0, ny * nx))
        return others, empty, empty
    yj = yy[None, :] + (yslit[i][None, :] - yslit[others])
    wj = wave[others].reshape(others.size, ny, nx)
    dwdx = np.gradient(wj, axis=2) if nx > 1 else np.full_like(wj, np.nan)
    y0 = np.floor(np.nan_to_num(yj, nan=-10.0)).astype(int)
    fy = np.nan_to_num(yj, nan=-10.0) - y0
    flat_w = wj.reshape(others.size, -1)
    flat_g = dwdx.reshape(others.size, -1)
    k_idx = np.arange(others.size)[:, None]
    xi = np.broadcast_to(xx.astype(int), yj.shape)

    def at_rows(flat, rows):
        inside = (rows >= 0) & (rows < ny)
        idx = np.clip(rows, 0, ny - 1) * nx + xi
        return np.where(inside, flat[k_idx, idx], np.nan)

    with np.errstate(invalid="ignore"):
        w_row = (1 - fy) * at_rows(flat_w, y0) + fy * at_rows(flat_w, y0 + 1)
        g_row = (1 - fy) * at_rows(flat_g, y0) + fy * at_rows(flat_g, y0 + 1)
        dx = (wave[i][None, :] - w_row) / g_row
    dx = np.where(np.isfinite(dx) & (np.abs(dx) < 3), dx, 0.0)
    return others, yj, xx[None, :] + dx


def sample_source_frame(values, variances, others, yj, xj, sh, envelope=None, min_weight=0.5):
    """Bilinear samples of other exposures at given fractional rows and columns.

    Parameters
    ----------
    values, variances : numpy.ndarray
        ``(N, ny*nx)`` values to sample (NaN where invalid) and their variances.
    others, yj, xj : numpy.ndarray
        From :func:`source_frame_coordinates`.
    sh : (int, int)
        ``(ny, nx)``.
    envelope : numpy.ndarray or None
        ``(N, ny*nx)`` second quantity of which only the largest interpolated corner is
        returned (NaN where invalid).
    min_weight : float
        Minimum summed bilinear weight of the valid corners for a sample to be kept.

    Returns
    -------
    samples, sample_var : numpy.ndarray
        ``(N-1, ny*nx)`` samples (renormalised over the valid corners) and their
        variances; NaN where unavailable.
    spread : numpy.ndarray
        ``(N-1, ny*nx)`` range (max - min) of the interpolated corners times ``4 f
        (1 - f)`` (``f`` the fractional position between corners, larger of the two
        axes): what linear interpolation can miss between undersampled rows (0 at a
        corner, the full range half-way); 0 where unavailable.
    corner_max : numpy.ndarray or None
        ``(N-1, ny*nx)`` largest interpolated corner of ``envelope`` (NaN where
        unavailable), if given.

    Notes
    -----
    Kept in one piece: the four bilinear corners update the same eight accumulators in
    one loop, which stages would have to pass back and forth.
    """
    ny, nx = sh
    npix = ny * nx
    shape = yj.shape
    if shape[0] == 0:
        empty = np.empty(shape)
        return empty, empty, empty, (None if envelope is None else empty)
    yjn = np.nan_to_num(yj, nan=-10.0)
    y0 = np.floor(yjn).astype(np.intp)
    x0 = np.floor(xj).astype(np.intp)
    fy = yjn - y0
    fx = xj - x0
    flat_v = values.ravel()
    flat_var = variances.ravel()
    flat_e = None if envelope is None else envelope.ravel()
    base = (others * npix)[:, None]
    acc = np.zeros(shape)
    accv = np.zeros(shape)
    wsum = np.zeros(shape)
    vmax = np.full(shape, -np.inf)
    vmin = np.full(shape, np.inf)
    emax = None if envelope is None else np.full(shape, -np.inf)
    x_corners = ((0, 1.0 - fx), (1, fx)) if np.any(fx > 0) else ((0, 1.0 - fx),)
    for oy, wy in ((0, 1.0 - fy), (1, fy)):
        r = y0 + oy
        r_in = (r >= 0) & (r < ny)
        rc = base + np.clip(r, 0, ny - 1) * nx
        for ox, wx in x_corners:
            c = x0 + ox
            idx = rc + np.clip(c, 0, nx - 1)
            v = flat_v[idx]
            vv = flat_var[idx]
            good = r_in & (c >= 0) & (c < nx) & np.isfinite(v) & np.isfinite(vv)
            w = wy * wx
            w[~good] = 0.0
            v[~good] = 0.0
            vv[~good] = 0.0
            acc += w * v
            accv += w * w * vv
            wsum += w
            near = w > 0.01
            np.maximum(vmax, np.where(near, v, -np.inf), out=vmax)
            np.minimum(vmin, np.where(near, v, np.inf), out=vmin)
            if flat_e is not None:
                e = flat_e[idx]
                np.fmax(emax, np.where(near, e, -np.inf), out=emax)
    keep = wsum >= min_weight
    # linear interpolation is exact at a corner and worst half-way between corners
    phase = 4.0 * np.maximum(fy * (1.0 - fy), fx * (1.0 - fx))
    with np.errstate(invalid="ignore", divide="ignore"):
        samples = np.where(keep, acc / wsum, np.nan)
        sample_var = np.where(keep, accv / wsum**2, np.nan)
        spread = np.where(keep, phase * (vmax - vmin), 0.0)
    spread[~np.isfinite(spread)] = 0.0
    corner_max = None
    if emax is not None:
        corner_max = np.where(keep & np.isfinite(emax), emax, np.nan)
    return samples, sample_var, spread, corner_max


def _cube(a, sh):
    """``(N, ny*nx)`` -> ``(N, ny, nx)`` (a view)."""
    return a.reshape(a.shape[0], *sh)
