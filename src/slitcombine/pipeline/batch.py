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

Modules
-------
This module drives the run (:func:`run_batch`: the session, the submission, the
interrupts); the task run on the workers is :mod:`slitcombine.pipeline.task`, the
sidecar :mod:`slitcombine.pipeline.sidecar`, the dask cluster and its workers
:mod:`slitcombine.pipeline.cluster`, the output folder's lock
:mod:`slitcombine.pipeline.lock` and the summary, index page and closing lines
:mod:`slitcombine.pipeline.report`.  The public names of those modules are importable
from here too.

Interrupts
----------
Ctrl-C stops the wait for the tasks; the summary and index page of the groups done are
written before the cluster is closed, and a second Ctrl-C does not interrupt that
(:class:`BatchInterrupted` carries the result).
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import logging
import os
import shutil
import signal
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from slitcombine.errors import ConfigurationError, OutputError
from slitcombine.pipeline.cluster import (
    BatchError,
    SlitcombineWorkerSetup,
    check_worker_paths,
    connect,
    setup_workers,
)
from slitcombine.pipeline.config import Config
from slitcombine.pipeline.config_schema import _extract_defaults
from slitcombine.pipeline.discovery import write_manifest
from slitcombine.pipeline.lock import LOCK_NAME, output_lock
from slitcombine.pipeline.report import (
    SUMMARY_COLUMNS,
    BatchResult,
    warn_missing_tables,
    write_index,
    write_reports,
    write_summary,
)
from slitcombine.pipeline.sidecar import inputs_hash, read_sidecar, resumable
from slitcombine.pipeline.task import process_group

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

    Notes
    -----
    Over 80 lines for this docstring only: the body is ~30 lines.
    """
    _check_run(groups, config)
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


def _check_run(groups, config):
    """Refuse a run that cannot start: not a Config, no combine, duplicate group names.

    Raises
    ------
    ConfigurationError
        ``config`` is no :class:`~slitcombine.pipeline.config.Config`, or mode
        ``combine`` in a version without :mod:`slitcombine.combine`.
    BatchError
        Two groups have the same name.
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
    records, todo = _to_run(groups, config, output_dir, resume, retry_failed)
    # the start: the cluster, its workers' set-up and path check, then the run's inputs;
    # nothing is written in the output folder before the cluster is known to work
    session = None
    t0 = time.perf_counter()
    started = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    try:
        with guard.armed():
            if todo:
                session = connect(workers, scheduler, timeout)
                setup_workers(session.client)
                check_worker_paths(session.client, output_dir, todo)
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
        result = write_reports(
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
    warn_missing_tables(result.records)
    if result.interrupted:
        raise BatchInterrupted(result)
    _remove_temporaries(output_dir, [g.name for g in todo])
    return result


def _to_run(groups, config, output_dir, resume, retry_failed):
    """The records of the groups done before (``resume``) and the groups to run.

    Returns
    -------
    records : dict
        Group name -> its sidecar record (``resumed=True``), for the groups skipped.
    todo : list of GroupSpec
        The groups to run.
    """
    records = {}
    todo = []
    for g in groups:
        prev = read_sidecar(output_dir, g.name) if resume else None
        if resumable(prev, config, g.members, retry_failed, output_dir):
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
    return records, todo


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
