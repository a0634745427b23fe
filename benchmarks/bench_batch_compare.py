"""Batch throughput of an earlier commit and of the working tree, in the same run.

The earlier commit is checked out in a temporary ``git worktree``; each tree runs its
own ``benchmarks/bench_batch.py`` (with ``PYTHONPATH`` pointing at its ``src``, which
comes before the editable install) as a separate process, alternating old and new, and
the best groups/s of each tree and worker count is kept.  The ratio new/old per worker
count and each tree's 1 -> 2 worker scaling are printed and written to
``benchmarks/results/batch-compare.json``.

    python benchmarks/bench_batch_compare.py --commit e0335e3 --n 1000 --k 100

Timings on a shared machine are noisy; the load average of each run is recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _run_tree(tree, args, label):
    """One ``bench_batch.py --json`` run of ``tree``; returns its JSON record."""
    env = dict(os.environ, PYTHONPATH=str(tree / "src"), MPLBACKEND="Agg")
    cmd = [
        sys.executable,
        str(tree / "benchmarks" / "bench_batch.py"),
        "--n",
        str(args.n),
        "--k",
        str(args.k),
        "--nx",
        str(args.nx),
        "--workers",
        args.workers,
        "--json",
    ]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=tree, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{label}: bench_batch failed:\n{proc.stderr[-3000:]}")
    for line in proc.stdout.splitlines():
        print(f"  [{label}] {line}")
    record = json.loads(proc.stdout.strip().splitlines()[-1])
    record["elapsed_s"] = round(time.perf_counter() - t0, 1)
    record["load_after"] = os.getloadavg()[0]
    return record


def _groups_per_s(record):
    """``{workers: groups/s}`` of a bench_batch record."""
    return {int(r["workers"]): float(r["groups_per_s"]) for r in record["runs"]}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--commit", required=True, help="the earlier commit (e.g. today's main)")
    p.add_argument("--n", type=int, default=1000, help="groups per run (default 1000)")
    p.add_argument("--k", type=int, default=100, help="distinct simulated observations")
    p.add_argument("--nx", type=int, default=200, help="cutout width [pixels]")
    p.add_argument("--workers", default="1,2", help="worker counts (default 1,2)")
    p.add_argument("--repeat", type=int, default=1, help="alternating repeats, best kept")
    args = p.parse_args(argv)
    sha = subprocess.run(
        ["git", "rev-parse", args.commit], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.strip()
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="bench_old.") as tmp:
        old_tree = Path(tmp) / "tree"
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(old_tree), sha],
            cwd=REPO,
            check=True,
            capture_output=True,
        )
        try:
            best = {"old": {}, "new": {}}
            runs = []
            for rep in range(args.repeat):
                for label, tree in (("old", old_tree), ("new", REPO)):
                    name = sha[:8] if label == "old" else "HEAD"
                    print(f"[{rep + 1}/{args.repeat}] {label} ({name})")
                    record = _run_tree(tree, args, label)
                    runs.append({"tree": label, **record})
                    for w, gps in _groups_per_s(record).items():
                        best[label][w] = max(best[label].get(w, 0.0), gps)
        finally:
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(old_tree)],
                cwd=REPO,
                check=False,
                capture_output=True,
            )
    summary = {
        "old_commit": sha,
        "new_commit": head,
        "n": args.n,
        "k": args.k,
        "nx": args.nx,
        "best_groups_per_s": best,
        "ratio_new_over_old": {
            w: round(best["new"][w] / best["old"][w], 3) for w in best["new"] if w in best["old"]
        },
        "scaling": {
            label: round(v[max(v)] / v[min(v)], 3) for label, v in best.items() if len(v) > 1
        },
        "cpus": os.cpu_count(),
        "runs": runs,
    }
    for w, r in summary["ratio_new_over_old"].items():
        print(
            f"{w} worker(s): old {best['old'][w]:.2f}, new {best['new'][w]:.2f} groups/s "
            f"-> {r:.2f}x"
        )
    for label, s in summary["scaling"].items():
        print(f"scaling 1 -> 2 workers, {label}: {s:.2f}x")
    out = REPO / "benchmarks" / "results" / "batch-compare.json"
    out.write_text(json.dumps(summary, indent=1) + "\n")
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
