"""One trace and profile fit of a nod-difference image, as pure functions.

The numerical side of ``SlitGroup.fit_single_trace``
(:mod:`slitcombine.group._trace_methods`): :func:`trace_start` reads msaexp's start
values, :func:`trace_inputs` assembles the difference image and its coordinates,
:func:`difference_model` builds the profile (or optics) model and :func:`fit_trace`
fits it with :func:`slitcombine.core.profilefit.fit_difference_profile` and returns the
``fit_single_trace`` record.  The passes over the nod positions, the acceptance test and
the bound widening are in :mod:`slitcombine.core.tracepasses`.

Units of the profile width
--------------------------
msaexp gives the profile width in **pixels x 10** (``initial_sigma=3.0`` is 0.3 px,
``sigma_bounds=(1, 20)`` is 0.1-2 px, the first element of ``theta`` is 10 sigma).  The
functions here take those values where msaexp's keywords are passed through
(``initial_sigma``, ``fix_sigma``, ``sigma_bounds``, ``x0``) and convert them once with
:data:`SIGMA_UNIT`; every other width, and every result key named ``sigma*`` without
``_x10``, is in pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from slitcombine.core import geometry, profile
from slitcombine.errors import FitError

__all__ = [
    "SIGMA_UNIT",
    "polyval",
    "TraceStart",
    "trace_start",
    "TraceInputs",
    "trace_inputs",
    "use_background",
    "difference_model",
    "fit_trace",
    "at_bound_names",
]

#: msaexp's profile-width parameters are in pixels times this factor.
SIGMA_UNIT = 10.0


def polyval(coeffs, x):
    """``numpy.polyval`` of ``coeffs`` (highest power first) at ``x``, as floats.

    Parameters
    ----------
    coeffs : array-like
        Polynomial coefficients, highest power first.
    x : numpy.ndarray
        Where to evaluate it.

    Returns
    -------
    numpy.ndarray
        The polynomial at ``x`` (zeros for no coefficient).
    """
    out = np.zeros_like(x, dtype=float)
    for c in coeffs:
        out = out * x + c
    return out


# ============================================================================ one fit
@dataclass(frozen=True, eq=False)
class TraceStart:
    """Start (or fixed) parameters of one trace fit, in pixels.

    Attributes
    ----------
    sigma : float
        Start intrinsic width, pixels (the fixed width when ``fixed``).
    coeffs : numpy.ndarray
        Start offset polynomial, pixels, ``numpy.polyval`` order.
    fixed : bool
        The width is held at ``sigma``.
    """

    sigma: float
    coeffs: np.ndarray
    fixed: bool

    @property
    def degree(self):
        """Degree of the offset polynomial."""
        return self.coeffs.size - 1


def trace_start(x0=None, *, initial_sigma=3.0, degree=2, fix_sigma=-1):
    """The start parameters of a trace fit from msaexp's keywords.

    Parameters
    ----------
    x0 : array-like or None
        ``[10 sigma, c_deg, ..., c_0]`` (sigma in pixels x 10, the offset coefficients
        in pixels), or only the coefficients when ``fix_sigma > 0``; its length sets the
        degree.  None: ``initial_sigma`` and a zero offset polynomial of ``degree``.
    initial_sigma : float
        Start width, pixels x 10 (with ``x0=None``).
    degree : int
        Degree of the offset polynomial (with ``x0=None``).
    fix_sigma : float or None
        If > 0, the width is fixed to this value, pixels x 10.

    Returns
    -------
    TraceStart

    Raises
    ------
    FitError
        ``x0`` with fewer than 2 values while sigma is free.
    """
    fixed = fix_sigma is not None and fix_sigma > 0
    if x0 is None:
        sigma0 = float(initial_sigma) / SIGMA_UNIT
        coeffs0 = np.zeros(int(degree) + 1)
    else:
        x0 = np.atleast_1d(np.asarray(x0, float))
        if fixed:
            sigma0, coeffs0 = float(fix_sigma) / SIGMA_UNIT, x0
        else:
            if x0.size < 2:
                raise FitError(
                    f"x0={x0.tolist()} needs [10 sigma, offset coefficients...] "
                    "(at least 2 values) when sigma is free"
                )
            sigma0, coeffs0 = float(x0[0]) / SIGMA_UNIT, x0[1:]
    if fixed:
        sigma0 = float(fix_sigma) / SIGMA_UNIT
    return TraceStart(sigma=sigma0, coeffs=coeffs0, fixed=fixed)


@dataclass(frozen=True, eq=False)
class TraceInputs:
    """The nod-difference image of one position and the fixed inputs of its model.

    Attributes
    ----------
    ipos, ineg : numpy.ndarray
        Boolean ``(N,)``: the positive exposures (at the position) and the negative ones.
    diff, bdiff, vdiff, wdiff : numpy.ndarray
        ``(npix,)`` difference image (uJy), its sky difference, variance (uJy^2) and
        weight (:func:`slitcombine.core.nods.difference_image`).
    mask : numpy.ndarray
        ``(N, npix)`` valid pixels.
    wave : numpy.ndarray
        ``(N, npix)`` wavelengths, um.
    ybase : numpy.ndarray
        ``(N, npix)`` cross-dispersion coordinate of the model, pixels
        (:class:`slitcombine.core.profilemodel.DifferenceProfileModel`).
    xn : numpy.ndarray
        ``(npix,)`` normalised column of the trace polynomials.
    column : numpy.ndarray
        ``(npix,)`` integer column of each pixel.
    shape : (int, int)
        ``(ny, nx)`` of one exposure.
    """

    ipos: np.ndarray
    ineg: np.ndarray
    diff: np.ndarray
    bdiff: np.ndarray
    vdiff: np.ndarray
    wdiff: np.ndarray
    mask: np.ndarray
    wave: np.ndarray
    ybase: np.ndarray
    xn: np.ndarray
    column: np.ndarray
    shape: tuple

    @property
    def differenced(self):
        """Whether the image is a difference (there are negative exposures)."""
        return bool(np.any(self.ineg))


def trace_inputs(
    difference,
    *,
    data,
    mask,
    wave,
    xslit,
    ypix,
    yslit,
    base_coeffs,
    shape,
    shift_negatives=True,
):
    """Assemble the inputs of a trace fit of one nod position.

    Parameters
    ----------
    difference : tuple
        ``(ipos, ineg, diff, bdiff, vdiff, wdiff)`` of the position
        (:func:`slitcombine.core.nods.difference_image` with its selections).
    data : numpy.ndarray
        ``(N, npix)`` data the difference was made of, uJy (NaN where invalid).
    mask : numpy.ndarray
        ``(N, npix)`` valid pixels.
    wave : numpy.ndarray
        ``(N, npix)`` wavelengths, um.
    xslit, ypix, yslit : numpy.ndarray
        ``(N, npix)`` column, row and current trace-centred row, pixels.
    base_coeffs : numpy.ndarray
        ``(N, ncoeff)`` base trace polynomial of each exposure (in ``xn``), pixels.
    shape : (int, int)
        ``(ny, nx)`` of one exposure.
    shift_negatives : bool
        The negative exposures are measured from their base trace too (the fitted
        offset moves them); otherwise they keep their current ``yslit``.

    Returns
    -------
    TraceInputs
    """
    ipos, ineg, diff, bdiff, vdiff, wdiff = difference
    nx = shape[1]
    xn = geometry.normalized_x(xslit, nx)
    base = np.array([polyval(base_coeffs[i], xn[i]) for i in range(len(base_coeffs))])
    # positive exposures (and negative ones with shift_negatives): row minus the base
    # trace (the fitted offset is subtracted in the model); otherwise the negative
    # exposures keep their current trace-centred coordinate.
    moved = ipos | (ineg & bool(shift_negatives))
    ybase = np.where(moved[:, None], ypix - base, yslit)
    return TraceInputs(
        ipos=ipos,
        ineg=ineg,
        diff=diff,
        bdiff=bdiff,
        vdiff=vdiff,
        wdiff=wdiff,
        mask=mask & np.isfinite(data),
        wave=wave,
        ybase=ybase,
        xn=xn[0],
        column=np.rint(xslit[0]).astype(np.intp),
        shape=tuple(shape),
    )


def use_background(background, differenced):
    """Whether a constant per column is fitted with the profile.

    Parameters
    ----------
    background : bool or 'auto'
        The option; 'auto': only for an image that is not a difference.
    differenced : bool
        Whether the image is a nod difference.

    Returns
    -------
    bool
    """
    return (not differenced) if background == "auto" else bool(background)


def difference_model(
    inputs,
    degree,
    *,
    force_positive=True,
    background="auto",
    shift_negatives=True,
    lookup_prf=None,
    image_model=None,
    base_rows=None,
    current_rows=None,
):
    """The model of a difference image: the profile model or the optics model.

    Parameters
    ----------
    inputs : TraceInputs
        The difference image and its coordinates.
    degree : int
        Degree of the offset polynomial.
    force_positive, background, shift_negatives : bool, bool or 'auto', bool
        As :class:`slitcombine.core.profilemodel.DifferenceProfileModel` (``background``
        through :func:`use_background`).
    lookup_prf : LookupPRF or None
        Point-response model of the profile model.
    image_model : slitcombine.core.apertures.SourceImageModel or None
        With it, the optics model of the source through the apertures
        (:class:`slitcombine.core.apertures.ApertureDifferenceModel`), which also needs
        ``base_rows`` and ``current_rows`` (``(N, nx)`` rows of the base and current
        traces).

    Returns
    -------
    slitcombine.core.profilemodel.DifferenceProfileModel
        The model (an ``ApertureDifferenceModel`` with ``image_model``).
    """
    common = dict(
        force_positive=force_positive,
        background=use_background(background, inputs.differenced),
        shift_negatives=shift_negatives,
    )
    data = dict(
        ybase=inputs.ybase,
        wave=inputs.wave,
        mask=inputs.mask,
        ipos=inputs.ipos,
        ineg=inputs.ineg,
        xn=inputs.xn,
        column=inputs.column,
        diff=inputs.diff,
        var=inputs.vdiff,
        degree=degree,
    )
    if image_model is not None:
        from slitcombine.core.apertures import ApertureDifferenceModel

        return ApertureDifferenceModel(
            image_model=image_model,
            base_rows=base_rows,
            current_rows=current_rows,
            **data,
            **common,
        )
    return profile.DifferenceProfileModel(**data, lookup_prf=lookup_prf, **common)


def fit_trace(
    model,
    start,
    inputs,
    *,
    position=None,
    sigma_bounds=(1, 20),
    trace_bounds=(-1, 1),
    optical=False,
    force_positive=True,
    background="auto",
    shift_negatives=True,
    evaluate=False,
    method="powell",
    tol=1e-6,
    with_bounds=True,
    sigma_prior=None,
    offset_prior=None,
    loss="huber",
    f_scale=7.0,
    max_nfev=None,
    signal_threshold=5.0,
):
    """Fit (or evaluate) the width and offset polynomial of one difference image.

    :func:`slitcombine.core.profilefit.fit_difference_profile` of ``model`` from ``start``,
    with the result in msaexp's layout (``theta``) and the per-column sums of msaexp.
    (Longer than most: the record lists every option of the fit, as msaexp's did.)

    Parameters
    ----------
    model : slitcombine.core.profilemodel.DifferenceProfileModel
        The model (:func:`difference_model`), with pixels to fit.
    start : TraceStart
        Start (or fixed) parameters.
    inputs : TraceInputs
        The difference image the model was made of.
    position : object
        The nod position, recorded as ``exp``.
    sigma_bounds : (float, float)
        Bounds on sigma, **pixels x 10**.  With ``optical`` a lower bound <= 1 becomes
        0 (the optics model describes a point source exactly at sigma 0).
    trace_bounds : (float, float) or array-like of shape (degree + 1, 2)
        Bounds on the offset coefficients, pixels.
    optical : bool
        ``model`` is the optics model: a free width that ends at 0 is not at a bound.
    force_positive, background, shift_negatives : bool, bool or 'auto', bool
        The model's options (recorded).
    evaluate : bool
        Evaluate at ``start`` instead of fitting.
    method : str
        msaexp's minimiser name, recorded (the fit is ``least_squares``).
    tol, with_bounds, sigma_prior, offset_prior, loss, f_scale, max_nfev, signal_threshold
        As :func:`slitcombine.core.profilefit.fit_difference_profile` (``sigma_prior`` in
        pixels).

    Returns
    -------
    dict
        The ``fit_single_trace`` record: the options, the result of
        ``fit_difference_profile``, ``theta`` (``[10 sigma, coeffs]``, or the
        coefficients with a fixed width), ``sigma_x10``, ``sigma_bounds_px``,
        ``trace_bounds_px``, the difference image (``ipos`` ... ``wdiff``), ``smod``
        (the model as ``(ny, nx)``), ``yslit`` (mean trace-centred row of the positive
        exposures at the fitted offset) and msaexp's ``snum``, ``sden``, ``svnum``.

    Raises
    ------
    FitError
        From :func:`slitcombine.core.profilefit.fit_difference_profile`.
    """
    if optical and sigma_bounds[0] <= SIGMA_UNIT * 0.1:
        sigma_bounds = (0.0, sigma_bounds[1])
    sigma_bounds_px = tuple(v / SIGMA_UNIT for v in sigma_bounds)
    res = profile.fit_difference_profile(
        model,
        start.sigma,
        start.coeffs,
        fix_sigma=start.fixed,
        sigma_bounds=sigma_bounds_px,
        coeff_bounds=np.asarray(trace_bounds, float),
        with_bounds=with_bounds,
        sigma_prior=sigma_prior,
        offset_prior=offset_prior,
        loss=loss,
        f_scale=f_scale,
        tol=tol,
        max_nfev=max_nfev,
        evaluate=evaluate,
        signal_threshold=signal_threshold,
    )
    if optical and not start.fixed and res["sigma"] <= 1e-3 * sigma_bounds_px[1]:
        # a point source: sigma = 0 is where the model's parameter ends, not a bound
        res["at_bound"] = [False] + list(res["at_bound"][1:])
    theta = (
        res["trace_coeffs"].copy()
        if start.fixed
        else np.concatenate([[res["sigma"] * SIGMA_UNIT], res["trace_coeffs"]])
    )
    record = {
        "exp": position,
        "theta": theta,
        "sigma_x10": res["sigma"] * SIGMA_UNIT,
        "degree": start.degree,
        "initial_sigma": start.sigma,
        "differenced": inputs.differenced,
        "background_fitted": use_background(background, inputs.differenced),
        "force_positive": bool(force_positive),
        "shift_negatives": bool(shift_negatives),
        "evaluate": bool(evaluate),
        "method_requested": method,
        "optimizer": "scipy.optimize.least_squares(trf)",
        "tol": tol,
        "with_bounds": bool(with_bounds),
        "sigma_bounds_px": sigma_bounds_px,
        "trace_bounds_px": np.asarray(trace_bounds, float).tolist(),
        "sigma_prior": sigma_prior,
        "offset_prior": offset_prior,
        "psf_model": repr(model.prf),
        **res,
    }
    return {**record, **_fit_products(res, inputs)}


def _fit_products(res, inputs):
    """The difference image and msaexp's per-column sums of a fit result."""
    sden = np.where(np.isfinite(res["flux_err"]), res["flux_err"] ** -2.0, 0.0)
    off = polyval(res["trace_coeffs"], inputs.xn)
    ysl = inputs.ybase[inputs.ipos] - off
    m = inputs.mask[inputs.ipos]
    with np.errstate(invalid="ignore", divide="ignore"):
        ymean = np.where(m, ysl, 0).sum(axis=0) / m.sum(axis=0)
    return {
        "ipos": inputs.ipos,
        "ineg": inputs.ineg,
        "diff": inputs.diff,
        "bdiff": inputs.bdiff,
        "vdiff": inputs.vdiff,
        "wdiff": inputs.wdiff,
        "smod": res["model"].reshape(*inputs.shape),
        "yslit": ymean,
        "snum": np.nan_to_num(res["flux"]) * sden,
        "sden": sden,
        "svnum": sden.copy(),
    }


def at_bound_names(fit):
    """Names of the parameters of a fit that stopped at a bound.

    Parameters
    ----------
    fit : dict
        A :func:`fit_trace` record (``fix_sigma``, ``degree``, ``at_bound``).

    Returns
    -------
    list of str
        ``sigma`` (when fitted) and ``c<k>`` for the offset coefficient of power ``k``
        (``c0`` the constant offset), in the order of ``theta``.
    """
    names = (["sigma"] if not fit["fix_sigma"] else []) + [
        f"c{k}" for k in range(fit["degree"], -1, -1)
    ]
    return [n for n, a in zip(names, fit["at_bound"], strict=False) if a]
