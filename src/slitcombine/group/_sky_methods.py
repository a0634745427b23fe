"""``SlitGroup`` methods for the sky: its spline fit, msaexp's global sky tables, the
background spectra, and the shutter offset fitted on the sky.

Methods: estimate_sky, get_global_sky, set_background_spectra, fit_shutter_offset (the
bar shadow and the flux-calibration tables are in
:mod:`slitcombine.group._calib_methods`).

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
(:meth:`slitcombine.group._calib_methods.CalibrationMethods._warn_missing_tables`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from slitcombine.core import background as bkgmod
from slitcombine.core import sky as skymod
from slitcombine.core.barshadow import BarCoefficients, evaluate_bar_coeffs
from slitcombine.core.masks import Reject
from slitcombine.core.splines import ColumnCoordinate
from slitcombine.errors import CalibrationFileError, FitError
from slitcombine.io import table_readers as readers
from slitcombine.io import tables

__all__ = ["SkyMethods"]

log = logging.getLogger(__name__)


class SkyMethods:
    """Mixin of :class:`slitcombine.SlitGroup`: the sky and the shutter offset."""

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
            from slitcombine.plots import sky_fit_figure

            d = self.sky_data
            return sky_fit_figure(
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
            from slitcombine.plots import shutter_offset_figure

            sd = chi2.sd
            grid = np.linspace(dy - 5 * sd, dy + 5 * sd, 41)
            return shutter_offset_figure(grid, [chi2.scaled(g / sd) for g in grid], dy)
        return dy
