"""Injection-recovery validation on simulations, and the benchmark against msaexp.

Usage (from the repository root)::

    python docs/scripts/validation.py                 # both parts (~1-2 min on 2 cores)
    python docs/scripts/validation.py --part injection --seeds 2
    python docs/scripts/validation.py --part benchmark
    python docs/scripts/validation.py --part plot      # redraw from injection_runs.ecsv

Writes into ``docs/_static/validation/`` (included by ``docs/validation.rst``):

``injection_runs.ecsv``
    One row per simulated observation: configuration, requested S/N, seed and every
    measured quantity (definitions below).
``injection_summary.csv``
    Medians per configuration and S/N.
``validation.png``
    The four injection-recovery diagnostics against S/N.
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
Every run simulates a nodded observation with :func:`slitcombine.simulate.simulate_observation`
(3 nods; the source is placed at a random ``source_ypos`` in [-0.3, 0.3] shutter heights,
anywhere in the open part of the shutter, with a random intrinsic width in [0.2, 2.5] px,
compact to extended; 20 cosmic-ray events per exposure, 5 hot and 5 dead pixels),
combines it with the **default options** (``SlitGroup(files, name)``, ``combine_group``
with ``trace_kwargs={'ref_exp': 'auto'}``) and compares with the truth:

* ``flux_bias``: ``sum(w (f - t)) / sum(w t)`` over the valid continuum bins, with
  ``w = 1/err**2``, ``f`` the optimal flux and ``t`` the truth (interpolated at the
  bin's wavelength; bins within emission lines are left out because the truth is
  undersampled there) -- the fractional error of the inverse-variance weighted flux;
  ``flux_bias_err = sqrt(sum(w)) / sum(w t)`` is its statistical 1-sigma;
* ``median_ratio``: median of ``f / t`` over the continuum bins with ``f/err > 5``;
* ``pull_std`` and ``pull_nmad``: standard deviation and normalised median absolute
  deviation of ``(f - t) / err`` over the valid continuum bins (1 = calibrated errors);
* ``trace_err`` and ``trace_rms``: median and RMS over the columns with signal of the
  fitted trace row minus the true source row (exposure 1), pixels;
* ``sigma_err``: fitted minus true intrinsic width, pixels; ``trace_accepted``: whether
  the trace fit was applied (below the detection threshold the nominal trace is kept);
* ``cr_pixels``, ``cr_rejected``: injected cosmic-ray pixels on otherwise valid pixels,
  and how many of them the outlier steps rejected; ``false_rejected``: other valid
  pixels the outlier steps rejected, as a fraction of the valid pixels.

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
    write_json,
)
from astropy.table import Table

from slitcombine import SlitGroup
from slitcombine.combine import combine, combine_group
from slitcombine.geometry import normalized_x
from slitcombine.masks import Reject
from slitcombine.simulate import simulate_observation

OUT = STATIC / "validation"

#: The simulated configurations: label -> options of simulate_observation.
CONFIGS = {
    "PRISM 3-shutter": {"grating": "PRISM", "n_shutters": 3},
    "G140M 3-shutter": {"grating": "G140M", "n_shutters": 3},
    "G395M 2-shutter, 2 nods": {"grating": "G395M", "n_shutters": 2, "n_nods": 2},
    "PRISM fixed slit S200A1": {"grating": "PRISM", "fixed_slit": "S200A1"},
}
SNRS = (3.0, 10.0, 30.0)
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
def _truth_at(wave, truth):
    tw = np.asarray(truth["wave_true"], float)
    order = np.argsort(tw)
    t = np.interp(wave, tw[order], np.asarray(truth["flux"], float)[order])
    c = np.interp(wave, tw[order], np.asarray(truth["flux_continuum"], float)[order])
    return t, c


def _flux_metrics(spec, truth):
    wave = np.asarray(spec["wave"].value, float)
    f = np.asarray(spec["flux"].value, float)
    e = np.asarray(spec["err"].value, float)
    t, c = _truth_at(wave, truth)
    with np.errstate(invalid="ignore", divide="ignore"):
        use = np.asarray(spec["valid"], bool) & (np.abs(t - c) < 0.01 * np.abs(c)) & (e > 0)
        w = 1.0 / e[use] ** 2
        bias = float(np.sum(w * (f[use] - t[use])) / np.sum(w * t[use]))
        bias_err = float(np.sqrt(np.sum(w)) / np.sum(w * t[use]))
        pull = (f[use] - t[use]) / e[use]
        bright = use & (f / e > 5)
        ratio = float(np.median(f[bright] / t[bright])) if bright.sum() > 5 else np.nan
    nmad = 1.4826 * float(np.median(np.abs(pull - np.median(pull))))
    return {
        "n_bins": int(use.sum()),
        "flux_bias": bias,
        "flux_bias_err": bias_err,
        "median_ratio": ratio,
        "pull_std": float(np.std(pull)),
        "pull_nmad": nmad,
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


def one_run(label, opts, snr, seed, workdir):
    """Simulate, combine with the defaults, compare with the truth."""
    rng = np.random.default_rng(1000 + seed)
    ypos = float(rng.uniform(-0.3, 0.3))
    sigma = float(rng.uniform(0.2, 2.5))
    sim_opts = dict(opts, snr=snr, seed=seed, source_ypos=ypos, intrinsic_sigma=sigma, n_crs=20)
    if "fixed_slit" in opts:
        sim_opts["source_ypos"] = ypos * 0.1  # fixed-slit units: slit lengths
    t0 = time.perf_counter()
    sim = simulate_observation(Path(workdir) / f"s{seed}", **sim_opts)
    t1 = time.perf_counter()
    g = SlitGroup(sim.files, "validation")
    r = combine_group(g, trace_kwargs={"ref_exp": "auto"})
    t2 = time.perf_counter()
    row = {
        "config": label,
        "snr": snr,
        "seed": seed,
        "source_ypos": sim_opts["source_ypos"],
        "intrinsic_sigma": sigma,
    }
    row.update(_flux_metrics(r.spec, sim.truth))
    row.update(_trace_metrics(g, sim.truth, sigma))
    row.update(_cr_metrics(g, sim.sources[0].cosmic_rays))
    row.update(
        {
            "bar_correction": str(g.meta.get("bar_correction", "")),
            "simulate_s": t1 - t0,
            "combine_s": t2 - t1,
        }
    )
    return row


def run_injection(seeds):
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, opts in CONFIGS.items():
            for snr in SNRS:
                for seed in range(1, seeds + 1):
                    work = Path(tmp) / f"{len(rows)}"
                    row = one_run(label, opts, snr, seed, work)
                    rows.append(row)
                    say(
                        f"{label:26s} S/N {snr:4.0f} seed {seed}: bias {row['flux_bias']:+.3f} "
                        f"pull std {row['pull_std']:.2f} trace {row['trace_err']:+.3f} px "
                        f"CR {row['cr_rejected']}/{row['cr_pixels']} ({row['combine_s']:.1f} s)"
                    )
    return Table(rows=rows)


def summarise(runs):
    out = []
    for label in CONFIGS:
        for snr in SNRS:
            sel = (runs["config"] == label) & (runs["snr"] == snr)
            t = runs[sel]
            if len(t) == 0:
                continue
            out.append(
                {
                    "configuration": label,
                    "S/N": f"{snr:g}",
                    "runs": len(t),
                    "flux bias (%)": f"{100 * np.median(t['flux_bias']):+.1f}",
                    "its 1-sigma (%)": f"{100 * np.median(t['flux_bias_err']):.1f}",
                    "pull std": f"{np.median(t['pull_std']):.2f}",
                    "pull NMAD": f"{np.median(t['pull_nmad']):.2f}",
                    "trace error (px)": f"{np.median(t['trace_err']):+.3f}",
                    "trace RMS (px)": f"{np.median(t['trace_rms']):.3f}",
                    "width error (px)": f"{np.median(t['sigma_err']):+.2f}",
                    "CR rejected": f"{int(np.sum(t['cr_rejected']))}/{int(np.sum(t['cr_pixels']))}",
                    "false rejections (%)": f"{100 * np.median(t['false_rejected']):.2f}",
                }
            )
    return Table(rows=out)


def plot_injection(runs):
    """The four diagnostics against the requested S/N, one marker per configuration."""
    fig = new_figure((8.0, 5.2))
    axes = fig.subplots(2, 2, sharex=True)
    markers = ["o", "s", "^", "D"]
    for k, label in enumerate(CONFIGS):
        t = runs[runs["config"] == label]
        if len(t) == 0:
            continue
        jitter = np.asarray(t["snr"], float) * (1 + 0.06 * (k - 1.5))
        kw = {"marker": markers[k], "ls": "none", "ms": 4, "label": label, "alpha": 0.8}
        axes[0, 0].errorbar(
            jitter,
            100 * np.asarray(t["flux_bias"]),
            yerr=100 * np.asarray(t["flux_bias_err"]),
            elinewidth=0.6,
            **kw,
        )
        axes[0, 1].plot(jitter, t["pull_std"], **kw)
        axes[1, 0].plot(jitter, t["trace_err"], **kw)
        with np.errstate(invalid="ignore", divide="ignore"):
            frac = np.asarray(t["cr_rejected"], float) / np.asarray(t["cr_pixels"], float)
        axes[1, 1].plot(jitter, 100 * frac, **kw)
    axes[0, 0].axhline(0, color="k", lw=0.6)
    axes[0, 0].set_ylabel("flux bias (%)", fontsize=8)
    axes[0, 1].axhline(1, color="k", lw=0.6)
    axes[0, 1].set_ylabel("std((flux - truth) / err)", fontsize=8)
    axes[1, 0].axhline(0, color="k", lw=0.6)
    axes[1, 0].set_ylabel("trace error (pixels)", fontsize=8)
    axes[1, 1].set_ylabel("cosmic-ray pixels rejected (%)", fontsize=8)
    from matplotlib.ticker import NullFormatter, NullLocator

    for ax in axes.ravel():
        ax.set_xscale("log")
        ax.set_xticks(list(SNRS), [f"{v:g}" for v in SNRS])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.tick_params(labelsize=7)
    for ax in axes[1]:
        ax.set_xlabel("continuum S/N per column, one exposure", fontsize=8)
    axes[0, 0].legend(fontsize=6.5, loc="best")
    return fig


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
    say(f"wrote {Path(path).relative_to(REPO)}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--part",
        choices=["all", "injection", "benchmark", "plot"],
        default="all",
        help="'plot': redraw validation.png and the summary from injection_runs.ecsv",
    )
    parser.add_argument("--seeds", type=int, default=6, help="simulations per configuration/S/N")
    parser.add_argument("--repeat", type=int, default=3, help="benchmark repetitions")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    OUT.mkdir(parents=True, exist_ok=True)
    env_path = OUT / "environment.json"
    env = json.loads(env_path.read_text()) if env_path.exists() else {}
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    if args.part in ("all", "injection"):
        t0 = time.perf_counter()
        runs = run_injection(args.seeds)
        runs.meta["description"] = "docs/scripts/validation.py injection-recovery runs"
        runs.write(OUT / "injection_runs.ecsv", overwrite=True)
        say(f"wrote {(OUT / 'injection_runs.ecsv').relative_to(REPO)}")
        write_csv(summarise(runs), OUT / "injection_summary.csv")
        save_png(plot_injection(runs), OUT / "validation.png", dpi=80)
        env["injection"] = {
            "date": now,
            "environment": environment(),
            "seeds": args.seeds,
            "configs": CONFIGS,
            "snr": SNRS,
            "elapsed_s": round(time.perf_counter() - t0, 1),
        }
    if args.part == "plot":
        runs = Table.read(OUT / "injection_runs.ecsv")
        write_csv(summarise(runs), OUT / "injection_summary.csv")
        save_png(plot_injection(runs), OUT / "validation.png", dpi=80)
        return
    if args.part in ("all", "benchmark"):
        out = run_benchmark(args.repeat)
        if out is not None:
            tab, meta = out
            write_csv(tab, OUT / "benchmark.csv")
            env["benchmark"] = {"date": now, "environment": environment(), **meta}
    write_json(env, env_path)


if __name__ == "__main__":
    main()
