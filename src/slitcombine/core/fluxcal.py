"""Flux-calibration corrections of msaexp's tables: slit renormalisation, s-flat, sensitivity.

Pure functions of a table (read by :mod:`slitcombine.io.tables`, formats documented
there) and of the slitlet's MSA position; the
:class:`~slitcombine.SlitGroup` methods ``apply_normalization_correction``,
``apply_sflat_correction`` and ``apply_extended_calibration`` apply them to the data.
Wavelengths in um; the MSA position ``(quadrant, xcen, ycen)`` is the shutter column
and row of the slitlet in its quadrant.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from slitcombine.core.splines import bspline_basis
from slitcombine.errors import CalibrationFileError

__all__ = [
    "RenormalizationTable",
    "normalization_correction",
    "SflatTable",
    "sflat_correction",
    "sensitivity_correction",
]


# ====================================================================== renormalisation
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
    """Field-dependent spectroscopic flat of one MSA quadrant (format: io.tables).

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


# ====================================================================== sensitivity
def sensitivity_correction(wave, table_wave, sensitivity, threshold):
    """Extended-range sensitivity at the data's wavelengths, NaN where too low.

    Parameters
    ----------
    wave : array_like
        Wavelengths of the data (um).
    table_wave, sensitivity : numpy.ndarray
        The table (:func:`slitcombine.io.tables.read_sensitivity`): increasing
        wavelengths (um) and the relative sensitivity.
    threshold : float
        Smallest sensitivity kept, relative to the table's maximum.

    Returns
    -------
    numpy.ndarray
        The sensitivity (the data are divided by it), same shape as ``wave``; NaN
        outside the table and where it is below ``threshold`` times its maximum.
    """
    s2d = np.interp(wave, table_wave, sensitivity, left=np.nan, right=np.nan)
    with np.errstate(invalid="ignore"):
        s2d[~(s2d >= threshold * np.max(sensitivity))] = np.nan
    return s2d
