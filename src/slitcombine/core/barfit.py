"""The group's own bar-shadow model: a fit of ``sky x throughput`` to its sky pixels.

:func:`fit_bar_shadow` fits the model (:class:`~slitcombine.core.barshadow.BarShadowModel`)
in named stages, each a function of this module:

1. :func:`_pixels`: the candidate sky pixels and their coordinates;
2. :func:`_layout`: the spline bases (knots, numbers of functions) and their priors;
3. :func:`_poisson_ratio`: the smooth ratio of the Poisson variance to the signal;
4. :func:`_fit_excluding_source`: the alternating fit
   (:func:`slitcombine.core.barsolve.fit_product`), repeated with a wider source
   exclusion while its residuals show source light (:func:`_leak_radius`);
5. :func:`_posterior_error`: the model's own precision;
6. :func:`_normalisation`: the convention that fixes the degeneracy ``S g, T / g``;
7. :func:`_fit_info`: the statistics recorded in ``meta``.

Whether the model replaces the pipeline's correction is decided by
:func:`slitcombine.core.barpolicy.own_bar_shadow`.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
from scipy.linalg import solve_triangular

from slitcombine.core.barshadow import BarShadowModel, covered_intervals
from slitcombine.core.barsolve import FitLayout, FitOptions, FitPixels, fit_product
from slitcombine.core.splines import (
    bspline_basis,
    difference_band,
    difference_penalty,
    scaled_solve,
)
from slitcombine.core.stats import binned_median
from slitcombine.errors import FitError

__all__ = ["fit_bar_shadow"]

log = logging.getLogger(__name__)


def fit_bar_shadow(
    raw,
    var,
    yshutter,
    wave,
    sky_pixels,
    coordinate,
    *,
    pipeline_bar=None,
    var_poisson=None,
    source_distance=None,
    min_distance=4.5,
    max_distance=16.0,
    leak_threshold=0.003,
    mode="wave",
    wave_axis="wavelength",
    ystep=0.07,
    df_wave=5,
    df_norm=8,
    df_sky=51,
    smooth_y=0.3,
    smooth_w=0.003,
    period=None,
    smooth_period=0.005,
    period_margin=0.1,
    link_tolerance=0.1,
    clip=5.0,
    n_iter=6,
    tol=0.05,
    min_pixels=200,
    min_count=20,
    reference_bar=0.9,
    n_error_sample=256,
):
    """Fit a smooth bar-shadow throughput to sky pixels of the exposures of a group.

    Model of an un-corrected sky pixel (bar shadow *not* divided out)::

        raw = S(lambda) * T(y, lambda)

    with ``S`` the sky (cubic B-spline of ``df_sky`` functions in the column coordinate
    ``u(lambda)``, knots uniform in resolution elements) and ``T`` a tensor cubic
    B-spline in the shutter coordinate ``y`` (knots every ``ystep`` shutter pitches,
    ~0.35 pixel by default, finer than a pixel because the tilt of the slit on the
    detector samples ``y`` continuously along each row) and in the wavelength
    (``df_wave`` functions uniform in um with ``wave_axis='wavelength'``: the bar
    shadow changes with the width of the diffraction pattern, ~ linear in lambda; or
    uniform in ``u`` with ``'column'``; one constant for ``mode='slit'``).

    Why this is well posed: ``y`` is fixed to the MSA, so with nods every detector pixel
    is sky in the exposures where the source is elsewhere; the sky pixels of all
    exposures together sample every ``y`` of the slitlet.  ``S * T`` is fitted by
    alternating linear least squares (``T`` given ``S``, then ``S`` given ``T``, until
    the model changes by less than ``tol`` sigma at every pixel) with second-difference
    (P-spline) priors in ``y`` and wavelength, which also bridge the few knots without
    data; residuals beyond ``clip`` sigma are rejected between iterations.  Intervals
    of ``y`` with fewer than ``min_count`` sky pixels per ``2 * ystep`` are *not
    covered* (:meth:`BarShadowModel.is_covered`); the caller falls back to the pipeline
    there.

    Source light: with ``source_distance`` (distance of each pixel to its exposure's
    trace, e.g. in units of the PSF width) the sky pixels are those farther than
    ``min_distance``.  After the fit the residuals of the sky pixels in bins of 0.5
    distance units are checked: if the bins next to the excluded region show a median
    excess above ``leak_threshold`` of the sky (and 4 sigma) -- the wings of a bright
    or extended source -- the excluded region is widened past them and the fit
    repeated (up to ``max_distance``).

    The product is degenerate under ``S -> S g``, ``T -> T / g``: the normalisation
    ``g(u)`` is fixed by the convention that the model equals the pipeline bar-shadow
    correction, in the median, where the pipeline says the shutter is unobstructed
    (``pipeline_bar > reference_bar``): this keeps the pipeline's absolute flux
    calibration.  Without a pipeline bar (all ones) the maximum of ``T`` over ``y`` is 1
    at every wavelength.

    Parameters
    ----------
    raw : numpy.ndarray
        ``(n,)`` sky-pixel values with the bar shadow in (uJy per pixel).
    var : numpy.ndarray
        ``(n,)`` read-noise variances of ``raw`` (uJy^2).
    yshutter, wave : numpy.ndarray
        ``(n,)`` shutter coordinate (shutter pitches) and wavelength (um).
    sky_pixels : numpy.ndarray
        ``(n,)`` boolean: candidate pixels to fit (valid, off-source).
    coordinate : ColumnCoordinate
        Wavelength -> column mapping.
    pipeline_bar : numpy.ndarray or None
        ``(n,)`` pipeline throughput for the normalisation (all pixels, not only sky).
    var_poisson : numpy.ndarray or None
        ``(n,)`` Poisson variances of ``raw`` (uJy^2).  Only their smooth ratio to
        ``raw`` is used, times the model, so the weights do not depend on the noise of
        the data (the measured Poisson variance would bias the fit low).
    source_distance : numpy.ndarray or None
        ``(n,)`` distance of each pixel to the trace of its exposure (any unit:
        pixels, or pixels divided by the PSF sigma at the pixel's wavelength); None:
        ``sky_pixels`` are used as they are.
    min_distance, max_distance : float
        First and largest excluded distance (unit of ``source_distance``).
    leak_threshold : float
        Mean fractional residual (of the sky) that counts as source light.
    mode : {'wave', 'slit'}
        Wavelength-dependent or independent shape.
    wave_axis : {'wavelength', 'column'}
        Axis of the wavelength dependence of ``T``.
    ystep : float
        Knot spacing in the shutter coordinate (shutter pitches).
    df_wave, df_norm, df_sky : int
        Wavelength functions of ``T``, of the normalisation ``g`` and of ``S``.
    smooth_y, smooth_w : float
        Prior widths (throughput units) of the second differences of neighbouring
        coefficients along the shutter coordinate and along wavelength (P-spline
        penalties ``D^T D / smooth^2``).
    period : float or None
        Shutter pitch in the units of ``yshutter``: the knots are made commensurate
        with it and the profiles of neighbouring shutters are tied together (prior
        width ``smooth_period``), away from the ends of the slitlet.  None: no tie.
    smooth_period : float or None
        Allowed shutter-to-shutter difference of the profile (throughput units).
    period_margin : float
        Distance (periods) from the lit ends of the slitlet within which profiles are
        not tied (the end shutters have no neighbour on their outer side).
    link_tolerance : float
        Coefficients of two shutters that differ by more than this in a first,
        wavelength-independent pass are not tied (a stuck or failed-open shutter).
    clip : float
        Outlier rejection threshold (sigma).
    n_iter : int
        Maximum number of alternating iterations.
    tol : float
        Convergence: the iterations stop when the model changes by less than ``tol``
        sigma at every pixel and the clipping of fewer than 0.1% of the pixels changes.
    min_pixels : int
        Minimum number of sky pixels.
    min_count : int
        Coverage threshold (sky pixels per ``2 * ystep`` bin).
    reference_bar : float
        Pipeline throughput above which a pixel defines the normalisation.
    n_error_sample : int
        Sky pixels on which the posterior error is evaluated.

    Returns
    -------
    BarShadowModel
        The model; ``info`` holds pixel counts, reduced chi2, the numbers of functions,
        the iterations, the excluded distance and ``bar_error``: the median posterior
        1-sigma relative error of ``T`` at the lit sky pixels (data and priors).

    Raises
    ------
    FitError
        Too few sky pixels or a singular fit.
    """
    if wave_axis not in ("wavelength", "column"):
        raise ValueError(f"wave_axis must be 'wavelength' or 'column', got {wave_axis!r}")
    px = _pixels(
        raw, var, yshutter, wave, sky_pixels, coordinate, source_distance, wave_axis, pipeline_bar
    )
    layout = _layout(
        px,
        mode=mode,
        ystep=ystep,
        df_wave=df_wave,
        df_norm=df_norm,
        df_sky=df_sky,
        smooth_y=smooth_y,
        smooth_w=smooth_w,
        period=period,
        smooth_period=smooth_period,
    )
    px = replace(px, cpois_table=_poisson_ratio(px, layout.urange, var_poisson))
    opts = FitOptions(
        period=period,
        smooth_period=smooth_period,
        period_margin=period_margin,
        link_tolerance=link_tolerance,
        clip=clip,
        n_iter=n_iter,
        tol=tol,
        min_pixels=min_pixels,
        reference_bar=reference_bar,
    )
    first = None if source_distance is None else float(min_distance)
    result = _fit_excluding_source(px, layout, opts, first, max_distance, leak_threshold)
    bar_error = _posterior_error(result, n_error_sample)
    model = BarShadowModel(
        coeffs=np.asarray(result.t_coef).reshape(layout.df_y, layout.df_w),
        yrange=layout.yrange,
        urange=layout.urange,
        df_y=layout.df_y,
        df_w=layout.df_w,
        norm_coeffs=np.ones(1),
        norm_df=1,
        coordinate=coordinate,
        covered=covered_intervals(px.ys[result.idx][result.good], 2 * layout.ystep, min_count),
        wave_axis=wave_axis,
        trange=layout.trange,
    )
    model.norm_coeffs, convention = _normalisation(model, px, layout, reference_bar)
    model.norm_df = layout.norm_df
    model.info = _fit_info(result, layout, wave_axis, bar_error, convention, model.covered)
    return model


def _pixels(
    raw, var, yshutter, wave, sky_pixels, coordinate, source_distance, wave_axis, pipeline_bar
):
    """Stage 1: every pixel's arrays, and the candidate sky pixels.

    Candidates are the ``sky_pixels`` with finite values, coordinates (and distance to
    the trace) and a positive variance.

    Returns
    -------
    FitPixels

    Raises
    ------
    FitError
        No pixel has a finite shutter coordinate and wavelength.
    """
    raw = np.asarray(raw, float)
    var = np.asarray(var, float)
    ys = np.asarray(yshutter, float)
    wave = np.asarray(wave, float)
    u_all = coordinate(wave)
    with np.errstate(invalid="ignore"):
        candidates = (
            np.asarray(sky_pixels, bool)
            & np.isfinite(raw)
            & np.isfinite(ys)
            & np.isfinite(u_all)
            & (var > 0)
        )
    dist_all = None
    if source_distance is not None:
        dist_all = np.abs(np.asarray(source_distance, float))
        candidates &= np.isfinite(dist_all)
    finite = np.isfinite(ys) & np.isfinite(u_all)
    if not finite.any():
        raise FitError("no pixel with a finite shutter coordinate and wavelength")
    t_all = wave if wave_axis == "wavelength" else u_all
    return FitPixels(raw, var, ys, wave, u_all, t_all, finite, candidates, dist_all, pipeline_bar)


def _layout(
    px, *, mode, ystep, df_wave, df_norm, df_sky, smooth_y, smooth_w, period, smooth_period
):
    """Stage 2: the bases of ``T``, ``S`` and ``g`` and the priors of ``T`` and ``S``.

    The knots of ``y`` are made commensurate with the shutter pitch when neighbouring
    shutters are tied (``period``); no basis has more functions than the detector
    columns support (short cutouts).

    Returns
    -------
    FitLayout
    """
    finite = px.finite
    ylo, yhi = float(px.ys[finite].min()), float(px.ys[finite].max())
    urange = (float(px.u_all[finite].min()), float(px.u_all[finite].max()))
    trange = (float(px.t_all[finite].min()), float(px.t_all[finite].max()))
    m_per = None
    if period is not None and smooth_period is not None and period > 4 * ystep:
        # knots commensurate with the shutter pitch: function j and j + m_per are
        # translates by exactly one period
        m_per = int(round(period / ystep))
        ystep = period / m_per
    df_y = max(int(np.ceil((yhi - ylo) / ystep)) + 3, 4)
    yrange = (ylo, ylo + (df_y - 3) * ystep)
    # No more functions than the columns support (short cutouts, few columns).
    span = urange[1] - urange[0]
    df_w = 1 if mode != "wave" else int(min(df_wave, max(4, span // 40)))
    norm_df = 1 if mode != "wave" else int(min(df_norm, max(4, span // 40)))
    df_s = int(min(df_sky, max(4, span // 6)))

    pen_y = difference_penalty(df_y) / smooth_y**2
    pen_t = np.kron(pen_y, np.eye(df_w))
    if df_w > 1:
        pen_t = pen_t + np.kron(np.eye(df_y), difference_penalty(df_w)) / smooth_w**2
    pen_s = 1e-4 * difference_band(df_s)
    return FitLayout(
        df_y, df_w, df_s, norm_df, ystep, m_per, yrange, urange, trange, pen_y, pen_t, pen_s
    )


def _poisson_ratio(px, urange, var_poisson):
    """Stage 3: nodes ``(u, var_poisson / raw)`` of the Poisson variance per unit signal.

    The Poisson variance of the weights comes from the model, not from the measured
    counts (no bias): the ratio is a smooth calibration factor of the wavelength,
    tabulated as the median in 32 bins of ``u``.  None without ``var_poisson`` or too
    few pixels.
    """
    if var_poisson is None:
        return None
    vp = np.asarray(var_poisson, float)
    raw = px.raw
    with np.errstate(invalid="ignore", divide="ignore"):
        okp = np.flatnonzero(px.candidates & (raw > 0) & np.isfinite(vp) & (vp > 0))
    okp = okp[:: max(1, okp.size // 5000)]
    if okp.size > 50:
        edges = np.linspace(urange[0], urange[1] + 1e-9, 33)
        med = binned_median(px.u_all[okp], vp[okp] / raw[okp], edges)
        cen = 0.5 * (edges[1:] + edges[:-1])
        fin = np.isfinite(med)
        if fin.sum() >= 2:
            return (cen[fin], med[fin])
    return None


def _fit_excluding_source(px, layout, opts, distance, max_distance, leak_threshold):
    """Stage 4: :func:`fit_product`, repeated with a wider exclusion while source light shows.

    ``distance`` is the first excluded distance to the trace (None: the candidates as
    they are, one fit).  After each fit the residuals of the sky pixels just beyond the
    excluded region are checked (:func:`_leak_radius`); where they show source light the
    region is widened past it, up to ``max_distance``.

    Returns
    -------
    Product
        The last fit, with ``distance`` (the final exclusion) and ``n_grow`` set.

    Raises
    ------
    FitError
        Fewer than ``opts.min_pixels`` sky pixels, or a singular fit.
    """
    n_grow = 0
    while True:
        fit = px.candidates if distance is None else px.candidates & (px.dist_all > distance)
        n_sky = int(fit.sum())
        if n_sky < opts.min_pixels:
            raise FitError(
                f"only {n_sky} sky pixels for the bar-shadow fit (need {opts.min_pixels})"
            )
        result = fit_product(fit, px, layout, opts)
        if distance is None or distance >= max_distance:
            break
        idx, model_f, w_last = result.idx, result.model, result.weights
        with np.errstate(invalid="ignore", divide="ignore"):
            frac = (px.raw[idx] - model_f) / model_f
            ferr = 1.0 / (np.sqrt(w_last) * np.abs(model_f))
        edge = _leak_radius(px.dist_all[idx], frac, ferr, distance, threshold=leak_threshold)
        if edge is None:
            break
        log.info("source light in the sky pixels out to distance %.1f: excluded", edge)
        distance = min(edge + 0.5, float(max_distance))
        n_grow += 1
    return replace(result, distance=distance, n_grow=n_grow)


def _posterior_error(result, n_error_sample):
    """Stage 5: median posterior 1-sigma relative error of ``T`` at the lit sky pixels.

    From the Cholesky factor of the last fit (data and priors), on a sample of
    ``n_error_sample`` sky pixels: the caller decides whether the model is precise
    enough to replace the pipeline's.  ``inf`` when no sampled pixel is lit.
    """
    good, solver, cf = result.good, result.solver, result.factor
    sample = np.flatnonzero(good)[:: max(1, int(good.sum()) // int(n_error_sample))]
    t_s = solver(result.t_coef)[sample]
    lit_s = t_s > 0.45 * np.nanmax(t_s)
    if not lit_s.any():
        return np.inf
    z = solve_triangular(cf[0], solver.dense_rows(sample[lit_s]).T, lower=True, check_finite=False)
    rel_err = np.sqrt(np.sum(z**2, axis=0)) / t_s[lit_s]
    return float(np.median(rel_err))


def _normalisation(model, px, layout, reference_bar):
    """Stage 6: coefficients of ``g(u)`` and the convention that fixed them.

    With a pipeline bar shadow (not all ones), ``median(T / pipeline) = 1`` where the
    pipeline says the shutter is unobstructed (``> reference_bar``), as a median in
    wavelength bins (robust to a shutter the pipeline thinks open that passes no
    light); otherwise the maximum of ``T`` over the covered shutter coordinates is 1.

    Returns
    -------
    coeffs : numpy.ndarray
        ``(layout.norm_df,)``.
    convention : str

    Raises
    ------
    FitError
        Too few pixels to normalise.
    """
    finite, ys, u_all, t_all = px.finite, px.ys, px.u_all, px.t_all
    urange, norm_df = layout.urange, layout.norm_df
    pipeline_bar = px.pipeline_bar
    if pipeline_bar is not None and np.nanmin(np.asarray(pipeline_bar)[finite]) < 0.99:
        pb = np.asarray(pipeline_bar, float)
        with np.errstate(invalid="ignore"):
            ref = np.flatnonzero(finite & (pb > reference_bar) & model.is_covered(ys))
        ref = ref[:: max(1, ref.size // 3000)]
        ratio = model.raw(ys[ref], t_all[ref]) / pb[ref]
        convention = f"median(model / pipeline) = 1 where pipeline > {reference_bar}"
        # Median in wavelength bins: robust to a shutter the pipeline thinks open but
        # that passes no light (stuck closed), or a failed-open neighbour.
        nb = 4 * max(norm_df, 1)
        edges = np.linspace(urange[0], urange[1] + 1e-9, nb + 1)
        okr = np.isfinite(ratio)
        ratio = binned_median(u_all[ref][okr], ratio[okr], edges)
        u_ref = 0.5 * (edges[1:] + edges[:-1])
    else:
        ugrid = np.linspace(*urange, 64)
        ygrid = np.linspace(*layout.yrange, 400)
        yy, uu = np.meshgrid(ygrid, ugrid)
        tt_axis = model.coordinate.inverse(uu) if model.wave_axis == "wavelength" else uu
        tt = model.raw(yy.ravel(), tt_axis.ravel()).reshape(yy.shape)
        cov = model.is_covered(yy)
        ratio = np.nanmax(np.where(cov, tt, np.nan), axis=1)
        u_ref = ugrid
        convention = "max over the shutter coordinate = 1"
    ok = np.isfinite(ratio)
    if ok.sum() < 4 * norm_df:
        raise FitError("too few pixels to normalise the bar-shadow model")
    if norm_df == 1:
        return np.array([np.median(ratio[ok])]), convention
    bn = bspline_basis(u_ref[ok], norm_df, *urange).toarray()  # (<= 32, norm_df)
    coeffs = scaled_solve(bn, np.ones(ok.sum()), ratio[ok], 1e-3 * difference_penalty(norm_df))
    return coeffs, convention


def _fit_info(result, layout, wave_axis, bar_error, convention, covered):
    """Stage 7: the statistics of the fit (:attr:`BarShadowModel.info`)."""
    extent, distance = result.extent, result.distance
    return {
        "n_sky_pixels": int(result.idx.size),
        "n_used": int(result.good.sum()),
        "n_clipped": int((~result.good).sum()),
        "reduced_chi2": round(result.chi2, 4),
        "bar_error": round(bar_error, 5),
        "iterations": result.iterations,
        "df_y": layout.df_y,
        "df_w": layout.df_w,
        "df_sky": layout.df_s,
        "df_norm": layout.norm_df,
        "wave_axis": wave_axis,
        "ystep": round(layout.ystep, 5),
        "period_links": result.n_links,
        "source_distance": None if distance is None else round(distance, 2),
        "source_leak_growths": result.n_grow,
        "lit_extent": None if extent is None else (round(extent[0], 3), round(extent[1], 3)),
        "normalisation": convention,
        "covered": [(round(a, 3), round(b, 3)) for a, b in covered],
    }


def _leak_radius(
    dist, frac, ferr, start, step=0.5, width=4.0, threshold=0.003, nsigma=4.0, min_count=20
):
    """Outer edge of the source light seen in the sky-fit residuals, or None.

    Parameters
    ----------
    dist : numpy.ndarray
        Distance of the sky pixels to the trace of their exposure (any unit).
    frac, ferr : numpy.ndarray
        Fractional residuals ``(data - model) / model`` of the sky pixels (clipped ones
        included: the core of a bright source is clipped) and their 1-sigma errors.
    start : float
        Distance excluded so far.
    step, width : float
        Bin size and extent of the distance bins examined from ``start``.
    threshold, nsigma : float
        A bin is *leaky* when the median fractional residual exceeds ``threshold`` and
        ``nsigma`` times its error (``1.25 * median(ferr) / sqrt(n)``).
    min_count : int
        Bins with fewer pixels (gaps of the mask) are skipped.

    Returns
    -------
    float or None
        The inner edge of the first clean bin beyond the leaky bins that start the
        range, or None if the first populated bin is clean.
    """
    edges = start + step * np.arange(int(round(width / step)) + 1)
    ok = np.isfinite(frac) & np.isfinite(ferr) & (dist >= edges[0]) & (dist < edges[-1])
    if not ok.any():
        return None
    med = binned_median(dist[ok], frac[ok], edges)
    err = 1.2533 * binned_median(dist[ok], ferr[ok], edges)
    counts = np.histogram(dist[ok], edges)[0]
    with np.errstate(invalid="ignore", divide="ignore"):
        leaky = (med > threshold) & (med > nsigma * err / np.sqrt(counts))
    # bins with too few pixels (gaps of the mask) neither start nor stop the run
    populated = np.flatnonzero(counts >= min_count)
    if populated.size == 0 or not leaky[populated[0]]:
        return None
    clean = populated[~leaky[populated]]
    return float(edges[clean[0]]) if clean.size else float(edges[-1])
