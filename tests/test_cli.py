"""The ``slitcombine`` command line: --version and info."""

from __future__ import annotations

import subprocess
import sys

from slitcombine import __version__
from slitcombine.cli import main


def test_version_console_script():
    out = subprocess.run(
        [sys.executable, "-m", "slitcombine.cli", "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == f"slitcombine {__version__}"


def test_info_summarises_each_file(ceers_files, capsys):
    assert main(["info", *ceers_files]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 + 4  # one per file, then the group's nod offsets
    for i, line in enumerate(lines[:3], start=1):
        assert "source 1345_933" in line and "slitlet 138" in line
        assert "PRISM/CLEAR" in line and "shape 25x341" in line
        assert f"nod position {i} of 3" in line and "exptime 1021.2 s" in line
    # issue 18.13: YOFFSET is explained, and the nods are given in shutters and pixels
    assert "shutters 1x1 (YOFFSET 11.817 arcsec: dither offset of the pointing" in lines[0]
    assert "shutters x11" in lines[1] and "shutters 11x" in lines[2]
    assert "from the median YOFFSET 11.817 arcsec (1 shutter = 0.529 arcsec" in lines[3]
    offsets = [line.split(": ", 1)[1] for line in lines[4:]]
    assert offsets == [
        "+0.000 arcsec = +0.00 shutter = +0.00 px",
        "+0.529 arcsec = +1.00 shutter = +5.11 px",
        "-0.529 arcsec = -1.00 shutter = -5.11 px",
    ]


def test_unmatched_pattern_says_no_file_matches(ceers_dir, tmp_path, capsys):
    """Issue 18.13: a wildcard the shell left as typed is expanded, or named as unmatched."""
    pattern = str(tmp_path / "jw*_phot.*.fits")
    for args in (
        ["info", pattern],
        ["extract", pattern, "--output-dir", str(tmp_path / "o")],
        ["batch", pattern, "--output-dir", str(tmp_path / "b"), "--dry-run"],
    ):
        assert main(args) == 2
        err = capsys.readouterr().err.strip()
        assert err == f"error: {pattern}: no file matches this pattern", err
    assert not (tmp_path / "b").exists()
    # a quoted pattern that matches is expanded
    assert main(["info", str(ceers_dir / "jw*_0000[12]_*.fits")]) == 0
    assert capsys.readouterr().out.count("source 1345_933") == 2


def test_simulate_source_id_and_visit(tmp_path, capsys):
    """Issue 18.10: simulate takes the source id, slitlet, visit and detector."""
    args = ["simulate", str(tmp_path), "--visit", "jw01234005001", "--source-id", "77"]
    assert main([*args, "--slitlet-id", "12", "--detector", "nrs2", "--nods", "2"]) == 0
    names = sorted(p.name for p in tmp_path.glob("*.fits"))
    assert names == [f"jw01234005001_03101_0000{i}_nrs2_phot.012.1234_77.fits" for i in (1, 2)]
    assert main(["info", *(str(tmp_path / n) for n in names)]) == 0
    out = capsys.readouterr().out
    assert "(id 77) slitlet 12" in out
    assert main(["simulate", str(tmp_path / "x"), "--visit", "bad"]) == 2
    assert "jwPPPPPOOOVVV" in capsys.readouterr().err


def test_info_bad_file_one_line_error(tmp_path, capsys):
    bad = tmp_path / "bad.fits"
    bad.write_text("not fits")
    assert main(["info", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad.fits" in err[0] and "not a FITS file" in err[0]


_CONSOLE_PROBE = r"""
import gc, sys
from slitcombine.cli import console_main
before = gc.get_freeze_count()
status = console_main(sys.argv[1:])
print(before, gc.get_freeze_count() > 0, status)
"""


def test_console_script_is_main_then_frozen_heap(ceers_files, tmp_path):
    """The installed script runs ``main`` and freezes the heap for a quick exit.

    ``main`` called from Python (as in the other tests) leaves the collector alone.
    """
    import gc
    from importlib.metadata import entry_points

    (script,) = [ep for ep in entry_points(group="console_scripts") if ep.name == "slitcombine"]
    assert script.value == "slitcombine.cli:console_main"
    out = subprocess.run(
        [sys.executable, "-c", _CONSOLE_PROBE, "info", str(ceers_files[0])],
        capture_output=True,
        text=True,
        check=True,
    )
    lines = out.stdout.strip().splitlines()
    assert "source 1345_933" in lines[0]  # main's output, flushed at exit
    assert lines[-1] == "0 True 0"
    bad = subprocess.run(
        [sys.executable, "-c", _CONSOLE_PROBE, "info", str(tmp_path / "missing.fits")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert bad.stdout.strip().splitlines()[-1] == "0 True 2"  # main's exit status
    assert "missing.fits" in bad.stderr
    frozen = gc.get_freeze_count()
    assert main(["info", str(ceers_files[0])]) == 0
    assert gc.get_freeze_count() == frozen


def test_extract_multislit_files_by_source_id(tmp_path, capsys):
    """``*_cal.fits`` MultiSlitModel files: --source-id picks the source in every file."""
    from slitcombine.testing.simulate import simulate_observation

    sim = simulate_observation(tmp_path / "in", multi_slit_sources=2, nx=80, seed=3)
    files = [str(f) for f in sim.files]
    out = tmp_path / "out"
    assert main(["extract", *files, "--output-dir", str(out), "--no-figures"]) == 2
    err = capsys.readouterr().err
    assert "2 slits match (source ids 1, 2)" in err and "--source-id" in err
    assert not out.exists() or list(out.iterdir()) == []
    args = ["extract", *files, "--source-id", "2", "--output-dir", str(out), "--no-figures"]
    assert main(args) == 0
    (product,) = out.glob("*.spec.fits")
    assert "_2_" in product.name
    from astropy.io import fits

    with fits.open(product) as hdul:
        assert set(hdul["SLITS"].data["source_id"].astype(str)) == {"2"}


def test_extract_figure_options(ceers_files, tmp_path, capsys):
    """Issue 19: --figure-dpi sets the resolution (recorded in the configuration hash and
    the provenance); --no-figures and batch.figures choose the files; a bad value is a
    one-line error naming the option."""
    import json

    from astropy.io import fits
    from astropy.table import Table
    from PIL import Image

    from slitcombine.pipeline.config import Config

    out = tmp_path / "dpi"
    assert (
        main(
            ["extract", *ceers_files, "--name", "c", "--output-dir", str(out), "--figure-dpi", "40"]
        )
        == 0
    )
    assert sorted(p.name for p in out.iterdir()) == ["c.d2d.png", "c.fnu.png", "c.spec.fits"]
    with Image.open(out / "c.fnu.png") as im:
        assert im.size == (360, 220)
    with fits.open(out / "c.spec.fits") as hdul:
        assert (
            hdul[0].header["CFGHASH"]
            == Config.default().with_overrides(["batch.figure_dpi=40"]).hash
        )
        prov = Table(hdul["PROVENANCE"].data)
    rows = {r["key"]: json.loads(r["value"]) for r in prov if r["section"] == "figures"}
    assert rows == {"figures": "all", "figure_dpi": 40}
    for args, files in (
        (["--no-figures"], ["c.spec.fits"]),
        (["--set", "batch.figures=summary"], ["c.fnu.png", "c.spec.fits"]),
    ):
        folder = tmp_path / args[-1].replace("=", "_")
        assert (
            main(["extract", *ceers_files, "--name", "c", "--output-dir", str(folder), *args]) == 0
        )
        assert sorted(p.name for p in folder.iterdir()) == files
    capsys.readouterr()
    for value in ("5", "abc", "nan"):
        bad = tmp_path / f"bad{value}"
        args = ["extract", *ceers_files, "--output-dir", str(bad), "--figure-dpi", value]
        assert main(args) == 2
        err = capsys.readouterr().err.strip()
        assert err == (
            "error: --figure-dpi must be a number of dots per inch from 10 to 600, got "
            + repr(float(value) if value != "abc" else value)
        ), err
        assert not any(bad.iterdir())
