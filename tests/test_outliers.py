"""Outlier rejection and stuck-shutter masks (issue 5).

Accuracy is asserted on seeded simulations of :mod:`slitcombine.testing.simulate` (cosmic rays
of 10-200 sigma not flagged in DQ and listed in the truth, DQ-flagged hot/dead pixels,
stuck-closed shutters, emission lines up to 50x the continuum) and on the real CEERS
PRISM trio, whose [OIII] 5008 (2.62 um) and H-alpha (3.43 um) lines must survive.

Measured with the defaults on the seeds used here (see the final report of issue 5):
every injected cosmic-ray pixel valid before the outlier steps is rejected in the
PRISM and G395M default and bright cases, good pixels rejected < 0.03 %, no line-core
pixel rejected.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pytest

from slitcombine import SlitGroup
from slitcombine.core import outliers as O
from slitcombine.core.masks import Reject
from slitcombine.errors import ConfigurationError
from slitcombine.testing.simulate import EmissionLine, simulate_observation

#: Bits set by the outlier steps of issue 5.
MINE = np.uint32(
    Reject.HOT_COLD
    | Reject.PERCENTILE
    | Reject.TRACE
    | Reject.PROFILE
    | Reject.OUTLIER_2D
    | Reject.MULTIPLE
)

#: The bright case: lines of 10x and 50x the continuum on a S/N=100 continuum.
BRIGHT_LINES = (
    EmissionLine(4862.68, peak_ratio=10, name="Hbeta"),
    EmissionLine(5008.24, peak_ratio=50, name="[OIII]5008"),
    EmissionLine(6564.61, peak_ratio=50, name="Halpha"),
    EmissionLine(18756.1, peak_ratio=50, name="Paalpha"),
    EmissionLine(40522.6, peak_ratio=50, name="Bralpha"),
)


# ------------------------------------------------------------------ helpers
def _simulated_group(tmp_path_factory, tag, **kw):
    out = tmp_path_factory.mktemp(tag)
    sim = simulate_observation(out, **kw)
    src = sim.sources[0]
    return SlitGroup([str(f) for f in src.files], tag), src


def _score(g, src):
    """CR recall, false-positive rate and line-core rejections of the outlier steps."""
    ny, nx = g.sh
    mine = (g.reject & MINE) > 0
    considered = (g.reject & ~MINE) == 0  # valid before the outlier steps
    cr = np.zeros((g.N, ny, nx), bool)
    t = src.cosmic_rays
    for e, r, c, s in zip(t["index"], t["row"], t["col"], t["sigma"], strict=True):
        rr, cc = r - g.slices[e][0].start, c - g.slices[e][1].start
        if s >= 10 and 0 <= rr < ny and 0 <= cc < nx:
            cr[e, rr, cc] = True
    cr = cr.reshape(g.N, -1)
    crv = cr & considered
    good = considered & ~cr
    line_hits = 0
    for line in src.truth.meta["lines"]:
        if not line.get("in_range"):
            continue
        xc = line["x_center"] - g.slices[0][1].start
        core = (np.abs(g.xslit - xc) <= 2.0) & (np.abs(g.yslit) <= 2.0) & ~cr
        line_hits += int((core & mine).sum())
    return {
        "n_cr": int(crv.sum()),
        "recall": (mine & crv).sum() / max(crv.sum(), 1),
        "fp_rate": (mine & good).sum() / good.sum(),
        "line_hits": line_hits,
    }


@pytest.fixture(scope="module")
def prism_default(tmp_path_factory):
    return _simulated_group(tmp_path_factory, "prism_default", grating="PRISM", seed=1)


@pytest.fixture(scope="module")
def g395m_default(tmp_path_factory):
    return _simulated_group(tmp_path_factory, "g395m_default", grating="G395M", seed=2)


@pytest.fixture(scope="module")
def prism_bright(tmp_path_factory):
    return _simulated_group(
        tmp_path_factory, "prism_bright", grating="PRISM", snr=100, lines=BRIGHT_LINES, seed=3
    )


@pytest.fixture(scope="module")
def g395m_bright(tmp_path_factory):
    return _simulated_group(
        tmp_path_factory, "g395m_bright", grating="G395M", snr=100, lines=BRIGHT_LINES, seed=1
    )


# ------------------------------------------------------------------ pure functions
def test_masked_median_matches_nanmedian():
    rng = np.random.default_rng(5)
    for k in (1, 2, 3, 5, 8, 12):
        a = rng.normal(size=(4, 6, k))
        a[rng.random(a.shape) < 0.3] = np.nan
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices
            ref = np.nanmedian(a, axis=-1)
        med, n = O.masked_median(a, np.isfinite(a), axis=-1)
        assert np.allclose(med, ref, equal_nan=True)
        assert np.array_equal(n, np.isfinite(a).sum(axis=-1))
        med0, _ = O.masked_median(np.moveaxis(a, -1, 0), np.isfinite(np.moveaxis(a, -1, 0)), 0)
        assert np.allclose(med0, ref, equal_nan=True)


def test_fill_short_gaps_uses_the_lower_neighbour():
    v = np.array([[1.0, np.nan, 5.0, np.nan, np.nan, np.nan, 2.0, np.nan]])
    out = O.fill_short_gaps(v, np.isfinite(v), max_gap=2)
    # a 1-pixel gap between 1 and 5 takes 1; the 3-pixel gap and the open end stay NaN
    assert out[0, 1] == 1.0
    assert np.isnan(out[0, 3:6]).all() and np.isnan(out[0, 7])


def test_row_model_ignores_a_line_on_one_side():
    # flat continuum 1 with noise-free lines 3 px either side of the pixel of interest
    row = np.ones((1, 1, 41))
    row[0, 0, 17:19] = 50.0
    row[0, 0, 22] = 30.0
    model, vf = O.row_model(row.reshape(1, -1), np.ones((1, 41), bool), (1, 41))
    # pixel 20 sits between the two lines: its model is the continuum
    assert model[0, 20] == pytest.approx(1.0)
    assert np.all(vf[0] > 0)


def test_normal_threshold_from_a_normal_sample():
    z = np.random.default_rng(1).normal(size=20000)
    thr, info = O.normal_extrapolated_threshold(z, (0.95, -4, -0.1), 2.0, n_per=5000)
    # 1.645 + 2 * (Phi^-1(1 - 0.1/5000) - 1.645) = 1.645 + 2 * (4.107 - 1.645) = 6.57
    assert info["width"] == pytest.approx(1.0, abs=0.03)
    assert thr == pytest.approx(6.57, abs=0.15)
    # 1 % of outliers in the upper tail move it by ~0.2 only (the width is central;
    # measured between p0 and p1 = 1 - 4/5000 as in the seed, it would be ~14)
    z2 = np.concatenate([z, np.full(200, 50.0)])
    thr2, _ = O.normal_extrapolated_threshold(z2, (0.95, -4, -0.1), 2.0, n_per=5000)
    assert thr2 == pytest.approx(thr, abs=0.3)
    # too few values: the standard normal, never an error
    thr3, info3 = O.normal_extrapolated_threshold(np.array([np.nan, 1.0]))
    assert info3["fallback_normal"] and np.isfinite(thr3) and thr3 >= 4.0
    with pytest.raises(ConfigurationError):
        O.normal_extrapolated_threshold(z, (0.3, -4, -0.1))


def test_majority_and_multiple_mask():
    assert [O.majority_count(n) for n in range(1, 8)] == [None, None, 2, 3, 3, 4, 4]
    bad = np.array([[1, 1, 0, 1], [1, 0, 0, 1], [0, 0, 0, 1]], bool)
    # pixel 0 bad in 2 of 3 -> all; pixel 1 in 1 of 3; pixel 3 in all (nothing to add)
    assert list(O.multiple_exposure_mask(bad)) == [True, False, False, False]
    assert O.multiple_exposure_mask(bad[:2]) is None


def test_grow_flags_needs_significant_neighbours():
    z = np.zeros((1, 25))
    z[0, 12] = 50.0  # flagged pixel in the middle of a 5x5 image
    z[0, 13] = 4.0  # significant neighbour
    z[0, 11] = 2.0  # not significant
    flags = z > 10
    grown = O.grow_flags(flags, z, (5, 5), np.ones((3, 3)), grow_threshold=3.0)
    assert grown[0, 12] and grown[0, 13] and not grown[0, 11]
    assert grown.sum() == 2


# ------------------------------------------------------------------ accuracy on simulations
@pytest.mark.parametrize("case", ["prism_default", "g395m_default", "prism_bright", "g395m_bright"])
def test_cosmic_rays_rejected_and_lines_kept(case, request):
    g, src = request.getfixturevalue(case)
    score = _score(g, src)
    assert score["n_cr"] > 50
    assert score["recall"] >= 0.99, score
    assert score["fp_rate"] <= 0.005, score
    assert score["line_hits"] == 0, score
    steps = g.meta["steps"]
    for name in ("flag_trace", "flag_percentile", "multiple_mask"):
        assert steps[name]["status"] == "COMPLETE"
    # the threshold is calibrated on the residual S/N: ~6 for correct variances
    assert 5.0 < steps["flag_percentile"]["threshold"] < 8.0
    assert steps["flag_percentile"]["statistics"]["width"] == pytest.approx(1.0, abs=0.15)
    # counts by bit are in meta
    assert g.meta["rejected"].get("PERCENTILE", 0) + g.meta["rejected"].get("TRACE", 0) > 0


def test_bright_line_cores_have_margin(prism_bright):
    """The 50x lines are far from the threshold, not just below it."""
    g, src = prism_bright
    res, *_ = g._consensus()
    thr = g.meta["steps"]["flag_percentile"]["threshold"]
    for line in src.truth.meta["lines"]:
        if not line.get("in_range"):
            continue
        core = (np.abs(g.xslit - line["x_center"]) <= 1.0) & (np.abs(g.yslit) <= 1.0)
        # measured: z <= 0.75 at the 50x line cores (PRISM, G395M, G140M; seeds 1-3)
        zmax = np.nanmax(np.where(core, res.z, np.nan))
        assert zmax < 0.3 * thr, (line["name"], zmax, thr)
        assert np.nanmax(np.where(core, res.z_high - res.z, np.nan)) <= 0


@pytest.mark.parametrize(
    ("grating", "stuck", "seed", "expected"),
    [("PRISM", 0, 1, -1), ("G395M", 2, 1, 1), ("G395M", 1, 2, 0)],
)
def test_stuck_closed_shutter_found(tmp_path_factory, grating, stuck, seed, expected):
    g, src = _simulated_group(
        tmp_path_factory,
        f"stuck_{grating}_{stuck}",
        grating=grating,
        stuck_closed_shutter=stuck,
        seed=seed,
    )
    # the metadata still claim every shutter of the slitlet is open
    assert set(str(g.info["shutter_state"][0])) <= {"1", "x"}
    step = g.meta["steps"]["stuck_shutters"]
    assert step["stuck"] == [expected], step
    assert g.bad_shutter_names == [expected]
    assert g.meta["rejected"]["BAD_SHUTTER"] > 0
    # the open shutters are well above the stuck one (whose edges get some light from
    # its open neighbours: the blurred edges and the spectrograph's wide wing)
    sn = step["shutter_sn"]
    assert sn[expected] < 0.3 * max(sn.values())


def test_no_stuck_shutter_in_normal_data(prism_default, g395m_default, ceers_group):
    for g in (prism_default[0], g395m_default[0], ceers_group):
        step = g.meta["steps"]["stuck_shutters"]
        assert step["decision"] == "ok" and step["stuck"] == []


def test_stuck_shutters_undetermined_without_sky():
    rng = np.random.default_rng(2)
    ys = np.repeat(np.array([-1.0, 0.0, 1.0]), 200)
    sci = rng.normal(size=(2, ys.size))  # no sky at all, unit noise
    stuck, info = O.stuck_shutters(
        sci, np.ones_like(sci), np.ones(sci.shape, bool), ys, np.ones_like(sci)
    )
    assert stuck == [] and info["status"] == "undetermined"
    # the same with sky in two shutters only: the third is stuck
    sci[:, ys == -1.0] += 3.0
    sci[:, ys == 1.0] += 3.0
    stuck, info = O.stuck_shutters(
        sci, np.ones_like(sci), np.ones(sci.shape, bool), ys, np.ones_like(sci)
    )
    assert stuck == [0] and info["status"] == "ok"
    stuck, info = O.stuck_shutters(
        sci, np.ones_like(sci), np.ones(sci.shape, bool), ys, np.ones_like(sci), fixed_slit=True
    )
    assert stuck == [] and info["status"] == "skipped"


# ------------------------------------------------------------------ CEERS
def _line_region(g, wave_um, half_cols=3, half_rows=2.0):
    """Pixels within +-half_rows of the trace and +-half_cols columns of a line."""
    region = np.zeros(g.sci.shape, bool)
    for i in range(g.N):
        col = int(np.nanargmin(np.abs(g.wtr[i] - wave_um)))
        region[i] = (np.abs(g.xslit[i] - col) <= half_cols) & (np.abs(g.yslit[i]) <= half_rows)
    return region


def test_ceers_lines_survive_default_steps(ceers_group):
    g = ceers_group
    mine = (g.reject & MINE) > 0
    for wave_um in (2.62, 2.633, 3.43):
        region = _line_region(g, wave_um)
        assert region.sum() > 40
        assert not np.any(region & mine), wave_um
    # the steps ran and recorded their counts
    steps = g.meta["steps"]
    assert steps["flag_trace"]["status"] == "COMPLETE"
    assert steps["flag_percentile"]["threshold"] > 4
    assert steps["multiple_mask"]["n_required"] == 2
    # pipeline-cleaned cal files: few outliers (pipeline jump detection removed the CRs)
    assert mine.sum() < 50


def test_ceers_optional_steps_keep_the_lines(ceers_files):
    g = SlitGroup(
        ceers_files,
        "ceers-all-steps",
        hot_cold_kwargs={"sn_limits": (-5, 5)},
        flag_2d_kwargs={},
        flag_profile_kwargs={},
    )
    steps = g.meta["steps"]
    for name in ("hot_cold", "flag_2d", "flag_profile"):
        assert steps[name]["status"] == "COMPLETE", name
    mine = (g.reject & MINE) > 0
    for wave_um in (2.62, 2.633, 3.43):
        assert not np.any(_line_region(g, wave_um) & mine), wave_um
    # the 2D step is two-sided: CEERS has isolated low pixels
    assert steps["flag_2d"]["n_low"] > 0
    assert mine.mean() < 0.01


# ------------------------------------------------------------------ method API
def test_method_returns_and_bits(prism_default):
    g0, _ = prism_default
    g = _copy_state(g0)
    n_before = int(g.mask.sum())
    out, thr = g.flag_percentile_outliers(update=False)
    assert out.shape == g.mask.shape and out.dtype == bool and np.isfinite(thr)
    assert int(g.mask.sum()) == n_before  # update=False leaves the group alone
    n, flags = g.flag_2d_outliers(with_mask=True, in_place=False)
    assert n == int(flags.sum()) and int(g.mask.sum()) == n_before
    trace_out = g.flag_trace_outliers()
    assert trace_out.shape == g.mask.shape
    assert np.all((g.reject[trace_out] & np.uint32(Reject.TRACE)) > 0)
    n_prof = g.flag_from_profile()
    assert isinstance(n_prof, int)
    assert g.meta["steps"]["flag_profile"]["n_required"] == 2


def test_flag_from_profile_figure(prism_default):
    """``make_plot=True`` returns the count and the figure of slitcombine.plots."""
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    g0, _ = prism_default
    n, fig = _copy_state(g0).flag_from_profile(make_plot=True)
    assert isinstance(n, int) and isinstance(fig, Figure)
    (ax,) = fig.axes
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("yslit (pixels)", "profile residual S/N")


def _copy_state(g):
    """A shallow copy of a group with its own mask, reject and meta (no re-reading)."""
    import copy

    h = copy.copy(g)
    h.mask = g.mask.copy()
    h.reject = g.reject.copy()
    h.meta = copy.deepcopy(g.meta)
    h._outlier_consensus = None
    return h


def test_hot_cold_order_and_sn_path(prism_default):
    g = _copy_state(prism_default[0])
    ny, nx = g.sh
    # an unflagged hot and an unflagged cold detector pixel, in all exposures, off-trace
    cand = np.flatnonzero(g.mask.all(axis=0) & (np.abs(g.yslit) > 2).all(axis=0))
    assert cand.size > 100
    hot, cold = cand[len(cand) // 3], cand[2 * len(cand) // 3]
    err = np.sqrt(g.var)
    g.sci = g.sci.copy()
    g.sci[:, hot] += 30 * err[:, hot]
    g.sci[:, cold] -= 30 * err[:, cold]
    ncold, nhot, flag = g.flag_hot_cold_pixels(sn_limits=(-5, 5))
    assert flag.shape == (ny * nx,)
    assert flag[hot] == 2 and flag[cold] == 1
    assert nhot >= 1 and ncold >= 1
    assert (g.reject[:, hot] & np.uint32(Reject.HOT_COLD)).all()
    step = g.meta["steps"]["hot_cold"]
    assert step["mode"] == "sn" and step["nhot"] == nhot and step["ncold"] == ncold


def test_hot_cold_absolute_and_percentile_paths(prism_default):
    g = _copy_state(prism_default[0])
    ncold, nhot, flag = g.flag_hot_cold_pixels()  # the seed's uJy limits, with S/N guard
    assert g.meta["steps"]["hot_cold"]["mode"] == "absolute"
    assert flag.dtype.kind == "i"
    g2 = _copy_state(prism_default[0])
    g2.flag_hot_cold_pixels(cold_percentile=0.1, hot_percentile=99.9, absolute=False)
    assert g2.meta["steps"]["hot_cold"]["mode"] == "percentile"
    with pytest.raises(ConfigurationError):
        g2.flag_hot_cold_pixels(absolute=False)  # -0.1 is not a percentile


# ------------------------------------------------------------------ bad input
def test_all_pixels_masked(ceers_files, caplog):
    g = SlitGroup(ceers_files, "all-masked")
    g.reject = g.reject | np.uint32(Reject.USER)
    g.mask[:] = False
    with caplog.at_level(logging.WARNING, logger="slitcombine.group._outlier_methods"):
        assert g.flag_trace_outliers() is None
        out, thr = g.flag_percentile_outliers()
        assert not out.any() and np.isnan(thr)
        assert g.flag_2d_outliers() == 0
        assert g.flag_from_profile() == 0
        assert g.flag_hot_cold_pixels()[:2] == (0, 0)
        assert g.apply_multiple_mask() == 0
    for name in (
        "flag_trace",
        "flag_percentile",
        "flag_2d",
        "flag_profile",
        "hot_cold",
        "multiple_mask",
    ):
        step = g.meta["steps"][name]
        assert step["status"] == "SKIPPED" and "valid pixels" in step["reason"], name
    assert "skipped" in caplog.text
    # the stuck-shutter test says why it cannot decide
    stuck, info = O.stuck_shutters(g.sci, g.var, g.mask, g._yshutter_grid, g.bar)
    assert stuck == [] and info["status"] == "skipped"


def test_single_exposure(ceers_files, caplog):
    with caplog.at_level(logging.INFO, logger="slitcombine"):
        g = SlitGroup(ceers_files[:1], "one")
    steps = g.meta["steps"]
    assert steps["multiple_mask"]["status"] == "SKIPPED"
    assert steps["flag_percentile"]["status"] == "COMPLETE"
    assert g.apply_multiple_mask() == 0
    assert "no majority" in g.meta["steps"]["multiple_mask"]["reason"]
    ncold, nhot, flag = g.flag_hot_cold_pixels()
    assert (ncold, nhot) == (0, 0) and g.meta["steps"]["hot_cold"]["status"] == "SKIPPED"
    assert "no majority" in caplog.text or "needs two" in caplog.text
    # without other exposures the line cores are protected by the sharpness test
    mine = (g.reject & MINE) > 0
    assert not np.any(_line_region(g, 2.62) & mine)


def test_two_exposures(ceers_files, caplog):
    g = SlitGroup(ceers_files[:2], "two")
    assert g.N == 2
    with caplog.at_level(logging.INFO, logger="slitcombine.group._outlier_methods"):
        assert g.apply_multiple_mask() == 0
    step = g.meta["steps"]["multiple_mask"]
    assert step["status"] == "SKIPPED" and "N=2" in step["reason"]
    assert "no majority" in caplog.text
    # the other steps compare the two exposures
    assert g.meta["steps"]["flag_percentile"]["status"] == "COMPLETE"
    assert g.flag_from_profile() >= 0
    assert g.meta["steps"]["flag_profile"]["n_required"] == 2


def test_stuck_shutter_combined_flux(tmp_path_factory):
    """Issue 5: with the stuck shutter masked the combined flux is within 3 % of the truth;
    left in (msaexp's G395M behaviour) it is 2/3 of it.  The pipeline bar shadow is kept so
    that the own bar model (which also darkens a stuck shutter) does not hide the effect.
    Measured (seed 1): 0.997 with the test, 0.666 without."""
    from slitcombine.pipeline.combine import combine

    sim = simulate_observation(
        tmp_path_factory.mktemp("stuck_flux"), grating="G395M", stuck_closed_shutter=2, seed=1
    )

    def flux_ratio(**opts):
        res = combine(sim.files, name="stuck", undo_barshadow=False, **opts)
        spec = res.spec
        w = np.where(
            np.isfinite(spec["wave_eff"].value), spec["wave_eff"].value, spec["wave"].value
        )
        t = np.interp(w, np.asarray(sim.truth["wave"]), np.asarray(sim.truth["flux"]))
        ok = np.asarray(spec["valid"]) & (t > 0.2 * np.median(t[t > 0]))
        return float(np.median(spec["flux"].value[ok] / t[ok]))

    assert flux_ratio() == pytest.approx(1.0, abs=0.03)
    assert flux_ratio(stuck_threshold=0) == pytest.approx(2 / 3, abs=0.05)


# ---------------------------------------------------------------- noisy pixels
def test_noisy_pixels_follow_each_column():
    """The reference is the column's median error: a 100x sensitivity gradient along the
    spectrum flags nothing, a pixel 30x noisier than its column is flagged, 10x is not."""
    from slitcombine.core.masks import noisy_pixels

    rng = np.random.default_rng(1)
    n, ny, nx = 3, 20, 50
    gradient = np.logspace(0, 4, nx)[None, None, :]  # variance x1e4 = sigma x100 along x
    var = gradient * rng.uniform(0.8, 1.2, (n, ny, nx))
    valid = np.ones((n, ny, nx), bool)
    valid[:, :, -1] = False  # a column without valid pixels: no warning, no flag
    var[1, 5, 10] *= 30**2
    var[2, 7, 40] *= 10**2
    var[0, 3, 20] *= 1e6
    valid[0, 3, 20] = False  # invalid: not flagged whatever its variance
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        flag = noisy_pixels(var, valid, threshold=16.0)
    assert np.argwhere(flag).tolist() == [[1, 5, 10]]


def test_ceers_noisy_detector_pixel(ceers_files, caplog):
    """CEERS: a detector pixel with a read-noise error ~1e4 times its column's, in all
    three exposures, is rejected (bit NOISY) and leaves the boxcar spectrum."""
    from slitcombine.pipeline.combine import combine_group

    g = SlitGroup(ceers_files, "noisy", slit_hotpix_kwargs={"rnoise_percentile": 90})
    step = g.meta["steps"]["slit_hotpix"]
    assert step["status"] == "COMPLETE" and step["ignored_kwargs"] == ["rnoise_percentile"]
    ny, nx = g.sh
    bad = 12 * nx + 34  # row 12, column 34 of the common slice
    noisy = (g.reject[:, bad] & np.uint32(Reject.NOISY)) > 0
    assert noisy.all() and not g.mask[:, bad].any()
    assert sum(step["n_noisy_per_exposure"]) == 12 and step["n_rejected"] > 12
    spec = combine_group(g, fit_traces=False).spec
    off = SlitGroup(ceers_files, "kept", slit_hotpix_kwargs=None)
    assert off.meta["steps"]["slit_hotpix"]["status"] == "SKIPPED" and off.mask[:, bad].all()
    spec_off = combine_group(off, fit_traces=False).spec
    assert np.nanmax(spec_off["err_boxcar"].value) > 10  # uJy: the pixel's error
    assert np.nanmax(spec["err_boxcar"].value) < 1
    # an implausible count of noisy pixels leaves the exposure alone, with a warning
    with caplog.at_level(logging.WARNING, logger="slitcombine"):
        few = SlitGroup(ceers_files, "few", slit_hotpix_kwargs={"max_allowed_flagged": 1})
    assert few.meta["steps"]["slit_hotpix"]["skipped_exposures"] == [1, 2]
    assert "noisy pixels in exposure(s) [1, 2]" in caplog.text


def test_noisy_pixels_edge_shapes():
    from slitcombine.core.masks import noisy_pixels

    assert noisy_pixels(np.ones((2, 0, 5)), np.ones((2, 0, 5), bool)).shape == (2, 0, 5)
    # a pixel exactly at the threshold is flagged ("from 16 times")
    var = np.ones((1, 5, 1))
    var[0, 2, 0] = 16.0**2
    assert noisy_pixels(var, np.ones_like(var, bool), 16.0)[0, :, 0].tolist() == [
        False,
        False,
        True,
        False,
        False,
    ]


def test_noisy_pixel_step_needs_the_read_noise_extension(tmp_path):
    """Without VAR_RNOISE the reader's ERR**2 includes the source's Poisson noise: the
    bright trace would look noisy, so the step is skipped and says why."""
    from astropy.io import fits

    sim = simulate_observation(tmp_path, snr=300, nx=120, seed=2, n_crs=0)
    for f in sim.files:
        with fits.open(f, mode="update") as hdul:
            del hdul["VAR_RNOISE"]
            del hdul["VAR_POISSON"]
    g = SlitGroup(sim.files, "no_rnoise")
    step = g.meta["steps"]["slit_hotpix"]
    assert step["status"] == "SKIPPED" and "VAR_RNOISE" in step["reason"]
    assert not (g.reject & np.uint32(Reject.NOISY)).any()
