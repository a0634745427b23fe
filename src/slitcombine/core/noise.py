"""How the noise of the data compares with the propagated variances: measured, per band.

Pure functions, no state.  The JWST pipeline's variances (``VAR_POISSON``,
``VAR_RNOISE``) leave out correlated read noise (1/f), the flat-field and resampling
covariance: the noise of real NIRSpec data is ~1.2-1.6 times the propagated sigma.
:func:`measure_noise_scale` measures that factor from the residuals of the fitted
source model, as a smooth function of wavelength, so that the extraction's errors are
honest for faint and bright sources alike.

Method
------
The pixel table (one row per differenced pixel, :mod:`slitcombine.core.extract`) holds, for
each row, the data ``d`` (uJy), its propagated variance ``v`` and the unit-flux model
``p`` of the source in that row (``path_profile``: the positive trace minus the
negative traces of the other nods, with the throughput).  Per exposure and column the
source flux ``F`` is the weighted least-squares amplitude of ``p``; the residuals are

``z = (d - F p) / sqrt(v (1 - h))``

with the leverage ``h = p^2 / v / sum(p^2 / v)`` (the amplitude was fitted to the same
pixels, which makes the residuals smaller by ``sqrt(1 - h)``).  A model is never
perfect: where the source is bright its residuals hold the model's error as well as the
noise.  So the rows are sorted by the source light they hold in units of their noise,
``L = |F| p_abs / sqrt(v)`` (``p_abs``: the positive and negative traces counted apart,
``path_profile_abs``, so that a row where they cancel is not taken as faint), and in
bins of ``L`` the spread of ``z`` (biweight scale: robust to missed cosmic rays, 87%
efficient) is fitted with

``scale(L)**2 = s**2 + (eps L)**2``

(non-negative weighted least squares over the bins): ``s`` is the noise over the
propagated sigma, ``eps`` the model's fractional error.  Faint rows (the sky between the
traces, the wings, all of a faint source) pin ``s`` directly; for a bright source with
few faint rows the fit extrapolates the brighter bins to ``L = 0`` instead of taking
the model's error for noise.  This is done in wavelength bands of at least
``min_pixels`` rows (up to :data:`MAX_BANDS`) and ``s`` is interpolated linearly in
wavelength between the band centres (flat beyond).  The factor applied to the errors is
``max(s, 1)``: a scale below 1 is noise in the measurement, not a reason to trust the
data more than their variances.  The errors of ``s`` count the distinct detector pixels
(the rows of one pixel in the differences of the different nods share its noise).
"""

from __future__ import annotations

import logging

import numpy as np
from astropy.stats import biweight_scale
from scipy.optimize import nnls

__all__ = [
    "DEFAULT_MIN_PIXELS",
    "MAX_BANDS",
    "LIGHT_EDGES",
    "model_residuals",
    "noise_and_model_error",
    "band_scales",
    "NoiseScale",
    "measure_noise_scale",
]

log = logging.getLogger(__name__)

#: Smallest number of rows of a wavelength band.
DEFAULT_MIN_PIXELS = 1500

#: Largest number of wavelength bands.
MAX_BANDS = 8

#: Edges of the bins of source light per row, in units of the row's noise.
LIGHT_EDGES = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, np.inf)

#: Fewest rows of a light bin.
_MIN_BIN_ROWS = 30

#: Efficiency of the biweight scale for Gaussian residuals.
_BIWEIGHT_EFFICIENCY = 0.87


def model_residuals(flux, var, model, group_key, min_rows=3):
    """Residuals of a per-group amplitude fit, normalised and corrected for leverage.

    Parameters
    ----------
    flux, var : numpy.ndarray
        ``(n,)`` data (uJy) and propagated variances (uJy^2).
    model : numpy.ndarray
        ``(n,)`` unit-flux model of each row.
    group_key : numpy.ndarray
        ``(n,)`` integer key of the group sharing one amplitude (exposure and column).
    min_rows : int
        Groups with fewer valid rows get NaN residuals (too few degrees of freedom).

    Returns
    -------
    z : numpy.ndarray
        ``(n,)`` residuals in units of the propagated sigma (NaN where undefined).
    fitted : numpy.ndarray
        ``(n,)`` the fitted model ``F p`` (uJy).
    amplitude : numpy.ndarray
        ``(n,)`` the fitted amplitude ``F`` of the row's group (uJy).
    """
    flux = np.asarray(flux, float)
    var = np.asarray(var, float)
    model = np.asarray(model, float)
    ok = np.isfinite(flux) & np.isfinite(var) & (var > 0) & np.isfinite(model)
    key = np.where(ok, np.asarray(group_key, np.int64), 0)
    _, inv = np.unique(key, return_inverse=True)
    w = np.where(ok, 1.0 / np.where(ok, var, 1.0), 0.0)
    spp = np.bincount(inv, w * model * model)
    sdp = np.bincount(inv, w * np.where(ok, flux * model, 0.0))
    nrow = np.bincount(inv, ok.astype(float))
    with np.errstate(invalid="ignore", divide="ignore"):
        amp = np.where(spp > 0, sdp / spp, 0.0)
        lev = np.where(spp[inv] > 0, w * model * model / spp[inv], 0.0)
        fitted = amp[inv] * model
        z = (flux - fitted) / np.sqrt(var * np.clip(1.0 - lev, 1e-3, None))
    z[~ok | (nrow[inv] < min_rows)] = np.nan
    return z, fitted, amp[inv]


def _scale_and_error(z, pixel):
    s = float(biweight_scale(z))
    n_eff = np.unique(pixel).size
    return s, s / np.sqrt(2.0 * _BIWEIGHT_EFFICIENCY * max(n_eff - 1, 1))


def noise_and_model_error(z, light, pixel=None, edges=LIGHT_EDGES):
    """Fit ``scale(L)**2 = s**2 + (eps L)**2`` to the spread of residuals in light bins.

    Parameters
    ----------
    z : numpy.ndarray
        ``(n,)`` normalised residuals.
    light : numpy.ndarray
        ``(n,)`` source light of each row in units of its noise (``L``).
    pixel : numpy.ndarray, optional
        ``(n,)`` detector pixel of each row (for the errors; default: rows independent).
    edges : sequence of float
        Edges of the light bins.

    Returns
    -------
    dict
        ``scale`` (``s``), ``scale_err``, ``model_error`` (``eps``, fraction), ``npix``
        (rows used), ``bins`` (per bin: ``light``, ``scale``, ``scale_err``, ``npix``);
        ``scale`` is NaN without a usable bin.
    """
    z = np.asarray(z, float)
    light = np.asarray(light, float)
    ok = np.isfinite(z) & np.isfinite(light)
    z, light = z[ok], light[ok]
    pixel = np.arange(z.size) if pixel is None else np.asarray(pixel)[ok]
    idx = np.digitize(light, edges) - 1
    bins = []
    for k in range(len(edges) - 1):
        sel = idx == k
        if sel.sum() < _MIN_BIN_ROWS:
            continue
        s, err = _scale_and_error(z[sel], pixel[sel])
        bins.append(
            {
                "light": float(np.median(light[sel])),
                "scale": s,
                "scale_err": err,
                "npix": int(sel.sum()),
            }
        )
    out = {"scale": float("nan"), "scale_err": float("nan"), "model_error": float("nan")}
    out.update(npix=int(sum(b["npix"] for b in bins)), bins=bins)
    if not bins:
        return out
    x = np.array([b["light"] ** 2 for b in bins])
    y = np.array([b["scale"] ** 2 for b in bins])
    sig = np.array([2.0 * b["scale"] * b["scale_err"] for b in bins])
    sig = np.maximum(sig, 1e-6)
    design = np.column_stack([np.ones_like(x), x]) / sig[:, None]
    if len(bins) == 1:
        s2, e2 = y[0], 0.0
        s2_err = sig[0]
    else:
        (s2, e2), _ = nnls(design, y / sig)
        try:
            cov = np.linalg.inv(design.T @ design)
            s2_err = float(np.sqrt(max(cov[0, 0], 0.0)))
        except np.linalg.LinAlgError:
            s2_err = float(sig.min())
    s = float(np.sqrt(max(s2, 0.0)))
    out.update(
        scale=s,
        scale_err=float(s2_err / (2.0 * max(s, 1e-3))),
        model_error=float(np.sqrt(max(e2, 0.0))),
    )
    return out


def band_scales(z, wave, light, min_pixels=DEFAULT_MIN_PIXELS, max_bands=MAX_BANDS, pixel=None):
    """:func:`noise_and_model_error` in wavelength bands of equal numbers of rows.

    Parameters
    ----------
    z : numpy.ndarray
        ``(n,)`` normalised residuals (NaN ignored).
    wave : numpy.ndarray
        ``(n,)`` wavelengths, um.
    light : numpy.ndarray
        ``(n,)`` source light of each row in units of its noise.
    min_pixels : int
        Rows per band (fewer rows in total: one band, or none below 50).
    max_bands : int
        Largest number of bands.
    pixel : numpy.ndarray, optional
        ``(n,)`` detector pixel of each row (for the errors).

    Returns
    -------
    astropy.table.Table
        One row per band: ``wave_min``, ``wave_max``, ``wave`` (median, um), ``scale``
        (``s``, dimensionless), ``scale_err`` (1 sigma), ``model_error`` (``eps``) and
        ``npix`` (rows).  Empty without 50 rows or a usable light bin.
    """
    from astropy import units as u
    from astropy.table import Table

    ok = np.isfinite(z) & np.isfinite(wave) & np.isfinite(light)
    z, wave, light = (np.asarray(a, float)[ok] for a in (z, wave, light))
    pixel = np.arange(z.size) if pixel is None else np.asarray(pixel)[ok]
    tab = Table(
        names=("wave_min", "wave_max", "wave", "scale", "scale_err", "model_error", "npix"),
        dtype=(float, float, float, float, float, float, int),
    )
    if z.size < 50:
        return tab
    nband = int(np.clip(z.size // max(int(min_pixels), 1), 1, max_bands))
    order = np.argsort(wave, kind="stable")
    for idx in np.array_split(order, nband):
        fit = noise_and_model_error(z[idx], light[idx], pixel[idx])
        if not np.isfinite(fit["scale"]):
            continue
        ww = wave[idx]
        tab.add_row(
            (
                ww.min(),
                ww.max(),
                float(np.median(ww)),
                fit["scale"],
                fit["scale_err"],
                fit["model_error"],
                idx.size,
            )
        )
    for c in ("wave_min", "wave_max", "wave"):
        tab[c].unit = u.um
    return tab


class NoiseScale:
    """A measured noise scale: the factor on the propagated errors, per wavelength.

    Parameters
    ----------
    bands : astropy.table.Table
        :func:`band_scales` output.
    pooled : dict
        :func:`noise_and_model_error` of all the rows together.
    per_exposure : dict
        ``{exposure index: scale}`` (pooled over wavelength).

    Attributes
    ----------
    bands, per_exposure
        As given.
    pooled : float
        Scale of all the rows together (NaN if not measured).
    pooled_err, model_error : float
        Its error and the model's fractional error of the pooled fit.
    npix : int
        Rows used.
    """

    def __init__(self, bands, pooled, per_exposure):
        self.bands = bands
        self.pooled = float(pooled["scale"])
        self.pooled_err = float(pooled["scale_err"])
        self.model_error = float(pooled["model_error"])
        self.npix = int(pooled["npix"])
        self.per_exposure = dict(per_exposure)

    @property
    def measured(self):
        """Whether any band was measured."""
        return len(self.bands) > 0

    def scale(self, wave):
        """Measured scale at ``wave`` (linear between band centres, flat beyond).

        Parameters
        ----------
        wave : array-like
            Wavelength, um.

        Returns
        -------
        numpy.ndarray
            Dimensionless scale (1 where not measured or ``wave`` is not finite).
        """
        wave = np.asarray(wave, float)
        if not self.measured:
            return np.ones_like(wave)
        x = np.asarray(self.bands["wave"], float)
        y = np.asarray(self.bands["scale"], float)
        out = np.interp(np.where(np.isfinite(wave), wave, x[0]), x, y)
        return np.where(np.isfinite(wave), out, 1.0)

    def error_factor(self, wave):
        """Factor applied to the errors: ``max(scale(wave), 1)``.

        Parameters
        ----------
        wave : array-like
            Wavelength, um.

        Returns
        -------
        numpy.ndarray
            Dimensionless factor >= 1.
        """
        return np.maximum(self.scale(wave), 1.0)

    def as_dict(self):
        """Summary for ``meta`` and provenance (plain Python types)."""

        def r4(v):
            return round(float(v), 4) if np.isfinite(v) else None

        return {
            "scale": r4(self.pooled),
            "scale_err": r4(self.pooled_err),
            "model_error": r4(self.model_error),
            "n_pixels": self.npix,
            "bands": [
                {
                    "wave_min": round(float(r["wave_min"]), 4),
                    "wave_max": round(float(r["wave_max"]), 4),
                    "scale": round(float(r["scale"]), 4),
                    "scale_err": round(float(r["scale_err"]), 4),
                    "model_error": round(float(r["model_error"]), 4),
                    "npix": int(r["npix"]),
                }
                for r in self.bands
            ],
            "per_exposure": {int(k): round(v, 4) for k, v in self.per_exposure.items()},
        }


def measure_noise_scale(pixtab, min_pixels=DEFAULT_MIN_PIXELS, max_bands=MAX_BANDS):
    """Noise of a pixel table relative to its propagated variances (see the module notes).

    Parameters
    ----------
    pixtab : astropy.table.Table
        Pixel table with ``flux``, ``var``, ``wave``, ``exposure_index``, ``xslit``,
        ``pixel_index`` and ``path_profile`` (or ``profile``); ``path_profile_abs`` if
        present.
    min_pixels : int
        Rows per wavelength band.
    max_bands : int
        Largest number of bands.

    Returns
    -------
    NoiseScale
    """
    prof_col = "path_profile" if "path_profile" in pixtab.colnames else "profile"
    flux = np.asarray(pixtab["flux"], float)
    var = np.asarray(pixtab["var"], float)
    model = np.asarray(pixtab[prof_col], float)
    wave = np.asarray(pixtab["wave"], float)
    exp_idx = np.asarray(pixtab["exposure_index"], np.int64)
    col = np.rint(np.asarray(pixtab["xslit"], float)).astype(np.int64)
    key = exp_idx * (int(col.max()) + 1 if col.size else 1) + col
    z, fitted, amp = model_residuals(flux, var, model, key)
    total = (
        np.asarray(pixtab["path_profile_abs"], float)
        if "path_profile_abs" in pixtab.colnames
        else np.abs(model)
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        light = np.abs(amp) * total / np.sqrt(var)
    pix = np.asarray(pixtab["pixel_index"]) if "pixel_index" in pixtab.colnames else None
    use = np.isfinite(z) & np.isfinite(light)
    bands = band_scales(
        z[use],
        wave[use],
        light[use],
        min_pixels=min_pixels,
        max_bands=max_bands,
        pixel=None if pix is None else pix[use],
    )
    pooled = noise_and_model_error(z[use], light[use], None if pix is None else pix[use])
    per_exp = {}
    for e in np.unique(exp_idx[use]):
        sel = use & (exp_idx == e)
        fit = noise_and_model_error(z[sel], light[sel], None if pix is None else pix[sel])
        if np.isfinite(fit["scale"]):
            per_exp[int(e)] = fit["scale"]
    return NoiseScale(bands, pooled, per_exp)
