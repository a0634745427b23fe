"""Benchmark: ``SlitGroup.fit_all_traces`` on the CEERS trio, slitcombine vs msaexp.

slitcombine is timed in-process: the group is built once (construction is not timed),
then ``fit_all_traces`` is timed ``--repeat`` times, the traces being reset with
``set_trace_coeffs()`` before each run (the state the fit starts from in a fresh group).
The first run is reported separately (lazy imports); the median of the others is the
number compared.  msaexp runs from its own virtual environment (``--msaexp-python``)
through ``_peer.run_peer(python, 'fit_all_traces', ...)``, which builds a fresh group
per repetition and times only ``fit_all_traces`` too; its first repetition includes
numba's compilation, so its median of repetitions 2.. is compared.

Configurations (same arguments on both sides):

* ``default``: ``fit_all_traces(niter=3)`` with every default (msaexp reads its default
  4-element theta as a "wings" model with sigma fixed at 0.2 px, so its sigma is not a
  width measurement there);
* ``degree1``: ``degree=1``, where msaexp fits a real width;
* ``extract``: what msaexp's ``extract_spectra`` uses: ``niter=4, degree=0,
  initial_sigma=7, with_bounds=False, tol=1e-8, ref_exp=calc_reference_exposure`` (msaexp
  also switches to its lookup-table PSF and to ``trace_from_yoffset=False,
  trace_with_ypos=True, undo_barshadow=False``; our group gets the same options, with
  our Gaussian PSF).

The machine is shared (2 cores, other jobs running): timings are noisy; compare the
medians of one run.

Usage::

    python benchmarks/bench_trace.py [--msaexp-python /root/msaexp-venv/bin/python] [--repeat 7]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _peer  # noqa: E402

#: name -> (SlitGroup options, fit_all_traces arguments, msaexp peer arguments)
CONFIGS = {
    "default": ({}, {"niter": 3}, ["--preset", "default", "--niter", "3"]),
    "degree1": (
        {},
        {"niter": 3, "degree": 1},
        ["--preset", "default", "--niter", "3", "--fit-kwargs", '{"degree": 1}'],
    ),
    "extract": (
        {"trace_from_yoffset": False, "trace_with_ypos": True, "undo_barshadow": False},
        {
            "niter": 4,
            "degree": 0,
            "initial_sigma": 7.0,
            "with_bounds": False,
            "tol": 1e-8,
            "ref_exp": "auto",
        },
        ["--preset", "extract"],
    ),
}


def _summary(fit, ref):
    f = fit[ref]
    return {
        "ref_exp": ref,
        "sigma_px": float(f["sigma"]),
        "offset_px": float(np.asarray(f["trace_coeffs"])[-1]),
        "trace_coeffs": [float(c) for c in f["trace_coeffs"]],
    }


def time_slitcombine(files, repeat):
    """In-process timings of fit_all_traces, per configuration."""
    logging.disable(logging.WARNING)
    from slitcombine import SlitGroup

    out = {}
    for name, (opts, fit_kw, _) in CONFIGS.items():
        t0 = time.perf_counter()
        g = SlitGroup(files, "bench", **opts)
        construct_s = time.perf_counter() - t0
        times = []
        for _ in range(repeat):
            g.set_trace_coeffs()
            t = time.perf_counter()
            fit = g.fit_all_traces(**fit_kw)
            times.append(time.perf_counter() - t)
        step = g.meta["steps"]["trace_fit"]
        out[name] = {
            "construction_s": construct_s,
            "first_s": times[0],
            "median_s": float(np.median(times[1:] if repeat > 1 else times)),
            "min_s": float(np.min(times)),
            "nfev": step["nfev"],
            "passes": step["passes"],
            **_summary(fit, step["ref_exp"]),
        }
    return out


def time_msaexp(python, files, repeat):
    """msaexp's numbers per configuration, from the peer."""
    out = {}
    for name, (_, _, peer_args) in CONFIGS.items():
        res = _peer.run_peer(
            python, "fit_all_traces", [*files, "--repeat", str(repeat), *peer_args], timeout=1800
        )
        t = res["timing"]
        later = t["times_s"][1:] if len(t["times_s"]) > 1 else t["times_s"]
        r = res["result"]
        ref = str(r["calc_reference_exposure"]) if name == "extract" else "2"
        g = r["groups"].get(ref) or next(iter(r["groups"].values()))
        out[name] = {
            "version": res["versions"]["msaexp"],
            "first_s": t["first_s"],
            "median_s": float(np.median(later)),
            "min_s": t["min_s"],
            "evaluations": r["objective_evaluations"],
            "sigma_px": g["sigma"],
            "theta": g["theta"],
            "theta_layout": g["theta_layout"],
        }
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--msaexp-python", default=None, help="python of an msaexp venv")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--json", default=None, help="also write the numbers to this file")
    parser.add_argument("files", nargs="*")
    args = parser.parse_args()
    files = args.files or [str(f) for f in _peer.ceers_files()]

    ours = time_slitcombine(files, args.repeat)
    print(f"slitcombine fit_all_traces, {len(files)} files, repeat {args.repeat}")
    for name, r in ours.items():
        print(
            f"  {name:8s} first {r['first_s'] * 1e3:7.1f} ms  median {r['median_s'] * 1e3:7.1f} ms"
            f"  ({r['nfev']} evaluations, {r['passes']} pass)  sigma {r['sigma_px']:.3f} px"
            f"  offset {r['offset_px']:+.3f} px (ref {r['ref_exp']})"
        )
    result = {"slitcombine": ours}
    if args.msaexp_python:
        theirs = time_msaexp(args.msaexp_python, files, args.repeat)
        result["msaexp"] = theirs
        print(f"msaexp {next(iter(theirs.values()))['version']} (peer process)")
        for name, r in theirs.items():
            ratio = r["median_s"] / ours[name]["median_s"]
            print(
                f"  {name:8s} first {r['first_s'] * 1e3:7.1f} ms  median "
                f"{r['median_s'] * 1e3:7.1f} ms  ({r['evaluations']} evaluations)  "
                f"sigma {r['sigma_px']:.3f} px  theta {np.round(r['theta'], 3).tolist()}"
                f"  -> slitcombine {ratio:.0f}x faster"
            )
            result.setdefault("ratio_median", {})[name] = ratio
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1, default=float))


if __name__ == "__main__":
    main()
