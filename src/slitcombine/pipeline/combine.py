"""High-level combination: files -> group -> trace fit -> pixel table -> 2D + 1D -> file.

>>> from slitcombine import combine
>>> result = combine(files, name="1345_933")       # doctest: +SKIP
>>> paths = result.write("out/")                     # doctest: +SKIP
>>> fig = result.plot()                              # doctest: +SKIP

Every option of :class:`slitcombine.SlitGroup` can be passed to :func:`combine`, plus
the extraction options of :data:`EXTRACT_DEFAULTS`; anything else is an error.
"""

from __future__ import annotations

import inspect
import logging
import numbers

import numpy as np

from slitcombine._threads import compute_call
from slitcombine.core import extract, resample
from slitcombine.core.apertures import SOURCE_TYPES, classify_source
from slitcombine.errors import ConfigurationError, FitError, SlitCombineError
from slitcombine.pipeline.result import CombineResult

__all__ = ["EXTRACT_DEFAULTS", "CombineResult", "combine", "combine_group"]

log = logging.getLogger(__name__)

#: Extraction options of :func:`combine` and their defaults.
#:
#: * ``wave_sample`` - output wavelength points per native detector column (1: one bin
#:   per column; msaexp uses 1.05, whose bins then share pixels);
#: * ``wave_grid`` - explicit output wavelength grid (um), overrides ``wave_sample``;
#: * ``wave_range`` - (min, max) um limits of the automatic grid;
#: * ``ny``, ``step`` - 2D grid of ``2 ny + 1`` rows of ``step`` pixels around the trace;
#: * ``oversample``, ``pixfrac`` - y sub-samples and footprint (input px) of the 2D drizzle;
#: * ``source_type`` - 'auto', 'point' or 'extended': how the flux is measured
#:   (:func:`slitcombine.core.apertures.classify_source`): a point or compact source on the
#:   detector image with the bar shadow undone and the profile and throughput of the
#:   optics model; an extended one on the bar-shadow corrected data;
#: * ``with_pathloss`` - correct for the slit throughput (``path_corr`` column);
#: * ``pathloss_source`` - 'auto' (pipeline PATHLOSS_PS scaled by the optics model to the
#:   fitted position and width, if present; else the model), 'pipeline', 'model';
#: * ``boxcar_halfwidth`` - half-width (px) of the boxcar extraction;
#: * ``y_range`` - restrict the optimal extraction to this yslit range (px), None = all;
#: * ``fit_traces`` - run ``SlitGroup.fit_all_traces`` (if available) before extracting;
#: * ``trace_kwargs`` - keywords of ``fit_all_traces`` (``widen_bounds`` defaults to True
#:   here unless ``sigma_bounds`` or ``trace_bounds`` are given: a fit stopped at the
#:   width or offset bound is refitted with wider bounds; without ``degree`` or ``x0``
#:   the offset polynomial's degree follows the trace S/N, :data:`DEGREE_SN`);
#: * ``profile_sigma`` - intrinsic width (px) to use instead of the trace fit's;
#: * ``include_pixtab`` - also write the pixel table (PIXTAB extension);
#: * ``rescale_variance`` - multiply every variance by the square of the measured noise
#:   scale at its wavelength, where it exceeds 1 (on by default; False keeps the
#:   pipeline's variances).  The scale is always measured and written (``NOISESCL``,
#:   ``ERRSCALE``, the ``err_scale`` column): the spread of the model residuals in bins
#:   of source light, fitted as ``s**2 + (eps L)**2`` per wavelength band so that a
#:   bright source's profile mismatch is not taken for noise
#:   (:func:`slitcombine.core.noise.measure_noise_scale`, docs/guide/resampling.rst); real
#:   pipeline variances are ~1.1-1.3x too small in rms (CEERS).
EXTRACT_DEFAULTS = {
    "wave_sample": resample.DEFAULT_WAVE_SAMPLE,
    "wave_grid": None,
    "wave_range": None,
    "ny": resample.DEFAULT_NY,
    "step": 1.0,
    "oversample": resample.DEFAULT_OVERSAMPLE,
    "pixfrac": resample.DEFAULT_PIXFRAC,
    "source_type": "auto",
    "with_pathloss": True,
    "pathloss_source": "auto",
    "boxcar_halfwidth": extract.DEFAULT_BOXCAR_HALFWIDTH,
    "y_range": None,
    "fit_traces": True,
    "trace_kwargs": None,
    "profile_sigma": None,
    "include_pixtab": False,
    "rescale_variance": True,
}


def _split_options(options):
    from slitcombine.group.slitgroup import SlitGroup

    group_names = set(inspect.signature(SlitGroup.__init__).parameters) - {"self", "files", "name"}
    group_names.discard("kwargs")
    unknown = sorted(set(options) - group_names - set(EXTRACT_DEFAULTS))
    if unknown:
        raise ConfigurationError(
            f"unknown option(s) {unknown}; valid: SlitGroup options and {sorted(EXTRACT_DEFAULTS)}"
        )
    group_kw = {k: v for k, v in options.items() if k in group_names}
    params = dict(EXTRACT_DEFAULTS)
    params.update({k: v for k, v in options.items() if k in EXTRACT_DEFAULTS})
    return group_kw, params


def _provisional_name(files):
    """Name of a group while it is read (its log messages), before its source is known.

    The first member's file name (``path[source_id]`` for a slit of a MultiSlitModel).
    """
    from pathlib import Path

    first = next(iter(files), None) if files is not None else None
    if isinstance(first, (tuple, list)) and len(first) == 2:
        return f"{Path(first[0]).name}[{first[1]}]"
    return Path(first).name if first is not None else "slitcombine"


def _default_name(group):
    src = str(group.info["source_name"][0] or group.info["source_id"][0] or "source")
    return f"{src}_{group.grating}-{group.filter}".lower().replace(" ", "_")


def combine(files, name=None, **options):
    """Combine the exposures of one source into a 2D and an optimal 1D spectrum.

    Parameters
    ----------
    files : list of str or path-like
        The per-slit files of one source, slitlet and grating (one per exposure).
    name : str, optional
        Name of the result and of the output files; default
        ``{source_name}_{grating}-{filter}`` (lower case).
    **options
        :class:`slitcombine.SlitGroup` options and the extraction options of
        :data:`EXTRACT_DEFAULTS`.

    Returns
    -------
    CombineResult

    Raises
    ------
    slitcombine.errors.SlitCombineError
        Bad input (files, options), no valid pixel, or a wavelength grid that does not
        overlap the data.
    """
    from slitcombine.group.slitgroup import SlitGroup

    name = _check_name(name)
    group_kw, params = _split_options(options)
    _validate_params({**EXTRACT_DEFAULTS, **params})  # before the (slow) reading
    group = SlitGroup(files, name or _provisional_name(files), **group_kw)
    if name is None:
        group.name = _default_name(group)
        group.meta["name"] = group.name
    return combine_group(group, **params)


def _measure_and_apply_noise(group, pixtab, p):
    """Measure the noise scale of the pixel table and (``rescale_variance``) apply it.

    The variances of the group and of the pixel table are multiplied, per pixel, by the
    square of :meth:`slitcombine.core.noise.NoiseScale.error_factor` at its wavelength;
    ``p['error_scale']`` is the median factor over the rows (``ERRSCALE``).
    """
    from slitcombine.core import noise as noise_mod

    noise = noise_mod.measure_noise_scale(pixtab)
    summary = noise.as_dict()
    group.meta["noise_scale"] = summary
    p["noise_scale"] = summary
    p["error_scale"] = 1.0
    if not noise.measured:
        reason = "too few pixels to measure the noise"
        group.record_step("rescale_variance", "SKIPPED", reason=reason)
        log.info("%s: too few faint pixels to measure the noise; errors as propagated", group.name)
        return noise
    if not p["rescale_variance"]:
        group.record_step("rescale_variance", "SKIPPED", reason="rescale_variance=False", **summary)
        log.info(
            "%s: noise / propagated sigma %.3f (not applied: rescale_variance=False)",
            group.name,
            noise.pooled,
        )
        return noise
    f_pix = noise.error_factor(group.wave) ** 2
    for name in ("var", "var_rnoise", "var_poisson", "var_sky"):
        arr = getattr(group, name, None)
        if arr is not None:
            setattr(group, name, arr * f_pix)
    f_row = noise.error_factor(np.asarray(pixtab["wave"], float))
    for name in ("var", "var_pos", "var_rnoise"):
        if name in pixtab.colnames:
            pixtab[name] = pixtab[name] * f_row**2
    p["error_scale"] = round(float(np.median(f_row)), 4)
    group.record_step("rescale_variance", "COMPLETE", error_scale=p["error_scale"], **summary)
    bands = ", ".join(
        f"{b['wave_min']:.2f}-{b['wave_max']:.2f} um {b['scale']:.2f}" for b in summary["bands"]
    )
    log.info("%s: errors multiplied by the measured noise scale (%s)", group.name, bands)
    return noise


def _number(params, key, *, integer=False, minimum=None, positive=False, allow_none=False):
    """``params[key]`` as a finite float (or int), or a ConfigurationError naming it."""
    value = params[key]
    if value is None and allow_none:
        return None
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if ok:
        value = int(value) if integer else float(value)
        ok = np.isfinite(value) and (not integer or float(params[key]) == value)
        ok = ok and (minimum is None or value >= minimum) and (not positive or value > 0)
    if not ok:
        need = "an integer" if integer else "a finite number"
        if positive:
            need += " > 0"
        elif minimum is not None:
            need += f" >= {minimum}"
        raise ConfigurationError(f"{key} must be {need}, got {params[key]!r}")
    return value


def _range(params, key, open_ends=False):
    """``params[key]`` as ``(lo, hi)`` floats with lo < hi (None: open end if allowed)."""
    value = params[key]
    if value is None:
        return None
    try:
        lo, hi = value
    except (TypeError, ValueError):
        raise ConfigurationError(f"{key} must be (min, max), got {value!r}") from None
    ends = []
    for v, fill in ((lo, -np.inf), (hi, np.inf)):
        if v is None and open_ends:
            ends.append(fill)
        elif isinstance(v, numbers.Real) and not isinstance(v, bool) and np.isfinite(v):
            ends.append(float(v))
        else:
            raise ConfigurationError(f"{key} must be (min, max) of finite numbers, got {value!r}")
    if not ends[0] < ends[1]:
        raise ConfigurationError(f"{key} must have min < max, got {value!r}")
    return tuple(ends)


def _wave_grid(value):
    """An explicit wavelength grid as finite um values (a Quantity is converted)."""
    from astropy import units as u

    try:
        grid = u.Quantity(value).to_value(u.um) if hasattr(value, "unit") else value
        grid = np.atleast_1d(np.asarray(grid, float))
    except (TypeError, ValueError, u.UnitsError) as exc:
        raise ConfigurationError(f"wave_grid must be wavelengths in um ({exc})") from exc
    if grid.ndim != 1 or grid.size < 2 or not np.all(np.isfinite(grid)):
        raise ConfigurationError(
            f"wave_grid must be >= 2 finite wavelengths (um), got {grid.size} values"
        )
    return grid


def _validate_params(p):
    """Check and normalise the extraction options (ConfigurationError on bad values)."""
    p["wave_sample"] = _number(p, "wave_sample", positive=True)
    p["ny"] = _number(p, "ny", integer=True, minimum=0)
    p["step"] = _number(p, "step", positive=True)
    p["oversample"] = _number(p, "oversample", integer=True, minimum=1)
    p["pixfrac"] = _number(p, "pixfrac", positive=True)
    p["boxcar_halfwidth"] = _number(p, "boxcar_halfwidth", positive=True)
    p["profile_sigma"] = _number(p, "profile_sigma", positive=True, allow_none=True)
    if p["source_type"] not in SOURCE_TYPES:
        raise ConfigurationError(
            f"source_type must be one of {SOURCE_TYPES}, got {p['source_type']!r}"
        )
    if p["pathloss_source"] not in ("auto", "pipeline", "model"):
        raise ConfigurationError(
            f"pathloss_source must be 'auto', 'pipeline' or 'model', got {p['pathloss_source']!r}"
        )
    p["wave_range"] = _range(p, "wave_range", open_ends=True)
    p["y_range"] = _range(p, "y_range")
    if p["wave_grid"] is not None:
        if p["wave_range"] is not None:
            raise ConfigurationError("give wave_grid or wave_range, not both")
        p["wave_grid"] = _wave_grid(p["wave_grid"])
    if p["trace_kwargs"] is not None:
        if not isinstance(p["trace_kwargs"], dict):
            raise ConfigurationError(f"trace_kwargs must be a dict, got {p['trace_kwargs']!r}")
        from slitcombine.group.slitgroup import SlitGroup

        known = set(inspect.signature(SlitGroup.fit_all_traces).parameters)
        known |= set(inspect.signature(SlitGroup.fit_single_trace).parameters)
        known -= {"self", "kwargs", "exp", "evaluate"}
        unknown = sorted(set(p["trace_kwargs"]) - known)
        if unknown:
            raise ConfigurationError(f"unknown trace_kwargs {unknown}; valid: {sorted(known)}")
    return p


def _check_name(name):
    """An output name: printable ASCII (it goes into FITS headers), no path separator."""
    if name is None:
        return None
    if not isinstance(name, str) or not name.strip():
        raise ConfigurationError(f"name must be a non-empty string, got {name!r}")
    if not (name.isascii() and name.isprintable()) or "/" in name or "\\" in name:
        raise ConfigurationError(
            f"name {name!r}: use printable ASCII without '/' or '\\' (it becomes a file "
            "name and a FITS header value)"
        )
    return name


def _check_sky_model(group):
    """The sky model behind un-differenced data; a warning when there is none.

    Nod differences remove the sky.  With ``diffs=False`` (or a single nod position,
    where there is nothing to difference) only a sky model does: the
    group's own estimate (``estimate_sky``), background spectra
    (``set_background_spectra``) or a tabulated global sky (``sky_file``).  Without one
    the extracted spectrum is source plus sky.

    Returns
    -------
    str
        ``'nod differences'``, ``'estimate_sky'``, ``'background spectra'``,
        ``'global sky table'`` or ``'none'``.
    """
    if group.meta["diffs"] and group.unp.N > 1:
        return "nod differences"
    sky_data = group.sky_data
    if sky_data is not None and sky_data.get("use", True):
        return str(sky_data.get("source", "estimate_sky"))
    if group.sky_arrays is not None:
        return "global sky table"
    why = "diffs=False" if not group.meta["diffs"] else "a single nod position"
    log.warning(
        "%s: %s and no sky model: the spectrum includes the sky.  Estimate it from the "
        "group (estimate_sky_kwargs={}; command line --set estimate_sky.enabled=true) or "
        "give a sky table (sky_file)",
        group.name,
        why,
    )
    return "none"


def _fit_traces(group, p):
    """Run the group's trace fit as the extraction options say; returns its status."""
    if not p["fit_traces"]:
        return "not requested"
    trace_kw = dict(p["trace_kwargs"] or {})
    # a bright source off the shutter centre or wider than 2 px is not held
    # at the default bounds (see SlitGroup.fit_all_traces); bounds the user
    # gives are kept
    if not {"sigma_bounds", "trace_bounds"} & set(trace_kw):
        trace_kw.setdefault("widen_bounds", True)
    auto_degree = None
    if "degree" not in trace_kw and "x0" not in trace_kw:
        # the offset polynomial the data can constrain: a curvature needs a
        # bright source (on CEERS it runs to its bound for a chi2 gain of a few)
        try:
            sn_value, auto_degree = _degree_from_sn(group)
            trace_kw["degree"] = auto_degree
        except FitError as exc:
            log.info("%s: no S/N for the trace degree (%s): degree 2", group.name, exc)
    if p["profile_sigma"] is not None:
        # the given width is held fixed; the trace offsets are still fitted
        from slitcombine.core.tracefit import SIGMA_UNIT

        trace_kw.setdefault("fix_sigma", p["profile_sigma"] * SIGMA_UNIT)
    try:
        fits = group.fit_all_traces(**trace_kw)
        trace_status = "fitted" if p["profile_sigma"] is None else "fitted, width fixed"
        if auto_degree is not None:
            trace_status += f", offset degree {auto_degree} (trace S/N {sn_value:.1f})"
        widened = sorted({w for f in fits.values() for w in f.get("widened_bounds", [])})
        if widened:
            trace_status += f", bounds widened ({'; '.join(widened)})"
        moved = _undetected_to_planned_position(group)
        if moved:
            trace_status += f"; {moved}"
    except FitError as exc:
        trace_status = f"failed ({exc}); default profile width used"
        log.warning("%s: trace fit failed: %s; using the default width", group.name, exc)
    return trace_status


def _undetected_to_planned_position(group):
    """Put the traces of an undetected MSA source at its planned position (SRCYPOS).

    When no position detects the source, :meth:`SlitGroup.fit_all_traces` keeps the
    nominal traces, which in an MSA slitlet run through the shutter centre
    (``y_slit = 0``) unless ``trace_with_ypos``; the planned position is the better
    prior (a source 0.38 shutter heights off centre is 1.7 px from the centre: the
    extraction there recovers a quarter to a third of its flux).  Fixed slits and
    ``trace_with_ypos=True`` already use it.

    Returns
    -------
    str
        What was done ('' when nothing).
    """
    step = group.meta.get("steps", {}).get("trace_fit", {})
    if step.get("status") != "FALLBACK" or step.get("fallback_reason") != "undetected":
        return ""
    if group.IS_FIXED_SLIT or group.meta.get("trace_with_ypos"):
        return ""
    offset = float(group.source_ypixel_position)
    if not np.isfinite(offset) or offset == 0.0:
        return ""
    group.trace_coeffs = np.array(group.trace_coeffs, float)
    group.trace_coeffs[:, -1] += offset
    group.update_trace_from_coeffs()
    ypos = group.slits[0].slit.get("source_ypos")
    text = (
        f"source not detected: traces at the planned position (SRCYPOS {ypos:.3f}, "
        f"{offset:+.2f} px from the shutter centre)"
    )
    log.info("%s: %s", group.name, text)
    return text


#: Trace S/N (80th percentile over columns) -> degree of the trace-offset polynomial
#: fitted by combine() when none is given: 0 below 5, 1 up to 20, 2 above.
DEGREE_SN = ([5.0, 5.0001, 20.0, 20.0001], [0, 1, 1, 2])


def _degree_from_sn(group):
    """``(sn_value, degree)`` of :meth:`SlitGroup.fit_params_by_sn` with :data:`DEGREE_SN`."""
    _, sn_value, _, degree = group.fit_params_by_sn(degree_sn=DEGREE_SN)
    return sn_value, int(degree)


def _classify(group, p):
    """``(kind, reason)`` of :func:`slitcombine.core.apertures.classify_source` for a group."""
    from slitcombine.instrument import SHUTTER_HEIGHT, SHUTTER_PITCH

    fit = group.fit
    sigma = None
    if p["profile_sigma"] is not None:
        sigma = float(p["profile_sigma"])
    elif isinstance(fit, dict) and any(isinstance(f, dict) for f in fit.values()):
        detected = [
            f["sigma"]
            for f in fit.values()
            if isinstance(f, dict)
            and f.get("status") not in ("NO_SIGNAL", None)
            and f.get("sigma") is not None
        ]
        sigma = float(np.median(detected)) if detected else None
    height_px = None
    if np.isfinite(group.slit_pixel_scale):
        height_px = SHUTTER_HEIGHT / group.slit_pixel_scale
    elif group.meta.get("nod_offset"):
        height_px = group.meta["nod_offset"] * SHUTTER_HEIGHT / SHUTTER_PITCH
    srctypes = [s.slit.get("source_type") for s in group.slits]
    return classify_source(
        p["source_type"], srctypes, sigma, height_px, fixed_slit=group.IS_FIXED_SLIT
    )


@compute_call
def combine_group(group, **params):
    """Trace fit, pixel table, 2D resampling and 1D extraction of an existing group.

    Parameters
    ----------
    group : slitcombine.SlitGroup
        The group.
    **params
        Extraction options (:data:`EXTRACT_DEFAULTS`).

    Returns
    -------
    CombineResult
    """
    from slitcombine.io.provenance import collect

    unknown = sorted(set(params) - set(EXTRACT_DEFAULTS))
    if unknown:
        raise ConfigurationError(f"unknown extraction option(s) {unknown}")
    p = _validate_params({**EXTRACT_DEFAULTS, **params})
    p["sky_model"] = _check_sky_model(group)

    trace_status = _measure_source(group, p)
    fit = p["profile_sigma"] if p["profile_sigma"] is not None else None
    sigma = group.profile_sigma(fit)
    pixtab = group.get_flat_diff_arrays(
        with_pathloss=p["with_pathloss"], fit=fit, pathloss_source=p["pathloss_source"]
    )
    used = pixtab.meta.get("PATHSRC", "none")
    noise = _measure_and_apply_noise(group, pixtab, p)
    grid = _output_grid(group, pixtab, p)
    spec = _extract_spectrum(group, pixtab, grid, noise, p)
    drz = _resample_2d(pixtab, grid, p)
    with np.errstate(invalid="ignore"):
        corr = drz["corr_y"][np.isfinite(drz["corr_y"]) & (drz["npix"][1:] > 0)]
    p["corr_y"] = round(float(np.median(corr)), 4) if corr.size else float("nan")
    prof, pfit = extract.collapsed_profile(
        drz["sci"], drz["profile"], spec["flux"].value, spec["err"].value
    )
    slits = group.slit_metadata()
    result = CombineResult(
        name=group.name,
        group=group,
        pixtab=pixtab,
        spec=spec,
        drizzled=drz,
        prof1d={"profile": prof, "pfit": pfit},
        sigma=sigma,
        slits=slits,
        params=p,
        pathloss_used=used,
        include_pixtab=bool(p["include_pixtab"]),
    )
    n_valid = int(np.count_nonzero(spec["valid"]))
    group.record_step(
        "extract",
        "COMPLETE",
        n_pixels=len(pixtab),
        n_bins=int(grid.size),
        n_valid_bins=n_valid,
        pathloss=used,
        trace_fit=trace_status,
    )
    params = {**p, "sigma": sigma, "pathloss_used": used}
    result.provenance = collect(group.meta, params, slits, fit=group.fit)
    log.info("%s: %d pixels -> %d/%d valid bins", group.name, len(pixtab), n_valid, grid.size)
    return result


def _measure_source(group, p):
    """Fit the traces and decide how the source is measured (compact or extended).

    Point and compact sources are measured on the detector image (bar shadow undone);
    'auto' starts there and moves to the bar-corrected data if the fitted width says the
    source is extended (the traces are then refitted).  Sets ``group.source_type`` and
    the ``source_type_used``, ``source_type_reason`` and ``trace_fit_status`` entries of
    ``p``; returns the trace-fit status.
    """
    group.source_type = "extended" if p["source_type"] == "extended" else "compact"
    trace_status = _fit_traces(group, p)
    kind, reason = _classify(group, p)
    if kind != group.source_type:
        group.source_type = kind
        if p["fit_traces"]:
            trace_status = _fit_traces(group, p) + " (refitted as extended)"
    p["source_type_used"] = kind
    p["source_type_reason"] = reason
    group.record_step("source_type", "COMPLETE", option=p["source_type"], used=kind, reason=reason)
    log.info("%s: measured as a %s source (%s)", group.name, kind, reason)
    p["trace_fit_status"] = trace_status
    return trace_status


def _output_grid(group, pixtab, p):
    """The output wavelength grid (um): given, or from the group's wavelengths.

    Raises :class:`~slitcombine.errors.SlitCombineError` if it misses the data.
    """
    if p["wave_grid"] is not None:
        grid = p["wave_grid"]
    else:
        ny, nx = group.sh
        grid = resample.wavelength_grid(
            group.wave.reshape(group.N, ny, nx),
            group.mask,
            wave_sample=p["wave_sample"],
            wave_range=p["wave_range"],
        )
    edges = resample.bin_edges(grid)
    inside = resample.bin_index(np.asarray(pixtab["wave"], float), edges) >= 0
    if not inside.any():
        raise SlitCombineError(
            f"{group.name}: the wavelength grid ({grid[0]:.4f}-{grid[-1]:.4f} um) does not "
            f"overlap the data ({np.nanmin(pixtab['wave']):.4f}-"
            f"{np.nanmax(pixtab['wave']):.4f} um)"
        )
    return grid


def _extract_spectrum(group, pixtab, grid, noise, p):
    """The optimally extracted 1D spectrum, with the applied error scale per bin."""
    bf = group._source_view()[1]
    spec = extract.extract_1d(
        pixtab,
        grid,
        boxcar_halfwidth=p["boxcar_halfwidth"],
        y_range=p["y_range"],
        exposure_variance=group.var * bf**2,
    )
    if not np.any(spec["valid"]):
        raise SlitCombineError(f"{group.name}: no valid 1D bin (everything masked?)")
    spec["err_scale"] = noise.error_factor(spec["wave"].value) if p["rescale_variance"] else 1.0
    spec["err_scale"].description = "factor applied to the propagated errors"
    return spec


def _resample_2d(pixtab, grid, p):
    """The rectified 2D spectrum (path loss divided out), by pseudo-drizzle."""
    pl = np.asarray(pixtab["pathloss"], float)
    return resample.pseudo_drizzle(
        pixtab["wave"],
        pixtab["yslit"],
        np.asarray(pixtab["flux"], float) / pl,
        np.asarray(pixtab["var"], float) / pl**2,
        pixtab["weight"],
        grid,
        ny=p["ny"],
        step=p["step"],
        oversample=p["oversample"],
        pixfrac=p["pixfrac"],
        extra={
            "profile": np.asarray(pixtab["profile"], float),
            "sky": np.asarray(pixtab["sky"], float) / pl,
        },
        dwave=np.asarray(pixtab["dwave_dx"], float) if "dwave_dx" in pixtab.colnames else None,
    )
