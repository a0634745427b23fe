"""Penalised B-spline numerics: bases, difference penalties, (banded) least squares.

Pure numpy/scipy, shared by the sky fit (:mod:`slitcombine.core.sky`), the bar-shadow
fit (:mod:`slitcombine.core.barfit`) and the calibration tables
(:mod:`slitcombine.core.barshadow`, :mod:`slitcombine.core.fluxcal`).  The bases are
clamped B-splines with uniform knots, msaexp's convention (grizli
``bspline_templates`` with ``minmax``); the fits minimise a weighted sum of squares
plus a P-spline penalty ``c^T P c`` on the differences of neighbouring coefficients.

:class:`ColumnCoordinate` maps wavelengths to the detector column of a reference trace,
so that a spline in that coordinate has knots uniform in resolution elements whatever
the dispersion.
"""

from __future__ import annotations

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

from slitcombine.errors import FitError

__all__ = [
    "bspline_basis",
    "dense_rows",
    "cubic_rows",
    "band_eval",
    "band_solve",
    "difference_penalty",
    "difference_band",
    "solve_penalized",
    "scaled_solve",
    "mean_normal_diag",
    "ColumnCoordinate",
    "TensorSolver",
    "BandSolver",
]


# ====================================================================== bases
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


def dense_rows(mat, degree=3):
    """Values and column indices of a B-spline design matrix, ``k + 1`` per row.

    Parameters
    ----------
    mat : scipy.sparse.csr_array
        ``(n, df)`` design matrix of :func:`bspline_basis` (``degree + 1`` stored
        entries per row).
    degree : int
        Spline degree.

    Returns
    -------
    values, columns : numpy.ndarray
        ``(n, degree + 1)`` each.

    Raises
    ------
    ValueError
        If a row does not hold ``degree + 1`` entries.
    """
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


def cubic_rows(x, df, xmin, xmax, outside="zero"):
    """Rows of a clamped cubic B-spline basis: 4 values and the first column.

    Parameters
    ----------
    x : array_like
        ``(n,)`` coordinates.
    df : int
        Number of basis functions.
    xmin, xmax : float
        Range spanned by the basis.
    outside : {'zero', 'clip', 'nan'}
        See :func:`bspline_basis`.

    Returns
    -------
    values : numpy.ndarray
        ``(n, 4)``.
    first : numpy.ndarray
        ``(n,)`` column of the first value (the others follow it).
    """
    vals, cols = dense_rows(bspline_basis(x, df, xmin, xmax, outside=outside))
    return vals, cols[:, 0]


def band_eval(vals, first, coeffs):
    """``B @ coeffs`` for a basis given by :func:`cubic_rows`.

    Parameters
    ----------
    vals : numpy.ndarray
        ``(n, k + 1)`` non-zero values of each row.
    first : numpy.ndarray
        ``(n,)`` column of the first value (the others are consecutive).
    coeffs : numpy.ndarray
        ``(df,)`` coefficients.

    Returns
    -------
    numpy.ndarray
        ``(n,)`` spline values.
    """
    cols = first[:, None] + np.arange(vals.shape[1])[None, :]
    return np.einsum("ij,ij->i", vals, coeffs[cols])


def band_solve(ab, rhs, ridge=1e-9):
    """Solve a positive-definite banded system given in upper band storage.

    Parameters
    ----------
    ab : numpy.ndarray
        ``(bands, m)`` upper band storage (:func:`scipy.linalg.cholesky_banded`), the
        diagonal last; not modified.
    rhs : numpy.ndarray
        ``(m,)`` right-hand side.
    ridge : float
        Relative ridge (times the mean diagonal) added for numerical stability.

    Returns
    -------
    numpy.ndarray
        ``(m,)`` solution.

    Raises
    ------
    FitError
        No weight on the diagonal, or a singular matrix.
    """
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


def difference_band(m, order=2):
    """:func:`difference_penalty` in the ``(4, m)`` upper band storage of cubic splines.

    Parameters
    ----------
    m : int
        Number of coefficients.
    order : int
        Order of the differences (at most 3, the band of a cubic basis).

    Returns
    -------
    numpy.ndarray
        ``(4, m)`` band storage, the diagonal last.
    """
    p = difference_penalty(m, order)
    ab = np.zeros((4, m))
    for d in range(min(3, m - 1) + 1):
        ab[3 - d, d:] = np.diagonal(p, d)
    return ab


class TensorSolver:
    """Penalised weighted least squares of a spline given by its non-zero rows.

    Used for the tensor spline ``T(y, lambda)`` of the bar-shadow fit (sky given).  The
    design matrix ``K`` (``(n, m)``) is given by its rows: ``vals`` and ``cols``
    ``(n, p)``, the ``p`` non-zero values and their columns, which depend only on the
    knot cell of the row (``cols[:, 0]``).  The normal matrix ``K^T diag(d) K`` is
    accumulated cell by cell (one batched ``p x p`` product per cell, rows padded with
    zeros to the largest cell), then factorised by a dense Cholesky (``m`` is a few
    hundred).

    Parameters
    ----------
    vals, cols : numpy.ndarray
        ``(n, p)`` non-zero values of each row of ``K`` and their columns.
    m : int
        Number of coefficients (columns of ``K``).
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


class BandSolver:
    """Penalised weighted least squares of a cubic B-spline (banded normal matrix).

    Used for the sky spectrum ``S(u)`` of the bar-shadow fit (throughput given).

    Parameters
    ----------
    vals, first : numpy.ndarray
        Rows of the basis (:func:`cubic_rows`).
    m : int
        Number of coefficients.
    penalty : numpy.ndarray
        ``(4, m)`` penalty in band storage (:func:`difference_band`), relative to the
        mean diagonal of the normal matrix.
    """

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
        return band_solve(ab, rhs)


def scaled_solve(a, w, y, penalty_rel):
    """:func:`solve_penalized` with the penalty relative to the mean normal diagonal.

    Parameters
    ----------
    a : scipy sparse array or numpy.ndarray
        ``(n, m)`` design matrix.
    w, y : numpy.ndarray
        ``(n,)`` weights and data.
    penalty_rel : numpy.ndarray
        ``(m, m)`` penalty in units of the mean diagonal of ``A^T W A``.

    Returns
    -------
    numpy.ndarray
        ``(m,)`` coefficients.

    Raises
    ------
    FitError
        No weight in the data, or a singular fit.
    """
    wa = a.multiply(w[:, None]) if sparse.issparse(a) else a * w[:, None]
    diag = np.asarray((wa.multiply(a) if sparse.issparse(a) else wa * a).sum(axis=0)).ravel()
    scale = float(np.mean(diag)) if diag.size else 1.0
    if not np.isfinite(scale) or scale <= 0:
        raise FitError("no weight in the data of the fit")
    coeffs, _ = solve_penalized(a, w, y, penalty_rel * scale, covariance=False)
    return coeffs


def mean_normal_diag(a, w):
    """Mean diagonal of ``A^T W A`` (the scale of a relative penalty in the sky fits).

    Parameters
    ----------
    a : scipy sparse array or numpy.ndarray
        ``(n, m)`` design matrix.
    w : numpy.ndarray
        ``(n,)`` weights.

    Returns
    -------
    float

    Raises
    ------
    FitError
        If it is not positive ("the sky pixels carry no weight").
    """
    if sparse.issparse(a):
        d = np.asarray(a.multiply(a).multiply(w[:, None]).sum(axis=0)).ravel()
    else:
        d = np.sum(a * a * w[:, None], axis=0)
    s = float(np.mean(d)) if d.size else 0.0
    if not np.isfinite(s) or s <= 0:
        raise FitError("the sky pixels carry no weight")
    return s
