"""Bar-shadow, normalisation, s-flat and bad-pixel corrections (pure functions, file readers).

Nothing here touches a :class:`~slitcombine.SlitGroup`; the thin methods of
:mod:`slitcombine.group._sky_methods` call these functions and store the results.

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

``global_sky`` (:meth:`get_global_sky`)
    ``{visit}_sky.csv``, ``msa_sky/{visit}_sky.csv``
``bar_coeffs`` (:meth:`apply_spline_bar_correction`)
    ``{grating}_{n}_bar_coeffs_wave.yaml`` (mode ``'wave'``),
    ``{grating}_{n}_bar_coeffs.yaml`` (mode ``'slit'``)
``renormalization`` (:meth:`apply_normalization_correction`)
    ``{grating}_slit_renormalize.yaml``
``sflat`` (:meth:`apply_sflat_correction`)
    ``sflat_{grating}_q{quadrant}.fits``
``sensitivity`` (:meth:`apply_extended_calibration`)
    ``sensitivity_{grating}_{filter}.fits``,
    ``extended_sensitivity/msaexp_sensitivity_{grating}_{filter}_001.fits``,
    ``msaexp_sensitivity_{grating}_{filter}_001.fits``
``bad_pixels`` (:meth:`apply_extra_dq`)
    ``badpix_{detector}.fits``, ``msaexp_badpix_{detector}.yaml``
``psf_lookup`` (a tabulated ``lookup_prf``)
    ``psf/nirspec_merged_{slit}_exp_psf_lookup_001.fits``,
    ``nirspec_merged_{slit}_exp_psf_lookup_001.fits``

(``{n}`` = number of shutters of the slitlet, 1, 2 or 3; larger slitlets use the
3-shutter table with the shutter coordinate wrapped into the central shutter.)  msaexp's
s-flat tables (``extended_sensitivity/sflat_spl_coeffs_prism_q{quadrant}.fits``) are not
among the alternatives: msaexp applies them only to data calibrated with extended-range
pipeline flats, which :meth:`apply_sflat_correction` does not check.

File formats
------------
Bar-shadow coefficients (msaexp's format, YAML)
    ``coeffs``: ``(df,)`` (wavelength-independent, mode ``'slit'``) or ``(df, nw)`` (mode
    ``'wave'``); ``minmax``: ``[ymin, ymax]`` range of the shutter coordinate
    ``fixed_yshutter`` (shutter pitches) spanned by the cubic B-spline basis of ``df``
    functions with uniform knots; ``wavelengths``: ``(nw,)`` nodes (um) of the
    wavelength dependence, interpolated linearly and clamped at the ends.  Optional
    ``grating``: checked against the group.  See :func:`evaluate_bar_coeffs`.
Slit renormalisation (msaexp's ``prism_slit_renormalize.yaml``)
    ``coeffs``: ``(df, 4, 3)``: for spline coefficient ``k`` and MSA quadrant ``q``
    (1-4) the coefficients ``(a, b, c)`` of ``c_k = a + b * xcen + c * ycen`` (``xcen``,
    ``ycen``: shutter column/row of the slitlet in its quadrant); ``df``; and
    ``reference_wavelengths`` (um, increasing).  The correction that multiplies the data
    is ``1 / sum_k B_k(u) c_k`` with ``u`` the fractional index of the wavelength in
    ``reference_wavelengths`` scaled to [0, 1] and ``B_k`` cubic B-splines with uniform
    knots on [0, 1]; NaN outside the reference range.  See
    :func:`normalization_correction`.
S-flat (FITS table, ``sflat_{grating}_q{quadrant}.fits``)
    Columns ``wave`` (um, ``nw`` rows, increasing) and ``coeffs`` (``nw`` x ``dfx*dfy``):
    per wavelength node, the coefficients of a tensor cubic B-spline in the MSA shutter
    position ``(xcen, ycen)`` (index ``i * dfy + j`` for x basis ``i`` and y basis
    ``j``); header keywords ``DFX``, ``DFY``, ``XMIN``, ``XMAX``, ``YMIN``, ``YMAX``
    (shutter units) and optionally ``GRATING``.  The flat is evaluated at the slitlet's
    ``(xcen, ycen)``, interpolated linearly in wavelength (NaN outside), and the data are
    **divided** by it.  See :func:`read_sflat`, :func:`sflat_correction`.
Extended-range sensitivity (FITS table, ``sensitivity_{grating}_{filter}.fits``)
    Columns ``wavelength`` (um, increasing) and ``sensitivity`` (response relative to
    the pipeline's flux calibration; the data are **divided** by it), optionally a
    column named after the detector (``nrs1``/``nrs2``) that multiplies
    ``sensitivity`` for that detector; optional keyword ``GRATING``.  Used only when
    the pipeline used extended-range flats (``_ext`` in the ``R_FFLAT``, ``R_SFLAT`` or
    ``R_DFLAT`` keywords).  See :func:`read_sensitivity`.
Extra bad pixels
    ``badpix_{detector}.fits``: an image HDU (primary or ``EXTNAME='BADPIX'``) of the full
    detector (2048 x 2048), non-zero = bad; or msaexp's YAML ``msaexp_badpix_{detector}.yaml``
    with ``shape`` and ``pixel_index`` (flat indices into ``shape``; ``pixel_value``
    optional).  See :func:`read_bad_pixel_map`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import sparse
from scipy.interpolate import BSpline
from scipy.linalg import (
    LinAlgError,
    cho_factor,
    cho_solve,
    cho_solve_banded,
    cholesky_banded,
    solve_triangular,
)
from scipy.optimize import least_squares

from slitcombine.errors import CalibrationFileError, ConfigurationError, FitError

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
    "bspline_basis",
    "difference_penalty",
    "ColumnCoordinate",
    "BarCoefficients",
    "read_bar_coeffs",
    "bar_coeffs_filename",
    "evaluate_bar_coeffs",
    "BarShadowModel",
    "fit_bar_shadow",
    "source_profile",
    "source_exclusion",
    "RenormalizationTable",
    "read_renormalization",
    "normalization_correction",
    "SflatTable",
    "read_sflat",
    "sflat_correction",
    "read_bad_pixel_map",
    "read_sensitivity",
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


def _read_yaml(path):
    """Parse a YAML mapping, with errors naming the file."""
    import yaml

    path = Path(path)
    try:
        with open(path) as fh:
            content = yaml.safe_load(fh)
    except FileNotFoundError as exc:
        raise CalibrationFileError(f"{path}: file not found") from exc
    except (OSError, yaml.YAMLError) as exc:
        raise CalibrationFileError(f"{path}: cannot be read as YAML ({exc})") from exc
    if not isinstance(content, dict):
        raise CalibrationFileError(f"{path}: expected a YAML mapping, got {type(content).__name__}")
    return content


def declared_grating(path, content=None):
    """Grating a calibration file declares (``grating`` key or file-name prefix), or None."""
    if content is not None and content.get("grating"):
        return str(content["grating"]).lower()
    prefix = Path(path).name.split("_")[0].lower()
    return prefix if prefix in KNOWN_GRATINGS else None


def read_fits_table(path, required=(), not_found="file not found"):
    """The first binary table of a FITS calibration file.

    Parameters
    ----------
    path : path-like
        The FITS file.
    required : iterable of str
        Column names (case-insensitive) that must be present.
    not_found : str
        Message for a missing file.

    Returns
    -------
    columns : dict
        Lower-case column name -> numpy array.
    header : astropy.io.fits.Header
        The table's header.

    Raises
    ------
    CalibrationFileError
        Missing or unreadable file, no binary table, or a required column missing.
    """
    from astropy.io import fits

    path = Path(path)
    try:
        with fits.open(path) as hdul:
            hdu = next((h for h in hdul if isinstance(h, fits.BinTableHDU)), None)
            if hdu is None:
                raise CalibrationFileError(f"{path}: no binary table extension")
            columns = {c.lower(): np.asarray(hdu.data[c]) for c in hdu.columns.names}
            header = hdu.header.copy()
    except FileNotFoundError as exc:
        raise CalibrationFileError(f"{path}: {not_found}") from exc
    except OSError as exc:
        raise CalibrationFileError(f"{path}: cannot be read as FITS ({exc})") from exc
    missing = [c for c in required if c not in columns]
    if missing:
        raise CalibrationFileError(f"{path}: missing column(s) {missing}")
    return columns, header


def check_grating(path, grating, content=None):
    """Raise :class:`CalibrationFileError` if ``path`` is a table of another grating."""
    if grating is None:
        return
    declared = declared_grating(path, content)
    if declared is not None and declared != str(grating).lower():
        raise CalibrationFileError(
            f"{path}: table for grating {declared.upper()}, but the data are {str(grating).upper()}"
        )


def _float_array(path, content, key, ndim=None):
    if key not in content:
        raise CalibrationFileError(f"{path}: required key {key!r} is missing")
    try:
        arr = np.asarray(content[key], dtype=float)
    except (TypeError, ValueError) as exc:
        raise CalibrationFileError(f"{path}: {key!r} is not a numeric array ({exc})") from exc
    if ndim is not None and arr.ndim not in np.atleast_1d(ndim):
        raise CalibrationFileError(f"{path}: {key!r} has shape {arr.shape}, expected {ndim}-D")
    if not np.all(np.isfinite(arr)):
        raise CalibrationFileError(f"{path}: {key!r} has non-finite values")
    return arr


# ====================================================================== B-spline bases
def _uniform_knots(df, xmin, xmax, degree=3):
    """Clamped knot vector of ``df`` B-splines with uniform interior knots on [xmin, xmax]."""
    n_inner = df - degree - 1
    if n_inner < 0:
        raise ValueError(f"df={df} is too small for degree {degree} (need >= {degree + 1})")
    inner = np.linspace(xmin, xmax, n_inner + 2)
    return np.concatenate([[xmin] * degree, inner, [xmax] * degree])


def bspline_basis(x, df, xmin, xmax, degree=3, outside="zero"):
    """Design matrix of ``df`` clamped B-splines with uniform knots on ``[xmin, xmax]``.

    The same basis as msaexp's tables use (grizli ``bspline_templates`` with
    ``minmax``), built with :meth:`scipy.interpolate.BSpline.design_matrix`.

    Parameters
    ----------
    x : array_like
        ``(n,)`` coordinates (any unit, the same as ``xmin``/``xmax``).
    df : int
        Number of basis functions (>= degree + 1).
    xmin, xmax : float
        Range spanned by the basis.
    degree : int
        Spline degree (3 = cubic).
    outside : {'zero', 'clip', 'nan'}
        Rows for ``x`` outside the range (or not finite): zero, evaluated at the nearest
        end, or NaN.

    Returns
    -------
    scipy.sparse.csr_array
        ``(n, df)`` sparse design matrix, ``degree + 1`` stored entries per row.
    """
    x = np.asarray(x, float).ravel()
    t = _uniform_knots(int(df), float(xmin), float(xmax), degree)
    ok = np.isfinite(x) & (x >= xmin) & (x <= xmax)
    xe = np.clip(np.where(np.isfinite(x), x, xmin), xmin, xmax)
    # x is clipped into the base interval: extrapolate=True only skips scipy's
    # (slow, pure-Python) bounds check.
    mat = BSpline.design_matrix(xe, t, degree, extrapolate=True).tocsr()
    bad = ~ok if outside != "clip" else ~np.isfinite(x)
    if bad.any():
        fill = 0.0 if outside in ("zero", "clip") else np.nan
        rows = np.repeat(np.arange(x.size), np.diff(mat.indptr))
        mat.data[bad[rows]] = fill
    return sparse.csr_array(mat)


def _dense_rows(mat, degree=3):
    """``(n, k+1)`` values and column indices of a B-spline design matrix."""
    k1 = degree + 1
    n = mat.shape[0]
    if mat.indptr[-1] != n * k1:
        raise ValueError("design matrix does not have k+1 entries per row")
    return mat.data.reshape(n, k1), mat.indices.reshape(n, k1)


def difference_penalty(n, order=2):
    """``D^T D`` for the ``order``-th difference operator on ``n`` coefficients (P-splines).

    Parameters
    ----------
    n : int
        Number of spline coefficients.
    order : int
        Order of the differences (2: curvature).

    Returns
    -------
    numpy.ndarray
        ``(n, n)`` penalty matrix (zeros when ``n <= order``).
    """
    if n <= order:
        return np.zeros((n, n))
    d = np.diff(np.eye(n), n=order, axis=0)
    return d.T @ d


def solve_penalized(a, w, y, penalty, ridge=1e-9, covariance=True):
    """Weighted, penalised linear least squares.

    Minimises ``sum w (y - A c)^2 + c^T P c`` via the Cholesky factor of the normal
    matrix.

    Parameters
    ----------
    a : scipy sparse array or numpy.ndarray
        ``(n, m)`` design matrix.
    w : numpy.ndarray
        ``(n,)`` weights (inverse variances).
    y : numpy.ndarray
        ``(n,)`` data.
    penalty : numpy.ndarray
        ``(m, m)`` penalty matrix (already scaled).
    ridge : float
        Relative ridge (times the mean diagonal) added for numerical stability.
    covariance : bool
        Also return the covariance (else None).

    Returns
    -------
    coeffs, covar : numpy.ndarray
        Coefficients and their covariance ``(A^T W A + P)^-1``.

    Raises
    ------
    FitError
        If the normal matrix is singular.
    """
    if sparse.issparse(a):
        ata = (a.T @ sparse.csr_array(a.multiply(w[:, None]))).toarray()
    else:
        ata = a.T @ (a * w[:, None])
    aty = a.T @ (w * y)
    m = ata.shape[0]
    scale = np.mean(np.diag(ata)) if m else 1.0
    if not np.isfinite(scale) or scale <= 0:
        raise FitError("no weight in the data of the fit")
    normal = ata + penalty + ridge * scale * np.eye(m)
    if not np.all(np.isfinite(normal)):
        raise FitError("non-finite normal matrix")
    rows, cols = np.nonzero(normal)
    band = int(np.max(np.abs(rows - cols))) if rows.size else 0
    try:
        if m > 8 and band < m // 2:
            # B-spline normal matrices are banded: O(m b^2) instead of O(m^3).
            ab = np.zeros((band + 1, m))
            for d in range(band + 1):
                ab[band - d, d:] = np.diagonal(normal, d)
            cb = cholesky_banded(ab, lower=False)
            coeffs = cho_solve_banded((cb, False), aty)
            covar = cho_solve_banded((cb, False), np.eye(m)) if covariance else None
        else:
            cf = cho_factor(normal, lower=True, check_finite=False)
            coeffs = cho_solve(cf, aty)
            covar = cho_solve(cf, np.eye(m)) if covariance else None
    except (LinAlgError, ValueError) as exc:
        raise FitError(f"singular normal matrix ({exc})") from exc
    return coeffs, covar


class ColumnCoordinate:
    """Map wavelengths to the fractional detector column of a reference trace.

    Splines in this coordinate have knots uniform in detector pixels, i.e. in
    resolution elements, whatever the dispersion (PRISM or gratings).

    Parameters
    ----------
    wtr : array_like
        ``(nx,)`` wavelength along the reference trace (um), NaN where undefined;
        monotonic where finite.

    Raises
    ------
    FitError
        If fewer than two columns have a finite wavelength.
    """

    def __init__(self, wtr):
        wtr = np.asarray(wtr, float)
        x = np.arange(wtr.size, dtype=float)
        ok = np.isfinite(wtr)
        if ok.sum() < 2:
            raise FitError("fewer than two columns with a finite trace wavelength")
        w, x = wtr[ok], x[ok]
        order = np.argsort(w)
        self.wave = w[order]
        self.column = x[order]
        keep = np.concatenate([[True], np.diff(self.wave) > 0])
        self.wave, self.column = self.wave[keep], self.column[keep]
        self._slopes = (
            (self.column[1] - self.column[0]) / (self.wave[1] - self.wave[0]),
            (self.column[-1] - self.column[-2]) / (self.wave[-1] - self.wave[-2]),
        )

    def __call__(self, wave):
        """Fractional column (pixels) of ``wave`` (um), extrapolated linearly at the ends."""
        wave = np.asarray(wave, float)
        u = np.interp(wave, self.wave, self.column)
        lo, hi = wave < self.wave[0], wave > self.wave[-1]
        u = np.where(lo, self.column[0] + (wave - self.wave[0]) * self._slopes[0], u)
        u = np.where(hi, self.column[-1] + (wave - self.wave[-1]) * self._slopes[1], u)
        return np.where(np.isfinite(wave), u, np.nan)

    def inverse(self, u):
        """Wavelength of a fractional column (inside the trace range).

        Parameters
        ----------
        u : array_like
            Fractional column, pixels.

        Returns
        -------
        numpy.ndarray
            Wavelength, um (clamped to the trace's range).
        """
        return np.interp(u, self.column, self.wave)


# ====================================================================== msaexp bar tables
@dataclass(frozen=True)
class BarCoefficients:
    """Bar-shadow B-spline coefficients in msaexp's format.

    Attributes
    ----------
    path : pathlib.Path
        The file read.
    coeffs : numpy.ndarray
        ``(df,)`` or ``(df, nw)``.
    minmax : (float, float)
        Shutter-coordinate range of the basis (shutter pitches).
    wavelengths : numpy.ndarray or None
        ``(nw,)`` wavelength nodes (um), None for a wavelength-independent table.
    """

    path: Path
    coeffs: np.ndarray
    minmax: tuple
    wavelengths: np.ndarray | None

    @property
    def df(self):
        """Number of B-spline functions in the shutter coordinate."""
        return self.coeffs.shape[0]


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


def read_bar_coeffs(path, grating=None):
    """Read a bar-shadow table in msaexp's YAML format.

    Parameters
    ----------
    path : path-like
        The YAML file.
    grating : str or None
        The group's grating: a table declaring another one raises.

    Returns
    -------
    BarCoefficients

    Raises
    ------
    CalibrationFileError
        Missing, unreadable or malformed file, or a table of another grating.
    """
    path = Path(path)
    content = _read_yaml(path)
    check_grating(path, grating, content)
    coeffs = _float_array(path, content, "coeffs", ndim=(1, 2))
    minmax = _float_array(path, content, "minmax", ndim=1)
    if minmax.size != 2 or not minmax[1] > minmax[0]:
        raise CalibrationFileError(f"{path}: 'minmax' must be [ymin, ymax] with ymin < ymax")
    if coeffs.shape[0] < 4:
        raise CalibrationFileError(f"{path}: need at least 4 spline coefficients")
    waves = None
    if coeffs.ndim == 2:
        waves = _float_array(path, content, "wavelengths", ndim=1)
        if waves.size != coeffs.shape[1]:
            raise CalibrationFileError(
                f"{path}: 'coeffs' has {coeffs.shape[1]} wavelength columns but "
                f"'wavelengths' has {waves.size} values"
            )
        if not np.all(np.diff(waves) > 0):
            raise CalibrationFileError(f"{path}: 'wavelengths' must increase")
    return BarCoefficients(path, coeffs, (float(minmax[0]), float(minmax[1])), waves)


def evaluate_bar_coeffs(table, yshutter, wave=None, wrap="auto", wrap_pad=0.5):
    """Bar-shadow throughput from msaexp-format coefficients.

    ``bar(y, lambda) = sum_k B_k(y) c_k(lambda)`` with ``B_k`` the cubic B-splines of
    ``table.df`` functions with uniform knots on ``table.minmax`` and ``c_k`` linear in
    wavelength between ``table.wavelengths`` (clamped at the ends); for a
    wavelength-independent table ``c_k`` are constants.

    Parameters
    ----------
    table : BarCoefficients
        Coefficients.
    yshutter : array_like
        Shutter coordinate (shutter pitches, ``fixed_yshutter``).
    wave : array_like or None
        Wavelengths (um), same shape; needed for a wavelength-dependent table.
    wrap : bool or 'auto'
        Map ``y -> ((y + 0.5) mod 1) - 0.5`` (the central-shutter profile repeated);
        ``'auto'`` wraps when the finite coordinates extend more than ``wrap_pad``
        beyond ``table.minmax``.  Without wrapping, values outside ``minmax`` (on either
        side) are NaN.
    wrap_pad : float
        Tolerance of ``'auto'`` (shutter pitches).

    Returns
    -------
    numpy.ndarray
        Throughput, same shape as ``yshutter``; NaN where undefined.
    """
    ys = np.asarray(yshutter, float)
    shape = ys.shape
    ys = ys.ravel()
    lo, hi = table.minmax
    if wrap == "auto":
        fin = ys[np.isfinite(ys)]
        wrap = bool(fin.size) and (fin.min() < lo - wrap_pad or fin.max() > hi + wrap_pad)
    if wrap:
        ys = np.mod(ys + 0.5, 1.0) - 0.5
    basis = bspline_basis(ys, table.df, lo, hi, outside="nan")
    if table.wavelengths is None:
        out = basis @ table.coeffs
    else:
        if wave is None:
            raise ValueError("a wavelength-dependent bar table needs the wavelengths")
        w = np.broadcast_to(np.asarray(wave, float), shape).ravel()
        nodes = table.wavelengths
        # Linear interpolation weights between the wavelength nodes (clamped).
        wc = np.clip(w, nodes[0], nodes[-1])
        j = np.clip(np.searchsorted(nodes, wc) - 1, 0, nodes.size - 2)
        f = (wc - nodes[j]) / (nodes[j + 1] - nodes[j])
        per_node = basis @ table.coeffs  # (n, nw): profile at every node
        idx = np.arange(w.size)
        out = (1 - f) * per_node[idx, j] + f * per_node[idx, j + 1]
        out[~np.isfinite(w)] = np.nan
    out = np.where(np.isfinite(ys), out, np.nan)
    return out.reshape(shape)


# ====================================================================== own bar model
def _cubic_rows(x, df, xmin, xmax, outside="zero"):
    """``(n, 4)`` values and ``(n,)`` first column of a clamped cubic B-spline basis."""
    vals, cols = _dense_rows(bspline_basis(x, df, xmin, xmax, outside=outside))
    return vals, cols[:, 0]


def _band_eval(vals, first, coeffs):
    """``B @ coeffs`` for a basis with ``k + 1`` consecutive entries per row from ``first``."""
    cols = first[:, None] + np.arange(vals.shape[1])[None, :]
    return np.einsum("ij,ij->i", vals, coeffs[cols])


def _band_solve(ab, rhs, ridge=1e-9):
    """Solve a positive-definite banded system given in upper band storage."""
    ab = ab.copy()
    scale = float(np.mean(ab[-1]))
    if not np.isfinite(scale) or scale <= 0:
        raise FitError("no weight in the data of the fit")
    ab[-1] += ridge * scale
    try:
        cb = cholesky_banded(ab, lower=False, check_finite=False)
    except (LinAlgError, ValueError) as exc:
        raise FitError(f"singular normal matrix ({exc})") from exc
    return cho_solve_banded((cb, False), rhs, check_finite=False)


def _difference_band(m, order=2):
    """:func:`difference_penalty` in ``(order + 2, m)`` upper band storage (cubic splines)."""
    p = difference_penalty(m, order)
    ab = np.zeros((4, m))
    for d in range(min(3, m - 1) + 1):
        ab[3 - d, d:] = np.diagonal(p, d)
    return ab


@dataclass
class BarShadowModel:
    """A bar-shadow throughput model fitted to a group's own sky pixels.

    ``bar(y, lambda) = T(y, t(lambda)) / g(u(lambda))``: ``T`` a tensor cubic B-spline
    in the shutter coordinate ``y`` (shutter pitches) and ``t``, the wavelength (um,
    ``wave_axis='wavelength'``) or the detector-column coordinate ``u`` of the
    wavelength (pixels, :class:`ColumnCoordinate`, ``wave_axis='column'``); ``g`` the
    normalisation spline in ``u`` (see :func:`fit_bar_shadow`).

    Attributes
    ----------
    coeffs : numpy.ndarray
        ``(df_y, df_w)`` coefficients of ``T``.
    yrange : (float, float)
        Range of the shutter-coordinate basis (shutter pitches).
    urange : (float, float)
        Range of the column coordinate (pixels), the basis of ``g``.
    df_y, df_w : int
        Numbers of basis functions (``df_w == 1``: wavelength independent).
    norm_coeffs : numpy.ndarray
        Coefficients of ``g`` (B-spline of ``norm_df`` functions on ``urange``).
    norm_df : int
        Number of functions of ``g``.
    coordinate : ColumnCoordinate
        Wavelength -> column mapping.
    covered : list of (float, float)
        Shutter-coordinate intervals constrained by sky pixels.
    info : dict
        Fit statistics.
    wave_axis : {'wavelength', 'column'}
        Wavelength axis of ``T``.
    trange : (float, float) or None
        Range of the wavelength basis of ``T`` (um or pixels); None means ``urange``.
    """

    coeffs: np.ndarray
    yrange: tuple
    urange: tuple
    df_y: int
    df_w: int
    norm_coeffs: np.ndarray
    norm_df: int
    coordinate: ColumnCoordinate
    covered: list = field(default_factory=list)
    info: dict = field(default_factory=dict)
    wave_axis: str = "column"
    trange: tuple | None = None

    def axis(self, wave):
        """Wavelength coordinate ``t`` of ``T`` (um or pixels, see ``wave_axis``).

        Parameters
        ----------
        wave : array_like
            Wavelengths, um.

        Returns
        -------
        numpy.ndarray
            Flattened coordinate.
        """
        wave = np.asarray(wave, float).ravel()
        return wave if self.wave_axis == "wavelength" else self.coordinate(wave)

    def raw(self, yshutter, t):
        """The un-normalised tensor spline ``T(y, t)`` (NaN outside ``yrange``).

        Parameters
        ----------
        yshutter : array_like
            Shutter coordinate, shutter pitches.
        t : array_like
            Wavelength coordinate of ``T`` (:meth:`axis`: um or pixels), clamped to
            ``trange``.

        Returns
        -------
        numpy.ndarray
            Flattened un-normalised throughput.
        """
        ys = np.asarray(yshutter, float).ravel()
        t = np.asarray(t, float).ravel()
        vy, iy = _cubic_rows(ys, self.df_y, *self.yrange, outside="nan")
        if self.df_w == 1:
            val = _band_eval(vy, iy, self.coeffs[:, 0])
        else:
            trange = self.urange if self.trange is None else self.trange
            vw, iw = _cubic_rows(t, self.df_w, *trange, outside="clip")
            c = self.coeffs[
                iy[:, None, None] + np.arange(4)[None, :, None],
                iw[:, None, None] + np.arange(4)[None, None, :],
            ]
            val = np.einsum("iab,ib->ia", c, vw)
            val = np.einsum("ia,ia->i", val, vy)
        return np.where(np.isfinite(ys) & np.isfinite(t), val, np.nan)

    def norm(self, u):
        """The normalisation ``g(u)``.

        Parameters
        ----------
        u : array_like
            Fractional column of the wavelength, pixels.

        Returns
        -------
        numpy.ndarray
            Flattened normalisation (dimensionless).
        """
        u = np.asarray(u, float).ravel()
        if self.norm_df == 1:
            return np.full(u.size, float(self.norm_coeffs[0]))
        vals, first = _cubic_rows(u, self.norm_df, *self.urange, outside="clip")
        return _band_eval(vals, first, np.asarray(self.norm_coeffs, float))

    def __call__(self, yshutter, wave):
        """Throughput at shutter coordinate ``yshutter`` and wavelength ``wave`` (um)."""
        ys = np.asarray(yshutter, float)
        shape = np.broadcast_shapes(ys.shape, np.shape(wave))
        ys = np.broadcast_to(ys, shape).ravel()
        w = np.broadcast_to(np.asarray(wave, float), shape).ravel()
        out = np.full(ys.size, np.nan)
        fin = np.flatnonzero(np.isfinite(ys) & np.isfinite(w))
        u = self.coordinate(w[fin])
        t = u if self.wave_axis == "column" else w[fin]
        with np.errstate(invalid="ignore", divide="ignore"):
            out[fin] = self.raw(ys[fin], t) / self.norm(u)
        return out.reshape(shape)

    def is_covered(self, yshutter):
        """True where ``yshutter`` lies in an interval constrained by sky pixels.

        Parameters
        ----------
        yshutter : array_like
            Shutter coordinate, shutter pitches.

        Returns
        -------
        numpy.ndarray
            Boolean, same shape.
        """
        ys = np.asarray(yshutter, float)
        ok = np.zeros(ys.shape, bool)
        for a, b in self.covered:
            with np.errstate(invalid="ignore"):
                ok |= (ys >= a) & (ys <= b)
        return ok


def _covered_intervals(ys_sky, step, min_count):
    """Intervals of the shutter coordinate with at least ``min_count`` sky pixels per bin."""
    if ys_sky.size == 0:
        return []
    lo, hi = ys_sky.min(), ys_sky.max()
    nb = max(int(np.ceil((hi - lo) / step)), 1)
    edges = np.linspace(lo, hi, nb + 1)
    counts, _ = np.histogram(ys_sky, bins=edges)
    good = counts >= min_count
    intervals = []
    start = None
    for i, g in enumerate(good):
        if g and start is None:
            start = edges[i]
        if not g and start is not None:
            intervals.append((float(start), float(edges[i])))
            start = None
    if start is not None:
        intervals.append((float(start), float(edges[-1])))
    return intervals


class _TensorSolver:
    """Penalised weighted least squares for ``T`` given the sky.

    The design matrix ``K`` (``(n, m)``) is given by its rows: ``vals`` and ``cols``
    ``(n, p)``, the ``p`` non-zero values and their columns, which depend only on the
    knot cell of the row (``cols[:, 0]``).  The normal matrix ``K^T diag(d) K`` is
    accumulated cell by cell (one batched ``p x p`` product per cell, rows padded with
    zeros to the largest cell), then factorised by a dense Cholesky (``m`` is a few
    hundred).
    """

    def __init__(self, vals, cols, m):
        n, p = vals.shape
        self.m, self.rows, self.cols = m, vals, cols
        order = np.argsort(cols[:, 0], kind="stable")
        _, first, counts = np.unique(cols[order, 0], return_index=True, return_counts=True)
        pad = np.full((first.size, int(counts.max())), n)
        within = np.arange(n) - np.repeat(first, counts)
        pad[np.repeat(np.arange(first.size), counts), within] = order
        self.pad = pad
        self.vals = np.vstack([vals, np.zeros((1, p))])[pad]  # (cells, rows, p)
        self.cell_cols = cols[order[first]]  # (cells, p)
        self.flat = (self.cell_cols[:, :, None] * m + self.cell_cols[:, None, :]).ravel()

    def __call__(self, coeffs):
        """``K @ coeffs``."""
        return np.einsum("ij,ij->i", self.rows, coeffs[self.cols])

    def dense_rows(self, index):
        """Rows ``index`` of ``K`` as a dense ``(len(index), m)`` array."""
        out = np.zeros((len(index), self.m))
        np.put_along_axis(out, self.cols[index], self.rows[index], axis=1)
        return out

    def solve(self, d, dy, penalty, factor=False):
        """Coefficients minimising ``sum d (dy/d - K c)^2 + c^T P c`` (and the factor)."""
        m = self.m
        dpad = np.append(d, 0.0)[self.pad][:, :, None]
        normal = np.matmul(self.vals.transpose(0, 2, 1), dpad * self.vals)
        normal = np.bincount(self.flat, normal.ravel(), minlength=m * m).reshape(m, m)
        normal += penalty
        scale = float(np.mean(np.diag(normal)))
        if not np.isfinite(scale) or scale <= 0:
            raise FitError("no weight in the data of the fit")
        normal[np.diag_indices(m)] += 1e-9 * scale
        rhs = np.einsum("cip,ci->cp", self.vals, np.append(dy, 0.0)[self.pad])
        rhs = np.bincount(self.cell_cols.ravel(), rhs.ravel(), minlength=m)
        try:
            cf = cho_factor(normal, lower=True, check_finite=False)
        except (LinAlgError, ValueError) as exc:
            raise FitError(f"singular normal matrix ({exc})") from exc
        coeffs = cho_solve(cf, rhs, check_finite=False)
        return (coeffs, cf) if factor else coeffs


class _BandSolver:
    """Penalised weighted least squares of a cubic B-spline (banded normal matrix)."""

    def __init__(self, vals, first, m, penalty):
        self.vals, self.first, self.m = vals, first, m
        k1 = vals.shape[1]
        a, b = np.triu_indices(k1)
        self.flat = ((k1 - 1 - (b - a))[None, :] * m + first[:, None] + b[None, :]).ravel()
        self.pairs = vals[:, a] * vals[:, b]
        self.cols = (first[:, None] + np.arange(k1)[None, :]).ravel()
        self.k1 = k1
        self.penalty = penalty

    def __call__(self, coeffs):
        """``B @ coeffs``."""
        return np.einsum("ij,ij->i", self.vals, coeffs[self.cols.reshape(-1, self.k1)])

    def solve(self, d, dy):
        """Coefficients minimising ``sum d (dy/d - B c)^2 + mean(diag) c^T P c``."""
        ab = np.bincount(self.flat, (self.pairs * d[:, None]).ravel(), minlength=self.k1 * self.m)
        ab = ab.reshape(self.k1, self.m)
        ab = ab + float(np.mean(ab[-1])) * self.penalty
        rhs = np.bincount(self.cols, (self.vals * dy[:, None]).ravel(), minlength=self.m)
        return _band_solve(ab, rhs)


def _leak_radius(
    dist, frac, ferr, start, step=0.5, width=4.0, threshold=0.003, nsigma=4.0, min_count=20
):
    """Outer edge of the source light seen in the sky-fit residuals, or None.

    Parameters
    ----------
    dist : numpy.ndarray
        Distance of the sky pixels to the trace of their exposure (any unit).
    frac, ferr : numpy.ndarray
        Fractional residuals ``(data - model) / model`` of the sky pixels (clipped ones
        included: the core of a bright source is clipped) and their 1-sigma errors.
    start : float
        Distance excluded so far.
    step, width : float
        Bin size and extent of the distance bins examined from ``start``.
    threshold, nsigma : float
        A bin is *leaky* when the median fractional residual exceeds ``threshold`` and
        ``nsigma`` times its error (``1.25 * median(ferr) / sqrt(n)``).
    min_count : int
        Bins with fewer pixels (gaps of the mask) are skipped.

    Returns
    -------
    float or None
        The inner edge of the first clean bin beyond the leaky bins that start the
        range, or None if the first populated bin is clean.
    """
    edges = start + step * np.arange(int(round(width / step)) + 1)
    ok = np.isfinite(frac) & np.isfinite(ferr) & (dist >= edges[0]) & (dist < edges[-1])
    if not ok.any():
        return None
    med = _binned_median_1d(dist[ok], frac[ok], edges)
    err = 1.2533 * _binned_median_1d(dist[ok], ferr[ok], edges)
    counts = np.histogram(dist[ok], edges)[0]
    with np.errstate(invalid="ignore", divide="ignore"):
        leaky = (med > threshold) & (med > nsigma * err / np.sqrt(counts))
    # bins with too few pixels (gaps of the mask) neither start nor stop the run
    populated = np.flatnonzero(counts >= min_count)
    if populated.size == 0 or not leaky[populated[0]]:
        return None
    clean = populated[~leaky[populated]]
    return float(edges[clean[0]]) if clean.size else float(edges[-1])


def source_profile(sci, yslit, mask, core=3.0, step=0.25):
    """Peak brightness (relative to the sky) and width of the source, from the data.

    For every column the sky is the median of the valid pixels of all exposures
    farther than ``core`` pixels from their trace; the fractional excess ``sci / sky - 1`` of the
    pixels within ``core`` pixels is median-combined over columns and exposures in
    bins of ``step`` pixels of ``yslit``.  The peak of that profile is the source's
    peak surface brightness in units of the sky and its sigma come from the least-squares
    fit of a Gaussian plus a constant to that profile.

    Parameters
    ----------
    sci : numpy.ndarray
        ``(N, ny, nx)`` data with the bar shadow divided out (uJy per pixel).
    yslit : numpy.ndarray
        ``(N, ny, nx)`` row minus trace (pixels).
    mask : numpy.ndarray
        ``(N, ny, nx)`` valid pixels.
    core, step : float
        Half-width of the source region and bin size (pixels).

    Returns
    -------
    peak : float
        Median peak surface brightness of the source over the sky (dimensionless; 0
        when not detected).
    sigma : float
        Gaussian sigma of the wavelength-collapsed profile (pixels; NaN when not
        detected or wider than the core).
    """
    sci = np.asarray(sci, float)
    yslit = np.asarray(yslit, float)
    with np.errstate(invalid="ignore"):
        outer = np.asarray(mask, bool) & (np.abs(yslit) > core) & np.isfinite(sci)
        inner = np.asarray(mask, bool) & (np.abs(yslit) <= core) & np.isfinite(sci)
    # the sky is the same in every exposure of the group: one median per column
    n_exp, ny, nx = sci.shape
    vals = np.where(outer, sci, np.inf).reshape(n_exp * ny, nx)
    n_outer = outer.sum(axis=(0, 1))
    srt = np.sort(vals, axis=0)
    lo = np.clip((n_outer - 1) // 2, 0, None)
    hi = np.clip(n_outer // 2, 0, None)
    cols = np.arange(nx)
    sky = 0.5 * (srt[lo, cols] + srt[hi, cols])
    sky = np.where((n_outer >= 3) & (sky > 0), sky, np.nan)[None, :]  # (1, nx)
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = sci / sky[:, None, :] - 1.0
    ok = inner & np.isfinite(frac)
    if ok.sum() < 20:
        return 0.0, np.nan
    edges = np.arange(-core, core + step / 2, step)
    prof = _binned_median_1d(yslit[ok], frac[ok], edges)
    cen = 0.5 * (edges[1:] + edges[:-1])
    filled = np.isfinite(prof)  # bins without pixels (few sub-pixel phases) are left out
    near = filled & (np.abs(cen) < 1.5)  # the trace is known to a pixel or so
    if filled.sum() < 6 or not near.any():
        return 0.0, np.nan
    cen, prof, near = cen[filled], prof[filled], near[filled]
    k = int(np.flatnonzero(near)[np.argmax(prof[near])])
    if prof[k] <= 0:
        return 0.0, np.nan

    # Gaussian plus a constant (the residual pipeline bar shadow and sky error),
    # least squares on the binned profile
    def resid(p):
        return p[0] * np.exp(-0.5 * ((cen - p[1]) / p[2]) ** 2) + p[3] - prof

    x0 = [float(prof[k]), float(cen[k]), 0.8, 0.0]
    bounds = ([0.0, -1.5, 0.2, -np.inf], [np.inf, 1.5, core, np.inf])
    res = least_squares(resid, x0, bounds=bounds)
    peak, sigma = float(res.x[0]), float(res.x[2])
    if not res.success or sigma >= 0.99 * core:
        return peak, np.nan
    return peak, sigma


def _wing_distance(wave, s_int, ratio):
    """Distance (pixels) beyond which a compact source is fainter than ``ratio`` x its peak.

    From the detector profile of the optics model (:mod:`slitcombine.core.optics`: the
    telescope's Airy wings and the spectrograph's wide wing, which a Gaussian lacks) of a
    centred source of intrinsic width ``s_int`` at wavelength ``wave`` (um).
    """
    from slitcombine.core.optics import DEFAULT_OPTICS

    u = np.arange(-40.0, 40.0 + 1e-9, 0.05)
    strip = DEFAULT_OPTICS.strip_profiles([wave], u, sigma=s_int)[0]
    d = np.arange(0.0, 40.0, 0.25)
    prof = DEFAULT_OPTICS.kernel_pixel(d[:, None] - u[None, :]) @ strip
    faint = np.flatnonzero(prof < ratio * prof[0])
    return float(d[faint[0]]) if faint.size else float(d[-1])


def source_exclusion(sci, yslit, mask, psf, leak=1e-3, floor=4.0, wave=None):
    """Distance to the trace in source widths, and how many widths hold source light.

    The source's peak brightness ``A`` (in units of the sky) and its intrinsic width
    ``s_int`` come from :func:`source_profile` (the wavelength-collapsed sigma less the
    median PSF sigma and the pixel width, in quadrature).  A Gaussian source of width
    ``s(lambda) = sqrt(psf(lambda)^2 + s_int^2)`` adds less than ``leak`` of the sky
    beyond ``n = sqrt(2 ln(A / leak))`` widths; a real source has wings (the Airy rings
    of the telescope, the spectrograph's wide wing: :mod:`slitcombine.core.optics`) that
    hold ~1% of its light beyond 3 pixels, so with ``wave`` the distance is the larger of
    that and the distance where the optics model's profile falls below ``10 leak`` of the
    sky (1% by default: the precision of the bar model per pixel; a stricter limit leaves
    no sky beside a source a few tens of times the sky), at the median wavelength of
    the valid pixels (expressed in the same widths).

    Parameters
    ----------
    sci, yslit, mask : numpy.ndarray
        ``(N, ny, nx)`` data with the bar shadow divided out (uJy per pixel), row minus
        trace (pixels) and valid pixels.
    psf : numpy.ndarray
        ``(N, ny, nx)`` PSF sigma at every pixel's wavelength (pixels).
    leak : float
        Tolerated source surface brightness in units of the sky.
    floor : float
        Smallest number of widths returned.
    wave : numpy.ndarray, optional
        ``(N, ny, nx)`` wavelength, um (for the wings; None: a Gaussian source).

    Returns
    -------
    distance : numpy.ndarray
        ``(N, ny, nx)`` ``|yslit| / s(lambda)`` (source widths).
    n_widths : float
        ``max(floor, sqrt(2 ln(A / leak)), wing distance / median width)``.
    info : dict
        ``peak`` (A), ``sigma_px`` (collapsed profile), ``intrinsic_sigma_px``,
        ``wing_distance_px`` (with ``wave``).
    """
    peak, sigma = source_profile(sci, yslit, mask)
    fin = np.asarray(mask, bool) & np.isfinite(psf)
    psf_med = float(np.median(psf[fin])) if fin.any() else np.nan
    s_int = 0.0
    if np.isfinite(sigma) and np.isfinite(psf_med):
        s_int = float(np.sqrt(max(sigma**2 - psf_med**2 - 1.0 / 12.0, 0.0)))
    with np.errstate(invalid="ignore", divide="ignore"):
        width = np.sqrt(psf**2 + s_int**2)
        distance = np.abs(yslit) / width
    n_widths = float(floor)
    info = {
        "peak": round(peak, 4),
        "sigma_px": round(sigma, 3) if np.isfinite(sigma) else None,
        "intrinsic_sigma_px": round(s_int, 3),
    }
    if peak > leak:
        n_widths = max(n_widths, float(np.sqrt(2.0 * np.log(peak / leak))))
        if wave is not None:
            ok = fin & np.isfinite(wave) & (np.asarray(wave, float) > 0)
            if ok.any():
                wing = _wing_distance(float(np.median(wave[ok])), s_int, 10 * leak / peak)
                info["wing_distance_px"] = round(wing, 2)
                n_widths = max(n_widths, wing / float(np.median(width[ok])))
    return distance, n_widths, info


def fit_bar_shadow(
    raw,
    var,
    yshutter,
    wave,
    sky_pixels,
    coordinate,
    *,
    pipeline_bar=None,
    var_poisson=None,
    source_distance=None,
    min_distance=4.5,
    max_distance=16.0,
    leak_threshold=0.003,
    mode="wave",
    wave_axis="wavelength",
    ystep=0.07,
    df_wave=5,
    df_norm=8,
    df_sky=51,
    smooth_y=0.3,
    smooth_w=0.003,
    period=None,
    smooth_period=0.005,
    period_margin=0.1,
    link_tolerance=0.1,
    clip=5.0,
    n_iter=6,
    tol=0.05,
    min_pixels=200,
    min_count=20,
    reference_bar=0.9,
    n_error_sample=256,
):
    """Fit a smooth bar-shadow throughput to sky pixels of the exposures of a group.

    Model of an un-corrected sky pixel (bar shadow *not* divided out)::

        raw = S(lambda) * T(y, lambda)

    with ``S`` the sky (cubic B-spline of ``df_sky`` functions in the column coordinate
    ``u(lambda)``, knots uniform in resolution elements) and ``T`` a tensor cubic
    B-spline in the shutter coordinate ``y`` (knots every ``ystep`` shutter pitches,
    ~0.35 pixel by default, finer than a pixel because the tilt of the slit on the
    detector samples ``y`` continuously along each row) and in the wavelength
    (``df_wave`` functions uniform in um with ``wave_axis='wavelength'``: the bar
    shadow changes with the width of the diffraction pattern, ~ linear in lambda; or
    uniform in ``u`` with ``'column'``; one constant for ``mode='slit'``).

    Why this is well posed: ``y`` is fixed to the MSA, so with nods every detector pixel
    is sky in the exposures where the source is elsewhere; the sky pixels of all
    exposures together sample every ``y`` of the slitlet.  ``S * T`` is fitted by
    alternating linear least squares (``T`` given ``S``, then ``S`` given ``T``, until
    the model changes by less than ``tol`` sigma at every pixel) with second-difference
    (P-spline) priors in ``y`` and wavelength, which also bridge the few knots without
    data; residuals beyond ``clip`` sigma are rejected between iterations.  Intervals
    of ``y`` with fewer than ``min_count`` sky pixels per ``2 * ystep`` are *not
    covered* (:meth:`BarShadowModel.is_covered`); the caller falls back to the pipeline
    there.

    Source light: with ``source_distance`` (distance of each pixel to its exposure's
    trace, e.g. in units of the PSF width) the sky pixels are those farther than
    ``min_distance``.  After the fit the residuals of the sky pixels in bins of 0.5
    distance units are checked: if the bins next to the excluded region show a median
    excess above ``leak_threshold`` of the sky (and 4 sigma) -- the wings of a bright
    or extended source -- the excluded region is widened past them and the fit
    repeated (up to ``max_distance``).

    The product is degenerate under ``S -> S g``, ``T -> T / g``: the normalisation
    ``g(u)`` is fixed by the convention that the model equals the pipeline bar-shadow
    correction, in the median, where the pipeline says the shutter is unobstructed
    (``pipeline_bar > reference_bar``): this keeps the pipeline's absolute flux
    calibration.  Without a pipeline bar (all ones) the maximum of ``T`` over ``y`` is 1
    at every wavelength.

    Parameters
    ----------
    raw : numpy.ndarray
        ``(n,)`` sky-pixel values with the bar shadow in (uJy per pixel).
    var : numpy.ndarray
        ``(n,)`` read-noise variances of ``raw`` (uJy^2).
    yshutter, wave : numpy.ndarray
        ``(n,)`` shutter coordinate (shutter pitches) and wavelength (um).
    sky_pixels : numpy.ndarray
        ``(n,)`` boolean: candidate pixels to fit (valid, off-source).
    coordinate : ColumnCoordinate
        Wavelength -> column mapping.
    pipeline_bar : numpy.ndarray or None
        ``(n,)`` pipeline throughput for the normalisation (all pixels, not only sky).
    var_poisson : numpy.ndarray or None
        ``(n,)`` Poisson variances of ``raw`` (uJy^2).  Only their smooth ratio to
        ``raw`` is used, times the model, so the weights do not depend on the noise of
        the data (the measured Poisson variance would bias the fit low).
    source_distance : numpy.ndarray or None
        ``(n,)`` distance of each pixel to the trace of its exposure (any unit:
        pixels, or pixels divided by the PSF sigma at the pixel's wavelength); None:
        ``sky_pixels`` are used as they are.
    min_distance, max_distance : float
        First and largest excluded distance (unit of ``source_distance``).
    leak_threshold : float
        Mean fractional residual (of the sky) that counts as source light.
    mode : {'wave', 'slit'}
        Wavelength-dependent or independent shape.
    wave_axis : {'wavelength', 'column'}
        Axis of the wavelength dependence of ``T``.
    ystep : float
        Knot spacing in the shutter coordinate (shutter pitches).
    df_wave, df_norm, df_sky : int
        Wavelength functions of ``T``, of the normalisation ``g`` and of ``S``.
    smooth_y, smooth_w : float
        Prior widths (throughput units) of the second differences of neighbouring
        coefficients along the shutter coordinate and along wavelength (P-spline
        penalties ``D^T D / smooth^2``).
    period : float or None
        Shutter pitch in the units of ``yshutter``: the knots are made commensurate
        with it and the profiles of neighbouring shutters are tied together (prior
        width ``smooth_period``), away from the ends of the slitlet.  None: no tie.
    smooth_period : float or None
        Allowed shutter-to-shutter difference of the profile (throughput units).
    period_margin : float
        Distance (periods) from the lit ends of the slitlet within which profiles are
        not tied (the end shutters have no neighbour on their outer side).
    link_tolerance : float
        Coefficients of two shutters that differ by more than this in a first,
        wavelength-independent pass are not tied (a stuck or failed-open shutter).
    clip : float
        Outlier rejection threshold (sigma).
    n_iter : int
        Maximum number of alternating iterations.
    tol : float
        Convergence: the iterations stop when the model changes by less than ``tol``
        sigma at every pixel and the clipping of fewer than 0.1% of the pixels changes.
    min_pixels : int
        Minimum number of sky pixels.
    min_count : int
        Coverage threshold (sky pixels per ``2 * ystep`` bin).
    reference_bar : float
        Pipeline throughput above which a pixel defines the normalisation.
    n_error_sample : int
        Sky pixels on which the posterior error is evaluated.

    Returns
    -------
    BarShadowModel
        The model; ``info`` holds pixel counts, reduced chi2, the numbers of functions,
        the iterations, the excluded distance and ``bar_error``: the median posterior
        1-sigma relative error of ``T`` at the lit sky pixels (data and priors).

    Raises
    ------
    FitError
        Too few sky pixels or a singular fit.
    """
    raw = np.asarray(raw, float)
    var = np.asarray(var, float)
    ys = np.asarray(yshutter, float)
    wave = np.asarray(wave, float)
    u_all = coordinate(wave)
    if wave_axis not in ("wavelength", "column"):
        raise ValueError(f"wave_axis must be 'wavelength' or 'column', got {wave_axis!r}")
    with np.errstate(invalid="ignore"):
        candidates = (
            np.asarray(sky_pixels, bool)
            & np.isfinite(raw)
            & np.isfinite(ys)
            & np.isfinite(u_all)
            & (var > 0)
        )
    dist_all = None
    distance = None
    if source_distance is not None:
        dist_all = np.abs(np.asarray(source_distance, float))
        candidates &= np.isfinite(dist_all)
        distance = float(min_distance)
    finite = np.isfinite(ys) & np.isfinite(u_all)
    if not finite.any():
        raise FitError("no pixel with a finite shutter coordinate and wavelength")
    ylo, yhi = float(ys[finite].min()), float(ys[finite].max())
    urange = (float(u_all[finite].min()), float(u_all[finite].max()))
    t_all = wave if wave_axis == "wavelength" else u_all
    trange = (float(t_all[finite].min()), float(t_all[finite].max()))
    m_per = None
    if period is not None and smooth_period is not None and period > 4 * ystep:
        # knots commensurate with the shutter pitch: function j and j + m_per are
        # translates by exactly one period
        m_per = int(round(period / ystep))
        ystep = period / m_per
    df_y = max(int(np.ceil((yhi - ylo) / ystep)) + 3, 4)
    yrange = (ylo, ylo + (df_y - 3) * ystep)
    # No more functions than the columns support (short cutouts, few columns).
    span = urange[1] - urange[0]
    df_w = 1 if mode != "wave" else int(min(df_wave, max(4, span // 40)))
    norm_df = 1 if mode != "wave" else int(min(df_norm, max(4, span // 40)))
    df_s = int(min(df_sky, max(4, span // 6)))

    pen_y = difference_penalty(df_y) / smooth_y**2
    pen_t0 = np.kron(pen_y, np.eye(df_w))
    if df_w > 1:
        pen_t0 = pen_t0 + np.kron(np.eye(df_y), difference_penalty(df_w)) / smooth_w**2
    pen_s = 1e-4 * _difference_band(df_s)
    cpois_table = None
    if var_poisson is not None:
        # Poisson variance from the model, not from the measured counts (no bias): the
        # ratio var_poisson / raw is a smooth calibration factor of the wavelength.
        vp = np.asarray(var_poisson, float)
        with np.errstate(invalid="ignore", divide="ignore"):
            okp = np.flatnonzero(candidates & (raw > 0) & np.isfinite(vp) & (vp > 0))
        okp = okp[:: max(1, okp.size // 5000)]
        if okp.size > 50:
            edges = np.linspace(urange[0], urange[1] + 1e-9, 33)
            med = _binned_median_1d(u_all[okp], vp[okp] / raw[okp], edges)
            cen = 0.5 * (edges[1:] + edges[:-1])
            fin = np.isfinite(med)
            if fin.sum() >= 2:
                cpois_table = (cen[fin], med[fin])

    n_grow = 0
    while True:
        fit = candidates if distance is None else candidates & (dist_all > distance)
        n_sky = int(fit.sum())
        if n_sky < min_pixels:
            raise FitError(f"only {n_sky} sky pixels for the bar-shadow fit (need {min_pixels})")
        result = _fit_product(
            fit,
            raw,
            var,
            ys,
            u_all,
            t_all,
            pipeline_bar,
            cpois_table,
            df_y=df_y,
            df_w=df_w,
            df_s=df_s,
            yrange=yrange,
            urange=urange,
            trange=trange,
            pen_y=pen_y,
            pen_t=pen_t0,
            pen_s=pen_s,
            m_per=m_per,
            ystep=ystep,
            period=period,
            smooth_period=smooth_period,
            period_margin=period_margin,
            link_tolerance=link_tolerance,
            clip=clip,
            n_iter=n_iter,
            tol=tol,
            min_pixels=min_pixels,
            reference_bar=reference_bar,
        )
        if distance is None or distance >= max_distance:
            break
        idx, model_f, w_last = result["idx"], result["model"], result["weights"]
        with np.errstate(invalid="ignore", divide="ignore"):
            frac = (raw[idx] - model_f) / model_f
            ferr = 1.0 / (np.sqrt(w_last) * np.abs(model_f))
        edge = _leak_radius(dist_all[idx], frac, ferr, distance, threshold=leak_threshold)
        if edge is None:
            break
        log.info("source light in the sky pixels out to distance %.1f: excluded", edge)
        distance = min(edge + 0.5, float(max_distance))
        n_grow += 1

    idx, good = result["idx"], result["good"]
    t_coef, chi2, n_links, extent = (
        result["t_coef"],
        result["chi2"],
        result["n_links"],
        result["extent"],
    )
    # Posterior uncertainty of T (data + priors) on a sample of the lit sky pixels:
    # the caller decides whether the model is precise enough to replace the pipeline's.
    solver, cf = result["solver"], result["factor"]
    sample = np.flatnonzero(good)[:: max(1, int(good.sum()) // int(n_error_sample))]
    t_s = solver(t_coef)[sample]
    lit_s = t_s > 0.45 * np.nanmax(t_s)
    if lit_s.any():
        z = solve_triangular(
            cf[0], solver.dense_rows(sample[lit_s]).T, lower=True, check_finite=False
        )
        rel_err = np.sqrt(np.sum(z**2, axis=0)) / t_s[lit_s]
        bar_error = float(np.median(rel_err))
    else:
        bar_error = np.inf

    model = BarShadowModel(
        coeffs=np.asarray(t_coef).reshape(df_y, df_w),
        yrange=yrange,
        urange=urange,
        df_y=df_y,
        df_w=df_w,
        norm_coeffs=np.ones(1),
        norm_df=1,
        coordinate=coordinate,
        covered=_covered_intervals(ys[idx][good], 2 * ystep, min_count),
        wave_axis=wave_axis,
        trange=trange,
    )
    # Normalisation g(u).
    if pipeline_bar is not None and np.nanmin(np.asarray(pipeline_bar)[finite]) < 0.99:
        pb = np.asarray(pipeline_bar, float)
        with np.errstate(invalid="ignore"):
            ref = np.flatnonzero(finite & (pb > reference_bar) & model.is_covered(ys))
        ref = ref[:: max(1, ref.size // 3000)]
        ratio = model.raw(ys[ref], t_all[ref]) / pb[ref]
        convention = f"median(model / pipeline) = 1 where pipeline > {reference_bar}"
        # Median in wavelength bins: robust to a shutter the pipeline thinks open but
        # that passes no light (stuck closed), or a failed-open neighbour.
        nb = 4 * max(norm_df, 1)
        edges = np.linspace(urange[0], urange[1] + 1e-9, nb + 1)
        okr = np.isfinite(ratio)
        ratio = _binned_median_1d(u_all[ref][okr], ratio[okr], edges)
        u_ref = 0.5 * (edges[1:] + edges[:-1])
    else:
        ugrid = np.linspace(*urange, 64)
        ygrid = np.linspace(*yrange, 400)
        yy, uu = np.meshgrid(ygrid, ugrid)
        tt_axis = coordinate.inverse(uu) if wave_axis == "wavelength" else uu
        tt = model.raw(yy.ravel(), tt_axis.ravel()).reshape(yy.shape)
        cov = model.is_covered(yy)
        ratio = np.nanmax(np.where(cov, tt, np.nan), axis=1)
        u_ref = ugrid
        convention = "max over the shutter coordinate = 1"
    ok = np.isfinite(ratio)
    if ok.sum() < 4 * norm_df:
        raise FitError("too few pixels to normalise the bar-shadow model")
    if norm_df == 1:
        model.norm_coeffs = np.array([np.median(ratio[ok])])
    else:
        bn = bspline_basis(u_ref[ok], norm_df, *urange).toarray()  # (<= 32, norm_df)
        model.norm_coeffs = _scaled_solve(
            bn, np.ones(ok.sum()), ratio[ok], 1e-3 * difference_penalty(norm_df)
        )
    model.norm_df = norm_df
    model.info = {
        "n_sky_pixels": int(idx.size),
        "n_used": int(good.sum()),
        "n_clipped": int((~good).sum()),
        "reduced_chi2": round(chi2, 4),
        "bar_error": round(bar_error, 5),
        "iterations": result["iterations"],
        "df_y": df_y,
        "df_w": df_w,
        "df_sky": df_s,
        "df_norm": norm_df,
        "wave_axis": wave_axis,
        "ystep": round(ystep, 5),
        "period_links": n_links,
        "source_distance": None if distance is None else round(distance, 2),
        "source_leak_growths": n_grow,
        "lit_extent": None if extent is None else (round(extent[0], 3), round(extent[1], 3)),
        "normalisation": convention,
        "covered": [(round(a, 3), round(b, 3)) for a, b in model.covered],
    }
    return model


def _fit_product(
    fit,
    raw,
    var,
    ys,
    u_all,
    t_all,
    pipeline_bar,
    cpois_table,
    *,
    df_y,
    df_w,
    df_s,
    yrange,
    urange,
    trange,
    pen_y,
    pen_t,
    pen_s,
    m_per,
    ystep,
    period,
    smooth_period,
    period_margin,
    link_tolerance,
    clip,
    n_iter,
    tol,
    min_pixels,
    reference_bar,
):
    """The alternating fit of ``S * T`` to the pixels ``fit`` (see :func:`fit_bar_shadow`)."""
    idx = np.flatnonzero(fit)
    y_f, u_f, r_f = ys[idx], u_all[idx], raw[idx]
    var_r = var[idx]
    vy, iy = _cubic_rows(y_f, df_y, *yrange)
    cy = iy[:, None] + np.arange(4)[None, :]
    if df_w > 1:
        vw, iw = _cubic_rows(t_all[idx], df_w, *trange)
        cw = iw[:, None] + np.arange(4)[None, :]
        k_vals = (vy[:, :, None] * vw[:, None, :]).reshape(idx.size, 16)
        k_cols = (cy[:, :, None] * df_w + cw[:, None, :]).reshape(idx.size, 16)
    else:
        k_vals, k_cols = vy, cy
    sky = _BandSolver(*_cubic_rows(u_f, df_s, *urange), df_s, pen_s)
    cpois = None if cpois_table is None else np.interp(u_f, *cpois_table)

    def solve_s(t_val, wgood):
        return sky.solve(wgood * t_val**2, wgood * t_val * r_f)

    # Initial sky: the pixels the pipeline calls unobstructed (bar divided out), or all.
    t_seed = np.ones(idx.size)
    if pipeline_bar is not None:
        pb = np.asarray(pipeline_bar, float)[idx]
        seed_sel = pb > reference_bar
        if seed_sel.sum() >= min_pixels // 2:
            t_seed = np.where(seed_sel, pb, 0.0)
    s_coef0 = solve_s(t_seed, 1.0 / var_r)
    # first weights: Poisson variance of the seed model (sky times the pipeline bar)
    w0 = 1.0 / var_r
    if cpois is not None:
        t_pipe = np.ones(idx.size) if pipeline_bar is None else np.asarray(pipeline_bar)[idx]
        w0 = 1.0 / (var_r + cpois * np.maximum(sky(s_coef0) * t_pipe, 0.0))

    def alternate(solver, penalty, s_coef, iterations):
        good = np.ones(idx.size, bool)
        s_val = sky(s_coef)
        w = w0
        model_old = None
        t_coef, chi2, done, factor = None, np.nan, 0, None
        for _ in range(int(iterations)):
            done += 1
            wg = w * good
            t_coef, factor = solver.solve(wg * s_val**2, wg * s_val * r_f, penalty, factor=True)
            t_val = solver(t_coef)
            s_coef = solve_s(t_val, wg)
            s_val = sky(s_coef)
            model_f = s_val * t_val
            if cpois is not None:
                w = 1.0 / (var_r + cpois * np.maximum(model_f, 0.0))
            z = (r_f - model_f) * np.sqrt(w)
            new_good = np.abs(z) < clip
            chi2 = float(np.sum(z[new_good] ** 2) / max(new_good.sum() - solver.m, 1))
            change = (
                np.inf
                if model_old is None
                else float(np.max(np.abs(model_f - model_old) * np.sqrt(w)))
            )
            flipped = int(np.count_nonzero(new_good != good))
            log.debug("iteration %d: change %.4f sigma, %d clip flips", done, change, flipped)
            good, model_old = new_good, model_f
            if change < tol and flipped <= 1e-3 * good.size:
                break
        return t_coef, s_coef, good, chi2, w, model_old, done, factor

    n_links = 0
    extent = None
    if m_per is not None:
        # The shutters of the MSA are alike: tie the profile of each shutter to the
        # next one, except near the two ends of the slitlet (no neighbour there).  The
        # open extent comes from a quick wavelength-independent first pass.
        t0 = alternate(_TensorSolver(vy, cy, df_y), pen_y, s_coef0, 2)[0]
        grid = np.linspace(float(y_f.min()), float(y_f.max()), 2000)  # where sky data are
        vg, ig = _cubic_rows(grid, df_y, *yrange)
        prof = _band_eval(vg, ig, t0)
        lit = grid[prof > 0.3 * np.nanmax(prof)]
        if lit.size:
            extent = (float(lit.min()), float(lit.max()))
            centres = yrange[0] + (np.arange(df_y) - 1.0) * ystep
            j = np.arange(3, df_y - 4 - m_per)
            keep = (centres[j] - 2 * ystep >= extent[0] + period_margin * period) & (
                centres[j + m_per] + 2 * ystep <= extent[1] - period_margin * period
            )
            # Shutters that are not alike (a stuck-closed or failed-open one) are not
            # tied to their neighbours.
            keep &= np.abs(t0[j] - t0[j + m_per]) < link_tolerance
            j = j[keep]
            n_links = int(j.size)
            if n_links:
                dp = np.zeros((n_links, df_y))
                dp[np.arange(n_links), j] = 1.0
                dp[np.arange(n_links), j + m_per] = -1.0
                pen_t = pen_t + np.kron(dp.T @ dp, np.eye(df_w)) / smooth_period**2
    solver = _TensorSolver(k_vals, k_cols, df_y * df_w)
    t_coef, s_coef, good, chi2, w_last, model_f, done, cf = alternate(
        solver, pen_t, s_coef0, n_iter
    )
    return {
        "idx": idx,
        "good": good,
        "t_coef": t_coef,
        "s_coef": s_coef,
        "chi2": chi2,
        "weights": w_last,
        "model": model_f,
        "iterations": done,
        "solver": solver,
        "factor": cf,
        "n_links": n_links,
        "extent": extent,
    }


def _binned_median_1d(x, values, edges):
    """Median of ``values`` in bins of ``x`` (NaN in empty bins)."""
    nb = edges.size - 1
    b = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, nb - 1)
    order = np.lexsort((values, b))
    counts = np.bincount(b, minlength=nb)
    start = np.concatenate([[0], np.cumsum(counts)[:-1]])
    sv = np.asarray(values)[order]
    out = np.full(nb, np.nan)
    ok = counts > 0
    lo = start[ok] + (counts[ok] - 1) // 2
    hi = start[ok] + counts[ok] // 2
    out[ok] = 0.5 * (sv[lo] + sv[hi])
    return out


def _scaled_solve(a, w, y, penalty_rel):
    """:func:`solve_penalized` with the penalty relative to the mean normal diagonal."""
    wa = a.multiply(w[:, None]) if sparse.issparse(a) else a * w[:, None]
    diag = np.asarray((wa.multiply(a) if sparse.issparse(a) else wa * a).sum(axis=0)).ravel()
    scale = float(np.mean(diag)) if diag.size else 1.0
    if not np.isfinite(scale) or scale <= 0:
        raise FitError("no weight in the data of the fit")
    coeffs, _ = solve_penalized(a, w, y, penalty_rel * scale, covariance=False)
    return coeffs


# ====================================================================== normalisation
@dataclass(frozen=True)
class RenormalizationTable:
    """Per-quadrant, position-dependent spectral normalisation (msaexp's format).

    Attributes
    ----------
    path : pathlib.Path
    coeffs : numpy.ndarray
        ``(df, 4, 3)``.
    reference_wavelengths : numpy.ndarray
        ``(nref,)`` um, increasing.
    """

    path: Path
    coeffs: np.ndarray
    reference_wavelengths: np.ndarray

    @property
    def df(self):
        """Number of spline functions."""
        return self.coeffs.shape[0]


def read_renormalization(path, grating=None):
    """Read a slit renormalisation table (msaexp's ``prism_slit_renormalize.yaml`` format).

    Parameters
    ----------
    path : path-like
        The YAML file.
    grating : str or None
        The group's grating: a table declaring another one raises.

    Returns
    -------
    RenormalizationTable

    Raises
    ------
    CalibrationFileError
        Missing, unreadable or malformed file, or a table of another grating.
    """
    path = Path(path)
    content = _read_yaml(path)
    check_grating(path, grating, content)
    coeffs = _float_array(path, content, "coeffs", ndim=3)
    ref = _float_array(path, content, "reference_wavelengths", ndim=1)
    if coeffs.shape[1:] != (4, 3):
        raise CalibrationFileError(
            f"{path}: 'coeffs' has shape {coeffs.shape}, expected (df, 4 quadrants, 3)"
        )
    if "df" in content and int(content["df"]) != coeffs.shape[0]:
        raise CalibrationFileError(
            f"{path}: df={content['df']} but 'coeffs' has {coeffs.shape[0]} functions"
        )
    if coeffs.shape[0] < 4 or ref.size < 2 or not np.all(np.diff(ref) > 0):
        raise CalibrationFileError(
            f"{path}: need >= 4 coefficients and increasing 'reference_wavelengths'"
        )
    return RenormalizationTable(path, coeffs, ref)


def normalization_correction(table, wave, quadrant, xcen, ycen):
    """Multiplicative normalisation correction of one slitlet.

    ``corr(lambda) = 1 / sum_k B_k(u) c_k`` with ``c_k = a_kq + b_kq xcen + c_kq ycen``
    for quadrant ``q``, ``u`` the fractional index of ``lambda`` in
    ``table.reference_wavelengths`` divided by ``nref - 1`` and ``B_k`` cubic B-splines
    with uniform knots on [0, 1].

    Parameters
    ----------
    table : RenormalizationTable
    wave : array_like
        Wavelengths (um).
    quadrant : int
        MSA quadrant (1-4).
    xcen, ycen : float
        Shutter column and row of the slitlet in its quadrant.

    Returns
    -------
    numpy.ndarray
        Factor that multiplies the data, same shape as ``wave``; NaN outside the
        reference wavelengths.

    Raises
    ------
    CalibrationFileError
        If the quadrant is not 1-4 or the position is missing.
    """
    try:
        q = int(quadrant)
        x = float(xcen)
        y = float(ycen)
    except (TypeError, ValueError) as exc:
        raise CalibrationFileError(
            f"{table.path}: slit position (quadrant={quadrant}, xcen={xcen}, ycen={ycen}) "
            "is missing or not numeric"
        ) from exc
    if q not in (1, 2, 3, 4):
        raise CalibrationFileError(f"{table.path}: quadrant must be 1-4, got {quadrant}")
    c = table.coeffs[:, q - 1, 0] + table.coeffs[:, q - 1, 1] * x + table.coeffs[:, q - 1, 2] * y
    wave = np.asarray(wave, float)
    ref = table.reference_wavelengths
    u = np.interp(wave.ravel(), ref, np.arange(ref.size) / (ref.size - 1.0))
    outside = ~np.isfinite(wave.ravel()) | (wave.ravel() < ref[0]) | (wave.ravel() > ref[-1])
    u[outside] = np.nan
    spl = bspline_basis(u, table.df, 0.0, 1.0, outside="nan") @ c
    with np.errstate(divide="ignore", invalid="ignore"):
        corr = 1.0 / spl
    corr[~(spl > 0)] = np.nan
    return corr.reshape(wave.shape)


# ====================================================================== s-flat
@dataclass(frozen=True)
class SflatTable:
    """Field-dependent spectroscopic flat of one MSA quadrant (see the module docstring).

    Attributes
    ----------
    path : pathlib.Path
    wave : numpy.ndarray
        ``(nw,)`` um.
    coeffs : numpy.ndarray
        ``(nw, dfx * dfy)``.
    dfx, dfy : int
    xrange, yrange : (float, float)
    """

    path: Path
    wave: np.ndarray
    coeffs: np.ndarray
    dfx: int
    dfy: int
    xrange: tuple
    yrange: tuple


def read_sflat(path, grating=None):
    """Read an s-flat table (``sflat_{grating}_q{quadrant}.fits``).

    Parameters
    ----------
    path : path-like
        FITS file with a binary table (``wave``, ``coeffs``) and the keywords ``DFX``,
        ``DFY``, ``XMIN``, ``XMAX``, ``YMIN``, ``YMAX``.
    grating : str or None
        The group's grating (checked against ``GRATING`` or the file name).

    Returns
    -------
    SflatTable

    Raises
    ------
    CalibrationFileError
        Missing, unreadable or malformed file, or a table of another grating.
    """
    path = Path(path)
    cols, hdr = read_fits_table(path, required=("wave", "coeffs"))
    wave = np.asarray(cols["wave"], float)
    coeffs = np.asarray(cols["coeffs"], float)
    try:
        keys = {k: hdr[k] for k in ("DFX", "DFY", "XMIN", "XMAX", "YMIN", "YMAX")}
    except KeyError as exc:
        raise CalibrationFileError(f"{path}: missing column or keyword {exc}") from exc
    declared = hdr.get("GRATING")
    check_grating(path, grating, {"grating": declared} if declared else None)
    dfx, dfy = int(keys["DFX"]), int(keys["DFY"])
    if coeffs.ndim != 2 or coeffs.shape != (wave.size, dfx * dfy):
        raise CalibrationFileError(
            f"{path}: 'coeffs' has shape {coeffs.shape}, expected ({wave.size}, {dfx * dfy})"
        )
    if wave.size < 2 or not np.all(np.diff(wave) > 0) or not np.all(np.isfinite(coeffs)):
        raise CalibrationFileError(f"{path}: 'wave' must increase and 'coeffs' be finite")
    return SflatTable(
        path,
        wave,
        coeffs,
        dfx,
        dfy,
        (float(keys["XMIN"]), float(keys["XMAX"])),
        (float(keys["YMIN"]), float(keys["YMAX"])),
    )


def sflat_correction(table, wave, xcen, ycen):
    """S-flat value at the slitlet's MSA position, as a function of wavelength.

    Parameters
    ----------
    table : SflatTable
    wave : array_like
        Wavelengths (um).
    xcen, ycen : float
        Shutter column and row of the slitlet in its quadrant.

    Returns
    -------
    numpy.ndarray
        The flat (the data are divided by it), NaN outside ``table.wave`` or where not
        positive.
    """
    bx = bspline_basis([float(xcen)], table.dfx, *table.xrange, outside="nan").toarray()[0]
    by = bspline_basis([float(ycen)], table.dfy, *table.yrange, outside="nan").toarray()[0]
    per_node = table.coeffs @ np.outer(bx, by).ravel()
    wave = np.asarray(wave, float)
    flat = np.interp(wave, table.wave, per_node, left=np.nan, right=np.nan)
    flat = np.where(flat > 0, flat, np.nan)
    return flat


# ====================================================================== bad pixels
def read_bad_pixel_map(path, shape=(2048, 2048)):
    """Read an extra bad-pixel map of a detector.

    Parameters
    ----------
    path : path-like
        ``*.fits`` (image, non-zero = bad) or msaexp's YAML (``shape``, ``pixel_index``).
    shape : (int, int)
        Expected detector shape.

    Returns
    -------
    numpy.ndarray
        Boolean ``shape`` array, True = bad.

    Raises
    ------
    CalibrationFileError
        Missing, unreadable or malformed file.
    """
    path = Path(path)
    if path.suffix.lower() in (".yaml", ".yml"):
        content = _read_yaml(path)
        fshape = tuple(int(v) for v in content.get("shape", shape))
        index = _float_array(path, content, "pixel_index", ndim=1).astype(np.int64)
        if fshape != tuple(shape):
            raise CalibrationFileError(f"{path}: map shape {fshape}, expected {tuple(shape)}")
        if index.size and (index.min() < 0 or index.max() >= np.prod(fshape)):
            raise CalibrationFileError(f"{path}: 'pixel_index' out of range for {fshape}")
        bad = np.zeros(int(np.prod(fshape)), bool)
        bad[index] = True
        return bad.reshape(fshape)
    from astropy.io import fits

    try:
        with fits.open(path) as hdul:
            hdu = hdul["BADPIX"] if "BADPIX" in hdul else hdul[0]
            data = None if hdu.data is None else np.asarray(hdu.data)
    except FileNotFoundError as exc:
        raise CalibrationFileError(f"{path}: file not found") from exc
    except OSError as exc:
        raise CalibrationFileError(f"{path}: cannot be read as FITS ({exc})") from exc
    if data is None or data.shape != tuple(shape):
        got = None if data is None else data.shape
        raise CalibrationFileError(f"{path}: image shape {got}, expected {tuple(shape)}")
    return data != 0


# ====================================================================== sensitivity
def read_sensitivity(path, grating=None, detector=None):
    """Read an extended-range sensitivity table (``sensitivity_{grating}_{filter}.fits``).

    Parameters
    ----------
    path : path-like
        FITS file with a binary table (see the module docstring).
    grating : str or None
        The group's grating (checked against ``GRATING`` or the file name).
    detector : str or None
        Detector name: its column, if present, multiplies the sensitivity.

    Returns
    -------
    wave, sensitivity : numpy.ndarray
        Wavelength (um) and relative sensitivity.

    Raises
    ------
    CalibrationFileError
        Missing, unreadable or malformed file, or a table of another grating.
    """
    path = Path(path)
    cols, hdr = read_fits_table(path, required=("wavelength", "sensitivity"))
    wave = np.asarray(cols["wavelength"], float)
    sens = np.asarray(cols["sensitivity"], float)
    det = None if detector is None else str(detector).lower()
    if det is not None and det in cols:
        sens = sens * np.asarray(cols[det], float)
    declared = hdr.get("GRATING")
    check_grating(path, grating, {"grating": declared} if declared else None)
    ok = np.isfinite(wave) & np.isfinite(sens)
    if ok.sum() < 2 or np.any(np.diff(wave[ok]) <= 0):
        raise CalibrationFileError(f"{path}: need >= 2 finite rows with increasing wavelength")
    return wave[ok], sens[ok]
