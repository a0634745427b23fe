"""``SlitGroup`` methods for the bar shadow and the flux-calibration tables.

Methods: apply_spline_bar_correction (the group's own bar-shadow model, or msaexp's
tables), apply_normalization_correction (PRISM slit renormalisation),
apply_sflat_correction, apply_extended_calibration, apply_extra_dq (msaexp's extra bad
pixels).

They are adapters: they gather the group's arrays, call the pure functions of
:mod:`slitcombine.core` (``barshadow``, ``barpolicy``, ``fluxcal``), and store the
results and ``meta`` on the group.  ``SlitGroup`` inherits this class, which holds no
state of its own.

Calibration files are looked up in ``$SLITCOMBINE_CALIB_DIR``, then in the table set
fetched by ``slitcombine calib fetch`` (:mod:`slitcombine.io.tables` for the names and
msaexp's alternatives, :mod:`slitcombine.io.table_readers` for the formats,
:mod:`slitcombine.io.calib` for the fetch); when none is found the step is a logged
no-op recorded in ``meta['steps']``.  A default step skipped because no table of its
kind is installed at all is said once per group at WARNING, with the fix
(:meth:`CalibrationMethods._warn_missing_tables`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from slitcombine.core import barpolicy, fluxcal
from slitcombine.core.barshadow import evaluate_bar_coeffs
from slitcombine.core.masks import Reject
from slitcombine.errors import CalibrationFileError, FitError
from slitcombine.group.steps import UNUSED, ignore_seed_keywords
from slitcombine.io import table_readers as readers
from slitcombine.io import tables

__all__ = ["CalibrationMethods"]

log = logging.getLogger(__name__)


class CalibrationMethods:
    """Mixin of :class:`slitcombine.SlitGroup`: bar shadow and flux-calibration tables."""

    def _skip_for_table(self, step, kind, names, dirs, log_text):
        """Record ``step`` as SKIPPED for lack of a table of ``kind``; warn once per group.

        ``missing_table`` in the step's record is True when no calibration folder holds
        a table of that kind at all (nothing fetched or configured), which a fetch fixes;
        then :meth:`_warn_missing_tables` says so.  A table set without this one case
        (a visit without a sky table, as in msaexp) is only logged at INFO.
        """
        from slitcombine.io.calib import FETCHED_KINDS

        reason = tables.missing_table_reason(names, dirs)
        absent = kind in FETCHED_KINDS and not tables.calibration_kind_available(kind, dirs)
        self._step(step, "SKIPPED", reason=reason, looked_for=names, missing_table=absent)
        log.info("%s: %s: %s", self.name, log_text, reason)
        if absent:
            self._warn_missing_tables()

    def _warn_missing_tables(self):
        """Say once, at WARNING, which default steps lack their calibration tables.

        The first step skipped for lack of a table evaluates the whole plan of the group
        (:func:`slitcombine.group.calib_plan.plan_for_group`: the steps done as recorded, the others
        predicted with the same lookups), so the one message names every table missing.
        ``meta['missing_tables']`` keeps the list (``'step: name'``); the log record
        carries it as its ``missing_tables`` attribute (a batch says it once per run).
        """
        if "missing_tables" in self.meta:
            return
        from slitcombine.group.calib_plan import plan_for_group

        rows = [r for r in plan_for_group(self) if r.missing]
        missing = [f"{r.step}: {' or '.join(r.looked_for) or r.kind}" for r in rows]
        self.meta["missing_tables"] = missing
        if missing:
            log.warning(
                "%s: default step(s) skipped for lack of calibration tables (%s); msaexp "
                "applies them, so the fluxes differ from msaexp's.  Fix: run `slitcombine "
                "calib fetch` (msaexp's published tables into the user cache) or point "
                "$%s at a folder of tables",
                self.name,
                "; ".join(missing),
                tables.CALIB_DIR_ENV,
                extra={"missing_tables": missing},
            )

    # ------------------------------------------------------------------ bar shadow
    def apply_spline_bar_correction(
        self,
        coeffs_file=None,
        mode=None,
        mask_yslit=None,
        *,
        max_bar_error=0.02,
        max_chi2=3.0,
        **fit_options,
    ):
        """Replace the pipeline bar-shadow correction by a smooth model (``undo_barshadow=2``).

        The model is, in order of precedence:

        1. ``coeffs_file``: a table in msaexp's format (path);
        2. with ``coeffs_file=None``, ``{grating}_{n}_bar_coeffs[_wave].yaml`` from the
           calibration directories (:func:`slitcombine.io.tables.bar_coeffs_filename`:
           slitlets of more than 3 shutters use the 3-shutter table, wrapped);
        3. otherwise (or ``coeffs_file=False``) the group's **own model**, fitted to its
           own sky pixels (:func:`slitcombine.core.barfit.fit_bar_shadow`): a tensor
           B-spline in the shutter coordinate (:attr:`_yshutter_grid`) and wavelength,
           normalised to the pipeline correction where that is ~1.  Where the shutter
           coordinate has no sky pixels (not covered) the pipeline value is kept.
           If the model's own median posterior error exceeds ``max_bar_error`` (faint
           sky, e.g. high-resolution gratings, or a short cutout) or its reduced chi2
           exceeds ``max_chi2`` (source light it could not exclude), the pipeline
           correction is kept (``FALLBACK`` in ``meta['steps']['barshadow']``); the
           policy is :func:`slitcombine.core.barpolicy.own_bar_shadow`.

        Then ``sci`` and the variances are rescaled by ``bar_pipeline / bar_new``,
        ``orig_bar`` keeps the pipeline array, :attr:`bar` becomes the model, pixels with
        a non-finite model or ``bar < min_bar`` are rejected, ``meta['undo_barshadow']``
        is set to False and ``meta['bar_correction']`` says which model was used.  Fixed
        slits (no bar shadow) are left alone.  If the own model cannot be fitted (too few
        sky pixels) the pipeline correction is kept and the step says ``FALLBACK``.
        msaexp's bookkeeping keys: ``meta['own_barshadow']`` is True when the pipeline
        correction was replaced (by a table or the own model: msaexp's "internal bar
        shadow correction"), False when it was kept; ``meta['wrapped_barshadow']`` is
        True when a table was wrapped into the central shutter for a slitlet of more
        than 3 shutters.

        Parameters
        ----------
        coeffs_file : path-like, None or False
            See above.
        mode : {'wave', 'slit'} or None
            Wavelength-dependent or independent model; default ``meta['bar_corr_mode']``
            (msaexp's ``'flat'`` means ``'slit'``).
        mask_yslit : list of (float, float) or None
            Source region (``yslit`` ranges, pixels) excluded from the own fit.  None
            (default): pixels within ``n`` source widths of the trace
            (:func:`slitcombine.core.barpolicy.source_exclusion`: width = PSF sigma of
            :func:`slitcombine.core.profile.psf_sigma` and the measured intrinsic size in
            quadrature; ``n >= 4`` grows with the measured peak brightness of the source,
            ~4 for a faint one), widened by the fit where its residuals still show
            source light (non-Gaussian wings), up to ``max_distance`` (16) widths.
        max_bar_error : float
            Largest median posterior relative error of the own model.
        max_chi2 : float
            Largest reduced chi2 of the own model.
        **fit_options
            Options of :func:`slitcombine.core.barfit.fit_bar_shadow` (``ystep``,
            ``df_wave``, ``df_sky``, ``clip``, ``min_distance``, ``leak_threshold`` ...:
            :func:`slitcombine.core.barpolicy.fit_options`); another name raises
            :class:`TypeError`, whichever model is used.

        Returns
        -------
        numpy.ndarray or None
            The new bar-shadow throughput ``(N, npix)``, or None if nothing was applied.
        """
        barpolicy.check_fit_options(fit_options)
        mode = mode or self.meta.get("bar_corr_mode", "wave")
        mode = "slit" if mode == "flat" else mode
        n_shut = int(self.meta["num_shutters"])
        bar_pipe = self.bar.copy()
        self.meta["own_barshadow"] = False
        self.meta["wrapped_barshadow"] = False
        if self.IS_FIXED_SLIT:
            self.meta["undo_barshadow"] = False
            self.meta["bar_correction"] = "none (fixed slit)"
            self._step("barshadow", "SKIPPED", reason="fixed slit: no bar shadow")
            return None
        ys = np.broadcast_to(self._yshutter_grid, self.sci.shape)
        if coeffs_file is None:
            name, wrap = tables.bar_coeffs_filename(self.grating, n_shut, mode)
            path = tables.find_calibration_file(name)
        elif coeffs_file is False:
            path, wrap = None, None
        else:
            path = Path(coeffs_file)
            wrap = tables.bar_coeffs_filename(self.grating, n_shut, mode)[1]
        if path is not None:
            table = readers.read_bar_coeffs(path, grating=self.grating)
            bar_new = evaluate_bar_coeffs(table, ys, self.wave, wrap=wrap)
            source = f"table {path}"
            details = {"file": str(path), "wrap": wrap, "num_shutters": n_shut}
            self.bar_model = table
        else:
            own = self._own_bar_shadow(
                bar_pipe, ys, mode, mask_yslit, fit_options, max_bar_error, max_chi2
            )
            if own.bar is None:
                self._keep_pipeline_bar(own)
                return None
            bar_new, source, details = own.bar, f"own model ({mode})", own.details
            self.bar_model = own.model
        self._replace_bar(bar_pipe, bar_new, source, details)
        # msaexp's bookkeeping: the table wrapped into the central shutter (> 3 shutters)
        self.meta["wrapped_barshadow"] = path is not None and wrap is True
        return bar_new

    def _own_bar_shadow(self, bar_pipe, ys, mode, mask_yslit, options, max_bar_error, max_chi2):
        """The group's own bar-shadow model, or why the pipeline's is kept (core/barpolicy)."""
        has_bar = all(s.barshadow is not None for s in self.slits)
        options = dict(options)
        period = options.pop("period", self._shutter_period())  # a given period wins
        try:
            coordinate = self._wave_coordinate()
        except FitError as exc:  # no exposure has a trace with wavelengths
            return barpolicy.OwnBarShadow.failure(exc)
        return barpolicy.own_bar_shadow(
            self.sci,
            self.var_rnoise,
            self.var_poisson,
            bar_pipe,
            ys,
            self.wave,
            self.mask,
            self.yslit,
            coordinate,
            cube_shape=(self.N, *self.sh),
            has_pipeline_bar=has_bar,
            mode=mode,
            period=period,
            mask_yslit=mask_yslit,
            max_bar_error=max_bar_error,
            max_chi2=max_chi2,
            **options,
        )

    def _keep_pipeline_bar(self, own):
        """Record that the pipeline bar-shadow correction is kept (``FALLBACK``)."""
        self.meta["undo_barshadow"] = False
        self.meta["bar_correction"] = f"pipeline (fallback: {own.reason})"
        self._step(
            "barshadow", "FALLBACK", reason=own.reason, kept="pipeline correction", **own.details
        )
        if own.failed:
            log.warning(
                "%s: own bar-shadow model failed (%s); keeping the pipeline's",
                self.name,
                own.reason,
            )
        else:
            log.log(own.level, "%s: %s; keeping the pipeline bar shadow", self.name, own.reason)

    def _replace_bar(self, bar_pipe, bar_new, source, details):
        """Rescale the data by ``bar_pipe / bar_new``, store the new bar and record the step."""
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = bar_pipe / bar_new
        self.orig_bar = bar_pipe
        n_bad = self._apply_factor(ratio)
        self.bar = bar_new
        n_low = 0
        min_bar = self.meta.get("min_bar")
        if min_bar is not None:
            with np.errstate(invalid="ignore"):
                n_low = self._reject_pixels(bar_new < min_bar, Reject.LOW_BAR)
        self.meta["undo_barshadow"] = False
        self.meta["bar_correction"] = source
        # msaexp's bookkeeping: a model of ours (table or own fit) replaced the pipeline's
        self.meta["own_barshadow"] = True
        self._step(
            "barshadow",
            "COMPLETE",
            model=source,
            rejected_nonfinite=n_bad,
            rejected_low_bar=n_low,
            **details,
        )
        log.info("%s: bar shadow replaced by %s", self.name, source)

    # ------------------------------------------------------------------ normalisation
    def _slit_position(self, j, path):
        s = self.slits[j]
        vals = [s.asdf_slit_attribute(k) for k in ("quadrant", "xcen", "ycen")]
        if any(v is None for v in vals):
            raise CalibrationFileError(
                f"{path}: needs the slit's quadrant/xcen/ycen, absent from {s.path.name}"
            )
        return vals

    def apply_normalization_correction(self):
        """Apply the slit renormalisation ``{grating}_slit_renormalize.yaml``.

        The table (msaexp's format, :func:`slitcombine.io.table_readers.read_renormalization`)
        is looked up in the calibration directories; the correction of each exposure is
        evaluated at its slitlet's ``quadrant``, ``xcen``, ``ycen`` (ASDF slit attributes)
        and multiplies ``sci`` (variances by its square); pixels where it is undefined
        (outside the reference wavelengths) are rejected.  Stored as
        :attr:`normalization` (``(N, npix)``).  No table: a logged no-op, ``SKIPPED``.

        Returns
        -------
        numpy.ndarray or None
            The correction, or None.
        """
        if self.IS_FIXED_SLIT:
            self._step("normalization", "SKIPPED", reason="fixed slit (MSA correction)")
            return None
        grating = self.grating.lower()
        dirs = tables.calibration_dirs()
        path = tables.find_calibration_table("renormalization", dirs, grating=grating)
        if path is None:
            names = tables.calibration_table_names("renormalization", grating=grating)
            self._skip_for_table(
                "normalization", "renormalization", names, dirs, "no normalization correction"
            )
            return None
        table = readers.read_renormalization(path, grating=self.grating)
        factor = np.empty_like(self.sci)
        positions = []
        for j in range(self.N):
            q, x, y = self._slit_position(j, path)
            positions.append((int(q), float(x), float(y)))
            factor[j] = fluxcal.normalization_correction(table, self.wave[j], q, x, y)
        n_bad = self._apply_factor(factor)
        self.normalization = factor
        ok = np.isfinite(factor) & self.mask
        self._step(
            "normalization",
            "COMPLETE",
            file=str(path),
            positions=positions,
            median=round(float(np.median(factor[ok])), 5) if ok.any() else None,
            rejected=n_bad,
        )
        log.info("%s: normalization correction from %s", self.name, path)
        return factor

    def apply_sflat_correction(self):
        """Divide by the field-dependent s-flat ``sflat_{grating}_q{quadrant}.fits``.

        Looked up in the calibration directories (format:
        :func:`slitcombine.io.table_readers.read_sflat`), evaluated at each exposure's slitlet
        position; undefined pixels are rejected.  Stored as :attr:`sflat`.  No table: a
        logged no-op, ``SKIPPED`` (the slit position is only read when a table exists).

        Returns
        -------
        numpy.ndarray or None
            The flat ``(N, npix)``, or None.
        """
        if self.IS_FIXED_SLIT:
            self._step("sflat", "SKIPPED", reason="fixed slit (MSA correction)")
            return None
        dirs = tables.calibration_dirs()
        grating = self.grating.lower()
        if not tables.calibration_kind_available("sflat", dirs, grating=grating):
            names = tables.calibration_table_names("sflat", grating=grating, quadrant="*")
            self._step("sflat", "SKIPPED", reason=tables.missing_table_reason(names, dirs))
            log.info("%s: no s-flat: %s", self.name, self.meta["steps"]["sflat"]["reason"])
            return None
        flat = np.empty_like(self.sci)
        used = []
        for j in range(self.N):
            q = self.slits[j].asdf_slit_attribute("quadrant")
            path = tables.find_calibration_table("sflat", dirs, grating=grating, quadrant=q)
            if path is None:
                names = tables.calibration_table_names("sflat", grating=grating, quadrant=q)
                reason = tables.missing_table_reason(names, dirs)
                self._step("sflat", "SKIPPED", reason=reason, looked_for=names)
                log.info("%s: no s-flat: %s", self.name, reason)
                return None
            table = readers.read_sflat(path, grating=self.grating)
            _, x, y = self._slit_position(j, path)
            flat[j] = fluxcal.sflat_correction(table, self.wave[j], x, y)
            used.append(str(path))
        with np.errstate(divide="ignore", invalid="ignore"):
            n_bad = self._apply_factor(1.0 / flat)
        self.sflat = flat
        self._step("sflat", "COMPLETE", files=sorted(set(used)), rejected=n_bad)
        log.info("%s: s-flat from %s", self.name, sorted(set(used)))
        return flat

    def apply_extended_calibration(
        self,
        threshold=0.01,
        force=False,
        *,
        sens_file=UNUSED,
        prefix=UNUSED,
        version=UNUSED,
        file_template=UNUSED,
        fixed_slit_correction=UNUSED,
        quadrant_correction=UNUSED,
        nrs2_scale_gratings=UNUSED,
    ):
        """Extended-range flux calibration (``extended_calibration_kwargs``).

        Only when the pipeline used extended-range flats (``_ext`` in the ``R_FFLAT``,
        ``R_SFLAT`` or ``R_DFLAT`` keywords of every exposure) or ``force``: the data are
        divided by the relative sensitivity of ``sensitivity_{grating}_{filter}.fits``
        from the calibration directories
        (:func:`slitcombine.io.table_readers.read_sensitivity`) and pixels where it is
        below ``threshold`` times its maximum are rejected
        (:func:`slitcombine.core.fluxcal.sensitivity_correction`).  Otherwise a logged
        no-op, ``SKIPPED``.

        Parameters
        ----------
        threshold : float
            Minimum sensitivity relative to its maximum.
        force : bool
            Apply whatever the flat references.
        sens_file, prefix, version, file_template : optional
            Options of msaexp's ``slit_extended_flux_calibration``, accepted for
            compatibility and ignored (as the next three).
        fixed_slit_correction, quadrant_correction, nrs2_scale_gratings : optional
            Options of msaexp's ``slit_extended_flux_calibration``, accepted for
            compatibility and ignored (recorded in ``meta['ignored_kwargs']``,
            :func:`slitcombine.group.steps.ignore_seed_keywords`): the table is found by
            name in the calibration directories, and its detector column is applied.

        Returns
        -------
        numpy.ndarray or None
            The sensitivity ``(N, npix)``, or None.
        """
        ignore_seed_keywords(
            self,
            "extended_calibration",
            sens_file=sens_file,
            prefix=prefix,
            version=version,
            file_template=file_template,
            fixed_slit_correction=fixed_slit_correction,
            quadrant_correction=quadrant_correction,
            nrs2_scale_gratings=nrs2_scale_gratings,
        )
        keys = ("R_FFLAT", "R_SFLAT", "R_DFLAT")
        ext = all(any("_ext" in str(s.primary_header.get(k, "")) for k in keys) for s in self.slits)
        if not (ext or force):
            self._step(
                "extended_calibration",
                "SKIPPED",
                reason="the pipeline flats are not extended-range (R_FFLAT/R_SFLAT/R_DFLAT)",
            )
            return None
        fields = {"grating": self.grating, "filter": self.filter}
        dirs = tables.calibration_dirs()
        path = tables.find_calibration_table("sensitivity", dirs, **fields)
        if path is None:
            names = tables.calibration_table_names("sensitivity", **fields)
            self._skip_for_table(
                "extended_calibration",
                "sensitivity",
                names,
                dirs,
                "no extended-range sensitivity",
            )
            return None
        det = str(self.info["detector"][0])
        wave, sens = readers.read_sensitivity(path, grating=self.grating, detector=det)
        s2d = fluxcal.sensitivity_correction(self.wave, wave, sens, threshold)
        with np.errstate(divide="ignore", invalid="ignore"):
            n_bad = self._apply_factor(1.0 / s2d)
        self.sensitivity = s2d
        self._step(
            "extended_calibration", "COMPLETE", file=str(path), rejected=n_bad, threshold=threshold
        )
        return s2d

    def apply_extra_dq(self):
        """Reject pixels of a user bad-pixel map of the detector.

        Looks up ``badpix_{detector}.fits`` then ``msaexp_badpix_{detector}.yaml`` in the
        calibration directories (:func:`slitcombine.io.table_readers.read_bad_pixel_map`) and
        rejects (``Reject.DQ``) the cutout pixels that are bad on the detector.  No map:
        a logged no-op, ``SKIPPED``.

        Returns
        -------
        int
            Pixels newly rejected.
        """
        det = str(self.info["detector"][0]).lower()
        dirs = tables.calibration_dirs()
        path = tables.find_calibration_table("bad_pixels", dirs, detector=det)
        if path is None:
            names = tables.calibration_table_names("bad_pixels", detector=det)
            self._skip_for_table("extra_dq", "bad_pixels", names, dirs, "no extra bad pixels")
            return 0
        bad_det = readers.read_bad_pixel_map(path)
        ny, nx = self.sh
        c = self.meta["common_slice"]
        rows = np.arange(ny) + c["ystart"] - 1  # SLTSTRT is 1-based
        cols = np.arange(nx) + c["xstart"] - 1
        inside = (rows[:, None] >= 0) & (rows[:, None] < bad_det.shape[0])
        inside = inside & (cols[None, :] >= 0) & (cols[None, :] < bad_det.shape[1])
        sub = np.zeros((ny, nx), bool)
        r = np.clip(rows, 0, bad_det.shape[0] - 1)
        cc = np.clip(cols, 0, bad_det.shape[1] - 1)
        sub = bad_det[np.ix_(r, cc)] & inside
        n = self._reject_pixels(np.broadcast_to(sub.ravel(), self.sci.shape), Reject.DQ)
        self._step("extra_dq", "COMPLETE", file=str(path), rejected=n)
        return n
