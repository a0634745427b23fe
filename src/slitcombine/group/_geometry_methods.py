"""``SlitGroup`` methods for the slit geometry: cutout slices, traces, shutters.

Methods: calculate_slices, set_trace_coeffs, update_trace_from_coeffs,
apply_bad_shutter_mask, mask_stuck_closed_shutters, and the constructor steps that set
up the traces, the bad and stuck shutters and the pipeline's bar shadow.  Adapters of
:mod:`slitcombine.core.geometry` and :mod:`slitcombine.core.masks`; ``SlitGroup``
inherits this class, which holds no state of its own.
"""

from __future__ import annotations

import logging

import numpy as np

from slitcombine import instrument
from slitcombine.core import geometry
from slitcombine.core.masks import Reject
from slitcombine.errors import IncompatibleExposuresError

__all__ = ["GeometryMethods"]

log = logging.getLogger(__name__)


class GeometryMethods:
    """Mixin of :class:`slitcombine.SlitGroup`: the slit geometry, traces and shutters."""

    def calculate_slices(self):
        """Common overlap of the cutouts, in detector pixels.

        Sets :attr:`sh` (``(ny, nx)`` of the overlap) and :attr:`slices`, one
        ``(slice(y0, y1), slice(x0, x1))`` per exposure into its own cutout.

        Raises
        ------
        IncompatibleExposuresError
            If the cutouts do not overlap.
        """
        xs = np.array([s.slit["xstart"] for s in self.slits])
        ys = np.array([s.slit["ystart"] for s in self.slits])
        ny = np.array([s.shape[0] for s in self.slits])
        nx = np.array([s.shape[1] for s in self.slits])
        x0, x1 = xs.max(), (xs + nx).min()
        y0, y1 = ys.max(), (ys + ny).min()
        if x1 <= x0 or y1 <= y0:
            raise IncompatibleExposuresError(
                f"{self.name}: the cutouts of {self.files} do not overlap on the detector"
            )
        self.sh = (int(y1 - y0), int(x1 - x0))
        self.slices = [
            (slice(int(y0 - ys[i]), int(y1 - ys[i])), slice(int(x0 - xs[i]), int(x1 - xs[i])))
            for i in range(self.N)
        ]
        self.meta["common_slice"] = {
            "xstart": int(x0),
            "ystart": int(y0),
            "nx": self.sh[1],
            "ny": self.sh[0],
        }
        return self.slices

    def _setup_traces(self):
        """Constructor step ``traces``: the traces, ``nod_offset`` and ``num_shutters``.

        ``meta['nod_offset']`` becomes ``MSA_NOD_ARCSEC / slit_pixel_scale`` when the
        option is None and ``meta['num_shutters']`` the number of shutters used (the
        option stays in :attr:`options` and ``meta['num_shutters_requested']``).
        """
        self._parse_traces()
        if self.options.nod_offset is None:
            self.meta["nod_offset"] = instrument.MSA_NOD_ARCSEC / self.slit_pixel_scale
        self._resolve_num_shutters()

    def _mask_bad_shutters(self):
        """Constructor step ``stuck_shutters``: the given bad shutters, or the stuck ones.

        Judged on the pipeline bar shadow, before the group's own bar-shadow model: a
        model fitted to the data afterwards then neither sees a stuck-closed shutter as
        a deep bar nor hides it.  With ``bad_shutter_names`` given they are masked and
        nothing is searched; else :meth:`mask_stuck_closed_shutters` with
        ``stuck_threshold``.
        """
        if self.bad_shutter_names:
            self.apply_bad_shutter_mask()
            self._step(
                "stuck_shutters",
                "COMPLETE",
                bad_shutter_names=self.bad_shutter_names,
                source="user",
            )
        else:
            self.mask_stuck_closed_shutters(stuck_threshold=self.options.stuck_threshold)

    def _setup_barshadow(self):
        """Constructor step ``barshadow``: apply the ``undo_barshadow`` option.

        2: the group's own model (:meth:`apply_spline_bar_correction`); True: undo the
        pipeline correction (if there is a BARSHADOW extension); False: keep it.
        ``meta['undo_barshadow']`` becomes the result (True only while the pipeline
        correction is undone), the option stays in :attr:`options`.
        """
        mode = self.options.undo_barshadow
        has_bar = all(s.barshadow is not None for s in self.slits)
        if mode == 2:
            self.apply_spline_bar_correction()
        elif mode:
            self.meta["undo_barshadow"] = True if has_bar else False
            self.meta["bar_correction"] = (
                "none (pipeline correction undone)"
                if has_bar
                else ("none (no BARSHADOW extension)")
            )
            self._step(
                "barshadow", "COMPLETE" if has_bar else "SKIPPED", action="undo pipeline correction"
            )
        else:
            self.meta["undo_barshadow"] = False
            self.meta["bar_correction"] = "pipeline"
            self._step("barshadow", "SKIPPED", action="keep pipeline correction")

    def _resolve_num_shutters(self):
        requested = self.options.num_shutters
        if self.IS_FIXED_SLIT:
            value = 0
        elif requested < 0:
            value = len(str(self.info["shutter_state"][0]))
        elif requested == 0:
            value = self.unp.N
        else:
            value = int(requested)
        self.meta["num_shutters"] = value
        self.meta["num_shutters_requested"] = requested

    # ================================================================ traces
    def _parse_traces(self):
        """Per-exposure traces in the common slice, and the fixed slit coordinate."""
        ny, nx = self.sh
        n = self.N
        s0 = self.slits[0]
        sl0 = self.slices[0]
        sy_full = geometry.slit_frame_grid(s0.wcs, s0.shape)[1]
        self._slit_y0_full = sy_full
        self._slit_y0 = sy_full[sl0]

        # A fixed slit's frame does not move with the nods (y_slit = 0 is the slit
        # centre in every exposure) and source_ypos says where the source is: the
        # trace is always at source_ypos there.  In an MSA slitlet y_slit = 0 is the
        # centre of the source shutter and source_ypos is optional (trace_with_ypos).
        with_ypos = self.options.trace_with_ypos or self.IS_FIXED_SLIT
        self.meta["trace_target"] = "source_ypos" if with_ypos else "shutter centre"

        def own_trace(slit, sy_grid, sl):
            target = (slit.slit.get("source_ypos") or 0.0) if with_ypos else 0.0
            rows = geometry.rows_where(sy_grid, target)
            return rows[sl[1]] - sl[0].start

        self.xtr = np.broadcast_to(np.arange(nx, dtype=float), (n, nx)).copy()
        self.ytr = np.empty((n, nx))
        self.wtr = np.empty((n, nx))
        y0_trace = own_trace(s0, sy_full, sl0)
        y_offsets = np.asarray(self.info["y_offset"], float)
        use_offsets = self.options.trace_from_yoffset or self.meta["background_slit"]
        nod_step = self.options.nod_offset
        for i, s in enumerate(self.slits):
            if i == 0:
                self.ytr[i] = y0_trace
            elif use_offsets:
                dy = y_offsets[i] - y_offsets[0]
                if nod_step is None:
                    shift = dy / self.slit_pixel_scale
                else:
                    shift = dy / instrument.MSA_NOD_ARCSEC * nod_step
                # Same cutout origin: translate exposure 0's trace into this exposure's
                # rows of the common slice.
                self.ytr[i] = y0_trace + shift
            else:
                sy = geometry.slit_frame_grid(s.wcs, s.shape)[1]
                self.ytr[i] = own_trace(s, sy, self.slices[i])
            self.wtr[i] = geometry.sample_rows(self.wave.reshape(n, ny, nx)[i], self.ytr[i])
        self.meta["trace_source"] = "y offsets" if use_offsets else "each exposure's WCS"
        self.set_trace_coeffs(degree=2)
        self.yslit_orig = self.yslit.copy()

    def set_trace_coeffs(self, degree=2):
        """Fit a polynomial to each exposure's trace.

        Parameters
        ----------
        degree : int
            Polynomial degree in the normalised column ``(x - nx/2)/nx``.

        Sets :attr:`base_coeffs` (``(N, degree+1)``, highest power first), resets
        :attr:`trace_coeffs` to zeros and updates :attr:`yslit`.
        """
        nx = self.sh[1]
        self.base_coeffs = np.array(
            [geometry.trace_polynomial(self.xtr[i], self.ytr[i], nx, degree) for i in range(self.N)]
        )
        self.trace_coeffs = np.zeros_like(self.base_coeffs)
        self.update_trace_from_coeffs()

    def update_trace_from_coeffs(self):
        """Recompute :attr:`yslit` from :attr:`base_coeffs` and :attr:`trace_coeffs`.

        ``yslit = ypix - polyval(base, xn) - polyval(trace, xn)`` with
        ``xn = (xslit - nx/2)/nx``.
        """
        nx = self.sh[1]
        xn = geometry.normalized_x(self.xslit, nx)
        base = _polyval_rows(self.base_coeffs, xn)
        offset = _polyval_rows(self.trace_coeffs, xn)
        self.yslit = self.ypix - base - offset

    # ================================================================ shutters
    def apply_bad_shutter_mask(self):
        """Reject the pixels of the shutters in :attr:`bad_shutter_names`.

        A pixel belongs to shutter ``k`` when ``|fixed_yshutter - k| < 0.6``.

        Returns
        -------
        int
            Number of pixels newly rejected.
        """
        ys = np.broadcast_to(self._yshutter_grid, self.sci.shape)
        bad = np.zeros(self.sci.shape, bool)
        for k in self.bad_shutter_names:
            with np.errstate(invalid="ignore"):
                bad |= np.abs(ys - k) < 0.6
        n = self._reject_pixels(bad, Reject.BAD_SHUTTER)
        self.meta["bad_shutter_names"] = list(self.bad_shutter_names)
        self.meta["bad_shutter_pixels"] = n
        return n

    def mask_stuck_closed_shutters(self, stuck_threshold=0.3, min_bar=0.7):
        """Find and mask shutters that pass no light (stuck closed), PRISM and gratings.

        Thin caller of :func:`slitcombine.core.shutters.stuck_shutters` (the statistics are
        documented there): the median S/N of ``sci`` over the pixels of each shutter
        (``round(fixed_yshutter)``, ``bar > min_bar``, all exposures) is compared with
        the brightest well-covered shutter; a shutter is stuck when it is below
        ``stuck_threshold`` times that and the shortfall is significant (5 sigma of the
        measured scatter).  A single shutter is stuck only if it shows no light at all.
        If even the brightest shutter shows no significant sky, nothing is decided.

        Parameters
        ----------
        stuck_threshold : float
            Relative (several shutters) or absolute (single shutter) S/N threshold.
        min_bar : float
            Minimum bar-shadow throughput of the pixels used.

        Returns
        -------
        list of int
            The stuck shutter indices (also added to :attr:`bad_shutter_names`).
        """
        from slitcombine.core import outliers

        # Judge the shutters on the pipeline's bar shadow and ignore LOW_BAR: a model
        # fitted to the data (undo_barshadow=2) sees a stuck shutter as a deep "bar".
        # sci / sqrt(var) does not depend on the bar correction applied.
        bar_pipe = getattr(self, "orig_bar", None)
        bar_pipe = self.bar if bar_pipe is None else bar_pipe
        usable = (self.reject & ~np.uint32(Reject.LOW_BAR)) == 0
        stuck, info = outliers.stuck_shutters(
            self.sci,
            self.var,
            usable,
            self._yshutter_grid,
            bar_pipe,
            stuck_threshold=stuck_threshold,
            min_bar=min_bar,
            fixed_slit=self.IS_FIXED_SLIT,
        )
        status = "SKIPPED" if info["status"] == "skipped" else "COMPLETE"
        self._step(
            "stuck_shutters",
            status,
            decision=info["status"],
            reason=info["reason"],
            shutter_sn={j: v["sn"] for j, v in info["shutters"].items()},
            shutters=info["shutters"],
            stuck=stuck,
        )
        if info["status"] == "undetermined":
            log.info("%s: stuck-shutter test undetermined: %s", self.name, info["reason"])
        if stuck:
            log.warning("%s: stuck-closed shutters found: %s", self.name, stuck)
            self.bad_shutter_names = sorted(set(self.bad_shutter_names) | set(stuck))
            self.apply_bad_shutter_mask()
        return stuck


def _polyval_rows(coeffs, xn):
    """Evaluate one polynomial per row of ``xn`` (``coeffs`` highest power first)."""
    out = np.zeros_like(xn)
    for k in range(coeffs.shape[1]):
        out = out * xn + coeffs[:, k : k + 1]
    return out
