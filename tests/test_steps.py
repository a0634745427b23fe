"""The step table and the seed-keyword compatibility path (slitcombine.group.steps)."""

from __future__ import annotations

import logging
from types import SimpleNamespace

from slitcombine.group.steps import IGNORED_LEVEL, UNUSED, ignore_seed_keywords


def _group():
    return SimpleNamespace(name="g", meta={})


def test_ignore_seed_keywords_records_and_logs_once(caplog):
    g = _group()
    with caplog.at_level(logging.DEBUG, logger="slitcombine"):
        out = ignore_seed_keywords(g, "slit_hotpix", rnoise_percentile=90, verbose=UNUSED)
        again = ignore_seed_keywords(g, "slit_hotpix", rnoise_percentile=80)
    assert out == again == ["rnoise_percentile"]
    assert g.meta["ignored_kwargs"] == {"slit_hotpix": ["rnoise_percentile"]}
    lines = [r for r in caplog.records if "rnoise_percentile" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == IGNORED_LEVEL


def test_ignore_seed_keywords_nothing_given():
    g = _group()
    assert ignore_seed_keywords(g, "x", a=UNUSED, b=UNUSED) == []
    assert "ignored_kwargs" not in g.meta
    # None is a value given by the user, not "absent"
    assert ignore_seed_keywords(g, "x", a=None) == ["a"]
    assert g.meta["ignored_kwargs"] == {"x": ["a"]}
    assert repr(UNUSED) == "UNUSED"


def test_step_table_is_complete():
    """Every step names a SlitGroup method, a constructor keyword and a real bit."""
    import inspect

    from slitcombine.core.masks import Reject
    from slitcombine.group.slitgroup import SlitGroup
    from slitcombine.group.steps import STEPS, step_sections

    params = inspect.signature(SlitGroup.__init__).parameters
    for step in STEPS:
        assert callable(getattr(SlitGroup, step.method)), step.name
        assert step.keyword is None or step.keyword in params, step.name
        assert step.bit is None or isinstance(step.bit, Reject)
    kwargs = [p for p in params if p.endswith("_kwargs")]
    sections = step_sections()
    assert sorted(s.keyword for s in sections.values()) == sorted(kwargs)
    assert all(section == s.keyword[: -len("_kwargs")] for section, s in sections.items())
    # one name per step: meta['steps'] key = configuration section = keyword stem
    assert all(s.name == section for section, s in sections.items())
    names = [s.name for s in STEPS]
    # the outlier steps run twice (again on the sky-subtracted data), nothing else
    assert {n for n in names if names.count(n) > 1} == {"flag_trace", "flag_percentile"}


def test_config_sections_follow_the_table():
    from slitcombine.group.steps import step_sections
    from slitcombine.pipeline.config import STEP_METHODS, step_defaults

    for section, step in step_sections().items():
        assert STEP_METHODS[section] == step.method
    assert set(step_sections()) <= set(step_defaults())


def test_run_steps_order_and_skips():
    """run_steps calls the methods in table order and records the skipped steps."""
    from slitcombine.group.options import GroupOptions
    from slitcombine.group.steps import STEPS, run_steps

    calls = []

    class Fake:
        N = 3
        grating = "G395M"
        bad_shutter_names = []
        name = "fake"

        def __init__(self):
            self.meta = {"steps": {}, "diffs": False}

        def __getattr__(self, method):
            def call(**kwargs):
                calls.append((method, kwargs))

            return call

    fake = Fake()
    opt = GroupOptions(stuck_threshold=0, flag_2d_kwargs={"threshold": [-4, 4]})
    run_steps(fake, opt)
    methods = [m for m, _ in calls]
    expected = [s.method for s in STEPS if s.condition(fake, opt)]
    assert methods == expected
    assert "_force_grating_diffs" in methods  # G395M with diffs=False
    assert "mask_stuck_closed_shutters" not in methods
    assert fake.meta["steps"]["stuck_shutters"] == {"status": "SKIPPED"}
    assert fake.meta["steps"]["estimate_sky"] == {"status": "SKIPPED"}
    assert "grating_diffs" not in fake.meta["steps"]  # not a recorded step
    assert dict(calls[methods.index("flag_2d_outliers")][1]) == {"threshold": [-4, 4]}
    assert methods.count("flag_trace_outliers") == 1  # no sky fit: one pass


def test_constructor_records_steps_in_table_order(ceers_files):
    from slitcombine.group.slitgroup import SlitGroup
    from slitcombine.group.steps import STEPS

    g = SlitGroup(ceers_files, "order", estimate_sky_kwargs={}, bogus=1)
    recorded = [s.name for s in STEPS if s.recorded]
    order = list(dict.fromkeys(recorded))
    assert list(g.meta["steps"]) == order
    assert g.meta["ignored_kwargs"] == {"SlitGroup": ["bogus"]}
    assert g.options.estimate_sky_kwargs == {}
    assert "previous" in g.meta["steps"]["flag_trace"]  # ran twice


def test_config_checks_slit_hotpix_options():
    """Step sections whose method has no **kwargs sink are checked against it."""
    import pytest

    from slitcombine.errors import ConfigurationError
    from slitcombine.pipeline.config import Config

    ok = Config.from_dict({"slit_hotpix": {"rnoise_percentile": 90}})
    assert ok.group_kwargs()["slit_hotpix_kwargs"]["rnoise_percentile"] == 90
    with pytest.raises(ConfigurationError, match="rnoise_treshold"):
        Config.from_dict({"slit_hotpix": {"rnoise_treshold": 10}})
    with pytest.raises(ConfigurationError, match="grow_treshold"):
        Config.from_dict({"flag_percentile": {"grow_treshold": 3}})
