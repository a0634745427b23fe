"""``SlitGroup`` methods for the exposures' metadata tables (``info``, ``slit_metadata``).

``SlitGroup`` inherits this class, which holds no state of its own.
"""

from __future__ import annotations

import logging

import numpy as np
from astropy.table import Table

from slitcombine.core import nods
from slitcombine.errors import InputFileError

__all__ = ["MetadataMethods"]

log = logging.getLogger(__name__)


class MetadataMethods:
    """Mixin of :class:`slitcombine.SlitGroup`: the exposures' metadata tables."""

    # ================================================================ reading
    def parse_metadata(self):
        """Table of the exposures' metadata, one row per exposure (file order).

        Returns
        -------
        astropy.table.Table
            Columns include ``filename``, ``visit``, ``xstart``, ``ystart``, ``nx``,
            ``ny``, the dither keys (``position_number``, ``x_offset``, ``y_offset`` in
            arcsec, ``nod_type`` ...), ``detector``, ``grating``, ``filter``,
            ``lamp_mode``, ``exptime`` (s), ``shutter_state``, ``source_xpos``,
            ``source_ypos``, ``x_position``/``y_position`` (offsets rounded to 0.1
            arcsec) and ``y_index``.
        """
        rows = []
        for s in self.slits:
            inst, dith, expo = s.meta["instrument"], s.meta["dither"], s.meta["exposure"]
            rows.append(
                {
                    "filename": s.path.name,
                    "visit": s.visit,
                    "xstart": s.slit["xstart"],
                    "ystart": s.slit["ystart"],
                    "nx": s.shape[1],
                    "ny": s.shape[0],
                    "position_number": dith.get("position_number"),
                    "total_points": dith.get("total_points"),
                    "nod_type": dith.get("nod_type") or "",
                    "x_offset": _float(dith.get("x_offset")),
                    "y_offset": _float(dith.get("y_offset")),
                    "detector": inst.get("detector") or "",
                    "grating": (inst.get("grating") or "").upper(),
                    "filter": (inst.get("filter") or "").upper(),
                    "lamp_mode": "FIXEDSLIT" if s.is_fixed_slit else "MSASPEC",
                    "exptime": _float(expo.get("exposure_time")),
                    "effective_exposure_time": _float(expo.get("effective_exposure_time")),
                    "shutter_state": s.slit.get("shutter_state") or "",
                    "slitlet_id": s.slit.get("slitlet_id"),
                    "source_id": s.slit.get("source_id"),
                    "source_name": s.slit.get("source_name") or "",
                    "source_ra": _float(s.slit.get("source_ra")),
                    "source_dec": _float(s.slit.get("source_dec")),
                    "source_xpos": _float(s.slit.get("source_xpos")),
                    "source_ypos": _float(s.slit.get("source_ypos")),
                }
            )
        info = Table(rows=rows)
        for col in ("position_number", "total_points"):
            if any(v is None for v in info[col]):
                raise InputFileError(
                    self.slits[[v is None for v in info[col]].index(True)].path,
                    f"dither keyword for {col} (PATT_NUM/NUMDTHPT) is missing",
                )
        info["x_position"] = np.round(info["x_offset"] * 10) / 10.0
        info["y_position"] = np.round(info["y_offset"] * 10) / 10.0
        info["y_index"] = nods.y_index(info["y_offset"])
        # Background slit: no catalogue source.  Positions are then taken from the
        # dither offsets as in any slit; record it for the trace.
        self.meta["background_slit"] = bool(
            np.all(~np.isfinite(info["source_ra"]) | (np.abs(info["source_ra"]) < 1e-4))
        )
        return info

    def slit_metadata(self):
        """Table of the slit metadata, one row per exposure (the ``SLITS`` output table).

        Returns
        -------
        astropy.table.Table
            File name and checksum, cutout size, trace polynomial, pixel scale, the
            slit attributes and the dither / exposure / instrument / pointing keys.
        """
        rows = []
        for i, s in enumerate(self.slits):
            row = {
                "filename": s.path.name,
                "checksum": s.checksum,
                "nx": s.shape[1],
                "ny": s.shape[0],
            }
            for k, c in enumerate(self.base_coeffs[i][::-1]):
                row[f"trace_c{k}"] = float(c)
            row["slit_pixel_scale"] = self.slit_pixel_scale
            row["source_ypixel_position"] = self.source_ypixel_position
            for key, value in s.slit.items():
                row[key] = "" if value is None else value
            for group in ("instrument", "exposure", "pointing", "dither"):
                for key, value in s.meta[group].items():
                    row.setdefault(key, "" if value is None else value)
            rows.append(row)
        names = list(rows[0])
        for r in rows[1:]:
            names += [k for k in r if k not in names]
        cols = {k: [r.get(k, "") for r in rows] for k in names}
        for k, vals in cols.items():
            if len({type(v) for v in vals}) > 1:
                cols[k] = [str(v) for v in vals]
        return Table(cols, names=names)


def _float(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return np.nan
