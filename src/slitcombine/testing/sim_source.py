"""The simulation of one slit, in named stages: scene, optics, pipeline, detector, tables.

:func:`simulate_source` simulates every exposure of one source's slit:

1. :func:`_scene`: the source and the sky at the MSA plane, per detector column (the
   wavelengths, the PSF width, the source spectrum shape, the sky);
2. :func:`_light`: the apertures and the spectrograph's blur (:class:`FormedImages`):
   the detector image of the source per exposure, the illumination of a uniform
   source, the throughputs, the light of a failed-open neighbour;
3. :func:`_pipeline`: the pipeline-convention products (BARSHADOW, PATHLOSS_UN, the
   calibration to MJy/sr) and each exposure's WCS with its valid pixels;
4. :func:`_amplitude`: the electrons per microJy and the continuum amplitude that gives
   the requested S/N;
5. the detector: the hot and dead pixels (:func:`_defects`), then per exposure the
   noise (:func:`_noisy_counts`), the cosmic rays (:func:`_cosmic_rays`) and the
   arrays written (:func:`_exposure_arrays`);
6. the slit attributes (:func:`_slit_attributes`) and the truth tables
   (:mod:`slitcombine.testing.sim_truth`).

The random draws come from four streams spawned from the source's generator (defects,
noise, cosmic rays, excess noise), each drawn in exposure order: the same seed gives
the same files.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import brentq

from slitcombine.errors import ConfigurationError
from slitcombine.instrument import PIXAR_SR, PIXEL_SCALE, SHUTTER_PITCH_X
from slitcombine.testing.sim_models import (
    BARSHADOW_FLOOR,
    DEAD,
    DO_NOT_USE,
    FIXED_SLIT_NUMS,
    HOT,
    MSA_FAILED_OPEN,
    PHOTON_CONSTANT,
    PITCH_UNITS,
    SHUTTER_IDS_PER_COLUMN,
    YSLIT_DIRECTION,
    column_spectrum,
    default_sky,
    efficiency,
    pathloss_uniform,
    psf_sigma_pixels,
    xpos_shift,
)
from slitcombine.testing.sim_optics import FormedImages, build_wcs, slit_limits
from slitcombine.testing.sim_truth import (
    bad_pixel_table,
    cosmic_ray_table,
    truth_meta,
    truth_meta_run,
    truth_table,
)

__all__ = ["SlitProducts", "simulate_source", "excess_field"]


def excess_field(rng, shape, rows_fraction, length):
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


@dataclass
class SlitProducts:
    """What :func:`simulate_source` makes of one slit, ready to be written."""

    arrays: list  # per exposure dict of arrays
    attrs: list  # per exposure dict of slit attributes
    wcs: list
    truth: object
    cosmic_rays: object
    bad_pixels: object


@dataclass(frozen=True)
class _Scene:
    """The source and the sky at the MSA plane, per detector column (length ``nx``).

    ``wave_col`` is the WCS wavelength and ``wave_true`` the true wavelength of the
    source light [micron], ``dwdx`` the dispersion [micron/px], ``xshift`` the shift of
    the source light by ``source_xpos`` [px], ``sig_psf``/``sigma`` the PSF and source
    widths [px], ``ypos_k`` the source's ``y_slit`` per exposure, ``sky1d`` the sky
    [microJy/px]; ``cont_shape`` .. ``user_spec`` as :func:`column_spectrum` returns.
    """

    x: np.ndarray
    wave_col: np.ndarray
    dwdx: np.ndarray
    xshift: float
    wave_true: np.ndarray
    sig_psf: np.ndarray
    sigma: np.ndarray
    ypos_k: np.ndarray
    sky1d: np.ndarray
    cont_shape: np.ndarray
    lines_fixed: np.ndarray
    lines_ratio: np.ndarray
    line_info: list
    user_spec: bool


@dataclass(frozen=True)
class _Light:
    """The light through the apertures and the spectrograph (``(ny, nx)`` images).

    ``illum``/``nominal``: illumination of a uniform source through the open/planned
    apertures; ``profiles`` ``(nexp, ny, nx)``: the source image per exposure (a column
    sums to the throughput); ``tput_true``/``tput`` ``(nexp, nx)``: the source's
    throughput and a point source's through the planned shutters (PATHLOSS_PS);
    ``contam``/``fo_mask``: the light of a failed-open neighbour and where it falls.
    """

    image: FormedImages
    illum: np.ndarray
    nominal: np.ndarray
    profiles: np.ndarray
    tput_true: np.ndarray
    tput: np.ndarray
    contam: np.ndarray
    fo_mask: np.ndarray


@dataclass(frozen=True)
class _Pipeline:
    """The pipeline's conventions: ``barshadow`` (None for fixed slits), ``pl_un``
    (PATHLOSS_UN per column), ``to_sci`` (microJy/px -> MJy/sr, calibration divided),
    and per exposure the WCS, the valid pixels and the wavelength image [micron]."""

    barshadow: np.ndarray | None
    pl_un: np.ndarray
    to_sci: np.ndarray
    wcs_list: list
    valid: np.ndarray
    wave2d: np.ndarray


@dataclass(frozen=True)
class _Flux:
    """The source flux: ``gain`` [e- per microJy per px], ``bkg_e`` (background
    electrons), ``amp`` (continuum at 2 micron [microJy]), ``flux``/``flux_cont``
    [microJy] and ``snr_col`` (single-exposure optimal S/N per column)."""

    gain: np.ndarray
    bkg_e: np.ndarray
    amp: float
    flux: np.ndarray
    flux_cont: np.ndarray
    snr_col: np.ndarray


@dataclass(frozen=True)
class _Defects:
    """Hot and dead pixels, the same in every exposure: their rows and columns, the hot
    pixels' extra electrons ``hot_e`` and the dead-pixel mask."""

    hot_rows: np.ndarray
    hot_cols: np.ndarray
    dead_rows: np.ndarray
    dead_cols: np.ndarray
    hot_e: np.ndarray
    dead: np.ndarray


def simulate_source(src, opts, grating, geom, exposures, rng, ystart):
    """Simulate every exposure of one slit.

    Parameters
    ----------
    src : dict
        The source's options (validated: :func:`slitcombine.testing.sim_options.check_source`).
    opts : dict
        The run's options (noise, detector, sky, pointing; see ``simulate_observation``).
    grating : GratingSetup
    geom : slitcombine.testing.sim_optics.Geometry
    exposures : list of slitcombine.testing.sim_optics.Exposure
    rng : numpy.random.Generator
        The source's generator (four streams are spawned from it).
    ystart : int
        ``ystart`` of the cutout (1-based detector row).

    Returns
    -------
    SlitProducts
    """
    scene = _scene(src, opts, grating, geom, exposures)
    light = _light(src, opts, geom, exposures, scene)
    pipe = _pipeline(src, opts, grating, geom, exposures, scene, light)
    flux = _amplitude(src, opts, grating, scene, light, pipe)
    cand = _defect_candidates(opts, pipe.valid)
    # independent streams: defects, noise and cosmic rays (noise=False keeps the same CRs)
    rng_bad, rng_noise, rng_cr, rng_excess = rng.spawn(4)
    defects = _defects(opts, cand, flux.bkg_e, (geom.ny, geom.nx), rng_bad)
    arrays, cr_rows = [], []
    for k, exp in enumerate(exposures):
        ok = pipe.valid[k]
        expect_e = _expected_electrons(k, ok, scene, light, flux, defects)
        counts = _noisy_counts(expect_e, opts, rng_noise, rng_excess)
        sig_e = np.sqrt(expect_e + opts["read_noise"] ** 2)
        cr_add, block = _cosmic_rays(ok, sig_e, opts["n_crs"], rng_cr)
        if block is not None:
            rr, cc, nsig = block
            amplitude = cr_add[rr, cc] / flux.gain[cc] * pipe.to_sci[rr, cc]
            cr_rows.append(
                (np.full(rr.size, exp.number), np.full(rr.size, k), rr, cc, amplitude, nsig)
            )
        counts += cr_add
        arrays.append(_exposure_arrays(k, counts, expect_e, opts, light, pipe, flux, defects))
    attrs, ymins = _slit_attributes(src, opts, geom, exposures, scene.ypos_k, ystart)
    truth = truth_table(scene, light, pipe, flux)
    crs = cosmic_ray_table(cr_rows)
    bad = bad_pixel_table(defects)
    truth_meta(truth.meta, src, opts, grating, geom, exposures, scene, flux, attrs, ymins)
    truth.meta.update(truth_meta_run(opts, geom, ystart, crs, defects))
    return SlitProducts(arrays, attrs, pipe.wcs_list, truth, crs, bad)


def _scene(src, opts, grating, geom, exposures):
    """Stage 1: the source and the sky at the MSA plane (:class:`_Scene`)."""
    d = YSLIT_DIRECTION
    u = geom.yslit_per_pixel
    x = np.arange(geom.nx, dtype=float)
    wave_col = np.interp(x, geom.xk, geom.wave_knots)
    dwdx = np.gradient(wave_col)
    xshift = xpos_shift(geom, src)
    wave_true = np.interp(x - xshift, geom.xk, geom.wave_knots, left=np.nan, right=np.nan)
    sig_psf = psf_sigma_pixels(wave_col)
    sigma = np.sqrt(sig_psf**2 + src["intrinsic_sigma"] ** 2)
    ypos_k = np.array(
        [src["source_ypos"] + d * u * (exp.delta_rows - exp.frame_shift) for exp in exposures]
    )
    sky1d = opts["sky_level"] / float(default_sky(2.0)) * default_sky(wave_col)
    sky1d[~np.isfinite(sky1d)] = 0.0
    spectrum = column_spectrum(src, grating, geom, wave_col, dwdx, wave_true, sig_psf)
    return _Scene(x, wave_col, dwdx, xshift, wave_true, sig_psf, sigma, ypos_k, sky1d, *spectrum)


def _light(src, opts, geom, exposures, scene):
    """Stage 2: the apertures and the spectrograph's blur (:class:`_Light`)."""
    stuck = opts["stuck_closed_shutter"]
    open_centres = [c for j, c in enumerate(geom.centres) if j != stuck]
    image = FormedImages(opts["optics"], geom, scene.wave_col, src, scene.ypos_k, exposures)
    # The MSA is fixed: the open apertures (stuck shutter excluded) and the planned ones
    illum = image.illumination(open_centres)
    nominal = image.illumination(geom.centres)
    # Source light on the detector through the open apertures of each exposure (this
    # includes the slit throughput: a column sums to F * T), and the throughput the
    # pipeline would write as PATHLOSS_PS: a point source at the catalogue position
    # through the planned shutters
    profiles, tput_true = image.source(src["intrinsic_sigma"], open_centres)
    _, tput = image.source(0.0, geom.centres, profiles=False)
    contam, fo_mask = _failed_open_light(opts, geom, image, scene.x)
    return _Light(image, illum, nominal, profiles, tput_true, tput, contam, fo_mask)


def _failed_open_light(opts, geom, image, x):
    """The sky through a failed-open shutter next to the last one, and where it falls.

    Returns
    -------
    contam : numpy.ndarray
        ``(ny, nx)`` its light [microJy/px] (zeros without ``failed_open_neighbour``).
    fo_mask : numpy.ndarray of bool
        ``(ny, nx)`` the pixels it illuminates (> 5%).
    """
    ny, nx = geom.ny, geom.nx
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
    return contam, fo_mask


def _pipeline(src, opts, grating, geom, exposures, scene, light):
    """Stage 3: the pipeline's BARSHADOW, PATHLOSS and WCS conventions (:class:`_Pipeline`)."""
    ny, nx = geom.ny, geom.nx
    is_fs = geom.fixed_slit is not None
    barshadow = None if is_fs else np.clip(light.nominal, BARSHADOW_FLOOR, None)
    pl_un = pathloss_uniform(scene.wave_col)
    if is_fs:
        calib = np.broadcast_to(pl_un[None, :], (ny, nx))
    elif opts["source_type"] == "POINT":
        # jwst: no bar-shadow correction for point sources, PATHLOSS_PS applied
        calib = np.broadcast_to(light.tput[0][None, :], (ny, nx))
    else:
        calib = pl_un[None, :] * barshadow
    to_sci = 1.0 / (PIXAR_SR * 1e12) / calib
    # Valid pixels (from the WCS itself)
    wcs_list = []
    valid = np.empty((len(exposures), ny, nx), bool)
    wave2d = np.empty((len(exposures), ny, nx))
    gx, gy = np.meshgrid(scene.x, np.arange(ny, dtype=float))
    for k, exp in enumerate(exposures):
        wcs = build_wcs(
            geom,
            grating,
            exp,
            src["source_xpos"],
            scene.ypos_k[k],
            opts["ra"],
            opts["dec"],
            opts["position_angle"],
        )
        _, ys, lam = wcs.get_transform("detector", "slit_frame")(gx, gy)
        valid[k] = np.isfinite(ys) & np.isfinite(lam)
        wave2d[k] = lam * 1e6
        wcs_list.append(wcs)
    return _Pipeline(barshadow, pl_un, to_sci, wcs_list, valid, wave2d)


def _amplitude(src, opts, grating, scene, light, pipe):
    """Stage 4: electrons per microJy and the continuum amplitude (:class:`_Flux`).

    With ``snr``, the amplitude whose peak single-exposure optimal S/N per column is
    ``snr`` (sky, read and source noise); the lines given by peak ratio scale with it.
    """
    eta = efficiency(grating, scene.wave_col)
    gain = PHOTON_CONSTANT * eta * np.abs(scene.dwdx) / scene.wave_col * opts["exptime"]
    gain[~np.isfinite(gain)] = 0.0  # e- per uJy
    rn = opts["read_noise"]
    bkg_e = (light.illum * scene.sky1d[None, :] + light.contam) * gain[None, :]
    profiles, valid = light.profiles, pipe.valid

    def column_snr(flux_col, k=0):
        """Single-exposure optimal-extraction S/N per column of ``flux_col`` [microJy]."""
        s_e = flux_col[None, :] * profiles[k] * gain[None, :]
        var = s_e + bkg_e + rn**2
        return np.sqrt(np.where(valid[k], s_e**2 / var, 0.0).sum(axis=0))

    cont_shape = scene.cont_shape
    amp = 1.0  # a user spectrum is used as given
    if scene.user_spec:
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
    flux = flux_cont + scene.lines_fixed + amp * scene.lines_ratio
    snr_col = column_snr(flux_cont)
    for entry in scene.line_info:
        if entry.get("in_range") and entry.get("peak_ratio") is not None:
            entry["flux"] = float(entry.pop("flux_per_continuum") * amp)
    return _Flux(gain, bkg_e, amp, flux, flux_cont, snr_col)


def _defect_candidates(opts, valid):
    """The pixels valid in every exposure, where hot and dead pixels may go.

    Raises
    ------
    ConfigurationError
        More hot and dead pixels asked for than there are such pixels.
    """
    any_valid = valid.all(axis=0)
    cand = np.flatnonzero(any_valid.ravel())
    n_bad = opts["n_hot"] + opts["n_dead"]
    if n_bad > cand.size:
        raise ConfigurationError(f"n_hot + n_dead = {n_bad} exceeds the {cand.size} valid pixels")
    return cand


def _defects(opts, cand, bkg_e, shape, rng_bad):
    """Stage 5a: hot and dead pixels, fixed in detector pixels (:class:`_Defects`)."""
    ny, nx = shape
    rn = opts["read_noise"]
    n_bad = opts["n_hot"] + opts["n_dead"]
    bad_idx = rng_bad.choice(cand, size=n_bad, replace=False) if n_bad else np.zeros(0, int)
    hot_idx, dead_idx = bad_idx[: opts["n_hot"]], bad_idx[opts["n_hot"] :]
    hot_rows, hot_cols = np.unravel_index(hot_idx, (ny, nx))
    dead_rows, dead_cols = np.unravel_index(dead_idx, (ny, nx))
    hot_e = np.zeros((ny, nx))
    bkg_sigma = np.sqrt(bkg_e[hot_rows, hot_cols] + rn**2 + 1.0)
    hot_e[hot_rows, hot_cols] = rng_bad.uniform(30.0, 300.0, hot_idx.size) * bkg_sigma
    dead = np.zeros((ny, nx), bool)
    dead[dead_rows, dead_cols] = True
    return _Defects(hot_rows, hot_cols, dead_rows, dead_cols, hot_e, dead)


def _expected_electrons(k, ok, scene, light, flux, defects):
    """Noise-free electrons of exposure ``k``: source, sky, failed-open light, defects."""
    raw = flux.flux[None, :] * light.profiles[k] + light.illum * scene.sky1d[None, :]
    raw = raw + light.contam
    expect_e = raw * flux.gain[None, :] + defects.hot_e
    expect_e[defects.dead] = 0.0
    return np.where(ok, np.maximum(expect_e, 0.0), 0.0)


def _noisy_counts(expect_e, opts, rng_noise, rng_excess):
    """Stage 5b: Poisson and read noise (and the excess noise) on ``expect_e``."""
    rn = opts["read_noise"]
    if not opts["noise"]:
        return expect_e.copy()
    counts = rng_noise.poisson(expect_e).astype(float) + rng_noise.normal(
        0.0, rn, size=expect_e.shape
    )
    if opts["excess_noise"] > 1.0:
        # noise the written variances leave out (as the pipeline's do): part
        # white, part correlated along the rows (1/f-like read noise)
        extra = np.sqrt((opts["excess_noise"] ** 2 - 1.0) * (expect_e + rn**2))
        counts += extra * excess_field(
            rng_excess, expect_e.shape, opts["excess_noise_rows"], opts["excess_noise_length"]
        )
    return counts


def _cosmic_rays(ok, sig_e, n_crs, rng_cr):
    """Stage 5c: the cosmic rays of one exposure (1-3 pixel streaks, 10-200 sigma).

    Returns
    -------
    cr_add : numpy.ndarray
        ``(ny, nx)`` electrons added.
    block : (rr, cc, nsig) or None
        Their pixels and amplitudes in units of ``sig_e`` (None when ``n_crs`` is 0).
    """
    ny, nx = ok.shape
    cr_add = np.zeros((ny, nx))
    if not n_crs:
        return cr_add, None
    ok_idx = np.flatnonzero(ok.ravel())
    starts = rng_cr.choice(ok_idx, size=min(n_crs, ok_idx.size), replace=False)
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
    return cr_add, (rr, cc, nsig)


def _exposure_arrays(k, counts, expect_e, opts, light, pipe, flux, defects):
    """Stage 5d: the arrays of exposure ``k`` in the pipeline's units and conventions.

    SCI, VAR_* and ERR in MJy/sr (squared), WAVELENGTH, PATHLOSS_*, BARSHADOW (float32,
    NaN outside the valid pixels) and DQ.
    """
    ok = pipe.valid[k]
    ny, nx = ok.shape
    rn = opts["read_noise"]
    gain = flux.gain
    with np.errstate(divide="ignore", invalid="ignore"):
        conv = np.where(gain > 0, 1.0 / gain, np.nan)[None, :] * pipe.to_sci
    dq = np.zeros((ny, nx), np.uint32)
    dq[~ok] |= DO_NOT_USE
    dq[defects.hot_rows, defects.hot_cols] |= HOT | DO_NOT_USE
    dq[defects.dead_rows, defects.dead_cols] |= DEAD | DO_NOT_USE
    dq[light.fo_mask & ok] |= MSA_FAILED_OPEN
    out = {
        "data": counts * conv,
        "var_poisson": expect_e * conv**2,
        "var_rnoise": rn**2 * conv**2,
        "var_flat": (0.003 * (expect_e - defects.hot_e) * conv) ** 2,
        "wavelength": pipe.wave2d[k],
        "pathloss_point": np.broadcast_to(light.tput[k][None, :], (ny, nx)).copy(),
        "pathloss_uniform": np.broadcast_to(pipe.pl_un[None, :], (ny, nx)).copy(),
    }
    if pipe.barshadow is not None:
        # jwst writes ones for a point source (its correction is not applied)
        point = opts["source_type"] == "POINT"
        out["barshadow"] = np.ones((ny, nx)) if point else pipe.barshadow.copy()
    nan = ~ok
    for key, arr in out.items():
        arr = np.asarray(arr, dtype=float)
        arr[nan] = np.nan
        out[key] = arr.astype(np.float32)
    out["err"] = np.sqrt(
        out["var_poisson"].astype(float) + out["var_rnoise"] + out["var_flat"]
    ).astype(np.float32)
    out["dq"] = dq
    return out


def _slit_attributes(src, opts, geom, exposures, ypos_k, ystart):
    """Stage 6a: the slit attributes of each exposure, and its ``(slit_ymin, slit_ymax)``."""
    attrs, ymins = [], []
    for k, exp in enumerate(exposures):
        ymin, ymax = slit_limits(geom, exp)
        ymins.append((ymin, ymax))
        a = {
            "xstart": 1,
            "ystart": int(ystart),
            "xsize": geom.nx,
            "ysize": geom.ny,
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
        a.update(_aperture_attributes(src, opts, geom, exp))
        if opts["source_type"] is not None:
            a["source_type"] = opts["source_type"]
        attrs.append(a)
    return attrs, ymins


def _aperture_attributes(src, opts, geom, exp):
    """The attributes of the aperture of one exposure: fixed slit, or MSA shutters."""
    if geom.fixed_slit is not None:
        return dict(
            name=geom.fixed_slit,
            slitlet_id=FIXED_SLIT_NUMS[geom.fixed_slit] - 1,
            shutter_id=FIXED_SLIT_NUMS[geom.fixed_slit] - 1,
            quadrant=5,
            xcen=0,
            ycen=0,
        )
    u = geom.yslit_per_pixel
    shift = int(round(YSLIT_DIRECTION * u * exp.delta_rows / PITCH_UNITS))
    j = geom.source_shutter + shift
    state = ["1"] * geom.n_shutters
    state[j] = "x"
    ycen = opts["ycen"] + (j - geom.source_shutter)
    return dict(
        name=str(src["slitlet_id"]),
        slitlet_id=src["slitlet_id"],
        quadrant=opts["quadrant"],
        xcen=opts["xcen"],
        ycen=int(ycen),
        shutter_state="".join(state),
        shutter_id=int(opts["xcen"] + (ycen - 1) * SHUTTER_IDS_PER_COLUMN),
        barshadow_corrected=opts["source_type"] != "POINT",
    )
