"""Tests of slitcombine.core.fluxcal (renormalisation, s-flat, sensitivity) and their steps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from bspline_reference import reference_basis
from slitcombine import SlitGroup
from slitcombine.core import fluxcal
from slitcombine.core.masks import Reject
from slitcombine.errors import CalibrationFileError
from slitcombine.io import table_readers as readers
from slitcombine.io import tables


def test_renormalization_formula(msaexp_calib_dir):
    tab = readers.read_renormalization(msaexp_calib_dir / "prism_slit_renormalize.yaml", "PRISM")
    assert tab.coeffs.shape == (31, 4, 3)
    wave = np.array([0.5, 0.58, 1.0, 2.0, 3.3, 5.3, 5.4])
    got = fluxcal.normalization_correction(tab, wave, 2, 295.0, 33.0)
    ref = tab.reference_wavelengths
    u = np.interp(wave[1:-1], ref, np.arange(ref.size)) / (ref.size - 1)
    c = tab.coeffs[:, 1, 0] + 295.0 * tab.coeffs[:, 1, 1] + 33.0 * tab.coeffs[:, 1, 2]
    expect = 1.0 / (reference_basis(u, 31, 0.0, 1.0) @ c)
    assert got[1:-1] == pytest.approx(expect, rel=1e-10)
    assert np.isnan(got[[0, -1]]).all()  # outside the reference wavelengths
    assert np.nanmedian(got) == pytest.approx(1.0, abs=0.1)
    with pytest.raises(CalibrationFileError, match="quadrant"):
        fluxcal.normalization_correction(tab, wave, 5, 295.0, 33.0)
    with pytest.raises(CalibrationFileError, match="missing"):
        fluxcal.normalization_correction(tab, wave, None, 295.0, 33.0)


def test_sflat_and_sensitivity_corrections():
    flat_table = fluxcal.SflatTable(
        Path("sflat_prism_q1.fits"),
        wave=np.array([1.0, 2.0, 3.0]),
        coeffs=np.array([np.full(25, 0.8), np.full(25, 1.0), np.full(25, -1.0)]),
        dfx=5,
        dfy=5,
        xrange=(0.0, 365.0),
        yrange=(0.0, 171.0),
    )
    flat = fluxcal.sflat_correction(flat_table, np.array([0.5, 1.0, 1.5, 2.0, 2.9, 3.5]), 100, 50)
    # partition of unity: constant coefficients give that constant; linear in wavelength
    assert flat[1:4] == pytest.approx([0.8, 0.9, 1.0])
    assert np.isnan(flat[[0, 4, 5]]).all()  # outside the table, or not positive
    wave = np.array([[0.5, 1.0, 2.0], [3.0, 4.0, 6.0]])
    sens = fluxcal.sensitivity_correction(wave, np.array([1.0, 5.0]), np.array([0.01, 1.0]), 0.1)
    assert sens[0, 2] == pytest.approx(0.01 + 0.99 / 4) and sens[1, 1] == pytest.approx(0.7525)
    assert np.isnan(sens[0, :2]).all() and np.isnan(sens[1, 2])  # below threshold, outside


def test_extended_calibration_accepts_msaexp_options(ceers_files, caplog):
    """msaexp's options of the sensitivity step are accepted, recorded and said once."""
    g = SlitGroup(
        ceers_files,
        "ext",
        undo_barshadow=False,
        extended_calibration_kwargs={"threshold": 0.01, "quadrant_correction": True},
    )
    assert g.meta["ignored_kwargs"]["extended_calibration"] == ["quadrant_correction"]
    assert g.meta["steps"]["extended_calibration"]["status"] == "SKIPPED"
    with pytest.raises(TypeError, match="not_an_option"):
        g.apply_extended_calibration(not_an_option=1)


def test_sflat_and_extra_dq_from_user_files(ceers_files, tmp_path, monkeypatch):
    monkeypatch.setenv(tables.CALIB_DIR_ENV, str(tmp_path))
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
    monkeypatch.setenv(tables.CALIB_DIR_ENV, str(tmp_path))
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
