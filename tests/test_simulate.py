"""Tests of :mod:`slitcombine.testing.simulate`.

Synthetic NIRSpec slit files with a known truth.
"""

from __future__ import annotations

import io
from pathlib import Path

import asdf
import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from slitcombine.errors import ConfigurationError, OutputError, SlitCombineError
from slitcombine.testing.simulate import (
    DEAD,
    DO_NOT_USE,
    GRATINGS,
    HOT,
    MSA_FAILED_OPEN,
    PIXAR_SR,
    PIXEL_SCALE,
    SHUTTER_PITCH,
    EmissionLine,
    simulate_observation,
)

datamodels = pytest.importorskip("stdatamodels.jwst.datamodels")

IMAGE_EXTENSIONS = (
    "SCI",
    "ERR",
    "DQ",
    "WAVELENGTH",
    "VAR_POISSON",
    "VAR_RNOISE",
    "VAR_FLAT",
    "PATHLOSS_PS",
    "PATHLOSS_UN",
)
QUIET = {"n_crs": 0, "n_hot": 0, "n_dead": 0}


def _asdf_tree(path):
    with fits.open(path) as hdul:
        raw = hdul["ASDF"].data[0][0].tobytes()
    return asdf.open(io.BytesIO(raw), lazy_tree=True).tree


def _row_of_yslit(wcs, shape, value=0.0):
    """Row where ``y_slit == value`` in every column (linear interpolation of the WCS)."""
    ny, nx = shape
    y, x = np.mgrid[:ny, :nx]
    _, ys, _ = wcs.get_transform("detector", "slit_frame")(x, y)
    rows = np.full(nx, np.nan)
    for i in np.flatnonzero(np.isfinite(ys).sum(axis=0) > 2):  # nx interpolations, not pixels
        good = np.isfinite(ys[:, i])
        order = np.argsort(ys[good, i])
        rows[i] = np.interp(value, ys[good, i][order], y[good, i][order])
    return rows


@pytest.fixture(scope="module")
def prism3(tmp_path_factory):
    """The default 3-nod PRISM observation (3-shutter slitlet)."""
    return simulate_observation(tmp_path_factory.mktemp("prism3"), seed=1)


# ---------------------------------------------------------------------------- file format
def test_file_names_and_extensions(prism3):
    names = [p.name for p in prism3.files]
    assert names == [f"jw09999001001_03101_{k:05d}_nrs1_phot.042.9999_1.fits" for k in (1, 2, 3)]
    assert prism3.truth_path.name == "jw09999001001_truth.042.9999_1.ecsv"
    for path in prism3.files:
        with fits.open(path) as hdul:
            for ext in IMAGE_EXTENSIONS + ("BARSHADOW", "ASDF"):
                assert ext in hdul, ext
            assert hdul["SCI"].header["BUNIT"] == "MJy/sr"
            assert hdul["DQ"].data.dtype.kind == "u" and hdul["DQ"].data.dtype.itemsize == 4
            assert hdul["SCI"].data.shape == (25, 416)
    assert not list(prism3.output_dir.glob(".*tmp*")), "temporary files left behind"


def test_header_keywords_for_header_only_readers(prism3):
    expected_y = [0.0, SHUTTER_PITCH, -SHUTTER_PITCH]
    for k, path in enumerate(prism3.files):
        h0 = fits.getheader(path, 0)
        h1 = fits.getheader(path, "SCI")
        assert h0["PATT_NUM"] == k + 1 and h0["NUMDTHPT"] == 3
        assert h0["NOD_TYPE"] == "3-SHUTTER-SLITLET"
        assert h0["YOFFSET"] == pytest.approx(expected_y[k])
        assert h0["EXP_TYPE"] == "NRS_MSASPEC" and h0["OPMODE"] == "MSASPEC"
        assert (h0["INSTRUME"], h0["GRATING"], h0["FILTER"]) == ("NIRSPEC", "PRISM", "CLEAR")
        assert h0["DETECTOR"] == "NRS1" and h0["EFFEXPTM"] == pytest.approx(1021.222)
        assert h0["READPATT"] == "NRSIRS2" and h0["NINTS"] == 1
        assert h0["MSAMETFL"] == "jw09999001001_01_msa.fits"
        assert h0["VISIT_ID"] == "09999001001" and h0["EXPOSURE"] == str(k + 1)
        assert h1["PIXAR_SR"] == pytest.approx(4.85e-13, rel=0.01, abs=0)
        assert (h1["SLTSTRT1"], h1["SLTSIZE1"], h1["SLTSIZE2"]) == (1, 416, 25)
        assert h1["SLTNAME"] == "42" and h1["SLITID"] == 42 and h1["SOURCEID"] == 1
        assert h1["SRCNAME"] == "9999_1" and h1["SRCXPOS"] == 0.0 and h1["SRCYPOS"] == 0.0
        assert h1["SHUTSTA"] == ["1x1", "x11", "11x"][k]
        assert h1["PTHLOSS"] == "UNIFORM" and h1["BARSHDW"]


def test_asdf_tree_and_stdatamodels(prism3):
    for k, path in enumerate(prism3.files):
        tree = _asdf_tree(path)
        meta = tree["meta"]
        assert meta["wcs"].available_frames == ["detector", "slit_frame", "world"]
        for key in (
            "name",
            "slitlet_id",
            "source_id",
            "source_name",
            "source_alias",
            "source_ra",
            "source_dec",
            "source_xpos",
            "source_ypos",
            "shutter_state",
            "shutter_id",
            "quadrant",
            "xcen",
            "ycen",
            "xstart",
            "ystart",
            "xsize",
            "ysize",
            "slit_ymin",
            "slit_ymax",
        ):
            assert key in tree, key
        assert meta["dither"]["position_number"] == k + 1
        assert meta["exposure"]["type"] == "NRS_MSASPEC"
        assert meta["instrument"]["lamp_mode"] == "MSASPEC"
        assert meta["photometry"]["pixelarea_steradians"] == pytest.approx(PIXAR_SR)
        assert meta["cal_step"]["barshadow"] == "COMPLETE"
        assert meta["cal_step"]["pathloss"] == "COMPLETE"
        assert meta["filename"] == path.name
        model = datamodels.SlitModel(str(path))
        assert model.data.shape == (25, 416)
        assert model.meta.dither.nod_type == "3-SHUTTER-SLITLET"
        assert model.meta.observation.visit_id == "09999001001"
        assert model.meta.wcs.available_frames == ["detector", "slit_frame", "world"]
        model.close()


# ---------------------------------------------------------------------------- geometry
def test_wcs_trace_matches_truth(prism3):
    truth = prism3.truth
    assert np.allclose(truth["trace"], truth["yslit0_row"])  # source_ypos = 0
    for k, path in enumerate(prism3.files):
        model = datamodels.SlitModel(str(path))
        rows = _row_of_yslit(model.meta.wcs, model.data.shape)
        ok = np.isfinite(rows)
        assert ok.sum() > 0.9 * rows.size
        np.testing.assert_allclose(rows[ok], truth["yslit0_row"][ok, k], atol=0.01)
        np.testing.assert_allclose(rows[ok], truth["trace"][ok, k], atol=0.01)
        # WAVELENGTH extension == WCS wavelength (micron); NaN in the same places
        ny, nx = model.data.shape
        y, x = np.mgrid[:ny, :nx]
        _, _, lam = model.meta.wcs.get_transform("detector", "slit_frame")(x, y)
        _, _, lam_world = model.meta.wcs(x, y)
        assert np.array_equal(np.isfinite(lam), np.isfinite(model.wavelength))
        np.testing.assert_allclose(model.wavelength, lam * 1e6, rtol=1e-6, equal_nan=True)
        np.testing.assert_allclose(lam_world, lam * 1e6, rtol=1e-12, equal_nan=True)
        assert np.array_equal(np.isnan(model.data), ~np.isfinite(lam))
        # wavelength increases with x, equal in all rows
        has = np.isfinite(model.wavelength).any(axis=0)
        col = np.nanmedian(model.wavelength[:, has], axis=0)
        assert np.all(np.diff(col) > 0)
        np.testing.assert_allclose(col, truth["wave"][has], rtol=1e-6)
        spread = np.nanmax(model.wavelength[:, has], axis=0) - np.nanmin(
            model.wavelength[:, has], axis=0
        )
        assert np.all(spread < 1e-6 * col)
        model.close()


def test_nod_geometry_matches_ceers_conventions(prism3):
    """y_slit decreases with row, +0.529" y_offset -> +5.11 px, range shifts +1.15 units."""
    models = [datamodels.SlitModel(str(p)) for p in prism3.files]
    limits = [(m.slit_ymin, m.slit_ymax) for m in models]
    np.testing.assert_allclose(limits, [(-2.2, 2.2), (-1.05, 3.35), (-3.35, 1.05)], atol=1e-9)
    trace = prism3.truth["trace"]
    yoff = np.array([m.meta.dither.y_offset for m in models])
    for k in (1, 2):
        np.testing.assert_allclose(trace[:, k] - trace[:, 0], (yoff[k] - yoff[0]) / PIXEL_SCALE)
    assert np.all(trace[:, 1] > trace[:, 0]) and np.all(trace[:, 2] < trace[:, 0])
    ny, nx = models[0].data.shape
    y, x = np.mgrid[:ny, :nx]
    ys = [m.meta.wcs.get_transform("detector", "slit_frame")(x, y)[1] for m in models]
    slope = np.nanmedian(np.diff(ys[0], axis=0))
    assert slope == pytest.approx(-PIXEL_SCALE / 0.46)
    both = np.isfinite(ys[1]) & np.isfinite(ys[0])
    assert both.sum() > 0.5 * both.size
    np.testing.assert_allclose((ys[1] - ys[0])[both], SHUTTER_PITCH / 0.46)
    # the trace is curved by 1-2 px over the cutout
    span = np.ptp(trace[:, 0])
    assert 0.5 < span < 3
    # one row is 0.1035 arcsec on the sky
    ra, dec, _ = models[0].meta.wcs(x, y)
    c = np.cos(np.deg2rad(dec[12, 200]))
    step = np.hypot((ra[13, 200] - ra[12, 200]) * c, dec[13, 200] - dec[12, 200]) * 3600
    assert step == pytest.approx(PIXEL_SCALE, rel=1e-3)
    for m in models:
        m.close()


def test_nod_sign_agrees_with_real_ceers_files(prism3, ceers_files):
    """Same sign of dy_slit/drow and of the trace shift per y_offset as the real files."""
    files = [Path(f) for f in ceers_files]

    def geometry(path):
        tree = _asdf_tree(path)
        wcs = tree["meta"]["wcs"]
        ny, nx = tree["data"].shape
        rows = _row_of_yslit(wcs, (ny, nx))
        y, x = np.mgrid[:ny, :nx]
        slope = np.nanmedian(np.diff(wcs.get_transform("detector", "slit_frame")(x, y)[1], axis=0))
        return tree["meta"]["dither"]["y_offset"], np.nanmedian(rows), slope

    real = [geometry(p) for p in files[:2]]
    sim = [geometry(p) for p in prism3.files[:2]]
    for (y0, r0, s0), (y1, r1, _) in (real, sim):
        assert np.sign(r1 - r0) == np.sign(y1 - y0) != 0
        assert (r1 - r0) == pytest.approx((y1 - y0) / PIXEL_SCALE, rel=0.05)
        assert s0 < 0
    assert np.sign(real[0][2]) == np.sign(sim[0][2])


def test_wcs_inverse_round_trip(prism3):
    model = datamodels.SlitModel(str(prism3.files[1]))
    wcs = model.meta.wcs
    ny, nx = model.data.shape
    y, x = np.mgrid[:ny, :nx]
    xs, ys, lam = wcs.get_transform("detector", "slit_frame")(x, y)
    xb, yb = wcs.get_transform("slit_frame", "detector")(xs, ys, lam)
    ok = np.isfinite(lam)
    np.testing.assert_allclose(xb[ok], x[ok], atol=1e-6)
    np.testing.assert_allclose(yb[ok], y[ok], atol=1e-6)
    ra, dec, wave = wcs(x, y)
    xi, yi = wcs.invert(ra[ok], dec[ok], wave[ok])
    np.testing.assert_allclose(xi, x[ok], atol=1e-6)
    np.testing.assert_allclose(yi, y[ok], atol=1e-6)
    model.close()


def test_source_ypos_convention(tmp_path):
    obs = simulate_observation(tmp_path, n_nods=2, source_ypos=0.2, nx=64, **QUIET)
    truth = obs.truth
    np.testing.assert_allclose(truth["trace"] - truth["yslit0_row"], -0.2 / (PIXEL_SCALE / 0.46))
    for k, path in enumerate(obs.files):
        model = datamodels.SlitModel(str(path))
        assert model.source_ypos == pytest.approx(0.2)
        rows = _row_of_yslit(model.meta.wcs, model.data.shape, value=0.2)
        ok = np.isfinite(rows)
        np.testing.assert_allclose(rows[ok], truth["trace"][ok, k], atol=0.01)
        model.close()


# ---------------------------------------------------------------------------- photometry
def _raw_ujy(model):
    """The raw detector signal in uJy/pixel: SCI with both pipeline corrections undone."""
    return model.data * model.barshadow * model.pathloss_uniform * PIXAR_SR * 1e12


def test_uniform_source_reproduces_barshadow(tmp_path):
    """The sky (a uniform source) is imaged with the bar-shadow pattern BARSHADOW describes."""
    obs = simulate_observation(tmp_path, snr=0, noise=False, n_nods=1, **QUIET)
    truth = obs.truth
    model = datamodels.SlitModel(str(obs.files[0]))
    raw = _raw_ujy(model)
    illum = raw / truth["sky"][None, :]
    above = model.barshadow > 0.421  # the pipeline floors its correction at 0.42
    np.testing.assert_allclose(illum[above], model.barshadow[above], rtol=1e-5)
    # hence SCI (corrected) is flat: the sky per pixel wherever the correction applies
    sci_ujy = model.data * model.pathloss_uniform * PIXAR_SR * 1e12
    np.testing.assert_allclose((sci_ujy / truth["sky"][None, :])[above], 1.0, rtol=1e-5)
    # the images of the two bars of a 3-shutter slitlet dip to ~0.5
    col = 200
    inner = np.flatnonzero(np.isfinite(illum[:, col]))
    prof = illum[inner[0] : inner[-1] + 1, col]
    mid = prof[1:-1]
    minima = np.flatnonzero((mid < prof[:-2]) & (mid <= prof[2:])) + 1
    assert len(minima) == 2
    assert np.all((prof[minima] > 0.35) & (prof[minima] < 0.8))
    assert prof.max() == pytest.approx(1.0, abs=0.02)
    model.close()


@pytest.mark.parametrize(
    "kw",
    [
        {"source_ypos": 0.0},
        {"source_ypos": 0.4, "source_xpos": -0.3},
        {"source_ypos": -0.45, "grating": "G395M", "nx": 300},
        {"source_ypos": 0.2, "n_shutters": 1, "n_nods": 1},
        {"source_ypos": 0.3, "optics_model": "gaussian"},
    ],
)
def test_point_source_detector_flux_is_flux_times_throughput(tmp_path, kw):
    """A point source anywhere in a shutter: detector sum = F * T, not shadowed by the bars."""
    opts = {"intrinsic_sigma": 0.0, "sky_level": 0.0, "noise": False, **QUIET, **kw}
    obs = simulate_observation(tmp_path, **opts)
    truth = obs.truth
    sel = (truth["flux"] > 0.05 * np.nanmax(truth["flux"])) & np.isfinite(truth["wave"])
    for k, path in enumerate(obs.files):
        model = datamodels.SlitModel(str(path))
        raw = _raw_ujy(model)
        has = np.isfinite(model.pathloss_point).any(axis=0)
        np.testing.assert_allclose(
            np.nanmedian(model.pathloss_point[:, has], axis=0),
            truth["slit_throughput"][has, k],
            rtol=1e-6,
        )
        # a point source with every planned shutter open: its throughput is PATHLOSS_PS
        np.testing.assert_allclose(truth["throughput"][:, k], truth["slit_throughput"][:, k])
        total = np.nansum(raw, axis=0)[sel]
        expect = (truth["flux"] * truth["throughput"][:, k])[sel]
        # what the post-MSA blur spreads beyond the slit's valid extent (NaN in the
        # files) is missing from the file: < 0.6% for a source at a shutter edge
        np.testing.assert_array_less(total / expect, 1.0 + 1e-3)
        assert np.median(total / expect) == pytest.approx(1.0, abs=6e-3)
        # the pipeline's bar-shadow division would make it brighter, the more so the
        # closer the trace runs to a bar
        sci = model.data * model.pathloss_uniform * PIXAR_SR * 1e12
        with np.errstate(invalid="ignore", divide="ignore"):
            assert np.nanmedian(np.nansum(sci, axis=0)[sel] / total) > 1.02
        model.close()
    t = truth["slit_throughput"][sel, 0]
    assert np.all((t > 0.2) & (t < 1.0 + 1e-9))


def test_point_source_profile_has_wings(tmp_path):
    """The detector profile of a centred point source: FWHM and encircled fractions."""
    obs = simulate_observation(
        tmp_path, intrinsic_sigma=0.0, sky_level=0.0, noise=False, n_nods=1, **QUIET
    )
    truth = obs.truth
    model = datamodels.SlitModel(str(obs.files[0]))
    raw = np.nan_to_num(_raw_ujy(model))
    for wave, fwhm_range in ((1.2, (1.0, 1.45)), (4.5, (1.5, 2.1))):
        col = int(np.argmin(np.abs(truth["wave"] - wave)))
        prof = raw[:, col] / raw[:, col].sum()
        rows = np.arange(prof.size) - truth["trace"][col, 0]
        within = [prof[np.abs(rows) <= r + 0.5].sum() for r in (2, 5)]
        assert 0.95 < within[0] < 0.995  # wings: 1-5% beyond +-2 rows
        assert within[1] > 0.99
        # FWHM from the oversampled model is 1.2-1.9 px; here from the pixel values
        fine = np.interp(np.linspace(-4, 4, 801), rows, prof)
        half = np.flatnonzero(fine > 0.5 * fine.max())
        fwhm = (half[-1] - half[0]) * 0.01
        assert fwhm_range[0] < fwhm < fwhm_range[1] + 0.5
    model.close()


def test_snr_definition_and_sigma(tmp_path):
    obs = simulate_observation(
        tmp_path, snr=12.5, n_nods=1, n_shutters=1, intrinsic_sigma=1.0, **QUIET
    )
    truth = obs.truth
    assert np.nanmax(truth["snr_column"]) == pytest.approx(12.5, rel=1e-6)
    assert truth.meta["snr_peak"] == pytest.approx(12.5, rel=1e-6)
    np.testing.assert_allclose(truth["sigma"] ** 2, truth["psf_sigma"] ** 2 + 1.0)
    fwhm = 2.3548 * truth["psf_sigma"]
    wave = truth["wave"]
    assert np.interp(1.0, wave, fwhm) == pytest.approx(1.2, abs=0.01)
    assert np.interp(5.0, wave, fwhm) == pytest.approx(1.9, abs=0.01)


def test_bright_line_and_continuum(tmp_path):
    line = EmissionLine(5008.24, peak_ratio=50.0, name="[OIII]")
    obs = simulate_observation(tmp_path, lines=[line], n_nods=1, n_shutters=1, **QUIET)
    truth = obs.truth
    excess = truth["flux"] - truth["flux_continuum"]
    i = int(np.argmax(excess))
    assert excess[i] / truth["flux_continuum"][i] == pytest.approx(50.0, rel=1e-6)
    assert truth["wave"][i] == pytest.approx(5008.24e-4 * 5.23, abs=0.02)
    info = truth.meta["lines"][0]
    assert info["in_range"] and info["flux"] > 0
    # Lyman break at 1216 A (1 + z): no continuum blueward
    assert np.all(truth["flux_continuum"][truth["wave"] < 0.1216 * 5.23 - 0.05] < 1e-3 * excess[i])


def test_user_spectrum(tmp_path):
    wave = np.linspace(0.5, 5.5, 200)
    flux = 1.0 + 0.1 * wave
    obs = simulate_observation(tmp_path, spectrum=(wave, flux), n_nods=1, n_shutters=1, **QUIET)
    truth = obs.truth
    good = np.isfinite(truth["wave_true"])
    np.testing.assert_allclose(truth["flux"][good], 1.0 + 0.1 * truth["wave_true"][good])


def test_noise_honesty(tmp_path):
    """Without source and CRs, (a - b)/sqrt(var_a + var_b) has unit scatter."""
    for grating in ("PRISM", "G395M"):
        obs = simulate_observation(
            tmp_path / grating, grating=grating, snr=0, n_nods=2, n_per_position=2, **QUIET
        )
        models = [datamodels.SlitModel(str(p)) for p in obs.files]
        for a, b in ((0, 1), (0, 2), (1, 3)):
            ma, mb = models[a], models[b]
            var = ma.var_poisson + ma.var_rnoise + mb.var_poisson + mb.var_rnoise
            z = (ma.data - mb.data) / np.sqrt(var)
            good = np.isfinite(z) & (ma.dq == 0) & (mb.dq == 0)
            assert good.sum() > 5000
            assert np.std(z[good]) == pytest.approx(1.0, abs=0.05), (grating, a, b)
            assert abs(np.mean(z[good])) < 0.05
        for m in models:
            np.testing.assert_allclose(
                m.err**2, m.var_poisson + m.var_rnoise + m.var_flat, rtol=1e-5, equal_nan=True
            )
            m.close()


def test_variances_scale_like_sci(tmp_path):
    """VAR_POISSON * BARSHADOW * PATHLOSS_UN / SCI is the same in all rows of a column."""
    obs = simulate_observation(tmp_path, noise=False, n_nods=1, **QUIET)
    model = datamodels.SlitModel(str(obs.files[0]))
    ratio = model.var_poisson * model.barshadow * model.pathloss_uniform / model.data
    rn = model.var_rnoise * (model.barshadow * model.pathloss_uniform) ** 2
    for col in (60, 200, 350):
        r = ratio[:, col][np.isfinite(ratio[:, col])]
        np.testing.assert_allclose(r, r[0], rtol=1e-4)
        q = rn[:, col][np.isfinite(rn[:, col])]
        np.testing.assert_allclose(q, q[0], rtol=1e-4)
    model.close()


# ---------------------------------------------------------------------------- defects
def test_cosmic_rays_are_listed_and_not_flagged(tmp_path):
    kw = {"noise": False, "n_hot": 0, "n_dead": 0, "n_nods": 2, "nx": 200}
    clean = simulate_observation(tmp_path / "clean", n_crs=0, **kw)
    hit = simulate_observation(tmp_path / "hit", n_crs=15, **kw)
    crs = hit.sources[0].cosmic_rays
    assert len(crs) >= 15 and set(crs["exposure"]) == {1, 2}
    meta_crs = hit.truth.meta["cosmic_rays"]
    assert meta_crs["row"] == list(crs["row"])
    table = Table.read(hit.truth_path)
    assert table.meta["cosmic_rays"]["col"] == list(crs["col"])
    for k, (pc, ph) in enumerate(zip(clean.files, hit.files, strict=True)):
        mc = datamodels.SlitModel(str(pc))
        mh = datamodels.SlitModel(str(ph))
        diff = np.nan_to_num(mh.data - mc.data)
        mine = crs[crs["index"] == k]
        expected = np.zeros_like(diff)
        expected[mine["row"], mine["col"]] = mine["amplitude"]
        np.testing.assert_allclose(diff, expected, rtol=1e-4, atol=1e-6)
        sigma = np.sqrt(mh.var_poisson + mh.var_rnoise)[mine["row"], mine["col"]]
        assert np.all(mine["amplitude"] > 9.99 * sigma)
        assert np.all(mh.dq[mine["row"], mine["col"]] == 0)
        assert np.array_equal(mh.dq, mc.dq)
        mc.close()
        mh.close()


def test_hot_and_dead_pixels(tmp_path):
    obs = simulate_observation(tmp_path, noise=False, n_hot=6, n_dead=4, n_crs=0, nx=150)
    ref = simulate_observation(tmp_path / "ref", noise=False, nx=150, **QUIET)
    bad = obs.sources[0].bad_pixels
    hot = bad[bad["kind"] == "hot"]
    dead = bad[bad["kind"] == "dead"]
    assert len(hot) == 6 and len(dead) == 4
    for path, clean_path in zip(obs.files, ref.files, strict=True):
        model = datamodels.SlitModel(str(path))
        clean = datamodels.SlitModel(str(clean_path))
        assert np.all(model.dq[hot["row"], hot["col"]] & (HOT | DO_NOT_USE) == HOT | DO_NOT_USE)
        assert np.all(model.dq[dead["row"], dead["col"]] & (DEAD | DO_NOT_USE) == DEAD | DO_NOT_USE)
        assert np.all(model.data[dead["row"], dead["col"]] == 0)
        assert np.all(np.isfinite(model.data[hot["row"], hot["col"]]))
        excess = (model.data - clean.data)[hot["row"], hot["col"]]
        noise = np.sqrt(clean.var_poisson + clean.var_rnoise)[hot["row"], hot["col"]]
        assert np.all(excess > 29 * noise)
        assert np.all(
            model.var_poisson[hot["row"], hot["col"]] > clean.var_poisson[hot["row"], hot["col"]]
        )
        flagged = (model.dq & DO_NOT_USE) > 0
        assert np.array_equal(
            flagged & ~np.isnan(model.data),
            np.isin(
                np.arange(model.data.size),
                np.ravel_multi_index((bad["row"], bad["col"]), model.data.shape),
            ).reshape(model.data.shape),
        )
        model.close()
        clean.close()


def test_stuck_closed_shutter(tmp_path):
    obs = simulate_observation(tmp_path, noise=False, stuck_closed_shutter=0, **QUIET)
    ref = simulate_observation(tmp_path / "ref", noise=False, **QUIET)
    assert obs.truth.meta["stuck_closed_shutter"] == 0
    model = datamodels.SlitModel(str(obs.files[0]))
    good = datamodels.SlitModel(str(ref.files[0]))
    ny, nx = model.data.shape
    y, x = np.mgrid[:ny, :nx]
    ys = model.meta.wcs.get_transform("detector", "slit_frame")(x, y)[1]
    # shutter 0 (lowest y_slit) of the exposure-1 frame is centred at y_slit = -1.15
    in_stuck = np.abs(ys + 1.15) < 0.25
    in_open = np.abs(ys) < 0.25
    # only the wide wing of the post-MSA blur (5.8% of the light, sigma 1.9 px) brings
    # some light of the neighbouring open shutter
    assert np.nanmax(np.abs(model.data[in_stuck])) < 5e-2 * np.nanmedian(good.data[in_stuck])
    # (only the blurred edge of the missing shutter is lost from its neighbour)
    np.testing.assert_allclose(model.data[in_open], good.data[in_open], rtol=1e-2)
    # in exposure 2 (shutter_state 'x11') the source sits in the stuck shutter: no flux
    m2 = datamodels.SlitModel(str(obs.files[1]))
    assert m2.shutter_state == "x11"
    t = obs.truth["trace"][:, 1]
    rows = np.clip(np.round(t).astype(int), 0, ny - 1)
    ref2 = datamodels.SlitModel(str(ref.files[1]))
    on_trace, ref_trace = m2.data[rows, np.arange(nx)], ref2.data[rows, np.arange(nx)]
    # no source light, only the wide wing of the neighbour's sky: a few % of the trace
    assert np.nanmax(np.abs(on_trace) / ref_trace) < 0.05
    for m in (model, good, m2, ref2):
        m.close()


def test_failed_open_neighbour(tmp_path):
    obs = simulate_observation(tmp_path, noise=False, failed_open_neighbour=True, **QUIET)
    ref = simulate_observation(tmp_path / "ref", noise=False, **QUIET)
    flagged = None
    for p, q in zip(obs.files, ref.files, strict=True):
        model, clean = datamodels.SlitModel(str(p)), datamodels.SlitModel(str(q))
        fo = (model.dq & MSA_FAILED_OPEN) > 0
        assert 0 < fo.sum() < fo.size // 2
        flagged = fo if flagged is None else flagged
        assert np.array_equal(fo, flagged)  # the same pixels in every exposure
        extra = model.data - clean.data
        assert np.nanmedian(extra[fo]) > 0.5 * np.nanmedian(clean.data[fo])
        assert np.nanmax(np.abs(extra[~fo & np.isfinite(extra)])) < 0.2 * np.nanmax(clean.data)
        model.close()
        clean.close()
    assert obs.truth.meta["failed_open_neighbour"]


# ---------------------------------------------------------------------------- options
OPTION_CASES = {
    "G140M": {"grating": "G140M", "nx": 300},
    "G235M": {"grating": "G235M", "filter": "F170LP", "nx": 300},
    "G395M": {"grating": "G395M", "nx": 300},
    "G395H": {"grating": "G395H"},
    "1-shutter": {"n_shutters": 1, "n_nods": 1},
    "2-shutter": {"n_shutters": 2, "n_nods": 2},
    "5-shutter": {"n_shutters": 5, "n_nods": 3},
    "3-shutter-2-nods": {"n_shutters": 3, "n_nods": 2},
    "fixed-slit-2": {"fixed_slit": "S200A1", "n_nods": 2},
    "fixed-slit-3": {"fixed_slit": "S200A1", "n_nods": 3},
    "per-position-2": {"n_per_position": 2, "nx": 120},
    "stuck": {"stuck_closed_shutter": 2, "nx": 120},
    "failed-open": {"failed_open_neighbour": True, "nx": 120},
    "offsets": {"source_xpos": -0.25, "source_ypos": -0.12, "dither_origin": (-15.8, 11.8)},
}


@pytest.mark.parametrize("case", sorted(OPTION_CASES))
def test_option_combinations_write_and_read(tmp_path, case):
    kw = OPTION_CASES[case]
    obs = simulate_observation(tmp_path, **kw)
    n_nods = kw.get("n_nods", 3)
    nexp = n_nods * kw.get("n_per_position", 1)
    assert len(obs.files) == nexp and len(obs.exposures) == nexp
    truth = Table.read(obs.truth_path)
    assert truth["trace"].shape == (len(truth), nexp)
    fixed = kw.get("fixed_slit")
    grating = GRATINGS[kw.get("grating", "PRISM")]
    positions = []
    for k, path in enumerate(obs.files):
        model = datamodels.SlitModel(str(path))
        positions.append(model.meta.dither.position_number)
        assert model.meta.instrument.grating == grating.grating
        assert model.meta.instrument.filter == grating.filter
        assert model.data.shape == (model.ysize, model.xsize) == (model.ysize, len(truth))
        rows = _row_of_yslit(model.meta.wcs, model.data.shape)
        ok = np.isfinite(rows)
        assert ok.mean() > 0.9
        np.testing.assert_allclose(rows[ok], truth["yslit0_row"][ok, k], atol=0.01)
        wave = model.wavelength[np.isfinite(model.wavelength)]
        assert wave.min() >= grating.wave_min and wave.max() <= grating.wave_max
        with fits.open(path) as hdul:
            assert ("BARSHADOW" in hdul) == (fixed is None)
            assert np.isfinite(hdul["SCI"].data).sum() > 0.5 * hdul["SCI"].data.size
        if fixed:
            assert model.meta.exposure.type == "NRS_FIXEDSLIT"
            assert model.meta.instrument.lamp_mode == "FIXEDSLIT"
            assert model.meta.instrument.fixed_slit == fixed and model.name == fixed
            assert (model.slit_ymin, model.slit_ymax) == (-0.55, 0.55)
            assert model.meta.dither.primary_type == f"{n_nods}-POINT-NOD"
        else:
            n_sh = kw.get("n_shutters", 3)
            assert len(model.shutter_state) == n_sh and model.shutter_state.count("x") == 1
            assert model.slit_ymax - model.slit_ymin == pytest.approx(2.1 + 1.15 * (n_sh - 1))
        if "source_xpos" in kw:
            assert model.source_xpos == pytest.approx(kw["source_xpos"])
        model.close()
    assert positions == list(obs.exposures["position"])
    yoff = np.array(obs.exposures["y_offset"])
    np.testing.assert_allclose(np.diff(truth["trace"][0]), np.diff(yoff) / PIXEL_SCALE, atol=1e-9)


def test_g395h_uses_a_2048_pixel_section(tmp_path):
    obs = simulate_observation(tmp_path, grating="G395H", n_nods=1, n_shutters=1, **QUIET)
    wave = obs.truth["wave"]
    assert len(wave) == 2048
    dl = np.gradient(wave)
    resolution = wave / (2.2 * dl)
    assert 2400 < np.median(resolution) < 3200


def test_prism_dispersion_is_realistic(prism3):
    wave = prism3.truth["wave"]
    resolution = wave / (2.2 * np.gradient(wave))
    assert np.interp(1.2, wave, resolution) == pytest.approx(31, rel=0.15)
    assert np.interp(5.0, wave, resolution) == pytest.approx(280, rel=0.15)
    assert np.all(np.diff(wave) > 0)


def test_multislit(tmp_path):
    obs = simulate_observation(
        tmp_path,
        multi_slit_sources=[{"redshift": 3.0}, {"snr": 5.0, "source_ypos": 0.1}],
        n_nods=3,
        nx=150,
    )
    assert [p.name for p in obs.files] == [
        f"jw09999001001_03101_{k:05d}_nrs1_cal.fits" for k in (1, 2, 3)
    ]
    assert len(obs.sources) == 2
    assert [s.truth.meta["redshift"] for s in obs.sources] == [3.0, 4.33]
    for path in obs.files:
        model = datamodels.MultiSlitModel(str(path))
        assert len(model.slits) == 2
        assert [s.source_id for s in model.slits] == [1, 2]
        assert [s.slitlet_id for s in model.slits] == [42, 43]
        for slit in model.slits:
            assert slit.meta.wcs.available_frames == ["detector", "slit_frame", "world"]
            assert slit.meta.photometry.pixelarea_steradians == pytest.approx(PIXAR_SR)
        assert model.slits[1].source_ypos == pytest.approx(0.1)
        model.close()
        with fits.open(path) as hdul:
            assert len([h for h in hdul if h.name == "SCI"]) == 2
    for src in obs.sources:
        assert src.truth_path.exists()


def test_same_seed_identical_different_seed_differs(tmp_path):
    kw = {"n_nods": 2, "nx": 100}
    a = simulate_observation(tmp_path / "a", seed=7, **kw)
    b = simulate_observation(tmp_path / "b", seed=7, **kw)
    c = simulate_observation(tmp_path / "c", seed=8, **kw)
    for pa, pb, pc in zip(a.files, b.files, c.files, strict=True):
        with fits.open(pa) as ha, fits.open(pb) as hb, fits.open(pc) as hc:
            for ext in IMAGE_EXTENSIONS + ("BARSHADOW",):
                assert np.array_equal(ha[ext].data, hb[ext].data, equal_nan=True), ext
            assert not np.array_equal(ha["SCI"].data, hc["SCI"].data, equal_nan=True)
    assert np.array_equal(a.sources[0].cosmic_rays["row"], b.sources[0].cosmic_rays["row"])


# ---------------------------------------------------------------------------- errors
BAD_OPTIONS = [
    ({"n_nods": 0}, "n_nods"),
    ({"n_nods": -2}, "n_nods"),
    ({"n_nods": 2.5}, "n_nods"),
    ({"grating": "G999X"}, "grating"),
    ({"grating": "G140M", "filter": "F290LP"}, "filter"),
    ({"snr": -1.0}, "snr"),
    ({"snr": float("nan")}, "snr"),
    ({"n_shutters": 4}, "n_shutters"),
    ({"n_shutters": 1, "n_nods": 3}, "n_shutters"),
    ({"n_per_position": 0}, "n_per_position"),
    ({"fixed_slit": "S999"}, "fixed_slit"),
    ({"fixed_slit": "S200A1", "stuck_closed_shutter": 0}, "stuck_closed_shutter"),
    ({"stuck_closed_shutter": 3}, "stuck_closed_shutter"),
    ({"fixed_slit": "S200A1", "failed_open_neighbour": True}, "failed_open_neighbour"),
    ({"source_ypos": 0.7}, "source_ypos"),
    ({"redshift": -1}, "redshift"),
    ({"intrinsic_sigma": -0.1}, "intrinsic_sigma"),
    ({"sky_level": -1}, "sky_level"),
    ({"n_crs": -1}, "n_crs"),
    ({"nod_offsets": [0, 0.5, -1]}, "nod_offsets"),
    ({"snr": 5, "continuum_ujy": 1.0}, "continuum_ujy"),
    ({"spectrum": ([1, 2], [1, 2]), "snr": 3}, "snr"),
    ({"lines": [EmissionLine(5008.0)]}, "lines"),
    ({"multi_slit_sources": [{"colour": "red"}]}, "multi_slit_sources"),
    ({"nx": 5}, "nx"),
    ({"root": "jw123"}, "root"),
    ({"seed": "one"}, "seed"),
]


@pytest.mark.parametrize(
    ("kwargs", "name"), BAD_OPTIONS, ids=[b[1] + str(i) for i, b in enumerate(BAD_OPTIONS)]
)
def test_bad_options_raise_and_write_nothing(tmp_path, kwargs, name):
    existing = tmp_path / "existing"
    existing.mkdir()
    with pytest.raises(ConfigurationError, match=name) as info:
        simulate_observation(existing, **kwargs)
    assert isinstance(info.value, SlitCombineError)
    assert list(existing.iterdir()) == []
    fresh = tmp_path / "fresh"
    with pytest.raises(ConfigurationError):
        simulate_observation(fresh, **kwargs)
    assert not fresh.exists()


def test_unwritable_output_dir(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    with pytest.raises(OutputError, match="output_dir"):
        simulate_observation(blocker, n_nods=1, nx=32)
    with pytest.raises(OutputError, match="not writable"):
        simulate_observation(blocker / "sub", n_nods=1, nx=32)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


def test_overwrite_false(tmp_path):
    obs = simulate_observation(tmp_path, n_nods=1, nx=32, seed=3)
    before = {p: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    with pytest.raises(OutputError, match="overwrite"):
        simulate_observation(tmp_path, n_nods=1, nx=32, overwrite=False)
    assert {p: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == before
    assert obs.files[0].exists()


# ---------------------------------------------------------------------------- reader
def test_round_trip_through_read_slit(prism3):
    reading = pytest.importorskip("slitcombine.io.reading")
    truth = prism3.truth
    for k, path in enumerate(prism3.files):
        exp = reading.read_slit(path)
        model = datamodels.SlitModel(str(path))
        for name, arr in (
            ("sci", model.data),
            ("dq", model.dq),
            ("wavelength", model.wavelength),
            ("barshadow", model.barshadow),
            ("var_poisson", model.var_poisson),
            ("var_rnoise", model.var_rnoise),
            ("pathloss_un", model.pathloss_uniform),
            ("pathloss_ps", model.pathloss_point),
        ):
            assert np.array_equal(getattr(exp, name), arr, equal_nan=True), name
        assert exp.fallbacks == {}
        assert exp.slit["shutter_state"] == ["1x1", "x11", "11x"][k]
        assert exp.slit["slitlet_id"] == 42 and exp.slit["source_name"] == "9999_1"
        assert exp.meta["dither"]["y_offset"] == pytest.approx(
            [0, SHUTTER_PITCH, -SHUTTER_PITCH][k]
        )
        assert exp.meta["dither"]["position_number"] == k + 1
        assert exp.meta["exposure"]["exposure_time"] == pytest.approx(1021.222)
        assert exp.meta["photometry"]["pixelarea_steradians"] == pytest.approx(PIXAR_SR)
        assert exp.grating == "PRISM" and not exp.is_fixed_slit
        assert exp.asdf_slit_attribute("slit_ymin") == pytest.approx(model.slit_ymin)
        rows = _row_of_yslit(exp.wcs, exp.shape)
        ok = np.isfinite(rows)
        np.testing.assert_allclose(rows[ok], truth["trace"][ok, k], atol=0.01)
        model.close()


def test_round_trip_through_read_slit_multislit_and_fixed_slit(tmp_path):
    reading = pytest.importorskip("slitcombine.io.reading")
    multi = simulate_observation(
        tmp_path / "multi", multi_slit_sources=[{}, {"source_ypos": 0.1}], n_nods=2, nx=100, **QUIET
    )
    src = multi.sources[1]
    for k, path in enumerate(multi.files):
        exp = reading.read_slit(path, source_id=src.source_id)
        assert exp.slit["slitlet_id"] == src.slitlet_id
        assert exp.slit["source_ypos"] == pytest.approx(0.1)
        rows = _row_of_yslit(exp.wcs, exp.shape, value=0.1)
        ok = np.isfinite(rows)
        np.testing.assert_allclose(rows[ok], src.truth["trace"][ok, k], atol=0.01)
    fs = simulate_observation(tmp_path / "fs", fixed_slit="S200A1", n_nods=2, nx=100, **QUIET)
    for k, path in enumerate(fs.files):
        exp = reading.read_slit(path)
        assert exp.is_fixed_slit and exp.meta["instrument"]["fixed_slit"] == "S200A1"
        assert "BARSHADOW" in exp.fallbacks
        rows = _row_of_yslit(exp.wcs, exp.shape, value=exp.slit["source_ypos"])
        ok = np.isfinite(rows)
        np.testing.assert_allclose(rows[ok], fs.truth["trace"][ok, k], atol=0.01)


def test_point_source_products_follow_the_pipeline(tmp_path):
    """source_type='POINT': SCI = raw / PATHLOSS_PS and BARSHADOW = 1 (jwst's barshadow
    step does not correct point sources), SRCTYPE written."""
    obs = simulate_observation(
        tmp_path, source_type="POINT", intrinsic_sigma=0.0, sky_level=0.0, noise=False, **QUIET
    )
    truth = obs.truth
    assert truth.meta["source_type"] == "POINT"
    for k, path in enumerate(obs.files):
        model = datamodels.SlitModel(str(path))
        sel = (truth["flux"] > 0.05 * np.nanmax(truth["flux"])) & (
            np.isfinite(model.data).sum(axis=0) > 5
        )
        assert model.source_type == "POINT"
        assert np.all(model.barshadow[np.isfinite(model.barshadow)] == 1.0)
        ujy = model.data * model.pathloss_point * PIXAR_SR * 1e12
        total = np.nansum(ujy, axis=0)[sel]
        np.testing.assert_allclose(
            total / (truth["flux"] * truth["throughput"][:, k])[sel], 1, atol=1e-2
        )
        # the pipeline's point-source calibration gives the flux itself
        flux_cal = np.nansum(model.data * PIXAR_SR * 1e12, axis=0)[sel]
        assert np.median(flux_cal / truth["flux"][sel]) == pytest.approx(1.0, abs=6e-3)
        model.close()


def test_excess_noise_exceeds_the_written_variances(tmp_path):
    """excess_noise=1.25: the noise is 1.25x the written sigma, half of the extra
    variance correlated along the rows."""
    opts = dict(snr=0, n_nods=2, n_shutters=2, **QUIET)
    base = simulate_observation(tmp_path / "a", seed=3, **opts)
    more = simulate_observation(tmp_path / "b", seed=3, excess_noise=1.25, **opts)
    a = [datamodels.SlitModel(str(p)) for p in base.files]
    b = [datamodels.SlitModel(str(p)) for p in more.files]
    for m in (*a, *b):
        m.close()
    # same variances written, more noise: the difference of the two nods is sky-free
    var = a[0].var_poisson + a[0].var_rnoise + a[1].var_poisson + a[1].var_rnoise
    np.testing.assert_allclose(b[0].var_rnoise, a[0].var_rnoise)
    za = (a[0].data - a[1].data) / np.sqrt(var)
    zb = (b[0].data - b[1].data) / np.sqrt(var)
    ok = np.isfinite(za) & np.isfinite(zb)
    assert np.std(za[ok]) == pytest.approx(1.0, abs=0.05)
    assert np.std(zb[ok]) == pytest.approx(1.25, abs=0.06)
    # the correlated part: neighbouring pixels along a row
    extra = np.where(ok, zb - za, 0.0)
    corr = np.sum(extra[:, 1:] * extra[:, :-1]) / np.sum(extra**2)
    assert 0.3 < corr < 0.6
    with pytest.raises(ConfigurationError, match="excess_noise"):
        simulate_observation(tmp_path / "c", excess_noise=0.5)
