"""``slitcombine demo``: simulate a 3-nod PRISM observation, combine it, compare with truth.

The demo needs no data and no network.  It writes into ``output_dir``:

* ``inputs/``: the simulated per-slit files and their truth table;
* ``{name}.spec.fits`` and the PNG figures of the combined spectrum;
* ``demo_summary.json``: the comparison with the truth.
"""

from __future__ import annotations

import json
import logging
import time

import numpy as np

__all__ = ["run_demo", "compare_with_truth"]

log = logging.getLogger(__name__)


def compare_with_truth(spec, truth, min_snr=5.0):
    """Compare an extracted 1D spectrum with the simulator's truth.

    The truth is given per detector column; a bin is compared with the truth of the
    columns its pixels come from, interpolated at the bin's mean pixel wavelength
    ``wave_eff`` (at the bin centre a sloped spectrum would be off by the slope times
    the offset, which shows at high S/N).

    Parameters
    ----------
    spec : astropy.table.Table
        ``SPEC1D`` with ``wave`` (and ``wave_eff``) (um), ``flux`` and ``err`` (uJy) and
        ``valid``.
    truth : astropy.table.Table
        Truth table with ``wave`` (the columns' WCS wavelengths, um; ``wave_true`` if
        absent) and ``flux`` (uJy) per detector column.
    min_snr : float
        Only bins whose *true* flux is above ``min_snr`` times their error enter the flux
        ratio (a cut on the measured S/N would favour upward noise).

    Returns
    -------
    dict
        ``median_ratio`` (median flux / truth), ``chi_std`` (standard deviation of
        (flux - truth) / err over all valid bins) and ``n_bins`` used; continuum bins
        only (the truth is interpolated, so emission lines are left out).
    """
    wave = np.asarray(spec["wave"], float)
    if "wave_eff" in spec.colnames:
        eff = np.asarray(spec["wave_eff"], float)
        wave = np.where(np.isfinite(eff), eff, wave)
    flux = np.asarray(spec["flux"], float)
    err = np.asarray(spec["err"], float)
    valid = np.asarray(spec["valid"], bool) if "valid" in spec.colnames else np.isfinite(flux)
    tw = np.asarray(truth["wave" if "wave" in truth.colnames else "wave_true"], float)
    tf = np.asarray(truth["flux"], float)
    tc = np.asarray(truth["flux_continuum"], float) if "flux_continuum" in truth.colnames else tf
    order = np.argsort(tw)
    tw, tf, tc = tw[order], tf[order], tc[order]
    ok_t = np.isfinite(tw) & np.isfinite(tf)
    model = np.interp(wave, tw[ok_t], tf[ok_t], left=np.nan, right=np.nan)
    cont = np.interp(wave, tw[ok_t], tc[ok_t], left=np.nan, right=np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        continuum_only = np.abs(model - cont) < 0.01 * np.abs(cont)
        use = valid & np.isfinite(model) & continuum_only & (err > 0)
        bright = use & (model / err > min_snr)
        ratio = float(np.median(flux[bright] / model[bright])) if bright.any() else np.nan
        chi = (flux[use] - model[use]) / err[use]
    return {
        "median_ratio": ratio,
        "chi_std": float(np.std(chi)) if chi.size > 2 else np.nan,
        "n_bins": int(bright.sum()),
        "n_chi": int(use.sum()),
    }


def run_demo(output_dir="slitcombine-demo", seed=1):
    """Simulate, combine, write and compare.

    Parameters
    ----------
    output_dir : str or path-like
        Folder for the inputs and outputs (created).
    seed : int
        Random seed of the simulation.

    Returns
    -------
    dict
        ``lines`` (what the CLI prints), ``paths`` (written files), ``metrics`` (the
        comparison with the truth) and ``elapsed`` (s).
    """
    from slitcombine.io.output import check_output_dir
    from slitcombine.pipeline.combine import combine
    from slitcombine.testing.simulate import simulate_observation

    t0 = time.perf_counter()
    out = check_output_dir(output_dir)
    sim = simulate_observation(
        out / "inputs", grating="PRISM", n_shutters=3, n_nods=3, snr=15.0, n_crs=15, seed=seed
    )
    name = "demo_prism-clear"
    result = combine(sim.files, name=name)
    # the summary figure of a simulation shows the truth it should recover
    truth = (np.asarray(sim.truth["wave"], float), np.asarray(sim.truth["flux"], float))
    paths = result.write(out, truth=truth)
    metrics = compare_with_truth(result.spec, sim.truth)
    elapsed = time.perf_counter() - t0
    summary = {
        "seed": seed,
        "inputs": [str(f) for f in sim.files],
        "truth": str(sim.truth_path),
        "outputs": {k: str(v) for k, v in paths.items()},
        "metrics": metrics,
        "steps": {k: v.get("status") for k, v in result.group.meta["steps"].items()},
        "elapsed_s": elapsed,
    }
    (out / "demo_summary.json").write_text(json.dumps(summary, indent=1, default=str))
    lines = [f"simulated inputs: {out / 'inputs'}"]
    lines += [f"wrote {k}: {v}" for k, v in paths.items()]
    lines.append(
        f"result vs truth: median flux/truth = {metrics['median_ratio']:.3f} "
        f"over {metrics['n_bins']} continuum bins with S/N>5, "
        f"std((flux-truth)/err) = {metrics['chi_std']:.2f} ({elapsed:.1f} s)"
    )
    return {"lines": lines, "paths": paths, "metrics": metrics, "elapsed": elapsed}


def _main():  # pragma: no cover - convenience for `python -m slitcombine.testing.demo`
    for line in run_demo()["lines"]:
        log.warning(line)


if __name__ == "__main__":  # pragma: no cover
    _main()
