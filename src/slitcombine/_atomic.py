"""Atomic file writing shared by every writer of the package.

A file is written under a temporary name in its destination folder and renamed into
place only when complete, so an interrupted or failed write never leaves a partial
file.  The final file gets the permissions of a normally created file (``0o666``
less the process umask), not the owner-only mode of :func:`tempfile.mkstemp`.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

from slitcombine.errors import OutputError

__all__ = ["atomic_path", "atomic_write_text"]


def _umask():
    """The process umask (read by setting and restoring it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path):
    """Context manager yielding a temporary path that becomes ``path`` on success.

    Parameters
    ----------
    path : str or path-like
        The final file.  Its folder must exist.

    Yields
    ------
    str
        A temporary file name in the same folder, to be written by name.

    Raises
    ------
    OutputError
        If the temporary file cannot be created.  Any exception raised inside the
        block propagates after the temporary file has been removed.
    """
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as exc:
        raise OutputError(f"cannot write in {path.parent}: {exc}") from exc
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path, text):
    """Write a text file (UTF-8) atomically, creating its folder if needed.

    Parameters
    ----------
    path : str or path-like
        The file to write.
    text : str
        Its content.

    Returns
    -------
    pathlib.Path
        The written file.

    Raises
    ------
    OutputError
        If the folder or the file cannot be written; no partial file is left.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            Path(tmp).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc}") from exc
    return path
