"""The policy of ``undo_barshadow=2``: which pixels are sky, and whether the own model is used.

:func:`own_bar_shadow` measures how far the source's light reaches
(:func:`source_profile`, :func:`source_exclusion`), fits the group's own model to the
rest (:func:`slitcombine.core.barfit.fit_bar_shadow`), and decides whether it replaces
the pipeline's bar-shadow correction (:class:`OwnBarShadow`).  The facade method
:meth:`slitcombine.SlitGroup.apply_spline_bar_correction` stores the outcome.

Units: fluxes in uJy per pixel, variances in uJy^2, ``yslit`` in pixels, shutter
coordinate in shutter pitches, wavelengths in um.
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass, field
from functools import cache

import numpy as np
from scipy.optimize import least_squares

from slitcombine.core.barfit import fit_bar_shadow
from slitcombine.core.barshadow import BarShadowModel
from slitcombine.core.optics import DEFAULT_OPTICS
from slitcombine.core.profile import psf_sigma
from slitcombine.core.sky import outside_ranges
from slitcombine.core.stats import binned_median
from slitcombine.errors import FitError

__all__ = [
    "source_profile",
    "source_exclusion",
    "fit_options",
    "check_fit_options",
    "OwnBarShadow",
    "own_bar_shadow",
]


# ====================================================================== source light
def source_profile(sci, yslit, mask, core=3.0, step=0.25):
    """Peak brightness (relative to the sky) and width of the source, from the data.

    For every column the sky is the median of the valid pixels of all exposures
    farther than ``core`` pixels from their trace; the fractional excess ``sci / sky - 1`` of the
    pixels within ``core`` pixels is median-combined over columns and exposures in
    bins of ``step`` pixels of ``yslit``.  The peak of that profile is the source's
    peak surface brightness in units of the sky and its sigma come from the least-squares
    fit of a Gaussian plus a constant to that profile.

    Parameters
    ----------
    sci : numpy.ndarray
        ``(N, ny, nx)`` data with the bar shadow divided out (uJy per pixel).
    yslit : numpy.ndarray
        ``(N, ny, nx)`` row minus trace (pixels).
    mask : numpy.ndarray
        ``(N, ny, nx)`` valid pixels.
    core, step : float
        Half-width of the source region and bin size (pixels).

    Returns
    -------
    peak : float
        Median peak surface brightness of the source over the sky (dimensionless; 0
        when not detected).
    sigma : float
        Gaussian sigma of the wavelength-collapsed profile (pixels; NaN when not
        detected or wider than the core).
    """
    sci = np.asarray(sci, float)
    yslit = np.asarray(yslit, float)
    with np.errstate(invalid="ignore"):
        outer = np.asarray(mask, bool) & (np.abs(yslit) > core) & np.isfinite(sci)
        inner = np.asarray(mask, bool) & (np.abs(yslit) <= core) & np.isfinite(sci)
    # the sky is the same in every exposure of the group: one median per column
    n_exp, ny, nx = sci.shape
    vals = np.where(outer, sci, np.inf).reshape(n_exp * ny, nx)
    n_outer = outer.sum(axis=(0, 1))
    srt = np.sort(vals, axis=0)
    lo = np.clip((n_outer - 1) // 2, 0, None)
    hi = np.clip(n_outer // 2, 0, None)
    cols = np.arange(nx)
    sky = 0.5 * (srt[lo, cols] + srt[hi, cols])
    sky = np.where((n_outer >= 3) & (sky > 0), sky, np.nan)[None, :]  # (1, nx)
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = sci / sky[:, None, :] - 1.0
    ok = inner & np.isfinite(frac)
    if ok.sum() < 20:
        return 0.0, np.nan
    edges = np.arange(-core, core + step / 2, step)
    prof = binned_median(yslit[ok], frac[ok], edges)
    cen = 0.5 * (edges[1:] + edges[:-1])
    filled = np.isfinite(prof)  # bins without pixels (few sub-pixel phases) are left out
    near = filled & (np.abs(cen) < 1.5)  # the trace is known to a pixel or so
    if filled.sum() < 6 or not near.any():
        return 0.0, np.nan
    cen, prof, near = cen[filled], prof[filled], near[filled]
    k = int(np.flatnonzero(near)[np.argmax(prof[near])])
    if prof[k] <= 0:
        return 0.0, np.nan

    # Gaussian plus a constant (the residual pipeline bar shadow and sky error),
    # least squares on the binned profile
    def resid(p):
        return p[0] * np.exp(-0.5 * ((cen - p[1]) / p[2]) ** 2) + p[3] - prof

    x0 = [float(prof[k]), float(cen[k]), 0.8, 0.0]
    bounds = ([0.0, -1.5, 0.2, -np.inf], [np.inf, 1.5, core, np.inf])
    res = least_squares(resid, x0, bounds=bounds)
    peak, sigma = float(res.x[0]), float(res.x[2])
    if not res.success or sigma >= 0.99 * core:
        return peak, np.nan
    return peak, sigma


def _wing_distance(wave, s_int, ratio):
    """Distance (pixels) beyond which a compact source is fainter than ``ratio`` x its peak.

    From the detector profile of the optics model (:mod:`slitcombine.core.optics`: the
    telescope's Airy wings and the spectrograph's wide wing, which a Gaussian lacks) of a
    centred source of intrinsic width ``s_int`` at wavelength ``wave`` (um).
    """
    u, d, kernel = _wing_grids()
    strip = DEFAULT_OPTICS.strip_profiles([wave], u, sigma=s_int)[0]
    prof = kernel @ strip
    faint = np.flatnonzero(prof < ratio * prof[0])
    return float(d[faint[0]]) if faint.size else float(d[-1])


@cache
def _wing_grids():
    """The fixed grids of :func:`_wing_distance` and the post-MSA blur between them.

    ``u`` (source light at the MSA, 0.05 px steps over +-40 px), ``d`` (detector
    distances, 0.25 px steps to 40 px) and ``kernel[i, j]``, the fraction of the light at
    ``u[j]`` falling in the pixel at ``d[i]``: the same for every group, computed once per
    process (160 x 1601, 2 MB, read-only; it cost 20-30 ms of every group's bar model).
    """
    u = np.arange(-40.0, 40.0 + 1e-9, 0.05)
    d = np.arange(0.0, 40.0, 0.25)
    kernel = DEFAULT_OPTICS.kernel_pixel(d[:, None] - u[None, :])
    for a in (u, d, kernel):
        a.setflags(write=False)
    return u, d, kernel


def source_exclusion(sci, yslit, mask, psf, leak=1e-3, floor=4.0, wave=None):
    """Distance to the trace in source widths, and how many widths hold source light.

    The source's peak brightness ``A`` (in units of the sky) and its intrinsic width
    ``s_int`` come from :func:`source_profile` (the wavelength-collapsed sigma less the
    median PSF sigma and the pixel width, in quadrature).  A Gaussian source of width
    ``s(lambda) = sqrt(psf(lambda)^2 + s_int^2)`` adds less than ``leak`` of the sky
    beyond ``n = sqrt(2 ln(A / leak))`` widths; a real source has wings (the Airy rings
    of the telescope, the spectrograph's wide wing: :mod:`slitcombine.core.optics`) that
    hold ~1% of its light beyond 3 pixels, so with ``wave`` the distance is the larger of
    that and the distance where the optics model's profile falls below ``10 leak`` of the
    sky (1% by default: the precision of the bar model per pixel; a stricter limit leaves
    no sky beside a source a few tens of times the sky), at the median wavelength of
    the valid pixels (expressed in the same widths).

    Parameters
    ----------
    sci, yslit, mask : numpy.ndarray
        ``(N, ny, nx)`` data with the bar shadow divided out (uJy per pixel), row minus
        trace (pixels) and valid pixels.
    psf : numpy.ndarray
        ``(N, ny, nx)`` PSF sigma at every pixel's wavelength (pixels).
    leak : float
        Tolerated source surface brightness in units of the sky.
    floor : float
        Smallest number of widths returned.
    wave : numpy.ndarray, optional
        ``(N, ny, nx)`` wavelength, um (for the wings; None: a Gaussian source).

    Returns
    -------
    distance : numpy.ndarray
        ``(N, ny, nx)`` ``|yslit| / s(lambda)`` (source widths).
    n_widths : float
        ``max(floor, sqrt(2 ln(A / leak)), wing distance / median width)``.
    info : dict
        ``peak`` (A), ``sigma_px`` (collapsed profile), ``intrinsic_sigma_px``,
        ``wing_distance_px`` (with ``wave``).
    """
    peak, sigma = source_profile(sci, yslit, mask)
    fin = np.asarray(mask, bool) & np.isfinite(psf)
    psf_med = float(np.median(psf[fin])) if fin.any() else np.nan
    s_int = 0.0
    if np.isfinite(sigma) and np.isfinite(psf_med):
        s_int = float(np.sqrt(max(sigma**2 - psf_med**2 - 1.0 / 12.0, 0.0)))
    with np.errstate(invalid="ignore", divide="ignore"):
        width = np.sqrt(psf**2 + s_int**2)
        distance = np.abs(yslit) / width
    n_widths = float(floor)
    info = {
        "peak": round(peak, 4),
        "sigma_px": round(sigma, 3) if np.isfinite(sigma) else None,
        "intrinsic_sigma_px": round(s_int, 3),
    }
    if peak > leak:
        n_widths = max(n_widths, float(np.sqrt(2.0 * np.log(peak / leak))))
        if wave is not None:
            ok = fin & np.isfinite(wave) & (np.asarray(wave, float) > 0)
            if ok.any():
                wing = _wing_distance(float(np.median(wave[ok])), s_int, 10 * leak / peak)
                info["wing_distance_px"] = round(wing, 2)
                n_widths = max(n_widths, wing / float(np.median(width[ok])))
    return distance, n_widths, info


# ====================================================================== the policy
#: Options of :func:`fit_bar_shadow` that :func:`own_bar_shadow` sets itself.
_SET_BY_POLICY = ("pipeline_bar", "var_poisson", "source_distance", "mode")


def fit_options():
    """Names of the options of :func:`fit_bar_shadow` a caller may give to :func:`own_bar_shadow`.

    Returns
    -------
    list of str
        The keyword-only parameters of :func:`fit_bar_shadow`, less those
        :func:`own_bar_shadow` sets from the data (``pipeline_bar``, ``var_poisson``,
        ``source_distance``, ``mode``).
    """
    params = inspect.signature(fit_bar_shadow).parameters.values()
    return [p.name for p in params if p.kind == p.KEYWORD_ONLY and p.name not in _SET_BY_POLICY]


def check_fit_options(options):
    """Raise :class:`TypeError` for a name that is not an option of the own fit.

    Parameters
    ----------
    options : dict
        Keyword options meant for :func:`fit_bar_shadow` (:func:`fit_options`).

    Raises
    ------
    TypeError
        An unknown name (the same error Python gives for an unknown keyword).
    """
    unknown = sorted(set(options) - set(fit_options()))
    if unknown:
        raise TypeError(
            f"unknown option(s) of the own bar-shadow fit: {', '.join(unknown)}; "
            f"known: {', '.join(fit_options())}"
        )


@dataclass
class OwnBarShadow:
    """What :func:`own_bar_shadow` decided: the new throughput, or why the pipeline's stays.

    Attributes
    ----------
    bar : numpy.ndarray or None
        ``(N, npix)`` new throughput: the model, and the pipeline's value where the
        shutter coordinate has no sky pixels (not covered); None when the pipeline's
        correction is kept.
    model : BarShadowModel or None
        The fitted model (None when the fit failed).
    reason : str or None
        Why the pipeline's correction is kept (None when it is replaced).
    failed : bool
        The fit itself failed (too few sky pixels, a singular fit): ``reason`` is its
        error.
    level : int
        Logging level of the fallback: INFO for a model too uncertain (the usual outcome
        for a faint sky), WARNING otherwise.
    details : dict
        What the step records: the fit's statistics (``model.info``; none when the fit
        failed) and, when the model is used, the source measurements (``source_*``) and
        ``uncovered_pixels_pipeline_kept``.
    """

    bar: np.ndarray | None
    model: BarShadowModel | None
    reason: str | None = None
    failed: bool = False
    level: int = logging.WARNING
    details: dict = field(default_factory=dict)

    @classmethod
    def failure(cls, exc):
        """The outcome of a fit that raised ``exc`` (a :class:`FitError`).

        Parameters
        ----------
        exc : Exception
            The error; its text is the reason.

        Returns
        -------
        OwnBarShadow
        """
        return cls(None, None, str(exc), failed=True)


def own_bar_shadow(
    sci,
    var_rnoise,
    var_poisson,
    bar_pipe,
    yshutter,
    wave,
    mask,
    yslit,
    coordinate,
    *,
    cube_shape,
    has_pipeline_bar=True,
    mode="wave",
    period=None,
    mask_yslit=None,
    max_bar_error=0.02,
    max_chi2=3.0,
    **options,
):
    """The group's own bar-shadow throughput, or the decision to keep the pipeline's.

    The policy of ``undo_barshadow=2`` without a table:

    1. the sky pixels: with ``mask_yslit=None`` every valid pixel, weighted by its
       distance to the trace in source widths (:func:`source_exclusion`: PSF sigma and
       the measured intrinsic size in quadrature), excluded out to ``n >= 4`` widths
       (``min_distance``, grows with the source's peak brightness) and widened by the
       fit while its residuals show source light; otherwise the valid pixels outside the
       ``yslit`` ranges of ``mask_yslit``;
    2. the fit (:func:`fit_bar_shadow`) of the data with the pipeline's bar shadow put
       back in, normalised to the pipeline where that is ~1;
    3. the verdict: the pipeline's correction is kept when the fit fails, when the
       model's median posterior error exceeds ``max_bar_error`` (faint sky, few columns;
       logged at INFO) or its reduced chi2 exceeds ``max_chi2`` (source light or a
       structured background);
    4. the throughput: the model, with the pipeline's value where the shutter
       coordinate has no sky pixels.

    Parameters
    ----------
    sci, var_rnoise, var_poisson : numpy.ndarray
        ``(N, npix)`` data with the pipeline bar shadow divided out (uJy per pixel) and
        its variances (uJy^2).
    bar_pipe : numpy.ndarray
        ``(N, npix)`` the pipeline's throughput.
    yshutter, wave : numpy.ndarray
        ``(N, npix)`` shutter coordinate (shutter pitches) and wavelength (um).
    mask : numpy.ndarray
        ``(N, npix)`` valid pixels.
    yslit : numpy.ndarray
        ``(N, npix)`` distance to the trace (pixels).
    coordinate : ColumnCoordinate
        Wavelength -> column mapping of the sky spline.
    cube_shape : (int, int, int)
        ``(N, ny, nx)``: the data as a cube (the source profile is measured per column).
    has_pipeline_bar : bool
        The pipeline applied a bar shadow (else the model is normalised to a maximum
        of 1).
    mode : {'wave', 'slit'}
        Wavelength-dependent or independent model.
    period : float or None
        Shutter pitch in units of ``yshutter`` (ties neighbouring shutters).
    mask_yslit : list of (float, float) or None
        Source region excluded, ``yslit`` ranges (pixels); None: measured (step 1).
    max_bar_error, max_chi2 : float
        Thresholds of the verdict.
    **options
        Options of :func:`fit_bar_shadow` (:func:`fit_options` less ``period``, a
        parameter here); a ``min_distance`` given here wins over the measured one.

    Returns
    -------
    OwnBarShadow
    """
    sky, dist, excl, n_widths = _own_sky_pixels(sci, mask, yslit, wave, cube_shape, mask_yslit)
    if n_widths is not None:
        options.setdefault("min_distance", n_widths)
    try:
        model = fit_bar_shadow(
            (sci * bar_pipe).ravel(),
            (var_rnoise * bar_pipe**2).ravel(),
            yshutter.ravel(),
            wave.ravel(),
            sky.ravel(),
            coordinate,
            pipeline_bar=bar_pipe.ravel() if has_pipeline_bar else None,
            var_poisson=(var_poisson * bar_pipe**2).ravel(),
            source_distance=dist,
            mode=mode,
            period=period,
            **options,
        )
    except FitError as exc:
        return OwnBarShadow.failure(exc)
    info = model.info
    reason, level = None, logging.WARNING
    if info["bar_error"] > max_bar_error:
        # the usual outcome for a faint sky (gratings): not worth a warning
        level = logging.INFO
        reason = (
            f"own model too uncertain (median error {info['bar_error']:.3f} > "
            f"max_bar_error {max_bar_error}: faint sky or few columns)"
        )
    elif info["reduced_chi2"] > max_chi2:
        reason = (
            "own model does not describe the sky pixels (reduced chi2 "
            f"{info['reduced_chi2']:.2f} > max_chi2 {max_chi2}: source light "
            "or a structured background)"
        )
    if reason is not None:
        return OwnBarShadow(None, model, reason, level=level, details=dict(info))
    bar_new = model(yshutter, wave)
    uncovered = np.isfinite(bar_new) & ~model.is_covered(yshutter)
    details = {
        **info,
        **{f"source_{k}": v for k, v in excl.items()},
        "uncovered_pixels_pipeline_kept": int(uncovered.sum()),
    }
    return OwnBarShadow(np.where(uncovered, bar_pipe, bar_new), model, details=details)


def _own_sky_pixels(sci, mask, yslit, wave, cube_shape, mask_yslit):
    """Candidate sky pixels of the own fit and their distance to the trace.

    Returns
    -------
    sky : numpy.ndarray
        ``(N, npix)`` candidates.
    dist : numpy.ndarray or None
        ``(N * npix,)`` distance in source widths (None with ``mask_yslit``).
    excl : dict
        The source measurements of :func:`source_exclusion` (empty with ``mask_yslit``).
    n_widths : float or None
        The distance to exclude, source widths (None with ``mask_yslit``).
    """
    if mask_yslit is not None:
        ranges = [tuple(r) for r in mask_yslit]
        return mask & outside_ranges(yslit, ranges), None, {}, None
    # Distance to the trace in source widths (PSF and intrinsic size; the PSF is narrow
    # in the blue, where the sky is faint and every pixel near a bar counts), excluded
    # out to where a Gaussian source of the measured brightness is below 1e-3 of the
    # sky; the fit widens the exclusion past any source light left in its residuals
    # (non-Gaussian wings).
    with np.errstate(invalid="ignore"):
        dist, n_widths, excl = source_exclusion(
            sci.reshape(cube_shape),
            yslit.reshape(cube_shape),
            mask.reshape(cube_shape),
            psf_sigma(wave).reshape(cube_shape),
            wave=wave.reshape(cube_shape),
        )
    return mask, dist.ravel(), excl, n_widths
