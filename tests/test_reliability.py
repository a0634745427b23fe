"""Reliability: every bad input and fault gives one clear message, no half-written result,
untouched inputs, and the same outputs for the same inputs.

The matrix of bad inputs (:data:`CASES`) is built once from three small simulated
observations (``nx=40`` cutouts) and run through both commands:

* ``slitcombine extract FILE...`` (in-process :func:`slitcombine.cli.main`; a few cases
  also as a subprocess to see the real stderr), one case per test;
* ``slitcombine batch`` once over a manifest holding one group per case plus a good
  group, and a folder with junk files (discovery must skip them and say so).

For each case the tests check the exit status, the one-line ``error:`` message (no
traceback without ``-v``), that nothing is left in the output folder but complete
products (no ``*.spec.fits`` of a failed combination, no temporary files) and that
every input file is byte-identical afterwards (SHA-256).

Faults: an unwritable output folder, a full disk, a worker killed in the middle of a
batch and two batches on the same output folder.  The tests run as root on the
development machines, where ``chmod`` does not stop writes; an unwritable folder is
therefore made in three ways: a path under a regular file (``file/sub``: mkdir fails
with ENOTDIR for every user), a patched ``mkstemp`` that fails with EACCES (a folder
that ``os.access`` calls writable but the server refuses, as NFS with root squashing),
and - where the test may mount file systems - a read-only tmpfs (EROFS).  A full disk is
a patched ``HDUList.writeto`` (or ``Figure.savefig``, after the spectrum) that writes
some bytes and then fails with ENOSPC, and - where mounting is allowed - a 64 kB tmpfs
that really fills up.  A worker is killed by a batch task that calls ``os._exit`` in the
middle of writing its spectrum (the task function is patched in this process and sent
to the workers by value).  Two batches on one folder meet the folder lock
(:func:`slitcombine.pipeline.batch.output_lock`).

Defined behaviours checked here besides errors: a missing WAVELENGTH extension is
computed from the WCS; a corrupt ASDF extension in an exposure whose WCS is not needed
(not the first one; traces from the dither offsets) is never parsed, and the product is
the same as with the intact file; a single exposure is combined; inf values and pixels
with a non-positive total variance are rejected (the product has finite, positive errors
on its valid bins).  Two runs on the same inputs give the same product up to the date
stamps (no run time is recorded in a product: they are logged).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from slitcombine.cli import main

SIM = {"nx": 40, "n_crs": 2, "n_hot": 2, "n_dead": 2, "snr": 15.0}

#: Header cards of a product that hold the date and time of the run (may differ
#: between two runs on the same inputs).
DATE_CARDS = ("DATE",)


# ============================================================================ helpers
def _sha(path):
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _snapshot(paths):
    """SHA-256 of every file (recursively for folders), with folder listings."""
    out = {}
    for p in map(Path, paths):
        if p.is_dir():
            out[str(p)] = sorted(x.name for x in p.iterdir())
            for q in p.rglob("*"):
                if q.is_file():
                    out[str(q)] = _sha(q)
        elif p.exists():
            out[str(p)] = _sha(p)
        else:
            out[str(p)] = None
    return out


def _leftovers(folder):
    """Products and temporary files in ``folder`` (recursively)."""
    folder = Path(folder)
    if not folder.exists():
        return []
    return sorted(
        str(p.relative_to(folder))
        for p in folder.rglob("*")
        if p.name.endswith((".spec.fits", ".tmp", ".png")) or ".tmp" in p.name
    )


def _copy_files(files, dst):
    dst.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copy2(f, dst / Path(f).name)) for f in files]


def _rewrite(path, drop=(), add=(), primary=None, sci=None, arrays=None):
    """Rewrite a FITS file with extensions dropped/added, header cards and arrays changed."""
    with fits.open(path, memmap=False) as hdul:
        hdus = [h.copy() for h in hdul if h.name not in drop]
    new = fits.HDUList(hdus)
    for key, value in (primary or {}).items():
        new[0].header[key] = value
    for key, value in (sci or {}).items():
        new["SCI"].header[key] = value
    for name, func in (arrays or {}).items():
        data = np.array(new[name].data)
        new[name].data = func(data)
    for h in add:
        new.append(h)
    tmp = path.with_suffix(".new")
    new.writeto(tmp)
    os.replace(tmp, path)
    return path


# ============================================================================ the cases
def _case_truncated(good, other, d):
    files = _copy_files(good, d)
    data = files[1].read_bytes()
    files[1].write_bytes(data[: len(data) // 3])
    return files, files[1]


def _asdf_hdu(raw_bytes):
    raw = np.frombuffer(raw_bytes, np.uint8)
    col = fits.Column(name="ASDF_METADATA", format=f"{raw.size}B", array=raw[None, :])
    return fits.BinTableHDU.from_columns([col], name="ASDF")


_GARBAGE_ASDF = b"#ASDF 1.0.0\n%YAML 1.1\n--- !<garbage\n: : [\n" * 10


def _corrupt_asdf(index):
    def build(good, other, d):
        files = _copy_files(good, d)
        _rewrite(files[index], drop=("ASDF",), add=(_asdf_hdu(_GARBAGE_ASDF),))
        return files, files[index]

    return build


def _case_missing_wcs(good, other, d):
    """An ASDF tree without ``meta.wcs`` in the reference (first) exposure."""
    import asdf

    files = _copy_files(good, d)
    buf = io.BytesIO()
    asdf.AsdfFile({"meta": {"model_type": "SlitModel"}}).write_to(buf)
    _rewrite(files[0], drop=("ASDF",), add=(_asdf_hdu(buf.getvalue()),))
    return files, files[0]


def _missing(ext):
    def build(good, other, d):
        files = _copy_files(good, d)
        _rewrite(files[1], drop=(ext,))
        return files, files[1]

    return build


def _case_missing_wavelength(good, other, d):
    files = _copy_files(good, d)
    for f in files:
        _rewrite(f, drop=("WAVELENGTH",))
    return files, None


def _case_x1d(good, other, d):
    files = _copy_files(good, d)
    prim = fits.PrimaryHDU()
    prim.header["INSTRUME"] = "NIRSPEC"
    prim.header["DATAMODL"] = "MultiSpecModel"
    tab = fits.BinTableHDU.from_columns(
        [fits.Column(name="WAVELENGTH", format="D", array=np.linspace(1, 5, 10))],
        name="EXTRACT1D",
    )
    files[1].unlink()
    fits.HDUList([prim, tab]).writeto(files[1])
    return files, files[1]


def _case_s2d(good, other, d):
    files = _copy_files(good, d)
    shape = fits.getdata(files[1], "SCI").shape
    wht = fits.ImageHDU(np.ones(shape, np.float32), name="WHT")
    con = fits.ImageHDU(np.ones(shape, np.int32), name="CON")
    _rewrite(files[1], add=(wht, con))
    return files, files[1]


def _case_nircam(good, other, d):
    files = _copy_files(good, d)
    prim = fits.PrimaryHDU()
    prim.header["INSTRUME"] = "NIRCAM"
    prim.header["DATAMODL"] = "ImageModel"
    prim.header["EXP_TYPE"] = "NRC_IMAGE"
    files[1].unlink()
    fits.HDUList(
        [
            prim,
            fits.ImageHDU(np.zeros((20, 20), np.float32), name="SCI"),
            fits.ImageHDU(np.zeros((20, 20), np.int32), name="DQ"),
        ]
    ).writeto(files[1])
    return files, files[1]


def _case_zero_byte(good, other, d):
    files = _copy_files(good, d)
    files[1].write_bytes(b"")
    return files, files[1]


def _case_directory(good, other, d):
    files = _copy_files(good, d)
    files[1].unlink()
    files[1].mkdir()
    return files, files[1]


def _case_mixed_grating(good, other, d):
    files = _copy_files(good[:2], d)
    files += _copy_files(other["grating"][2:], d / "g140m")
    return files, files[2]


def _case_mixed_source(good, other, d):
    files = _copy_files(good[:2], d)
    files += _copy_files(other["source"][2:], d / "src2")
    return files, files[2]


def _case_duplicate_path(good, other, d):
    files = _copy_files(good, d)
    return [files[0], files[1], files[1], files[2]], files[1]


def _case_duplicate_copy(good, other, d):
    files = _copy_files(good, d)
    twin = d / files[1].name.replace("_00002_", "_00012_")
    shutil.copy2(files[1], twin)
    return [*files, twin], twin


def _case_single(good, other, d):
    return _copy_files(good[:1], d), None


def _case_all_nan(good, other, d):
    files = _copy_files(good, d)
    for f in files:
        _rewrite(f, arrays={"SCI": lambda a: np.full_like(a, np.nan)})
    return files, None


def _exptime(value):
    def build(good, other, d):
        files = _copy_files(good, d)
        _rewrite(files[1], primary={"EFFEXPTM": value}, sci={"XPOSURE": value})
        return files, files[1]

    return build


def _case_inf_values(good, other, d):
    files = _copy_files(good, d)

    def spoil(a, value):
        a = a.copy()
        a.flat[7::23] = value
        return a

    for i, f in enumerate(files):
        _rewrite(
            f,
            arrays={
                "SCI": lambda a, i=i: spoil(a, np.inf if i % 2 else -np.inf),
                "VAR_POISSON": lambda a: spoil(a[::-1], np.inf)[::-1],
            },
        )
    return files, None


def _case_negative_variance(good, other, d):
    files = _copy_files(good, d)

    def negative(a, step):
        a = a.copy()
        a.flat[3::step] = -np.abs(a.flat[3::step]) - 1e-3
        return a

    for f in files:
        _rewrite(
            f,
            arrays={
                "VAR_RNOISE": lambda a: negative(a, 17),
                "VAR_POISSON": lambda a: negative(a, 11),
            },
        )
    return files, None


#: case -> (builder, expected error class or None for a valid result, message part).
#: A builder returns the members (in order) and the offending file (or None).
CASES = {
    "truncated": (_case_truncated, "InputFileError", "truncated FITS"),
    "corrupt_asdf": (_corrupt_asdf(0), "InputFileError", "corrupt ASDF extension"),
    # the WCS of the other exposures is not needed (traces from the dither offsets,
    # WAVELENGTH present): their ASDF is never parsed and the product is unchanged
    "corrupt_asdf_unused": (_corrupt_asdf(1), None, ""),
    "missing_sci": (_missing("SCI"), "MissingExtensionError", "'SCI' is missing"),
    "missing_dq": (_missing("DQ"), "MissingExtensionError", "'DQ' is missing"),
    "missing_asdf_wcs": (_missing("ASDF"), "MissingExtensionError", "'ASDF (WCS)' is missing"),
    "missing_wcs_in_asdf": (_case_missing_wcs, "MissingExtensionError", "'ASDF meta.wcs'"),
    "missing_wavelength": (_case_missing_wavelength, None, ""),
    "x1d_product": (_case_x1d, "NotASlitError", "x1d"),
    "s2d_product": (_case_s2d, "NotASlitError", "s2d"),
    "nircam_image": (_case_nircam, "NotASlitError", "NIRCAM"),
    "zero_byte": (_case_zero_byte, "InputFileError", "empty file (0 bytes)"),
    "directory": (_case_directory, "InputFileError", "is a directory"),
    "mixed_gratings": (_case_mixed_grating, "IncompatibleExposuresError", "grating"),
    "mixed_sources": (_case_mixed_source, "IncompatibleExposuresError", "source"),
    "duplicate_path": (_case_duplicate_path, "IncompatibleExposuresError", "given twice"),
    "duplicate_copy": (_case_duplicate_copy, "IncompatibleExposuresError", "given twice"),
    "single_exposure": (_case_single, None, ""),
    "all_nan_sci": (_case_all_nan, "SlitCombineError", "no valid"),
    "zero_exptime": (_exptime(0.0), "InputFileError", "= 0.0 s is not positive"),
    "negative_exptime": (_exptime(-1021.2), "InputFileError", "= -1021.2 s is not positive"),
    "inf_values": (_case_inf_values, None, ""),
    "negative_variances": (_case_negative_variance, None, ""),
}


# ============================================================================ fixtures
@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return tmp_path_factory.mktemp("reliability")


@pytest.fixture(scope="module")
def sims(base):
    """A good PRISM trio, the same source with G140M, and another source with PRISM."""
    from slitcombine.testing.simulate import simulate_observation

    common = dict(slitlet_id=42, **SIM)
    good = simulate_observation(base / "good", grating="PRISM", seed=11, source_id=1, **common)
    grating = simulate_observation(base / "g140m", grating="G140M", seed=12, source_id=1, **common)
    source = simulate_observation(base / "src2", grating="PRISM", seed=13, source_id=2, **common)
    return {"good": good.files, "grating": grating.files, "source": source.files}


@pytest.fixture(scope="module")
def cases(base, sims):
    """case -> (members, offending file or None), each in its own folder."""
    out = {}
    for name, (build, _, _) in CASES.items():
        out[name] = build(sims["good"], sims, base / "cases" / name)
    return out


def _run(argv):
    """``slitcombine`` in-process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main([str(a) for a in argv])
    return status, out.getvalue(), err.getvalue()


def _error_line(stderr):
    """The single ``error:`` line of ``stderr`` (and no traceback)."""
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, stderr
    return lines[0]


def _check_product(path, min_valid=10):
    """A complete product: valid bins have finite flux and a finite positive error."""
    with fits.open(path) as hdul:
        names = [h.name for h in hdul]
    assert names[:3] == ["PRIMARY", "SPEC1D", "SCI"] and names[-1] in ("PROVENANCE", "PIXTAB")
    tab = Table.read(path, hdu="SPEC1D")
    valid = np.asarray(tab["valid"], bool)
    flux = np.asarray(tab["flux"], float)
    err = np.asarray(tab["err"], float)
    assert valid.sum() >= min_valid
    assert np.all(np.isfinite(flux[valid])) and np.all(np.isfinite(err[valid]))
    assert np.all(err[valid] > 0)
    assert np.all(np.isnan(flux[~valid]) & np.isnan(err[~valid]))
    return tab


def _table_equal(a, b):
    if a.colnames != b.colnames or len(a) != len(b):
        return False
    for name in a.colnames:
        x, y = np.asarray(a[name]), np.asarray(b[name])
        if x.dtype.kind == "f":
            if not np.array_equal(x, y, equal_nan=True):
                return False
        elif not np.array_equal(x, y):
            return False
    return True


def _without_run_stamps(prov):
    """The PROVENANCE table without its date row."""
    return prov[prov["section"] != "date"]


def _product_differences(path_a, path_b, data_only=False):
    """What differs between two products, besides the date and time stamps of the run.

    Stamps: the ``DATE`` card (primary and SPEC1D headers) and the ``date`` row of the
    ``PROVENANCE`` table.  Every other header card (the table widths among them) and every HDU's
    data are compared exactly (NaN equal to NaN).  ``data_only`` compares the images
    and SPEC1D only.
    """
    diffs = []
    with fits.open(path_a) as ha, fits.open(path_b) as hb:
        if [h.name for h in ha] != [h.name for h in hb]:
            return [f"HDUs {[h.name for h in ha]} != {[h.name for h in hb]}"]
        for x, y in zip(ha, hb, strict=True):
            if data_only and x.name not in ("SPEC1D", "SCI", "WHT", "PROFILE", "BACKGROUND"):
                continue
            if not data_only:
                ca = [(c.keyword, c.value) for c in x.header.cards if c.keyword not in DATE_CARDS]
                cb = [(c.keyword, c.value) for c in y.header.cards if c.keyword not in DATE_CARDS]
                if ca != cb:
                    diffs.append(f"{x.name} header: {[c for c in ca if c not in cb]}")
            if x.data is None:
                continue
            if isinstance(x, fits.BinTableHDU):
                ta, tb = Table(x.data), Table(y.data)
                if x.name == "PROVENANCE":
                    ta, tb = _without_run_stamps(ta), _without_run_stamps(tb)
                if not _table_equal(ta, tb):
                    diffs.append(f"{x.name} table")
            elif not np.array_equal(x.data, y.data, equal_nan=True):
                diffs.append(f"{x.name} data")
    return diffs


@pytest.fixture(scope="module")
def good_product(base, sims):
    """The good trio combined in this process (the reference product)."""
    out = base / "good_out"
    status, stdout, _ = _run(
        ["extract", *sims["good"], "--name", "good", "--output-dir", out, "--no-figures"]
    )
    assert status == 0 and "valid bins" in stdout
    return out / "good.spec.fits"


# ============================================================================ extract
@pytest.mark.parametrize("case", list(CASES))
def test_extract_bad_input_matrix(case, cases, good_product, tmp_path):
    members, bad = cases[case]
    _, error_type, message = CASES[case]
    before = _snapshot(members)
    out = tmp_path / "out"
    args = ["extract", *members, "--name", case, "--output-dir", out, "--no-figures"]
    status, stdout, stderr = _run(args)
    assert _snapshot(members) == before  # inputs byte-identical
    assert "Traceback" not in stderr
    if error_type is None:
        assert status == 0, stderr
        assert _leftovers(out) == [f"{case}.spec.fits"]
        _check_product(out / f"{case}.spec.fits")
        if case == "corrupt_asdf_unused":
            assert _product_differences(good_product, out / f"{case}.spec.fits", True) == []
    else:
        assert status == 2
        line = _error_line(stderr)
        assert message in line
        if bad is not None:
            assert str(bad) in line
        assert stdout == ""
        assert _leftovers(out) == []


def test_extract_error_is_one_line_without_traceback_unless_verbose(cases, tmp_path):
    """The real stderr of the console command: one ``error:`` line; ``-v`` adds the traceback."""
    members, bad = cases["corrupt_asdf"]  # the YAML parser's message spans 4 lines
    args = [sys.executable, "-m", "slitcombine.cli", "extract", *map(str, members)]
    args += ["--output-dir", str(tmp_path / "out"), "--no-figures"]
    quiet = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert quiet.returncode == 2
    # warnings logged before the failure (e.g. calibration tables not found) may come
    # first; the error itself is one line
    lines = [x for x in quiet.stderr.strip().splitlines() if not x.startswith("WARNING ")]
    assert lines == [_error_line(quiet.stderr)]
    assert str(bad) in quiet.stderr and "corrupt ASDF extension" in quiet.stderr
    verbose = subprocess.run([*args[:3], "-v", *args[3:]], capture_output=True, text=True)
    assert verbose.returncode == 2
    assert "Traceback" in verbose.stderr
    assert verbose.stderr.strip().splitlines()[-1] == _error_line(quiet.stderr)
    assert _leftovers(tmp_path / "out") == []


# ============================================================================ output faults
def _patched_enospc_writeto(self, fileobj, *args, **kwargs):
    """``HDUList.writeto`` on a disk that fills up after a few blocks."""
    with contextlib.ExitStack() as stack:
        if isinstance(fileobj, str | os.PathLike):
            fileobj = stack.enter_context(open(fileobj, "wb"))
        fileobj.write(b"SIMPLE  =                    T" + b" " * (3 * 2880 - 30))
        fileobj.flush()
    raise OSError(errno.ENOSPC, "No space left on device")


def _patched_enospc_savefig(self, fname, *args, **kwargs):
    partial = b"\x89PNG\r\n\x1a\n" + b"\0" * 4096
    if hasattr(fname, "write"):
        fname.write(partial)
    else:
        Path(fname).write_bytes(partial)
    raise OSError(errno.ENOSPC, "No space left on device")


@contextlib.contextmanager
def _tmpfs(path, options):
    """Mount a tmpfs at ``path`` (skips where mounting is not allowed, e.g. not root)."""
    path.mkdir(parents=True, exist_ok=True)
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a tmpfs needs root")
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def test_extract_output_under_a_regular_file(sims, tmp_path):
    """``--output-dir file/sub``: mkdir fails (ENOTDIR) for every user, root included."""
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    before = _snapshot(sims["good"])
    args = ["extract", *sims["good"], "--output-dir", blocker / "sub", "--no-figures"]
    status, stdout, stderr = _run(args)
    assert status == 2 and stdout == ""
    assert "cannot create output directory" in _error_line(stderr)
    assert blocker.read_text() == "not a folder" and sorted(tmp_path.iterdir()) == [blocker]
    assert _snapshot(sims["good"]) == before


def test_extract_output_folder_that_refuses_writes(sims, tmp_path, monkeypatch):
    """A folder that is not writable.

    As root ``chmod 0o500`` does not stop writes (``os.access`` says writable), so then
    the folder is one whose writes fail with EACCES although ``os.access`` allows them
    (NFS with root squashing does this): ``mkstemp``/``mkdtemp`` are patched.  As
    another user the chmod'ed folder is used as it is.
    """
    import tempfile

    locked = tmp_path / "locked"
    locked.mkdir()
    os.chmod(locked, 0o500)
    try:
        if os.access(locked, os.W_OK):  # root: permissions are not enforced

            def refuse(*args, **kwargs):
                raise PermissionError(errno.EACCES, "Permission denied", str(locked))

            monkeypatch.setattr(tempfile, "mkstemp", refuse)
            monkeypatch.setattr(tempfile, "mkdtemp", refuse)
            expected = "Permission denied"
        else:
            expected = "is not writable"
        args = ["extract", *sims["good"], "--output-dir", locked]
        status, stdout, stderr = _run(args)
        monkeypatch.undo()
    finally:
        os.chmod(locked, 0o700)
    assert status == 2 and stdout == ""
    assert expected in _error_line(stderr)
    assert list(locked.iterdir()) == []


def test_extract_read_only_file_system(sims, tmp_path):
    """A read-only tmpfs: EROFS stops root too (skipped where mounting is not allowed)."""
    with _tmpfs(tmp_path / "ro", "ro,size=64k") as ro:
        status, _, stderr = _run(["extract", *sims["good"], "--output-dir", ro])
        assert status == 2
        assert f"output directory {ro} is not writable" in _error_line(stderr)
        assert list(ro.iterdir()) == []


@pytest.mark.parametrize("stage", ["spectrum", "figure"])
def test_extract_disk_full(stage, sims, tmp_path, monkeypatch):
    """The disk fills up while the spectrum (or, after it, a figure) is written."""
    import matplotlib.figure

    if stage == "spectrum":
        monkeypatch.setattr(fits.HDUList, "writeto", _patched_enospc_writeto)
    else:
        monkeypatch.setattr(matplotlib.figure.Figure, "savefig", _patched_enospc_savefig)
    out = tmp_path / "out"
    before = _snapshot(sims["good"])
    status, stdout, stderr = _run(["extract", *sims["good"], "--name", "x", "--output-dir", out])
    monkeypatch.undo()
    assert status == 2 and stdout == ""
    line = _error_line(stderr)
    assert "No space left on device" in line
    assert f"{out / 'x'}.{'spec.fits' if stage == 'spectrum' else 'fnu.png'}" in line
    assert list(out.iterdir()) == []  # nothing: no spectrum, no figure, no temporary file
    assert _snapshot(sims["good"]) == before


def test_extract_really_full_disk(sims, tmp_path):
    """A 64 kB tmpfs that the ~400 kB product cannot fit (skipped where mounting is not allowed)."""
    with _tmpfs(tmp_path / "tiny", "size=64k") as tiny:
        status, _, stderr = _run(["extract", *sims["good"], "--output-dir", tiny])
        assert status == 2
        line = _error_line(stderr)  # astropy words it "Not enough space on disk"
        assert "No space left on device" in line or "Not enough space on disk" in line
        assert list(tiny.iterdir()) == []


# ============================================================================ determinism
def test_two_runs_give_identical_products(sims, good_product, tmp_path):
    """A second run, in another process (other hash seed), gives the same product.

    Only the stamps of the run may differ: the ``DATE`` cards and the ``date`` row of
    ``PROVENANCE`` (fixed-width ISO times); every other card,
    every image and every table are identical.
    """
    out = tmp_path / "again"
    args = [sys.executable, "-m", "slitcombine.cli", "extract", *map(str, sims["good"])]
    args += ["--name", "good", "--output-dir", str(out), "--no-figures"]
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    proc = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    again = out / "good.spec.fits"
    assert _product_differences(good_product, again) == []
    # the stamps left out of the comparison are there, as UTC ISO times
    from datetime import datetime

    with fits.open(good_product) as a, fits.open(again) as b:
        for hdul in (a, b):
            for ext in ("PRIMARY", "SPEC1D"):
                datetime.strptime(hdul[ext].header["DATE"], "%Y-%m-%dT%H:%M:%S")


# ============================================================================ batch
JUNK = {
    # file name in the discovery folder -> builder of its content (from a good file)
    "jw09999002001_03101_00004_nrs1_phot.042.9999_1.fits": "truncated",
    "jw09999002001_03101_00005_nrs1_cal.fits": "zero_byte",
    "jw09999002001_03101_00006_nrs1_cal.fits": "nircam_image",
    "jw09999002001_03101_00007_nrs1_cal.fits": "x1d_product",
    "jw09999002001_03101_00008_nrs1_cal.fits": "text",
}


def _junk_folder(folder, sims, cases):
    """A good trio (another visit) among files that discovery must skip."""
    folder.mkdir(parents=True)
    for f in sims["good"]:
        shutil.copy2(f, folder / f.name.replace("jw09999001001", "jw09999002001"))
    for name, what in JUNK.items():
        if what == "text":
            (folder / name).write_text("this is not FITS\n" * 100)
        else:
            members, bad = cases[what]
            shutil.copy2(bad, folder / name)
    return folder


@pytest.fixture(scope="module")
def batch_run(base, sims, cases):
    """One batch over a manifest (a group per case + a good group) and a junk folder."""
    from slitcombine.pipeline.discovery import GroupSpec, write_manifest

    groups = [GroupSpec(name="good", members=tuple(map(str, sims["good"])), info={})]
    groups += [
        GroupSpec(name=case, members=tuple(map(str, members)), info={})
        for case, (members, _) in cases.items()
    ]
    manifest = write_manifest(groups, base / "batch" / "manifest-in.ecsv")
    junk = _junk_folder(base / "batch" / "junk", sims, cases)
    inputs = [base / "cases", base / "good", junk]
    before = _snapshot(inputs)
    out = base / "batch" / "out"
    status, stdout, stderr = _run(
        ["-q", "batch", manifest, junk, "--output-dir", out, "--workers", "2"]
    )
    return {
        "status": status,
        "stdout": stdout,
        "stderr": stderr,
        "out": out,
        "summary": Table.read(out / "summary.ecsv"),
        "inputs_unchanged": _snapshot(inputs) == before,
        "junk": junk,
    }


def _row(summary, group):
    """The summary row of ``group`` as a dict (masked empty strings as "")."""
    rows = summary[summary["group"] == group]
    assert len(rows) == 1
    values = zip(rows.colnames, rows[0], strict=True)
    return {k: ("" if v is np.ma.masked else v) for k, v in values}


@pytest.mark.parametrize("case", list(CASES))
def test_batch_bad_input_matrix(case, batch_run, cases):
    """Each bad group fails with its error in the summary; the batch goes on."""
    _, error_type, message = CASES[case]
    _, bad = cases[case]
    row = _row(batch_run["summary"], case)
    out = batch_run["out"]
    assert not row["bug"], row["error"]
    if error_type is None:
        assert row["status"] == "ok", row["error"]
        assert row["outputs"].split(";") == [
            f"{case}.spec.fits",
            f"{case}.fnu.png",
            f"{case}.d2d.png",
        ]
        _check_product(out / f"{case}.spec.fits")
    else:
        assert row["status"] == "failed"
        assert row["error_type"] == error_type
        assert message in row["error"] and "\n" not in row["error"]
        if bad is not None:
            assert bad.name in row["error"]
        assert row["outputs"] == ""
        assert not list(out.glob(f"{case}.*.fits")) and not list(out.glob(f"{case}.*.png"))
        failed = [ln for ln in batch_run["stderr"].splitlines() if ln.startswith(f"failed {case}:")]
        assert len(failed) == 1 and message in failed[0]
        side = (out / f"{case}.batch.json").read_text()
        assert '"status": "failed"' in side


def test_batch_continues_reports_and_leaves_inputs_alone(batch_run):
    summary, out = batch_run["summary"], batch_run["out"]
    n_bad = sum(e is not None for _, e, _ in CASES.values())
    assert batch_run["status"] == 1  # some groups failed
    assert len(summary) == len(CASES) + 2
    assert (summary["status"] == "failed").sum() == n_bad
    # the good groups of the manifest and of the junk folder were combined
    assert _row(summary, "good")["status"] == "ok"
    found = [g for g in summary["group"] if str(g).startswith("jw09999002001")]
    assert len(found) == 1 and _row(summary, found[0])["status"] == "ok"
    assert _row(summary, found[0])["n_exposures"] == 3
    # every junk file is skipped, with its reason, in the summary and on stderr
    skipped = {Path(s["path"]).name: s["reason"] for s in summary.meta["skipped_files"]}
    assert set(skipped) == set(JUNK)
    assert "truncated FITS" in skipped["jw09999002001_03101_00004_nrs1_phot.042.9999_1.fits"]
    assert "empty file" in skipped["jw09999002001_03101_00005_nrs1_cal.fits"]
    assert "NIRCAM" in skipped["jw09999002001_03101_00006_nrs1_cal.fits"]
    assert "not a FITS file" in skipped["jw09999002001_03101_00008_nrs1_cal.fits"]
    assert sum(ln.startswith("skipped ") for ln in batch_run["stderr"].splitlines()) == len(JUNK)
    assert "Traceback" not in batch_run["stderr"]
    assert (
        f"{len(summary)} group(s): {len(summary) - n_bad} ok, {n_bad} failed" in batch_run["stdout"]
    )
    # no temporary files; products only for the groups that succeeded
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]
    ok = set(summary["group"][summary["status"] == "ok"])
    assert {p.name.split(".")[0] for p in out.glob("*.spec.fits")} == ok
    assert batch_run["inputs_unchanged"]


# ============================================================================ batch faults
def _small_manifest(folder, files, names):
    """A manifest of groups that all combine the same good files (fast and valid)."""
    from slitcombine.pipeline.discovery import GroupSpec, write_manifest

    groups = [GroupSpec(name=n, members=tuple(map(str, files)), info={}) for n in names]
    return write_manifest(groups, folder / "manifest-in.ecsv")


NO_FIGURES = ["--set", "batch.figures=false"]


def test_batch_output_under_a_regular_file(sims, tmp_path):
    manifest = _small_manifest(tmp_path, sims["good"], ["a"])
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    status, stdout, stderr = _run(["-q", "batch", manifest, "--output-dir", blocker / "sub"])
    assert status == 2 and stdout == ""
    assert "cannot create the output folder" in _error_line(stderr)
    assert blocker.read_text() == "not a folder"


def test_batch_read_only_file_system(sims, tmp_path):
    """A read-only tmpfs (skipped where mounting is not allowed)."""
    manifest = _small_manifest(tmp_path, sims["good"], ["a"])
    with _tmpfs(tmp_path / "ro", "ro,size=64k") as ro:
        status, _, stderr = _run(["-q", "batch", manifest, "--output-dir", ro / "out"])
        assert status == 2
        assert "Read-only file system" in _error_line(stderr)
        assert list(ro.iterdir()) == []


def test_batch_group_on_a_full_disk(sims, tmp_path, monkeypatch):
    """The batch task of a group whose spectrum hits a full disk.

    Run in this process (the task function itself) so that the writer can be patched;
    the group is recorded as failed with an OutputError, leaves nothing behind, and is
    run again by ``--resume`` (a full disk is not a property of the inputs).
    """
    from slitcombine.pipeline.batch import process_group, read_sidecar
    from slitcombine.pipeline.config import Config
    from slitcombine.pipeline.sidecar import resumable

    cfg = Config.default()
    members = [str(f) for f in sims["good"]]
    before = _snapshot(members)
    monkeypatch.setattr(fits.HDUList, "writeto", _patched_enospc_writeto)
    rec = process_group({"group": "full", "members": members}, cfg, tmp_path)
    monkeypatch.undo()
    assert rec["status"] == "failed" and rec["error_type"] == "OutputError" and not rec["bug"]
    assert "No space left on device" in rec["error"] and "full.spec.fits" in rec["error"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full.batch.json", "logs"]
    side = read_sidecar(tmp_path, "full")
    assert side["status"] == "failed" and side["error_type"] == "OutputError"
    assert not resumable(side, cfg, members, False, tmp_path)
    assert _snapshot(members) == before


def test_batch_refuses_an_output_folder_in_use(sims, tmp_path):
    """A batch on an output folder locked by a running one: a clear error, nothing written."""
    from slitcombine.pipeline.batch import output_lock

    manifest = _small_manifest(tmp_path, sims["good"], ["a"])
    out = tmp_path / "out"
    with output_lock(out):
        status, stdout, stderr = _run(["-q", "batch", manifest, "--output-dir", out])
        dry = _run(["-q", "batch", manifest, "--output-dir", out, "--dry-run"])
    assert status == 2 and stdout == ""
    line = _error_line(stderr)
    assert f"another slitcombine batch is running in {out}" in line and f"pid {os.getpid()}" in line
    assert dry[0] == 2 and _error_line(dry[2]) == line  # nor its manifest rewritten
    assert [p.name for p in out.iterdir()] == [".slitcombine-batch.lock"]
    # the lock is released with its holder
    status, _, stderr = _run(["-q", "batch", manifest, "--output-dir", out, *NO_FIGURES])
    assert status == 0, stderr


def test_two_batches_started_on_the_same_output_folder(sims, tmp_path):
    """Two processes: the second batch stops at once with a clear error; the first
    finishes undisturbed; afterwards the folder can be used again (--resume)."""
    import time

    names = [f"g{i}" for i in range(4)]
    manifest = _small_manifest(tmp_path, sims["good"], names)
    out = tmp_path / "out"
    args = ["batch", str(manifest), "--output-dir", str(out), "--workers", "1", *NO_FIGURES]
    first = subprocess.Popen(
        [sys.executable, "-m", "slitcombine.cli", "-q", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        t0 = time.monotonic()
        while not (out / "manifest.ecsv").exists() and time.monotonic() - t0 < 120:
            assert first.poll() is None, first.communicate()
            time.sleep(0.02)
        manifest_before = (out / "manifest.ecsv").read_text()
        status, stdout, stderr = _run(["-q", *args])
        running = first.poll() is None
        out1, err1 = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert running  # the second batch really met a running one
    assert status == 2 and stdout == ""
    line = _error_line(stderr)
    assert f"another slitcombine batch is running in {out}" in line
    assert f"pid {first.pid}" in line
    assert first.returncode == 0, err1
    assert (out / "manifest.ecsv").read_text() == manifest_before
    summary = Table.read(out / "summary.ecsv")
    assert list(summary["status"]) == ["ok"] * 4
    for name in names:
        _check_product(out / f"{name}.spec.fits")
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]
    status, stdout, _ = _run(["-q", *args, "--resume"])
    assert status == 0 and "4 from a previous run" in stdout


# -------------------------------------------------------------------- a worker dies
from slitcombine.pipeline.batch import process_group as _process_group  # noqa: E402


def _process_group_killing_victim(group_row, config, output_dir):
    """The batch task, except that group ``victim`` kills its worker process (once)
    in the middle of writing its spectrum."""
    if group_row["group"] == "victim":
        marker = Path(output_dir).parent / "victim.killed"
        if not marker.exists():
            marker.write_text(str(os.getpid()))

            def die_while_writing(self, fileobj, *args, **kwargs):
                with open(fileobj, "wb") as fh:
                    fh.write(b"SIMPLE  =                    T" + b" " * 5730)
                os._exit(17)

            fits.HDUList.writeto = die_while_writing
    return _process_group(group_row, config, output_dir)


@contextlib.contextmanager
def _killer_task(monkeypatch, allowed_failures):
    """Run the batch with :func:`_process_group_killing_victim` as its task."""
    import cloudpickle
    import dask

    import slitcombine.pipeline.batch

    module = sys.modules[__name__]
    monkeypatch.setattr(slitcombine.pipeline.batch, "process_group", _process_group_killing_victim)
    cloudpickle.register_pickle_by_value(module)  # the workers cannot import this file
    try:
        with dask.config.set({"distributed.scheduler.allowed-failures": allowed_failures}):
            yield
    finally:
        cloudpickle.unregister_pickle_by_value(module)
        monkeypatch.undo()


def test_worker_killed_task_is_retried(sims, tmp_path, monkeypatch):
    """dask reruns the task of a dead worker on another one: the group succeeds, and the
    half-written file of the dead attempt is removed."""
    manifest = _small_manifest(tmp_path, sims["good"], ["a", "victim", "b"])
    out = tmp_path / "out"
    with _killer_task(monkeypatch, allowed_failures=3):
        status, stdout, stderr = _run(
            ["-q", "batch", manifest, "--output-dir", out, "--workers", "2", *NO_FIGURES]
        )
    assert (tmp_path / "victim.killed").exists()  # a worker did die
    assert status == 0, stderr
    summary = Table.read(out / "summary.ecsv")
    assert list(summary["status"]) == ["ok"] * 3
    victim = _row(summary, "victim")
    assert victim["worker"].rsplit(":", 1)[1] != (tmp_path / "victim.killed").read_text()
    for name in ("a", "victim", "b"):
        _check_product(out / f"{name}.spec.fits")
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]


def test_worker_killed_group_is_reported_and_resumed(sims, tmp_path, monkeypatch):
    """Without retries the lost group is reported failed, the others finish, nothing
    half-written is left, and ``--resume`` completes only that group."""
    manifest = _small_manifest(tmp_path, sims["good"], ["a", "victim", "b"])
    out = tmp_path / "out"
    args = ["-q", "batch", manifest, "--output-dir", out, "--workers", "2", *NO_FIGURES]
    with _killer_task(monkeypatch, allowed_failures=0):
        status, stdout, stderr = _run(args)
    assert status == 1
    summary = Table.read(out / "summary.ecsv")
    assert list(summary["status"]) == ["ok", "failed", "ok"]
    victim = _row(summary, "victim")
    assert "worker may have died" in victim["error"] and not victim["bug"]
    failed = [ln for ln in stderr.splitlines() if ln.startswith("failed ")]
    assert len(failed) == 1 and failed[0].startswith("failed victim: ")
    assert "Traceback" not in stderr
    assert not (out / "victim.spec.fits").exists()
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]
    assert not (out / "victim.batch.json").exists()  # not done: resume reruns it
    status, stdout, stderr = _run([*args, "--resume"])
    assert status == 0, stderr
    again = Table.read(out / "summary.ecsv")
    assert list(again["status"]) == ["ok"] * 3
    assert list(again["resumed"]) == [True, False, True]
    _check_product(out / "victim.spec.fits")
