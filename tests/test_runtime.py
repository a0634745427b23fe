"""Runtime settings of compute calls: the cyclic garbage collector is paused and restored."""

from __future__ import annotations

import gc

import pytest

from slitcombine._threads import compute_call, paused_gc


def test_paused_gc_restores_state():
    assert gc.isenabled()
    with paused_gc():
        assert not gc.isenabled()
        with paused_gc():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the inner call does not switch it back on
    assert gc.isenabled()


def test_paused_gc_respects_a_disabled_collector():
    gc.disable()
    try:
        with paused_gc():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_compute_call_restores_after_error():
    @compute_call
    def boom():
        assert not gc.isenabled()
        raise ValueError("x")

    with pytest.raises(ValueError):
        boom()
    assert gc.isenabled()


def test_slitgroup_leaves_the_collector_on(ceers_group):
    # ceers_group was built through the decorated constructor
    assert ceers_group.N == 3
    assert gc.isenabled()


def test_combine_group_runs_as_a_compute_call(ceers_files, monkeypatch):
    """combine_group (trace fit, resampling, extraction) runs on one BLAS thread with the
    collector paused, like the constructor, and restores both afterwards."""
    from threadpoolctl import threadpool_info

    from slitcombine import SlitGroup
    from slitcombine.pipeline.combine import combine_group

    group = SlitGroup(ceers_files, "runtime")
    seen = {}
    measure = group.get_flat_diff_arrays

    def spy(*args, **kwargs):
        seen["gc"] = gc.isenabled()
        seen["blas"] = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
        return measure(*args, **kwargs)

    monkeypatch.setattr(group, "get_flat_diff_arrays", spy)
    combine_group(group, fit_traces=False)
    assert seen["gc"] is False
    assert seen["blas"] and all(n == 1 for n in seen["blas"])
    assert gc.isenabled()
