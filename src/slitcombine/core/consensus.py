"""Consensus residuals: the residual S/N of every pixel against its own row and the
other exposures at its source position (:func:`consensus_residuals`), the statistic of
the outlier tests of :mod:`slitcombine.core.outliers`.

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

Array conventions as in :mod:`slitcombine.core.outliers` (per-pixel arrays ``(N, ny*nx)``,
uJy, uJy^2, pixels, um); no function here modifies its inputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from slitcombine.core.rowmodel import (
    _cube,
    _median_var_factor,
    row_model,
    sample_source_frame,
    side_medians,
    source_frame_coordinates,
)
from slitcombine.core.stats import masked_median

__all__ = ["ConsensusResult", "column_sky", "consensus_residuals"]


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

    The body is the list of these stages (:func:`_own_row_layer`, the sharp pixels,
    :func:`column_sky`, :func:`_other_exposures`, :func:`_alone_references`,
    :func:`_z_score`, the column test, :func:`_envelope_limited`); the function's length
    is the documentation of its sixteen options.
    """
    data = np.asarray(data, float)
    var = np.asarray(var, float)
    ok, var_ok, model_m, excess, var_r = _own_row_layer(data, var, valid, sh, filter_size)
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
    ref_input = np.where(sharp, np.nan, excess)
    env_input = np.where(sharp, np.nan, above_sky)
    refs = _other_exposures(ref_input, env_input, var_r, yslit, wave, sh, rel_error)
    near_trace = _alone_references(refs, ref_input, var_r, ok, yslit, sh, source_radius)
    veto = sharpness * neigh if near_trace.any() else None
    rules = {"ok": ok, "gate": gate, "rel_error": rel_error, "near_trace": near_trace}
    high = (refs["hi"], refs["var_hi"], refs["spread"])
    z, used, sigma, w = _z_score(excess, var_r, *high, rules, interp_error, veto)
    crowded = (
        _column_surplus(
            excess,
            var_r,
            used,
            w,
            refs["var_hi"],
            yslit,
            ok & (refs["n"] > 0),
            sh,
            radius=column_radius,
            rel=column_error,
        )
        > column_sigma
    )
    if crowded.any():
        strict = (
            ok & (refs["n"] > 0) & np.repeat(crowded[:, None, :], sh[0], axis=1).reshape(ok.shape)
        )
        z0, _, sigma0, _ = _z_score(excess, var_r, *high, rules, 0.0, veto)
        z = np.where(strict, z0, z)
        sigma = np.where(strict, sigma0, sigma)
    low = (refs["lo"], refs["var_lo"], refs["spread"])
    z_low, _, _, _ = _z_score(excess, var_r, *low, rules, interp_error, None)
    var_e = var_ok * (1.0 + var_sky_f)
    z_high = _envelope_limited(z, w, refs, above_sky, var_e, envelope_margin, env_sigma)
    return ConsensusResult(
        z=z,
        z_high=z_high,
        z_low=z_low,
        excess=excess,
        model=model_m + used,
        sigma=sigma,
        n_ref=refs["n"],
        weight=w,
        protected=near_trace,
        sharp=sharp,
    )


def _own_row_layer(data, var, valid, sh, filter_size):
    """The first layer: each pixel's excess over its own-row model (:func:`row_model`).

    Returns
    -------
    ok, var_ok, model, excess, var_r : numpy.ndarray
        ``(N, ny*nx)``: the usable pixels (valid, finite, positive variance, a model),
        their variance (NaN elsewhere, uJy^2), the row model and the excess ``d - M``
        (uJy), and the variance of the excess (uJy^2).
    """
    with np.errstate(invalid="ignore"):
        ok = np.asarray(valid, bool) & np.isfinite(data) & np.isfinite(var) & (var > 0)
    var_ok = np.where(ok, var, np.nan)
    model_m, vf = row_model(data, ok, sh, size=filter_size, var=var_ok)
    excess = np.where(ok, data - model_m, np.nan)
    ok &= np.isfinite(excess)
    var_r = var_ok * (1.0 + vf)
    return ok, var_ok, model_m, excess, var_r


def _other_exposures(ref_input, env_input, var_r, yslit, wave, sh, rel_error):
    """The references from the other exposures at each pixel's source position.

    One vectorised pass per exposure over the others (:func:`source_frame_coordinates`,
    :func:`sample_source_frame`, :func:`_combine_others`).

    Returns
    -------
    dict
        ``(N, ny*nx)`` arrays: ``hi``, ``lo`` (uJy) and ``var_hi``, ``var_lo`` (uJy^2) the
        high and low references, ``spread`` the interpolation spread (uJy), ``n`` the
        number of other exposures sampled, ``envelope`` the brightest interpolated pixel
        above the sky and ``line_env`` the largest reference plus spread (uJy; NaN where
        unknown).
    """
    shape = ref_input.shape
    n_exp = shape[0]
    refs = {k: np.full(shape, np.nan) for k in ("hi", "lo", "var_hi", "var_lo")}
    refs["spread"] = np.zeros(shape)
    refs["n"] = np.zeros(shape, int)
    envelope = np.full(shape, np.nan)
    line_env = np.full(shape, np.nan)
    for i in range(n_exp if n_exp > 1 else 0):  # one pass per exposure (others vectorised)
        others, yj, xj = source_frame_coordinates(yslit, wave, sh, i)
        smp, smp_var, smp_spread, cmax = sample_source_frame(
            ref_input, var_r, others, yj, xj, sh, envelope=env_input
        )
        out = _combine_others(smp, smp_var, smp_spread, rel_error)
        for k, key in enumerate(("hi", "lo", "var_hi", "var_lo", "spread", "n")):
            refs[key][i] = out[k]
        if others.size:
            envelope[i] = np.max(np.where(np.isfinite(cmax), cmax, -np.inf), 0)
            line_env[i] = np.max(np.where(np.isfinite(smp), smp + smp_spread, -np.inf), 0)
    envelope[~np.isfinite(envelope)] = np.nan
    line_env[~np.isfinite(line_env)] = np.nan
    refs["envelope"], refs["line_env"] = envelope, line_env
    return refs


def _alone_references(refs, ref_input, var_r, ok, yslit, sh, source_radius):
    """References of the pixels no other exposure covers (``refs`` updated in place).

    Far from their trace they take the rows above and below (:func:`_column_reference`);
    near it they are left to the sharpness test.

    Returns
    -------
    numpy.ndarray
        ``(N, ny*nx)`` boolean, the pixels near their trace that no other exposure covers.
    """
    alone = ok & (refs["n"] == 0)
    with np.errstate(invalid="ignore"):
        near_trace = alone & (np.abs(np.nan_to_num(yslit, nan=np.inf)) <= source_radius)
    far = alone & ~near_trace
    if far.any():
        col = _column_reference(ref_input, var_r, sh)
        for key, cref in zip(("hi", "lo", "var_hi", "var_lo"), col, strict=True):
            refs[key][far] = cref[far]
        refs["spread"][far] = 0.0
    return near_trace


def _z_score(layer, lvar, ref, vref, spr, rules, eta, veto):
    """Residual S/N of ``layer`` (variance ``lvar``) against a gated reference.

    Parameters
    ----------
    layer, lvar : numpy.ndarray
        The excess (uJy) and its variance (uJy^2).
    ref, vref, spr : numpy.ndarray
        The reference (uJy), its variance (uJy^2) and its interpolation spread (uJy).
    rules : dict
        ``ok`` (usable pixels), ``gate``, ``rel_error`` and ``near_trace`` (the pixels of
        the sharpness test).
    eta : float
        Fraction of the spread allowed (``interp_error``; 0 in crowded columns).
    veto : numpy.ndarray or None
        ``sharpness`` times the neighbours' excess: the reference of the pixels near
        their trace that no other exposure covers (None: no such test).

    Returns
    -------
    z, used, sigma, w : numpy.ndarray
        The residual S/N (NaN where not usable), the reference used ``w S`` (uJy), the
        error (uJy) and the gate weight.
    """
    w = _gated(ref, vref, rules["gate"])
    used = np.where(w > 0, w * ref, 0.0)
    sig2 = lvar + np.where(w > 0, w**2 * vref, 0.0) + (rules["rel_error"] * used) ** 2
    sig = np.sqrt(sig2 + (eta * w * spr) ** 2)
    num = layer - used
    if veto is not None:
        num = np.where(rules["near_trace"], layer - veto, num)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = num / sig
    return np.where(rules["ok"] & np.isfinite(z), z, np.nan), used, sig, w


def _envelope_limited(z, w, refs, above_sky, var_e, envelope_margin, env_sigma):
    """``z_high``: ``z``, limited where the other exposures show a feature.

    Where they do (``w > 0``), the pixel is also compared, at the data level, with the
    brightest pixel they show around its source position: a pixel not brighter than
    ``(1 + envelope_margin)`` times that is never a high outlier, whatever the row
    models (which a masked pixel or a close line can upset).
    """
    envelope, line_env = refs["envelope"], refs["line_env"]
    with np.errstate(invalid="ignore", divide="ignore"):
        z_env = (above_sky - (1.0 + envelope_margin) * envelope) / np.sqrt(2.0 * var_e)
    with np.errstate(invalid="ignore"):
        feature = (
            (w > 0)
            & (refs["hi"] > 0)
            & np.isfinite(z_env)
            & (envelope > env_sigma * np.sqrt(var_e))
            & (line_env > 0.5 * envelope)
        )
    return np.where(feature, np.fmin(z, z_env), z)
