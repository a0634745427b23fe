"""Bar-shadow throughput models: msaexp's tables and the group's own model.

The MSA bars between shutters shadow part of each slitlet; the pipeline divides the
data by a model of that throughput, which ``undo_barshadow=2`` replaces by a better one
(:meth:`slitcombine.SlitGroup.apply_spline_bar_correction`).  This module holds the
models:

* :class:`BarCoefficients` and :func:`evaluate_bar_coeffs`: a table in msaexp's format
  (cubic B-spline in the shutter coordinate, linear in wavelength; read by
  :func:`slitcombine.io.tables.read_bar_coeffs`);
* :class:`BarShadowModel`: the group's own model, fitted to its sky pixels by
  :func:`slitcombine.core.barfit.fit_bar_shadow` (whether it replaces the pipeline's
  correction: :func:`slitcombine.core.barpolicy.own_bar_shadow`).

Units: shutter coordinate ``yshutter`` in shutter pitches (``fixed_yshutter``),
wavelengths in um, fluxes in uJy per pixel, ``yslit`` in pixels.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from slitcombine.core.splines import ColumnCoordinate, band_eval, bspline_basis, cubic_rows

__all__ = [
    "BarCoefficients",
    "evaluate_bar_coeffs",
    "BarShadowModel",
    "covered_intervals",
]


# ====================================================================== msaexp's tables
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


# ====================================================================== own model
@dataclass
class BarShadowModel:
    """A bar-shadow throughput model fitted to a group's own sky pixels.

    ``bar(y, lambda) = T(y, t(lambda)) / g(u(lambda))``: ``T`` a tensor cubic B-spline
    in the shutter coordinate ``y`` (shutter pitches) and ``t``, the wavelength (um,
    ``wave_axis='wavelength'``) or the detector-column coordinate ``u`` of the
    wavelength (pixels, :class:`ColumnCoordinate`, ``wave_axis='column'``); ``g`` the
    normalisation spline in ``u`` (see :func:`slitcombine.core.barfit.fit_bar_shadow`).

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
        vy, iy = cubic_rows(ys, self.df_y, *self.yrange, outside="nan")
        if self.df_w == 1:
            val = band_eval(vy, iy, self.coeffs[:, 0])
        else:
            trange = self.urange if self.trange is None else self.trange
            vw, iw = cubic_rows(t, self.df_w, *trange, outside="clip")
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
        vals, first = cubic_rows(u, self.norm_df, *self.urange, outside="clip")
        return band_eval(vals, first, np.asarray(self.norm_coeffs, float))

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


def covered_intervals(ys_sky, step, min_count):
    """Intervals of the shutter coordinate with at least ``min_count`` sky pixels per bin.

    Parameters
    ----------
    ys_sky : numpy.ndarray
        Shutter coordinate of the sky pixels used (shutter pitches).
    step : float
        Bin width (shutter pitches).
    min_count : int
        Fewest pixels of a covered bin.

    Returns
    -------
    list of (float, float)
        Runs of covered bins, from the lower edge of the first to the upper edge of the
        last.
    """
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
