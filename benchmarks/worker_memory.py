"""Worker memory: RSS of one long-lived process running thousands of batch tasks.

K distinct observations are simulated once (PRISM, G140M, G235M, G395M; a few of them
full-size with ``--full``), then :func:`slitcombine.pipeline.batch.process_group` runs N times in
ONE process, cycling over them under fresh group names (every group is read, combined,
drawn and written for real), the way a dask worker runs them:

* ``--executor threads`` (default): this process, a ``ThreadPoolExecutor`` of
  ``--threads`` threads (``dask worker --nthreads 2``), after the worker set-up
  (:func:`slitcombine.pipeline.cluster._worker_setup`: imports and ``gc.freeze()``);
* ``--executor cluster``: a real ``distributed.LocalCluster(n_workers=1,
  threads_per_worker=--threads, processes=True)`` (a nanny and a worker process), the
  tasks sent with ``client.submit`` in chunks; the worker's RSS is read by ``client.run``.

Every ``--every`` groups it records the RSS (``VmRSS``), the peak RSS (``VmHWM``), and
with ``--diagnose`` the number
of gc-tracked objects and the types that grew most, the ``slitcombine`` log handlers,
pyplot's figures and the sizes of the package's ``functools`` caches; with
``--tracemalloc`` also the Python heap (started after ``--warmup`` groups; slows the
tasks several-fold).  At the end it
waits ``--idle`` seconds and records the idle RSS.  Results go to ``--json`` (default
``benchmarks/results/worker_memory.json``; one entry per run, keyed by ``--label``).

    python benchmarks/worker_memory.py --n 2000 --label threads          # ~25 min
    python benchmarks/worker_memory.py --n 2000 --executor cluster --label cluster
    python benchmarks/worker_memory.py --n 200 --full 4 --every 20 --label full
    python benchmarks/worker_memory.py --n 300 --diagnose --label diagnose

``--dask-profile`` leaves dask's statistical profiler on in the cluster's worker (dask's
default; a batch's LocalCluster turns it off, ``slitcombine.pipeline.cluster.WORKER_DASK_CONFIG``);
``--no-release`` replaces :func:`slitcombine.pipeline.task._release_memory` (the end-of-task
``gc.collect()`` and ``malloc_trim(0)``) by a no-op: the numbers before the fix.  The
data are simulated in a temporary folder, or kept in ``--keep`` (and reused from there
by a later run with the same ``--k``, ``--full`` and ``--nx``).
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import gc
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

GRATINGS = ("PRISM", "G140M", "G235M", "G395M")
DETECTORS = ("NRS1", "NRS2")
WCS_KEYS = ("entries", "bytes", "max_bytes")
RESULTS = Path(__file__).resolve().parent / "results" / "worker_memory.json"


def simulate(folder, k, nx, full):
    """``k`` distinct observations (``full`` of them with ``nx=None``); their GroupSpecs."""
    from slitcombine.pipeline.discovery import discover
    from slitcombine.testing.simulate import simulate_observation

    for i in range(k):
        if any(Path(folder).glob(f"jw0{4000 + i:04d}001001_*")):  # kept from an earlier run
            continue
        grating = GRATINGS[i % len(GRATINGS)]
        simulate_observation(
            folder,
            grating=grating,
            detector=DETECTORS[(i // len(GRATINGS)) % 2] if grating != "PRISM" else "NRS1",
            nx=None if i < full else nx,
            n_crs=20 if i < full else 5,
            seed=2000 + i,
            source_id=2000 + i,
            slitlet_id=200 + i,
            root=f"jw0{4000 + i:04d}001001",
            snr=10.0,
        )
    groups, skipped = discover([folder])
    if len(groups) != k or skipped:
        raise RuntimeError(f"expected {k} groups, found {len(groups)} (skipped {skipped})")
    return groups


def memory():
    """``(rss, peak)`` of this process [MiB], from ``/proc/self/status``."""
    out = {}
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                out[line.split(":")[0]] = int(line.split()[1]) / 1024
    return round(out["VmRSS"], 1), round(out["VmHWM"], 1)


def diagnostics(base_types=None):
    """Python-side counters of what a process keeps between tasks."""
    import tracemalloc

    import slitcombine

    info = {}
    gc.collect()
    objs = gc.get_objects()
    info["gc_objects"] = len(objs)
    types = collections.Counter(type(o).__name__ for o in objs)
    del objs
    if base_types is not None:
        grown = {t: n - base_types.get(t, 0) for t, n in types.items()}
        info["grown_types"] = dict(
            sorted(((t, d) for t, d in grown.items() if d > 0), key=lambda x: -x[1])[:15]
        )
    info["log_handlers"] = len(logging.getLogger("slitcombine").handlers)
    if "matplotlib.pyplot" in sys.modules:
        info["pyplot_figures"] = len(sys.modules["matplotlib.pyplot"].get_fignums())
    caches = {}
    for name, mod in list(sys.modules.items()):
        if not name.startswith("slitcombine") or mod is None:
            continue
        for attr, obj in list(vars(mod).items()):
            ci = getattr(obj, "cache_info", None)
            if callable(ci) and getattr(obj, "__module__", "") == name:
                caches[f"{name}.{attr}"] = ci().currsize
    info["caches"] = caches
    wcs_cache = sys.modules.get("slitcombine.io._asdf_cache")
    if wcs_cache is not None:
        info["wcs_cache"] = {k: v for k, v in wcs_cache.cache_info().items() if k in WCS_KEYS}
    info["gc_garbage"] = len(gc.garbage)
    info["gc_frozen"] = gc.get_freeze_count()
    info["slitcombine_modules"] = sum(m.startswith("slitcombine") for m in sys.modules)
    del slitcombine
    if tracemalloc.is_tracing():
        cur, _peak = tracemalloc.get_traced_memory()
        info["traced_mib"] = round(cur / 2**20, 2)
    return info, types


def _tracemalloc_top(snap0, limit=10):
    import tracemalloc

    snap = tracemalloc.take_snapshot()
    diff = snap.compare_to(snap0, "lineno")
    return [
        {"where": str(s.traceback), "size_kib": round(s.size_diff / 1024, 1), "count": s.count_diff}
        for s in diff[:limit]
    ]


def task_rows(groups, n, tag):
    """``n`` task rows cycling over ``groups`` under fresh names."""
    for j in range(n):
        g = groups[j % len(groups)]
        row = g.to_dict()
        row["group"] = f"{g.name}-{tag}{j:05d}"
        yield j, row


def clean_outputs(outdir, row):
    """Remove a group's products (a worker's disk is not what is measured)."""
    for p in Path(outdir).glob(f"{row['group']}.*"):
        p.unlink(missing_ok=True)
    (Path(outdir) / "logs" / f"{row['group']}.log").unlink(missing_ok=True)


def _no_release():
    """Stand-in for ``slitcombine.pipeline.task._release_memory`` (``--no-release``)."""
    return False


def _switch_release(off):
    """With ``off``, the end-of-task memory release of this process becomes a no-op."""
    import slitcombine.pipeline.task

    if off:
        slitcombine.pipeline.task._release_memory = _no_release
    return slitcombine.pipeline.task._release_memory.__name__


def run_threads(groups, config, outdir, args):
    """All tasks in this process on a thread pool; the samples."""
    import tracemalloc

    from slitcombine.pipeline.batch import process_group
    from slitcombine.pipeline.cluster import _worker_setup

    _worker_setup()
    _switch_release(args.no_release)
    samples = []
    failed = 0
    base_types = None
    snap0 = None
    t0 = time.perf_counter()

    def task(row):
        rec = process_group(row, config, outdir)
        clean_outputs(outdir, row)
        return rec

    done = 0
    with concurrent.futures.ThreadPoolExecutor(args.threads) as pool:
        rows = task_rows(groups, args.n, "t")
        while done < args.n:
            chunk = [row for _, (_j, row) in zip(range(args.every), rows, strict=False)]
            for rec in pool.map(task, chunk):
                failed += rec["status"] != "ok"
                if rec["status"] != "ok" and failed <= 3:
                    print(f"  failed {rec['group']}: {rec['error']}", file=sys.stderr)
            done += len(chunk)
            rss, peak = memory()
            s = {"groups": done, "rss_mib": rss, "peak_mib": peak, "failed": failed}
            s["elapsed_s"] = round(time.perf_counter() - t0, 1)
            if args.diagnose:
                if args.tracemalloc and done >= args.warmup and snap0 is None:
                    tracemalloc.start(1)
                    snap0 = tracemalloc.take_snapshot()
                info, types = diagnostics(base_types)
                if base_types is None and done >= args.warmup:
                    base_types = types
                s.update(info)
            samples.append(s)
            print(json.dumps({k: v for k, v in s.items() if k != "grown_types"}), flush=True)
    extra = {}
    if args.diagnose and snap0 is not None:
        extra["tracemalloc_top"] = _tracemalloc_top(snap0)
        extra["grown_types"] = samples[-1].get("grown_types")
    return samples, extra


def _worker_memory():
    rss, peak = memory()
    return {"rss_mib": rss, "peak_mib": peak, "pid": os.getpid()}


def _worker_diagnostics(dask_worker=None):
    """On the worker: :func:`diagnostics` plus the worker's own task and thread counts."""
    import threading

    base = getattr(dask_worker, "_worker_memory_types", None)
    info, types = diagnostics(base)
    if base is None:
        dask_worker._worker_memory_types = types
    info["threads"] = threading.active_count()
    info["worker_tasks"] = len(dask_worker.state.tasks)
    info["worker_data"] = len(dask_worker.data)
    info["profile_history"] = len(dask_worker.profile_history)
    return info


def _profiler_on(dask_worker=None):
    """On the worker: whether dask's statistical profiler runs."""
    return "profile" in dask_worker.periodic_callbacks


def _worker_env():
    return {k: v for k, v in os.environ.items() if k.startswith("MALLOC")}


def run_cluster(groups, config, outdir, args):
    """All tasks on one LocalCluster worker process; the samples."""
    import dask
    from distributed import Client, LocalCluster, wait

    from slitcombine.pipeline.batch import SlitcombineWorkerSetup, process_group
    from slitcombine.pipeline.cluster import WORKER_DASK_CONFIG

    def task(row):
        rec = process_group(row, config, outdir)
        clean_outputs(outdir, row)
        return rec

    samples = []
    failed = 0
    scratch = tempfile.mkdtemp(prefix="worker_memory-dask-")
    settings = {} if args.dask_profile else WORKER_DASK_CONFIG  # as run_batch's LocalCluster
    with dask.config.set(settings):
        cluster = LocalCluster(
            n_workers=1,
            threads_per_worker=args.threads,
            processes=True,
            dashboard_address=":0",
            scheduler_kwargs={"dashboard": False},
            silence_logs=logging.ERROR,
            local_directory=scratch,
        )
    client = Client(cluster)
    extra = {}
    try:
        client.register_plugin(SlitcombineWorkerSetup(), name=SlitcombineWorkerSetup.name)
        extra["worker_malloc_env"] = next(iter(client.run(_worker_env).values()))
        extra["release"] = next(iter(client.run(_switch_release, args.no_release).values()))
        extra["dask_profiler"] = next(iter(client.run(_profiler_on).values()))
        t0 = time.perf_counter()
        rows = task_rows(groups, args.n, "c")
        done = 0
        while done < args.n:
            chunk = [row for _, (_j, row) in zip(range(args.every), rows, strict=False)]
            futs = [client.submit(task, row, pure=False) for row in chunk]
            wait(futs)
            for f in futs:
                rec = f.result()
                failed += rec["status"] != "ok"
                if rec["status"] != "ok" and failed <= 3:
                    print(f"  failed {rec['group']}: {rec['error']}", file=sys.stderr)
            del futs
            done += len(chunk)
            mem = next(iter(client.run(_worker_memory).values()))
            s = {"groups": done, "rss_mib": mem["rss_mib"], "peak_mib": mem["peak_mib"]}
            s.update(failed=failed, elapsed_s=round(time.perf_counter() - t0, 1))
            if args.diagnose:
                s.update(next(iter(client.run(_worker_diagnostics).values())))
            samples.append(s)
            print(json.dumps(s), flush=True)
        time.sleep(args.idle)
        mem = next(iter(client.run(_worker_memory).values()))
        extra["idle"] = {"after_s": args.idle, "rss_mib": mem["rss_mib"]}
    finally:
        client.close()
        cluster.close()
        shutil.rmtree(scratch, ignore_errors=True)
    return samples, extra


def summarise(samples):
    """RSS and peak RSS at the marks 100, 500, 1000, 2000 groups (nearest sample)."""
    out = {}
    for mark in (50, 100, 200, 500, 1000, 2000):
        near = [s for s in samples if s["groups"] >= mark]
        if near and near[0]["groups"] - mark < max(50, mark // 10):
            out[str(mark)] = {"rss_mib": near[0]["rss_mib"], "peak_mib": near[0]["peak_mib"]}
    if samples:
        last = samples[-1]
        out["last"] = {
            "groups": last["groups"],
            "rss_mib": last["rss_mib"],
            "peak_mib": last["peak_mib"],
        }
    if "100" in out and samples:
        out["peak_growth_vs_100"] = round(samples[-1]["peak_mib"] / out["100"]["peak_mib"] - 1, 3)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=2000, help="tasks (default 2000)")
    p.add_argument("--k", type=int, default=16, help="distinct simulated observations")
    p.add_argument("--full", type=int, default=0, help="of which full-size (nx=None)")
    p.add_argument("--nx", type=int, default=120, help="cutout width of the others [pixels]")
    p.add_argument("--threads", type=int, default=2, help="worker threads (default 2)")
    p.add_argument("--every", type=int, default=50, help="sample every N groups")
    p.add_argument("--warmup", type=int, default=100, help="diagnostics baseline after N")
    p.add_argument("--executor", choices=("threads", "cluster"), default="threads")
    p.add_argument("--diagnose", action="store_true", help="tracemalloc, gc and cache counts")
    p.add_argument("--tracemalloc", action="store_true", help="with --diagnose (slow)")
    p.add_argument("--no-release", action="store_true", help="no end-of-task release")
    p.add_argument(
        "--dask-profile", action="store_true", help="cluster: dask's profiler on (its default)"
    )
    p.add_argument("--idle", type=float, default=10.0, help="idle wait at the end [s]")
    p.add_argument("--label", default=None, help="key of this run in the JSON file")
    p.add_argument("--json", type=Path, default=RESULTS, help="results file (merged)")
    p.add_argument("--no-json", action="store_true", help="do not write the results file")
    p.add_argument("--keep", default=None, help="keep the data in this folder")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    import distributed  # noqa: F401 - configures its loggers on import; quieten them after

    logging.getLogger("distributed").setLevel(logging.ERROR)

    from slitcombine import __version__
    from slitcombine.pipeline.config import Config

    base = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="worker_memory."))
    base.mkdir(parents=True, exist_ok=True)
    try:
        t0 = time.perf_counter()
        groups = simulate(base / "data", args.k, args.nx, args.full)
        print(f"simulated {args.k} observations in {time.perf_counter() - t0:.1f} s", flush=True)
        config = Config.default()
        outdir = base / "out"
        outdir.mkdir(exist_ok=True)
        runner = run_threads if args.executor == "threads" else run_cluster
        samples, extra = runner(groups, config, str(outdir), args)
        if args.executor == "threads":
            time.sleep(args.idle)
            extra["idle"] = {"after_s": args.idle, "rss_mib": memory()[0]}
        result = {
            "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
            "slitcombine": __version__,
            "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "release": not args.no_release,
            "dask_profile": args.dask_profile if args.executor == "cluster" else None,
            "env": {k: v for k, v in os.environ.items() if k.startswith("MALLOC")},
            "loadavg": os.getloadavg(),
            "summary": summarise(samples),
            **extra,
            "samples": samples,
        }
        print(json.dumps(result["summary"]))
        print(f"idle RSS {extra['idle']['rss_mib']} MiB")
        if not args.no_json:
            data = json.loads(args.json.read_text()) if args.json.exists() else {}
            data[args.label or f"{args.executor}-{args.n}"] = result
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(data, indent=1) + "\n")
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
