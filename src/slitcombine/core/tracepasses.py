"""The trace fit of a group: passes over the nod positions, acceptance, bound widening.

The algorithm of ``SlitGroup.fit_all_traces`` (:mod:`slitcombine.group._trace_methods`),
as pure functions on fit records (the dicts of :func:`slitcombine.core.tracefit.fit_trace`):

* :func:`fit_positions`: fit the reference position (or every position) in passes, keep
  a fit only if it beats the nominal traces (:func:`is_accepted`), let the caller apply
  it; evaluate the other positions with the reference parameters.  The caller (a
  :class:`PositionFitter`) fits one position, sets offsets and recomputes traces.
* :func:`widened_bounds` and :func:`refit_widened`: a significant fit stopped at the
  upper width bound or at a bound of the constant offset is refitted inside bounds
  moved to the slitlet's limits, and the refit is kept only if it lowers chi2.
* :func:`trace_fit_summary` and :func:`trace_fallback`: the record of what was done and
  why nothing was applied, if so.

Widths are in pixels, except ``sigma_bounds`` (msaexp's pixels x 10,
:data:`slitcombine.core.tracefit.SIGMA_UNIT`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from slitcombine import instrument
from slitcombine.core.tracefit import SIGMA_UNIT, at_bound_names

__all__ = [
    "CONVERGED_CHANGE",
    "is_accepted",
    "is_significant",
    "nod_step",
    "WidenedBounds",
    "widened_bounds",
    "RefitAttempt",
    "refit_widened",
    "PositionFitter",
    "TracePasses",
    "fit_positions",
    "trace_fit_summary",
    "TraceFallback",
    "trace_fallback",
]

#: The passes over the nod positions stop once sigma and every offset coefficient
#: change by less than this, pixels.
CONVERGED_CHANGE = 1e-4


# ============================================================================ acceptance
def is_accepted(fit, chi2_nominal, dchi_threshold):
    """Whether a fit is applied: it succeeded and beats the nominal traces.

    Parameters
    ----------
    fit : dict
        A :func:`~slitcombine.core.tracefit.fit_trace` record (``success``, ``chi2_fit``).
    chi2_nominal : float
        chi2 of the nominal traces (the first fit's ``chi2_init``).
    dchi_threshold : float
        Needed change of chi2 (negative): ``chi2_fit - chi2_nominal < dchi_threshold``.

    Returns
    -------
    bool
    """
    return bool(fit["success"] and fit["chi2_fit"] - chi2_nominal < dchi_threshold)


def is_significant(fit, chi2_nominal, dchi_threshold):
    """Whether a *converged fit* (status 'OK', not an evaluation) beats the nominal traces.

    Parameters
    ----------
    fit : dict
        A :func:`~slitcombine.core.tracefit.fit_trace` record (``status``, ``chi2_fit``).
    chi2_nominal, dchi_threshold : float
        As :func:`is_accepted`.

    Returns
    -------
    bool
    """
    return fit["status"] == "OK" and fit["chi2_fit"] - chi2_nominal < dchi_threshold


# ============================================================================ bounds
def nod_step(nod_offset, slit_pixel_scale):
    """The nod step of a slitlet, pixels: ``|nod_offset|``, else one shutter pitch.

    Parameters
    ----------
    nod_offset : float or None
        The group's nod offset, pixels (None, 0 or NaN: not known).
    slit_pixel_scale : float
        Cross-dispersion pixel scale, arcsec per pixel.

    Returns
    -------
    float
        Pixels (NaN if neither is known).
    """
    step = abs(nod_offset or np.nan)
    if not np.isfinite(step) or step == 0:
        step = instrument.MSA_NOD_ARCSEC / slit_pixel_scale
    return step


@dataclass(frozen=True, eq=False)
class WidenedBounds:
    """Bounds for a refit of a fit that stopped at a bound.

    Attributes
    ----------
    sigma_bounds : (float, float)
        Bounds on sigma, pixels x 10 (msaexp's unit, as ``sigma_bounds``).
    trace_bounds : numpy.ndarray
        ``(degree + 1, 2)`` bounds of each offset coefficient, pixels.
    widened : tuple of str
        What was widened, e.g. ``'sigma <= 5.11 px'``, ``'|c0| <= 2.55 px'``.
    """

    sigma_bounds: tuple
    trace_bounds: np.ndarray
    widened: tuple


def widened_bounds(fit, step):
    """Bounds for a refit when the width or the constant offset stopped at a bound.

    Starting from the bounds the fit used: sigma up to one nod step (a wider source
    fills the slitlet), ``|c0|`` up to half a nod step (the next shutter); the slope and
    curvature bounds are kept.

    Parameters
    ----------
    fit : dict
        A :func:`~slitcombine.core.tracefit.fit_trace` record (``at_bound``, ``sigma``,
        ``sigma_bounds_px``, ``trace_bounds_px``, ``degree``, ``fix_sigma``).
    step : float
        The nod step, pixels (:func:`nod_step`).

    Returns
    -------
    WidenedBounds or None
        None when neither the upper width bound nor a bound of ``c0`` was hit, or the
        limits are already reached, or the width sits at its *lower* bound (a
        degenerate fit: a cosmic ray, no source profile).
    """
    hit = set(at_bound_names(fit))
    slo, shi = (v * SIGMA_UNIT for v in fit["sigma_bounds_px"])
    # ``hit`` says the width is at a bound; which one, its side of the middle does
    width_at_upper = fit["sigma"] * SIGMA_UNIT > 0.5 * (slo + shi)
    if "sigma" in hit and not width_at_upper:
        return None
    cb = np.array(
        np.broadcast_to(np.asarray(fit["trace_bounds_px"], float), (fit["degree"] + 1, 2))
    )
    widened = []
    sigma_max = step * SIGMA_UNIT
    if "sigma" in hit and shi < sigma_max:
        shi = sigma_max
        widened.append(f"sigma <= {step:.2f} px")
    if "c0" in hit and max(abs(cb[-1, 0]), abs(cb[-1, 1])) < 0.5 * step:
        cb[-1] = (min(cb[-1, 0], -0.5 * step), max(cb[-1, 1], 0.5 * step))
        widened.append(f"|c0| <= {0.5 * step:.2f} px")
    if not widened:
        return None
    return WidenedBounds(sigma_bounds=(slo, shi), trace_bounds=cb, widened=tuple(widened))


@dataclass(frozen=True, eq=False)
class RefitAttempt:
    """One refit inside widened bounds.

    Attributes
    ----------
    widened : tuple of str
        What was widened (:attr:`WidenedBounds.widened`).
    gain : float
        ``chi2_fit`` of the fit it would replace minus that of the refit.
    kept : bool
        The refit succeeded and lowered chi2 (``gain > 0``).
    before, after : dict
        The fit at the bound and the refit.
    """

    widened: tuple
    gain: float
    kept: bool
    before: dict
    after: dict


def refit_widened(fit, refit, *, chi2_nominal, dchi_threshold, step, report=None):
    """Refit with wider bounds while a significant fit stops at one.

    Up to two refits (the width and the offset may each need one widening), each from
    the previous best parameters inside :func:`widened_bounds`.  Only a fit that beats
    the nominal traces (:func:`is_significant`) is widened; a refit is kept only if it
    succeeds and lowers chi2 (inside wider bounds the same model with a lower chi2 is
    the better estimate: a width or an offset held at a bound biases the path loss and
    the flux, e.g. an extended source of 2.3 px held at 2 px gave flux/truth 0.81).

    Parameters
    ----------
    fit : dict
        The fit inside the original bounds (a
        :func:`~slitcombine.core.tracefit.fit_trace` record).
    refit : callable
        ``refit(sigma_bounds=..., trace_bounds=..., x0=...) -> dict``: the same fit
        with those bounds (msaexp units, as :class:`WidenedBounds`) from ``x0``.
    chi2_nominal, dchi_threshold : float
        As :func:`is_accepted`.
    step : float
        The nod step, pixels (:func:`nod_step`).
    report : callable or None
        Called with each :class:`RefitAttempt` as it is made.

    Returns
    -------
    best : dict
        The best fit; a kept refit has ``widened_bounds`` (list of str, accumulated)
        and ``nfev_replaced`` (evaluations of the fits it replaced).
    bounds : WidenedBounds or None
        The bounds of ``best`` if it is a refit.
    """
    best, bounds = fit, None
    for _ in range(2):
        wide = (
            widened_bounds(best, step)
            if is_significant(best, chi2_nominal, dchi_threshold)
            else None
        )
        if wide is None:
            break
        trial = refit(
            sigma_bounds=wide.sigma_bounds, trace_bounds=wide.trace_bounds, x0=best["theta"]
        )
        gain = best["chi2_fit"] - trial["chi2_fit"]
        kept = bool(trial["success"] and gain > 0)
        if report is not None:
            report(
                RefitAttempt(widened=wide.widened, gain=gain, kept=kept, before=best, after=trial)
            )
        if not kept:
            break
        trial["widened_bounds"] = list(best.get("widened_bounds", [])) + list(wide.widened)
        trial["nfev_replaced"] = best.get("nfev_replaced", 0) + best["nfev"]
        best, bounds = trial, wide
    return best, bounds


# ============================================================================ passes
class PositionFitter(Protocol):
    """What :func:`fit_positions` needs from its caller (a group of exposures)."""

    def fit(self, position, **options):  # pragma: no cover - protocol
        """Fit (or evaluate) one position; returns a ``fit_trace`` record.

        ``options`` (among ``x0``, ``evaluate``, ``warn_at_bound``, ``sigma_bounds``,
        ``trace_bounds``) override the caller's own.
        """

    def apply(self, coeffs, exposures):  # pragma: no cover - protocol
        """Set the offset polynomial ``coeffs`` (pixels) of ``exposures`` (boolean
        ``(N,)``, or None: every exposure)."""

    def end_pass(self):  # pragma: no cover - protocol
        """Recompute the traces from the offsets set in the pass."""

    def refit_tried(self, position, attempt):  # pragma: no cover - protocol
        """A refit inside widened bounds was made (a :class:`RefitAttempt`)."""

    def widened_at_bound(self, fit):  # pragma: no cover - protocol
        """After widening, ``fit`` still has a parameter at a bound."""


@dataclass(frozen=True, eq=False)
class TracePasses:
    """What :func:`fit_positions` did.

    Attributes
    ----------
    fits : dict
        Position -> its last fit record, with ``accepted``, ``ref_exp``,
        ``iterations`` (per fit: ``pass``, ``theta``, ``sigma``, ``trace_coeffs``,
        ``chi2_init``, ``chi2_fit``, ``dchi2``, ``nfev``, ``status``) and
        ``dchi2_nominal``.
    accepted : dict
        Position -> whether its fit was applied.
    chi2_nominal : dict
        Position -> chi2 of the nominal traces (NaN for an evaluated position).
    positions, fitted : tuple
        Every position (the caller's order) and those fitted (the reference, or all).
    ref : object
        The reference position, or None.
    passes : int
        Number of passes made.
    """

    fits: dict
    accepted: dict
    chi2_nominal: dict
    positions: tuple
    fitted: tuple
    ref: object
    passes: int


def _iteration(k, fit):
    """The ``iterations`` entry of a fit of pass ``k``."""
    return {
        "pass": k,
        "theta": fit["theta"].tolist(),
        "sigma": fit["sigma"],
        "trace_coeffs": fit["trace_coeffs"].tolist(),
        "chi2_init": fit["chi2_init"],
        "chi2_fit": fit["chi2_fit"],
        "dchi2": fit["dchi2"],
        "nfev": fit["nfev"] + fit.get("nfev_replaced", 0),
        "status": fit["status"],
    }


class _Passes:
    """The state of :func:`fit_positions` from one pass to the next."""

    def __init__(self, fitter, positions, ref, dchi_threshold, widen, step, x0, warn):
        self.fitter, self.positions, self.ref = fitter, positions, ref
        self.fitted = positions if ref is None else (ref,)
        self.dchi_threshold, self.widen, self.step = dchi_threshold, widen, step
        self.x0, self.warn = x0, warn
        self.fits, self.chi2_nominal, self.accepted = {}, {}, {}
        self.history = {p: [] for p in positions}
        self.bounds = {}  # per position: bounds widened in an earlier pass
        self.widened = {}  # per position: what was widened (kept through later passes)

    def run(self, k):
        """Pass ``k``: fit, accept and apply each fitted position, then recompute the
        traces; returns the largest parameter change (px; inf on the first fit)."""
        change = 0.0
        for p in self.fitted:
            options = dict(self.bounds.get(p, {}))
            if p in self.fits:
                options["x0"] = self.fits[p]["theta"]
            elif self.x0 is not None:
                options["x0"] = self.x0
            fit = self.fitter.fit(p, warn_at_bound=self.warn and not self.widen, **options)
            if k == 0:
                self.chi2_nominal[p] = fit["chi2_init"]
            if self.widen:
                fit = self.refit(p, fit, options)
            previous = self.fits.get(p)
            if previous is None:
                change = np.inf
            else:
                dc = np.abs(fit["trace_coeffs"] - previous["trace_coeffs"])
                change = max(change, abs(fit["sigma"] - previous["sigma"]), float(np.max(dc)))
            self.history[p].append(_iteration(k, fit))
            self.fits[p] = fit
            self.accepted[p] = is_accepted(fit, self.chi2_nominal[p], self.dchi_threshold)
            if self.accepted[p]:
                exposures = None if self.ref is not None else fit["ipos"]
                self.fitter.apply(fit["trace_coeffs"], exposures)
        self.fitter.end_pass()
        return change

    def refit(self, p, fit, options):
        """:func:`refit_widened` of position ``p``; the widened bounds and what was
        widened are kept for the later passes (which start inside them)."""

        def refit(**wide):
            return self.fitter.fit(p, warn_at_bound=False, **{**options, **wide})

        fit, wide = refit_widened(
            fit,
            refit,
            chi2_nominal=self.chi2_nominal[p],
            dchi_threshold=self.dchi_threshold,
            step=self.step,
            report=lambda attempt: self.fitter.refit_tried(p, attempt),
        )
        if self.warn and any(fit["at_bound"]):
            self.fitter.widened_at_bound(fit)
        if wide is not None:
            self.bounds[p] = {"sigma_bounds": wide.sigma_bounds, "trace_bounds": wide.trace_bounds}
            self.widened[p] = list(dict.fromkeys(self.widened.get(p, []) + fit["widened_bounds"]))
        if p in self.widened:  # also a later pass inside the widened bounds
            fit["widened_bounds"] = self.widened[p]
        return fit

    def evaluate_others(self, passes):
        """Evaluate the positions other than the reference with its parameters."""
        ref = self.ref
        for p in self.positions:
            if p == ref:
                continue
            theta = self.fits[ref]["theta"]
            fit = self.fitter.fit(p, **self.bounds.get(ref, {}), x0=theta, evaluate=True)
            self.chi2_nominal[p] = np.nan
            self.history[p].append(_iteration(passes - 1, fit))
            self.fits[p] = fit
            self.accepted[p] = self.accepted[ref]

    def result(self, passes):
        for p in self.positions:
            fit = self.fits[p]
            fit["accepted"] = self.accepted[p]
            fit["ref_exp"] = self.ref
            fit["iterations"] = self.history[p]
            fit["dchi2_nominal"] = fit["chi2_fit"] - self.chi2_nominal[p]
        return TracePasses(
            fits=self.fits,
            accepted=self.accepted,
            chi2_nominal=self.chi2_nominal,
            positions=self.positions,
            fitted=self.fitted,
            ref=self.ref,
            passes=passes,
        )


def fit_positions(
    fitter,
    positions,
    *,
    ref=None,
    niter=3,
    shift_negatives=True,
    dchi_threshold=-25,
    widen_bounds=False,
    step=np.nan,
    x0=None,
    warn_at_bound=True,
):
    """Fit the traces of the nod positions in passes, applying the significant fits.

    With a reference position ``ref`` only it is fitted, and an accepted fit
    (:func:`is_accepted`) sets the offsets of **every** exposure; the other positions
    are then evaluated with its parameters (and accepted with it).  Without, every
    position is fitted and sets its own exposures.  A pass fits each position (from its
    previous parameters, or ``x0``), optionally widens the bounds
    (:func:`refit_widened`; the widened bounds are kept for the later passes), applies
    the accepted fits and recomputes the traces.  Passes repeat while the parameters
    change by :data:`CONVERGED_CHANGE` or more, at most ``niter`` times; with
    ``shift_negatives`` the model does not depend on the current traces (all exposures
    move with the fitted offset) and one pass is exact.

    Parameters
    ----------
    fitter : PositionFitter
        Fits a position, applies offsets, recomputes the traces, hears of refits.
    positions : sequence
        The nod positions, in order.
    ref : object or None
        The reference position (one of ``positions``), or None.
    niter : int
        Maximum number of passes without ``shift_negatives``.
    shift_negatives : bool
        The fits move the negative exposures with the offset.
    dchi_threshold : float
        As :func:`is_accepted`.
    widen_bounds : bool
        Refit a significant fit that stopped at a bound (:func:`refit_widened`).
    step : float
        The nod step, pixels (:func:`nod_step`; used with ``widen_bounds``).
    x0 : array-like or None
        Start parameters of the first fit of each position (msaexp's layout).
    warn_at_bound : bool
        Let the fits warn of a parameter at a bound (with ``widen_bounds``: after
        widening, :meth:`PositionFitter.widened_at_bound`).

    Returns
    -------
    TracePasses
    """
    state = _Passes(
        fitter, tuple(positions), ref, dchi_threshold, widen_bounds, step, x0, warn_at_bound
    )
    passes = 0
    for k in range(1 if shift_negatives else int(niter)):
        passes = k + 1
        if state.run(k) < CONVERGED_CHANGE:
            break
    if ref is not None:
        state.evaluate_others(passes)
    return state.result(passes)


# ============================================================================ summary
def trace_fit_summary(result, *, ref_exp, niter, dchi_threshold, widen_bounds, fit_kwargs):
    """The record of the trace fit of a group (``meta['steps']['trace_fit']``).

    Parameters
    ----------
    result : TracePasses
        What :func:`fit_positions` did.
    ref_exp : object
        The reference position asked for (recorded as ``ref_exp_requested``).
    niter, dchi_threshold, widen_bounds : int, float, bool
        The options of :func:`fit_positions`.
    fit_kwargs : dict
        The options of the single fits; the scalar ones are recorded.

    Returns
    -------
    dict
        ``ref_exp``, ``ref_exp_requested``, ``niter``, ``passes``, ``dchi_threshold``,
        per position ``sigma_px``, ``sigma_err_px``, ``offset_px``, ``trace_coeffs``,
        ``dchi2_nominal`` (fitted positions), ``accepted``, ``fit_status``,
        ``differenced``; ``nfev`` (total), ``widen_bounds``, ``psf_model``,
        ``widened_bounds`` (fitted positions whose bounds were widened) and
        ``fit_kwargs``.
    """
    fits, positions, fitted = result.fits, result.positions, result.fitted
    first = positions[0] if result.ref is None else result.ref
    return {
        "ref_exp": result.ref,
        "ref_exp_requested": ref_exp,
        "niter": int(niter),
        "passes": result.passes,
        "dchi_threshold": dchi_threshold,
        "sigma_px": {p: round(fits[p]["sigma"], 5) for p in positions},
        "sigma_err_px": {p: round(fits[p]["sigma_err"], 5) for p in positions},
        "offset_px": {p: round(float(fits[p]["trace_coeffs"][-1]), 5) for p in positions},
        "trace_coeffs": {
            p: [round(float(c), 6) for c in fits[p]["trace_coeffs"]] for p in positions
        },
        "dchi2_nominal": {p: round(fits[p]["dchi2_nominal"], 2) for p in fitted},
        "accepted": result.accepted,
        "fit_status": {p: fits[p]["status"] for p in positions},
        "differenced": {p: fits[p]["differenced"] for p in positions},
        "nfev": sum(h["nfev"] for p in positions for h in fits[p]["iterations"]),
        "widen_bounds": bool(widen_bounds),
        "psf_model": fits[first]["psf_model"],
        "widened_bounds": {
            p: fits[p]["widened_bounds"] for p in fitted if "widened_bounds" in fits[p]
        },
        "fit_kwargs": {k: v for k, v in fit_kwargs.items() if np.isscalar(v) or v is None},
    }


@dataclass(frozen=True)
class TraceFallback:
    """Why no trace fit was applied.

    Attributes
    ----------
    reason : str
        'not converged' (a fit failed), 'undetected' (no source at a fitted position)
        or 'insignificant' (the fits do not beat the nominal traces by
        ``-dchi_threshold``).
    failed : dict
        Fitted position -> status of the fits that failed (not undetected).
    undetected : list
        Fitted positions where the source was not detected.
    dchi2_best : float or None
        With 'insignificant': the lowest ``chi2_fit - chi2_nominal``.
    """

    reason: str
    failed: dict
    undetected: list
    dchi2_best: float | None = None


def trace_fallback(result):
    """Why no fit of a :func:`fit_positions` result was applied, if none was.

    Parameters
    ----------
    result : TracePasses

    Returns
    -------
    TraceFallback or None
        None when a fit was applied.
    """
    if any(result.accepted.values()):
        return None
    fits = result.fits
    undetected = [p for p in result.fitted if fits[p]["status"] == "NO_SIGNAL"]
    failed = {
        p: fits[p]["status"]
        for p in result.fitted
        if not fits[p]["success"] and p not in undetected
    }
    if failed:
        return TraceFallback("not converged", failed, undetected)
    if undetected:
        return TraceFallback("undetected", failed, undetected)
    best = min(fits[p]["chi2_fit"] - result.chi2_nominal[p] for p in result.fitted)
    return TraceFallback("insignificant", failed, undetected, best)
