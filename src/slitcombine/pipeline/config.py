"""Run configuration: a TOML file, ``--set`` overrides, the effective configuration, a hash.

A configuration file has one section per step, holding the keyword arguments that the
seed API (``msaexp.slit_combine``) takes for that step::

    [group]                     # scalar keyword arguments of SlitGroup(...)
    undo_barshadow = 2
    weight_type = "ivm"
    pad_border = 2

    [hot_cold]                  # -> SlitGroup(hot_cold_kwargs={...})
    enabled = true
    sigma = 5.0

    [flag_trace]                # -> SlitGroup(flag_trace_kwargs={...})

    [discovery]                 # how input folders are scanned and grouped
    join = [0, 3]

    [batch]
    mode = "combine"            # or "prepare": only build each SlitGroup

    [extract]                   # extraction options of slitcombine.combine
    ny = 13

    [trace]                     # -> combine(trace_kwargs={...}) (SlitGroup.fit_all_traces)

Sections and defaults are taken from the code itself (:func:`inspect.signature` of
:class:`~slitcombine.SlitGroup` and ``slitcombine.pipeline.combine.EXTRACT_DEFAULTS``), so the
file always matches the installed version.  A ``*_kwargs`` argument ``X_kwargs``
becomes the section ``[X]`` with a key ``enabled`` and the step's options:

* a SlitGroup step is on by default when its default is a dictionary (its options are
  written out in the effective configuration), off when its default is ``None``;
* options given in a section are merged onto the step's default options and turn the
  step on; ``enabled = false`` passes ``None`` (step off); ``enabled = true`` alone
  turns it on with its default options;
* ``[trace]`` (``trace_kwargs`` of the extraction) cannot be turned off here: use
  ``extract.fit_traces = false``.

TOML has no null: a parameter whose value is ``None`` is written as a comment, and
``--set section.param=none`` sets it to ``None``.

The configuration hash (:attr:`Config.hash`) is the SHA-256 of the canonical JSON of
every section that changes the outputs (all but ``[discovery]`` and ``batch.log_level``),
with the defaults filled in and numbers normalised (``2`` and ``2.0`` hash alike), so
that an option written out at its default value gives the same hash as an option left
out.  The package version is *not* part of it (it is recorded next to every output).
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import inspect
import json
import logging
import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from slitcombine._atomic import atomic_write_text
from slitcombine.errors import ConfigurationError
from slitcombine.group.steps import step_sections
from slitcombine.plots import DEFAULT_DPI, check_figure_options

__all__ = [
    "Config",
    "load_config",
    "parse_override",
    "step_defaults",
    "DISCOVERY_DEFAULTS",
    "BATCH_DEFAULTS",
    "MODES",
]

log = logging.getLogger(__name__)

#: Options of the file discovery and grouping (see :mod:`slitcombine.pipeline.discovery`):
#:
#: * ``join`` - underscore-separated parts of the file name that form the visit key
#: * ``patterns`` - glob patterns of slit files in an input folder
#: * ``recursive`` - also search the sub-folders of an input folder (MAST's download
#:   layout has them)
DISCOVERY_DEFAULTS = {
    "join": [0, 3],
    "patterns": ["*_phot.*.fits", "*_cal.fits"],
    "recursive": True,
}

#: What each group task does.
MODES = ("combine", "prepare")

#: Options of the batch execution (``figures`` and ``figure_dpi`` also of
#: ``slitcombine extract``):
#:
#: * ``mode`` - "combine" (full combination and extraction, slitcombine.combine) or
#:   "prepare" (only build each SlitGroup and write a JSON summary)
#: * ``figures`` - PNG figures written next to each spectrum: "all" (summary
#:   {name}.fnu.png and nod differences {name}.d2d.png), "summary" or "none"; true and
#:   false mean "all" and "none"
#: * ``figure_dpi`` - resolution of the PNG figures, dots per inch, 10-600 (the time to
#:   write them grows with its square)
#: * ``log_level`` - level of the per-group log files
BATCH_DEFAULTS = {
    "mode": "combine",
    "figures": "all",
    "figure_dpi": DEFAULT_DPI,
    "log_level": "INFO",
}

#: Sections that do not change the outputs (left out of the hash), as (section, key);
#: key None means the whole section.
_NOT_HASHED = {("discovery", None), ("batch", "log_level")}

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
        source = inspect.getsource(inspect.getmodule(_option_docs))
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


def _unknown(kind, name, known):
    close = difflib.get_close_matches(name, list(known), n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    return ConfigurationError(f"unknown {kind} {name!r}{hint}; known: {', '.join(sorted(known))}")


def _check_scalar(section, key, value, default):
    """Light type check against the default (the constructor validates the rest)."""
    if not _is_config_value(value):
        raise ConfigurationError(f"{section}.{key}: unsupported value {value!r}")
    if value is None or default is None:
        return value
    numeric_default = isinstance(default, (bool, int, float))
    if numeric_default and not isinstance(value, (bool, int, float)):
        raise ConfigurationError(
            f"{section}.{key} must be a number or boolean like its default {default!r}, "
            f"got {value!r}"
        )
    if isinstance(default, str) and isinstance(value, (list, dict)):
        raise ConfigurationError(f"{section}.{key} must be a single value, got {value!r}")
    if isinstance(default, (list, tuple)) and not isinstance(value, (list, tuple)):
        raise ConfigurationError(f"{section}.{key} must be a list, got {value!r}")
    return list(value) if isinstance(value, tuple) else value


def _check_step(section, values, step):
    from slitcombine.group.slitgroup import SlitGroup

    if not isinstance(values, dict):
        raise ConfigurationError(f"[{section}] must be a table of options, got {values!r}")
    values = dict(values)
    enabled = values.pop("enabled", None)
    if enabled is not None and not isinstance(enabled, bool):
        raise ConfigurationError(f"{section}.enabled must be true or false, got {enabled!r}")
    if enabled is False and not step.can_disable:
        hint = " (use extract.fit_traces = false)" if section == "trace" else ""
        raise ConfigurationError(f"step {section!r} cannot be turned off{hint}")
    for key, value in values.items():
        if not _is_config_value(value):
            raise ConfigurationError(f"{section}.{key}: unsupported value {value!r}")
    method = getattr(SlitGroup, STEP_METHODS[section])
    if values:
        params = inspect.signature(method).parameters
        if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
            allowed = [n for n in params if n != "self"]
            for key in values:
                if key not in allowed:
                    raise _unknown(f"option of step {section!r}", key, allowed)
    if enabled is None:
        enabled = True if values else step.default_on
    options = copy.deepcopy(step.default_options)
    options.update(values)
    return {"enabled": enabled, **options}


# ---------------------------------------------------------------------------- values
def parse_override(text):
    """Parse one ``--set section.param=value`` override.

    Parameters
    ----------
    text : str
        ``section.param=value``; ``value`` is read as a TOML value (``3``, ``2.5``,
        ``true``, ``[0, 3]``, ``"text"``), else as a bare string; ``none``/``null``
        give ``None``.  ``section.param.key=value`` sets a key of a dictionary option.

    Returns
    -------
    (list of str, object)
        The dotted key path and the value.
    """
    if "=" not in text:
        raise ConfigurationError(f"--set {text!r}: expected section.param=value")
    key, raw = text.split("=", 1)
    path = [k.strip() for k in key.strip().split(".")]
    if len(path) < 2 or not all(path):
        raise ConfigurationError(f"--set {text!r}: the key must be section.param")
    raw = raw.strip()
    if raw.lower() in ("none", "null"):
        return path, None
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return path, value


def _canonical(value):
    """JSON-ready form used for the hash: numbers as floats, sorted keys, lists."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        v = float(value)
        return repr(v) if not math.isfinite(v) else v
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in sorted(value.items())}
    raise ConfigurationError(f"cannot hash configuration value {value!r}")


# ---------------------------------------------------------------------------- TOML out
def _toml_key(key):
    return key if key.replace("_", "").replace("-", "").isalnum() else json.dumps(key)


def _toml_value(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        items = ", ".join(
            f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items() if v is not None
        )
        return "{" + (f" {items} " if items else "") + "}"
    raise ConfigurationError(f"cannot write {value!r} to TOML")


# ---------------------------------------------------------------------------- Config
@dataclass(frozen=True, eq=False)
class Config:
    """An effective (validated, defaults filled in) configuration.

    Build it with :func:`load_config` or :meth:`Config.from_dict`.

    Attributes
    ----------
    sections : dict
        ``{section: {param: value}}`` for every section of this version.  Step sections
        hold ``enabled`` (True, False or None = the seed's default) and their options.
    """

    sections: dict

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_dict(cls, data=None):
        """Validate ``data`` (as read from TOML) and fill in the defaults.

        Raises
        ------
        ConfigurationError
            Unknown section or option, or a value of the wrong kind.
        """
        data = {} if data is None else data
        if not isinstance(data, dict):
            raise ConfigurationError(f"a configuration must be a table, got {data!r}")
        schema = _schema()
        known = set(schema.scalars) | set(schema.steps)
        sections = {}
        for name in data:
            if name not in known:
                raise _unknown("configuration section", name, known)
        for name, defaults in schema.scalars.items():
            given = data.get(name, {}) or {}
            if not isinstance(given, dict):
                raise ConfigurationError(f"[{name}] must be a table, got {given!r}")
            values = copy.deepcopy(defaults)
            for key, value in given.items():
                if key not in defaults:
                    raise _unknown(f"option of [{name}]", key, defaults)
                values[key] = _check_scalar(name, key, value, defaults[key])
            sections[name] = values
        for name, step in schema.steps.items():
            sections[name] = _check_step(name, data.get(name, {}) or {}, step)
        _check_discovery(sections["discovery"])
        _check_batch(sections["batch"])
        return cls(sections=sections)

    @classmethod
    def default(cls):
        """The default configuration of this version."""
        return cls.from_dict({})

    def with_overrides(self, overrides):
        """A new Config with ``--set`` overrides applied.

        Parameters
        ----------
        overrides : iterable of str
            ``section.param=value`` strings (see :func:`parse_override`).
        """
        data = self.to_dict()
        steps = _schema().steps
        explicit = set()
        for text in overrides or ():
            path, value = parse_override(text)
            if path[0] in steps and isinstance(data.get(path[0]), dict):
                # an option given for a step turns it on, unless enabled is also given
                if path[1] == "enabled":
                    explicit.add(path[0])
                elif path[0] not in explicit:
                    data[path[0]]["enabled"] = True
            node = data.setdefault(path[0], {})
            if not isinstance(node, dict):
                raise ConfigurationError(f"--set {text!r}: {path[0]} is not a section")
            for key in path[1:-1]:
                node = node.setdefault(key, {})
                if not isinstance(node, dict):
                    raise ConfigurationError(f"--set {text!r}: {key} is not a table")
            node[path[-1]] = value
        return Config.from_dict(data)

    def to_dict(self):
        """The sections as a plain nested dict (a deep copy)."""
        return copy.deepcopy(self.sections)

    # ------------------------------------------------------------------ use
    def section(self, name):
        """A copy of one section's values.

        Parameters
        ----------
        name : str
            Section name (``'group'``, ``'extract'``, ``'estimate_sky'`` ...).

        Returns
        -------
        dict
            ``{param: value}`` (a deep copy).

        Raises
        ------
        ConfigurationError
            An unknown section.
        """
        if name not in self.sections:
            raise _unknown("configuration section", name, self.sections)
        return copy.deepcopy(self.sections[name])

    @property
    def mode(self):
        """``'combine'`` or ``'prepare'`` (``batch.mode``)."""
        return self.sections["batch"]["mode"]

    def _step_kwargs(self, target):
        out = {}
        for name, step in _schema().steps.items():
            if step.target != target:
                continue
            values = dict(self.sections[name])
            enabled = values.pop("enabled")
            if not enabled:
                out[step.kwarg] = None
            elif step.can_disable or values:
                out[step.kwarg] = values
            else:
                out[step.kwarg] = None  # the step's own defaults
        return out

    def group_kwargs(self):
        """Keyword arguments of :class:`~slitcombine.SlitGroup` (after files, name)."""
        kwargs = dict(self.sections["group"])
        kwargs.update(self._step_kwargs("group"))
        return copy.deepcopy(kwargs)

    def combine_kwargs(self):
        """Keyword arguments of ``slitcombine.pipeline.combine.combine`` (after files, name)."""
        kwargs = self.group_kwargs()
        kwargs.update(copy.deepcopy(self.sections.get("extract", {})))
        kwargs.update(copy.deepcopy(self._step_kwargs("extract")))
        return kwargs

    def hashed_content(self):
        """The part of the configuration that the hash covers (canonical JSON form)."""
        content = {}
        for name, values in self.sections.items():
            if (name, None) in _NOT_HASHED:
                continue
            vals = {k: v for k, v in values.items() if (name, k) not in _NOT_HASHED}
            content[name] = vals
        return _canonical(content)

    @property
    def hash(self):
        """16 hex digits of the SHA-256 of :meth:`hashed_content` (see module notes)."""
        text = json.dumps(self.hashed_content(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    # ------------------------------------------------------------------ output
    def to_toml(self, header=None):
        """The effective configuration as TOML text (None values as comments).

        Parameters
        ----------
        header : str, optional
            Comment lines put at the top.
        """
        from slitcombine._version import __version__

        lines = []
        if header:
            lines += [f"# {h}" if h else "#" for h in header.splitlines()]
        lines += [
            f"# slitcombine {__version__} effective configuration",
            f"# config_hash = {self.hash}",
        ]
        lines += [
            "# Every option of every section is listed: set ones as 'key = value', the",
            "# others commented out with their default ('# key = default  # what it is').",
        ]
        schema = _schema()
        order = list(schema.scalars)[:1] + list(schema.steps) + list(schema.scalars)[1:]
        for name in order:
            values = self.sections[name]
            step = schema.steps.get(name)
            docs = _option_docs(name, step)
            lines.append("")
            lines.append(f"[{_toml_key(name)}]")
            if step is not None:
                default = "on" if step.default_on else "off"
                method = STEP_METHODS[name]
                lines.append(
                    f"# {step.target} {step.kwarg} -> SlitGroup.{method} (default: {default})"
                )
            for key, value in values.items():
                note = f"  # {docs[key]}" if docs.get(key) else ""
                if value is None:
                    lines.append(f"# {_toml_key(key)} = none{note}")
                else:
                    lines.append(f"{_toml_key(key)} = {_toml_value(value)}{note}")
            if step is not None:
                for key, value in _method_defaults(name).items():
                    if key in values or key == "enabled" or key.startswith("make_plot"):
                        continue
                    note = f"  # {docs[key]}" if docs.get(key) else ""
                    if (name, key) in _CHOSEN_WHEN_UNSET:
                        note = f"  # {_CHOSEN_WHEN_UNSET[name, key]}; {docs.get(key, '')}"
                    shown = "none" if value is None else _toml_value(value)
                    lines.append(f"# {_toml_key(key)} = {shown}{note}")
        return "\n".join(lines) + "\n"

    def write(self, path, header=None):
        """Write :meth:`to_toml` to ``path`` atomically.

        Parameters
        ----------
        path : str or path-like
            Destination TOML file.
        header : str, optional
            Comment lines written at the top.

        Returns
        -------
        pathlib.Path
            The written file.
        """
        path = Path(path)
        atomic_write_text(path, self.to_toml(header=header))
        return path


def _check_discovery(values):
    join = values["join"]
    if (
        not isinstance(join, list)
        or not join
        or not all(isinstance(j, int) and not isinstance(j, bool) for j in join)
    ):
        raise ConfigurationError(
            f"discovery.join must be a non-empty list of integers (indices of the "
            f"underscore-separated parts of a file name), got {join!r}"
        )
    pats = values["patterns"]
    if not isinstance(pats, list) or not pats or not all(isinstance(p, str) for p in pats):
        raise ConfigurationError(f"discovery.patterns must be a list of globs, got {pats!r}")
    if not isinstance(values["recursive"], bool):
        raise ConfigurationError("discovery.recursive must be true or false")


def _check_batch(values):
    values["figures"], values["figure_dpi"] = check_figure_options(
        values["figures"], values["figure_dpi"], names=("batch.figures", "batch.figure_dpi")
    )
    if values["mode"] not in MODES:
        raise ConfigurationError(f"batch.mode must be one of {MODES}, got {values['mode']!r}")
    level = values["log_level"]
    if not isinstance(level, str) or not isinstance(logging.getLevelName(level.upper()), int):
        raise ConfigurationError(f"batch.log_level must be DEBUG, INFO, WARNING..., got {level!r}")


def load_config(path=None, overrides=None):
    """Read a TOML configuration, apply ``--set`` overrides and fill in the defaults.

    Parameters
    ----------
    path : str or path-like, optional
        A TOML file; None for the defaults.
    overrides : iterable of str, optional
        ``section.param=value`` overrides applied after the file.

    Returns
    -------
    Config

    Raises
    ------
    ConfigurationError
        Missing or malformed file, unknown section/option, bad value.
    """
    data = {}
    if path is not None:
        path = Path(path)
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigurationError(f"configuration file {str(path)!r} not found") from None
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigurationError(f"cannot read configuration {str(path)!r}: {exc}") from exc
    config = Config.from_dict(data)
    if overrides:
        config = config.with_overrides(overrides)
    return config
