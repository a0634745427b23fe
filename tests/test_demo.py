"""``slitcombine demo``: the README's main job, end to end on simulated data."""

from __future__ import annotations

import json

from astropy.table import Table

from slitcombine.cli import main


def test_demo_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--output-dir", str(out), "--seed", "3"]) == 0
    printed = capsys.readouterr().out
    assert "result vs truth" in printed and str(out) in printed
    spec_file = out / "demo_prism-clear.spec.fits"
    assert spec_file.exists()
    assert (out / "demo_prism-clear.fnu.png").stat().st_size > 10_000
    spec = Table.read(spec_file, hdu="SPEC1D")
    assert str(spec["flux"].unit) == "uJy" and str(spec["wave"].unit) == "um"
    summary = json.loads((out / "demo_summary.json").read_text())
    m = summary["metrics"]
    # The demo's own comparison with the simulator's truth
    assert m["n_bins"] > 100
    assert abs(m["median_ratio"] - 1) < 0.03
    assert 0.8 < m["chi_std"] < 1.3
    assert len(summary["inputs"]) == 3
