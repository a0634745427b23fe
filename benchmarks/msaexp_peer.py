#!/usr/bin/env python
"""Reference measurements of msaexp's ``slit_combine`` for the slitcombine benchmarks.

This script is run **by the python of a separate msaexp virtual environment**, as a
subprocess (see ``benchmarks/_peer.py``).  It is the only file of the project that imports
msaexp/jwst/grizli; it is never imported by the slitcombine package or its tests.

Every subcommand prints exactly ONE JSON object to stdout.  Everything else that msaexp,
jwst or grizli print (log lines, warnings) is redirected to stderr, at the file-descriptor
level, before msaexp is imported.

Subcommands
-----------
``slitgroup FILES... [--variants a,b] [--opts JSON] [--name NAME] [--repeat R]``
    Time ``SlitGroup(files, name, **opts)`` R times and report the numbers that
    slitcombine is validated against.  Without ``--opts`` the named variants of
    ``SLITGROUP_VARIANTS`` are run (default: ``default``, msaexp's own defaults, and
    ``nobar_nosky`` = ``{"undo_barshadow": false, "sky_file": null}``; ``extract_like`` is
    also available).  ``--opts`` runs one ``custom`` variant instead.
``fit_all_traces FILES... [--preset default|extract] [--niter N] [--opts JSON]
[--fit-kwargs JSON] [--lookup-prf] [--repeat R]``
    Time ``group.fit_all_traces(niter=N, **fit_kwargs)`` on a freshly constructed group per
    repeat (construction timed separately, not included).  ``--preset default``: SlitGroup
    and fit_all_traces defaults (N=3, pixel-integrated Gaussian profile).  ``--preset
    extract``: the arguments ``extract_spectra`` uses (N=4, lookup-table PRF, degree 0).
``extract FILES... [--outdir D] [--target T] [--root R] [--kwargs JSON] [--repeat R]
[--arrays] [--traces]``
    Time ``msaexp.slit_combine.extract_spectra(...)`` end to end (it writes into D) and
    report SPEC1D values near [OIII] 5008 (2.62 um) and H-alpha (3.43 um).  ``--arrays``
    adds every SPEC1D column as a list (``spec1d["arrays"]``); ``--traces`` runs with
    ``get_xobj=True`` and adds, per group and exposure, the trace row of every detector
    column, the wavelength there and the bar-shadow array that divides the data at that
    row (``traces``; see :func:`_trace_report`).
``data_dir``
    Where the msaexp package keeps its data files (``msaexp_data_dir``) and the path of
    the PRISM/MSA lookup-table PSF that ``extract_spectra`` loads (``lookup_prf_file``),
    found without importing msaexp.  No input files.
``read_spectrum FILES...``
    Read 1D spectrum files (e.g. slitcombine's ``{name}.spec.fits``) with msaexp's own
    readers, ``msaexp.spectrum.SpectrumSampler`` and ``msaexp.spectrum.read_spectrum``,
    and report what they see: columns, units, the ``wave``/``flux``/``err``/``valid``
    arrays (as lists) and the sampler's valid mask.

Times are wall-clock ``time.perf_counter()`` differences measured after all imports.
The first repetition in a fresh process is "cold" (msaexp builds module-level caches,
e.g. the bad-pixel YAML tables, and numba compiles on first use); it is reported separately
as ``first_s`` and is included in ``times_s``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

#: Nominal observed wavelengths (um) of the strongest lines of CEERS 1345_933 (z = 4.23).
LINES = {"OIII_5008": 2.62, "Halpha": 3.43}
#: Half-width (um) of the window searched for the S/N peak around each line.
LINE_HALF_WIDTH = 0.05

#: Named SlitGroup keyword sets for the ``slitgroup`` subcommand.
#: - ``default``: msaexp's own SlitGroup defaults (internal spline bar shadow, undo_barshadow=2;
#:   global sky "read" from msaexp/data/msa_sky; trace_from_yoffset=True).
#: - ``nobar_nosky``: comparable with a first slitcombine version that has neither the internal
#:   bar-shadow correction nor the global sky (the pipeline BARSHADOW stays applied).
#: - ``extract_like``: the SlitGroup arguments that ``extract_spectra`` passes with its own
#:   defaults for target "1345_933" (without the lookup PRF object, which only affects the
#:   path-loss column of the pixel table, not construction).
SLITGROUP_VARIANTS = {
    "default": {},
    "nobar_nosky": {"undo_barshadow": False, "sky_file": None},
    "extract_like": {
        "position_key": "y_index",
        "diffs": True,
        "stuck_threshold": 0.3,
        "undo_barshadow": False,
        "undo_pathloss": True,
        "sky_arrays": None,
        "trace_with_xpos": False,
        "trace_with_ypos": True,
        "trace_from_yoffset": False,
        "nod_offset": None,
        "reference_exposure": "auto",
        "pad_border": 2,
    },
}

#: fit_all_traces keyword arguments used by ``extract_spectra`` (defaults: fit_type=1,
#: offset_degree=0, initial_sigma=7, trace_niter=4) for the first group; ``ref_exp`` is the
#: group's ``calc_reference_exposure`` and is filled in at run time.
EXTRACT_FIT_KWARGS = {
    "force_positive": False,
    "degree": 0,
    "sigma_bounds": [3, 12],
    "with_bounds": False,
    "trace_bounds": [-1.0, 1.0],
    "initial_sigma": 7,
    "x0": None,
    "method": "powell",
    "tol": 1.0e-8,
}

_STATE = {}  # "json_out": file object on the original stdout, set by _isolate_stdout()


# --------------------------------------------------------------------------------------
# Plumbing
# --------------------------------------------------------------------------------------
def _isolate_stdout():
    """Send everything written to fd 1 (python or C level) to stderr; keep the real stdout
    for the single JSON result."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    _STATE["json_out"] = os.fdopen(saved, "w")


def _emit(obj):
    text = json.dumps(_jsonable(obj), allow_nan=False, indent=1)
    out = _STATE.get("json_out", sys.__stdout__)
    out.write(text + "\n")
    out.flush()


def _jsonable(obj):
    """Convert numpy/astropy objects to plain JSON types; NaN and inf become None."""
    import numpy as np

    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        value = float(obj)
        return value if math.isfinite(value) else None
    if isinstance(obj, (np.str_, str)):
        return str(obj)
    if isinstance(obj, bytes):
        return obj.decode("utf-8", "replace")
    if obj is None or isinstance(obj, int):
        return obj
    if hasattr(obj, "tolist"):
        return _jsonable(obj.tolist())
    return repr(obj)


def _timing(times):
    return {
        "repeat": len(times),
        "first_s": times[0],
        "min_s": min(times),
        "median_s": statistics.median(times),
        "times_s": times,
    }


def _peak_rss_mb():
    # ru_maxrss is in kilobytes on Linux (bytes on macOS)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    scale = 1.0 / 1024**2 if sys.platform == "darwin" else 1.0 / 1024
    return rss * scale


def _versions():
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for name in (
        "msaexp",
        "jwst",
        "grizli",
        "numpy",
        "scipy",
        "astropy",
        "gwcs",
        "asdf",
        "stdatamodels",
        "numba",
    ):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out


def _machine():
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "affinity_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
    }


def _header(subcommand, files, import_s):
    return {
        "tool": "msaexp",
        "subcommand": subcommand,
        "files": [str(Path(f).name) for f in files],
        "versions": _versions(),
        "machine": _machine(),
        "import_s": import_s,
    }


def _import_msaexp():
    t0 = time.perf_counter()
    import msaexp.slit_combine as sc  # noqa: F401  (heavy: jwst, grizli, numba)

    return sc, time.perf_counter() - t0


def _group_name(sc, files, name):
    if name:
        return name
    groups = sc.split_visit_groups(list(files), join=[0, 3, 5], gratings=["PRISM"])
    return list(groups)[0] if len(groups) == 1 else "group"


def _close(group):
    for slit in getattr(group, "slits", []):
        try:
            slit.close()
        except Exception:  # closing is best effort
            pass


# --------------------------------------------------------------------------------------
# slitgroup
# --------------------------------------------------------------------------------------
def _diff_stats(group, value):
    import numpy as np

    ipos, ineg, diff, _bdiff, vdiff, _wdiff = group.make_diff_image(exp=value)
    ny, nx = group.sh
    d2 = diff.reshape((ny, nx))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows
        profile = np.nanmedian(d2, axis=1)  # median over columns, per row
    finite = np.isfinite(profile)
    nfinite_row = np.isfinite(d2).sum(axis=1)
    # rows where at least half of the columns are valid (drops sparsely sampled edge rows)
    well = finite & (nfinite_row >= 0.5 * nfinite_row.max())
    prof_well = np.where(well, profile, np.nan)
    return {
        "ipos": np.asarray(ipos).tolist(),
        "ineg": np.asarray(ineg).tolist(),
        "diff_nansum": np.nansum(diff),
        "diff_nanmedian": np.nanmedian(diff),
        "diff_nfinite": int(np.isfinite(diff).sum()),
        "vdiff_nansum": np.nansum(vdiff),
        "vdiff_nanmedian": np.nanmedian(vdiff),
        "row_of_max_column_median_diff": int(np.nanargmax(profile)) if finite.any() else None,
        "row_of_min_column_median_diff": int(np.nanargmin(profile)) if finite.any() else None,
        "row_of_max_column_median_diff_well_sampled": int(np.nanargmax(prof_well))
        if well.any()
        else None,
        "column_median_diff_profile": profile,
        "finite_columns_per_row": nfinite_row,
    }


def _group_report(group):
    import numpy as np

    info = group.info
    cols = {}
    for col in (
        "y_index",
        "position_number",
        "shutter_state",
        "y_offset",
        "x_offset",
        "y_position",
        "source_ypos",
    ):
        if col in info.colnames:
            cols[col] = list(np.asarray(info[col]).tolist())
    cols["exptime"] = list(np.asarray(group.exptime, dtype=float))

    unp_values = list(group.unp.values)
    meta_keys = (
        "nod_offset",
        "slit_pixel_scale",
        "slit_shutter_scale",
        "num_shutters",
        "undo_barshadow",
        "sky_file",
        "has_sky_arrays",
        "position_key",
        "reference_exposure",
        "barshadow_dy",
        "shutter_offset",
        "weight_type",
    )
    meta = {k: group.meta[k] for k in meta_keys if k in group.meta}
    out = {
        "N": group.N,
        "name": group.name if hasattr(group, "name") else None,
        "grating": group.grating,
        "filter": group.filter,
        "sh": list(group.sh),
        "info": cols,
        "unp_values": unp_values,
        "calc_reference_exposure": group.calc_reference_exposure,
        "relative_nod_offset": np.asarray(group.relative_nod_offset, dtype=float),
        "slit_pixel_scale": float(group.slit_pixel_scale),
        "slit_shutter_scale": float(group.slit_shutter_scale),
        "nod_offset": group.meta.get("nod_offset"),
        "meta": meta,
        "mask_sum": np.asarray(group.mask.sum(axis=1)).tolist(),
        "base_coeffs": [np.asarray(c, dtype=float) for c in group.base_coeffs],
        "sci_nansum_masked": [
            float(np.nansum(group.sci[i][group.mask[i]])) for i in range(group.N)
        ],
        "diff_images": {str(v): _diff_stats(group, v) for v in unp_values},
    }
    return out


def _run_slitgroup_variant(sc, files, name, opts, repeat):
    times = []
    report = None
    for i in range(repeat):
        t0 = time.perf_counter()
        group = sc.SlitGroup(list(files), name, **opts)
        times.append(time.perf_counter() - t0)
        if i == repeat - 1:
            report = _group_report(group)
        _close(group)
        del group
    return {"opts": opts, "timing": _timing(times), "result": report}


def cmd_slitgroup(args):
    sc, import_s = _import_msaexp()
    name = _group_name(sc, args.files, args.name)
    if args.opts is not None:
        variants = {"custom": json.loads(args.opts)}
    else:
        names = [v.strip() for v in args.variants.split(",") if v.strip()]
        unknown = [v for v in names if v not in SLITGROUP_VARIANTS]
        if unknown:
            raise SystemExit(f"unknown variant(s) {unknown}; known: {list(SLITGROUP_VARIANTS)}")
        variants = {v: dict(SLITGROUP_VARIANTS[v]) for v in names}
    out = _header("slitgroup", args.files, import_s)
    out["name"] = name
    out["variants"] = {}
    for key, opts in variants.items():
        print(f"# msaexp_peer slitgroup variant {key}: {opts}", file=sys.stderr)
        out["variants"][key] = _run_slitgroup_variant(sc, args.files, name, opts, args.repeat)
    out["peak_rss_mb"] = _peak_rss_mb()
    return out


# --------------------------------------------------------------------------------------
# fit_all_traces
# --------------------------------------------------------------------------------------
def _theta_layout(sc, n_theta, fix_sigma):
    """How msaexp's ``objfun_prof_trace`` reads a parameter vector of this length.

    A 4-element theta (e.g. ``degree=2`` with a free sigma, the ``fit_single_trace``
    default) is NOT [10*sigma, c2, c1, c0]: msaexp treats it as two "wing" parameters, a
    fixed sigma = WING_SIGMA/10 and a linear trace.  Recorded so comparisons are not misread.
    """
    if fix_sigma is not None and fix_sigma > 0:
        return "trace polynomial only (sigma fixed by fix_sigma)"
    if getattr(sc, "WINGS_XOFF", None) is not None:
        return "[10*sigma, wings..., trace polynomial]"
    wings_default = getattr(sc, "DEFAULT_WINGS", None) is not None
    if n_theta == 4 and not wings_default:
        return "[wing amplitude, wing width factor, trace c1, trace c0]; sigma = WING_SIGMA/10"
    if n_theta >= 5 and not wings_default:
        return "[wing amplitude, wing width factor, wing offset, trace polynomial]; sigma fixed"
    return "[10*sigma, trace polynomial (highest power first)]"


def _fit_report(fit, sc=None, fix_sigma=None):
    import numpy as np

    out = {}
    for key, res in fit.items():
        out[str(key)] = {
            "theta_layout": _theta_layout(sc, len(np.atleast_1d(res["theta"])), fix_sigma)
            if sc is not None
            else None,
            "sigma": float(res["sigma"]),
            "theta": np.asarray(res["theta"], dtype=float),
            "trace_coeffs": np.asarray(res["trace_coeffs"], dtype=float),
            "chi2_init": float(res["chi2_init"]),
            "chi2_fit": float(res["chi2_fit"]),
            "ipos": np.asarray(res["ipos"]).tolist(),
        }
    return out


def cmd_fit_all_traces(args):
    import numpy as np

    sc, import_s = _import_msaexp()
    name = _group_name(sc, args.files, args.name)
    if args.preset == "extract":
        opts = dict(SLITGROUP_VARIANTS["extract_like"])
        fit_kwargs = dict(EXTRACT_FIT_KWARGS)
        lookup_prf = True
        niter = 4 if args.niter is None else args.niter
    else:
        opts, fit_kwargs, lookup_prf = {}, {}, False
        niter = 3 if args.niter is None else args.niter
    if args.opts:
        opts.update(json.loads(args.opts))
    if args.fit_kwargs:
        fit_kwargs.update(json.loads(args.fit_kwargs))
    lookup_prf |= bool(args.lookup_prf)
    for key in ("sigma_bounds", "trace_bounds"):
        if isinstance(fit_kwargs.get(key), list):
            fit_kwargs[key] = tuple(fit_kwargs[key])
    if lookup_prf:
        prf = sc.set_lookup_prf(slit_file=args.files[0], version="001", lookup_prf_type="merged")
        if args.preset == "extract":
            opts["lookup_prf"] = prf
    times, construct_times, report = [], [], None
    for i in range(args.repeat):
        t0 = time.perf_counter()
        group = sc.SlitGroup(list(args.files), name, **opts)
        construct_times.append(time.perf_counter() - t0)
        kws = dict(fit_kwargs)
        if args.preset == "extract" and "ref_exp" not in kws:
            kws["ref_exp"] = group.calc_reference_exposure
        used_kws = kws
        sc.EVAL_COUNT = 0
        t0 = time.perf_counter()
        fit = group.fit_all_traces(niter=niter, **kws)
        times.append(time.perf_counter() - t0)
        if i == args.repeat - 1:
            report = {
                "groups": _fit_report(fit, sc, kws.get("fix_sigma")),
                "objective_evaluations": int(getattr(sc, "EVAL_COUNT", -1)),
                "trace_coeffs_per_exposure": [
                    np.asarray(c, dtype=float) for c in group.trace_coeffs
                ],
                "relative_nod_offset": np.asarray(group.relative_nod_offset, dtype=float),
                "calc_reference_exposure": group.calc_reference_exposure,
            }
        _close(group)
        del group
    out = _header("fit_all_traces", args.files, import_s)
    out.update(
        {
            "name": name,
            "preset": args.preset,
            "opts": {k: v for k, v in opts.items() if k != "lookup_prf"},
            "niter": niter,
            "fit_kwargs": used_kws,
            "lookup_prf": lookup_prf,
            "timing": _timing(times),
            "construction_timing": _timing(construct_times),
            "result": report,
            "peak_rss_mb": _peak_rss_mb(),
        }
    )
    return out


# --------------------------------------------------------------------------------------
# extract
# --------------------------------------------------------------------------------------
def _line_report(tab, center, half_width=LINE_HALF_WIDTH):
    import numpy as np

    wave = np.asarray(tab["wave"], dtype=float)
    flux = np.asarray(tab["flux"], dtype=float)
    err = np.asarray(tab["err"], dtype=float)
    with np.errstate(all="ignore"):
        sn = flux / err
    near = int(np.nanargmin(np.abs(wave - center)))
    win = np.where((np.abs(wave - center) <= half_width) & np.isfinite(sn))[0]
    out = {
        "nominal_wave": center,
        "nearest": {
            "index": near,
            "wave": wave[near],
            "flux": flux[near],
            "err": err[near],
            "sn": sn[near],
        },
    }
    if len(win):
        j = int(win[np.nanargmax(sn[win])])
        out["peak_sn"] = {
            "index": j,
            "wave": wave[j],
            "flux": flux[j],
            "err": err[j],
            "sn": sn[j],
            "window_um": [center - half_width, center + half_width],
        }
    return out


def _trace_report(obj):
    """Where msaexp put the source: per exposure, the row of ``yslit = 0`` in every column.

    ``ypix - yslit`` is the trace row (msaexp's ``update_trace_from_coeffs``: ``yslit =
    ypix - base(x) - offset(x)``), the same in every row of a column.  ``wave`` is the
    wavelength of the pixel nearest the trace, ``bar`` the bar-shadow array
    (``obj.bar``: the pipeline's BARSHADOW with ``undo_barshadow=False``) interpolated
    linearly in rows at the trace; ``phot_corr`` (the factor that multiplied the pipeline
    SCI, e.g. ``PIXAR_SR * 1e12 * PATHLOSS_UN``) likewise.  NaN where undefined.
    """
    import numpy as np

    ny, nx = obj.sh
    rows = np.arange(ny, dtype=float)
    out = []
    for i in range(obj.N):
        trace = np.nanmedian((obj.ypix[i] - obj.yslit[i]).reshape(ny, nx), axis=0)
        wave2 = np.asarray(obj.wave[i], float).reshape(ny, nx)
        bar2 = np.asarray(obj.bar[i], float).reshape(ny, nx)
        phot2 = np.asarray(getattr(obj, "phot_corr", np.full_like(obj.bar, np.nan))[i], float)
        phot2 = phot2.reshape(ny, nx)
        near = np.clip(np.round(np.nan_to_num(trace, nan=-1.0)).astype(int), 0, ny - 1)
        cols = np.arange(nx)
        wave = np.where(np.isfinite(trace), wave2[near, cols], np.nan)
        bar = np.full(nx, np.nan)
        phot = np.full(nx, np.nan)
        for j in np.flatnonzero(np.isfinite(trace)):
            for arr, dest in ((bar2, bar), (phot2, phot)):
                ok = np.isfinite(arr[:, j])
                if ok.sum() > 1 and rows[ok][0] <= trace[j] <= rows[ok][-1]:
                    dest[j] = np.interp(trace[j], rows[ok], arr[ok, j])
        out.append(
            {
                "file": Path(obj.files[i]).name,
                "trace_row": trace,
                "wave": wave,
                "bar": bar,
                "phot_corr": phot,
                "base_coeffs": np.asarray(obj.base_coeffs[i], float),
                "trace_coeffs": np.asarray(obj.trace_coeffs[i], float),
                "source_ypos": float(obj.info["source_ypos"][i]),
                "source_xpos": float(obj.info["source_xpos"][i]),
            }
        )
    return {"sh": [int(ny), int(nx)], "exposures": out}


class _StepTimer:
    """Accumulate wall time spent inside selected msaexp functions during extract_spectra."""

    def __init__(self):
        self.totals = {}
        self.calls = {}
        self._undo = []

    def wrap(self, owner, attr, label):
        orig = getattr(owner, attr)

        def wrapper(*a, **k):
            t0 = time.perf_counter()
            try:
                return orig(*a, **k)
            finally:
                self.totals[label] = self.totals.get(label, 0.0) + time.perf_counter() - t0
                self.calls[label] = self.calls.get(label, 0) + 1

        setattr(owner, attr, wrapper)
        self._undo.append((owner, attr, orig))

    def restore(self):
        for owner, attr, orig in reversed(self._undo):
            setattr(owner, attr, orig)
        self._undo = []

    def report(self):
        return {k: {"total_s": v, "calls": self.calls[k]} for k, v in self.totals.items()}


def cmd_extract(args):
    import astropy.io.fits as pyfits

    sc, import_s = _import_msaexp()
    import msaexp.utils as msautils

    files = [str(Path(f).resolve()) for f in args.files]
    kwargs = {"make_2d_plots": True}
    if args.kwargs:
        kwargs.update(json.loads(args.kwargs))
    if args.traces:
        kwargs["get_xobj"] = True

    tmp_out = None
    if args.outdir:
        outdir = Path(args.outdir).resolve()
        outdir.mkdir(parents=True, exist_ok=True)
    else:
        tmp_out = tempfile.mkdtemp(prefix="msaexp_peer_extract_")
        outdir = Path(tmp_out)

    cwd = os.getcwd()
    times, breakdown = [], None
    try:
        os.chdir(outdir)
        for i in range(args.repeat):
            timer = _StepTimer()
            timer.wrap(sc.SlitGroup, "__init__", "SlitGroup.__init__")
            timer.wrap(sc.SlitGroup, "fit_all_traces", "SlitGroup.fit_all_traces")
            timer.wrap(sc.SlitGroup, "plot_2d_differences", "SlitGroup.plot_2d_differences")
            timer.wrap(sc, "combine_grating_group", "combine_grating_group")
            timer.wrap(sc, "pseudo_drizzle", "pseudo_drizzle")
            timer.wrap(sc, "pixel_table_to_1d", "pixel_table_to_1d")
            timer.wrap(msautils, "drizzled_hdu_figure", "drizzled_hdu_figure")
            t0 = time.perf_counter()
            try:
                hdul = sc.extract_spectra(
                    target=args.target,
                    root=args.root,
                    path_to_files=str(Path(files[0]).parent),
                    files=list(files),
                    **kwargs,
                )
            finally:
                timer.restore()
            times.append(time.perf_counter() - t0)
            if i == args.repeat - 1:
                breakdown = timer.report()
        xobj = None
        if kwargs.get("get_xobj") and isinstance(hdul, tuple):
            hdul, xobj = hdul
        if hdul is None:
            raise RuntimeError("extract_spectra returned None (no valid spectra)")
        grating_keys = list(hdul)
        spec_files = sorted(str(p.name) for p in outdir.glob(f"{args.root}_*.spec.fits"))
        if not spec_files:
            raise RuntimeError(f"no {args.root}_*.spec.fits written in {outdir}")
        spec_path = outdir / spec_files[0]
        with pyfits.open(spec_path) as im:
            import numpy as np
            from astropy.table import Table

            tab = Table.read(im["SPEC1D"])
            h = im["SPEC1D"].header
            wave = np.asarray(tab["wave"], dtype=float)
            flux = np.asarray(tab["flux"], dtype=float)
            err = np.asarray(tab["err"], dtype=float)
            with np.errstate(all="ignore"):
                sn = flux / err
            valid = np.isfinite(sn) & (err > 0)
            spec = {
                "file": spec_files[0],
                "extensions": [hdu.name for hdu in im],
                "nrows": len(tab),
                "columns": tab.colnames,
                "n_valid": int(valid.sum()),
                "wave_range": [float(np.nanmin(wave)), float(np.nanmax(wave))],
                "median_sn_valid": float(np.nanmedian(sn[valid])) if valid.any() else None,
                "header": {
                    k: h.get(k)
                    for k in (
                        "SIGMA",
                        "NOD_OFFSET",
                        "SRCNAME",
                        "GRATING",
                        "FILTER",
                        "EXPTIME",
                        "NCOMBINE",
                        "CALCREF",
                        "PROFCEN",
                        "PROFSIG",
                        "YPIXSCL",
                        "UNDO_BARSHADOW",
                        "SKY_FILE",
                        "HAS_SKY_ARRAYS",
                        "WEIGHT_TYPE",
                    )
                    if k in h
                },
                "sci_shape": list(im["SCI"].data.shape) if "SCI" in im else None,
                "lines": {k: _line_report(tab, c) for k, c in LINES.items()},
            }
            offs = {k: h[k] for k in h if str(k).startswith(("OFFC", "OFFD", "SIGMA"))}
            spec["header_fit"] = offs
            if args.arrays:
                spec["arrays"] = {c: np.asarray(tab[c], dtype=float) for c in tab.colnames}
                spec["units"] = {c: str(tab[c].unit) for c in tab.colnames}
        written = sorted(p.name for p in outdir.iterdir())
    finally:
        os.chdir(cwd)
        if tmp_out is not None and not args.keep:
            shutil.rmtree(tmp_out, ignore_errors=True)

    out = _header("extract", files, import_s)
    if xobj is not None:
        out["traces"] = {str(k): _trace_report(v["obj"]) for k, v in xobj.items()}
        # the profile-fit priors extract_spectra used (module globals it sets)
        out["fit_priors"] = {
            k: getattr(sc, k, None)
            for k in ("SIGMA_PRIOR", "PIX_SCALE", "CENTER_PRIOR", "CENTER_WIDTH", "HUBER_ALPHA")
        }
    out.update(_data_paths())
    out.update(
        {
            "target": args.target,
            "root": args.root,
            "kwargs": kwargs,
            "outdir": None if (tmp_out is not None and not args.keep) else str(outdir),
            "written_files": written,
            "groups": grating_keys,
            "timing": _timing(times),
            "breakdown_last_run": breakdown,
            "spec1d": spec,
            "peak_rss_mb": _peak_rss_mb(),
        }
    )
    return out


def _data_paths():
    """msaexp's data folder and its merged PRISM/MSA lookup-table PSF (no msaexp import)."""
    import importlib.util

    spec = importlib.util.find_spec("msaexp")
    if spec is None or spec.origin is None:
        return {"msaexp_data_dir": None, "lookup_prf_file": None}
    data = Path(spec.origin).resolve().parent / "data"
    prf = data / "psf" / "nirspec_merged_s200a1_exp_psf_lookup_001.fits"
    return {
        "msaexp_data_dir": str(data),
        "lookup_prf_file": str(prf) if prf.is_file() else None,
    }


def cmd_data_dir(args):
    """Paths of msaexp's data files (see :func:`_data_paths`)."""
    out = _header("data_dir", [], 0.0)
    out.update(_data_paths())
    return out


def cmd_read_spectrum(args):
    """What msaexp's spectrum readers make of each file."""
    t0 = time.perf_counter()
    import msaexp.spectrum as mspec

    import_s = time.perf_counter() - t0
    out = _header("read_spectrum", args.files, import_s)
    results = []
    for path in args.files:
        sampler = mspec.SpectrumSampler(str(path))
        spec = sampler.spec
        table = mspec.read_spectrum(str(path))

        def as_list(column):
            values = [float(v) for v in getattr(column, "value", column)]
            return [v if math.isfinite(v) else None for v in values]

        results.append(
            {
                "file": str(Path(path).name),
                "sampler_columns": list(spec.colnames),
                "read_spectrum_columns": list(table.colnames),
                "units": {c: str(spec[c].unit) for c in ("wave", "flux", "err")},
                "wave": as_list(spec["wave"]),
                "flux": as_list(spec["flux"]),
                "err": as_list(spec["err"]),
                "valid_column": [bool(v) for v in spec["valid"]],
                "sampler_valid": [bool(v) for v in sampler.valid],
                "read_spectrum_flux": as_list(table["flux"]),
            }
        )
    out["spectra"] = results
    return out


# --------------------------------------------------------------------------------------
def _parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="subcommand", required=True)

    def common(sp, repeat):
        sp.add_argument("files", nargs="+", help="SlitModel '*_phot.*.fits' files")
        sp.add_argument("--repeat", type=int, default=repeat, help="timed repetitions")

    sp = sub.add_parser("slitgroup", help="time SlitGroup construction and report numbers")
    common(sp, 5)
    sp.add_argument("--opts", default=None, help="JSON dict of SlitGroup keyword arguments")
    sp.add_argument("--name", default=None, help="group name (default: msaexp's group key)")
    sp.add_argument(
        "--variants",
        default="default,nobar_nosky",
        help=f"comma-separated named option sets, from {list(SLITGROUP_VARIANTS)}",
    )
    sp.set_defaults(func=cmd_slitgroup)

    sp = sub.add_parser("fit_all_traces", help="time SlitGroup.fit_all_traces")
    common(sp, 3)
    sp.add_argument(
        "--preset",
        choices=["default", "extract"],
        default="default",
        help="default: SlitGroup and fit_all_traces defaults; extract: the SlitGroup and "
        "fit_all_traces arguments (and global lookup PRF) that extract_spectra uses",
    )
    sp.add_argument("--niter", type=int, default=None, help="default 3 (preset extract: 4)")
    sp.add_argument("--opts", default=None, help="JSON dict of SlitGroup keyword arguments")
    sp.add_argument(
        "--fit-kwargs", default=None, help="JSON dict of extra fit_all_traces keyword arguments"
    )
    sp.add_argument(
        "--lookup-prf",
        action="store_true",
        help="set msaexp's global LOOKUP_PRF (as extract_spectra does) "
        "instead of the default pixel-integrated Gaussian",
    )
    sp.add_argument("--name", default=None)
    sp.set_defaults(func=cmd_fit_all_traces)

    sp = sub.add_parser("extract", help="time extract_spectra end to end")
    common(sp, 1)
    sp.add_argument("--outdir", default=None, help="output directory (default: a temp dir)")
    sp.add_argument("--keep", action="store_true", help="keep the temporary output dir")
    sp.add_argument("--target", default="1345_933")
    sp.add_argument("--root", default="nirspec")
    sp.add_argument(
        "--kwargs", default=None, help="JSON dict of extra extract_spectra keyword arguments"
    )
    sp.add_argument("--arrays", action="store_true", help="report every SPEC1D column as a list")
    sp.add_argument(
        "--traces",
        action="store_true",
        help="run with get_xobj=True and report the trace row, wavelength and bar shadow "
        "at the trace of every exposure",
    )
    sp.set_defaults(func=cmd_extract)

    sp = sub.add_parser("data_dir", help="where msaexp keeps its data files")
    sp.set_defaults(func=cmd_data_dir, files=[], repeat=1)

    sp = sub.add_parser("read_spectrum", help="read 1D spectrum files with msaexp's readers")
    common(sp, 1)
    sp.set_defaults(func=cmd_read_spectrum)
    return p


def main(argv=None):
    args = _parser().parse_args(argv)
    if args.repeat < 1:
        raise SystemExit("--repeat must be >= 1")
    missing = [f for f in args.files if not Path(f).is_file()]
    if missing:
        raise SystemExit(f"input file(s) not found: {missing}")
    _isolate_stdout()
    result = args.func(args)
    _emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
