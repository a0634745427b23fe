#!/usr/bin/env python
"""CEERS PRISM 1345_933 with msaexp's calibration tables: which steps run, ours/msaexp per band.

Issue 17, item 5.  One run: msaexp 0.9.19 ``extract_spectra`` with its defaults (it
always reads its own package tables) as a subprocess of its own virtual environment
(``msaexp_peer.py extract --arrays``), and slitcombine's ``combine`` with its defaults,
twice in this process:

* **no tables**: ``$SLITCOMBINE_CALIB_DIR`` unset and an empty cache (what a fresh
  ``pip install`` gives);
* **tables**: the tables of ``slitcombine calib fetch`` (msaexp's published tables, the
  same files msaexp reads), fetched into a scratch cache (``--cache``; from
  ``--from-archive FILE`` or with pip);
* **tables without renormalisation**: the same with ``fix_prism_norm=False``, which
  separates the PRISM renormalisation from the other tables (bar shadow, bad pixels).

The band statistics are those of ``compare_ceers_fluxes.py`` (imported, not repeated):
``inslit_median`` (per-bin median of ours/msaexp of ``flux / path_corr``, msaexp
interpolated onto our valid bins), ``flux_integral`` (ratio of the band integrals of
``flux`` on each grid), ``path_corr_ratio`` and ``err_ratio``.  The steps that read a
table are read from each group's ``meta['steps']`` (ours) and from msaexp's SPEC1D header
(``SKY_FILE``, ``UNDO_BARSHADOW``) and its ``norm_corr`` column.

Usage::

    python benchmarks/ceers_with_tables.py [--from-archive msaexp-0.9.19.tar.gz]
        [--cache DIR] [--msaexp-python P]
        # -> benchmarks/results/ceers-with-tables-msaexp-<version>.json,
        #    docs/_static/calibration/ceers_tables_bands.csv

~1 minute on 2 cores (msaexp ~20-40 s, ours ~2 s per run); plus the fetch (62 MB
download with pip) unless the cache already holds the tables.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import math
import os
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _peer  # noqa: E402
import compare_ceers_fluxes as ccf  # noqa: E402

CSV_PATH = _peer.REPO_ROOT / "docs" / "_static" / "calibration" / "ceers_tables_bands.csv"
TABLE_STEPS = ("global_sky", "normalization", "barshadow", "extended_calibration", "sflat")
TABLE_STEPS += ("extra_dq",)


@contextmanager
def _environment(**values):
    """Set (str) or unset (None) environment variables for the duration."""
    old = {k: os.environ.get(k) for k in values}
    try:
        for k, v in values.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = str(v)
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _steps(group):
    out = {}
    for step in TABLE_STEPS:
        info = group.meta["steps"].get(step, {})
        file = info.get("file") or (info.get("files") or [None])[0]
        out[step] = {
            "status": info.get("status"),
            "table": None if file is None else Path(file).name,
            "reason": None if file else info.get("reason"),
        }
    out["meta"] = {
        k: group.meta.get(k)
        for k in ("sky_file", "own_barshadow", "wrapped_barshadow", "bar_correction")
    }
    out["normalization_median"] = group.meta["steps"].get("normalization", {}).get("median")
    out["extra_dq_rejected"] = group.meta["steps"].get("extra_dq", {}).get("rejected")
    return out


def _ours(files, cache, calib_dir=None, **options):
    import slitcombine

    with _environment(SLITCOMBINE_CACHE_DIR=cache, SLITCOMBINE_CALIB_DIR=calib_dir):
        result = slitcombine.combine(files, **options)
    return result, ccf.spectrum_arrays(result.spec)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--msaexp-python", default=None, help="python of the msaexp venv")
    parser.add_argument("--cache", default=None, help="cache folder of the tables (scratch)")
    parser.add_argument("--from-archive", default=None, help="msaexp archive to fetch from")
    parser.add_argument("--json", default=None, help="output JSON (default: results/)")
    parser.add_argument("--csv", default=None, help=f"band table CSV (default {CSV_PATH})")
    parser.add_argument("--timeout", type=float, default=900, help="peer time-out, s")
    args = parser.parse_args(argv)

    from slitcombine.io import calib

    files = [str(f) for f in _peer.ceers_files()]
    with tempfile.TemporaryDirectory(prefix="ceers_tables_") as tmp:
        cache = Path(args.cache or Path(tmp) / "cache")
        fetched = calib.fetch(archive=args.from_archive, cache=cache)
        manifest = fetched.manifest
        print(f"tables: msaexp {manifest['version']} in {fetched.folder}")
        ref = _peer.run_peer(
            args.msaexp_python,
            "extract",
            [*files, "--arrays", "--outdir", str(Path(tmp) / "msaexp")],
            timeout=args.timeout,
        )
        theirs = ccf.msaexp_arrays(ref)
        empty = Path(tmp) / "empty-cache"
        runs = {}
        for label, cache_dir, options in (
            ("no_tables", empty, {}),
            ("tables", cache, {}),
            ("tables_no_renormalisation", cache, {"fix_prism_norm": False}),
        ):
            result, ours = _ours(files, cache_dir, **options)
            rows = ccf.band_table(ours, theirs)
            lines = {
                name: {
                    "ours": ccf.line_measure(ours, spec),
                    "msaexp": ccf.line_measure(theirs, spec),
                }
                for name, spec in ccf.LINES.items()
            }
            runs[label] = {
                "options": options,
                "steps": _steps(result.group),
                "calibration": result.provenance.get("calibration"),
                "bands": rows,
                "lines": lines,
                "noise_scale": (result.params.get("noise_scale") or {}).get("scale"),
            }
    head = ref["spec1d"]["header"]
    norm = ref["spec1d"].get("arrays", {}).get("norm_corr")
    msaexp_steps = {
        "sky_file": head.get("SKY_FILE"),
        "has_sky_arrays": head.get("HAS_SKY_ARRAYS"),
        "undo_barshadow": head.get("UNDO_BARSHADOW"),
        "norm_corr_median": None
        if norm is None
        else float(np.nanmedian(np.array([np.nan if v is None else v for v in norm], float))),
    }
    version = ref["versions"].get("msaexp") or "unknown"
    out = {
        "what": "CEERS PRISM 1345_933: slitcombine (defaults, without and with msaexp's "
        "tables) / msaexp extract_spectra (defaults, its own tables), per band; see "
        "benchmarks/ceers_with_tables.py",
        "date_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "files": [Path(f).name for f in files],
        "tables": {
            k: manifest.get(k) for k in ("source", "version", "archive", "origin", "fetched")
        },
        "versions": {"slitcombine_side": ccf._versions(), "msaexp_side": ref["versions"]},
        "msaexp_steps": msaexp_steps,
        "runs": runs,
    }
    json_path = Path(args.json or ccf.RESULTS_DIR / f"ceers-with-tables-msaexp-{version}.json")
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(ccf._jsonable(out), indent=1, allow_nan=False) + "\n")
    csv_path = write_csv(args.csv or CSV_PATH, runs)
    _print(out)
    print(f"\nwrote {json_path}\nwrote {csv_path}")
    return 0


def _f(v, digits=3):
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return ""
    return f"{v:.{digits}f}"


def write_csv(path, runs):
    """Band table: the ratios ours/msaexp without and with the tables."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = [
        "band (um)",
        "bins",
        "in-slit median, no tables",
        "in-slit median, tables",
        "in-slit median, tables without renormalisation",
        "flux integral, no tables",
        "flux integral, tables",
        "path_corr ratio, tables",
        "err ratio, tables",
    ]
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        for a, b, c in zip(
            runs["no_tables"]["bands"],
            runs["tables"]["bands"],
            runs["tables_no_renormalisation"]["bands"],
            strict=True,
        ):
            w.writerow(
                [
                    b["band_um"],
                    b.get("n_bins", ""),
                    _f(a.get("inslit_median")),
                    _f(b.get("inslit_median")),
                    _f(c.get("inslit_median")),
                    _f(a.get("flux_integral")),
                    _f(b.get("flux_integral")),
                    _f(b.get("path_corr_ratio")),
                    _f(b.get("err_ratio")),
                ]
            )
    return path


def _print(out):
    print(f"\nmsaexp steps: {out['msaexp_steps']}")
    for label, run in out["runs"].items():
        print(f"\n== ours, {label}: calibration {run['calibration']['summary']}")
        for step in TABLE_STEPS:
            s = run["steps"][step]
            print(f"  {step:<22} {s['status']:<9} {s['table'] or s['reason'] or ''}")
        print(f"  meta {run['steps']['meta']}")
        print("  band       bins  in-slit med  flux integral  path_corr  err")
        for r in run["bands"]:
            print(
                f"  {r['band_um']:<9} {r.get('n_bins', 0):>5}  {_f(r.get('inslit_median')):>11}"
                f"  {_f(r.get('flux_integral')):>13}  {_f(r.get('path_corr_ratio')):>9}"
                f"  {_f(r.get('err_ratio')):>5}"
            )
        for name, v in run["lines"].items():
            ratio = v["ours"]["line_flux_ujy_um"] / v["msaexp"]["line_flux_ujy_um"]
            print(
                f"  {name}: S/N ours {v['ours']['sn']:.1f}, msaexp {v['msaexp']['sn']:.1f}; "
                f"line flux ratio {ratio:.3f}"
            )


if __name__ == "__main__":
    sys.exit(main())
