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
the sha256 of each file).  :func:`slitcombine.core.corrections.calibration_dirs` searches the
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

:func:`default_plan` says, for one configuration (a file or a grating), which default
steps will run and with which table (``slitcombine calib status``);
:meth:`slitcombine.SlitGroup` steps use the same plan to warn once per group when a
default step is skipped because no table of its kind is installed; and
:func:`tables_provenance` describes the tables a group used (source, version, sha256)
for the product's provenance.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import io
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

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
    "StepPlan",
    "Target",
    "cache_dir",
    "tables_dir",
    "fetched_dir",
    "read_manifest",
    "verify_manifest",
    "fetch",
    "download_with_pip",
    "default_plan",
    "target_from_file",
    "target_from_group",
    "plan_for_group",
    "extended_flats",
    "format_plan",
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

#: Kinds of :data:`slitcombine.core.corrections.CALIBRATION_TABLES` that a fetch provides:
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


# ============================================================================ archives
_DATA_ROOT = re.compile(r"^(?:[^/]+/)?msaexp/data/(.+)$")


def _table_kind(rel):
    """Kind of a path relative to ``msaexp/data/`` (None: not a calibration table)."""
    p = PurePosixPath(rel)
    folder = str(p.parent) if str(p.parent) != "." else ""
    for kind, sub, pattern in TABLE_PATTERNS:
        if folder == sub and fnmatch.fnmatchcase(p.name, pattern):
            return kind
    return None


def _safe_rel(rel):
    """``rel`` if it is a plain relative path (no ``..``, not absolute), else None."""
    p = PurePosixPath(rel)
    if p.is_absolute() or any(part in ("", "..") for part in p.parts):
        return None
    return str(p)


class _Archive:
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


def _check_table(rel, data):
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


def _extract_tables(archive, dest, on_member=None):
    """Write the calibration tables of ``archive`` into ``dest``; their manifest entries."""
    files = {}
    for name in sorted(archive.names()):
        m = _DATA_ROOT.match(name)
        if not m:
            continue
        rel = _safe_rel(m.group(1))
        kind = None if rel is None else _table_kind(rel)
        if kind is None:
            continue
        data = archive.read(name)
        try:
            _check_table(rel, data)
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
    arc = _Archive(archive_path)
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
            files = _extract_tables(arc, tmp)
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


# ============================================================================ status
@dataclass
class Target:
    """The configuration a plan is made for (from a file, a group, or a grating).

    Attributes
    ----------
    grating, filter : str or None
        Upper case (``'PRISM'``, ``'CLEAR'``); None: unknown.
    visit : str or None
        Visit key of the file names (``jw01345062001``); None: any visit.
    detector : str or None
        ``'NRS1'``/``'NRS2'``; None: either.
    fixed_slit : bool
        A fixed-slit exposure (no MSA corrections).
    num_shutters : int or None
        Shutters of the slitlet (None: unknown, the 3-shutter table).
    extended_flats : bool or None
        The pipeline used extended-range flats (None: unknown).
    quadrant : int or None
        MSA quadrant of the slitlet (s-flat), None: unknown.
    label : str
        What the target is, for messages.
    """

    grating: str | None = None
    filter: str | None = None
    visit: str | None = None
    detector: str | None = None
    fixed_slit: bool = False
    num_shutters: int | None = None
    extended_flats: bool | None = None
    quadrant: int | None = None
    label: str = ""


@dataclass
class StepPlan:
    """Whether one default step that reads a table will run, and with which table.

    Attributes
    ----------
    step : str
        Name in ``SlitGroup.meta['steps']``.
    option : str
        The option that switches it, with its value.
    runs : str
        ``'yes'``, ``'no'`` (skipped), ``'off'`` (option off) or another word
        (``'own model'``, ``'pipeline'``) for the bar shadow.
    table : pathlib.Path or None
        The table it reads.
    kind : str or None
        Kind of table (:data:`slitcombine.core.corrections.CALIBRATION_TABLES`).
    looked_for : list of str
        Names looked for.
    note : str
        Why, in words.
    missing : bool
        Skipped because no table of its kind is installed at all, and a fetch provides
        one (:data:`FETCHED_KINDS`): the case of the warning.
    """

    step: str
    option: str
    runs: str
    table: Path | None = None
    kind: str | None = None
    looked_for: list = field(default_factory=list)
    note: str = ""
    missing: bool = False


def _default_options():
    import inspect

    from slitcombine.group.slitgroup import SlitGroup

    params = inspect.signature(SlitGroup.__init__).parameters
    keys = (
        "sky_file",
        "fix_prism_norm",
        "undo_barshadow",
        "bar_corr_mode",
        "extended_calibration_kwargs",
        "with_sflat_correction",
        "with_extra_dq",
        "lookup_prf",
    )
    return {k: params[k].default for k in keys}


def extended_flats(primary_headers):
    """Whether the pipeline used extended-range flats (``_ext`` in R_FFLAT/R_SFLAT/R_DFLAT).

    The rule of :meth:`slitcombine.SlitGroup.apply_extended_calibration`: true when
    every exposure's primary header names an ``_ext`` flat.

    Parameters
    ----------
    primary_headers : list of astropy.io.fits.Header
        One per exposure.

    Returns
    -------
    bool
    """
    keys = ("R_FFLAT", "R_SFLAT", "R_DFLAT")
    return bool(primary_headers) and all(
        any("_ext" in str(h.get(k, "")) for k in keys) for h in primary_headers
    )


def _lookup(kind, dirs, fields):
    from slitcombine.core import corrections as corr

    names = corr.calibration_table_names(kind, **fields)
    path = corr.find_calibration_table(kind, dirs, **fields)
    return path, names


def _absent(kind, dirs):
    """No table of ``kind`` in any folder, and a fetch would provide one."""
    from slitcombine.core import corrections as corr

    return kind in FETCHED_KINDS and not corr.calibration_kind_available(kind, dirs)


def _not_found(dirs, names=()):
    """Short reason of a plan row without a table."""
    if not dirs:
        return "no tables installed"
    return "not found" + (f" (looked for {' or '.join(names)})" if names else "")


def _table_row(step, option, kind, dirs, fields, on_found="yes"):
    path, names = _lookup(kind, dirs, fields)
    if path is not None:
        return StepPlan(step, option, on_found, path, kind, names, "")
    return StepPlan(
        step,
        option,
        "no",
        None,
        kind,
        names,
        _not_found(dirs, names),
        missing=_absent(kind, dirs),
    )


def _count_row(step, option, kind, dirs, what, fields=None):
    """A row for an unknown field (any visit, either detector): how many tables exist."""
    from slitcombine.core import corrections as corr

    n = len(corr.list_calibration_tables(kind, dirs, **(fields or {})))
    if n:
        return StepPlan(step, option, "yes", None, kind, [], f"{n} {what} table(s) available")
    return StepPlan(
        step,
        option,
        "no",
        None,
        kind,
        [],
        f"no {what} table ({_not_found(dirs)})",
        missing=_absent(kind, dirs),
    )


def default_plan(target, options=None, dirs=None):
    """Which of the steps that read tables will run for ``target``, and with which table.

    Parameters
    ----------
    target : Target
        The configuration.
    options : dict or None
        SlitGroup options (``sky_file``, ``fix_prism_norm``, ``undo_barshadow``,
        ``bar_corr_mode``, ``extended_calibration_kwargs``, ``with_sflat_correction``,
        ``with_extra_dq``, ``lookup_prf``); missing ones take SlitGroup's defaults.
    dirs : list of path-like or None
        Calibration folders; None means
        :func:`slitcombine.core.corrections.calibration_dirs`.

    Returns
    -------
    list of StepPlan
        ``global_sky``, ``normalization``, ``barshadow``, ``extended_calibration``,
        ``sflat``, ``extra_dq``, ``lookup_prf``.
    """
    from slitcombine.core import corrections as corr

    opts = {**_default_options(), **(options or {})}
    dirs = corr.calibration_dirs() if dirs is None else [Path(d) for d in dirs]
    grating = (target.grating or "").lower() or None
    rows = []

    # global sky
    sky = opts["sky_file"]
    option = f"sky_file={sky!r}"
    if sky is None:
        rows.append(StepPlan("global_sky", option, "off"))
    elif str(sky) != "read":
        ok = Path(sky).is_file()
        rows.append(
            StepPlan(
                "global_sky",
                option,
                "yes" if ok else "error",
                Path(sky) if ok else None,
                note="" if ok else f"{sky} not found: the group raises CalibrationFileError",
            )
        )
    elif target.visit is None:
        rows.append(_count_row("global_sky", option, "global_sky", dirs, "visit sky"))
    else:
        rows.append(_table_row("global_sky", option, "global_sky", dirs, {"visit": target.visit}))

    # PRISM slit renormalisation
    option = f"fix_prism_norm={opts['fix_prism_norm']!r}"
    if not opts["fix_prism_norm"]:
        rows.append(StepPlan("normalization", option, "off"))
    elif target.fixed_slit:
        rows.append(StepPlan("normalization", option, "no", note="fixed slit (MSA correction)"))
    elif grating is None:
        rows.append(_count_row("normalization", option, "renormalization", dirs, "renormalisation"))
    else:
        rows.append(
            _table_row("normalization", option, "renormalization", dirs, {"grating": grating})
        )

    # bar shadow
    mode = opts["bar_corr_mode"]
    mode = "slit" if mode == "flat" else mode
    undo = opts["undo_barshadow"]
    option = f"undo_barshadow={undo!r}, bar_corr_mode={opts['bar_corr_mode']!r}"
    if target.fixed_slit:
        rows.append(StepPlan("barshadow", option, "no", note="fixed slit: no bar shadow"))
    elif undo == 2 and grating is not None:
        name, wrap = corr.bar_coeffs_filename(grating, target.num_shutters or 0, mode)
        path = corr.find_calibration_file(name, dirs)
        row = StepPlan("barshadow", option, "table", path, "bar_coeffs", [name])
        if path is None:
            # not skipped: the own model is slitcombine's choice without a table
            row.runs = "own model"
            row.note = "no table: the group's own model, fitted to its sky pixels"
        elif wrap is True:
            row.note = "wrapped into the central shutter (slitlet of more than 3 shutters)"
        rows.append(row)
    elif undo == 2:
        rows.append(StepPlan("barshadow", option, "table or own model", note="per grating"))
    else:
        what = "pipeline correction undone" if undo else "pipeline correction kept"
        rows.append(StepPlan("barshadow", option, "pipeline", note=what))

    # extended-range calibration
    ext = opts["extended_calibration_kwargs"]
    option = "extended_calibration_kwargs=" + ("None" if ext is None else repr(dict(ext)))
    force = bool(ext and dict(ext).get("force"))
    if ext is None:
        rows.append(StepPlan("extended_calibration", option, "off"))
    elif target.extended_flats is False and not force:
        rows.append(
            StepPlan(
                "extended_calibration",
                option,
                "no",
                note="the pipeline flats are not extended-range (R_FFLAT/R_SFLAT/R_DFLAT)",
            )
        )
    elif grating is None or target.filter is None:
        row = _count_row("extended_calibration", option, "sensitivity", dirs, "sensitivity")
        row.note += "; only for data with extended-range pipeline flats"
        rows.append(row)
    else:
        fields = {"grating": grating, "filter": target.filter}
        row = _table_row("extended_calibration", option, "sensitivity", dirs, fields)
        if target.extended_flats is None:
            row.note = (row.note + "; " if row.note else "") + (
                "only for data with extended-range pipeline flats"
            )
        rows.append(row)

    # s-flat
    option = f"with_sflat_correction={opts['with_sflat_correction']!r}"
    if not opts["with_sflat_correction"]:
        rows.append(StepPlan("sflat", option, "off"))
    elif target.fixed_slit:
        rows.append(StepPlan("sflat", option, "no", note="fixed slit (MSA correction)"))
    elif grating is not None and target.quadrant is not None:
        fields = {"grating": grating, "quadrant": int(target.quadrant)}
        rows.append(_table_row("sflat", option, "sflat", dirs, fields))
    else:
        fields = {} if grating is None else {"grating": grating}
        rows.append(_count_row("sflat", option, "sflat", dirs, "s-flat", fields))

    # extra bad pixels
    option = f"with_extra_dq={opts['with_extra_dq']!r}"
    if not opts["with_extra_dq"]:
        rows.append(StepPlan("extra_dq", option, "off"))
    elif target.detector is None:
        rows.append(_count_row("extra_dq", option, "bad_pixels", dirs, "bad-pixel"))
    else:
        fields = {"detector": target.detector}
        rows.append(_table_row("extra_dq", option, "bad_pixels", dirs, fields))

    # point response
    prf = opts["lookup_prf"]
    n_psf = len(corr.list_calibration_tables("psf_lookup", dirs))
    note = "slitcombine's optics model (no table)" if prf is None else f"the given {prf!r}"
    if n_psf:
        note += f"; {n_psf} msaexp PSF lookup table(s) installed, used only if given as lookup_prf"
    rows.append(
        StepPlan("lookup_prf", f"lookup_prf={'None' if prf is None else '...'}", "-", note=note)
    )
    return rows


def target_from_file(path):
    """The :class:`Target` of a slit file.

    Parameters
    ----------
    path : path-like
        A per-slit ``SlitModel`` file.

    Returns
    -------
    Target

    Raises
    ------
    slitcombine.errors.InputFileError
        The file cannot be read as a slit.
    """
    from slitcombine.io.reading import read_slit

    exp = read_slit(path)
    state = exp.slit.get("shutter_state")
    quadrant = None
    if not exp.is_fixed_slit:
        quadrant = exp.asdf_slit_attribute("quadrant")
        exp.release_asdf()
    return Target(
        grating=exp.grating or None,
        filter=exp.filter or None,
        visit=exp.visit,
        detector=str(exp.meta["instrument"].get("detector") or "") or None,
        fixed_slit=exp.is_fixed_slit,
        num_shutters=len(str(state)) if state else None,
        extended_flats=extended_flats([exp.primary_header]),
        quadrant=None if quadrant is None else int(quadrant),
        label=Path(path).name,
    )


def target_from_group(group):
    """The :class:`Target` of a :class:`~slitcombine.SlitGroup` (during or after its build).

    Parameters
    ----------
    group : slitcombine.SlitGroup

    Returns
    -------
    Target
    """
    n = group.meta.get("num_shutters")
    if n is None or int(n) < 0:  # not resolved yet: from the shutter state, as SlitGroup
        state = group.info["shutter_state"][0]
        n = len(str(state)) if state else None
    return Target(
        grating=group.grating,
        filter=group.filter,
        visit=str(group.info["visit"][0]),
        detector=str(group.info["detector"][0]),
        fixed_slit=bool(group.IS_FIXED_SLIT),
        num_shutters=None if n is None else int(n),
        extended_flats=extended_flats([s.primary_header for s in group.slits]),
        quadrant=None,
        label=group.name,
    )


def plan_for_group(group, dirs=None):
    """:func:`default_plan` for a group with its own options; steps done are as recorded.

    A step already in ``group.meta['steps']`` keeps what it did: its ``status``,
    ``file`` and ``missing_table`` details.  The s-flat is not predicted (its quadrant
    is only read when a table exists).

    Parameters
    ----------
    group : slitcombine.SlitGroup
    dirs : list of path-like or None
        Calibration folders (None: :func:`slitcombine.core.corrections.calibration_dirs`).

    Returns
    -------
    list of StepPlan
    """
    meta = group.meta
    options = {
        k: meta[k]
        for k in (
            "fix_prism_norm",
            "undo_barshadow",
            "bar_corr_mode",
            "extended_calibration_kwargs",
            "with_sflat_correction",
            "with_extra_dq",
        )
        if k in meta
    }
    steps = meta.get("steps", {})
    # meta['sky_file'] holds the option until get_global_sky has run
    options["sky_file"] = "read" if "global_sky" in steps else meta.get("sky_file")
    options["lookup_prf"] = getattr(group, "lookup_prf", None)
    rows = default_plan(target_from_group(group), options, dirs)
    for row in rows:
        done = steps.get(row.step)
        if not done or row.step in ("barshadow", "lookup_prf"):
            continue
        if done.get("status") == "COMPLETE":
            row.runs, row.missing, row.note = "yes", False, ""
            file = done.get("file") or (done.get("files") or [None])[0]
            row.table = None if file is None else Path(file)
        elif done.get("status") == "SKIPPED":
            row.runs = "no"
            row.missing = bool(done.get("missing_table"))
            row.note = str(done.get("reason", row.note))
    return rows


def format_plan(target, rows, dirs):
    """Text of ``slitcombine calib status`` for one target.

    Parameters
    ----------
    target : Target
    rows : list of StepPlan
    dirs : list of pathlib.Path
        The folders searched (for relative names).

    Returns
    -------
    str
    """
    what = ", ".join(
        str(x)
        for x in (
            f"{target.grating or '?'}/{target.filter or '?'}",
            f"visit {target.visit}" if target.visit else "any visit",
            target.detector or "either detector",
            "fixed slit"
            if target.fixed_slit
            else (f"{target.num_shutters} shutters" if target.num_shutters else None),
        )
        if x
    )
    lines = [f"{target.label or 'configuration'}: {what}"]
    width = max(len(r.step) for r in rows)
    for r in rows:
        if r.table is not None:
            table = str(r.table)
            for d in dirs:
                with contextlib.suppress(ValueError):
                    table = f"{Path(r.table).relative_to(d)}  [{d}]"
                    break
            detail = table + (f"; {r.note}" if r.note else "")
        else:
            detail = r.note
        flag = "  <- fix: slitcombine calib fetch" if r.missing else ""
        lines.append(f"  {r.step:<{width}}  {r.runs:<9}  {r.option}")
        if detail:
            lines.append(f"  {'':<{width}}  {'':<9}  {detail}{flag}")
        elif flag:
            lines.append(f"  {'':<{width}}  {'':<9}  {flag.strip()}")
    return "\n".join(lines)


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
    from slitcombine.core import corrections as corr

    env_dirs = corr.calibration_dirs(fetched=False)
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
