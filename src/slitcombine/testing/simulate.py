"""Synthetic NIRSpec MSA and fixed-slit observations with a known truth.

:func:`simulate_observation` writes one ``SlitModel`` FITS file per slit and exposure
(``{root}_03101_{expnum:05d}_{detector}_phot.{slit}.{source_name}.fits``), or one
``MultiSlitModel`` ``*_cal.fits`` file per exposure when several sources are asked for,
plus an ECSV truth table per source. The files open with
``stdatamodels.jwst.datamodels.SlitModel`` and with plain :mod:`astropy.io.fits`, and carry
the extensions, ASDF tree and header keywords of real ``jwst`` ``*_phot.*.fits`` cutouts.

Conventions (checked against the CEERS files ``jw01345062001_03101_0000[123]_nrs2_phot.138``)
---------------------------------------------------------------------------------------------
Pixel coordinates
    0-based ``(x, y)`` = (column, row) of the cutout; a pixel spans ``[i - 0.5, i + 0.5]``.
    Wavelength increases with ``x``.
``detector -> slit_frame``
    Returns ``(x_slit, y_slit, wavelength)`` with the wavelength in **metres** (the real files
    do the same). ``x_slit`` is 0 everywhere, as in the real files. ``y_slit`` is in units of
    the open aperture height: 0.46 arcsec for MSA shutters, the full slit length for fixed
    slits (3.2 arcsec for S200A1), as in ``jwst``. ``y_slit`` **decreases** with the row
    index (``d y_slit / d row = -0.1035 / 0.46 = -0.225`` for the MSA; the real files have
    -0.2283). Outside the open extent (``slit_ymin <= y_slit <= slit_ymax``) or outside the
    grating's wavelength range all three outputs are NaN; the bounding box is the full cutout.
MSA nods
    ``y_slit = 0`` is the centre of the shutter holding the source *in that exposure*, so the
    WCS of each nod is shifted by one shutter pitch (0.529 arcsec = 1.15 units = 5.11 px).
    ``slit_ymin/slit_ymax = -1.05 - 1.15 i_below, 1.05 + 1.15 i_above`` (the ``jwst`` formula).
    ``shutter_state`` lists the shutters by increasing ``y_slit`` with ``x`` for the source
    shutter (``'1x1'``, ``'x11'``, ``'11x'`` for nod offsets 0, +1, -1 as in CEERS).
Sign of the nod
    Exposure ``k`` has ``y_offset_k = y0 + o_k * 0.529`` arcsec (``o_k`` in shutter pitches).
    The source lands on row ``trace_0(x) + (y_offset_k - y_offset_0) / 0.1035``: a **larger
    y_offset gives a larger row**. In CEERS exposure 2 has ``y_offset`` larger by 0.529 arcsec,
    its ``y_slit = 0`` row is 5.04 px higher (12.61 -> 17.65 at column 150) and its [OIII]
    difference-image peak moves from row 13 to row 18; exposure 3 (-0.529 arcsec) peaks at row 8.
Fixed slits
    ``y_slit = 0`` is the slit centre in every exposure (as in ``jwst``), the source moves along
    the slit with the nod and ``source_ypos`` records where it is (in slit-length units).
Source position
    The source sits at ``y_slit = source_ypos``: its row is the ``y_slit = 0`` row
    **minus** ``source_ypos * 0.46 / 0.1035`` px (minus because ``y_slit`` decreases with
    row). ``source_xpos`` (units of the 0.20 arcsec shutter width) shifts the source light by
    ``+source_xpos * 0.20 / 0.1035`` px in ``x``, i.e. the WCS (computed for ``x_slit = 0``)
    assigns it a wavelength too red by ``dlambda/dx`` times that shift; no wavecorr is applied.
Units
    SCI, ERR in MJy/sr, VAR_* in (MJy/sr)^2, WAVELENGTH in micron. ``SCI * PIXAR_SR * 1e12``
    is in microJy per pixel. PIXAR_SR = 4.84956822732858e-13 sr (0.1035 arcsec pixels).

What is simulated (all in microJy per pixel before the conversion to MJy/sr)
----------------------------------------------------------------------------
The image is formed as the instrument forms it (:mod:`slitcombine.core.optics`), not from the
model the extraction uses::

    raw_k(y, x) = F(lambda) * P_k(y, x) + S(lambda) * I(y, x) [+ failed-open light]

* ``F`` - the **truth**: the source flux density that enters the telescope, at the
  resolution of the instrument (emission lines are pixel-integrated Gaussians with the
  point-source LSF ``sigma = psf_sigma(lambda)`` plus the intrinsic line width). Column
  ``flux`` of the truth.
* ``P_k`` - the detector image of a unit-flux source in exposure ``k``: its surface
  brightness at the MSA (round Gaussian of ``intrinsic_sigma`` pixels convolved with the
  telescope PSF, an obscured Airy pattern by default, ``optics_model='gaussian'`` for a
  Gaussian without wings), cut by the shutter width (0.20 arcsec, source at
  ``source_xpos``) and by the open shutters of the slitlet (light falling on a bar or a
  closed shutter is lost), blurred by the post-MSA kernel and integrated over the pixel
  rows. Its sum over the rows of a column is the fraction of the source that passed the
  apertures, column ``throughput`` of the truth; the bars take their share there, but the
  light that passed is **not** modulated again by the bar pattern.
* ``S`` - the sky, identical in all exposures, in microJy per pixel of an open aperture
  (column ``sky``).
* ``I`` - the illumination: the same optics for a uniform source (the open apertures
  blurred by the post-MSA kernel): ~1 in the shutters, ~0.5 on the images of the bars,
  0 outside the slitlet. It is fixed to the MSA (identical in all nods). A stuck-closed
  shutter passes neither sky nor source light. Fixed slits: the slit edges only.

Pipeline-like products (the conventions of the jwst ``pathloss`` and ``barshadow``
steps): ``SCI = raw / (BARSHADOW * PATHLOSS_UN)`` for ``source_type`` None (as in CEERS),
``'EXTENDED'`` or ``'UNKNOWN'``, with ``BARSHADOW = max(I_nominal, 0.42)`` the
illumination of the *planned* open shutters with the pipeline's floor, i.e. the
correction is exact for the sky and for uniform sources; ``SCI = raw / PATHLOSS_PS``
with ``BARSHADOW = 1`` for ``source_type='POINT'`` (jwst does not apply the bar shadow to
point sources); fixed slits have no BARSHADOW extension and are divided by
``PATHLOSS_UN``. ``PATHLOSS_PS`` (truth column ``slit_throughput``) is the throughput of
a *point* source at the catalogue position through the planned shutters, what the
pipeline computes from ``SRCXPOS``/``SRCYPOS`` whatever the source's size. Hence::

    sum_rows SCI * BARSHADOW * PATHLOSS_UN * PIXAR_SR * 1e12 - sky = F * throughput

(less what the post-MSA blur spreads beyond the slit's valid extent, < 0.6% at a shutter
edge): an extraction of the raw signal gives ``F * throughput``, and dividing by
``PATHLOSS_PS`` recovers ``F`` for a point source. Dividing the source by ``BARSHADOW``
instead (the pipeline's extended-source correction) makes a compact source too bright by
the bar-shadow value at its trace: 2-10% near a shutter centre, more near a bar.

Noise: the raw signal is converted to electrons with an idealised throughput
(``e-/s = 383.3 * eta(lambda) * f_nu[microJy] * (dlambda/dx) / lambda``, 25.4 m^2 aperture),
drawn from a Poisson distribution, plus Gaussian read noise. ``VAR_POISSON`` and
``VAR_RNOISE`` are computed from the *noise-free* expected counts (the pipeline uses the
measured slope), so they are exact; they carry the same calibration factor as SCI.
``VAR_FLAT = (0.003 SCI_expected)^2`` is not realised in the noise.
``ERR^2 = VAR_POISSON + VAR_RNOISE + VAR_FLAT``. Hot pixels (extra dark current, DQ
HOT|DO_NOT_USE) and dead pixels (no response, DQ DEAD|DO_NOT_USE) sit on the same detector
pixels in every exposure and keep finite SCI values; cosmic rays (10-200 sigma, single pixels
or 2-3 pixel streaks) are different in every exposure and are **not** flagged in DQ. Pixels
outside the open extent are NaN in SCI, ERR, VAR_*, WAVELENGTH, BARSHADOW and PATHLOSS_* and
have DQ = DO_NOT_USE.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.optimize import brentq
from scipy.special import ndtr

from slitcombine._atomic import atomic_path
from slitcombine.core import optics
from slitcombine.errors import ConfigurationError, OutputError

__all__ = [
    "EmissionLine",
    "GratingSetup",
    "GRATINGS",
    "FIXED_SLITS",
    "DEFAULT_LINES",
    "SourceTruth",
    "SimulatedObservation",
    "simulate_observation",
    "psf_sigma_pixels",
    "default_sky",
]

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------
# Instrument constants
# --------------------------------------------------------------------------------------
#: Detector pixel scale along the slit [arcsec / pixel].
PIXEL_SCALE = 0.1035
#: Open height of an MSA shutter [arcsec]: one ``y_slit`` unit for MSA slitlets.
SHUTTER_HEIGHT = 0.46
#: Open width of an MSA shutter [arcsec]: one ``x_slit`` unit.
SHUTTER_WIDTH = 0.20
#: MSA shutter pitch along the slit [arcsec] (the nod step).
SHUTTER_PITCH = 0.529
#: Shutter pitch in ``y_slit`` units (1.15).
PITCH_UNITS = SHUTTER_PITCH / SHUTTER_HEIGHT
#: MSA shutter pitch across the slit (dispersion direction) [arcsec].
SHUTTER_PITCH_X = 0.268
#: Sign of ``d y_slit / d row`` (negative in the real NRS files).
YSLIT_DIRECTION = -1
#: Nominal pixel area [sr] (the CEERS value).
PIXAR_SR = 4.84956822732858e-13
#: Pipeline floor of the bar-shadow correction outside the open shutters.
BARSHADOW_FLOOR = 0.42
#: Physical bar width between shutters in ``y_slit`` units.
_BAR_UNITS = PITCH_UNITS - 1.0
#: Constant of the photon conversion: e-/s per (microJy * dlambda/lambda) for 25.4 m^2.
_PHOTON_CONSTANT = 1e-29 * 25.4e4 / 6.62607015e-27
_C_ANGSTROM = 2.99792458e18  # speed of light [Angstrom / s]
_C_KMS = 2.99792458e5

# JWST DQ bits
DO_NOT_USE = 1
DEAD = 1024
HOT = 2048
MSA_FAILED_OPEN = 2**29

_SHUTTER_IDS_PER_COLUMN = 365
_FIXED_SLIT_NUMS = {"S200A1": 1, "S200A2": 2, "S400A1": 3, "S1600A1": 4}


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

#: Fixed slits: (width, length) [arcsec].
FIXED_SLITS: dict[str, tuple[float, float]] = {
    "S200A1": (0.2, 3.2),
    "S200A2": (0.2, 3.2),
    "S400A1": (0.4, 3.65),
    "S1600A1": (1.6, 1.6),
}

_PRISM_R = (24.45, 9.985, 2.075)
_EDGE_PIXELS = 4  # columns with NaN wavelength on each side of the valid range


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


def _throughput(grating, wave):
    """Idealised end-to-end efficiency (telescope, instrument and QE), dimensionless."""
    wave = np.asarray(wave, dtype=float)
    if grating.grating == "PRISM":
        return 0.55 * np.exp(-0.5 * (np.log(wave / 2.8) / 1.0) ** 2)
    centre = 0.5 * (grating.wave_min + grating.wave_max)
    width = 0.45 * (grating.wave_max - grating.wave_min)
    return 0.45 * np.exp(-0.5 * ((wave - centre) / width) ** 2)


def _pathloss_uniform(wave):
    """Stand-in for the pipeline's uniform-source path-loss array (1.35-2.6)."""
    return 1.2 + 0.26 * np.asarray(wave, dtype=float)


def _dispersion_knots(grating, nx):
    """Wavelength [micron] at the integer columns ``-1 .. nx`` of the cutout."""
    xk = np.arange(-1, nx + 1, dtype=float)
    if grating.grating == "PRISM":
        a, b, p = _PRISM_R

        def column(lam):
            return 2.2 * (-a / (2.0 * lam**2) + b * lam**p / p)

        lam = np.linspace(0.45, 5.9, 40001)
        x = column(lam)
        x = x - column(grating.wave_min) + _EDGE_PIXELS
        return xk, np.interp(xk, x, lam)
    d0 = grating.dispersion
    slope = grating.dispersion_slope / max(grating.nx - 1, 1)
    x = xk - _EDGE_PIXELS
    return xk, grating.wave_min + d0 * x + 0.5 * d0 * slope * x**2


# --------------------------------------------------------------------------------------
# Geometry
# --------------------------------------------------------------------------------------
@dataclass
class _Exposure:
    index: int
    number: int
    position: int
    nod_offset: float
    x_offset: float
    y_offset: float
    delta_rows: float  # source shift relative to the reference trace [px]
    frame_shift: float  # shift of the y_slit origin [px] (MSA: = delta_rows; FS: 0)


@dataclass
class _Geometry:
    """Cutout geometry shared by all exposures of one slit."""

    fixed_slit: str | None
    n_shutters: int
    source_shutter: int  # j0: index (by increasing y_slit) of the source shutter, exposure 0
    unit_arcsec: float  # arcsec per y_slit unit
    width_arcsec: float  # arcsec per x_slit unit
    yslit_per_pixel: float
    centres: np.ndarray  # open aperture centres in exposure-0 y_slit units
    extent: tuple[float, float]  # y_slit extent (exposure 0 frame)
    nx: int
    ny: int
    yc: float
    slope: float
    curvature: float
    xk: np.ndarray
    wave_knots: np.ndarray

    def trace_ref(self, x):
        """Row of ``y_slit = 0`` of the reference exposure at columns ``x``."""
        t = (np.asarray(x, dtype=float) - 0.5 * (self.nx - 1)) / (0.5 * max(self.nx - 1, 1))
        return self.yc + 0.5 * self.slope * t + self.curvature * t**2

    def trace_poly(self):
        """Coefficients ``A0, A1, A2`` of ``trace_ref(x) = A0 + A1 x + A2 x^2``."""
        xm = 0.5 * (self.nx - 1)
        h = 0.5 * max(self.nx - 1, 1)
        a = 0.5 * self.slope
        b = self.curvature
        a2 = b / h**2
        a1 = a / h - 2.0 * b * xm / h**2
        a0 = self.yc - a * xm / h + b * xm**2 / h**2
        return a0, a1, a2


def _make_geometry(grating, fixed_slit, n_shutters, rel_offsets, nx, trace_slope, trace_curvature):
    if fixed_slit is None:
        unit = SHUTTER_HEIGHT
        width = SHUTTER_WIDTH
        # index shifts of the source shutter, in increasing y_slit order
        shifts = [int(round(YSLIT_DIRECTION * o)) for o in rel_offsets]
        lo = -min(shifts)
        hi = n_shutters - 1 - max(shifts)
        j0 = (lo + hi) // 2
        centres = (np.arange(n_shutters) - j0) * PITCH_UNITS
        extent = (centres.min() - 0.5 - 0.55, centres.max() + 0.5 + 0.55)
    else:
        width, length = FIXED_SLITS[fixed_slit]
        unit = length
        j0 = 0
        centres = np.zeros(1)
        extent = (-0.55, 0.55)
    u = PIXEL_SCALE / unit
    rows = np.array(extent) / (YSLIT_DIRECTION * u)
    t = np.linspace(-1, 1, 201)
    q = 0.5 * trace_slope * t + trace_curvature * t**2
    height = (rows.max() - rows.min()) + (q.max() - q.min())
    ny = int(np.ceil(height + 3.0))
    yc = 0.5 * (ny - 1) - 0.5 * (rows.min() + rows.max()) - 0.5 * (q.min() + q.max())
    xk, wk = _dispersion_knots(grating, nx)
    return _Geometry(
        fixed_slit,
        n_shutters,
        j0,
        unit,
        width,
        u,
        centres,
        extent,
        nx,
        ny,
        yc,
        trace_slope,
        trace_curvature,
        xk,
        wk,
    )


def _build_wcs(geom, grating, exposure, source_xpos, source_ypos_k, ra, dec, pa):
    """Build the gwcs ``detector -> slit_frame -> world`` of one exposure."""
    from astropy import coordinates as coord
    from astropy import units as u
    from astropy.modeling import models as m
    from gwcs import coordinate_frames as cf
    from gwcs import wcs as gwcs_wcs

    d = YSLIT_DIRECTION
    s = geom.yslit_per_pixel
    a0, a1, a2 = geom.trace_poly()
    a0 = a0 + exposure.frame_shift
    ypoly = m.Polynomial2D(2, c0_0=-d * s * a0, c1_0=-d * s * a1, c2_0=-d * s * a2, c0_1=d * s)
    lam_tab = m.Tabular1D(
        points=geom.xk,
        lookup_table=geom.wave_knots * 1e-6,
        method="linear",
        bounds_error=False,
        fill_value=np.nan,
    )
    ymin, ymax = _slit_limits(geom, exposure)
    wmin, wmax = grating.wave_min * 1e-6, grating.wave_max * 1e-6

    def window(lo, hi, zero):
        table = np.zeros(2) if zero else np.array([lo, hi])
        return m.Tabular1D(
            points=np.array([lo, hi]),
            lookup_table=table,
            method="linear",
            bounds_error=False,
            fill_value=np.nan,
        )

    p0 = m.Mapping((0,), n_inputs=2)
    p1 = m.Mapping((1,), n_inputs=2)
    x_out = (p0 | window(ymin, ymax, True)) + (p1 | window(wmin, wmax, True))
    y_out = (p0 | window(ymin, ymax, False)) + (p1 | window(wmin, wmax, True))
    w_out = (p1 | window(wmin, wmax, False)) + (p0 | window(ymin, ymax, True))
    det2slit = (
        m.Mapping((0, 1, 0))
        | (ypoly & lam_tab)
        | m.Mapping((0, 1, 0, 1, 0, 1))
        | (x_out & y_out & w_out)
    )
    # Analytic inverse (slit_frame -> detector): x from the wavelength, y from (x, y_slit).
    x_of_lam = m.Tabular1D(
        points=geom.wave_knots * 1e-6,
        lookup_table=geom.xk,
        method="linear",
        bounds_error=False,
        fill_value=np.nan,
    )
    y_of_x_yslit = m.Polynomial2D(2, c0_0=a0, c1_0=a1, c2_0=a2, c0_1=1.0 / (d * s))
    det2slit.inverse = (
        m.Mapping((2, 1))
        | (x_of_lam & m.Identity(1))
        | m.Mapping((0, 0, 1))
        | (m.Identity(1) & y_of_x_yslit)
    )
    det2slit.name = "det2slit"

    spatial = (
        (m.Shift(-source_xpos) & m.Shift(-source_ypos_k))
        | (m.Scale(geom.width_arcsec / 3600.0) & m.Scale(geom.unit_arcsec / 3600.0))
        | m.Rotation2D(angle=pa)
        | m.Pix2Sky_TAN()
        | m.RotateNative2Celestial(ra, dec, 180.0)
    )
    slit2world = spatial & m.Scale(1e6)
    slit2world.name = "slit2world"

    detector = cf.Frame2D(
        name="detector", axes_order=(0, 1), unit=(u.pix, u.pix), axes_names=("x", "y")
    )
    slit_spatial = cf.Frame2D(
        name="slit_spatial", axes_order=(0, 1), unit=(u.one, u.one), axes_names=("x_slit", "y_slit")
    )
    spec_m = cf.SpectralFrame(
        name="spectral", axes_order=(2,), unit=(u.m,), axes_names=("wavelength",)
    )
    slit_frame = cf.CompositeFrame([slit_spatial, spec_m], name="slit_frame")
    sky = cf.CelestialFrame(
        name="sky",
        axes_order=(0, 1),
        reference_frame=coord.ICRS(),
        unit=(u.deg, u.deg),
        axes_names=("lon", "lat"),
    )
    spec_um = cf.SpectralFrame(
        name="spectral", axes_order=(2,), unit=(u.um,), axes_names=("wavelength",)
    )
    world = cf.CompositeFrame([sky, spec_um], name="world")
    wcs = gwcs_wcs.WCS([(detector, det2slit), (slit_frame, slit2world), (world, None)])
    wcs.bounding_box = ((-0.5, geom.nx - 0.5), (-0.5, geom.ny - 0.5))
    return wcs


def _slit_limits(geom, exposure):
    """``slit_ymin, slit_ymax`` of an exposure (y_slit units)."""
    shift = YSLIT_DIRECTION * geom.yslit_per_pixel * exposure.frame_shift
    return geom.extent[0] - shift, geom.extent[1] - shift


def _excess_field(rng, shape, rows_fraction, length):
    """Unit-variance noise: white plus a fraction correlated along each row (AR(1)).

    Parameters
    ----------
    rng : numpy.random.Generator
    shape : (int, int)
        ``(ny, nx)``.
    rows_fraction : float
        Fraction of the variance in the row-correlated part.
    length : float
        Correlation length of that part along the row, pixels.
    """
    white = rng.standard_normal(shape)
    if rows_fraction <= 0:
        return white
    a = float(np.exp(-1.0 / max(length, 1e-6)))
    drive = rng.standard_normal(shape) * np.sqrt(1.0 - a * a)
    corr = np.empty(shape)
    corr[:, 0] = rng.standard_normal(shape[0])
    for j in range(1, shape[1]):  # a recursion along x, vectorised over the rows
        corr[:, j] = a * corr[:, j - 1] + drive[:, j]
    return np.sqrt(1.0 - rows_fraction) * white + np.sqrt(rows_fraction) * corr


class _FormedImages:
    """Detector images of one source and of a uniform source, through MSA apertures.

    The optics of :mod:`slitcombine.core.optics`: the source at the MSA (intrinsic Gaussian
    convolved with the telescope PSF), cut by the dispersion-direction window and by the
    open apertures along the slit, blurred by the post-MSA kernel and integrated over the
    detector rows.  Apertures are given as centres in ``y_slit`` units of the reference
    exposure (open height 1 unit); they are fixed to the MSA, the source moves with the
    nods.
    """

    _STEP = 0.05  # fine sampling along the slit, pixels

    def __init__(self, model, geom, wave_col, src, ypos_k, exposures):
        self.model = model
        self.ny = geom.ny
        x = np.arange(geom.nx, dtype=float)
        self.wave = wave_col
        self.z, self.edges = optics.fine_grid(geom.ny, step=self._STEP, pad=3.0)
        self.rows_per_unit = 1.0 / (YSLIT_DIRECTION * geom.yslit_per_pixel)
        self.trace0 = geom.trace_ref(x)
        self.centre_rows = np.array([self.trace0 + e.frame_shift for e in exposures])
        self.src_rows = self.centre_rows + ypos_k[:, None] * self.rows_per_unit
        lo, hi = np.nanmin(wave_col), np.nanmax(wave_col)
        self.nodes = np.geomspace(lo, hi, 24)
        self.xpos = float(src["source_xpos"])
        self.width = geom.width_arcsec
        half = geom.ny + 8.0
        self.u = np.arange(-half, half + 0.5 * self._STEP, self._STEP)

    def transmission(self, centres):
        """``(nx, nz)`` open-aperture transmission of the shutters at ``centres``."""
        c = np.asarray(centres, float)
        a = self.trace0[:, None] + (c - 0.5)[None, :] * self.rows_per_unit
        b = self.trace0[:, None] + (c + 0.5)[None, :] * self.rows_per_unit
        iv = np.stack([np.minimum(a, b), np.maximum(a, b)], axis=-1)
        return optics.aperture_transmission(self.edges, iv)

    def illumination(self, centres):
        """``(ny, nx)`` detector image of a uniform source of 1 per pixel."""
        return optics.illumination(self.model, self.transmission(centres), self.z, self.ny).T

    def source(self, sigma, centres, profiles=True):
        """Source light per exposure through the apertures at ``centres``.

        Returns ``profiles`` ``(nexp, ny, nx)`` (fraction of the source flux per pixel,
        or None) and the throughput ``(nexp, nx)`` (fraction through the apertures).
        """
        strips = self.model.strip_profiles(
            self.nodes, self.u, sigma=sigma, xpos=self.xpos, slit_width=self.width
        )
        trans = self.transmission(centres)
        out, tput = [], []
        for rows in self.src_rows:
            light = optics.sample_strips(strips, self.u, self.nodes, self.wave, self.z, rows)
            tput.append((light * trans).sum(axis=1) * self._STEP)
            if profiles:
                out.append(optics.detector_profiles(self.model, light, trans, self.z, self.ny).T)
        return (np.array(out) if profiles else None), np.array(tput)


# --------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------
def _check_int(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ConfigurationError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ConfigurationError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _check_float(name, value, minimum=None, maximum=None, allow_none=False):
    if value is None and allow_none:
        return None
    try:
        val = float(value)
    except (TypeError, ValueError):
        raise ConfigurationError(f"{name} must be a number, got {value!r}") from None
    if not np.isfinite(val):
        raise ConfigurationError(f"{name} must be finite, got {value!r}")
    if minimum is not None and val < minimum:
        raise ConfigurationError(f"{name} must be >= {minimum}, got {value!r}")
    if maximum is not None and val > maximum:
        raise ConfigurationError(f"{name} must be <= {maximum}, got {value!r}")
    return val


def _check_lines(lines):
    if lines is None:
        return None
    if isinstance(lines, (str, bytes)) or not isinstance(lines, Sequence):
        raise ConfigurationError("lines must be a sequence of EmissionLine")
    out = []
    for line in lines:
        if not isinstance(line, EmissionLine):
            raise ConfigurationError(f"lines: {line!r} is not an EmissionLine")
        _check_float("lines.rest_wavelength", line.rest_wavelength, minimum=1.0)
        if (line.peak_ratio is None) == (line.flux is None):
            raise ConfigurationError(f"lines: give exactly one of peak_ratio and flux for {line!r}")
        if line.peak_ratio is not None:
            _check_float("lines.peak_ratio", line.peak_ratio, minimum=0.0)
        if line.flux is not None:
            _check_float("lines.flux", line.flux, minimum=0.0)
        out.append(line)
    return tuple(out)


def _check_spectrum(spectrum):
    if spectrum is None:
        return None
    try:
        wave, flux = (np.asarray(a, dtype=float) for a in spectrum)
    except (TypeError, ValueError):
        raise ConfigurationError(
            "spectrum must be a pair (wave [micron], flux [microJy]) of 1-D arrays"
        ) from None
    if wave.ndim != 1 or flux.shape != wave.shape or wave.size < 2:
        raise ConfigurationError("spectrum: wave and flux must be 1-D arrays of equal length >= 2")
    if not (np.all(np.isfinite(wave)) and np.all(np.isfinite(flux))):
        raise ConfigurationError("spectrum: wave and flux must be finite")
    if np.any(np.diff(wave) <= 0):
        raise ConfigurationError("spectrum: wave must be strictly increasing")
    if np.any(flux < 0):
        raise ConfigurationError("spectrum: flux must be >= 0")
    return wave, flux


_SOURCE_KEYS = {
    "redshift",
    "snr",
    "continuum_ujy",
    "continuum_slope",
    "lines",
    "spectrum",
    "intrinsic_sigma",
    "source_xpos",
    "source_ypos",
    "source_id",
    "slitlet_id",
    "source_name",
    "line_sigma_kms",
}


def _check_source(src, fixed_slit):
    """Validate and normalise the per-source options (a dict)."""
    out = dict(src)
    out["redshift"] = _check_float("redshift", src["redshift"], minimum=0.0, maximum=30.0)
    out["snr"] = _check_float("snr", src["snr"], minimum=0.0, allow_none=True)
    out["continuum_ujy"] = _check_float(
        "continuum_ujy", src["continuum_ujy"], minimum=0.0, allow_none=True
    )
    out["continuum_slope"] = _check_float(
        "continuum_slope", src["continuum_slope"], minimum=-10, maximum=10
    )
    out["intrinsic_sigma"] = _check_float(
        "intrinsic_sigma", src["intrinsic_sigma"], minimum=0.0, maximum=20.0
    )
    out["line_sigma_kms"] = _check_float(
        "line_sigma_kms", src["line_sigma_kms"], minimum=0.0, maximum=5000.0
    )
    lim = 0.5
    out["source_xpos"] = _check_float("source_xpos", src["source_xpos"], -lim, lim)
    out["source_ypos"] = _check_float("source_ypos", src["source_ypos"], -lim, lim)
    out["lines"] = _check_lines(src["lines"])
    out["spectrum"] = _check_spectrum(src["spectrum"])
    if out["spectrum"] is not None:
        for key in ("snr", "continuum_ujy", "lines"):
            if out[key] is not None:
                raise ConfigurationError(f"{key} cannot be combined with spectrum")
    if out["snr"] is not None and out["continuum_ujy"] is not None:
        raise ConfigurationError("give only one of snr and continuum_ujy")
    if out["spectrum"] is None and out["snr"] is None and out["continuum_ujy"] is None:
        out["snr"] = 20.0
    out["source_id"] = _check_int("source_id", src["source_id"], 0)
    if fixed_slit is None:
        out["slitlet_id"] = _check_int("slitlet_id", src["slitlet_id"], 1)
    name = src["source_name"]
    if not isinstance(name, str) or not name or any(c in name for c in "/\\ \t\n"):
        raise ConfigurationError(
            f"source_name must be a non-empty string without spaces or slashes, got {name!r}"
        )
    return out


# --------------------------------------------------------------------------------------
# Source spectrum
# --------------------------------------------------------------------------------------
def _column_spectrum(src, grating, geom, wave_col, dwdx, wave_true, sig_psf):
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
    shift = _xpos_shift(geom, src)
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
        sig_v = src["line_sigma_kms"] / _C_KMS * lam_obs / dw
        sig = float(np.hypot(np.interp(xc, x, sig_psf), sig_v))
        frac = ndtr((x + 0.5 - xc) / sig) - ndtr((x - 0.5 - xc) / sig)
        # microJy per unit line flux [erg/s/cm^2]
        per_flux = frac / (dwdx * 1e4) * (wave_col * 1e4) ** 2 / _C_ANGSTROM * 1e29
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


def _xpos_shift(geom, src):
    """Shift of the source light in x [px] due to ``source_xpos``."""
    return src["source_xpos"] * geom.width_arcsec / PIXEL_SCALE


# --------------------------------------------------------------------------------------
# The per-source simulation
# --------------------------------------------------------------------------------------
@dataclass
class _SlitProducts:
    arrays: list  # per exposure dict of arrays
    attrs: list  # per exposure dict of slit attributes
    wcs: list
    truth: object
    cosmic_rays: object
    bad_pixels: object


def _simulate_source(src, opts, grating, geom, exposures, rng, ystart):
    """Simulate every exposure of one slit. Returns :class:`_SlitProducts`."""
    from astropy.table import Table

    nx, ny = geom.nx, geom.ny
    nexp = len(exposures)
    d = YSLIT_DIRECTION
    u = geom.yslit_per_pixel
    x = np.arange(nx, dtype=float)

    wave_col = np.interp(x, geom.xk, geom.wave_knots)
    dwdx = np.gradient(wave_col)
    xshift = _xpos_shift(geom, src)
    wave_true = np.interp(x - xshift, geom.xk, geom.wave_knots, left=np.nan, right=np.nan)
    sig_psf = psf_sigma_pixels(wave_col)
    sigma = np.sqrt(sig_psf**2 + src["intrinsic_sigma"] ** 2)

    ypos_k = np.array(
        [src["source_ypos"] + d * u * (exp.delta_rows - exp.frame_shift) for exp in exposures]
    )
    optics_model = opts["optics"]
    stuck = opts["stuck_closed_shutter"]
    open_centres = [c for j, c in enumerate(geom.centres) if j != stuck]
    image = _FormedImages(optics_model, geom, wave_col, src, ypos_k, exposures)
    # The MSA is fixed: the open apertures (stuck shutter excluded) and the planned ones
    illum = image.illumination(open_centres)
    nominal = image.illumination(geom.centres)
    is_fs = geom.fixed_slit is not None
    barshadow = None if is_fs else np.clip(nominal, BARSHADOW_FLOOR, None)
    # Source light on the detector through the open apertures of each exposure (this
    # includes the slit throughput: a column sums to F * T), and the throughput the
    # pipeline would write as PATHLOSS_PS: a point source at the catalogue position
    # through the planned shutters
    profiles, tput_true = image.source(src["intrinsic_sigma"], open_centres)
    _, tput = image.source(0.0, geom.centres, profiles=False)

    sky1d = opts["sky_level"] / float(default_sky(2.0)) * default_sky(wave_col)
    sky1d[~np.isfinite(sky1d)] = 0.0
    contam = np.zeros((ny, nx))
    fo_mask = np.zeros((ny, nx), bool)
    if opts["failed_open_neighbour"]:
        c_fo = geom.centres[-1]
        dx_fo = SHUTTER_PITCH_X / PIXEL_SCALE
        w_fo = np.interp(x - dx_fo, geom.xk, geom.wave_knots, left=np.nan, right=np.nan)
        sky_fo = opts["sky_level"] / float(default_sky(2.0)) * default_sky(w_fo)
        sky_fo = np.where(np.isfinite(sky_fo), sky_fo, 0.0)
        prof_fo = image.illumination([c_fo])
        contam = prof_fo * sky_fo[None, :]
        fo_mask = prof_fo > 0.05

    pl_un = _pathloss_uniform(wave_col)
    eta = _throughput(grating, wave_col)
    gain = _PHOTON_CONSTANT * eta * np.abs(dwdx) / wave_col * opts["exptime"]  # e- per uJy
    gain[~np.isfinite(gain)] = 0.0
    rn = opts["read_noise"]
    if is_fs:
        calib = np.broadcast_to(pl_un[None, :], (ny, nx))
    elif opts["source_type"] == "POINT":
        # jwst: no bar-shadow correction for point sources, PATHLOSS_PS applied
        calib = np.broadcast_to(tput[0][None, :], (ny, nx))
    else:
        calib = pl_un[None, :] * barshadow
    to_sci = 1.0 / (PIXAR_SR * 1e12) / calib

    # Source spectrum
    cont_shape, lines_fixed, lines_ratio, line_info, user_spec = _column_spectrum(
        src, grating, geom, wave_col, dwdx, wave_true, sig_psf
    )

    # Per-exposure source rows
    src_rows = image.src_rows
    centre_rows = image.centre_rows

    # Valid pixels (from the WCS itself)
    wcs_list = []
    valid = np.empty((nexp, ny, nx), bool)
    wave2d = np.empty((nexp, ny, nx))
    gx, gy = np.meshgrid(x, np.arange(ny, dtype=float))
    for k, exp in enumerate(exposures):
        wcs = _build_wcs(
            geom,
            grating,
            exp,
            src["source_xpos"],
            ypos_k[k],
            opts["ra"],
            opts["dec"],
            opts["position_angle"],
        )
        _, ys, lam = wcs.get_transform("detector", "slit_frame")(gx, gy)
        valid[k] = np.isfinite(ys) & np.isfinite(lam)
        wave2d[k] = lam * 1e6
        wcs_list.append(wcs)

    # Amplitude of the continuum
    bkg_e = (illum * sky1d[None, :] + contam) * gain[None, :]

    def column_snr(flux_col, k=0):
        """Single-exposure optimal-extraction S/N per column of ``flux_col`` [microJy]."""
        s_e = flux_col[None, :] * profiles[k] * gain[None, :]
        var = s_e + bkg_e + rn**2
        return np.sqrt(np.where(valid[k], s_e**2 / var, 0.0).sum(axis=0))

    amp = 1.0  # a user spectrum is used as given
    if user_spec:
        pass
    elif src["continuum_ujy"] is not None:
        amp = src["continuum_ujy"]
    elif src["snr"] == 0:
        amp = 0.0
    else:
        if not np.any(cont_shape > 0):
            raise ConfigurationError(
                "snr: the continuum is zero over the whole cutout "
                "(redshift too high?); give continuum_ujy instead"
            )
        target = src["snr"]

        def f(log_amp):
            return float(np.max(column_snr(np.exp(log_amp) * cont_shape))) - target

        amp = float(np.exp(brentq(f, np.log(1e-12), np.log(1e9), xtol=1e-10, rtol=1e-12)))
    flux_cont = amp * cont_shape
    flux = flux_cont + lines_fixed + amp * lines_ratio
    snr_col = column_snr(flux_cont)
    for entry in line_info:
        if entry.get("in_range") and entry.get("peak_ratio") is not None:
            entry["flux"] = float(entry.pop("flux_per_continuum") * amp)

    # Detector defects, fixed in detector pixels
    any_valid = valid.all(axis=0)
    cand = np.flatnonzero(any_valid.ravel())
    n_bad = opts["n_hot"] + opts["n_dead"]
    if n_bad > cand.size:
        raise ConfigurationError(f"n_hot + n_dead = {n_bad} exceeds the {cand.size} valid pixels")
    # independent streams: defects, noise and cosmic rays (noise=False keeps the same CRs)
    rng_bad, rng_noise, rng_cr, rng_excess = rng.spawn(4)
    bad_idx = rng_bad.choice(cand, size=n_bad, replace=False) if n_bad else np.zeros(0, int)
    hot_idx, dead_idx = bad_idx[: opts["n_hot"]], bad_idx[opts["n_hot"] :]
    hot_rows, hot_cols = np.unravel_index(hot_idx, (ny, nx))
    dead_rows, dead_cols = np.unravel_index(dead_idx, (ny, nx))
    hot_e = np.zeros((ny, nx))
    bkg_sigma = np.sqrt(bkg_e[hot_rows, hot_cols] + rn**2 + 1.0)
    hot_e[hot_rows, hot_cols] = rng_bad.uniform(30.0, 300.0, hot_idx.size) * bkg_sigma
    dead = np.zeros((ny, nx), bool)
    dead[dead_rows, dead_cols] = True

    arrays, cr_rows = [], []
    for k, exp in enumerate(exposures):
        ok = valid[k]
        raw = flux[None, :] * profiles[k] + illum * sky1d[None, :] + contam
        expect_e = raw * gain[None, :] + hot_e
        expect_e[dead] = 0.0
        expect_e = np.where(ok, np.maximum(expect_e, 0.0), 0.0)
        if opts["noise"]:
            counts = rng_noise.poisson(expect_e).astype(float) + rng_noise.normal(
                0.0, rn, size=(ny, nx)
            )
            if opts["excess_noise"] > 1.0:
                # noise the written variances leave out (as the pipeline's do): part
                # white, part correlated along the rows (1/f-like read noise)
                extra = np.sqrt((opts["excess_noise"] ** 2 - 1.0) * (expect_e + rn**2))
                counts += extra * _excess_field(
                    rng_excess, (ny, nx), opts["excess_noise_rows"], opts["excess_noise_length"]
                )
        else:
            counts = expect_e.copy()
        # cosmic rays
        cr_add = np.zeros((ny, nx))
        sig_e = np.sqrt(expect_e + rn**2)
        if opts["n_crs"]:
            ok_idx = np.flatnonzero(ok.ravel())
            starts = rng_cr.choice(ok_idx, size=min(opts["n_crs"], ok_idx.size), replace=False)
            lengths = rng_cr.integers(1, 4, size=starts.size)
            dirs = np.array([(0, 1), (1, 0), (1, 1), (1, -1)])[rng_cr.integers(0, 4, starts.size)]
            r0, c0 = np.unravel_index(starts, (ny, nx))
            step = np.arange(3)
            rr = r0[:, None] + dirs[:, :1] * step[None, :]
            cc = c0[:, None] + dirs[:, 1:] * step[None, :]
            use = step[None, :] < lengths[:, None]
            rr, cc = rr[use], cc[use]
            inside = (rr >= 0) & (rr < ny) & (cc >= 0) & (cc < nx)
            rr, cc = rr[inside], cc[inside]
            keep = ok[rr, cc]
            rr, cc = rr[keep], cc[keep]
            flat = np.unique(rr * nx + cc)
            rr, cc = np.unravel_index(flat, (ny, nx))
            nsig = rng_cr.uniform(10.0, 200.0, size=rr.size)
            cr_add[rr, cc] = nsig * sig_e[rr, cc]
            cr_rows.append(
                (
                    np.full(rr.size, exp.number),
                    np.full(rr.size, k),
                    rr,
                    cc,
                    cr_add[rr, cc] / gain[cc] * to_sci[rr, cc],
                    nsig,
                )
            )
        counts += cr_add
        with np.errstate(divide="ignore", invalid="ignore"):
            conv = np.where(gain > 0, 1.0 / gain, np.nan)[None, :] * to_sci
        sci = counts * conv
        var_p = expect_e * conv**2
        var_r = rn**2 * conv**2
        var_f = (0.003 * (expect_e - hot_e) * conv) ** 2
        dq = np.zeros((ny, nx), np.uint32)
        dq[~ok] |= DO_NOT_USE
        dq[hot_rows, hot_cols] |= HOT | DO_NOT_USE
        dq[dead_rows, dead_cols] |= DEAD | DO_NOT_USE
        dq[fo_mask & ok] |= MSA_FAILED_OPEN
        nan = ~ok
        out = {
            "data": sci,
            "var_poisson": var_p,
            "var_rnoise": var_r,
            "var_flat": var_f,
            "wavelength": wave2d[k],
            "pathloss_point": np.broadcast_to(tput[k][None, :], (ny, nx)).copy(),
            "pathloss_uniform": np.broadcast_to(pl_un[None, :], (ny, nx)).copy(),
        }
        if barshadow is not None:
            # jwst writes ones for a point source (its correction is not applied)
            point = opts["source_type"] == "POINT"
            out["barshadow"] = np.ones((ny, nx)) if point else barshadow.copy()
        for key, arr in out.items():
            arr = np.asarray(arr, dtype=float)
            arr[nan] = np.nan
            out[key] = arr.astype(np.float32)
        out["err"] = np.sqrt(
            out["var_poisson"].astype(float) + out["var_rnoise"] + out["var_flat"]
        ).astype(np.float32)
        out["dq"] = dq
        arrays.append(out)

    # slit attributes per exposure
    attrs = []
    ymins = []
    for k, exp in enumerate(exposures):
        ymin, ymax = _slit_limits(geom, exp)
        ymins.append((ymin, ymax))
        a = {
            "xstart": 1,
            "ystart": int(ystart),
            "xsize": nx,
            "ysize": ny,
            "source_id": src["source_id"],
            "source_name": src["source_name"],
            "source_alias": str(src["source_id"]),
            "stellarity": 1.0,
            "source_ra": opts["ra"],
            "source_dec": opts["dec"],
            "source_xpos": float(src["source_xpos"]),
            "source_ypos": float(ypos_k[k]),
            "slit_ymin": float(ymin),
            "slit_ymax": float(ymax),
            "pathloss_correction_type": "POINT" if opts["source_type"] == "POINT" else "UNIFORM",
            "wavelength_corrected": False,
        }
        if is_fs:
            a.update(
                name=geom.fixed_slit,
                slitlet_id=_FIXED_SLIT_NUMS[geom.fixed_slit] - 1,
                shutter_id=_FIXED_SLIT_NUMS[geom.fixed_slit] - 1,
                quadrant=5,
                xcen=0,
                ycen=0,
            )
        else:
            shift = int(round(YSLIT_DIRECTION * u * exp.delta_rows / PITCH_UNITS))
            j = geom.source_shutter + shift
            state = ["1"] * geom.n_shutters
            state[j] = "x"
            ycen = opts["ycen"] + (j - geom.source_shutter)
            a.update(
                name=str(src["slitlet_id"]),
                slitlet_id=src["slitlet_id"],
                quadrant=opts["quadrant"],
                xcen=opts["xcen"],
                ycen=int(ycen),
                shutter_state="".join(state),
                shutter_id=int(opts["xcen"] + (ycen - 1) * _SHUTTER_IDS_PER_COLUMN),
                barshadow_corrected=opts["source_type"] != "POINT",
            )
        if opts["source_type"] is not None:
            a["source_type"] = opts["source_type"]
        attrs.append(a)

    # Truth table
    truth = Table()
    truth["x"] = np.arange(nx)
    truth["wave"] = wave_col
    truth["wave"].unit = "um"
    truth["wave_true"] = wave_true
    truth["wave_true"].unit = "um"
    truth["flux"] = flux
    truth["flux"].unit = "uJy"
    truth["flux_continuum"] = flux_cont
    truth["flux_continuum"].unit = "uJy"
    truth["slit_throughput"] = tput.T
    truth["throughput"] = tput_true.T
    truth["pathloss_uniform"] = pl_un
    truth["sky"] = sky1d
    truth["sky"].unit = "uJy"
    truth["sigma"] = sigma
    truth["sigma"].unit = "pix"
    truth["psf_sigma"] = sig_psf
    truth["psf_sigma"].unit = "pix"
    truth["trace"] = src_rows.T
    truth["trace"].unit = "pix"
    truth["yslit0_row"] = centre_rows.T
    truth["yslit0_row"].unit = "pix"
    truth["snr_column"] = snr_col
    truth["electrons_per_ujy"] = gain

    crs = Table(
        names=("exposure", "index", "row", "col", "amplitude", "sigma"),
        dtype=(int, int, int, int, float, float),
    )
    for block in cr_rows:
        for vals in zip(*block, strict=True):
            crs.add_row(vals)
    bad = Table()
    bad["row"] = np.concatenate([hot_rows, dead_rows]).astype(int)
    bad["col"] = np.concatenate([hot_cols, dead_cols]).astype(int)
    bad["kind"] = np.array(["hot"] * hot_rows.size + ["dead"] * dead_rows.size, dtype="U4")

    meta = truth.meta
    meta["truth_definition"] = (
        "flux [uJy] is the source flux density entering the telescope at instrument "
        "resolution, sampled at wave_true (the true wavelength of the source light in each "
        "column). throughput[x, k] is the fraction of that flux that passes the open "
        "apertures in the k-th file (it reaches the detector, not modulated by the bar "
        "shadow); slit_throughput[x, k] (= PATHLOSS_PS) is the same for a point source at "
        "the catalogue position through the planned shutters (equal to throughput for a "
        "point source without stuck shutters). The detector image of the source, summed "
        "over rows, is flux*throughput in raw = SCI * calib * PIXAR_SR * 1e12 with calib = "
        "BARSHADOW*PATHLOSS_UN (default), PATHLOSS_PS (source_type POINT) or PATHLOSS_UN "
        "(fixed slits). The sky S [uJy/pixel] is raw sky / illumination, the illumination "
        "being ~BARSHADOW. trace[x, k] is the row of the source centre in the k-th file, "
        "yslit0_row[x, k] the row where the WCS gives y_slit = 0."
    )
    meta.update(
        {
            "source_id": src["source_id"],
            "source_name": src["source_name"],
            "slit_name": attrs[0]["name"],
            "grating": grating.grating,
            "filter": grating.filter,
            "fixed_slit": geom.fixed_slit,
            "n_shutters": geom.n_shutters,
            "source_shutter_index": geom.source_shutter,
            "redshift": src["redshift"],
            "snr_requested": src["snr"],
            "snr_peak": float(np.max(snr_col)),
            "continuum_ujy_at_2um": float(amp) if not user_spec else None,
            "continuum_slope": src["continuum_slope"],
            "user_spectrum": user_spec,
            "lines": line_info,
            "intrinsic_sigma_pix": src["intrinsic_sigma"],
            "line_sigma_kms": src["line_sigma_kms"],
            "source_xpos": src["source_xpos"],
            "source_ypos": src["source_ypos"],
            "source_ypos_per_exposure": [float(v) for v in ypos_k],
            "source_xshift_pix": float(xshift),
            "sky_level_ujy_2um": opts["sky_level"],
            "read_noise_e": rn,
            "exptime_s": opts["exptime"],
            "pixel_scale_arcsec": PIXEL_SCALE,
            "yslit_per_pixel": float(YSLIT_DIRECTION * u),
            "yslit_unit_arcsec": geom.unit_arcsec,
            "shutter_pitch_arcsec": SHUTTER_PITCH,
            "nod_offsets": [float(e.nod_offset) for e in exposures],
            "x_offsets_arcsec": [float(e.x_offset) for e in exposures],
            "y_offsets_arcsec": [float(e.y_offset) for e in exposures],
            "delta_rows": [float(e.delta_rows) for e in exposures],
            "exposure_numbers": [int(e.number) for e in exposures],
            "slit_limits": [list(v) for v in ymins],
            "stuck_closed_shutter": stuck,
            "failed_open_neighbour": bool(opts["failed_open_neighbour"]),
            "pathloss_applied": "PATHLOSS_PS" if opts["source_type"] == "POINT" else "PATHLOSS_UN",
            "source_type": opts["source_type"],
            "optics": repr(opts["optics"]),
            "barshadow_floor": None if is_fs else BARSHADOW_FLOOR,
            "cutout_shape": [ny, nx],
            "ystart": int(ystart),
            "cosmic_rays": {c: [v.item() for v in crs[c]] for c in crs.colnames},
            "hot_pixels": [[int(r), int(c)] for r, c in zip(hot_rows, hot_cols, strict=True)],
            "dead_pixels": [[int(r), int(c)] for r, c in zip(dead_rows, dead_cols, strict=True)],
            "seed": opts["seed"],
            "noise": opts["noise"],
            "excess_noise": opts["excess_noise"],
            "excess_noise_rows": opts["excess_noise_rows"],
            "excess_noise_length_px": opts["excess_noise_length"],
        }
    )
    return _SlitProducts(arrays, attrs, wcs_list, truth, crs, bad)


# --------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------
def _fill_exposure_meta(model, opts, grating, exp, nexp_positions, fixed_slit, filename):
    meta = model.meta
    meta.filename = filename
    meta.telescope = "JWST"
    meta.origin = "slitcombine.testing.simulate"
    root = opts["root"]
    program, obsnum, visit = root[2:7], root[7:10], root[10:13]
    obs = meta.observation
    obs.program_number = program
    obs.observation_number = obsnum
    obs.visit_number = visit
    obs.visit_id = f"{program}{obsnum}{visit}"
    obs.visit_group = "03"
    obs.sequence_id = "1"
    obs.activity_id = "01"
    obs.exposure_number = str(exp.number)
    obs.obs_id = f"V{program}{obsnum}{visit}P00000000031{exp.number:02d}"
    obs.date = "2025-01-01"
    obs.time = "00:00:00.000"
    inst = meta.instrument
    inst.name = "NIRSPEC"
    inst.detector = opts["detector"]
    inst.grating = grating.grating
    inst.filter = grating.filter
    if fixed_slit is None:
        inst.lamp_mode = "MSASPEC"
        inst.msa_metadata_file = f"{root}_01_msa.fits"
        inst.msa_metadata_id = 1
        inst.msa_configuration_id = 1
        inst.fixed_slit = "NONE"
    else:
        inst.lamp_mode = "FIXEDSLIT"
        inst.fixed_slit = fixed_slit
    ex = meta.exposure
    ex.type = "NRS_MSASPEC" if fixed_slit is None else "NRS_FIXEDSLIT"
    ex.exposure_time = opts["exptime"]
    ex.effective_exposure_time = opts["exptime"]
    ex.integration_time = opts["exptime"]
    ex.nints = 1
    ex.ngroups = 14
    ex.nframes = 5
    ex.groupgap = 0
    ex.readpatt = "NRSIRS2"
    start = 60676.0 + exp.index * (opts["exptime"] + 120.0) / 86400.0
    ex.start_time = start
    ex.mid_time = start + 0.5 * opts["exptime"] / 86400.0
    ex.end_time = start + opts["exptime"] / 86400.0
    dith = meta.dither
    dith.position_number = exp.position
    dith.total_points = nexp_positions
    dith.x_offset = float(exp.x_offset)
    dith.y_offset = float(exp.y_offset)
    if fixed_slit is None:
        dith.primary_type = "NONE"
        dith.nod_type = opts["nod_type"]
    else:
        dith.primary_type = f"{nexp_positions}-POINT-NOD" if nexp_positions in (2, 3) else "NONE"
        dith.nod_type = "NONE"
    meta.target.ra = opts["ra"]
    meta.target.dec = opts["dec"]
    cal = meta.cal_step
    for step in ("assign_wcs", "extract_2d", "srctype", "flat_field", "pathloss", "photom"):
        setattr(cal, step, "COMPLETE")
    cal.barshadow = "COMPLETE" if fixed_slit is None else "SKIPPED"
    cal.wavecorr = "SKIPPED"


def _fill_slit(slit, arrays, attrs, wcs, grating):
    """Set the arrays, slit attributes, WCS and slit-level meta of a slit (or SlitModel)."""
    meta = slit.meta
    meta.bunit_data = "MJy/sr"
    meta.bunit_err = "MJy/sr"
    meta.photometry.pixelarea_steradians = PIXAR_SR
    meta.photometry.pixelarea_arcsecsq = PIXAR_SR * (180 / np.pi * 3600) ** 2
    meta.wcsinfo.dispersion_direction = 1
    meta.wcsinfo.waverange_start = grating.wave_min * 1e-6
    meta.wcsinfo.waverange_end = grating.wave_max * 1e-6
    meta.wcsinfo.spectral_order = 0 if grating.grating == "PRISM" else 1
    for key, arr in arrays.items():
        setattr(slit, key, arr)
    for key, val in attrs.items():
        setattr(slit, key, val)
    slit.meta.wcs = wcs


def _new_model(cls):
    """A datamodel that validates once, strictly, before saving (faster than on assignment)."""
    return cls(validate_on_assignment=False, strict_validation=True)


def _write_model(model, path):
    """Validate a datamodel and write it atomically (temporary file, then rename)."""
    model.validate()
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        # through a file object: given a name, stdatamodels would record the
        # temporary name as meta.filename
        model.to_fits(fh, overwrite=True)


def _write_table(table, path):
    with atomic_path(path) as tmp:
        table.write(tmp, format="ascii.ecsv", overwrite=True)


def _prepare_output_dir(output_dir):
    """Create ``output_dir`` if needed and check that it is writable."""
    path = Path(output_dir)
    if path.exists() and not path.is_dir():
        raise OutputError(f"output_dir {str(path)!r} exists and is not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".slitcombine-probe.", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputError(f"output_dir {str(path)!r} is not writable: {exc}") from exc
    return path


# --------------------------------------------------------------------------------------
# Public entry point
# --------------------------------------------------------------------------------------
def simulate_observation(
    output_dir,
    *,
    grating="PRISM",
    filter=None,  # noqa: A002 - the JWST keyword name
    n_shutters=3,
    fixed_slit=None,
    n_nods=3,
    nod_offsets=None,
    n_per_position=1,
    fs_nod_step=1.0,
    dither_origin=(0.0, 0.0),
    snr=None,
    continuum_ujy=None,
    continuum_slope=0.5,
    redshift=4.23,
    lines=None,
    line_sigma_kms=50.0,
    spectrum=None,
    intrinsic_sigma=0.3,
    source_ypos=0.0,
    source_xpos=0.0,
    trace_slope=1.5,
    trace_curvature=0.5,
    sky_level=0.08,
    read_noise=5.5,
    exptime=1021.222,
    nx=None,
    n_crs=20,
    n_hot=5,
    n_dead=5,
    stuck_closed_shutter=None,
    failed_open_neighbour=False,
    multi_slit_sources=None,
    detector="NRS1",
    root="jw09999001001",
    source_id=1,
    slitlet_id=42,
    source_name=None,
    ra=150.1,
    dec=2.2,
    position_angle=30.0,
    noise=True,
    overwrite=True,
    seed=1,
    optics_model=None,
    source_type=None,
    excess_noise=1.0,
    excess_noise_rows=0.5,
    excess_noise_length=20.0,
):
    """Simulate a nodded NIRSpec MSA or fixed-slit observation and write it to disk.

    Every option is validated before anything is written; an invalid option raises
    :class:`~slitcombine.errors.ConfigurationError` naming it and leaves ``output_dir``
    untouched. Files are written atomically (temporary file, then :func:`os.replace`).

    Parameters
    ----------
    output_dir : str or os.PathLike
        Directory for the files; created if missing.
    grating : {'PRISM', 'G140M', 'G235M', 'G395M', 'G140H', 'G235H', 'G395H'}
        Disperser (see :data:`GRATINGS`).
    filter : str, optional
        Must match the grating's filter (CLEAR; F100LP for G140M/H, F170LP for G235M/H,
        F290LP for G395M/H) if given.
    n_shutters : {1, 2, 3, 5}
        Open shutters of the MSA slitlet (ignored for fixed slits).
    fixed_slit : {'S200A1', 'S200A2', 'S400A1', 'S1600A1'}, optional
        Simulate a fixed-slit exposure (EXP_TYPE NRS_FIXEDSLIT, no bar shadow) instead.
    n_nods : int
        Number of nod positions. Default offsets: 1 -> [0], 2 -> [-0.5, +0.5],
        3 -> [0, +1, -1] (shutter pitches for the MSA, ``fs_nod_step`` for fixed slits).
    nod_offsets : sequence of float, optional
        Explicit nod offsets (length ``n_nods``). For the MSA their differences must be
        whole shutter pitches and the source must stay in an open shutter.
    n_per_position : int
        Exposures per nod position (taken consecutively, same ``PATT_NUM``).
    fs_nod_step : float
        Fixed-slit nod step [arcsec].
    dither_origin : (float, float)
        ``(x_offset, y_offset)`` [arcsec] of nod offset 0.
    snr : float, optional
        Peak over columns of the single-exposure continuum S/N per column of an optimal
        (profile-weighted) extraction, including sky, read and source Poisson noise. The
        continuum amplitude is solved for. 0 gives no source. Default 20 unless
        ``continuum_ujy`` or ``spectrum`` is given.
    continuum_ujy : float, optional
        Continuum f_nu at 2 micron [microJy] (instead of ``snr``).
    continuum_slope : float
        Power-law index of the continuum, ``f_nu ~ lambda^slope``. A Lyman break at
        1215.67 A (1+z) (LSF-smoothed) is applied.
    redshift : float
        Redshift of the lines and of the Lyman break.
    lines : sequence of EmissionLine, optional
        Emission lines; default :data:`DEFAULT_LINES`; ``()`` for none.
    line_sigma_kms : float
        Intrinsic line width [km/s], added in quadrature to the LSF.
    spectrum : (array, array), optional
        User spectrum ``(wave [micron], f_nu [microJy])`` used as is (interpolated, no LSF);
        excludes ``snr``, ``continuum_ujy`` and ``lines``.
    intrinsic_sigma : float
        Intrinsic Gaussian sigma of the source along the slit [pixels].
    source_ypos, source_xpos : float
        Source position in the aperture, in units of the aperture height/width, in
        [-0.5, 0.5] (for fixed slits ``source_ypos`` is relative to the nod position).
    trace_slope, trace_curvature : float
        Trace shape: ``row = yc + 0.5 trace_slope t + trace_curvature t^2``,
        ``t = 2x/(nx-1) - 1`` [pixels].
    sky_level : float
        Sky at 2 micron [microJy per pixel]; the shape is :func:`default_sky`. 0 for none.
    read_noise : float
        Read noise per pixel per exposure [electrons].
    exptime : float
        Exposure time [s].
    nx : int, optional
        Cutout width [pixels]; default per grating. Smaller values keep the blue part.
    n_crs : int
        Cosmic-ray events per exposure (1-3 pixels each, not flagged in DQ).
    n_hot, n_dead : int
        Hot and dead pixels (DQ flagged), fixed on the detector.
    stuck_closed_shutter : int, optional
        Index (by increasing ``y_slit``, as in ``shutter_state``) of a shutter that stays
        closed in all exposures: it passes neither sky nor source light.
    failed_open_neighbour : bool
        Add a failed-open shutter in the neighbouring MSA row of the last shutter: its sky
        spectrum (shifted by 0.268/0.1035 = 2.6 px) falls on that shutter's rows in every
        exposure and those pixels get DQ bit MSA_FAILED_OPEN (2**29).
    multi_slit_sources : int or sequence of dict, optional
        Write one ``MultiSlitModel`` ``*_cal.fits`` per exposure holding several sources.
        An int N makes N sources with consecutive ids and redshifts ``redshift + 0.1 i``;
        dicts override per-source options (keys: redshift, snr, continuum_ujy,
        continuum_slope, lines, spectrum, intrinsic_sigma, source_xpos, source_ypos,
        source_id, slitlet_id, source_name, line_sigma_kms).
    detector : {'NRS1', 'NRS2'}
        Detector name (metadata only).
    root : str
        Visit root ``jwPPPPPOOOVVV``.
    source_id, slitlet_id : int
        Identifiers. ``source_name`` defaults to ``'{program}_{source_id}'``.
    source_name : str, optional
    ra, dec : float
        Source position [deg].
    position_angle : float
        Angle of the slit on the sky [deg].
    noise : bool
        If False, SCI holds the noise-free expected signal (cosmic rays, hot and dead pixels
        are still added when asked for); VAR_* still describe the noise it would have.
    overwrite : bool
        If False, raise :class:`~slitcombine.errors.OutputError` (before writing anything)
        when a target file exists.
    seed : int
        Seed of :func:`numpy.random.default_rng`; the same seed gives identical files.
    optics_model : {'airy', 'gaussian'} or slitcombine.core.optics.OpticsModel, optional
        How the instrument images the source (:mod:`slitcombine.core.optics`): the default
        obscured Airy telescope PSF with the calibrated post-MSA blur (realistic wings),
        ``'gaussian'`` for a Gaussian telescope PSF and blur without wings, or a model.
    source_type : {None, 'POINT', 'EXTENDED', 'UNKNOWN'}
        ``SRCTYPE`` of the products and the pipeline calibration that goes with it:
        ``'POINT'`` divides by ``PATHLOSS_PS`` and writes ``BARSHADOW = 1`` (jwst does not
        correct point sources for the bar shadow); otherwise ``BARSHADOW * PATHLOSS_UN``.
    excess_noise : float
        Rms of the noise over the written ``VAR_POISSON + VAR_RNOISE`` (>= 1): the extra
        noise real data have and the pipeline's variances leave out.
    excess_noise_rows : float
        Fraction of the extra variance correlated along the detector rows (1/f-like).
    excess_noise_length : float
        Correlation length of that part along the rows, pixels.

    Returns
    -------
    SimulatedObservation
        Paths, truth tables and the exposure list.

    Raises
    ------
    ConfigurationError
        For an invalid option (nothing is written).
    OutputError
        If ``output_dir`` cannot be created or written (nothing is written), or if writing
        fails midway (the files of this call are removed).

    Notes
    -----
    The truth table (ECSV, one per source, ``{root}_truth.{slit}.{source_name}.ecsv``) has
    one row per detector column with ``x``, ``wave`` (WCS wavelength, micron),
    ``wave_true`` (true wavelength of the source light, micron), ``flux`` (truth, microJy),
    ``flux_continuum``, ``slit_throughput`` (= PATHLOSS_PS, one value per file),
    ``pathloss_uniform``, ``sky`` (microJy/pixel), ``sigma`` and ``psf_sigma`` (profile
    widths, pixels), ``trace`` (source row per file), ``yslit0_row`` (row of
    ``y_slit = 0`` per file), ``snr_column`` (single-exposure optimal S/N of the first file)
    and ``electrons_per_ujy``. Scalars (redshift, nod and dither offsets, lines, injected
    cosmic rays, hot/dead pixels, sky level ...) are in ``table.meta``.
    """
    t_start = time.perf_counter()
    # ---------------------------------------------------------------- validation
    if not isinstance(grating, str) or grating.upper() not in GRATINGS:
        raise ConfigurationError(f"grating must be one of {sorted(GRATINGS)}, got {grating!r}")
    setup = GRATINGS[grating.upper()]
    if filter is not None and (not isinstance(filter, str) or filter.upper() != setup.filter):
        raise ConfigurationError(
            f"filter {filter!r} does not go with grating {setup.grating} (expected {setup.filter})"
        )
    if fixed_slit is not None:
        if not isinstance(fixed_slit, str) or fixed_slit.upper() not in FIXED_SLITS:
            raise ConfigurationError(
                f"fixed_slit must be one of {sorted(FIXED_SLITS)} or None, got {fixed_slit!r}"
            )
        fixed_slit = fixed_slit.upper()
    if fixed_slit is None and (isinstance(n_shutters, bool) or n_shutters not in (1, 2, 3, 5)):
        raise ConfigurationError(f"n_shutters must be 1, 2, 3 or 5, got {n_shutters!r}")
    n_shutters = 1 if fixed_slit is not None else int(n_shutters)
    n_nods = _check_int("n_nods", n_nods, 1)
    n_per_position = _check_int("n_per_position", n_per_position, 1)
    if nod_offsets is None:
        defaults = {1: [0.0], 2: [-0.5, 0.5], 3: [0.0, 1.0, -1.0]}
        if n_nods not in defaults:
            raise ConfigurationError(
                f"n_nods={n_nods} has no default pattern; give nod_offsets explicitly"
            )
        nod_offsets = defaults[n_nods]
    try:
        nod_offsets = [float(v) for v in nod_offsets]
    except (TypeError, ValueError):
        raise ConfigurationError(f"nod_offsets must be numbers, got {nod_offsets!r}") from None
    if len(nod_offsets) != n_nods or not np.all(np.isfinite(nod_offsets)):
        raise ConfigurationError(
            f"nod_offsets must hold n_nods={n_nods} finite values, got {nod_offsets!r}"
        )
    rel = np.array(nod_offsets) - nod_offsets[0]
    if fixed_slit is None:
        if np.any(np.abs(rel - np.round(rel)) > 1e-9):
            raise ConfigurationError(
                f"nod_offsets {nod_offsets} must differ by whole shutter pitches for the MSA"
            )
        shifts = YSLIT_DIRECTION * np.round(rel)
        if shifts.max() - shifts.min() + 1 > n_shutters:
            raise ConfigurationError(
                f"nod_offsets {nod_offsets} move the source out of a {n_shutters}-shutter "
                "slitlet; use more shutters (n_shutters) or fewer nods (n_nods)"
            )
    fs_nod_step = _check_float("fs_nod_step", fs_nod_step, minimum=0.0, maximum=5.0)
    try:
        x0_off, y0_off = (float(v) for v in dither_origin)
    except (TypeError, ValueError):
        raise ConfigurationError(
            f"dither_origin must be (x_offset, y_offset), got {dither_origin!r}"
        ) from None
    trace_slope = _check_float("trace_slope", trace_slope, -20, 20)
    trace_curvature = _check_float("trace_curvature", trace_curvature, -20, 20)
    sky_level = _check_float("sky_level", sky_level, minimum=0.0)
    read_noise = _check_float("read_noise", read_noise, minimum=0.0)
    exptime = _check_float("exptime", exptime, minimum=1e-3)
    if exptime <= 0:
        raise ConfigurationError("exptime must be > 0")
    if nx is not None:
        nx = _check_int("nx", nx, 16)
        if nx > setup.nx:
            raise ConfigurationError(f"nx must be <= {setup.nx} for {setup.grating}, got {nx}")
    else:
        nx = setup.nx
    n_crs = _check_int("n_crs", n_crs, 0)
    n_hot = _check_int("n_hot", n_hot, 0)
    n_dead = _check_int("n_dead", n_dead, 0)
    if stuck_closed_shutter is not None:
        if fixed_slit is not None:
            raise ConfigurationError("stuck_closed_shutter needs an MSA slitlet, not a fixed slit")
        stuck_closed_shutter = _check_int("stuck_closed_shutter", stuck_closed_shutter, 0)
        if stuck_closed_shutter >= n_shutters:
            raise ConfigurationError(
                f"stuck_closed_shutter must be < n_shutters={n_shutters}, "
                f"got {stuck_closed_shutter}"
            )
    if not isinstance(failed_open_neighbour, (bool, np.bool_)):
        raise ConfigurationError(
            f"failed_open_neighbour must be True or False, got {failed_open_neighbour!r}"
        )
    if failed_open_neighbour and fixed_slit is not None:
        raise ConfigurationError("failed_open_neighbour needs an MSA slitlet, not a fixed slit")
    if detector not in ("NRS1", "NRS2"):
        raise ConfigurationError(f"detector must be 'NRS1' or 'NRS2', got {detector!r}")
    if (
        not isinstance(root, str)
        or len(root) != 13
        or not root.startswith("jw")
        or not root[2:].isdigit()
    ):
        raise ConfigurationError(f"root must look like 'jwPPPPPOOOVVV', got {root!r}")
    ra = _check_float("ra", ra, 0.0, 360.0)
    dec = _check_float("dec", dec, -90.0, 90.0)
    position_angle = _check_float("position_angle", position_angle)
    if not isinstance(noise, (bool, np.bool_)):
        raise ConfigurationError(f"noise must be True or False, got {noise!r}")
    if not isinstance(overwrite, (bool, np.bool_)):
        raise ConfigurationError(f"overwrite must be True or False, got {overwrite!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ConfigurationError(f"seed must be an integer, got {seed!r}")
    excess_noise = _check_float("excess_noise", excess_noise, 1.0, 10.0)
    excess_noise_rows = _check_float("excess_noise_rows", excess_noise_rows, 0.0, 1.0)
    excess_noise_length = _check_float("excess_noise_length", excess_noise_length, 0.1)
    if optics_model is None or optics_model == "airy":
        optics_model = optics.DEFAULT_OPTICS
    elif optics_model == "gaussian":
        optics_model = optics.OpticsModel(telescope="gaussian", kernel_wing_fraction=0.0)
    elif not isinstance(optics_model, optics.OpticsModel):
        raise ConfigurationError(
            "optics_model must be 'airy', 'gaussian' or a slitcombine.core.optics.OpticsModel, "
            f"got {optics_model!r}"
        )
    if source_type is not None:
        if not isinstance(source_type, str) or source_type.upper() not in (
            "POINT",
            "EXTENDED",
            "UNKNOWN",
        ):
            raise ConfigurationError(
                f"source_type must be None, 'POINT', 'EXTENDED' or 'UNKNOWN', got {source_type!r}"
            )
        source_type = source_type.upper()
        if source_type == "POINT" and fixed_slit is not None:
            raise ConfigurationError("source_type='POINT' is simulated for MSA slitlets only")
    program = int(root[2:7])

    base_src = {
        "redshift": redshift,
        "snr": snr,
        "continuum_ujy": continuum_ujy,
        "continuum_slope": continuum_slope,
        "lines": lines,
        "spectrum": spectrum,
        "intrinsic_sigma": intrinsic_sigma,
        "source_xpos": source_xpos,
        "source_ypos": source_ypos,
        "source_id": source_id,
        "slitlet_id": slitlet_id,
        "source_name": source_name,
        "line_sigma_kms": line_sigma_kms,
    }
    multi = multi_slit_sources is not None
    if not multi:
        src_specs = [dict(base_src)]
    elif isinstance(multi_slit_sources, (int, np.integer)) and not isinstance(
        multi_slit_sources, bool
    ):
        if multi_slit_sources < 1:
            raise ConfigurationError(f"multi_slit_sources must be >= 1, got {multi_slit_sources}")
        src_specs = [{} for _ in range(int(multi_slit_sources))]
    elif isinstance(multi_slit_sources, Sequence) and not isinstance(multi_slit_sources, str):
        src_specs = list(multi_slit_sources)
        if not src_specs:
            raise ConfigurationError("multi_slit_sources must not be empty")
    else:
        raise ConfigurationError(
            f"multi_slit_sources must be an int or a list of dicts, got {multi_slit_sources!r}"
        )
    if multi:
        specs = []
        for i, over in enumerate(src_specs):
            if not isinstance(over, Mapping):
                raise ConfigurationError(f"multi_slit_sources[{i}] must be a dict")
            bad_keys = set(over) - _SOURCE_KEYS
            if bad_keys:
                raise ConfigurationError(
                    f"multi_slit_sources[{i}] has unknown keys {sorted(bad_keys)}"
                )
            spec = dict(base_src)
            spec.update(
                redshift=_check_float("redshift", redshift, 0.0) + 0.1 * i,
                source_id=_check_int("source_id", source_id, 0) + i,
                slitlet_id=_check_int("slitlet_id", slitlet_id, 1) + i,
                source_name=None,
            )
            spec.update(over)
            specs.append(spec)
        src_specs = specs
    sources = []
    for spec in src_specs:
        if spec["source_name"] is None:
            spec["source_name"] = f"{program}_{spec['source_id']}"
        sources.append(_check_source(spec, fixed_slit))
    ids = [s["source_id"] for s in sources]
    if len(set(ids)) != len(ids):
        raise ConfigurationError(f"multi_slit_sources: source ids must be unique, got {ids}")
    if fixed_slit is not None and len(sources) > 1:
        raise ConfigurationError("multi_slit_sources is only supported for MSA slitlets")
    if fixed_slit is None:
        slitlets = [s["slitlet_id"] for s in sources]
        if len(set(slitlets)) != len(slitlets):
            raise ConfigurationError(f"slitlet ids must be unique, got {slitlets}")

    # exposures
    exposures = []
    step = SHUTTER_PITCH if fixed_slit is None else fs_nod_step
    number = 0
    for p, off in enumerate(nod_offsets):
        for _ in range(n_per_position):
            number += 1
            yoff = y0_off + off * step
            if fixed_slit is None:
                delta = (off - nod_offsets[0]) * step / PIXEL_SCALE
                frame = delta
            else:
                delta = off * step / PIXEL_SCALE
                frame = 0.0
            exposures.append(_Exposure(number - 1, number, p + 1, off, x0_off, yoff, delta, frame))
    geom = _make_geometry(setup, fixed_slit, n_shutters, rel, nx, trace_slope, trace_curvature)
    if fixed_slit is not None:
        half = 0.5 - 2.0 * PIXEL_SCALE / geom.unit_arcsec
        for e in exposures:
            ypos = sources[0]["source_ypos"] + YSLIT_DIRECTION * geom.yslit_per_pixel * (
                e.delta_rows
            )
            if abs(ypos) > half:
                raise ConfigurationError(
                    f"nod_offsets/fs_nod_step put the source at y_slit={ypos:.3f}, outside "
                    f"the {fixed_slit} slit"
                )
    nod_type = (
        {1: "NONE", 2: "2-SHUTTER-SLITLET", 3: "3-SHUTTER-SLITLET", 5: "5-SHUTTER-SLITLET"}[
            n_shutters
        ]
        if n_nods > 1
        else "NONE"
    )

    # file names
    det = detector.lower()
    if multi:
        names = [[f"{root}_03101_{e.number:05d}_{det}_cal.fits" for e in exposures]]
    else:
        label = fixed_slit.lower() if fixed_slit else f"{sources[0]['slitlet_id']:03d}"
        names = [
            [
                f"{root}_03101_{e.number:05d}_{det}_phot.{label}.{sources[0]['source_name']}.fits"
                for e in exposures
            ]
        ]
    truth_names = []
    for s in sources:
        label = fixed_slit.lower() if fixed_slit else f"{s['slitlet_id']:03d}"
        truth_names.append(f"{root}_truth.{label}.{s['source_name']}.ecsv")

    out_dir = Path(output_dir)
    if not overwrite and out_dir.is_dir():
        clash = [n for n in names[0] + truth_names if (out_dir / n).exists()]
        if clash:
            raise OutputError(f"{clash[0]} exists in {str(out_dir)!r} and overwrite=False")

    opts = {
        "excess_noise": excess_noise,
        "excess_noise_rows": excess_noise_rows,
        "excess_noise_length": excess_noise_length,
        "optics": optics_model,
        "source_type": source_type,
        "stuck_closed_shutter": stuck_closed_shutter,
        "failed_open_neighbour": bool(failed_open_neighbour),
        "sky_level": sky_level,
        "read_noise": read_noise,
        "exptime": exptime,
        "n_crs": n_crs,
        "n_hot": n_hot,
        "n_dead": n_dead,
        "ra": ra,
        "dec": dec,
        "position_angle": position_angle,
        "seed": int(seed),
        "root": root,
        "noise": bool(noise),
        "detector": detector,
        "nod_type": nod_type,
        "quadrant": 3,
        "xcen": 180,
        "ycen": 84,
    }

    # ---------------------------------------------------------------- simulation
    rngs = np.random.default_rng(seed).spawn(len(sources))
    products = []
    for i, src in enumerate(sources):
        o = dict(opts)
        o["ycen"] = opts["ycen"] + 8 * i
        o["ra"] = ra + 2e-3 * i
        ystart = 659 + 60 * i
        products.append(_simulate_source(src, o, setup, geom, exposures, rngs[i], ystart))

    # ---------------------------------------------------------------- writing
    out_dir = _prepare_output_dir(output_dir)
    from astropy.table import Table
    from stdatamodels.jwst import datamodels

    written = []
    try:
        all_files = []
        src_files = [[] for _ in sources]
        if multi:
            for k, exp in enumerate(exposures):
                fname = names[0][k]
                model = _new_model(datamodels.MultiSlitModel)
                _fill_exposure_meta(model, opts, setup, exp, n_nods, fixed_slit, fname)
                for i, prod in enumerate(products):
                    slit = _new_model(datamodels.SlitModel)
                    _fill_slit(slit, prod.arrays[k], prod.attrs[k], prod.wcs[k], setup)
                    model.slits.append(slit)
                    src_files[i].append(out_dir / fname)
                path = out_dir / fname
                _write_model(model, path)
                written.append(path)
                all_files.append(path)
        else:
            prod = products[0]
            for k, exp in enumerate(exposures):
                fname = names[0][k]
                model = _new_model(datamodels.SlitModel)
                _fill_exposure_meta(model, opts, setup, exp, n_nods, fixed_slit, fname)
                _fill_slit(model, prod.arrays[k], prod.attrs[k], prod.wcs[k], setup)
                path = out_dir / fname
                _write_model(model, path)
                written.append(path)
                all_files.append(path)
                src_files[0].append(path)
        results = []
        for i, (src, prod) in enumerate(zip(sources, products, strict=True)):
            prod.truth.meta["files"] = [p.name for p in src_files[i]]
            path = out_dir / truth_names[i]
            _write_table(prod.truth, path)
            written.append(path)
            results.append(
                SourceTruth(
                    source_id=src["source_id"],
                    source_name=src["source_name"],
                    slitlet_id=prod.attrs[0]["slitlet_id"],
                    slit_name=prod.attrs[0]["name"],
                    files=src_files[i],
                    truth_path=path,
                    truth=prod.truth,
                    cosmic_rays=prod.cosmic_rays,
                    bad_pixels=prod.bad_pixels,
                )
            )
    except OSError as exc:
        for p in written:
            p.unlink(missing_ok=True)
        raise OutputError(f"writing to {str(out_dir)!r} failed: {exc}") from exc

    exp_table = Table()
    exp_table["exposure"] = [e.number for e in exposures]
    exp_table["position"] = [e.position for e in exposures]
    exp_table["nod_offset"] = [e.nod_offset for e in exposures]
    exp_table["x_offset"] = [e.x_offset for e in exposures]
    exp_table["y_offset"] = [e.y_offset for e in exposures]
    exp_table["delta_rows"] = [e.delta_rows for e in exposures]
    exp_table["file"] = [p.name for p in all_files]
    elapsed = time.perf_counter() - t_start
    log.info(
        "simulated %d exposure(s) x %d source(s) (%s, %s) in %.2f s into %s",
        len(exposures),
        len(sources),
        setup.grating,
        fixed_slit or f"{n_shutters}-shutter",
        elapsed,
        out_dir,
    )
    return SimulatedObservation(
        output_dir=out_dir,
        files=all_files,
        truth_path=results[0].truth_path,
        truth=results[0].truth,
        sources=results,
        exposures=exp_table,
        elapsed=elapsed,
        options={
            "grating": setup.grating,
            "filter": setup.filter,
            "fixed_slit": fixed_slit,
            "n_shutters": n_shutters,
            "n_nods": n_nods,
            "nod_offsets": nod_offsets,
            "n_per_position": n_per_position,
            "seed": int(seed),
        },
    )
