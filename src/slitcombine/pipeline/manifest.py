"""The manifest of a batch: one row per group (:class:`GroupSpec`), its members as text.

:func:`write_manifest` writes the groups found by :func:`slitcombine.pipeline.discovery.discover`
as an ECSV table (:data:`MANIFEST_COLUMNS`), :func:`read_manifest` reads it back (possibly
edited); :func:`format_member` and :func:`parse_member` write and read one member
(``path`` or ``path[source_id]``).  The format is described in
:mod:`slitcombine.pipeline.discovery`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.table import Table

from slitcombine._version import __version__
from slitcombine.errors import ConfigurationError, InputFileError

__all__ = [
    "GroupSpec",
    "MANIFEST_COLUMNS",
    "MEMBER_SEPARATOR",
    "manifest_table",
    "write_manifest",
    "read_manifest",
    "format_member",
    "parse_member",
]

#: Columns of a manifest, in order (``group`` and ``files`` are required on reading).
MANIFEST_COLUMNS = (
    "group",
    "source_id",
    "source_name",
    "grating",
    "filter",
    "visit",
    "detector",
    "slitlet_id",
    "exp_type",
    "n_exposures",
    "files",
)

#: Separator of the members in the ``files`` column.
MEMBER_SEPARATOR = ";"

_MEMBER_RE = re.compile(r"^(?P<path>.*)\[(?P<sid>[^\[\]]+)\]$")


@dataclass(frozen=True)
class GroupSpec:
    """One group of a manifest: what one batch task combines.

    Attributes
    ----------
    name : str
        Group name, also the output file name root (``{name}.spec.fits``).
    members : tuple
        Paths and ``(path, source_id)`` tuples, in exposure order.
    info : dict
        The other manifest columns (source, grating, filter, visit ...).
    """

    name: str
    members: tuple
    info: dict

    def to_dict(self):
        """Plain, picklable dict: ``{'group', 'members', **info}``."""
        return {**self.info, "group": self.name, "members": list(self.members)}


def format_member(member, relative_to=None):
    """Manifest text of a member: ``path`` or ``path[source_id]``.

    Parameters
    ----------
    member : str, path-like or (path, source_id)
        A per-slit file, or one slit of a ``MultiSlitModel`` file.
    relative_to : str or path-like, optional
        Write the path relative to this folder (the manifest's).

    Returns
    -------
    str

    Raises
    ------
    ConfigurationError
        A file name that contains the member separator ``;``.
    """
    if isinstance(member, (tuple, list)):
        path, sid = member
    else:
        path, sid = member, None
    path = str(path)
    if relative_to is not None:
        absolute = Path(path).resolve()
        try:
            rel = absolute.relative_to(Path(relative_to).resolve())
        except ValueError:  # not below the manifest's folder: keep it absolute
            path = str(absolute)
        else:
            path = rel.as_posix()
    if MEMBER_SEPARATOR in path:
        raise ConfigurationError(f"file name {path!r} contains {MEMBER_SEPARATOR!r}")
    return path if sid is None else f"{path}[{sid}]"


def parse_member(text, base=None):
    """Inverse of :func:`format_member`.

    Parameters
    ----------
    text : str
        ``path`` or ``path[source_id]``.
    base : str or path-like, optional
        Folder that a relative path is relative to (the manifest's).

    Returns
    -------
    str or (str, int or str)
        The path, or ``(path, source_id)`` for a slit of a ``MultiSlitModel``.
    """
    text = text.strip()
    match = _MEMBER_RE.match(text)
    path, sid = (match["path"], match["sid"].strip()) if match else (text, None)
    p = Path(path)
    if base is not None and not p.is_absolute():
        p = Path(base) / p
    path = str(p)
    if sid is None:
        return path
    return (path, int(sid) if re.fullmatch(r"[+-]?\d+", sid) else sid)


def manifest_table(groups, relative_to=None, meta=None):
    """The manifest of ``groups`` as an astropy Table (one row per group).

    ``source_id`` and ``slitlet_id`` are masked (empty in the ECSV) when unknown.

    Parameters
    ----------
    groups : iterable of GroupSpec
        The groups.
    relative_to : str or path-like, optional
        Write the file paths relative to this folder.
    meta : dict, optional
        Table metadata (written in the ECSV header).

    Returns
    -------
    astropy.table.Table
        Columns :data:`MANIFEST_COLUMNS`.
    """
    from astropy.table import MaskedColumn

    cols = {c: [] for c in MANIFEST_COLUMNS}
    for g in groups:
        info = g.info
        cols["group"].append(g.name)
        for key in ("source_id", "slitlet_id"):
            cols[key].append(info.get(key))
        for key in ("source_name", "grating", "filter", "visit", "detector", "exp_type"):
            cols[key].append(str(info.get(key) or ""))
        cols["n_exposures"].append(len(g.members))
        cols["files"].append(
            MEMBER_SEPARATOR.join(format_member(m, relative_to) for m in g.members)
        )
    table = Table()
    for name, values in cols.items():
        if name in ("source_id", "slitlet_id"):
            data = np.array([0 if v is None else int(v) for v in values], dtype=np.int64)
            table[name] = MaskedColumn(data, mask=[v is None for v in values])
        elif name == "n_exposures":
            table[name] = np.array(values, dtype=np.int64)
        else:
            table[name] = np.array(values, dtype=str)
    table.meta["slitcombine_version"] = __version__
    table.meta["description"] = (
        "slitcombine manifest: one row per group; files = members separated by ';', "
        "path[source_id] for a slit of a MultiSlitModel, relative to this file's folder"
    )
    table.meta.update(meta or {})
    return table


def write_manifest(groups, path, meta=None):
    """Write the manifest ECSV atomically (see :func:`format_member` for the paths).

    Parameters
    ----------
    groups : iterable of GroupSpec
        The groups.
    path : str or path-like
        Destination ``.ecsv`` file.
    meta : dict, optional
        Table metadata (written in the ECSV header).

    Returns
    -------
    pathlib.Path
    """
    from slitcombine._atomic import atomic_write_text

    path = Path(path)
    table = manifest_table(groups, relative_to=path.parent, meta=meta)
    import io

    buf = io.StringIO()
    table.write(buf, format="ascii.ecsv")
    return atomic_write_text(path, buf.getvalue())


def read_manifest(path):
    """Read a manifest (as written by :func:`write_manifest`, possibly edited).

    Parameters
    ----------
    path : str or path-like

    Returns
    -------
    list of GroupSpec

    Raises
    ------
    InputFileError
        Missing or unreadable file, missing ``group``/``files`` columns, an empty or
        duplicated group name, a group without files.
    """
    path = Path(path)
    if not path.is_file():
        raise InputFileError(path, "manifest not found")
    try:
        table = Table.read(path, format="ascii.ecsv")
    except Exception as exc:  # astropy raises many types for a malformed ECSV
        raise InputFileError(path, f"not a readable ECSV manifest ({exc})") from exc
    for col in ("group", "files"):
        if col not in table.colnames:
            raise InputFileError(path, f"manifest has no {col!r} column")
    groups, seen = [], set()
    base = path.parent
    for i, row in enumerate(table):
        name = str(row["group"]).strip()
        if not name or name in seen:
            raise InputFileError(path, f"row {i + 1}: empty or duplicated group name {name!r}")
        seen.add(name)
        members = tuple(
            parse_member(t, base) for t in str(row["files"]).split(MEMBER_SEPARATOR) if t.strip()
        )
        if not members:
            raise InputFileError(path, f"group {name!r} lists no files")
        info = {}
        for col in table.colnames:
            if col in ("group", "files"):
                continue
            value = row[col]
            if value is np.ma.masked or np.ma.is_masked(value):
                value = None  # an empty cell (unknown source or slitlet id)
            elif hasattr(value, "item"):
                value = value.item()
            info[col] = value
        info["n_exposures"] = len(members)
        groups.append(GroupSpec(name=name, members=members, info=info))
    return groups
