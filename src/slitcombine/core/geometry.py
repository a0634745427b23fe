"""Slit geometry: slit-frame coordinates, trace centres, pixel and shutter scales.

Conventions
-----------
* Pixel coordinates are 0-based ``(x, y)`` = (column, row) of the cutout, or of the
  common slice of a group.
* ``slit_frame`` is the jwst slit frame: ``y`` in units of the open shutter height
  (centred on the shutter that holds the source in that exposure), wavelength in m.
* The *trace* of an exposure is the row, per column, where ``slit_frame_y`` equals the
  expected source position (0, or ``source_ypos`` when requested).
* One definition each of the two scales (see :func:`slit_scales`):

  - ``slit_pixel_scale`` (arcsec/pixel): median over the columns with a finite trace
    of the angular distance on the sky between the world positions of the points half
    a pixel above and half a pixel below the trace;
  - ``slit_shutter_scale`` (slit-frame units/pixel): median over the same columns of
    the difference in ``slit_frame_y`` between those two points.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np

from slitcombine.errors import ConfigurationError

__all__ = [
    "slit_frame_grid",
    "evaluate_steps",
    "rows_where",
    "sample_rows",
    "slit_scales",
    "trace_polynomial",
    "normalized_x",
]

log = logging.getLogger(__name__)


def slit_frame_grid(wcs, shape):
    """Evaluate ``detector -> slit_frame`` on every pixel of a cutout.

    Parameters
    ----------
    wcs : gwcs.WCS
        The slit WCS.
    shape : (int, int)
        ``(ny, nx)`` of the cutout.

    Returns
    -------
    slit_x, slit_y : numpy.ndarray
        Slit-frame coordinates (open-shutter units), NaN outside the slit.
    wavelength : numpy.ndarray
        Wavelength in um, NaN outside the slit.
    """
    ny, nx = shape
    y, x = np.mgrid[:ny, :nx].astype(float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sx, sy, lam = evaluate_steps(wcs, "detector", "slit_frame", x, y)
    return np.asarray(sx), np.asarray(sy), np.asarray(lam) * 1.0e6


def evaluate_steps(wcs, from_frame, to_frame, *inputs):
    """Apply the transforms of a gwcs pipeline from one frame to another, step by step.

    The same numbers as ``wcs.get_transform(from_frame, to_frame)(*inputs)``, without
    composing the steps into a new astropy ``CompoundModel`` first: that composition
    maps the parameters of every model in the chain (~7 ms for the NIRSpec
    ``detector -> world`` chain, more than evaluating it).

    Parameters
    ----------
    wcs : gwcs.WCS
        The WCS.
    from_frame, to_frame : str
        Frame names, ``from_frame`` before ``to_frame`` in the pipeline.
    *inputs : numpy.ndarray
        Coordinates in ``from_frame``.

    Returns
    -------
    tuple of numpy.ndarray
        Coordinates in ``to_frame``.

    Raises
    ------
    slitcombine.errors.ConfigurationError
        If a frame is not in the pipeline or ``to_frame`` does not come after
        ``from_frame``.
    """
    names = [getattr(step.frame, "name", step.frame) for step in wcs.pipeline]
    try:
        start, stop = names.index(from_frame), names.index(to_frame)
    except ValueError as exc:
        raise ConfigurationError(f"frame not in the WCS pipeline {names}: {exc}") from exc
    if stop <= start:
        raise ConfigurationError(f"{to_frame!r} does not come after {from_frame!r} in {names}")
    values = tuple(inputs)
    for step in wcs.pipeline[start:stop]:
        values = step.transform(*values)
        if not isinstance(values, tuple):  # a transform with one output
            values = (values,)
    return values


def rows_where(values, target=0.0):
    """Fractional row, per column, where a column-monotonic image equals ``target``.

    Parameters
    ----------
    values : numpy.ndarray
        ``(ny, nx)`` image monotonic along each column where finite (e.g. slit_frame_y).
    target : float or numpy.ndarray
        Value to locate (scalar or per column).

    Returns
    -------
    numpy.ndarray
        ``(nx,)`` fractional row (pixels), NaN in columns without a crossing.
    """
    d = values - target
    d0, d1 = d[:-1], d[1:]
    with np.errstate(invalid="ignore"):
        cross = np.isfinite(d0) & np.isfinite(d1) & (d0 * d1 <= 0) & (d0 != d1)
    has = cross.any(axis=0)
    idx = np.argmax(cross, axis=0)
    cols = np.arange(values.shape[1])
    a, b = d0[idx, cols], d1[idx, cols]
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = a / (a - b)
    rows = idx + frac
    rows[~has] = np.nan
    return rows


def sample_rows(image, rows):
    """Linearly interpolate each column of ``image`` at a fractional row.

    Parameters
    ----------
    image : numpy.ndarray
        ``(ny, nx)`` image.
    rows : numpy.ndarray
        ``(nx,)`` fractional rows (NaN allowed).

    Returns
    -------
    numpy.ndarray
        ``(nx,)`` interpolated values, NaN where ``rows`` is NaN or outside the image.
    """
    ny, nx = image.shape
    ok = np.isfinite(rows) & (rows >= 0) & (rows <= ny - 1)
    r = np.where(ok, rows, 0.0)
    i0 = np.clip(np.floor(r).astype(int), 0, ny - 2 if ny > 1 else 0)
    i1 = np.minimum(i0 + 1, ny - 1)
    f = r - i0
    cols = np.arange(nx)
    out = image[i0, cols] * (1 - f) + image[i1, cols] * f
    out[~ok] = np.nan
    return out


def slit_scales(wcs, trace_rows):
    """Cross-dispersion pixel scale on the sky and in slit-frame units.

    Parameters
    ----------
    wcs : gwcs.WCS
        The slit WCS (needs ``detector -> world`` and ``detector -> slit_frame``).
    trace_rows : numpy.ndarray
        ``(nx,)`` trace row per column (NaN where undefined).

    Returns
    -------
    pixel_scale : float
        arcsec per pixel (see the module docstring for the definition).
    shutter_scale : float
        slit-frame units (open-shutter heights) per pixel.
    """
    cols = np.flatnonzero(np.isfinite(trace_rows))
    if cols.size == 0:
        return np.nan, np.nan
    # Both ends of every pixel in one evaluation per transform (a gwcs call costs
    # ~3-6 ms of overhead whatever the number of points).
    x = np.tile(cols.astype(float), 2)
    y = np.concatenate([trace_rows[cols] - 0.5, trace_rows[cols] + 0.5])
    n = cols.size
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        slit = evaluate_steps(wcs, "detector", "slit_frame", x, y)
        world = evaluate_steps(wcs, "slit_frame", "world", *slit)
    ra, dec = (np.asarray(v, float) for v in world[:2])
    sy = np.asarray(slit[1], float)
    cosd = np.cos(np.deg2rad(0.5 * (dec[:n] + dec[n:])))
    dra = (ra[n:] - ra[:n]) * cosd
    ddec = dec[n:] - dec[:n]
    sep = np.hypot(dra, ddec) * 3600.0
    return float(np.nanmedian(sep)), float(np.nanmedian(np.abs(sy[n:] - sy[:n])))


def normalized_x(x, nx):
    """Normalised column coordinate used by the trace polynomials, ``(x - nx/2)/nx``.

    Parameters
    ----------
    x : array-like
        Column, pixels.
    nx : int
        Number of columns of the common slice.

    Returns
    -------
    numpy.ndarray
        Dimensionless coordinate, 0 at the centre column, +-0.5 at the ends.
    """
    return (np.asarray(x, dtype=float) - nx / 2.0) / nx


def trace_polynomial(xtr, ytr, nx, degree=2):
    """Fit the trace row as a polynomial of the normalised column.

    Parameters
    ----------
    xtr, ytr : numpy.ndarray
        Column (pixels) and trace row (pixels); NaN rows are ignored.
    nx : int
        Number of columns (for the normalisation).
    degree : int
        Polynomial degree.

    Returns
    -------
    numpy.ndarray
        Coefficients, highest power first (``numpy.polyval`` order).
    """
    ok = np.isfinite(ytr) & np.isfinite(xtr)
    if ok.sum() <= degree:
        return np.zeros(degree + 1)
    deg = min(degree, int(ok.sum()) - 1)
    coeffs = np.polyfit(normalized_x(xtr[ok], nx), ytr[ok], deg)
    if deg < degree:
        coeffs = np.concatenate([np.zeros(degree - deg), coeffs])
    return coeffs
