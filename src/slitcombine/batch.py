"""Batch processing of many groups on ``dask.distributed``.

One task per group (:func:`process_group`), run on a ``LocalCluster`` of single-threaded
worker processes or on an existing cluster (``scheduler='tcp://host:port'``).

Output folder::

    config.toml            effective configuration (all defaults written out)
    manifest.ecsv          the groups run (editable, re-runnable)
    summary.ecsv           one row per group: status, error, S/N, runtime, outputs
    index.html             static page with every group's figure (relative links)
    logs/{group}.log       the group's log (written on the worker)
    {group}.spec.fits      combined spectrum (+ {group}.fnu.png, {group}.d2d.png)
    {group}.group.json     (mode "prepare" instead of the spectrum)
    {group}.batch.json     sidecar: status, configuration hash, inputs hash, outputs
    .slitcombine-batch.lock  locked while a batch runs here: a second one stops at once

Resume
------
The sidecar is written last, atomically, after the outputs (themselves written
atomically), so a group counts as done only if its sidecar exists.  With ``resume=True``
a group is skipped when its sidecar has the same configuration hash
(:attr:`slitcombine.config.Config.hash`, also stored in the ``PROVENANCE`` table of the
spectrum), the same inputs hash (file names, source ids and sizes), the same mode, and

* status ``ok`` and every output listed still exists, or
* status ``failed`` with a :class:`~slitcombine.errors.SlitCombineError` (a bad input
  fails the same way again), unless ``retry_failed=True``.

Groups that failed with an unexpected exception (flagged ``bug``), because a worker
died, or because an output could not be written (``OutputError``: a full disk or an
unwritable folder is no property of the inputs) are always run again.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import glob
import hashlib
import html
import json
import logging
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
import traceback
import warnings
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from distributed.diagnostics.plugin import WorkerPlugin

from ._atomic import atomic_write_text
from ._version import __version__
from .config import Config, _extract_defaults
from .discovery import format_member, write_manifest
from .errors import ConfigurationError, OutputError, SlitCombineError

__all__ = [
    "BatchError",
    "BatchResult",
    "process_group",
    "run_batch",
    "inputs_hash",
    "read_sidecar",
    "write_summary",
    "write_index",
    "write_inputs",
    "SUMMARY_COLUMNS",
    "groups_from_inputs",
    "SlitcombineWorkerSetup",
    "output_lock",
]

log = logging.getLogger(__name__)

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
    "runtime",
    "cpu_time",
    "n_exposures",
    "grating",
    "filter",
    "source_id",
    "source_name",
    "visit",
    "outputs",
    "figure",
    "log",
    "worker",
)

SIDECAR_SUFFIX = ".batch.json"


class BatchError(SlitCombineError):
    """The batch cannot run: scheduler unreachable, no workers, duplicate group names."""


# ============================================================================ helpers
def _sidecar_path(output_dir, name):
    return Path(output_dir) / f"{name}{SIDECAR_SUFFIX}"


def _log_path(output_dir, name):
    return Path(output_dir) / "logs" / f"{name}.log"


def inputs_hash(members):
    """Hash of a group's inputs: file names, source ids and sizes (no file content).

    Parameters
    ----------
    members : iterable
        Paths and ``(path, source_id)`` tuples.

    Returns
    -------
    str
        16 hex digits; a missing file counts with size -1.
    """
    items = []
    for m in members:
        path, sid = (m[0], m[1]) if isinstance(m, (tuple, list)) else (m, None)
        try:
            size = os.stat(path).st_size
        except OSError:
            size = -1
        items.append([Path(path).name, None if sid is None else str(sid), size])
    text = json.dumps(items, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def read_sidecar(output_dir, name):
    """The sidecar record of group ``name``, or None if absent or unreadable.

    Parameters
    ----------
    output_dir : str or path-like
        The batch output folder.
    name : str
        Group name.

    Returns
    -------
    dict or None
        The record written by :func:`process_group`.
    """
    path = _sidecar_path(output_dir, name)
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable sidecar %s (%s)", path, exc)
        return None


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return repr(value)


def _write_json(path, record):
    text = json.dumps(record, indent=1, default=_json_default, allow_nan=True)
    return atomic_write_text(path, text + "\n")


def _signal_to_noise(spec_path):
    """Median and maximum of flux/err over the valid bins of a ``.spec.fits``."""
    from astropy.table import Table

    tab = Table.read(spec_path, hdu="SPEC1D")
    flux = np.asarray(tab["flux"], float)
    err = np.asarray(tab["err"], float)
    ok = np.isfinite(flux) & np.isfinite(err) & (err > 0)
    if "valid" in tab.colnames:
        ok &= np.asarray(tab["valid"], bool)
    if not ok.any():
        return float("nan"), float("nan")
    sn = flux[ok] / err[ok]
    return float(np.median(sn)), float(np.max(sn))


# ============================================================================ the task
class _GroupLog:
    """Attach a per-group FileHandler to the ``slitcombine`` logger for one task.

    Only records of the calling thread are written (a worker may run several tasks in
    threads); the package logger does not propagate to the worker's console meanwhile.
    """

    def __init__(self, path, level):
        self.path = Path(path)
        self.level = level
        self.logger = logging.getLogger("slitcombine")

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tid = threading.get_ident()
        self.handler = logging.FileHandler(self.path, mode="w", encoding="utf-8")
        self.handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
        )
        self.handler.setLevel(self.level)
        self.handler.addFilter(lambda record: record.thread == tid)
        self.old = (self.logger.level, self.logger.propagate)
        self.logger.addHandler(self.handler)
        if self.logger.getEffectiveLevel() > self.level:
            self.logger.setLevel(self.level)
        self.logger.propagate = False
        return self

    def __exit__(self, *exc):
        self.logger.removeHandler(self.handler)
        self.handler.close()
        self.logger.setLevel(self.old[0])
        self.logger.propagate = self.old[1]
        return False


def _work_prepare(name, members, config, output_dir):
    """Mode ``prepare``: build the SlitGroup and write ``{name}.group.json``."""
    from .provenance import to_jsonable
    from .slitgroup import SlitGroup

    group = SlitGroup(list(members), name, **config.group_kwargs())
    record = {
        "group": name,
        "files": group.files,
        "shape": list(group.sh),
        "n_exposures": int(group.N),
        "grating": group.grating,
        "filter": group.filter,
        "n_valid_pixels": int(np.count_nonzero(group.mask)),
        "n_pixels": int(group.mask.size),
        "meta": to_jsonable(group.meta),
    }
    path = _write_json(Path(output_dir) / f"{name}.group.json", record)
    return {"group": path}, None


def _work_combine(name, members, config, output_dir, config_hash):
    """Mode ``combine``: :func:`slitcombine.combine.combine`, then ``result.write``."""
    from .combine import combine

    result = combine(list(members), name=name, **config.combine_kwargs())
    result.provenance["batch"] = {"config_hash": config_hash, "group": name}
    paths = result.write(output_dir, figures=bool(config.section("batch")["figures"]))
    return paths, paths.get("spec")


def process_group(group_row, config, output_dir):
    """Process one group: the task run on a worker.

    Never raises for a problem of the group: a :class:`SlitCombineError` is recorded
    with its message, any other exception with its type and message and ``bug=True``
    (the traceback goes to the group's log).

    Parameters
    ----------
    group_row : dict
        :meth:`slitcombine.discovery.GroupSpec.to_dict`: ``group`` (name), ``members``
        (paths and ``(path, source_id)``) and the manifest columns.
    config : slitcombine.config.Config
        The effective configuration (``batch.mode`` chooses the work).
    output_dir : str or path-like
        Where the outputs, ``logs/{group}.log`` and the sidecar go.

    Returns
    -------
    dict
        ``group``, ``status`` (``'ok'``/``'failed'``), ``error_type``, ``error``, ``bug``,
        ``runtime`` and ``cpu_time`` (CPU seconds of the worker process) [s],
        ``outputs`` (file names in ``output_dir``), ``figure``,
        ``sn_median``, ``sn_max`` (of flux/err over valid 1D bins; NaN if none),
        ``log``, ``worker``, ``config_hash``, ``inputs_hash``, ``mode``, ``version``,
        ``n_warnings``, ``finished`` (UTC ISO time).
    """
    t0 = time.perf_counter()
    c0 = time.process_time()
    output_dir = Path(output_dir)
    name = group_row["group"]
    members = [tuple(m) if isinstance(m, (list, tuple)) else m for m in group_row["members"]]
    batch_opts = config.section("batch")
    level = logging.getLevelName(batch_opts["log_level"].upper())
    config_hash = config.hash
    record = {
        "group": name,
        "status": "failed",
        "error_type": "",
        "error": "",
        "bug": False,
        "runtime": float("nan"),
        "cpu_time": float("nan"),
        "outputs": [],
        "figure": "",
        "sn_median": float("nan"),
        "sn_max": float("nan"),
        "log": str(Path("logs") / f"{name}.log"),
        "worker": f"{socket.gethostname()}:{os.getpid()}",
        "config_hash": config_hash,
        "inputs_hash": inputs_hash(members),
        "mode": config.mode,
        "version": __version__,
        "n_warnings": 0,
        "n_exposures": len(members),
        "members": [format_member(m) for m in members],
    }
    sidecar = _sidecar_path(output_dir, name)
    sidecar.unlink(missing_ok=True)  # a stale "ok" must not outlive a new attempt
    with (
        _GroupLog(_log_path(output_dir, name), level),
        warnings.catch_warnings(record=True) as caught,
    ):
        warnings.simplefilter("default")
        log.info(
            "group %s: %d member(s), mode %s, config %s",
            name,
            len(members),
            config.mode,
            config_hash,
        )
        for m in members:
            log.info("  member %s", format_member(m))
        try:
            if config.mode == "prepare":
                paths, spec = _work_prepare(name, members, config, output_dir)
            else:
                paths, spec = _work_combine(name, members, config, output_dir, config_hash)
            record["outputs"] = [Path(p).name for p in paths.values()]
            if "summary" in paths:
                record["figure"] = Path(paths["summary"]).name
            if spec is not None:
                record["sn_median"], record["sn_max"] = _signal_to_noise(spec)
            record["status"] = "ok"
            log.info("group %s: done, outputs %s", name, record["outputs"])
        except SlitCombineError as exc:
            record["error_type"] = type(exc).__name__
            record["error"] = str(exc)
            log.error("group %s failed: %s: %s", name, type(exc).__name__, exc)
        except Exception as exc:  # a bug: recorded and flagged, the batch goes on
            record["error_type"] = type(exc).__name__
            record["error"] = f"{type(exc).__name__}: {exc}"
            record["bug"] = True
            log.error(
                "group %s: unexpected %s (a bug, please report):\n%s",
                name,
                type(exc).__name__,
                traceback.format_exc(),
            )
        if record["status"] != "ok":
            _remove_stale_products(output_dir, name)
        for w in caught:
            log.warning("%s: %s (%s:%s)", w.category.__name__, w.message, w.filename, w.lineno)
        record["n_warnings"] = len(caught)
        record["runtime"] = time.perf_counter() - t0
        record["cpu_time"] = time.process_time() - c0
        record["finished"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S")
        try:
            _write_json(sidecar, record)
        except OutputError as exc:
            log.error("group %s: cannot write the sidecar: %s", name, exc)
            record.update(status="failed", error_type="OutputError", error=str(exc))
    return record


#: Products a group writes (``combine`` and ``prepare`` modes).
PRODUCT_SUFFIXES = (".spec.fits", ".fnu.png", ".d2d.png", ".group.json")


def _remove_stale_products(output_dir, name):
    """Remove the products of an earlier run of a group whose new attempt failed.

    They no longer match the group's inputs or configuration (a ``*.spec.fits`` glob
    would pick them up); the failed attempt's log and sidecar say what happened.
    """
    for suffix in PRODUCT_SUFFIXES:
        path = Path(output_dir) / f"{name}{suffix}"
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        except OSError as exc:
            log.error("group %s: cannot remove the stale %s: %s", name, path.name, exc)
            continue
        log.warning("group %s: removed %s of an earlier run (this attempt failed)", name, path.name)


# ============================================================================ workers
def _worker_setup():
    """Import the heavy modules and freeze the garbage collector's view of them.

    The ~230k objects of astropy/asdf/gwcs then stay out of every gc scan, which makes
    the per-group time steadier.  Runs in worker processes only.
    """
    import astropy.table  # noqa: F401

    from . import slitgroup  # noqa: F401

    if _extract_defaults() is not None:
        from . import combine, output, plots  # noqa: F401
    from .reading import _slit_asdf_plugins

    _slit_asdf_plugins()  # the asdf plugins a slit WCS needs, loaded once per worker
    gc.collect()
    gc.freeze()
    return os.getpid()


class SlitcombineWorkerSetup(WorkerPlugin):
    """Dask worker plugin: imports and ``gc.freeze()`` (see :func:`_worker_setup`)."""

    name = "slitcombine-worker-setup"

    def setup(self, worker):
        """Run :func:`_worker_setup` when the worker starts (or joins later).

        Parameters
        ----------
        worker : distributed.Worker
            The worker (unused).
        """
        _worker_setup()


def _connect(workers, scheduler, timeout):
    """A dask Client, the LocalCluster it owns and its scratch folder (or None, None)."""
    from distributed import Client, LocalCluster

    if scheduler:
        try:
            client = Client(scheduler, timeout=timeout)
        except (OSError, TimeoutError, ValueError) as exc:
            raise BatchError(
                f"cannot connect to the dask scheduler {scheduler!r} within {timeout:g} s "
                f"({type(exc).__name__}: {exc})"
            ) from exc
        try:
            client.wait_for_workers(1, timeout=timeout)
        except (TimeoutError, OSError) as exc:
            client.close()
            raise BatchError(
                f"the dask scheduler {scheduler!r} has no worker (waited {timeout:g} s)"
            ) from exc
        return client, None, None
    if int(workers) < 1:
        raise ConfigurationError(f"workers must be >= 1, got {workers}")
    # a scratch folder of our own: the default /tmp/dask-scratch-space is shared with
    # (and may be cleaned by) every other dask cluster on the machine
    scratch = tempfile.mkdtemp(prefix="slitcombine-dask-")
    try:
        cluster = LocalCluster(
            n_workers=int(workers),
            threads_per_worker=1,
            processes=True,
            # no dashboard; the scheduler's small HTTP server on a free port
            dashboard_address=":0",
            scheduler_kwargs={"dashboard": False},
            silence_logs=logging.ERROR,
            local_directory=scratch,
        )
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    return Client(cluster), cluster, scratch


# ============================================================================ driver
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


#: Lock file of an output folder, held by the batch running there (:func:`output_lock`).
LOCK_NAME = ".slitcombine-batch.lock"


@contextlib.contextmanager
def output_lock(output_dir):
    """Hold ``output_dir`` for one batch: an exclusive lock on ``.slitcombine-batch.lock``.

    A second batch on the same folder (from this or another process, or another NFS
    client) stops at once with a :class:`BatchError` naming the holder, instead of
    overwriting the first one's manifest, configuration and summary and running its
    groups twice.  The lock is ``flock`` on the file: the operating system releases it
    when its holder ends, however it ends, so a killed batch leaves no stale lock (the
    empty file stays).  Where the file system cannot lock, a warning is logged and the
    batch runs unprotected.

    Parameters
    ----------
    output_dir : str or path-like
        The batch's output folder (created if missing).

    Yields
    ------
    pathlib.Path or None
        The lock file (None when it could not be locked).

    Raises
    ------
    BatchError
        Another batch holds the folder.
    OutputError
        The folder or the lock file cannot be created.
    """
    output_dir = Path(output_dir)
    path = output_dir / LOCK_NAME
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        raise OutputError(f"cannot create the output folder {str(output_dir)!r}: {exc}") from exc
    try:
        locked = False
        try:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            locked = True
        except (ImportError, OSError) as exc:
            if getattr(exc, "errno", None) in (errno.EWOULDBLOCK, errno.EAGAIN):
                holder = os.pread(fd, 512, 0).decode("utf-8", "replace").strip()
                raise BatchError(
                    f"another slitcombine batch is running in {output_dir} "
                    f"({holder or 'holder unknown'}); wait for it to end or use another "
                    "--output-dir"
                ) from None
            log.warning(
                "cannot lock %s (%s): nothing stops a second batch in this folder", path, exc
            )
        if locked:
            since = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S")
            holder = f"pid {os.getpid()} on {socket.gethostname()} since {since} UTC\n"
            os.ftruncate(fd, 0)
            os.pwrite(fd, holder.encode(), 0)
        yield path if locked else None
    finally:
        os.close(fd)  # releases the lock


def _resumable(prev, config, members, retry_failed, output_dir):
    if not prev:
        return False
    same = (
        prev.get("config_hash") == config.hash
        and prev.get("mode") == config.mode
        and prev.get("inputs_hash") == inputs_hash(members)
    )
    if not same:
        return False
    if prev.get("status") == "ok":
        return all((Path(output_dir) / o).exists() for o in prev.get("outputs", []))
    return (
        prev.get("status") == "failed"
        and not prev.get("bug")
        and prev.get("error_type") != "OutputError"  # a full disk, not the inputs
        and not retry_failed
    )


def write_inputs(groups, config, output_dir):
    """Write ``config.toml`` (effective configuration) and ``manifest.ecsv``.

    Parameters
    ----------
    groups : list of slitcombine.discovery.GroupSpec
        The groups.
    config : slitcombine.config.Config
        The effective configuration.
    output_dir : str or path-like
        The batch output folder (created if missing).

    Returns
    -------
    (pathlib.Path, pathlib.Path)
        The configuration and manifest paths.

    Raises
    ------
    OutputError
        The output folder cannot be created or written.
    """
    output_dir = Path(output_dir)
    try:
        (output_dir / "logs").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create the output folder {str(output_dir)!r}: {exc}") from exc
    config_path = config.write(output_dir / "config.toml")
    manifest_path = write_manifest(
        groups, output_dir / "manifest.ecsv", meta={"config_hash": config.hash}
    )
    return config_path, manifest_path


def run_batch(
    groups,
    config,
    output_dir,
    *,
    workers=2,
    scheduler=None,
    resume=False,
    retry_failed=False,
    progress=True,
    timeout=10.0,
    skipped_files=(),
):
    """Run every group as a dask task and write the summary, index page and manifest.

    Parameters
    ----------
    groups : list of slitcombine.discovery.GroupSpec
        The groups (names must be unique).
    config : slitcombine.config.Config
    output_dir : str or path-like
        Created if missing.
    workers : int
        Worker processes of the LocalCluster (one thread each); ignored with
        ``scheduler``.
    scheduler : str, optional
        Address of an existing dask scheduler (``tcp://host:port``).
    resume : bool
        Skip the groups already done with this configuration (see module notes).
    retry_failed : bool
        With ``resume``, run again the groups that failed on a bad input.
    progress : bool or None
        tqdm progress bar on stderr (None: only on a terminal).
    timeout : float
        Seconds to wait for the scheduler and for its first worker.
    skipped_files : list of (str, str)
        Files skipped by discovery, reported in the summary and the index page.

    Returns
    -------
    BatchResult

    Raises
    ------
    BatchError
        Unreachable scheduler, a scheduler without workers, duplicate group names,
        another batch running in ``output_dir`` (see :func:`output_lock`).
    ConfigurationError
        Mode ``combine`` in a version without :mod:`slitcombine.combine`.
    OutputError
        The output folder cannot be written.
    """
    if not isinstance(config, Config):
        raise ConfigurationError("config must be a slitcombine.config.Config")
    if config.mode == "combine" and _extract_defaults() is None:
        raise ConfigurationError(
            "batch.mode = 'combine' needs slitcombine.combine, which this version lacks; "
            "use --set batch.mode=prepare"
        )
    names = [g.name for g in groups]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise BatchError(f"duplicate group names {dupes[:5]}: rename them in the manifest")
    output_dir = Path(output_dir)
    with output_lock(output_dir):
        return _run_batch(
            groups,
            config,
            output_dir,
            workers=workers,
            scheduler=scheduler,
            resume=resume,
            retry_failed=retry_failed,
            progress=progress,
            timeout=timeout,
            skipped_files=skipped_files,
        )


def _run_batch(
    groups,
    config,
    output_dir,
    *,
    workers,
    scheduler,
    resume,
    retry_failed,
    progress,
    timeout,
    skipped_files,
):
    """:func:`run_batch` once the output folder is locked."""
    from tqdm import tqdm

    config_path, manifest_path = write_inputs(groups, config, output_dir)

    records = {}
    todo = []
    for g in groups:
        prev = read_sidecar(output_dir, g.name) if resume else None
        if _resumable(prev, config, g.members, retry_failed, output_dir):
            records[g.name] = {**prev, "resumed": True}
        else:
            todo.append(g)
    log.info(
        "%d group(s): %d to run, %d already done (config %s)",
        len(groups),
        len(todo),
        len(groups) - len(todo),
        config.hash,
    )
    interrupted = False
    startup = wall = 0.0
    if todo:
        t0 = time.perf_counter()
        client, cluster, scratch = _connect(workers, scheduler, timeout)
        try:
            try:
                client.register_plugin(SlitcombineWorkerSetup(), name=SlitcombineWorkerSetup.name)
            except Exception as exc:  # raised on a worker: it cannot import slitcombine
                raise BatchError(
                    f"the dask workers cannot set up slitcombine ({type(exc).__name__}: {exc}); "
                    "is the same slitcombine installed on the workers?"
                ) from exc
            t1 = time.perf_counter()
            startup = t1 - t0
            interrupted = _run_tasks(client, todo, config, output_dir, records, progress, tqdm)
            wall = time.perf_counter() - t1
        finally:
            client.close()
            if cluster is not None:
                cluster.close()
                shutil.rmtree(scratch, ignore_errors=True)
        if not interrupted:
            _remove_temporaries(output_dir, [g.name for g in todo])
    by_name = {g.name: g for g in groups}
    ordered = []
    for g in groups:
        rec = records.get(g.name)
        if rec is None:
            rec = {"group": g.name, "status": "not run", "error": "interrupted"}
        rec.setdefault("resumed", False)
        ordered.append(_with_info(rec, by_name[g.name]))
    counts = {
        "ok": sum(r["status"] == "ok" for r in ordered),
        "failed": sum(r["status"] == "failed" for r in ordered),
        "not_run": sum(r["status"] == "not run" for r in ordered),
        "resumed": sum(bool(r.get("resumed")) for r in ordered),
        "bugs": sum(bool(r.get("bug")) for r in ordered),
    }
    meta = {
        "config_hash": config.hash,
        "mode": config.mode,
        "slitcombine_version": __version__,
        "wall_time": round(wall, 3),
        "startup_time": round(startup, 3),
        "executor": scheduler or f"LocalCluster({workers} x 1 thread)",
        "counts": counts,
        "skipped_files": [{"path": p, "reason": r} for p, r in skipped_files],
    }
    summary_path = write_summary(ordered, output_dir / "summary.ecsv", meta=meta)
    index_path = write_index(ordered, output_dir / "index.html", meta=meta)
    result = BatchResult(
        records=ordered,
        summary_path=summary_path,
        index_path=index_path,
        manifest_path=manifest_path,
        config_path=config_path,
        wall_time=wall,
        startup_time=startup,
        interrupted=interrupted,
        counts=counts,
    )
    if interrupted:
        raise KeyboardInterrupt
    return result


def _run_tasks(client, todo, config, output_dir, records, progress, tqdm):
    """Submit the tasks and collect their records; True if interrupted."""
    from distributed import as_completed

    futures = {}
    for g in todo:
        fut = client.submit(
            process_group,
            g.to_dict(),
            config,
            str(output_dir),
            pure=False,
            key=f"slitcombine-{g.name}-{os.urandom(4).hex()}",
        )
        futures[fut] = g
    disable = None if progress is None else not progress
    bar = tqdm(total=len(todo), desc="groups", unit="group", file=sys.stderr, disable=disable)
    try:
        for fut in as_completed(list(futures)):
            g = futures[fut]
            try:
                rec = fut.result()
            except Exception as exc:  # the task did not run to its end (worker died ...)
                rec = {
                    "group": g.name,
                    "status": "failed",
                    "error_type": type(exc).__name__,
                    "error": f"{type(exc).__name__}: {exc} (task lost, worker may have died)",
                    "bug": False,
                    "runtime": float("nan"),
                    "outputs": [],
                    "log": str(Path("logs") / f"{g.name}.log"),
                }
            fut.release()
            rec["resumed"] = False
            records[g.name] = rec
            if rec["status"] != "ok":
                msg = f"{g.name}: {rec['error']}" + (" [bug]" if rec.get("bug") else "")
                log.warning("failed %s", msg)
            bar.update(1)
    except KeyboardInterrupt:
        log.warning("interrupted: cancelling %d task(s)", sum(not f.done() for f in futures))
        client.cancel(list(futures))
        return True
    finally:
        bar.close()
    return False


def _remove_temporaries(output_dir, names):
    """Remove the temporary files and folders (``.{name}.*.tmp``) of the groups ``names``.

    The atomic writers leave them only when their process dies while writing (a worker
    killed or out of memory).  Called once every task of the run has ended, so no
    writer of this run can still use them.
    """
    for name in names:
        for path in Path(output_dir).glob(f".{glob.escape(name)}.*.tmp"):
            try:
                if path.is_dir():
                    shutil.rmtree(path)
                else:
                    path.unlink()
                log.info("removed %s, left by a task that did not finish", path.name)
            except OSError as exc:
                log.warning("cannot remove the temporary %s: %s", path, exc)


def _with_info(rec, g):
    out = dict(rec)
    info = g.info
    for key in ("grating", "filter", "source_id", "source_name", "visit"):
        out.setdefault(key, info.get(key))
    out.setdefault("n_exposures", len(g.members))
    return out


# ============================================================================ reports
def write_summary(records, path, meta=None):
    """Write the summary ECSV (one row per group, :data:`SUMMARY_COLUMNS`) atomically.

    ``outputs`` is a ``;``-separated list of file names; ``runtime`` in seconds;
    ``sn_median``/``sn_max`` are flux/err over the valid 1D bins (NaN if unknown);
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
    for key in ("sn_median", "sn_max", "runtime", "cpu_time"):
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
    for key in ("figure", "log", "worker"):
        t[key] = np.array([str(v or "") for v in col(key)], dtype=str)
    t.meta.update(meta or {})
    buf = io.StringIO()
    t.write(buf, format="ascii.ecsv")
    return atomic_write_text(path, buf.getvalue())


_CSS = """
body{font-family:sans-serif;margin:1em 2em;background:#fafafa}
.g{display:inline-block;vertical-align:top;width:480px;margin:6px;padding:6px;
   background:#fff;border:1px solid #ccc}
.g.failed{border-color:#c33;background:#fff4f4}
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
        f"<p>{len(records)} group(s): {counts.get('ok', 0)} ok, "
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
        status = str(r.get("status", ""))
        name = str(r.get("group", ""))
        cls = "g" if status == "ok" else "g failed"
        sn = r.get("sn_median")
        sn_text = (
            f"S/N median {sn:.1f}, max {r.get('sn_max', np.nan):.1f}; "
            if (isinstance(sn, float) and np.isfinite(sn))
            else ""
        )
        rt = r.get("runtime")
        rt_text = f"{rt:.2f} s" if isinstance(rt, float) and np.isfinite(rt) else ""
        links = " ".join(f"<a href='{esc(o)}'>{esc(o)}</a>" for o in (r.get("outputs") or []))
        parts.append(
            f"<div class='{cls}' id='{esc(name)}'><b>{esc(name)}</b> "
            f"<span class='small'>{esc(status)}"
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
        parts.append(
            f"<span class='small'>{links} "
            f"<a href='{esc(str(r.get('log', '')))}'>log</a></span></div>"
        )
    parts.append("</body></html>")
    return atomic_write_text(path, "\n".join(parts) + "\n")


def groups_from_inputs(inputs, config):
    """Groups from a mix of manifests (``*.ecsv``) and folders/files.

    Parameters
    ----------
    inputs : iterable of str or path-like
        Manifests, folders and slit files.
    config : slitcombine.config.Config
        Its ``[discovery]`` section says how folders are scanned and grouped.

    Returns
    -------
    groups : list of GroupSpec
    skipped : list of (str, str)
        Files skipped by discovery.
    """
    from .discovery import discover, read_manifest

    manifests = [i for i in inputs if str(i).lower().endswith(".ecsv")]
    others = [i for i in inputs if not str(i).lower().endswith(".ecsv")]
    groups, skipped = [], []
    for m in manifests:
        groups.extend(read_manifest(m))
    if others:
        d = config.section("discovery")
        found, skipped = discover(
            others, join=d["join"], patterns=d["patterns"], recursive=d["recursive"]
        )
        groups.extend(found)
    return groups, skipped
