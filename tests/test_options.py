"""The frozen option record of SlitGroup (slitcombine.group.options)."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from slitcombine.errors import ConfigurationError
from slitcombine.group.options import GroupOptions


def test_defaults_are_the_constructor_defaults():
    from slitcombine.group.slitgroup import SlitGroup

    params = inspect.signature(SlitGroup.__init__).parameters
    opt = GroupOptions()
    assert set(GroupOptions.keywords()) == set(params) - {
        "self",
        "files",
        "name",
        "sky_arrays",
        "lookup_prf",
        "kwargs",
    }
    for name in GroupOptions.keywords():
        default = params[name].default
        value = getattr(opt, name)
        if name == "bad_shutter_names":
            assert default is None and value == ()
        elif name.endswith("_kwargs") and default is not None:
            assert dict(value) == dict(default)
        else:
            assert value == default, name


def test_frozen_and_private_copies():
    given = {"threshold": [-5, 5]}
    opt = GroupOptions(flag_2d_kwargs=given, bad_shutter_names=[1])
    given["threshold"] = None
    assert opt.flag_2d_kwargs == {"threshold": [-5, 5]}
    with pytest.raises(dataclasses.FrozenInstanceError):
        opt.diffs = False
    with pytest.raises(TypeError):
        opt.flag_2d_kwargs["new"] = 1
    out = opt.step_kwargs("flag_2d_kwargs")
    out["new"] = 1  # a copy
    assert "new" not in opt.flag_2d_kwargs
    meta = opt.as_meta()
    assert meta["bad_shutter_names"] == [1] and meta["hot_cold_kwargs"] is None
    assert type(meta["flag_2d_kwargs"]) is dict


@pytest.mark.parametrize(
    "kwargs",
    [
        {"weight_type": "bogus"},
        {"position_key": "nope"},
        {"undo_barshadow": 3},
        {"bar_corr_mode": "x"},
        {"trace_with_xpos": True},
        {"hot_cold_kwargs": [1, 2]},
    ],
)
def test_invalid_options_raise(kwargs):
    with pytest.raises(ConfigurationError):
        GroupOptions(**kwargs)


def test_meta_results_and_options_as_given(ceers_files):
    """Steps rewrite meta (results); the record keeps the options as given."""
    from slitcombine.group.slitgroup import SlitGroup

    g = SlitGroup(ceers_files, "opts", num_shutters=-1)
    assert g.options.undo_barshadow == 2 and g.meta["undo_barshadow"] is False
    assert g.options.num_shutters == -1 and g.meta["num_shutters"] == 3
    assert g.options.nod_offset is None and g.meta["nod_offset"] > 0
    assert g.meta["num_shutters_requested"] == -1


def test_with_fs_offset_goes_the_seed_keyword_path(ceers_files, caplog):
    import logging

    from slitcombine.group.slitgroup import SlitGroup

    with caplog.at_level(logging.WARNING, logger="slitcombine"):
        g = SlitGroup(ceers_files, "fs", with_fs_offset=True, flag_trace_kwargs=None)
    assert g.meta["ignored_kwargs"] == {"SlitGroup": ["with_fs_offset"]}
    assert g.meta["with_fs_offset"] is True and g.options.with_fs_offset is True
    assert sum("with_fs_offset" in r.getMessage() for r in caplog.records) == 1
