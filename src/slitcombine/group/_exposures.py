"""Reading the exposures of a group and stacking them: what the constructor starts from.

:func:`_read_group` reads every file (or slit of a ``MultiSlitModel``) and checks that
they belong together; the helpers convert the pipeline's sky and path-loss arrays.
"""

from __future__ import annotations

import logging

import numpy as np

from slitcombine.errors import ConfigurationError, IncompatibleExposuresError, InputFileError
from slitcombine.io.reading import read_slit

__all__: list[str] = []

log = logging.getLogger(__name__)


# -------------------------------------------------------------------- helpers
def _sky_pair(sky_arrays):
    w, f = (np.asarray(a, float) for a in sky_arrays)
    if w.shape != f.shape or w.ndim != 1 or w.size < 2:
        raise ConfigurationError(
            "sky_arrays must be two 1D arrays (wave um, flux uJy) of equal size"
        )
    order = np.argsort(w)
    return w[order], f[order]


def _pathloss_factor(slit, undo_pathloss):
    """The factor that undoes the pipeline path-loss correction of one exposure."""
    if not undo_pathloss:
        return None, "none"
    point = str(slit.slit.get("source_type") or "").upper() == "POINT"
    arr = slit.pathloss_ps if point else slit.pathloss_un
    name = "PATHLOSS_PS" if point else "PATHLOSS_UN"
    if arr is None:
        return None, "none"
    factor = arr.astype(np.float64)
    if undo_pathloss == 2 and not point and slit.pathloss_ps is not None:
        factor = factor / slit.pathloss_ps
        name = "PATHLOSS_UN/PATHLOSS_PS"
    return factor, name


def _read_group(files):
    """Read the exposures of a group and check that they belong together."""
    if files is None or len(files) == 0:
        raise InputFileError("<no files>", "empty list of files: a group needs at least one")
    items = []
    for f in files:
        if isinstance(f, tuple):
            items.append(read_slit(f[0], source_id=f[1]))
        else:
            items.append(read_slit(f))
    seen, taken = {}, {}
    for s in items:
        key = (s.checksum, s.extver)
        if key in seen:
            raise IncompatibleExposuresError(
                f"{s.path}: the same exposure is given twice (identical to {seen[key]})"
            )
        seen[key] = s.path
        # the same exposure in another file (a per-slit file and the MultiSlitModel it
        # was cut from): its photons would count twice
        start = s.meta["exposure"].get("start_time")
        ident = (start, s.meta["instrument"].get("detector"), s.slit.get("slitlet_id"))
        if start is not None and ident in taken:
            raise IncompatibleExposuresError(
                f"{s.path}: the same exposure as {taken[ident]} (EXPSTART {start}, "
                f"{ident[1]}, slitlet {ident[2]}) is given twice"
            )
        taken[ident] = s.path
    ref = items[0]
    for s in items[1:]:
        for label, a, b in (
            ("source", ref.slit.get("source_id"), s.slit.get("source_id")),
            ("slitlet", ref.slit.get("slitlet_id"), s.slit.get("slitlet_id")),
            ("grating", ref.grating, s.grating),
            ("filter", ref.filter, s.filter),
            (
                "detector",
                ref.meta["instrument"].get("detector"),
                s.meta["instrument"].get("detector"),
            ),
        ):
            if a != b:
                raise IncompatibleExposuresError(
                    f"{s.path}: {label} {b!r} differs from {a!r} of {ref.path.name}; "
                    "a group combines one source, slitlet, grating and detector"
                )
    return items
