"""Tests of the bar-shadow modules: core.barshadow, barfit, barsolve, barpolicy, and the facade.

msaexp's tables are evaluated as msaexp does; the own model is checked on small arrays
with a known pattern, and on the real CEERS PRISM trio through ``SlitGroup``.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pytest
from scipy.special import ndtr

from bspline_reference import reference_basis
from slitcombine import SlitGroup
from slitcombine.core import barfit, barpolicy, barshadow, splines
from slitcombine.errors import FitError
from slitcombine.io import table_readers as readers
from slitcombine.io import tables


# ---------------------------------------------------------------- msaexp bar tables
def test_msaexp_bar_tables_read_and_evaluate(msaexp_calib_dir):
    """Interoperability: msaexp's YAML format evaluated as described in the study (2.4)."""
    tab = readers.read_bar_coeffs(msaexp_calib_dir / "prism_3_bar_coeffs_wave.yaml", "PRISM")
    assert tab.coeffs.shape == (51, 16)
    assert tab.minmax == (-1.6, 1.6)
    y = np.linspace(-1.5, 1.5, 41)
    for j in (0, 7, 15):  # at a wavelength node the value is the spline of that column
        w = np.full_like(y, tab.wavelengths[j])
        got = barshadow.evaluate_bar_coeffs(tab, y, w, wrap=False)
        assert got == pytest.approx(reference_basis(y, 51, -1.6, 1.6) @ tab.coeffs[:, j])
    # linear between nodes, clamped outside
    wmid = 0.5 * (tab.wavelengths[3] + tab.wavelengths[4])
    mid = barshadow.evaluate_bar_coeffs(tab, y, np.full_like(y, wmid), wrap=False)
    a = barshadow.evaluate_bar_coeffs(tab, y, np.full_like(y, tab.wavelengths[3]), wrap=False)
    b = barshadow.evaluate_bar_coeffs(tab, y, np.full_like(y, tab.wavelengths[4]), wrap=False)
    assert mid == pytest.approx(0.5 * (a + b))
    blue = barshadow.evaluate_bar_coeffs(tab, y, np.full_like(y, 0.3), wrap=False)
    assert blue == pytest.approx(barshadow.evaluate_bar_coeffs(tab, y, tab.wavelengths[0] + 0 * y))
    # physically: ~1 at the shutter centres, a dip on the bars between shutters
    centre = barshadow.evaluate_bar_coeffs(tab, np.array([0.0, 1.0, -1.0]), np.full(3, 3.0))
    bars = barshadow.evaluate_bar_coeffs(tab, np.array([0.5, -0.5]), np.full(2, 3.0))
    assert centre == pytest.approx(1.0, abs=0.05)
    assert np.all(bars < 0.6)
    # no wrap: NaN outside minmax on both sides (msaexp's bug 7 checked one side only)
    out = barshadow.evaluate_bar_coeffs(tab, np.array([-1.7, 1.7]), np.full(2, 3.0), wrap=False)
    assert np.isnan(out).all()
    # wrap repeats the central-shutter profile
    wr = barshadow.evaluate_bar_coeffs(tab, np.array([0.2, 2.2]), np.full(2, 3.0), wrap=True)
    assert wr[0] == pytest.approx(wr[1])
    flat = readers.read_bar_coeffs(msaexp_calib_dir / "prism_1_bar_coeffs.yaml")
    assert flat.wavelengths is None and flat.df == 11
    v = barshadow.evaluate_bar_coeffs(flat, np.array([0.0]))
    assert v[0] == pytest.approx(reference_basis([0.0], 11, -0.55, 0.55)[0] @ flat.coeffs)


# ---------------------------------------------------------------- own bar-shadow fit
def _toy_bar(y, wave):
    """A bar pattern: boxes of one shutter, bars at +-0.5 deeper in the blue."""
    s = 0.06 + 0.01 * wave
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
    coord = splines.ColumnCoordinate(wave)
    sel = (np.abs(yy) < 1.7) & (truth > 0.05)
    model = barfit.fit_bar_shadow(
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
        barfit.fit_bar_shadow(
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
    coord = splines.ColumnCoordinate(wave)
    ok = (truth > 0.45) & (np.abs(yy) < 1.5)
    # excluding only 2 sigma: the wings (0.4 of the sky at 3 sigma) bias the model
    fixed = barfit.fit_bar_shadow(*args, coord, max_distance=2.0, **kw)
    assert fixed.info["reduced_chi2"] > 1.5
    rel = fixed(yy, ww)[ok] / truth[ok] - 1
    assert np.median(np.abs(rel)) > 0.01
    # the residuals show the leak: the exclusion grows until the wings are < 0.3% of sky
    model = barfit.fit_bar_shadow(*args, coord, **kw)
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
    a, s = barpolicy.source_profile(sci, yslit, mask)
    # the pixel-integrated peak is 0.97 x 50 and the width sqrt(1.2^2 + 1/12)
    assert a == pytest.approx(0.97 * peak, rel=0.03)
    assert s == pytest.approx(np.hypot(s0, np.sqrt(1 / 12)), rel=0.03)
    psf = np.full(sci.shape, 0.6)
    dist, n_widths, info = barpolicy.source_exclusion(sci, yslit, mask, psf)
    assert info["intrinsic_sigma_px"] == pytest.approx(np.sqrt(s0**2 - 0.36), rel=0.05)
    assert dist == pytest.approx(np.abs(yslit) / s0, rel=0.05)
    assert n_widths == pytest.approx(np.sqrt(2 * np.log(0.97 * peak / 1e-3)), rel=0.01)
    # no source: the floor of 4 widths (of the PSF)
    a0, _ = barpolicy.source_profile(2.0 + rng.normal(0, 0.2, yslit.shape), yslit, mask)
    assert a0 < 0.03
    _, n0, _ = barpolicy.source_exclusion(2.0 + rng.normal(0, 0.2, yslit.shape), yslit, mask, psf)
    assert n0 == 4.0


# ---------------------------------------------------------------- the policy of undo_barshadow=2
def _toy_group(sig=0.002, seed=5, n=3, ny=22, nx=300):
    """Sky-only exposures of a tilted slitlet as a SlitGroup holds them (bar divided out)."""
    rng = np.random.default_rng(seed)
    wave1 = np.linspace(1.0, 5.0, nx)
    y = np.linspace(-1.6, 1.6, ny)[:, None] + 0.4 * np.linspace(0, 1, nx)[None, :]
    ys = np.repeat(np.broadcast_to(y, (ny, nx)).reshape(1, -1), n, axis=0)
    wave = np.repeat(np.broadcast_to(wave1, (ny, nx)).reshape(1, -1), n, axis=0)
    truth = _toy_bar(ys, wave)
    pipe = np.maximum(truth, 0.42)
    raw = (0.1 + 0.02 * wave) * truth + rng.normal(0, sig, ys.shape)
    yslit = np.repeat(
        np.broadcast_to(np.arange(ny)[:, None] - ny / 2, (ny, nx)).reshape(1, -1), n, 0
    )
    return {
        "sci": raw / pipe,
        "var_rnoise": np.full(ys.shape, sig**2) / pipe**2,
        "var_poisson": np.zeros(ys.shape),
        "bar_pipe": pipe,
        "yshutter": ys,
        "wave": wave,
        "mask": (np.abs(ys) < 1.7) & (truth > 0.05),
        "yslit": yslit.astype(float),
        "coordinate": splines.ColumnCoordinate(wave1),
        "truth": truth,
        "cube_shape": (n, ny, nx),
    }


def _own(toy, **kw):
    args = [toy[k] for k in ("sci", "var_rnoise", "var_poisson", "bar_pipe", "yshutter")]
    args += [toy[k] for k in ("wave", "mask", "yslit", "coordinate")]
    return barpolicy.own_bar_shadow(*args, cube_shape=toy["cube_shape"], **kw)


def test_own_bar_shadow_keeps_the_pipeline_where_not_covered():
    toy = _toy_group()
    toy["mask"] &= toy["yshutter"] < 1.0  # no sky pixels above y = 1: not covered there
    out = _own(toy, mask_yslit=[[-100, -99]])
    assert out.reason is None and not out.failed and out.model is not None
    ys = toy["yshutter"]
    model_bar = out.model(ys, toy["wave"])
    uncovered = np.isfinite(model_bar) & ~out.model.is_covered(ys)
    assert uncovered.sum() > 1000
    assert np.array_equal(out.bar[uncovered], toy["bar_pipe"][uncovered])
    assert np.array_equal(out.bar[~uncovered], model_bar[~uncovered], equal_nan=True)
    assert out.details["uncovered_pixels_pipeline_kept"] == int(uncovered.sum())
    assert out.details["reduced_chi2"] == out.model.info["reduced_chi2"]
    ok = out.model.is_covered(ys) & (toy["truth"] > 0.45) & toy["mask"]
    assert np.median(np.abs(out.bar[ok] / toy["truth"][ok] - 1)) < 0.005


def test_own_bar_shadow_measures_the_source_without_mask_yslit():
    toy = _toy_group()
    out = _own(toy)
    assert out.bar is not None
    assert "source_peak" in out.details and out.details["source_distance"] >= 4.0


def test_own_bar_shadow_verdicts():
    toy = _toy_group()
    # too uncertain: a fallback said at INFO, with the model's statistics
    out = _own(toy, mask_yslit=[[-100, -99]], max_bar_error=1e-6)
    assert out.bar is None and not out.failed and out.level == logging.INFO
    assert "too uncertain" in out.reason and out.details == out.model.info
    # does not describe the sky pixels: a warning
    out = _own(toy, mask_yslit=[[-100, -99]], max_chi2=0.01)
    assert out.bar is None and out.level == logging.WARNING and "reduced chi2" in out.reason
    # the fit itself fails: its error is the reason, no statistics
    toy["mask"][:] = False
    out = _own(toy, mask_yslit=[[-100, -99]])
    assert out.bar is None and out.failed and "sky pixels" in out.reason
    assert out.details == {} and out.model is None


def test_fit_options_are_checked():
    names = barpolicy.fit_options()
    assert "ystep" in names and "period" in names and "min_distance" in names
    assert "mode" not in names and "pipeline_bar" not in names
    barpolicy.check_fit_options({"ystep": 0.1, "clip": 4.0})
    with pytest.raises(TypeError, match="ysteps"):
        barpolicy.check_fit_options({"ysteps": 0.1})


def test_apply_spline_bar_correction_options(ceers_files, no_calib):
    g = SlitGroup(ceers_files, "opts", undo_barshadow=False)
    with pytest.raises(TypeError, match="unknown option"):
        g.apply_spline_bar_correction(coeffs_file=False, not_an_option=1)
    # a fit option, and the shutter pitch given instead of the group's (no shutter ties)
    g.apply_spline_bar_correction(coeffs_file=False, period=None, ystep=0.1)
    step = g.meta["steps"]["barshadow"]
    assert step["status"] == "COMPLETE" and step["period_links"] == 0
    assert step["ystep"] == pytest.approx(0.1)


# ---------------------------------------------------------------- SlitGroup integration
@pytest.fixture
def no_calib(monkeypatch):
    monkeypatch.delenv(tables.CALIB_DIR_ENV, raising=False)


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
    monkeypatch.setenv(tables.CALIB_DIR_ENV, str(msaexp_calib_dir))
    g = SlitGroup(ceers_files, "tab_bar", fix_prism_norm=True)
    assert g.meta["bar_correction"].endswith("prism_3_bar_coeffs_wave.yaml")
    norm = g.meta["steps"]["normalization"]
    assert norm["status"] == "COMPLETE"
    assert norm["positions"][0] == (2, 295.0, 33.0)
    assert g.normalization.shape == g.sci.shape
    assert np.nanmedian(g.normalization[g.mask]) == pytest.approx(0.977, abs=0.01)
    monkeypatch.delenv(tables.CALIB_DIR_ENV)
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


def test_fit_shutter_offset_recovers_a_shift(ceers_files, msaexp_calib_dir, monkeypatch):
    monkeypatch.setenv(tables.CALIB_DIR_ENV, str(msaexp_calib_dir))
    # the shutter coordinate deliberately offset by +0.6 pixel
    g = SlitGroup(ceers_files, "shift", diffs=False, shutter_offset=0.6, estimate_sky_kwargs={})
    assert isinstance(g.bar_model, barshadow.BarCoefficients)
    dy = g.fit_shutter_offset(prior=(0, 1.0))
    step = g.meta["steps"]["fit_shutter_offset"]
    assert step["status"] == "COMPLETE" and step["chi2_fit"] < step["chi2_start"] - 100
    assert dy == pytest.approx(-0.6, abs=0.12)
    assert g.meta["shutter_offset"] == pytest.approx(0.6 + dy)
    # after the update the table is aligned: a second fit finds ~0
    g.estimate_sky()
    assert g.fit_shutter_offset(prior=(0, 1.0), update=False) == pytest.approx(0.0, abs=0.05)
    # with the group's own model there is nothing to align
    monkeypatch.delenv(tables.CALIB_DIR_ENV)
    own = SlitGroup(
        ceers_files, "own", diffs=False, estimate_sky_kwargs={}, fit_shutter_offset_kwargs={}
    )
    assert own.meta["steps"]["fit_shutter_offset"]["status"] == "SKIPPED"
    assert "own model" in own.meta["steps"]["fit_shutter_offset"]["reason"]


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
