"""Bar-shadow, normalisation, s-flat and bad-pixel corrections (pure functions, file readers).

Nothing here touches a :class:`~slitcombine.SlitGroup`; the thin methods of
:mod:`slitcombine._sky_methods` call these functions and store the results.

Calibration directory
---------------------
slitcombine ships no calibration tables.  Tables are looked up, by file name, in the
directories listed in the environment variable ``SLITCOMBINE_CALIB_DIR``
(:data:`os.pathsep`-separated, searched in order; read at every call, so there is no
module-level state).  When the variable is unset or no file of the expected name exists,
the step that needs it is a logged no-op recorded in ``SlitGroup.meta``.  File names
(``{grating}`` and ``{filter}`` in lower case, e.g. ``prism``, ``clear``):

=======================================  ========================================================
file                                     used by
=======================================  ========================================================
``{visit}_sky.csv``                      :meth:`get_global_sky` (see ``sky.read_sky_table``)
``{grating}_{n}_bar_coeffs_wave.yaml``   :meth:`apply_spline_bar_correction`, mode ``'wave'``
``{grating}_{n}_bar_coeffs.yaml``        :meth:`apply_spline_bar_correction`, mode ``'slit'``
``{grating}_slit_renormalize.yaml``      :meth:`apply_normalization_correction`
``sflat_{grating}_q{quadrant}.fits``     :meth:`apply_sflat_correction`
``sensitivity_{grating}_{filter}.fits``  :meth:`apply_extended_calibration`
``badpix_{detector}.fits`` or            :meth:`apply_extra_dq`
``msaexp_badpix_{detector}.yaml``
=======================================  ========================================================

(``{n}`` = number of shutters of the slitlet, 1, 2 or 3; larger slitlets use the
3-shutter table with the shutter coordinate wrapped into the central shutter.)

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
)

from .errors import CalibrationFileError, FitError

__all__ = [
    "CALIB_DIR_ENV",
    "KNOWN_GRATINGS",
    "calibration_dirs",
    "find_calibration_file",
    "bspline_basis",
    "difference_penalty",
    "ColumnCoordinate",
    "BarCoefficients",
    "read_bar_coeffs",
    "bar_coeffs_filename",
    "evaluate_bar_coeffs",
    "BarShadowModel",
    "fit_bar_shadow",
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
def calibration_dirs(env=None):
    """The calibration directories configured by the user.

    Parameters
    ----------
    env : str or None
        A value in the format of ``$SLITCOMBINE_CALIB_DIR`` (os.pathsep-separated
        directories); None reads the environment variable now.

    Returns
    -------
    list of pathlib.Path
        Existing directories, in search order (missing ones are logged and skipped).
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
    return dirs


def find_calibration_file(name, dirs=None):
    """First file called ``name`` in the calibration directories.

    Parameters
    ----------
    name : str
        File name (no directory).
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


def tensor_basis(by, bw, nw, degree_y=3, degree_w=3):
    """Row-wise Kronecker product of two B-spline design matrices (sparse)."""
    vy, iy = _dense_rows(by, degree_y)
    vw, iw = _dense_rows(bw, degree_w)
    n = vy.shape[0]
    vals = (vy[:, :, None] * vw[:, None, :]).reshape(n, -1)
    cols = (iy[:, :, None] * nw + iw[:, None, :]).reshape(n, -1)
    ny_df = by.shape[1]
    indptr = np.arange(n + 1) * vals.shape[1]
    return sparse.csr_array((vals.ravel(), cols.ravel(), indptr), shape=(n, ny_df * nw))


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
    return f"{str(grating).lower()}_{n}_bar_coeffs{suffix}.yaml", wrap


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
@dataclass
class BarShadowModel:
    """A bar-shadow throughput model fitted to a group's own sky pixels.

    ``bar(y, lambda) = T(y, u(lambda)) / g(u(lambda))``: ``T`` a tensor cubic B-spline in
    the shutter coordinate ``y`` (shutter pitches) and the detector-column coordinate
    ``u`` of the wavelength (:class:`ColumnCoordinate`), ``g`` the normalisation spline
    in ``u`` (see :func:`fit_bar_shadow`).

    Attributes
    ----------
    coeffs : numpy.ndarray
        ``(df_y, df_w)`` coefficients of ``T``.
    yrange, urange : (float, float)
        Ranges of the bases.
    df_y, df_w : int
        Numbers of basis functions (``df_w == 1``: wavelength independent).
    norm_coeffs : numpy.ndarray
        Coefficients of ``g`` (B-spline of ``norm_df`` functions on ``urange``).
    coordinate : ColumnCoordinate
        Wavelength -> column mapping.
    covered : tuple of (float, float)
        Shutter-coordinate intervals constrained by sky pixels.
    info : dict
        Fit statistics.
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

    def _wave_basis(self, u):
        if self.df_w == 1:
            return sparse.csr_array(np.ones((u.size, 1)))
        return bspline_basis(u, self.df_w, *self.urange, outside="clip")

    def raw(self, yshutter, u):
        """The un-normalised tensor spline ``T(y, u)`` (NaN outside ``yrange``).

        Parameters
        ----------
        yshutter : array_like
            Shutter coordinate, shutter pitches.
        u : array_like
            Fractional column of the wavelength (:class:`ColumnCoordinate`), pixels.

        Returns
        -------
        numpy.ndarray
            Flattened un-normalised throughput.
        """
        ys = np.asarray(yshutter, float).ravel()
        u = np.asarray(u, float).ravel()
        by = bspline_basis(ys, self.df_y, *self.yrange, outside="nan")
        bw = self._wave_basis(u)
        val = np.asarray((by @ self.coeffs) * bw.toarray()).sum(axis=1)
        return np.where(np.isfinite(ys) & np.isfinite(u), val, np.nan)

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
        return bspline_basis(u, self.norm_df, *self.urange, outside="clip") @ self.norm_coeffs

    def __call__(self, yshutter, wave):
        """Throughput at shutter coordinate ``yshutter`` and wavelength ``wave`` (um)."""
        ys = np.asarray(yshutter, float)
        shape = np.broadcast_shapes(ys.shape, np.shape(wave))
        ys = np.broadcast_to(ys, shape).ravel()
        u = self.coordinate(np.broadcast_to(np.asarray(wave, float), shape).ravel())
        with np.errstate(invalid="ignore", divide="ignore"):
            out = self.raw(ys, u) / self.norm(u)
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
    mode="wave",
    ystep=0.07,
    df_wave=8,
    df_sky=51,
    smooth_y=0.3,
    smooth_w=0.01,
    period=None,
    smooth_period=0.02,
    period_margin=0.25,
    link_tolerance=0.1,
    clip=5.0,
    n_iter=4,
    min_pixels=200,
    min_count=20,
    reference_bar=0.9,
):
    """Fit a smooth bar-shadow throughput to sky pixels of the exposures of a group.

    Model of an un-corrected sky pixel (bar shadow *not* divided out)::

        raw = S(lambda) * T(y, lambda)

    with ``S`` the sky (cubic B-spline of ``df_sky`` functions in the column coordinate
    ``u(lambda)``) and ``T`` a tensor cubic B-spline in the shutter coordinate ``y``
    (knots every ``ystep`` shutter pitches, ~0.35 pixel by default, finer than a pixel
    because the tilt of the slit on the detector samples ``y`` continuously along each
    row) and in ``u`` (``df_wave`` functions; one constant for ``mode='slit'``).

    Why this is well posed: ``y`` is fixed to the MSA, so with nods every detector pixel
    is sky in the exposures where the source is elsewhere (2 of 3 for a 3-nod pattern);
    the sky pixels of all exposures together sample every ``y`` of the slitlet.
    ``S * T`` is fitted by alternating linear least squares (``T`` given ``S``, then
    ``S`` given ``T``) with second-difference (P-spline) penalties in ``y`` and ``u``,
    which also bridge the few knots without data; residuals beyond ``clip`` sigma are
    rejected between iterations.  Intervals of ``y`` with fewer than ``min_count`` sky
    pixels per ``2 * ystep`` are *not covered* (:meth:`BarShadowModel.is_covered`); the
    caller falls back to the pipeline there.

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
    var_poisson : numpy.ndarray or None
        ``(n,)`` Poisson variances of ``raw`` (uJy^2).  Only their smooth ratio to
        ``raw`` is used, times the model, so the weights do not depend on the noise of
        the data (the measured Poisson variance would bias the fit low).
    yshutter, wave : numpy.ndarray
        ``(n,)`` shutter coordinate (shutter pitches) and wavelength (um).
    sky_pixels : numpy.ndarray
        ``(n,)`` boolean: pixels to fit.
    coordinate : ColumnCoordinate
        Wavelength -> column mapping.
    pipeline_bar : numpy.ndarray or None
        ``(n,)`` pipeline throughput for the normalisation (all pixels, not only sky).
    mode : {'wave', 'slit'}
        Wavelength-dependent or independent shape.
    ystep : float
        Knot spacing in the shutter coordinate (shutter pitches).
    df_wave, df_sky : int
        Wavelength functions of ``T`` and of ``S``.
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
        Alternating iterations.
    min_pixels : int
        Minimum number of sky pixels.
    min_count : int
        Coverage threshold (sky pixels per ``2 * ystep`` bin).
    reference_bar : float
        Pipeline throughput above which a pixel defines the normalisation.

    Returns
    -------
    BarShadowModel
        The model; ``info`` holds pixel counts, reduced chi2, the numbers of functions
        and ``bar_error``: the median posterior 1-sigma relative error of the model at
        the lit sky pixels (data and priors).

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
    with np.errstate(invalid="ignore"):
        fit = (
            np.asarray(sky_pixels, bool)
            & np.isfinite(raw)
            & np.isfinite(ys)
            & np.isfinite(u_all)
            & (var > 0)
        )
    n_sky = int(fit.sum())
    if n_sky < min_pixels:
        raise FitError(f"only {n_sky} sky pixels for the bar-shadow fit (need {min_pixels})")
    finite = np.isfinite(ys) & np.isfinite(u_all)
    ylo, yhi = float(ys[finite].min()), float(ys[finite].max())
    urange = (float(u_all[finite].min()), float(u_all[finite].max()))
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
    df_s = int(min(df_sky, max(4, span // 6)))

    idx = np.flatnonzero(fit)
    y_f, u_f, r_f = ys[idx], u_all[idx], raw[idx]
    w_f = 1.0 / var[idx]
    by = bspline_basis(y_f, df_y, *yrange)
    bw = (
        sparse.csr_array(np.ones((idx.size, 1))) if df_w == 1 else bspline_basis(u_f, df_w, *urange)
    )
    kt = tensor_basis(by, bw, df_w) if df_w > 1 else by
    bs = bspline_basis(u_f, df_s, *urange)
    # Absolute P-spline penalties: a Gaussian prior of width ``smooth_y`` / ``smooth_w``
    # (throughput units) on the second differences of neighbouring coefficients, so the
    # data dominate at high S/N and the prior smooths the noise at low S/N.
    pen_y = difference_penalty(df_y) / smooth_y**2
    pen_t = np.kron(pen_y, np.eye(df_w))
    if df_w > 1:
        pen_t = pen_t + np.kron(np.eye(df_y), difference_penalty(df_w)) / smooth_w**2
    pen_s = 1e-4 * difference_penalty(df_s)

    # Initial sky: the pixels the pipeline calls unobstructed, or all sky pixels.
    if pipeline_bar is not None:
        pb = np.asarray(pipeline_bar, float)
        seed_sel = pb[idx] > reference_bar
        if seed_sel.sum() < min_pixels // 2:
            seed_sel = np.ones(idx.size, bool)
        seed_val = r_f / np.where(pb[idx] > 0, pb[idx], np.nan)
    else:
        seed_sel = np.ones(idx.size, bool)
        seed_val = r_f
    s_coef0 = _scaled_solve(
        bs, w_f * (seed_sel & np.isfinite(seed_val)), np.nan_to_num(seed_val), pen_s
    )

    # Poisson variance from the model, not from the measured counts (no bias): the
    # ratio var_poisson / raw is a smooth calibration factor of the wavelength.
    cpois = None
    if var_poisson is not None:
        vp = np.asarray(var_poisson, float)[idx]
        okp = (r_f > 0) & np.isfinite(vp) & (vp > 0)
        if okp.sum() > 50:
            edges = np.linspace(urange[0], urange[1] + 1e-9, 33)
            b = np.clip(np.searchsorted(edges, u_f[okp], side="right") - 1, 0, 31)
            ratio = vp[okp] / r_f[okp]
            med = np.array(
                [np.median(ratio[b == k]) if np.any(b == k) else np.nan for k in range(32)]
            )
            cen = 0.5 * (edges[1:] + edges[:-1])
            fin = np.isfinite(med)
            if fin.sum() >= 2:
                cpois = np.interp(u_f, cen[fin], med[fin])
    var_r = var[idx]

    def alternate(design, penalty, s_coef, iterations):
        good = np.ones(idx.size, bool)
        t_coef, chi2 = None, np.nan
        w_f = 1.0 / var_r
        for _ in range(int(iterations)):
            at = design.multiply((bs @ s_coef)[:, None]).tocsr()
            t_coef, _ = solve_penalized(at, w_f * good, r_f, penalty, covariance=False)
            t_val = design @ t_coef
            a_s = bs.multiply(t_val[:, None]).tocsr()
            s_coef = _scaled_solve(a_s, w_f * good, r_f, pen_s)
            model_f = (bs @ s_coef) * t_val
            z = (r_f - model_f) * np.sqrt(w_f)
            if cpois is not None:
                w_f = 1.0 / (var_r + cpois * np.maximum(model_f, 0.0))
            new_good = np.abs(z) < clip
            chi2 = float(np.sum(z[new_good] ** 2) / max(new_good.sum() - at.shape[1], 1))
            if np.array_equal(new_good, good):
                break
            good = new_good
        return t_coef, s_coef, good, chi2, w_f

    n_links = 0
    extent = None
    if m_per is not None:
        # The shutters of the MSA are alike: tie the profile of each shutter to the
        # next one, except near the two ends of the slitlet (no neighbour there).  The
        # open extent comes from a quick wavelength-independent first pass.
        t0 = alternate(by, pen_y, s_coef0, 2)[0]
        grid = np.linspace(float(y_f.min()), float(y_f.max()), 2000)  # where sky data are
        prof = bspline_basis(grid, df_y, *yrange) @ t0
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
    t_coef, s_coef, good, chi2, w_last = alternate(kt, pen_t, s_coef0, n_iter)
    # Posterior uncertainty of T (data + priors) on a sample of the sky pixels: the
    # caller decides whether the model is precise enough to replace the pipeline's.
    at = kt.multiply((bs @ s_coef)[:, None]).tocsr()
    _, t_cov = solve_penalized(at, w_last * good, r_f, pen_t, covariance=True)
    sample = np.flatnonzero(good)[:: max(1, int(good.sum()) // 2000)]
    ks = kt[sample]
    t_s = ks @ t_coef
    with np.errstate(invalid="ignore", divide="ignore"):
        t_err = np.sqrt(np.maximum(np.asarray((ks @ t_cov) * ks.toarray()).sum(axis=1), 0))
        lit_s = t_s > 0.45 * np.nanmax(t_s)
        rel_err = t_err[lit_s] / t_s[lit_s]
    bar_error = float(np.median(rel_err)) if rel_err.size else np.inf
    norm_df = df_w

    model = BarShadowModel(
        coeffs=np.asarray(t_coef).reshape(df_y, df_w),
        yrange=yrange,
        urange=urange,
        df_y=df_y,
        df_w=df_w,
        norm_coeffs=np.ones(1),
        norm_df=1,
        coordinate=coordinate,
        covered=_covered_intervals(y_f[good], 2 * ystep, min_count),
    )
    # Normalisation g(u).
    if pipeline_bar is not None and np.nanmin(pipeline_bar[finite]) < 0.99:
        ref = finite & (np.asarray(pipeline_bar) > reference_bar)
        ref &= model.is_covered(ys)
        ratio = model.raw(ys[ref], u_all[ref]) / np.asarray(pipeline_bar)[ref]
        convention = f"median(model / pipeline) = 1 where pipeline > {reference_bar}"
        # Median in wavelength bins: robust to a shutter the pipeline thinks open but
        # that passes no light (stuck closed), or a failed-open neighbour.
        nb = 4 * max(norm_df, 1)
        edges = np.linspace(urange[0], urange[1] + 1e-9, nb + 1)
        okr = np.isfinite(ratio)
        med = _binned_median_1d(u_all[ref][okr], ratio[okr], edges)
        ratio = med
        u_ref = 0.5 * (edges[1:] + edges[:-1])
    else:
        ugrid = np.linspace(*urange, 64)
        ygrid = np.linspace(*yrange, 400)
        yy, uu = np.meshgrid(ygrid, ugrid)
        tt = model.raw(yy.ravel(), uu.ravel()).reshape(yy.shape)
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
        bn = bspline_basis(u_ref[ok], norm_df, *urange)
        model.norm_coeffs = _scaled_solve(
            bn, np.ones(ok.sum()), ratio[ok], 1e-3 * difference_penalty(norm_df)
        )
    model.norm_df = norm_df
    model.info = {
        "n_sky_pixels": n_sky,
        "n_used": int(good.sum()),
        "n_clipped": int((~good).sum()),
        "reduced_chi2": round(chi2, 4),
        "bar_error": round(bar_error, 5),
        "df_y": df_y,
        "df_w": df_w,
        "df_sky": df_s,
        "ystep": round(ystep, 5),
        "period_links": n_links,
        "lit_extent": None if extent is None else (round(extent[0], 3), round(extent[1], 3)),
        "normalisation": convention,
        "covered": [(round(a, 3), round(b, 3)) for a, b in model.covered],
    }
    return model


def _binned_median_1d(x, values, edges):
    """Median of ``values`` in bins of ``x`` (NaN in empty bins)."""
    b = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, edges.size - 2)
    out = np.full(edges.size - 1, np.nan)
    for k in np.unique(b):
        out[k] = np.median(values[b == k])
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
