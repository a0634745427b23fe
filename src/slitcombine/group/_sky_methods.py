"""``SlitGroup`` methods for sky, bar-shadow and flux-calibration corrections.

Methods: estimate_sky, get_global_sky, set_background_spectra,
apply_spline_bar_correction, apply_normalization_correction, apply_sflat_correction,
apply_extra_dq, fit_shutter_offset.

They are adapters: they gather the group's arrays, call the pure functions of
:mod:`slitcombine.core` (``sky``, ``background``, ``barshadow``, ``barpolicy``,
``fluxcal``), and store the results and ``meta`` on the group.  ``SlitGroup`` inherits
this class, which holds no state of its own.

Calibration files are looked up in ``$SLITCOMBINE_CALIB_DIR``, then in the table set
fetched by ``slitcombine calib fetch`` (:mod:`slitcombine.io.tables` for the names and
msaexp's alternatives, :mod:`slitcombine.io.table_readers` for the formats,
:mod:`slitcombine.io.calib` for the fetch); when none is found the step is a logged
no-op recorded in ``meta['steps']``.  A default step skipped because no table of its
kind is installed at all is said once per group at WARNING, with the fix
(:meth:`SkyMethods._warn_missing_tables`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from slitcombine.core import background as bkgmod
from slitcombine.core import barpolicy, fluxcal
from slitcombine.core import sky as skymod
from slitcombine.core.barshadow import BarCoefficients, evaluate_bar_coeffs
from slitcombine.core.masks import Reject
from slitcombine.core.splines import ColumnCoordinate
from slitcombine.errors import CalibrationFileError, FitError
from slitcombine.group.steps import UNUSED, ignore_seed_keywords
from slitcombine.io import table_readers as readers
from slitcombine.io import tables

__all__ = ["SkyMethods"]

log = logging.getLogger(__name__)


class SkyMethods:
    """Mixin of :class:`slitcombine.SlitGroup`: sky, bar-shadow and flux-calibration corrections."""

    # ------------------------------------------------------------------ helpers
    def _wave_coordinate(self):
        """Wavelength -> fractional column of exposure 0's trace (the sky-spline coordinate)."""
        for i in range(self.N):
            if np.isfinite(self.wtr[i]).sum() >= 2:
                return ColumnCoordinate(self.wtr[i])
        raise FitError(f"{self.name}: no exposure has a trace with finite wavelengths")

    def _apply_factor(self, factor):
        """Multiply ``sci`` by ``factor`` (variances by its square); reject non-finite.

        Returns the number of pixels newly rejected.
        """
        f = np.asarray(factor, float)
        with np.errstate(invalid="ignore", over="ignore"):
            self.sci = self.sci * f
            self.var_rnoise = self.var_rnoise * f**2
            self.var_poisson = self.var_poisson * f**2
            self.var_sky = self.var_sky * f**2
        self.var = self.var_rnoise + self.var_poisson + self.var_sky
        bad = ~np.isfinite(np.broadcast_to(f, self.sci.shape)) | ~np.isfinite(self.sci)
        return self._reject_pixels(bad, Reject.NONFINITE)

    def _shutter_period(self):
        """MSA shutter pitch in units of the shutter coordinate (``fixed_yshutter``).

        ``fixed_yshutter`` is pixels / 5 and the pitch is ``0.529 arcsec /
        slit_pixel_scale`` pixels, so the period is ~1.02, not exactly 1.
        """
        from slitcombine.instrument import MSA_NOD_ARCSEC

        scale = self.slit_pixel_scale
        if not np.isfinite(scale) or scale <= 0:
            return None
        return MSA_NOD_ARCSEC / scale / 5.0

    def _wave_range(self):
        w = self.wave[np.isfinite(self.wave)]
        return (float(w.min()), float(w.max())) if w.size else None

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
        (:func:`slitcombine.io.calib.plan_for_group`: the steps done as recorded, the others
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

    # ------------------------------------------------------------------ sky spline
    def estimate_sky(
        self,
        mask_yslit=None,
        min_bar=0.95,
        var_percentiles=None,
        df=51,
        high_clip=0.8,
        use=True,
        outlier_threshold=7,
        absolute_threshold=0.2,
        make_plot=False,
        grating_limits=None,
        *,
        use_global_sky=True,
    ):
        """Fit a sky spectrum to the off-source pixels of all exposures.

        A robust cubic B-spline in wavelength (knots uniform in detector columns) is fitted
        to the un-differenced ``sci`` (uJy per pixel, bar shadow divided out) of the
        pixels of every exposure that are valid, outside ``mask_yslit``, unshadowed
        (``bar > min_bar``) and inside the grating's limits; see
        :func:`slitcombine.core.sky.fit_sky`.  With a global sky (:attr:`sky_arrays`, from
        ``sky_arrays``/``sky_file``) the model is that template times a smooth spline of
        ``meta['global_sky_df']`` functions (instead of ``df``).

        Parameters
        ----------
        mask_yslit : list of (float, float) or None
            ``yslit`` ranges (pixels from the trace) excluded; default ``[[-4.5, 4.5]]``.
        min_bar : float
            Minimum bar-shadow throughput of sky pixels.
        var_percentiles : (float, float) or None
            Variance trimming (percentiles; negative = number of pixels); default
            ``[-5, -5]``.
        df : int
            Spline functions; 0: a single scale factor (of the template, or a constant);
            < 0: the template unscaled (needs a global sky).
        high_clip, absolute_threshold : float or None
            msaexp's absolute levels (uJy), applied in S/N units at the group's median
            noise (see :mod:`slitcombine.core.sky`); None disables.
        use : bool
            Use the model as :attr:`sky_background` (and in :attr:`data`).
        outlier_threshold : float or None
            Reject sky pixels with ``|sci - sky| > outlier_threshold * sigma``
            (``Reject.SKY``).
        make_plot : bool
            Return a diagnostic figure.
        grating_limits : dict or None
            ``{grating: [wmin, wmax, dlam]}`` (um); default
            :data:`slitcombine.core.sky.DEFAULT_GRATING_LIMITS`.
        use_global_sky : bool
            Modulate the global sky (:attr:`sky_arrays`) when there is one.

        Returns
        -------
        matplotlib.figure.Figure or None
            The figure with ``make_plot``.

        Notes
        -----
        Stores :attr:`sky_data`: ``sky2d`` (``(N, npix)`` uJy per pixel), ``use``,
        ``sky_wave`` (um) and ``sky_model``/``sky_err`` (the 1D model and its 1-sigma
        error along exposure 0's trace), ``coeffs``, ``covar``, ``df``, ``npix``,
        ``mask`` (pixels of the fit), ``template`` (whether the global sky was used).
        When too few sky pixels exist the step is recorded as ``FAILED`` in
        ``meta['steps']['estimate_sky']`` with the reason, :attr:`sky_data` is left as it
        was and a warning is logged (no exception, so the constructor carries on).
        """
        mask_yslit = [[-4.5, 4.5]] if mask_yslit is None else mask_yslit
        cand, counts = skymod.sky_candidates(
            self.mask,
            self.yslit,
            self.bar,
            self.wave,
            self.var,
            mask_yslit=[tuple(r) for r in mask_yslit],
            min_bar=min_bar,
            var_percentiles=[-5, -5] if var_percentiles is None else var_percentiles,
            wave_limits=skymod.grating_wave_limits(self.grating, grating_limits),
        )
        template, df_used = None, int(df)
        if use_global_sky and self.sky_arrays is not None:
            template = skymod.tabulated_sky(*self.sky_arrays)
            if df_used > 0:
                df_used = int(self.meta.get("global_sky_df", 7))
        try:
            coord = self._wave_coordinate()
            fit = skymod.fit_sky(
                self.sci,
                self.var,
                self.var_rnoise,
                self.wave,
                cand,
                coord,
                df=df_used,
                template=template,
                high_clip=high_clip,
                absolute_threshold=absolute_threshold,
            )
        except FitError as exc:
            self._step("estimate_sky", "FAILED", reason=str(exc), pixels=counts)
            log.warning("%s: estimate_sky failed, no sky model: %s", self.name, exc)
            return None
        sky2d, _ = fit["evaluate"](self.wave, with_err=False)
        n_out = 0
        if outlier_threshold is not None:
            out = skymod.sky_outliers(self.sci, self.var, sky2d, cand, outlier_threshold)
            n_out = self._reject_pixels(out, Reject.SKY)
        self._store_sky_fit(fit, sky2d, coord.wave, bool(use), n_out, counts)
        if make_plot:
            d = self.sky_data
            return skymod.plot_sky(
                self.wave,
                self.sci,
                sky2d,
                fit["used"],
                d["sky_wave"],
                d["sky_model"],
                title=self.name,
            )
        return None

    def _store_sky_fit(self, fit, sky2d, sky_wave, use, n_out, counts):
        """Store a sky fit of :func:`slitcombine.core.sky.fit_sky` as :attr:`sky_data`."""
        sky_model, sky_err = fit["evaluate"](sky_wave)
        template = fit["template"]
        self.sky_data = {
            "sky2d": sky2d,
            "use": use,
            "sky_wave": sky_wave,
            "sky_model": sky_model,
            "sky_err": sky_err,
            "coeffs": fit["coeffs"],
            "covar": fit["covar"],
            "df": fit["df"],
            "npix": fit["npix"],
            "mask": fit["used"],
            "template": template,
            "source": "estimate_sky",
        }
        self._step(
            "estimate_sky",
            "COMPLETE",
            df=fit["df"],
            template=template,
            npix=fit["npix"],
            n_candidates=fit["n_candidates"],
            n_high_clipped=fit["n_high_clipped"],
            n_iter=fit["n_iter"],
            reduced_chi2=fit["reduced_chi2"],
            sigma_med=round(fit["sigma_med"], 6),
            k_high=None if fit["k_high"] is None else round(fit["k_high"], 2),
            k_abs=None if fit["k_abs"] is None else round(fit["k_abs"], 2),
            outliers_rejected=n_out,
            use=use,
            pixels=counts,
        )
        log.info(
            "%s: sky spline df=%d from %d pixels (%d outliers rejected)",
            self.name,
            fit["df"],
            fit["npix"],
            n_out,
        )

    # ------------------------------------------------------------------ global sky
    def get_global_sky(self, sky_file=None):
        """Read a tabulated global sky into :attr:`sky_arrays`.

        Parameters
        ----------
        sky_file : str, path-like or None
            A CSV file (``wave`` um, ``flux`` uJy per pixel); ``None`` or ``"read"``:
            look up ``{visit}_sky.csv`` or msaexp's ``msa_sky/{visit}_sky.csv`` in the
            calibration directories (``$SLITCOMBINE_CALIB_DIR``, then the fetched
            tables).  When none is there, nothing is read: the step is ``SKIPPED`` in
            ``meta['steps']`` with the reason, ``meta['sky_file']`` is ``'N/A'``, and
            it is logged (at WARNING once per group when no sky table is installed at
            all).  ``meta['sky_file']`` is the base name of the table read (msaexp's
            meaning), ``meta['steps']['global_sky']['file']`` its path.

        Returns
        -------
        (numpy.ndarray, numpy.ndarray) or None
            ``sky_arrays`` (wavelength um, flux uJy per pixel), or None.

        Raises
        ------
        CalibrationFileError
            An explicit file that is missing, or any table that is malformed, of another
            grating, or does not cover the data's wavelengths.
        """
        if sky_file is None or str(sky_file) == "read":
            visit = str(self.info["visit"][0])
            names = tables.calibration_table_names("global_sky", visit=visit)
            dirs = tables.calibration_dirs()
            path = tables.find_calibration_table("global_sky", dirs, visit=visit)
            if path is None:
                self.meta["sky_file"] = "N/A"
                self._skip_for_table("global_sky", "global_sky", names, dirs, "no global sky")
                no_sky = self.sky_arrays is None and self.meta.get("estimate_sky_kwargs") is None
                if not self.meta["diffs"] and no_sky:
                    log.warning(
                        "%s: diffs=False and no sky table: pass estimate_sky_kwargs to fit "
                        "the sky, otherwise the data keep their sky",
                        self.name,
                    )
                return None
        else:
            path = Path(sky_file)
            if not path.is_file():
                raise CalibrationFileError(f"{path}: sky table not found")
        wave, flux = readers.read_sky_table(
            path, grating=self.grating, wave_range=self._wave_range()
        )
        self.sky_arrays = (wave, flux)
        self.meta["sky_file"] = path.name  # msaexp's meaning: the table's base name
        self.meta["has_sky_arrays"] = True
        self._step("global_sky", "COMPLETE", file=str(path), rows=int(wave.size))
        log.info("%s: global sky read from %s (%d rows)", self.name, path, wave.size)
        return self.sky_arrays

    # ------------------------------------------------------------------ background spectra
    def set_background_spectra(
        self,
        path="",
        skip_h_gratings=True,
        df=-1,
        by_wavelength=False,
        wsteps=None,
        poly=False,
        mask_yslit=None,
        resid_limits=None,
        apply_to_background=True,
        *,
        systematic=bkgmod.BACKGROUND_SYSTEMATIC,
    ):
        """Use per-exposure background spectra (``{file_root}_gbkg.fits``) as the sky.

        ``{file_root}`` is the exposure file name up to the detector
        (:func:`slitcombine.io.tables.background_file_root`); the format is that of
        :func:`slitcombine.io.table_readers.read_background_spectrum`.  Every exposure
        needs one; otherwise nothing changes (``SKIPPED`` with the missing files in
        ``meta``).  The file found is the file read (no separate existence check).

        ``sky2d_j = p50(lambda) * PIXAR_SR_j / REFPAREA`` and
        ``var_sky_j = (perr * PIXAR_SR_j / REFPAREA)^2 + (systematic * sky2d_j)^2``
        (:func:`slitcombine.core.background.background_sky`); optionally rescaled by a
        smooth ``s(lambda)`` fitted to the off-source pixels
        (:func:`slitcombine.core.background.rescale_background`).

        Parameters
        ----------
        path : str
            Directory of the files; ``''`` searches each exposure's own directory, then
            the calibration directories.
        skip_h_gratings : bool
            Do nothing for high-resolution (``G*H``) gratings.
        df : int
            Rescaling functions: < 0 none, 0 one factor, > 0 a B-spline (or polynomial).
        by_wavelength : bool
            Rescaling knots uniform in wavelength rather than in detector columns.
        wsteps : array_like or None
            Wavelength grid (um) setting the knot density of the rescaling.
        poly : bool
            Chebyshev polynomial rescaling.
        mask_yslit : list of (float, float) or None
            Source region excluded from the rescaling fit; default ``[[-4, 4]]`` pixels.
        resid_limits : (float, float) or None
            Residual range (sigma) of the pixels used; default ``[-3, 5]``.
        apply_to_background : bool
            Rescale the background (True) or divide the data and variances (False).
        systematic : float
            Fractional systematic error of the spectra.

        Returns
        -------
        bool
            True when background spectra were applied.
        """
        if skip_h_gratings and self.grating.endswith("H"):
            self._step("set_background_spectra", "SKIPPED", reason=f"H grating {self.grating}")
            return False
        found, missing = tables.find_background_spectra(self.files, path)
        if missing:
            self._step(
                "set_background_spectra",
                "SKIPPED",
                reason="no background spectrum for every exposure",
                missing=[str(m) for m in missing],
            )
            log.info("%s: no background spectra (%d missing)", self.name, len(missing))
            return False
        wr = self._wave_range()
        spectra = [readers.read_background_spectrum(p, self.grating, wr) for p in found]
        pixar = [s.meta["photometry"]["pixelarea_steradians"] for s in self.slits]
        sky2d, var_sky = bkgmod.background_sky(self.wave, spectra, pixar, systematic=systematic)
        sky2d, var_sky, scale, info = bkgmod.rescale_background(
            self.sci,
            self.var,
            self.mask,
            self.yslit,
            self.wave,
            sky2d,
            var_sky,
            coordinate=self._wave_coordinate(),
            df=df,
            by_wavelength=by_wavelength,
            wsteps=wsteps,
            poly=poly,
            mask_yslit=[[-4, 4]] if mask_yslit is None else mask_yslit,
            resid_limits=[-3, 5] if resid_limits is None else resid_limits,
            apply_to_background=apply_to_background,
        )
        if "failed" in info:
            log.warning(
                "%s: background rescaling failed (%s); using it unscaled", self.name, info["failed"]
            )
        if not apply_to_background:
            with np.errstate(divide="ignore", invalid="ignore"):
                self._apply_factor(1.0 / scale)
        self.var_sky = var_sky
        self.var = self.var_rnoise + self.var_poisson + self.var_sky
        nbad = self._reject_pixels(self.mask & ~np.isfinite(sky2d), Reject.NONFINITE)
        files = [str(p) for p in found]
        self.sky_data = {
            "sky2d": sky2d,
            "use": True,
            "source": "background spectra",
            "files": files,
            "scale": info,
        }
        self._step(
            "set_background_spectra",
            "COMPLETE",
            files=files,
            rescaling=info,
            apply_to_background=bool(apply_to_background),
            rejected_outside=nbad,
        )
        log.info("%s: background spectra from %s", self.name, [p.name for p in found])
        return True

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

    # ------------------------------------------------------------------ shutter offset
    def fit_shutter_offset(
        self,
        minimizer_kwargs=None,
        update=True,
        make_plot=False,
        max_sn=50,
        prior=(0, 0.05),
        *,
        mask_yslit=None,
    ):
        """Fit an offset of the shutter coordinate against a bar-shadow *table*.

        With a bar-shadow table in msaexp's format (``bar_correction`` from a file, see
        :meth:`apply_spline_bar_correction`), the valid off-source pixels (outside
        ``mask_yslit``, ``|fixed_yshutter| < 1.4``, any throughput) are compared, with
        the bar shadow in, to ``sky2d * bar(y + dy / 5)``::

            chi2(dy) = sum ((sci * bar - sky2d * bar_dy) / sigma)^2
                       + ((dy - prior[0]) / prior[1])^2

        with ``dy`` in pixels and ``sigma^2 = var_rnoise + var_poisson`` (bar shadow in)
        (:mod:`slitcombine.core.shutteroffset`).
        The shutter count is clamped as in :func:`slitcombine.io.tables.bar_coeffs_filename`
        (msaexp's bug 13).  With the group's *own* model the offset is degenerate (the
        model was fitted in the data's own frame) and with the pipeline correction there
        is no model to shift: the step is ``SKIPPED``.  Also skipped without a sky model
        or when the 95th percentile of the trace S/N exceeds ``max_sn`` (a bright source
        fills the sky pixels).  (Longer than most adapters: four preconditions, the
        update of the bar correction and the figure.)

        Parameters
        ----------
        minimizer_kwargs : dict or None
            Options of :func:`scipy.optimize.minimize` (default
            ``{'method': 'bfgs', 'tol': 1e-5}``), on ``dy / prior[1]``.
        update : bool
            Add the offset to ``meta['shutter_offset']`` and redo the bar correction
            (``sci`` and variances rescaled by ``bar_old / bar_new``).
        make_plot : bool
            Return a figure of chi2(dy).
        max_sn : float
            Maximum 95th-percentile trace S/N (if the trace S/N is available).
        prior : (float, float)
            Gaussian prior (mean, sigma) on ``dy``, pixels.
        mask_yslit : list of (float, float) or None
            Source region excluded, pixels from the trace; default ``[[-4.5, 4.5]]``.

        Returns
        -------
        float or matplotlib.figure.Figure or None
            The offset (pixels), the figure with ``make_plot``, or None when skipped.
        """
        from slitcombine.core import shutteroffset

        mask_yslit = [[-4.5, 4.5]] if mask_yslit is None else mask_yslit
        table = getattr(self, "bar_model", None)
        if not isinstance(table, BarCoefficients):
            what = "own model" if table is not None else "pipeline correction"
            self._step(
                "fit_shutter_offset",
                "SKIPPED",
                reason=f"bar shadow is the {what}: no table to align",
            )
            return None
        if self.sky_data is None or "mask" not in self.sky_data:
            self._step("fit_shutter_offset", "SKIPPED", reason="needs estimate_sky first")
            return None
        if max_sn is not None:
            sn = np.asarray(self.get_trace_sn().get("sn", []), float)
            sn = sn[np.isfinite(sn)]
            if sn.size and np.percentile(sn, 95) > max_sn:
                self._step("fit_shutter_offset", "SKIPPED", reason=f"trace S/N > {max_sn}")
                return None
        ys = np.broadcast_to(self._yshutter_grid, self.sci.shape)
        sky2d = self.sky_data["sky2d"]
        use = shutteroffset.shutter_offset_pixels(ys, self.yslit, self.mask, sky2d, mask_yslit)
        if use.sum() < shutteroffset.MIN_SKY_PIXELS:
            reason = f"fewer than {shutteroffset.MIN_SKY_PIXELS} sky pixels"
            self._step("fit_shutter_offset", "SKIPPED", reason=reason)
            return None
        wrap = tables.bar_coeffs_filename(self.grating, int(self.meta["num_shutters"]))[1]
        chi2 = shutteroffset.ShutterOffsetChi2(
            lambda y, w: evaluate_bar_coeffs(table, y, w, wrap=wrap),
            ys[use],
            self.wave[use],
            self.sci[use],
            self.bar[use],
            sky2d[use],
            self.var_rnoise[use] + self.var_poisson[use],
            prior=prior,
        )
        res = shutteroffset.fit_shutter_offset(chi2, minimizer_kwargs)
        dy = res.offset
        info = {
            "offset_pix": round(dy, 5),
            "chi2_start": round(res.chi2_start, 2),
            "chi2_fit": round(res.chi2_fit, 2),
            "npix": res.npix,
            "converged": res.converged,
            "updated": bool(update),
        }
        if update:
            self.meta["shutter_offset"] = float(self.meta["shutter_offset"]) + dy
            self.__dict__.pop("_yshutter_grid", None)  # cached_property: recompute
            ys_new = np.broadcast_to(self._yshutter_grid, self.sci.shape)
            bar_new = evaluate_bar_coeffs(table, ys_new, self.wave, wrap=wrap)
            with np.errstate(divide="ignore", invalid="ignore"):
                info["rejected"] = self._apply_factor(self.bar / bar_new)
            self.bar = bar_new
            with np.errstate(invalid="ignore"):
                info["rejected_low_bar"] = self._reject_pixels(
                    bar_new < self.meta.get("min_bar", 0.0), Reject.LOW_BAR
                )
        self._step("fit_shutter_offset", "COMPLETE", **info)
        log.info(
            "%s: shutter offset %.3f px (chi2 %.1f -> %.1f)",
            self.name,
            dy,
            res.chi2_start,
            res.chi2_fit,
        )
        if make_plot:
            import matplotlib.pyplot as plt

            sd = chi2.sd
            grid = np.linspace(dy - 5 * sd, dy + 5 * sd, 41)
            fig, ax = plt.subplots(figsize=(5, 3))
            ax.plot(grid, [chi2.scaled(g / sd) for g in grid])
            ax.axvline(dy, color="tab:red")
            ax.set_xlabel("shutter offset (pixels)")
            ax.set_ylabel("chi2")
            fig.tight_layout()
            return fig
        return dy

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
