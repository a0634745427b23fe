"""The alternating least-squares fit of ``sky x throughput`` of the bar-shadow model.

One fit of :func:`slitcombine.core.barfit.fit_bar_shadow` (:func:`fit_product`): the
model of an un-corrected sky pixel is ``S(u) * T(y, t)``, ``S`` a cubic B-spline of the
sky in the column coordinate and ``T`` a tensor B-spline of the throughput.  It is
bilinear, so ``T`` given ``S`` and ``S`` given ``T`` are linear least-squares problems,
solved in turn (:func:`_alternate`) from a seed sky (:func:`_seed`), with the profiles
of neighbouring shutters tied by a prior (:func:`_period_links`).  The inputs are
prepared by :func:`~slitcombine.core.barfit.fit_bar_shadow`: :class:`FitPixels`,
:class:`FitLayout` and :class:`FitOptions`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from slitcombine.core.splines import BandSolver, TensorSolver, band_eval, cubic_rows

__all__ = ["FitPixels", "FitLayout", "FitOptions", "Product", "fit_product"]

log = logging.getLogger(__name__)


# ====================================================================== inputs
@dataclass(frozen=True)
class FitPixels:
    """Arrays of every pixel (flattened) and which of them may be sky.

    Attributes
    ----------
    raw, var : numpy.ndarray
        ``(n,)`` data with the bar shadow in (uJy per pixel) and read-noise variance
        (uJy^2).
    ys, wave : numpy.ndarray
        ``(n,)`` shutter coordinate (shutter pitches) and wavelength (um).
    u_all : numpy.ndarray
        ``(n,)`` column coordinate of the wavelength (pixels).
    t_all : numpy.ndarray
        ``(n,)`` wavelength coordinate of ``T``: ``wave`` or ``u_all``.
    finite : numpy.ndarray
        ``(n,)`` finite shutter coordinate and wavelength.
    candidates : numpy.ndarray
        ``(n,)`` pixels that may be fitted (valid, off-source, positive variance).
    dist_all : numpy.ndarray or None
        ``(n,)`` absolute distance to the trace; None: no source exclusion by distance.
    pipeline_bar : numpy.ndarray or None
        ``(n,)`` the pipeline's throughput (seed and normalisation).
    cpois_table : (numpy.ndarray, numpy.ndarray) or None
        Nodes ``(u, var_poisson / raw)`` of the Poisson variance per unit signal.
    """

    raw: np.ndarray
    var: np.ndarray
    ys: np.ndarray
    wave: np.ndarray
    u_all: np.ndarray
    t_all: np.ndarray
    finite: np.ndarray
    candidates: np.ndarray
    dist_all: np.ndarray | None
    pipeline_bar: np.ndarray | None
    cpois_table: tuple | None = None


@dataclass(frozen=True)
class FitLayout:
    """Spline bases and priors of the fit, fixed before the first iteration.

    Attributes
    ----------
    df_y, df_w, df_s, norm_df : int
        Functions of ``T`` in ``y`` and in wavelength, of the sky ``S`` and of the
        normalisation ``g``.
    ystep : float
        Knot spacing in ``y`` (shutter pitches).
    m_per : int or None
        Functions per shutter period when the knots are commensurate with it and
        neighbouring shutters are tied; None: no tie.
    yrange, urange, trange : (float, float)
        Ranges of the bases in ``y``, in the column coordinate and in the wavelength
        coordinate of ``T``.
    pen_y : numpy.ndarray
        ``(df_y, df_y)`` prior of ``T`` along ``y`` alone.
    pen_t : numpy.ndarray
        ``(df_y * df_w,)*2`` prior of ``T``.
    pen_s : numpy.ndarray
        ``(4, df_s)`` prior of ``S`` (band storage, relative).
    """

    df_y: int
    df_w: int
    df_s: int
    norm_df: int
    ystep: float
    m_per: int | None
    yrange: tuple
    urange: tuple
    trange: tuple
    pen_y: np.ndarray
    pen_t: np.ndarray
    pen_s: np.ndarray


@dataclass(frozen=True)
class FitOptions:
    """Options of the alternating fit.

    Attributes
    ----------
    period, smooth_period, period_margin, link_tolerance : float or None
        Ties between neighbouring shutters.
    clip, n_iter, tol, min_pixels, reference_bar : float or int
        Clipping, iterations, convergence, fewest pixels and the seed's threshold.

    All as the parameters of :func:`~slitcombine.core.barfit.fit_bar_shadow`.
    """

    period: float | None
    smooth_period: float | None
    period_margin: float
    link_tolerance: float
    clip: float
    n_iter: int
    tol: float
    min_pixels: int
    reference_bar: float


# ====================================================================== the fit
@dataclass(frozen=True)
class _Rows:
    """The pixels of one fit: data, weights and the rows of the bases of ``T`` and ``S``."""

    idx: np.ndarray  # indices of the fitted pixels among all
    y_f: np.ndarray
    r_f: np.ndarray
    var_r: np.ndarray
    vy: np.ndarray  # rows of the basis in y alone (the first pass of the period ties)
    cy: np.ndarray
    k_vals: np.ndarray  # rows of the tensor basis of T
    k_cols: np.ndarray
    sky: BandSolver  # the basis and prior of S
    cpois: np.ndarray | None  # Poisson variance per unit signal


@dataclass(frozen=True)
class _Pass:
    """The outcome of one series of alternating iterations (:func:`_alternate`)."""

    t_coef: np.ndarray
    s_coef: np.ndarray
    good: np.ndarray
    chi2: float
    weights: np.ndarray
    model: np.ndarray
    iterations: int
    factor: tuple


@dataclass(frozen=True)
class Product:
    """A fit of ``S * T`` (:func:`fit_product`).

    Attributes
    ----------
    idx : numpy.ndarray
        Indices of the fitted pixels among all.
    good : numpy.ndarray
        Fitted pixels not clipped at the end.
    t_coef, s_coef : numpy.ndarray
        Coefficients of ``T`` (``df_y * df_w``) and ``S``.
    chi2 : float
        Reduced chi2 of the unclipped pixels.
    weights, model : numpy.ndarray
        Final weights (uJy^-2) and model (uJy per pixel) of the fitted pixels.
    iterations : int
        Iterations of the last pass.
    solver : TensorSolver
        The design of ``T`` (for the posterior error).
    factor : tuple
        Cholesky factor of the last normal matrix of ``T``.
    n_links : int
        Pairs of coefficients of neighbouring shutters tied.
    extent : (float, float) or None
        Lit extent of the shutter coordinate (with shutter ties).
    distance : float or None
        The final excluded distance to the trace (set by the caller).
    n_grow : int
        Times the exclusion was widened (set by the caller).
    """

    idx: np.ndarray
    good: np.ndarray
    t_coef: np.ndarray
    s_coef: np.ndarray
    chi2: float
    weights: np.ndarray
    model: np.ndarray
    iterations: int
    solver: TensorSolver
    factor: tuple
    n_links: int
    extent: tuple | None
    distance: float | None = None
    n_grow: int = 0


def fit_product(fit, px, layout, opts):
    """The alternating fit of ``S * T`` to the pixels ``fit``.

    The sky is seeded from the pixels the pipeline calls unobstructed; the profiles of
    neighbouring shutters are tied (:func:`_period_links`); then ``T`` and ``S`` are
    fitted in turn (:func:`_alternate`).

    Parameters
    ----------
    fit : numpy.ndarray
        ``(n,)`` boolean: the sky pixels of this fit.
    px : FitPixels
        The pixels.
    layout : FitLayout
        Bases and priors.
    opts : FitOptions
        Options.

    Returns
    -------
    Product
    """
    rows = _rows(fit, px, layout)
    s_coef0, w0 = _seed(rows, px, opts)
    pen_t, n_links, extent = _period_links(rows, layout, opts, s_coef0, w0)
    solver = TensorSolver(rows.k_vals, rows.k_cols, layout.df_y * layout.df_w)
    last = _alternate(rows, solver, pen_t, s_coef0, w0, opts.n_iter, opts)
    return Product(
        idx=rows.idx,
        good=last.good,
        t_coef=last.t_coef,
        s_coef=last.s_coef,
        chi2=last.chi2,
        weights=last.weights,
        model=last.model,
        iterations=last.iterations,
        solver=solver,
        factor=last.factor,
        n_links=n_links,
        extent=extent,
    )


def _rows(fit, px, layout):
    """The fitted pixels' data and the rows of the bases of ``T`` (tensor) and ``S``."""
    idx = np.flatnonzero(fit)
    y_f, u_f, r_f = px.ys[idx], px.u_all[idx], px.raw[idx]
    var_r = px.var[idx]
    df_y, df_w = layout.df_y, layout.df_w
    vy, iy = cubic_rows(y_f, df_y, *layout.yrange)
    cy = iy[:, None] + np.arange(4)[None, :]
    if df_w > 1:
        vw, iw = cubic_rows(px.t_all[idx], df_w, *layout.trange)
        cw = iw[:, None] + np.arange(4)[None, :]
        k_vals = (vy[:, :, None] * vw[:, None, :]).reshape(idx.size, 16)
        k_cols = (cy[:, :, None] * df_w + cw[:, None, :]).reshape(idx.size, 16)
    else:
        k_vals, k_cols = vy, cy
    sky = BandSolver(*cubic_rows(u_f, layout.df_s, *layout.urange), layout.df_s, layout.pen_s)
    cpois = None if px.cpois_table is None else np.interp(u_f, *px.cpois_table)
    return _Rows(idx, y_f, r_f, var_r, vy, cy, k_vals, k_cols, sky, cpois)


def _solve_sky(rows, t_val, wgood):
    """Coefficients of ``S`` given the throughput ``t_val`` and the weights ``wgood``."""
    return rows.sky.solve(wgood * t_val**2, wgood * t_val * rows.r_f)


def _seed(rows, px, opts):
    """Initial sky and weights.

    The sky is fitted to the pixels the pipeline calls unobstructed (bar divided out),
    or to all; the first weights hold the Poisson variance of the seed model (sky times
    the pipeline bar).
    """
    n = rows.idx.size
    t_seed = np.ones(n)
    if px.pipeline_bar is not None:
        pb = np.asarray(px.pipeline_bar, float)[rows.idx]
        seed_sel = pb > opts.reference_bar
        if seed_sel.sum() >= opts.min_pixels // 2:
            t_seed = np.where(seed_sel, pb, 0.0)
    s_coef0 = _solve_sky(rows, t_seed, 1.0 / rows.var_r)
    w0 = 1.0 / rows.var_r
    if rows.cpois is not None:
        t_pipe = np.ones(n) if px.pipeline_bar is None else np.asarray(px.pipeline_bar)[rows.idx]
        w0 = 1.0 / (rows.var_r + rows.cpois * np.maximum(rows.sky(s_coef0) * t_pipe, 0.0))
    return s_coef0, w0


def _alternate(rows, solver, penalty, s_coef, w0, iterations, opts):
    """Fit ``T`` given ``S``, then ``S`` given ``T``, until the model settles.

    Residuals beyond ``opts.clip`` sigma are rejected between iterations; the
    iterations stop when the model changes by less than ``opts.tol`` sigma at every
    pixel and the clipping of at most 0.1% of the pixels changes, or after
    ``iterations``.

    Returns
    -------
    _Pass
    """
    good = np.ones(rows.idx.size, bool)
    s_val = rows.sky(s_coef)
    w = w0
    model_old = None
    t_coef, chi2, done, factor = None, np.nan, 0, None
    for _ in range(int(iterations)):
        done += 1
        wg = w * good
        t_coef, factor = solver.solve(wg * s_val**2, wg * s_val * rows.r_f, penalty, factor=True)
        t_val = solver(t_coef)
        s_coef = _solve_sky(rows, t_val, wg)
        s_val = rows.sky(s_coef)
        model_f = s_val * t_val
        if rows.cpois is not None:
            w = 1.0 / (rows.var_r + rows.cpois * np.maximum(model_f, 0.0))
        z = (rows.r_f - model_f) * np.sqrt(w)
        new_good = np.abs(z) < opts.clip
        chi2 = float(np.sum(z[new_good] ** 2) / max(new_good.sum() - solver.m, 1))
        change = (
            np.inf if model_old is None else float(np.max(np.abs(model_f - model_old) * np.sqrt(w)))
        )
        flipped = int(np.count_nonzero(new_good != good))
        log.debug("iteration %d: change %.4f sigma, %d clip flips", done, change, flipped)
        good, model_old = new_good, model_f
        if change < opts.tol and flipped <= 1e-3 * good.size:
            break
    return _Pass(t_coef, s_coef, good, chi2, w, model_old, done, factor)


def _period_links(rows, layout, opts, s_coef0, w0):
    """The prior of ``T`` with the profiles of neighbouring shutters tied.

    The shutters of the MSA are alike: the profile of each shutter is tied to the next
    one (prior width ``opts.smooth_period``), except near the two ends of the slitlet
    (no neighbour there) and between shutters that are not alike (a stuck-closed or
    failed-open one).  The lit extent comes from a quick wavelength-independent first
    pass.  Without ``layout.m_per`` the prior is left as it is.

    Returns
    -------
    pen_t : numpy.ndarray
        The prior of ``T``.
    n_links : int
        Pairs of coefficients tied.
    extent : (float, float) or None
        Lit extent of the shutter coordinate.
    """
    pen_t, n_links, extent = layout.pen_t, 0, None
    m_per, df_y, ystep, yrange = layout.m_per, layout.df_y, layout.ystep, layout.yrange
    if m_per is None:
        return pen_t, n_links, extent
    first = _alternate(
        rows, TensorSolver(rows.vy, rows.cy, df_y), layout.pen_y, s_coef0, w0, 2, opts
    )
    t0 = first.t_coef
    grid = np.linspace(float(rows.y_f.min()), float(rows.y_f.max()), 2000)  # where sky data are
    vg, ig = cubic_rows(grid, df_y, *yrange)
    prof = band_eval(vg, ig, t0)
    lit = grid[prof > 0.3 * np.nanmax(prof)]
    if not lit.size:
        return pen_t, n_links, extent
    extent = (float(lit.min()), float(lit.max()))
    margin = opts.period_margin * opts.period
    centres = yrange[0] + (np.arange(df_y) - 1.0) * ystep
    j = np.arange(3, df_y - 4 - m_per)
    keep = (centres[j] - 2 * ystep >= extent[0] + margin) & (
        centres[j + m_per] + 2 * ystep <= extent[1] - margin
    )
    # Shutters that are not alike (a stuck-closed or failed-open one) are not tied.
    keep &= np.abs(t0[j] - t0[j + m_per]) < opts.link_tolerance
    j = j[keep]
    n_links = int(j.size)
    if n_links:
        dp = np.zeros((n_links, df_y))
        dp[np.arange(n_links), j] = 1.0
        dp[np.arange(n_links), j + m_per] = -1.0
        pen_t = pen_t + np.kron(dp.T @ dp, np.eye(layout.df_w)) / opts.smooth_period**2
    return pen_t, n_links, extent
