"""How the noise of the data compares with the propagated variances: measured, per band.

Pure functions, no state.  The JWST pipeline's variances (``VAR_POISSON``,
``VAR_RNOISE``) leave out correlated read noise (1/f), the flat-field and resampling
covariance: the noise of real NIRSpec data is ~1.2-1.6 times the propagated sigma.
:func:`measure_noise_scale` measures that factor from the residuals of the fitted
source model, as a smooth function of wavelength, so that the extraction's errors are
honest for faint and bright sources alike.

Method
------
The pixel table (one row per differenced pixel, :mod:`slitcombine.extract`) holds, for
each row, the data ``d`` (uJy), its propagated variance ``v`` and the unit-flux model
``p`` of the source in that row (``path_profile``: the positive trace minus the
negative traces of the other nods, with the throughput).  Per exposure and column the
source flux ``F`` is the weighted least-squares amplitude of ``p``; the residuals are

``z = (d - F p) / sqrt(v (1 - h))``

with the leverage ``h = p^2 / v / sum(p^2 / v)`` (the amplitude was fitted to the same
pixels, which makes the residuals smaller by ``sqrt(1 - h)``).  Only rows whose model is
fainter than ``model_fraction`` times their noise enter, so that an imperfect model of
a bright source (a PSF never fits to 1%) does not pass for noise: the sky between the
traces, the faint wings, and every pixel of a faint source.  Their spread is measured in
wavelength bands of at least ``min_pixels`` rows with the biweight scale
(:func:`astropy.stats.biweight_scale`: robust to missed cosmic rays, 87% efficient),
and interpolated linearly in wavelength between the band centres (flat beyond).  The
factor applied to the errors is ``max(scale, 1)``: a scale below 1 is noise in the
measurement, not a reason to trust the data more than their variances.
"""

from __future__ import annotations

import logging

import numpy as np
from astropy.stats import biweight_scale

__all__ = [
    "DEFAULT_MODEL_FRACTION",
    "DEFAULT_MIN_PIXELS",
    "model_residuals",
    "band_scales",
    "NoiseScale",
    "measure_noise_scale",
]

log = logging.getLogger(__name__)

#: Rows whose model exceeds this fraction of their noise are left out.
DEFAULT_MODEL_FRACTION = 1.0

#: Smallest number of rows of a wavelength band (a 2% precision on its scale).
DEFAULT_MIN_PIXELS = 1500

#: Largest number of wavelength bands.
MAX_BANDS = 8


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
    return z, fitted


def band_scales(z, wave, min_pixels=DEFAULT_MIN_PIXELS, max_bands=MAX_BANDS):
    """Biweight scale of residuals in wavelength bands of equal numbers of rows.

    Parameters
    ----------
    z : numpy.ndarray
        ``(n,)`` normalised residuals (NaN ignored).
    wave : numpy.ndarray
        ``(n,)`` wavelengths, um.
    min_pixels : int
        Rows per band (fewer rows in total: one band, or none below 50).
    max_bands : int
        Largest number of bands.

    Returns
    -------
    astropy.table.Table
        One row per band: ``wave_min``, ``wave_max``, ``wave`` (median, um), ``scale``
        (dimensionless), ``scale_err`` (1 sigma) and ``npix``.  Empty without 50 rows.
    """
    from astropy import units as u
    from astropy.table import Table

    ok = np.isfinite(z) & np.isfinite(wave)
    z, wave = np.asarray(z, float)[ok], np.asarray(wave, float)[ok]
    tab = Table(
        names=("wave_min", "wave_max", "wave", "scale", "scale_err", "npix"),
        dtype=(float, float, float, float, float, int),
    )
    if z.size < 50:
        return tab
    nband = int(np.clip(z.size // max(int(min_pixels), 1), 1, max_bands))
    order = np.argsort(wave, kind="stable")
    for idx in np.array_split(order, nband):
        zz, ww = z[idx], wave[idx]
        s = float(biweight_scale(zz))
        # biweight efficiency ~0.87 for Gaussian residuals
        err = s / np.sqrt(2.0 * 0.87 * max(zz.size - 1, 1))
        tab.add_row((ww.min(), ww.max(), float(np.median(ww)), s, err, zz.size))
    for c in ("wave_min", "wave_max", "wave"):
        tab[c].unit = u.um
    return tab


class NoiseScale:
    """A measured noise scale: the factor on the propagated errors, per wavelength.

    Parameters
    ----------
    bands : astropy.table.Table
        :func:`band_scales` output.
    pooled : float
        Scale of all the rows together (NaN if not measured).
    npix : int
        Number of rows used.
    per_exposure : dict
        ``{exposure index: scale}`` (pooled over wavelength).
    model_fraction : float
        The model-to-noise limit of the rows used.

    Attributes
    ----------
    bands, pooled, npix, per_exposure, model_fraction
        As given.
    """

    def __init__(self, bands, pooled, npix, per_exposure, model_fraction):
        self.bands = bands
        self.pooled = float(pooled)
        self.npix = int(npix)
        self.per_exposure = dict(per_exposure)
        self.model_fraction = float(model_fraction)

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
        return {
            "scale": round(self.pooled, 4) if np.isfinite(self.pooled) else None,
            "n_pixels": self.npix,
            "model_fraction": self.model_fraction,
            "bands": [
                {
                    "wave_min": round(float(r["wave_min"]), 4),
                    "wave_max": round(float(r["wave_max"]), 4),
                    "scale": round(float(r["scale"]), 4),
                    "scale_err": round(float(r["scale_err"]), 4),
                    "npix": int(r["npix"]),
                }
                for r in self.bands
            ],
            "per_exposure": {int(k): round(v, 4) for k, v in self.per_exposure.items()},
        }


def measure_noise_scale(
    pixtab,
    model_fraction=DEFAULT_MODEL_FRACTION,
    min_pixels=DEFAULT_MIN_PIXELS,
    max_bands=MAX_BANDS,
):
    """Noise of a pixel table relative to its propagated variances (see the module notes).

    Parameters
    ----------
    pixtab : astropy.table.Table
        Pixel table with ``flux``, ``var``, ``wave``, ``exposure_index``, ``xslit`` and
        ``path_profile`` (or ``profile``).
    model_fraction : float
        Rows whose fitted model exceeds this fraction of their sigma are left out.
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
    z, fitted = model_residuals(flux, var, model, key)
    with np.errstate(invalid="ignore"):
        faint = np.abs(fitted) < model_fraction * np.sqrt(var)
    use = faint & np.isfinite(z)
    bands = band_scales(z[use], wave[use], min_pixels=min_pixels, max_bands=max_bands)
    pooled = float(biweight_scale(z[use])) if use.sum() >= 50 else float("nan")
    per_exp = {}
    for e in np.unique(exp_idx[use]):
        sel = use & (exp_idx == e)
        if sel.sum() >= 50:
            per_exp[int(e)] = float(biweight_scale(z[sel]))
    return NoiseScale(bands, pooled, int(use.sum()), per_exp, model_fraction)
