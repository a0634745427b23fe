"""The trace-fit and shutter-offset algorithms, called directly on small arrays.

:mod:`slitcombine.core.tracefit` (one fit), :mod:`slitcombine.core.tracepasses` (the
passes, the acceptance test, the bound widening) and
:mod:`slitcombine.core.shutteroffset`, without a ``SlitGroup`` except where a simulated
group gives a realistic geometry.
"""

from __future__ import annotations

import numpy as np
import pytest

from slitcombine.core import nods, profile, shutteroffset, tracefit, tracepasses
from slitcombine.core.tracefit import SIGMA_UNIT
from slitcombine.errors import FitError


# ----------------------------------------------------------------------------- helpers
def _nodded_pair(offset=0.4, sigma=0.5, flux=40.0, noise=0.05, seed=2, ny=21, nx=40):
    """Two exposures of a point source nodded by 4 rows, ``(N, ny*nx)`` arrays.

    The base traces are rows 8 and 12 (constant polynomials); the source is ``offset``
    pixels above them, with intrinsic width ``sigma``.
    """
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:ny, 0:nx].astype(float)
    ypix = np.tile(rows.ravel(), (2, 1))
    xslit = np.tile(cols.ravel(), (2, 1))
    wave = np.tile(np.broadcast_to(np.linspace(1.0, 5.0, nx), (ny, nx)).ravel(), (2, 1))
    base = np.array([[0.0, 8.0], [0.0, 12.0]])
    ybase = ypix - base[:, -1:]
    data = flux * profile.pixel_profile(ybase - offset, wave, sigma)
    var = np.full_like(data, noise**2)
    data = data + rng.normal(0.0, noise, data.shape)
    mask = np.ones(data.shape, bool)
    return dict(data=data, var=var, mask=mask, wave=wave, xslit=xslit, ypix=ypix, base=base)


def _inputs(arrays, position=0, shift_negatives=True):
    ipos = np.arange(2) == position
    ineg = ~ipos
    a = arrays
    diff = nods.difference_image(
        a["data"], a["var"], a["var"], np.zeros_like(a["data"]), a["mask"], ipos, ineg
    )
    return tracefit.trace_inputs(
        (ipos, ineg, *diff),
        data=a["data"],
        mask=a["mask"],
        wave=a["wave"],
        xslit=a["xslit"],
        ypix=a["ypix"],
        yslit=a["ypix"] - a["base"][:, -1:],
        base_coeffs=a["base"],
        shape=(21, 40),
        shift_negatives=shift_negatives,
    )


def _fit(sigma=0.4, coeffs=(0.0,), chi2_fit=100.0, chi2_init=200.0, status="OK", **extra):
    """A minimal fit record, as :func:`tracefit.fit_trace` makes (sigma free)."""
    coeffs = np.asarray(coeffs, float)
    fit = {
        "theta": np.concatenate([[sigma * SIGMA_UNIT], coeffs]),
        "sigma": sigma,
        "sigma_err": 0.01,
        "trace_coeffs": coeffs,
        "fix_sigma": False,
        "degree": coeffs.size - 1,
        "sigma_bounds_px": (0.1, 2.0),
        "trace_bounds_px": [-1.0, 1.0],
        "at_bound": [False] * (coeffs.size + 1),
        "chi2_init": chi2_init,
        "chi2_fit": chi2_fit,
        "dchi2": chi2_fit - chi2_init,
        "nfev": 10,
        "status": status,
        "success": status in ("OK", "EVALUATED"),
        "differenced": True,
        "psf_model": "GaussianPRF()",
        "ipos": np.array([True, False]),
    }
    fit.update(extra)
    return fit


class _FakeFitter:
    """A :class:`tracepasses.PositionFitter` whose fits come from a function."""

    def __init__(self, make):
        self.make = make
        self.calls, self.applied, self.passes, self.refits, self.warned = [], [], 0, [], []

    def fit(self, position, **options):
        self.calls.append((position, options))
        return self.make(position, len(self.calls), options)

    def apply(self, coeffs, exposures):
        self.applied.append((np.asarray(coeffs).tolist(), exposures))

    def end_pass(self):
        self.passes += 1

    def refit_tried(self, position, attempt):
        self.refits.append((position, attempt))

    def widened_at_bound(self, fit):
        self.warned.append(fit)


# ----------------------------------------------------------------------------- one fit
def test_polyval_is_numpy_polyval():
    x = np.linspace(-0.5, 0.5, 7)
    assert np.allclose(tracefit.polyval([0.3, -0.2, 1.5], x), np.polyval([0.3, -0.2, 1.5], x))
    assert np.all(tracefit.polyval([], x) == 0)


def test_trace_start_reads_msaexp_layout():
    start = tracefit.trace_start(initial_sigma=3.0, degree=2)
    assert start.sigma == pytest.approx(0.3) and start.degree == 2 and not start.fixed
    assert np.all(start.coeffs == 0)
    start = tracefit.trace_start([5.0, 0.1, -0.2])
    assert start.sigma == pytest.approx(0.5) and start.coeffs.tolist() == [0.1, -0.2]
    # a fixed width: x0 holds only the offset coefficients
    start = tracefit.trace_start([0.1, -0.2], fix_sigma=4.0)
    assert start.fixed and start.sigma == pytest.approx(0.4) and start.degree == 1
    with pytest.raises(FitError, match="at least 2 values"):
        tracefit.trace_start([3.0])


def test_trace_inputs_moves_negatives_only_with_shift_negatives():
    arrays = _nodded_pair()
    moved = _inputs(arrays, shift_negatives=True)
    kept = _inputs(arrays, shift_negatives=False)
    assert moved.differenced and moved.shape == (21, 40)
    assert np.array_equal(moved.ybase, kept.ybase)  # here yslit is the base trace
    assert np.allclose(moved.xn, (np.tile(np.arange(40.0), 21) - 20) / 40)
    assert moved.column.dtype.kind == "i" and moved.column.max() == 39
    assert tracefit.use_background("auto", moved.differenced) is False
    assert tracefit.use_background("auto", False) is True
    assert tracefit.use_background(False, False) is False


def test_fit_trace_recovers_offset_and_width():
    arrays = _nodded_pair(offset=0.4, sigma=0.5)
    inputs = _inputs(arrays)
    model = tracefit.difference_model(inputs, 0)
    start = tracefit.trace_start(initial_sigma=3.0, degree=0)
    fit = tracefit.fit_trace(model, start, inputs, position=1)
    assert fit["status"] == "OK" and fit["exp"] == 1
    assert fit["trace_coeffs"][-1] == pytest.approx(0.4, abs=0.03)
    assert fit["sigma"] == pytest.approx(0.5, abs=0.1)
    assert fit["theta"][0] == pytest.approx(fit["sigma"] * SIGMA_UNIT)
    assert fit["sigma_bounds_px"] == (0.1, 2.0) and fit["trace_bounds_px"] == [-1.0, 1.0]
    assert fit["smod"].shape == (21, 40)
    # msaexp's sums: flux = snum / sden, and the mean row of the positive exposure is
    # the row from its trace at the fitted offset
    ok = fit["sden"] > 0
    assert np.allclose(fit["snum"][ok] / fit["sden"][ok], fit["flux"][ok])
    assert np.allclose(fit["yslit"], inputs.ybase[0] - fit["trace_coeffs"][-1])
    # evaluated at the start values: nothing moves
    again = tracefit.fit_trace(model, tracefit.trace_start(fit["theta"]), inputs, evaluate=True)
    assert again["status"] == "EVALUATED"
    assert np.allclose(again["trace_coeffs"], fit["trace_coeffs"])


def test_fit_trace_optical_width_bounds(monkeypatch):
    """With the optics model the width may reach 0 (a point source), and its end at 0
    is not a bound; with the profile model a lower bound is a bound."""
    arrays = _nodded_pair(sigma=0.0, flux=80.0)
    inputs = _inputs(arrays)
    model = tracefit.difference_model(inputs, 0)
    start = tracefit.trace_start(initial_sigma=1.0, degree=0)
    fit = tracefit.fit_trace(model, start, inputs, optical=True, sigma_bounds=(1, 20))
    assert fit["sigma_bounds_px"] == (0.0, 2.0) and fit["sigma"] < 0.05
    gauss = tracefit.fit_trace(model, start, inputs, sigma_bounds=(1, 20))
    assert gauss["sigma_bounds_px"] == (0.1, 2.0) and gauss["at_bound"] == [True, False]
    # a width that ends at 0 (within 1e-3 of the upper bound): not reported at a bound
    real = profile.fit_difference_profile

    def at_zero(*args, **kwargs):
        return dict(real(*args, **kwargs), sigma=0.0, at_bound=[True, True])

    monkeypatch.setattr(profile, "fit_difference_profile", at_zero)
    fit = tracefit.fit_trace(model, start, inputs, optical=True)
    assert fit["at_bound"] == [False, True] and fit["theta"][0] == 0.0
    assert tracefit.fit_trace(model, start, inputs)["at_bound"] == [True, True]


def test_at_bound_names():
    fit = _fit(coeffs=[0.1, 0.0, 1.0], at_bound=[True, False, True, True])
    assert tracefit.at_bound_names(fit) == ["sigma", "c1", "c0"]
    fixed = dict(fit, fix_sigma=True, at_bound=[False, True, False])
    assert tracefit.at_bound_names(fixed) == ["c1"]


# ----------------------------------------------------------------------------- bounds
def test_nod_step():
    assert tracepasses.nod_step(-5.2, 0.1) == pytest.approx(5.2)
    for unknown in (None, 0.0, np.nan):
        assert tracepasses.nod_step(unknown, 0.1) == pytest.approx(0.529 / 0.1)


def test_widened_bounds_from_a_fit_at_a_bound():
    # width at its upper bound: up to one nod step
    wide = tracepasses.widened_bounds(_fit(sigma=2.0, at_bound=[True, False]), 5.0)
    assert wide.sigma_bounds == (1.0, 50.0) and wide.widened == ("sigma <= 5.00 px",)
    assert wide.trace_bounds.tolist() == [[-1.0, 1.0]]
    # constant offset at its bound: up to half a nod step; the slope's bounds kept
    fit = _fit(coeffs=[0.0, 1.0], at_bound=[False, False, True])
    wide = tracepasses.widened_bounds(fit, 5.0)
    assert wide.trace_bounds.tolist() == [[-1.0, 1.0], [-2.5, 2.5]]
    assert wide.sigma_bounds == (1.0, 20.0) and wide.widened == ("|c0| <= 2.50 px",)
    # both
    both = tracepasses.widened_bounds(_fit(sigma=2.0, at_bound=[True, True]), 5.0)
    assert len(both.widened) == 2
    # nothing to widen: width at its *lower* bound, only a slope, limits reached
    assert tracepasses.widened_bounds(_fit(sigma=0.1, at_bound=[True, True]), 5.0) is None
    slope = _fit(coeffs=[1.0, 0.0], at_bound=[False, True, False])
    assert tracepasses.widened_bounds(slope, 5.0) is None
    far = _fit(sigma=2.0, at_bound=[True, False], sigma_bounds_px=(0.1, 6.0))
    assert tracepasses.widened_bounds(far, 5.0) is None
    assert tracepasses.widened_bounds(_fit(at_bound=[False, True]), np.nan) is None


def test_acceptance_test():
    assert tracepasses.is_accepted(_fit(chi2_fit=100.0), 200.0, -25)
    assert not tracepasses.is_accepted(_fit(chi2_fit=190.0), 200.0, -25)
    assert not tracepasses.is_accepted(_fit(chi2_fit=100.0, status="MAX_NFEV"), 200.0, -25)
    evaluated = _fit(chi2_fit=100.0, status="EVALUATED")
    assert tracepasses.is_accepted(evaluated, 200.0, -25)
    assert not tracepasses.is_significant(evaluated, 200.0, -25)


def test_refit_widened_keeps_a_refit_only_when_chi2_improves():
    at_bound = _fit(sigma=2.0, chi2_fit=100.0, at_bound=[True, False])
    asked = []

    def better(**bounds):
        asked.append(bounds)
        return _fit(sigma=2.6, chi2_fit=80.0, sigma_bounds_px=(0.1, 5.0))

    reports = []
    best, wide = tracepasses.refit_widened(
        at_bound, better, chi2_nominal=200.0, dchi_threshold=-25, step=5.0, report=reports.append
    )
    assert best["sigma"] == 2.6 and best["widened_bounds"] == ["sigma <= 5.00 px"]
    assert best["nfev_replaced"] == 10 and wide.sigma_bounds == (1.0, 50.0)
    assert asked[0]["x0"] is at_bound["theta"] and len(asked) == 1  # refit inside: done
    assert reports[0].kept and reports[0].gain == pytest.approx(20.0)

    def worse(**bounds):
        return _fit(sigma=2.4, chi2_fit=101.0, sigma_bounds_px=(0.1, 5.0))

    reports = []
    best, wide = tracepasses.refit_widened(
        at_bound, worse, chi2_nominal=200.0, dchi_threshold=-25, step=5.0, report=reports.append
    )
    assert best is at_bound and wide is None and "widened_bounds" not in best
    assert not reports[0].kept and reports[0].gain == pytest.approx(-1.0)

    # a failed refit is not kept even with a lower chi2
    def failed(**bounds):
        return _fit(sigma=2.4, chi2_fit=50.0, status="MAX_NFEV")

    best, wide = tracepasses.refit_widened(
        at_bound, failed, chi2_nominal=200.0, dchi_threshold=-25, step=5.0
    )
    assert best is at_bound and wide is None

    # a fit that does not beat the nominal traces is not widened
    def never(**bounds):
        raise AssertionError("no refit expected")

    weak = _fit(sigma=2.0, chi2_fit=190.0, at_bound=[True, False])
    best, wide = tracepasses.refit_widened(
        weak, never, chi2_nominal=200.0, dchi_threshold=-25, step=5.0
    )
    assert best is weak and wide is None


def test_refit_widened_twice_width_then_offset():
    at_bound = _fit(sigma=2.0, chi2_fit=100.0, at_bound=[True, False])

    def refit(**bounds):
        if bounds["sigma_bounds"][1] == 50.0 and bounds["trace_bounds"][-1, 1] == 1.0:
            # inside the wider width bound the offset now stops at its bound
            return _fit(
                sigma=2.5, chi2_fit=90.0, at_bound=[False, True], sigma_bounds_px=(0.1, 5.0)
            )
        return _fit(
            sigma=2.5,
            coeffs=[1.7],
            chi2_fit=70.0,
            sigma_bounds_px=(0.1, 5.0),
            trace_bounds_px=[[-2.5, 2.5]],
        )

    best, wide = tracepasses.refit_widened(
        at_bound, refit, chi2_nominal=200.0, dchi_threshold=-25, step=5.0
    )
    assert best["widened_bounds"] == ["sigma <= 5.00 px", "|c0| <= 2.50 px"]
    assert best["nfev_replaced"] == 20 and best["trace_coeffs"].tolist() == [1.7]
    assert wide.trace_bounds.tolist() == [[-2.5, 2.5]] and wide.sigma_bounds == (1.0, 50.0)


# ----------------------------------------------------------------------------- passes
def test_fit_positions_reference_fit_and_evaluated_others():
    def make(position, n, options):
        if options.get("evaluate"):
            return _fit(coeffs=[0.3], chi2_fit=150.0, chi2_init=150.0, status="EVALUATED")
        return _fit(coeffs=[0.3], chi2_fit=100.0, chi2_init=200.0)

    fitter = _FakeFitter(make)
    result = tracepasses.fit_positions(fitter, [1, 2, 3], ref=2, x0=[4.0, 0.1])
    assert [c[0] for c in fitter.calls] == [2, 1, 3]
    assert fitter.calls[0][1] == {"warn_at_bound": True, "x0": [4.0, 0.1]}
    assert fitter.calls[1][1]["evaluate"] and fitter.calls[1][1]["x0"] is result.fits[2]["theta"]
    # the reference's offsets go to every exposure; one pass with shift_negatives
    assert fitter.applied == [([0.3], None)] and fitter.passes == 1 and result.passes == 1
    assert result.accepted == {2: True, 1: True, 3: True}
    assert result.fitted == (2,) and np.isnan(result.chi2_nominal[1])
    assert result.fits[2]["dchi2_nominal"] == -100.0 and result.fits[1]["ref_exp"] == 2
    assert [it["pass"] for it in result.fits[3]["iterations"]] == [0]
    assert tracepasses.trace_fallback(result) is None
    summary = tracepasses.trace_fit_summary(
        result, ref_exp=2, niter=3, dchi_threshold=-25, widen_bounds=False, fit_kwargs={"a": 1}
    )
    assert summary["offset_px"] == {2: 0.3, 1: 0.3, 3: 0.3}
    assert summary["dchi2_nominal"] == {2: -100.0} and summary["nfev"] == 30
    assert summary["fit_kwargs"] == {"a": 1} and summary["widened_bounds"] == {}


def test_fit_positions_independent_positions_iterate_until_converged():
    def make(position, n, options):
        # the parameters settle from the second fit of each position on
        shift = 0.0 if "x0" not in options else 0.2
        return _fit(
            coeffs=[0.2 + shift],
            chi2_fit=100.0,
            chi2_init=200.0,
            ipos=np.array([position == 1, position == 2]),
        )

    fitter = _FakeFitter(make)
    result = tracepasses.fit_positions(fitter, [1, 2], niter=5, shift_negatives=False)
    # pass 1: first fits (change inf); pass 2: moved by 0.2; pass 3: unchanged -> stop
    assert result.passes == 3 and fitter.passes == 3
    assert [c[1].get("x0") is not None for c in fitter.calls] == [
        False,
        False,
        True,
        True,
        True,
        True,
    ]
    assert [e[1].tolist() for e in fitter.applied[:2]] == [[True, False], [False, True]]
    assert len(result.fits[1]["iterations"]) == 3 and result.fits[1]["ref_exp"] is None


def test_fit_positions_keeps_widened_bounds_for_later_passes_and_evaluations():
    def make(position, n, options):
        if options.get("evaluate"):
            return _fit(chi2_fit=150.0, status="EVALUATED")
        if "sigma_bounds" in options:  # inside widened bounds
            return _fit(sigma=2.5, chi2_fit=80.0, sigma_bounds_px=(0.1, 5.0))
        return _fit(sigma=2.0, chi2_fit=100.0, at_bound=[True, False])

    fitter = _FakeFitter(make)
    result = tracepasses.fit_positions(
        fitter, [1, 2], ref=1, niter=2, shift_negatives=False, widen_bounds=True, step=5.0
    )
    assert fitter.calls[0][1]["warn_at_bound"] is False  # warned after widening instead
    second_pass = [c for c in fitter.calls if c[0] == 1][2][1]
    assert second_pass["sigma_bounds"] == (1.0, 50.0) and "x0" in second_pass
    evaluation = fitter.calls[-1][1]
    assert evaluation["evaluate"] and evaluation["sigma_bounds"] == (1.0, 50.0)
    assert result.fits[1]["widened_bounds"] == ["sigma <= 5.00 px"]
    assert fitter.refits[0][1].kept and not fitter.warned


def test_trace_fallback_reasons():
    def passes(make, **kw):
        return tracepasses.fit_positions(_FakeFitter(make), [1, 2], **kw)

    weak = passes(lambda p, n, o: _fit(chi2_fit=190.0, chi2_init=200.0))
    fb = tracepasses.trace_fallback(weak)
    assert fb.reason == "insignificant" and fb.dchi2_best == pytest.approx(-10.0)
    assert weak.accepted == {1: False, 2: False}
    undetected = passes(lambda p, n, o: _fit(status="NO_SIGNAL", chi2_fit=200.0))
    fb = tracepasses.trace_fallback(undetected)
    assert fb.reason == "undetected" and fb.undetected == [1, 2]
    failed = passes(lambda p, n, o: _fit(status="MAX_NFEV"), ref=1)
    fb = tracepasses.trace_fallback(failed)
    assert fb.reason == "not converged" and fb.failed == {1: "MAX_NFEV"}


# ----------------------------------------------------------------------------- shutter offset
def _bars(y, wave):
    """A bar-shadow model: dips of 60% at the shutter edges (y = k + 1/2)."""
    out = np.ones_like(y, dtype=float)
    for edge in (-1.5, -0.5, 0.5, 1.5):
        out -= 0.6 * np.exp(-0.5 * ((y - edge) / 0.08) ** 2)
    return out * (1 + 0.01 * (wave - 3))


def test_shutter_offset_chi2_minimum_at_the_offset():
    rng = np.random.default_rng(5)
    y = rng.uniform(-1.4, 1.4, 4000)
    wave = rng.uniform(1, 5, y.size)
    sky = np.full(y.size, 0.1)
    var = np.full(y.size, 0.002**2)
    data = sky * _bars(y + 0.3 / 5.0, wave) + rng.normal(0, 0.002, y.size)
    chi2 = shutteroffset.ShutterOffsetChi2(
        _bars, y, wave, data, np.ones_like(data), sky, var, prior=(0.0, 1.0)
    )
    grid = np.linspace(-1, 1, 81)
    assert grid[np.argmin([chi2(g) for g in grid])] == pytest.approx(0.3, abs=0.03)
    fit = shutteroffset.fit_shutter_offset(chi2)
    assert fit.offset == pytest.approx(0.3, abs=0.02)
    assert fit.chi2_fit < fit.chi2_start and fit.npix == y.size
    # the prior pulls towards its mean
    tight = shutteroffset.ShutterOffsetChi2(
        _bars, y, wave, data, np.ones_like(data), sky, var, prior=(0.0, 1e-3)
    )
    assert 0 < shutteroffset.fit_shutter_offset(tight).offset < fit.offset - 0.05


@pytest.fixture(scope="module")
def sim_group(tmp_path_factory):
    """A simulated PRISM group (3 nods, 3 shutters) with a sky fitted in the slit."""
    from slitcombine import SlitGroup
    from slitcombine.testing.simulate import simulate_observation

    sim = simulate_observation(
        tmp_path_factory.mktemp("tracefit"),
        grating="PRISM",
        snr=20.0,
        n_crs=0,
        n_hot=0,
        n_dead=0,
        nx=120,
        seed=4,
    )
    return SlitGroup(sim.files, "shutter", estimate_sky_kwargs={})


def test_shutter_offset_on_a_simulated_group(sim_group):
    """The sky pixels and coordinates of a simulated group, its sky seen through bars
    shifted by a known offset: the chi2 is lowest there."""
    g = sim_group
    sky2d = g.sky_data["sky2d"]
    use = shutteroffset.shutter_offset_pixels(g.fixed_yshutter, g.yslit, g.mask, sky2d)
    assert use.sum() >= shutteroffset.MIN_SKY_PIXELS
    # no source pixel: outside +-4.5 px of the trace
    assert np.all(np.abs(g.yslit[use]) > 4.5)
    rng = np.random.default_rng(1)
    y, wave, sky = g.fixed_yshutter[use], g.wave[use], sky2d[use]
    var = g.var_rnoise[use] + g.var_poisson[use]
    data = sky * _bars(y - 0.5 / 5.0, wave) + rng.normal(0, np.sqrt(var))
    chi2 = shutteroffset.ShutterOffsetChi2(
        _bars, y, wave, data, np.ones_like(data), sky, var, prior=(0.0, 1.0)
    )
    fit = shutteroffset.fit_shutter_offset(chi2)
    assert fit.offset == pytest.approx(-0.5, abs=0.1)
    assert fit.chi2_fit < chi2(0.0) and fit.chi2_fit <= chi2(-0.4) and fit.chi2_fit <= chi2(-0.6)


def test_step_methods_take_explicit_keywords(sim_group):
    """The trace methods and fit_shutter_offset have no keyword sink: an unknown keyword
    is a TypeError; msaexp's ``evaluate`` of fit_all_traces is accepted and recorded
    as ignored."""
    g = sim_group
    with pytest.raises(TypeError):
        g.fit_single_trace(exp=2, not_an_option=1)
    with pytest.raises(TypeError):
        g.fit_shutter_offset(not_an_option=1)
    with pytest.raises(TypeError):
        g.get_trace_sn(not_an_option=1)
    with pytest.raises(TypeError):
        g.fit_all_traces(not_an_option=1)
    fits = g.fit_all_traces(evaluate=True, degree=0)
    assert g.meta["ignored_kwargs"]["trace_fit"] == ["evaluate"]
    assert fits[2]["status"] == "OK" and g.meta["steps"]["trace_fit"]["fit_kwargs"] == {"degree": 0}
