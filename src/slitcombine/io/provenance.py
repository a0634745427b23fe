"""Provenance of a combined spectrum: software versions, every parameter, the inputs.

:func:`collect` gathers it in a plain dict; :func:`provenance_table` turns it into the
``PROVENANCE`` table of the output file (one row per item, values as JSON text) and
:func:`header_cards` into a few FITS header cards (versions, inputs and checksums, the
main extraction parameters).
"""

from __future__ import annotations

import json
import logging
import platform
from datetime import UTC, datetime

import numpy as np
from astropy.table import Table

from slitcombine._version import __version__

__all__ = ["collect", "provenance_table", "header_cards", "to_jsonable"]

log = logging.getLogger(__name__)


def to_jsonable(value):
    """A JSON-serialisable copy of ``value`` (numpy scalars/arrays, paths, sets ...).

    Parameters
    ----------
    value : object
        Any nesting of dicts, lists, tuples, numpy values and strings.

    Returns
    -------
    object
        Built from dict, list, str, int, float, bool and None only; non-finite floats
        become strings (``"nan"``, ``"inf"``) and unknown objects their ``repr``.
    """
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return [to_jsonable(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool | int | str) or value is None:
        return value
    if isinstance(value, float):
        return value if np.isfinite(value) else str(value)
    return repr(value)


def _small(value, max_size=16):
    """True for scalars and short sequences (fit summaries, not per-pixel arrays)."""
    if isinstance(value, dict):
        return False
    try:
        return np.size(value) <= max_size
    except (TypeError, ValueError):
        return False


def _versions():
    import astropy
    import scipy

    return {
        "slitcombine": __version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "astropy": astropy.__version__,
    }


def collect(meta, parameters, inputs, fit=None):
    """Provenance of a combination.

    Parameters
    ----------
    meta : dict
        The group's ``meta`` (every constructor option and what each step did).
    parameters : dict
        Every parameter of the combination/extraction (resolved values).
    inputs : astropy.table.Table
        The group's ``slit_metadata()`` (``filename`` and ``checksum`` columns).
    fit : dict, optional
        The group's trace fit (``SlitGroup.fit``), if any.

    Returns
    -------
    dict
        ``versions``, ``date`` (UTC, ISO), ``parameters``, ``group_meta``, ``inputs``
        (list of ``{filename, checksum}``), ``trace_fit`` (the scalar and short
        entries of the group's ``fit``, if any; per-pixel arrays are left out) and
        ``calibration``: the calibration tables the group read, with their set
        (source, version), sha256 and the default steps skipped for lack of one
        (:func:`slitcombine.io.calib.tables_provenance`; ``summary`` is ``'none'`` when no
        table was used).
    """
    from slitcombine.io.calib import tables_provenance

    files = [{"filename": str(r["filename"]), "checksum": str(r["checksum"])} for r in inputs]
    fit_summary = None
    if isinstance(fit, dict):
        fit_summary = {
            str(k): {kk: vv for kk, vv in v.items() if _small(vv)} if isinstance(v, dict) else v
            for k, v in fit.items()
        }
    return {
        "versions": _versions(),
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
        "parameters": to_jsonable(parameters),
        "group_meta": to_jsonable(meta),
        "inputs": files,
        "trace_fit": to_jsonable(fit_summary),
        "calibration": to_jsonable(tables_provenance(meta)),
    }


def provenance_table(prov):
    """The ``PROVENANCE`` table: one row per item, ``value`` as JSON text.

    Parameters
    ----------
    prov : dict
        Output of :func:`collect`.

    Returns
    -------
    astropy.table.Table
        Columns ``section`` (``versions``, ``parameters``, ``group_meta``, ``inputs``,
        ``trace_fit``, ``calibration``, ``date``), ``key`` and ``value`` (JSON).
    """
    rows = []
    for section, content in prov.items():
        if isinstance(content, dict):
            for key, value in content.items():
                rows.append((section, str(key), json.dumps(to_jsonable(value), sort_keys=True)))
        elif isinstance(content, list):
            for i, value in enumerate(content):
                rows.append((section, str(i), json.dumps(to_jsonable(value), sort_keys=True)))
        else:
            rows.append((section, section, json.dumps(to_jsonable(content))))
    return Table(rows=rows, names=("section", "key", "value"), dtype=(str, str, str))


#: Header keyword -> (parameter name, comment) of the main extraction parameters.
_PARAM_CARDS = {
    "WSAMPLE": ("wave_sample", "wavelength points per native pixel"),
    "NYGRID": ("ny", "half-size of the 2D cross-dispersion grid"),
    "YSTEP": ("step", "[pix] 2D cross-dispersion row size"),
    "OVERSAMP": ("oversample", "drizzle sub-samples in y"),
    "PIXFRAC": ("pixfrac", "drizzle footprint in y, input pixels"),
    "WITHPATH": ("with_pathloss", "path-loss correction applied"),
    "PATHSRC": ("pathloss_source", "path-loss model requested"),
    "BOXHW": ("boxcar_halfwidth", "[pix] boxcar half-width"),
    "FITTRACE": ("fit_traces", "trace/profile fit run"),
}


def header_cards(prov):
    """FITS header cards summarising the provenance.

    Parameters
    ----------
    prov : dict
        Output of :func:`collect`.

    Returns
    -------
    list of (str, object, str)
        ``(keyword, value, comment)``: ``SCVERS``, ``DATE``, the main parameters,
        ``WGHTTYPE``, ``DIFFS``, ``NOISESCL`` (measured noise / propagated sigma, if
        measured), ``ERRSCALE`` (median factor applied to the errors), ``CORRY`` (median
        correlation coefficient of vertically adjacent pixels of the 2D spectrum, from
        the resampling footprint), ``CFGHASH`` (the
        configuration hash of the CLI/batch run, if any), ``CALTABS`` (the calibration
        table set(s) used, e.g. ``'msaexp 0.9.19'``, or ``'none'``) and ``CALNTAB`` (the
        number of tables read), ``NINPUT`` and ``INFILEn``/``INSUMn`` per input.
    """
    cards = [
        ("SCVERS", prov["versions"]["slitcombine"], "slitcombine version"),
        ("DATE", prov["date"], "UTC time of the combination"),
    ]
    params = prov["parameters"]
    for key, (name, comment) in _PARAM_CARDS.items():
        value = params.get(name)
        if isinstance(value, bool | int | float | str):
            cards.append((key, value, comment))
    meta = prov["group_meta"]
    cards.append(("WGHTTYPE", str(meta.get("weight_type")), "weighting of pixels"))
    cards.append(("DIFFS", bool(meta.get("diffs")), "nod differences"))
    noise = meta.get("noise_scale") or {}
    if isinstance(noise.get("scale"), float) and np.isfinite(noise["scale"]):
        cards.append(("NOISESCL", round(noise["scale"], 4), "residual rms / propagated sigma"))
    cards.append(("ERRSCALE", float(params.get("error_scale", 1.0)), "median factor on the errors"))
    corr = params.get("corr_y")
    if isinstance(corr, float) and np.isfinite(corr):
        cards.append(("CORRY", round(corr, 4), "2D: corr. of vertically adjacent pixels"))
    config_hash = prov.get("config_hash") or (prov.get("batch") or {}).get("config_hash")
    if config_hash:
        cards.append(("CFGHASH", str(config_hash), "slitcombine configuration hash"))
    calib = prov.get("calibration")
    if isinstance(calib, dict):
        cards.append(("CALTABS", str(calib.get("summary", "none"))[:68], "calibration tables"))
        cards.append(("CALNTAB", len(calib.get("tables") or []), "calibration tables read"))
    cards.append(("NINPUT", len(prov["inputs"]), "number of input exposures"))
    for i, item in enumerate(prov["inputs"]):
        cards.append((f"INFILE{i}", item["filename"], ""))
        cards.append((f"INSUM{i}", item["checksum"], ""))
    return cards
