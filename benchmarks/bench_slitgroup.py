"""Benchmark: read the CEERS trio and construct a ``SlitGroup``, slitcombine vs msaexp.

Both tools are timed in fresh processes, after their imports:

* ``first``: the first group built in the process (includes one-off lazy work such as
  asdf loading its plugins for slitcombine, or msaexp's bad-pixel tables and numba);
* ``warm``: the median of the following constructions (what a batch of many sources
  pays per group).

Two configurations are compared: ``default`` (each tool's defaults) and
``nobar_nosky`` (``undo_barshadow=False, sky_file=None``), where both tools do the same
work.  msaexp runs from a separate virtual environment (``--msaexp-python``) through
``_peer.run_peer``; without it only slitcombine is timed.

Usage::

    python benchmarks/bench_slitgroup.py [--msaexp-python /path/to/venv/bin/python] [--repeat 7]
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _peer  # noqa: E402

VARIANTS = {
    "default": {},
    "nobar_nosky": {"undo_barshadow": False, "sky_file": None},
}


def _child(files, repeat):
    """Runs in a fresh process: time slitcombine's SlitGroup per variant."""
    import logging

    import numpy as np

    logging.disable(logging.WARNING)
    t0 = time.perf_counter()
    from slitcombine import SlitGroup

    import_s = time.perf_counter() - t0
    out = {"import_s": import_s, "variants": {}}
    for name, opts in VARIANTS.items():
        times = []
        for _ in range(repeat):
            t = time.perf_counter()
            g = SlitGroup(files, "bench", **opts)
            times.append(time.perf_counter() - t)
        out["variants"][name] = {
            "first_s": times[0],
            "warm_median_s": float(np.median(times[1:])),
            "warm_min_s": float(np.min(times[1:])),
            "relative_nod_offset": [float(v) for v in g.relative_nod_offset],
            "slit_pixel_scale": g.slit_pixel_scale,
            "mask_sum": [int(v) for v in g.mask.sum(axis=1)],
        }
    print(json.dumps(out))


def main():
    run = _peer.fresh_child_main(__file__, __doc__, _child, default_repeat=7)
    if run is None:
        return
    args, files, ours = run
    print(f"slitcombine (import {ours['import_s']:.2f} s, not included)")
    for name, r in ours["variants"].items():
        print(
            f"  {name:12s} first {r['first_s']:.3f} s  warm median {r['warm_median_s']:.3f} s"
            f"  (min {r['warm_min_s']:.3f} s)"
        )
    if not args.msaexp_python:
        return
    peer = _peer.run_peer(
        args.msaexp_python,
        "slitgroup",
        [*files, "--repeat", str(args.repeat), "--variants", ",".join(VARIANTS)],
    )
    print(f"msaexp {peer['versions']['msaexp']} (import {peer['import_s']:.2f} s, not included)")
    for name in VARIANTS:
        t = peer["variants"][name]["timing"]
        warm = sorted(t["times_s"][1:])
        med = warm[len(warm) // 2]
        r = ours["variants"][name]
        print(
            f"  {name:12s} first {t['first_s']:.3f} s  warm median {med:.3f} s"
            f"  -> ratio first {t['first_s'] / r['first_s']:.1f}x,"
            f" warm {med / r['warm_median_s']:.1f}x"
        )
    res = peer["variants"]["nobar_nosky"]["result"]
    print(
        "  agreement: relative_nod_offset msaexp",
        [round(v, 3) for v in res["relative_nod_offset"]],
        "ours",
        [round(v, 3) for v in ours["variants"]["nobar_nosky"]["relative_nod_offset"]],
    )


if __name__ == "__main__":
    main()
