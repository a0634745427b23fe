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
