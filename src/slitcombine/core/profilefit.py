"""Fit of the source width and trace offset to one nod-difference image.

:func:`fit_difference_profile` fits a :class:`slitcombine.core.profilemodel.
DifferenceProfileModel` by bounded non-linear least squares, in named stages: the start
values and bounds, the priors, the objective (residuals and Jacobian together), the
detection test, the minimisation, the formal errors and the result.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import least_squares

from slitcombine.errors import ConfigurationError, FitError

__all__ = ["fit_difference_profile"]


def _robust_chi2(r, loss, f_scale):
    """``sum(f_scale**2 * rho((r / f_scale)**2))``: the chi2 minimised by least_squares."""
    z = (r / f_scale) ** 2
    if loss == "linear":
        rho = z
    elif loss == "huber":
        rho = np.where(z <= 1, z, 2 * np.sqrt(z) - 1)
    elif loss == "soft_l1":
        rho = 2 * (np.sqrt(1 + z) - 1)
    elif loss == "cauchy":
        rho = np.log1p(z)
    elif loss == "arctan":
        rho = np.arctan(z)
    else:
        raise ConfigurationError(f"unknown loss {loss!r}")
    return float(f_scale**2 * rho.sum())


def fit_difference_profile(
    model,
    sigma0,
    coeffs0,
    *,
    fix_sigma=False,
    sigma_bounds=(0.1, 2.0),
    coeff_bounds=(-1.0, 1.0),
    with_bounds=True,
    sigma_prior=None,
    offset_prior=None,
    loss="huber",
    f_scale=7.0,
    tol=1e-6,
    max_nfev=None,
    evaluate=False,
    signal_threshold=5.0,
):
    """Fit the width and trace-offset polynomial of a nod-difference profile model.

    A bounded non-linear least-squares fit (``scipy.optimize.least_squares``, 'trf',
    exact Jacobian, robust loss) of ``sigma`` and the offset coefficients; the per-column
    amplitudes are solved linearly inside every evaluation.
    The body is the list of the fit's stages (start values and bounds, priors, objective,
    detection test, minimisation, result); the function's length is the documentation
    of its fifteen options.

    Parameters
    ----------
    model : slitcombine.core.profilemodel.DifferenceProfileModel
        The data and model.
    sigma0 : float
        Start (or fixed) intrinsic width, pixels.
    coeffs0 : array-like
        Start offset polynomial (``degree + 1`` values, pixels, ``numpy.polyval`` order).
    fix_sigma : bool
        Keep ``sigma = sigma0``.
    sigma_bounds : (float, float)
        Bounds on sigma, pixels.
    coeff_bounds : (float, float) or array-like of shape (degree + 1, 2)
        Bounds on every offset coefficient, pixels; or one ``(low, high)`` pair per
        coefficient (``numpy.polyval`` order, the constant term last).
    with_bounds : bool
        Apply the bounds (otherwise unbounded; sigma is then taken as ``|sigma|``).
    sigma_prior : (float, float) or None
        Gaussian prior ``(mean, width)`` on sigma, pixels (an extra residual).
    offset_prior : (float, float) or None
        Gaussian prior on the offset polynomial, pixels: ``(mean, width)`` for the
        constant term, ``(0, width)`` for the others.
    loss : str
        Robust loss of ``least_squares`` ('huber', 'soft_l1', 'linear', ...).
    f_scale : float
        Residual (in sigma) where the robust loss starts to act.
    tol : float
        ``ftol``, ``xtol`` and ``gtol`` of ``least_squares``.
    max_nfev : int or None
        Maximum number of evaluations (None: scipy's default).
    evaluate : bool
        Do not fit: evaluate at the start values.
    signal_threshold : float
        The fit is only done if the source is detected: the chi2 of the profile
        amplitudes (sum over columns of ``(F/err)**2``) at the start values must exceed
        the number of columns by ``signal_threshold * sqrt(2 ncol)`` (and by at least 25).
        Otherwise the result has ``status='NO_SIGNAL'`` and the start values.

    Returns
    -------
    dict
        ``sigma`` (px), ``trace_coeffs`` (px), their ``sigma_err``/``trace_coeffs_err``
        (formal, from the Jacobian, profiled over the amplitudes), ``err_scale``
        (``sqrt(max(1, chi2_fit / (npix - nparam)))``: multiply the formal errors by it
        when the residuals scatter more than the variances), ``chi2_init``, ``chi2_fit``
        (robust chi2 at start and end), ``dchi2``, ``chi2_plain`` (sum of squared
        residuals at the end), ``npix``, ``nparam``, ``nfev``, ``njev``, ``status``
        ('OK', 'EVALUATED', 'NO_SIGNAL', or 'MAX_NFEV'), ``success``, ``message``,
        ``at_bound`` (per parameter: within 1e-3 of the bound interval of a bound),
        ``signal_chi2``, ``ncol_fit`` and the arrays of
        the end point: ``profile`` (unit-flux model, npix), ``model`` (fitted model,
        npix), ``flux``, ``flux_err``, ``background`` (per column), ``sn`` (per column).

    Raises
    ------
    FitError
        No valid pixel, start values outside the bounds, inconsistent bounds, or a
        non-finite result.
    """
    coeffs0, lb, ub = _check_start(
        model, sigma0, coeffs0, fix_sigma, sigma_bounds, coeff_bounds, with_bounds
    )
    free_sigma = not fix_sigma
    priors = _priors(model.degree, free_sigma, sigma_prior, offset_prior)
    objective = _Objective(model, sigma0, free_sigma, priors)
    x0 = np.concatenate([[sigma0], coeffs0]) if free_sigma else coeffs0.copy()
    r0, _, amp0, _ = objective(x0)
    chi2_init = _robust_chi2(r0, loss, f_scale)
    signal = _detection(amp0, signal_threshold)
    x, run = x0, {"nfev": 0, "njev": 0, "status": "EVALUATED"}
    run["message"] = "evaluated at the start values"
    if not evaluate and not signal["detected"]:
        run["status"] = "NO_SIGNAL"
        run["message"] = (
            f"source not detected (profile chi2 {signal['signal_chi2']:.1f} over "
            f"{signal['ncol_fit']} columns, needs > "
            f"{signal['ncol_fit'] + signal['excess_needed']:.1f}): start values kept"
        )
    elif not evaluate:
        bounds = (lb, ub) if with_bounds else _no_bounds(x0.size)
        x, run = _minimise(objective, x0, bounds, loss, f_scale, tol, max_nfev)
    fitted = with_bounds and not evaluate and signal["detected"]
    at_bound = _at_bound(x, lb, ub) if fitted else np.zeros(x0.size, bool)
    summary = {"fix_sigma": bool(fix_sigma), "chi2_init": chi2_init, "loss": loss}
    return _fit_result(model, objective, x, summary, run, signal, at_bound, f_scale)


def _check_start(model, sigma0, coeffs0, fix_sigma, sigma_bounds, coeff_bounds, with_bounds):
    """The start offset coefficients, checked against the model and the bounds.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray, numpy.ndarray)
        The start coefficients (pixels) and the lower and upper bounds of the fitted
        parameters (``[sigma,] coeffs``, pixels).

    Raises
    ------
    FitError
        As :func:`fit_difference_profile`.
    """
    coeffs0 = np.asarray(coeffs0, float).ravel()
    if coeffs0.size != model.degree + 1:
        raise FitError(f"{coeffs0.size} offset coefficients given for degree {model.degree}")
    if model.npix == 0:
        raise FitError("no valid pixel in the difference image (everything masked?)")
    if not np.isfinite(sigma0) or not np.all(np.isfinite(coeffs0)):
        raise FitError(f"non-finite start values: sigma={sigma0}, coeffs={coeffs0}")
    slo, shi = (float(v) for v in sigma_bounds)
    cb = np.asarray(coeff_bounds, float)
    if cb.shape not in ((2,), (coeffs0.size, 2)):
        raise FitError(
            f"trace_bounds must be (low, high) or {coeffs0.size} (low, high) pairs, "
            f"got shape {cb.shape}"
        )
    clo, chi = np.broadcast_to(cb, (coeffs0.size, 2)).T
    if with_bounds:
        if not (0 <= slo < shi) or not np.all(clo < chi):
            raise FitError(
                f"inconsistent bounds: sigma_bounds=({slo}, {shi}) px, "
                f"trace_bounds={cb.tolist()} px"
            )
        if not fix_sigma and not (slo <= sigma0 <= shi):
            raise FitError(
                f"start sigma {sigma0:.4g} px is outside sigma_bounds ({slo:.4g}, {shi:.4g}) px"
            )
        if np.any(coeffs0 < clo) or np.any(coeffs0 > chi):
            raise FitError(
                f"start offset coefficients {coeffs0} are outside trace_bounds {cb.tolist()} px"
            )
    lb = clo.copy() if fix_sigma else np.concatenate([[slo], clo])
    ub = chi.copy() if fix_sigma else np.concatenate([[shi], chi])
    return coeffs0, lb, ub


def _no_bounds(nparam):
    """Infinite bounds of ``nparam`` parameters."""
    return np.full(nparam, -np.inf), np.full(nparam, np.inf)


def _priors(degree, free_sigma, sigma_prior, offset_prior):
    """Gaussian priors as ``(parameter index, mean, width)``, pixels.

    Raises
    ------
    FitError
        A width that is not positive.
    """
    priors = []
    if sigma_prior is not None and free_sigma:
        priors.append((0, float(sigma_prior[0]), float(sigma_prior[1])))
    if offset_prior is not None:
        i0 = 1 if free_sigma else 0
        for k in range(degree + 1):
            mean = float(offset_prior[0]) if k == degree else 0.0
            priors.append((i0 + k, mean, float(offset_prior[1])))
    for _, _, width in priors:
        if not width > 0:
            raise FitError(f"prior widths must be positive, got {width}")
    return priors


class _Objective:
    """Residuals, Jacobian, amplitudes and profile of the model at a parameter vector.

    Residuals and Jacobian are computed together and the last point is kept
    (least_squares asks for the Jacobian at the points it accepts, which are the points
    whose residuals it just computed).

    Parameters
    ----------
    model : slitcombine.core.profilemodel.DifferenceProfileModel
        The data and model.
    sigma0 : float
        The width when it is fixed, pixels.
    free_sigma : bool
        Whether the width is the first parameter.
    priors : list of (int, float, float)
        From :func:`_priors`.
    """

    def __init__(self, model, sigma0, free_sigma, priors):
        self.model = model
        self.sigma0 = sigma0
        self.free_sigma = free_sigma
        self.priors = priors
        self._cache = {}

    def unpack(self, x):
        """``(sigma, coeffs)`` of the parameter vector ``x``."""
        if self.free_sigma:
            return abs(x[0]), x[1:]
        return self.sigma0, x

    def _prior_res(self, x):
        return np.array([(x[i] - m) / wdt for i, m, wdt in self.priors])

    def _prior_jac(self, nparam):
        jp = np.zeros((len(self.priors), nparam))
        for row, (i, _, wdt) in enumerate(self.priors):
            jp[row, i] = 1.0 / wdt
        return jp

    def __call__(self, x):
        """``(r, J, amp, p)`` at ``x`` (see ``DifferenceProfileModel.evaluate``)."""
        key = x.tobytes()
        if key in self._cache:
            return self._cache[key]
        s, c = self.unpack(x)
        r, J, amp, p = self.model.evaluate(s, c, jacobian=True, free_sigma=self.free_sigma)
        if self.priors:
            r = np.concatenate([r, self._prior_res(x)])
            J = np.vstack([J, self._prior_jac(x.size)])
        self._cache.clear()
        self._cache[key] = (r, J, amp, p)
        return self._cache[key]


def _detection(amp0, signal_threshold):
    """The detection test at the start values (see :func:`fit_difference_profile`).

    Returns
    -------
    dict
        ``ncol_fit``, ``signal_chi2``, ``excess_needed`` and ``detected``.
    """
    ok0 = amp0["ok"]
    with np.errstate(divide="ignore", invalid="ignore"):
        sn0 = np.where(ok0, amp0["F"] / np.sqrt(amp0["F_var"]), 0.0)
    ncol_fit = int(ok0.sum())
    signal_chi2 = float(np.sum(sn0**2))
    excess_needed = max(25.0, signal_threshold * np.sqrt(2.0 * max(ncol_fit, 1)))
    detected = ncol_fit > 0 and (signal_chi2 - ncol_fit) > excess_needed
    return {
        "ncol_fit": ncol_fit,
        "signal_chi2": signal_chi2,
        "excess_needed": excess_needed,
        "detected": detected,
    }


def _minimise(objective, x0, bounds, loss, f_scale, tol, max_nfev):
    """``scipy.optimize.least_squares`` ('trf', exact Jacobian, robust loss) from ``x0``.

    Returns
    -------
    (numpy.ndarray, dict)
        The end point and ``nfev``, ``njev``, ``status`` ('OK' or 'MAX_NFEV') and
        ``message``.
    """
    res = least_squares(
        lambda x: objective(x)[0],
        x0,
        jac=lambda x: objective(x)[1],
        bounds=bounds,
        method="trf",
        loss=loss,
        f_scale=f_scale,
        x_scale="jac",
        ftol=tol,
        xtol=tol,
        gtol=tol,
        max_nfev=max_nfev,
    )
    run = {
        "nfev": int(res.nfev),
        "njev": int(res.njev or 0),
        "status": "OK" if res.status > 0 else "MAX_NFEV",
        "message": res.message,
    }
    return res.x, run


def _at_bound(x, lb, ub):
    """Per parameter: within 1e-3 of the bound interval of a bound."""
    span = np.maximum(ub - lb, 1e-12)
    return (x - lb <= 1e-3 * span) | (ub - x <= 1e-3 * span)


def _formal_errors(J, chi2_fit, npix, nparam):
    """Formal parameter errors from the curvature ``J.T @ J``, and ``err_scale``.

    ``err_scale`` = sqrt(reduced chi2) (>= 1) is the factor for residuals that scatter
    more than the variances say (the pipeline's variances of real data are ~1.3x too
    small in rms; a PSF model is never perfect at high S/N).
    """
    jtj = J.T @ J
    dof = max(npix - nparam, 1)
    err_scale = float(np.sqrt(max(chi2_fit / dof, 1.0)))
    try:
        cov = np.linalg.inv(jtj)
        err = np.sqrt(np.clip(np.diag(cov), 0, None))
    except np.linalg.LinAlgError:
        err = np.full(nparam, np.nan)
    return err, err_scale


def _fit_result(model, objective, x, summary, run, signal, at_bound, f_scale):
    """The result dictionary of :func:`fit_difference_profile` at the end point ``x``.

    Raises
    ------
    FitError
        A non-finite end point or residual.
    """
    r, J, amp, p = objective(x)
    if not np.all(np.isfinite(x)) or not np.all(np.isfinite(r)):
        raise FitError(f"the profile fit gave non-finite values (x={x})")
    s_fit, c_fit = objective.unpack(x)
    nparam = x.size
    chi2_fit = _robust_chi2(r, summary["loss"], f_scale)
    err, err_scale = _formal_errors(J, chi2_fit, model.npix, nparam)
    free_sigma = objective.free_sigma
    ok = amp["ok"]
    with np.errstate(divide="ignore", invalid="ignore"):
        flux_err = np.where(ok, np.sqrt(amp["F_var"]), np.nan)
        flux = np.where(ok, amp["F"], np.nan)
        sn = flux / flux_err
    model_pix = amp["F"][model.col] * p + amp["b"][model.col]
    return {
        "sigma": float(s_fit),
        "sigma_err": float(err[0]) if free_sigma else 0.0,
        "trace_coeffs": np.asarray(c_fit, float).copy(),
        "trace_coeffs_err": np.asarray(err[1:] if free_sigma else err, float),
        "fix_sigma": summary["fix_sigma"],
        "chi2_init": summary["chi2_init"],
        "chi2_fit": chi2_fit,
        "dchi2": chi2_fit - summary["chi2_init"],
        "chi2_plain": float(np.sum(r[: model.npix] ** 2)),
        "npix": model.npix,
        "nparam": nparam,
        "nfev": run["nfev"],
        "njev": run["njev"],
        "status": run["status"],
        "success": run["status"] in ("OK", "EVALUATED"),
        "message": run["message"],
        "at_bound": [bool(a) for a in at_bound],
        "err_scale": err_scale,
        "signal_chi2": signal["signal_chi2"],
        "ncol_fit": signal["ncol_fit"],
        "loss": summary["loss"],
        "f_scale": f_scale,
        "profile": model.full(p),
        "model": model.full(model_pix),
        "flux": flux,
        "flux_err": flux_err,
        "background": np.where(ok, amp["b"], np.nan),
        "sn": sn,
    }
