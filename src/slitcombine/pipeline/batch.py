"""Batch processing of many groups on ``dask.distributed``.

One task per group (:func:`process_group`), run on a ``LocalCluster`` of single-threaded
worker processes or on an existing cluster (``scheduler='tcp://host:port'``).  Paths are
made absolute in the calling process, and every worker checks that it sees the output
folder and the first input before any group runs (the workers' working folder is not
the caller's; see :doc:`/deployment`).

Output folder::

    config.toml            effective configuration (all defaults written out)
    manifest.ecsv          the groups run (editable, re-runnable)
    summary.ecsv           one row per group: status, error, S/N, runtime, outputs
    index.html             static page with every group's figure (relative links)
    logs/{group}.log       the group's log (written on the worker)
    {group}.spec.fits      combined spectrum (+ {group}.fnu.png, {group}.d2d.png: batch.figures)
    {group}.group.json     (mode "prepare" instead of the spectrum)
    {group}.batch.json     sidecar: status, configuration hash, inputs hash, outputs
    .slitcombine-batch.lock  locked while a batch runs here: a second one stops at once

Resume
------
The sidecar is written last, atomically, after the outputs (themselves written
atomically), so a group counts as done only if its sidecar exists.  With ``resume=True``
a group is skipped when its sidecar has the same configuration hash
(:attr:`slitcombine.pipeline.config.Config.hash`, also stored in the ``PROVENANCE`` table of the
spectrum), the same inputs hash (file names, source ids and sizes), the same mode, and

* status ``ok`` and every output listed still exists, or
* status ``failed`` with a :class:`~slitcombine.errors.SlitCombineError` (a bad input
  fails the same way again), unless ``retry_failed=True``.

Groups that failed with an unexpected exception (flagged ``bug``), because a worker
died, or because an output could not be written (``OutputError``: a full disk or an
unwritable folder is no property of the inputs) are always run again.

Failed reruns
-------------
A new attempt writes its products completely before they replace the old ones, so a
failed attempt never destroys the products of an earlier run: they are kept, and the
sidecar (``stale``) and the summary (``stale_outputs``, ``stale_from``) list them as
stale, with the time and configuration hash of the run that wrote them.

Interrupts
----------
Ctrl-C stops the wait for the tasks; the summary and index page of the groups done are
written before the cluster is closed, and a second Ctrl-C does not interrupt that
(:class:`BatchInterrupted` carries the result).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import dataclasses
import errno
import functools
import gc
import glob
import hashlib
import html
import json
import logging
import os
import shutil
import signal
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

from slitcombine._atomic import atomic_write_text
from slitcombine._version import __version__
from slitcombine.errors import ConfigurationError, OutputError, SlitCombineError
from slitcombine.pipeline.config import Config, _extract_defaults
from slitcombine.pipeline.discovery import format_member, write_manifest

__all__ = [
    "BatchError",
    "BatchInterrupted",
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
    """Median and maximum of flux/err over the valid bins of a ``.spec.fits``, and the
    median factor its errors were multiplied by (``ERRSCALE``, NaN if absent)."""
    from astropy.table import Table

    tab = Table.read(spec_path, hdu="SPEC1D")
    scale = tab.meta.get("ERRSCALE")
    scale = float(scale) if isinstance(scale, int | float) else float("nan")
    flux = np.asarray(tab["flux"], float)
    err = np.asarray(tab["err"], float)
    ok = np.isfinite(flux) & np.isfinite(err) & (err > 0)
    if "valid" in tab.colnames:
        ok &= np.asarray(tab["valid"], bool)
    if not ok.any():
        return float("nan"), float("nan"), scale
    sn = flux[ok] / err[ok]
    return float(np.median(sn)), float(np.max(sn)), scale


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


class _GroupWarnings(logging.Handler):
    """Collect a group's WARNING records of the ``slitcombine`` logger (this thread only).

    The calibration tables a group lacked come as the ``missing_tables`` attribute of
    one WARNING per group (:meth:`slitcombine.SlitGroup` steps); they are kept apart
    (``tables``: the batch says it once per run, :func:`_warn_missing_tables`), every
    other warning is kept as its one-line message (``messages``, distinct, in order), so
    that a group that finished with warnings is shown as such.
    """

    def __init__(self):
        super().__init__(logging.WARNING)
        self.tables = set()
        self.messages = []
        self.logger = logging.getLogger("slitcombine")
        tid = threading.get_ident()
        self.addFilter(lambda record: record.thread == tid)

    def emit(self, record):
        tables = getattr(record, "missing_tables", None)
        if tables:
            self.tables.update(tables)
            return
        try:
            text = " ".join(record.getMessage().split())
        except (TypeError, ValueError) as exc:  # a malformed log call: keep what it was
            text = f"{record.msg!r} ({exc})"
        if text not in self.messages:
            self.messages.append(text)

    def __enter__(self):
        self.logger.addHandler(self)
        return self

    def __exit__(self, *exc):
        self.logger.removeHandler(self)
        return False


def _warn_missing_tables(records):
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


def _work_prepare(name, members, config, output_dir):
    """Mode ``prepare``: build the SlitGroup and write ``{name}.group.json``."""
    from slitcombine.group.slitgroup import SlitGroup
    from slitcombine.io.provenance import to_jsonable

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
    """Mode ``combine``: :func:`slitcombine.pipeline.combine.combine`, then ``result.write``."""
    from slitcombine.pipeline.combine import combine

    result = combine(list(members), name=name, **config.combine_kwargs())
    result.provenance["batch"] = {"config_hash": config_hash, "group": name}
    opts = config.section("batch")
    paths = result.write(output_dir, figures=opts["figures"], figure_dpi=opts["figure_dpi"])
    return paths, paths.get("spec")


def process_group(group_row, config, output_dir):
    """Process one group: the task run on a worker.

    Never raises for a problem of the group: a :class:`SlitCombineError` is recorded
    with its message, any other exception with its type and message and ``bug=True``
    (the traceback goes to the group's log).

    Parameters
    ----------
    group_row : dict
        :meth:`slitcombine.pipeline.discovery.GroupSpec.to_dict`: ``group`` (name), ``members``
        (paths and ``(path, source_id)``) and the manifest columns.
    config : slitcombine.pipeline.config.Config
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
        ``err_scale`` (median factor on the errors, ``ERRSCALE``),
        ``log``, ``worker``, ``config_hash``, ``inputs_hash``, ``mode``, ``version``,
        ``n_warnings`` and ``warnings`` (the distinct WARNING messages of the group's
        log, Python warnings included, at most 20), ``missing_tables`` (default steps
        skipped for lack of a
        calibration table, ``'step: names'``; said once per run by :func:`run_batch`),
        ``finished`` (UTC ISO time); for a failed attempt, ``stale``:
        None, or the products of an earlier run kept in ``output_dir`` (``outputs``)
        with ``finished``, ``config_hash``, ``inputs_hash`` and ``version`` of the run
        that wrote them (None where no sidecar recorded it).
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
        "err_scale": float("nan"),
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
    previous = read_sidecar(output_dir, name)  # says which run wrote the products there
    sidecar.unlink(missing_ok=True)  # a stale "ok" must not outlive a new attempt
    with (
        _GroupLog(_log_path(output_dir, name), level),
        _GroupWarnings() as warned,
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
                sn = _signal_to_noise(spec)
                record["sn_median"], record["sn_max"], record["err_scale"] = sn
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
            record["stale"] = _keep_earlier_products(output_dir, name, previous, record)
        for w in caught:
            log.warning("%s: %s (%s:%s)", w.category.__name__, w.message, w.filename, w.lineno)
        failed_message = f"group {name} failed"
        messages = [m for m in warned.messages if not m.startswith(failed_message)]
        record["n_warnings"] = len(messages)
        record["warnings"] = messages[:20]
        record["missing_tables"] = sorted(warned.tables)
        record["runtime"] = time.perf_counter() - t0
        record["cpu_time"] = time.process_time() - c0
        record["finished"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S")
        try:
            _write_json(sidecar, record)
        except OutputError as exc:
            log.error("group %s: cannot write the sidecar: %s", name, exc)
            record.update(status="failed", error_type="OutputError", error=str(exc))
    _release_memory()
    return record


# ============================================================================ memory
@functools.cache
def _malloc_trim():
    """glibc's ``malloc_trim``, or None on another C library (looked up once per process)."""
    if not sys.platform.startswith("linux"):
        log.debug(
            "malloc_trim: not on Linux (%s), freed memory is left to the allocator", sys.platform
        )
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError) as exc:  # musl (Alpine) has no malloc_trim
        log.debug(
            "malloc_trim: not available (%s: %s), freed memory is left to malloc",
            type(exc).__name__,
            exc,
        )
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


def _release_memory():
    """Give the memory a finished group freed back to the operating system.

    Run at the end of every :func:`process_group`.  A group allocates a few hundred MB
    of arrays, a slit WCS (asdf tree, gwcs and astropy models, which hold reference
    cycles) and its figures.  Without this a long-lived worker's resident size creeps up:
    the cycles wait for the cyclic collector, which :func:`slitcombine._threads.paused_gc`
    holds off while a compute call runs (with 2 threads per worker that is most of the
    time), and glibc keeps the freed arrays in its per-thread arenas (fragmented: a small
    allocation left at the top of an arena pins all the free memory below it), so the
    worker keeps what its largest groups needed, per thread.  Here the cycles are
    collected (:func:`gc.collect`; the frozen imports, :func:`_worker_setup`, are not
    scanned: ~1 ms) and glibc's ``malloc_trim(0)`` returns the free pages of every arena
    (~1-5 ms).  On a C library without ``malloc_trim`` only the collection is done (a
    DEBUG message says so once).  Measured with ``benchmarks/worker_memory.py``, see
    :doc:`/deployment`.

    Returns
    -------
    bool
        Whether ``malloc_trim`` ran.
    """
    gc.collect()
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


#: Products a group writes (``combine`` and ``prepare`` modes).
PRODUCT_SUFFIXES = (".spec.fits", ".fnu.png", ".d2d.png", ".group.json")


def _keep_earlier_products(output_dir, name, previous, record):
    """The products of an earlier run of a group whose new attempt failed: kept, recorded.

    A new attempt writes its products completely (in a temporary folder) before they
    replace the old ones, so a failed attempt (a full disk, a bad input) leaves the
    earlier products as they were.  They are not deleted -- a valid spectrum is never
    destroyed because a rerun failed -- but they are not products of this run: the
    sidecar and the summary list them as stale, with the run that wrote them.

    Parameters
    ----------
    output_dir : pathlib.Path
        The batch output folder.
    name : str
        Group name.
    previous : dict or None
        The group's sidecar before this attempt.
    record : dict
        This attempt's record (``config_hash``, ``inputs_hash``).

    Returns
    -------
    dict or None
        ``outputs`` (file names), ``finished`` (UTC time of the run that wrote them),
        ``config_hash``, ``inputs_hash`` and ``version`` of that run (None where unknown:
        no sidecar recorded it); None when there is no earlier product.
    """
    kept = [
        f"{name}{suffix}"
        for suffix in PRODUCT_SUFFIXES
        if (Path(output_dir) / f"{name}{suffix}").is_file()
    ]
    if not kept:
        return None
    origin = {}
    if previous and previous.get("status") == "ok":
        origin = previous
    elif previous and previous.get("stale"):  # kept through an earlier failed attempt
        origin = previous["stale"]
    stale = {"outputs": kept}
    for key in ("finished", "config_hash", "inputs_hash", "version"):
        stale[key] = origin.get(key)
    if stale["finished"] is None:
        how = "by an unknown run (no sidecar records it)"
    else:
        same = (
            stale["config_hash"] == record["config_hash"]
            and stale["inputs_hash"] == record["inputs_hash"]
        )
        how = (
            f"by the run of {stale['finished']} UTC (config {stale['config_hash']}, "
            + ("same configuration and inputs" if same else "another configuration or inputs")
            + ")"
        )
    log.warning(
        "group %s: this attempt failed; kept %s, written %s: stale, not a product of this run",
        name,
        ", ".join(kept),
        how,
    )
    return stale


def _stale_text(stale):
    """Summary text of a ``stale`` record: the run that wrote the kept products."""
    if not stale:
        return ""
    if stale.get("finished") is None:
        return "unknown run"
    return f"{stale['finished']} UTC, config {stale.get('config_hash')}"


# ============================================================================ workers
def _worker_setup():
    """Import the heavy modules and freeze the garbage collector's view of them.

    The ~230k objects of astropy/asdf/gwcs then stay out of every gc scan, which makes
    the per-group time steadier.  Runs in worker processes only.
    """
    import astropy.table  # noqa: F401

    from slitcombine.group import slitgroup  # noqa: F401

    if _extract_defaults() is not None:
        from slitcombine.pipeline import combine  # noqa: F401
    from slitcombine.io.reading import _slit_asdf_plugins

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


def _probe_scheduler(scheduler, timeout):
    """Fail at once when nothing listens at a TCP scheduler address.

    dask's :class:`~distributed.Client` retries a refused connection until its timeout
    and then reports a time-out; one plain TCP connection tells a refused connection,
    an unknown host or an unreachable network straight away.  A connection that does
    not answer is left to the client (a slow network may still answer in time).

    Raises
    ------
    BatchError
        The connection is refused or the host cannot be reached.
    """
    from distributed.comm.addressing import parse_address, parse_host_port

    try:
        scheme, location = parse_address(scheduler)
        host, port = parse_host_port(location)
    except ValueError as exc:
        raise BatchError(f"not a dask scheduler address: {scheduler!r} ({exc})") from exc
    if scheme not in ("tcp", "tls", "ws", "wss") or not port:
        return
    try:
        with socket.create_connection((host, port), timeout=min(float(timeout), 5.0)):
            pass
    except ConnectionRefusedError as exc:
        raise BatchError(
            f"cannot connect to the dask scheduler {scheduler!r}: connection refused "
            f"(nothing listens on {host}:{port}; is the scheduler running?)"
        ) from exc
    except socket.gaierror as exc:
        raise BatchError(
            f"cannot connect to the dask scheduler {scheduler!r}: unknown host {host!r} "
            f"({exc.strerror or exc})"
        ) from exc
    except TimeoutError:
        return  # no answer yet: the client waits for the rest of the timeout
    except OSError as exc:
        raise BatchError(
            f"cannot connect to the dask scheduler {scheduler!r}: {exc.strerror or exc}"
        ) from exc


@dataclass
class _Session:
    """A dask client, the LocalCluster it owns and the cluster's scratch folder."""

    client: object
    cluster: object = None
    scratch: str | None = None

    def cancel(self, futures):
        """Cancel ``futures`` (tasks not started are dropped; running ones finish)."""
        try:
            self.client.cancel(list(futures))
        except Exception as exc:  # the scheduler may be gone: closing is what matters
            log.warning("cannot cancel the unfinished tasks (%s: %s)", type(exc).__name__, exc)

    def close(self, timeout=30.0):
        """Close the client (and the cluster it owns), waiting at most ``timeout`` s each."""
        try:
            self.client.close(timeout=timeout)
        except Exception as exc:  # the run is over; a dirty close loses nothing of it
            log.warning("cannot close the dask client cleanly (%s: %s)", type(exc).__name__, exc)
        if self.cluster is not None:
            try:
                self.cluster.close(timeout=timeout)
            except Exception as exc:
                log.warning(
                    "cannot close the local cluster cleanly (%s: %s)", type(exc).__name__, exc
                )
            finally:
                shutil.rmtree(self.scratch, ignore_errors=True)


#: dask settings of the workers of the LocalCluster a batch starts.  dask's statistical
#: profiler samples every task thread's stack every 10 ms and keeps the last 1,000
#: one-second profiles (``distributed.admin.low-level-log-length``) twice (all tasks and
#: per task prefix): on slitcombine's deep call stacks that is ~0.2-0.4 MiB per second of
#: work, so a worker grew by ~400 MiB during its first ~17 minutes and kept it idle.
#: Nothing of slitcombine reads it; for workers started by hand see :doc:`/deployment`.
WORKER_DASK_CONFIG = {"distributed.worker.profile.enabled": False}


def _connect(workers, scheduler, timeout):
    """A :class:`_Session` on ``scheduler``, or on a new LocalCluster of ``workers``."""
    import dask
    from distributed import Client, LocalCluster

    if scheduler:
        _probe_scheduler(scheduler, timeout)
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
        return _Session(client)
    if int(workers) < 1:
        raise ConfigurationError(f"workers must be >= 1, got {workers}")
    # a scratch folder of our own: the default /tmp/dask-scratch-space is shared with
    # (and may be cleaned by) every other dask cluster on the machine
    scratch = tempfile.mkdtemp(prefix="slitcombine-dask-")
    try:
        with dask.config.set(WORKER_DASK_CONFIG):  # the nannies pass it to their workers
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
    try:
        client = Client(cluster)
    except BaseException:
        cluster.close()
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    return _Session(client, cluster, scratch)


def _setup_workers(client):
    """Register :class:`SlitcombineWorkerSetup` (runs on every worker, also later ones)."""
    try:
        client.register_plugin(SlitcombineWorkerSetup(), name=SlitcombineWorkerSetup.name)
    except Exception as exc:  # raised on a worker: it cannot import slitcombine
        raise BatchError(
            f"the dask workers cannot set up slitcombine ({type(exc).__name__}: {exc}); "
            "is the same slitcombine installed on the workers?"
        ) from exc


#: Name of the file the client writes in the output folder for the worker's path check.
PROBE_PREFIX = ".slitcombine-probe-"


def _worker_path_check(output_dir, token, first_input):
    """Run on a worker: does it see the client's output folder and first input?

    Parameters
    ----------
    output_dir : str
        The absolute output folder; the client wrote ``{PROBE_PREFIX}{token}.tmp`` there,
        holding ``token``.
    token : str
        What the probe file holds.
    first_input : str or None
        An input file the client sees (None: no check).

    Returns
    -------
    dict
        ``worker`` (host:pid), ``cwd`` (the worker's working folder), ``version``
        (slitcombine's) and ``problem`` (None, or what the worker cannot see, in words).
    """
    out = {
        "worker": f"{socket.gethostname()}:{os.getpid()}",
        "cwd": os.getcwd(),
        "version": __version__,
        "problem": None,
    }
    folder = Path(output_dir)
    probe = folder / f"{PROBE_PREFIX}{token}.tmp"
    if not folder.is_dir():
        out["problem"] = f"does not see the output folder {output_dir}"
        return out
    try:
        seen = probe.read_text(encoding="utf-8")
    except OSError:
        seen = None
    if seen != token:
        out["problem"] = (
            f"sees another folder at {output_dir} than this client (it lacks the file "
            f"{probe.name} just written there)"
        )
        return out
    try:
        fd, tmp = tempfile.mkstemp(prefix=PROBE_PREFIX, suffix=".tmp", dir=folder)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        out["problem"] = f"cannot write in the output folder {output_dir} ({exc.strerror or exc})"
        return out
    if first_input is not None and not os.access(first_input, os.R_OK):
        what = "cannot read" if os.path.exists(first_input) else "does not see"
        out["problem"] = f"{what} the input file {first_input}"
    return out


def _first_input(groups):
    """The first member file of ``groups`` that exists here (None if there is none)."""
    for g in groups:
        for m in g.members:
            path = m[0] if isinstance(m, (tuple, list)) else m
            if os.path.isfile(path):
                return str(path)
    return None


def _check_worker_paths(client, output_dir, groups):
    """Check on every worker that it sees the output folder and the first input.

    The client writes a probe file in ``output_dir``; each worker must read it there
    (the same folder, not one of the same name on its own disk), be able to write
    there, and read the first input file.  This catches relative paths, a missing shared
    file system and folders mounted elsewhere before any group runs.  It runs with
    :meth:`distributed.Client.run` (beside the tasks, not queued behind them) on the
    workers connected now; a worker that joins later is not checked.

    Raises
    ------
    BatchError
        Naming the path a worker cannot see, the worker's host and working folder.
    OutputError
        The probe file cannot be written by the client itself.
    """
    token = os.urandom(8).hex()
    probe = Path(output_dir) / f"{PROBE_PREFIX}{token}.tmp"
    try:
        probe.write_text(token, encoding="utf-8")
    except OSError as exc:
        raise OutputError(f"cannot write in the output folder {output_dir}: {exc}") from exc
    first = _first_input(groups)
    try:
        seen = client.run(_worker_path_check, str(output_dir), token, first, on_error="return")
    finally:
        probe.unlink(missing_ok=True)
    for address, answer in sorted(seen.items()):
        if isinstance(answer, BaseException):
            raise BatchError(
                f"the path check failed on the dask worker {address} "
                f"({type(answer).__name__}: {answer}); is the same slitcombine installed "
                "on the workers?"
            )
        if answer["problem"]:
            raise BatchError(
                f"the dask worker {answer['worker']} (working folder {answer['cwd']}) "
                f"{answer['problem']}: the workers must see the inputs and the output "
                "folder at the same absolute paths as this client (a shared file system)"
            )
        if answer["version"] != __version__:
            log.warning(
                "the dask worker %s runs slitcombine %s, this client %s: install the same "
                "version on both",
                answer["worker"],
                answer["version"],
                __version__,
            )
    log.info("%d worker(s) see %s and the inputs", len(seen), output_dir)


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
    except OSError as exc:
        raise OutputError(f"cannot create the output folder {str(output_dir)!r}: {exc}") from exc
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        raise OutputError(
            f"the output folder {str(output_dir)!r} is not writable: cannot create its lock "
            f"file {LOCK_NAME} ({exc.strerror or exc})"
        ) from exc
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
    groups : list of slitcombine.pipeline.discovery.GroupSpec
        The groups.
    config : slitcombine.pipeline.config.Config
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
    existed = output_dir.is_dir()
    try:
        (output_dir / "logs").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        what = f"its logs folder {str(output_dir / 'logs')!r}" if existed else "the output folder"
        raise OutputError(f"cannot create {what}: {exc}") from exc
    config_path = config.write(output_dir / "config.toml")
    manifest_path = write_manifest(
        groups, output_dir / "manifest.ecsv", meta={"config_hash": config.hash}
    )
    return config_path, manifest_path


class BatchInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) stopped :func:`run_batch`.

    A :class:`KeyboardInterrupt`, so that code catching ``Exception`` does not swallow
    it; it carries what was written.

    Parameters
    ----------
    result : BatchResult or None
        The run's result, its summary and index page written (groups not finished have
        status ``not run``); None when the run was interrupted before it started, in
        which case nothing was written.
    """

    def __init__(self, result=None):
        super().__init__("batch interrupted")
        self.result = result


class _InterruptGuard:
    """SIGINT handling of a batch run (installed in the main thread only).

    A Ctrl-C raises :class:`KeyboardInterrupt` only inside :meth:`armed` (starting the
    cluster, waiting for the tasks), and only once.  Anywhere else -- writing the
    configuration, manifest, summary and index page, closing the cluster -- and for
    every later Ctrl-C it is counted and logged only, so that a second Ctrl-C cannot
    lose the summary of the groups done (nor interrupt dask's ``Client.close``
    half-way, which prints errors of its own).
    """

    def __init__(self):
        self.count = 0
        self.raised = False
        self.is_armed = False
        self.previous = None
        self.started = False  # the run's inputs are written: it has started

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
                self.previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
        return False

    def _handler(self, signum, frame):
        self.count += 1
        if self.is_armed and not self.raised:
            self.raised = True
            raise KeyboardInterrupt
        log.warning("Ctrl-C: stopping once the summary is written and the cluster closed")

    @property
    def interrupted(self):
        """True once a Ctrl-C came."""
        return self.count > 0

    @contextlib.contextmanager
    def armed(self):
        """A block that a (first) Ctrl-C interrupts, also one that came just before it."""
        self.is_armed = True
        try:
            if self.count and not self.raised:
                self.raised = True
                raise KeyboardInterrupt
            yield
        finally:
            self.is_armed = False


def _absolute_member(member):
    if isinstance(member, (tuple, list)):
        return (os.path.abspath(member[0]), member[1])
    return os.path.abspath(member)


def _absolute_groups(groups):
    """The groups with absolute member paths (resolved against this process's folder).

    ``os.path.abspath``, not ``realpath``: the path stays the one the user gave (a
    symbolic link of a shared file system may point elsewhere on the workers).
    """
    return [
        dataclasses.replace(g, members=tuple(_absolute_member(m) for m in g.members))
        for g in groups
    ]


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

    Relative paths (the output folder, the input files) are made absolute here, in the
    calling process, before anything is sent to the workers, whose working folder may
    be another one.  Before the first group runs, every worker checks that it sees the
    output folder (the same one: it reads a file this process wrote there), can write
    in it, and can read the first input.  Nothing is written in the output folder
    until the cluster is up and this check has passed: a failed start leaves the folder
    as it was (a folder created for the run is removed again).

    Parameters
    ----------
    groups : list of slitcombine.pipeline.discovery.GroupSpec
        The groups (names must be unique).
    config : slitcombine.pipeline.config.Config
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
        Seconds to wait for the scheduler and for its first worker [s].
    skipped_files : list of (str, str)
        Files skipped by discovery, reported in the summary and the index page.

    Returns
    -------
    BatchResult

    Raises
    ------
    BatchError
        Unreachable scheduler (a refused connection is reported at once), a scheduler
        without workers, workers that do not see the output folder or the inputs,
        duplicate group names, another batch running in ``output_dir`` (see
        :func:`output_lock`).
    BatchInterrupted
        Ctrl-C: the summary of the groups done is written first (its ``result``), or
        nothing at all if the run had not started.
    ConfigurationError
        Mode ``combine`` in a version without :mod:`slitcombine.combine`.
    OutputError
        The output folder cannot be written.
    """
    if not isinstance(config, Config):
        raise ConfigurationError("config must be a slitcombine.pipeline.config.Config")
    if config.mode == "combine" and _extract_defaults() is None:
        raise ConfigurationError(
            "batch.mode = 'combine' needs slitcombine.combine, which this version lacks; "
            "use --set batch.mode=prepare"
        )
    names = [g.name for g in groups]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise BatchError(f"duplicate group names {dupes[:5]}: rename them in the manifest")
    # the workers' working folder is not this process's: absolute paths only
    output_dir = Path(os.path.abspath(output_dir))
    groups = _absolute_groups(groups)
    created = not output_dir.exists()
    guard = _InterruptGuard()
    try:
        with output_lock(output_dir), guard:
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
                guard=guard,
                created=created,
            )
    except BaseException:
        if created and not guard.started:  # after the lock's release: the empty folder
            try:
                output_dir.rmdir()
            except OSError as exc:  # not empty: someone else writes there now
                log.info("left the output folder %s (%s)", output_dir, exc)
        raise


def _undo_start(output_dir):
    """After a failed start in a folder created for the run: remove what the run put there.

    The folder itself is removed by :func:`run_batch` once the lock is released.
    """
    output_dir = Path(output_dir)
    for name in ("config.toml", "manifest.ecsv", LOCK_NAME):
        with contextlib.suppress(OSError):
            (output_dir / name).unlink()
    with contextlib.suppress(OSError):
        (output_dir / "logs").rmdir()  # empty: no group ran


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
    guard,
    created,
):
    """:func:`run_batch` once the output folder is locked and the paths are absolute."""
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
    # the start: the cluster, its workers' set-up and path check, then the run's inputs;
    # nothing is written in the output folder before the cluster is known to work
    session = None
    t0 = time.perf_counter()
    started = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    try:
        with guard.armed():
            if todo:
                session = _connect(workers, scheduler, timeout)
                _setup_workers(session.client)
                _check_worker_paths(session.client, output_dir, todo)
        startup = time.perf_counter() - t0 if todo else 0.0
        config_path, manifest_path = write_inputs(groups, config, output_dir)
    except BaseException as exc:
        if session is not None:
            session.close()
        if created:
            _undo_start(output_dir)
        if isinstance(exc, KeyboardInterrupt):
            raise BatchInterrupted(None) from None
        raise
    guard.started = True
    wall = 0.0
    futures = {}
    interrupted = False
    try:
        if session is not None and not guard.interrupted:
            t1 = time.perf_counter()
            try:
                with guard.armed():
                    _run_tasks(session.client, todo, config, output_dir, records, futures, progress)
            except KeyboardInterrupt:
                interrupted = True
                log.warning(
                    "interrupted: %d task(s) not finished", sum(not f.done() for f in futures)
                )
            wall = time.perf_counter() - t1
        # from here on a Ctrl-C is only counted: the summary is written, then the close
        interrupted = interrupted or guard.interrupted
        result = _write_reports(
            groups,
            records,
            config,
            output_dir,
            scheduler=scheduler,
            workers=workers,
            wall=wall,
            startup=startup,
            interrupted=interrupted,
            skipped_files=skipped_files,
            paths=(config_path, manifest_path),
            started=started,
        )
    finally:
        if session is not None:
            if (interrupted or guard.interrupted) and futures:
                session.cancel(futures)
            session.close()
    _warn_missing_tables(result.records)
    if result.interrupted:
        raise BatchInterrupted(result)
    _remove_temporaries(output_dir, [g.name for g in todo])
    return result


def _write_reports(
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
    with this configuration and inputs (see :func:`_resumable`) is listed as done: its
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
                and _resumable(prev, config, g.members, False, output_dir)
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


def _run_tasks(client, todo, config, output_dir, records, futures, progress):
    """Submit the tasks and collect their records (``futures`` is filled as submitted).

    A :class:`KeyboardInterrupt` propagates; the records received so far are in
    ``records``.
    """
    from distributed import as_completed
    from tqdm import tqdm

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
    finally:
        bar.close()


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
    config : slitcombine.pipeline.config.Config
        Its ``[discovery]`` section says how folders are scanned and grouped.

    Returns
    -------
    groups : list of GroupSpec
    skipped : list of (str, str)
        Files skipped by discovery.
    """
    from slitcombine.pipeline.discovery import discover, read_manifest

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
