"""Shared test fixtures.

Real data are kept in ``tests/data`` (the three public CEERS exposures, their visit's sky
table and test copies of a few of msaexp's calibration tables), so that a fresh clone runs
every test.  A folder missing there is looked up in ``../shared/data`` next to the
repository root, or in ``$SLITCOMBINE_SHARED/data``; tests that need it skip when it is
absent everywhere, and fail instead under CI (``CI=true``).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
TEST_DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(autouse=True, scope="session")
def _isolated_calibration_tables(tmp_path_factory):
    """Every test starts without fetched calibration tables (an empty cache folder).

    Set in ``os.environ`` so that the command-line subprocesses of the tests see it too;
    a user's ``slitcombine calib fetch`` or ``$SLITCOMBINE_CALIB_DIR`` must not change
    what the tests measure.  Tests of the tables point at their own folders.
    """
    saved = {k: os.environ.get(k) for k in ("SLITCOMBINE_CACHE_DIR", "SLITCOMBINE_CALIB_DIR")}
    os.environ["SLITCOMBINE_CACHE_DIR"] = str(tmp_path_factory.mktemp("empty-cache"))
    os.environ.pop("SLITCOMBINE_CALIB_DIR", None)
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def shared_dir():
    """The shared reference folder, or None."""
    env = os.environ.get("SLITCOMBINE_SHARED")
    candidates = [Path(env)] if env else []
    candidates.append(REPO_ROOT.parent / "shared")
    for c in candidates:
        if (c / "data").is_dir():
            return c
    return None


def _need_shared(what):
    if (TEST_DATA / what).is_dir():
        return TEST_DATA / what
    base = shared_dir()
    path = None if base is None else base / "data" / what
    if path is None or not path.exists():
        msg = f"shared data {what!r} not found (../shared or $SLITCOMBINE_SHARED)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    return path


@pytest.fixture(scope="session")
def ceers_dir():
    """Folder of the three real CEERS PRISM exposures of source 1345_933."""
    return _need_shared("ceers-prism-1345_933")


@pytest.fixture(scope="session")
def ceers_files(ceers_dir):
    """The three real CEERS exposures, in exposure order."""
    files = sorted(str(p) for p in ceers_dir.glob("*_phot.138.1345_933.fits"))
    assert len(files) == 3
    return files


@pytest.fixture(scope="session")
def msaexp_calib_dir():
    """Folder of calibration tables in msaexp's formats."""
    return _need_shared("msaexp-calib")


@pytest.fixture(scope="session")
def ceers_group(ceers_files):
    """A SlitGroup of the CEERS trio with default options (built once)."""
    from slitcombine import SlitGroup

    return SlitGroup(ceers_files, "1345_933")
