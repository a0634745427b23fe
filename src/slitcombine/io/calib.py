"""Calibration tables: msaexp's published tables in a per-user cache, and what uses them.

The seed's default steps read reference tables: the global sky of a visit
(``sky_file='read'``), the PRISM slit renormalisation (``fix_prism_norm``), the
bar-shadow tables (``undo_barshadow=2``), the extended-range sensitivity
(``extended_calibration_kwargs``) and the extra bad pixels (``with_extra_dq``).  msaexp
ships them inside its package (``msaexp/data/``, MIT licence); slitcombine ships none.
:func:`fetch` downloads the published msaexp distribution of a pinned version with pip
(``python -m pip download msaexp==VERSION --no-deps``: msaexp and its dependencies are
never installed), unpacks only its calibration tables (:data:`TABLE_PATTERNS`) with
their relative layout into the cache folder and writes a manifest (version, archive and
the sha256 of each file).  :func:`slitcombine.io.tables.calibration_dirs` searches the
fetched folder after ``$SLITCOMBINE_CALIB_DIR``.

Cache folder
------------
``$SLITCOMBINE_CACHE_DIR`` if set, else the per-user cache folder of the platform
(``$XDG_CACHE_HOME/slitcombine`` or ``~/.cache/slitcombine`` on Linux,
``~/Library/Caches/slitcombine`` on macOS, ``%LOCALAPPDATA%\\slitcombine\\Cache`` on
Windows).  The tables go to its sub-folder ``calib/`` (:func:`tables_dir`), with
``manifest.json`` and msaexp's ``LICENSE``.  A fetch writes a temporary folder next to
it and renames it into place, so the cache is either the old set or the new one, never
a mixture; a failed fetch leaves it as it was.

:func:`tables_provenance` describes the tables a group used (source, version, sha256)
for the product's provenance.  Which default steps will run and with which table (the
plan of ``slitcombine calib status``) is :mod:`slitcombine.group.calib_plan`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from slitcombine._version import __version__
from slitcombine.errors import SlitCombineError

__all__ = [
    "CACHE_ENV",
    "DEFAULT_MSAEXP_VERSION",
    "MANIFEST_NAME",
    "TABLE_PATTERNS",
    "REQUIRED_KINDS",
    "FETCHED_KINDS",
    "CalibrationFetchError",
    "FetchResult",
    "cache_dir",
    "tables_dir",
    "fetched_dir",
    "read_manifest",
    "verify_manifest",
    "fetch",
    "download_with_pip",
    "tables_provenance",
]

log = logging.getLogger(__name__)

#: Environment variable overriding the cache folder.
CACHE_ENV = "SLITCOMBINE_CACHE_DIR"

#: msaexp version fetched by default (the version slitcombine was compared with).
DEFAULT_MSAEXP_VERSION = "0.9.19"

#: Name of the manifest in the fetched folder.
MANIFEST_NAME = "manifest.json"

#: Version of the manifest's layout.
MANIFEST_FORMAT = 1

#: The calibration tables taken from ``msaexp/data/``: (kind, sub-folder, name pattern).
#: Everything else of the distribution (code, line lists, figures) is left out.
TABLE_PATTERNS = (
    ("global_sky", "msa_sky", "*_sky.csv"),
    ("renormalization", "", "*_slit_renormalize.yaml"),
    ("bar_coeffs", "", "*_bar_coeffs.yaml"),
    ("bar_coeffs", "", "*_bar_coeffs_wave.yaml"),
    ("bad_pixels", "", "msaexp_badpix_*.yaml"),
    ("sensitivity", "extended_sensitivity", "msaexp_sensitivity_*.fits"),
    ("fixed_slit_flat", "extended_sensitivity", "fixed_slit_flat_profile_*.yaml"),
    ("detector_gap", "detector_gap", "wavelength_range_coeffs_*.yaml"),
    ("psf_lookup", "psf", "nirspec_merged_*_exp_psf_lookup_*.fits"),
)

#: Kinds an archive must hold: the tables of the seed's default steps.
REQUIRED_KINDS = ("global_sky", "renormalization", "bar_coeffs", "bad_pixels", "sensitivity")

#: Kinds of :data:`slitcombine.io.tables.CALIBRATION_TABLES` that a fetch provides:
#: a default step skipped for lack of one of these is fixed by ``slitcombine calib fetch``.
FETCHED_KINDS = ("global_sky", "renormalization", "bar_coeffs", "bad_pixels", "sensitivity")

_FIX = (
    "run `slitcombine calib fetch` (msaexp's published tables into the user cache) or "
    "point $SLITCOMBINE_CALIB_DIR at a folder of tables"
)


class CalibrationFetchError(SlitCombineError):
    """The calibration tables cannot be fetched: download, archive or cache folder.

    The message names the cause; the cache is left as it was.
    """


# ============================================================================ folders
def cache_dir():
    """The slitcombine cache folder (it may not exist yet).

    Returns
    -------
    pathlib.Path
        ``$SLITCOMBINE_CACHE_DIR`` if set, else the platform's per-user cache folder
        followed by ``slitcombine`` (see the module notes).
    """
    value = os.environ.get(CACHE_ENV, "").strip()
    if value:
        return Path(value).expanduser()
    home = Path.home()
    if sys.platform == "darwin":
        return home / "Library" / "Caches" / "slitcombine"
    if os.name == "nt":
        base = os.environ.get("LOCALAPPDATA") or str(home / "AppData" / "Local")
        return Path(base) / "slitcombine" / "Cache"
    base = os.environ.get("XDG_CACHE_HOME", "").strip() or str(home / ".cache")
    return Path(base) / "slitcombine"


def tables_dir(cache=None):
    """The folder of the fetched tables (``calib/`` in the cache; may not exist).

    Parameters
    ----------
    cache : path-like or None
        The cache folder; None means :func:`cache_dir`.

    Returns
    -------
    pathlib.Path
    """
    return Path(cache_dir() if cache is None else cache) / "calib"


def fetched_dir(cache=None):
    """The fetched table folder if a fetch completed (its manifest exists), else None.

    Parameters
    ----------
    cache : path-like or None
        The cache folder; None means :func:`cache_dir`.

    Returns
    -------
    pathlib.Path or None
    """
    folder = tables_dir(cache)
    return folder if (folder / MANIFEST_NAME).is_file() else None


def read_manifest(folder=None):
    """The manifest of a fetched table folder.

    Parameters
    ----------
    folder : path-like or None
        The table folder; None means :func:`tables_dir`.

    Returns
    -------
    dict or None
        ``source``, ``version``, ``archive`` (``name``, ``sha256``, ``size`` bytes),
        ``origin`` (how it was obtained), ``fetched`` (UTC), ``files`` (relative path ->
        ``{'kind', 'sha256', 'size'}``); None when there is none.

    Raises
    ------
    CalibrationFetchError
        The manifest exists but cannot be read.
    """
    path = Path(tables_dir() if folder is None else folder) / MANIFEST_NAME
    try:
        with open(path, encoding="utf-8") as fh:
            manifest = json.load(fh)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (OSError, ValueError) as exc:
        raise CalibrationFetchError(f"{path}: unreadable manifest ({exc})") from exc
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise CalibrationFetchError(f"{path}: not a slitcombine calibration manifest")
    return manifest


def _sha256_file(path, chunk=1 << 20):
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def verify_manifest(folder, manifest=None):
    """The files of a fetched folder that are missing or differ from its manifest.

    Parameters
    ----------
    folder : path-like
        The table folder.
    manifest : dict or None
        Its manifest (read if None).

    Returns
    -------
    list of str
        Relative paths that are missing or whose size or sha256 differ (empty: intact).
    """
    folder = Path(folder)
    manifest = read_manifest(folder) if manifest is None else manifest
    if manifest is None:
        return ["<manifest>"]
    bad = []
    for rel, entry in manifest["files"].items():
        p = folder / rel
        try:
            ok = p.stat().st_size == entry["size"] and _sha256_file(p) == entry["sha256"]
        except OSError:
            ok = False
        if not ok:
            bad.append(rel)
    return bad


# ============================================================================ fetch
@dataclass
class FetchResult:
    """What :func:`fetch` did.

    Attributes
    ----------
    folder : pathlib.Path
        The table folder (``calib/`` in the cache).
    manifest : dict
        Its manifest (see :func:`read_manifest`).
    changed : bool
        False when the same set was already there, intact (nothing written).
    counts : dict
        Number of files per kind.
    """

    folder: Path
    manifest: dict
    changed: bool
    counts: dict = field(default_factory=dict)


def _counts(manifest):
    out = {}
    for entry in manifest["files"].values():
        out[entry["kind"]] = out.get(entry["kind"], 0) + 1
    return dict(sorted(out.items()))


def download_with_pip(version, dest, pip_command=None, timeout=None):
    """Download the msaexp distribution with pip (no dependencies, nothing installed).

    Parameters
    ----------
    version : str
        msaexp version (``0.9.19``).
    dest : path-like
        Empty folder for the download.
    pip_command : list of str or None
        The pip to run; default ``[sys.executable, '-m', 'pip']``.  pip's own
        configuration (index, proxy, certificates) applies.
    timeout : float or None
        Seconds before the download is abandoned (None: no limit).

    Returns
    -------
    pathlib.Path
        The downloaded ``msaexp-VERSION.tar.gz`` or wheel.

    Raises
    ------
    CalibrationFetchError
        pip failed (no index reachable, no such version ...) or left no archive.
    """
    cmd = list(pip_command or [sys.executable, "-m", "pip"])
    cmd += ["download", f"msaexp=={version}", "--no-deps", "--dest", str(dest)]
    log.info("running %s", " ".join(cmd))
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        raise CalibrationFetchError(f"cannot run pip ({' '.join(cmd)}): {exc}") from exc
    if proc.returncode != 0:
        lines = [ln.strip() for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith("ERROR")] or lines[-2:]
        raise CalibrationFetchError(
            f"pip could not download msaexp=={version} (exit {proc.returncode}): "
            + " | ".join(errors[-3:])
            + " -- check the network or pip's index settings, or fetch from a local "
            "archive with --from-archive"
        )
    found = sorted(
        p
        for p in Path(dest).iterdir()
        if p.name.lower().startswith("msaexp") and p.suffix.lower() in (".gz", ".whl", ".zip")
    )
    if not found:
        raise CalibrationFetchError(f"pip reported success but left no msaexp archive in {dest}")
    return found[0]


def _replace_folder(tmp, target):
    """Rename ``tmp`` to ``target``; an existing ``target`` is replaced, or kept on failure."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}-old-{os.getpid()}-{os.urandom(3).hex()}")
        os.rename(target, old)
    try:
        os.rename(tmp, target)
    except OSError:
        if old is not None:
            os.rename(old, target)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=False)


def _already_fetched(folder, version, archive_sha256):
    """The manifest of an intact fetched set of that version/archive, else None."""
    manifest = read_manifest(folder)
    if manifest is None:
        return None
    if version is not None and manifest.get("version") != version:
        return None
    if archive_sha256 is not None and manifest.get("archive", {}).get("sha256") != archive_sha256:
        return None
    bad = verify_manifest(folder, manifest)
    if bad:
        log.warning(
            "the fetched tables in %s differ from their manifest (%d file(s), e.g. %s): "
            "fetching again",
            folder,
            len(bad),
            bad[0],
        )
        return None
    return manifest


def fetch(
    version=None,
    archive=None,
    cache=None,
    force=False,
    pip_command=None,
    timeout=None,
    report=None,
):
    """Fetch msaexp's calibration tables into the cache (idempotent).

    Parameters
    ----------
    version : str or None
        msaexp version; default :data:`DEFAULT_MSAEXP_VERSION` (with ``archive``: the
        archive's own version, which must then equal ``version`` if given).
    archive : path-like or None
        A local msaexp source archive (``msaexp-X.Y.Z.tar.gz``) or wheel to unpack
        instead of downloading one with pip.
    cache : path-like or None
        The cache folder; None means :func:`cache_dir`.
    force : bool
        Fetch again even if the same set is there, intact.
    pip_command : list of str or None
        See :func:`download_with_pip`.
    timeout : float or None
        Seconds allowed to pip (None: no limit).
    report : callable or None
        Called with a one-line message before a download or an unpacking starts (the
        command line prints it).

    Returns
    -------
    FetchResult

    Raises
    ------
    CalibrationFetchError
        pip failed, the archive is corrupt, partial or lacks the tables of
        :data:`REQUIRED_KINDS`, it is another version than asked, or the cache folder
        cannot be written.  The cache is left as it was.
    """
    root = Path(cache_dir() if cache is None else cache)
    target = tables_dir(root)
    archive_path = None if archive is None else Path(archive)
    if archive_path is not None and not archive_path.is_file():
        raise CalibrationFetchError(f"{archive_path}: archive not found")
    wanted = version or (None if archive_path is not None else DEFAULT_MSAEXP_VERSION)
    if not force:
        digest = None if archive_path is None else _sha256_file(archive_path)
        manifest = _already_fetched(target, wanted, digest)
        if manifest is not None:
            log.info("msaexp %s tables already in %s", manifest["version"], target)
            return FetchResult(target, manifest, False, _counts(manifest))
    report = report or log.info
    with tempfile.TemporaryDirectory(prefix="slitcombine-fetch-") as download:
        if archive_path is None:
            report(f"downloading msaexp {wanted} with pip (no dependencies, nothing installed)")
            archive_path = download_with_pip(wanted, download, pip_command, timeout=timeout)
            origin = f"pip download msaexp=={wanted} --no-deps"
        else:
            origin = f"local archive {archive_path.resolve()}"
        report(f"unpacking the calibration tables of {archive_path.name} into {target}")
        return _install(archive_path, root, target, wanted, origin)


def _install(archive_path, root, target, wanted, origin):
    """Unpack the tables of ``archive_path`` into a temporary folder, then into place."""
    from slitcombine.io.calib_archive import Archive, extract_tables

    arc = Archive(archive_path)
    try:
        found = arc.version()
        if found is None:
            raise CalibrationFetchError(
                f"{archive_path}: no msaexp package metadata (PKG-INFO/METADATA): "
                "not an msaexp distribution"
            )
        if wanted is not None and found != wanted:
            raise CalibrationFetchError(f"{archive_path} is msaexp {found}, not {wanted}")
        try:
            root.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=".calib-", suffix=".tmp", dir=root))
        except OSError as exc:
            raise CalibrationFetchError(
                f"cannot write the cache folder {root} ({exc.strerror or exc}): set "
                f"${CACHE_ENV} to a writable folder"
            ) from exc
        try:
            files = extract_tables(arc, tmp)
            counts = {}
            for entry in files.values():
                counts[entry["kind"]] = counts.get(entry["kind"], 0) + 1
            missing = [k for k in REQUIRED_KINDS if not counts.get(k)]
            if missing:
                raise CalibrationFetchError(
                    f"{archive_path}: no {', '.join(missing)} table(s) under msaexp/data/ "
                    f"(found {sum(counts.values())} table(s)): not the expected layout"
                )
            licence = arc.licence()
            if licence is not None:
                (tmp / "LICENSE-msaexp").write_bytes(licence)
            manifest = {
                "format": MANIFEST_FORMAT,
                "source": "msaexp",
                "version": found,
                "licence": "MIT (msaexp, G. Brammer); see LICENSE-msaexp",
                "origin": origin,
                "archive": {
                    "name": archive_path.name,
                    "sha256": _sha256_file(archive_path),
                    "size": archive_path.stat().st_size,
                },
                "fetched": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
                "slitcombine_version": __version__,
                "files": files,
            }
            (tmp / MANIFEST_NAME).write_text(
                json.dumps(manifest, indent=1, sort_keys=True) + "\n", encoding="utf-8"
            )
            _replace_folder(tmp, target)
        except OSError as exc:
            raise CalibrationFetchError(
                f"cannot write the tables into {root} ({exc.strerror or exc}); the cache is "
                "left as it was"
            ) from exc
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    finally:
        arc.close()
    log.info("msaexp %s: %d tables in %s", found, len(files), target)
    return FetchResult(target, manifest, True, _counts(manifest))


# ============================================================================ provenance
#: Steps of ``meta['steps']`` that record the calibration table(s) they read.
_TABLE_STEPS = (
    "extended_calibration",
    "sflat",
    "extra_dq",
    "barshadow",
    "global_sky",
    "normalization",
)


def _table_set_of(path, env_dirs, fetched):
    """Which table set a file belongs to."""
    path = Path(path).resolve()
    if fetched is not None:
        folder, manifest = fetched
        with contextlib.suppress(ValueError):
            rel = path.relative_to(folder.resolve())
            return {
                "source": manifest.get("source", "msaexp"),
                "version": manifest.get("version"),
                "folder": str(folder),
                "archive": manifest.get("archive", {}).get("name"),
                "archive_sha256": manifest.get("archive", {}).get("sha256"),
                "origin": manifest.get("origin"),
            }, str(rel)
    for d in env_dirs:
        with contextlib.suppress(ValueError):
            rel = path.relative_to(Path(d).resolve())
            return {"source": "$SLITCOMBINE_CALIB_DIR", "folder": str(d)}, str(rel)
    return {"source": "file given by the user"}, str(path)


def tables_provenance(meta):
    """The calibration tables a group used: each file's set, version and sha256.

    Parameters
    ----------
    meta : dict
        ``SlitGroup.meta`` (its ``steps`` record the files read, and
        ``missing_tables`` the default steps skipped for lack of a table).

    Returns
    -------
    dict
        ``summary`` (``'msaexp 0.9.19'``, ``'$SLITCOMBINE_CALIB_DIR'``, ... joined by
        ``'; '``, or ``'none'``), ``tables`` (one ``{'step', 'file', 'path', 'sha256',
        'size', 'source'}`` per file read), ``sets`` (the distinct sets: ``source``,
        ``version``, ``folder``, ``archive``, ``archive_sha256``), ``missing`` (the
        skipped default steps and the tables they lacked).
    """
    from slitcombine.io.tables import calibration_dirs

    env_dirs = calibration_dirs(fetched=False)
    folder = fetched_dir()
    fetched = None
    if folder is not None:
        try:
            fetched = (folder, read_manifest(folder))
        except CalibrationFetchError as exc:
            log.warning("provenance: %s", exc)
    tables, sets = [], []
    for step in _TABLE_STEPS:
        info = (meta.get("steps") or {}).get(step) or {}
        if info.get("status") != "COMPLETE":
            continue
        files = info.get("files") or ([info["file"]] if info.get("file") else [])
        for f in files:
            p = Path(f)
            entry = {"step": step, "path": str(p)}
            try:
                entry["sha256"] = _sha256_file(p)
                entry["size"] = p.stat().st_size
            except OSError as exc:
                entry["sha256"] = None
                entry["error"] = f"cannot read it now ({exc.strerror or exc})"
            the_set, rel = _table_set_of(p, env_dirs, fetched)
            entry["file"] = rel
            entry["source"] = the_set["source"]
            if the_set not in sets:
                sets.append(the_set)
            tables.append(entry)
    names = []
    for s in sets:
        name = s["source"] + (f" {s['version']}" if s.get("version") else "")
        if name not in names:
            names.append(name)
    return {
        "summary": "; ".join(names) if names else "none",
        "tables": tables,
        "sets": sets,
        "missing": list(meta.get("missing_tables") or []),
    }
