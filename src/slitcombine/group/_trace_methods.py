"""``SlitGroup`` methods for trace and profile fitting.

Methods: fit_single_trace, fit_all_traces, get_trace_sn, fit_params_by_sn, plot_profile.

They are thin: they read the group's arrays, call the pure functions of
:mod:`slitcombine.core.profile`, and store the results on the group.  ``SlitGroup``
inherits this class, which holds no state of its own.

Units of the profile width
--------------------------
msaexp gives the profile width in units of **pixels x 10** (``initial_sigma=3.0`` is
0.3 px, ``sigma_bounds=(1, 20)`` is 0.1-2 px, ``fix_sigma=4`` fixes 0.4 px, and the
first element of ``theta`` is 10 sigma).  These methods accept exactly those values for
compatibility and convert them once, on entry, with :data:`SIGMA_UNIT`; everything
inside, and every result key named ``sigma*`` without ``_x10``, is in **pixels**.
``theta`` in the results keeps msaexp's layout ``[10 sigma, offset coefficients]``
(just the coefficients when sigma is fixed) so it can be passed back as ``x0``.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from slitcombine.core import geometry, profile
from slitcombine.errors import ConfigurationError, FitError

__all__ = ["TraceMethods", "SIGMA_UNIT"]

log = logging.getLogger(__name__)

#: msaexp's profile-width parameters are in pixels times this factor.
SIGMA_UNIT = 10.0

#: Keys of a fit result that are per-pixel or per-column arrays (not copied to meta).
_ARRAY_KEYS = (
    "ipos",
    "ineg",
    "diff",
    "bdiff",
    "vdiff",
    "wdiff",
    "profile",
    "model",
    "smod",
    "flux",
    "flux_err",
    "background",
    "sn",
    "snum",
    "sden",
    "svnum",
    "yslit",
)


def _polyval(coeffs, x):
    out = np.zeros_like(x, dtype=float)
    for c in coeffs:
        out = out * x + c
    return out


class TraceMethods:
    """Mixin of :class:`slitcombine.SlitGroup`: trace and profile fitting."""

    # ------------------------------------------------------------ helpers
    def _trace_fit_inputs(self, exp, shift_negatives=True):
        """Difference image of position ``exp`` and the fixed inputs of the profile model."""
        ipos, ineg, diff, bdiff, vdiff, wdiff = self._difference_image(exp)
        data = self.data
        mask = self.mask & np.isfinite(data)
        nx = self.sh[1]
        xn = geometry.normalized_x(self.xslit, nx)
        base = np.array([_polyval(self.base_coeffs[i], xn[i]) for i in range(self.N)])
        # positive exposures (and negative ones with shift_negatives): row minus the
        # base trace (the fitted offset is subtracted in the model); otherwise the
        # negative exposures keep their current trace-centred coordinate.
        moved = ipos | (ineg & bool(shift_negatives))
        ybase = np.where(moved[:, None], self.ypix - base, self.yslit)
        column = np.rint(self.xslit[0]).astype(np.intp)
        return dict(
            ipos=ipos,
            ineg=ineg,
            diff=diff,
            bdiff=bdiff,
            vdiff=vdiff,
            wdiff=wdiff,
            mask=mask,
            xn=xn[0],
            column=column,
            ybase=ybase,
        )

    def _base_rows(self):
        """``(N, nx)`` rows of the base traces (``base_coeffs``, zero offset)."""
        nx = self.sh[1]
        xn = geometry.normalized_x(np.arange(nx, dtype=float), nx)
        return np.array([_polyval(c, xn) for c in self.base_coeffs])

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
        sigma_prior=None,
        offset_prior=None,
        loss="huber",
        f_scale=7.0,
        background="auto",
        max_nfev=None,
        signal_threshold=5.0,
        shift_negatives=True,
        warn_at_bound=True,
        **kwargs,
    ):
        """Fit the profile width and trace-offset polynomial of one nod position.

        The model of the nod-difference image of position ``exp`` is, per column, a
        flux times :func:`slitcombine.core.profile.difference_profile` (the positive
        exposures' profiles, shifted by the offset polynomial, minus the negative
        exposures' at their current traces, averaged with the masks of the difference
        image).  The per-column fluxes are solved linearly; sigma and the offset
        polynomial are fitted with a bounded, robust ``scipy.optimize.least_squares``
        with the exact Jacobian (:func:`slitcombine.core.profile.fit_difference_profile`).

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
            Detection threshold (see :func:`slitcombine.core.profile.fit_difference_profile`);
            an undetected source gives ``status='NO_SIGNAL'`` with the start values.
        shift_negatives : bool
            Apply the offset polynomial to the negative exposures as well (their source
            is offset from its nominal trace like the positive one's).  False is
            msaexp's behaviour: the negatives stay at their current trace (which
            :meth:`fit_all_traces` updates between passes).
        warn_at_bound : bool
            Log a warning when a fitted parameter stops at its bound (the parameters
            are listed in ``at_bound`` either way).
        **kwargs
            Ignored (recorded in the result as ``ignored_kwargs``).

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
        deg = coeffs0.size - 1
        inp = self._trace_fit_inputs(exp, shift_negatives=shift_negatives)
        differenced = bool(np.any(inp["ineg"]))
        use_bkg = (not differenced) if background == "auto" else bool(background)
        common = dict(
            force_positive=force_positive,
            background=use_bkg,
            shift_negatives=shift_negatives,
        )
        args = (
            inp["ybase"],
            self.wave,
            inp["mask"],
            inp["ipos"],
            inp["ineg"],
            inp["xn"],
            inp["column"],
            inp["diff"],
            inp["vdiff"],
            deg,
        )
        optical = self.uses_optics()
        if optical and sigma_bounds[0] <= SIGMA_UNIT * 0.1:
            # the optics model describes a point source exactly at sigma = 0 (the
            # Gaussian model's floor of 0.1 px stands for what it lacks)
            sigma_bounds = (0.0, sigma_bounds[1])
        if optical:
            # the optics model: the source's image through this group's apertures
            from slitcombine.core.apertures import ApertureDifferenceModel

            model = ApertureDifferenceModel(
                self.source_image_model(), self._base_rows(), self.trace_rows(), *args, **common
            )
        else:
            model = profile.DifferenceProfileModel(*args, lookup_prf=self.profile_prf(), **common)
        if model.npix == 0:
            raise FitError(
                f"{self.name}: no valid pixel in the difference image of position {exp!r} "
                "(everything masked on the trace?)"
            )
        res = profile.fit_difference_profile(
            model,
            sigma0,
            coeffs0,
            fix_sigma=fixed,
            sigma_bounds=tuple(v / SIGMA_UNIT for v in sigma_bounds),
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
        ny, nx = self.sh
        sden = np.where(np.isfinite(res["flux_err"]), res["flux_err"] ** -2.0, 0.0)
        xn = inp["xn"]
        off = _polyval(res["trace_coeffs"], xn)
        ysl = inp["ybase"][inp["ipos"]] - off
        m = inp["mask"][inp["ipos"]]
        with np.errstate(invalid="ignore", divide="ignore"):
            ymean = np.where(m, ysl, 0).sum(axis=0) / m.sum(axis=0)
        theta = (
            res["trace_coeffs"].copy()
            if fixed
            else np.concatenate([[res["sigma"] * SIGMA_UNIT], res["trace_coeffs"]])
        )
        fit = {
            "exp": exp,
            "theta": theta,
            "sigma_x10": res["sigma"] * SIGMA_UNIT,
            "degree": deg,
            "initial_sigma": sigma0,
            "differenced": differenced,
            "background_fitted": use_bkg,
            "force_positive": bool(force_positive),
            "shift_negatives": bool(shift_negatives),
            "evaluate": bool(evaluate),
            "method_requested": method,
            "optimizer": "scipy.optimize.least_squares(trf)",
            "tol": tol,
            "with_bounds": bool(with_bounds),
            "sigma_bounds_px": tuple(v / SIGMA_UNIT for v in sigma_bounds),
            "trace_bounds_px": np.asarray(trace_bounds, float).tolist(),
            "sigma_prior": sigma_prior,
            "offset_prior": offset_prior,
            "psf_model": repr(model.prf),
            **res,
            "ipos": inp["ipos"],
            "ineg": inp["ineg"],
            "diff": inp["diff"],
            "bdiff": inp["bdiff"],
            "vdiff": inp["vdiff"],
            "wdiff": inp["wdiff"],
            "smod": res["model"].reshape(ny, nx),
            "yslit": ymean,
            "snum": np.nan_to_num(res["flux"]) * sden,
            "sden": sden,
            "svnum": sden.copy(),
        }
        if optical and not fixed and fit["sigma"] <= 1e-3 * fit["sigma_bounds_px"][1]:
            # a point source: sigma = 0 is where the model's parameter ends, not a bound
            fit["at_bound"] = [False] + list(fit["at_bound"][1:])
        if warn_at_bound and any(fit["at_bound"]):
            self._warn_at_bound(fit)
        if kwargs:
            fit["ignored_kwargs"] = sorted(kwargs)
            log.debug("%s: fit_single_trace ignores %s", self.name, sorted(kwargs))
        if not differenced:
            log.warning(
                "%s: position %r has no negative exposure: the profile is fitted to the "
                "un-differenced data with a constant background per column",
                self.name,
                exp,
            )
        level = logging.INFO if verbose else logging.DEBUG
        log.log(
            level,
            "%s: trace fit exp=%r %s sigma=%.4f px offset=%s chi2 %.1f -> %.1f (%d evals) "
            "%s in %.3f s",
            self.name,
            exp,
            "evaluated" if evaluate else "fitted",
            fit["sigma"],
            np.array2string(fit["trace_coeffs"], precision=4),
            fit["chi2_init"],
            fit["chi2_fit"],
            fit["nfev"],
            fit["status"],
            time.perf_counter() - t0,
        )
        return fit

    @staticmethod
    def _at_bound_names(fit):
        """Names (``sigma``, ``c2``, ``c1``, ``c0`` ...) of the parameters of a
        :meth:`fit_single_trace` result that stopped at a bound."""
        names = (["sigma"] if not fit["fix_sigma"] else []) + [
            f"c{k}" for k in range(fit["degree"], -1, -1)
        ]
        return [n for n, a in zip(names, fit["at_bound"], strict=False) if a]

    def _warn_at_bound(self, fit, widened=False):
        """Log which parameters of a fit stopped at its bounds, with advice.

        ``widened``: the bounds were already widened as far as the slitlet allows
        (``widen_bounds=True``), so the advice is not to widen them.
        """
        hit = self._at_bound_names(fit)
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

    def _widened_bounds(self, fit):
        """Bounds for a refit when the width or the constant offset stopped at a bound.

        Returns ``(sigma_bounds, trace_bounds, widened)`` (msaexp units: sigma in
        pixels x 10, ``trace_bounds`` one pair per coefficient), starting from the
        bounds the fit used, or None when neither the upper width bound nor a bound of
        the constant offset ``c0`` was hit, or the physical limits are already
        reached, or the width sits at its *lower* bound (a degenerate fit).  Limits,
        with the nod step ``|meta['nod_offset']|`` (pixels; one shutter pitch unless
        given): sigma up to one nod step (a wider source fills the slitlet), ``|c0|``
        up to half a nod step (the next shutter); the slope and curvature bounds are
        kept.
        """
        hit = set(self._at_bound_names(fit))
        slo, shi = (v * SIGMA_UNIT for v in fit["sigma_bounds_px"])
        # ``hit`` says the width is at a bound; which one, its side of the middle does
        width_at_upper = fit["sigma"] * SIGMA_UNIT > 0.5 * (slo + shi)
        if "sigma" in hit and not width_at_upper:
            # a width at its lower bound: a degenerate fit (a cosmic ray, no source
            # profile), not a source beyond the bounds
            return None
        step = abs(self.meta.get("nod_offset") or np.nan)
        if not np.isfinite(step) or step == 0:
            step = geometry.MSA_NOD_ARCSEC / self.slit_pixel_scale
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
        return (slo, shi), cb, widened

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

    def _refit_widened(self, p, fit, kw, chi2_nominal, dchi_threshold, warn=True):
        """Refit position ``p`` with wider bounds while a significant fit stops at one.

        A refit is kept only if it lowers chi2 by more than ``-dchi_threshold`` (the
        gain asked of any fit over the nominal traces).  Returns the best fit and the
        keyword arguments (bounds) that gave it; the fit records what was widened
        (``widened_bounds``) and the evaluations of the fits it replaced
        (``nfev_replaced``).
        """
        best, best_kw = fit, kw
        for _ in range(2):  # the width and the offset may each need one widening
            significant = (
                best["status"] == "OK" and best["chi2_fit"] - chi2_nominal < dchi_threshold
            )
            wide = self._widened_bounds(best) if significant else None
            if wide is None:
                break
            sigma_bounds, trace_bounds, what = wide
            trial_kw = dict(
                best_kw, sigma_bounds=sigma_bounds, trace_bounds=trace_bounds, x0=best["theta"]
            )
            trial = self.fit_single_trace(exp=p, warn_at_bound=False, **trial_kw)
            gain = best["chi2_fit"] - trial["chi2_fit"]
            # the fit at the bound is already significant (above); inside wider bounds
            # the same model with a lower chi2 is the better estimate: a width or an
            # offset held at a bound biases the path loss and the flux (an extended
            # source of 2.3 px held at 2 px: flux/truth 0.81)
            if not (trial["success"] and gain > 0):
                log.info(
                    "%s: position %s: refit with %s not kept (chi2 gain %.2f)",
                    self.name,
                    p,
                    ", ".join(what),
                    gain,
                )
                break
            log.info(
                "%s: position %s: the fit stopped at a bound; refitted with %s: sigma "
                "%.3f -> %.3f px, offset %.3f -> %.3f px, chi2 %.1f -> %.1f",
                self.name,
                p,
                ", ".join(what),
                best["sigma"],
                trial["sigma"],
                best["trace_coeffs"][-1],
                trial["trace_coeffs"][-1],
                best["chi2_fit"],
                trial["chi2_fit"],
            )
            trial["widened_bounds"] = list(best.get("widened_bounds", [])) + what
            trial["nfev_replaced"] = best.get("nfev_replaced", 0) + best["nfev"]
            best, best_kw = trial, {k: v for k, v in trial_kw.items() if k != "x0"}
        if warn and any(best["at_bound"]):
            self._warn_at_bound(best, widened=True)
        return best, best_kw

    def fit_all_traces(self, niter=3, dchi_threshold=-25, ref_exp=2, widen_bounds=False, **kwargs):
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
        exact: ``niter`` is then not needed (``meta`` records the passes made).

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
            chi2 by more than ``-dchi_threshold`` too (recorded as ``widened_bounds``
            in the fit and in ``meta``).  Not done when the width sits at its lower
            bound (a degenerate fit).  False (msaexp's behaviour): the bounds are
            final.  :func:`slitcombine.pipeline.combine.combine` sets it unless ``sigma_bounds``
            or ``trace_bounds`` are given: with the default bounds (0.1-2 px width, +-1
            px offsets) a simulated PRISM source 0.3 open-shutter heights (1.3 px) off
            centre lost 9% of its flux and a 2.5 px wide one 20%.
        **kwargs
            Passed to :meth:`fit_single_trace` (``degree``, ``fix_sigma``,
            ``initial_sigma``, priors ...).

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
        ref, ref_note = self._resolve_ref_exp(ref_exp)
        positions = list(self.unp.values)
        order = positions if ref is None else [ref] + [p for p in positions if p != ref]
        kw_x0 = kwargs.pop("x0", None)
        warn = bool(kwargs.pop("warn_at_bound", True))
        kwargs.pop("evaluate", None)
        kwargs.pop("exp", None)
        fits, history, chi2_nominal, accepted = {}, {p: [] for p in positions}, {}, {}
        fitted = positions if ref is None else [ref]
        # With shift_negatives (default) the model of a position does not depend on the
        # current traces (all exposures move with the fitted offset): one pass is exact.
        # Otherwise the negative traces are those of the previous pass: iterate.
        shift = kwargs.get("shift_negatives", True)
        npass = 1 if shift else int(niter)
        passes = 0

        def record(p, k, fit):
            history[p].append(
                {
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
            )

        bounds_kw = {}  # per position: bounds widened in an earlier pass
        widened = {}  # per position: what was widened (kept through later passes)
        for k in range(npass):
            passes = k + 1
            change = 0.0
            for p in fitted:
                kw = dict(kwargs, **bounds_kw.get(p, {}))
                if p in fits:
                    kw["x0"] = fits[p]["theta"]
                elif kw_x0 is not None:
                    kw["x0"] = kw_x0
                fit = self.fit_single_trace(exp=p, warn_at_bound=warn and not widen_bounds, **kw)
                if k == 0:
                    chi2_nominal[p] = fit["chi2_init"]
                if widen_bounds:
                    fit, used_kw = self._refit_widened(
                        p, fit, kw, chi2_nominal[p], dchi_threshold, warn=warn
                    )
                    if "widened_bounds" in fit:
                        bounds_kw[p] = {
                            key: used_kw[key] for key in ("sigma_bounds", "trace_bounds")
                        }
                        widened[p] = list(dict.fromkeys(widened.get(p, []) + fit["widened_bounds"]))
                    if p in widened:  # also a later pass inside the widened bounds
                        fit["widened_bounds"] = widened[p]
                if p in fits:
                    dc = np.abs(fit["trace_coeffs"] - fits[p]["trace_coeffs"])
                    ds = abs(fit["sigma"] - fits[p]["sigma"])
                    change = max(change, ds, float(np.max(dc)))
                else:
                    change = np.inf
                record(p, k, fit)
                fits[p] = fit
                accepted[p] = bool(
                    fit["success"] and fit["chi2_fit"] - chi2_nominal[p] < dchi_threshold
                )
                if accepted[p]:
                    sel = np.ones(self.N, bool) if ref is not None else fit["ipos"]
                    self._set_offsets(sel, fit["trace_coeffs"])
            self.update_trace_from_coeffs()
            if change < 1e-4:  # px, in sigma and every offset coefficient
                break
        if ref is not None:
            # the other positions: evaluated with the reference parameters
            for p in positions:
                if p == ref:
                    continue
                kw = dict(kwargs, **bounds_kw.get(ref, {}), x0=fits[ref]["theta"], evaluate=True)
                fit = self.fit_single_trace(exp=p, **kw)
                chi2_nominal[p] = np.nan
                record(p, passes - 1, fit)
                fits[p] = fit
                accepted[p] = accepted[ref]
        for p in positions:
            fits[p]["accepted"] = accepted[p]
            fits[p]["ref_exp"] = ref
            fits[p]["iterations"] = history[p]
            fits[p]["dchi2_nominal"] = fits[p]["chi2_fit"] - chi2_nominal[p]
        self.fit = fits
        elapsed = time.perf_counter() - t0
        any_ok = any(accepted.values())
        details = {
            "ref_exp": ref,
            "ref_exp_requested": ref_exp,
            "niter": int(niter),
            "passes": passes,
            "dchi_threshold": dchi_threshold,
            "sigma_px": {p: round(fits[p]["sigma"], 5) for p in positions},
            "sigma_err_px": {p: round(fits[p]["sigma_err"], 5) for p in positions},
            "offset_px": {p: round(float(fits[p]["trace_coeffs"][-1]), 5) for p in positions},
            "trace_coeffs": {
                p: [round(float(c), 6) for c in fits[p]["trace_coeffs"]] for p in positions
            },
            "dchi2_nominal": {p: round(fits[p]["dchi2_nominal"], 2) for p in fitted},
            "accepted": accepted,
            "fit_status": {p: fits[p]["status"] for p in positions},
            "differenced": {p: fits[p]["differenced"] for p in positions},
            "nfev": sum(h["nfev"] for p in positions for h in history[p]),
            "widen_bounds": bool(widen_bounds),
            "psf_model": fits[order[0]]["psf_model"],
            "widened_bounds": {
                p: fits[p]["widened_bounds"] for p in fitted if "widened_bounds" in fits[p]
            },
            "fit_kwargs": {k: v for k, v in kwargs.items() if np.isscalar(v) or v is None},
        }
        if ref_note:
            details["ref_exp_fallback"] = ref_note
        if not any_ok:
            undetected = [p for p in fitted if fits[p]["status"] == "NO_SIGNAL"]
            failed = {
                p: fits[p]["status"]
                for p in fitted
                if not fits[p]["success"] and p not in undetected
            }
            details["fallback_reason"] = (
                "not converged" if failed else "undetected" if undetected else "insignificant"
            )
            if failed:
                details["fallback"] = (
                    f"the fit did not converge (status {failed}): no fit applied, the "
                    "nominal traces are kept"
                )
                log.warning("%s: trace fit: %s", self.name, details["fallback"])
            elif undetected:
                # Nothing to fit: worth a warning (the extraction profile is nominal).
                details["fallback"] = (
                    f"source not detected at position(s) {undetected}: no fit applied, "
                    "the nominal traces are kept"
                )
                log.warning("%s: trace fit: %s", self.name, details["fallback"])
            else:
                # A detected source that the nominal traces already describe to within
                # dchi_threshold: the normal outcome for a well-placed source.
                best = min(fits[p]["chi2_fit"] - chi2_nominal[p] for p in fitted)
                details["fallback"] = (
                    f"the fit improves chi2 by {-best:.1f} only (dchi_threshold "
                    f"{dchi_threshold}): the nominal traces are kept"
                )
                log.info("%s: trace fit: %s", self.name, details["fallback"])
        self._step("trace_fit", "COMPLETE" if any_ok else "FALLBACK", **details)
        log.debug("%s: fit_all_traces in %.3f s", self.name, elapsed)
        return fits

    # ------------------------------------------------------------ S/N
    def get_trace_sn(self, exposure_position="auto", theta=None, force_positive=True, **kwargs):
        """Spectrum S/N along the trace, from the profile model evaluated (not fitted).

        Parameters
        ----------
        exposure_position : position value or 'auto'
            Position whose difference image is used ('auto':
            :attr:`calc_reference_exposure`).
        theta : array-like or None
            Model parameters in msaexp's layout, ``[10 sigma, offset coefficients]``;
            None means ``[4.0, 0]`` (sigma 0.4 px, nominal trace).  With ``fix_sigma`` in
            ``kwargs`` the first element is dropped.
        force_positive : bool
            As :meth:`fit_single_trace`.
        **kwargs
            Passed to :meth:`fit_single_trace`.

        Returns
        -------
        dict
            The :meth:`fit_single_trace` result; ``sn`` is ``flux / flux_err`` per
            column (NaN where no valid pixel).
        """
        theta = [4.0, 0.0] if theta is None else list(theta)
        pos = self.calc_reference_exposure if exposure_position == "auto" else exposure_position
        fix = kwargs.get("fix_sigma", -1)
        x0 = theta[1:] if (fix is not None and fix > 0) else theta
        kwargs.setdefault("verbose", False)
        for key in ("x0", "exp", "evaluate"):
            kwargs.pop(key, None)
        return self.fit_single_trace(
            x0=x0, exp=pos, evaluate=True, force_positive=force_positive, **kwargs
        )

    def fit_params_by_sn(self, sn_percentile=80, sigma_threshold=5, degree_sn=None, **kwargs):
        """Offset-polynomial degree and whether to fix the width, from the trace S/N.

        Parameters
        ----------
        sn_percentile : float
            Percentile of the per-column S/N (:meth:`get_trace_sn`) that characterises
            the source.
        sigma_threshold : float
            Below this S/N the width should be fixed (``fix_sigma`` True).
        degree_sn : [array-like, array-like] or None
            ``x_sn, y_degree``: the degree is ``int(np.interp(sn_value, x_sn, y_degree))``;
            None means ``[[-1000], [0]]`` (always 0).
        **kwargs
            Passed to :meth:`get_trace_sn`.

        Returns
        -------
        sn : numpy.ndarray
            S/N per column.
        sn_value : float
            Its ``sn_percentile`` percentile (over columns with a finite S/N).
        fix_sigma : bool
            ``sn_value < sigma_threshold``.
        interp_degree : int
            The degree for that S/N.

        Raises
        ------
        FitError
            If no column has a finite S/N.
        """
        if degree_sn is None:
            degree_sn = [[-1000], [0]]
        x_sn, y_deg = (np.atleast_1d(np.asarray(a, float)) for a in degree_sn)
        if x_sn.size != y_deg.size or x_sn.size == 0:
            raise ConfigurationError(f"degree_sn must be two equal-length lists, got {degree_sn}")
        tfit = self.get_trace_sn(**kwargs)
        sn = tfit["sn"]
        good = sn[np.isfinite(sn)]
        if good.size == 0:
            raise FitError(f"{self.name}: no column with a finite S/N along the trace")
        sn_value = float(np.percentile(good, sn_percentile))
        fix_sigma = bool(sn_value < sigma_threshold)
        interp_degree = int(np.interp(sn_value, x_sn, y_deg))
        self._step(
            "trace_fit_params",
            "COMPLETE",
            sn_percentile=sn_percentile,
            sn_value=round(sn_value, 4),
            sigma_threshold=sigma_threshold,
            fix_sigma=fix_sigma,
            degree=interp_degree,
            ncol=int(good.size),
        )
        return sn, sn_value, fix_sigma, interp_degree

    # ------------------------------------------------------------ figure
    def plot_profile(self, exp=1, ax=None, fit_result=None, ymax=0.2):
        """Cross-dispersion profile of the difference image of one nod position.

        The difference image (uJy per pixel) is plotted against the trace-centred row
        of the positive exposures, with its running median; with ``fit_result`` (a
        :meth:`fit_single_trace` result or :attr:`fit` entry) the fitted model and its
        coordinate at the fitted offset are used and the model is over-plotted.

        Parameters
        ----------
        exp : position value
            Nod position (ignored when ``fit_result`` is given: its own position).
        ax : matplotlib.axes.Axes or None
            Axes to draw on; None creates a :class:`matplotlib.figure.Figure`.
        fit_result : dict or None
            A fit result.
        ymax : float or None
            Upper y limit (uJy); the lower limit is ``-0.5 ymax``.  None: automatic.

        Returns
        -------
        matplotlib.figure.Figure
            The figure (that of ``ax`` if given).
        """
        from matplotlib.figure import Figure

        if ax is None:
            fig = Figure(figsize=(6, 4))
            ax = fig.add_subplot(111)
        else:
            fig = ax.figure
        if fit_result is not None:
            diff, y = fit_result["diff"], fit_result["yslit"]
            exp = fit_result.get("exp", exp)
        else:
            ipos, _, diff, *_ = self._difference_image(exp)
            m = self.mask[ipos]
            with np.errstate(invalid="ignore", divide="ignore"):
                y = np.where(m, self.yslit[ipos], 0).sum(axis=0) / m.sum(axis=0)
        ok = np.isfinite(diff) & np.isfinite(y)
        ax.scatter(
            y[ok], diff[ok], s=2, alpha=0.3, color="0.5", label="difference image", rasterized=True
        )
        if ok.sum() > 10:
            order = np.argsort(y[ok])
            ys, ds = y[ok][order], diff[ok][order]
            edges = np.arange(np.floor(ys.min()), np.ceil(ys.max()) + 0.25, 0.25)
            idx = np.digitize(ys, edges)
            cen = [np.median(ys[idx == i]) for i in np.unique(idx)]
            med = [np.median(ds[idx == i]) for i in np.unique(idx)]
            ax.plot(cen, med, color="k", lw=1.5, label="median")
        if fit_result is not None:
            mod = fit_result["model"]
            okm = np.isfinite(mod) & np.isfinite(y)
            ax.scatter(
                y[okm],
                mod[okm],
                s=2,
                color="tab:red",
                alpha=0.4,
                rasterized=True,
                label=f"model: sigma={fit_result['sigma']:.3f} px, "
                f"offset={float(fit_result['trace_coeffs'][-1]):+.3f} px",
            )
        ax.axhline(0, color="0.3", lw=0.5)
        ax.axvline(0, color="0.3", lw=0.5, ls=":")
        if ymax is not None:
            ax.set_ylim(-0.5 * ymax, ymax)
        ax.set_xlabel("cross-dispersion offset from the trace (pixels)")
        ax.set_ylabel("difference (uJy / pixel)")
        ax.set_title(f"{self.name}: position {exp}")
        ax.legend(loc="upper right", fontsize=7)
        return fig
