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
from slitcombine.group.steps import UNUSED, ignore_seed_keywords

__all__ = ["OutlierMethods"]

log = logging.getLogger(__name__)

#: Default ``dilate`` footprint of :meth:`OutlierMethods.flag_percentile_outliers`
#: (the seed's 3x3 ones; a tuple, so that the default cannot be mutated).
_SQUARE3 = ((1, 1, 1), (1, 1, 1), (1, 1, 1))
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

    # ------------------------------------------------------------------ noisy pixels
    def flag_slit_hot_pixels(
        self,
        rnoise_threshold=16.0,
        dilate=True,
        max_allowed_flagged=128,
        *,
        rnoise_percentile=UNUSED,
        corner_threshold=UNUSED,
        jwst_dq_flags=UNUSED,
        dilate_footprint=UNUSED,
        verbose=UNUSED,
    ):
        """Flag pixels whose read-noise error dwarfs their column's (bit NOISY).

        The constructor step of ``slit_hotpix_kwargs`` (on by default, as in msaexp).
        msaexp flags isolated pixels whose ``sqrt(VAR_RNOISE)`` exceeds 16 times the
        90th percentile of the slit, grown by a plus; here the reference is the median
        of the pixel's own column in the same exposure
        (:func:`slitcombine.core.masks.noisy_pixels`), which does not change by a factor
        ~100 along a PRISM spectrum as the slit-wide percentile does.  Such pixels
        carry no information (the outlier steps, working in units of the error, cannot
        see them) but dominate unweighted sums such as the boxcar.

        Parameters
        ----------
        rnoise_threshold : float
            Ratio of read-noise errors (pixel / column median) from which a pixel is
            flagged.  Skipped (``SKIPPED``, with the reason) when an exposure has no
            VAR_RNOISE extension: the reader's ERR**2 stand-in includes Poisson noise.
        dilate : bool or int
            Also flag the neighbours (plus-shaped, this many pixels; True = 1): the
            inter-pixel capacitance couples a bad pixel to them.
        max_allowed_flagged : int
            An exposure with more flagged pixels than this (before dilation) is left
            alone, with a warning: the read-noise map itself is then suspect.
        rnoise_percentile, corner_threshold, jwst_dq_flags, dilate_footprint, verbose
            Options of msaexp's hot-pixel function, accepted for compatibility and
            ignored (:func:`slitcombine.group.steps.ignore_seed_keywords`; also listed
            in the step's ``ignored_kwargs``).

        Returns
        -------
        int
            Number of newly rejected pixels.
        """
        from slitcombine.core.masks import dilate_stack, noisy_pixels

        step = "slit_hotpix"
        ignored = ignore_seed_keywords(
            self,
            step,
            rnoise_percentile=rnoise_percentile,
            corner_threshold=corner_threshold,
            jwst_dq_flags=jwst_dq_flags,
            dilate_footprint=dilate_footprint,
            verbose=verbose,
        )
        derived = [s.path.name for s in self.slits if "VAR_RNOISE" in s.fallbacks]
        if derived:
            # ERR**2 stands in for the read noise there: it holds the source's Poisson
            # noise, so the brightest trace pixels would look "noisy".
            reason = f"no VAR_RNOISE in {derived} (ERR**2 includes the source's noise)"
            log.info("%s: %s skipped: %s", self.name, step, reason)
            self._step(step, "SKIPPED", reason=reason)
            return 0
        ny, nx = self.sh
        shape = (self.N, ny, nx)
        var_rnoise, valid = self.var_rnoise.reshape(shape), self.mask.reshape(shape)
        flag = noisy_pixels(var_rnoise, valid, rnoise_threshold)
        n_core = flag.sum(axis=(1, 2))
        too_many = n_core > max_allowed_flagged
        if too_many.any():
            log.warning(
                "%s: %s: more than %d noisy pixels in exposure(s) %s; those are not flagged",
                self.name,
                step,
                max_allowed_flagged,
                np.flatnonzero(too_many).tolist(),
            )
            flag[too_many] = False
        if dilate:
            flag = dilate_stack(flag, int(dilate))
        n = self._reject_pixels(flag.reshape(self.N, -1), Reject.NOISY)
        self._record(
            step,
            n_rejected=n,
            n_noisy_per_exposure=n_core.tolist(),
            rnoise_threshold=float(rnoise_threshold),
            dilate=int(dilate),
            skipped_exposures=np.flatnonzero(too_many).tolist(),
            ignored_kwargs=ignored,
        )
        if n:
            log.info("%s: %s: %d pixels rejected (%s noisy)", self.name, step, n, n_core.tolist())
        return n

    # ------------------------------------------------------------------ hot / cold
    def flag_hot_cold_pixels(
        self,
        cold_percentile=-0.1,
        hot_percentile=1.5,
        absolute=True,
        min_nexp=-1,
        dilate=None,
        sn_limits=None,
        sn_guard=3.0,
    ):
        """Flag detector pixels that are hot or cold in several exposures (bit HOT_COLD).

        A detector pixel (the same position of the common slice) is hot (cold) when it
        is above (below) the limit in at least ``N + min_nexp`` exposures (``min_nexp``
        exposures if positive; at least 2).  Because the source moves between nods,
        a pixel bright only because the source sits on it is high in one nod position
        only.

        Parameters
        ----------
        cold_percentile, hot_percentile : float
            Seed meaning.  With ``absolute=True`` limits on :attr:`data` in uJy per
            pixel (-0.1 and 1.5 uJy suit faint PRISM sources only; a bright or extended
            source exceeds 1.5 uJy everywhere), else percentiles (0-100) of the valid
            data.
        absolute : bool
            See above.
        min_nexp : int
            Number of exposures required (negative: relative to N).
        dilate : int, bool or None
            Grow the flagged detector pixels by this many pixels (plus-shaped).
        sn_limits : (float, float) or None
            **Recommended** S/N path, e.g. ``(-5, 5)``: the limits apply to the
            consensus residual S/N (:func:`slitcombine.core.consensus.consensus_residuals`)
            instead of the flux, so they mean the same for every source and grating.
            Overrides the three options above.
        sn_guard : float or None
            With flux limits, a pixel must also have a residual S/N above ``sn_guard``
            (below ``-sn_guard``) to count as hot (cold), which protects real sources.
            None reproduces the seed exactly.

        Returns
        -------
        ncold, nhot : int
            Number of cold and hot detector pixels (in this order; msaexp's constructor
            swaps them).
        flag : numpy.ndarray
            ``(ny*nx,)`` int, 1 = cold, 2 = hot.
        """
        step = "hot_cold"
        npix = self.sh[0] * self.sh[1]
        if self.N < 2:
            log.warning("%s: %s needs two exposures or more; skipped", self.name, step)
            self._step(step, "SKIPPED", reason=f"N={self.N}: needs >= 2 exposures")
            return 0, 0, np.zeros(npix, int)
        if self._nothing_to_flag(step):
            return 0, 0, np.zeros(npix, int)
        res, data, _, valid = self._consensus()
        flag, info = outliers.hot_cold_pixels(
            data,
            valid,
            res.z_high,
            z_low=res.z_low,
            cold=cold_percentile,
            hot=hot_percentile,
            absolute=absolute,
            min_nexp=min_nexp,
            sn_limits=sn_limits,
            sn_guard=sn_guard,
        )
        bad = flag > 0
        n_dil = int(dilate) if dilate is not None else 0
        if n_dil > 0 and bad.any():
            from slitcombine.core.masks import dilate_stack

            bad = dilate_stack(bad.reshape(1, *self.sh), n_dil).ravel()
            flag = np.where(bad & (flag == 0), 2, flag)
        n_new = self._reject_pixels(self._broadcast_pixels(bad), Reject.HOT_COLD)
        self._record(step, n_rejected=n_new, dilate=n_dil, **info)
        self.meta["nhot"] = int(info["nhot"])
        self.meta["ncold"] = int(info["ncold"])
        log.info("%s: hot/cold pixels: %d cold, %d hot", self.name, info["ncold"], info["nhot"])
        return info["ncold"], info["nhot"], flag

    # ------------------------------------------------------------------ percentile
    def flag_percentile_outliers(
        self,
        plevels=None,
        scale=2,
        yslit=None,
        dilate=_SQUARE3,
        update=True,
        *,
        grow_threshold=3.0,
        min_threshold=4.0,
        filter_size=_FILTER_SIZE,
        rel_error=None,
        interp_error=None,
        gate=None,
        source_radius=None,
        sharpness=None,
        sharp_sigma=None,
        column_radius=None,
        column_error=None,
        column_sigma=None,
    ):
        """Flag high outliers of the residual S/N, threshold from its distribution.

        The statistic is the consensus residual S/N ``z`` of every pixel (its excess
        over its own row, minus what the other exposures show at the same source
        position, in units of the combined error; see
        :func:`slitcombine.core.consensus.consensus_residuals`).  The threshold comes from
        the distribution of ``z`` within ``yslit`` of the trace, as in the seed: a
        normal distribution is fitted to it and extrapolated to the level ``plevels[2]``
        (see :func:`slitcombine.core.outliers.normal_extrapolated_threshold`); for good
        pixels and correct variances it is ~6.  Pixels above it anywhere in the slit
        are rejected (bit PERCENTILE), and their neighbours within ``dilate`` if they
        are themselves above ``grow_threshold``.

        Parameters
        ----------
        plevels : [float, float, float] or None
            Levels ``(p0, p1, p2)``, seed default ``[0.95, -4, -0.1]``; negative values
            count pixels per exposure (``1 + p / n_per_exposure``).  ``p0`` measures the
            width (central interval), ``p2`` is the extrapolation level; ``p1`` is
            accepted for compatibility (the seed measured the width between ``p0`` and
            ``p1``, in the tail the outliers themselves populate).
        scale : float
            Multiplier of the extrapolated excess.
        yslit : [float, float] or None
            Band around the trace defining the distribution, pixels (seed default
            ``[-2, 2]``).
        dilate : array-like or None
            Neighbourhood searched for the wings of each outlier (3x3 by default), this
            step's and those of :meth:`flag_trace_outliers`.  The seed dilated
            unconditionally, which rejects ~8 good pixels per cosmic ray; here a
            neighbour needs ``z > grow_threshold``.
        update : bool
            Apply the rejection to the group; if False only compute.
        grow_threshold : float
            Residual S/N above which a neighbour of an outlier is rejected too.
        min_threshold : float
            The threshold never goes below this S/N.
        filter_size : int
            Row-model window, columns.
        rel_error, interp_error, gate, source_radius, sharpness : optional
            Options of :func:`~slitcombine.core.consensus.consensus_residuals`; None
            (not given): its defaults.
        sharp_sigma, column_radius, column_error, column_sigma : optional
            Further options of :func:`~slitcombine.core.consensus.consensus_residuals`;
            None (not given): its defaults.

        Returns
        -------
        outlier : numpy.ndarray
            ``(N, ny*nx)`` boolean, the rejected pixels.
        high_level : float
            The S/N threshold.
        """
        step = "flag_percentile"
        plevels = [0.95, -4, -0.1] if plevels is None else list(plevels)
        yslit = [-2.0, 2.0] if yslit is None else list(yslit)
        grow_threshold = float(grow_threshold)
        min_threshold = float(min_threshold)
        filter_size = int(filter_size)
        consensus = {
            "rel_error": rel_error,
            "interp_error": interp_error,
            "gate": gate,
            "source_radius": source_radius,
            "sharpness": sharpness,
            "sharp_sigma": sharp_sigma,
            "column_radius": column_radius,
            "column_error": column_error,
            "column_sigma": column_sigma,
        }
        ckw = {k: v for k, v in consensus.items() if v is not None}
        empty = np.zeros(self.mask.shape, bool)
        if self._nothing_to_flag(step):
            return empty, np.nan
        res, _, _, _ = self._consensus(filter_size=filter_size, **ckw)
        flags, thr, info = outliers.percentile_outliers(
            res.z,
            self.yslit,
            plevels=plevels,
            scale=scale,
            yslit_range=yslit,
            min_threshold=min_threshold,
            exclude=res.protected,
            z_high=res.z_high,
        )
        n_core = int(flags.sum())
        footprint = None if dilate is None else np.asarray(dilate)
        # grow from this step's outliers and from those of flag_trace_outliers
        seeds = flags | ((self.reject & np.uint32(Reject.TRACE)) > 0)
        grown = outliers.grow_flags(seeds, res.z_high, self.sh, footprint, grow_threshold)
        flags = flags | (grown & ~seeds)
        n_new = self._reject_pixels(flags, Reject.PERCENTILE) if update else 0
        if update:
            self.meta["percentile_outliers"] = self.meta.get("percentile_outliers", 0) + int(
                flags.sum()
            )
            self._record(
                step,
                threshold=round(thr, 3),
                n_outliers=n_core,
                n_grown=int(flags.sum()) - n_core,
                n_rejected=n_new,
                per_exposure=flags.sum(axis=1).tolist(),
                plevels=plevels,
                scale=scale,
                yslit=yslit,
                statistics={
                    k: (round(v, 4) if isinstance(v, float) else v) for k, v in info.items()
                },
            )
        log.info(
            "%s: percentile outliers: threshold S/N %.2f, %d pixels (%d grown)",
            self.name,
            thr,
            int(flags.sum()),
            int(flags.sum()) - n_core,
        )
        return flags, thr

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
