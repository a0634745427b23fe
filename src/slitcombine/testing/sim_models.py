"""What the simulator simulates: gratings, emission lines, spectra and its conventions.

The dispersers (:data:`GRATINGS`), the emission lines (:class:`EmissionLine`,
:data:`DEFAULT_LINES`), the result records (:class:`SourceTruth`,
:class:`SimulatedObservation`), the simple physical models (the PSF width
:func:`psf_sigma_pixels`, the sky :func:`default_sky`, the efficiency and the stand-in
path loss) and the source spectrum per detector column (:func:`column_spectrum`).  The
instrument's numbers come from :mod:`slitcombine.instrument`; the constants here are
the simulator's conventions (the pipeline's bar-shadow floor, the DQ bits, the photon
conversion).  Used by :func:`slitcombine.testing.simulate.simulate_observation`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.special import ndtr

from slitcombine.instrument import PIXEL_SCALE, SHUTTER_HEIGHT, SHUTTER_PITCH, TELESCOPE_AREA

__all__ = [
    "GratingSetup",
    "GRATINGS",
    "EmissionLine",
    "DEFAULT_LINES",
    "SourceTruth",
    "SimulatedObservation",
    "psf_sigma_pixels",
    "default_sky",
    "efficiency",
    "pathloss_uniform",
    "dispersion_knots",
    "column_spectrum",
    "xpos_shift",
]

log = logging.getLogger(__name__)

#: Shutter pitch in ``y_slit`` units (1.15).
PITCH_UNITS = SHUTTER_PITCH / SHUTTER_HEIGHT
#: Sign of ``d y_slit / d row`` (negative in the real NRS files).
YSLIT_DIRECTION = -1
#: Pipeline floor of the bar-shadow correction outside the open shutters.
BARSHADOW_FLOOR = 0.42
#: Constant of the photon conversion: e-/s per (microJy * dlambda/lambda) for the
#: collecting area (``TELESCOPE_AREA`` m^2 in cm^2; h in erg s).
PHOTON_CONSTANT = 1e-29 * (TELESCOPE_AREA * 1e4) / 6.62607015e-27
C_ANGSTROM = 2.99792458e18  # speed of light [Angstrom / s]
C_KMS = 2.99792458e5  # speed of light [km / s]

# JWST DQ bits
DO_NOT_USE = 1
DEAD = 1024
HOT = 2048
MSA_FAILED_OPEN = 2**29

SHUTTER_IDS_PER_COLUMN = 365
FIXED_SLIT_NUMS = {"S200A1": 1, "S200A2": 2, "S400A1": 3, "S1600A1": 4}


@dataclass(frozen=True)
class GratingSetup:
    """A disperser/filter pair.

    Parameters
    ----------
    grating, filter : str
        ``GRATING`` and ``FILTER`` keyword values.
    wave_min, wave_max : float
        Valid wavelength range [micron] (``WAVSTART``/``WAVEND``); the WCS is NaN outside.
    nx : int
        Default cutout width [pixels]. The cutout starts 4 px blueward of ``wave_min``.
    dispersion : float
        Linear dispersion at ``wave_min`` [micron / pixel] (gratings only).
    dispersion_slope : float
        Relative change of the dispersion over the full width (gratings only).
    description : str
        Human-readable note.
    """

    grating: str
    filter: str
    wave_min: float
    wave_max: float
    nx: int
    dispersion: float = 0.0
    dispersion_slope: float = 0.0
    description: str = ""


#: The supported configurations. The H gratings use the first 2048 px of their ~3600 px
#: spectra (one detector's worth), to keep files small.
GRATINGS: dict[str, GratingSetup] = {
    "PRISM": GratingSetup(
        "PRISM",
        "CLEAR",
        0.6,
        5.3,
        416,
        description="R = 24.45/l^2 + 9.985 l^2.075 (2.2 px per resolution element), "
        "fitted to the CEERS WAVELENGTH extension; R~31 at 1.2 um, ~320 at 5.3 um",
    ),
    "G140M": GratingSetup(
        "G140M", "F100LP", 0.97, 1.89, 1449, 6.30e-4, 0.03, "R~1000, 6.3-6.5 A/px"
    ),
    "G235M": GratingSetup(
        "G235M", "F170LP", 1.66, 3.17, 1424, 1.05e-3, 0.03, "R~1000, 10.5-10.8 A/px"
    ),
    "G395M": GratingSetup(
        "G395M", "F290LP", 2.87, 5.27, 1348, 1.77e-3, 0.03, "R~1000, 17.7-18.2 A/px"
    ),
    "G140H": GratingSetup(
        "G140H",
        "F100LP",
        0.97,
        1.89,
        2048,
        2.36e-4,
        0.01,
        "R~2700, 2.36 A/px; only the first 2048 px (0.97-1.45 um) are simulated",
    ),
    "G235H": GratingSetup(
        "G235H",
        "F170LP",
        1.66,
        3.17,
        2048,
        3.96e-4,
        0.01,
        "R~2700, 3.96 A/px; only the first 2048 px (1.66-2.47 um) are simulated",
    ),
    "G395H": GratingSetup(
        "G395H",
        "F290LP",
        2.87,
        5.27,
        2048,
        6.65e-4,
        0.01,
        "R~2700, 6.65 A/px; only the first 2048 px (2.87-4.23 um) are simulated",
    ),
}


PRISM_R = (24.45, 9.985, 2.075)
EDGE_PIXELS = 4  # columns with NaN wavelength on each side of the valid range


@dataclass(frozen=True)
class EmissionLine:
    """An emission line of the simulated source.

    Give exactly one of ``peak_ratio`` and ``flux``.

    Parameters
    ----------
    rest_wavelength : float
        Rest-frame (vacuum) wavelength [Angstrom].
    peak_ratio : float, optional
        Peak of the line (alone) in the instrument-resolution truth spectrum, sampled per
        column, in units of the continuum in that column [dimensionless]; 50 gives a line
        50x the continuum.
    flux : float, optional
        Integrated line flux [erg s^-1 cm^-2].
    name : str
        Label stored in the truth metadata.
    """

    rest_wavelength: float
    peak_ratio: float | None = None
    flux: float | None = None
    name: str = ""


#: Default lines: [OIII] 4960, 5008, H-beta and H-alpha, relative to the continuum.
DEFAULT_LINES: tuple[EmissionLine, ...] = (
    EmissionLine(4862.68, peak_ratio=2.0, name="Hbeta"),
    EmissionLine(4960.30, peak_ratio=8.0 / 2.98, name="[OIII]4960"),
    EmissionLine(5008.24, peak_ratio=8.0, name="[OIII]5008"),
    EmissionLine(6564.61, peak_ratio=5.0, name="Halpha"),
)


@dataclass
class SourceTruth:
    """Truth of one simulated source.

    Attributes
    ----------
    source_id, source_name, slitlet_id, slit_name :
        Identifiers written to the files.
    files : list of pathlib.Path
        The data files holding this source, in exposure order.
    truth_path : pathlib.Path
        The ECSV truth table.
    truth : astropy.table.Table
        The truth table (see :func:`simulate_observation`).
    cosmic_rays : astropy.table.Table
        Injected cosmic-ray pixels: ``exposure`` (1-based exposure number), ``index``
        (0-based position in ``files``), ``row``, ``col``, ``amplitude`` [MJy/sr added to
        SCI] and ``sigma`` (amplitude in units of the pixel's noise).
    bad_pixels : astropy.table.Table
        Hot and dead pixels (``row``, ``col``, ``kind``), the same in every exposure.
    """

    source_id: int
    source_name: str
    slitlet_id: int
    slit_name: str
    files: list[Path]
    truth_path: Path
    truth: object
    cosmic_rays: object
    bad_pixels: object


@dataclass
class SimulatedObservation:
    """Result of :func:`simulate_observation`.

    Attributes
    ----------
    output_dir : pathlib.Path
        Where everything was written.
    files : list of pathlib.Path
        All data files written (per-slit ``*_phot.*.fits`` or per-exposure ``*_cal.fits``).
    truth_path : pathlib.Path
        Truth table of the first (or only) source.
    truth : astropy.table.Table
        Truth table of the first source.
    sources : list of SourceTruth
        One entry per source.
    exposures : astropy.table.Table
        One row per exposure: ``exposure`` number, ``position`` (1-based nod position),
        ``nod_offset`` [shutter pitches, or fixed-slit nod steps], ``x_offset``,
        ``y_offset`` [arcsec] and ``delta_rows`` (trace shift relative to the reference
        [pixels]).
    elapsed : float
        Wall-clock time of the simulation and writing [s].
    options : dict
        The main options used (grating, filter, fixed_slit, n_shutters, n_nods,
        nod_offsets, n_per_position, seed).
    """

    output_dir: Path
    files: list[Path]
    truth_path: Path
    truth: object
    sources: list[SourceTruth]
    exposures: object
    elapsed: float = 0.0
    options: dict = field(default_factory=dict)


# --------------------------------------------------------------------------------------
# Physical models
# --------------------------------------------------------------------------------------
def psf_sigma_pixels(wave):
    """Gaussian sigma of the NIRSpec PSF/LSF on the detector.

    Parameters
    ----------
    wave : array_like
        Wavelength [micron].

    Returns
    -------
    numpy.ndarray
        Sigma [pixels]: FWHM linear from 1.2 px at 1 micron to 1.9 px at 5 micron (close to
        the diffraction limit), floored at 1.0 px FWHM, divided by 2.3548.
    """
    wave = np.asarray(wave, dtype=float)
    fwhm = 1.2 + 0.175 * (wave - 1.0)
    return np.maximum(fwhm, 1.0) / 2.3548


def default_sky(wave):
    """Smooth zodiacal + thermal sky template.

    Parameters
    ----------
    wave : array_like
        Wavelength [micron].

    Returns
    -------
    numpy.ndarray
        Sky [microJy per pixel] (0.1035 arcsec pixels): 0.085 microJy/px at 2 micron,
        0.069 at 3 micron and 0.44 at 5 micron, close in shape and level to the CEERS sky
        (0.080, 0.052 and 0.43). :func:`simulate_observation` rescales it to ``sky_level``
        at 2 micron.
    """
    wave = np.asarray(wave, dtype=float)
    zodi = 0.1 * np.exp(-0.5 * (np.log(wave / 1.3) / 0.7) ** 2)
    thermal = 0.6 * (wave / 5.3) ** 6
    return zodi + thermal


def efficiency(grating, wave):
    """Idealised end-to-end efficiency (telescope, instrument and QE), dimensionless."""
    wave = np.asarray(wave, dtype=float)
    if grating.grating == "PRISM":
        return 0.55 * np.exp(-0.5 * (np.log(wave / 2.8) / 1.0) ** 2)
    centre = 0.5 * (grating.wave_min + grating.wave_max)
    width = 0.45 * (grating.wave_max - grating.wave_min)
    return 0.45 * np.exp(-0.5 * ((wave - centre) / width) ** 2)


def pathloss_uniform(wave):
    """Stand-in for the pipeline's uniform-source path-loss array (1.35-2.6)."""
    return 1.2 + 0.26 * np.asarray(wave, dtype=float)


def dispersion_knots(grating, nx):
    """Wavelength [micron] at the integer columns -1 to ``nx`` of the cutout."""
    xk = np.arange(-1, nx + 1, dtype=float)
    if grating.grating == "PRISM":
        a, b, p = PRISM_R

        def column(lam):
            return 2.2 * (-a / (2.0 * lam**2) + b * lam**p / p)

        lam = np.linspace(0.45, 5.9, 40001)
        x = column(lam)
        x = x - column(grating.wave_min) + EDGE_PIXELS
        return xk, np.interp(xk, x, lam)
    d0 = grating.dispersion
    slope = grating.dispersion_slope / max(grating.nx - 1, 1)
    x = xk - EDGE_PIXELS
    return xk, grating.wave_min + d0 * x + 0.5 * d0 * slope * x**2


# --------------------------------------------------------------------------------------
# Source spectrum
# --------------------------------------------------------------------------------------
def column_spectrum(src, grating, geom, wave_col, dwdx, wave_true, sig_psf):
    """Continuum shape and lines per column.

    Returns
    -------
    cont_shape : numpy.ndarray
        Continuum for a 1 microJy amplitude at 2 micron [microJy] (the user spectrum
        itself if one was given).
    lines_fixed : numpy.ndarray
        Lines given by absolute flux [microJy].
    lines_ratio : numpy.ndarray
        Lines given by peak ratio, per unit continuum amplitude [microJy].
    line_info : list of dict
        One entry per line (observed wavelength, pixel centre, flux ...).
    user_spec : bool
        True if ``cont_shape`` is the user spectrum.
    """
    nx = wave_col.size
    x = np.arange(nx, dtype=float)
    z = src["redshift"]
    cont_shape = np.zeros(nx)
    lines_fixed = np.zeros(nx)
    lines_ratio = np.zeros(nx)
    info = []
    if src["spectrum"] is not None:
        wave, flux = src["spectrum"]
        spec = np.interp(wave_true, wave, flux, left=0.0, right=0.0)
        spec[~np.isfinite(spec)] = 0.0
        return spec, lines_fixed, lines_ratio, info, True

    good = np.isfinite(wave_true)
    cont_shape[good] = (wave_true[good] / 2.0) ** src["continuum_slope"]
    # Lyman break, smoothed by the LSF in pixel space
    lya = 0.121567 * (1 + z)
    xk = geom.xk
    wk = geom.wave_knots
    shift = xpos_shift(geom, src)
    x_lya = np.interp(lya, wk, xk, left=-1e3, right=1e4) + shift
    cont_shape *= ndtr((x - x_lya) / sig_psf)
    lines = DEFAULT_LINES if src["lines"] is None else src["lines"]
    for line in lines:
        lam_obs = line.rest_wavelength * 1e-4 * (1 + z)
        entry = {
            "name": line.name,
            "rest_wavelength": float(line.rest_wavelength),
            "observed_wavelength": float(lam_obs),
        }
        if not (wk[0] < lam_obs < wk[-1]):
            log.info("line %s at %.4f um is outside the cutout; skipped", line.name, lam_obs)
            entry.update(in_range=False, flux=0.0, peak_ujy=0.0)
            info.append(entry)
            continue
        xc = float(np.interp(lam_obs, wk, xk)) + shift
        dw = float(np.interp(xc, x, dwdx))
        sig_v = src["line_sigma_kms"] / C_KMS * lam_obs / dw
        sig = float(np.hypot(np.interp(xc, x, sig_psf), sig_v))
        frac = ndtr((x + 0.5 - xc) / sig) - ndtr((x - 0.5 - xc) / sig)
        # microJy per unit line flux [erg/s/cm^2]
        per_flux = frac / (dwdx * 1e4) * (wave_col * 1e4) ** 2 / C_ANGSTROM * 1e29
        per_flux[~np.isfinite(per_flux)] = 0.0
        entry.update(in_range=True, x_center=xc, sigma_pix=sig)
        if line.flux is not None:
            lines_fixed += line.flux * per_flux
            entry.update(flux=float(line.flux), peak_ratio=None)
        else:
            ipk = int(np.argmax(per_flux))
            peak = per_flux[ipk]
            scale = line.peak_ratio * cont_shape[ipk] / peak if peak > 0 else 0.0
            lines_ratio += scale * per_flux
            entry.update(flux_per_continuum=float(scale), peak_ratio=float(line.peak_ratio))
        info.append(entry)
    return cont_shape, lines_fixed, lines_ratio, info, False


def xpos_shift(geom, src):
    """Shift of the source light in x [px] due to ``source_xpos``."""
    return src["source_xpos"] * geom.width_arcsec / PIXEL_SCALE
