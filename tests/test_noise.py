"""Tests of :mod:`slitcombine.core.noise` (the measured noise scale)."""

from __future__ import annotations

import numpy as np
import pytest

from slitcombine.core import noise


def test_model_residuals_are_unit_normal_after_the_amplitude_fit():
    """Leverage-corrected residuals of a per-group amplitude fit have unit variance."""
    rng = np.random.default_rng(1)
    ngroup, nrow = 400, 8
    key = np.repeat(np.arange(ngroup), nrow)
    model = np.tile(np.exp(-0.5 * (np.arange(nrow) - 3.5) ** 2), ngroup)
    var = rng.uniform(0.5, 2.0, key.size)
    amp = rng.uniform(0, 10, ngroup)[key]
    flux = amp * model + rng.normal(0, np.sqrt(var))
    z, fitted, a = noise.model_residuals(flux, var, model, key)
    assert np.std(z) == pytest.approx(1.0, abs=0.02)
    # without the leverage correction the spread would be sqrt(1 - 1/nrow) ~ 0.94
    raw = (flux - fitted) / np.sqrt(var)
    assert np.std(raw) < 0.96
    # the fitted amplitudes are the groups' amplitudes, within their noise (median 0.57)
    assert np.median(np.abs(a - amp)) < 0.7
    # groups with too few rows give NaN
    z2, _, _ = noise.model_residuals(flux[:2], var[:2], model[:2], key[:2])
    assert np.all(np.isnan(z2))


def test_noise_and_model_error_separates_the_two():
    """Residuals with noise s and a model error eps * light: both are recovered, and s
    is not inflated by the bright rows (the faint-only estimate would need many rows)."""
    rng = np.random.default_rng(2)
    light = np.concatenate([rng.uniform(0, 1, 3000), rng.uniform(1, 60, 20000)])
    s_true, eps_true = 1.25, 0.05
    z = rng.normal(0, np.sqrt(s_true**2 + (eps_true * light) ** 2))
    fit = noise.noise_and_model_error(z, light)
    assert fit["scale"] == pytest.approx(s_true, abs=3 * fit["scale_err"])
    assert fit["model_error"] == pytest.approx(eps_true, rel=0.15)
    # a plain spread of all rows would say ~2.2
    assert np.std(z) > 1.8
    # only bright rows: extrapolated to no light
    bright = light > 2
    fit_b = noise.noise_and_model_error(z[bright], light[bright])
    assert fit_b["scale"] == pytest.approx(s_true, abs=0.1)
    # nothing usable
    assert np.isnan(noise.noise_and_model_error(z[:10], light[:10])["scale"])


def test_band_scales_follow_a_wavelength_dependence():
    rng = np.random.default_rng(3)
    n = 24000
    wave = rng.uniform(1, 5, n)
    scale = 1.0 + 0.1 * (wave - 1)  # 1.0 at 1 um to 1.4 at 5 um
    z = rng.normal(0, scale)
    light = rng.uniform(0, 0.5, n)
    tab = noise.band_scales(z, wave, light, min_pixels=3000)
    assert len(tab) == 8
    expect = 1.0 + 0.1 * (np.asarray(tab["wave"]) - 1)
    np.testing.assert_allclose(tab["scale"], expect, atol=4 * np.max(tab["scale_err"]))
    ns = noise.NoiseScale(tab, noise.noise_and_model_error(z, light), {})
    assert ns.measured
    assert ns.scale(3.0) == pytest.approx(1.2, abs=0.03)
    assert ns.error_factor(0.5) >= 1.0  # flat beyond the bands, never below 1
    summary = ns.as_dict()
    assert len(summary["bands"]) == 8 and summary["scale"] == pytest.approx(1.2, abs=0.05)
    assert len(noise.band_scales(z[:10], wave[:10], light[:10])) == 0


def test_scale_error_counts_pixels_not_rows():
    """Rows of one pixel (the differences of several nods) are not independent."""
    rng = np.random.default_rng(4)
    z = rng.normal(size=3000)
    light = np.zeros(3000)
    one = noise.noise_and_model_error(z, light)
    shared = noise.noise_and_model_error(z, light, pixel=np.repeat(np.arange(1000), 3))
    assert shared["scale_err"] == pytest.approx(one["scale_err"] * np.sqrt(3), rel=0.02)
