"""Benchmark: the two PNG figures of a combined spectrum, stage by stage.

For each data set (the real CEERS PRISM trio in ``tests/data``, and the simulated
observation of ``slitcombine demo``) the source is combined twice in this process (the
second group is the warm one, as in a batch worker) and then each figure is made
``--repeat`` times after one untimed warm-up (matplotlib's import, font cache):

* ``build``: creating the :class:`~matplotlib.figure.Figure` (``result.plot()``,
  with the truth for the demo, and ``group.plot_2d_differences()``);
* ``draw``: ``slitcombine.plots.save_figure(fig, path, dpi)`` minus ``encode``: the
  Agg rendering of every artist (and the hand-over of its buffer);
* ``encode``: the time inside Pillow's ``Image.save`` during ``save_figure`` (the PNG
  compression and the file write; matplotlib's own PNG writer goes through it too);
* ``write_figures``: ``result.write(folder, figures=...)`` with the figures minus
  without them (what a batch task pays), median of ``--repeat`` pairs.

Medians (and minima) of the process's CPU time in milliseconds (the machine is
shared: wall times follow its load; the wall time of each figure and of the write is
given too), with the PNG size in pixels and bytes, go to
stdout and, under ``--label``, into ``benchmarks/results/figures.json`` (the other
labels already there are kept: run once with ``--label before`` on the old code and
once with ``--label after``).  The cyclic garbage collector is paused during the
timed calls, as ``CombineResult.write`` does.  ``dpi`` is ``save_figure``'s default
unless ``--dpi`` is given.

Usage::

    python benchmarks/bench_figures.py [--label after] [--repeat 7] [--dpi 100]

    # an earlier version, for a before/after pair measured in the same session
    git archive <commit> src | tar -x -C /tmp/old
    PYTHONPATH=/tmp/old/src python benchmarks/bench_figures.py --label before
"""

from __future__ import annotations

import argparse
import gc
import inspect
import json
import logging
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CEERS = REPO / "tests" / "data" / "ceers-prism-1345_933"
RESULTS = REPO / "benchmarks" / "results" / "figures.json"
#: The clock of every timing: the process's CPU time, not the wall time.  The machine
#: is shared (2 cores, often a load of 3-5): wall times of a 50 ms call move by 2-3x
#: with the load, CPU times by ~10%.  The figure code is single-threaded.
CLOCK = time.process_time


def _ms(values):
    return {
        "median_ms": round(1e3 * statistics.median(values), 2),
        "min_ms": round(1e3 * min(values), 2),
    }


def _timed(func):
    """``(func(), seconds, wall seconds)``: CPU seconds of this process (``CLOCK``) and
    the wall time."""
    gc.disable()
    try:
        t, w = CLOCK(), time.perf_counter()
        out = func()
        return out, CLOCK() - t, time.perf_counter() - w
    finally:
        gc.enable()


def _datasets(tmp):
    """``{name: (result, truth)}``: the CEERS trio and the demo simulation, each the
    second combination of its files in this process."""
    import numpy as np

    from slitcombine.pipeline.combine import combine
    from slitcombine.testing.simulate import simulate_observation

    out = {}
    files = sorted(str(f) for f in CEERS.glob("*_phot*.fits"))
    if files:
        combine(files, name="ceers")  # the cold one
        out["ceers"] = (combine(files, name="ceers"), None)
    sim = simulate_observation(
        Path(tmp) / "demo", grating="PRISM", n_shutters=3, n_nods=3, snr=15.0, n_crs=15, seed=1
    )
    combine(sim.files, name="demo")
    truth = (np.asarray(sim.truth["wave"], float), np.asarray(sim.truth["flux"], float))
    out["demo"] = (combine(sim.files, name="demo"), truth)
    return out


class _EncodeClock:
    """Context manager: the CPU time spent inside ``PIL.Image.Image.save`` (``seconds``).

    ``save_figure`` (and matplotlib's own PNG writer) encode through Pillow, so this is
    the PNG compression and file write; the rest of ``save_figure`` is the drawing.
    """

    def __enter__(self):
        from PIL import Image

        self.seconds = 0.0
        self._save = original = Image.Image.save

        def save(image, *args, **kwargs):
            t = CLOCK()
            try:
                return original(image, *args, **kwargs)
            finally:
                self.seconds += CLOCK() - t

        Image.Image.save = save
        return self

    def __exit__(self, *exc):
        from PIL import Image

        Image.Image.save = self._save
        return False


def _figure_stages(build, dpi, folder, repeat):
    """Median/min of build, draw and encode of one figure, its PNG size."""
    from slitcombine.plots import save_figure

    path = Path(folder) / "bench.png"
    times = {"build": [], "draw": [], "encode": []}
    walls = []
    for k in range(repeat + 1):
        fig, t_build, w_build = _timed(build)
        with _EncodeClock() as enc:
            _, t_save, w_save = _timed(lambda fig=fig: save_figure(fig, path, dpi=dpi))
        if k:  # the first is the warm-up
            times["build"].append(t_build)
            times["draw"].append(t_save - enc.seconds)
            times["encode"].append(enc.seconds)
            walls.append(w_build + w_save)
    from PIL import Image

    with Image.open(path) as im:
        size = list(im.size)
    stages = {name: _ms(values) for name, values in times.items()}
    total = [sum(v) for v in zip(*times.values(), strict=True)]
    return {
        **stages,
        "total": _ms(total),
        "total_wall": _ms(walls),
        "png_pixels": size,
        "png_bytes": path.stat().st_size,
    }


def _write_cost(result, folder, repeat):
    """Median of result.write with the figures minus without them, in ms (CPU and wall)."""
    cpu, wall, with_figs = [], [], []
    for _ in range(repeat):
        _, t1, w1 = _timed(lambda: result.write(folder, figures=True))
        _, t0, w0 = _timed(lambda: result.write(folder, figures=False))
        cpu.append(t1 - t0)
        wall.append(w1 - w0)
        with_figs.append(t1)
    return {
        **_ms(cpu),
        "wall_median_ms": _ms(wall)["median_ms"],
        "with_ms": _ms(with_figs)["median_ms"],
    }


def _git_commit():
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        return f"unknown ({exc})"
    return out.stdout.strip()


def main(argv=None):
    """Run the benchmark, print the table and update ``results/figures.json``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--label", default="current", help="key in figures.json")
    parser.add_argument("--repeat", type=int, default=7, help="timed repetitions")
    parser.add_argument("--dpi", type=float, default=None, help="default: save_figure's")
    parser.add_argument("--no-save", action="store_true", help="do not update figures.json")
    parser.add_argument(
        "--png-dir", default=None, help="also write each data set's two figures here (to look at)"
    )
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)

    from slitcombine import plots

    dpi = args.dpi or inspect.signature(plots.save_figure).parameters["dpi"].default
    import slitcombine

    record = {
        "commit": _git_commit(),
        # the package measured (another tree with PYTHONPATH, e.g. an older version)
        "package": str(Path(slitcombine.__file__).parent),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.machine()}, {platform.python_version()}",
        "load_average": list(__import__("os").getloadavg()),
        "clock": "time.process_time",
        "dpi": dpi,
        "repeat": args.repeat,
        "data": {},
    }
    print(f"figures at {dpi:g} dpi, medians of {args.repeat} warm runs (min), CPU ms")
    print(
        f"{'data':6s} {'figure':8s} {'build':>14s} {'draw':>14s} {'encode':>14s} "
        f"{'total':>14s} {'pixels':>10s} {'bytes':>8s}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for name, (result, truth) in _datasets(tmp).items():
            figs = {
                "summary": lambda r=result, t=truth: r.plot(truth=t),
                "diff2d": lambda r=result: r.group.plot_2d_differences(),
            }
            entry = {}
            for fig_name, build in figs.items():
                s = _figure_stages(build, dpi, tmp, args.repeat)
                entry[fig_name] = s
                cells = " ".join(
                    f"{s[k]['median_ms']:7.1f} ({s[k]['min_ms']:4.1f})"
                    for k in ("build", "draw", "encode", "total")
                )
                print(
                    f"{name:6s} {fig_name:8s} {cells} {'x'.join(map(str, s['png_pixels'])):>10s}"
                    f" {s['png_bytes']:8d}  (wall {s['total_wall']['median_ms']:.1f})"
                )
            entry["write_figures"] = _write_cost(result, tmp, args.repeat)
            w = entry["write_figures"]
            print(
                f"{name:6s} write(figures=True) - write(figures=False): {w['median_ms']:.1f} ms "
                f"(min {w['min_ms']:.1f}; wall {w['wall_median_ms']:.1f}); with figures "
                f"{w['with_ms']:.1f}"
            )
            record["data"][name] = entry
            if args.png_dir:
                Path(args.png_dir).mkdir(parents=True, exist_ok=True)
                for fig_name, build in figs.items():
                    suffix = "fnu" if fig_name == "summary" else "d2d"
                    plots.save_figure(build(), Path(args.png_dir) / f"{name}.{suffix}.png", dpi=dpi)
    if args.no_save:
        return 0
    old = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    old.setdefault("runs", {})[args.label] = record
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(old, indent=1) + "\n")
    print(f"wrote {RESULTS} [{args.label}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
