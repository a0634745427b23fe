"""Benchmark: full extraction of the CEERS trio, slitcombine vs msaexp ``extract_spectra``.

slitcombine's full path (read -> SlitGroup -> trace fit -> pixel table -> 2D resampling
-> optimal 1D -> ``.spec.fits`` + PNG figures) is timed

* in-process, in a fresh child process after the imports: ``first`` (the first source of
  the process) and ``warm`` (median of the next ones), with and without figures;
* as a whole process: ``slitcombine extract FILES --output-dir D`` wall time, the median
  of ``PROCESS_REPEAT`` runs (interpreter start, imports, work, writing).

msaexp runs from its own virtual environment (``--msaexp-python``) through
``_peer.run_peer``: ``extract_spectra`` in-process (the peer's ``timing``) and the whole
peer process wall time (``--repeat 1``: interpreter, imports, one extraction, its
figures and files; the median of ``PROCESS_REPEAT`` processes).  Peak RSS is
``ru_maxrss`` of each process.  The [OIII] and H-alpha peak S/N of both products are
printed too.

The machine is shared (2 cores, other jobs running): timings are noisy.

Usage::

    python benchmarks/bench_extract.py [--msaexp-python /path/to/venv/bin/python] [--repeat 5]
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _peer  # noqa: E402

LINES = {"OIII_5008": 2.62, "Halpha": 3.43}


def _line_sn(wave, flux, err, half_width=0.05):
    import numpy as np

    with np.errstate(all="ignore"):
        sn = np.asarray(flux, float) / np.asarray(err, float)
    out = {}
    for name, centre in LINES.items():
        sel = np.abs(np.asarray(wave, float) - centre) < half_width
        i = int(np.nanargmax(np.where(sel, sn, -np.inf)))
        out[name] = {"wave": float(wave[i]), "sn": float(sn[i])}
    return out


def _child(files, repeat):
    """In a fresh process: time the whole path ``repeat`` times, with and without figures."""
    import logging
    import resource

    import numpy as np

    logging.disable(logging.WARNING)
    t0 = time.perf_counter()
    from slitcombine.pipeline.combine import combine

    import_s = time.perf_counter() - t0
    out = {"import_s": import_s, "runs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for label, figures in (("with_figures", True), ("no_figures", False)):
            times, steps = [], []
            for _ in range(repeat):
                t = time.perf_counter()
                result = combine(files, name="bench")
                t1 = time.perf_counter()
                result.write(tmp, figures=figures)
                times.append(time.perf_counter() - t)
                steps.append({"combine_s": t1 - t, "write_s": time.perf_counter() - t1})
            out["runs"][label] = {
                "first_s": times[0],
                "warm_median_s": float(np.median(times[1:])) if repeat > 1 else times[0],
                "warm_min_s": float(np.min(times[1:])) if repeat > 1 else times[0],
                "last_breakdown": steps[-1],
            }
    spec = result.spec
    out["lines"] = _line_sn(spec["wave"].value, spec["flux"].value, spec["err"].value)
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(json.dumps(out))


#: Whole-process runs of each tool; the median wall time is reported (one run moves by
#: ~10% on this shared machine).
PROCESS_REPEAT = 3


def _whole_process_ours(files):
    """Wall time and peak RSS (MiB, ``ru_maxrss`` / 1024) of one ``slitcombine extract`` process.

    ``os.wait4`` gives the rusage of that child alone (``RUSAGE_CHILDREN`` would report
    the largest of every earlier child, e.g. the in-process run).
    """
    import os

    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", "slitcombine.cli", "extract", *files, "--output-dir", tmp],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t
        proc.returncode = os.waitstatus_to_exitcode(status)
        err = proc.stderr.read().decode(errors="replace")
        proc.stderr.close()
        if proc.returncode != 0:
            raise RuntimeError(f"slitcombine extract failed ({proc.returncode}): {err[-2000:]}")
    return wall, usage.ru_maxrss / 1024.0


def _median(values):
    values = sorted(values)
    return values[len(values) // 2]


def _whole_processes(files, msaexp_python):
    """``PROCESS_REPEAT`` whole processes of each tool, interleaved (ours, then msaexp's)
    so that a slow spell of the shared machine hits both sides alike.

    Returns ``(walls_ours, rss_ours, walls_peer, rss_peer)``: wall times (s) and the
    largest peak RSS (MiB); the msaexp lists are empty without ``msaexp_python``.
    """
    walls_ours, walls_peer, rss_ours, rss_peer = [], [], 0.0, 0.0
    for _ in range(PROCESS_REPEAT):
        wall, rss = _whole_process_ours(files)
        walls_ours.append(wall)
        rss_ours = max(rss_ours, rss)
        if msaexp_python:
            t0 = time.perf_counter()
            single = _peer.run_peer(msaexp_python, "extract", [*files, "--repeat", "1"])
            walls_peer.append(time.perf_counter() - t0)
            rss_peer = max(rss_peer, single["peak_rss_mb"])
    return walls_ours, rss_ours, walls_peer, rss_peer


def main():
    run = _peer.fresh_child_main(__file__, __doc__, _child, default_repeat=5)
    if run is None:
        return
    args, files, ours = run
    walls_ours, rss_cli, walls_peer, rss_peer = _whole_processes(files, args.msaexp_python)
    wall_ours = _median(walls_ours)
    print(f"slitcombine (import {ours['import_s']:.2f} s, not in the in-process times)")
    for label, r in ours["runs"].items():
        print(
            f"  in-process {label:12s} first {r['first_s']:.3f} s  warm median "
            f"{r['warm_median_s']:.3f} s (min {r['warm_min_s']:.3f} s)  last: "
            + ", ".join(f"{k} {v:.3f}" for k, v in r["last_breakdown"].items())
        )
    print(
        f"  whole process (CLI extract, with figures): median {wall_ours:.2f} s of "
        f"{', '.join(f'{w:.2f}' for w in walls_ours)}"
    )
    print(
        f"  peak RSS: in-process child {ours['peak_rss_mb']:.0f} MiB, "
        f"CLI {rss_cli:.1f} MiB ({rss_cli * 1.048576:.1f} MB; largest of the processes)"
    )
    print(
        "  lines: "
        + ", ".join(
            f"{k} S/N {v['sn']:.1f} at {v['wave']:.4f} um" for k, v in ours["lines"].items()
        )
    )
    if not args.msaexp_python:
        return
    peer = _peer.run_peer(args.msaexp_python, "extract", [*files, "--repeat", str(args.repeat)])
    t = peer["timing"]
    med = _median(t["times_s"][1:] or [t["first_s"]])
    wall_peer = _median(walls_peer)
    print(f"msaexp {peer['versions']['msaexp']} (import {peer['import_s']:.2f} s, not included)")
    print(f"  in-process extract_spectra first {t['first_s']:.3f} s  warm median {med:.3f} s")
    print(
        f"  whole process (peer, 1 extraction): median {wall_peer:.2f} s of "
        f"{', '.join(f'{w:.2f}' for w in walls_peer)} (interleaved with ours)"
    )
    print(f"  peak RSS: {rss_peer:.0f} MiB (largest of the processes)")
    lines = peer.get("spec1d", {}).get("lines", {})
    if lines:
        print(
            "  lines: "
            + ", ".join(
                f"{k} S/N {v['peak_sn']['sn']:.1f} at {v['peak_sn']['wave']:.4f} um"
                for k, v in lines.items()
                if "peak_sn" in v
            )
        )
    ow = ours["runs"]["with_figures"]
    pairs = ", ".join(f"{b / a:.1f}x" for a, b in zip(walls_ours, walls_peer, strict=True))
    print(
        "ratios (msaexp / slitcombine, both with figures): "
        f"in-process first {t['first_s'] / ow['first_s']:.1f}x, "
        f"warm {med / ow['warm_median_s']:.1f}x; whole process {wall_peer / wall_ours:.1f}x "
        f"(pairs {pairs})"
    )


if __name__ == "__main__":
    main()
