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

The modules, by method: :mod:`slitcombine.core.rowmodel` (the own-row model and the
sampling of the other exposures), :mod:`slitcombine.core.consensus` (the consensus
residual ``z``), this module (thresholds and the tests against the row, the trace
envelope, the neighbours and the profile), :mod:`slitcombine.core.hotpixels` (the same
detector pixel in several exposures) and :mod:`slitcombine.core.shutters` (stuck
shutters); the names of the other four remain importable from here.

Array conventions: per-pixel arrays are ``(N, ny*nx)`` as on :class:`SlitGroup`
(``sh = (ny, nx)``); data in uJy per pixel, variances in uJy^2, ``yslit`` in pixels,
``wave`` in um.  No function here modifies its inputs.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.special import ndtri

# Names of the modules split out of this one, importable from here as before the split
# (redundant aliases: re-exports).
from slitcombine.core.consensus import ConsensusResult as ConsensusResult
from slitcombine.core.consensus import column_sky as column_sky
from slitcombine.core.consensus import consensus_residuals as consensus_residuals
from slitcombine.core.hotpixels import hot_cold_pixels as hot_cold_pixels
from slitcombine.core.hotpixels import majority_count as majority_count
from slitcombine.core.hotpixels import multiple_exposure_mask as multiple_exposure_mask
from slitcombine.core.rowmodel import _cube
from slitcombine.core.rowmodel import fill_short_gaps as fill_short_gaps
from slitcombine.core.rowmodel import row_model as row_model
from slitcombine.core.rowmodel import sample_source_frame as sample_source_frame
from slitcombine.core.rowmodel import side_medians as side_medians
from slitcombine.core.rowmodel import source_frame_coordinates as source_frame_coordinates
from slitcombine.core.shutters import stuck_shutters as stuck_shutters
from slitcombine.core.stats import masked_median as masked_median
from slitcombine.errors import ConfigurationError

__all__ = [
    "normal_extrapolated_threshold",
    "grow_flags",
    "percentile_outliers",
    "trace_envelope_outliers",
    "neighbour_outliers",
    "profile_outliers",
]


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
    lo, hi = sorted(float(v) for v in yslit_range)
    ok = np.asarray(valid, bool) & np.isfinite(data)
    with np.errstate(invalid="ignore"):
        band = (yslit > lo) & (yslit < hi)
    exc, env = _source_envelope(data, ok, band, sh, n_exp, filter_size)
    limit = threshold * np.clip(env, 0.0, None)
    with np.errstate(invalid="ignore"):
        flags = ok & (exc > limit[None, None, :]).reshape(ok.shape) & (z > sn_threshold)
    return flags, env


def _source_envelope(data, ok, band, sh, n_exp, filter_size):
    """Excess of each pixel over its column's sky, and the source envelope per column.

    Returns
    -------
    exc : numpy.ndarray
        ``(N, ny, nx)`` data minus the sky of the exposure and column, uJy.
    env : numpy.ndarray
        ``(nx,)`` envelope of the source peaks (see :func:`trace_envelope_outliers`), uJy.
    """
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
    return exc, env


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
    zp = _profile_residuals(data, var, ok, profile, sh, rel_error)
    use = ok & np.isfinite(zp)
    if int(use.sum()) < 20:
        return high, low, zp, info
    high, low, nb, nbin = _running_percentile_flags(zp, use, yslit, nfilt, grow, low_sigma)
    info["n_bins"] = int(nb)
    info["n_per_bin"] = int(nbin)
    return high, low, zp, info


def _profile_residuals(data, var, ok, profile, sh, rel_error):
    """``zp`` of :func:`profile_outliers`: sky and flux of each exposure and column by
    weighted linear least squares of ``d = b + F P``, residual over its error."""
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
    return zc.reshape(data.shape)


def _running_percentile_flags(zp, use, yslit, nfilt, grow, low_sigma):
    """High and low flags against the running percentiles of ``zp`` along ``yslit``.

    Returns
    -------
    high, low : numpy.ndarray
        ``(N, ny*nx)`` boolean.
    nb, nbin : int
        Number of bins and pixels per bin.
    """
    n_use = int(use.sum())
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
    return high, low, nb, nbin
