"""The configuration's schema, read from the code: sections, options, defaults, notes.

Every section and option of a configuration file comes from a signature (the
:class:`~slitcombine.SlitGroup` constructor and its step methods, the step table of
:mod:`slitcombine.group.steps`, ``EXTRACT_DEFAULTS``) and every note from a docstring or
a ``#: *`` comment, so that the file always matches the installed version
(:mod:`slitcombine.pipeline.config`).
"""

from __future__ import annotations

import copy
import importlib
import inspect
import re
from collections.abc import Mapping
from dataclasses import dataclass

from slitcombine.group.steps import step_sections

__all__ = ["STEP_METHODS", "step_defaults"]

#: Step section -> SlitGroup method that receives its keywords (used to check the
#: keys): the constructor steps of :data:`slitcombine.group.steps.STEPS` that have
#: options of their own, and the extraction's trace fit.
STEP_METHODS = {
    **{section: step.method for section, step in step_sections().items()},
    "trace": "fit_all_traces",
}


#: Further methods whose keywords a step section passes on (fit_all_traces passes its
#: extra keywords to fit_single_trace).
_STEP_ALSO = {"trace": ("fit_single_trace",)}


#: Options whose effective default, when left unset, is chosen by :func:`combine_group`
#: rather than the method's signature default (noted in the written configuration).
_CHOSEN_WHEN_UNSET = {
    ("trace", "degree"): "unset: 0, 1 or 2 from the trace S/N (combine.DEGREE_SN)",
}


#: Keyword arguments of SlitGroup that hold Python objects, not configuration values.
_GROUP_OBJECT_ARGS = {"files", "name", "self", "sky_arrays", "lookup_prf"}


# ---------------------------------------------------------------------------- schema
@dataclass(frozen=True)
class _Step:
    """A step section: where its options go and what its default is."""

    target: str  # "group" (SlitGroup) or "extract" (slitcombine.combine)
    kwarg: str  # the keyword argument, e.g. "hot_cold_kwargs"
    default_on: bool
    default_options: dict
    can_disable: bool  # passing None turns the step off


@dataclass(frozen=True)
class _Schema:
    """Where every section and option goes (built from the code's signatures)."""

    # section -> {param: default} for sections of scalar options
    scalars: dict
    # step section -> _Step
    steps: dict


def step_defaults():
    """``{section: (on by default, default options)}`` of every step section."""
    return {n: (s.default_on, dict(s.default_options)) for n, s in _schema().steps.items()}


def _signature_params(func):
    return [
        p
        for p in inspect.signature(func).parameters.values()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]


def _extract_defaults():
    """``slitcombine.pipeline.combine.EXTRACT_DEFAULTS`` if this version has it, else None."""
    try:
        from slitcombine.pipeline.combine import EXTRACT_DEFAULTS
    except ImportError as exc:
        if getattr(exc, "name", None) != "slitcombine.combine":
            raise
        return None
    return EXTRACT_DEFAULTS


def _schema():
    from slitcombine.group.slitgroup import SlitGroup

    scalars = {"group": {}}
    steps = {}
    # the step sections of the step table, in the order of the constructor's keywords
    sections = {step.keyword: section for section, step in step_sections().items()}
    for p in _signature_params(SlitGroup.__init__):
        if p.name in _GROUP_OBJECT_ARGS:
            continue
        if p.name in sections:
            on = isinstance(p.default, Mapping)
            steps[sections[p.name]] = _Step(
                "group", p.name, on, dict(p.default) if on else {}, True
            )
        else:
            scalars["group"][p.name] = p.default
    extract_defaults = _extract_defaults()
    if extract_defaults is not None:
        scalars["extract"] = {}
        for name, default in extract_defaults.items():
            if name.endswith("_kwargs"):
                # None means "the step's own defaults" here (fit_traces is the switch)
                steps[name[: -len("_kwargs")]] = _Step(
                    "extract", name, True, dict(default or {}), False
                )
            elif _is_config_value(default):
                scalars["extract"][name] = copy.deepcopy(default)
    from slitcombine.pipeline.config import BATCH_DEFAULTS, DISCOVERY_DEFAULTS

    scalars["discovery"] = copy.deepcopy(DISCOVERY_DEFAULTS)
    scalars["batch"] = copy.deepcopy(BATCH_DEFAULTS)
    return _Schema(scalars=scalars, steps=steps)


def _param_docs(obj):
    """``{parameter: first sentence of its description}`` from a numpydoc docstring."""
    doc = inspect.getdoc(obj) or ""
    lines = doc.splitlines()
    out = {}
    try:
        start = lines.index("Parameters") + 2
    except ValueError:
        return out
    names, desc = [], []

    def flush():
        text = " ".join(d.strip() for d in desc).strip()
        sentence = re.split(r"(?<!e\.g)(?<!i\.e)\.\s", text)[0].rstrip(".")
        if len(sentence) > 110:
            sentence = sentence[:107].rsplit(" ", 1)[0] + " ..."
        for n in names:
            out.setdefault(n, sentence)

    for line in lines[start:]:
        if line and not line.startswith(" "):
            if line.strip() and set(line.strip()) == {"-"}:
                break  # the next section
            flush()
            head = line.split(" : ")[0]
            names = [n.strip() for n in head.split(",") if n.strip()]
            desc = []
        elif line.strip():
            desc.append(line)
    flush()
    return out


def _option_docs(section, step=None):
    """Descriptions of the options of a section (from the code's docstrings)."""
    from slitcombine.group.slitgroup import SlitGroup

    if step is not None:
        docs = {}
        for method in _STEP_ALSO.get(section, ()) + (STEP_METHODS[section],):
            docs.update(_param_docs(getattr(SlitGroup, method)))
        return docs
    if section == "group":
        return _param_docs(SlitGroup)
    if section == "extract":
        # the module (its EXTRACT_DEFAULTS comments), not the function of that name
        import slitcombine.pipeline.combine as combine_module

        return _extract_option_docs(inspect.getsource(combine_module))
    if section in ("discovery", "batch"):
        source = inspect.getsource(importlib.import_module("slitcombine.pipeline.config"))
        block = source.split(f"\n{section.upper()}_DEFAULTS = {{")[0].rsplit("\n\n", 1)[-1]
        return _extract_option_docs(_joined_doc_items(block))
    return {}


def _joined_doc_items(block):
    """``#: * ...`` items of a comment block, each joined onto one line."""
    lines = []
    for line in block.splitlines():
        text = line.strip()
        if text.startswith("#: * ") or not lines:
            lines.append(text)
        elif text.startswith("#:") and text[2:].strip():
            lines[-1] += " " + text[2:].strip()
    return "\n".join(lines)


def _extract_option_docs(source):
    """The ``#: * ``name`` - text`` lines of the extraction defaults.

    :data:`slitcombine.pipeline.combine.EXTRACT_DEFAULTS`.
    """
    out = {}
    for line in source.splitlines():
        line = line.strip()
        if line.startswith("#: * ``") and "`` - " in line:
            names, _, text = line[len("#: * ") :].partition(" - ")
            for name in names.replace("``", "").split(","):
                out.setdefault(name.strip(), text.split(";")[0].strip())
    return out


def _method_defaults(section):
    """Every keyword of the step's method and its default (the seed's ones first)."""
    from slitcombine.group.slitgroup import SlitGroup

    out = {}
    for method in (STEP_METHODS[section],) + _STEP_ALSO.get(section, ()):
        for p in _signature_params(getattr(SlitGroup, method)):
            if p.name in ("self", "exp", "evaluate", "x0") or p.name in out:
                continue
            if p.default is inspect.Parameter.empty:
                continue
            if _is_config_value(p.default) or hasattr(p.default, "tolist"):
                value = p.default.tolist() if hasattr(p.default, "tolist") else p.default
                out[p.name] = value
    return out


def _is_config_value(value):
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_is_config_value(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_config_value(v) for k, v in value.items())
    return False
