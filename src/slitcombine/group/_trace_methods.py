"""``SlitGroup`` methods for trace and profile fitting.

Methods: fit_single_trace, fit_all_traces, get_trace_sn, fit_params_by_sn, plot_profile.

They are adapters: they gather the group's arrays, call the pure functions of
:mod:`slitcombine.core.tracefit` (one fit) and :mod:`slitcombine.core.tracepasses` (the
passes over the nod positions, the acceptance test and the bound widening), store the
results on the group and write the user-facing messages.  ``SlitGroup`` inherits this
class, which holds no state of its own.

Units of the profile width
--------------------------
msaexp gives the profile width in units of **pixels x 10** (``initial_sigma=3.0`` is
0.3 px, ``sigma_bounds=(1, 20)`` is 0.1-2 px, ``fix_sigma=4`` fixes 0.4 px, and the
first element of ``theta`` is 10 sigma).  These methods accept exactly those values for
compatibility and convert them once, with
:data:`slitcombine.core.tracefit.SIGMA_UNIT`; everything inside, and every result key
named ``sigma*`` without ``_x10``, is in **pixels**.  ``theta`` in the results keeps
msaexp's layout ``[10 sigma, offset coefficients]`` (just the coefficients when sigma is
fixed) so it can be passed back as ``x0``.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from slitcombine.core import geometry, tracefit, tracepasses
from slitcombine.core.tracefit import SIGMA_UNIT
from slitcombine.errors import ConfigurationError, FitError
from slitcombine.group.steps import UNUSED, ignore_seed_keywords

__all__ = ["TraceMethods"]

log = logging.getLogger(__name__)


class _GroupFitter:
    """The group's side of :func:`slitcombine.core.tracepasses.fit_positions`.

    Fits a position with :meth:`TraceMethods.fit_single_trace` (the options of
    ``fit_all_traces`` overridden by those of the pass), sets the offsets of the
    exposures, recomputes the traces, and logs the refits.
    """

    def __init__(self, group, fit_kwargs):
        self.group = group
        self.fit_kwargs = fit_kwargs

    def fit(self, position, **options):
        return self.group.fit_single_trace(exp=position, **{**self.fit_kwargs, **options})

    def apply(self, coeffs, exposures):
        sel = np.ones(self.group.N, bool) if exposures is None else exposures
        self.group._set_offsets(sel, coeffs)

    def end_pass(self):
        self.group.update_trace_from_coeffs()

    def refit_tried(self, position, attempt):
        what = ", ".join(attempt.widened)
        if not attempt.kept:
            log.info(
                "%s: position %s: refit with %s not kept (chi2 gain %.2f)",
                self.group.name,
                position,
                what,
                attempt.gain,
            )
            return
        best, trial = attempt.before, attempt.after
        log.info(
            "%s: position %s: the fit stopped at a bound; refitted with %s: sigma "
            "%.3f -> %.3f px, offset %.3f -> %.3f px, chi2 %.1f -> %.1f",
            self.group.name,
            position,
            what,
            best["sigma"],
            trial["sigma"],
            best["trace_coeffs"][-1],
            trial["trace_coeffs"][-1],
            best["chi2_fit"],
            trial["chi2_fit"],
        )

    def widened_at_bound(self, fit):
        self.group._warn_at_bound(fit, widened=True)


class TraceMethods:
    """Mixin of :class:`slitcombine.SlitGroup`: trace and profile fitting."""

    # ------------------------------------------------------------ helpers
    def _trace_fit_inputs(self, exp, shift_negatives=True):
        """Difference image of position ``exp`` and the fixed inputs of the profile model
        (:class:`slitcombine.core.tracefit.TraceInputs`)."""
        return tracefit.trace_inputs(
            self._difference_image(exp),
            data=self.data,
            mask=self.mask,
            wave=self.wave,
            xslit=self.xslit,
            ypix=self.ypix,
            yslit=self.yslit,
            base_coeffs=self.base_coeffs,
            shape=self.sh,
            shift_negatives=shift_negatives,
        )

    def _base_rows(self):
        """``(N, nx)`` rows of the base traces (``base_coeffs``, zero offset)."""
        nx = self.sh[1]
        xn = geometry.normalized_x(np.arange(nx, dtype=float), nx)
        return np.array([tracefit.polyval(c, xn) for c in self.base_coeffs])

    def _resize_trace_coeffs(self, ncoeff):
        """Make :attr:`trace_coeffs` at least ``ncoeff`` wide (zeros for higher powers)."""
        width = self.trace_coeffs.shape[1]
        if ncoeff > width:
            pad = np.zeros((self.N, ncoeff - width))
            self.trace_coeffs = np.hstack([pad, self.trace_coeffs])

    def _set_offsets(self, sel, coeffs):
        """Copy an offset polynomial into :attr:`trace_coeffs` of the exposures ``sel``."""
        coeffs = np.asarray(coeffs, float)
        self._resize_trace_coeffs(coeffs.size)
        full = np.zeros(self.trace_coeffs.shape[1])
        full[-coeffs.size :] = coeffs
        self.trace_coeffs[np.asarray(sel, bool)] = full

    # ------------------------------------------------------------ fit_single_trace
    def fit_single_trace(
        self,
        x0=None,
        initial_sigma=3.0,
        exp=1,
        force_positive=True,
        method="powell",
        tol=1e-6,
        evaluate=False,
        degree=2,
        sigma_bounds=(1, 20),
        trace_bounds=(-1, 1),
        fix_sigma=-1,
        with_bounds=True,
        verbose=True,
        *,
        sigma_prior=None,
        offset_prior=None,
        loss="huber",
        f_scale=7.0,
        background="auto",
        max_nfev=None,
        signal_threshold=5.0,
        shift_negatives=True,
        warn_at_bound=True,
    ):
        """Fit the profile width and trace-offset polynomial of one nod position.

        The model of the nod-difference image of position ``exp`` is, per column, a
        flux times :func:`slitcombine.core.profile.difference_profile` (the positive
        exposures' profiles, shifted by the offset polynomial, minus the negative
        exposures' at their current traces, averaged with the masks of the difference
        image).  The per-column fluxes are solved linearly; sigma and the offset
        polynomial are fitted with a bounded, robust ``scipy.optimize.least_squares``
        with the exact Jacobian (:func:`slitcombine.core.tracefit.fit_trace`,
        :func:`slitcombine.core.profilefit.fit_difference_profile`).  This method
        gathers the arrays and logs; its length is that of its documented keywords
        (msaexp's, then the fit's own, keyword-only).

        Parameters
        ----------
        x0 : array-like or None
            Start parameters in msaexp's layout: ``[10 sigma, c_deg, ..., c_0]`` (pixels
            x 10 for sigma, pixels for the offset coefficients, ``numpy.polyval`` order
            in ``xn = (x - nx/2)/nx``), or only the coefficients when ``fix_sigma > 0``.
            Its length sets the degree.  None: ``initial_sigma`` and zero offsets (the
            nominal trace, ``base_coeffs``).
        initial_sigma : float
            Start intrinsic width, **pixels x 10** (3.0 = 0.3 px).
        exp : position-key value
            The nod position (a value of ``self.unp.values``).
        force_positive : bool
            Clip the model at 0: the negative traces do not constrain the fit.
        method, tol : str, float
            ``method`` is accepted for compatibility (msaexp's minimiser name) and
            recorded; the fit is always ``least_squares`` ('trf').  ``tol`` is its
            ``ftol``/``xtol``/``gtol``.
        evaluate : bool
            Do not fit; evaluate the model at ``x0``.
        degree : int
            Degree of the offset polynomial (when ``x0`` is None).
        sigma_bounds : (float, float)
            Bounds on sigma, **pixels x 10** ((1, 20) = 0.1-2 px).
        trace_bounds : (float, float) or array-like of shape (degree + 1, 2)
            Bounds on every offset coefficient, pixels; or one ``(low, high)`` pair
            per coefficient (``numpy.polyval`` order, the constant term last).
        fix_sigma : float
            If > 0, sigma is fixed to this value (**pixels x 10**) and not fitted.
        with_bounds : bool
            Use the bounds (otherwise an unbounded fit, sigma taken as ``|sigma|``).
        verbose : bool
            Log the result at INFO level (DEBUG otherwise).
        sigma_prior : (float, float) or None
            Gaussian prior ``(mean, width)`` on sigma, **pixels** (not x 10).
        offset_prior : (float, float) or None
            Gaussian prior on the offset, pixels: ``(mean, width)`` on the constant
            term, ``(0, width)`` on the others.
        loss, f_scale : str, float
            Robust loss of ``least_squares`` and the residual (in sigma) where it acts.
        background : bool or 'auto'
            Solve also a constant per column; 'auto': only when there is no negative
            exposure (no differences: one exposure, one position or ``diffs=False``).
        max_nfev : int or None
            Maximum number of model evaluations.
        signal_threshold : float
            Detection threshold (see :func:`slitcombine.core.profilefit.fit_difference_profile`);
            an undetected source gives ``status='NO_SIGNAL'`` with the start values.
        shift_negatives : bool
            Apply the offset polynomial to the negative exposures as well (their source
            is offset from its nominal trace like the positive one's).  False is
            msaexp's behaviour: the negatives stay at their current trace (which
            :meth:`fit_all_traces` updates between passes).
        warn_at_bound : bool
            Log a warning when a fitted parameter stops at its bound (the parameters
            are listed in ``at_bound`` either way).

        Returns
        -------
        dict
            ``theta`` (msaexp layout), ``sigma`` (px), ``sigma_x10``, ``sigma_err``,
            ``trace_coeffs`` (px, ``degree + 1``), ``trace_coeffs_err``, ``degree``,
            ``fix_sigma`` (bool), ``chi2_init``, ``chi2_fit``, ``dchi2``, ``chi2_plain``,
            ``npix``, ``nfev``, ``njev``, ``status``, ``success``, ``message``,
            ``at_bound``, ``differenced``; arrays ``ipos``, ``ineg`` (N), ``diff``,
            ``bdiff``, ``vdiff``, ``wdiff`` (the difference image, ``npix``),
            ``profile`` (unit-flux model, npix, NaN where unused), ``model`` (fitted
            model, npix), ``smod`` (the same as ``(ny, nx)``), ``yslit`` (mean
            trace-centred row of the positive exposures at the fitted offset, npix),
            per column ``flux``, ``flux_err`` (uJy), ``background``, ``sn``, and msaexp's
            ``snum``, ``sden``, ``svnum`` (``flux = snum/sden``, ``flux_err**2 =
            svnum/sden**2``).

        Raises
        ------
        FitError
            No valid pixel, start values outside the bounds, inconsistent bounds, a
            wrong ``x0`` length.
        """
        t0 = time.perf_counter()
        if exp not in self.unp:
            raise ConfigurationError(f"exp={exp!r} is not a nod position ({self.unp.values})")
        start = tracefit.trace_start(
            x0, initial_sigma=initial_sigma, degree=degree, fix_sigma=fix_sigma
        )
        inputs = self._trace_fit_inputs(exp, shift_negatives=shift_negatives)
        model_options = dict(
            force_positive=force_positive, background=background, shift_negatives=shift_negatives
        )
        optical = self.uses_optics()
        if optical:
            # the optics model: the source's image through this group's apertures
            model = tracefit.difference_model(
                inputs,
                start.degree,
                image_model=self.source_image_model(),
                base_rows=self._base_rows(),
                current_rows=self.trace_rows(),
                **model_options,
            )
        else:
            model = tracefit.difference_model(
                inputs, start.degree, lookup_prf=self.profile_prf(), **model_options
            )
        if model.npix == 0:
            raise FitError(
                f"{self.name}: no valid pixel in the difference image of position {exp!r} "
                "(everything masked on the trace?)"
            )
        fit = tracefit.fit_trace(
            model,
            start,
            inputs,
            position=exp,
            sigma_bounds=sigma_bounds,
            trace_bounds=trace_bounds,
            optical=optical,
            evaluate=evaluate,
            method=method,
            tol=tol,
            with_bounds=with_bounds,
            sigma_prior=sigma_prior,
            offset_prior=offset_prior,
            loss=loss,
            f_scale=f_scale,
            max_nfev=max_nfev,
            signal_threshold=signal_threshold,
            **model_options,
        )
        self._log_single_fit(fit, warn_at_bound, verbose, time.perf_counter() - t0)
        return fit

    def _log_single_fit(self, fit, warn_at_bound, verbose, elapsed):
        """The warnings and the log line of a :meth:`fit_single_trace` result."""
        if warn_at_bound and any(fit["at_bound"]):
            self._warn_at_bound(fit)
        if not fit["differenced"]:
            log.warning(
                "%s: position %r has no negative exposure: the profile is fitted to the "
                "un-differenced data with a constant background per column",
                self.name,
                fit["exp"],
            )
        level = logging.INFO if verbose else logging.DEBUG
        log.log(
            level,
            "%s: trace fit exp=%r %s sigma=%.4f px offset=%s chi2 %.1f -> %.1f (%d evals) "
            "%s in %.3f s",
            self.name,
            fit["exp"],
            "evaluated" if fit["evaluate"] else "fitted",
            fit["sigma"],
            np.array2string(fit["trace_coeffs"], precision=4),
            fit["chi2_init"],
            fit["chi2_fit"],
            fit["nfev"],
            fit["status"],
            elapsed,
        )

    def _warn_at_bound(self, fit, widened=False):
        """Log which parameters of a fit stopped at its bounds, with advice.

        ``widened``: the bounds were already widened as far as the slitlet allows
        (``widen_bounds=True``), so the advice is not to widen them.
        """
        hit = tracefit.at_bound_names(fit)
        if widened and any(n in ("sigma", "c0") for n in hit):
            hint = (
                "the bounds were widened to the slitlet's limits (width up to one nod "
                "step, offset up to half of one): the source may fill the slitlet "
                "(source_type='extended'; command line --set extract.source_type=extended)"
            )
        elif all(n not in ("sigma", "c0") for n in hit):
            # only curvature/slope terms: typically poorly constrained by the data
            # (on CEERS c2 runs to any bound for a chi2 gain of a few)
            lower = max(int(fit["degree"]) - 1, 0)
            hint = (
                f"a lower degree, the data may not constrain them (trace_kwargs="
                f"{{'degree': {lower}}}; command line --set trace.degree={lower})"
            )
        else:
            hint = (
                "wider bounds if the source is really there (trace_kwargs={'widen_bounds': "
                "True}; command line --set trace.widen_bounds=true)"
            )
        log.warning(
            "%s: position %s: %s at the fit bounds (sigma_bounds=%s px x 10, "
            "trace_bounds=%s px); try %s",
            self.name,
            fit["exp"],
            hit,
            tuple(round(v * SIGMA_UNIT, 6) for v in fit["sigma_bounds_px"]),
            fit["trace_bounds_px"],
            hint,
        )

    # ------------------------------------------------------------ fit_all_traces
    def _resolve_ref_exp(self, ref_exp):
        if ref_exp is None:
            return None, None
        if isinstance(ref_exp, str) and ref_exp == "auto":
            return self.calc_reference_exposure, None
        if ref_exp in self.unp:
            return ref_exp, None
        ref = self.calc_reference_exposure
        note = (
            f"ref_exp={ref_exp!r} is not a nod position {self.unp.values}; "
            f"used the reference position {ref!r}"
        )
        # with a single position there is no choice to make: not worth a warning
        log.log(logging.INFO if self.unp.N == 1 else logging.WARNING, "%s: %s", self.name, note)
        return ref, note

    def fit_all_traces(
        self,
        niter=3,
        dchi_threshold=-25,
        ref_exp=2,
        *,
        widen_bounds=False,
        x0=None,
        warn_at_bound=True,
        evaluate=UNUSED,
        **fit_kwargs,
    ):
        """Fit the traces of all nod positions and apply the offsets to the group.

        With ``ref_exp`` (a position value, or 'auto' for
        :attr:`calc_reference_exposure`) the reference position is fitted, the other
        positions are evaluated with its parameters, and its offset polynomial is
        copied to :attr:`trace_coeffs` of **every** exposure (the source offset from the
        nominal trace is common to all nods).  With ``ref_exp=None`` every position is
        fitted independently and its offsets go to its own exposures.  A fit is
        applied only if it improves the chi2 of the nominal trace (first pass) by more
        than ``-dchi_threshold``; then :meth:`update_trace_from_coeffs` updates
        :attr:`yslit`.  Passes are repeated ``niter`` times (each pass sees the negative
        traces moved by the previous one) and stop early once the parameters change by
        less than 1e-4 px.  With ``shift_negatives=True`` (the default of
        :meth:`fit_single_trace`) the negative traces move with the fitted offset inside
        the fit, the result does not depend on the current traces, and one pass is
        exact: ``niter`` is then not needed (``meta`` records the passes made).  The
        passes, the acceptance test and the widening are
        :func:`slitcombine.core.tracepasses.fit_positions`; the length of this adapter is
        its documentation.

        Parameters
        ----------
        niter : int
            Maximum number of passes (used with ``shift_negatives=False``).
        dchi_threshold : float
            A fit is applied if ``chi2_fit - chi2_nominal < dchi_threshold``.
        ref_exp : position value, 'auto' or None
            Reference position (2, msaexp's default, is the middle nod of a 3-nod
            pattern); a value that is not a position falls back to
            :attr:`calc_reference_exposure` (recorded in ``meta``).
        widen_bounds : bool
            When a fit that beats the nominal traces by more than ``-dchi_threshold``
            stops at the upper bound of the width or at a bound of the constant offset
            ``c0``, refit it from there with that bound moved to its physical limit
            (width: one nod step, ``|meta['nod_offset']|``; ``|c0|``: half a nod step;
            the slope and curvature bounds are kept) and keep the refit if it lowers
            chi2 further (recorded as ``widened_bounds`` in the fit and in ``meta``).
            Not done when the width sits at its lower bound (a degenerate fit).  False
            (msaexp's behaviour): the bounds are final.
            :func:`slitcombine.pipeline.combine.combine` sets it unless ``sigma_bounds``
            or ``trace_bounds`` are given: with the default bounds (0.1-2 px width, +-1
            px offsets) a simulated PRISM source 0.3 open-shutter heights (1.3 px) off
            centre lost 9% of its flux and a 2.5 px wide one 20%.
        x0 : array-like or None
            Start parameters of the first fit of each position (as
            :meth:`fit_single_trace`); the later passes start from the previous one.
        warn_at_bound : bool
            Warn of a fitted parameter at its bound (after widening, with
            ``widen_bounds``).
        evaluate : bool
            Accepted for compatibility with msaexp (which then only evaluates every
            position), ignored: recorded in ``meta['ignored_kwargs']``.
        **fit_kwargs
            Keywords of :meth:`fit_single_trace` (``degree``, ``fix_sigma``,
            ``initial_sigma``, priors ...), used by every fit.

        Returns
        -------
        dict
            :attr:`fit`: the last fit of each position (keyed by position value), with
            ``accepted`` (bool), ``ref_exp`` and ``iterations`` (per pass: theta, sigma,
            trace_coeffs, chi2_init, chi2_fit, dchi2, nfev, status).  A summary goes to
            ``meta['steps']['trace_fit']``.

        Raises
        ------
        FitError
            From :meth:`fit_single_trace` (e.g. no valid pixel).
        """
        t0 = time.perf_counter()
        if niter < 1:
            raise ConfigurationError(f"niter must be >= 1, got {niter}")
        ignore_seed_keywords(self, "trace_fit", evaluate=evaluate)
        ref, ref_note = self._resolve_ref_exp(ref_exp)
        step = np.nan
        if widen_bounds:
            step = tracepasses.nod_step(self.meta.get("nod_offset"), self.slit_pixel_scale)
        result = tracepasses.fit_positions(
            _GroupFitter(self, fit_kwargs),
            list(self.unp.values),
            ref=ref,
            niter=niter,
            shift_negatives=fit_kwargs.get("shift_negatives", True),
            dchi_threshold=dchi_threshold,
            widen_bounds=widen_bounds,
            step=step,
            x0=x0,
            warn_at_bound=bool(warn_at_bound),
        )
        self.fit = result.fits
        details = tracepasses.trace_fit_summary(
            result,
            ref_exp=ref_exp,
            niter=niter,
            dchi_threshold=dchi_threshold,
            widen_bounds=widen_bounds,
            fit_kwargs=fit_kwargs,
        )
        if ref_note:
            details["ref_exp_fallback"] = ref_note
        fallback = tracepasses.trace_fallback(result)
        if fallback is not None:
            self._report_trace_fallback(fallback, dchi_threshold, details)
        self._step("trace_fit", "COMPLETE" if fallback is None else "FALLBACK", **details)
        log.debug("%s: fit_all_traces in %.3f s", self.name, time.perf_counter() - t0)
        return result.fits

    def _report_trace_fallback(self, fallback, dchi_threshold, details):
        """Record and log why no trace fit was applied (``details`` of the step)."""
        details["fallback_reason"] = fallback.reason
        if fallback.reason == "not converged":
            details["fallback"] = (
                f"the fit did not converge (status {fallback.failed}): no fit applied, the "
                "nominal traces are kept"
            )
            log.warning("%s: trace fit: %s", self.name, details["fallback"])
        elif fallback.reason == "undetected":
            # Nothing to fit: worth a warning (the extraction profile is nominal).
            details["fallback"] = (
                f"source not detected at position(s) {fallback.undetected}: no fit applied, "
                "the nominal traces are kept"
            )
            log.warning("%s: trace fit: %s", self.name, details["fallback"])
        else:
            # A detected source that the nominal traces already describe to within
            # dchi_threshold: the normal outcome for a well-placed source.
            details["fallback"] = (
                f"the fit improves chi2 by {-fallback.dchi2_best:.1f} only (dchi_threshold "
                f"{dchi_threshold}): the nominal traces are kept"
            )
            log.info("%s: trace fit: %s", self.name, details["fallback"])
