"""Atomic writes: complete files only, with the permissions of a normal file."""

from __future__ import annotations

import os
import stat

import pytest

from slitcombine._atomic import atomic_path


def test_atomic_path_success_respects_umask(tmp_path):
    old = os.umask(0o022)
    try:
        target = tmp_path / "out.txt"
        with atomic_path(target) as tmp:
            with open(tmp, "w") as fh:
                fh.write("done")
        assert target.read_text() == "done"
        assert stat.S_IMODE(target.stat().st_mode) == 0o644  # not mkstemp's 0o600
        assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]
    finally:
        os.umask(old)


def test_atomic_path_failure_leaves_nothing(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        with open(tmp, "w") as fh:
            fh.write("half")
        raise RuntimeError("interrupted")
    assert target.read_text() == "old"  # the previous file is untouched
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_atomic_write_text_creates_folder(tmp_path):
    from slitcombine._atomic import atomic_write_text

    target = tmp_path / "new" / "summary.ecsv"
    assert atomic_write_text(target, "# table\n") == target
    assert target.read_text() == "# table\n"
    assert [p.name for p in target.parent.iterdir()] == ["summary.ecsv"]
