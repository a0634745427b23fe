"""Tests of slitcombine.profile (pure models) and of the trace-fitting methods."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.integrate import quad

from slitcombine import nods, profile
from slitcombine.errors import ConfigurationError


# ---------------------------------------------------------------- PSF and pixel profile
def test_psf_width_grows_like_diffraction():
    w = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    fwhm = profile.psf_fwhm(w)
    assert fwhm[0] == pytest.approx(1.25, abs=0.005)
    assert fwhm[-1] == pytest.approx(1.90, abs=0.005)
    assert np.all(np.diff(fwhm) > 0)
    assert profile.psf_sigma(w) == pytest.approx(fwhm / 2.3548, rel=1e-4)
    # the wavelength term is the diffraction core, ~lambda/D for the 6.5 m telescope
    lam_over_d_pix = 1e-6 / 6.5 * 206264.8 / profile.NIRSPEC_PIXEL_SCALE
    assert profile.PSF_FWHM_SLOPE_PIX_PER_UM / lam_over_d_pix == pytest.approx(0.95, abs=0.02)


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

    def slit_throughput(self, wave, sigma, xpos, ypos, slit_width):
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
    # a very wide source: flux fraction = width / (sqrt(2 pi) s)
    s_arc = float(profile.total_sigma(3.0, 30.0)) * profile.NIRSPEC_PIXEL_SCALE
    wide = profile.slit_throughput(3.0, 30.0, 0.0)
    assert wide == pytest.approx(0.2 / (np.sqrt(2 * np.pi) * s_arc), rel=1e-3)
    # a finite shutter height adds the cross-dispersion loss
    h = profile.slit_throughput(3.0, 0.2, 0.0, 0.3, slit_height=0.46)
    assert h < a[2]
    # a point source centred in a 1.6" fixed slit loses nothing
    assert profile.slit_throughput(3.0, 0.0, 0.0, slit_width=1.6) == pytest.approx(1, abs=1e-12)


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
