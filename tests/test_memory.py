"""Worker memory: a long-lived process running many batch tasks does not grow.

:func:`slitcombine.pipeline.batch.process_group` runs a few hundred times on one small simulated
group (default configuration: combine, figures written) in a fresh worker-like process
(spawned, :func:`slitcombine.pipeline.cluster._worker_setup` first, as on a dask worker), under a
new group name each time; the resident size after each group is recorded.  After a
warm-up, the largest RSS of the last groups must stay within 20% of the largest RSS of
the first ones.  The same measurement with every group's figures kept alive (a
deliberate leak of ~6 MiB per group) must fail that bound: the check can fail.
``benchmarks/worker_memory.py`` measures the same over thousands of groups.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import sys
from pathlib import Path

import pytest

from slitcombine.pipeline.task import _release_memory

WARMUP = 10  # groups before the reference window (imports, caches, first allocations)
WINDOW = 15  # groups in the reference window and in the final window
N_GROUPS = 70  # ~0.4 s each
BOUND = 0.20  # allowed growth of the final window's peak over the reference's


def _rss_mib():
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def _run_groups(folder, outdir, n, leak_figures=False):
    """In a fresh process: ``process_group`` ``n`` times; the RSS after each [MiB]."""
    import slitcombine.plots
    from slitcombine.pipeline.batch import process_group
    from slitcombine.pipeline.cluster import _worker_setup
    from slitcombine.pipeline.config import Config
    from slitcombine.pipeline.discovery import discover

    _worker_setup()
    kept = []
    if leak_figures:  # the deliberate leak: a reference to every figure saved
        save = slitcombine.plots.save_figure

        def keeping(fig, *args, **kwargs):
            kept.append((fig, list(fig.axes)))  # fig.clear() after saving: keep the axes
            return save(fig, *args, **kwargs)

        slitcombine.plots.save_figure = keeping
    groups, _ = discover([folder])
    row = groups[0].to_dict()
    config = Config.default()
    outdir = Path(outdir)
    rss = []
    for j in range(n):
        name = f"{row['group']}-{j:04d}"
        rec = process_group({**row, "group": name}, config, outdir)
        if rec["status"] != "ok":
            raise RuntimeError(f"group {name} failed: {rec['error']}")
        for p in [*outdir.glob(f"{name}.*"), outdir / "logs" / f"{name}.log"]:
            p.unlink(missing_ok=True)
        rss.append(_rss_mib())
    return rss


def _measure(folder, outdir, n, leak_figures=False):
    """:func:`_run_groups` in a spawned process (a clean, worker-like interpreter)."""
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=ctx) as pool:
        return pool.submit(_run_groups, str(folder), str(outdir), n, leak_figures).result()


def _growth(rss):
    """Peak RSS of the last ``WINDOW`` groups over that of the window after the warm-up."""
    ref = max(rss[WARMUP : WARMUP + WINDOW])
    final = max(rss[-WINDOW:])
    return final / ref - 1, ref, final


@pytest.fixture(scope="module")
def small_group(tmp_path_factory):
    from slitcombine.testing.simulate import simulate_observation

    folder = tmp_path_factory.mktemp("memory-data")
    simulate_observation(folder, grating="G235M", nx=48, n_crs=2, n_hot=2, n_dead=2, snr=15.0)
    return folder


@pytest.mark.skipif(sys.platform == "win32", reason="spawned worker RSS on POSIX only")
def test_worker_rss_bounded_over_many_groups(small_group, tmp_path):
    rss = _measure(small_group, tmp_path, N_GROUPS)
    growth, ref, final = _growth(rss)
    assert growth <= BOUND, (
        f"worker RSS grew {100 * growth:.1f}% over {N_GROUPS} groups: peak {ref:.1f} MiB "
        f"after {WARMUP + WINDOW} groups, {final:.1f} MiB over the last {WINDOW} "
        f"(RSS every 10 groups: {[round(r) for r in rss[::10]]})"
    )


@pytest.mark.skipif(sys.platform == "win32", reason="spawned worker RSS on POSIX only")
def test_worker_rss_check_detects_a_leak(small_group, tmp_path):
    """The check fails when every group's figures are kept (what a pyplot figure does)."""
    rss = _measure(small_group, tmp_path, WARMUP + 2 * WINDOW + 10, leak_figures=True)
    growth, ref, final = _growth(rss)
    assert growth > BOUND, (
        f"a leak of every figure went unnoticed: {100 * growth:.1f}% ({ref:.1f} -> {final:.1f} MiB)"
    )


def test_release_memory_runs_malloc_trim_on_glibc():
    import platform

    trimmed = _release_memory()
    if sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc":
        assert trimmed
    else:
        assert trimmed in (True, False)


def test_process_group_releases_memory(small_group, tmp_path, monkeypatch):
    import slitcombine.pipeline.batch
    import slitcombine.pipeline.task
    from slitcombine.pipeline.config import Config
    from slitcombine.pipeline.discovery import discover

    calls = []
    monkeypatch.setattr(slitcombine.pipeline.task, "_release_memory", lambda: calls.append(1))
    groups, _ = discover([small_group])
    config = Config.default().with_overrides(["batch.mode=prepare"])
    rec = slitcombine.pipeline.batch.process_group(groups[0].to_dict(), config, tmp_path)
    assert rec["status"] == "ok"
    assert calls == [1]


def test_local_cluster_workers_run_without_dask_profiler():
    """dask's profiler history (~400 MiB per busy worker) is off in a batch's LocalCluster."""
    from slitcombine.pipeline.cluster import connect

    session = connect(1, None, 30.0)
    try:
        running = session.client.run(
            lambda dask_worker: "profile" in dask_worker.periodic_callbacks
        )
    finally:
        session.close()
    assert list(running.values()) == [False]
