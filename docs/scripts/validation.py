"""Injection-recovery validation on simulations, and the benchmark against msaexp.

Usage (from the repository root)::

    python docs/scripts/validation.py                  # both parts (~30-40 min on 2 cores)
    python docs/scripts/validation.py --part injection --seeds 2
    python docs/scripts/validation.py --part injection --only G395M --seeds 1 --out /tmp/v
    python docs/scripts/validation.py --part benchmark
    python docs/scripts/validation.py --part plot       # redraw from injection_runs.ecsv

Writes into ``docs/_static/validation/`` (included by ``docs/validation.rst``):

``injection_runs.ecsv``
    One row per analysed simulation: study, configuration, PSF of the data and of the
    analysis, requested S/N, seed, the drawn source position and width, and every
    measured quantity (definitions below).
``injection_summary.csv``
    Point and compact sources, extended sources and the wrong-PSF case: the seeds
    combined per configuration, PSF and S/N (see below), with the targets.
``noise_summary.csv``
    Noise honesty: the pull scatter with the default error rescaling and without it, for
    data whose noise is exactly the written variances and 1.25x larger.
``flux_vs_position.png``
    Continuum flux/truth against the source position in the shutter (MSA runs), one
    panel per PSF.
``flux_vs_width.png``
    Continuum flux/truth against the error of the fitted intrinsic width (MSA runs).
``validation.png``
    Flux/truth, pull scatter, trace error and cosmic-ray rejection against S/N.
``ceers_1345_933_summary.png``
    The summary figure of the CEERS product (rectified 2D spectrum, optimal and boxcar
    1D spectra, profile), as ``slitcombine extract`` writes it.
``benchmark.csv``
    slitcombine measured now on the CEERS trio, msaexp from
    ``benchmarks/results/msaexp-*-ceers.json`` (written by
    ``benchmarks/record_msaexp_reference.py``), and their ratio.  Skipped, with a
    message, when the CEERS data are not available.
``environment.json``
    Versions, machine and date of the run, the simulation settings.

Injection-recovery
------------------
Every run simulates a nodded observation with
:func:`slitcombine.testing.simulate.simulate_observation`
(20 cosmic-ray events per exposure, not flagged; 5 hot and 5 dead pixels, flagged) and
combines it with the **default options** (``SlitGroup(files, name)``, ``combine_group``
with ``trace_kwargs={'ref_exp': 'auto'}``; ``source_type='auto'``, the noise scale
measured and applied).  The data's PSF is the default winged one (``optics_model='airy'``:
obscured Airy telescope PSF and post-MSA kernel with wings) or a Gaussian without wings
(``'gaussian'``); Gaussian data are analysed with the matching optics model given as
``lookup_prf=OpticsModel(telescope='gaussian', kernel_wing_fraction=0.0)``, and, for one
configuration, also with the default (winged) model: the systematic of a wrong PSF model.

Studies (``study`` column):

``compact``
    Every configuration of :data:`CONFIGS` at S/N 3, 10 and 30 (continuum S/N per column
    in one exposure, the simulator's ``snr``), both PSFs; the source drawn at random in
    ``source_ypos`` [-0.4, 0.4] shutter heights (0 = shutter centre, +-0.5 = the bar
    edges; fixed slit: [-0.04, 0.04] slit lengths), ``source_xpos`` [-0.3, 0.3] shutter
    widths and ``intrinsic_sigma`` [0, 1] px (point to compact).  The same draws for both
    PSFs.
``extended``
    PRISM and G395M 3-shutter slitlets, ``intrinsic_sigma`` [2, 4] px (a Gaussian as wide as
    the shutter: the simulator has no uniform source), same positions, S/N 10 and 30.
``noise``
    PRISM and G395M 3-shutter slitlets, point/compact sources as above, S/N 3, 30 and 300,
    ``excess_noise`` 1.0 (the noise is what the variances say) and 1.25 (25% more, half
    of the extra variance correlated along the rows); combined with the defaults and
    again with ``rescale_variance=False``.
``wrong_psf``
    The Gaussian-PSF data of :data:`MISMATCH_CONFIG` analysed with the default winged
    model.

Per run, over the **continuum bins** (valid, error > 0, truth > 20% of its median, more
than 2 bins from any bin where the truth departs from the continuum by > 1%, i.e. away
from the emission lines, and redward of 1.1x the Lyman break), with ``f`` the optimal
flux, ``e`` its error and ``t`` the truth interpolated (in the truth's ``wave`` column,
the WCS wavelength per detector column) at the bin's mean pixel wavelength
``wave_eff``:

* ``median_ratio``: median of ``f / t``; ``median_ratio_err`` its statistical 1-sigma
  (``1.2533 * 1.4826 MAD / sqrt(n)``);
* ``flux_bias``: ``sum(w (f - t)) / sum(w t)`` with ``w = 1/e**2``, the fractional error
  of the inverse-variance weighted flux; ``flux_bias_err = sqrt(sum(w)) / sum(w t)`` its
  statistical 1-sigma;
* ``pull_std`` and ``pull_nmad``: standard deviation (about the mean) and normalised
  median absolute deviation of ``(f - t) / e`` (1 = calibrated errors); ``pull_mean``
  its mean (a flux offset in units of the errors, which the std leaves out);
  ``pull_std_raw``: the std without the rescaling of the errors (``noise`` study only);
* ``source_type_used`` (``result.params``), ``noise_scale`` (the measured noise /
  propagated sigma, ``result.params['noise_scale']['scale']``) and ``err_scale`` (median
  of the factor applied to the errors, SPEC1D column ``err_scale``);
* ``trace_err`` and ``trace_rms``: median and RMS over the columns with signal of the
  fitted trace row minus the true source row (exposure 1), pixels;
* ``sigma_err``: fitted minus true intrinsic width, pixels; ``trace_accepted``: whether
  the trace fit was applied (below the detection threshold the nominal trace is kept);
* ``cr_pixels``, ``cr_rejected``: injected cosmic-ray pixels on otherwise valid pixels,
  and how many of them the outlier steps rejected; ``false_rejected``: other valid
  pixels the outlier steps rejected, as a fraction of the valid pixels.

The summary combines the seeds of a configuration, PSF and S/N: ``flux/truth`` is the
mean of the runs' ``median_ratio`` with its 1-sigma (``+-``, from the runs'
``median_ratio_err``) and their range; ``flux bias`` the inverse-variance mean of the
runs' ``flux_bias`` with its 1-sigma; ``pull std`` and ``pull NMAD`` the means over the
runs; the noise scale and the trace error the medians; the cosmic-ray pixels the sums.
Targets (issues 15 and 16): median
continuum flux/truth within 1% of 1 at S/N >= 10 and within 3% at S/N 3, pull std
0.95-1.10; noise study: pull std 0.95-1.05 with the defaults.

All numbers in the docs are produced by this script; re-run it after changing the code.
The timings depend on the machine (2 shared cores here): they are noisy.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
from _common import (
    REPO,
    STATIC,
    environment,
    new_figure,
    save_png,
    say,
    shared_data,
    shown,
    write_json,
)
from astropy.table import Table

from slitcombine import SlitGroup
from slitcombine.core.geometry import normalized_x
from slitcombine.core.masks import Reject
from slitcombine.core.optics import OpticsModel
from slitcombine.pipeline.combine import combine, combine_group
from slitcombine.testing.simulate import simulate_observation

OUT = STATIC / "validation"

#: Point/compact-source configurations: label -> options of simulate_observation.
#: The H gratings are cut to their first 800 columns (``nx``) to keep the run short.
CONFIGS = {
    "PRISM 3-shutter, 3 nods": {"grating": "PRISM", "n_shutters": 3},
    "PRISM 2-shutter, 2 nods": {"grating": "PRISM", "n_shutters": 2, "n_nods": 2},
    "PRISM 5-shutter, 5 nods": {
        "grating": "PRISM",
        "n_shutters": 5,
        "n_nods": 5,
        "nod_offsets": [0.0, 1.0, -1.0, 2.0, -2.0],
    },
    "G140M 3-shutter, 3 nods": {"grating": "G140M", "n_shutters": 3},
    "G235M 3-shutter, 3 nods": {"grating": "G235M", "n_shutters": 3},
    "G395M 3-shutter, 3 nods": {"grating": "G395M", "n_shutters": 3},
    "G140H 3-shutter, 3 nods (nx 800)": {"grating": "G140H", "n_shutters": 3, "nx": 800},
    "G235H 3-shutter, 3 nods (nx 800)": {"grating": "G235H", "n_shutters": 3, "nx": 800},
    "G395H 3-shutter, 3 nods (nx 800)": {"grating": "G395H", "n_shutters": 3, "nx": 800},
    "PRISM fixed slit S200A1, 3 nods": {"grating": "PRISM", "fixed_slit": "S200A1"},
}
SNRS = (3.0, 10.0, 30.0)
#: PSF of the simulated data; the analysis uses the matching optics model.
PSFS = ("airy", "gaussian")
#: Extended sources: label -> simulate_observation options, at these S/N.
EXTENDED = {
    "PRISM 3-shutter, 3 nods, extended": {"grating": "PRISM", "n_shutters": 3},
    "G395M 3-shutter, 3 nods, extended": {"grating": "G395M", "n_shutters": 3},
}
EXTENDED_SNRS = (10.0, 30.0)
EXTENDED_SIGMA = (2.0, 4.0)
COMPACT_SIGMA = (0.0, 1.0)
#: Noise honesty: label -> options, S/N and injected noise / written sigma.
NOISE = {
    "PRISM 3-shutter, 3 nods": {"grating": "PRISM", "n_shutters": 3},
    "G395M 3-shutter, 3 nods": {"grating": "G395M", "n_shutters": 3},
}
NOISE_SNRS = (3.0, 30.0, 300.0)
EXCESS_NOISE = (1.0, 1.25)
#: The configuration whose Gaussian-PSF data are also analysed with the winged model.
MISMATCH_CONFIG = "PRISM 3-shutter, 3 nods"
YPOS_RANGE = (-0.4, 0.4)
XPOS_RANGE = (-0.3, 0.3)
#: Fixed slits: source_ypos in slit lengths (0.04 x 3.2 arcsec = 1.2 px).
FS_YPOS_RANGE = (-0.04, 0.04)
FLUX_TARGET = {3.0: 0.03}  # |flux/truth - 1| allowed at S/N 3; 0.01 at S/N >= 10
PULL_TARGET = (0.95, 1.10)
NOISE_PULL_TARGET = (0.95, 1.05)
GAUSSIAN_OPTICS = OpticsModel(telescope="gaussian", kernel_wing_fraction=0.0)
N_CRS = 20
OUTLIER_BITS = np.uint32(
    Reject.HOT_COLD
    | Reject.PERCENTILE
    | Reject.TRACE
    | Reject.PROFILE
    | Reject.OUTLIER_2D
    | Reject.MULTIPLE
    | Reject.SKY
)


# ------------------------------------------------------------------ injection-recovery
def _continuum_bins(spec, truth):
    """Truth at ``wave_eff`` and the continuum bins (see the module docstring)."""
    wave = np.asarray(spec["wave"].value, float)
    weff = np.asarray(spec["wave_eff"].value, float)
    w = np.where(np.isfinite(weff), weff, wave)
    tw = np.asarray(truth["wave"], float)
    order = np.argsort(tw)
    t = np.interp(w, tw[order], np.asarray(truth["flux"], float)[order])
    c = np.interp(w, tw[order], np.asarray(truth["flux_continuum"], float)[order])
    e = np.asarray(spec["err"].value, float)
    f = np.asarray(spec["flux"].value, float)
    with np.errstate(invalid="ignore", divide="ignore"):
        line = ~(np.abs(t - c) <= 0.01 * np.abs(c))
    line = np.convolve(line.astype(float), np.ones(5), mode="same") > 0
    lyman = 0.121567 * (1.0 + float(truth.meta["redshift"]))
    with np.errstate(invalid="ignore"):
        use = (
            np.asarray(spec["valid"], bool)
            & np.isfinite(f)
            & np.isfinite(e)
            & (e > 0)
            & ~line
            & (t > 0.2 * np.median(t[t > 0]))
            & (w > 1.1 * lyman)
        )
    return f, e, t, use


def _flux_metrics(spec, truth):
    f, e, t, use = _continuum_bins(spec, truth)
    f, e, t = f[use], e[use], t[use]
    n = int(use.sum())
    if n < 10:
        return {"n_bins": n}
    w = 1.0 / e**2
    ratio = f / t
    pull = (f - t) / e
    mad = float(np.median(np.abs(ratio - np.median(ratio))))
    return {
        "n_bins": n,
        "median_ratio": float(np.median(ratio)),
        "median_ratio_err": 1.2533 * 1.4826 * mad / np.sqrt(n),
        "flux_bias": float(np.sum(w * (f - t)) / np.sum(w * t)),
        "flux_bias_err": float(np.sqrt(np.sum(w)) / np.sum(w * t)),
        "pull_mean": float(np.mean(pull)),
        "pull_std": float(np.std(pull)),
        "pull_nmad": 1.4826 * float(np.median(np.abs(pull - np.median(pull)))),
    }


def _trace_metrics(g, truth, intrinsic_sigma):
    """Fitted trace row and width of exposure 1 against the truth."""
    ny, nx = g.sh
    sl = g.slices[0]
    xn = normalized_x(g.xtr[0], nx)
    fitted = np.polyval(g.base_coeffs[0], xn) + np.polyval(g.trace_coeffs[0], xn)
    cols = np.arange(nx) + sl[1].start  # cutout columns of the common slice
    tx = np.asarray(truth["x"], int)
    true_row = np.full(nx, np.nan)
    trace = np.asarray(truth["trace"], float)
    trace0 = trace[:, 0] if trace.ndim == 2 else trace
    inside = np.isin(tx, cols)
    true_row[np.searchsorted(cols, tx[inside])] = trace0[inside] - sl[0].start
    snr = np.asarray(truth["snr_column"], float)
    s = np.full(nx, np.nan)
    s[np.searchsorted(cols, tx[inside])] = snr[inside]
    good = np.isfinite(true_row) & np.isfinite(fitted) & (s > 1)
    d = fitted[good] - true_row[good]
    fit = g.meta["steps"].get("trace_fit", {})
    sig = [v for v in fit.get("sigma_px", {}).values()]
    return {
        "trace_err": float(np.median(d)) if d.size else np.nan,
        "trace_rms": float(np.sqrt(np.mean(d**2))) if d.size else np.nan,
        "sigma_fit": float(np.median(sig)) if sig else np.nan,
        "sigma_err": float(np.median(sig)) - intrinsic_sigma if sig else np.nan,
        "trace_accepted": bool(any(fit.get("accepted", {}).values())),
    }


def _cr_metrics(g, crs):
    ny, nx = g.sh
    is_cr = np.zeros(g.reject.shape, bool)
    for row in crs:
        i, r, c = int(row["index"]), int(row["row"]), int(row["col"])
        rr, cc = r - g.slices[i][0].start, c - g.slices[i][1].start
        if 0 <= rr < ny and 0 <= cc < nx:
            is_cr[i, rr * nx + cc] = True
    other = (g.reject & ~OUTLIER_BITS) > 0
    flagged = (g.reject & OUTLIER_BITS) > 0
    candidates = is_cr & ~other
    valid_non_cr = ~other & ~is_cr
    return {
        "cr_pixels": int(candidates.sum()),
        "cr_rejected": int((candidates & flagged).sum()),
        "false_rejected": float((valid_non_cr & flagged).sum() / max(valid_non_cr.sum(), 1)),
    }


def _analyse(files, model, **extract_options):
    """Combine with the defaults (optionally another optics model); (group, result, s)."""
    t0 = time.perf_counter()
    kw = {} if model is None else {"lookup_prf": model}
    g = SlitGroup(files, "validation", **kw)
    r = combine_group(g, trace_kwargs={"ref_exp": "auto"}, **extract_options)
    return g, r, time.perf_counter() - t0


def _result_row(base, g, r, sim, sigma, elapsed, with_crs=True):
    row = dict(base)
    noise = r.params.get("noise_scale") or {}
    row.update(
        {
            "source_type_used": str(r.params.get("source_type_used", "")),
            "noise_scale": float(noise.get("scale") or np.nan),
            "err_scale": float(np.median(np.asarray(r.spec["err_scale"], float))),
        }
    )
    row.update(_flux_metrics(r.spec, sim.truth))
    row.update(_trace_metrics(g, sim.truth, sigma))
    if with_crs:
        row.update(_cr_metrics(g, sim.sources[0].cosmic_rays))
    row["combine_s"] = elapsed
    return row


def _draw(label, snr, seed, sigma_range, fixed_slit):
    """Source position and width: the same draws for both PSFs (paired comparison)."""
    rng = np.random.default_rng([zlib.crc32(label.encode()), int(round(snr)), seed])
    yr = FS_YPOS_RANGE if fixed_slit else YPOS_RANGE
    return (
        float(rng.uniform(*yr)),
        float(rng.uniform(*XPOS_RANGE)),
        float(rng.uniform(*sigma_range)),
    )


def one_run(task, workdir):
    """Simulate one task, combine it with the defaults, compare with the truth.

    Returns a list of rows (two for the wrong-PSF and noise cases' extra analyses).
    """
    study, label, opts, snr, psf, seed, excess = task
    sigma_range = EXTENDED_SIGMA if study == "extended" else COMPACT_SIGMA
    ypos, xpos, sigma = _draw(label, snr, seed, sigma_range, "fixed_slit" in opts)
    sim_seed = 1 + (zlib.crc32(f"{study}{label}{snr}{seed}{excess}".encode()) % 100000)
    sim_opts = dict(
        opts,
        snr=snr,
        seed=sim_seed,
        source_ypos=ypos,
        source_xpos=xpos,
        intrinsic_sigma=sigma,
        n_crs=N_CRS,
        optics_model=psf,
        excess_noise=excess,
    )
    t0 = time.perf_counter()
    sim = simulate_observation(Path(workdir), **sim_opts)
    t_sim = time.perf_counter() - t0
    base = {
        "study": study,
        "config": label,
        "grating": opts["grating"],
        "fixed_slit": "fixed_slit" in opts,
        "psf_data": psf,
        "psf_model": psf,
        "snr": snr,
        "excess_noise": excess,
        "seed": seed,
        "sim_seed": sim_seed,
        "source_ypos": ypos,
        "source_xpos": xpos,
        "intrinsic_sigma": sigma,
        "simulate_s": t_sim,
    }
    model = GAUSSIAN_OPTICS if psf == "gaussian" else None
    g, r, t = _analyse(sim.files, model)
    row = _result_row(base, g, r, sim, sigma, t)
    rows = [row]
    if study == "noise":
        _, raw, _ = _analyse(sim.files, model, rescale_variance=False)
        m = _flux_metrics(raw.spec, sim.truth)
        row["pull_std_raw"] = m.get("pull_std", np.nan)
        row["pull_nmad_raw"] = m.get("pull_nmad", np.nan)
    if study == "compact" and psf == "gaussian" and label == MISMATCH_CONFIG:
        g2, r2, t2 = _analyse(sim.files, None)
        wrong = dict(base, study="wrong_psf", psf_model="airy")
        rows.append(_result_row(wrong, g2, r2, sim, sigma, t2))
    return rows


def tasks(seeds, only=None):
    """Every simulation of the run: (study, label, options, S/N, PSF, seed, excess_noise)."""
    out = []
    for label, opts in CONFIGS.items():
        for snr in SNRS:
            for psf in PSFS:
                for seed in range(1, seeds + 1):
                    out.append(("compact", label, opts, snr, psf, seed, 1.0))
    for label, opts in EXTENDED.items():
        for snr in EXTENDED_SNRS:
            for psf in PSFS:
                for seed in range(1, seeds + 1):
                    out.append(("extended", label, opts, snr, psf, seed, 1.0))
    for label, opts in NOISE.items():
        for snr in NOISE_SNRS:
            for excess in EXCESS_NOISE:
                for seed in range(1, seeds + 1):
                    out.append(("noise", label, opts, snr, "airy", seed, excess))
    if only:
        out = [t for t in out if only.lower() in f"{t[0]} {t[1]}".lower()]
    return out


def _fill_missing(rows):
    """Give every row every column (NaN/'' where a study does not measure it)."""
    keys = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    out = []
    for row in rows:
        full = {}
        for k in keys:
            if k in row:
                full[k] = row[k]
            else:
                example = next(r[k] for r in rows if k in r)
                full[k] = "" if isinstance(example, str) else np.nan
                if isinstance(example, (bool, np.bool_)):
                    full[k] = False
                elif isinstance(example, (int, np.integer)) and not isinstance(example, bool):
                    full[k] = -1
        out.append(full)
    return out


def run_injection(seeds, only=None):
    todo = tasks(seeds, only)
    rows = []
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for k, task in enumerate(todo):
            for row in one_run(task, Path(tmp) / f"{k}"):
                rows.append(row)
                say(
                    f"[{k + 1}/{len(todo)} {time.perf_counter() - t_start:6.0f} s] "
                    f"{row['study']:9s} {row['config']:34s} {row['psf_data']}/"
                    f"{row['psf_model']:8s} S/N {row['snr']:3.0f} x{row['excess_noise']:.2f} "
                    f"seed {row['seed']} y {row['source_ypos']:+.2f} x {row['source_xpos']:+.2f} "
                    f"sig {row['intrinsic_sigma']:.1f}: f/t {row.get('median_ratio', np.nan):.4f} "
                    f"pull {row.get('pull_std', np.nan):.2f} noise {row['noise_scale']:.3f} "
                    f"{row['source_type_used']} trace {row['trace_err']:+.3f} px"
                )
    return Table(rows=_fill_missing(rows))


def _flux_tolerance(snr):
    return FLUX_TARGET.get(float(snr), 0.01)


def _psf_label(psf_data, psf_model):
    name = {"airy": "winged", "gaussian": "Gaussian"}
    if psf_data == psf_model:
        return name[psf_data]
    return f"{name[psf_data]} data, {name[psf_model]} model"


def _verdict(ratio, pull, snr, pull_range):
    misses = []
    if not abs(ratio - 1.0) <= _flux_tolerance(snr):
        misses.append("flux")
    if not pull_range[0] <= pull <= pull_range[1]:
        misses.append("pull std")
    return "yes" if not misses else "no: " + ", ".join(misses)


def _groups(runs, study):
    """(label, psf_data, psf_model, snr) groups of a study, in the order of the run."""
    t = runs[runs["study"] == study]
    seen = []
    for row in t:
        key = (str(row["config"]), str(row["psf_data"]), str(row["psf_model"]), float(row["snr"]))
        if key not in seen:
            seen.append(key)
    return t, seen


def _stats(s):
    """Combine the runs of one group: mean of the per-run median flux/truth with its
    propagated 1-sigma, inverse-variance mean of the flux bias with its 1-sigma, mean
    pull std."""
    r = np.asarray(s["median_ratio"], float)
    re = np.asarray(s["median_ratio_err"], float)
    w = 1.0 / np.asarray(s["flux_bias_err"], float) ** 2
    return {
        "ratio": float(np.mean(r)),
        "ratio_err": float(np.sqrt(np.sum(re**2)) / r.size),
        "ratio_min": float(np.min(r)),
        "ratio_max": float(np.max(r)),
        "bias": float(np.sum(w * np.asarray(s["flux_bias"], float)) / np.sum(w)),
        "bias_err": float(1.0 / np.sqrt(np.sum(w))),
        "pull": float(np.mean(s["pull_std"])),
    }


def summarise(runs):
    """The target table: point/compact, extended and wrong-PSF runs."""
    out = []
    for study in ("compact", "extended", "wrong_psf"):
        t, keys = _groups(runs, study)
        order = {p: i for i, p in enumerate(PSFS)}
        keys.sort(key=lambda k: (list(dict.fromkeys(t["config"])).index(k[0]), order[k[1]], k[3]))
        for label, pd_, pm, snr in keys:
            s = t[
                (t["config"] == label)
                & (t["psf_data"] == pd_)
                & (t["psf_model"] == pm)
                & (t["snr"] == snr)
            ]
            st = _stats(s)
            kinds = sorted(set(str(v) for v in s["source_type_used"]))
            note = {"extended": " (extended)", "wrong_psf": " (wrong PSF model)"}.get(study, "")
            crs = study != "wrong_psf"
            out.append(
                {
                    "configuration": label.replace(", extended", "") + note,
                    "PSF": _psf_label(pd_, pm),
                    "S/N": f"{snr:g}",
                    "runs": len(s),
                    "flux/truth": f"{st['ratio']:.4f}",
                    "+-": f"{st['ratio_err']:.4f}",
                    "runs' range": f"{st['ratio_min']:.3f}-{st['ratio_max']:.3f}",
                    "flux bias (%)": f"{100 * st['bias']:+.2f} +- {100 * st['bias_err']:.2f}",
                    "pull std": f"{st['pull']:.3f}",
                    "pull NMAD": f"{np.mean(s['pull_nmad']):.3f}",
                    "noise scale": f"{np.median(s['noise_scale']):.3f}",
                    "source type": "/".join(kinds),
                    "trace error (px)": f"{np.median(s['trace_err']):+.3f}",
                    "CR rejected": f"{int(np.sum(s['cr_rejected']))}/{int(np.sum(s['cr_pixels']))}"
                    if crs
                    else "",
                    "false rej. (%)": f"{100 * np.median(s['false_rejected']):.2f}" if crs else "",
                    "target met": _verdict(st["ratio"], st["pull"], snr, PULL_TARGET),
                }
            )
    return Table(rows=out)


def summarise_noise(runs):
    """The noise-honesty table."""
    t = runs[runs["study"] == "noise"]
    out = []
    for label in NOISE:
        for snr in NOISE_SNRS:
            for excess in EXCESS_NOISE:
                s = t[(t["config"] == label) & (t["snr"] == snr) & (t["excess_noise"] == excess)]
                if len(s) == 0:
                    continue
                st = _stats(s)
                pull = st["pull"]
                lo, hi = NOISE_PULL_TARGET
                out.append(
                    {
                        "configuration": label,
                        "S/N": f"{snr:g}",
                        "injected noise / written sigma": f"{excess:g}",
                        "runs": len(s),
                        "measured noise scale": f"{np.median(s['noise_scale']):.3f}",
                        "pull std (defaults)": f"{pull:.3f}",
                        "pull NMAD (defaults)": f"{np.mean(s['pull_nmad']):.3f}",
                        "pull mean (defaults)": f"{np.mean(s['pull_mean']):+.2f}",
                        "pull std (rescale_variance=False)": f"{np.mean(s['pull_std_raw']):.3f}",
                        "flux/truth": f"{st['ratio']:.4f} +- {st['ratio_err']:.4f}",
                        "target met": "yes" if lo <= pull <= hi else "no",
                    }
                )
    return Table(rows=out)


SNR_COLOURS = {3.0: "tab:orange", 10.0: "tab:green", 30.0: "tab:blue"}


def plot_position(runs):
    """Continuum flux/truth against the source position in the shutter (MSA runs)."""
    fig = new_figure((8.0, 3.9))
    axes = fig.subplots(1, 2, sharey=True)
    t = runs[(runs["study"] == "compact") & ~np.asarray(runs["fixed_slit"], bool)]
    markers = {"PRISM": "o", "M": "s", "H": "^"}
    for ax, psf in zip(axes, PSFS, strict=True):
        s = t[t["psf_data"] == psf]
        ax.axvspan(-0.7, -0.5, color="0.85", lw=0)
        ax.axvspan(0.5, 0.7, color="0.85", lw=0)
        ax.axhspan(0.99, 1.01, color="tab:green", alpha=0.12, lw=0)
        for v in (0.97, 1.03):
            ax.axhline(v, color="tab:orange", lw=0.6, ls="--")
        ax.axhline(1.0, color="k", lw=0.6)
        for snr, colour in SNR_COLOURS.items():
            for fam, marker in markers.items():
                g = np.asarray(
                    [
                        (str(gr) == "PRISM") if fam == "PRISM" else str(gr).endswith(fam)
                        for gr in s["grating"]
                    ],
                    bool,
                )
                sel = (np.asarray(s["snr"]) == snr) & g
                if not sel.any():
                    continue
                ax.errorbar(
                    s["source_ypos"][sel],
                    s["median_ratio"][sel],
                    yerr=s["median_ratio_err"][sel],
                    marker=marker,
                    ms=3.5,
                    ls="none",
                    elinewidth=0.5,
                    color=colour,
                    alpha=0.75,
                    label=f"S/N {snr:g}, {fam if fam == 'PRISM' else fam + ' gratings'}",
                )
        ax.set_xlim(-0.6, 0.6)
        ax.set_ylim(0.93, 1.07)
        ax.set_xlabel("source_ypos (shutter heights; bars beyond +-0.5)", fontsize=8)
        title = {"airy": "winged PSF (default model)", "gaussian": "Gaussian PSF (matching model)"}
        ax.set_title(title[psf], fontsize=9)
        ax.tick_params(labelsize=7)
    axes[0].set_ylabel("median continuum flux / truth", fontsize=8)
    handles = {}
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(lab, h)
    fig.legend(handles.values(), handles.keys(), fontsize=6, ncol=3, loc="outside lower center")
    return fig


def plot_width(runs):
    """Continuum flux/truth against the error of the fitted intrinsic width (MSA runs)."""
    fig = new_figure((8.0, 3.2))
    axes = fig.subplots(1, 2, sharey=True)
    studies = (("compact", "point and compact sources"), ("extended", "extended sources"))
    for ax, (study, title) in zip(axes, studies, strict=True):
        t = runs[(runs["study"] == study) & ~np.asarray(runs["fixed_slit"], bool)]
        ax.axhspan(0.99, 1.01, color="tab:green", alpha=0.12, lw=0)
        ax.axhline(1.0, color="k", lw=0.6)
        ax.axvline(0.0, color="k", lw=0.6)
        for snr, colour in SNR_COLOURS.items():
            for psf, mfc in (("airy", colour), ("gaussian", "none")):
                sel = (np.asarray(t["snr"]) == snr) & (np.asarray(t["psf_data"]) == psf)
                if not sel.any():
                    continue
                ax.plot(
                    np.asarray(t["sigma_fit"] - t["intrinsic_sigma"])[sel],
                    np.asarray(t["median_ratio"])[sel],
                    "o",
                    ms=3,
                    color=colour,
                    mfc=mfc,
                    alpha=0.75,
                    label=f"S/N {snr:g}, {'winged' if psf == 'airy' else 'Gaussian'} PSF",
                )
        ax.set_xlabel("fitted - true intrinsic width (pixels)", fontsize=8)
        ax.set_title(title, fontsize=9)
        ax.set_ylim(0.75, 1.25)
        ax.tick_params(labelsize=7)
    axes[0].set_ylabel("median continuum flux / truth", fontsize=8)
    handles = {}
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(lab, h)
    fig.legend(handles.values(), handles.keys(), fontsize=6, ncol=3, loc="outside lower center")
    return fig


def plot_injection(runs):
    """Flux/truth, pull std, trace error and CR rejection against S/N per configuration."""
    from matplotlib.ticker import NullFormatter, NullLocator

    fig = new_figure((8.0, 6.0))
    axes = fig.subplots(2, 2, sharex=True)
    t = runs[runs["study"] == "compact"]
    labels = list(CONFIGS)
    cmap = __import__("matplotlib").colormaps["tab10"]
    for k, label in enumerate(labels):
        for psf in PSFS:
            s = t[(t["config"] == label) & (t["psf_data"] == psf)]
            if len(s) == 0:
                continue
            jitter = np.asarray(s["snr"], float) * (1 + 0.025 * (k - 4.5))
            kw = {
                "marker": "o" if psf == "airy" else "s",
                "ls": "none",
                "ms": 3,
                "color": cmap(k % 10),
                "mfc": cmap(k % 10) if psf == "airy" else "none",
                "alpha": 0.8,
            }
            lab = {"label": label} if psf == "airy" else {}
            axes[0, 0].plot(jitter, 100 * (np.asarray(s["median_ratio"]) - 1), **kw, **lab)
            axes[0, 1].plot(jitter, s["pull_std"], **kw)
            axes[1, 0].plot(jitter, s["trace_err"], **kw)
            with np.errstate(invalid="ignore", divide="ignore"):
                frac = np.asarray(s["cr_rejected"], float) / np.asarray(s["cr_pixels"], float)
            axes[1, 1].plot(jitter, 100 * frac, **kw)
    axes[0, 0].axhline(0, color="k", lw=0.6)
    axes[0, 0].set_ylabel("median continuum flux / truth - 1 (%)", fontsize=8)
    axes[0, 1].axhspan(*PULL_TARGET, color="tab:green", alpha=0.12, lw=0)
    axes[0, 1].set_ylabel("std((flux - truth) / err)", fontsize=8)
    axes[1, 0].axhline(0, color="k", lw=0.6)
    axes[1, 0].set_ylabel("trace error (pixels)", fontsize=8)
    axes[1, 1].set_ylabel("cosmic-ray pixels rejected (%)", fontsize=8)
    for ax in axes.ravel():
        ax.set_xscale("log")
        ax.set_xticks(list(SNRS), [f"{v:g}" for v in SNRS])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.tick_params(labelsize=7)
    for ax in axes[1]:
        ax.set_xlabel("continuum S/N per column, one exposure", fontsize=8)
    fig.legend(fontsize=6, loc="outside lower center", ncol=4)
    axes[0, 0].set_title("filled: winged PSF; open: Gaussian PSF", fontsize=7)
    return fig


def _code_state():
    """The code that runs: the package's folder, the repository's commit, and the package
    files that differ from that commit (others' uncommitted edits, or a copy of another
    commit)."""
    import subprocess

    import slitcombine

    def git(*cmd):
        return subprocess.run(["git", *cmd], cwd=REPO, capture_output=True, check=False).stdout

    pkg = Path(slitcombine.__file__).resolve().parent
    differ = []
    for path in sorted(pkg.rglob("*.py")):
        rel = f"src/slitcombine/{path.relative_to(pkg).as_posix()}"
        if git("show", f"HEAD:{rel}") != path.read_bytes():
            differ.append(rel)
    return {
        "package_path": str(pkg),
        "repository_commit": git("rev-parse", "HEAD").decode().strip(),
        "package_files_differing_from_commit": differ,
    }


def write_injection_products(runs, out):
    """The summaries and figures of the injection-recovery runs, into folder ``out``."""
    write_csv(summarise(runs), out / "injection_summary.csv")
    if np.any(runs["study"] == "noise"):
        write_csv(summarise_noise(runs), out / "noise_summary.csv")
    save_png(plot_position(runs), out / "flux_vs_position.png", dpi=90)
    save_png(plot_width(runs), out / "flux_vs_width.png", dpi=90)
    save_png(plot_injection(runs), out / "validation.png", dpi=80)


# ------------------------------------------------------------------ benchmark
def _timed(fn, repeat):
    times, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return times, out


def _line_sn(spec, centre, half=0.05):
    w = np.asarray(spec["wave"].value, float)
    with np.errstate(invalid="ignore", divide="ignore"):
        sn = np.asarray(spec["flux"].value, float) / np.asarray(spec["err"].value, float)
    sel = np.abs(w - centre) < half
    return float(np.nanmax(np.where(sel, sn, -np.inf)))


def run_benchmark(repeat):
    data = shared_data()
    ceers = None if data is None else data / "ceers-prism-1345_933"
    refs = sorted((REPO / "benchmarks" / "results").glob("msaexp-*-ceers.json"))
    if ceers is None or not ceers.is_dir() or not refs:
        say("benchmark skipped: CEERS data or benchmarks/results/msaexp-*-ceers.json missing")
        return None
    files = sorted(str(p) for p in ceers.glob("*_phot.138.1345_933.fits"))
    ref = json.loads(refs[-1].read_text())
    runs = ref["runs"]
    # warm-up (imports, first WCS parse), not timed
    SlitGroup(files, "1345_933")
    t_group, g = _timed(lambda: SlitGroup(files, "1345_933"), repeat)

    def fit_degree1():
        grp = SlitGroup(files, "1345_933")
        t = time.perf_counter()
        grp.fit_all_traces(ref_exp="auto", degree=1)
        return time.perf_counter() - t, grp

    fits = [fit_degree1() for _ in range(repeat)]
    t_fit = [f[0] for f in fits]
    gfit = fits[-1][1]

    def full():
        with tempfile.TemporaryDirectory() as tmp:
            res = combine(files, name="1345_933")
            res.write(tmp, figures=True)
        return res

    t_full, res = _timed(full, repeat)
    # the product's summary figure (what `slitcombine extract` writes as {name}.fnu.png)
    save_png(res.plot(), OUT / "ceers_1345_933_summary.png", dpi=70)
    sg = runs["slitgroup"]["variants"]["default"]
    fd1 = runs["fit_all_traces_degree1"]
    ext = runs["extract"]
    ms_lines = ext["spec1d"]["lines"]
    ours_oiii = _line_sn(res.spec, 2.62)
    ours_ha = _line_sn(res.spec, 3.43)
    tf = gfit.meta["steps"]["trace_fit"]
    rows = []

    def add(quantity, msaexp_value, ours, unit, ratio_kind=None, note=""):
        ratio = ""
        if ratio_kind == "speed":
            ratio = f"{msaexp_value / ours:.1f}x faster"
        elif ratio_kind == "ratio":
            ratio = f"{ours / msaexp_value:.3f}"
        rows.append(
            {
                "quantity": quantity,
                "unit": unit,
                "msaexp": msaexp_value,
                "slitcombine": ours,
                "slitcombine vs msaexp": ratio,
                "note": note,
            }
        )

    add(
        "SlitGroup construction (warm, best of N)",
        sg["timing"]["min_s"],
        min(t_group),
        "s",
        "speed",
        "msaexp: default options",
    )
    add(
        "fit_all_traces, offset degree 1 (best of N)",
        fd1["timing"]["min_s"],
        min(t_fit),
        "s",
        "speed",
        "construction excluded",
    )
    add(
        "files -> .spec.fits + figures (warm, best of N)",
        ext["timing"]["min_s"],
        min(t_full),
        "s",
        "speed",
        "msaexp: extract_spectra",
    )
    add(
        "slit_pixel_scale",
        sg["result"]["slit_pixel_scale"],
        float(g.slit_pixel_scale),
        "arcsec/px",
        "ratio",
    )
    add(
        "nod offset (meta['nod_offset'])",
        sg["result"]["nod_offset"],
        float(g.meta["nod_offset"]),
        "px",
        "ratio",
    )
    rel_ms = max(abs(v) for v in sg["result"]["relative_nod_offset"])
    rel = float(np.max(np.abs(g.relative_nod_offset)))
    add("max abs(relative_nod_offset)", rel_ms, rel, "px", "ratio")
    ms_sigma = fd1["result"]["groups"]["2"]["sigma"]
    add(
        "profile width sigma (degree 1 fit)",
        ms_sigma,
        float(np.median(list(tf["sigma_px"].values()))),
        "px",
        "ratio",
        "different PSF models: compare loosely",
    )
    add(
        "[OIII]5008 peak S/N",
        ms_lines["OIII_5008"]["peak_sn"]["sn"],
        ours_oiii,
        "",
        "ratio",
        "different wavelength grids",
    )
    add(
        "H-alpha peak S/N",
        ms_lines["Halpha"]["peak_sn"]["sn"],
        ours_ha,
        "",
        "ratio",
        "different wavelength grids",
    )
    tab = Table(rows=rows)
    meta = {
        "msaexp_reference": str(refs[-1].relative_to(REPO)),
        "msaexp_versions": ref["versions"],
        "repeat": repeat,
        "files": [Path(f).name for f in files],
    }
    return tab, meta


def _fmt(v):
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def write_csv(tab, path):
    """A plain CSV (no ECSV header) that ``csv-table`` includes."""
    lines = [",".join(f'"{c}"' for c in tab.colnames)]
    for row in tab:
        lines.append(",".join(f'"{_fmt(row[c])}"' for c in tab.colnames))
    Path(path).write_text("\n".join(lines) + "\n")
    say(f"wrote {shown(path)}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--part",
        choices=["all", "injection", "benchmark", "plot"],
        default="all",
        help="'plot': redraw the figures and the summaries from injection_runs.ecsv",
    )
    parser.add_argument("--seeds", type=int, default=8, help="simulations per configuration/S/N")
    parser.add_argument(
        "--only",
        default=None,
        help="run only the simulations whose 'study configuration' contains this text "
        "(a quick look; give --out too to keep the docs' files)",
    )
    parser.add_argument(
        "--out",
        default=str(OUT),
        help="folder of the injection-recovery files (default: the docs' folder)",
    )
    parser.add_argument("--repeat", type=int, default=3, help="benchmark repetitions")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    OUT.mkdir(parents=True, exist_ok=True)
    env_path = OUT / "environment.json"
    env = json.loads(env_path.read_text()) if env_path.exists() else {}
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    if args.part in ("all", "injection"):
        t0 = time.perf_counter()
        load0 = environment()["load_average_1_5_15min"]
        code = _code_state()
        runs = run_injection(args.seeds, args.only)
        runs.meta["description"] = "docs/scripts/validation.py injection-recovery runs"
        runs.write(out / "injection_runs.ecsv", overwrite=True)
        say(f"wrote {shown(out / 'injection_runs.ecsv')}")
        write_injection_products(runs, out)
        if out != OUT.resolve():
            return
        env["injection"] = {
            "date": now,
            "environment": environment(),
            "load_average_at_start": load0,
            "code_at_start": code,
            "seeds": args.seeds,
            "only": args.only,
            "simulations": len(tasks(args.seeds, args.only)),
            "analyses": len(runs),
            "configs": CONFIGS,
            "snr": SNRS,
            "psf": PSFS,
            "extended": {"configs": EXTENDED, "snr": EXTENDED_SNRS, "sigma_px": EXTENDED_SIGMA},
            "noise": {"configs": NOISE, "snr": NOISE_SNRS, "excess_noise": EXCESS_NOISE},
            "wrong_psf_config": MISMATCH_CONFIG,
            "source_ypos": YPOS_RANGE,
            "source_xpos": XPOS_RANGE,
            "fixed_slit_source_ypos": FS_YPOS_RANGE,
            "intrinsic_sigma_px": COMPACT_SIGMA,
            "n_crs": N_CRS,
            "elapsed_s": round(time.perf_counter() - t0, 1),
        }
    if args.part == "plot":
        write_injection_products(Table.read(out / "injection_runs.ecsv"), out)
        return
    if args.part in ("all", "benchmark"):
        res = run_benchmark(args.repeat)
        if res is not None:
            tab, meta = res
            write_csv(tab, OUT / "benchmark.csv")
            env["benchmark"] = {"date": now, "environment": environment(), **meta}
    write_json(env, env_path)


if __name__ == "__main__":
    main()
