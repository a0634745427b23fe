"""Tests of :mod:`slitcombine.io.prf_tables` (msaexp's PSF lookup tables as lookup_prf)."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from scipy.special import ndtr

from slitcombine.errors import InputFileError
from slitcombine.io.prf_tables import TablePRF, read_psf_lookup

WAVE = np.linspace(0.6, 5.3, 12)
SIGMA = np.array([0.0, 0.25, 0.5, 1.0, 2.0])
YSLIT = np.arange(-12, 12, 1 / 32) + 1 / 64
XOFF = np.linspace(0, 0.5, 6)


def _width(wave, sigma):
    return np.hypot(0.45 + 0.08 * wave, sigma)


def _write_table(path, loss=True, drop=None):
    """A table of Gaussian profiles in msaexp's layout (FITS axis order included)."""
    s = _width(WAVE[None, :, None], SIGMA[None, None, :])
    prof = np.exp(-0.5 * (YSLIT[:, None, None] / s) ** 2) / (np.sqrt(2 * np.pi) * s)
    hdus = [fits.PrimaryHDU()]
    for name, data in (("PROF", prof), ("YSLIT", YSLIT), ("WAVE", WAVE), ("SIGMA", SIGMA)):
        if name != drop:
            hdus.append(fits.ImageHDU(data, name=name))
    if loss:
        frac = (0.9 - 0.5 * XOFF[None, None, :] ** 2) * np.ones((WAVE.size, SIGMA.size, 1))
        hdus += [fits.ImageHDU(XOFF, name="LOSS_XOFFSET"), fits.ImageHDU(frac, name="LOSS")]
    fits.HDUList(hdus).writeto(path)
    return path


def test_pixel_profile_integrates_the_table(tmp_path):
    prf = read_psf_lookup(_write_table(tmp_path / "t.fits"))
    y = np.arange(-6, 7) + 0.3
    for wave, sigma in ((1.0, 0.0), (3.3, 0.5), (4.8, 1.0)):
        s = _width(wave, sigma)
        expect = ndtr((y + 0.5) / s) - ndtr((y - 0.5) / s)
        got = prf.pixel_profile(y, wave, sigma)
        # the table's node at this wavelength/width or linear between nodes
        np.testing.assert_allclose(got, expect, atol=3e-3)
    assert prf.pixel_profile(np.arange(-11, 12), 2.0, 0.25).sum() == pytest.approx(1, abs=1e-3)
    assert np.isnan(prf.pixel_profile(np.nan, 2.0, 0.0))


def test_slit_throughput_from_the_loss_table(tmp_path):
    prf = read_psf_lookup(_write_table(tmp_path / "t.fits"))
    np.testing.assert_allclose(prf.slit_throughput(2.0, 0.0, 0.0), 0.9)
    np.testing.assert_allclose(prf.slit_throughput(2.0, 0.0, -0.3), 0.9 - 0.5 * 0.09)
    # with an open height: the part of the profile inside it
    height = prf.slit_throughput(3.0, 1.0, 0.0, ypos=0.0, slit_height=0.46)
    s = _width(3.0, 1.0)
    half = 0.23 / 0.1035
    assert height == pytest.approx(0.9 * (ndtr(half / s) - ndtr(-half / s)), rel=3e-3)
    assert read_psf_lookup(_write_table(tmp_path / "n.fits", loss=False)).slit_throughput(
        2.0, 0.0, 0.0
    ) == pytest.approx(1.0)


def test_bad_tables(tmp_path):
    with pytest.raises(InputFileError, match="missing"):
        read_psf_lookup(_write_table(tmp_path / "a.fits", drop="SIGMA"))
    bad = tmp_path / "b.fits"
    bad.write_text("not a fits file")
    with pytest.raises(InputFileError, match="cannot read"):
        read_psf_lookup(bad)
    with pytest.raises(InputFileError, match="PROF has shape"):
        TablePRF(np.zeros((3, 2, 2)), YSLIT, WAVE, SIGMA)


def test_table_as_lookup_prf_of_a_combination(tmp_path):
    """A Gaussian-PSF simulation extracted with a table of its own profiles: the fit and
    the extraction use the table (no bar cut in a table: a centred source)."""
    from slitcombine import combine
    from slitcombine.testing.simulate import simulate_observation

    sim = simulate_observation(
        tmp_path / "sim",
        grating="PRISM",
        snr=30,
        seed=2,
        n_crs=0,
        optics_model="gaussian",
        intrinsic_sigma=0.0,
    )
    prf = read_psf_lookup(_write_table(tmp_path / "t.fits", loss=False))
    result = combine(sim.files, name="table", lookup_prf=prf, pathloss_source="pipeline")
    fit = result.group.fit[result.group.calc_reference_exposure]
    assert "TablePRF" in fit["psf_model"]
    spec = result.spec
    ok = np.asarray(spec["valid"])
    t = np.interp(spec["wave_eff"].value[ok], sim.truth["wave"], sim.truth["flux"])
    flux = spec["flux"].value[ok]
    bright = t > 0.2 * np.median(t)
    ratio = np.median(flux[bright] / t[bright])
    # the table is not the simulator's PSF (its width law is made up here): a few %
    assert ratio == pytest.approx(1.0, abs=0.06)
