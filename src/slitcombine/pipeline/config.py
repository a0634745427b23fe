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
import tomllib
from dataclasses import dataclass
from pathlib import Path

from slitcombine._atomic import atomic_write_text
from slitcombine.errors import ConfigurationError
from slitcombine.pipeline.config_schema import (
    _CHOSEN_WHEN_UNSET,
    STEP_METHODS,
    _is_config_value,
    _method_defaults,
    _option_docs,
    _schema,
    step_defaults,
)
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
