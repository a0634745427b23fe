"""The plan of the default steps that read calibration tables: which run, with which table.

:func:`default_plan` says, for one configuration (a :class:`Target`: a file, a group or
a grating), which of the seed's default steps that read a reference table will run and
with which table (``slitcombine calib status``); :meth:`slitcombine.SlitGroup` steps use
the same plan (:func:`plan_for_group`) to warn once per group when a default step is
skipped because no table of its kind is installed.  The options default to
:class:`~slitcombine.SlitGroup`'s, hence this module's place in the group layer; the
tables themselves are fetched and described by :mod:`slitcombine.io.calib`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path

from slitcombine.io.calib import FETCHED_KINDS

__all__ = [
    "Target",
    "StepPlan",
    "default_plan",
    "target_from_file",
    "target_from_group",
    "plan_for_group",
    "extended_flats",
    "format_plan",
]


@dataclass
class Target:
    """The configuration a plan is made for (from a file, a group, or a grating).

    Attributes
    ----------
    grating, filter : str or None
        Upper case (``'PRISM'``, ``'CLEAR'``); None: unknown.
    visit : str or None
        Visit key of the file names (``jw01345062001``); None: any visit.
    detector : str or None
        ``'NRS1'``/``'NRS2'``; None: either.
    fixed_slit : bool
        A fixed-slit exposure (no MSA corrections).
    num_shutters : int or None
        Shutters of the slitlet (None: unknown, the 3-shutter table).
    extended_flats : bool or None
        The pipeline used extended-range flats (None: unknown).
    quadrant : int or None
        MSA quadrant of the slitlet (s-flat), None: unknown.
    label : str
        What the target is, for messages.
    """

    grating: str | None = None
    filter: str | None = None
    visit: str | None = None
    detector: str | None = None
    fixed_slit: bool = False
    num_shutters: int | None = None
    extended_flats: bool | None = None
    quadrant: int | None = None
    label: str = ""


@dataclass
class StepPlan:
    """Whether one default step that reads a table will run, and with which table.

    Attributes
    ----------
    step : str
        Name in ``SlitGroup.meta['steps']``.
    option : str
        The option that switches it, with its value.
    runs : str
        ``'yes'``, ``'no'`` (skipped), ``'off'`` (option off) or another word
        (``'own model'``, ``'pipeline'``) for the bar shadow.
    table : pathlib.Path or None
        The table it reads.
    kind : str or None
        Kind of table (:data:`slitcombine.io.tables.CALIBRATION_TABLES`).
    looked_for : list of str
        Names looked for.
    note : str
        Why, in words.
    missing : bool
        Skipped because no table of its kind is installed at all, and a fetch provides
        one (:data:`FETCHED_KINDS`): the case of the warning.
    """

    step: str
    option: str
    runs: str
    table: Path | None = None
    kind: str | None = None
    looked_for: list = field(default_factory=list)
    note: str = ""
    missing: bool = False


def _default_options():
    """:class:`~slitcombine.SlitGroup`'s defaults of the options the plan depends on."""
    import inspect

    from slitcombine.group.slitgroup import SlitGroup

    params = inspect.signature(SlitGroup.__init__).parameters
    keys = (
        "sky_file",
        "fix_prism_norm",
        "undo_barshadow",
        "bar_corr_mode",
        "extended_calibration_kwargs",
        "with_sflat_correction",
        "with_extra_dq",
        "lookup_prf",
    )
    return {k: params[k].default for k in keys}


def extended_flats(primary_headers):
    """Whether the pipeline used extended-range flats (``_ext`` in R_FFLAT/R_SFLAT/R_DFLAT).

    The rule of :meth:`slitcombine.SlitGroup.apply_extended_calibration`: true when
    every exposure's primary header names an ``_ext`` flat.

    Parameters
    ----------
    primary_headers : list of astropy.io.fits.Header
        One per exposure.

    Returns
    -------
    bool
    """
    keys = ("R_FFLAT", "R_SFLAT", "R_DFLAT")
    return bool(primary_headers) and all(
        any("_ext" in str(h.get(k, "")) for k in keys) for h in primary_headers
    )


def _lookup(kind, dirs, fields):
    from slitcombine.io import tables

    names = tables.calibration_table_names(kind, **fields)
    path = tables.find_calibration_table(kind, dirs, **fields)
    return path, names


def _absent(kind, dirs):
    """No table of ``kind`` in any folder, and a fetch would provide one."""
    from slitcombine.io import tables

    return kind in FETCHED_KINDS and not tables.calibration_kind_available(kind, dirs)


def _not_found(dirs, names=()):
    """Short reason of a plan row without a table."""
    if not dirs:
        return "no tables installed"
    return "not found" + (f" (looked for {' or '.join(names)})" if names else "")


def _table_row(step, option, kind, dirs, fields, on_found="yes"):
    path, names = _lookup(kind, dirs, fields)
    if path is not None:
        return StepPlan(step, option, on_found, path, kind, names, "")
    return StepPlan(
        step,
        option,
        "no",
        None,
        kind,
        names,
        _not_found(dirs, names),
        missing=_absent(kind, dirs),
    )


def _count_row(step, option, kind, dirs, what, fields=None):
    """A row for an unknown field (any visit, either detector): how many tables exist."""
    from slitcombine.io import tables

    n = len(tables.list_calibration_tables(kind, dirs, **(fields or {})))
    if n:
        return StepPlan(step, option, "yes", None, kind, [], f"{n} {what} table(s) available")
    return StepPlan(
        step,
        option,
        "no",
        None,
        kind,
        [],
        f"no {what} table ({_not_found(dirs)})",
        missing=_absent(kind, dirs),
    )


def default_plan(target, options=None, dirs=None):
    """Which of the steps that read tables will run for ``target``, and with which table.

    Parameters
    ----------
    target : Target
        The configuration.
    options : dict or None
        SlitGroup options (``sky_file``, ``fix_prism_norm``, ``undo_barshadow``,
        ``bar_corr_mode``, ``extended_calibration_kwargs``, ``with_sflat_correction``,
        ``with_extra_dq``, ``lookup_prf``); missing ones take SlitGroup's defaults.
    dirs : list of path-like or None
        Calibration folders; None means
        :func:`slitcombine.io.tables.calibration_dirs`.

    Returns
    -------
    list of StepPlan
        ``global_sky``, ``normalization``, ``barshadow``, ``extended_calibration``,
        ``sflat``, ``extra_dq``, ``lookup_prf``.
    """
    from slitcombine.io import tables

    opts = {**_default_options(), **(options or {})}
    dirs = tables.calibration_dirs() if dirs is None else [Path(d) for d in dirs]
    grating = (target.grating or "").lower() or None
    return [
        row(target, grating, opts, dirs)
        for row in (
            _sky_row,
            _normalization_row,
            _barshadow_row,
            _extended_row,
            _sflat_row,
            _extra_dq_row,
            _prf_row,
        )
    ]


# The rows of default_plan: each (target, grating (lower case or None), the options,
# the calibration folders) -> StepPlan.
def _sky_row(target, grating, opts, dirs):
    """The global sky of the visit (``sky_file``)."""
    sky = opts["sky_file"]
    option = f"sky_file={sky!r}"
    if sky is None:
        return StepPlan("global_sky", option, "off")
    if str(sky) != "read":
        ok = Path(sky).is_file()
        return StepPlan(
            "global_sky",
            option,
            "yes" if ok else "error",
            Path(sky) if ok else None,
            note="" if ok else f"{sky} not found: the group raises CalibrationFileError",
        )
    if target.visit is None:
        return _count_row("global_sky", option, "global_sky", dirs, "visit sky")
    return _table_row("global_sky", option, "global_sky", dirs, {"visit": target.visit})


def _off_or_fixed_slit(step, key, opts, target):
    """The option text of an MSA correction, and its row when it is off or not for a
    fixed slit (else None)."""
    option = f"{key}={opts[key]!r}"
    if not opts[key]:
        return option, StepPlan(step, option, "off")
    if target.fixed_slit:
        return option, StepPlan(step, option, "no", note="fixed slit (MSA correction)")
    return option, None


def _normalization_row(target, grating, opts, dirs):
    """The PRISM slit renormalisation (``fix_prism_norm``)."""
    option, row = _off_or_fixed_slit("normalization", "fix_prism_norm", opts, target)
    if row is not None:
        return row
    if grating is None:
        return _count_row("normalization", option, "renormalization", dirs, "renormalisation")
    return _table_row("normalization", option, "renormalization", dirs, {"grating": grating})


def _barshadow_row(target, grating, opts, dirs):
    """The bar shadow (``undo_barshadow``, ``bar_corr_mode``)."""
    from slitcombine.io import tables

    mode = opts["bar_corr_mode"]
    mode = "slit" if mode == "flat" else mode
    undo = opts["undo_barshadow"]
    option = f"undo_barshadow={undo!r}, bar_corr_mode={opts['bar_corr_mode']!r}"
    if target.fixed_slit:
        return StepPlan("barshadow", option, "no", note="fixed slit: no bar shadow")
    if undo == 2 and grating is not None:
        name, wrap = tables.bar_coeffs_filename(grating, target.num_shutters or 0, mode)
        path = tables.find_calibration_file(name, dirs)
        row = StepPlan("barshadow", option, "table", path, "bar_coeffs", [name])
        if path is None:
            # not skipped: the own model is slitcombine's choice without a table
            row.runs = "own model"
            row.note = "no table: the group's own model, fitted to its sky pixels"
        elif wrap is True:
            row.note = "wrapped into the central shutter (slitlet of more than 3 shutters)"
        return row
    if undo == 2:
        return StepPlan("barshadow", option, "table or own model", note="per grating")
    what = "pipeline correction undone" if undo else "pipeline correction kept"
    return StepPlan("barshadow", option, "pipeline", note=what)


def _extended_row(target, grating, opts, dirs):
    """The extended-range calibration (``extended_calibration_kwargs``)."""
    ext = opts["extended_calibration_kwargs"]
    option = "extended_calibration_kwargs=" + ("None" if ext is None else repr(dict(ext)))
    force = bool(ext and dict(ext).get("force"))
    if ext is None:
        return StepPlan("extended_calibration", option, "off")
    if target.extended_flats is False and not force:
        return StepPlan(
            "extended_calibration",
            option,
            "no",
            note="the pipeline flats are not extended-range (R_FFLAT/R_SFLAT/R_DFLAT)",
        )
    if grating is None or target.filter is None:
        row = _count_row("extended_calibration", option, "sensitivity", dirs, "sensitivity")
        row.note += "; only for data with extended-range pipeline flats"
        return row
    fields = {"grating": grating, "filter": target.filter}
    row = _table_row("extended_calibration", option, "sensitivity", dirs, fields)
    if target.extended_flats is None:
        row.note = (row.note + "; " if row.note else "") + (
            "only for data with extended-range pipeline flats"
        )
    return row


def _sflat_row(target, grating, opts, dirs):
    """The s-flat (``with_sflat_correction``)."""
    option, row = _off_or_fixed_slit("sflat", "with_sflat_correction", opts, target)
    if row is not None:
        return row
    if grating is not None and target.quadrant is not None:
        fields = {"grating": grating, "quadrant": int(target.quadrant)}
        return _table_row("sflat", option, "sflat", dirs, fields)
    fields = {} if grating is None else {"grating": grating}
    return _count_row("sflat", option, "sflat", dirs, "s-flat", fields)


def _extra_dq_row(target, grating, opts, dirs):
    """The extra bad pixels (``with_extra_dq``)."""
    option = f"with_extra_dq={opts['with_extra_dq']!r}"
    if not opts["with_extra_dq"]:
        return StepPlan("extra_dq", option, "off")
    if target.detector is None:
        return _count_row("extra_dq", option, "bad_pixels", dirs, "bad-pixel")
    return _table_row("extra_dq", option, "bad_pixels", dirs, {"detector": target.detector})


def _prf_row(target, grating, opts, dirs):
    """The point response (``lookup_prf``): never skipped, says what is used."""
    from slitcombine.io import tables

    prf = opts["lookup_prf"]
    n_psf = len(tables.list_calibration_tables("psf_lookup", dirs))
    note = "slitcombine's optics model (no table)" if prf is None else f"the given {prf!r}"
    if n_psf:
        note += f"; {n_psf} msaexp PSF lookup table(s) installed, used only if given as lookup_prf"
    return StepPlan("lookup_prf", f"lookup_prf={'None' if prf is None else '...'}", "-", note=note)


def target_from_file(path):
    """The :class:`Target` of a slit file.

    Parameters
    ----------
    path : path-like
        A per-slit ``SlitModel`` file.

    Returns
    -------
    Target

    Raises
    ------
    slitcombine.errors.InputFileError
        The file cannot be read as a slit.
    """
    from slitcombine.io.reading import read_slit

    exp = read_slit(path)
    state = exp.slit.get("shutter_state")
    quadrant = None
    if not exp.is_fixed_slit:
        quadrant = exp.asdf_slit_attribute("quadrant")
        exp.release_asdf()
    return Target(
        grating=exp.grating or None,
        filter=exp.filter or None,
        visit=exp.visit,
        detector=str(exp.meta["instrument"].get("detector") or "") or None,
        fixed_slit=exp.is_fixed_slit,
        num_shutters=len(str(state)) if state else None,
        extended_flats=extended_flats([exp.primary_header]),
        quadrant=None if quadrant is None else int(quadrant),
        label=Path(path).name,
    )


def target_from_group(group):
    """The :class:`Target` of a :class:`~slitcombine.SlitGroup` (during or after its build).

    Parameters
    ----------
    group : slitcombine.SlitGroup

    Returns
    -------
    Target
    """
    n = group.meta.get("num_shutters")
    if n is None or int(n) < 0:  # not resolved yet: from the shutter state, as SlitGroup
        state = group.info["shutter_state"][0]
        n = len(str(state)) if state else None
    return Target(
        grating=group.grating,
        filter=group.filter,
        visit=str(group.info["visit"][0]),
        detector=str(group.info["detector"][0]),
        fixed_slit=bool(group.IS_FIXED_SLIT),
        num_shutters=None if n is None else int(n),
        extended_flats=extended_flats([s.primary_header for s in group.slits]),
        quadrant=None,
        label=group.name,
    )


def plan_for_group(group, dirs=None):
    """:func:`default_plan` for a group with its own options; steps done are as recorded.

    A step already in ``group.meta['steps']`` keeps what it did: its ``status``,
    ``file`` and ``missing_table`` details.  The s-flat is not predicted (its quadrant
    is only read when a table exists).

    Parameters
    ----------
    group : slitcombine.SlitGroup
    dirs : list of path-like or None
        Calibration folders (None: :func:`slitcombine.io.tables.calibration_dirs`).

    Returns
    -------
    list of StepPlan
    """
    meta = group.meta
    options = {
        k: meta[k]
        for k in (
            "fix_prism_norm",
            "undo_barshadow",
            "bar_corr_mode",
            "extended_calibration_kwargs",
            "with_sflat_correction",
            "with_extra_dq",
        )
        if k in meta
    }
    steps = meta.get("steps", {})
    # meta['sky_file'] holds the option until get_global_sky has run
    options["sky_file"] = "read" if "global_sky" in steps else meta.get("sky_file")
    options["lookup_prf"] = getattr(group, "lookup_prf", None)
    rows = default_plan(target_from_group(group), options, dirs)
    for row in rows:
        done = steps.get(row.step)
        if not done or row.step in ("barshadow", "lookup_prf"):
            continue
        if done.get("status") == "COMPLETE":
            row.runs, row.missing, row.note = "yes", False, ""
            file = done.get("file") or (done.get("files") or [None])[0]
            row.table = None if file is None else Path(file)
        elif done.get("status") == "SKIPPED":
            row.runs = "no"
            row.missing = bool(done.get("missing_table"))
            row.note = str(done.get("reason", row.note))
    return rows


def format_plan(target, rows, dirs):
    """Text of ``slitcombine calib status`` for one target.

    Parameters
    ----------
    target : Target
    rows : list of StepPlan
    dirs : list of pathlib.Path
        The folders searched (for relative names).

    Returns
    -------
    str
    """
    what = ", ".join(
        str(x)
        for x in (
            f"{target.grating or '?'}/{target.filter or '?'}",
            f"visit {target.visit}" if target.visit else "any visit",
            target.detector or "either detector",
            "fixed slit"
            if target.fixed_slit
            else (f"{target.num_shutters} shutters" if target.num_shutters else None),
        )
        if x
    )
    lines = [f"{target.label or 'configuration'}: {what}"]
    width = max(len(r.step) for r in rows)
    for r in rows:
        if r.table is not None:
            table = str(r.table)
            for d in dirs:
                with contextlib.suppress(ValueError):
                    table = f"{Path(r.table).relative_to(d)}  [{d}]"
                    break
            detail = table + (f"; {r.note}" if r.note else "")
        else:
            detail = r.note
        flag = "  <- fix: slitcombine calib fetch" if r.missing else ""
        lines.append(f"  {r.step:<{width}}  {r.runs:<9}  {r.option}")
        if detail:
            lines.append(f"  {'':<{width}}  {'':<9}  {detail}{flag}")
        elif flag:
            lines.append(f"  {'':<{width}}  {'':<9}  {flag.strip()}")
    return "\n".join(lines)
