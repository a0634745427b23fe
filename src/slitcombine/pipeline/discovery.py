"""Find slit files, group them by source, grating/filter and visit, and write a manifest.

Discovery reads FITS headers only (no arrays, no ASDF/WCS), so scanning a folder of a
few thousand files takes seconds.

* Per-slit ``SlitModel`` files (``*_phot.*.fits``, single-slit ``*_cal.fits``) are group
  members as they are (a path).
* Every slit of a ``MultiSlitModel`` ``*_cal.fits`` is a member ``(path, source_id)``; it
  is read by source id by :func:`slitcombine.read_slit`, the file is never split on disk.

A group holds the exposures of one source with one grating/filter in one "visit", where
the visit key is made of the underscore-separated parts of the file name at the
positions ``join`` (like the ``join`` argument of msaexp's ``split_visit_groups``; the
default ``[0, 3]`` turns ``jw01345062001_03101_00001_nrs2_phot.138.1345_933.fits`` into
``jw01345062001_nrs2``: program/observation/visit and detector).  No program-specific
rule is applied: to split or merge differently, change ``join`` or edit the manifest.

The manifest is an ECSV table with one row per group::

    group  source_id  source_name  grating  filter  visit  detector  slitlet_id
    exp_type  n_exposures  files

``files`` lists the members separated by ``;``, a ``MultiSlitModel`` member being written
``path[source_id]``.  Files below the manifest's folder are written relative to it
(relative paths are read relative to it), the others as absolute paths.  Delete a row
to drop a group, edit ``files`` to drop or add exposures, rename ``group`` to change the
output names; then run ``slitcombine batch manifest.ecsv --output-dir ...``.
The manifest's reading and writing are :mod:`slitcombine.pipeline.manifest` (its names
are importable from here too).
"""

from __future__ import annotations

import glob
import logging
import os
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits

from slitcombine.errors import InputFileError, SlitCombineError
from slitcombine.io.reading import list_slits
from slitcombine.pipeline.config import DISCOVERY_DEFAULTS
from slitcombine.pipeline.manifest import (
    MANIFEST_COLUMNS,
    MEMBER_SEPARATOR,
    GroupSpec,
    format_member,
    manifest_table,
    parse_member,
    read_manifest,
    write_manifest,
)

__all__ = [
    "SlitEntry",
    "GroupSpec",
    "find_slit_files",
    "unsearched_folders",
    "expand_patterns",
    "scan_file",
    "visit_key",
    "group_entries",
    "discover",
    "manifest_table",
    "write_manifest",
    "read_manifest",
    "format_member",
    "parse_member",
    "MANIFEST_COLUMNS",
]

log = logging.getLogger(__name__)


_UNSAFE = re.compile(r"[^A-Za-z0-9_.+-]+")
_SLIT_EXP_TYPES = ("NRS_MSASPEC", "NRS_FIXEDSLIT", "NRS_AUTOWAVE")


@dataclass(frozen=True)
class SlitEntry:
    """One slit of one exposure, as found by :func:`scan_file` (headers only).

    Attributes
    ----------
    path : str
        The file.
    multi : bool
        True for a slit of a ``MultiSlitModel`` (member ``(path, source_id)``).
    source_id : int or None
        ``SOURCEID``.
    source_name, slit_name : str
        ``SRCNAME``, ``SLTNAME``.
    slitlet_id : int or None
        ``SLITID``.
    grating, filter, detector, exp_type : str
        Upper-case keyword values.
    exposure : int
        ``EXPOSURE`` number (0 when absent), for ordering.
    expstart : float or None
        ``EXPSTART`` (MJD): with the detector and slitlet it identifies the exposure,
        whichever file (per-slit or MultiSlitModel) holds it.
    """

    path: str
    multi: bool
    source_id: int | None
    source_name: str
    slit_name: str
    slitlet_id: int | None
    grating: str
    filter: str
    detector: str
    exp_type: str
    exposure: int
    expstart: float | None = None

    @property
    def member(self):
        """What :class:`~slitcombine.SlitGroup` takes: a path or ``(path, source_id)``."""
        return (self.path, self.source_id) if self.multi else self.path

    @property
    def source_key(self):
        """The source part of the group key (source id, else the source/slit name)."""
        if self.source_id is not None:
            return str(self.source_id)
        return self.source_name or self.slit_name


# ---------------------------------------------------------------------------- finding
def expand_patterns(paths):
    """Expand the wildcard arguments a shell left as typed (quoted, or matching nothing).

    Parameters
    ----------
    paths : iterable of str or path-like
        Files, folders or glob patterns (``*``, ``?``, ``[...]``).  A path that exists is
        kept as it is, even if its name has such characters.

    Returns
    -------
    list of str
        The paths, each pattern replaced by its sorted matches.

    Raises
    ------
    InputFileError
        A pattern matches no file ("no file matches this pattern").
    """
    out = []
    for path in paths:
        path = str(path)
        if glob.has_magic(path) and not Path(path).exists():
            matched = sorted(glob.glob(path))
            if not matched:
                raise InputFileError(path, "no file matches this pattern")
            out += matched
        else:
            out.append(path)
    return out


def unsearched_folders(inputs, patterns=None, depth=3):
    """Sub-folders of the input folders that hold slit files a flat search misses.

    Parameters
    ----------
    inputs : iterable of str or path-like
        Folders and files (files are ignored).
    patterns : list of str, optional
        Glob patterns (default those of :data:`slitcombine.pipeline.config.DISCOVERY_DEFAULTS`).
    depth : int
        How many levels below each input folder to look (MAST's download layout,
        ``mastDownload/JWST/<observation>/``, needs 3).

    Returns
    -------
    list of (str, int)
        ``(folder, number of matching files)``, sorted.
    """
    patterns = list(patterns or DISCOVERY_DEFAULTS["patterns"])
    counts = Counter()
    for item in inputs:
        path = Path(item)
        if not path.is_dir():
            continue
        for level in range(1, depth + 1):
            for pat in patterns:
                for hit in path.glob("*/" * level + pat):
                    if hit.is_file():
                        counts[str(hit.parent)] += 1
    return sorted(counts.items())


def find_slit_files(inputs, patterns=None, recursive=True):
    """Expand folders and files into a sorted list of candidate slit files.

    Parameters
    ----------
    inputs : iterable of str or path-like
        Folders (searched with ``patterns``) and files (taken as they are).
    patterns : list of str, optional
        Glob patterns (default ``*_phot.*.fits`` and ``*_cal.fits``).
    recursive : bool
        Search sub-folders too (the default: MAST's download layout has them).

    Returns
    -------
    list of str

    Raises
    ------
    InputFileError
        An input that does not exist, or a folder without any matching file.
    """
    patterns = list(patterns or DISCOVERY_DEFAULTS["patterns"])
    found = []
    for item in expand_patterns(inputs):
        path = Path(item)
        if path.is_dir():
            hits = set()
            for pat in patterns:
                hits.update(path.rglob(pat) if recursive else path.glob(pat))
            hits = sorted(str(h) for h in hits if h.is_file())
            if not hits:
                where = "in this folder or below" if recursive else "in this folder"
                hint = ""
                # up to three levels down (mastDownload/JWST/<observation>/ files), not
                # the whole tree: this is only a hint
                below = [f"{'*/' * depth}{pat}" for depth in (1, 2, 3) for pat in patterns]
                if not recursive and any(next(path.glob(p), None) for p in below):
                    # e.g. MAST's mastDownload/JWST/<observation>/ layout
                    hint = (
                        "; its sub-folders have some: search them with "
                        "--set discovery.recursive=true"
                    )
                raise InputFileError(path, f"no slit files ({', '.join(patterns)}) {where}{hint}")
            found.extend(hits)
        elif path.exists():
            found.append(str(path))
        else:
            raise InputFileError(path, "no such file or folder")
    # keep the first occurrence of each file, however it was reached (a folder and a
    # path into it, a symbolic link, a relative and an absolute path)
    unique = {}
    for f in found:
        unique.setdefault(os.path.realpath(f), f)
    return list(unique.values())


def _text(header, key):
    value = header.get(key)
    return "" if value is None else str(value).strip()


def _float_or_none(value):
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if np.isfinite(out) else None


def _int_or_none(value):
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def scan_file(path):
    """The slits of one file, from its headers only.

    Parameters
    ----------
    path : str or path-like

    Returns
    -------
    list of SlitEntry

    Raises
    ------
    InputFileError
        Unreadable, truncated or not FITS (from :func:`slitcombine.io.reading.list_slits`),
        or not a NIRSpec MSA / fixed-slit 2D product.
    """
    slits = list_slits(path)
    try:
        primary = fits.getheader(path, 0)
    except (OSError, ValueError, TypeError, IndexError) as exc:
        raise InputFileError(path, f"cannot read the primary header ({exc})") from exc
    instrument = _text(primary, "INSTRUME").upper()
    if instrument and instrument != "NIRSPEC":
        raise InputFileError(path, f"INSTRUME={instrument}, not a NIRSpec slit product")
    model = _text(primary, "DATAMODL")
    if model and model not in ("SlitModel", "MultiSlitModel"):
        raise InputFileError(path, f"DATAMODL={model}, not a SlitModel / MultiSlitModel")
    exp_type = _text(primary, "EXP_TYPE").upper()
    if exp_type and exp_type not in _SLIT_EXP_TYPES:
        raise InputFileError(path, f"EXP_TYPE={exp_type}, not an MSA or fixed-slit spectrum")
    if not slits:
        raise InputFileError(path, "no SCI extension: not a 2D slit product")
    multi = model == "MultiSlitModel" or len(slits) > 1
    entries = []
    for s in slits:
        source_id = _int_or_none(s.get("source_id"))
        if multi and source_id is None:
            raise InputFileError(
                path, f"slit EXTVER={s.get('extver')} of a MultiSlitModel has no SOURCEID"
            )
        entries.append(
            SlitEntry(
                path=str(path),
                multi=multi,
                source_id=source_id,
                source_name=str(s.get("source_name") or "").strip(),
                slit_name=str(s.get("name") or "").strip(),
                slitlet_id=_int_or_none(s.get("slitlet_id")),
                grating=_text(primary, "GRATING").upper(),
                filter=_text(primary, "FILTER").upper(),
                detector=_text(primary, "DETECTOR").upper(),
                exp_type=exp_type,
                exposure=_int_or_none(primary.get("EXPOSURE")) or 0,
                expstart=_float_or_none(primary.get("EXPSTART")),
            )
        )
    return entries


# ---------------------------------------------------------------------------- grouping
def visit_key(path, join=None):
    """The visit key of a file: the parts of its name at the positions ``join``.

    Parameters
    ----------
    path : str or path-like
        A file name (the folder is ignored).
    join : list of int, optional
        Indices (Python style, negative allowed) into ``name.split('_')``; default
        ``[0, 3]``.  Indices past the end are ignored.

    Returns
    -------
    str
        The selected parts joined with ``_`` (``jw01345062001_nrs2``).
    """
    join = DISCOVERY_DEFAULTS["join"] if join is None else join
    parts = Path(path).name.split("_")
    keep = []
    for j in join:
        if -len(parts) <= j < len(parts):
            keep.append(parts[j])
    return "_".join(keep)


def _safe(text):
    return _UNSAFE.sub("_", str(text)).strip("_") or "x"


def _one_per_exposure(entries):
    """Drop a slit that repeats an exposure already in the group (warning).

    The same exposure can come twice: as a per-slit ``*_phot.*.fits`` file and as a
    slit of the ``MultiSlitModel`` ``*_cal.fits`` it was cut from.  Combining both
    would count its photons twice.  The identity is (EXPSTART, detector, slitlet); the
    per-slit file is kept.  Entries without EXPSTART are all kept.
    """
    kept, seen = [], {}
    for e in sorted(entries, key=lambda e: (e.multi, e.path)):  # per-slit files first
        ident = (e.expstart, e.detector, e.slitlet_id)
        if e.expstart is not None and ident in seen:
            log.warning(
                "%s%s repeats the exposure of %s (EXPSTART %s, %s, slitlet %s): used once",
                e.path,
                f"[{e.source_id}]" if e.multi else "",
                seen[ident].path,
                e.expstart,
                e.detector,
                e.slitlet_id,
            )
            continue
        seen[ident] = e
        kept.append(e)
    return kept


def group_entries(entries, join=None):
    """Group slit entries by source, grating/filter, visit key, exposure type and slit.

    Parameters
    ----------
    entries : iterable of SlitEntry
    join : list of int, optional
        See :func:`visit_key`.

    Returns
    -------
    list of GroupSpec
        Sorted by name.  The name is ``{visit}_{grating}-{filter}_{source}`` (lower-case
        grating/filter, source name or id).  A source seen through several slits in one
        visit and grating (another MSA slitlet, a fixed slit) gives one group per slit,
        named with a ``-s{slitlet_id}`` (MSA) or ``-{slit name}`` (fixed slit) suffix;
        remaining clashes get a ``-2``, ``-3`` ... suffix.
    """
    groups = defaultdict(list)
    for e in entries:
        key = (visit_key(e.path, join), e.grating, e.filter, e.source_key) + _slit_key(e)
        groups[key].append(e)
    bases = {}
    for key in sorted(groups):
        first = groups[key][0]
        visit, grating, filt = key[:3]
        source = first.source_name or (
            str(first.source_id) if first.source_id is not None else first.slit_name
        )
        bases[key] = _safe(f"{visit}_{grating.lower()}-{filt.lower()}_{source}")
    shared = Counter(bases.values())
    specs = []
    used = set()
    for key in sorted(groups):
        visit, grating, filt = key[:3]
        members = sorted(_one_per_exposure(groups[key]), key=lambda e: (e.exposure, e.path))
        first = members[0]
        base = bases[key]
        if shared[base] > 1:  # one source through several slits: say which slit
            base = _safe(f"{base}-{_slit_suffix(first)}")
        name, k = base, 1
        while name in used:
            k += 1
            name = f"{base}-{k}"
        used.add(name)
        detectors = sorted({e.detector for e in members if e.detector})
        slitlets = sorted({e.slitlet_id for e in members if e.slitlet_id is not None})
        info = {
            "source_id": first.source_id,
            "source_name": first.source_name,
            "grating": grating,
            "filter": filt,
            "visit": visit,
            "detector": ",".join(detectors),
            "slitlet_id": slitlets[0] if len(slitlets) == 1 else None,
            "exp_type": first.exp_type,
            "n_exposures": len(members),
        }
        specs.append(GroupSpec(name=name, members=tuple(e.member for e in members), info=info))
    return specs


def _slit_key(entry):
    """The slit part of a group key: exposure type and MSA slitlet or fixed-slit name.

    Exposures of one source through another slitlet, or through a fixed slit and the
    MSA, cannot be combined (their traces and shutters differ): separate groups.
    """
    if entry.exp_type == "NRS_FIXEDSLIT":
        return (entry.exp_type, entry.slit_name.upper())
    slitlet = "" if entry.slitlet_id is None else f"{entry.slitlet_id:09d}"
    return (entry.exp_type, slitlet)


def _slit_suffix(entry):
    if entry.exp_type == "NRS_FIXEDSLIT":
        return entry.slit_name.lower() or "fs"
    return f"s{entry.slitlet_id}" if entry.slitlet_id is not None else "msa"


def discover(inputs, join=None, patterns=None, recursive=True):
    """Find, scan and group slit files.

    Parameters
    ----------
    inputs : iterable of str or path-like
        Folders and files.
    join, patterns, recursive
        See :func:`visit_key` and :func:`find_slit_files`.

    Returns
    -------
    groups : list of GroupSpec
    skipped : list of (str, str)
        ``(path, reason)`` of every file that was not used (unreadable, not a slit ...).

    Raises
    ------
    InputFileError
        A missing input, a folder without slit files, or no usable slit at all.
    """
    files = find_slit_files(inputs, patterns=patterns, recursive=recursive)
    entries, skipped = [], []
    for path in files:
        if MEMBER_SEPARATOR in str(path):
            # the manifest separates members with it: such a file cannot be listed
            reason = f"{path}: file name contains {MEMBER_SEPARATOR!r} (the manifest separator)"
            log.warning("skipping %s", reason)
            skipped.append((path, reason))
            continue
        try:
            entries.extend(scan_file(path))
        except SlitCombineError as exc:
            log.warning("skipping %s", exc)
            skipped.append((path, str(exc)))
    if not entries:
        raise InputFileError(
            ", ".join(str(i) for i in inputs),
            f"no usable slit files ({len(skipped)} file(s) skipped as unreadable or not slits)",
        )
    groups = group_entries(entries, join=join)
    log.info(
        "found %d slit(s) in %d file(s) -> %d group(s); %d file(s) skipped",
        len(entries),
        len(files) - len(skipped),
        len(groups),
        len(skipped),
    )
    return groups, skipped
