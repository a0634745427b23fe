"""The record a batch keeps of each group: the sidecar ``{group}.batch.json``.

Written last by :func:`slitcombine.pipeline.task.process_group`, atomically, after the
group's outputs, so that a group counts as done only if its sidecar exists; read by
:func:`slitcombine.pipeline.batch.run_batch` to resume (:func:`resumable`) and by
:mod:`slitcombine.pipeline.report`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np

from slitcombine._atomic import atomic_write_text

log = logging.getLogger(__name__)

__all__ = [
    "SIDECAR_SUFFIX",
    "sidecar_path",
    "log_path",
    "inputs_hash",
    "read_sidecar",
    "write_json",
    "resumable",
]

SIDECAR_SUFFIX = ".batch.json"


def sidecar_path(output_dir, name):
    return Path(output_dir) / f"{name}{SIDECAR_SUFFIX}"


def log_path(output_dir, name):
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
    path = sidecar_path(output_dir, name)
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


def write_json(path, record):
    text = json.dumps(record, indent=1, default=_json_default, allow_nan=True)
    return atomic_write_text(path, text + "\n")


def resumable(prev, config, members, retry_failed, output_dir):
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
