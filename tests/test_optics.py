"""Tests of :mod:`slitcombine.core.optics` (image formation through the MSA)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import ndtr

from slitcombine import instrument
from slitcombine.core import optics
from slitcombine.errors import ConfigurationError

U = np.arange(-30.0, 30.0 + 1e-9, 0.05)  # pixels from the source


def test_airy_pattern_is_normalised():
    grid, cum = optics._airy_cumulative(instrument.TELESCOPE_OBSCURATION)
    total = cum[:, -1].sum() * (grid[1] - grid[0])
    # the Airy pattern beyond 25 lambda/D holds ~0.2 / 25 = 0.8% of the light
    assert total == pytest.approx(0.992, abs=0.002)
    unobscured = optics._airy_cumulative(0.0)[1][:, -1].sum() * (grid[1] - grid[0])
    assert unobscured == pytest.approx(1 - 0.2 / 25, abs=0.002)


def test_strip_profile_integrals():
    model = optics.DEFAULT_OPTICS
    waves = np.array([1.0, 3.0, 5.0])
    strips = model.strip_profiles(waves, U)
    xfrac = strips.sum(axis=1) * 0.05
    # a centred point source: the 0.2 arcsec window passes less of the larger red PSF
    assert np.all(np.diff(xfrac) < 0)
    assert 0.9 < xfrac[0] < 0.97 and 0.7 < xfrac[-1] < 0.85
    # symmetric about the source, peaked at 0
    np.testing.assert_allclose(strips, strips[:, ::-1], atol=1e-12)
    assert np.all(np.argmax(strips, axis=1) == U.size // 2)
    # off-centre in x loses more; a wide window loses less
    off = model.strip_profiles(waves, U, xpos=0.4).sum(axis=1) * 0.05
    wide = model.strip_profiles(waves, U, slit_width=1.6).sum(axis=1) * 0.05
    assert np.all(off < xfrac) and np.all(wide > 0.96)
    # an extended source: the window passes a smaller fraction, the profile is wider
    ext = model.strip_profiles(waves, U, sigma=3.0)
    assert np.all(ext.sum(axis=1) * 0.05 < 0.5 * xfrac)
    width = np.sqrt((ext * U**2).sum(axis=1) / ext.sum(axis=1))
    assert np.all(width > 2.9)


def test_gaussian_telescope_is_analytic():
    model = optics.OpticsModel(telescope="gaussian", kernel_wing_fraction=0.0)
    wave = np.array([2.0])
    strip = model.strip_profiles(wave, U, sigma=1.0, xpos=0.2)
    s = np.hypot(model.telescope_fwhm(2.0) / 2.3548, 1.0)
    half = 0.1 / model.pixel_scale
    x0 = 0.2 * 0.2 / model.pixel_scale
    fx = ndtr((half - x0) / s) - ndtr((-half - x0) / s)
    np.testing.assert_allclose(strip.sum() * 0.05, fx, rtol=1e-6)
    assert model.telescope_fwhm(1.0) == pytest.approx(0.32, abs=0.01)


def test_kernel_sums_to_one_and_has_wings():
    model = optics.DEFAULT_OPTICS
    d = np.arange(-40, 41) + 0.3
    k = model.kernel_pixel(d)
    assert k.sum() == pytest.approx(1.0, abs=1e-12)
    assert k[np.abs(d) > 2.5].sum() > 0.009  # the wide component (Gaussian core: 1e-7)


@pytest.mark.parametrize("ypos", [-0.45, -0.3, 0.0, 0.2, 0.49])
@pytest.mark.parametrize("sigma", [0.0, 1.0])
def test_detector_flux_is_throughput_anywhere_in_a_shutter(ypos, sigma):
    """Summed over rows, the detector image of a source is exactly its throughput T."""
    model = optics.DEFAULT_OPTICS
    ny = 80
    z, edges = optics.fine_grid(ny, step=0.05, pad=1.0)
    height = instrument.SHUTTER_HEIGHT / model.pixel_scale
    pitch = instrument.SHUTTER_PITCH / model.pixel_scale
    centre = 40.0 + 0.3
    shutters = centre + pitch * np.array([-1, 0, 1])
    iv = np.stack([shutters - height / 2, shutters + height / 2], axis=-1)[None]
    waves = np.array([0.8, 2.0, 4.5])
    trans = optics.aperture_transmission(edges, np.repeat(iv, waves.size, axis=0))
    strips = model.strip_profiles(waves, U, sigma=sigma)
    src = np.full(waves.size, centre + ypos * height)
    light = optics.sample_strips(strips, U, waves, waves, z, src)
    throughput = (light * trans).sum(axis=1) * 0.05
    det = optics.detector_profiles(model, light, trans, z, ny)
    np.testing.assert_allclose(det.sum(axis=1), throughput, rtol=1e-3)
    # the bars cost the source at the shutter edge more than at its centre
    xfrac = strips.sum(axis=1) * 0.05
    assert np.all(throughput <= xfrac + 1e-9)


def test_illumination_is_the_bar_shadow():
    model = optics.DEFAULT_OPTICS
    ny = 40
    z, edges = optics.fine_grid(ny, step=0.05, pad=1.0)
    height = instrument.SHUTTER_HEIGHT / model.pixel_scale
    pitch = instrument.SHUTTER_PITCH / model.pixel_scale
    shutters = 20.0 + pitch * np.array([-1, 0, 1])
    iv = np.stack([shutters - height / 2, shutters + height / 2], axis=-1)[None]
    ill = optics.illumination(model, optics.aperture_transmission(edges, iv), z, ny)[0]
    assert ill[20] == pytest.approx(0.99, abs=0.01)  # centre of the middle shutter
    bar_rows = np.round(20 + pitch * np.array([-0.5, 0.5])).astype(int)
    assert np.all((ill[bar_rows] > 0.35) & (ill[bar_rows] < 0.8))
    assert ill[0] < 1e-3 and ill[-1] < 1e-3  # far outside the slitlet
    # a wide opening is 1 in the middle
    wide = optics.aperture_transmission(edges, np.array([[[0.0, 39.0]]]))
    assert optics.illumination(model, wide, z, ny)[0, 20] == pytest.approx(1.0, abs=1e-6)


def test_fixed_slit_point_source_profile_matches_the_measured_one():
    """Encircled fractions of a point source in S200A1 (the model's calibration).

    Measured on the standard star P330E (msaexp's published empirical PSF): 0.93-0.95 of
    the light within +-1 row of a centred source and 0.96-0.98 within +-2 rows over
    0.7-5 um.
    """
    model = optics.DEFAULT_OPTICS
    ny = 61
    z, edges = optics.fine_grid(ny, step=0.05, pad=1.0)
    waves = np.array([1.0, 2.5, 4.5])
    length = 3.2 / model.pixel_scale
    iv = np.array([[[30 - length / 2, 30 + length / 2]]] * waves.size)
    trans = optics.aperture_transmission(edges, iv)
    light = optics.sample_strips(
        model.strip_profiles(waves, U), U, waves, waves, z, np.full(3, 30.0)
    )
    det = optics.detector_profiles(model, light, trans, z, ny)
    det /= det.sum(axis=1, keepdims=True)
    rows = np.arange(ny) - 30
    within1 = det[:, np.abs(rows) <= 1].sum(axis=1)
    within2 = det[:, np.abs(rows) <= 2].sum(axis=1)
    assert np.all((within1 > 0.89) & (within1 < 0.97))
    assert np.all((within2 > 0.96) & (within2 < 0.99))


def test_bad_parameters():
    with pytest.raises(ConfigurationError, match="telescope"):
        optics.OpticsModel(telescope="hubble")
    with pytest.raises(ConfigurationError, match="kernel_sigma"):
        optics.OpticsModel(kernel_sigma=0.0)
    with pytest.raises(ConfigurationError, match="sigma"):
        optics.DEFAULT_OPTICS.strip_profiles([1.0], U, sigma=-1.0)
