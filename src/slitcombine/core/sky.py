"""Sky models: a robust spline fitted to off-source pixels, or modulating a tabulated sky.

Pure functions on ``(N, npix)`` arrays; :mod:`slitcombine.group._sky_methods` wraps them as
``SlitGroup`` methods.  Units: fluxes in uJy per pixel, variances in uJy^2, wavelengths
in um, ``yslit`` in pixels.

Sky spline (:func:`fit_sky`)
----------------------------
The sky is a smooth function of wavelength only, identical in every exposure and row
(the bar shadow is divided out of ``sci`` before).  It is a cubic B-spline in the
*column coordinate* ``u(lambda)`` of a reference trace
(:class:`~slitcombine.core.splines.ColumnCoordinate`), so the ``df`` knots are uniform
in detector pixels (resolution elements) whatever the dispersion.  With a tabulated
(global) sky ``T(lambda)`` the model is ``T(lambda) * spline(u)``, a template modulated
by a smooth function.  The fit is weighted least squares with weights from the
read-noise variance, which does not depend on the measured counts and so does not bias
the fit low (the total variance from the measured slope does); a small second-difference
penalty keeps knots without data well defined.  Outliers are rejected iteratively in S/N units.

Thresholds
----------
msaexp's ``high_clip`` (0.8) and ``absolute_threshold`` (0.2) are absolute levels in uJy.
Here they keep their names and defaults but act in S/N units: they are converted once,
at the group's median noise ``sigma_med`` of the candidate sky pixels, to
``k_high = high_clip / sigma_med`` and ``k_abs = max(absolute_threshold / sigma_med, 3)``,
and every pixel is then judged by its own residual ``(sci - sky) / sigma``: pixels more
than ``k_high`` above a running-median first guess are never sky candidates, and pixels
with ``|z| > k_abs`` are rejected between iterations.  On the CEERS PRISM trio
(``sigma_med`` = 0.016 uJy with the group's own bar-shadow model) this gives k_high = 51
and k_abs = 12.7, i.e. msaexp's levels at the median pixel, but a noisy pixel is no
longer clipped for its noise and a quiet one keeps a proportionally tighter cut; the
rejection threshold never goes below 3 sigma (``min_clip``).  ``outlier_threshold`` was
already in sigma units.

Global sky
----------
A tabulated sky (``SlitGroup.sky_arrays``, from ``sky_arrays=`` or ``sky_file``) is not
used as is: :meth:`estimate_sky` fits ``T(lambda) * spline(u)`` with
``meta['global_sky_df']`` (7) functions, so the table fixes the fine spectral shape and
the data fix the level and any smooth difference (calibration, zodiacal level, the own
bar-shadow normalisation).  ``df=0`` fits one scale factor of the table and ``df<0``
uses it unscaled.  Without :meth:`estimate_sky`, ``sky_background`` interpolates the
table directly.  The table is read by :func:`slitcombine.io.table_readers.read_sky_table`.

Background spectra (per-exposure skies measured elsewhere) are
:mod:`slitcombine.core.background`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy import sparse

from slitcombine.core.splines import (
    bspline_basis,
    difference_penalty,
    mean_normal_diag,
    solve_penalized,
)
from slitcombine.core.stats import binned_median
from slitcombine.errors import ConfigurationError, FitError

__all__ = [
    "DEFAULT_GRATING_LIMITS",
    "DEFAULT_MASK_YSLIT",
    "outside_ranges",
    "grating_wave_limits",
    "sky_candidates",
    "tabulated_sky",
    "fit_sky",
    "sky_outliers",
]

log = logging.getLogger(__name__)

#: Wavelength limits and nominal sampling (um) per disperser: ``[wmin, wmax, dlambda]``.
DEFAULT_GRATING_LIMITS = {
    "g140h": [0.6, 1.9, 0.000238],
    "g140m": [0.6, 3.35, 0.00063],
    "g235h": [1.6, 3.2, 0.000396],
    "g235m": [1.5, 5.3, 0.00106],
    "g395h": [2.8, 5.3, 0.000666],
    "g395m": [2.6, 5.6, 0.00179],
    "grismc": [2.5, 5.1, 0.002],
    "grismr": [2.5, 5.1, 0.002],
    "prism": [0.5, 5.6, 0.01],
}

#: Default source region excluded from the sky, pixels from the trace.
DEFAULT_MASK_YSLIT = ((-4.5, 4.5),)

#: Minimum number of sky pixels per spline degree of freedom.
PIXELS_PER_DF = 8


# ====================================================================== candidates
def outside_ranges(yslit, ranges):
    """True where ``yslit`` is finite and outside every ``(lo, hi)`` range.

    Parameters
    ----------
    yslit : numpy.ndarray
        Distance to the trace (pixels).
    ranges : sequence of (float, float)
        Ranges excluded (inclusive), pixels.

    Returns
    -------
    numpy.ndarray
        Boolean, same shape.
    """
    out = np.isfinite(yslit)
    for lo, hi in ranges:
        with np.errstate(invalid="ignore"):
            out &= ~((yslit >= lo) & (yslit <= hi))
    return out


def _trim_by_variance(sel, var, var_percentiles):
    """Drop candidates with extreme variances (percentiles, or counts when negative)."""
    if var_percentiles is None:
        return sel, 0
    lo, hi = var_percentiles
    idx = np.flatnonzero(sel)
    if idx.size < 10:
        return sel, 0
    v = var.ravel()[idx]
    order = np.argsort(v, kind="stable")
    drop = np.zeros(idx.size, bool)
    if lo is not None:
        if lo < 0:
            drop[order[: int(-lo)]] = True
        elif lo > 0:
            drop |= v < np.percentile(v, lo)
    if hi is not None:
        if hi < 0:
            drop[order[::-1][: int(-hi)]] = True
        elif hi < 100:
            drop |= v > np.percentile(v, hi)
    out = sel.copy().ravel()
    out[idx[drop]] = False
    return out.reshape(sel.shape), int(drop.sum())


def sky_candidates(
    mask,
    yslit,
    bar,
    wave,
    var,
    *,
    mask_yslit=DEFAULT_MASK_YSLIT,
    min_bar=0.95,
    var_percentiles=(-5, -5),
    wave_limits=None,
):
    """Pixels that may be used for the sky: valid, off-source, unshadowed.

    Parameters
    ----------
    mask : numpy.ndarray
        ``(N, npix)`` valid pixels.
    yslit : numpy.ndarray
        ``(N, npix)`` distance from the trace (pixels).
    bar : numpy.ndarray
        ``(N, npix)`` bar-shadow throughput.
    wave, var : numpy.ndarray
        ``(N, npix)`` wavelength (um) and variance (uJy^2).
    mask_yslit : sequence of (float, float)
        ``yslit`` ranges excluded (source and contaminants), pixels.
    min_bar : float or None
        Minimum bar-shadow throughput.
    var_percentiles : (float, float) or None
        Exclude pixels with variances outside this percentile range; a negative value
        is a number of pixels dropped from that end instead (msaexp's convention).
    wave_limits : (float, float) or None
        Wavelength range (um).

    Returns
    -------
    candidates : numpy.ndarray
        ``(N, npix)`` boolean.
    counts : dict
        Pixels removed by each criterion.
    """
    sel = mask & np.isfinite(wave) & np.isfinite(var) & (var > 0)
    counts = {"valid": int(sel.sum())}
    sel &= outside_ranges(yslit, mask_yslit or ())
    counts["off_source"] = int(sel.sum())
    if min_bar is not None:
        with np.errstate(invalid="ignore"):
            sel &= bar > min_bar
        counts["bar"] = int(sel.sum())
    if wave_limits is not None:
        with np.errstate(invalid="ignore"):
            sel &= (wave >= wave_limits[0]) & (wave <= wave_limits[1])
        counts["wave_limits"] = int(sel.sum())
    sel, ndrop = _trim_by_variance(sel, var, var_percentiles)
    counts["variance_trimmed"] = ndrop
    counts["candidates"] = int(sel.sum())
    return sel, counts


def grating_wave_limits(grating, grating_limits=None):
    """Wavelength range of the sky fit for a disperser.

    Parameters
    ----------
    grating : str
        Disperser (any case).
    grating_limits : dict or None
        ``{grating: [wmin, wmax, dlambda]}`` (um, keys in any case); None:
        :data:`DEFAULT_GRATING_LIMITS`.

    Returns
    -------
    (float, float) or None
        ``(wmin, wmax)`` in um, None for a disperser not listed.
    """
    limits_all = {str(k).lower(): v for k, v in (grating_limits or DEFAULT_GRATING_LIMITS).items()}
    limits = limits_all.get(str(grating).lower())
    return None if limits is None else (float(limits[0]), float(limits[1]))


def tabulated_sky(wave, flux):
    """A tabulated sky as a template of :func:`fit_sky`.

    Parameters
    ----------
    wave, flux : numpy.ndarray
        The table: increasing wavelengths (um) and the sky (uJy per pixel).

    Returns
    -------
    callable
        ``template(w)``: the sky interpolated linearly at ``w`` (constant beyond the
        ends).
    """

    def template(w):
        return np.interp(w, wave, flux)

    return template


def sky_outliers(sci, var, sky2d, candidates, threshold):
    """Sky candidates more than ``threshold`` sigma from the sky model.

    Parameters
    ----------
    sci, var, sky2d : numpy.ndarray
        ``(N, npix)`` data, variance and sky model (uJy per pixel, uJy^2).
    candidates : numpy.ndarray
        ``(N, npix)`` the pixels judged.
    threshold : float
        Limit of ``|sci - sky2d| / sqrt(var)``.

    Returns
    -------
    numpy.ndarray
        ``(N, npix)`` boolean.
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        z = (sci - sky2d) / np.sqrt(var)
    return candidates & (np.abs(z) > threshold)


# ====================================================================== the fit
def fit_sky(
    sci,
    var,
    wvar,
    wave,
    candidates,
    coordinate,
    *,
    df=51,
    template=None,
    high_clip=0.8,
    absolute_threshold=0.2,
    min_clip=3.0,
    max_iter=5,
    penalty=1e-4,
    min_pixels=20,
):
    """Robust spline fit of a wavelength-only sky to candidate pixels.

    Parameters
    ----------
    sci : numpy.ndarray
        ``(N, npix)`` data with the sky in (uJy per pixel, bar shadow divided out).
    var : numpy.ndarray
        ``(N, npix)`` total variance (uJy^2): defines the S/N of residuals.
    wvar : numpy.ndarray
        ``(N, npix)`` variance for the weights (read noise: independent of the counts).
    wave : numpy.ndarray
        ``(N, npix)`` wavelength (um).
    candidates : numpy.ndarray
        ``(N, npix)`` boolean sky candidates (:func:`sky_candidates`).
    coordinate : ColumnCoordinate
        Wavelength -> column coordinate of the spline.
    df : int
        Spline functions; 0: a scalar times the template (or a constant); < 0: the
        template as is (no fit, needs ``template``).  Reduced when there are fewer than
        ``8 * df`` pixels or ``4 * df`` detector columns.
    template : callable or None
        ``template(wave) -> uJy per pixel``: a tabulated sky to modulate.
    high_clip, absolute_threshold : float or None
        See the module docstring (converted to S/N at the median noise).
    min_clip : float
        Floor of the iterative rejection threshold (sigma).
    max_iter : int
        Maximum number of fit/reject iterations.
    penalty : float
        Second-difference penalty relative to the mean normal diagonal.
    min_pixels : int
        Minimum number of sky pixels.

    Returns
    -------
    dict
        ``coeffs``, ``covar``, ``df``, ``used`` (``(N, npix)`` pixels of the final fit),
        ``npix``, ``n_candidates``, ``n_high_clipped``, ``n_iter``, ``reduced_chi2``,
        ``sigma_med``, ``k_high``, ``k_abs``, ``evaluate`` (callable
        ``wave, with_err=True -> (sky, err)``), ``urange`` and ``template`` (whether a
        template was modulated).

    Raises
    ------
    FitError
        Fewer than ``min_pixels`` candidates.
    ConfigurationError
        ``df < 0`` without a template.
    """
    cand = np.asarray(candidates, bool)
    n_cand = int(cand.sum())
    if df < 0 and template is None:
        raise ConfigurationError("df < 0 means 'use the tabulated sky as is' but none is given")
    if n_cand < min_pixels:
        raise FitError(
            f"only {n_cand} off-source sky pixels (need {min_pixels}); widen the slit region "
            "or give a tabulated sky"
        )
    finite = np.isfinite(wave)
    u_all = np.full(wave.shape, np.nan)
    u_all[finite] = coordinate(wave[finite])
    urange = (float(np.min(u_all[finite])), float(np.max(u_all[finite])))
    design = _SkyDesign(_effective_df(df, n_cand, urange), urange, template, coordinate)

    idx = np.flatnonzero(cand.ravel())
    w_c = wave.ravel()[idx]
    u_c = u_all.ravel()[idx]
    y_c = sci.ravel()[idx]
    sig_c = np.sqrt(var.ravel()[idx])
    wt_c = 1.0 / wvar.ravel()[idx]
    sigma_med = float(np.median(sig_c))
    k_high = None if high_clip is None else float(high_clip) / sigma_med
    k_abs = (
        None if absolute_threshold is None else max(float(absolute_threshold) / sigma_med, min_clip)
    )
    good = np.isfinite(y_c) & np.isfinite(wt_c) & (wt_c > 0)
    if template is not None:
        good &= np.isfinite(np.asarray(template(w_c), float))
    if k_high is not None:
        good &= _below_first_guess(u_c, y_c, sig_c, good, k_high, design)
    n_high = int(n_cand - good.sum())

    a = design.matrix(w_c, u_c)
    if design.df < 0:
        coeffs, covar, n_iter, chi2 = np.ones(1), np.zeros((1, 1)), 0, np.nan
    else:
        coeffs, covar, good, n_iter, chi2 = _fit_rejecting(
            a, y_c, sig_c, wt_c, good, design, penalty, k_abs, max_iter, min_pixels
        )
    used = np.zeros(cand.size, bool)
    used[idx[good]] = True
    model = _SkyModel(design, np.asarray(coeffs), covar)
    return {
        "coeffs": model.coeffs,
        "covar": covar,
        "df": design.df,
        "used": used.reshape(cand.shape),
        "npix": int(good.sum()),
        "n_candidates": n_cand,
        "n_high_clipped": n_high,
        "n_iter": n_iter,
        "reduced_chi2": round(chi2, 4) if np.isfinite(chi2) else None,
        "sigma_med": sigma_med,
        "k_high": k_high,
        "k_abs": k_abs,
        "evaluate": model.evaluate,
        "urange": urange,
        "template": template is not None,
    }


def _effective_df(df, n_cand, urange):
    """``df`` reduced to what the pixels and detector columns support (logged)."""
    df_eff = int(df)
    if df_eff > 0:
        span = urange[1] - urange[0]  # columns
        df_eff = int(min(df_eff, max(4, n_cand // PIXELS_PER_DF), max(4, span // 4)))
        if df_eff < df:
            log.info("sky spline: %d pixels, df reduced from %d to %d", n_cand, df, df_eff)
    return df_eff


@dataclass(frozen=True)
class _SkyDesign:
    """The sky model's design: a B-spline in ``u`` (times the template), or one column."""

    df: int
    urange: tuple
    template: object
    coordinate: object

    def matrix(self, w, u):
        """Design matrix at wavelengths ``w`` (um) and column coordinates ``u``."""
        tmpl = None if self.template is None else np.asarray(self.template(w), float)
        if self.df > 0:
            mat = bspline_basis(u, self.df, *self.urange, outside="clip")
            if tmpl is not None:
                mat = mat.multiply(tmpl[:, None]).tocsr()
            return mat
        return np.ones((w.size, 1)) if tmpl is None else tmpl[:, None]


def _below_first_guess(u_c, y_c, sig_c, good, k_high, design):
    """Pixels less than ``k_high`` sigma above a first guess (running median per knot)."""
    nb = max(design.df if design.df > 0 else 16, 4)
    edges = np.linspace(design.urange[0], design.urange[1] + 1e-9, nb + 1)
    med = binned_median(u_c[good], y_c[good], edges)
    centres = 0.5 * (edges[1:] + edges[:-1])
    ok = np.isfinite(med)
    if not ok.any():
        return np.ones(u_c.size, bool)
    guess = np.interp(u_c, centres[ok], med[ok])
    return (y_c - guess) / sig_c < k_high


def _fit_rejecting(a, y_c, sig_c, wt_c, good, design, penalty, k_abs, max_iter, min_pixels):
    """Penalised fits, rejecting ``|z| > k_abs`` between them, and the sandwich covariance.

    Returns
    -------
    coeffs, covar, good, n_iter, chi2
    """
    m = a.shape[1]
    pen = penalty * difference_penalty(m) if (design.df > 0 and m > 2) else np.zeros((m, m))
    base = good.copy()
    coeffs = covar = None
    n_iter = 0
    chi2 = np.nan
    for n_iter in range(1, max_iter + 1):  # noqa: B007 - n_iter is reported
        if good.sum() < max(min_pixels, m + 1):
            raise FitError(f"only {int(good.sum())} sky pixels left after rejection")
        scale = mean_normal_diag(a, wt_c * good)
        coeffs, covar = solve_penalized(a, wt_c * good, np.nan_to_num(y_c), pen * scale)
        z = (y_c - np.asarray(a @ coeffs).ravel()) / sig_c
        new_good = base & np.isfinite(z)
        if k_abs is not None:
            new_good &= np.abs(z) < k_abs
        chi2 = float(np.sum(z[new_good] ** 2) / max(int(new_good.sum()) - m, 1))
        if np.array_equal(new_good, good):
            break
        good = new_good
    # The weights are 1/var_rnoise but the noise is var: sandwich covariance.
    wv = (wt_c * good) ** 2 * sig_c**2
    if sparse.issparse(a):
        meat = (a.T @ sparse.csr_array(a.multiply(wv[:, None]))).toarray()
    else:
        meat = a.T @ (a * wv[:, None])
    return coeffs, covar @ meat @ covar, good, n_iter, chi2


@dataclass(frozen=True)
class _SkyModel:
    """A fitted sky: the design, its coefficients and their covariance."""

    design: _SkyDesign
    coeffs: np.ndarray
    covar: np.ndarray

    def evaluate(self, w, with_err=True):
        """Sky (uJy per pixel) and its 1-sigma model error at wavelengths ``w`` (um)."""
        w = np.asarray(w, float)
        shape = w.shape
        wf = w.ravel()
        out = np.full(wf.size, np.nan)
        err = np.full(wf.size, np.nan)
        ok = np.isfinite(wf)
        design, coeffs, covar = self.design, self.coeffs, self.covar
        if design.df < 0:
            out[ok] = np.asarray(design.template(wf[ok]), float)
            err[ok] = 0.0
        else:
            mat = design.matrix(wf[ok], design.coordinate(wf[ok]))
            out[ok] = np.asarray(mat @ coeffs).ravel()
            if not with_err:
                pass
            elif sparse.issparse(mat):
                mc = np.asarray(mat @ covar)
                err[ok] = np.sqrt(np.maximum(np.asarray(mat.multiply(mc).sum(axis=1)).ravel(), 0))
            else:
                err[ok] = np.sqrt(np.maximum(np.sum((mat @ covar) * mat, axis=1), 0))
        return out.reshape(shape), err.reshape(shape)
