"""Background spectra: per-exposure skies measured elsewhere, rescaled to the data.

msaexp's ``{file_root}_gbkg.fits`` spectra (read by
:func:`slitcombine.io.table_readers.read_background_spectrum`) give the sky of each
exposure directly (:func:`background_sky`); a smooth factor ``s(lambda)`` fitted to the
off-source pixels (:func:`fit_background_scaling`, :func:`rescale_background`) adjusts
its level and shape.  :meth:`slitcombine.SlitGroup.set_background_spectra` stores the
result.  Units: fluxes in uJy per pixel, variances in uJy^2, wavelengths in um,
``yslit`` in pixels.
"""

from __future__ import annotations

import numpy as np

from slitcombine.core.sky import outside_ranges
from slitcombine.core.splines import (
    bspline_basis,
    difference_penalty,
    mean_normal_diag,
    solve_penalized,
)
from slitcombine.errors import FitError

__all__ = [
    "BACKGROUND_SYSTEMATIC",
    "background_sky",
    "fit_background_scaling",
    "rescale_background",
]

#: Default fractional systematic error of a background spectrum.
BACKGROUND_SYSTEMATIC = 0.03


def background_sky(wave, spectra, pixel_areas, *, systematic=BACKGROUND_SYSTEMATIC):
    """The sky of every exposure, and its variance, from its background spectrum.

    ``sky2d_j = p50(lambda) * PIXAR_SR_j / REFPAREA`` and
    ``var_sky_j = (perr * PIXAR_SR_j / REFPAREA)^2 + (systematic * sky2d_j)^2``, the
    spectrum interpolated linearly at the pixels' wavelengths (NaN outside it).

    Parameters
    ----------
    wave : numpy.ndarray
        ``(N, npix)`` wavelength (um).
    spectra : sequence of dict
        Per exposure, ``wave`` (um), ``p50`` and ``perr`` (uJy per pixel of solid angle
        ``refparea``) and ``refparea`` (sr):
        :func:`slitcombine.io.table_readers.read_background_spectrum`.
    pixel_areas : sequence of float
        Per exposure, the solid angle of its pixels (sr, ``PIXAR_SR``).
    systematic : float
        Fractional systematic error of the spectra.

    Returns
    -------
    sky2d : numpy.ndarray
        ``(N, npix)`` uJy per pixel (NaN outside the spectra).
    var_sky : numpy.ndarray
        ``(N, npix)`` uJy^2 (NaN where ``sky2d`` is).
    """
    sky2d = np.full(wave.shape, np.nan)
    var_sky = np.zeros(wave.shape)
    for j, (spec, pixar) in enumerate(zip(spectra, pixel_areas, strict=True)):
        area = float(pixar) / spec["refparea"]
        w = wave[j]
        sky2d[j] = np.interp(w, spec["wave"], spec["p50"], left=np.nan, right=np.nan) * area
        err = np.interp(w, spec["wave"], spec["perr"], left=np.nan, right=np.nan) * area
        var_sky[j] = err**2 + (systematic * sky2d[j]) ** 2
    return sky2d, var_sky


def fit_background_scaling(
    sci,
    var,
    sky2d,
    wave,
    select,
    *,
    df=-1,
    coordinate=None,
    by_wavelength=False,
    wsteps=None,
    poly=False,
    resid_limits=(-3, 5),
    max_iter=3,
):
    """Smooth multiplicative rescaling ``s(lambda)`` of a background model to the data.

    Minimises ``sum (sci - s(lambda) sky2d)^2 / var`` over the pixels ``select`` whose
    residual ``(sci - s sky2d) / sqrt(var)`` lies within ``resid_limits`` (iterated).

    Parameters
    ----------
    sci, var, sky2d, wave : numpy.ndarray
        ``(N, npix)`` data, variance, background model and wavelength.
    select : numpy.ndarray
        ``(N, npix)`` off-source pixels to use.
    df : int
        < 0: no rescaling (returns ones); 0: one scale factor; > 0: number of functions.
    coordinate : ColumnCoordinate or None
        Column coordinate for the B-spline (knots uniform in pixels); required unless
        ``by_wavelength`` or ``wsteps`` or ``poly``.
    by_wavelength : bool
        Knots uniform in wavelength instead of in detector columns.
    wsteps : array_like or None
        Wavelength grid (um) whose range and point density set the knots: the
        coordinate is the fractional index in ``wsteps``.
    poly : bool
        Chebyshev polynomial of degree ``df - 1`` in wavelength instead of a B-spline.
    resid_limits : (float, float)
        Residual limits (sigma) of the pixels used.
    max_iter : int
        Iterations of the residual selection.

    Returns
    -------
    scale : numpy.ndarray
        ``(N, npix)`` factor (NaN where the wavelength is not finite).
    info : dict
        ``df``, ``npix``, ``coeffs``.

    Raises
    ------
    FitError
        Too few pixels.
    """
    finite = np.isfinite(wave)
    if df < 0:
        return np.where(finite, 1.0, np.nan), {"df": df, "npix": 0, "coeffs": []}
    wf = wave[finite]
    if wsteps is not None:
        grid = np.sort(np.asarray(wsteps, float))

        def coord(w):
            return np.interp(w, grid, np.arange(grid.size, dtype=float))
    elif by_wavelength or poly or coordinate is None:

        def coord(w):
            return np.asarray(w, float)
    else:
        coord = coordinate
    x_all = np.full(wave.shape, np.nan)
    x_all[finite] = coord(wf)
    xr = (float(np.nanmin(x_all)), float(np.nanmax(x_all)))

    def design(x, s):
        if df == 0:
            return s[:, None]
        if poly:
            xn = 2 * (x - xr[0]) / max(xr[1] - xr[0], 1e-12) - 1
            return np.polynomial.chebyshev.chebvander(xn, max(df - 1, 0)) * s[:, None]
        return bspline_basis(x, max(df, 4), *xr, outside="clip").multiply(s[:, None]).tocsr()

    sel = select & finite & np.isfinite(sci) & np.isfinite(sky2d) & (var > 0)
    idx = np.flatnonzero(sel.ravel())
    if idx.size < 20:
        raise FitError(f"only {idx.size} pixels to rescale the background spectrum")
    x = x_all.ravel()[idx]
    s = sky2d.ravel()[idx]
    y = sci.ravel()[idx]
    w = 1.0 / var.ravel()[idx]
    a = design(x, s)
    m = a.shape[1]
    good = np.ones(idx.size, bool)
    coeffs = np.ones(m)
    for _ in range(max_iter):
        pen = 1e-4 * difference_penalty(m) * mean_normal_diag(a, w * good) if m > 2 else 0.0
        coeffs, _ = solve_penalized(
            a, w * good, y, pen * np.eye(m) if np.isscalar(pen) else pen, covariance=False
        )
        z = (y - np.asarray(a @ coeffs).ravel()) * np.sqrt(w)
        new = (z > resid_limits[0]) & (z < resid_limits[1])
        if new.sum() < 20 or np.array_equal(new, good):
            break
        good = new
    ones = np.ones(int(finite.sum()))
    scale = np.full(wave.shape, np.nan)
    scale[finite] = np.asarray(design(x_all[finite], ones) @ coeffs).ravel()
    return scale, {"df": df, "npix": int(good.sum()), "coeffs": np.asarray(coeffs).tolist()}


def rescale_background(
    sci,
    var,
    mask,
    yslit,
    wave,
    sky2d,
    var_sky,
    *,
    coordinate=None,
    df=-1,
    by_wavelength=False,
    wsteps=None,
    poly=False,
    mask_yslit=((-4, 4),),
    resid_limits=(-3, 5),
    apply_to_background=True,
):
    """Rescale a background model to the data's off-source pixels (or say how to scale the data).

    The factor ``s(lambda)`` of :func:`fit_background_scaling` is fitted to the valid
    pixels outside ``mask_yslit`` where the model is defined, with the variance of the
    data and of the model; when that fit fails the background is used unscaled
    (``info['failed']`` says why).

    Parameters
    ----------
    sci, var : numpy.ndarray
        ``(N, npix)`` data (uJy per pixel) and variance (uJy^2).
    mask : numpy.ndarray
        ``(N, npix)`` valid pixels.
    yslit, wave : numpy.ndarray
        ``(N, npix)`` distance to the trace (pixels) and wavelength (um).
    sky2d, var_sky : numpy.ndarray
        ``(N, npix)`` background model and its variance (:func:`background_sky`).
    coordinate, df, by_wavelength, wsteps, poly, resid_limits
        See :func:`fit_background_scaling`.
    mask_yslit : sequence of (float, float)
        Source region excluded from the fit (``yslit`` ranges, pixels).
    apply_to_background : bool
        Rescale the background (True); otherwise the background is returned as it is
        and the caller divides the data and their variances by ``scale``.

    Returns
    -------
    sky2d : numpy.ndarray
        ``(N, npix)`` the background (rescaled with ``apply_to_background``).
    var_sky : numpy.ndarray
        ``(N, npix)`` its variance, 0 where not finite.
    scale : numpy.ndarray
        ``(N, npix)`` the factor (NaN where the wavelength is not finite).
    info : dict
        ``df``, ``npix``, ``coeffs`` of the fit, or ``df``, ``npix`` (0) and ``failed``
        (the error) when it failed.
    """
    select = mask & outside_ranges(yslit, [tuple(r) for r in mask_yslit]) & np.isfinite(sky2d)
    try:
        scale, info = fit_background_scaling(
            sci,
            var + var_sky,
            sky2d,
            wave,
            select,
            df=int(df),
            coordinate=coordinate,
            by_wavelength=by_wavelength,
            wsteps=wsteps,
            poly=poly,
            resid_limits=tuple(resid_limits),
        )
    except FitError as exc:
        scale = np.where(np.isfinite(wave), 1.0, np.nan)
        info = {"df": int(df), "npix": 0, "failed": str(exc)}
    if apply_to_background:
        sky2d = sky2d * scale
        var_sky = var_sky * scale**2
    return sky2d, np.where(np.isfinite(var_sky), var_sky, 0.0), scale, info
