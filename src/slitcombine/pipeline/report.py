"""What a batch reports at its end: ``summary.ecsv``, ``index.html`` and the closing lines.

:func:`write_reports` orders the groups' records, counts them and writes the summary
table (:func:`write_summary`) and the static page (:func:`write_index`);
:func:`warn_missing_tables` says once per run which groups lacked calibration tables.
"""

from __future__ import annotations

import html
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from slitcombine._atomic import atomic_write_text
from slitcombine._version import __version__
from slitcombine.pipeline.sidecar import read_sidecar, resumable

log = logging.getLogger(__name__)

__all__ = [
    "SUMMARY_COLUMNS",
    "BatchResult",
    "write_reports",
    "warn_missing_tables",
    "write_summary",
    "write_index",
]

#: Columns of ``summary.ecsv``.
SUMMARY_COLUMNS = (
    "group",
    "status",
    "resumed",
    "bug",
    "error_type",
    "error",
    "sn_median",
    "sn_max",
    "err_scale",
    "warnings",
    "first_warning",
    "runtime",
    "cpu_time",
    "n_exposures",
    "grating",
    "filter",
    "source_id",
    "source_name",
    "visit",
    "outputs",
    "stale_outputs",
    "stale_from",
    "figure",
    "log",
    "worker",
)


@dataclass
class BatchResult:
    """What :func:`run_batch` did.

    Attributes
    ----------
    records : list of dict
        One per group (see :func:`process_group`), plus ``resumed``.
    summary_path, index_path, manifest_path, config_path : pathlib.Path
    wall_time : float
        Seconds from the first submission to the last result.
    startup_time : float
        Seconds to start (or connect to) the cluster and set up its workers.
    interrupted : bool
        The run was interrupted (Ctrl-C); unfinished groups have status ``not run``.
    """

    records: list
    summary_path: Path
    index_path: Path
    manifest_path: Path
    config_path: Path
    wall_time: float = 0.0
    startup_time: float = 0.0
    interrupted: bool = False
    counts: dict = field(default_factory=dict)

    @property
    def exit_code(self):
        """0 if every group is ``ok``, else 1."""
        return 0 if all(r["status"] == "ok" for r in self.records) else 1


def warn_missing_tables(records):
    """One WARNING for the run: the groups whose default steps lacked calibration tables.

    Parameters
    ----------
    records : list of dict
        The groups' records (``missing_tables``: ``'step: table names'``).
    """
    lacking = [r for r in records if r.get("missing_tables")]
    if not lacking:
        return
    steps = sorted({str(t).split(":")[0] for r in lacking for t in r["missing_tables"]})
    first = lacking[0]
    log.warning(
        "%d of %d group(s) ran without the calibration tables of the default step(s) %s "
        "(e.g. %s: %s); msaexp applies them, so the fluxes differ from msaexp's.  Fix: run "
        "`slitcombine calib fetch` (msaexp's published tables into the user cache) or set "
        "$SLITCOMBINE_CALIB_DIR; each group's log says which",
        len(lacking),
        len(records),
        ", ".join(steps),
        first.get("group"),
        "; ".join(first["missing_tables"]),
    )


def _stale_text(stale):
    """Summary text of a ``stale`` record: the run that wrote the kept products."""
    if not stale:
        return ""
    if stale.get("finished") is None:
        return "unknown run"
    return f"{stale['finished']} UTC, config {stale.get('config_hash')}"


def write_reports(
    groups,
    records,
    config,
    output_dir,
    *,
    scheduler,
    workers,
    wall,
    startup,
    interrupted,
    skipped_files,
    paths,
    started,
):
    """Write ``summary.ecsv`` and ``index.html``; the :class:`BatchResult`.

    A group without a record (the run was interrupted) whose sidecar says it is done
    with this configuration and inputs (see :func:`resumable`) is listed as done: its
    task may have finished before the client received its result.  It counts as
    ``resumed`` when its sidecar is older than this run (``started``, UTC ISO time).
    """
    by_name = {g.name: g for g in groups}
    ordered = []
    for g in groups:
        rec = records.get(g.name)
        if rec is None:
            prev = read_sidecar(output_dir, g.name)
            if (
                prev
                and prev.get("status") == "ok"
                and resumable(prev, config, g.members, False, output_dir)
            ):
                rec = {**prev, "resumed": str(prev.get("finished", "")) < started}
            else:
                rec = {"group": g.name, "status": "not run", "error": "interrupted"}
        rec = dict(rec)
        rec.setdefault("resumed", False)
        stale = rec.get("stale") or {}
        kept = [o for o in stale.get("outputs", []) if (output_dir / o).is_file()]
        rec["stale_outputs"] = kept
        rec["stale_from"] = _stale_text(stale) if kept else ""
        ordered.append(_with_info(rec, by_name[g.name]))
    counts = {
        "ok": sum(r["status"] == "ok" for r in ordered),
        "warned": sum(r["status"] == "ok" and bool(r.get("n_warnings")) for r in ordered),
        "failed": sum(r["status"] == "failed" for r in ordered),
        "not_run": sum(r["status"] == "not run" for r in ordered),
        "resumed": sum(bool(r.get("resumed")) for r in ordered),
        "bugs": sum(bool(r.get("bug")) for r in ordered),
        "stale": sum(bool(r["stale_outputs"]) for r in ordered),
    }
    meta = {
        "config_hash": config.hash,
        "mode": config.mode,
        "slitcombine_version": __version__,
        "wall_time": round(wall, 3),
        "startup_time": round(startup, 3),
        "executor": scheduler or f"LocalCluster({workers} x 1 thread)",
        "interrupted": bool(interrupted),
        "counts": counts,
        "skipped_files": [{"path": p, "reason": r} for p, r in skipped_files],
    }
    summary_path = write_summary(ordered, output_dir / "summary.ecsv", meta=meta)
    index_path = write_index(ordered, output_dir / "index.html", meta=meta)
    return BatchResult(
        records=ordered,
        summary_path=summary_path,
        index_path=index_path,
        manifest_path=paths[1],
        config_path=paths[0],
        wall_time=wall,
        startup_time=startup,
        interrupted=bool(interrupted),
        counts=counts,
    )


def _with_info(rec, g):
    out = dict(rec)
    info = g.info
    for key in ("grating", "filter", "source_id", "source_name", "visit"):
        out.setdefault(key, info.get(key))
    out.setdefault("n_exposures", len(g.members))
    return out


def write_summary(records, path, meta=None):
    """Write the summary ECSV (one row per group, :data:`SUMMARY_COLUMNS`) atomically.

    ``outputs`` is a ``;``-separated list of file names (the products of this run);
    ``stale_outputs`` the products of an earlier run kept after a failed attempt, and
    ``stale_from`` the run that wrote them (UTC time and configuration hash);
    ``runtime`` in seconds;
    ``sn_median``/``sn_max`` are flux/err over the valid 1D bins (NaN if unknown);
    ``err_scale`` the median factor the errors were multiplied by (the measured noise
    over the pipeline's propagated sigma, ``ERRSCALE``);
    ``warnings`` the number of distinct warnings in the group's log (a group ``ok``
    with warnings deserves a look) and ``first_warning`` the first of them;
    ``source_id`` is masked when unknown.

    Parameters
    ----------
    records : list of dict
        One record per group (:func:`process_group`).
    path : str or path-like
        Destination ``summary.ecsv``.
    meta : dict, optional
        Table metadata (written in the ECSV header).

    Returns
    -------
    pathlib.Path
    """
    import io

    from astropy.table import MaskedColumn, Table

    def col(key, default=""):
        return [r.get(key, default) for r in records]

    t = Table()
    t["group"] = np.array(col("group"), dtype=str)
    t["status"] = np.array(col("status"), dtype=str)
    t["resumed"] = np.array(col("resumed", False), dtype=bool)
    t["bug"] = np.array(col("bug", False), dtype=bool)
    t["error_type"] = np.array([str(v or "") for v in col("error_type")], dtype=str)
    t["error"] = np.array([str(v or "").replace("\n", " ") for v in col("error")], dtype=str)
    for key in ("sn_median", "sn_max", "err_scale"):
        vals = [np.nan if v is None else float(v) for v in col(key, np.nan)]
        t[key] = np.round(np.array(vals, dtype=float), 4)
    t["warnings"] = np.array([int(v or 0) for v in col("n_warnings", 0)], dtype=np.int64)
    t["first_warning"] = np.array(
        [_shorten((r.get("warnings") or [""])[0]) for r in records], dtype=str
    )
    for key in ("runtime", "cpu_time"):
        vals = [np.nan if v is None else float(v) for v in col(key, np.nan)]
        t[key] = np.round(np.array(vals, dtype=float), 4)
    t["runtime"].unit = "s"
    t["cpu_time"].unit = "s"
    t["n_exposures"] = np.array([int(v or 0) for v in col("n_exposures", 0)], dtype=np.int64)
    for key in ("grating", "filter"):
        t[key] = np.array([str(v or "") for v in col(key)], dtype=str)
    sids = col("source_id", None)
    t["source_id"] = MaskedColumn(
        np.array([0 if v is None else int(v) for v in sids], dtype=np.int64),
        mask=[v is None for v in sids],
    )
    for key in ("source_name", "visit"):
        t[key] = np.array([str(v or "") for v in col(key)], dtype=str)
    t["outputs"] = np.array([";".join(v or []) for v in col("outputs", [])], dtype=str)
    t["stale_outputs"] = np.array([";".join(v or []) for v in col("stale_outputs", [])], dtype=str)
    for key in ("stale_from", "figure", "log", "worker"):
        t[key] = np.array([str(v or "") for v in col(key)], dtype=str)
    t.meta.update(meta or {})
    buf = io.StringIO()
    t.write(buf, format="ascii.ecsv")
    return atomic_write_text(path, buf.getvalue())


def _shorten(text, limit=200):
    """``text`` on one line, cut to ``limit`` characters."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


_CSS = """
body{font-family:sans-serif;margin:1em 2em;background:#fafafa}
.g{display:inline-block;vertical-align:top;width:480px;margin:6px;padding:6px;
   background:#fff;border:1px solid #ccc}
.g.failed{border-color:#c33;background:#fff4f4}
.g.warned{border-color:#d90;background:#fffbf0}
.warn{color:#850;font-size:85%;word-break:break-word}
.g img{width:100%}
.err{color:#a00;font-family:monospace;font-size:90%;word-break:break-word}
.small{font-size:85%;color:#555}
"""


def write_index(records, path, meta=None):
    """Write a static ``index.html`` with each group's figure (relative links).

    Parameters
    ----------
    records : list of dict
        One record per group (:func:`process_group`).
    path : str or path-like
        Destination ``index.html`` (in the output folder).
    meta : dict, optional
        Run information shown at the top of the page.

    Returns
    -------
    pathlib.Path
    """
    meta = meta or {}
    esc = html.escape
    counts = meta.get("counts", {})
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        "<title>slitcombine batch</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>slitcombine batch</h1>",
        f"<p>{len(records)} group(s): {counts.get('ok', 0)} ok "
        f"({counts.get('warned', 0)} with warnings), "
        f"{counts.get('failed', 0)} failed, {counts.get('resumed', 0)} from a previous run. "
        f"Configuration <a href='config.toml'>config.toml</a> "
        f"(hash <code>{esc(str(meta.get('config_hash', '')))}</code>), "
        f"<a href='manifest.ecsv'>manifest</a>, <a href='summary.ecsv'>summary</a>; "
        f"slitcombine {esc(str(meta.get('slitcombine_version', __version__)))}.</p>",
    ]
    skipped = meta.get("skipped_files") or []
    if skipped:
        parts.append(f"<details><summary>{len(skipped)} file(s) skipped</summary><ul>")
        parts += [f"<li>{esc(s['reason'])}</li>" for s in skipped]
        parts.append("</ul></details>")
    for r in records:
        parts += _index_card(r)
    parts.append("</body></html>")
    return atomic_write_text(path, "\n".join(parts) + "\n")


def _index_card(r):
    """The HTML lines of one group's card on the index page (record ``r``)."""
    esc = html.escape
    parts = []
    status = str(r.get("status", ""))
    name = str(r.get("group", ""))
    warned = [str(w) for w in (r.get("warnings") or [])]
    cls = "g failed" if status != "ok" else ("g warned" if warned else "g")
    sn = r.get("sn_median")
    sn_text = (
        f"S/N median {sn:.1f}, max {r.get('sn_max', np.nan):.1f}; "
        if (isinstance(sn, float) and np.isfinite(sn))
        else ""
    )
    es = r.get("err_scale")
    if isinstance(es, float) and np.isfinite(es):
        sn_text += f"errors x{es:.2f}; "
    rt = r.get("runtime")
    rt_text = f"{rt:.2f} s" if isinstance(rt, float) and np.isfinite(rt) else ""
    links = " ".join(f"<a href='{esc(o)}'>{esc(o)}</a>" for o in (r.get("outputs") or []))
    parts.append(
        f"<div class='{cls}' id='{esc(name)}'><b>{esc(name)}</b> "
        f"<span class='small'>{esc(status)}"
        f"{f' with {len(warned)} warning(s)' if warned and status == 'ok' else ''}"
        f"{' (previous run)' if r.get('resumed') else ''}</span><br>"
    )
    parts.append(
        f"<span class='small'>{esc(str(r.get('grating', '')))}/"
        f"{esc(str(r.get('filter', '')))}, {r.get('n_exposures', '')} exposures; "
        f"{sn_text}{rt_text}</span><br>"
    )
    if r.get("figure"):
        fig = esc(r["figure"])
        parts.append(f"<a href='{fig}'><img loading='lazy' src='{fig}' alt='{fig}'></a><br>")
    if status != "ok":
        parts.append(
            f"<div class='err'>{esc(str(r.get('error', '')))}"
            f"{' [bug]' if r.get('bug') else ''}</div>"
        )
    if warned:
        items = "".join(f"<li>{esc(_shorten(w, 400))}</li>" for w in warned)
        parts.append(
            f"<details class='warn'><summary>{len(warned)} warning(s): "
            f"{esc(_shorten(warned[0], 120))}</summary><ul>{items}</ul></details>"
        )
    if r.get("stale_outputs"):
        stale = " ".join(f"<a href='{esc(o)}'>{esc(o)}</a>" for o in r["stale_outputs"])
        parts.append(
            f"<span class='small'>kept from an earlier run "
            f"({esc(str(r.get('stale_from', '')))}), stale: {stale}</span><br>"
        )
    parts.append(
        f"<span class='small'>{links} <a href='{esc(str(r.get('log', '')))}'>log</a></span></div>"
    )
    return parts
