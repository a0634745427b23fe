"""Benchmark: the memoised conversion of slit WCS trees (``slitcombine.io._asdf_cache``).

In one process, alternating the cache off (``SLITCOMBINE_WCS_CACHE=0``: asdf converts
the tree, as before) and on, ``--repeat`` times:

* ``SlitExposure.wcs`` of the CEERS trio: exposure 1 with an empty cache, then
  exposures 2 and 3 (what the second and later files of a group pay), and the fraction
  of the tagged nodes of each tree that a converter had to build;
* the YAML parse of each file (``SlitExposure.asdf_tree``), which the cache does not
  touch, for comparison;
* ``SlitGroup(files, "x")`` warm (the second and later constructions in the process);
* a simulated batch: ``--n-groups`` sources of one visit and grating (3 exposures
  each, ``slitcombine.testing.simulate``), read group after group with a cache shared by the
  batch: WCS time per group and fraction of nodes built, first group and the others.

The machine is shared: compare the on/off numbers of the same run.

Usage::

    python benchmarks/bench_wcs_cache.py [--repeat 5] [--n-groups 6] [--grating PRISM]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _peer  # noqa: E402

ENV = "SLITCOMBINE_WCS_CACHE"


def _mode(on):
    if on:
        os.environ.pop(ENV, None)
    else:
        os.environ[ENV] = "0"


def _wcs_time(exp):
    """Seconds of ``exp.wcs`` after a fresh parse of its YAML (and that parse's time)."""
    exp.release_asdf()
    t0 = time.perf_counter()
    _ = exp.asdf_tree
    t1 = time.perf_counter()
    _ = exp.wcs
    return time.perf_counter() - t1, t1 - t0


def _built(before, after):
    seen = after["nodes_seen"] - before["nodes_seen"]
    built = after["nodes_converted"] - before["nodes_converted"]
    return built, seen


def bench_ceers(files, repeat):
    from slitcombine.io import _asdf_cache
    from slitcombine.io.reading import read_slit

    exps = [read_slit(f) for f in files]
    _wcs_time(exps[0])  # imports and asdf plugins, outside the timings
    times = {m: [[] for _ in exps] for m in ("off", "on")}
    parse = []
    built = None
    for _ in range(repeat):
        for mode in ("off", "on"):
            _mode(mode == "on")
            _asdf_cache.clear()
            fractions = []
            for i, e in enumerate(exps):
                before = _asdf_cache.cache_info()
                dt, dp = _wcs_time(e)
                times[mode][i].append(dt)
                parse.append(dp)
                fractions.append(_built(before, _asdf_cache.cache_info()))
            if mode == "on":
                built = fractions
    _mode(True)
    print(f"CEERS SlitExposure.wcs (ms, min / median of {repeat}; cache emptied before file 1)")
    for i in range(len(exps)):
        off, on = (1e3 * np.array(times[m][i]) for m in ("off", "on"))
        b, s = built[i]
        print(
            f"  exposure {i + 1}: off {off.min():6.1f} / {np.median(off):6.1f}   "
            f"on {on.min():6.1f} / {np.median(on):6.1f}   "
            f"nodes built {b} of {s} ({100 * b / max(s, 1):.0f}%)"
        )
    print(
        f"  YAML parse (asdf_tree), any file: min {1e3 * min(parse):.1f} ms, "
        f"median {1e3 * np.median(parse):.1f} ms"
    )
    # repeated reads of the same file (what a warm SlitGroup of the same files pays)
    warm = []
    for _ in range(repeat):
        warm.append(_wcs_time(exps[0])[0])
    print(
        f"  same file again (all nodes cached): min {1e3 * min(warm):.1f} ms, "
        f"median {1e3 * np.median(warm):.1f} ms"
    )


def bench_slitgroup(files, repeat):
    from slitcombine import SlitGroup
    from slitcombine.io import _asdf_cache

    SlitGroup(files, "x")  # first construction of the process, not timed
    times = {"off": [], "on": []}
    for _ in range(repeat):
        for mode in ("off", "on"):
            _mode(mode == "on")
            t = time.perf_counter()
            SlitGroup(files, "x")
            times[mode].append(time.perf_counter() - t)
    _mode(True)
    off, on = (np.array(times[m]) for m in ("off", "on"))
    info = _asdf_cache.cache_info()
    print(
        f"SlitGroup(files, 'x') warm (s, min / median of {repeat}): "
        f"off {off.min():.3f} / {np.median(off):.3f}   on {on.min():.3f} / {np.median(on):.3f}"
        f"   (cache: {info['entries']} nodes, {info['bytes'] / 2**20:.1f} MiB estimated)"
    )


def bench_batch(n_groups, grating):
    from slitcombine.io import _asdf_cache
    from slitcombine.io.reading import read_slit
    from slitcombine.testing.simulate import simulate_observation

    with tempfile.TemporaryDirectory() as tmp:
        groups = []
        for k in range(n_groups):
            sim = simulate_observation(
                Path(tmp) / f"g{k}",
                grating=grating,
                nx=120,
                seed=k,
                n_crs=0,
                source_id=100 + k,
                slitlet_id=20 + k,
                source_ypos=0.1 * (k % 3 - 1),
            )
            groups.append(sorted(str(f) for f in sim.files))
        for mode in ("off", "on"):
            _mode(mode == "on")
            _asdf_cache.clear()
            per_group = []
            for files in groups:
                exps = [read_slit(f) for f in files]
                before = _asdf_cache.cache_info()
                t = sum(_wcs_time(e)[0] for e in exps)
                per_group.append((t, *_built(before, _asdf_cache.cache_info())))
            first = per_group[0]
            rest = per_group[1:]
            line = (
                f"  cache {mode:3s}: group 1 {1e3 * first[0]:6.1f} ms"
                f", groups 2-{n_groups} median {1e3 * np.median([r[0] for r in rest]):6.1f} ms"
            )
            if mode == "on":
                b = sum(r[1] for r in rest)
                s = sum(r[2] for r in rest)
                line += (
                    f"; nodes built: group 1 {first[1]} of {first[2]}, "
                    f"groups 2-{n_groups} {b} of {s} ({100 * b / max(s, 1):.0f}%)"
                )
            print(line)
    _mode(True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--n-groups", type=int, default=6)
    parser.add_argument("--grating", action="append", default=None)
    parser.add_argument("files", nargs="*")
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    files = args.files or [str(f) for f in _peer.ceers_files()]
    bench_ceers(files, args.repeat)
    bench_slitgroup(files, args.repeat)
    for grating in args.grating or ["PRISM", "G395H"]:
        print(
            f"simulated batch, {args.n_groups} groups of 3 exposures, {grating}, one visit "
            "(WCS of the 3 exposures per group)"
        )
        bench_batch(args.n_groups, grating)


if __name__ == "__main__":
    main()
