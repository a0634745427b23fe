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
    assert len(lines) == 3
    for i, line in enumerate(lines, start=1):
        assert "source 1345_933" in line and "slitlet 138" in line
        assert "PRISM/CLEAR" in line and "shape 25x341" in line
        assert f"nod position {i} of 3" in line and "exptime 1021.2 s" in line


def test_info_bad_file_one_line_error(tmp_path, capsys):
    bad = tmp_path / "bad.fits"
    bad.write_text("not fits")
    assert main(["info", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad.fits" in err[0] and "not a FITS file" in err[0]
