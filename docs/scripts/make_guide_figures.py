"""Make the figures of the user guide from one simulated observation.

Usage (from the repository root; about 20 s)::

    python docs/scripts/make_guide_figures.py

Simulates a 3-nod PRISM observation of a 3-shutter slitlet (S/N 10 per column in one
exposure, source 0.05 shutter heights off centre, intrinsic width 0.4 px, 20 cosmic
rays per exposure), builds a :class:`slitcombine.SlitGroup` with the default options
plus a sky fit (``estimate_sky_kwargs={}``), fits the traces, combines, and writes
``docs/_static/guide_*.png``.  Everything is computed with the public API; the numbers
quoted in the captions of the guide come from the log this script prints.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

import numpy as np
from _common import STATIC, new_figure, save_png, say

from slitcombine import SlitGroup
from slitcombine.core.masks import Reject
from slitcombine.core.resample import bin_edges
from slitcombine.pipeline.combine import combine_group
from slitcombine.testing.simulate import simulate_observation

SIM = dict(
    grating="PRISM",
    n_shutters=3,
    n_nods=3,
    snr=10.0,
    n_crs=20,
    seed=2,
    source_ypos=0.05,
    intrinsic_sigma=0.4,
)
OUTLIER_BITS = (
    Reject.HOT_COLD
    | Reject.PERCENTILE
    | Reject.TRACE
    | Reject.PROFILE
    | Reject.OUTLIER_2D
    | Reject.MULTIPLE
    | Reject.SKY
)


def _img(group, arr, i):
    ny, nx = group.sh
    return np.asarray(arr, float).reshape(group.N, ny, nx)[i]


def _limits(a, lo=2, hi=98):
    v = a[np.isfinite(a)]
    return (np.percentile(v, lo), np.percentile(v, hi)) if v.size else (0, 1)


def fig_reading(g):
    fig = new_figure((7.5, 3.6))
    axes = fig.subplots(g.N, 1, sharex=True)
    vmin, vmax = _limits(np.where(g.mask, g.sci, np.nan), 1, 99)
    for i, ax in enumerate(axes):
        im = ax.imshow(
            np.where(_img(g, g.mask, i) > 0, _img(g, g.sci, i), np.nan),
            origin="lower",
            aspect="auto",
            cmap="viridis",
            vmin=vmin,
            vmax=vmax,
            interpolation="nearest",
        )
        ax.plot(g.xtr[i], g.ytr[i], color="w", lw=0.8, ls="--")
        ax.set_ylabel(f"exp {i + 1}\nrow", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[-1].set_xlabel("column of the common slice (pixels)", fontsize=8)
    cb = fig.colorbar(im, ax=list(axes), pad=0.01)
    cb.set_label("sci (uJy / pixel)", fontsize=8)
    cb.ax.tick_params(labelsize=7)
    fig.suptitle("The three nods on a common grid, with their nominal traces (ytr)", fontsize=9)
    return fig


def fig_masks(g):
    from matplotlib.colors import ListedColormap

    bits = [b for b in Reject if np.any(g.reject[0] & np.uint32(b))]
    code = np.zeros(g.reject.shape[1], int)
    for k, b in reversed(list(enumerate(bits, start=1))):
        code[(g.reject[0] & np.uint32(b)) > 0] = k
    palette = ["#ffffff", "#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3"]
    palette += ["#937860", "#da8bc3", "#8c8c8c", "#ccb974", "#64b5cd"]
    cmap = ListedColormap(palette[: len(bits) + 1])
    fig = new_figure((7.5, 2.4))
    ax = fig.add_subplot(111)
    ny, nx = g.sh
    ax.imshow(
        code.reshape(ny, nx),
        origin="lower",
        aspect="auto",
        cmap=cmap,
        vmin=-0.5,
        vmax=len(bits) + 0.5,
        interpolation="nearest",
    )
    from matplotlib.patches import Patch

    handles = [Patch(color=palette[0], label="valid")]
    handles += [Patch(color=palette[k], label=b.name) for k, b in enumerate(bits, start=1)]
    fig.legend(
        handles=handles, fontsize=7, ncol=len(handles), loc="outside upper center", frameon=False
    )
    ax.set_xlabel("column", fontsize=8)
    ax.set_ylabel("row", fontsize=8)
    ax.tick_params(labelsize=7)
    return fig


def fig_barshadow(g, wrange=(1.5, 3.0)):
    """Throughput across the slitlet: data / sky on the sky pixels, pipeline and own model."""
    ys = np.asarray(g.fixed_yshutter, float)
    sky = g.sky_data["sky2d"]
    band = g.mask & (g.wave > wrange[0]) & (g.wave < wrange[1])
    with np.errstate(invalid="ignore", divide="ignore"):
        thr = g.sci * g.bar / sky
    sky_pix = band & (np.abs(g.yslit) > 4.5)
    rows = np.unique(g.ypix[band])
    curves = {"y": [], "data": [], "pipe": [], "model": []}
    for r in rows:
        sel = band & (g.ypix == r)
        curves["y"].append(np.median(ys[sel]))
        curves["pipe"].append(np.median(g.orig_bar[sel]))
        curves["model"].append(np.median(g.bar[sel]))
        s = sky_pix & (g.ypix == r)
        curves["data"].append(np.median(thr[s]) if s.sum() > 20 else np.nan)
    c = {k: np.asarray(v) for k, v in curves.items()}
    fig = new_figure((7.0, 3.0))
    ax = fig.add_subplot(111)
    ax.plot(c["y"], c["data"], "o", color="k", ms=4, label="sky pixels: median raw / sky")
    ax.plot(c["y"], c["pipe"], "-", color="tab:blue", lw=1.2, label="pipeline BARSHADOW")
    ax.plot(c["y"], c["model"], "-", color="tab:red", lw=1.2, label="own model (undo_barshadow=2)")
    ax.set_xlabel("fixed_yshutter (shutter pitches), one point per detector row", fontsize=8)
    ax.set_ylabel(f"throughput, {wrange[0]}-{wrange[1]} um", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7, loc="lower center")
    return fig


def fig_compact_source(tmp, band=(2.0, 2.5)):
    """A compact source near a bar: its light is not shadowed; the bar shadow is the sky's.

    A noise-free point source 0.35 shutter heights off centre (3 nods, PRISM), rows of
    the middle-shutter nod and of an end-shutter nod: the pipeline's BARSHADOW (the
    image of the shutters for a uniform source), the source on the detector (bar
    shadow undone: what slitcombine measures, with the optics model whose profile is
    overplotted) and the same divided by BARSHADOW (the extended-source convention).
    """
    from slitcombine import combine

    opts = dict(
        grating="PRISM",
        noise=False,
        n_crs=0,
        n_hot=0,
        n_dead=0,
        source_ypos=0.35,
        intrinsic_sigma=0.0,
    )
    sim = simulate_observation(Path(tmp) / "compact", snr=30, **opts)
    sky = simulate_observation(Path(tmp) / "sky", snr=0, **opts)  # the same sky alone
    r = combine(sim.files, name="compact")
    g = r.group
    gs = SlitGroup(sky.files, "sky")
    ny, nx = g.sh
    wave = g.wave.reshape(g.N, ny, nx)
    # the source alone on the detector (both corrections of the pipeline undone)
    raw = ((g.sci - gs.sci) * getattr(g, "orig_bar", g.bar)).reshape(g.N, ny, nx)
    pipe = getattr(g, "orig_bar", g.bar).reshape(g.N, ny, nx)
    imgs, thr = g.source_image_model().images(g.trace_rows(), g.profile_sigma())
    states = [str(s) for s in g.info["shutter_state"]]
    fig = new_figure((7.0, 4.6))
    axes = fig.subplots(2, 1, sharex=True)
    rows = np.arange(ny)
    out = {}
    for ax, state in zip(axes, ("1x1", "x11"), strict=True):
        i = states.index(state)
        with np.errstate(invalid="ignore"):
            wcol = np.nanmax(np.where(np.isfinite(wave[i]), wave[i], -1.0), axis=0)
        cols = np.flatnonzero((wcol > band[0]) & (wcol < band[1]))
        with np.errstate(invalid="ignore"):
            src = np.nansum(raw[i][:, cols], axis=1) / cols.size
            bar = np.nansum(pipe[i][:, cols], axis=1) / cols.size
            model = np.mean(imgs[i][:, cols], axis=1)
            flux = np.nanmedian(np.nansum(raw[i][:, cols], axis=0) / thr[i][cols])
        norm = np.nanmax(src)
        ax.fill_between(rows, 0, bar, color="0.85", step="mid", label="pipeline BARSHADOW")
        ax.step(
            rows,
            src / norm,
            where="mid",
            color="tab:blue",
            lw=1.4,
            label="source on the detector (bar shadow undone)",
        )
        ax.plot(
            rows,
            model * flux / norm,
            "o",
            color="k",
            ms=3,
            label="optics model (cut by the bar, with wings)",
        )
        with np.errstate(invalid="ignore", divide="ignore"):
            ax.step(
                rows,
                src / bar / norm,
                where="mid",
                color="tab:red",
                lw=1.0,
                ls="--",
                label="source / BARSHADOW (extended-source correction)",
            )
        trace = float(np.median(g.trace_rows()[i][cols]))
        ax.axvline(trace, color="tab:blue", lw=0.6, ls=":")
        with np.errstate(invalid="ignore", divide="ignore"):
            gain = np.nansum(src / bar) / np.nansum(src)
        out[state] = gain
        ax.set_title(
            f"shutter_state {state!r}: summed over rows, source / BARSHADOW is {gain:.2f}x "
            "the source",
            fontsize=8,
        )
        ax.set_ylabel("per row (peak = 1)", fontsize=8)
        ax.set_ylim(0, 1.25)
        ax.tick_params(labelsize=7)
    axes[1].set_xlabel(f"detector row ({band[0]}-{band[1]} um)", fontsize=8)
    axes[0].legend(fontsize=6.5, loc="upper left")
    return fig, out


def fig_sky(g, truth):
    sd = g.sky_data
    used = sd["mask"]
    rng = np.random.default_rng(0)
    w, s = g.wave[used], g.sci[used]
    pick = rng.choice(w.size, size=min(w.size, 4000), replace=False)
    fig = new_figure((7.0, 3.0))
    ax = fig.add_subplot(111)
    ax.plot(w[pick], s[pick], ".", ms=1.5, color="0.6", alpha=0.5, label="sky pixels (sci)")
    ax.plot(truth["wave"], truth["sky"], color="k", lw=2.5, alpha=0.35, label="simulated sky")
    m, e = sd["sky_model"], sd["sky_err"]
    ax.fill_between(sd["sky_wave"], m - e, m + e, color="tab:red", alpha=0.3, lw=0)
    ax.plot(sd["sky_wave"], m, color="tab:red", lw=1, label=f"spline, df={sd['df']}")
    lo, hi = _limits(s, 0.5, 99.5)
    ax.set_ylim(lo, hi)
    ax.set_xlabel("wavelength (um)", fontsize=8)
    ax.set_ylabel("uJy / pixel", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7, loc="upper left")
    return fig


def cosmic_ray_recovery(g, crs):
    """Injected cosmic-ray pixels that are valid input pixels, and how many were rejected."""
    ny, nx = g.sh
    hits = []
    for row in crs:
        i, r, c = int(row["index"]), int(row["row"]), int(row["col"])
        sl = g.slices[i]
        rr, cc = r - sl[0].start, c - sl[1].start
        if 0 <= rr < ny and 0 <= cc < nx:
            q = rr * nx + cc
            other = g.reject[i, q] & ~np.uint32(OUTLIER_BITS)
            if other == 0:  # a pixel no other mask removed
                hits.append((i, q, bool(g.reject[i, q] & np.uint32(OUTLIER_BITS))))
    return hits


def fig_outliers(g, crs):
    hits = cosmic_ray_recovery(g, crs)
    ny, nx = g.sh
    fig = new_figure((7.5, 2.6))
    ax = fig.add_subplot(111)
    i = 0
    other = (g.reject[i] & ~np.uint32(OUTLIER_BITS)).reshape(ny, nx) > 0
    data = np.where(other, np.nan, _img(g, g.sci, i))
    vmin, vmax = _limits(data, 1, 99)
    ax.imshow(
        data,
        origin="lower",
        aspect="auto",
        cmap="Greys",
        vmin=vmin,
        vmax=vmax,
        interpolation="nearest",
    )
    flagged = (g.reject[i] & np.uint32(OUTLIER_BITS)) > 0
    fy, fx = np.divmod(np.flatnonzero(flagged), nx)
    ax.plot(
        fx, fy, "s", mfc="none", mec="tab:red", ms=4, mew=0.8, label="rejected by outlier steps"
    )
    cr = [(q // nx, q % nx, ok) for e, q, ok in hits if e == i]
    if cr:
        cy, cx, _ = zip(*cr, strict=True)
        ax.plot(
            cx, cy, "o", mfc="none", mec="tab:blue", ms=7, mew=0.8, label="injected cosmic rays"
        )
    n_ok = sum(ok for *_, ok in hits)
    ax.set_title(
        f"exposure 1; all exposures: {n_ok}/{len(hits)} injected cosmic-ray pixels rejected",
        fontsize=8,
    )
    ax.legend(fontsize=7, loc="upper right", ncol=2)
    ax.set_xlabel("column", fontsize=8)
    ax.set_ylabel("row", fontsize=8)
    ax.tick_params(labelsize=7)
    return fig, hits


def fig_nods(g):
    ny, nx = g.sh
    fig = new_figure((7.5, 3.6))
    axes = fig.subplots(g.unp.N, 1, sharex=True)
    vlim = None
    for ax, p in zip(axes, g.unp.values, strict=True):
        ipos, ineg, diff, _, vdiff, _ = g.make_diff_image(p)
        if vlim is None:
            vlim = 5 * np.nanmedian(np.sqrt(vdiff))
        ax.imshow(
            diff.reshape(ny, nx),
            origin="lower",
            aspect="auto",
            cmap="RdBu_r",
            vmin=-vlim,
            vmax=vlim,
            interpolation="nearest",
        )
        pos = [int(k) + 1 for k in np.flatnonzero(ipos)]
        neg = [int(k) + 1 for k in np.flatnonzero(ineg)]
        ax.set_ylabel(f"pos {p}", fontsize=8)
        ax.text(
            0.01,
            0.85,
            f"exposure {pos} - mean(exposures {neg})",
            transform=ax.transAxes,
            fontsize=7,
        )
        ax.tick_params(labelsize=7)
    axes[-1].set_xlabel("column", fontsize=8)
    fig.suptitle(
        "make_diff_image(position): positive trace at the position, negatives at the others",
        fontsize=9,
    )
    return fig


def fig_trace(g):
    ref = g.meta["steps"]["trace_fit"]["ref_exp"]
    fig = new_figure((6.5, 3.2))
    ax = fig.add_subplot(111)
    g.plot_profile(exp=ref, ax=ax, fit_result=g.fit[ref], ymax=None)
    ax.set_title(ax.get_title(), fontsize=8)
    ax.tick_params(labelsize=7)
    return fig


def fig_resample(r):
    d = r.drizzled
    fig = new_figure((7.5, 3.4))
    axes = fig.subplots(2, 1, sharex=True)
    xe = bin_edges(d["wave"])
    ye = bin_edges(d["y"])
    vlim = np.nanpercentile(np.abs(d["sci"]), 99)
    axes[0].pcolormesh(xe, ye, d["sci"], cmap="RdBu_r", vmin=-vlim, vmax=vlim, rasterized=True)
    axes[0].set_ylabel("SCI\ny (pixels)", fontsize=8)
    axes[1].pcolormesh(xe, ye, d["profile"], cmap="RdBu_r", vmin=-0.4, vmax=0.4, rasterized=True)
    axes[1].set_ylabel("PROFILE\ny (pixels)", fontsize=8)
    axes[1].set_xlabel("wavelength (um)", fontsize=8)
    for ax in axes:
        ax.tick_params(labelsize=7)
    return fig


def truth_at(spec, truth):
    """The truth of the columns whose pixels a bin holds: interpolated at the bin's mean
    pixel wavelength ``wave_eff`` on the columns' WCS wavelengths (the truth is per
    column; at the bin centre a sloped spectrum is off by the slope times the offset)."""
    wave = np.asarray(spec["wave_eff"].value, float)
    wave = np.where(np.isfinite(wave), wave, np.asarray(spec["wave"].value, float))
    tw = np.asarray(truth["wave"], float)
    model = np.interp(wave, tw, np.asarray(truth["flux"], float))
    cont = np.interp(wave, tw, np.asarray(truth["flux_continuum"], float))
    return model, cont


def fig_extract(r, truth):
    spec = r.spec
    wave = spec["wave"].value
    flux, err = spec["flux"].value, spec["err"].value
    model, cont = truth_at(spec, truth)
    fig = new_figure((7.5, 3.6))
    gs = fig.add_gridspec(1, 2, width_ratios=[4, 1])
    ax = fig.add_subplot(gs[0, 0])
    ax.fill_between(wave, flux - err, flux + err, color="0.8", lw=0, label="1 sigma", step="mid")
    ax.step(
        wave, spec["flux_boxcar"].value, where="mid", color="tab:orange", lw=0.6, label="boxcar"
    )
    ax.step(wave, flux, where="mid", color="k", lw=0.7, label="optimal")
    ax.plot(wave, model, color="tab:red", lw=1, label="truth")
    ax.set_ylim(-0.1 * np.nanmax(cont), 2.2 * np.nanmax(cont))
    ax.set_xlabel("wavelength (um)", fontsize=8)
    ax.set_ylabel("f_nu (uJy)", fontsize=8)
    ax.legend(fontsize=7, ncol=2, loc="upper left")
    ax.tick_params(labelsize=7)
    with np.errstate(invalid="ignore", divide="ignore"):
        use = np.asarray(spec["valid"]) & (np.abs(model - cont) < 0.01 * np.abs(cont))
        pull = ((flux - model) / err)[use]
    ax2 = fig.add_subplot(gs[0, 1])
    x = np.linspace(-5, 5, 201)
    ax2.hist(pull, bins=np.linspace(-5, 5, 31), density=True, color="0.6")
    ax2.plot(x, np.exp(-0.5 * x**2) / np.sqrt(2 * np.pi), color="tab:red", lw=1)
    ax2.set_xlabel("(flux - truth) / err", fontsize=8)
    ax2.set_title(f"std {np.std(pull):.2f}", fontsize=8)
    ax2.tick_params(labelsize=7)
    ax2.set_yticks([])
    # bins selected on the truth's S/N (a cut on the measured S/N favours high noise)
    with np.errstate(invalid="ignore", divide="ignore"):
        bright = use & (model / err > 5)
    return fig, float(np.std(pull)), float(np.median((flux / model)[bright]))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outdir", default=str(STATIC), help="where to write the PNGs")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    out = Path(args.outdir)
    with tempfile.TemporaryDirectory() as tmp:
        sim = simulate_observation(Path(tmp) / "sim", **SIM)
        g = SlitGroup(sim.files, "guide", estimate_sky_kwargs={})
        g.fit_all_traces(ref_exp="auto")
        r = combine_group(g, fit_traces=False)
        truth = sim.truth
        crs = sim.sources[0].cosmic_rays
        steps = g.meta["steps"]
        tf = steps["trace_fit"]
        true_off = float(np.median(truth["trace"][:, 0] - truth["yslit0_row"][:, 0]))
        say(f"rejected pixels per reason: {g.meta['rejected']}")
        say(
            f"bar shadow: {g.meta['bar_correction']}; sky: df={g.sky_data['df']}, "
            f"npix={g.sky_data['npix']}"
        )
        say(
            f"trace fit: sigma {tf['sigma_px']} px (truth {SIM['intrinsic_sigma']}), "
            f"offset {tf['offset_px']} px (truth {true_off:.3f})"
        )
        save_png(fig_reading(g), out / "guide_reading.png")
        save_png(fig_masks(g), out / "guide_masks.png")
        save_png(fig_barshadow(g), out / "guide_barshadow.png")
        fig, gains = fig_compact_source(tmp)
        say(f"compact source 0.35 off centre: source/BARSHADOW over the source {gains}")
        save_png(fig, out / "guide_compact.png")
        save_png(fig_sky(g, truth), out / "guide_sky.png")
        fig, hits = fig_outliers(g, crs)
        say(f"cosmic rays: {sum(h[2] for h in hits)}/{len(hits)} valid CR pixels rejected")
        save_png(fig, out / "guide_outliers.png")
        save_png(fig_nods(g), out / "guide_nods.png")
        save_png(fig_trace(g), out / "guide_trace.png")
        save_png(fig_resample(r), out / "guide_resample.png")
        fig, chi_std, ratio = fig_extract(r, truth)
        say(f"extraction: median flux/truth {ratio:.3f}, std of pulls {chi_std:.2f}")
        save_png(fig, out / "guide_extract.png")
        save_png(r.plot(), out / "guide_summary.png", dpi=70)


if __name__ == "__main__":
    main()
