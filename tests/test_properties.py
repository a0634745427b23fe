"""Property-based tests (hypothesis) on the header values and array contents of slit files.

A small simulated PRISM observation (three nods, ``nx=40`` cutouts) is copied for every
example and spoiled at random: NaN, +-inf, negative variances and random DQ bits in
random pixels of random exposures; random, zero or negative exposure times, shifted
dither offsets, odd source positions, pixel areas and nod numbers in the headers.

The property: :func:`slitcombine.combine` then either returns a product whose valid 1D
bins have a finite flux and a finite, positive error (invalid bins NaN), which can be
written, or raises a :class:`~slitcombine.errors.SlitCombineError` - never another
exception - and the input files are byte-identical afterwards.

Few examples (``derandomize=True`` so that CI sees the same ones every run; run with
``--hypothesis-seed`` to explore), no deadline: one example costs ~0.5-2 s on a busy
2-core machine.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from slitcombine import combine
from slitcombine.errors import SlitCombineError

SIM = {"nx": 40, "n_crs": 2, "n_hot": 2, "n_dead": 2, "snr": 15.0}

SETTINGS = settings(
    max_examples=10,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def trio(tmp_path_factory):
    """Three good exposures of one source (written once)."""
    from slitcombine.testing.simulate import simulate_observation

    folder = tmp_path_factory.mktemp("properties")
    sim = simulate_observation(
        folder / "sim", grating="PRISM", seed=21, source_id=7, slitlet_id=42, **SIM
    )
    return sim.files


def _sha(path):
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _combine_and_check(files, folder):
    """The property, on spoiled copies ``files``; returns 'ok' or the error class name."""
    before = [_sha(f) for f in files]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = combine([str(f) for f in files], name="prop")
            paths = result.write(folder / "out", figures=False)
    except SlitCombineError as exc:
        assert str(exc).strip()
        outcome = type(exc).__name__
        assert not (folder / "out").exists() or not list((folder / "out").iterdir())
    else:
        spec = result.spec
        valid = np.asarray(spec["valid"], bool)
        flux = np.asarray(spec["flux"].value, float)
        err = np.asarray(spec["err"].value, float)
        assert valid.any()
        assert np.all(np.isfinite(flux[valid]))
        assert np.all(np.isfinite(err[valid])) and np.all(err[valid] > 0)
        assert np.all(np.isnan(flux[~valid]) & np.isnan(err[~valid]))
        assert paths["spec"].stat().st_size > 0
        outcome = "ok"
    assert [_sha(f) for f in files] == before
    event(outcome)
    return outcome


def _copies(trio, folder):
    return [Path(shutil.copy2(f, folder / Path(f).name)) for f in trio]


# ---------------------------------------------------------------------------- arrays
spoil_arrays = st.fixed_dictionaries(
    {
        "seed": st.integers(0, 2**32 - 1),
        "exposures": st.sets(st.integers(0, 2), min_size=1),
        "nan": st.sampled_from([0.0, 0.02, 0.3, 0.9, 1.0]),
        "inf": st.floats(0.0, 0.2),
        "negative_var": st.floats(0.0, 0.3),
        "dq": st.floats(0.0, 0.6),
        "dq_bits": st.lists(st.integers(0, 31), min_size=1, max_size=4),
    }
)


@SETTINGS
@given(spoil=spoil_arrays)
def test_random_array_contents(trio, spoil):
    rng = np.random.default_rng(spoil["seed"])
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        files = _copies(trio, folder)
        for i in sorted(spoil["exposures"]):
            with fits.open(files[i], mode="update") as hdul:
                sci = hdul["SCI"].data
                shape = sci.shape
                sci[rng.random(shape) < spoil["nan"]] = np.nan
                inf = rng.random(shape) < spoil["inf"]
                sci[inf] = np.where(rng.random(int(inf.sum())) < 0.5, np.inf, -np.inf)
                for name in ("VAR_RNOISE", "VAR_POISSON"):
                    var = hdul[name].data
                    neg = rng.random(shape) < spoil["negative_var"]
                    var[neg] = -np.abs(var[neg]) - 1e-6
                dq = np.array(hdul["DQ"].data, dtype=np.uint32)
                bits = np.uint32(sum(1 << b for b in set(spoil["dq_bits"])))
                dq[rng.random(shape) < spoil["dq"]] |= bits
                hdul["DQ"].data = dq
        outcome = _combine_and_check(files, folder)
    if spoil["nan"] == 1.0 and spoil["exposures"] == {0, 1, 2}:
        assert outcome != "ok"  # nothing left to combine


# ---------------------------------------------------------------------------- headers
# mostly plausible values (None = unchanged), sometimes broken ones
exposure_header = st.fixed_dictionaries(
    {
        "exptime": st.one_of(st.none(), st.floats(1.0, 1e5), st.floats(-1e4, 1e5, allow_nan=False)),
        "yoffset_shift": st.one_of(st.just(0.0), st.floats(-0.8, 0.8)),
        "srcypos": st.one_of(st.none(), st.floats(-0.5, 0.5), st.floats(-2.0, 2.0)),
        "pixar_sr": st.sampled_from([None] * 8 + ["delete", 0.0, -4.8e-13, 1e-20, 1e-9]),
        "patt_num": st.sampled_from([None] * 4 + ["delete", 1, 2, 3, 9]),
    }
)


@SETTINGS
@given(headers=st.lists(exposure_header, min_size=3, max_size=3))
def test_random_header_values(trio, headers):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        files = _copies(trio, folder)
        for f, h in zip(files, headers, strict=True):
            with fits.open(f, mode="update") as hdul:
                prim, sci = hdul[0].header, hdul["SCI"].header
                if h["exptime"] is not None:
                    prim["EFFEXPTM"] = h["exptime"]
                    sci["XPOSURE"] = h["exptime"]
                prim["YOFFSET"] = prim["YOFFSET"] + h["yoffset_shift"]
                if h["srcypos"] is not None:
                    sci["SRCYPOS"] = h["srcypos"]
                if h["pixar_sr"] == "delete":
                    del sci["PIXAR_SR"]
                elif h["pixar_sr"] is not None:
                    sci["PIXAR_SR"] = h["pixar_sr"]
                if h["patt_num"] == "delete":
                    del prim["PATT_NUM"]
                elif h["patt_num"] is not None:
                    prim["PATT_NUM"] = h["patt_num"]
        outcome = _combine_and_check(files, folder)
    bad_time = any(h["exptime"] is not None and h["exptime"] <= 0 for h in headers)
    bad_area = any(h["pixar_sr"] in ("delete", 0.0, -4.8e-13) for h in headers)
    if bad_time or bad_area:
        assert outcome == "InputFileError"
