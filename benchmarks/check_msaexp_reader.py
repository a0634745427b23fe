"""Interoperability check: msaexp's own spectrum readers on a slitcombine product.

Combines the CEERS trio with slitcombine (defaults), writes ``{name}.spec.fits`` into a
temporary folder and reads it back in the msaexp virtual environment with
``msaexp.spectrum.SpectrumSampler`` and ``msaexp.spectrum.read_spectrum`` (through
``msaexp_peer.py read_spectrum``, a subprocess: msaexp is never imported here).  Then
compares what msaexp sees with the ``SPEC1D`` table slitcombine wrote:

* the wavelength grid (um), the fluxes and errors (uJy) of the valid bins, exactly
  (msaexp assumes um and uJy; it reads the values, not the units);
* msaexp's validity mask (finite, ``err > 0``, ``flux != 0``) against our ``valid``.

Exit status 0 when everything agrees, 1 otherwise.

Usage::

    python benchmarks/check_msaexp_reader.py [--msaexp-python P]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _peer  # noqa: E402

#: The products read back: the defaults, and a wavelength grid wider than the data
#: (0.9-5.6 um; the CEERS cutout on NRS2 covers 1.47-5.29 um) so that msaexp meets
#: invalid bins (NaN, ``valid = False``) too.
CASES = {
    "defaults": {},
    "grid wider than the data": {"wave_grid": np.linspace(0.9, 5.6, 400)},
}


def _ours(directory):
    from astropy.table import Table

    from slitcombine import combine

    files = [str(f) for f in _peer.ceers_files()]
    out = {}
    for i, (case, options) in enumerate(CASES.items()):
        result = combine(files, name=f"case{i}", **options)
        path = Path(result.write(directory, figures=False)["spec"])
        out[case] = (path, Table.read(path, hdu="SPEC1D"))
    return out


def _compare(ours, seen):
    """Checks (label -> bool) of what msaexp saw against our SPEC1D table."""
    wave = np.asarray(ours["wave"], float)
    flux = np.asarray(ours["flux"], float)
    err = np.asarray(ours["err"], float)
    valid = np.asarray(ours["valid"], bool)

    def arr(values):
        return np.array([np.nan if v is None else v for v in values], float)

    m_wave, m_flux, m_err = arr(seen["wave"]), arr(seen["flux"]), arr(seen["err"])
    m_valid = np.asarray(seen["sampler_valid"], bool)
    same_size = m_wave.size == wave.size
    return {
        "same number of bins": same_size,
        "wavelengths identical": same_size and bool(np.array_equal(m_wave, wave)),
        "fluxes of valid bins identical": same_size
        and bool(np.array_equal(m_flux[valid], flux[valid])),
        "errors of valid bins identical": same_size
        and bool(np.array_equal(m_err[valid], err[valid])),
        "msaexp's valid mask == ours": same_size and bool(np.array_equal(m_valid, valid)),
        "read_spectrum fluxes == sampler's": bool(
            np.array_equal(arr(seen["read_spectrum_flux"]), m_flux, equal_nan=True)
        ),
    }, (wave.size, int(valid.sum()), int(m_valid.sum()))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--msaexp-python", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        products = _ours(tmp)
        paths = [str(path) for path, _ in products.values()]
        peer = _peer.run_peer(args.msaexp_python, "read_spectrum", paths)
    print(f"msaexp {peer['versions'].get('msaexp')}: SpectrumSampler and read_spectrum")
    all_ok = True
    for (case, (path, ours)), seen in zip(products.items(), peer["spectra"], strict=True):
        checks, (n, n_valid, m_valid) = _compare(ours, seen)
        units = ", ".join(f"{c} {ours[c].unit}" for c in ("wave", "flux", "err"))
        print(f"{case} ({path.name}; {units}): {n} bins, {n_valid} valid (msaexp {m_valid})")
        for label, ok in checks.items():
            print(f"  {'ok  ' if ok else 'FAIL'} {label}")
        all_ok &= all(checks.values())
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
