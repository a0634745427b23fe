"""Tests of slitcombine.core.profile (pure models) and of the trace-fitting methods."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from scipy.integrate import quad

from slitcombine.core import nods, profile
from slitcombine.errors import ConfigurationError, FitError
from slitcombine.instrument import PIXEL_SCALE


# ---------------------------------------------------------------- PSF and pixel profile
def test_psf_width_grows_with_wavelength():
    w = np.array([0.6, 1.0, 2.0, 3.0, 4.0, 5.0])
    fwhm = profile.psf_fwhm(w)
    assert fwhm[1] == pytest.approx(1.20, abs=1e-9)
    assert fwhm[-1] == pytest.approx(1.90, abs=1e-9)
    assert np.all(np.diff(fwhm) > 0)
    assert profile.psf_sigma(w) == pytest.approx(fwhm / 2.35482, rel=1e-5)
    # the growth is of the order of the diffraction limit lambda/D of the 6.5 m telescope
    lam_over_d_pix = 1e-6 / 6.5 * 206264.8 / PIXEL_SCALE
    assert 0.4 < profile.PSF_FWHM_SLOPE / lam_over_d_pix < 1.0


def test_psf_is_the_simulator_psf():
    from slitcombine.testing import simulate

    w = np.linspace(0.6, 5.6, 50)
    assert profile.psf_sigma(w) == pytest.approx(simulate.psf_sigma_pixels(w), rel=1e-4)


def test_pixel_profile_is_exact_pixel_integral_and_normalised():
    s = float(profile.total_sigma(2.0, 0.4))
    y = np.arange(-12, 13) + 0.3
    p = profile.pixel_profile(y, 2.0, 0.4)
    assert p.sum() == pytest.approx(1.0, abs=1e-12)
    g = lambda t: np.exp(-0.5 * (t / s) ** 2) / (np.sqrt(2 * np.pi) * s)  # noqa: E731
    for yi, pi in zip(y[10:15], p[10:15], strict=True):
        assert pi == pytest.approx(quad(g, yi - 0.5, yi + 0.5)[0], rel=1e-9)
    # broadcasting: (3, 1) x (4,)
    out = profile.pixel_profile(np.zeros((3, 1)), np.array([1, 2, 3, 4.0]), 0.2)
    assert out.shape == (3, 4)
    # wider at longer wavelength: less flux in the central pixel
    assert np.all(np.diff(out[0]) < 0)
    assert np.isnan(profile.pixel_profile(np.nan, 2.0, 0.1))


class _BoxPRF:
    """A toy user PRF: a top hat 3 px wide, with a constant throughput."""

    def pixel_profile(self, yslit, wave, sigma):
        y = np.asarray(yslit, float) + 0 * np.asarray(wave, float)
        return np.where(np.abs(y) < 1.5, 1 / 3.0, 0.0)

    def slit_throughput(self, wave, sigma, xpos, ypos, slit_width, slit_height):
        return np.full(np.broadcast(wave, sigma, xpos).shape, 0.5)


def test_lookup_prf_protocol():
    prf = _BoxPRF()
    assert isinstance(prf, profile.LookupPRF)
    p = profile.pixel_profile(np.array([-2.0, -1, 0, 1, 2]), 1.0, 0.0, lookup_prf=prf)
    assert p == pytest.approx([0, 1 / 3, 1 / 3, 1 / 3, 0])
    assert profile.path_loss_correction(np.ones(3), 0.0, 0.1, lookup_prf=prf) == pytest.approx(2)
    with pytest.raises(ConfigurationError, match="pixel_profile"):
        profile.pixel_profile(0.0, 1.0, 0.0, lookup_prf=object())


# ---------------------------------------------------------------- difference profile
def _toy_nods(n_per=(1, 1, 1), nod=5.1, offset=0.23, sigma=0.35, seed=1):
    """Noiseless 3-nod exposures of a source of known flux per column."""
    rng = np.random.default_rng(seed)
    ny, nx = 27, 40
    yy, xx = np.mgrid[:ny, :nx]
    keys = np.repeat(np.arange(len(n_per)), n_per)
    n = keys.size
    centre = 13.0 + (keys - 1) * nod  # row of each exposure's trace
    ypix = np.broadcast_to(yy.ravel().astype(float), (n, ny * nx))
    yslit_true = ypix - centre[:, None] - offset
    wave = np.broadcast_to(1.0 + 4.0 * xx.ravel() / nx, (n, ny * nx)).astype(float)
    flux = 2.0 + np.sin(xx.ravel() / 5.0)
    data = flux * profile.pixel_profile(yslit_true, wave, sigma)
    mask = rng.uniform(size=data.shape) > 0.1
    data = np.where(mask, data, np.nan)
    return dict(
        keys=keys,
        ypix=ypix,
        yslit_true=yslit_true,
        centre=centre,
        wave=wave,
        flux=flux,
        data=data,
        mask=mask,
        sh=(ny, nx),
        sigma=sigma,
        offset=offset,
    )


@pytest.mark.parametrize("n_per", [(1, 1, 1), (2, 1, 2), (2, 2)])
def test_difference_profile_matches_difference_image(n_per):
    t = _toy_nods(n_per)
    var = np.ones_like(t["data"])
    for k in np.unique(t["keys"]):
        ipos = t["keys"] == k
        ineg = ~ipos
        diff, _, _, _ = nods.difference_image(
            t["data"], var, var, np.zeros_like(var), t["mask"], ipos, ineg
        )
        model = profile.difference_profile(
            t["yslit_true"], t["wave"], t["mask"], ipos, ineg, t["sigma"]
        )
        ok = np.isfinite(diff)
        assert np.array_equal(ok, np.isfinite(model))
        np.testing.assert_allclose(diff[ok], (t["flux"] * model)[ok], rtol=1e-10, atol=1e-14)
        # the positive trace carries the whole unit flux per column when nothing is masked
        full = profile.difference_profile(
            t["yslit_true"], t["wave"], np.ones_like(t["mask"]), ipos, ineg * False, t["sigma"]
        )
        col = full.reshape(t["sh"]).sum(axis=0)
        assert col == pytest.approx(1.0, abs=1e-3)


# ---------------------------------------------------------------- slit throughput / path loss
def test_slit_throughput_physics():
    w = np.linspace(0.8, 5.2, 12)
    centred = profile.slit_throughput(w, 0.0, 0.0)
    assert np.all((centred > 0) & (centred < 1))
    assert np.all(np.diff(centred) < 0)  # the PSF grows with wavelength: more loss
    # symmetric in xpos, decreasing away from the centre
    a = profile.slit_throughput(3.0, 0.2, np.array([-0.4, -0.2, 0.0, 0.2, 0.4]))
    assert a == pytest.approx(a[::-1], rel=1e-12)
    assert a[2] > a[3] > a[4]
    # a very wide source: flux fraction = core * width / (sqrt(2 pi) s)
    s_arc = float(profile.total_sigma(3.0, 30.0)) * PIXEL_SCALE
    wide = profile.slit_throughput(3.0, 30.0, 0.0, slit_height=None)
    expect = profile.PSF_CORE_FRACTION * 0.2 / (np.sqrt(2 * np.pi) * s_arc)
    assert wide == pytest.approx(expect, rel=1e-3)
    # the shutter height: a source near the end of the shutter loses more
    h = profile.slit_throughput(3.0, 0.2, 0.0, 0.3)
    assert h < a[2]
    # without a height limit only the width cuts: more flux than with the height
    assert profile.slit_throughput(3.0, 0.2, 0.0, 0.3, slit_height=None) > a[2]
    # a point source centred in a 1.6" fixed slit keeps the whole Gaussian core
    big = profile.slit_throughput(3.0, 0.0, 0.0, slit_width=1.6, slit_height=3.2)
    assert big == pytest.approx(profile.PSF_CORE_FRACTION, abs=1e-12)


def test_path_loss_correction_definitions():
    w = np.array([1.0, 3.0, 5.0])
    thr = profile.slit_throughput(w, 0.3, 0.25)
    corr = profile.path_loss_correction(w, 0.3, 0.25)
    assert corr * thr == pytest.approx(1.0, rel=1e-12)
    rel = profile.path_loss_correction(w, 0.3, 0.25, reference="centered_point")
    assert rel == pytest.approx(profile.slit_throughput(w, 0, 0) / thr, rel=1e-12)
    assert profile.path_loss_correction(w, 0.0, 0.0, reference="centered_point") == pytest.approx(1)
    assert np.isnan(profile.path_loss_correction(1.0, 0.0, 50.0))  # source far outside
    with pytest.raises(ConfigurationError):
        profile.path_loss_correction(w, 0.3, 0.0, reference="bogus")


# ---------------------------------------------------------------- the fit (pure)
def _toy_model(
    k=1,
    force_positive=True,
    background=False,
    shift_negatives=True,
    prf=None,
    degree=2,
    n_per=(1, 1, 1),
    var=1e-4,
):
    t = _toy_nods(n_per)
    ny, nx = t["sh"]
    xx = np.tile(np.arange(nx), ny)
    xn = (xx - nx / 2) / nx
    ipos = t["keys"] == k
    ineg = ~ipos
    # nominal traces: the true ones without the offset
    ybase = t["ypix"] - t["centre"][:, None]
    v = np.full_like(t["data"], var)
    diff, _, vdiff, _ = nods.difference_image(
        t["data"], v, v, np.zeros_like(v), t["mask"], ipos, ineg
    )
    model = profile.DifferenceProfileModel(
        ybase,
        t["wave"],
        t["mask"],
        ipos,
        ineg,
        xn,
        xx,
        diff,
        vdiff,
        degree,
        force_positive=force_positive,
        background=background,
        lookup_prf=prf,
        shift_negatives=shift_negatives,
    )
    return t, model


class _WrappedGaussian:
    """The Gaussian model behind the generic protocol (no analytic derivatives)."""

    def __init__(self):
        self.g = profile.GaussianPRF()

    def pixel_profile(self, yslit, wave, sigma):
        return self.g.pixel_profile(yslit, wave, sigma)

    def slit_throughput(self, wave, sigma, xpos, ypos, slit_width, slit_height):
        return self.g.slit_throughput(wave, sigma, xpos, ypos, slit_width, slit_height)


@pytest.mark.parametrize(
    "opts",
    [
        dict(),
        dict(force_positive=False),
        dict(background=True),
        dict(shift_negatives=False, force_positive=False),
    ],
)
def test_jacobian_is_exact(opts):
    _, model = _toy_model(**opts)
    x = np.array([0.3, 0.05, -0.04, 0.1])
    r, J, _, _ = model.evaluate(x[0], x[1:], jacobian=True)
    for j in range(x.size):
        h = np.zeros_like(x)
        h[j] = 1e-6
        rp = model.evaluate((x + h)[0], (x + h)[1:])[0]
        rm = model.evaluate((x - h)[0], (x - h)[1:])[0]
        num = (rp - rm) / 2e-6
        assert np.max(np.abs(J[:, j] - num)) < 1e-6 * np.max(np.abs(J[:, j])) + 1e-9


@pytest.mark.parametrize("k", [0, 1, 2])
@pytest.mark.parametrize("prf", [None, _WrappedGaussian()])
def test_noiseless_fit_recovers_width_and_offset(k, prf):
    t, model = _toy_model(k=k, prf=prf)
    assert model.analytic is (prf is None)
    res = profile.fit_difference_profile(model, 0.5, np.zeros(3))
    assert res["status"] == "OK"
    assert res["sigma"] == pytest.approx(t["sigma"], abs=1e-4)
    assert res["trace_coeffs"] == pytest.approx([0, 0, t["offset"]], abs=1e-4)
    assert res["chi2_fit"] < res["chi2_init"]
    # the per-column fluxes are the injected ones
    ok = np.isfinite(res["flux"])
    assert res["flux"][ok] == pytest.approx(t["flux"][: t["sh"][1]][ok], rel=1e-4)


def test_fit_priors_and_fixed_sigma():
    t, model = _toy_model()
    res = profile.fit_difference_profile(model, 0.5, np.zeros(3), fix_sigma=True)
    assert res["sigma"] == 0.5 and res["nparam"] == 3
    # a very tight prior pulls the offset to its mean
    res = profile.fit_difference_profile(model, 0.3, np.zeros(3), offset_prior=(0.0, 1e-6))
    assert abs(res["trace_coeffs"][-1]) < 1e-3


def test_fit_bad_input():
    t, model = _toy_model()
    with pytest.raises(FitError, match="outside sigma_bounds"):
        profile.fit_difference_profile(model, 3.0, np.zeros(3))
    with pytest.raises(FitError, match="outside trace_bounds"):
        profile.fit_difference_profile(model, 0.3, [0, 0, 2.0])
    with pytest.raises(FitError, match="inconsistent bounds"):
        profile.fit_difference_profile(model, 0.3, np.zeros(3), sigma_bounds=(1.0, 0.5))
    with pytest.raises(FitError, match="coefficients"):
        profile.fit_difference_profile(model, 0.3, np.zeros(2))
    # nothing valid
    nothing = np.zeros_like(t["mask"])
    ny, nx = t["sh"]
    xx = np.tile(np.arange(nx), ny)
    empty = profile.DifferenceProfileModel(
        t["ypix"],
        t["wave"],
        nothing,
        t["keys"] == 1,
        t["keys"] != 1,
        xx / nx,
        xx,
        np.full(ny * nx, np.nan),
        np.ones(ny * nx),
        0,
    )
    with pytest.raises(FitError, match="no valid pixel"):
        profile.fit_difference_profile(empty, 0.3, [0.0])
    # zero signal: no fit, start values kept, no NaN
    zero = profile.DifferenceProfileModel(
        t["ypix"] - t["centre"][:, None],
        t["wave"],
        t["mask"],
        t["keys"] == 1,
        t["keys"] != 1,
        xx / nx,
        xx,
        np.random.default_rng(2).normal(0, 1e-2, ny * nx),
        np.full(ny * nx, 1e-4),
        0,
    )
    res = profile.fit_difference_profile(zero, 0.3, [0.0])
    assert res["status"] == "NO_SIGNAL" and not res["success"]
    assert res["sigma"] == 0.3 and res["trace_coeffs"] == pytest.approx([0.0])
    assert np.isfinite(res["chi2_fit"])


# ---------------------------------------------------------------- SlitGroup methods on simulations
# The simulator's truth: ``trace[x, k]`` is the row of the source centre in file k.  Our
# fitted centre of exposure i is ``polyval(base_coeffs[i] + trace_coeffs[i], xn)`` in the
# common slice.  ``source_ypos=0.05`` puts the source 0.222 px from the nominal trace
# (y_slit = 0), which the fit has to find.  The groups keep the pipeline bar-shadow
# correction (``undo_barshadow=False``): it is exact for the simulator, so that these
# tests measure the trace fit alone (the group's own bar-shadow model is tested with the
# corrections).
SIM_SIGMA = 0.3
SIM_YPOS = 0.05


def _simulate(tmp_path_factory, **kw):
    from slitcombine.testing import simulate

    opts = dict(
        source_ypos=SIM_YPOS,
        intrinsic_sigma=SIM_SIGMA,
        seed=3,
        n_crs=0,
        lines=(),
        n_hot=2,
        n_dead=2,
    )
    opts.update(kw)
    d = tmp_path_factory.mktemp("sim")
    return simulate.simulate_observation(d, **opts)


def _group(sim, source_type="compact", **kw):
    """A group measured as combine() measures a compact source (the optics model)."""
    from slitcombine import SlitGroup

    kw.setdefault("undo_barshadow", False)
    g = SlitGroup(sim.files, "sim", **kw)
    g.source_type = source_type
    return g


def _truth(sim):
    return sim.truth[0] if isinstance(sim.truth, list | tuple) else sim.truth


def _trace_errors(g, truth, min_sn):
    """Per exposure: S/N^2-weighted mean error of the fitted centre, and the max error over
    the columns with S/N >= min_sn (pixels)."""
    from slitcombine.core import geometry

    nx = g.sh[1]
    xn = geometry.normalized_x(np.arange(nx), nx)
    out = []
    for i in range(g.N):
        xs = g.slices[i][1]
        fitted = np.polyval(g.base_coeffs[i], xn) + np.polyval(g.trace_coeffs[i], xn)
        true = np.asarray(truth["trace"])[xs, i] - g.slices[i][0].start
        sn = np.asarray(truth["snr_column"])[xs]
        ok = np.isfinite(true) & np.isfinite(sn)
        err = (fitted - true)[ok]
        w = sn[ok] ** 2
        out.append((np.sum(w * err) / np.sum(w), np.max(np.abs(err[sn[ok] >= min_sn]))))
    return np.array(out)


@pytest.mark.parametrize("grating", ["PRISM", "G140M", "G235M", "G395M", "G395H"])
def test_bright_trace_and_width_every_grating(tmp_path_factory, grating):
    sim = _simulate(tmp_path_factory, grating=grating, snr=30)
    g = _group(sim)
    fits = g.fit_all_traces(niter=3)
    step = g.meta["steps"]["trace_fit"]
    assert step["status"] == "COMPLETE" and step["ref_exp"] == g.calc_reference_exposure
    ref = fits[step["ref_exp"]]
    assert ref["status"] == "OK" and ref["accepted"]
    # the reference offset is applied to every exposure
    assert np.all(g.trace_coeffs == g.trace_coeffs[0])
    err = _trace_errors(g, _truth(sim), min_sn=10)
    assert np.all(np.abs(err[:, 0]) < 0.01), err  # S/N-weighted centre
    assert np.all(err[:, 1] < 0.02), err  # every column with S/N >= 10
    assert ref["sigma"] == pytest.approx(SIM_SIGMA, rel=0.03)
    assert ref["sigma_err"] < 0.01
    # the others are evaluations with the same parameters
    for p, f in fits.items():
        assert f["sigma"] == ref["sigma"]
        assert f["status"] == ("OK" if p == step["ref_exp"] else "EVALUATED")


@pytest.mark.parametrize("grating", ["PRISM", "G395M"])
def test_sn10_trace(tmp_path_factory, grating):
    sim = _simulate(tmp_path_factory, grating=grating, snr=10, seed=5)
    g = _group(sim)
    g.fit_all_traces()
    err = _trace_errors(g, _truth(sim), min_sn=5)
    assert np.all(np.abs(err[:, 0]) < 0.05), err
    assert np.all(err[:, 1] < 0.05), err


@pytest.mark.parametrize("grating", ["PRISM", "G235M"])
def test_sn3_fixed_width_and_degree(tmp_path_factory, grating):
    sim = _simulate(tmp_path_factory, grating=grating, snr=3, seed=7)
    g = _group(sim)
    sn, sn_value, fix_sigma, degree = g.fit_params_by_sn()
    assert sn.shape == (g.sh[1],)
    assert 0.5 < sn_value < 5 and fix_sigma and degree == 0
    assert g.meta["steps"]["trace_fit_params"]["fix_sigma"] is True
    # the offset is significant at ~5 sigma here (chi2 gain 20-50): accept it at 3 sigma
    g.fit_all_traces(fix_sigma=SIM_SIGMA * 10, degree=degree, dchi_threshold=-9)
    ref = g.fit[g.meta["steps"]["trace_fit"]["ref_exp"]]
    assert ref["sigma"] == SIM_SIGMA and ref["theta"].size == 1 and ref["accepted"]
    err = _trace_errors(g, _truth(sim), min_sn=0)
    assert np.all(np.abs(err[:, 1]) < 0.2), err


def test_independent_fits_agree(tmp_path_factory):
    sim = _simulate(tmp_path_factory, grating="PRISM", snr=30, seed=2)
    g = _group(sim)
    fits = g.fit_all_traces(ref_exp=None)
    assert g.meta["steps"]["trace_fit"]["ref_exp"] is None
    off = np.array([f["trace_coeffs"][-1] for f in fits.values()])
    sig = np.array([f["sigma"] for f in fits.values()])
    assert all(f["status"] == "OK" for f in fits.values())
    assert off == pytest.approx(-SIM_YPOS * 0.46 / 0.1035, abs=0.02)
    assert sig == pytest.approx(SIM_SIGMA, abs=0.03)
    # each position's offset went to its own exposures
    for f in fits.values():
        assert np.all(g.trace_coeffs[f["ipos"]][:, -1] == f["trace_coeffs"][-1])


def test_fit_result_layout_and_msaexp_units(tmp_path_factory):
    sim = _simulate(tmp_path_factory, grating="PRISM", snr=20, seed=4)
    g = _group(sim, source_type=None)  # the Gaussian model, as msaexp
    f = g.fit_single_trace(exp=2, initial_sigma=4.0, degree=1, sigma_bounds=(1, 15))
    ny, nx = g.sh
    assert f["sigma_bounds_px"] == (0.1, 1.5) and f["initial_sigma"] == 0.4
    assert f["theta"][0] == pytest.approx(10 * f["sigma"]) and f["theta"].size == 3
    assert f["smod"].shape == (ny, nx) and f["profile"].shape == (ny * nx,)
    ok = np.isfinite(f["flux"])
    assert f["snum"][ok] / f["sden"][ok] == pytest.approx(f["flux"][ok])
    assert np.sqrt(f["svnum"][ok]) / f["sden"][ok] == pytest.approx(f["flux_err"][ok])
    # theta goes back in as x0
    again = g.fit_single_trace(exp=2, x0=f["theta"], evaluate=True, verbose=False)
    assert again["chi2_fit"] == pytest.approx(f["chi2_fit"], rel=1e-9)
    assert again["status"] == "EVALUATED" and again["nfev"] == 0
    # fix_sigma in pixels x 10
    fixed = g.fit_single_trace(exp=2, fix_sigma=2.5, degree=0, verbose=False)
    assert fixed["sigma"] == 0.25 and fixed["fix_sigma"] and fixed["theta"].size == 1
    # S/N along the trace
    tsn = g.get_trace_sn()
    assert tsn["status"] == "EVALUATED" and tsn["sigma"] == pytest.approx(0.4)
    assert np.nanmax(tsn["sn"]) > 10


def test_bad_input_errors(tmp_path_factory):
    sim = _simulate(tmp_path_factory, grating="PRISM", snr=20, seed=4)
    g = _group(sim)
    with pytest.raises(FitError, match="outside sigma_bounds"):
        g.fit_single_trace(exp=2, initial_sigma=30.0)  # 3 px > 2 px
    with pytest.raises(FitError, match="outside trace_bounds"):
        g.fit_single_trace(exp=2, x0=[3.0, 0.0, 5.0])
    with pytest.raises(ConfigurationError):
        g.fit_single_trace(exp=7)
    g.mask[:] = False
    with pytest.raises(FitError, match="no valid pixel"):
        g.fit_single_trace(exp=2)
    with pytest.raises(FitError, match="no valid pixel"):
        g.fit_all_traces()


def test_zero_signal_keeps_nominal_traces(tmp_path_factory, caplog):
    sim = _simulate(tmp_path_factory, grating="PRISM", snr=0, seed=4)
    g = _group(sim)
    yslit = g.yslit.copy()
    with caplog.at_level(logging.INFO, logger="slitcombine"):
        fits = g.fit_all_traces()
    step = g.meta["steps"]["trace_fit"]
    assert step["status"] == "FALLBACK" and "not detected" in fits[2]["message"]
    assert "source not detected" in step["fallback"]
    warned = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any("source not detected" in r.getMessage() for r in warned)
    assert np.all(g.trace_coeffs == 0)
    np.testing.assert_array_equal(g.yslit, yslit)
    assert all(np.isfinite(f["sigma"]) and np.isfinite(f["chi2_fit"]) for f in fits.values())
    sn, sn_value, fix_sigma, degree = g.fit_params_by_sn()
    assert abs(sn_value) < 2 and fix_sigma


def test_detected_source_on_its_nominal_trace_is_not_a_warning(tmp_path_factory, caplog):
    """A fit that cannot beat the nominal traces by ``-dchi_threshold`` keeps them quietly.

    The simulated source sits where the geometry says, so the fit's chi2 gain is small;
    with an unreachable threshold it is never applied: the nominal traces stay, the
    reason (with the gain) is in ``meta`` and logged at INFO, and no warning is given.
    """
    sim = _simulate(tmp_path_factory, grating="PRISM", snr=30, seed=5)
    g = _group(sim)
    yslit = g.yslit.copy()
    caplog.clear()  # what the construction said is not the fit's business
    with caplog.at_level(logging.INFO, logger="slitcombine"):
        fits = g.fit_all_traces(dchi_threshold=-1e12)
    step = g.meta["steps"]["trace_fit"]
    assert step["status"] == "FALLBACK" and not any(step["accepted"].values())
    assert fits[2]["status"] != "NO_SIGNAL"
    gain = -(fits[2]["chi2_fit"] - fits[2]["chi2_init"])
    assert gain >= 0 and f"improves chi2 by {gain:.1f} only" in step["fallback"]
    np.testing.assert_array_equal(g.yslit, yslit)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert any(
        r.levelno == logging.INFO and "improves chi2" in r.getMessage() for r in caplog.records
    )


def test_single_exposure_fits_with_background(tmp_path_factory):
    sim = _simulate(tmp_path_factory, grating="G395M", snr=30, n_nods=1, seed=6, n_shutters=1)
    # (the default levels of the percentile outlier step need several exposures)
    g = _group(sim, flag_percentile_kwargs={"plevels": [0.95, 0.99, 0.999]})
    assert g.N == 1
    fits = g.fit_all_traces()
    (f,) = fits.values()
    assert not f["differenced"] and f["background_fitted"] and f["status"] == "OK"
    assert g.meta["steps"]["trace_fit"]["differenced"] == {1: False}
    err = _trace_errors(g, _truth(sim), min_sn=10)
    assert np.abs(err[0, 0]) < 0.02, err
    assert f["sigma"] == pytest.approx(SIM_SIGMA, rel=0.1)


def test_aperture_model_throughput_is_the_simulator_truth(tmp_path_factory):
    """The group's apertures, found from the WCS and shutter_state, pass what the
    simulator's optics pass (the same optics, here testing the geometry: the shutter
    order of 'x11'/'11x', the rows of the bars, the x position)."""
    sim = _simulate(tmp_path_factory, grating="G235M", snr=5, source_xpos=0.2, seed=8)
    truth = _truth(sim)
    g = _group(sim)
    model = g.source_image_model()
    rows = np.asarray(truth["trace"], float).T[:, : g.sh[1]]
    _, thr = model.images(rows, SIM_SIGMA)
    ok = np.isfinite(truth["wave"])[: g.sh[1]]
    expect = np.asarray(truth["throughput"], float).T[:, : g.sh[1]]
    np.testing.assert_allclose(thr[:, ok], expect[:, ok], rtol=5e-3)
    # and PATHLOSS_PS, a point source at the catalogue position through the planned
    # shutters, is what the model gives there
    point = model.throughput(g.catalogue_rows(), 0.0, transmission=model.planned_transmission)
    ps = np.asarray(truth["slit_throughput"], float).T[:, : g.sh[1]]
    np.testing.assert_allclose(point[:, ok], ps[:, ok], rtol=5e-3)


def test_plot_profile(tmp_path_factory):
    from matplotlib.figure import Figure

    sim = _simulate(tmp_path_factory, grating="PRISM", snr=20, seed=4)
    g = _group(sim)
    fig = g.plot_profile(exp=2)
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    fits = g.fit_all_traces()
    own = Figure()
    ax = own.add_subplot(111)
    out = g.plot_profile(exp=1, ax=ax, fit_result=fits[2], ymax=None)
    assert out is own
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any("sigma=" in lab for lab in labels)


# ---------------------------------------------------------------- real data: CEERS
@pytest.fixture(scope="module")
def ceers_fit_group(ceers_files):
    from slitcombine import SlitGroup

    return SlitGroup(ceers_files, "1345_933")


def test_ceers_nods_agree(ceers_fit_group):
    """The three nods fitted independently give the same offset and a similar width.

    Recorded (degree 0, default options: the optics model of a compact source): sigma
    0.45 / 0.35 / 0.50 px (+-0.03), offset 0.758 / 0.748 / 0.704 px from the y_slit = 0
    trace (nods 1 / 2 / 3); msaexp's kind of Gaussian (source_type None) gives sigma
    0.61 / 0.50 / 0.72 and offsets 0.883 / 0.850 / 0.893 with the same chi2 within 10: the
    Gaussian places the centre of a profile cut by the bar 0.13 px farther from it.
    """
    g = ceers_fit_group
    g.set_trace_coeffs()
    fits = g.fit_all_traces(ref_exp=None, degree=0)
    off = np.array([f["trace_coeffs"][-1] for f in fits.values()])
    sig = np.array([f["sigma"] for f in fits.values()])
    assert all(f["status"] == "OK" and f["accepted"] for f in fits.values())
    assert np.ptp(off) < 0.07, off
    assert np.all((off > 0.5) & (off < 1.0)), off
    assert np.ptp(sig) < 0.3, sig
    assert np.all((sig > 0.3) & (sig < 0.9)), sig
    # the reference fit lands among the independent ones
    g.set_trace_coeffs()
    ref = g.fit_all_traces(degree=0)[2]
    assert off.min() - 0.02 < ref["trace_coeffs"][-1] < off.max() + 0.02
    assert sig.min() - 0.05 < ref["sigma"] < sig.max() + 0.05


def test_fit_at_a_bound_is_reported(tmp_path_factory, caplog):
    """Bounds that exclude the true offset: the fit stops on the bound, says so and warns."""
    import logging

    sim = _simulate(tmp_path_factory, grating="PRISM", snr=30)
    g = _group(sim)
    ref = g.calc_reference_exposure
    free = g.fit_single_trace(exp=ref, degree=0)
    assert -1.0 < free["trace_coeffs"][0] < 0.2  # inside the default bounds, below 0.3
    assert not any(free["at_bound"])
    with caplog.at_level(logging.WARNING, logger="slitcombine.group._trace_methods"):
        x0 = [free["sigma_x10"], 0.6]  # a start inside the bounds
        fit = g.fit_single_trace(x0=x0, exp=ref, degree=0, trace_bounds=(0.3, 1.0))
    assert fit["trace_coeffs"][0] == pytest.approx(0.3, abs=0.002)
    assert fit["at_bound"] == [False, True]  # sigma free, offset on its lower bound
    assert "at the fit bounds" in caplog.text and "wider bounds" in caplog.text
    # residuals at the bound scatter more than the variances: err_scale > 1
    assert fit["err_scale"] > free["err_scale"] >= 1.0


def test_unconverged_trace_fit_is_a_warning(tmp_path_factory, caplog):
    """A fit stopped by its evaluation budget is not applied and is reported as such."""
    sim = _simulate(tmp_path_factory, grating="PRISM", snr=30, seed=5)
    g = _group(sim)
    with caplog.at_level(logging.INFO, logger="slitcombine"):
        g.fit_all_traces(max_nfev=2)
    step = g.meta["steps"]["trace_fit"]
    assert step["status"] == "FALLBACK" and "did not converge" in step["fallback"]
    assert any(
        r.levelno == logging.WARNING and "did not converge" in r.getMessage()
        for r in caplog.records
    )
    assert np.all(g.trace_coeffs == 0)


def test_ceers_curvature_at_its_bound_suggests_a_lower_degree(ceers_files, caplog):
    """CEERS: the degree-2 term runs to its bound for a chi2 gain of a few; the warning
    says the data may not constrain it, and degree 0 fits as well."""
    from slitcombine import SlitGroup

    g = SlitGroup(ceers_files, "curv")
    with caplog.at_level(logging.WARNING, logger="slitcombine"):
        fit2 = g.fit_single_trace(exp=2, degree=2)
    assert fit2["at_bound"][1] and "['c2'] at the fit bounds" in caplog.text
    assert "try a lower degree" in caplog.text
    fit0 = g.fit_single_trace(exp=2, degree=0)
    assert not any(fit0["at_bound"])
    assert fit0["chi2_fit"] - fit2["chi2_fit"] < 25  # what two more terms buy
