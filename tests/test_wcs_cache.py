"""The memoised conversion of slit WCS trees (issue 19, item 1: ``slitcombine.io._asdf_cache``).

gwcs stays the evaluator: the cache only hands out again the astropy models and frames
that asdf's converters built for an identical subtree.  Checked here:

* bit-identical evaluation, cache off against cache on (cold, and served from the
  cache), of ``detector -> slit_frame`` (gwcs ``get_transform`` and step by step) and
  ``detector -> world`` (``wcs(x, y)``, with the bounding box) on every pixel: the CEERS
  trio, two of its files rewritten in the style of jwst 1.8-era files, simulated files of
  every grating (G235M as a MultiSlitModel) and a fixed slit;
* a changed subtree (a YAML scalar, a binary block, random leaves of the raw tree) is
  never served from the cache;
* the cache stays within its bounds over 1,000 distinct trees and the process RSS with
  it; concurrent conversions in threads agree with serial ones.
"""

from __future__ import annotations

import copy
import dataclasses
import gc
import re
import struct
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml

from slitcombine.core import geometry
from slitcombine.errors import ConfigurationError, SlitCombineError
from slitcombine.io import _asdf_cache
from slitcombine.io.reading import list_slits, read_slit
from slitcombine.testing.simulate import simulate_observation

ENV = _asdf_cache.ENV_VAR
GRATINGS = ("PRISM", "G140M", "G235M", "G395M", "G140H", "G235H", "G395H")


@pytest.fixture(autouse=True)
def _fresh_cache(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    _asdf_cache.clear()
    yield
    _asdf_cache.configure(
        max_entries=_asdf_cache.DEFAULT_MAX_ENTRIES, max_bytes=_asdf_cache.DEFAULT_MAX_BYTES
    )
    _asdf_cache.clear()


# --------------------------------------------------------------------------- helpers
def _wcs(exp, monkeypatch, on):
    """``exp.wcs`` freshly parsed and converted with the cache on or off."""
    if on:
        monkeypatch.delenv(ENV, raising=False)
    else:
        monkeypatch.setenv(ENV, "0")
    exp.release_asdf()
    try:
        return exp.wcs
    finally:
        monkeypatch.delenv(ENV, raising=False)


def _evaluate(wcs, shape):
    """detector -> slit_frame (gwcs, and step by step) and -> world on every pixel."""
    ny, nx = shape
    y, x = np.mgrid[:ny, :nx].astype(float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        slit = wcs.get_transform("detector", "slit_frame")(x, y)
        steps = geometry.evaluate_steps(wcs, "detector", "slit_frame", x, y)
        world = wcs(x, y)
    return [np.asarray(v) for v in (*slit, *steps, *world)]


def _assert_identical(a, b, what):
    assert len(a) == len(b), what
    for i, (u, v) in enumerate(zip(a, b, strict=True)):
        assert (u.dtype, u.shape) == (v.dtype, v.shape), f"{what}: output {i}"
        assert u.tobytes() == v.tobytes(), f"{what}: output {i} differs"
    assert np.isfinite(a[2]).sum() > 0.3 * a[2].size, f"{what}: no wavelengths"


def _built(fn):
    """``(result, nodes built, nodes seen)`` of a conversion."""
    before = _asdf_cache.cache_info()
    out = fn()
    after = _asdf_cache.cache_info()
    return (
        out,
        after["nodes_converted"] - before["nodes_converted"],
        after["nodes_seen"] - before["nodes_seen"],
    )


def _check_on_off(exps, monkeypatch, what):
    """Cache off, cold and served from the cache give the same bits; returns the
    ``(built, seen)`` of the cold and of the cached conversion of each exposure."""
    off = [_evaluate(_wcs(e, monkeypatch, False), e.shape) for e in exps]
    assert _asdf_cache.cache_info()["entries"] == 0  # switched off: nothing cached
    stats = []
    for label in ("cold", "cached"):
        for i, e in enumerate(exps):
            w, built, seen = _built(lambda e=e: _wcs(e, monkeypatch, True))
            _assert_identical(off[i], _evaluate(w, e.shape), f"{what} {i} {label}")
            stats.append((label, built, seen, len(w.pipeline)))
    for label, built, seen, n_steps in stats:
        if label == "cached":
            # every node from the cache: only the WCS and its steps are built anew
            assert built <= n_steps + 1, (built, seen)
    return off, stats


def _ceers_blocks(raw):
    """``(data offset, used size)`` of each binary block after the YAML document."""
    out = []
    i = raw.find(b"\xd3BLK", raw.index(b"\n...\n"))
    while i >= 0:
        hsize = struct.unpack(">H", raw[i + 4 : i + 6])[0]
        _, comp, alloc, used, _ = struct.unpack(">I4sQQQ", raw[i + 6 : i + 38])
        assert comp == b"\0\0\0\0"
        out.append((i + 6 + hsize, used))
        i = raw.find(b"\xd3BLK", i + 6 + hsize + alloc)
    return out


_BBOX = re.compile(
    r"^(?P<i> *)bounding_box: !transform/property/bounding_box-1\.0\.0\n"
    r"(?P=i)  ignore: \[\]\n(?P=i)  intervals:\n"
    r"(?P=i)    x0: (?P<x0>\[[^\]]*\])\n(?P=i)    x1: (?P<x1>\[[^\]]*\])\n(?P=i)  order: F\n",
    re.M,
)


def _older_style(raw):
    """The ASDF of a jwst 1.14 slit written the way jwst 1.8-era files were.

    gwcs ``wcs-1.0.0`` / ``step-1.0.0`` tags, the JWST transforms at their jwst-package
    versions (``tag:stsci.edu:jwst_pipeline/*-0.7.0``), bounding boxes as plain lists
    (C order) instead of ``transform/property/bounding_box`` nodes, and every array
    inline in the YAML (no binary blocks).
    """
    end = raw.index(b"\n...\n") + 5
    blocks = [raw[o : o + n] for o, n in _ceers_blocks(raw)]
    text = raw[:end].decode()
    text = text.replace("!<tag:stsci.edu:gwcs/wcs-1.2.0>", "!<tag:stsci.edu:gwcs/wcs-1.0.0>")
    text = text.replace("!<tag:stsci.edu:gwcs/step-1.1.0>", "!<tag:stsci.edu:gwcs/step-1.0.0>")
    text, n_jwst = re.subn(r"(jwst_pipeline/\w+)-1\.0\.0>", r"\1-0.7.0>", text)
    text, n_bbox = _BBOX.subn(lambda m: f"{m['i']}bounding_box: [{m['x1']}, {m['x0']}]\n", text)
    assert n_jwst >= 5 and n_bbox == 2
    lines = text.split("\n")
    n_inline = 0
    for k, line in enumerate(lines):
        m = re.match(r"^( *)source: (\d+)$", line)
        if not m:
            continue
        info = {}
        for follow in lines[k + 1 : k + 6]:
            mm = re.match(rf"^{m[1]}(datatype|byteorder|shape): (.*)$", follow)
            if mm:
                info[mm[1]] = mm[2]
        dtype = np.dtype(info["datatype"]).newbyteorder(
            "<" if info["byteorder"] == "little" else ">"
        )
        shape = yaml.safe_load(info["shape"])
        arr = np.frombuffer(blocks[int(m[2])], dtype)[: int(np.prod(shape))].reshape(shape)
        flow = yaml.safe_dump(arr.tolist(), default_flow_style=True, width=1e9).strip()
        lines[k] = f"{m[1]}data: {flow}"
        n_inline += 1
    assert n_inline == len(blocks) > 10
    return "\n".join(lines).encode()


def _raw_wcs(exp):
    """A deep copy of the raw (tagged, unconverted) WCS node of a freshly parsed tree."""
    exp.release_asdf()
    return copy.deepcopy(exp._slit_node["meta"].data["wcs"])


def _float_leaves(node, path=()):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _float_leaves(v, (*path, k))
    elif isinstance(node, list):
        for k, v in enumerate(node):
            yield from _float_leaves(v, (*path, k))
    elif type(node) is float and np.isfinite(node):
        yield path


def _set_leaf(tree, path, func):
    node = tree
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = func(node[path[-1]])


# --------------------------------------------------------------------------- identical
def test_ceers_bit_identical_and_reused(ceers_files, monkeypatch):
    exps = [read_slit(f) for f in ceers_files]
    _, stats = _check_on_off(exps, monkeypatch, "CEERS")
    cold = [(built, seen) for label, built, seen, _ in stats if label == "cold"]
    assert cold[0][0] > 0.7 * cold[0][1]  # exposure 1: (nearly) everything built
    for built, seen in cold[1:]:
        # exposures 2 and 3 share the instrument model with exposure 1 (measured: 55
        # and 61 of 380 tagged nodes built)
        assert built < 0.25 * seen, (built, seen)
    # each exposure owns its WCS and pipeline; the unchanged models are shared
    w = [e.wcs for e in exps]
    assert w[0] is not w[1] and w[0].pipeline[1] is not w[1].pipeline[1]
    assert w[0].pipeline[1].transform is w[1].pipeline[1].transform  # sca -> gwa
    assert w[0].pipeline[-2].transform is not w[1].pipeline[-2].transform  # pointing


def test_older_style_files_bit_identical(ceers_files, monkeypatch):
    new = [read_slit(f) for f in ceers_files[:2]]
    old = [dataclasses.replace(e, _asdf_bytes=_older_style(e._asdf_bytes)) for e in new]
    assert b"gwcs/wcs-1.0.0" in old[0]._asdf_bytes and b"\xd3BLK" not in old[0]._asdf_bytes
    off_old, stats = _check_on_off(old, monkeypatch, "jwst 1.8 style")
    assert stats[1][1] < 0.25 * stats[1][2]  # exposure 2 reuses exposure 1's models
    # the rewrite describes the same WCS: same numbers as the jwst 1.14 file
    _assert_identical(_evaluate(_wcs(new[0], monkeypatch, False), new[0].shape), off_old[0], "old")


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    """Exposures of every grating, a fixed slit and a MultiSlitModel (2 nods each)."""
    base = tmp_path_factory.mktemp("wcs_cache_sims")
    opts = {"nx": 48, "n_nods": 2, "noise": False, "n_crs": 0, "n_hot": 0, "n_dead": 0}
    out = {}
    for g in GRATINGS:
        # G235M as a MultiSlitModel of 2 sources (the slit WCS under tree['slits'][i])
        extra = {"multi_slit_sources": 2} if g == "G235M" else {}
        out[g] = simulate_observation(base / g, grating=g, **opts, **extra).files
    out["S200A1"] = simulate_observation(base / "fs", fixed_slit="S200A1", **opts).files
    return out


@pytest.mark.parametrize("name", [*GRATINGS, "S200A1"])
def test_simulated_bit_identical(simulated, name, monkeypatch):
    exps = []
    for f in sorted(Path(p) for p in simulated[name]):
        exps.extend(read_slit(f, extver=s["extver"]) for s in list_slits(f))
    assert len(exps) >= 2
    if name == "G235M":
        assert {e._slit_index for e in exps} == {0, 1}  # a MultiSlitModel
    if name == "S200A1":
        assert all(e.is_fixed_slit for e in exps)
    _check_on_off(exps, monkeypatch, name)


# --------------------------------------------------------------------------- changes
def test_changed_yaml_scalar_not_served_from_cache(ceers_files, monkeypatch):
    """One detector offset (DMS -> SCA shift, 658 -> 659 rows) edited in the YAML."""
    e = read_slit(ceers_files[0])
    ref_wcs = _wcs(e, monkeypatch, True)  # fills the cache with the original
    raw = e._asdf_bytes
    assert raw.count(b"offset: 658.0") == 1
    edited = dataclasses.replace(e, _asdf_bytes=raw.replace(b"offset: 658.0", b"offset: 659.0"))
    w, built, seen = _built(lambda: edited.wcs)
    assert 0 < built < 0.2 * seen  # only the nodes above the edit are built again
    ny, nx = e.shape
    y, x = np.mgrid[: ny - 1, :nx].astype(float)
    # the edit moves the detector by exactly one row
    got = w.get_transform("detector", "slit_frame")(x, y)
    want = ref_wcs.get_transform("detector", "slit_frame")(x, y + 1)
    _assert_identical([np.asarray(v) for v in got], [np.asarray(v) for v in want], "edit")
    _assert_identical(
        _evaluate(w, e.shape), _evaluate(_wcs(edited, monkeypatch, False), e.shape), "edited"
    )
    # the original still evaluates as before
    _assert_identical(
        _evaluate(_wcs(e, monkeypatch, True), e.shape), _evaluate(ref_wcs, e.shape), "orig"
    )


def _affine(wcs, name="fpa_affine_d2s"):
    (model,) = [m for m in wcs.pipeline[1].transform.traverse_postorder() if m.name == name]
    return model


def test_changed_block_not_served_from_cache(ceers_files, monkeypatch):
    """The YAML is the same, one float of a binary block (an affine translation) is not."""
    e = read_slit(ceers_files[0])
    ref = _affine(_wcs(e, monkeypatch, True)).translation.value.copy()
    raw = bytearray(e._asdf_bytes)
    offset, size = _ceers_blocks(bytes(raw))[1]  # block 1: translation of fpa_affine_d2s
    assert size == 16
    value = struct.unpack("<d", raw[offset : offset + 8])[0]
    assert value == ref[0]
    raw[offset : offset + 8] = struct.pack("<d", value + 1e-7)  # FPA metres
    edited = dataclasses.replace(e, _asdf_bytes=bytes(raw))
    w = edited.wcs
    np.testing.assert_array_equal(_affine(w).translation.value, [ref[0] + 1e-7, ref[1]])
    _assert_identical(
        _evaluate(w, e.shape), _evaluate(_wcs(edited, monkeypatch, False), e.shape), "block"
    )
    assert _affine(_wcs(e, monkeypatch, True)).translation.value[0] == ref[0]


def test_random_leaf_edits_not_served_from_cache(ceers_files):
    """Random float leaves of the raw tree changed: cached conversion == asdf's own."""
    e = read_slit(ceers_files[1])
    original = _raw_wcs(e)
    af = e._asdf_file
    # the cache holds the original
    ref = _evaluate(_asdf_cache.convert(af, copy.deepcopy(original)), e.shape)
    leaves = list(_float_leaves(original))
    assert len(leaves) > 100  # (the arrays are in binary blocks)
    rng = np.random.default_rng(19)
    n_changed = 0
    for i in rng.choice(len(leaves), 6, replace=False):
        tree = copy.deepcopy(original)
        _set_leaf(tree, leaves[i], lambda v: v * (1 + 1e-6) + 1e-9)
        plain = _asdf_cache.convert(af, copy.deepcopy(tree), use_cache=False)
        cached, built, seen = _built(lambda t=tree: _asdf_cache.convert(af, t))
        assert 0 < built < seen
        values = _evaluate(cached, e.shape)
        _assert_identical(_evaluate(plain, e.shape), values, str(leaves[i]))
        n_changed += any(u.tobytes() != v.tobytes() for u, v in zip(ref, values, strict=True))
    assert n_changed >= 3  # most edits move some pixel (others: an unused inverse ...)


# --------------------------------------------------------------------------- bounds
def _rss_mib():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * 4096 / 2**20


def test_memory_bounded_over_1000_trees(ceers_files):
    """1,000 distinct trees (a pointing transform with a perturbed factor each)."""
    if not Path("/proc/self/statm").exists():
        pytest.skip("no /proc/self/statm")
    e = read_slit(ceers_files[0])
    sub = _raw_wcs(e)["steps"][6]["transform"]  # v2v3 -> v2v3vacorr
    path = next(_float_leaves(sub))
    af = e._asdf_file
    max_entries, max_bytes = 64, 256 * 1024
    _asdf_cache.configure(max_entries=max_entries, max_bytes=max_bytes)
    rss = None
    for k in range(1000):
        tree = copy.deepcopy(sub)
        _set_leaf(tree, path, lambda v, k=k: v + k * 1e-9)
        _asdf_cache.convert(af, tree)
        info = _asdf_cache.cache_info()
        assert info["entries"] <= max_entries and info["bytes"] <= max_bytes
        if k == 199:
            gc.collect()
            rss = _rss_mib()
    gc.collect()
    growth = _rss_mib() - rss
    info = _asdf_cache.cache_info()
    assert info["misses"] >= 3000 and info["evictions"] >= 2900  # distinct trees
    # no cached node holds an evicted one: the estimate counts what the cache keeps
    items = _asdf_cache._CACHE.items
    assert all(c in items for _, _, children in items.values() for c in children)
    # unbounded, the same loop keeps ~15 MiB more (~4,000 nodes of ~5 kB)
    assert growth < 6.0, growth


def test_cache_keeps_no_file_alive(ceers_files):
    """Cached models hold their arrays, not the ASDF file (nor its tree or blocks)."""
    import weakref

    e = read_slit(ceers_files[0])
    ref_wcs = e.wcs
    af = weakref.ref(e._asdf_file)
    e.release_asdf()
    gc.collect()
    assert af() is None and _asdf_cache.cache_info()["entries"] > 200
    again = read_slit(ceers_files[0])
    _assert_identical(_evaluate(again.wcs, e.shape), _evaluate(ref_wcs, e.shape), "again")


def test_switch_and_limits(ceers_files, monkeypatch):
    e = read_slit(ceers_files[0])
    monkeypatch.setenv(ENV, "off")
    assert not _asdf_cache.enabled()
    e.wcs  # noqa: B018
    assert _asdf_cache.cache_info()["entries"] == 0
    monkeypatch.setenv(ENV, "1")  # 1 MiB
    e.release_asdf()
    e.wcs  # noqa: B018
    info = _asdf_cache.cache_info()
    assert info["max_bytes"] == 2**20 and 0 < info["bytes"] <= 2**20
    for bad in (0, -3, 1.5, True, "10"):
        with pytest.raises(ConfigurationError) as err:
            _asdf_cache.configure(max_entries=bad)
        assert isinstance(err.value, SlitCombineError)


def test_threads_agree(ceers_files, monkeypatch):
    """Dask workers convert in threads: concurrent conversions, one shared cache."""
    serial = [read_slit(f) for f in ceers_files]
    ref = [_evaluate(_wcs(e, monkeypatch, False), e.shape) for e in serial]
    exps = [read_slit(f) for f in [*ceers_files, *ceers_files]]  # 6 exposure objects
    out = [None] * len(exps)
    errors = []

    def work(i):
        try:
            out[i] = _evaluate(exps[i].wcs, exps[i].shape)
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(exps))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for i, values in enumerate(out):
        _assert_identical(ref[i % 3], values, f"thread {i}")


def test_yaml_parsed_with_libyaml():
    """asdf reads the tree with libyaml's parser (PyYAML's C loader), once per file."""
    from asdf import yamlutil

    if not getattr(yaml, "__with_libyaml__", False):
        pytest.skip("PyYAML without libyaml")
    assert issubclass(yamlutil.AsdfLoader, yaml.CSafeLoader)
