"""``SlitGroup`` methods for outlier rejection.

Methods: flag_hot_cold_pixels, flag_percentile_outliers, flag_from_profile,
flag_trace_outliers, flag_2d_outliers, apply_multiple_mask.

They are thin: they read the group's arrays, call the pure functions of
:mod:`slitcombine.core.outliers` (where the statistics are documented), set their own bit of
:class:`slitcombine.core.masks.Reject` and record their counts in ``meta['steps']``.
``SlitGroup`` inherits this class; its only state is a private cache of the last
consensus computation (``_outlier_consensus``, see :meth:`OutlierMethods._consensus`).

Every step compares a pixel with what should look like it, in units of its own error:
its row (running medians along the dispersion), the other exposures at the same source
position (a nodded source moves, a cosmic ray does not follow it), the same detector
pixel in the other exposures, or a profile model.  See
:func:`slitcombine.core.consensus.consensus_residuals`.

Defaults as in the seed: the constructor runs flag_trace_outliers,
flag_percentile_outliers and (N > 2) apply_multiple_mask; flag_hot_cold_pixels,
flag_from_profile and flag_2d_outliers only when their options are given.

Bad input never raises from inside numpy: with no valid pixel a step is recorded as
``SKIPPED`` with its reason and a log line.  With a single exposure there is no other
exposure to compare with: pixels near the trace are judged by a sharpness test (a real
source is spread by the PSF and the line-spread function, a cosmic ray is not), pixels
far from it against the rows above and below; this finds the cosmic rays well above 10
sigma (96 % of those of >= 10 sigma on the simulations) but not a streak along the slit
on the trace.  The multiple-exposure mask needs three exposures (with two, "most but not
all" does not exist): it is skipped with a log line and the reason in ``meta``.
"""

from __future__ import annotations

import logging

import numpy as np

from slitcombine.core import outliers
from slitcombine.core.masks import Reject

__all__ = ["OutlierMethods"]

log = logging.getLogger(__name__)

#: Default ``dilate_structure`` of :meth:`OutlierMethods.flag_2d_outliers` (plus).
_PLUS3 = ((0, 1, 0), (1, 1, 1), (0, 1, 0))
#: Rejection bits set by this module (a consensus computed before them stays usable).
_OWN_BITS = (
    Reject.HOT_COLD
    | Reject.PERCENTILE
    | Reject.TRACE
    | Reject.PROFILE
    | Reject.OUTLIER_2D
    | Reject.MULTIPLE
)
#: Row-model window (columns) of the default steps.
_FILTER_SIZE = 13


class OutlierMethods:
    """Mixin of :class:`slitcombine.SlitGroup`: outlier rejection."""

    # ------------------------------------------------------------------ helpers
    def _outlier_inputs(self):
        """Data (uJy/pixel, NaN where masked), its variance (uJy^2) and the valid mask.

        The variance follows :attr:`data`: multiplied by ``bar**2`` when the data are.
        """
        data = self.data
        var = self.var
        if self.meta.get("undo_barshadow") is True:
            var = var * self.bar**2
        valid = self.mask & np.isfinite(data)
        return data, var, valid

    def _consensus(self, filter_size=_FILTER_SIZE, **kwargs):
        """Consensus residuals of the current data (see :mod:`slitcombine.core.outliers`).

        The last result is kept in ``self._outlier_consensus`` and reused when nothing
        but this module's own rejections changed since (same options, same data and
        variance on the pixels then valid, traces unchanged); the pixels rejected since
        are then set to NaN.  This lets the constructor run flag_trace_outliers and
        flag_percentile_outliers on one computation.
        """
        data, var, valid = self._outlier_inputs()
        key = (int(filter_size), repr(sorted(kwargs.items())))
        cached = getattr(self, "_outlier_consensus", None)
        if cached is not None and cached["key"] == key:
            old_valid = cached["valid"]
            removed = old_valid & ~valid
            own = (self.reject & np.uint32(_OWN_BITS)) > 0
            same = (
                not np.any(valid & ~old_valid)
                and not np.any(removed & ~own)
                and np.array_equal(data[valid], cached["data"][valid])
                and np.array_equal(var[valid], cached["var"][valid])
                and np.array_equal(self.yslit, cached["yslit"])
            )
            if same:
                res = cached["result"]
                if removed.any():
                    for name in ("z", "z_high", "z_low"):
                        arr = getattr(res, name).copy()
                        arr[removed] = np.nan
                        setattr(res, name, arr)
                cached["valid"] = valid
                return res, data, var, valid
        res = outliers.consensus_residuals(
            data, var, valid, self.yslit, self.wave, self.sh, filter_size=filter_size, **kwargs
        )
        self._outlier_consensus = {
            "key": key,
            "valid": valid,
            "data": data,
            "var": var,
            "yslit": self.yslit.copy(),
            "result": res,
        }
        return res, data, var, valid

    def _nothing_to_flag(self, step, needed=1):
        """Record and log a step that cannot run (too few valid pixels)."""
        n = int(self.mask.sum())
        if n >= needed:
            return False
        reason = f"only {n} valid pixels (need {needed})"
        log.warning("%s: %s skipped: %s", self.name, step, reason)
        self._step(step, "SKIPPED", reason=reason)
        return True

    def _record(self, step, **details):
        """``_step(step, 'COMPLETE', ...)``, keeping an earlier run of the same step."""
        prev = self.meta["steps"].get(step)
        if prev is not None and prev.get("status") == "COMPLETE":
            earlier = prev.pop("previous", [])
            details["previous"] = [*earlier, prev]
        self._step(step, "COMPLETE", **details)

    def _broadcast_pixels(self, per_pixel):
        return np.broadcast_to(np.asarray(per_pixel, bool)[None, :], self.mask.shape)

    # ------------------------------------------------------------------ trace
    def flag_trace_outliers(self, yslit=None, filter_size=-2, threshold=1.5, sn_threshold=5.0):
        """Flag pixels brighter than the source could make them (bit TRACE).

        The envelope of the source at each wavelength is the largest excess over the
        column's sky inside the trace band ``yslit``, combined over exposures (median,
        or minimum of two, so a cosmic ray on one trace cannot raise it) and widened by
        a running maximum over ``filter_size`` columns.  A pixel is rejected when its
        excess over the sky exceeds ``threshold`` times that envelope **and** its
        consensus residual S/N exceeds ``sn_threshold`` (so a feature seen at the same
        source position in the other exposures is never rejected).  This flux-ratio
        test does not depend on the variances, so it also catches the brightest cosmic
        rays and hot pixels whose pipeline variance is inflated.

        Parameters
        ----------
        yslit : [float, float] or None
            Trace band, pixels (seed default ``[-2, 2]``).
        filter_size : int
            Half-width of the running maximum, columns; the seed's negative convention
            (``-filter_size * N`` pixels of a wavelength-sorted list) maps to
            ``|filter_size|`` columns.
        threshold : float
            Ratio to the source envelope (seed meaning).
        sn_threshold : float
            Minimum residual S/N (the seed used 3 sigma on the data).

        Returns
        -------
        outlier : numpy.ndarray or None
            ``(N, ny*nx)`` boolean, or None if the step could not run (fewer than 100
            valid pixels, or ``position_key='manual_position'``).
        """
        step = "flag_trace"
        yslit = [-2.0, 2.0] if yslit is None else list(yslit)
        if self.position_key == "manual_position":
            self._step(step, "SKIPPED", reason="position_key='manual_position'")
            return None
        if self._nothing_to_flag(step, needed=101):
            return None
        res, data, _, valid = self._consensus()
        flags, env = outliers.trace_envelope_outliers(
            data,
            valid,
            self.yslit,
            res.z_high,
            self.sh,
            yslit_range=yslit,
            filter_size=filter_size,
            threshold=threshold,
            sn_threshold=sn_threshold,
        )
        n_new = self._reject_pixels(flags, Reject.TRACE)
        self._record(
            step,
            n_outliers=int(flags.sum()),
            n_rejected=n_new,
            per_exposure=flags.sum(axis=1).tolist(),
            yslit=yslit,
            filter_size=filter_size,
            threshold=threshold,
            sn_threshold=sn_threshold,
            envelope_columns=int(np.isfinite(env).sum()),
        )
        log.info("%s: trace outliers: %d pixels", self.name, int(flags.sum()))
        return flags

    # ------------------------------------------------------------------ 2D
    def flag_2d_outliers(
        self,
        filter_size=5,
        threshold=None,
        with_mask=False,
        dilate_structure=_PLUS3,
        in_place=True,
    ):
        """Flag low and high outliers against the pixel's neighbours (bit OUTLIER_2D).

        The statistic is the consensus residual S/N: the pixel against its neighbours
        along the dispersion (row model using ``filter_size`` columns on each side) and,
        at the same source position, the other exposures.  Unlike
        :meth:`flag_percentile_outliers` it is two-sided with fixed limits, so it also
        rejects isolated low pixels (unflagged cold pixels, over-subtracted artefacts).

        Parameters
        ----------
        filter_size : int
            Columns used on each side of the pixel by the row model (beyond its nearest
            neighbours): the row-model window is ``2 filter_size + 3`` columns, 13 for
            the seed's 5, the same as the default steps (whose computation is then
            reused).
        threshold : [float, float] or None
            Low and high S/N limits (seed default ``[-5, 5]``).
        with_mask : bool
            Also return the boolean outlier array.
        dilate_structure : array-like or None
            Neighbourhood searched around each outlier; a neighbour is added if its
            residual S/N is beyond 3 with the same sign (plus-shaped by default).
        in_place : bool
            Apply the rejection to the group; if False only compute.

        Returns
        -------
        int or (int, numpy.ndarray)
            Number of outlier pixels, and the ``(N, ny*nx)`` boolean outliers if
            ``with_mask``.
        """
        step = "flag_2d"
        threshold = [-5.0, 5.0] if threshold is None else list(threshold)
        if self._nothing_to_flag(step):
            return (0, np.zeros(self.mask.shape, bool)) if with_mask else 0
        res, _, _, _ = self._consensus(filter_size=2 * int(filter_size) + 3)
        low, high = outliers.neighbour_outliers(res.z_high, res.z_low, threshold=threshold)
        footprint = None if dilate_structure is None else np.asarray(dilate_structure)
        high = outliers.grow_flags(high, res.z_high, self.sh, footprint, 3.0)
        low = outliers.grow_flags(low, -res.z_low, self.sh, footprint, 3.0)
        flags = low | high
        n_new = self._reject_pixels(flags, Reject.OUTLIER_2D) if in_place else 0
        if in_place:
            self._record(
                step,
                n_low=int(low.sum()),
                n_high=int(high.sum()),
                n_rejected=n_new,
                threshold=threshold,
                filter_size=filter_size,
            )
        log.info("%s: 2D outliers: %d low, %d high", self.name, int(low.sum()), int(high.sum()))
        n = int(flags.sum())
        return (n, flags) if with_mask else n

    # ------------------------------------------------------------------ profile
    def _profile_sigma(self):
        """Intrinsic source width (pixels) from :attr:`fit` if a fit exists, else 0."""
        fit = self.fit
        values = []
        if isinstance(fit, dict):
            for v in fit.values():
                if isinstance(v, dict) and "sigma" in v:
                    values.append(float(np.asarray(v["sigma"]).ravel()[0]))
            if "sigma" in fit:
                values.append(float(np.asarray(fit["sigma"]).ravel()[0]))
        values = [v for v in values if np.isfinite(v)]
        if values:
            return float(np.median(values)), "fit"
        return 0.0, "point source (no fit)"

    def flag_from_profile(self, grow=2, nfilt=-32, require_multiple=True, make_plot=False):
        """Flag outliers against the cross-dispersion profile model (bit PROFILE).

        Each exposure and column is fitted as sky + flux x profile (the profile of
        :func:`slitcombine.core.profile.pixel_profile` with the width of :attr:`fit` if
        the traces have been fitted, else a point source), and the residuals are
        normalised by ``sqrt(var + (0.3 F P)^2)``.  As in the seed, running 5th, 50th
        and 95th percentiles of these residuals along ``yslit`` give the limits: high
        ``> p95 + grow (p95 - p50)``, low ``< min(p5, 0) - 5`` (S/N instead of flux).

        Parameters
        ----------
        grow : float
            See above.
        nfilt : int
            Pixels per running-percentile bin; negative: valid pixels / ``-nfilt``.
        require_multiple : bool
            Keep only detector pixels flagged in most exposures (2 of 3, 3 of 4 ...;
            both of two) and reject them in all: the step then finds detector defects,
            not cosmic rays.
        make_plot : bool
            Also return a diagnostic figure (needs matplotlib).

        Returns
        -------
        int or (int, matplotlib.figure.Figure)
            Number of pixels newly rejected (and the figure if ``make_plot``).
        """
        from slitcombine.core import profile as _profile

        step = "flag_profile"
        if self._nothing_to_flag(step, needed=20):
            return (0, None) if make_plot else 0
        data, var, valid = self._outlier_inputs()
        sigma, sigma_source = self._profile_sigma()
        prof = _profile.pixel_profile(self.yslit, self.wave, sigma, lookup_prf=self.profile_prf())
        high, low, zp, info = outliers.profile_outliers(
            data, var, valid, self.yslit, prof, self.sh, grow=grow, nfilt=nfilt
        )
        flags = high | low
        need = None
        if require_multiple:
            if self.N >= 3:
                need = outliers.majority_count(self.N)
            elif self.N == 2:
                need = 2
            else:
                log.info("%s: %s: require_multiple ignored with one exposure", self.name, step)
            if need is not None:
                flags = self._broadcast_pixels(flags.sum(axis=0) >= need)
        n_new = self._reject_pixels(flags, Reject.PROFILE)
        self._record(
            step,
            n_high=int(high.sum()),
            n_low=int(low.sum()),
            n_rejected=n_new,
            require_multiple=bool(require_multiple),
            n_required=need,
            sigma=sigma,
            sigma_source=sigma_source,
            grow=grow,
            nfilt=nfilt,
            **info,
        )
        log.info("%s: profile outliers: %d pixels rejected", self.name, n_new)
        if make_plot:
            from slitcombine.plots import profile_residual_figure

            return n_new, profile_residual_figure(self.yslit, zp, flags)
        return n_new

    # ------------------------------------------------------------------ multiple
    def apply_multiple_mask(self):
        """Reject in all exposures the detector pixels rejected in most of them.

        "Most" is a strict majority: 2 of 3, 3 of 4, 3 of 5, 4 of 6 ... (msaexp used
        ``2 (N // 3)``, i.e. 2 of 4 and 2 of 5).  With fewer than three exposures the
        step does nothing and says so (with two, "most but not all" does not exist).
        Sets bit MULTIPLE.

        Returns
        -------
        int
            Number of pixels newly rejected.
        """
        step = "multiple_mask"
        need = outliers.majority_count(self.N)
        if need is None:
            reason = f"N={self.N} exposures: no majority short of all"
            log.info("%s: %s skipped: %s", self.name, step, reason)
            self._step(step, "SKIPPED", reason=reason)
            return 0
        if self._nothing_to_flag(step):
            return 0
        per_pixel = outliers.multiple_exposure_mask(~self.mask)
        n_new = self._reject_pixels(self._broadcast_pixels(per_pixel), Reject.MULTIPLE)
        self._record(step, n_pixels=int(per_pixel.sum()), n_rejected=n_new, n_required=need)
        log.info("%s: multiple-exposure mask: %d pixels rejected", self.name, n_new)
        return n_new
