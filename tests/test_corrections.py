"""Tests of slitcombine.core.corrections: bar shadow, renormalisation, s-flat, bad-pixel maps."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import yaml
from astropy.io import fits
from scipy.interpolate import BSpline
from scipy.special import ndtr

from slitcombine import SlitGroup
from slitcombine.core import corrections as corr
from slitcombine.core.masks import Reject
from slitcombine.errors import CalibrationFileError, FitError


def _reference_basis(x, df, lo, hi):
    """Independent clamped cubic B-spline basis (uniform knots), one BSpline per function."""
    t = np.concatenate([[lo] * 4, np.linspace(lo, hi, df - 2)[1:-1], [hi] * 4])
    out = np.empty((np.size(x), df))
    for k in range(df):
        c = np.zeros(df)
        c[k] = 1.0
        out[:, k] = BSpline(t, c, 3, extrapolate=False)(x)
    return out


# ---------------------------------------------------------------- calibration directories
def test_calibration_dirs_from_environment(tmp_path, monkeypatch):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (b / "x.yaml").write_text("coeffs: [1]\n")
    monkeypatch.setenv(corr.CALIB_DIR_ENV, f"{a}{__import__('os').pathsep}{b}")
    assert corr.calibration_dirs() == [a, b]
    assert corr.find_calibration_file("x.yaml") == b / "x.yaml"
    assert corr.find_calibration_file("nothing.yaml") is None
    monkeypatch.delenv(corr.CALIB_DIR_ENV)
    assert corr.calibration_dirs() == []
    assert corr.find_calibration_file("x.yaml") is None


def test_bspline_basis_is_partition_of_unity_and_matches_scipy():
    x = np.linspace(-0.55, 0.55, 37)
    b = corr.bspline_basis(x, 11, -0.55, 0.55).toarray()
    assert b.sum(axis=1) == pytest.approx(1.0, abs=1e-12)
    ref = _reference_basis(x, 11, -0.55, 0.55)
    ref[-1] = b[-1]  # scipy's extrapolate=False gives NaN exactly at the right end
    assert b == pytest.approx(ref, abs=1e-12)
    out = corr.bspline_basis([-1.0, np.nan, 2.0], 11, -0.55, 0.55, outside="nan").toarray()
    assert np.isnan(out.sum(axis=1)).all()
    assert corr.bspline_basis([2.0], 11, -0.55, 0.55, outside="clip").toarray()[0, -1] == 1.0


# ---------------------------------------------------------------- msaexp bar tables
def test_msaexp_bar_tables_read_and_evaluate(msaexp_calib_dir):
    """Interoperability: msaexp's YAML format evaluated as described in the study (2.4)."""
    tab = corr.read_bar_coeffs(msaexp_calib_dir / "prism_3_bar_coeffs_wave.yaml", "PRISM")
    assert tab.coeffs.shape == (51, 16)
    assert tab.minmax == (-1.6, 1.6)
    y = np.linspace(-1.5, 1.5, 41)
    for j in (0, 7, 15):  # at a wavelength node the value is the spline of that column
        w = np.full_like(y, tab.wavelengths[j])
        got = corr.evaluate_bar_coeffs(tab, y, w, wrap=False)
        assert got == pytest.approx(_reference_basis(y, 51, -1.6, 1.6) @ tab.coeffs[:, j])
    # linear between nodes, clamped outside
    wmid = 0.5 * (tab.wavelengths[3] + tab.wavelengths[4])
    mid = corr.evaluate_bar_coeffs(tab, y, np.full_like(y, wmid), wrap=False)
    a = corr.evaluate_bar_coeffs(tab, y, np.full_like(y, tab.wavelengths[3]), wrap=False)
    b = corr.evaluate_bar_coeffs(tab, y, np.full_like(y, tab.wavelengths[4]), wrap=False)
    assert mid == pytest.approx(0.5 * (a + b))
    blue = corr.evaluate_bar_coeffs(tab, y, np.full_like(y, 0.3), wrap=False)
    assert blue == pytest.approx(corr.evaluate_bar_coeffs(tab, y, tab.wavelengths[0] + 0 * y))
    # physically: ~1 at the shutter centres, a dip on the bars between shutters
    centre = corr.evaluate_bar_coeffs(tab, np.array([0.0, 1.0, -1.0]), np.full(3, 3.0))
    bars = corr.evaluate_bar_coeffs(tab, np.array([0.5, -0.5]), np.full(2, 3.0))
    assert centre == pytest.approx(1.0, abs=0.05)
    assert np.all(bars < 0.6)
    # no wrap: NaN outside minmax on both sides (msaexp's bug 7 checked one side only)
    out = corr.evaluate_bar_coeffs(tab, np.array([-1.7, 1.7]), np.full(2, 3.0), wrap=False)
    assert np.isnan(out).all()
    # wrap repeats the central-shutter profile
    wr = corr.evaluate_bar_coeffs(tab, np.array([0.2, 2.2]), np.full(2, 3.0), wrap=True)
    assert wr[0] == pytest.approx(wr[1])
    flat = corr.read_bar_coeffs(msaexp_calib_dir / "prism_1_bar_coeffs.yaml")
    assert flat.wavelengths is None and flat.df == 11
    v = corr.evaluate_bar_coeffs(flat, np.array([0.0]))
    assert v[0] == pytest.approx(_reference_basis([0.0], 11, -0.55, 0.55)[0] @ flat.coeffs)


def test_bar_table_name_clamps_num_shutters():
    assert corr.bar_coeffs_filename("PRISM", 1) == ("prism_1_bar_coeffs_wave.yaml", "auto")
    assert corr.bar_coeffs_filename("PRISM", 3, "slit") == ("prism_3_bar_coeffs.yaml", "auto")
    # msaexp's bug 13: more than 3 shutters asked for a table that does not exist
    assert corr.bar_coeffs_filename("PRISM", 5) == ("prism_3_bar_coeffs_wave.yaml", True)
    assert corr.bar_coeffs_filename("PRISM", 0) == ("prism_3_bar_coeffs_wave.yaml", False)


def test_bad_bar_tables(tmp_path, msaexp_calib_dir):
    with pytest.raises(CalibrationFileError, match="nothere.yaml"):
        corr.read_bar_coeffs(tmp_path / "nothere.yaml")
    bad = tmp_path / "prism_3_bar_coeffs_wave.yaml"
    bad.write_text("coeffs: [[1, 2], [3, 4], [5, 6], [7, 8]]\nminmax: [-1, 1]\nwavelengths: [1]\n")
    with pytest.raises(CalibrationFileError, match="wavelengths"):
        corr.read_bar_coeffs(bad)
    bad.write_text("coeffs: {a: 1\n")
    with pytest.raises(CalibrationFileError, match="YAML"):
        corr.read_bar_coeffs(bad)
    bad.write_text("minmax: [-1, 1]\n")
    with pytest.raises(CalibrationFileError, match="'coeffs'"):
        corr.read_bar_coeffs(bad)
    # a PRISM table for a grating group
    with pytest.raises(CalibrationFileError, match="grating PRISM.*G395M"):
        corr.read_bar_coeffs(msaexp_calib_dir / "prism_3_bar_coeffs_wave.yaml", "G395M")


# ---------------------------------------------------------------- renormalisation
def test_renormalization_formula(msaexp_calib_dir):
    tab = corr.read_renormalization(msaexp_calib_dir / "prism_slit_renormalize.yaml", "PRISM")
    assert tab.coeffs.shape == (31, 4, 3)
    wave = np.array([0.5, 0.58, 1.0, 2.0, 3.3, 5.3, 5.4])
    got = corr.normalization_correction(tab, wave, 2, 295.0, 33.0)
    ref = tab.reference_wavelengths
    u = np.interp(wave[1:-1], ref, np.arange(ref.size)) / (ref.size - 1)
    c = tab.coeffs[:, 1, 0] + 295.0 * tab.coeffs[:, 1, 1] + 33.0 * tab.coeffs[:, 1, 2]
    expect = 1.0 / (_reference_basis(u, 31, 0.0, 1.0) @ c)
    assert got[1:-1] == pytest.approx(expect, rel=1e-10)
    assert np.isnan(got[[0, -1]]).all()  # outside the reference wavelengths
    assert np.nanmedian(got) == pytest.approx(1.0, abs=0.1)
    with pytest.raises(CalibrationFileError, match="quadrant"):
        corr.normalization_correction(tab, wave, 5, 295.0, 33.0)
    with pytest.raises(CalibrationFileError, match="missing"):
        corr.normalization_correction(tab, wave, None, 295.0, 33.0)


def test_bad_renormalization_table(tmp_path):
    p = tmp_path / "prism_slit_renormalize.yaml"
    p.write_text(
        yaml.safe_dump(
            {
                "coeffs": np.ones((31, 3, 3)).tolist(),
                "df": 31,
                "reference_wavelengths": np.linspace(1, 5, 10).tolist(),
            }
        )
    )
    with pytest.raises(CalibrationFileError, match=r"prism_slit_renormalize.yaml.*\(df, 4"):
        corr.read_renormalization(p)
    p.write_text(
        yaml.safe_dump(
            {
                "coeffs": np.ones((31, 4, 3)).tolist(),
                "df": 30,
                "reference_wavelengths": np.linspace(1, 5, 10).tolist(),
            }
        )
    )
    with pytest.raises(CalibrationFileError, match="df=30"):
        corr.read_renormalization(p)
    g = tmp_path / "g395m_slit_renormalize.yaml"
    g.write_text(
        yaml.safe_dump(
            {
                "coeffs": np.ones((31, 4, 3)).tolist(),
                "reference_wavelengths": np.linspace(1, 5, 10).tolist(),
            }
        )
    )
    with pytest.raises(CalibrationFileError, match="G395M.*PRISM"):
        corr.read_renormalization(g, "PRISM")


# ---------------------------------------------------------------- own bar-shadow fit
def _toy_bar(y, wave):
    """A bar pattern: boxes of one shutter, bars at +-0.5 deeper in the blue."""
    s = 0.06 + 0.01 * wave
    from scipy.special import ndtr

    out = np.zeros_like(y)
    for c in (-1.0, 0.0, 1.0):
        out += ndtr((y - c + 0.44) / s) - ndtr((y - c - 0.44) / s)
    return out


def test_own_bar_model_recovers_a_known_pattern():
    rng = np.random.default_rng(5)
    nx, ny = 300, 22
    wave = np.linspace(1.0, 5.0, nx)
    y = np.linspace(-1.6, 1.6, ny)[:, None] + 0.4 * np.linspace(0, 1, nx)[None, :]  # tilted
    yy = np.broadcast_to(y, (ny, nx)).ravel()
    ww = np.broadcast_to(wave, (ny, nx)).ravel()
    truth = _toy_bar(yy, ww)
    sky = 0.1 + 0.02 * ww
    raw = sky * truth
    sig = 0.002
    data = raw + rng.normal(0, sig, raw.size)
    coord = corr.ColumnCoordinate(wave)
    sel = (np.abs(yy) < 1.7) & (truth > 0.05)
    model = corr.fit_bar_shadow(
        data, np.full(raw.size, sig**2), yy, ww, sel, coord, pipeline_bar=np.maximum(truth, 0.42)
    )
    b = model(yy, ww)
    ok = (truth > 0.45) & model.is_covered(yy) & (np.abs(yy) < 1.5)
    rel = b[ok] / truth[ok] - 1
    assert np.median(np.abs(rel)) < 0.003
    assert np.percentile(np.abs(rel), 99) < 0.015
    assert model.info["normalisation"].startswith("median(model / pipeline)")
    assert model.info["wave_axis"] == "wavelength" and model.info["iterations"] < 6
    # the posterior error is honest: median |err| = 0.674 sigma for Gaussian errors
    assert np.median(np.abs(rel)) == pytest.approx(0.674 * model.info["bar_error"], rel=0.5)
    with pytest.raises(FitError, match="sky pixels"):
        corr.fit_bar_shadow(
            data, np.full(raw.size, sig**2), yy, ww, np.zeros(raw.size, bool), coord
        )


def test_own_bar_model_widens_the_source_exclusion_past_leaking_wings():
    """Three nods of a source 30 times the sky at its peak: its wings must be excluded."""
    rng = np.random.default_rng(5)
    nx, ny = 300, 22
    wave = np.linspace(1.0, 5.0, nx)
    y = np.linspace(-1.6, 1.6, ny)[:, None] + 0.4 * np.linspace(0, 1, nx)[None, :]
    yy = np.tile(np.broadcast_to(y, (ny, nx)).ravel(), 3)
    ww = np.tile(np.broadcast_to(wave, (ny, nx)).ravel(), 3)
    centre = np.repeat([0.0, 1.0, -1.0], ny * nx)  # the source moves with the nod
    truth = _toy_bar(yy, ww)
    sky = 0.1 + 0.02 * ww
    sig = 0.002
    dist = np.abs(yy - centre) / 0.1  # distance in source sigmas
    data = sky * (truth + 30 * np.exp(-0.5 * dist**2)) + rng.normal(0, sig, yy.size)
    args = (data, np.full(yy.size, sig**2), yy, ww, (np.abs(yy) < 1.7) & (truth > 0.05))
    kw = {"pipeline_bar": np.maximum(truth, 0.42), "source_distance": dist, "min_distance": 2.0}
    coord = corr.ColumnCoordinate(wave)
    ok = (truth > 0.45) & (np.abs(yy) < 1.5)
    # excluding only 2 sigma: the wings (0.4 of the sky at 3 sigma) bias the model
    fixed = corr.fit_bar_shadow(*args, coord, max_distance=2.0, **kw)
    assert fixed.info["reduced_chi2"] > 1.5
    rel = fixed(yy, ww)[ok] / truth[ok] - 1
    assert np.median(np.abs(rel)) > 0.01
    # the residuals show the leak: the exclusion grows until the wings are < 0.3% of sky
    model = corr.fit_bar_shadow(*args, coord, **kw)
    assert model.info["source_leak_growths"] >= 1
    assert 30 * np.exp(-0.5 * model.info["source_distance"] ** 2) < 0.003
    assert model.info["reduced_chi2"] == pytest.approx(1.0, abs=0.1)
    ok &= model.is_covered(yy)
    rel = model(yy, ww)[ok] / truth[ok] - 1
    assert np.median(np.abs(rel)) < 0.002
    assert np.percentile(np.abs(rel), 99) < 0.015


def test_source_profile_and_exclusion_from_the_data():
    rng = np.random.default_rng(2)
    ny, nx = 40, 300
    offsets = np.array([0.0, 0.3, -0.2])  # sub-pixel trace position in 3 exposures
    yslit = (np.arange(ny)[None, :, None] - 20.0 + offsets[:, None, None]) * np.ones((1, 1, nx))
    peak, s0 = 50.0, 1.2
    # pixel-integrated Gaussian of peak surface brightness 50 x the sky
    prof = peak * np.sqrt(2 * np.pi) * s0 * (ndtr((yslit + 0.5) / s0) - ndtr((yslit - 0.5) / s0))
    sci = 2.0 * (1 + prof) + rng.normal(0, 0.2, yslit.shape)
    mask = np.ones(sci.shape, bool)
    mask[:, :, ::7] = False
    a, s = corr.source_profile(sci, yslit, mask)
    # the pixel-integrated peak is 0.97 x 50 and the width sqrt(1.2^2 + 1/12)
    assert a == pytest.approx(0.97 * peak, rel=0.03)
    assert s == pytest.approx(np.hypot(s0, np.sqrt(1 / 12)), rel=0.03)
    psf = np.full(sci.shape, 0.6)
    dist, n_widths, info = corr.source_exclusion(sci, yslit, mask, psf)
    assert info["intrinsic_sigma_px"] == pytest.approx(np.sqrt(s0**2 - 0.36), rel=0.05)
    assert dist == pytest.approx(np.abs(yslit) / s0, rel=0.05)
    assert n_widths == pytest.approx(np.sqrt(2 * np.log(0.97 * peak / 1e-3)), rel=0.01)
    # no source: the floor of 4 widths (of the PSF)
    a0, _ = corr.source_profile(2.0 + rng.normal(0, 0.2, yslit.shape), yslit, mask)
    assert a0 < 0.03
    _, n0, _ = corr.source_exclusion(2.0 + rng.normal(0, 0.2, yslit.shape), yslit, mask, psf)
    assert n0 == 4.0


# ---------------------------------------------------------------- SlitGroup integration
@pytest.fixture
def no_calib(monkeypatch):
    monkeypatch.delenv(corr.CALIB_DIR_ENV, raising=False)


def test_ceers_own_bar_model_replaces_pipeline(ceers_files, no_calib):
    g = SlitGroup(ceers_files, "own_bar", diffs=False)
    step = g.meta["steps"]["barshadow"]
    assert step["status"] == "COMPLETE" and step["model"] == "own model (wave)"
    assert g.meta["undo_barshadow"] is False
    assert g.meta["bar_correction"] == "own model (wave)"
    ok = g.mask & (g.orig_bar > 0.45)
    # sci rescaled by bar_pipeline / bar_new, variances by its square
    raw_before = g.sci * g.bar
    assert np.allclose(raw_before[ok], (g.sci * g.bar)[ok])
    ratio = g.var_rnoise[ok] / (g.sci[ok] ** 2 + 1e-30)
    assert np.all(np.isfinite(ratio))
    assert np.all(np.isfinite(g.bar[g.mask])) and np.all(g.bar[g.mask] >= g.meta["min_bar"])
    # The own model is ~1 in the shutters and agrees with the pipeline's normalisation
    r = g.bar[ok] / g.orig_bar[ok]
    assert np.median(r) == pytest.approx(1.0, abs=0.01)


def test_ceers_bar_from_msaexp_table_agrees_with_own_model(
    ceers_files, msaexp_calib_dir, monkeypatch
):
    monkeypatch.setenv(corr.CALIB_DIR_ENV, str(msaexp_calib_dir))
    g = SlitGroup(ceers_files, "tab_bar", fix_prism_norm=True)
    assert g.meta["bar_correction"].endswith("prism_3_bar_coeffs_wave.yaml")
    norm = g.meta["steps"]["normalization"]
    assert norm["status"] == "COMPLETE"
    assert norm["positions"][0] == (2, 295.0, 33.0)
    assert g.normalization.shape == g.sci.shape
    assert np.nanmedian(g.normalization[g.mask]) == pytest.approx(0.977, abs=0.01)
    monkeypatch.delenv(corr.CALIB_DIR_ENV)
    own = SlitGroup(ceers_files, "own_bar", fix_prism_norm=True)
    assert own.meta["steps"]["normalization"]["status"] == "SKIPPED"
    ok = g.mask & own.mask & (own.orig_bar > 0.45)
    r_tab = g.bar[ok] / own.bar[ok]
    r_pipe = own.orig_bar[ok] / own.bar[ok]
    # msaexp's empirical table is much closer to the own model than the pipeline is
    assert np.median(r_tab) == pytest.approx(1.0, abs=0.01)
    assert np.diff(np.percentile(r_tab, [5, 95]))[0] < 0.12
    assert np.diff(np.percentile(r_pipe, [5, 95]))[0] > 0.25


def test_own_bar_model_without_sky_pixels_falls_back(ceers_files, no_calib):
    g = SlitGroup(ceers_files, "nobar", undo_barshadow=False)
    g.meta["undo_barshadow"] = 2
    before = g.sci.copy()
    out = g.apply_spline_bar_correction(mask_yslit=[[-100, 100]])
    assert out is None
    assert g.meta["steps"]["barshadow"]["status"] == "FALLBACK"
    assert g.meta["bar_correction"].startswith("pipeline (fallback")
    assert np.array_equal(before, g.sci, equal_nan=True)


def test_sflat_and_extra_dq_from_user_files(ceers_files, tmp_path, monkeypatch):
    monkeypatch.setenv(corr.CALIB_DIR_ENV, str(tmp_path))
    g = SlitGroup(ceers_files, "flat", undo_barshadow=False)
    assert g.apply_sflat_correction() is None
    assert g.meta["steps"]["sflat"]["status"] == "SKIPPED"
    assert g.apply_extra_dq() == 0
    # An s-flat of 0.8 everywhere in quadrant 2
    wave = np.linspace(0.6, 5.5, 20)
    coeffs = np.full((20, 25), 0.8)
    cols = [
        fits.Column(name="wave", format="D", array=wave),
        fits.Column(name="coeffs", format="25D", array=coeffs),
    ]
    hdu = fits.BinTableHDU.from_columns(cols)
    for k, v in dict(DFX=5, DFY=5, XMIN=0, XMAX=365, YMIN=0, YMAX=171).items():
        hdu.header[k] = v
    hdu.writeto(tmp_path / "sflat_prism_q2.fits")
    sci0 = g.sci.copy()
    flat = g.apply_sflat_correction()
    assert g.meta["steps"]["sflat"]["status"] == "COMPLETE"
    ok = g.mask
    assert flat[ok] == pytest.approx(0.8)
    assert g.sci[ok] == pytest.approx(sci0[ok] / 0.8)
    # wrong grating declared in the header
    hdu.header["GRATING"] = "G140M"
    hdu.writeto(tmp_path / "sflat_prism_q2.fits", overwrite=True)
    with pytest.raises(CalibrationFileError, match="G140M"):
        g.apply_sflat_correction()
    # extra bad pixels: one detector pixel of the cutout (SLTSTRT are 1-based)
    c = g.meta["common_slice"]
    row, col = 12, 100
    bad = np.zeros((2048, 2048), np.uint8)
    bad[c["ystart"] - 1 + row, c["xstart"] - 1 + col] = 1
    fits.PrimaryHDU(bad).writeto(tmp_path / "badpix_nrs2.fits")
    g.mask[:, row * g.sh[1] + col] = True
    n = g.apply_extra_dq()
    assert n == g.N
    assert not g.mask[:, row * g.sh[1] + col].any()
    assert np.all(g.reject[:, row * g.sh[1] + col] & np.uint32(Reject.DQ))
    fits.PrimaryHDU(np.zeros((10, 10))).writeto(tmp_path / "badpix_nrs2.fits", overwrite=True)
    with pytest.raises(CalibrationFileError, match="badpix_nrs2.fits.*shape"):
        g.apply_extra_dq()


def test_constructor_applies_user_calibration_files(ceers_files, tmp_path, monkeypatch):
    """with_sflat_correction, with_extra_dq and extended_calibration_kwargs from the calib dir."""
    wave = np.linspace(0.6, 5.5, 20)
    cols = [
        fits.Column(name="wave", format="D", array=wave),
        fits.Column(name="coeffs", format="25D", array=np.full((20, 25), 0.9)),
    ]
    hdu = fits.BinTableHDU.from_columns(cols)
    for k, v in dict(DFX=5, DFY=5, XMIN=0, XMAX=365, YMIN=0, YMAX=171).items():
        hdu.header[k] = v
    hdu.writeto(tmp_path / "sflat_prism_q2.fits")
    sens = fits.BinTableHDU.from_columns(
        [
            fits.Column(name="wavelength", format="D", array=wave),
            fits.Column(name="sensitivity", format="D", array=np.full(20, 2.0)),
            fits.Column(name="nrs2", format="D", array=np.full(20, 0.5)),
        ]
    )
    sens.writeto(tmp_path / "sensitivity_prism_clear.fits")
    fits.PrimaryHDU(np.zeros((2048, 2048), np.uint8)).writeto(tmp_path / "badpix_nrs2.fits")
    ref = SlitGroup(ceers_files, "ref", undo_barshadow=False)
    monkeypatch.setenv(corr.CALIB_DIR_ENV, str(tmp_path))
    g = SlitGroup(
        ceers_files,
        "cal",
        undo_barshadow=False,
        extended_calibration_kwargs={"threshold": 0.01, "force": True},
    )
    for step in ("extended_calibration", "sflat", "extra_dq"):
        assert g.meta["steps"][step]["status"] == "COMPLETE", step
    ok = g.mask & ref.mask
    # sensitivity 2 x 0.5 (NRS2 column) = 1, s-flat 0.9: data / 0.9
    assert g.sci[ok] == pytest.approx(ref.sci[ok] / 0.9, rel=1e-6)
    assert g.var_rnoise[ok] == pytest.approx(ref.var_rnoise[ok] / 0.81, rel=1e-6)
    # without force the extended calibration needs extended-range pipeline flats
    g2 = SlitGroup(ceers_files, "cal2", undo_barshadow=False)
    step = g2.meta["steps"]["extended_calibration"]
    assert step["status"] == "SKIPPED" and "extended-range" in step["reason"]


def test_fit_shutter_offset_recovers_a_shift(ceers_files, msaexp_calib_dir, monkeypatch):
    monkeypatch.setenv(corr.CALIB_DIR_ENV, str(msaexp_calib_dir))
    # the shutter coordinate deliberately offset by +0.6 pixel
    g = SlitGroup(ceers_files, "shift", diffs=False, shutter_offset=0.6, estimate_sky_kwargs={})
    assert isinstance(g.bar_model, corr.BarCoefficients)
    dy = g.fit_shutter_offset(prior=(0, 1.0))
    step = g.meta["steps"]["shutter_offset"]
    assert step["status"] == "COMPLETE" and step["chi2_fit"] < step["chi2_start"] - 100
    assert dy == pytest.approx(-0.6, abs=0.12)
    assert g.meta["shutter_offset"] == pytest.approx(0.6 + dy)
    # after the update the table is aligned: a second fit finds ~0
    g.estimate_sky()
    assert g.fit_shutter_offset(prior=(0, 1.0), update=False) == pytest.approx(0.0, abs=0.05)
    # with the group's own model there is nothing to align
    monkeypatch.delenv(corr.CALIB_DIR_ENV)
    own = SlitGroup(
        ceers_files, "own", diffs=False, estimate_sky_kwargs={}, fit_shutter_offset_kwargs={}
    )
    assert own.meta["steps"]["shutter_offset"]["status"] == "SKIPPED"
    assert "own model" in own.meta["steps"]["shutter_offset"]["reason"]


def test_ceers_own_bar_model_follows_the_sky_at_the_slitlet_ends(ceers_group):
    """At the outer edges of the end shutters the sky itself says the throughput is
    ~0.3-0.5, well below the pipeline's: the own model must follow the sky there (the
    nod with its source in an end shutter gets a wider profile because of it; that is
    the source-profile model's business, not a reason to fall back to the pipeline)."""
    g = ceers_group
    n, (ny, nx) = g.N, g.sh
    ys = np.broadcast_to(g._yshutter_grid, g.sci.shape)
    raw = g.sci * g.bar  # bar shadow in: what the detector saw
    with np.errstate(invalid="ignore"):
        sky = g.mask & (np.abs(g.yslit) > 5.0) & (g.wave > 2.5)
        unobstructed = sky & (g.orig_bar > 0.95)
    # the sky spectrum per column from the unobstructed sky pixels of all exposures
    with warnings.catch_warnings():  # columns without unobstructed sky: NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        s_col = np.nanmedian(
            np.where(unobstructed, raw / g.orig_bar, np.nan).reshape(n * ny, nx), axis=0
        )
    t_sky = raw / np.tile(s_col, ny)[None, :]
    for lo, hi in ((-1.45, -1.35), (1.35, 1.45)):
        with np.errstate(invalid="ignore"):
            sel = sky & (ys > lo) & (ys < hi) & np.isfinite(t_sky)
        per_exp = [np.median(t_sky[i][sel[i]]) for i in range(n) if sel[i].sum() > 50]
        assert len(per_exp) == 2  # the two exposures whose source is in another shutter
        t_emp = float(np.mean(per_exp))
        assert np.median(g.bar[sel]) == pytest.approx(t_emp, rel=0.08)
        assert t_emp < 0.75
    # bottom end: the pipeline's throughput is ~25% above the sky's (0.71 vs 0.58)
    with np.errstate(invalid="ignore"):
        sel = sky & (ys > -1.45) & (ys < -1.35) & np.isfinite(t_sky)
    assert np.median(g.orig_bar[sel]) / np.median(t_sky[sel]) > 1.15
