"""Calibration tables: where they are looked up, and under which names.

Every lookup of a calibration table goes through this module; the tables' formats and
readers are :mod:`slitcombine.io.table_readers`, the fetch of msaexp's published set
:mod:`slitcombine.io.calib`.

Calibration directory
---------------------
slitcombine ships no calibration tables.  Tables are looked up in the directories listed
in the environment variable ``SLITCOMBINE_CALIB_DIR`` (:data:`os.pathsep`-separated,
searched in order; read at every call, so there is no module-level state), then in the
table set fetched by ``slitcombine calib fetch`` (msaexp's published tables, see
:mod:`slitcombine.io.calib`).  When no directory holds a table of the expected name, the
step that needs it is a logged no-op recorded in ``SlitGroup.meta``.  Each kind of table
has a list of alternative names (:data:`CALIBRATION_TABLES`): slitcombine's documented
name and msaexp's own name and sub-folder, so an msaexp data folder works as it is
(``{grating}``, ``{filter}``, ``{detector}`` and ``{slit}`` in lower case, e.g.
``prism``, ``clear``, ``nrs2``, ``s200a1``; the names are tried in order in each
directory):

``global_sky`` (:meth:`~slitcombine.SlitGroup.get_global_sky`)
    ``{visit}_sky.csv``, ``msa_sky/{visit}_sky.csv``
``bar_coeffs`` (:meth:`~slitcombine.SlitGroup.apply_spline_bar_correction`)
    ``{grating}_{n}_bar_coeffs_wave.yaml`` (mode ``'wave'``),
    ``{grating}_{n}_bar_coeffs.yaml`` (mode ``'slit'``)
``renormalization`` (:meth:`~slitcombine.SlitGroup.apply_normalization_correction`)
    ``{grating}_slit_renormalize.yaml``
``sflat`` (:meth:`~slitcombine.SlitGroup.apply_sflat_correction`)
    ``sflat_{grating}_q{quadrant}.fits``
``sensitivity`` (:meth:`~slitcombine.SlitGroup.apply_extended_calibration`)
    ``sensitivity_{grating}_{filter}.fits``,
    ``extended_sensitivity/msaexp_sensitivity_{grating}_{filter}_001.fits``,
    ``msaexp_sensitivity_{grating}_{filter}_001.fits``
``bad_pixels`` (:meth:`~slitcombine.SlitGroup.apply_extra_dq`)
    ``badpix_{detector}.fits``, ``msaexp_badpix_{detector}.yaml``
``psf_lookup`` (a tabulated ``lookup_prf``)
    ``psf/nirspec_merged_{slit}_exp_psf_lookup_001.fits``,
    ``nirspec_merged_{slit}_exp_psf_lookup_001.fits``

(``{n}`` = number of shutters of the slitlet, 1, 2 or 3; larger slitlets use the
3-shutter table with the shutter coordinate wrapped into the central shutter.)  msaexp's
s-flat tables (``extended_sensitivity/sflat_spl_coeffs_prism_q{quadrant}.fits``) are not
among the alternatives: msaexp applies them only to data calibrated with extended-range
pipeline flats, which :meth:`~slitcombine.SlitGroup.apply_sflat_correction` does not check.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from slitcombine.errors import ConfigurationError

__all__ = [
    "CALIB_DIR_ENV",
    "KNOWN_GRATINGS",
    "CALIBRATION_TABLES",
    "calibration_dirs",
    "find_calibration_file",
    "calibration_table_names",
    "find_calibration_table",
    "list_calibration_tables",
    "calibration_kind_available",
    "missing_table_reason",
    "bar_coeffs_filename",
    "background_file_root",
    "find_background_spectra",
]

log = logging.getLogger(__name__)

#: Environment variable holding the calibration directories (os.pathsep-separated).
CALIB_DIR_ENV = "SLITCOMBINE_CALIB_DIR"

#: Disperser names (lower case) recognised as a file-name prefix.
KNOWN_GRATINGS = (
    "prism",
    "g140m",
    "g140h",
    "g235m",
    "g235h",
    "g395m",
    "g395h",
    "grismr",
    "grismc",
)


# ====================================================================== calibration files
#: Kinds of calibration table -> the names tried, in order, in each calibration
#: directory (relative paths; ``str.format`` fields).  The first name is slitcombine's
#: documented one, the others msaexp's own names and sub-folders, so that a copy of
#: msaexp's ``data`` folder (or the set fetched by ``slitcombine calib fetch``) is found
#: as it is.  Every lookup of a table goes through this mapping.
CALIBRATION_TABLES = {
    "global_sky": ("{visit}_sky.csv", "msa_sky/{visit}_sky.csv"),
    "bar_coeffs": ("{grating}_{n}_bar_coeffs{suffix}.yaml",),
    "renormalization": ("{grating}_slit_renormalize.yaml",),
    "sflat": ("sflat_{grating}_q{quadrant}.fits",),
    "sensitivity": (
        "sensitivity_{grating}_{filter}.fits",
        "extended_sensitivity/msaexp_sensitivity_{grating}_{filter}_001.fits",
        "msaexp_sensitivity_{grating}_{filter}_001.fits",
    ),
    "bad_pixels": ("badpix_{detector}.fits", "msaexp_badpix_{detector}.yaml"),
    "psf_lookup": (
        "psf/nirspec_merged_{slit}_exp_psf_lookup_001.fits",
        "nirspec_merged_{slit}_exp_psf_lookup_001.fits",
    ),
}

#: Fields of :data:`CALIBRATION_TABLES` whose values are lower-cased in file names.
_LOWER_CASE_FIELDS = ("grating", "filter", "detector", "slit")


def calibration_dirs(env=None, fetched=True):
    """The calibration directories, in search order.

    Parameters
    ----------
    env : str or None
        A value in the format of ``$SLITCOMBINE_CALIB_DIR`` (os.pathsep-separated
        directories); None reads the environment variable now.
    fetched : bool
        Append the table set fetched by ``slitcombine calib fetch``
        (:func:`slitcombine.io.calib.fetched_dir`) when there is one.

    Returns
    -------
    list of pathlib.Path
        Existing directories, in search order: those of ``$SLITCOMBINE_CALIB_DIR``
        (missing ones are logged and skipped), then the fetched set.
    """
    value = os.environ.get(CALIB_DIR_ENV, "") if env is None else env
    dirs = []
    for part in str(value).split(os.pathsep):
        part = part.strip()
        if not part:
            continue
        p = Path(part).expanduser()
        if p.is_dir():
            dirs.append(p)
        else:
            log.warning("%s lists %s, which is not a directory: ignored", CALIB_DIR_ENV, p)
    if fetched:
        from slitcombine.io.calib import fetched_dir

        cache = fetched_dir()
        if cache is not None and cache not in dirs:
            dirs.append(cache)
    return dirs


def find_calibration_file(name, dirs=None):
    """First file called ``name`` in the calibration directories.

    Parameters
    ----------
    name : str
        File name, or a path relative to a calibration directory
        (``msa_sky/jw01345062001_sky.csv``).
    dirs : list of path-like or None
        Directories to search; None means :func:`calibration_dirs`.

    Returns
    -------
    pathlib.Path or None
        The file, or None when no directory holds it.
    """
    for d in calibration_dirs() if dirs is None else [Path(x) for x in dirs]:
        p = Path(d) / name
        if p.is_file():
            return p
    return None


def _table_fields(fields):
    return {k: (str(v).lower() if k in _LOWER_CASE_FIELDS else str(v)) for k, v in fields.items()}


def calibration_table_names(kind, **fields):
    """The names tried for a table of ``kind``, in order.

    Parameters
    ----------
    kind : str
        A key of :data:`CALIBRATION_TABLES` (``'global_sky'``, ``'sensitivity'`` ...).
    **fields
        Values of the name's fields (``visit``, ``grating``, ``filter``, ``detector``,
        ``n``, ``suffix``, ``quadrant``, ``slit``); ``grating``, ``filter``,
        ``detector`` and ``slit`` are lower-cased.

    Returns
    -------
    list of str
        Relative paths.

    Raises
    ------
    ConfigurationError
        Unknown ``kind`` or a field missing.
    """
    try:
        patterns = CALIBRATION_TABLES[kind]
    except KeyError:
        raise ConfigurationError(
            f"unknown calibration table kind {kind!r}; known: {sorted(CALIBRATION_TABLES)}"
        ) from None
    values = _table_fields(fields)
    try:
        return [p.format(**values) for p in patterns]
    except KeyError as exc:
        raise ConfigurationError(f"calibration table {kind!r} needs the field {exc}") from None


def find_calibration_table(kind, dirs=None, **fields):
    """The table of ``kind`` for the given fields: the first of its alternative names.

    Directories are searched in order and, in each, the names of
    :func:`calibration_table_names` in order, so a table in ``$SLITCOMBINE_CALIB_DIR``
    wins over the fetched set whatever its name.

    Parameters
    ----------
    kind : str
        A key of :data:`CALIBRATION_TABLES`.
    dirs : list of path-like or None
        Directories to search; None means :func:`calibration_dirs`.
    **fields
        See :func:`calibration_table_names`.

    Returns
    -------
    pathlib.Path or None
        The file, or None when no directory holds any of the names.
    """
    names = calibration_table_names(kind, **fields)
    for d in calibration_dirs() if dirs is None else [Path(x) for x in dirs]:
        for name in names:
            p = Path(d) / name
            if p.is_file():
                return p
    return None


def list_calibration_tables(kind, dirs=None, **fields):
    """Every table of ``kind`` in the calibration directories (fields not given: any).

    Parameters
    ----------
    kind : str
        A key of :data:`CALIBRATION_TABLES`.
    dirs : list of path-like or None
        Directories to search; None means :func:`calibration_dirs`.
    **fields
        Fields to hold fixed (see :func:`calibration_table_names`); the others match
        any value.

    Returns
    -------
    list of pathlib.Path
        Sorted, per directory in search order.
    """
    if kind not in CALIBRATION_TABLES:
        raise ConfigurationError(
            f"unknown calibration table kind {kind!r}; known: {sorted(CALIBRATION_TABLES)}"
        )
    values = _Wildcards(_table_fields(fields))
    found = []
    for d in calibration_dirs() if dirs is None else [Path(x) for x in dirs]:
        for pattern in CALIBRATION_TABLES[kind]:
            found += sorted(p for p in Path(d).glob(pattern.format_map(values)) if p.is_file())
    return found


def calibration_kind_available(kind, dirs=None, **fields):
    """Whether any directory holds a table of ``kind`` (fields not given match anything).

    Used to tell a table set that lacks one case (a visit without a sky table) from no
    table of that kind at all (nothing fetched or configured).

    Parameters
    ----------
    kind : str
        A key of :data:`CALIBRATION_TABLES`.
    dirs : list of path-like or None
        Directories to search; None means :func:`calibration_dirs`.
    **fields
        Fields to hold fixed; the others are wildcards.

    Returns
    -------
    bool
    """
    return bool(list_calibration_tables(kind, dirs, **fields))


class _Wildcards(dict):
    """``str.format_map`` mapping: the given fields, ``*`` for the others."""

    def __missing__(self, key):
        return "*"


def missing_table_reason(names, dirs):
    """Why no table was found: no directory at all, or the names not in the directories.

    Parameters
    ----------
    names : list of str
        The names looked for.
    dirs : list of pathlib.Path
        The directories searched.

    Returns
    -------
    str
    """
    if not dirs:
        return (
            f"no calibration tables: ${CALIB_DIR_ENV} is not set and no table set was "
            "fetched (slitcombine calib fetch)"
        )
    if not names:
        return f"no such table in {[str(d) for d in dirs]}"
    return f"none of {names} in {[str(d) for d in dirs]}"


# ====================================================================== names of one table
def bar_coeffs_filename(grating, num_shutters, mode="wave"):
    """File name of a bar-shadow table and whether to wrap the shutter coordinate.

    Parameters
    ----------
    grating : str
        Disperser (e.g. ``'PRISM'``).
    num_shutters : int
        Shutters of the slitlet.  ``<= 0`` (unknown) and ``> 3`` use the 3-shutter
        table; ``> 3`` wraps the coordinate into the central shutter (the shutter count
        is clamped everywhere, including :meth:`fit_shutter_offset`).
    mode : {'wave', 'slit', 'flat'}
        Wavelength-dependent (``'wave'``) or independent table.

    Returns
    -------
    name : str
    wrap : bool or 'auto'
    """
    n = int(num_shutters)
    if n > 3:
        n, wrap = 3, True
    elif n <= 0:
        n, wrap = 3, False
    else:
        wrap = "auto"
    suffix = "_wave" if mode == "wave" else ""
    return calibration_table_names("bar_coeffs", grating=grating, n=n, suffix=suffix)[0], wrap


def background_file_root(filename):
    """``{file_root}`` of an exposure: the first four ``_`` tokens of its file name.

    ``jw01345062001_03101_00001_nrs2_phot.138.1345_933.fits`` ->
    ``jw01345062001_03101_00001_nrs2`` (visit, activity, exposure, detector).

    Parameters
    ----------
    filename : str or path-like
        An exposure file (the folder is ignored).

    Returns
    -------
    str
        The root; the name up to its first ``.`` when it has fewer than four tokens.
    """
    name = Path(filename).name
    parts = name.split("_")
    return "_".join(parts[:4]) if len(parts) >= 4 else name.split(".")[0]


def find_background_spectra(files, path=""):
    """The background spectrum ``{file_root}_gbkg.fits`` of every exposure.

    Parameters
    ----------
    files : list of str or path-like
        The exposures.
    path : str or path-like
        Directory of the spectra; ``''`` searches each exposure's own directory, then
        the calibration directories (:func:`calibration_dirs`).

    Returns
    -------
    found : list of pathlib.Path
        The spectra found, in the order of ``files``.
    missing : list of str
        The names of those not found.
    """
    calib = calibration_dirs() if not path else []
    found, missing = [], []
    for f in files:
        name = f"{background_file_root(f)}_gbkg.fits"
        dirs = [Path(path)] if path else [Path(f).parent, *calib]
        hit = next((Path(d) / name for d in dirs if (Path(d) / name).is_file()), None)
        if hit is None:
            missing.append(name)
        else:
            found.append(hit)
    return found, missing
