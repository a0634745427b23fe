"""The dask side of a batch: the cluster, its workers' set-up and their path check.

:func:`connect` starts a ``LocalCluster`` of single-threaded worker processes or
connects to an existing scheduler; :func:`setup_workers` registers
:class:`SlitcombineWorkerSetup`; :func:`check_worker_paths` makes every worker prove
that it sees the output folder and the first input before any group runs.
"""

from __future__ import annotations

import gc
import logging
import os
import shutil
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path

from distributed.diagnostics.plugin import WorkerPlugin

from slitcombine._version import __version__
from slitcombine.errors import ConfigurationError, OutputError, SlitCombineError
from slitcombine.pipeline.config_schema import _extract_defaults

log = logging.getLogger(__name__)

__all__ = [
    "BatchError",
    "SlitcombineWorkerSetup",
    "WORKER_DASK_CONFIG",
    "PROBE_PREFIX",
    "connect",
    "setup_workers",
    "check_worker_paths",
]


class BatchError(SlitCombineError):
    """The batch cannot run: scheduler unreachable, no workers, duplicate group names."""


def _worker_setup():
    """Import the heavy modules and freeze the garbage collector's view of them.

    The ~230k objects of astropy/asdf/gwcs then stay out of every gc scan, which makes
    the per-group time steadier.  Runs in worker processes only.
    """
    import astropy.table  # noqa: F401

    from slitcombine.group import slitgroup  # noqa: F401

    if _extract_defaults() is not None:
        from slitcombine.pipeline import combine  # noqa: F401
    from slitcombine.io._asdf_plugins import _slit_asdf_plugins

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


def connect(workers, scheduler, timeout):
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


def setup_workers(client):
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


def check_worker_paths(client, output_dir, groups):
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
