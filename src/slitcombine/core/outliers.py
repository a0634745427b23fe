"""Outlier rejection and stuck-shutter detection: pure functions.

Every test here compares a pixel with something that *should* look like it, in units of
the pixel's own error, so that thresholds mean the same thing for a faint PRISM source
and for a bright grating spectrum:

* its **own row** (the row model ``M``, :func:`row_model`): the lower of the running
  medians just left and just right of the pixel along the dispersion, in the same
  exposure and detector row.  It follows the sky and the source continuum; an emission
  line or a cosmic ray stands out of it;
* the **other exposures at the same position on the source**: a nodded source sits on
  different detector rows in each exposure, so a real feature (emission line, continuum
  edge, extended emission, sky line) that stands out of the row model of exposure ``i``
  at source position ``(yslit, wavelength)`` stands out of the other exposures' row
  models at the same ``(yslit, wavelength)`` too, while a cosmic ray does not.  The
  other exposures are sampled there by bilinear interpolation
  (:func:`source_frame_coordinates`: trace offsets from ``yslit``, wavelength shifts of
  tilted spectral lines from the ``wave`` arrays);
* the **rows above and below** in the same column, where no other exposure covers the
  pixel (features extended along the slit), or its **neighbours in both directions**
  near its own trace (a single exposure: the PSF and the line-spread function spread
  any real source, a cosmic ray is sharp);
* the **same detector pixel in the other exposures** (hot / cold detector pixels, the
  multiple-exposure mask);
* a **cross-dispersion profile model** (:func:`profile_outliers`).

The central quantity is the *consensus residual* of :func:`consensus_residuals`::

    r  = d - M                                   excess over the own-row model
    S  = the other exposures' r at the pixel's source position (median; mean of two)
    w  = clip((|S| / sigma_S - g0) / (g1 - g0), 0, 1)   S used only where significant
    z  = (r - w S) / sqrt(var (1 + f_M) + w^2 var_S + (eps w S)^2 + (eta w D)^2)

``z`` is a standard normal deviate for a good pixel (measured width 1.00-1.05 on the
simulations, 1.12-1.26 on CEERS, whose pipeline errors are slightly small) and large and
positive for a cosmic ray or a hot pixel.  The terms ``eps * S`` (throughput differences
between nods, 20 %) and ``eta * D`` (half the spread of the interpolated pixels, weighted
by the sub-pixel phase: the undersampled NIRSpec PSF seen at different phases) absorb
what the interpolation between exposures cannot reproduce, so that the cores of bright
emission lines stay far below any threshold (on the simulated 50x lines ``z < 1``).
Where the other exposures show a line, a pixel that is not brighter (in the data, above
the column's sky) than 1.2 times the brightest pixel they show around its source
position is never a high outlier (:attr:`ConsensusResult.z_high`).

Array conventions: per-pixel arrays are ``(N, ny*nx)`` as on :class:`SlitGroup`
(``sh = (ny, nx)``); data in uJy per pixel, variances in uJy^2, ``yslit`` in pixels,
``wave`` in um.  No function here modifies its inputs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.special import ndtri

from slitcombine.core.stats import masked_median

__all__ = [
    "side_medians",
    "fill_short_gaps",
    "row_model",
    "source_frame_coordinates",
    "sample_source_frame",
    "ConsensusResult",
    "column_sky",
    "consensus_residuals",
    "normal_extrapolated_threshold",
    "grow_flags",
    "percentile_outliers",
    "trace_envelope_outliers",
    "neighbour_outliers",
    "hot_cold_pixels",
    "profile_outliers",
    "majority_count",
    "multiple_exposure_mask",
    "stuck_shutters",
]

log = logging.getLogger(__name__)


# ============================================================================ medians
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


# ============================================================================ local model
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


# ============================================================================ consensus
@dataclass
class ConsensusResult:
    """Consensus residuals of a stack of exposures (see :func:`consensus_residuals`).

    Attributes
    ----------
    z : numpy.ndarray
        ``(N, ny*nx)`` residual S/N (dimensionless) for high outliers; NaN where not
        computable.  Where two other exposures disagree the larger one is the
        reference (the pixel gets the benefit of the doubt).
    z_high : numpy.ndarray
        The statistic to flag high outliers: ``z``, except where the other exposures
        show a feature at the pixel's source position, where it is the smaller of ``z``
        and the data-level comparison with the brightest pixel they show there (see
        ``envelope_margin`` of :func:`consensus_residuals`).  Not a normal deviate: the
        thresholds are calibrated on ``z``.
    z_low : numpy.ndarray
        The same as ``z`` for low outliers (the smaller reference on disagreement).
    excess : numpy.ndarray
        ``(N, ny*nx)`` excess over the own-row model ``r = d - M``, uJy.
    model : numpy.ndarray
        ``(N, ny*nx)`` full model ``M + w S`` of each pixel, uJy.
    sigma : numpy.ndarray
        ``(N, ny*nx)`` error of ``d - model``, uJy.
    n_ref : numpy.ndarray
        ``(N, ny*nx)`` number of other exposures that sampled the source position
        (0: the pixel could only be compared with its own row).
    weight : numpy.ndarray
        ``(N, ny*nx)`` weight ``w`` given to the reference signal.
    protected : numpy.ndarray
        ``(N, ny*nx)`` pixels judged by the sharpness test (no other exposure covers
        them and they lie near their own trace); their ``z`` is not a normal deviate.
    sharp : numpy.ndarray
        ``(N, ny*nx)`` cosmic-ray candidates left out of the references.
    """

    z: np.ndarray
    z_high: np.ndarray
    z_low: np.ndarray
    excess: np.ndarray
    model: np.ndarray
    sigma: np.ndarray
    n_ref: np.ndarray
    weight: np.ndarray
    protected: np.ndarray
    sharp: np.ndarray


def _combine_others(samples, sample_var, spread, rel_error, clash=5.0):
    """Robust combination over the first axis of the other exposures' samples.

    Median of three or more values; mean of two, unless they disagree by more than
    ``clash`` times their combined error (one of them holds a cosmic ray, or the
    undersampled profile is caught at very different phases); the single value
    otherwise.  On a clash, the *high* reference is the larger value (what protects
    a real feature of the pixel, used to look for high outliers) and the *low* one the
    smaller (used to look for low outliers).  The interpolation spread is the largest
    over the exposures used.

    Returns
    -------
    high, low, var_high, var_low, spread, n : numpy.ndarray
    """
    ok = np.isfinite(samples) & np.isfinite(sample_var)
    n = ok.sum(axis=0)
    if samples.shape[0] == 0:
        nan = np.full(samples.shape[1:], np.nan)
        return nan, nan, nan, nan, np.zeros(samples.shape[1:]), n
    s0 = np.where(ok, samples, 0.0)
    v0 = np.where(ok, sample_var, 0.0)
    spr = np.where(ok, spread, 0.0).max(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = s0.sum(axis=0) / n
        var_mean = v0.sum(axis=0) / n**2
    high, low = mean.copy(), mean.copy()
    var_high, var_low = var_mean.copy(), var_mean.copy()
    if samples.shape[0] >= 2:
        # exactly two valid values: check that they agree
        first = np.argmax(ok, axis=0)
        last = samples.shape[0] - 1 - np.argmax(ok[::-1], axis=0)
        a = np.take_along_axis(s0, first[None], 0)[0]
        b = np.take_along_axis(s0, last[None], 0)[0]
        va = np.take_along_axis(v0, first[None], 0)[0]
        vb = np.take_along_axis(v0, last[None], 0)[0]
        with np.errstate(invalid="ignore"):
            floor = rel_error * np.minimum(np.abs(a), np.abs(b))
            tol = clash * np.sqrt(va + vb + floor**2 + (0.5 * spr) ** 2)
            bad = (n == 2) & (np.abs(a - b) > tol)
        a_hi = a >= b
        high = np.where(bad, np.where(a_hi, a, b), high)
        var_high = np.where(bad, np.where(a_hi, va, vb), var_high)
        low = np.where(bad, np.where(a_hi, b, a), low)
        var_low = np.where(bad, np.where(a_hi, vb, va), var_low)
    if samples.shape[0] >= 3:
        med, _ = masked_median(samples, ok, axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            var_med = 0.5 * np.pi * v0.sum(axis=0) / n**2
        use_med = n >= 3
        high = np.where(use_med, med, high)
        low = np.where(use_med, med, low)
        var_high = np.where(use_med, var_med, var_high)
        var_low = np.where(use_med, var_med, var_low)
    out = [np.where(n > 0, x, np.nan) for x in (high, low, var_high, var_low)]
    return (*out, spr, n)


def _column_reference(excess, var_r, sh, gap=1, half=3):
    """References of a pixel from the rows above and below it (same column, exposure).

    The medians of the excess of the rows at distances ``gap + 1 .. gap + half`` above
    and below are computed (skipping the nearest rows keeps a cosmic-ray streak along
    the column out of them); the high reference is the larger of the two, the low one
    the smaller (one side only near the slit edges).  A feature extended along the slit
    (a sky line, extended emission, including its gradient) lies between the two, a
    cosmic ray above both.  Returns ``high, low, var_high, var_low`` (the variance of a
    median of ``n`` values of the pixel's own variance).
    """
    n_exp = excess.shape[0]
    cube = np.ascontiguousarray(np.moveaxis(excess.reshape(n_exp, *sh), 1, 2))  # rows last
    m1, n1, m2, n2 = side_medians(cube, np.isfinite(cube), gap + half, gap)
    one_hi = ~np.isfinite(m2) | (np.isfinite(m1) & (m1 >= m2))
    one_lo = ~np.isfinite(m2) | (np.isfinite(m1) & (m1 < m2))
    high = np.where(one_hi, m1, m2)
    low = np.where(one_lo, m1, m2)
    f_hi = _median_var_factor(np.where(one_hi, n1, n2))
    f_lo = _median_var_factor(np.where(one_lo, n1, n2))
    out = []
    for x in (high, low, f_hi, f_lo):
        out.append(np.moveaxis(x, 2, 1).reshape(excess.shape))
    return out[0], out[1], out[2] * var_r, out[3] * var_r


def _column_surplus(excess, var_r, used, w, var_ref, yslit, valid, sh, radius=2.5, rel=0.1):
    """S/N of each exposure's column excess over its reference, near the trace.

    ``(sum r - sum w S) / sqrt(sum var_r + sum w^2 var_S + (rel sum w S)^2)`` over the
    pixels of the column with ``|yslit| <= radius`` that have a reference; ``(N, nx)``,
    0 where the column has no such pixel.
    """
    with np.errstate(invalid="ignore"):
        sel = valid & (np.abs(np.nan_to_num(yslit, nan=np.inf)) <= radius)

    def colsum(a):
        return _cube(np.where(sel, a, 0.0), sh).sum(axis=1)

    total, ref = colsum(excess), colsum(used)
    var = colsum(var_r) + colsum(w**2 * np.nan_to_num(var_ref)) + (rel * ref) ** 2
    with np.errstate(invalid="ignore", divide="ignore"):
        g = (total - ref) / np.sqrt(var)
    return np.where(np.isfinite(g), g, 0.0)


def _neighbour_excess(excess, data, model, sh):
    """Smaller over the two directions of the larger excess of the 2 neighbours.

    ``min(max(r[y-1], r[y+1]), max(d[x-1], d[x+1]) - M[x])`` in the same exposure: along
    the slit the neighbours' own excess over their rows, along the dispersion the
    neighbours' data above the pixel's own row model (so that a nearby line, which
    raises the neighbours' row models, does not hide a line's wings).  A real source is
    spread by the PSF along the slit *and* by the line-spread function along the
    dispersion; a cosmic ray (a single pixel or a straight streak) is not, in at least
    one of the two directions.
    """
    n_exp = excess.shape[0]
    ny, nx = sh

    def shifted(cube, axis, k):
        out = np.full(cube.shape, np.nan)
        src = [slice(None)] * 3
        dst = [slice(None)] * 3
        if cube.shape[axis] <= 1:
            return out
        if k > 0:
            src[axis], dst[axis] = slice(k, None), slice(None, -k)
        else:
            src[axis], dst[axis] = slice(None, k), slice(-k, None)
        out[tuple(dst)] = cube[tuple(src)]
        return out

    r = excess.reshape(n_exp, ny, nx)
    d = np.where(np.isfinite(excess), data, np.nan).reshape(n_exp, ny, nx)
    along_y = np.fmax(shifted(r, 1, 1), shifted(r, 1, -1))
    along_x = np.fmax(shifted(d, 2, 1), shifted(d, 2, -1)) - model.reshape(n_exp, ny, nx)
    return np.fmin(along_y, along_x).reshape(excess.shape)


def column_sky(data, valid, yslit, sh, radius=3.0, min_count=3):
    """Sky of each exposure and column: median of the valid pixels away from the trace.

    Parameters
    ----------
    data : numpy.ndarray
        ``(N, ny*nx)`` data, uJy per pixel.
    valid : numpy.ndarray
        ``(N, ny*nx)`` pixels that may be used.
    yslit : numpy.ndarray
        ``(N, ny*nx)`` distance from the exposure's trace, pixels.
    sh : (int, int)
        ``(ny, nx)``.
    radius : float
        Pixels with ``|yslit| <= radius`` are left out (the source).
    min_count : int
        With fewer sky pixels in a column, all its valid pixels are used.

    Returns
    -------
    sky : numpy.ndarray
        ``(N, ny*nx)`` sky of each pixel's column (uJy), NaN where the column is empty.
    var_factor : numpy.ndarray
        ``(N, ny*nx)`` variance of the sky in units of a pixel's variance, ``pi/(2n)``.
    """
    n_exp = data.shape[0]
    d = _cube(np.where(valid, data, np.nan), sh)
    okc = _cube(np.asarray(valid, bool) & np.isfinite(data), sh)
    with np.errstate(invalid="ignore"):
        away = _cube(np.abs(np.nan_to_num(yslit, nan=np.inf)) > radius, sh)
    med, n = masked_median(d, okc & away, axis=1)
    med_all, n_all = masked_median(d, okc, axis=1)
    use_all = n < min_count
    med = np.where(use_all, med_all, med)
    n = np.where(use_all, n_all, n)
    with np.errstate(divide="ignore"):
        vf = np.where(n > 0, 0.5 * np.pi / np.maximum(n, 1), np.nan)
    sky = np.broadcast_to(med[:, None, :], d.shape).reshape(n_exp, -1)
    vfp = np.broadcast_to(vf[:, None, :], d.shape).reshape(n_exp, -1)
    return sky, vfp


def _gated(ref, var_ref, gate):
    """Gate weight ``w`` of a reference signal from its S/N (0 when not significant)."""
    g0, g1 = gate
    with np.errstate(invalid="ignore", divide="ignore"):
        t = np.abs(ref) / np.sqrt(var_ref)
        w = np.clip((t - g0) / max(g1 - g0, 1e-6), 0.0, 1.0)
    return np.where(np.isfinite(w), w, 0.0)


def consensus_residuals(
    data,
    var,
    valid,
    yslit,
    wave,
    sh,
    *,
    filter_size=13,
    rel_error=0.2,
    interp_error=0.5,
    gate=(1.0, 2.0),
    source_radius=3.0,
    sharpness=6.0,
    sharp_sigma=5.0,
    sky_radius=3.0,
    envelope_margin=0.2,
    env_sigma=3.0,
    column_radius=2.5,
    column_error=0.1,
    column_sigma=5.0,
):
    """Residual S/N of every pixel against its own row and the other exposures.

    Parameters
    ----------
    data : numpy.ndarray
        ``(N, ny*nx)`` data, uJy per pixel (sky-subtracted or not).
    var : numpy.ndarray
        ``(N, ny*nx)`` variance of ``data``, uJy^2.
    valid : numpy.ndarray
        ``(N, ny*nx)`` boolean, pixels that may be used.
    yslit : numpy.ndarray
        ``(N, ny*nx)`` row minus trace of each exposure, pixels.
    wave : numpy.ndarray
        ``(N, ny*nx)`` wavelength, um.
    sh : (int, int)
        ``(ny, nx)``.
    filter_size : int
        Window of the own-row model, columns (:func:`row_model`).
    rel_error : float
        Fractional error ``eps`` of the reference (throughput differences between
        nods, bar-shadow residuals), dimensionless.
    interp_error : float
        Fraction ``eta`` of the spread of the interpolated pixels that linear
        interpolation may miss (the undersampled PSF seen at different sub-pixel
        phases), dimensionless.
    gate : (float, float)
        S/N ``(g0, g1)`` of the reference signal below which it is ignored (the pixel is
        then compared with its own row only, which keeps the comparison's noise low) and
        above which it is fully used; linear in between.
    source_radius : float
        Pixels of an exposure that no other exposure covers and that lie within this
        distance of its trace (``|yslit|``, pixels; a single exposure, or the edges of a
        nod pattern) are judged by a sharpness test instead: their excess must exceed
        ``sharpness`` times the excess of their neighbours, because the PSF spreads a
        real source along the slit and the line-spread function along the dispersion.
    sharpness : float
        See ``source_radius``.  6 protects a line whose neighbours hold at least 1/6 of
        its peak in both directions (the bluest NIRSpec PSF, FWHM 1.1 px, gives 1/5).
    sharp_sigma : float
        Pixels that pass the sharpness test with an excess above ``sharp_sigma`` times
        their error are cosmic-ray candidates: they are left out of the references of
        the other exposures (not rejected by this function).
    sky_radius : float
        Pixels farther than this from their trace (pixels) give the sky of each column
        (:func:`column_sky`) for the data-level comparison below.
    envelope_margin : float
        Where the other exposures show a line at the pixel's source position, the pixel
        is not a high outlier unless its data above the column's sky exceed ``1 +
        envelope_margin`` times the brightest interpolated pixel of the others there
        (:attr:`ConsensusResult.z_high`).  A line is "shown" when the reference is used
        (``w > 0``), positive, above ``env_sigma`` times the pixel's error at the data
        level, and at least half of it is excess over the row model (a line, not
        continuum, so that cosmic rays on a bright continuum trace stay detectable).
    env_sigma : float
        See ``envelope_margin``.
    column_radius, column_error, column_sigma : float
        The interpolation allowance (``interp_error``) is dropped in the columns of an
        exposure whose excess summed over ``|yslit| <= column_radius`` (pixels) exceeds
        the reference summed there by more than ``column_sigma`` times its error, with
        a fractional error ``column_error`` (throughput differences) on the reference
        sum.  Summed over the column, the error of the interpolation of a peaked profile
        cancels (high at the peak, low in the wings), so such a column holds more light
        than the source gives it: a cosmic ray on the core of a bright line, which the
        allowance would otherwise hide (simulated: 3-pixel hits of 50-180 sigma on a
        PRISM [OIII] peak, line flux 7% high).

    Returns
    -------
    ConsensusResult

    Notes
    -----
    With ``r = d - M`` the excess over the own-row model (:func:`row_model`, ``f_M``
    its variance factor) and ``S`` the reference::

        z = (r - w S) / sqrt(var (1 + f_M) + w^2 var_S + (eps w S)^2 + (eta w D)^2)

    ``S`` is the median (the mean of two, or the larger of two that clash) over the
    other exposures of their ``r`` at the pixel's source position (sharp pixels left
    out), ``D`` the phase-weighted spread of the interpolated pixels, ``w`` the gate
    weight; ``eta = 0`` in the columns of an exposure that fail the column-total test
    (``column_sigma``).  Pixels no other exposure covers and far from their trace take as
    reference the rows above and below them in the same column
    (:func:`_column_reference`); near their trace the sharpness test (``z = (r -
    sharpness * neighbours) / sigma``, not a normal deviate: flagged in
    :attr:`ConsensusResult.protected`).  Invalid pixels get ``z = NaN``.  Cost: one
    vectorised pass per exposure over the others, ~20 ms for the CEERS trio.
    """
    data = np.asarray(data, float)
    var = np.asarray(var, float)
    with np.errstate(invalid="ignore"):
        ok = np.asarray(valid, bool) & np.isfinite(data) & np.isfinite(var) & (var > 0)
    n_exp = data.shape[0]
    var_ok = np.where(ok, var, np.nan)
    model_m, vf = row_model(data, ok, sh, size=filter_size, var=var_ok)
    excess = np.where(ok, data - model_m, np.nan)
    ok &= np.isfinite(excess)
    var_r = var_ok * (1.0 + vf)
    # Sharp pixels (cosmic-ray candidates: far above their neighbours in both
    # directions) are kept out of the references, so that a cosmic ray in one exposure
    # cannot hide one in another.
    neigh = _neighbour_excess(excess, data, model_m, sh)
    neigh = np.clip(np.nan_to_num(neigh, nan=0.0), 0.0, None)
    with np.errstate(invalid="ignore"):
        sharp = ok & (excess > sharpness * neigh) & (excess > sharp_sigma * np.sqrt(var_r))
    # second layer: excess over the sky of the column (median away from the trace)
    sky, var_sky_f = column_sky(data, ok & ~sharp, yslit, sh, radius=sky_radius)
    above_sky = np.where(ok, data - sky, np.nan)
    var_e = var_ok * (1.0 + var_sky_f)
    ref_input = np.where(sharp, np.nan, excess)
    env_input = np.where(sharp, np.nan, above_sky)
    ref_hi = np.full((1, *data.shape), np.nan)
    ref_lo = np.full((1, *data.shape), np.nan)
    var_hi = np.full((1, *data.shape), np.nan)
    var_lo = np.full((1, *data.shape), np.nan)
    spread = np.zeros((1, *data.shape))
    n_ref = np.zeros(data.shape, int)
    envelope = np.full(data.shape, np.nan)
    line_env = np.full(data.shape, np.nan)
    for i in range(n_exp if n_exp > 1 else 0):  # one pass per exposure (others vectorised)
        others, yj, xj = source_frame_coordinates(yslit, wave, sh, i)
        smp, smp_var, smp_spread, cmax = sample_source_frame(
            ref_input, var_r, others, yj, xj, sh, envelope=env_input
        )
        out = _combine_others(smp, smp_var, smp_spread, rel_error)
        ref_hi[0, i], ref_lo[0, i], var_hi[0, i], var_lo[0, i], spread[0, i] = out[:5]
        n_ref[i] = out[5]
        if others.size:
            envelope[i] = np.max(np.where(np.isfinite(cmax), cmax, -np.inf), 0)
            line_env[i] = np.max(np.where(np.isfinite(smp), smp + smp_spread, -np.inf), 0)
    envelope[~np.isfinite(envelope)] = np.nan
    line_env[~np.isfinite(line_env)] = np.nan
    # pixels no other exposure covers
    alone = ok & (n_ref == 0)
    with np.errstate(invalid="ignore"):
        near_trace = alone & (np.abs(np.nan_to_num(yslit, nan=np.inf)) <= source_radius)
    far = alone & ~near_trace
    if far.any():
        col = _column_reference(ref_input, var_r, sh)
        for ref, cref in zip((ref_hi[0], ref_lo[0], var_hi[0], var_lo[0]), col, strict=True):
            ref[far] = cref[far]
        spread[0][far] = 0.0
    veto = None
    if near_trace.any():
        veto = sharpness * neigh

    def z_of(layer, lvar, ref, vref, spr, use_veto, eta=interp_error):
        w = _gated(ref, vref, gate)
        used = np.where(w > 0, w * ref, 0.0)
        sig2 = lvar + np.where(w > 0, w**2 * vref, 0.0) + (rel_error * used) ** 2
        sig = np.sqrt(sig2 + (eta * w * spr) ** 2)
        num = layer - used
        if use_veto and veto is not None:
            num = np.where(near_trace, layer - veto, num)
        with np.errstate(invalid="ignore", divide="ignore"):
            z = num / sig
        return np.where(ok & np.isfinite(z), z, np.nan), used, sig, w

    z, used, sigma, w = z_of(excess, var_r, ref_hi[0], var_hi[0], spread[0], True)
    crowded = (
        _column_surplus(
            excess,
            var_r,
            used,
            w,
            var_hi[0],
            yslit,
            ok & (n_ref > 0),
            sh,
            radius=column_radius,
            rel=column_error,
        )
        > column_sigma
    )
    if crowded.any():
        strict = ok & (n_ref > 0) & np.repeat(crowded[:, None, :], sh[0], axis=1).reshape(ok.shape)
        z0, _, sigma0, _ = z_of(excess, var_r, ref_hi[0], var_hi[0], spread[0], True, eta=0.0)
        z = np.where(strict, z0, z)
        sigma = np.where(strict, sigma0, sigma)
    z_low, _, _, _ = z_of(excess, var_r, ref_lo[0], var_lo[0], spread[0], False)
    # Where the other exposures show a feature (w > 0), the pixel is also compared, at
    # the data level, with the brightest pixel they show around its source position:
    # a pixel not brighter than (1 + envelope_margin) times that is never a high
    # outlier, whatever the row models (which a masked pixel or a close line can upset)
    with np.errstate(invalid="ignore", divide="ignore"):
        z_env = (above_sky - (1.0 + envelope_margin) * envelope) / np.sqrt(2.0 * var_e)
    with np.errstate(invalid="ignore"):
        feature = (
            (w > 0)
            & (ref_hi[0] > 0)
            & np.isfinite(z_env)
            & (envelope > env_sigma * np.sqrt(var_e))
            & (line_env > 0.5 * envelope)
        )
    z_high = np.where(feature, np.fmin(z, z_env), z)
    return ConsensusResult(
        z=z,
        z_high=z_high,
        z_low=z_low,
        excess=excess,
        model=model_m + used,
        sigma=sigma,
        n_ref=n_ref,
        weight=w,
        protected=near_trace,
        sharp=sharp,
    )


# ============================================================================ thresholds
def _level(p, n_per):
    """The seed's level convention: ``p < 0`` means ``1 + p / n_per`` (a pixel count)."""
    p = float(p)
    return 1.0 + p / max(n_per, 1.0) if p < 0 else p


def normal_extrapolated_threshold(
    z, plevels=(0.95, -4, -0.1), scale=2.0, n_per=None, min_threshold=4.0, min_pixels=50
):
    """Outlier threshold extrapolated from the core of a distribution assumed normal.

    Parameters
    ----------
    z : numpy.ndarray
        Sample (any shape, NaN ignored), here residual S/N values.
    plevels : (float, float, float)
        The seed's levels ``(p0, p1, p2)`` in (0, 1); a negative value ``p`` means
        ``1 + p / n_per`` (i.e. ``-p`` pixels per exposure above the level).  ``p0``
        sets the quantiles ``Q(p0)`` and ``Q(1 - p0)`` that measure the width of the
        distribution; ``p2`` the level to extrapolate to.  ``p1`` is accepted for
        compatibility: the seed measured the width between ``Q(p0)`` and ``Q(p1)``,
        deep in the upper tail where the outliers being looked for live; here the width
        comes from the symmetric central interval, which they cannot bias.
    scale : float
        Multiplier of the extrapolated excess (seed meaning).
    n_per : float or None
        Pixels per exposure for the negative-level convention (default ``z.size``; at
        least ``min_pixels``).
    min_threshold : float
        Lower bound of the returned threshold (same unit as ``z``).
    min_pixels : int
        With fewer finite values, the standard normal is assumed.

    Returns
    -------
    threshold : float
        ``Q(p0) + scale * sigma * (Phi^-1(p2) - Phi^-1(p0))`` with
        ``sigma = (Q(p0) - Q(1 - p0)) / (2 Phi^-1(p0))``, at least ``min_threshold``.
    info : dict
        The quantiles, width, levels and whether the fallback was used.
    """
    v = np.asarray(z, float)
    v = v[np.isfinite(v)]
    n_per = max(float(v.size if n_per is None else n_per), float(min_pixels))
    p0, _p1, p2 = (_level(p, n_per) for p in plevels)
    if not (0.5 < p0 < 1.0) or not (p0 < p2 < 1.0):
        from slitcombine.errors import ConfigurationError

        raise ConfigurationError(
            f"plevels {list(plevels)} give levels p0={p0:.6f}, p2={p2:.6f}; need 0.5 < p0 < p2 < 1"
        )
    ppf0, ppf2 = float(ndtri(p0)), float(ndtri(p2))
    if v.size >= min_pixels:
        q_lo, q_hi = np.quantile(v, [1.0 - p0, p0])
        sigma = (q_hi - q_lo) / (2.0 * ppf0)
        fallback = False
    else:
        q_hi, sigma, fallback = ppf0, 1.0, True
    thr = float(q_hi + scale * sigma * (ppf2 - ppf0))
    info = {
        "n": int(v.size),
        "p0": p0,
        "p2": p2,
        "q_p0": float(q_hi),
        "width": float(sigma),
        "raw_threshold": thr,
        "fallback_normal": fallback,
    }
    return max(thr, float(min_threshold)), info


def _cube(a, sh):
    return a.reshape(a.shape[0], *sh)


def grow_flags(flags, z, sh, footprint=None, grow_threshold=3.0):
    """Extend flags to neighbours that are themselves significantly high.

    Parameters
    ----------
    flags : numpy.ndarray
        ``(N, ny*nx)`` boolean flags.
    z : numpy.ndarray
        ``(N, ny*nx)`` residual S/N.
    sh : (int, int)
        ``(ny, nx)``.
    footprint : array-like or None
        2-D neighbourhood searched around each flagged pixel (3x3 by default); None or
        an empty footprint disables growing.
    grow_threshold : float
        A neighbour is added when its ``z`` exceeds this (the wings of a cosmic ray,
        inter-pixel capacitance).  ``-inf`` reproduces the unconditional dilation of the
        seed, which also rejects good neighbours.

    Returns
    -------
    numpy.ndarray
        ``(N, ny*nx)`` grown flags (a copy).
    """
    flags = np.asarray(flags, bool)
    if footprint is None or not flags.any():
        return flags.copy()
    st = np.asarray(footprint, bool)
    if st.ndim != 2 or not st.any():
        return flags.copy()
    grown = ndimage.binary_dilation(_cube(flags, sh), structure=st[None, :, :])
    grown = grown.reshape(flags.shape)
    with np.errstate(invalid="ignore"):
        extra = grown & ~flags & (z > grow_threshold)
    return flags | extra


# ============================================================================ steps
def percentile_outliers(
    z,
    yslit,
    *,
    plevels=(0.95, -4, -0.1),
    scale=2.0,
    yslit_range=(-2, 2),
    min_threshold=4.0,
    exclude=None,
    z_high=None,
):
    """High outliers of the residual S/N, threshold from its distribution near the trace.

    Parameters
    ----------
    z : numpy.ndarray
        ``(N, npix)`` residual S/N (:func:`consensus_residuals`).
    yslit : numpy.ndarray
        ``(N, npix)`` distance from the trace, pixels.
    plevels, scale : see :func:`normal_extrapolated_threshold`
        The per-exposure pixel count of the negative-level convention is the number of
        valid pixels within ``yslit_range`` divided by N.
    yslit_range : (float, float)
        Band around the trace whose pixels define the distribution (where the model is
        least accurate, so the threshold is conservative).  If it holds too few pixels
        every valid pixel is used.
    min_threshold : float
        Lower bound of the threshold, in units of the pixel's error.
    exclude : numpy.ndarray or None
        ``(N, npix)`` pixels left out of the statistics (those whose ``z`` is not a
        normal deviate, :attr:`ConsensusResult.protected`).
    z_high : numpy.ndarray or None
        The statistic compared with the threshold (:attr:`ConsensusResult.z_high`);
        ``z`` if None.  The threshold itself always comes from ``z``.

    Returns
    -------
    flags : numpy.ndarray
        ``(N, npix)`` boolean, ``z > threshold`` anywhere in the slit.
    threshold : float
        The threshold (S/N).
    info : dict
        Statistics of the threshold.
    """
    n_exp = z.shape[0]
    lo, hi = sorted(float(v) for v in yslit_range)
    with np.errstate(invalid="ignore"):
        stat = np.isfinite(z) if exclude is None else np.isfinite(z) & ~exclude
        band = (yslit > lo) & (yslit < hi) & stat
    sample = z[band]
    if sample.size < 50:
        sample = z[stat]
    thr, info = normal_extrapolated_threshold(
        sample, plevels, scale, n_per=sample.size / max(n_exp, 1), min_threshold=min_threshold
    )
    with np.errstate(invalid="ignore"):
        flags = (z if z_high is None else z_high) > thr
    return flags, thr, info


def _robust_across(values, n_exp):
    """Median over exposures (axis 0) for N >= 3, minimum for N = 2, itself for N = 1."""
    ok = np.isfinite(values)
    if n_exp >= 3:
        med, _ = masked_median(values, ok, axis=0)
        return med
    if n_exp == 2:
        return np.fmin(values[0], values[1])
    return values[0]


def trace_envelope_outliers(
    data,
    valid,
    yslit,
    z,
    sh,
    *,
    yslit_range=(-2, 2),
    filter_size=-2,
    threshold=1.5,
    sn_threshold=5.0,
):
    """Pixels brighter than the source can make them, and significant.

    Parameters
    ----------
    data : numpy.ndarray
        ``(N, ny*nx)`` data, uJy per pixel.
    valid : numpy.ndarray
        ``(N, ny*nx)`` valid pixels.
    yslit : numpy.ndarray
        ``(N, ny*nx)`` distance from the trace, pixels.
    z : numpy.ndarray
        ``(N, ny*nx)`` residual S/N (:func:`consensus_residuals`).
    sh : (int, int)
        ``(ny, nx)``.
    yslit_range : (float, float)
        The trace band, pixels.
    filter_size : int
        Half-width of the running maximum of the envelope along the dispersion, columns
        (covers the shift of a line between nods); a negative value (the seed's "times
        the number of exposures" in its wavelength-sorted pixel list) means
        ``|filter_size|`` columns.
    threshold : float
        A pixel is flagged when its excess over the column's sky exceeds ``threshold``
        times the envelope of the source.
    sn_threshold : float
        ... and its residual S/N ``z`` exceeds this.

    Returns
    -------
    flags : numpy.ndarray
        ``(N, ny*nx)`` boolean.
    envelope : numpy.ndarray
        ``(nx,)`` source envelope, uJy (NaN where unknown).

    Notes
    -----
    The sky of each exposure and column is the median of its valid pixels outside the
    band (all valid pixels if none); the source peak of each exposure and column is the
    largest excess over that sky inside the band; the envelope is the median of the
    peaks over exposures (minimum of two; a cosmic ray on the trace of one exposure
    cannot raise it), with a running maximum over ``+-filter_size`` columns.  Unlike the
    seed (fixed 3 sigma on the data, off-trace pixels only), the S/N condition uses the
    consensus residual, so that a real feature seen in the other exposures is never
    flagged, and the test applies to every pixel.
    """
    n_exp = data.shape[0]
    ny, nx = sh
    lo, hi = sorted(float(v) for v in yslit_range)
    ok = np.asarray(valid, bool) & np.isfinite(data)
    with np.errstate(invalid="ignore"):
        band = (yslit > lo) & (yslit < hi)
    d = _cube(np.where(ok, data, np.nan), sh)
    okc = _cube(ok, sh)
    bandc = _cube(band, sh)
    sky, n_sky = masked_median(d, okc & ~bandc, axis=1)
    sky_all, _ = masked_median(d, okc, axis=1)
    sky = np.where(n_sky >= 3, sky, sky_all)
    sky = np.where(np.isfinite(sky), sky, 0.0)
    exc = d - sky[:, None, :]
    peak = np.where(okc & bandc, exc, -np.inf).max(axis=1)
    peak = np.where(np.isfinite(peak), peak, np.nan)
    amp = _robust_across(peak, n_exp)
    half = abs(int(filter_size))
    if half > 0:
        filled = np.where(np.isfinite(amp), amp, -np.inf)
        env = ndimage.maximum_filter1d(filled, size=2 * half + 1, mode="nearest")
        env = np.where(np.isfinite(env), env, np.nan)
    else:
        env = amp
    limit = threshold * np.clip(env, 0.0, None)
    with np.errstate(invalid="ignore"):
        flags = ok & (exc > limit[None, None, :]).reshape(ok.shape) & (z > sn_threshold)
    return flags, env


def neighbour_outliers(z, z_low=None, *, threshold=(-5.0, 5.0)):
    """Pixels outside ``threshold`` in residual S/N (low and high).

    Parameters
    ----------
    z : numpy.ndarray
        Residual S/N for high outliers (:attr:`ConsensusResult.z`): the pixel against
        its neighbours along the row and, at the same source position, the other
        exposures.
    z_low : numpy.ndarray or None
        Residual S/N for low outliers (:attr:`ConsensusResult.z_low`); ``z`` if None.
    threshold : (float, float)
        Low and high limits (S/N).

    Returns
    -------
    low, high : numpy.ndarray
        Boolean arrays of the shape of ``z``.
    """
    lo, hi = sorted(float(v) for v in threshold)
    zl = z if z_low is None else z_low
    with np.errstate(invalid="ignore"):
        return zl < lo, z > hi


def majority_count(n_exp):
    """Smallest number of exposures that is a strict majority of ``n_exp``.

    ``n // 2 + 1`` (2 of 3, 3 of 4, 3 of 5, 4 of 6 ...); None for fewer than three
    exposures, where "most but not all" does not exist.

    Parameters
    ----------
    n_exp : int
        Number of exposures.

    Returns
    -------
    int or None
        The majority count.
    """
    if n_exp < 3:
        return None
    return n_exp // 2 + 1


def multiple_exposure_mask(bad):
    """Detector pixels bad in most, but not all, exposures.

    Parameters
    ----------
    bad : numpy.ndarray
        ``(N, npix)`` boolean, True where a pixel is rejected.

    Returns
    -------
    numpy.ndarray or None
        ``(npix,)`` boolean: rejected in at least :func:`majority_count` exposures and
        not in all; None if ``N < 3``.
    """
    n_exp = bad.shape[0]
    need = majority_count(n_exp)
    if need is None:
        return None
    count = bad.sum(axis=0)
    return (count >= need) & (count < n_exp)


def hot_cold_pixels(
    data,
    valid,
    z,
    *,
    z_low=None,
    cold=-0.1,
    hot=1.5,
    absolute=True,
    min_nexp=-1,
    sn_limits=None,
    sn_guard=3.0,
):
    """Detector pixels that are hot or cold in several exposures.

    Parameters
    ----------
    data : numpy.ndarray
        ``(N, npix)`` data, uJy per pixel.
    valid : numpy.ndarray
        ``(N, npix)`` valid pixels.
    z : numpy.ndarray
        ``(N, npix)`` residual S/N for high values (:attr:`ConsensusResult.z_high`).
    z_low : numpy.ndarray or None
        ``(N, npix)`` residual S/N for low values (:attr:`ConsensusResult.z_low`);
        ``z`` if None.
    cold, hot : float
        With ``absolute=True``: limits in uJy per pixel on ``data`` (the seed's
        defaults -0.1 and 1.5 uJy suit faint PRISM sources only).  With
        ``absolute=False``: percentiles (0-100) of the valid data.
    absolute : bool
        See ``cold``/``hot``.
    min_nexp : int
        Number of exposures in which a pixel must be hot (cold): ``N + min_nexp`` if
        negative, ``min_nexp`` if positive; at least 2 (one exposure alone is a cosmic
        ray, not a detector defect).
    sn_limits : (float, float) or None
        The S/N path (recommended, e.g. ``(-5, 5)``): the limits apply to ``z`` instead
        of the data, i.e. to the excess over the pixel's own row *after* subtracting what
        the other exposures see at the same source position.  Overrides ``cold``, ``hot``
        and ``absolute``.
    sn_guard : float or None
        With the flux limits, a pixel also needs ``z > sn_guard`` to be hot (``z <
        -sn_guard`` to be cold): a pixel bright because a real source sits on it is then
        never hot.  None gives the seed's behaviour.

    Returns
    -------
    flag : numpy.ndarray
        ``(npix,)`` int: 1 cold, 2 hot, 0 neither.
    info : dict
        ``ncold``, ``nhot``, the limits and ``nmin``.
    """
    n_exp = data.shape[0]
    ok = np.asarray(valid, bool) & np.isfinite(data)
    zl = z if z_low is None else z_low
    if min_nexp < 0:
        nmin = n_exp + int(min_nexp)
    else:
        nmin = int(min_nexp)
    nmin = max(2, nmin)
    with np.errstate(invalid="ignore"):
        if sn_limits is not None:
            lo, hi = sorted(float(v) for v in sn_limits)
            is_cold = ok & (zl < lo)
            is_hot = ok & (z > hi)
            mode = "sn"
        else:
            if absolute:
                lo, hi = float(cold), float(hot)
            else:
                for p in (cold, hot):
                    if not (0.0 <= float(p) <= 100.0):
                        from slitcombine.errors import ConfigurationError

                        raise ConfigurationError(
                            f"with absolute=False the limits are percentiles in [0, 100]; "
                            f"got cold={cold}, hot={hot}"
                        )
                vals = data[ok]
                if vals.size == 0:
                    lo, hi = np.nan, np.nan
                else:
                    lo, hi = (float(v) for v in np.percentile(vals, [cold, hot]))
            is_cold = ok & (data < lo)
            is_hot = ok & (data > hi)
            mode = "absolute" if absolute else "percentile"
            if sn_guard is not None:
                is_cold &= zl < -float(sn_guard)
                is_hot &= z > float(sn_guard)
    cold_pix = is_cold.sum(axis=0) >= nmin
    hot_pix = is_hot.sum(axis=0) >= nmin
    flag = cold_pix.astype(int) + 2 * hot_pix.astype(int)
    flag[cold_pix & hot_pix] = 2
    info = {
        "mode": mode,
        "ncold": int((flag == 1).sum()),
        "nhot": int((flag == 2).sum()),
        "limits": [float(lo), float(hi)],
        "nmin": int(nmin),
    }
    return flag, info


def profile_outliers(
    data, var, valid, yslit, profile, sh, *, grow=2.0, nfilt=-32, rel_error=0.3, low_sigma=5.0
):
    """Outliers against a cross-dispersion profile model, in units of their error.

    Parameters
    ----------
    data, var : numpy.ndarray
        ``(N, ny*nx)`` data (uJy per pixel) and variance (uJy^2).
    valid : numpy.ndarray
        ``(N, ny*nx)`` valid pixels.
    yslit : numpy.ndarray
        ``(N, ny*nx)`` distance from the trace, pixels.
    profile : numpy.ndarray
        ``(N, ny*nx)`` profile model: fraction of the column's source flux per pixel.
    sh : (int, int)
        ``(ny, nx)``.
    grow : float
        High limit ``p95 + grow * (p95 - p50)`` of the running percentiles of the
        normalised residual along ``yslit`` (the seed's rule, on S/N instead of flux).
    nfilt : int
        Pixels per running-percentile bin along ``yslit``; negative: the number of valid
        pixels divided by ``-nfilt``.
    rel_error : float
        Fractional error of the profile model, added to the variance as
        ``(rel_error * F P)^2``.
    low_sigma : float
        Low limit ``min(p5, 0) - low_sigma``.

    Returns
    -------
    high, low : numpy.ndarray
        ``(N, ny*nx)`` boolean.
    zp : numpy.ndarray
        ``(N, ny*nx)`` normalised residual ``(d - b - F P) / sqrt(var + (rel_error F
        P)^2)``; the sky ``b`` and source flux ``F`` of each exposure and column are fitted
        by weighted linear least squares.
    info : dict
        Number of bins and pixels used.
    """
    n_exp = data.shape[0]
    with np.errstate(invalid="ignore"):
        ok = (
            np.asarray(valid, bool)
            & np.isfinite(data)
            & np.isfinite(var)
            & np.isfinite(profile)
            & (var > 0)
        )
    zp = np.full(data.shape, np.nan)
    high = np.zeros(data.shape, bool)
    low = np.zeros(data.shape, bool)
    info = {"n_pixels": int(ok.sum()), "n_bins": 0}
    if ok.sum() < 20:
        return high, low, zp, info
    w = _cube(np.where(ok, 1.0 / np.where(ok, var, 1.0), 0.0), sh)
    p = _cube(np.where(ok, profile, 0.0), sh)
    d = _cube(np.where(ok, data, 0.0), sh)
    # weighted normal equations of d = b + F p per exposure and column (sum over rows)
    s1 = w.sum(axis=1)
    sp = (w * p).sum(axis=1)
    spp = (w * p * p).sum(axis=1)
    sd = (w * d).sum(axis=1)
    spd = (w * p * d).sum(axis=1)
    det = s1 * spp - sp**2
    with np.errstate(invalid="ignore", divide="ignore"):
        good = det > 1e-12 * np.maximum(s1 * spp, 1e-300)
        flux = np.where(good, (s1 * spd - sp * sd) / det, np.nan)
        sky = np.where(good, (spp * sd - sp * spd) / det, np.nan)
    model = sky[:, None, :] + flux[:, None, :] * p
    err2 = _cube(np.where(ok, var, np.nan), sh) + (rel_error * flux[:, None, :] * p) ** 2
    with np.errstate(invalid="ignore", divide="ignore"):
        zc = (_cube(np.where(ok, data, np.nan), sh) - model) / np.sqrt(err2)
    zp = zc.reshape(data.shape)
    use = ok & np.isfinite(zp)
    n_use = int(use.sum())
    if n_use < 20:
        return high, low, zp, info
    nbin = n_use // -int(nfilt) if nfilt < 0 else int(nfilt)
    nbin = int(np.clip(nbin, 10, n_use))
    ys = yslit[use]
    zs = zp[use]
    order = np.argsort(ys, kind="stable")
    ys, zs = ys[order], zs[order]
    nb = max(1, n_use // nbin)
    edges = np.linspace(0, n_use, nb + 1).astype(int)
    centres = np.empty(nb)
    pct = np.empty((nb, 3))
    for b in range(nb):  # one loop iteration per bin (tens of bins), vectorised inside
        sl = slice(edges[b], edges[b + 1])
        centres[b] = np.median(ys[sl])
        pct[b] = np.percentile(zs[sl], [5, 50, 95])
    p5 = np.interp(yslit, centres, pct[:, 0])
    p50 = np.interp(yslit, centres, pct[:, 1])
    p95 = np.interp(yslit, centres, pct[:, 2])
    with np.errstate(invalid="ignore"):
        high = use & (zp > p95 + grow * (p95 - p50))
        low = use & (zp < np.minimum(p5, 0.0) - low_sigma)
    info["n_bins"] = int(nb)
    info["n_per_bin"] = int(nbin)
    _ = n_exp
    return high, low, zp, info


# ============================================================================ shutters
def stuck_shutters(
    sci,
    var,
    valid,
    yshutter,
    bar,
    *,
    stuck_threshold=0.3,
    min_bar=0.7,
    min_significance=5.0,
    fixed_slit=False,
):
    """Find shutters that pass no light (stuck closed) from the data.

    Parameters
    ----------
    sci, var : numpy.ndarray
        ``(N, npix)`` science (uJy per pixel) and variance (uJy^2), *before* any sky
        subtraction: an open shutter shows the sky in every exposure.
    valid : numpy.ndarray
        ``(N, npix)`` valid pixels.
    yshutter : numpy.ndarray
        ``(npix,)`` or ``(N, npix)`` shutter coordinate fixed to the MSA (shutter
        pitches, 0 at the centre of exposure 0's source shutter).
    bar : numpy.ndarray
        ``(N, npix)`` bar-shadow throughput claimed by the pipeline.
    stuck_threshold : float
        A shutter is stuck when its median S/N is below ``stuck_threshold`` times that of
        the brightest well-covered shutter (several shutters), or below
        ``stuck_threshold`` in absolute terms and consistent with no light at all (a
        single shutter).
    min_bar : float
        Only pixels with ``bar > min_bar`` (away from the bars) are used.
    min_significance : float
        The shortfall must also be significant: the difference of the medians larger
        than ``min_significance`` times its error (several shutters).
    fixed_slit : bool
        Fixed slits have no shutters: nothing is done.

    Returns
    -------
    stuck : list of int
        Indices of the stuck shutters (``round(yshutter)``).
    info : dict
        Per shutter: ``n`` pixels, median S/N ``sn``, its error ``err`` and ratio to the
        reference; ``status`` (``'ok'``, ``'undetermined'`` when the reference itself
        is not significant, ``'skipped'``) and ``reason``.

    Notes
    -----
    The median of ``sci / sqrt(var)`` over the pixels of a shutter (all exposures) is
    robust to cosmic rays and to the source (which occupies a few rows of one nod).  A
    stuck-closed shutter shows neither sky nor source, whatever the metadata say, so its
    median S/N is ~0 while the open shutters show the sky.  Its error is
    ``1.2533 * 1.4826 MAD / sqrt(n)``, measured, not assumed.  With gratings the sky
    S/N per pixel is low (~0.1-2) but the medians over thousands of pixels still
    separate an open shutter from a closed one by tens of sigma; when even the brightest
    shutter is not significantly above zero (sky subtracted upstream, very short
    exposure) the test cannot decide and nothing is masked.
    """
    info = {"status": "skipped", "reason": "", "shutters": {}}
    if fixed_slit:
        info["reason"] = "fixed slit: no shutters"
        return [], info
    ys = np.broadcast_to(yshutter, sci.shape)
    with np.errstate(invalid="ignore", divide="ignore"):
        use = np.asarray(valid, bool) & (bar > min_bar) & np.isfinite(ys) & (var > 0)
        use &= np.isfinite(sci)
        sn = sci / np.sqrt(var)
    if use.sum() < 10:
        info["reason"] = f"only {int(use.sum())} usable pixels"
        return [], info
    k = np.round(ys[use]).astype(int)
    v = sn[use]
    order = np.argsort(k, kind="stable")
    k, v = k[order], v[order]
    shutters, start, counts = np.unique(k, return_index=True, return_counts=True)
    med = np.empty(shutters.size)
    err = np.empty(shutters.size)
    for m, (a, c) in enumerate(zip(start, counts, strict=True)):  # per shutter (<= ~10)
        seg = v[a : a + c]
        med[m] = np.median(seg)
        mad = 1.4826 * np.median(np.abs(seg - med[m]))
        err[m] = 1.2533 * max(mad, 1e-12) / np.sqrt(c)
    full = counts > 0.5 * counts.max()
    stuck = []
    ref = None
    if shutters.size > 1:
        cand = np.where(full, med, -np.inf)
        iref = int(np.argmax(cand))
        ref = float(med[iref])
        ref_sig = ref / err[iref]
        if ref_sig < min_significance:
            info["status"] = "undetermined"
            info["reason"] = (
                f"brightest shutter median S/N {ref:.3f} is only {ref_sig:.1f} sigma above "
                "zero: no sky to compare with"
            )
        else:
            info["status"] = "ok"
            for m in range(shutters.size):
                if m == iref or not full[m]:
                    continue
                short = ref - med[m]
                if med[m] < stuck_threshold * ref and short > min_significance * np.hypot(
                    err[m], err[iref]
                ):
                    stuck.append(int(shutters[m]))
    else:
        info["status"] = "ok"
        # a single shutter: stuck only if it shows no light at all
        if med[0] < stuck_threshold and abs(med[0]) < 3.0 * err[0]:
            stuck.append(int(shutters[0]))
    for m, j in enumerate(shutters):
        info["shutters"][int(j)] = {
            "n": int(counts[m]),
            "sn": round(float(med[m]), 4),
            "err": round(float(err[m]), 4),
            "ratio": None if not ref else round(float(med[m] / ref), 4),
            "full": bool(full[m]),
        }
    info["reference_sn"] = ref
    return stuck, info
