"""``SlitGroup`` methods for the pixel table and figures.

Methods: get_flat_diff_arrays, plot_2d_differences.

They are thin: they read the group's arrays, call the pure functions of
slitcombine.resample, slitcombine.extract
and slitcombine.plots, and store the results on the group.  ``SlitGroup``
inherits this class, which holds no state of its own.
"""

from __future__ import annotations

import logging

import numpy as np

from .errors import ConfigurationError

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
            fit = getattr(self, "fit", None)
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
            them, ``undo_pathloss=2``).  ``'model'``: :func:`slitcombine.profile.
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
        from . import profile

        if source not in ("auto", "pipeline", "model"):
            raise ConfigurationError(
                f"pathloss_source must be 'auto', 'pipeline' or 'model', got {source!r}"
            )
        if self.meta.get("undo_pathloss") == 2:
            return None, "none (already applied)"
        has_ps = all(getattr(s, "pathloss_ps", None) is not None for s in self.slits)
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
            "lookup_prf": getattr(self, "lookup_prf", None),
            "slit_width": slit_width_arcsec(self.slits[0].slit.get("name", ""), self.IS_FIXED_SLIT),
        }
        if self.IS_FIXED_SLIT:
            kwargs["slit_height"] = None
        thr = profile.slit_throughput(
            self.wave, np.asarray(sigma)[:, None], xpos[:, None], ypos[:, None], **kwargs
        )
        return thr, "model"

    def _bar_factor(self):
        return self.bar if self.meta["undo_barshadow"] is True else 1.0

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
        :mod:`slitcombine.extract` for every column, the variance and the profile
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
        from . import extract, profile

        bf = self._bar_factor()
        sky = self.sky_background
        mask = self.mask if apply_mask else np.isfinite(self.sci)
        data = np.where(mask, (self.sci - sky) * bf, np.nan)
        var = self.var * bf**2
        wvar = self._weight_variance() * bf**2
        rnoise = self.var_rnoise * bf**2
        sigma = self.profile_sigma(fit)
        lookup = getattr(self, "lookup_prf", None)
        prof = profile.pixel_profile(self.yslit, self.wave, sigma[:, None], lookup_prf=lookup)
        xpos = np.nan_to_num(np.asarray(self.info["source_xpos"], float), nan=0.0)
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
            weight_type=self.meta["weight_type"],
            float_dtype=float_dtype,
        )
        tab.meta["WITHPATH"] = bool(with_pathloss)
        tab.meta["PATHSRC"] = source
        for i in range(self.N):
            tab.meta[f"SIGMA{i}"] = float(sigma[i])
            tab.meta[f"XPOS{i}"] = float(xpos[i])
        return tab

    # ------------------------------------------------------------------ figures
    def plot_2d_differences(self, fit=None, clip_sigma=5, kws=None, figsize=(6, 2)):
        """Figure of the nod-difference images, with the profile model and residuals.

        One column per image kind: the difference images, and if a fit is available
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
        from . import plots, profile

        use_fit = fit if fit is not None else getattr(self, "fit", None)
        sigma = self.profile_sigma(use_fit)
        lookup = getattr(self, "lookup_prf", None)
        ny, nx = self.sh
        panels = []
        ref = self.calc_reference_exposure
        for pos in self.unp.values:
            ipos, ineg, diff, _, vdiff, wdiff = self.make_diff_image(pos)
            model = None
            if use_fit is not None:
                dprof = profile.difference_profile(
                    self.yslit,
                    self.wave,
                    self.mask,
                    ipos,
                    ineg,
                    float(np.median(sigma[ipos])),
                    lookup_prf=lookup,
                )
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
