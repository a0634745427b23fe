"""Tests of slitcombine.io.tables and io.table_readers: lookup and reading of the tables."""

from __future__ import annotations

import os

import numpy as np
import pytest
import yaml

from slitcombine.errors import CalibrationFileError
from slitcombine.io import table_readers as readers
from slitcombine.io import tables


# ---------------------------------------------------------------- calibration directories
def test_calibration_dirs_from_environment(tmp_path, monkeypatch):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (b / "x.yaml").write_text("coeffs: [1]\n")
    monkeypatch.setenv(tables.CALIB_DIR_ENV, f"{a}{os.pathsep}{b}")
    assert tables.calibration_dirs() == [a, b]
    assert tables.find_calibration_file("x.yaml") == b / "x.yaml"
    assert tables.find_calibration_file("nothing.yaml") is None
    monkeypatch.delenv(tables.CALIB_DIR_ENV)
    assert tables.calibration_dirs() == []
    assert tables.find_calibration_file("x.yaml") is None


def test_bar_table_name_clamps_num_shutters():
    assert tables.bar_coeffs_filename("PRISM", 1) == ("prism_1_bar_coeffs_wave.yaml", "auto")
    assert tables.bar_coeffs_filename("PRISM", 3, "slit") == ("prism_3_bar_coeffs.yaml", "auto")
    # msaexp's bug 13: more than 3 shutters asked for a table that does not exist
    assert tables.bar_coeffs_filename("PRISM", 5) == ("prism_3_bar_coeffs_wave.yaml", True)
    assert tables.bar_coeffs_filename("PRISM", 0) == ("prism_3_bar_coeffs_wave.yaml", False)


def test_background_spectra_are_found_per_exposure(tmp_path, monkeypatch):
    monkeypatch.delenv(tables.CALIB_DIR_ENV, raising=False)
    files = [
        tmp_path / "data" / f"jw01345062001_03101_0000{i}_nrs2_phot.138.1345_933.fits"
        for i in (1, 2)
    ]
    assert tables.background_file_root(files[0]) == "jw01345062001_03101_00001_nrs2"
    assert tables.background_file_root("short.fits") == "short"
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "jw01345062001_03101_00001_nrs2_gbkg.fits").write_bytes(b"")
    found, missing = tables.find_background_spectra(files)
    assert found == [tmp_path / "data" / "jw01345062001_03101_00001_nrs2_gbkg.fits"]
    assert missing == ["jw01345062001_03101_00002_nrs2_gbkg.fits"]
    # then the calibration directories; an explicit path is the only place looked at
    calib = tmp_path / "calib"
    calib.mkdir()
    (calib / "jw01345062001_03101_00002_nrs2_gbkg.fits").write_bytes(b"")
    monkeypatch.setenv(tables.CALIB_DIR_ENV, str(calib))
    found, missing = tables.find_background_spectra(files)
    assert [p.parent for p in found] == [tmp_path / "data", calib] and not missing
    found, missing = tables.find_background_spectra(files, path=str(calib))
    assert found == [calib / "jw01345062001_03101_00002_nrs2_gbkg.fits"] and len(missing) == 1


# ---------------------------------------------------------------- readers
def test_bad_bar_tables(tmp_path, msaexp_calib_dir):
    with pytest.raises(CalibrationFileError, match="nothere.yaml"):
        readers.read_bar_coeffs(tmp_path / "nothere.yaml")
    bad = tmp_path / "prism_3_bar_coeffs_wave.yaml"
    bad.write_text("coeffs: [[1, 2], [3, 4], [5, 6], [7, 8]]\nminmax: [-1, 1]\nwavelengths: [1]\n")
    with pytest.raises(CalibrationFileError, match="wavelengths"):
        readers.read_bar_coeffs(bad)
    bad.write_text("coeffs: {a: 1\n")
    with pytest.raises(CalibrationFileError, match="YAML"):
        readers.read_bar_coeffs(bad)
    bad.write_text("minmax: [-1, 1]\n")
    with pytest.raises(CalibrationFileError, match="'coeffs'"):
        readers.read_bar_coeffs(bad)
    # a PRISM table for a grating group
    with pytest.raises(CalibrationFileError, match="grating PRISM.*G395M"):
        readers.read_bar_coeffs(msaexp_calib_dir / "prism_3_bar_coeffs_wave.yaml", "G395M")


def test_bad_renormalization_table(tmp_path):
    p = tmp_path / "prism_slit_renormalize.yaml"
    p.write_text(
        yaml.safe_dump(
            {
                "coeffs": np.ones((31, 3, 3)).tolist(),
                "df": 31,
                "reference_wavelengths": np.linspace(1, 5, 10).tolist(),
            }
        )
    )
    with pytest.raises(CalibrationFileError, match=r"prism_slit_renormalize.yaml.*\(df, 4"):
        readers.read_renormalization(p)
    p.write_text(
        yaml.safe_dump(
            {
                "coeffs": np.ones((31, 4, 3)).tolist(),
                "df": 30,
                "reference_wavelengths": np.linspace(1, 5, 10).tolist(),
            }
        )
    )
    with pytest.raises(CalibrationFileError, match="df=30"):
        readers.read_renormalization(p)
    g = tmp_path / "g395m_slit_renormalize.yaml"
    g.write_text(
        yaml.safe_dump(
            {
                "coeffs": np.ones((31, 4, 3)).tolist(),
                "reference_wavelengths": np.linspace(1, 5, 10).tolist(),
            }
        )
    )
    with pytest.raises(CalibrationFileError, match="G395M.*PRISM"):
        readers.read_renormalization(g, "PRISM")


def test_grating_declared_by_a_table():
    assert readers.declared_grating("prism_3_bar_coeffs.yaml") == "prism"
    assert readers.declared_grating("sky.csv") is None
    assert readers.declared_grating("x.yaml", {"grating": "G395M"}) == "g395m"
    readers.check_grating("prism_x.yaml", "PRISM")
    readers.check_grating("prism_x.yaml", None)
    with pytest.raises(CalibrationFileError, match="grating PRISM, but the data are G140M"):
        readers.check_grating("prism_x.yaml", "G140M")


def test_bad_pixel_map_in_msaexp_yaml(tmp_path):
    p = tmp_path / "msaexp_badpix_nrs1.yaml"
    p.write_text(yaml.safe_dump({"shape": [4, 5], "pixel_index": [0, 7, 19]}))
    bad = readers.read_bad_pixel_map(p, shape=(4, 5))
    assert bad.shape == (4, 5) and bad.sum() == 3 and bad[1, 2] and bad[3, 4]
    p.write_text(yaml.safe_dump({"shape": [4, 5], "pixel_index": [20]}))
    with pytest.raises(CalibrationFileError, match="out of range"):
        readers.read_bad_pixel_map(p, shape=(4, 5))
    with pytest.raises(CalibrationFileError, match="shape"):
        readers.read_bad_pixel_map(p, shape=(2048, 2048))
    with pytest.raises(CalibrationFileError, match="not found"):
        readers.read_bad_pixel_map(tmp_path / "badpix_nrs1.fits")
