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
