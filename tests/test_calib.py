"""Calibration tables: ``slitcombine calib`` fetch/status/path, lookups, warnings, provenance.

Offline: the archives are built here, in msaexp's layout (``msaexp-X.Y.Z/msaexp/data/...``
for the source archive, ``msaexp/data/...`` for the wheel), from a few real tables of
``../shared/data`` and small made-up ones; the pip test points pip at a closed local
port.  No test touches the network.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from astropy.io import fits

from slitcombine import SlitGroup
from slitcombine.cli import main
from slitcombine.io import calib, calib_archive, tables
from slitcombine.io.provenance import header_cards

VERSION = "9.9.9"
VISIT = "jw01345062001"


# ---------------------------------------------------------------- archives
def _bad_pixel_yaml(path, rows_cols, shape=(2048, 2048)):
    index = [int(r * shape[1] + c) for r, c in rows_cols]
    path.write_text(
        yaml.safe_dump(
            {"shape": list(shape), "pixel_index": index, "pixel_value": [1] * len(index)}
        )
    )


def _sensitivity_fits(path):
    wave = np.linspace(0.5, 5.5, 51)
    cols = [
        fits.Column("wavelength", "D", array=wave),
        fits.Column("sensitivity", "D", array=np.ones_like(wave)),
    ]
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(cols)]).writeto(path)


def _psf_fits(path):
    hdus = [fits.PrimaryHDU()]
    for name, data in (
        ("PROF", np.ones((8, 3, 2))),
        ("YSLIT", np.linspace(-4, 4, 8)),
        ("WAVE", np.array([1.0, 3.0, 5.0])),
        ("SIGMA", np.array([0.0, 1.0])),
    ):
        hdus.append(fits.ImageHDU(data, name=name))
    fits.HDUList(hdus).writeto(path)


def _ceers_bad_pixel(ceers_files):
    """A detector pixel (row, column; 0-based) inside the CEERS cutout, valid in exposure 0."""
    with fits.open(ceers_files[0]) as hdul:
        x0, y0 = hdul["SCI"].header["SLTSTRT1"] - 1, hdul["SCI"].header["SLTSTRT2"] - 1
        dq = hdul["DQ"].data
    r, c = 12, 170  # mid-slit, mid-spectrum
    assert dq[r, c] == 0
    return y0 + r, x0 + c


@pytest.fixture(scope="module")
def msaexp_tree(tmp_path_factory, msaexp_calib_dir, ceers_dir, ceers_files):
    """``msaexp-9.9.9/`` in msaexp's source layout: real bar/renormalisation/sky tables,
    made-up bad pixels (one inside the CEERS cutout), sensitivity and PSF tables, and
    files that are not tables."""
    root = tmp_path_factory.mktemp("src") / f"msaexp-{VERSION}"
    data = root / "msaexp" / "data"
    (data / "msa_sky").mkdir(parents=True)
    (data / "extended_sensitivity").mkdir()
    (data / "psf").mkdir()
    (root / "PKG-INFO").write_text(f"Metadata-Version: 2.1\nName: msaexp\nVersion: {VERSION}\n")
    (root / "LICENSE").write_text("MIT License\n\nCopyright (c) msaexp developers\n")
    (root / "msaexp" / "__init__.py").write_text("")
    (root / "msaexp" / "slit_combine.py").write_text("# code, not a table\n")
    for f in msaexp_calib_dir.glob("*.yaml"):
        shutil.copy(f, data / f.name)
    shutil.copy(ceers_dir / f"{VISIT}_sky.csv", data / "msa_sky" / f"{VISIT}_sky.csv")
    (data / "msa_sky" / "nirspec_prism_background.png").write_bytes(b"\x89PNG not a table")
    _bad_pixel_yaml(data / "msaexp_badpix_nrs1.yaml", [(100, 100)])
    _bad_pixel_yaml(data / "msaexp_badpix_nrs2.yaml", [_ceers_bad_pixel(ceers_files)])
    _sensitivity_fits(data / "extended_sensitivity" / "msaexp_sensitivity_prism_clear_001.fits")
    _psf_fits(data / "psf" / "nirspec_merged_s200a1_exp_psf_lookup_001.fits")
    (data / "linelist.ecsv").write_text("# not a table of a step\n")
    return root


def _tar_gz(tree, path):
    with tarfile.open(path, "w:gz") as tar:
        tar.add(tree, arcname=tree.name)
    return path


@pytest.fixture(scope="module")
def archive(msaexp_tree, tmp_path_factory):
    """``msaexp-9.9.9.tar.gz`` (source archive layout)."""
    return _tar_gz(msaexp_tree, tmp_path_factory.mktemp("dist") / f"msaexp-{VERSION}.tar.gz")


@pytest.fixture(scope="module")
def wheel(msaexp_tree, tmp_path_factory):
    """``msaexp-9.9.9-py3-none-any.whl`` (wheel layout: no version folder, dist-info)."""
    path = tmp_path_factory.mktemp("dist") / f"msaexp-{VERSION}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for f in sorted((msaexp_tree / "msaexp").rglob("*")):
            if f.is_file():
                z.write(f, f.relative_to(msaexp_tree).as_posix())
        info = f"msaexp-{VERSION}.dist-info"
        z.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: msaexp\nVersion: {VERSION}\n")
        z.writestr(f"{info}/LICENSE", "MIT License\n")
    return path


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty cache folder, no ``$SLITCOMBINE_CALIB_DIR``."""
    folder = tmp_path / "cache"
    monkeypatch.setenv(calib.CACHE_ENV, str(folder))
    monkeypatch.delenv(tables.CALIB_DIR_ENV, raising=False)
    return folder


def _sha(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _snapshot(folder):
    """Relative path -> (size, sha256) of every file under ``folder``."""
    return {
        p.relative_to(folder).as_posix(): (p.stat().st_size, _sha(p))
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


# ---------------------------------------------------------------- fetch
def test_fetch_from_archive_layout_manifest_and_idempotent(cache, archive, msaexp_tree, capsys):
    assert main(["calib", "path"]) == 1  # nothing fetched yet
    capsys.readouterr()
    assert main(["calib", "fetch", "--from-archive", str(archive)]) == 0
    out = capsys.readouterr().out
    folder = cache / "calib"
    assert f"msaexp {VERSION} tables fetched" in out and str(folder) in out
    data = msaexp_tree / "msaexp" / "data"
    expected = {
        f"msa_sky/{VISIT}_sky.csv",
        "prism_slit_renormalize.yaml",
        *(f"prism_{n}_bar_coeffs{s}.yaml" for n in (1, 2, 3) for s in ("", "_wave")),
        "msaexp_badpix_nrs1.yaml",
        "msaexp_badpix_nrs2.yaml",
        "extended_sensitivity/msaexp_sensitivity_prism_clear_001.fits",
        "psf/nirspec_merged_s200a1_exp_psf_lookup_001.fits",
    }
    manifest = json.loads((folder / "manifest.json").read_text())
    assert set(manifest["files"]) == expected
    # only the tables, with their relative layout and their bytes
    files = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    assert files == expected | {"manifest.json", "LICENSE-msaexp"}
    for rel, entry in manifest["files"].items():
        assert entry["sha256"] == _sha(data / rel) == _sha(folder / rel)
        assert entry["size"] == (data / rel).stat().st_size
    assert manifest["version"] == VERSION and manifest["source"] == "msaexp"
    assert manifest["archive"]["sha256"] == _sha(archive)
    assert manifest["files"][f"msa_sky/{VISIT}_sky.csv"]["kind"] == "global_sky"
    # idempotent: nothing is written the second time
    before = (folder / "manifest.json").stat().st_mtime_ns, folder.stat().st_ino
    assert main(["calib", "fetch", "--from-archive", str(archive)]) == 0
    assert "already there (intact)" in capsys.readouterr().out
    assert ((folder / "manifest.json").stat().st_mtime_ns, folder.stat().st_ino) == before
    # a damaged set is fetched again
    (folder / "prism_slit_renormalize.yaml").write_text("coeffs: []\n")
    assert main(["calib", "fetch", "--from-archive", str(archive)]) == 0
    assert "tables fetched" in capsys.readouterr().out
    assert calib.verify_manifest(folder) == []
    assert main(["calib", "path"]) == 0
    assert capsys.readouterr().out.strip() == str(folder)
    assert not list(cache.glob(".calib*"))  # no temporary folder left


def test_fetch_from_wheel(cache, wheel, archive):
    result = calib.fetch(archive=wheel)
    assert result.changed and result.manifest["version"] == VERSION
    assert result.counts == {
        "bad_pixels": 2,
        "bar_coeffs": 6,
        "global_sky": 1,
        "psf_lookup": 1,
        "renormalization": 1,
        "sensitivity": 1,
    }
    # same tables as from the source archive
    from_wheel = {k: v["sha256"] for k, v in result.manifest["files"].items()}
    other = calib.fetch(archive=archive, cache=cache.parent / "other")
    assert from_wheel == {k: v["sha256"] for k, v in other.manifest["files"].items()}
    with pytest.raises(calib.CalibrationFetchError, match="is msaexp 9.9.9, not 1.0"):
        calib.fetch(version="1.0", archive=wheel, cache=cache.parent / "third")


def _one_error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
    return err[0]


def test_corrupt_partial_archive_exit_2_cache_untouched(cache, archive, tmp_path, capsys):
    assert main(["calib", "fetch", "--from-archive", str(archive)]) == 0
    folder = cache / "calib"
    before = _snapshot(folder)
    capsys.readouterr()
    blob = archive.read_bytes()
    partial = tmp_path / f"msaexp-{VERSION}.tar.gz"
    partial.write_bytes(blob[: len(blob) // 2])  # an interrupted download
    assert main(["calib", "fetch", "--force", "--from-archive", str(partial)]) == 2
    assert "corrupt or partial archive" in _one_error_line(capsys)
    garbled = tmp_path / "garbled" / f"msaexp-{VERSION}.tar.gz"
    garbled.parent.mkdir()
    garbled.write_bytes(blob[:100] + bytes(200) + blob[300:])
    assert main(["calib", "fetch", "--force", "--from-archive", str(garbled)]) == 2
    assert "corrupt" in _one_error_line(capsys)
    assert _snapshot(folder) == before
    assert sorted(p.name for p in cache.iterdir()) == ["calib"]


def test_archive_without_tables_exit_2(cache, tmp_path, capsys):
    tree = tmp_path / "msaexp-1.2.3"
    (tree / "msaexp" / "data").mkdir(parents=True)
    (tree / "PKG-INFO").write_text("Name: msaexp\nVersion: 1.2.3\n")
    (tree / "msaexp" / "data" / "prism_slit_renormalize.yaml").write_text("df: 3\ncoeffs: []\n")
    path = _tar_gz(tree, tmp_path / "msaexp-1.2.3.tar.gz")
    assert main(["calib", "fetch", "--from-archive", str(path)]) == 2
    line = _one_error_line(capsys)
    assert "no global_sky, bar_coeffs, bad_pixels, sensitivity table(s)" in line
    assert calib.fetched_dir() is None and not (cache / "calib").exists()
    assert not list(cache.glob(".calib*"))
    # not msaexp at all
    other = tmp_path / "other-1.0"
    other.mkdir()
    (other / "PKG-INFO").write_text("Name: other\nVersion: 1.0\n")
    assert main(["calib", "fetch", "--from-archive", str(_tar_gz(other, tmp_path / "o.tgz"))]) == 2
    assert "not an msaexp distribution" in _one_error_line(capsys)


def _read_only_cases(tmp_path):
    cases = []
    if hasattr(os, "geteuid") and os.geteuid() != 0:  # root writes anyway
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        cases.append(ro / "cache")
    probe = Path("/sys/slitcombine-cache-test")
    try:
        probe.mkdir()
    except OSError:
        cases.append(probe)  # a read-only file system
    else:
        probe.rmdir()
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    cases.append(blocker / "cache")  # a file where the folder should be
    return cases


def test_read_only_cache_exit_2(cache, archive, tmp_path, monkeypatch, capsys):
    for folder in _read_only_cases(tmp_path):
        monkeypatch.setenv(calib.CACHE_ENV, str(folder))
        assert main(["calib", "fetch", "--from-archive", str(archive)]) == 2
        line = _one_error_line(capsys)
        assert "cannot write the cache folder" in line and str(folder) in line
        assert calib.fetched_dir() is None
    # an existing, intact set in a folder that became read-only is still "fetched"
    monkeypatch.setenv(calib.CACHE_ENV, str(cache))
    assert main(["calib", "fetch", "--from-archive", str(archive)]) == 0
    if os.geteuid() != 0:
        cache.chmod(0o555)
        try:
            assert main(["calib", "fetch", "--from-archive", str(archive)]) == 0
            assert main(["calib", "fetch", "--force", "--from-archive", str(archive)]) == 2
        finally:
            cache.chmod(0o755)


def test_pip_that_cannot_reach_an_index(cache, monkeypatch, capsys):
    """Real pip, pointed at a closed local port (no network): one error, exit 2."""
    for key in list(os.environ):
        if key.startswith("PIP_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_TIMEOUT", "5")
    monkeypatch.setenv("PIP_DISABLE_PIP_VERSION_CHECK", "1")
    assert main(["calib", "fetch", "--msaexp-version", "0.9.19"]) == 2
    line = _one_error_line(capsys)
    assert "pip could not download msaexp==0.9.19" in line and "--from-archive" in line
    assert not cache.exists() or not any(cache.iterdir())


def test_pip_download_finds_the_archive(tmp_path, archive):
    """The archive pip leaves is the one unpacked (a stand-in pip copies it)."""
    fake_pip = [
        sys.executable,
        "-c",
        "import shutil, sys; shutil.copy(sys.argv[1], sys.argv[sys.argv.index('--dest') + 1])",
        str(archive),
    ]
    result = calib.fetch(version=VERSION, cache=tmp_path / "c", pip_command=fake_pip)
    assert result.changed and result.manifest["origin"].startswith("pip download msaexp==9.9.9")
    failing = [sys.executable, "-c", "import sys; sys.exit('ERROR: No matching distribution')"]
    with pytest.raises(calib.CalibrationFetchError, match="No matching distribution"):
        calib.fetch(version="0.0.1", cache=tmp_path / "d", pip_command=failing)


# ---------------------------------------------------------------- lookups
def test_lookup_alternatives_in_one_table(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    (b / "msa_sky").mkdir(parents=True)
    a.mkdir()
    (b / "msa_sky" / f"{VISIT}_sky.csv").write_text("wave,flux\n")
    (b / f"{VISIT}_sky.csv").write_text("wave,flux\n")
    (a / "extended_sensitivity").mkdir()
    (a / "extended_sensitivity" / "msaexp_sensitivity_g395m_f290lp_001.fits").write_text("")
    assert tables.calibration_table_names("global_sky", visit=VISIT) == [
        f"{VISIT}_sky.csv",
        f"msa_sky/{VISIT}_sky.csv",
    ]
    # slitcombine's flat name wins within a folder; folders are searched in order
    found = tables.find_calibration_table("global_sky", [a, b], visit=VISIT)
    assert found == b / f"{VISIT}_sky.csv"
    path = tables.find_calibration_table("sensitivity", [a, b], grating="G395M", filter="F290LP")
    assert path == a / "extended_sensitivity" / "msaexp_sensitivity_g395m_f290lp_001.fits"
    assert tables.calibration_kind_available("global_sky", [a, b])
    assert not tables.calibration_kind_available("global_sky", [a])
    assert not tables.calibration_kind_available("sensitivity", [a, b], grating="prism")
    assert tables.bar_coeffs_filename("PRISM", 5) == ("prism_3_bar_coeffs_wave.yaml", True)
    with pytest.raises(Exception, match="unknown calibration table kind"):
        tables.calibration_table_names("nothing")


def test_fetched_folder_searched_after_calib_dir(cache, archive, tmp_path, monkeypatch):
    calib.fetch(archive=archive)
    own = tmp_path / "mine"
    own.mkdir()
    monkeypatch.setenv(tables.CALIB_DIR_ENV, str(own))
    assert tables.calibration_dirs() == [own, cache / "calib"]
    assert tables.calibration_dirs(fetched=False) == [own]
    assert tables.find_calibration_table("renormalization", grating="PRISM") == (
        cache / "calib" / "prism_slit_renormalize.yaml"
    )
    (own / "prism_slit_renormalize.yaml").write_text("mine")
    assert tables.find_calibration_table("renormalization", grating="PRISM") == (
        own / "prism_slit_renormalize.yaml"
    )


# ---------------------------------------------------------------- status
def test_status_before_and_after_fetch(cache, archive, ceers_files, capsys):
    assert main(["calib", "status", ceers_files[0]]) == 0
    out = capsys.readouterr().out
    assert "none: $SLITCOMBINE_CALIB_DIR is not set" in out
    rows = {
        ln.split()[0]: ln.split()[1]
        for ln in out.splitlines()
        if ln.startswith("  ")
        and ln.split()[0] in ("global_sky", "normalization", "barshadow", "extra_dq")
    }
    assert rows == {"global_sky": "no", "normalization": "no", "barshadow": "own", "extra_dq": "no"}
    assert out.count("<- fix: slitcombine calib fetch") == 3
    calib.fetch(archive=archive)
    assert main(["calib", "status", ceers_files[0]]) == 0
    out = capsys.readouterr().out
    assert f"msaexp {VERSION} tables" in out and "<- fix" not in out
    assert f"msa_sky/{VISIT}_sky.csv" in out
    assert "prism_3_bar_coeffs_wave.yaml" in out and "msaexp_badpix_nrs2.yaml" in out
    assert "the pipeline flats are not extended-range" in out
    assert main(["calib", "status", "--grating", "prism"]) == 0
    out = capsys.readouterr().out
    assert "1 visit sky table(s) available" in out and "2 bad-pixel table(s)" in out


# ---------------------------------------------------------------- SlitGroup
def _missing_warnings(caplog):
    return [r for r in caplog.records if getattr(r, "missing_tables", None)]


def test_group_without_tables_warns_once(cache, ceers_files, caplog):
    with caplog.at_level(logging.INFO, logger="slitcombine"):
        g = SlitGroup(ceers_files, "none", undo_barshadow=False)
    (rec,) = _missing_warnings(caplog)
    assert rec.levelno == logging.WARNING and "slitcombine calib fetch" in rec.getMessage()
    steps = [t.split(":")[0] for t in g.meta["missing_tables"]]
    assert steps == ["global_sky", "normalization", "extra_dq"]
    assert "msaexp_badpix_nrs2.yaml" in rec.getMessage()
    assert f"msa_sky/{VISIT}_sky.csv" in rec.getMessage()
    for step in ("global_sky", "normalization", "extra_dq"):
        info = g.meta["steps"][step]
        assert info["status"] == "SKIPPED" and info["missing_table"] is True
    assert g.meta["sky_file"] == "N/A"
    assert calib.tables_provenance(g.meta)["summary"] == "none"


def test_group_uses_fetched_tables(cache, archive, ceers_files, caplog):
    calib.fetch(archive=archive)
    folder = cache / "calib"
    ref = SlitGroup(ceers_files, "ref", undo_barshadow=False, with_extra_dq=False)
    with caplog.at_level(logging.INFO, logger="slitcombine"):
        g = SlitGroup(ceers_files, "tables")
    assert not _missing_warnings(caplog) and "missing_tables" not in g.meta
    steps = g.meta["steps"]
    assert steps["global_sky"]["status"] == "COMPLETE"
    assert steps["global_sky"]["file"] == str(folder / "msa_sky" / f"{VISIT}_sky.csv")
    assert g.meta["sky_file"] == f"{VISIT}_sky.csv" and g.sky_arrays[0].size == 1207
    assert steps["normalization"]["status"] == "COMPLETE"
    # the renormalisation multiplies the data: ~0.98 for this slitlet
    assert 0.9 < steps["normalization"]["median"] < 1.05
    norm = g.normalization[0]
    ok = np.isfinite(norm)
    assert np.allclose(norm[ok], 1.0 / np.asarray(steps["normalization"]["median"]), rtol=0.2)
    assert steps["barshadow"]["file"] == str(folder / "prism_3_bar_coeffs_wave.yaml")
    assert g.meta["own_barshadow"] is True and g.meta["wrapped_barshadow"] is False
    # the made-up bad pixel inside the cutout is rejected in every exposure
    assert steps["extra_dq"]["status"] == "COMPLETE" and steps["extra_dq"]["rejected"] >= 1
    assert ref.mask.sum() - g.mask.sum() >= steps["extra_dq"]["rejected"]
    # provenance: the set, its version and each table's sha256
    prov = calib.tables_provenance(g.meta)
    assert prov["summary"] == f"msaexp {VERSION}" and prov["missing"] == []
    manifest = calib.read_manifest(folder)
    used = {t["file"]: t["sha256"] for t in prov["tables"]}
    assert set(used) == {
        f"msa_sky/{VISIT}_sky.csv",
        "prism_slit_renormalize.yaml",
        "prism_3_bar_coeffs_wave.yaml",
        "msaexp_badpix_nrs2.yaml",
    }
    assert all(manifest["files"][f]["sha256"] == sha for f, sha in used.items())
    assert prov["sets"][0]["archive_sha256"] == _sha(archive)
    cards = {k: v for k, v, _ in header_cards(_prov_stub(prov))}
    assert cards["CALTABS"] == f"msaexp {VERSION}" and cards["CALNTAB"] == 4


def _prov_stub(calibration):
    return {
        "versions": {"slitcombine": "x"},
        "date": "2000-01-01T00:00:00",
        "parameters": {},
        "group_meta": {},
        "inputs": [],
        "calibration": calibration,
    }


def test_msaexp_data_folder_works_as_is(cache, msaexp_tree, ceers_files, monkeypatch, caplog):
    """$SLITCOMBINE_CALIB_DIR at an msaexp ``data`` folder (sub-folders, msaexp's names)."""
    monkeypatch.setenv(tables.CALIB_DIR_ENV, str(msaexp_tree / "msaexp" / "data"))
    with caplog.at_level(logging.INFO, logger="slitcombine"):
        g = SlitGroup(ceers_files, "msaexp_data", undo_barshadow=False)
    assert not _missing_warnings(caplog)
    for step in ("global_sky", "normalization", "extra_dq"):
        assert g.meta["steps"][step]["status"] == "COMPLETE"
    assert calib.tables_provenance(g.meta)["summary"] == "$SLITCOMBINE_CALIB_DIR"


def test_set_without_this_visit_does_not_warn(
    cache, msaexp_tree, ceers_files, tmp_path, monkeypatch, caplog
):
    """A table set lacking one visit's sky (as msaexp's) is INFO, not a missing set."""
    data = tmp_path / "data"
    shutil.copytree(msaexp_tree / "msaexp" / "data", data)
    (data / "msa_sky" / f"{VISIT}_sky.csv").rename(data / "msa_sky" / "jw09999001001_sky.csv")
    monkeypatch.setenv(tables.CALIB_DIR_ENV, str(data))
    with caplog.at_level(logging.INFO, logger="slitcombine"):
        g = SlitGroup(ceers_files, "other_visit", undo_barshadow=False)
    info = g.meta["steps"]["global_sky"]
    assert info["status"] == "SKIPPED" and info["missing_table"] is False
    assert not _missing_warnings(caplog) and "missing_tables" not in g.meta
    assert "no global sky" in caplog.text


def test_batch_says_it_once_per_run(cache, ceers_files, tmp_path, caplog):
    """Each group's log has its warning; the run has one, whatever the number of groups."""
    from slitcombine.pipeline.batch import process_group
    from slitcombine.pipeline.config import Config
    from slitcombine.pipeline.report import warn_missing_tables

    config = Config.default().with_overrides(["batch.mode=prepare"])
    records = []
    for name in ("g1", "g2"):
        rec = process_group({"group": name, "members": ceers_files}, config, tmp_path)
        assert rec["status"] == "ok"
        steps = {t.split(":")[0] for t in rec["missing_tables"]}
        assert steps == {"global_sky", "normalization", "extra_dq"}
        log_text = (tmp_path / "logs" / f"{name}.log").read_text()
        warned = [ln for ln in log_text.splitlines() if " WARNING " in ln and "calib fetch" in ln]
        assert len(warned) == 1 and "msaexp_badpix_nrs2.yaml" in warned[0]
        records.append(rec)
    records.append({"group": "g3", "status": "ok", "missing_tables": []})
    with caplog.at_level(logging.WARNING, logger="slitcombine"):
        warn_missing_tables(records)
    (rec,) = [r for r in caplog.records if r.name == "slitcombine.pipeline.report"]
    msg = rec.getMessage()
    assert "2 of 3 group(s)" in msg and "extra_dq, global_sky, normalization" in msg
    assert "slitcombine calib fetch" in msg


def test_provenance_records_the_table_set(cache, archive, ceers_files):
    from slitcombine.io.provenance import collect, provenance_table

    calib.fetch(archive=archive)
    g = SlitGroup(ceers_files, "prov", undo_barshadow=False)
    prov = collect(g.meta, {}, g.slit_metadata(), g.fit)
    table = provenance_table(prov)
    rows = {r["key"]: json.loads(r["value"]) for r in table if r["section"] == "calibration"}
    assert rows["summary"] == f"msaexp {VERSION}"
    assert {t["step"] for t in rows["tables"]} == {"global_sky", "normalization", "extra_dq"}
    assert rows["sets"][0]["version"] == VERSION


def test_cache_dir_platform_default(monkeypatch, tmp_path):
    monkeypatch.delenv(calib.CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    if sys.platform.startswith("linux"):
        assert calib.cache_dir() == tmp_path / "xdg" / "slitcombine"
    monkeypatch.setenv(calib.CACHE_ENV, str(tmp_path / "mine"))
    assert calib.cache_dir() == tmp_path / "mine"
    assert calib.tables_dir() == tmp_path / "mine" / "calib"


def test_bytes_of_a_table_are_checked():
    with pytest.raises(ValueError, match="FITS"):
        calib_archive.check_table("a.fits", b"SIMPLE  =" + bytes(100))
    with pytest.raises(ValueError, match="wave,flux"):
        calib_archive.check_table("msa_sky/x_sky.csv", b"a,b\n1,2\n")
    with pytest.raises(ValueError, match="mapping"):
        calib_archive.check_table("a.yaml", b"- 1\n- 2\n")
    calib_archive.check_table("a.yaml", io.BytesIO(b"a: 1\n").getvalue())
