"""Record, or compare against a record, the products of a fixed set of runs.

The proof that a refactoring changed nothing (issue 20): before the move, record the
products of a fixed set of reductions; after it, compare.  Each run writes its
``{name}.spec.fits`` (no figures) and the arrays kept are SPEC1D (every column), SCI,
WHT, PROFILE, BACKGROUND, the REJECT table and the group's per-exposure rejection bits
``group.reject``, plus ``meta['steps']`` (as JSON, the volatile keys -- times -- left
out).

Runs: CEERS (the three real exposures in ``tests/data``) with the defaults, and with
``diffs=False`` and ``estimate_sky_kwargs`` (the sky fitted in the slit); the demo's
simulation; one simulated group per grating (PRISM, G140M, G235M, G395M, G140H, G235H,
G395H) and a fixed slit (S200A1); a 5-nod group in a 5-shutter slitlet.

Usage::

    python benchmarks/compare_products.py record /tmp/products-before
    python benchmarks/compare_products.py compare /tmp/products-before

``compare`` re-runs everything and prints, per run and array, ``identical`` or the
number of differing elements and the largest absolute and relative difference; the exit
status is 1 if anything differs (0 otherwise).  NaNs compare equal to NaNs.

Step names: issue 20 gave every step one name, the seed keyword's
(``slitcombine.group.steps.STEPS``).  ``compare`` reads the ``meta['steps']`` of a
baseline recorded before with the old names mapped to the new ones
(:data:`STEP_RENAMES`: ``trace_outliers`` -> ``flag_trace``, ``percentile_outliers`` ->
``flag_percentile``, ``profile_outliers`` -> ``flag_profile``, ``outliers_2d`` ->
``flag_2d``, ``background_spectra`` -> ``set_background_spectra``, ``shutter_offset`` ->
``fit_shutter_offset``), so that the comparison still proves identity.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
from astropy.io import fits

REPO = Path(__file__).resolve().parents[1]
CEERS = REPO / "tests" / "data" / "ceers-prism-1345_933"

#: ``meta['steps']`` keys renamed by issue 20 (one name per step): the name in a
#: baseline recorded before -> the current name.
STEP_RENAMES = {
    "trace_outliers": "flag_trace",
    "percentile_outliers": "flag_percentile",
    "profile_outliers": "flag_profile",
    "outliers_2d": "flag_2d",
    "background_spectra": "set_background_spectra",
    "shutter_offset": "fit_shutter_offset",
}

#: Keys of a step's record that change from run to run (timings), left out.
VOLATILE = ("time", "elapsed", "runtime", "seconds", "duration")


def _runs(sim_dir):
    """``{name: (files, options)}`` of the fixed set of reductions."""
    from slitcombine.testing.simulate import simulate_observation

    ceers = sorted(str(p) for p in CEERS.glob("*_phot.*.fits"))
    runs = {
        "ceers_default": (ceers, {}),
        "ceers_nodiff_sky": (
            ceers,
            {"diffs": False, "estimate_sky_kwargs": {}},
        ),
    }
    quiet = {"nx": None, "n_crs": 10, "n_hot": 3, "n_dead": 3}
    demo = simulate_observation(
        sim_dir / "demo", grating="PRISM", n_shutters=3, n_nods=3, snr=15.0, n_crs=15, seed=1
    )
    runs["demo"] = ([str(f) for f in demo.files], {})
    for i, grating in enumerate(("PRISM", "G140M", "G235M", "G395M", "G140H", "G235H", "G395H")):
        sim = simulate_observation(
            sim_dir / grating.lower(), grating=grating, snr=20.0, seed=10 + i, **quiet
        )
        runs[f"sim_{grating.lower()}"] = ([str(f) for f in sim.files], {})
    fs = simulate_observation(
        sim_dir / "fs", grating="G395M", fixed_slit="S200A1", n_nods=2, snr=20.0, seed=30, **quiet
    )
    runs["sim_fixed_slit"] = ([str(f) for f in fs.files], {})
    five = simulate_observation(
        sim_dir / "five",
        grating="PRISM",
        n_shutters=5,
        n_nods=5,
        nod_offsets=[0.0, 1.0, -1.0, 2.0, -2.0],
        snr=20.0,
        seed=40,
        **quiet,
    )
    runs["sim_5nod"] = ([str(f) for f in five.files], {})
    return runs


def _clean(value):
    """JSON-able copy of ``meta['steps']`` without the volatile keys."""
    if isinstance(value, dict):
        return {
            str(k): _clean(v)
            for k, v in value.items()
            if not any(word in str(k).lower() for word in VOLATILE)
        }
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, np.ndarray):
        return _clean(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return repr(value)
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)


def _products(name, files, options, work):
    """``(arrays, steps)`` of one run."""
    from slitcombine.pipeline.combine import combine

    result = combine(files, name=name, **options)
    paths = result.write(work, figures=False)
    arrays = {}
    with fits.open(paths["spec"] if "spec" in paths else work / f"{name}.spec.fits") as hdul:
        spec = hdul["SPEC1D"].data
        for col in spec.columns.names:
            arrays[f"SPEC1D.{col}"] = np.asarray(spec[col])
        for ext in ("SCI", "WHT", "PROFILE", "BACKGROUND"):
            arrays[ext] = np.asarray(hdul[ext].data)
        reject = hdul["REJECT"].data
        for col in reject.columns.names:
            arrays[f"REJECT.{col}"] = np.asarray(reject[col])
    arrays["group.reject"] = np.asarray(result.group.reject)
    steps = _clean(result.group.meta.get("steps", {}))
    return arrays, steps


def _differences(a, b):
    """``None`` if equal (NaN == NaN), else a short description."""
    if a.shape != b.shape or a.dtype.kind != b.dtype.kind:
        return f"shape/dtype {a.shape} {a.dtype} -> {b.shape} {b.dtype}"
    if a.dtype.kind in "fc":
        same = (a == b) | (np.isnan(a) & np.isnan(b))
    else:
        same = a == b
    if np.all(same):
        return None
    n = int(np.sum(~same))
    if a.dtype.kind in "fc":
        d = np.abs(a - b)[~same]
        rel = d / np.maximum(np.abs(a[~same]), 1e-300)
        return f"{n} differ, max |d| {np.nanmax(d):.3g}, max rel {np.nanmax(rel):.3g}"
    return f"{n} differ"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("record", "compare"))
    parser.add_argument("folder", help="where the record is (written by 'record')")
    parser.add_argument("--only", default=None, help="comma-separated run names")
    args = parser.parse_args(argv)
    folder = Path(args.folder)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        runs = _runs(tmp / "sims")
        if args.only:
            keep = set(args.only.split(","))
            runs = {k: v for k, v in runs.items() if k in keep}
        changed = 0
        for name, (files, options) in runs.items():
            arrays, steps = _products(name, files, options, tmp / "out")
            if args.mode == "record":
                folder.mkdir(parents=True, exist_ok=True)
                np.savez_compressed(folder / f"{name}.npz", **arrays)
                (folder / f"{name}.steps.json").write_text(json.dumps(steps, indent=1))
                print(f"{name}: recorded {len(arrays)} arrays")
                continue
            with np.load(folder / f"{name}.npz") as before:
                keys = sorted(set(before.files) | set(arrays))
                for key in keys:
                    if key not in before.files or key not in arrays:
                        print(f"{name} {key}: only {'after' if key in arrays else 'before'}")
                        changed += 1
                        continue
                    diff = _differences(before[key], arrays[key])
                    if diff:
                        print(f"{name} {key}: {diff}")
                        changed += 1
            recorded = json.loads((folder / f"{name}.steps.json").read_text())
            old_steps = {STEP_RENAMES.get(k, k): v for k, v in recorded.items()}
            if old_steps != steps:
                for step in sorted(set(old_steps) | set(steps)):
                    if old_steps.get(step) != steps.get(step):
                        print(f"{name} meta['steps'][{step!r}]: {old_steps.get(step)!r}")
                        print(f"{' ' * len(name)}   -> {steps.get(step)!r}")
                changed += 1
            else:
                print(f"{name}: identical")
    return 1 if changed else 0


if __name__ == "__main__":
    sys.exit(main())
