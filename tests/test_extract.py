"""Pixel table, 2D resampling and 1D extraction: exact statistics and accuracy on simulations.

Accuracy numbers are measured on seeded simulations (``slitcombine.testing.simulate``) without
cosmic rays (rejecting them is the outlier step's job, not extraction's).
"""

from __future__ import annotations

import numpy as np
import pytest

from slitcombine.core import extract, resample
from slitcombine.errors import FitError, SlitCombineError
from slitcombine.pipeline.combine import combine

C_ANGSTROM = 2.99792458e18  # speed of light, Angstrom / s


# ----------------------------------------------------------------------------- helpers
def _simulate(tmp_path_factory, label, **kw):
    from slitcombine.testing.simulate import simulate_observation

    out = tmp_path_factory.mktemp(label)
    kw.setdefault("n_crs", 0)
    return simulate_observation(out, **kw)


def _truth_on(spec, truth, column="flux"):
    """Truth at the mean wavelength of the pixels of each bin (the truth is per column)."""
    w = np.where(np.isfinite(spec["wave_eff"].value), spec["wave_eff"].value, spec["wave"].value)
    return np.interp(w, np.asarray(truth["wave"]), np.asarray(truth[column]))


def _accuracy(result, truth, frac_of_median=0.2):
    spec = result.spec
    t = _truth_on(spec, truth)
    f = spec["flux"].value
    e = spec["err"].value
    ok = np.asarray(spec["valid"]) & (t > frac_of_median * np.median(t[t > 0]))
    ratio = np.median(f[ok] / t[ok])
    z = (f[ok] - t[ok]) / e[ok]
    scale = np.sum(f[ok] * t[ok] / e[ok] ** 2) / np.sum(t[ok] ** 2 / e[ok] ** 2)
    return ratio, np.std(z), scale, int(ok.sum())


def _line_flux(result, truth, lo_um, hi_um):
    """Integrated line flux (erg/s/cm2) and its error: sum over the valid bins in the
    window of (f_lambda - true continuum) times the width of the detector column each
    bin measures (the truth is pixel-integrated per column; the default grid has one bin
    per column)."""
    spec = result.spec
    ok = np.asarray(spec["valid"])
    w = spec["wave_eff"].value[ok]
    sel = (w > lo_um) & (w < hi_um)
    w = w[sel]
    cont = _truth_on(spec, truth, "flux_continuum")[ok][sel]
    lam = w * 1.0e4  # Angstrom
    col_width = np.interp(w, truth["wave"], np.gradient(np.asarray(truth["wave"]))) * 1.0e4
    to_flam = 1.0e-29 * C_ANGSTROM / lam**2
    flam = (spec["flux"].value[ok][sel] - cont) * to_flam
    eflam = spec["err"].value[ok][sel] * to_flam
    return np.sum(flam * col_width), np.sqrt(np.sum((eflam * col_width) ** 2))


def _check_lines(sim, result, names, rel=0.03):
    """Line fluxes over +-5 LSF sigma, widened to whole blends (PRISM [OIII]+H-beta),
    against the sum of the true fluxes of the lines in the window."""
    truth = sim.truth
    dwdx = np.gradient(np.asarray(truth["wave"], float))
    lines = [ln for ln in truth.meta["lines"] if ln["in_range"]]
    half = {
        ln["name"]: 5 * ln["sigma_pix"] * np.interp(ln["observed_wavelength"], truth["wave"], dwdx)
        for ln in lines
    }
    measured = {}
    for line in lines:
        if line["name"] not in names:
            continue
        lam = line["observed_wavelength"]
        lo, hi = lam - half[line["name"]], lam + half[line["name"]]
        members = set()
        while True:
            inside = {
                ln["name"]
                for ln in lines
                if ln["observed_wavelength"] + half[ln["name"]] > lo
                and ln["observed_wavelength"] - half[ln["name"]] < hi
            }
            if inside == members:
                break
            members = inside
            for ln in lines:
                if ln["name"] in members:
                    lo = min(lo, ln["observed_wavelength"] - half[ln["name"]])
                    hi = max(hi, ln["observed_wavelength"] + half[ln["name"]])
        expected = sum(ln["flux"] for ln in lines if ln["name"] in members)
        flux, err = _line_flux(result, truth, lo, hi)
        assert flux / expected == pytest.approx(1.0, rel=rel, abs=0), (
            line["name"],
            sorted(members),
        )
        assert err < rel * expected
        measured[line["name"]] = flux / expected
    assert set(measured) == set(names)
    return measured


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def prism_bright(tmp_path_factory):
    sim = _simulate(tmp_path_factory, "prism", grating="PRISM", snr=50, seed=11)
    return sim, combine(sim.files, name="prism_bright")


@pytest.fixture(scope="module")
def g395m_bright(tmp_path_factory):
    sim = _simulate(tmp_path_factory, "g395m", grating="G395M", snr=50, seed=12)
    return sim, combine(sim.files, name="g395m_bright")


# ----------------------------------------------------------------------------- unit tests
def test_wavelength_grid_follows_native_sampling():
    wave = np.tile(1.0 + 0.01 * np.arange(100.0) ** 1.2, (5, 1))
    grid = resample.wavelength_grid(wave, wave_sample=1.0)
    assert grid.size == 100
    np.testing.assert_allclose(grid, wave[0], rtol=1e-12)
    finer = resample.wavelength_grid(wave, wave_sample=2.0)
    assert finer.size == 199
    with pytest.raises(SlitCombineError):
        resample.wavelength_grid(wave, wave_range=(9.0, 10.0))


def test_drizzle_splits_pixels_and_propagates_exact_variance():
    # One pixel centred on a row boundary: half of its footprint in each row.
    out = resample.pseudo_drizzle(
        wave=np.array([1.0, 1.0]),
        yslit=np.array([0.5, 0.0]),
        values=np.array([2.0, 4.0]),
        variances=np.array([1.0, 1.0]),
        weights=np.array([1.0, 1.0]),
        wave_grid=np.array([0.9, 1.0, 1.1]),
        ny=1,
        oversample=16,
        pixfrac=1.0,
    )
    # Row 1 (y = 0) gets all of pixel 2 and half of pixel 1.
    f = np.array([0.5, 1.0])
    sci = np.sum(f * [2.0, 4.0]) / f.sum()
    var = np.sum(f**2) / f.sum() ** 2
    assert out["sci"][1, 1] == pytest.approx(sci)
    assert out["var"][1, 1] == pytest.approx(var)
    # Row 2 (y = 1) only half of pixel 1: the value is the pixel, its full variance.
    assert out["sci"][2, 1] == pytest.approx(2.0)
    assert out["var"][2, 1] == pytest.approx(1.0)
    assert np.isnan(out["sci"][0, 1]) and out["wht"][0, 1] == 0


def _toy_group(rng, n_exp=3, ny=21, nx=40, flux=5.0, sky=3.0, var_pix=1.0):
    """Noisy nodded frames of a source of known flux; returns the table inputs."""
    y = np.arange(ny, dtype=float)[:, None] * np.ones((1, nx))
    centres = np.array([10.0, 15.0, 5.0])[:n_exp]
    yslit = np.stack([(y - c).ravel() for c in centres])
    wave = np.broadcast_to(1.0 + 0.01 * np.arange(nx, dtype=float), (ny, nx)).ravel()
    wave = np.broadcast_to(wave, yslit.shape).copy()
    from slitcombine.core.profile import pixel_profile

    prof = pixel_profile(yslit, wave, 0.3)
    var = np.full(yslit.shape, var_pix) * (1 + rng.uniform(0, 1, yslit.shape))
    model = flux * prof + sky
    return yslit, wave, prof, var, model


def test_pixel_table_rows_and_negatives_from_other_positions():
    rng = np.random.default_rng(1)
    yslit, wave, prof, var, model = _toy_group(rng)
    data = model - 3.0
    mask = np.ones(data.shape, bool)
    mask[1, 50] = False  # exposure 1 invalid at pixel 50
    tab = extract.build_pixel_table(
        data, var, var, var, np.zeros_like(data), mask, wave, yslit, [1, 2, 3], prof
    )
    # One row per valid pixel of every (positive) exposure.
    assert len(tab) == mask.sum()
    row = tab[(tab["exposure_index"] == 0) & (tab["pixel_index"] == 50)][0]
    # Negatives of exposure 0 at pixel 50: only exposure 2 (exposure 1 is masked there).
    assert row["neg_bits"] == 0b100
    assert row["flux"] == pytest.approx(data[0, 50] - data[2, 50])
    assert row["var"] == pytest.approx(var[0, 50] + var[2, 50])
    row = tab[(tab["exposure_index"] == 0) & (tab["pixel_index"] == 51)][0]
    assert row["neg_bits"] == 0b110  # exposures 1 and 2, never exposure 0 itself
    assert row["profile"] == pytest.approx(prof[0, 51] - 0.5 * (prof[1, 51] + prof[2, 51]))
    assert tab["flux"].unit == "uJy" and tab["wave"].unit == "um" and tab["var"].unit == "uJy2"


def test_extraction_is_unbiased_with_honest_errors_monte_carlo():
    """Flux and error of the optimal and boxcar estimators over 300 noise draws.

    The nod differences share exposures, so rows are correlated; the error must
    include that covariance (a sum of row variances would not).
    """
    rng = np.random.default_rng(42)
    yslit, wave, prof, var, model = _toy_group(rng, flux=5.0)
    grid = 1.0 + 0.01 * np.arange(40.0)
    fluxes, errs, fboxes, eboxes = [], [], [], []
    for _ in range(300):
        data = model + rng.normal(0.0, np.sqrt(var))
        tab = extract.build_pixel_table(
            data - 3.0,
            var,
            var,
            var,
            np.full_like(data, 3.0),
            np.ones(data.shape, bool),
            wave,
            yslit,
            [1, 2, 3],
            prof,
        )
        spec = extract.extract_1d(tab, grid)
        fluxes.append(spec["flux"].value)
        errs.append(spec["err"].value)
        fboxes.append(spec["flux_boxcar"].value)
        eboxes.append(spec["err_boxcar"].value)
    fluxes, errs = np.array(fluxes), np.array(errs)
    fboxes, eboxes = np.array(fboxes), np.array(eboxes)
    assert np.mean(fluxes) == pytest.approx(5.0, rel=0.005)
    assert np.mean(fboxes) == pytest.approx(5.0, rel=0.01)
    # Empirical scatter per bin vs the propagated error (300 draws: +-4% precision).
    ratio = np.std(fluxes, axis=0) / np.mean(errs, axis=0)
    assert np.median(ratio) == pytest.approx(1.0, abs=0.05)
    ratio_box = np.std(fboxes, axis=0) / np.mean(eboxes, axis=0)
    assert np.median(ratio_box) == pytest.approx(1.0, abs=0.05)
    # The optimal extraction beats the boxcar.
    assert np.median(errs) < np.median(eboxes)


# ----------------------------------------------------------------------------- simulations
def test_bright_prism_flux_and_errors(prism_bright):
    sim, result = prism_bright
    ratio, zstd, scale, n = _accuracy(result, sim.truth)
    assert n > 250
    assert abs(ratio - 1) < 0.01, ratio
    assert abs(scale - 1) < 0.01, scale
    assert 0.9 <= zstd <= 1.15, zstd
    assert result.pathloss_used == "pipeline"
    # path_corr is 1/throughput (0.92 core x slit losses) of a centred source.
    assert np.nanmedian(result.spec["path_corr"]) == pytest.approx(1.3, abs=0.15)


def test_bright_prism_emission_lines(prism_bright):
    sim, result = prism_bright
    _check_lines(sim, result, ("[OIII]5008", "Halpha"))


def test_bright_g395m_flux_and_errors(g395m_bright):
    sim, result = g395m_bright
    ratio, zstd, scale, n = _accuracy(result, sim.truth)
    assert n > 1000
    assert abs(ratio - 1) < 0.01, ratio
    assert 0.9 <= zstd <= 1.15, zstd
    _check_lines(sim, result, ("Halpha",))


def test_off_centre_source_is_followed_past_the_default_offset_bound(tmp_path_factory):
    """A bright source 0.3 open-shutter heights (1.3 px) from the centre: the fit stops at the
    +-1 px default bound, is refitted with |c0| up to half a nod step and the flux is
    right (at the bound it came out 9% low with std(z) 2.4)."""
    sim = _simulate(tmp_path_factory, "offset", grating="PRISM", snr=50, seed=1, source_ypos=0.3)
    result = combine(sim.files, name="offset")
    ratio, zstd, _, _ = _accuracy(result, sim.truth)
    assert abs(ratio - 1) < 0.01, ratio
    assert 0.9 <= zstd <= 1.15, zstd
    status = result.provenance["parameters"]["trace_fit_status"]
    assert "bounds widened" in status and "|c0|" in status
    fit = result.group.fit[result.group.calc_reference_exposure]
    assert abs(fit["trace_coeffs"][-1]) > 1.0 and not fit["at_bound"][-1]
    _check_lines(sim, result, ("[OIII]5008", "Halpha"))
    # msaexp's behaviour on request: the bounds are final
    group = result.group
    ref = group.calc_reference_exposure
    fits = group.fit_all_traces(widen_bounds=False)
    assert fits[ref]["at_bound"][-1]
    # one (low, high) pair per coefficient (polyval order: c2, c1, c0)
    fit = group.fit_single_trace(exp=ref, trace_bounds=[(-0.2, 0.2), (-0.2, 0.2), (-3, 3)])
    assert abs(fit["trace_coeffs"][-1]) > 1.0 and np.all(np.abs(fit["trace_coeffs"][:2]) <= 0.2)
    with pytest.raises(FitError, match="trace_bounds must be"):
        group.fit_single_trace(exp=ref, trace_bounds=[(-1, 1), (-1, 1)])
    # several passes (negatives not shifted): the later passes keep the record
    fits = group.fit_all_traces(widen_bounds=True, shift_negatives=False, niter=3)
    assert group.meta["steps"]["trace_fit"]["passes"] > 1
    assert any("|c0|" in w for w in fits[ref]["widened_bounds"])
    assert group.meta["steps"]["trace_fit"]["widened_bounds"][ref] == fits[ref]["widened_bounds"]
    # bounds given by the user are kept; warn_at_bound is an accepted trace option
    kept = combine(
        sim.files,
        name="offset_kept",
        trace_kwargs={"trace_bounds": (-0.5, 0.5), "warn_at_bound": False},
    )
    fit = kept.group.fit[kept.group.calc_reference_exposure]
    assert abs(fit["trace_coeffs"][-1]) <= 0.5 + 1e-9 and "widened_bounds" not in fit
    assert "widened" not in kept.provenance["parameters"]["trace_fit_status"]


def test_extended_source_width_is_not_capped_at_2px(tmp_path_factory):
    """An intrinsic width of 2.5 px is measured (the default bound stops at 2 px, where
    the flux came out 20% low); the optics model follows the source's light cut by the
    bars and the slitlet's ends, so its flux is right too."""
    sim = _simulate(
        tmp_path_factory, "extended", grating="PRISM", snr=50, seed=1, intrinsic_sigma=2.5
    )
    result = combine(sim.files, name="extended")
    fit = result.group.fit[result.group.calc_reference_exposure]
    assert fit["sigma"] == pytest.approx(2.5, rel=0.05)
    assert "sigma <=" in result.provenance["parameters"]["trace_fit_status"]
    assert result.params["source_type_used"] == "compact"
    ratio, _, _, _ = _accuracy(result, sim.truth)
    assert ratio == pytest.approx(1.0, abs=0.02), ratio


def test_cosmic_ray_on_a_bright_line_core_is_rejected(tmp_path_factory):
    """S200A1 PRISM, seed 1, the simulator's 20 unflagged cosmic rays per exposure: one
    hits the [OIII] peak on the trace (3 pixels, 56-177 sigma, doubling them).  The
    per-pixel interpolation allowance hid it (one bin at z = 56, the [OIII] blend 7%
    high); the column-total test of the consensus residuals finds it."""
    sim = _simulate(
        tmp_path_factory, "crline", grating="PRISM", fixed_slit="S200A1", snr=50, seed=1, n_crs=20
    )
    result = combine(sim.files, name="crline")
    t = _truth_on(result.spec, sim.truth)
    ok = np.asarray(result.spec["valid"])
    z = (result.spec["flux"].value - t) / result.spec["err"].value
    assert np.max(np.abs(z[ok])) < 6
    _check_lines(sim, result, ("[OIII]5008", "Halpha"))


def test_faint_prism_median_bias(tmp_path_factory):
    """S/N ~3 per pixel: pooled over two seeds, median flux/truth within 3%."""
    ratios, scales = [], []
    for seed in (21, 22):
        sim = _simulate(tmp_path_factory, f"faint{seed}", grating="PRISM", snr=3, seed=seed)
        result = combine(sim.files, name="faint")
        t = _truth_on(result.spec, sim.truth)
        f = result.spec["flux"].value
        ok = np.asarray(result.spec["valid"]) & (t > 0.2 * np.median(t[t > 0]))
        ratios.append(f[ok] / t[ok])
        scales.append(_accuracy(result, sim.truth)[2])
    assert abs(np.median(np.concatenate(ratios)) - 1) < 0.03
    assert abs(np.mean(scales) - 1) < 0.03


def test_grid_outside_data_and_everything_masked(prism_bright):
    sim, result = prism_bright
    with pytest.raises(SlitCombineError, match="does not overlap"):
        combine(sim.files, wave_grid=np.linspace(7.0, 8.0, 50), fit_traces=False)
    group = result.group
    saved = group.mask.copy()
    try:
        group.mask[:] = False
        with pytest.raises(SlitCombineError, match="no valid pixel"):
            group.get_flat_diff_arrays()
    finally:
        group.mask[:] = saved


def test_unknown_option_is_an_error(prism_bright):
    from slitcombine.errors import ConfigurationError

    sim, _ = prism_bright
    with pytest.raises(ConfigurationError, match="unknown option"):
        combine(sim.files, wave_smaple=1.0)


@pytest.mark.parametrize(
    "bad",
    [
        {"profile_sigma": "0.3"},
        {"profile_sigma": float("nan")},
        {"profile_sigma": -1.0},
        {"wave_grid": [1.0, 2.0, float("inf")]},
        {"wave_grid": "abc"},
        {"wave_grid": [1.0, 2.0], "wave_range": (1.0, 2.0)},
        {"wave_range": 2.0},
        {"wave_range": (2.0, 1.0)},
        {"y_range": (1.0,)},
        {"y_range": (-2.0, None)},
        {"boxcar_halfwidth": None},
        {"boxcar_halfwidth": -1.0},
        {"ny": 2.5},
        {"oversample": 0},
        {"trace_kwargs": [1]},
        {"trace_kwargs": {"degre": 1}},
    ],
)
def test_bad_extraction_options_fail_before_reading(bad, tmp_path):
    """Every malformed option is a ConfigurationError naming it, raised before any file
    is read (the file here does not exist)."""
    from slitcombine.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match=list(bad)[-1]):
        combine([tmp_path / "missing.fits"], **bad)


@pytest.mark.parametrize("name", ["", "a/b", "spectre\u00e9"])
def test_bad_output_names(name, tmp_path):
    from slitcombine.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="name"):
        combine([tmp_path / "missing.fits"], name=name)


def test_given_width_still_fits_the_trace(tmp_path_factory):
    """``profile_sigma`` fixes the width only: the source 0.15 shutter off the nominal
    trace is still found (flux/truth 0.82 when the trace fit was skipped)."""
    from astropy import units as u

    sim = _simulate(tmp_path_factory, "width", noise=False, source_ypos=0.15, nx=150, seed=3)
    result = combine(sim.files, profile_sigma=np.int64(1) * 0.3)
    assert result.params["trace_fit_status"].startswith("fitted, width fixed, offset degree")
    np.testing.assert_allclose(result.sigma, 0.3)
    assert np.any(result.group.trace_coeffs != 0)
    ratio = _accuracy(result, sim.truth)[0]
    assert abs(ratio - 1) < 0.01, ratio
    # open-ended range and a grid with units
    lo = combine(sim.files, wave_range=(None, 2.0), fit_traces=False)
    assert np.nanmax(lo.spec["wave"].value) <= 2.0
    grid = np.linspace(10000.0, 30000.0, 50) * u.AA
    ang = combine(sim.files, wave_grid=grid, fit_traces=False)
    np.testing.assert_allclose(ang.spec["wave"].value[[0, -1]], [1.0, 3.0])


# ----------------------------------------------------------------------------- real data
def test_ceers_lines_stand_out(ceers_files):
    """[OIII] 5008 (2.62 um) and H-alpha (3.43 um) of CEERS 1345_933.

    Measured peak S/N (default options, this version: errors scaled by the measured noise,
    ~1.24x the pipeline's): [OIII] 48.3 at 2.619 um, H-alpha 34.2 at 3.439 um; with the
    pipeline's variances 56-60 and 40-42; msaexp 0.9.19 records 52.7 and 35.8
    (benchmarks/results).
    """
    result = combine(ceers_files, name="ceers")
    spec = result.spec
    sn = np.asarray(spec["flux"] / spec["err"])
    w = spec["wave"].value
    for centre in (2.62, 3.43):
        sel = np.abs(w - centre) < 0.05
        peak = np.nanmax(sn[sel])
        assert peak > 30, (centre, peak)
        # A line: far above the continuum S/N around it.
        around = (np.abs(w - centre) > 0.1) & (np.abs(w - centre) < 0.3)
        assert peak > 5 * np.nanmedian(np.abs(sn[around]))
    assert np.all(np.isfinite(spec["err"][spec["valid"]]))
    assert np.all(spec["err"][spec["valid"]].value > 0)


def test_pixel_table_without_differences(prism_bright):
    """``diffs=False``: the rows are the sky-subtracted exposures themselves."""
    _, result = prism_bright
    group = result.group
    saved = group.meta["diffs"]
    try:
        group.meta["diffs"] = False
        tab = group.get_flat_diff_arrays(with_pathloss=True)
    finally:
        group.meta["diffs"] = saved
    assert np.all(tab["neg_bits"] == 0)
    e = np.asarray(tab["exposure_index"])
    q = np.asarray(tab["pixel_index"])
    # a compact source is measured on the detector image: the bar shadow undone
    assert group.source_type == "compact"
    raw = (group.sci - group.sky_background) * group.bar
    np.testing.assert_allclose(tab["flux"], raw[e, q])
    np.testing.assert_allclose(tab["var"], tab["var_pos"])
    assert len(tab) == int(np.count_nonzero(group.mask & np.isfinite(raw)))
    # The profile is the positive profile only (no negative traces).
    assert np.nanmin(tab["profile"]) >= 0


# ---------------------------------------------------------------- issue 15: compact sources
@pytest.mark.parametrize(
    ("grating", "ypos", "xpos", "sigma"),
    [("PRISM", 0.4, -0.3, 0.0), ("G395M", -0.35, 0.2, 0.6)],
)
def test_compact_source_near_a_bar_is_not_shadowed(tmp_path_factory, grating, ypos, xpos, sigma):
    """A compact source 0.35-0.4 shutter heights off centre (its light cut by a bar): the
    flux comes out right with the defaults.  Dividing it by the bar shadow (the
    extended-source convention) makes it 10-20% too bright."""
    sim = _simulate(
        tmp_path_factory,
        f"bar_{grating}",
        grating=grating,
        snr=30,
        seed=3,
        source_ypos=ypos,
        source_xpos=xpos,
        intrinsic_sigma=sigma,
        nx=None if grating == "PRISM" else 500,
    )
    result = combine(sim.files, name="bar")
    assert result.params["source_type_used"] == "compact"
    step = result.group.meta["steps"]["source_type"]
    assert step["used"] == "compact" and "fitted intrinsic width" in step["reason"]
    ratio, pull_std, scale, n = _accuracy(result, sim.truth)
    assert n > 100
    assert ratio == pytest.approx(1.0, abs=0.012), ratio
    assert 0.85 < pull_std < 1.15
    # msaexp's way (source_type None): the bar-shadow corrected data, a Gaussian
    # profile without the wings and the bar's cut, and PATHLOSS_PS: >5% off (PRISM
    # 12% low, G395M 5% high here)
    from slitcombine.core import extract

    g = result.group
    g.source_type = None
    tab = g.get_flat_diff_arrays(with_pathloss=True, pathloss_source="pipeline")
    old = extract.extract_1d(tab, result.spec["wave"].value, exposure_variance=g.var)
    t = _truth_on(old, sim.truth)
    ok = np.asarray(old["valid"]) & (t > 0.2 * np.median(t[t > 0]))
    assert abs(np.median(old["flux"].value[ok] / t[ok]) - 1.0) > 0.04


def test_gaussian_psf_with_the_matching_optics(tmp_path_factory):
    """A simulation with a Gaussian PSF (no wings), extracted with the matching optics
    model given as ``lookup_prf``: right; with the default (winged) optics the wrong PSF
    shows as a ~1% bias."""
    from slitcombine.core.optics import OpticsModel

    sim = _simulate(
        tmp_path_factory,
        "gauss",
        grating="PRISM",
        snr=30,
        seed=4,
        source_ypos=0.2,
        optics_model="gaussian",
    )
    gauss = OpticsModel(telescope="gaussian", kernel_wing_fraction=0.0)
    result = combine(sim.files, name="gauss", lookup_prf=gauss)
    ratio, pull_std, _, _ = _accuracy(result, sim.truth)
    assert ratio == pytest.approx(1.0, abs=0.01), ratio
    assert 0.85 < pull_std < 1.15
    wrong = combine(sim.files, name="gauss_default")
    assert abs(_accuracy(wrong, sim.truth)[0] - 1.0) > 0.005


def test_source_type_option_is_checked(tmp_path_factory):
    from slitcombine.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="source_type"):
        combine(["nothing.fits"], source_type="galaxy")


@pytest.mark.parametrize("grating", ["PRISM", "G140M", "G235M", "G395M", "G140H", "G235H", "G395H"])
def test_no_interior_bin_is_empty(tmp_path_factory, grating):
    """Issue 18: a grid finer than the pixels (msaexp's 1.05 per column) left every ~20th
    bin without a pixel (white stripes in the 2D panel).  One bin per column (the
    default) fills every bin; a finer grid spreads each pixel over the bins it overlaps,
    and the flux stays right."""
    sim = _simulate(
        tmp_path_factory,
        f"bins_{grating}",
        grating=grating,
        snr=20,
        seed=4,
        nx=None if grating == "PRISM" else 400,
    )
    from slitcombine import SlitGroup
    from slitcombine.pipeline.combine import combine_group

    group = SlitGroup(sim.files, "bins")
    group.fit_all_traces(ref_exp="auto")
    ratios = {}
    for ws in (1.0, 1.05, 2.0):
        result = combine_group(group, fit_traces=False, wave_sample=ws)
        npix = np.asarray(result.spec["npix"])
        inner = np.flatnonzero(npix > 0)
        assert np.all(npix[inner[0] : inner[-1] + 1] > 0), ws
        cols = result.drizzled["npix"].sum(axis=0)
        assert np.all(cols[inner[0] : inner[-1] + 1] > 0), ws
        ratios[ws] = _accuracy(result, sim.truth)[0]
    assert all(r == pytest.approx(1.0, abs=0.03) for r in ratios.values()), ratios
