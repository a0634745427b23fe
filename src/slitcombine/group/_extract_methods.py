"""``SlitGroup`` methods for the pixel table and figures.

Methods: get_flat_diff_arrays, plot_2d_differences.

They are thin: they read the group's arrays, call the pure functions of
slitcombine.core.resample, slitcombine.core.extract
and slitcombine.plots, and store the results on the group.  ``SlitGroup``
inherits this class, which holds no state of its own.
"""

from __future__ import annotations

import logging

import numpy as np

from slitcombine._threads import compute_call
from slitcombine.core import geometry
from slitcombine.errors import ConfigurationError

__all__ = ["ExtractMethods", "DEFAULT_PROFILE_SIGMA", "slit_width_arcsec"]

log = logging.getLogger(__name__)

#: Intrinsic source width (pixels) used for the profile and the path loss when no trace
#: fit is available: a compact galaxy of ~0.05 arcsec Gaussian sigma.
DEFAULT_PROFILE_SIGMA = 0.5

#: Open width (arcsec) of the fixed slits by name fragment; MSA shutters are 0.20.
_FIXED_SLIT_WIDTHS = {"S200": 0.2, "S400": 0.4, "S1600": 1.6}


def slit_width_arcsec(slit_name, is_fixed_slit):
    """Open width of the slit in the dispersion direction, arcsec.

    Parameters
    ----------
    slit_name : str
        Slit name (e.g. ``'S200A1'`` for a fixed slit, a slitlet number for the MSA).
    is_fixed_slit : bool
        Whether this is a fixed-slit observation.

    Returns
    -------
    float
        0.20 for MSA shutters and S200 slits, 0.40 for S400A1, 1.60 for S1600A1.
    """
    if is_fixed_slit:
        name = str(slit_name).upper()
        for key, width in _FIXED_SLIT_WIDTHS.items():
            if key in name:
                return width
    return 0.2


class ExtractMethods:
    """Mixin of :class:`slitcombine.SlitGroup`: the pixel table and figures."""

    # ------------------------------------------------------------------ helpers
    def profile_sigma(self, fit=None):
        """Intrinsic profile width of each exposure, pixels.

        Parameters
        ----------
        fit : dict, float or None
            A trace fit (``{position: {'sigma': ...}}`` as stored by
            ``fit_all_traces`` in :attr:`fit`), a single width in pixels, or None to
            use :attr:`fit` and else :data:`DEFAULT_PROFILE_SIGMA`.

        Returns
        -------
        numpy.ndarray
            ``(N,)`` widths in pixels.
        """
        if fit is None:
            fit = self.fit
        sig = np.full(self.N, np.nan)
        if isinstance(fit, int | float | np.floating):
            sig[:] = float(fit)
        elif isinstance(fit, dict):
            keys = list(self.info[self.position_key])
            for i, k in enumerate(keys):
                entry = fit.get(k, fit.get(str(k)))
                if isinstance(entry, dict) and entry.get("sigma") is not None:
                    sig[i] = float(entry["sigma"])
            if np.isfinite(sig).any():
                sig[~np.isfinite(sig)] = np.nanmedian(sig)
        if not np.isfinite(sig).all():
            sig[~np.isfinite(sig)] = DEFAULT_PROFILE_SIGMA
        return sig

    def slit_throughput(self, sigma=None, source="auto"):
        """Slit throughput (fraction of the source flux through the shutter) per pixel.

        Parameters
        ----------
        sigma : numpy.ndarray, optional
            ``(N,)`` intrinsic widths, pixels (default :meth:`profile_sigma`).
        source : {'auto', 'pipeline', 'model'}
            ``'pipeline'``: the point-source path-loss arrays ``PATHLOSS_PS`` of the
            input files, i.e. the pipeline's throughput for a point source at the
            catalogue position (only if the group's data are not already corrected by
            them, ``undo_pathloss=2``).  ``'model'``: :func:`slitcombine.core.profile.
            slit_throughput` at ``source_xpos``/``source_ypos`` with the profile width
            (and ``lookup_prf`` if given).  ``'auto'``: 'pipeline' when every file has
            ``PATHLOSS_PS``, else 'model'.

        Returns
        -------
        throughput : numpy.ndarray or None
            ``(N, ny*nx)`` throughput (None if the data are already corrected).
        used : str
            What was used: ``'pipeline'``, ``'model'`` or ``'none (already applied)'``.
        """
        from slitcombine.core import profile

        if source not in ("auto", "pipeline", "model"):
            raise ConfigurationError(
                f"pathloss_source must be 'auto', 'pipeline' or 'model', got {source!r}"
            )
        if self.options.undo_pathloss == 2:
            return None, "none (already applied)"
        has_ps = all(s.pathloss_ps is not None for s in self.slits)
        if source == "pipeline" and not has_ps:
            raise ConfigurationError("pathloss_source='pipeline' but a file has no PATHLOSS_PS")
        if source == "pipeline" or (source == "auto" and has_ps):
            thr = np.stack(
                [
                    np.asarray(s.pathloss_ps, float)[sl].ravel()
                    for s, sl in zip(self.slits, self.slices, strict=True)
                ]
            )
            return thr, "pipeline"
        if sigma is None:
            sigma = self.profile_sigma()
        xpos = np.nan_to_num(np.asarray(self.info["source_xpos"], float), nan=0.0)
        ypos = np.nan_to_num(np.asarray(self.info["source_ypos"], float), nan=0.0)
        kwargs = {
            "lookup_prf": self.profile_prf(),
            "slit_width": slit_width_arcsec(self.slits[0].slit.get("name", ""), self.IS_FIXED_SLIT),
        }
        if self.IS_FIXED_SLIT:
            kwargs["slit_height"] = None
        thr = profile.slit_throughput(
            self.wave, np.asarray(sigma)[:, None], xpos[:, None], ypos[:, None], **kwargs
        )
        return thr, "model"

    def _bar_factor(self):
        return self._source_view()[1]

    # ------------------------------------------------------------------ source images
    def _aperture_centres(self, planned=False):
        """Open-aperture centres in exposure 0's slit frame (``y_slit`` units).

        From the ``shutter_state`` of exposure 0 (the fixed slit: one aperture at 0);
        unless ``planned``, the shutters found or declared bad (:attr:`bad_shutter_names`,
        in shutter pitches from the source shutter) are closed.
        """
        from slitcombine.core import apertures

        state = "" if self.IS_FIXED_SLIT else str(self.info["shutter_state"][0] or "")
        if "x" not in state:
            # a fixed slit, or no MSA metadata: one aperture centred on y_slit = 0
            return np.zeros(1)
        centres = apertures.shutter_centres(state, self._slit_y0)
        if not planned and self.bad_shutter_names:
            pitches = centres / apertures.PITCH_UNITS
            bad = np.zeros(centres.size, bool)
            for k in self.bad_shutter_names:
                bad |= np.abs(pitches - float(k)) < 0.5
            centres = centres[~bad]
        return centres

    def source_image_model(self):
        """The optics of this group's apertures.

        A :class:`slitcombine.core.apertures.SourceImageModel`.

        Built on first use from exposure 0's slit frame and wavelengths, its open
        shutters (stuck or bad ones closed), the median ``source_xpos`` and the slit
        width; rebuilt when :attr:`bad_shutter_names` changes.

        Returns
        -------
        slitcombine.core.apertures.SourceImageModel
        """
        from slitcombine.core import apertures

        key = tuple(self.bad_shutter_names)
        cached = getattr(self, "_source_image_cache", None)
        if cached is not None and cached[0] == key:
            return cached[1]
        ny, nx = self.sh
        half = 0.5
        model = apertures.SourceImageModel(
            self.wave.reshape(self.N, ny, nx)[0],
            apertures.open_intervals(self._slit_y0, self._aperture_centres(), half),
            model=self.optics_model(),
            xpos=float(np.nanmedian(np.asarray(self.info["source_xpos"], float)))
            if np.isfinite(np.asarray(self.info["source_xpos"], float)).any()
            else 0.0,
            slit_width=slit_width_arcsec(self.slits[0].slit.get("name", ""), self.IS_FIXED_SLIT),
        )
        planned = apertures.open_intervals(self._slit_y0, self._aperture_centres(True), half)
        from slitcombine.core.optics import aperture_transmission, fine_grid

        model.planned_transmission = aperture_transmission(
            fine_grid(ny, step=model.step, pad=2.0)[1], planned
        )
        self._source_image_cache = (key, model)
        return model

    def optics_model(self):
        """The optics of the source model: :attr:`lookup_prf` if it is an
        :class:`slitcombine.core.optics.OpticsModel`, else None (the default optics); a
        LookupPRF table has no aperture model."""
        from slitcombine.core.optics import OpticsModel

        return self.lookup_prf if isinstance(self.lookup_prf, OpticsModel) else None

    def profile_prf(self):
        """The translation-invariant point-response model (the ``lookup_prf`` argument
        of :mod:`slitcombine.core.profile`): :attr:`lookup_prf` unless it is an optics model
        (then None: the Gaussian)."""
        return None if self.optics_model() is not None else self.lookup_prf

    def uses_optics(self):
        """Whether the source is modelled with the optics through the apertures."""
        return self.source_type == "compact" and (
            self.lookup_prf is None or self.optics_model() is not None
        )

    def trace_rows(self):
        """Source row in every column of every exposure, ``(N, nx)`` (from :attr:`yslit`)."""
        ny, nx = self.sh
        return (self.ypix - self.yslit).reshape(self.N, ny, nx)[:, 0, :]

    def catalogue_rows(self):
        """Rows of the catalogue position (``source_ypos``) in every exposure, ``(N, nx)``.

        The trace :attr:`ytr` (the shutter centre, or ``source_ypos`` with
        ``trace_with_ypos`` and for fixed slits) moved to ``source_ypos``, the position
        at which the pipeline computes ``PATHLOSS_PS``.
        """
        rows = self.ytr.copy()
        if self.meta.get("trace_target") != "source_ypos":
            ypos = np.nan_to_num(np.asarray(self.info["source_ypos"], float))
            r0 = geometry.rows_where(self._slit_y0, 0.0)
            rows += np.array([geometry.rows_where(self._slit_y0, t) for t in ypos]) - r0
        cols = np.arange(rows.shape[1], dtype=float)
        for i in range(rows.shape[0]):  # columns without a crossing: interpolated
            good = np.isfinite(rows[i])
            if good.any() and not good.all():
                rows[i] = np.interp(cols, cols[good], rows[i][good])
        return rows

    def source_profiles(self, sigma=None, pathloss_source="auto"):
        """Profile and throughput of the source in every pixel, from the optics model.

        The detector image of a unit-flux source at the current traces
        (:meth:`trace_rows`) with intrinsic width ``sigma``, through this group's open
        apertures (:meth:`source_image_model`): for :attr:`source_type` ``'compact'``
        the image itself (cut by the bars, with its wings), normalised to the light that
        passed; for ``'extended'`` (data corrected for the bar shadow) the uncut
        profile.  The throughput that goes with it:

        * ``'model'``: the model's fraction of the source that passed the apertures
          (``'extended'``: that passed the dispersion-direction window);
        * ``'pipeline'``: the same, scaled by ``PATHLOSS_PS / T_point``, where ``T_point``
          is the model's throughput of a point source at the catalogue position through
          the planned shutters (where the pipeline computed ``PATHLOSS_PS``): the
          pipeline's absolute calibration (which includes the diffraction losses at the
          grating that the model leaves out), the model's dependence on the source's
          size and its fitted position;
        * ``'auto'``: ``'pipeline'`` when every file has ``PATHLOSS_PS``, else ``'model'``.

        Parameters
        ----------
        sigma : numpy.ndarray, optional
            ``(N,)`` intrinsic widths, pixels (default :meth:`profile_sigma`).
        pathloss_source : {'auto', 'pipeline', 'model'}
            See above.

        Returns
        -------
        profile : numpy.ndarray
            ``(N, ny*nx)`` fraction of the light that reached the detector in each pixel
            (NaN where no light passes).
        throughput : numpy.ndarray or None
            ``(N, ny*nx)`` throughput (None with ``undo_pathloss=2``: already applied).
        used : str
            ``'model'``, ``'pipeline'`` or ``'none (already applied)'``.
        """
        if pathloss_source not in ("auto", "pipeline", "model"):
            raise ConfigurationError(
                f"pathloss_source must be 'auto', 'pipeline' or 'model', got {pathloss_source!r}"
            )
        if self.source_type not in ("compact", "extended"):
            raise ConfigurationError(
                f"source_profiles needs source_type 'compact' or 'extended', got "
                f"{self.source_type!r}"
            )
        ny, nx = self.sh
        if sigma is None:
            sigma = self.profile_sigma()
        sigma = np.broadcast_to(np.asarray(sigma, float), (self.N,))
        model = self.source_image_model()
        table = self.profile_prf()  # a LookupPRF table given by the user, or None
        if self.uses_optics():
            imgs, thr = model.images(self.trace_rows(), sigma)
            with np.errstate(invalid="ignore", divide="ignore"):
                prof = np.where(thr[:, None, :] > 0, imgs / thr[:, None, :], np.nan)
        else:
            from slitcombine.core import profile

            prof = profile.pixel_profile(
                self.yslit, self.wave, sigma[:, None], lookup_prf=table
            ).reshape(self.N, ny, nx)
            if table is None:
                thr = np.array([model.window_fraction(s) for s in sigma])
        prof = prof.reshape(self.N, ny * nx)
        if self.options.undo_pathloss == 2:
            return prof, None, "none (already applied)"
        has_ps = all(s.pathloss_ps is not None for s in self.slits)
        if pathloss_source == "pipeline" and not has_ps:
            raise ConfigurationError("pathloss_source='pipeline' but a file has no PATHLOSS_PS")
        if table is not None and not self.uses_optics():
            # the table's own throughput at the catalogue position (its loss across the
            # slit), and of a point source there for the pipeline's normalisation
            thr_pix = self.slit_throughput(sigma, "model")[0]
            if pathloss_source == "model" or not has_ps:
                return prof, thr_pix, "model"
            point_pix = self.slit_throughput(np.zeros(self.N), "model")[0]
        else:
            thr_pix = np.broadcast_to(thr[:, None, :], (self.N, ny, nx)).reshape(self.N, -1)
            if pathloss_source == "model" or not has_ps:
                return prof, thr_pix, "model"
            point = model.throughput(
                self.catalogue_rows(), 0.0, transmission=model.planned_transmission
            )
            point_pix = np.broadcast_to(point[:, None, :], (self.N, ny, nx)).reshape(self.N, -1)
        ps = np.stack(
            [
                np.asarray(s.pathloss_ps, float)[sl].ravel()
                for s, sl in zip(self.slits, self.slices, strict=True)
            ]
        )
        with np.errstate(invalid="ignore", divide="ignore"):
            scaled = np.where(point_pix > 0, ps * thr_pix / point_pix, np.nan)
        return prof, scaled, "pipeline"

    # ------------------------------------------------------------------ pixel table
    def get_flat_diff_arrays(
        self,
        apply_mask=True,
        fit=None,
        with_pathloss=False,
        float_dtype=float,
        pathloss_source="auto",
    ):
        """The pixel table: every valid differenced (or sky-subtracted) pixel.

        One row per valid pixel of each exposure, for that exposure taken as the
        positive of its nod position: ``flux = data_e - mean(data of the other
        positions)`` (only ``data_e`` when ``meta['diffs']`` is False).  See
        :mod:`slitcombine.core.extract` for every column, the variance and the profile
        model.

        Parameters
        ----------
        apply_mask : bool
            Use the group's :attr:`mask`; if False only non-finite values are excluded
            (outlier and DQ rejections are ignored).
        fit : dict, float or None
            Trace fit giving the profile width per nod position (see
            :meth:`profile_sigma`); None uses :attr:`fit` or the default width.
        with_pathloss : bool
            Fill ``pathloss`` with the slit throughput of each exposure (source
            position ``source_xpos``, profile width, ``lookup_prf`` if given) and
            ``path_profile`` accordingly; otherwise both are the plain profile model.
        float_dtype : numpy dtype
            Type of the floating-point columns.
        pathloss_source : {'auto', 'pipeline', 'model'}
            Where the throughput comes from (see :meth:`slit_throughput`).

        Returns
        -------
        astropy.table.Table
            The pixel table with units (``wave`` um, ``yslit`` pix, ``flux`` uJy,
            ``var`` uJy^2 ...).  ``meta`` holds ``SIGMA{i}``, ``XPOS{i}``,
            ``WITHPATH`` and the table layout.
        """
        from slitcombine.core import extract, profile

        bf = self._bar_factor()
        sky = self.sky_background
        mask = self.mask if apply_mask else np.isfinite(self.sci)
        data = np.where(mask, (self.sci - sky) * bf, np.nan)
        var = self.var * bf**2
        wvar = self._weight_variance() * bf**2
        rnoise = self.var_rnoise * bf**2
        sigma = self.profile_sigma(fit)
        lookup = self.profile_prf()
        xpos = np.nan_to_num(np.asarray(self.info["source_xpos"], float), nan=0.0)
        if self.source_type in ("compact", "extended"):
            prof, thr, source = self.source_profiles(sigma, pathloss_source)
            if not with_pathloss:
                thr, source = None, "none"
        else:
            prof = profile.pixel_profile(self.yslit, self.wave, sigma[:, None], lookup_prf=lookup)
            thr, source = (
                self.slit_throughput(sigma, pathloss_source) if with_pathloss else (None, "none")
            )
        ny, nx = self.sh
        wave3 = self.wave.reshape(self.N, ny, nx)
        with np.errstate(invalid="ignore"):
            dwave = np.gradient(wave3, axis=2).reshape(self.N, -1)
        extra = {
            "dwave_dx": dwave,
            "xslit": self.xslit,
            "ypix": self.ypix,
            "yshutter": np.broadcast_to(self._yshutter_grid, self.sci.shape),
            "bar": self.bar,
            "normalization": np.broadcast_to(
                getattr(self, "normalization", None)
                if getattr(self, "normalization", None) is not None
                else 1.0,
                self.sci.shape,
            ),
            "exptime": self.exptime,
        }
        tab = extract.build_pixel_table(
            data,
            var,
            wvar,
            rnoise,
            sky * bf,
            mask,
            self.wave,
            self.yslit,
            np.asarray(self.info[self.position_key]),
            prof,
            throughput=thr,
            diffs=self.meta["diffs"],
            extra=extra,
            weight_type=self.options.weight_type,
            float_dtype=float_dtype,
        )
        tab.meta["WITHPATH"] = bool(with_pathloss)
        tab.meta["PATHSRC"] = source
        for i in range(self.N):
            tab.meta[f"SIGMA{i}"] = float(sigma[i])
            tab.meta[f"XPOS{i}"] = float(xpos[i])
        return tab

    # ------------------------------------------------------------------ figures
    @compute_call  # one BLAS thread (the model images), the cyclic collector paused
    def plot_2d_differences(self, fit=None, clip_sigma=5, kws=None, figsize=(6, 2)):
        """Figure of the nod-difference images, with the profile model and residuals.

        One column per image kind: the difference images (of the data the source is
        measured on: the detector image of a compact source), and if a fit is available
        (``fit`` or :attr:`fit`) the model (per-column optimal amplitude times the
        difference profile) and the residual.  In each column the nod positions are
        stacked as blocks of rows (first position on top), each shown on its own colour
        scale (see :func:`slitcombine.plots.plot_2d_differences`).  The traces are
        drawn (red: positive, wheat: negative); the reference position is starred.

        Parameters
        ----------
        fit : dict, float or None
            As :meth:`profile_sigma`; None uses :attr:`fit` (no model panels if None).
        clip_sigma : float
            The colour scale spans +-``clip_sigma`` times the median pixel error.
        kws : dict, optional
            Extra keywords of ``imshow``.  None: a diverging colour map (``RdBu_r``,
            positive and negative traces in red and blue) and ``nearest`` pixels.
            msaexp's default, ``{'cmap': 'bone_r', 'interpolation': 'hanning'}``, gives
            its look (drawn through matplotlib's slower image path).
        figsize : (float, float)
            Size of one block (one nod position, one image kind), inches.

        Returns
        -------
        matplotlib.figure.Figure
        """
        from slitcombine import plots
        from slitcombine.core import profile

        use_fit = fit if fit is not None else self.fit
        sigma = self.profile_sigma(use_fit)
        lookup = self.profile_prf()
        ny, nx = self.sh
        panels = []
        ref = self.calc_reference_exposure
        unit_images = {}  # width -> every exposure's unit image (shared by the positions)
        for pos in self.unp.values:
            ipos, ineg, diff, _, vdiff, wdiff = self._difference_image(pos)
            model = None
            if use_fit is not None and self.uses_optics():
                width = float(np.median(sigma[ipos]))
                if width not in unit_images:
                    imgs, _ = self.source_image_model().images(self.trace_rows(), width)
                    unit_images[width] = imgs.reshape(self.N, -1)
                imgs = unit_images[width]
                dprof = profile._masked_profile_mean(imgs[ipos], self.mask[ipos])
                if np.any(ineg):
                    dprof = dprof - profile._masked_profile_mean(imgs[ineg], self.mask[ineg])
            elif use_fit is not None:
                dprof = profile.difference_profile(
                    self.yslit,
                    self.wave,
                    self.mask,
                    ipos,
                    ineg,
                    float(np.median(sigma[ipos])),
                    lookup_prf=lookup,
                )
            if use_fit is not None:
                d2, p2, w2 = (a.reshape(ny, nx) for a in (diff, dprof, wdiff))
                ok = np.isfinite(d2) & np.isfinite(p2) & (w2 > 0)
                with np.errstate(invalid="ignore", divide="ignore"):
                    num = np.where(ok, d2 * p2 * w2, 0).sum(0)
                    amp = num / np.where(ok, p2**2 * w2, 0).sum(0)
                model = (amp[None, :] * p2).reshape(-1)
            rows = (self.ypix - self.yslit).reshape(self.N, ny, nx)[:, 0, :]
            traces = [(rows[i], bool(ipos[i])) for i in range(self.N)]
            panels.append(
                {
                    "label": f"{self.position_key}={pos}" + (" *" if pos == ref else ""),
                    "diff": diff.reshape(ny, nx),
                    "model": None if model is None else model.reshape(ny, nx),
                    "err": np.sqrt(vdiff).reshape(ny, nx),
                    "traces": traces,
                }
            )
        return plots.plot_2d_differences(
            panels, clip_sigma=clip_sigma, kws=kws, figsize=figsize, title=self.name
        )
