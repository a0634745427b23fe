"""The output lock of a batch: one batch at a time in an output folder."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
from datetime import UTC, datetime
from pathlib import Path

from slitcombine.errors import OutputError
from slitcombine.pipeline.cluster import BatchError

log = logging.getLogger(__name__)

__all__ = ["LOCK_NAME", "output_lock"]

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
