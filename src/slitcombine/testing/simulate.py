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

Modules
-------
:func:`simulate_observation` checks its options and lays out the observation
(:mod:`slitcombine.testing.sim_options`), simulates each source's slit in named stages
(:mod:`slitcombine.testing.sim_source`: the scene at the MSA, the apertures and the
spectrograph's blur, the pipeline's conventions, the detector, the truth) with the
geometry and image formation of :mod:`slitcombine.testing.sim_optics` and the models of
:mod:`slitcombine.testing.sim_models`, and writes the files
(:mod:`slitcombine.testing.sim_write`).
"""

from __future__ import annotations

import logging
import time

import numpy as np

# the constants and records the simulator's users import from here (re-exported)
from slitcombine.instrument import FIXED_SLITS as FIXED_SLITS
from slitcombine.instrument import PIXAR_SR as PIXAR_SR
from slitcombine.instrument import PIXEL_SCALE as PIXEL_SCALE
from slitcombine.instrument import SHUTTER_HEIGHT as SHUTTER_HEIGHT
from slitcombine.instrument import SHUTTER_PITCH as SHUTTER_PITCH
from slitcombine.instrument import SHUTTER_PITCH_X as SHUTTER_PITCH_X
from slitcombine.instrument import SHUTTER_WIDTH as SHUTTER_WIDTH
from slitcombine.testing.sim_models import BARSHADOW_FLOOR as BARSHADOW_FLOOR
from slitcombine.testing.sim_models import DEAD as DEAD
from slitcombine.testing.sim_models import DEFAULT_LINES as DEFAULT_LINES
from slitcombine.testing.sim_models import DO_NOT_USE as DO_NOT_USE
from slitcombine.testing.sim_models import GRATINGS as GRATINGS
from slitcombine.testing.sim_models import HOT as HOT
from slitcombine.testing.sim_models import MSA_FAILED_OPEN as MSA_FAILED_OPEN
from slitcombine.testing.sim_models import PITCH_UNITS as PITCH_UNITS
from slitcombine.testing.sim_models import YSLIT_DIRECTION as YSLIT_DIRECTION
from slitcombine.testing.sim_models import EmissionLine as EmissionLine
from slitcombine.testing.sim_models import GratingSetup as GratingSetup
from slitcombine.testing.sim_models import SimulatedObservation
from slitcombine.testing.sim_models import SourceTruth as SourceTruth
from slitcombine.testing.sim_models import default_sky as default_sky
from slitcombine.testing.sim_models import psf_sigma_pixels as psf_sigma_pixels
from slitcombine.testing.sim_options import plan_observation
from slitcombine.testing.sim_source import simulate_source
from slitcombine.testing.sim_write import exposure_table, write_observation

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

    Its length is the signature and this docstring; the work is done in stages:
    :func:`~slitcombine.testing.sim_options.plan_observation` (the options, the
    exposures, the geometry, the file names),
    :func:`~slitcombine.testing.sim_source.simulate_source` (per source) and
    :func:`~slitcombine.testing.sim_write.write_observation`.
    """
    given = dict(locals())  # the parameters as given: the first statement
    t_start = time.perf_counter()
    plan = plan_observation(given)
    rngs = np.random.default_rng(seed).spawn(len(plan.sources))
    products = []
    for i, src in enumerate(plan.sources):
        o = dict(plan.opts)
        o["ycen"] = plan.opts["ycen"] + 8 * i
        o["ra"] = plan.opts["ra"] + 2e-3 * i
        ystart = 659 + 60 * i
        products.append(
            simulate_source(src, o, plan.setup, plan.geom, plan.exposures, rngs[i], ystart)
        )
    out_dir, all_files, results = write_observation(plan, products, output_dir)
    elapsed = time.perf_counter() - t_start
    log.info(
        "simulated %d exposure(s) x %d source(s) (%s, %s) in %.2f s into %s",
        len(plan.exposures),
        len(plan.sources),
        plan.setup.grating,
        plan.fixed_slit or f"{plan.n_shutters}-shutter",
        elapsed,
        out_dir,
    )
    return SimulatedObservation(
        output_dir=out_dir,
        files=all_files,
        truth_path=results[0].truth_path,
        truth=results[0].truth,
        sources=results,
        exposures=exposure_table(plan.exposures, all_files),
        elapsed=elapsed,
        options={
            "grating": plan.setup.grating,
            "filter": plan.setup.filter,
            "fixed_slit": plan.fixed_slit,
            "n_shutters": plan.n_shutters,
            "n_nods": plan.n_nods,
            "nod_offsets": plan.nod_offsets,
            "n_per_position": plan.n_per_position,
            "seed": plan.opts["seed"],
        },
    )
