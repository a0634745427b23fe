"""The JWST DQ flag table, read from stdatamodels' source without running it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from slitcombine.core.masks import _literal_pixel_table


def test_dq_flags_without_astropy_nddata_or_the_datamodels():
    """A fresh interpreter reads the flags importing neither the JWST datamodels nor
    astropy.nddata / astropy.wcs (which the flag module imports only to re-export)."""
    code = (
        "import sys, json; from slitcombine.core.masks import dq_flags; f = dq_flags(); "
        "print(json.dumps([f, sorted(m for m in ('stdatamodels.jwst.datamodels', "
        "'astropy.nddata', 'astropy.wcs') if m in sys.modules)]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    flags, imported = json.loads(out.stdout)
    from stdatamodels.jwst.datamodels.dqflags import pixel

    assert flags == dict(pixel)
    assert imported == []


def test_literal_pixel_table_evaluates_powers_and_rejects_code():
    src = "import os\npixel = {'GOOD': 0, 'A': 2**3, 'B': 1 << 4, 'C': 2**0 | 2**1}\nother = 1\n"
    assert _literal_pixel_table(src) == {"GOOD": 0, "A": 8, "B": 16, "C": 3}
    with pytest.raises(ValueError, match="not a literal"):
        _literal_pixel_table("pixel = {'A': os.getpid()}")
    with pytest.raises(ValueError, match="no literal"):
        _literal_pixel_table("flags = {'A': 1}")
