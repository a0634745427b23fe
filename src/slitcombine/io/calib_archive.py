"""Reading msaexp's published archive (source tarball or wheel) for its calibration tables.

:func:`slitcombine.io.calib.fetch` opens the archive with :class:`Archive` and writes its
tables (:data:`slitcombine.io.calib.TABLE_PATTERNS`, checked by :func:`check_table`) with
their layout relative to ``msaexp/data/`` with :func:`extract_tables`.
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import re
import tarfile
import zipfile
from pathlib import Path, PurePosixPath

from slitcombine.io.calib import TABLE_PATTERNS, CalibrationFetchError

__all__ = ["Archive", "check_table", "extract_tables", "table_kind"]

#: Path of a file of ``msaexp/data/`` inside an archive (top folder optional).
DATA_ROOT = re.compile(r"^(?:[^/]+/)?msaexp/data/(.+)$")


def table_kind(rel):
    """Kind of a path relative to ``msaexp/data/`` (None: not a calibration table)."""
    p = PurePosixPath(rel)
    folder = str(p.parent) if str(p.parent) != "." else ""
    for kind, sub, pattern in TABLE_PATTERNS:
        if folder == sub and fnmatch.fnmatchcase(p.name, pattern):
            return kind
    return None


def safe_rel(rel):
    """``rel`` if it is a plain relative path (no ``..``, not absolute), else None."""
    p = PurePosixPath(rel)
    if p.is_absolute() or any(part in ("", "..") for part in p.parts):
        return None
    return str(p)


class Archive:
    """Read-only view of a source archive (``.tar.gz``/``.tgz``/``.tar``) or a wheel/zip."""

    def __init__(self, path):
        self.path = Path(path)
        name = self.path.name.lower()
        try:
            if name.endswith((".whl", ".zip")):
                self.kind = "zip"
                self._zip = zipfile.ZipFile(self.path)
                self._members = {i.filename: i for i in self._zip.infolist() if not i.is_dir()}
            elif name.endswith((".tar.gz", ".tgz", ".tar", ".tar.bz2", ".tar.xz")):
                self.kind = "tar"
                self._tar = tarfile.open(self.path)
                self._members = {m.name: m for m in self._tar.getmembers() if not m.isdir()}
            else:
                raise CalibrationFetchError(
                    f"{self.path}: not a source archive (.tar.gz) or a wheel (.whl)"
                )
        except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as exc:
            raise CalibrationFetchError(
                f"{self.path}: corrupt or partial archive ({type(exc).__name__}: {exc})"
            ) from exc

    def names(self):
        return list(self._members)

    def read(self, name):
        """Bytes of member ``name`` (links followed inside the archive)."""
        try:
            if self.kind == "zip":
                return self._zip.read(self._members[name])
            fh = self._tar.extractfile(self._members[name])
            if fh is None:
                raise CalibrationFetchError(f"{self.path}: {name} is not a regular file")
            with fh:
                return fh.read()
        except KeyError as exc:  # a link to a member that is not in the archive
            raise CalibrationFetchError(
                f"{self.path}: {name} links to a file outside the archive"
            ) from exc
        except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as exc:
            raise CalibrationFetchError(
                f"{self.path}: corrupt or partial archive, cannot read {name} "
                f"({type(exc).__name__}: {exc})"
            ) from exc

    def version(self):
        """The msaexp version in the archive's metadata (PKG-INFO or METADATA), or None."""
        for name in self._members:
            parts = name.split("/")
            meta = (len(parts) == 2 and parts[1] == "PKG-INFO") or (
                len(parts) == 2 and parts[0].endswith(".dist-info") and parts[1] == "METADATA"
            )
            if meta:
                text = self.read(name).decode("utf-8", "replace")
                got = re.search(r"^Name:\s*(\S+)\s*$", text, re.M)
                ver = re.search(r"^Version:\s*(\S+)\s*$", text, re.M)
                if got and got.group(1).lower() == "msaexp" and ver:
                    return ver.group(1)
        m = re.match(r"msaexp-(\d[^-]*?)(?:\.tar\.gz|\.tgz|\.tar|\.zip|-py)", self.path.name)
        return m.group(1) if m else None

    def licence(self):
        """Bytes of msaexp's licence file, or None."""
        for name in self._members:
            parts = name.split("/")
            top = len(parts) == 2 and not parts[0].endswith(".dist-info")
            dist = len(parts) >= 2 and parts[0].endswith(".dist-info")
            if (top or dist) and parts[-1].upper() in ("LICENSE", "LICENSE.TXT", "LICENSE.RST"):
                return self.read(name)
        return None

    def close(self):
        if self.kind == "zip":
            self._zip.close()
        else:
            self._tar.close()


def check_table(rel, data):
    """Raise ValueError if ``data`` is not a plausible table of its format."""
    if rel.endswith(".fits"):
        if not data.startswith(b"SIMPLE  =") or len(data) % 2880:
            raise ValueError(f"not a complete FITS file ({len(data)} bytes)")
    elif rel.endswith(".yaml"):
        import yaml

        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        try:
            content = yaml.load(io.BytesIO(data), Loader=loader)  # noqa: S506 (safe loader)
        except yaml.YAMLError as exc:
            raise ValueError(f"not YAML ({exc})") from exc
        if not isinstance(content, dict):
            raise ValueError("not a YAML mapping")
    elif rel.endswith(".csv"):
        head = data[:200].decode("utf-8", "replace").splitlines()
        cols = [c.strip().lower() for c in (head[0].split(",") if head else [])]
        if "wave" not in cols or "flux" not in cols:
            raise ValueError("no 'wave,flux' header")


def extract_tables(archive, dest, on_member=None):
    """Write the calibration tables of ``archive`` into ``dest``; their manifest entries."""
    files = {}
    for name in sorted(archive.names()):
        m = DATA_ROOT.match(name)
        if not m:
            continue
        rel = safe_rel(m.group(1))
        kind = None if rel is None else table_kind(rel)
        if kind is None:
            continue
        data = archive.read(name)
        try:
            check_table(rel, data)
        except ValueError as exc:
            raise CalibrationFetchError(
                f"{archive.path}: {name} is not a valid table ({exc}): corrupt archive?"
            ) from exc
        target = Path(dest) / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        files[rel] = {
            "kind": kind,
            "sha256": hashlib.sha256(data).hexdigest(),
            "size": len(data),
        }
        if on_member is not None:
            on_member(rel)
    return files
