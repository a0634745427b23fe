"""``SlitGroup``: the exposures of one source, slitlet and grating, on a common grid.

This is the stateful facade of slitcombine.  Its public API (constructor parameters,
attributes, properties and methods) follows ``msaexp.slit_combine.SlitGroup`` so that
``from slitcombine import SlitGroup`` can replace ``from msaexp.slit_combine import
SlitGroup``.  The numerics live in small pure functions of the modules
:mod:`~slitcombine.io.reading`, :mod:`~slitcombine.core.geometry`, :mod:`~slitcombine.core.masks`
and :mod:`~slitcombine.core.nods`; the methods here call them and keep the results.

Array layout: every per-pixel array is ``(N, ny * nx)`` (exposure, flattened pixel of
the common slice ``sh = (ny, nx)``); per-column arrays are ``(N, nx)``.

Units: ``sci`` and ``data`` in uJy per pixel, variances in uJy^2, wavelengths in um,
``yslit``/``ypix``/``xslit`` in pixels, ``fixed_yshutter`` in shutter pitches
(``slit_frame_y / slit_shutter_scale / 5``, the convention of msaexp's bar-shadow
tables).
"""

from __future__ import annotations

import logging
from functools import cached_property

import numpy as np

from slitcombine._threads import compute_call
from slitcombine._version import __version__
from slitcombine.core import geometry, masks, nods
from slitcombine.errors import InputFileError
from slitcombine.group._calib_methods import CalibrationMethods
from slitcombine.group._exposures import _pathloss_factor, _read_group, _sky_pair
from slitcombine.group._extract_methods import ExtractMethods
from slitcombine.group._geometry_methods import GeometryMethods
from slitcombine.group._metadata_methods import MetadataMethods
from slitcombine.group._nod_methods import NodMethods
from slitcombine.group._outlier_methods import OutlierMethods
from slitcombine.group._pixel_flag_methods import PixelFlagMethods
from slitcombine.group._sky_methods import SkyMethods
from slitcombine.group._trace_methods import TraceMethods
from slitcombine.group._trace_sn_methods import TraceSNMethods
from slitcombine.group.options import (
    EXTENDED_CALIBRATION_DEFAULT,
    META_COMMENTS,
    ON,
    GroupOptions,
)
from slitcombine.group.steps import ignore_seed_keywords, run_steps

__all__ = ["SlitGroup"]

log = logging.getLogger(__name__)

#: uJy per MJy.
MJY_TO_UJY = 1.0e12


class SlitGroup(
    MetadataMethods,
    GeometryMethods,
    NodMethods,
    TraceMethods,
    TraceSNMethods,
    OutlierMethods,
    PixelFlagMethods,
    SkyMethods,
    CalibrationMethods,
    ExtractMethods,
):
    """Container for the exposures (nods) of one source in one slitlet and grating.

    Parameters
    ----------
    files : list of str or path-like
        Per-slit ``SlitModel`` files (one per exposure).  A ``(path, source_id)`` tuple
        selects one slit of a ``MultiSlitModel`` file.
    name : str
        Label for the group.
    position_key : {'y_index', 'position_number', 'shutter_state'}
        Column of :attr:`info` that defines the nod positions: ``y_index`` is the
        index of the dither y offset rounded to 0.1 arcsec.
    diffs : bool
        Compute nod differences (otherwise sky-subtracted exposures are used).
    grating_diffs : bool
        Force ``diffs`` for grating (non-PRISM) spectra.
    stuck_threshold : float
        Threshold of :meth:`mask_stuck_closed_shutters`.
    hot_cold_kwargs, flag_profile_kwargs, flag_2d_kwargs, estimate_sky_kwargs : dict or None
        Arguments of the corresponding steps; ``None`` disables the step.
    bad_shutter_names : list of int or None
        Shutter indices (e.g. among ``[-1, 0, 1]``) to mask as bad.
    dilate_failed_open : bool or int
        Grow the MSA_FAILED_OPEN mask by this many pixels (True = 1).
    num_shutters : int
        Number of shutters of the slitlet: <0 from ``shutter_state``, 0 from the
        number of nod positions, >0 as given.
    undo_barshadow : bool or 2
        ``True``: undo the pipeline bar-shadow correction; ``False``: keep it;
        ``2``: replace it with the group's own bar-shadow model (``bar_corr_mode``).
    min_bar : float
        Minimum acceptable bar-shadow throughput.
    bar_corr_mode : {'wave', 'slit'}
        Form of the internal bar-shadow model.
    fix_prism_norm, with_sflat_correction, with_extra_dq : bool
        Flux-calibration corrections from user-supplied reference files.
    extended_calibration_kwargs : dict or None
        Options of the extended flux calibration (default ``{'threshold': 0.01}``).
    slit_hotpix_kwargs : dict or None
        Options of the per-slit hot-pixel flagging (default ``{}``: on; None: off).
    sky_arrays : (array, array) or None
        Tabulated sky: wavelength (um) and flux (uJy per pixel).
    sky_file : str or None
        A tabulated sky CSV (``wave`` um, ``flux`` uJy per pixel), ``"read"`` to look
        up ``{visit}_sky.csv`` in the configured calibration directory, or None.
    set_background_spectra_kwargs : dict or None
        Options of :meth:`set_background_spectra` (default ``{}``: on; None: off).
    global_sky_df : int
        Degrees of freedom of the sky fit when a global sky is available.
    flag_percentile_kwargs, flag_trace_kwargs : dict or None
        Options of the outlier steps (default ``{}``: on; None: off).
    do_multiple_mask : bool
        Mask in all exposures the pixels bad in most of them.
    undo_pathloss : bool or 2
        Undo the pipeline path-loss correction (PATHLOSS_UN, or PATHLOSS_PS for point
        sources); 2 also applies PATHLOSS_PS.
    trace_with_xpos, trace_with_ypos : bool
        Include the predicted source x / y position in the traces.
    trace_from_yoffset : bool
        Derive each exposure's trace from exposure 0's and the dither y offsets.
    with_fs_offset : bool
        Extra fixed-slit trace offset (not needed with current pipeline versions):
        accepted and ignored, fixed-slit traces are placed at the ``source_ypos`` of
        each exposure (True is recorded in ``meta['ignored_kwargs']``).
    fit_shutter_offset_kwargs : dict or None
        Options of :meth:`fit_shutter_offset`; None disables it.
    shutter_offset : float
        Offset added to the shutter coordinate (pixels), see :attr:`fixed_yshutter`.
    nod_offset : float or None
        Nod step in pixels; default ``0.529 arcsec / slit_pixel_scale``.
    pad_border : int
        Reject pixels within this many pixels of the slit edges.
    weight_type : {'ivm', 'poisson', 'exptime', 'exptime_bar', 'mask'}
        Weighting scheme (see :func:`slitcombine.core.nods.weight_variance`).
    reference_exposure : 'auto' or position key value
        The reference nod position; ``'auto'`` picks the middle one.
    lookup_prf : object or None
        The point-response model.  None: the optics model of :mod:`slitcombine.core.optics`
        for point and compact sources (:attr:`source_type` ``'compact'``) and the
        Gaussian of :mod:`slitcombine.core.profile` otherwise.  A
        :class:`slitcombine.core.optics.OpticsModel` replaces the default optics (e.g. a
        Gaussian telescope PSF); an object of the :class:`slitcombine.core.psf.LookupPRF`
        protocol (an empirical lookup table) replaces the Gaussian.
    **kwargs
        Accepted for compatibility (msaexp takes any keyword); they are logged and
        recorded in ``meta['ignored_kwargs']['SlitGroup']``.

    The constructor runs the steps of :data:`slitcombine.group.steps.STEPS` in order.

    Attributes
    ----------
    options : slitcombine.group.options.GroupOptions
        The options as given (frozen).
    meta : dict
        msaexp's record: every option (several rewritten by the steps with their
        results, see :mod:`slitcombine.group.options`) and what each step did
        (``meta['steps']``).
    sh : (int, int)
        ``(ny, nx)`` of the common slice.
    sci, var, var_rnoise, var_poisson : numpy.ndarray
        ``(N, ny*nx)`` flux (uJy/pixel) and variances (uJy^2).
    dq : numpy.ndarray
        ``(N, ny*nx)`` DQ flags.
    mask : numpy.ndarray
        ``(N, ny*nx)`` valid pixels (the authority for every computation).
    reject : numpy.ndarray
        ``(N, ny*nx)`` bitfield of :class:`slitcombine.core.masks.Reject` bits: why a pixel
        was rejected.
    xslit, ypix, yslit, yslit_orig : numpy.ndarray
        Column, row, trace-centred row, and the initial trace-centred row (pixels).
    wave : numpy.ndarray
        Wavelength (um).
    bar : numpy.ndarray
        Bar-shadow throughput that divides ``sci``: the pipeline's (1 where absent), or
        the group's own model with ``undo_barshadow=2``.
    meta_comment : dict
        One-line description of each ``meta`` key (:data:`META_COMMENTS`).
    var_total, dwave_dx : numpy.ndarray
        msaexp's total variance (uJy^2) and wavelength step per column (um/px), see
        the properties.
    source_type : {'compact', 'extended', None}
        How the source is measured by the trace fit, :meth:`get_flat_diff_arrays`
        and the figures (see :meth:`_source_view`; :meth:`make_diff_image` keeps
        msaexp's meaning, the difference of :attr:`data`): ``'compact'``
        (default) on the detector image with the bar shadow undone and the optics model
        of the group's apertures; ``'extended'`` on the bar-shadow corrected data with a
        Gaussian profile; None is msaexp's behaviour (the data of :attr:`data`, a
        Gaussian profile).  :func:`slitcombine.pipeline.combine.combine_group` sets it from its
        ``source_type`` option.
    xtr, ytr, wtr : numpy.ndarray
        ``(N, nx)`` column, trace row and wavelength along the trace.
    base_coeffs, trace_coeffs : numpy.ndarray
        ``(N, degree+1)`` trace polynomial and fitted offset polynomial.
    """

    @compute_call
    def __init__(
        self,
        files,
        name,
        position_key="y_index",
        diffs=True,
        grating_diffs=True,
        stuck_threshold=0.3,
        hot_cold_kwargs=None,
        bad_shutter_names=None,
        dilate_failed_open=True,
        num_shutters=-1,
        undo_barshadow=2,
        min_bar=0.4,
        bar_corr_mode="wave",
        fix_prism_norm=True,
        extended_calibration_kwargs=EXTENDED_CALIBRATION_DEFAULT,
        with_sflat_correction=True,
        with_extra_dq=True,
        slit_hotpix_kwargs=ON,
        sky_arrays=None,
        sky_file="read",
        set_background_spectra_kwargs=ON,
        global_sky_df=7,
        estimate_sky_kwargs=None,
        flag_profile_kwargs=None,
        do_multiple_mask=True,
        flag_trace_kwargs=ON,
        flag_2d_kwargs=None,
        flag_percentile_kwargs=ON,
        undo_pathloss=True,
        trace_with_xpos=False,
        trace_with_ypos=False,
        trace_from_yoffset=True,
        with_fs_offset=False,
        fit_shutter_offset_kwargs=None,
        shutter_offset=0.0,
        nod_offset=None,
        pad_border=2,
        weight_type="ivm",
        reference_exposure="auto",
        lookup_prf=None,
        **kwargs,
    ):
        # the parameters above (their names are GroupOptions' fields), as given
        given = locals()
        opt = GroupOptions(**{k: given[k] for k in GroupOptions.keywords()}, unknown=kwargs)
        #: The options as given (:class:`~slitcombine.group.options.GroupOptions`).
        self.options = opt
        self.name = name
        self.position_key = position_key
        self.reference_exposure = reference_exposure
        self.lookup_prf = lookup_prf
        self.source_type = "compact"
        self.sky_arrays = None if sky_arrays is None else _sky_pair(sky_arrays)
        self.sky_data = None
        self.fit = None
        self.bad_shutter_names = list(opt.bad_shutter_names)

        # msaexp's meta: the options (some rewritten by the steps: their results, see
        # slitcombine.group.options) and what the steps did
        self.meta = {
            "version": __version__,
            "name": name,
            **opt.as_meta(),
            "has_lookup_prf": lookup_prf is not None,
            "has_sky_arrays": self.sky_arrays is not None,
            # msaexp's bookkeeping keys, filled by the steps
            "nhot": 0,
            "ncold": 0,
            "percentile_outliers": 0,
            "removed_pathloss": None,
            "own_barshadow": False,
            "wrapped_barshadow": False,
            "steps": {},
        }
        self.meta["diffs"] = bool(diffs)
        self.meta["grating_diffs"] = bool(grating_diffs)
        self.meta_comment = dict(META_COMMENTS)
        # with_fs_offset is not needed: fixed-slit traces are placed at the source_ypos
        # of each exposure
        seed_only = {"with_fs_offset": with_fs_offset} if with_fs_offset else {}
        ignore_seed_keywords(self, "SlitGroup", **seed_only, **kwargs)
        self._input_files = files
        run_steps(self, opt)
        self.meta["rejected"] = masks.describe_rejections(self.reject)
        # the geometry is built: the parsed ASDF trees and WCS objects (~5 MiB per
        # converted WCS) are caches that are rebuilt if a user asks for them
        for slit in self.slits:
            slit.release_asdf()

    # ================================================================ bookkeeping
    def record_step(self, name, status, **details):
        """Record what a step did in ``meta['steps'][name]`` (replacing an earlier record).

        Parameters
        ----------
        name : str
            The step (a name of :data:`slitcombine.group.steps.STEPS`, or a step of the
            combination such as ``'rescale_variance'``).
        status : {'COMPLETE', 'SKIPPED', 'FALLBACK', 'FAILED'}
            What happened.
        **details
            JSON-able details (counts, reasons, options used).
        """
        self.meta["steps"][name] = {"status": status, **details}

    _step = record_step  # the name the methods of the group layer use

    def _reject_pixels(self, where, bit):
        """Reject pixels: set ``bit`` in :attr:`reject` and clear :attr:`mask`."""
        where = np.asarray(where, bool)
        newly = where & self.mask
        self.reject[where] |= np.uint32(bit)
        self.mask &= ~where
        return int(newly.sum())

    def _read_exposures(self):
        """Constructor step ``read``: the files, their metadata and the common slice."""
        self.slits = _read_group(self.__dict__.pop("_input_files"))
        self.files = [str(s.path) for s in self.slits]
        self._step("read", "COMPLETE", n_files=len(self.slits))
        self.info = self.parse_metadata()
        self.calculate_slices()

    def _force_grating_diffs(self):
        """Constructor step ``grating_diffs``: nod differences for a grating spectrum."""
        self.meta["diffs"] = True
        log.info("%s: grating %s: nod differences forced (grating_diffs)", self.name, self.grating)

    # ================================================================ properties
    @property
    def N(self):
        """Number of exposures (SlitModel components)."""
        return len(self.slits)

    @property
    def grating(self):
        """Grating of the group (upper case, e.g. ``'PRISM'``)."""
        return str(self.info["grating"][0]).upper()

    @property
    def filter(self):
        """Filter of the group (upper case, e.g. ``'CLEAR'``)."""
        return str(self.info["filter"][0]).upper()

    @property
    def exptime(self):
        """Exposure time of each exposure, s (``meta.exposure.exposure_time``)."""
        return np.array(self.info["exptime"], dtype=float)

    @property
    def var_total(self):
        """Total variance of each pixel, uJy^2, ``(N, ny*nx)``: msaexp's name for :attr:`var`.

        ``var_rnoise + var_poisson + var_sky`` (the pipeline's ``VAR_FLAT`` is not used,
        as in msaexp's default), with the corrections and the noise scaling applied to
        all of them.  Setting it sets :attr:`var`.
        """
        return self.var

    @var_total.setter
    def var_total(self, value):
        self.var = np.asarray(value, float)

    @property
    def dwave_dx(self):
        """Wavelength step per detector column at every pixel, um / pixel, ``(N, ny*nx)``.

        ``numpy.gradient`` of :attr:`wave` along the columns of each exposure (NaN
        where the wavelength is undefined).
        """
        ny, nx = self.sh
        with np.errstate(invalid="ignore"):
            return np.gradient(self.wave.reshape(self.N, ny, nx), axis=2).reshape(self.N, -1)

    @property
    def IS_FIXED_SLIT(self):
        """True for a fixed-slit (``NRS_FIXEDSLIT``) group."""
        return bool(self.slits[0].is_fixed_slit)

    @cached_property
    def unp(self):
        """The distinct nod positions (:class:`slitcombine.core.nods.NodPositions`).

        ``unp.values`` are the position-key values, ``unp[value]`` the boolean
        selection of the exposures at that position, ``unp.N`` their number.
        """
        return nods.NodPositions(list(self.info[self.position_key]))

    @property
    def slit_pixel_scale(self):
        """Cross-dispersion pixel scale, arcsec / pixel.

        Median over the columns of exposure 0's trace of the sky distance between the
        points half a pixel above and below the trace (computed once).
        """
        return self._scales[0]

    @property
    def slit_shutter_scale(self):
        """Cross-dispersion pixel scale in slit-frame units (open-shutter heights) / pixel."""
        return self._scales[1]

    @cached_property
    def _scales(self):
        if self._slit_y0 is None:
            return np.nan, np.nan
        rows = geometry.rows_where(self._slit_y0_full, 0.0)
        return geometry.slit_scales(self.slits[0].wcs, rows)

    @cached_property
    def source_ypixel_position(self):
        """Expected offset (pixels) of the source from the shutter centre, exposure 0.

        Median over columns of the difference between the rows where
        ``slit_frame_y = source_ypos`` and ``slit_frame_y = 0``.
        """
        ypos = self.slits[0].slit.get("source_ypos") or 0.0
        r0 = geometry.rows_where(self._slit_y0, 0.0)
        r1 = geometry.rows_where(self._slit_y0, ypos)
        if not np.isfinite(r1 - r0).any():
            return 0.0
        return float(np.nanmedian(r1 - r0))

    @property
    def fixed_yshutter(self):
        """Cross-dispersion shutter coordinate fixed to the MSA (shutter pitches).

        ``(slit_frame_y / slit_shutter_scale + shutter_offset) / 5`` with the
        ``slit_frame_y`` of exposure 0 (centre of its source shutter = 0), broadcast to
        ``(N, ny*nx)`` and NaN where masked.
        """
        ys = np.broadcast_to(self._yshutter_grid, self.sci.shape)
        return np.where(self.mask, ys, np.nan)

    @cached_property
    def _yshutter_grid(self):
        if self._slit_y0 is None:
            return np.full(self.sh[0] * self.sh[1], np.nan)
        scale = self.slit_shutter_scale
        shutter_y = (self._slit_y0.ravel() / scale + self.meta["shutter_offset"]) / 5.0
        return shutter_y

    @property
    def relative_nod_offset(self):
        """Offset of each exposure's trace from the median trace, pixels (file order).

        The constant term of the trace polynomial (``base_coeffs + trace_coeffs``)
        minus its median over exposures.
        """
        c0 = self.base_coeffs[:, -1] + self.trace_coeffs[:, -1]
        return c0 - np.median(c0)

    @property
    def calc_reference_exposure(self):
        """The reference nod position (a position-key value).

        With ``reference_exposure='auto'`` the position of the exposure whose trace is
        closest to the median (the middle nod); with fewer than three positions the
        position of the first exposure.
        """
        if self.reference_exposure != "auto":
            return self.reference_exposure
        keys = list(np.asarray(self.info[self.position_key]).tolist())  # Python scalars
        if self.unp.N < 3:
            return keys[0]
        return keys[int(np.argmin(np.abs(self.relative_nod_offset)))]

    @property
    def sky_background(self):
        """Sky model per pixel, uJy, ``(N, ny*nx)``.

        ``sky_data['sky2d']`` when a sky has been estimated and is in use; else the
        tabulated ``sky_arrays`` interpolated in wavelength (NaN outside their range);
        else zeros.
        """
        if self.sky_data is not None and self.sky_data.get("use", True):
            return self.sky_data["sky2d"]
        if self.sky_arrays is not None:
            w, f = self.sky_arrays
            return np.interp(self.wave, w, f, left=np.nan, right=np.nan)
        return np.zeros_like(self.sci)

    @property
    def data(self):
        """Sky-subtracted science data, uJy per pixel, ``(N, ny*nx)``, NaN where masked.

        ``(sci - sky_background)``, multiplied by the pipeline bar-shadow throughput
        ``bar`` while ``meta['undo_barshadow']`` is True.
        """
        d = self.sci - self.sky_background
        if self.meta["undo_barshadow"] is True:
            d = d * self.bar
        return np.where(self.mask, d, np.nan)

    def parse_data(self, debug=False, with_sflat_correction=True, with_extra_dq=True, **kwargs):
        """Stack science, variance, geometry and masks of the exposures.

        Fills the ``(N, ny*nx)`` arrays (``sci`` in uJy per pixel, variances in
        uJy^2, ``wave`` in um ...) and the rejection bitfield (the DQ and initial
        masks), with the pipeline path-loss correction undone (``undo_pathloss``; the
        unit conversion and the path-loss factor are one multiplication).  The
        constructor step ``pathloss_undo``.  msaexp's ``parse_data`` went on with the
        calibration files, the traces, the stuck shutters and the bar shadow: here
        those are the next steps of :data:`slitcombine.group.steps.STEPS`.

        Parameters
        ----------
        debug : bool
            Unused; accepted for compatibility.
        with_sflat_correction, with_extra_dq : bool
            Recorded in ``meta`` (the steps ``sflat`` and ``extra_dq`` apply them).
        **kwargs
            Accepted for compatibility (msaexp's signature) and ignored
            (:func:`slitcombine.group.steps.ignore_seed_keywords`).
        """
        ignore_seed_keywords(self, "parse_data", **kwargs)
        ny, nx = self.sh
        n = self.N
        stack = {
            k: np.empty((n, ny, nx), np.float64)
            for k in ("sci", "var_rnoise", "var_poisson", "wave", "bar", "plcorr")
        }
        dq = np.empty((n, ny, nx), np.uint32)
        pathloss_used = []
        undo_pl = self.options.undo_pathloss
        for i, s in enumerate(self.slits):
            sl = self.slices[i]
            to_ujy = float(s.meta["photometry"].get("pixelarea_steradians") or np.nan) * MJY_TO_UJY
            if not np.isfinite(to_ujy) or to_ujy <= 0:
                raise InputFileError(s.path, "PIXAR_SR (pixel area) missing or not positive")
            pl, pl_name = _pathloss_factor(s, undo_pl)
            pathloss_used.append(pl_name)
            factor = to_ujy * (1.0 if pl is None else pl[sl])
            stack["plcorr"][i] = 1.0 if pl is None else pl[sl]
            stack["sci"][i] = s.sci[sl] * factor
            stack["var_rnoise"][i] = s.var_rnoise[sl] * factor**2
            stack["var_poisson"][i] = s.var_poisson[sl] * factor**2
            stack["bar"][i] = 1.0 if s.barshadow is None else s.barshadow[sl]
            dq[i] = s.dq[sl]
            if s.wavelength is not None:
                stack["wave"][i] = s.wavelength[sl]
            else:
                stack["wave"][i] = geometry.slit_frame_grid(s.wcs, s.shape)[2][sl]
        with np.errstate(invalid="ignore"):
            stack["wave"][~(stack["wave"] > 0)] = np.nan
        var = stack["var_rnoise"] + stack["var_poisson"]

        reject = masks.initial_rejections(
            dq,
            stack["sci"],
            var,
            stack["wave"],
            stack["bar"],
            dilate_failed_open=self.options.dilate_failed_open,
            pad_border=self.options.pad_border,
            min_bar=self.options.min_bar,
            extra_factors=(stack["plcorr"],),
            var_components=(stack["var_rnoise"], stack["var_poisson"]),
        )
        flat = (n, ny * nx)
        self.sci = stack["sci"].reshape(flat)
        self.var_rnoise = stack["var_rnoise"].reshape(flat)
        self.var_poisson = stack["var_poisson"].reshape(flat)
        self.var_sky = np.zeros(flat)
        self.var = self.var_rnoise + self.var_poisson + self.var_sky
        self.wave = stack["wave"].reshape(flat)
        self.bar = stack["bar"].reshape(flat)
        self.dq = dq.reshape(flat)
        self.reject = reject.reshape(flat)
        self.mask = self.reject == 0

        yy, xx = np.mgrid[:ny, :nx]
        self.xslit = np.broadcast_to(xx.ravel().astype(float), flat).copy()
        self.ypix = np.broadcast_to(yy.ravel().astype(float), flat).copy()
        self.meta["pathloss_undone"] = pathloss_used
        used = sorted(set(pathloss_used) - {"none"})
        self.meta["removed_pathloss"] = (used[0] if len(used) == 1 else used) if used else None
        self._step(
            "pathloss_undo",
            "COMPLETE" if any(p != "none" for p in pathloss_used) else "SKIPPED",
            arrays=pathloss_used,
        )
        self.meta["fallbacks"] = {s.path.name: s.fallbacks for s in self.slits if s.fallbacks}
        self.meta["with_sflat_correction"] = with_sflat_correction
        self.meta["with_extra_dq"] = with_extra_dq

    # ================================================================ misc
    def __repr__(self):
        return (
            f"SlitGroup({self.name!r}, N={self.N}, {self.grating}/{self.filter}, "
            f"sh={self.sh}, positions={self.unp.values})"
        )
