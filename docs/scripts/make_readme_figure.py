"""Make ``docs/_static/demo.png``, the README figure, from the output of ``slitcombine demo``.

Usage (from the repository root; about 10 s)::

    python docs/scripts/make_readme_figure.py

Runs exactly what ``slitcombine demo`` runs (:func:`slitcombine.testing.demo.run_demo`, seed 1)
in a temporary folder, then reads back the product it wrote (``SCI`` and ``SPEC1D`` of
``demo_prism-clear.spec.fits``) and the simulator's truth table, and plots the
rectified 2D spectrum, the optimal 1D spectrum with the truth, and the normalised
residuals.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from _common import STATIC, new_figure, save_png, say
from astropy.io import fits
from astropy.table import Table

from slitcombine.core.resample import bin_edges
from slitcombine.testing.demo import run_demo


def make_figure(spec_path, truth_path, metrics):
    """The README figure from a written product and its truth table."""
    with fits.open(spec_path) as hdul:
        sci = hdul["SCI"].data.astype(float)
        h = hdul["SCI"].header
        ny = sci.shape[0]
        ystep = h["YSTEP"]
    spec = Table.read(spec_path, hdu="SPEC1D")
    truth = Table.read(truth_path)
    wave = np.asarray(spec["wave"], float)
    flux, err = np.asarray(spec["flux"], float), np.asarray(spec["err"], float)
    tw = np.asarray(truth["wave_true"], float)
    order = np.argsort(tw)
    model = np.interp(wave, tw[order], np.asarray(truth["flux"], float)[order])
    cont = np.interp(wave, tw[order], np.asarray(truth["flux_continuum"], float)[order])

    fig = new_figure((8.0, 4.6))
    axes = fig.subplots(3, 1, sharex=True, height_ratios=[1.1, 2.2, 0.9])
    y0 = (ny - 1) / 2 * ystep
    vlim = np.nanpercentile(np.abs(sci), 99)
    yedges = np.linspace(-y0 - 0.5 * ystep, y0 + 0.5 * ystep, ny + 1)
    axes[0].pcolormesh(
        bin_edges(wave), yedges, sci, cmap="RdBu_r", vmin=-vlim, vmax=vlim, rasterized=True
    )
    axes[0].set_ylabel("y (pix)", fontsize=8)
    axes[0].set_title(
        "slitcombine demo: simulated 3-nod PRISM observation, combined (SCI: negative nod "
        "traces in blue)",
        fontsize=8.5,
    )
    ax = axes[1]
    ax.fill_between(wave, flux - err, flux + err, step="mid", color="0.75", lw=0, label="1 sigma")
    ax.step(wave, flux, where="mid", color="k", lw=0.7, label="optimal extraction")
    ax.plot(wave, model, color="tab:red", lw=1.0, label="input (truth)")
    top = np.nanpercentile(model, 90)
    ax.set_ylim(-0.15 * top, 2.5 * top)
    ax.set_ylabel("f_nu (uJy)", fontsize=8)
    ax.legend(fontsize=7, loc="upper left", ncol=3)
    with np.errstate(invalid="ignore", divide="ignore"):
        pull = (flux - model) / err
        pull[np.abs(model - cont) > 0.01 * np.abs(cont)] = np.nan  # lines: truth undersampled
    axes[2].plot(wave, pull, ".", color="k", ms=2)
    axes[2].axhline(0, color="tab:red", lw=0.8)
    axes[2].set_ylim(-5, 5)
    axes[2].set_ylabel("(f - truth)/err", fontsize=8)
    axes[2].set_xlabel("wavelength (um)", fontsize=8)
    axes[2].text(
        0.99,
        0.95,
        f"median flux/truth = {metrics['median_ratio']:.3f}, "
        f"std((flux - truth)/err) = {metrics['chi_std']:.2f} (continuum bins)",
        transform=axes[2].transAxes,
        ha="right",
        va="top",
        fontsize=7,
    )
    for a in axes:
        a.tick_params(labelsize=7)
    return fig


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default=str(STATIC / "demo.png"))
    parser.add_argument("--seed", type=int, default=1, help="seed of the demo (default 1)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = run_demo(Path(tmp) / "demo", seed=args.seed)
        for line in result["lines"]:
            say(line.replace(tmp, "<tmp>"))
        spec_path = result["paths"]["spec"]
        truth_path = next((Path(tmp) / "demo" / "inputs").glob("*truth*.ecsv"))
        fig = make_figure(spec_path, truth_path, result["metrics"])
        size = save_png(fig, args.output, dpi=90)
    if size > 200_000:
        raise SystemExit(f"{args.output} is {size} bytes: keep the README figure under 200 KB")


if __name__ == "__main__":
    main()
