"""The batch's public names stay importable from ``slitcombine.pipeline.batch`` (issue 20).

The module was split by concern (task, sidecar, cluster, lock, report); users and the
documentation import from ``slitcombine.pipeline.batch``, the simulator's users from
``slitcombine.testing.simulate`` and ``slitcombine.pipeline.discovery``.
"""

from __future__ import annotations

import importlib

import pytest

HOMES = {
    "slitcombine.pipeline.batch": {
        "BatchError": "cluster",
        "SlitcombineWorkerSetup": "cluster",
        "output_lock": "lock",
        "BatchResult": "report",
        "SUMMARY_COLUMNS": "report",
        "write_summary": "report",
        "write_index": "report",
        "inputs_hash": "sidecar",
        "read_sidecar": "sidecar",
        "process_group": "task",
        "run_batch": "batch",
        "BatchInterrupted": "batch",
        "write_inputs": "batch",
        "groups_from_inputs": "batch",
    },
    "slitcombine.pipeline.discovery": {
        "GroupSpec": "manifest",
        "MANIFEST_COLUMNS": "manifest",
        "read_manifest": "manifest",
        "write_manifest": "manifest",
        "format_member": "manifest",
        "parse_member": "manifest",
        "manifest_table": "manifest",
        "discover": "discovery",
    },
}


@pytest.mark.parametrize(("module", "name"), [(m, n) for m, names in HOMES.items() for n in names])
def test_public_name_importable_from_its_old_module(module, name):
    old = importlib.import_module(module)
    home = importlib.import_module(f"slitcombine.pipeline.{HOMES[module][name]}")
    assert name in old.__all__
    assert getattr(old, name) is getattr(home, name)


def test_simulate_keeps_its_names():
    from slitcombine import instrument
    from slitcombine.testing import sim_models, simulate

    for name in simulate.__all__:
        assert hasattr(simulate, name)
    # the instrument's numbers, no copies
    assert simulate.PIXEL_SCALE is instrument.PIXEL_SCALE
    assert simulate.SHUTTER_PITCH is instrument.SHUTTER_PITCH
    assert simulate.FIXED_SLITS is instrument.FIXED_SLITS
    assert simulate.MSA_FAILED_OPEN == sim_models.MSA_FAILED_OPEN == 2**29
