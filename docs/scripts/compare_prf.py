"""Compare the point-response models on CEERS and on the simulator.

Usage (from the repository root; ~2 minutes on 2 cores)::

    python docs/scripts/compare_prf.py [--table PATH]

The models: the default optics model (:mod:`slitcombine.core.optics`, through the group's
apertures), msaexp's empirical PSF lookup table read by
:func:`slitcombine.io.prf_tables.read_psf_lookup` (``--table``, default: found in the
calibration directories / the ``slitcombine calib fetch`` cache), and the Gaussian
(:class:`slitcombine.core.psf.GaussianPRF`, msaexp's kind of profile).  Each is given as
``lookup_prf`` to :func:`slitcombine.pipeline.combine.combine` with the default options.

Writes ``docs/_static/prf_comparison.csv`` (included by docs/guide/trace.rst): on CEERS
the median flux of each model over the optics model's per band; on simulations (PRISM
and G395M, point source at the shutter centre and 0.3 shutter heights off, S/N 30) the
median continuum flux over the truth.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

import numpy as np
from _common import REPO, STATIC, say, shared_data

from slitcombine import combine
from slitcombine.core.profile import GaussianPRF
from slitcombine.io import tables
from slitcombine.io.prf_tables import read_psf_lookup
from slitcombine.testing.simulate import simulate_observation

TABLE = "nirspec_merged_s200a1_exp_psf_lookup_001.fits"
BANDS = ((1.2, 2.2), (2.2, 3.0), (3.0, 4.0), (4.0, 5.2))


def _find_table(path):
    if path:
        return Path(path)
    for name in (TABLE, f"psf/{TABLE}"):
        found = tables.find_calibration_file(name)
        if found is not None:
            return found
    return None


def _truth_ratio(spec, truth):
    ok = np.asarray(spec["valid"])
    w = spec["wave_eff"].value[ok]
    t = np.interp(w, truth["wave"], truth["flux"])
    c = np.interp(w, truth["wave"], truth["flux_continuum"])
    f = spec["flux"].value[ok]
    e = spec["err"].value[ok]
    use = (np.abs(t - c) < 0.02 * c) & (c / e > 5)
    return float(np.median(f[use] / t[use]))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", default=None, help="msaexp PSF lookup table (FITS)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    models = {"optics (default)": None, "Gaussian (msaexp's kind)": GaussianPRF()}
    table = _find_table(args.table)
    if table is not None and table.is_file():
        models["msaexp table"] = read_psf_lookup(table)
        say(f"msaexp table: {table}")
    else:
        say("msaexp table not found (slitcombine calib fetch, or --table): left out")
    rows = []
    data = shared_data()
    ceers = None if data is None else data / "ceers-prism-1345_933"
    if ceers is not None and ceers.is_dir():
        files = sorted(str(p) for p in ceers.glob("*_phot.138.1345_933.fits"))
        res = {k: combine(files, name="ceers", lookup_prf=m) for k, m in models.items()}
        ref = res["optics (default)"].spec
        for label, r in res.items():
            row = {"data": "CEERS 1345_933 (flux / optics model's)", "model": label}
            w = ref["wave"].value
            for lo, hi in BANDS:
                sel = (w > lo) & (w < hi) & np.asarray(ref["valid"]) & np.asarray(r.spec["valid"])
                ratio = np.median(r.spec["flux"].value[sel] / ref["flux"].value[sel])
                row[f"{lo}-{hi} um"] = f"{ratio:.3f}"
            rows.append(row)
            say(f"CEERS {label}: {row}")
    with tempfile.TemporaryDirectory() as tmp:
        for grating in ("PRISM", "G395M"):
            for ypos in (0.0, 0.3):
                sim = simulate_observation(
                    Path(tmp) / f"{grating}{ypos}",
                    grating=grating,
                    snr=30,
                    seed=3,
                    n_crs=0,
                    intrinsic_sigma=0.0,
                    source_ypos=ypos,
                    nx=None if grating == "PRISM" else 600,
                )
                for label, m in models.items():
                    r = combine(sim.files, name="sim", lookup_prf=m)
                    ratio = _truth_ratio(r.spec, sim.truth)
                    rows.append(
                        {
                            "data": f"simulated {grating}, point source {ypos} off centre "
                            "(flux / truth)",
                            "model": label,
                            "all": f"{ratio:.3f}",
                        }
                    )
                    say(f"{grating} ypos {ypos} {label}: {ratio:.3f}")
    cols = ["data", "model"] + [f"{lo}-{hi} um" for lo, hi in BANDS] + ["all"]
    lines = [",".join(f'"{c}"' for c in cols)]
    for row in rows:
        lines.append(",".join(f'"{row.get(c, "")}"' for c in cols))
    out = STATIC / "prf_comparison.csv"
    out.write_text("\n".join(lines) + "\n")
    say(f"wrote {out.relative_to(REPO)}")


if __name__ == "__main__":
    main()
