"""The task a batch runs on a worker for each group: :func:`process_group`.

It builds the group (mode ``prepare``) or combines it (mode ``combine``), writes the
products, the group's log and its sidecar (:mod:`slitcombine.pipeline.sidecar`), keeps
the products of an earlier run when the new attempt fails, and gives the memory the
group used back to the operating system.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import logging
import os
import socket
import sys
import threading
import time
import traceback
import warnings
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from slitcombine._version import __version__
from slitcombine.errors import OutputError, SlitCombineError
from slitcombine.pipeline.discovery import format_member
from slitcombine.pipeline.sidecar import (
    inputs_hash,
    log_path,
    read_sidecar,
    sidecar_path,
    write_json,
)

log = logging.getLogger(__name__)

__all__ = ["process_group", "PRODUCT_SUFFIXES"]


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
    (``tables``: the batch says it once per run, :func:`warn_missing_tables`), every
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
    path = write_json(Path(output_dir) / f"{name}.group.json", record)
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
    level = logging.getLevelName(config.section("batch")["log_level"].upper())
    record = _new_record(name, members, config)
    sidecar = sidecar_path(output_dir, name)
    previous = read_sidecar(output_dir, name)  # says which run wrote the products there
    sidecar.unlink(missing_ok=True)  # a stale "ok" must not outlive a new attempt
    with (
        _GroupLog(log_path(output_dir, name), level),
        _GroupWarnings() as warned,
        warnings.catch_warnings(record=True) as caught,
    ):
        warnings.simplefilter("default")
        _run_work(record, members, config, output_dir)
        if record["status"] != "ok":
            record["stale"] = _keep_earlier_products(output_dir, name, previous, record)
        _record_warnings(record, warned, caught)
        record["runtime"] = time.perf_counter() - t0
        record["cpu_time"] = time.process_time() - c0
        record["finished"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S")
        try:
            write_json(sidecar, record)
        except OutputError as exc:
            log.error("group %s: cannot write the sidecar: %s", name, exc)
            record.update(status="failed", error_type="OutputError", error=str(exc))
    _release_memory()
    return record


def _new_record(name, members, config):
    """The record of a new attempt of group ``name``: failed until the work succeeds."""
    return {
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
        "config_hash": config.hash,
        "inputs_hash": inputs_hash(members),
        "mode": config.mode,
        "version": __version__,
        "n_warnings": 0,
        "n_exposures": len(members),
        "members": [format_member(m) for m in members],
    }


def _run_work(record, members, config, output_dir):
    """Do the group's work (mode ``prepare`` or ``combine``) and record how it went.

    Never raises for a problem of the group: ``record`` gets the outputs and the
    signal-to-noise (``status`` ``'ok'``), or the error (a
    :class:`~slitcombine.errors.SlitCombineError`, or any other exception flagged
    ``bug``, its traceback logged).
    """
    name = record["group"]
    log.info(
        "group %s: %d member(s), mode %s, config %s",
        name,
        len(members),
        config.mode,
        record["config_hash"],
    )
    for m in members:
        log.info("  member %s", format_member(m))
    try:
        if config.mode == "prepare":
            paths, spec = _work_prepare(name, members, config, output_dir)
        else:
            paths, spec = _work_combine(name, members, config, output_dir, record["config_hash"])
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


def _record_warnings(record, warned, caught):
    """Log the Python warnings ``caught`` and put the group's warnings in ``record``.

    ``n_warnings`` and ``warnings`` (at most 20) are the distinct WARNING messages of
    the group's log but its own failure message, ``missing_tables`` the calibration
    tables its default steps lacked (:class:`_GroupWarnings`).
    """
    for w in caught:
        log.warning("%s: %s (%s:%s)", w.category.__name__, w.message, w.filename, w.lineno)
    failed_message = f"group {record['group']} failed"
    messages = [m for m in warned.messages if not m.startswith(failed_message)]
    record["n_warnings"] = len(messages)
    record["warnings"] = messages[:20]
    record["missing_tables"] = sorted(warned.tables)


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
