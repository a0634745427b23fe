"""``SlitGroup`` methods that flag single pixels: hot and cold pixels and percentile outliers.

Methods: flag_slit_hot_pixels, flag_hot_cold_pixels, flag_percentile_outliers.  Adapters of
:mod:`slitcombine.core.hotpixels` and :mod:`slitcombine.core.outliers`; the shared helpers
(``_outlier_inputs``, ``_record`` ...) are those of
:class:`slitcombine.group._outlier_methods.OutlierMethods`.

``SlitGroup`` inherits this class, which holds no state of its own.
"""

from __future__ import annotations

import logging

import numpy as np

from slitcombine.core import outliers
from slitcombine.core.masks import Reject
from slitcombine.group._outlier_methods import _FILTER_SIZE
from slitcombine.group.steps import UNUSED, ignore_seed_keywords

__all__ = ["PixelFlagMethods"]

#: Default ``dilate`` footprint of :meth:`PixelFlagMethods.flag_percentile_outliers`
#: (the seed's 3x3 ones; a tuple, so that the default cannot be mutated).
_SQUARE3 = ((1, 1, 1), (1, 1, 1), (1, 1, 1))

log = logging.getLogger(__name__)


class PixelFlagMethods:
    """Mixin of :class:`slitcombine.SlitGroup`: single-pixel flags."""

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
