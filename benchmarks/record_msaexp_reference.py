#!/usr/bin/env python
"""Record msaexp's reference numbers and timings on the CEERS PRISM test data.

Runs every subcommand of ``benchmarks/msaexp_peer.py`` with the msaexp interpreter (as a
subprocess, see ``_peer.run_peer``) and writes one JSON file, by default
``benchmarks/results/msaexp-<version>-ceers.json``.  The file is a record of what msaexp did on
one machine, not a set of test expectations.

Usage::

    python benchmarks/record_msaexp_reference.py --msaexp-python /root/msaexp-venv/bin/python
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

from _peer import ceers_files, default_msaexp_python, run_peer  # benchmarks/ is sys.path[0]

#: Values quoted by /work/shared/docs/msaexp-study.md for msaexp 0.9.19 + jwst 1.16.1.
STUDY = {
    "n_exposures": 3,
    "n_groups": 1,
    "relative_nod_offset": [0.0, 5.10, -5.10],
    "calc_reference_exposure": 2,
    "slit_pixel_scale": 0.10377,
    "slit_shutter_scale": 0.22684,
    "nod_offset": 5.098,
    "extract_sigma": 0.352,
    "extract_offset": 0.293,
    "init_cold_s": 4.7,
    "init_warm_s": 2.5,
    "extract_wall_s": 7.7,
}


def _close(a, b, tol):
    return a is not None and b is not None and abs(a - b) <= tol


def _checks(sg, fitx, ext):
    default = sg["variants"]["default"]["result"]
    nod = default["relative_nod_offset"]
    fit_ref = fitx["result"]["groups"][str(fitx["result"]["calc_reference_exposure"])]
    hdr = ext["spec1d"]["header"]
    checks = {
        "n_exposures": {"measured": default["N"], "study": STUDY["n_exposures"]},
        "n_groups_extract": {"measured": len(ext["groups"]), "study": STUDY["n_groups"]},
        "relative_nod_offset": {
            "measured": nod,
            "study": STUDY["relative_nod_offset"],
            "tolerance": 0.01,
            "match": len(nod) == 3
            and all(
                _close(a, b, 0.01) for a, b in zip(nod, STUDY["relative_nod_offset"], strict=True)
            ),
        },
        "calc_reference_exposure": {
            "measured": default["calc_reference_exposure"],
            "study": STUDY["calc_reference_exposure"],
        },
        "slit_pixel_scale": {
            "measured": default["slit_pixel_scale"],
            "study": STUDY["slit_pixel_scale"],
            "tolerance": 5e-6,
            "match": _close(default["slit_pixel_scale"], STUDY["slit_pixel_scale"], 5e-6),
        },
        "slit_shutter_scale": {
            "measured": default["slit_shutter_scale"],
            "study": STUDY["slit_shutter_scale"],
            "tolerance": 5e-6,
            "match": _close(default["slit_shutter_scale"], STUDY["slit_shutter_scale"], 5e-6),
        },
        "nod_offset": {
            "measured": default["nod_offset"],
            "study": STUDY["nod_offset"],
            "tolerance": 5e-4,
            "match": _close(default["nod_offset"], STUDY["nod_offset"], 5e-4),
        },
        "extract_fit_sigma": {
            "measured_fit_all_traces_preset_extract": fit_ref["sigma"],
            "measured_extract_header_SIGMA": hdr.get("SIGMA"),
            "study": STUDY["extract_sigma"],
        },
        "extract_fit_offset": {
            "measured_fit_all_traces_preset_extract": fit_ref["trace_coeffs"][0],
            "measured_extract_header_OFFC0_0": ext["spec1d"]["header_fit"].get("OFFC0_0"),
            "study": STUDY["extract_offset"],
        },
        "slitgroup_init_s": {
            "measured_cold": sg["variants"]["default"]["timing"]["first_s"],
            "measured_warm_min": sg["variants"]["default"]["timing"]["min_s"],
            "study_cold": STUDY["init_cold_s"],
            "study_warm": STUDY["init_warm_s"],
        },
        "extract_wall_s": {
            "measured_first": ext["timing"]["first_s"],
            "measured_min": ext["timing"]["min_s"],
            "study": STUDY["extract_wall_s"],
        },
    }
    for key in ("n_exposures", "n_groups_extract", "calc_reference_exposure"):
        checks[key]["match"] = checks[key]["measured"] == checks[key]["study"]
    return checks


def main(argv=None):
    here = Path(__file__).resolve().parent
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--msaexp-python", default=default_msaexp_python())
    p.add_argument("--output", default=None, help="output JSON (default: results/msaexp-...)")
    p.add_argument("--repeat-slitgroup", type=int, default=5)
    p.add_argument("--repeat-fit", type=int, default=3)
    p.add_argument("--repeat-extract", type=int, default=3)
    p.add_argument("--timeout", type=float, default=1800)
    p.add_argument("--machine-note", default=None, help="free text stored in the record")
    args = p.parse_args(argv)

    files = [str(f) for f in ceers_files()]
    py = args.msaexp_python
    peer = "benchmarks/msaexp_peer.py"
    runs, commands = {}, {}

    def run(key, sub, extra):
        commands[key] = " ".join([py, peer, sub, "<3 CEERS files>", shlex.join(extra)])
        print(f"[{time.strftime('%H:%M:%S')}] {commands[key]}", file=sys.stderr)
        runs[key] = run_peer(py, sub, [*files, *extra], timeout=args.timeout)

    run(
        "slitgroup",
        "slitgroup",
        [
            "--repeat",
            str(args.repeat_slitgroup),
            "--variants",
            "default,nobar_nosky,extract_like",
        ],
    )
    run("fit_all_traces", "fit_all_traces", ["--niter", "3", "--repeat", str(args.repeat_fit)])
    # degree=2 (the default) gives msaexp a 4-element theta, which its objective function
    # reads as a "wings" model with fixed sigma; degree=1 is a plain [10*sigma, c1, c0] fit.
    run(
        "fit_all_traces_degree1",
        "fit_all_traces",
        ["--niter", "3", "--fit-kwargs", '{"degree": 1}', "--repeat", str(args.repeat_fit)],
    )
    run(
        "fit_all_traces_preset_extract",
        "fit_all_traces",
        ["--preset", "extract", "--repeat", str(args.repeat_fit)],
    )
    with tempfile.TemporaryDirectory(prefix="msaexp_extract_") as outdir:
        run("extract", "extract", ["--outdir", outdir, "--repeat", str(args.repeat_extract)])
        runs["extract"]["outdir"] = "<temporary directory, removed>"

    version = runs["slitgroup"]["versions"]["msaexp"]
    record = {
        "description": (
            "Reference measurements of msaexp.slit_combine on the CEERS PRISM 3-nod test data "
            "(jw01345062001 nrs2, slitlet 138, source 1345_933). A record of one machine, "
            "not test expectations."
        ),
        "recorded_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine_note": args.machine_note,
        "files": [Path(f).name for f in files],
        "versions": runs["slitgroup"]["versions"],
        "machine": runs["slitgroup"]["machine"],
        "commands": commands,
        "study_checks": _checks(
            runs["slitgroup"], runs["fit_all_traces_preset_extract"], runs["extract"]
        ),
        "runs": runs,
    }
    out = Path(args.output) if args.output else here / "results" / f"msaexp-{version}-ceers.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {out}", file=sys.stderr)
    print(json.dumps(record["study_checks"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
