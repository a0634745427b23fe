"""Local Sphinx directives that render option tables from the installed code.

The defaults shown in the user guide are read from the code at build time (function
signatures and module constants), so the documentation cannot drift from them:

``.. sc-options:: slitcombine.SlitGroup.estimate_sky``
    A table of the parameters of a callable: name, default (from
    :func:`inspect.signature`) and description (the numpydoc ``Parameters`` section).
    Options ``:only: a, b`` and ``:exclude: a, b`` select parameters.

``.. sc-dict:: slitcombine.pipeline.combine.EXTRACT_DEFAULTS``
    A table of the keys and values of a dictionary constant.
"""

from __future__ import annotations

import importlib
import inspect

from docutils import nodes
from docutils.parsers.rst import directives
from docutils.statemachine import StringList
from sphinx.util.docutils import SphinxDirective

_EMPTY = inspect.Parameter.empty


def resolve(dotted):
    """The object named by a dotted path (module attributes and class members)."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for name in parts[i:]:
            obj = getattr(obj, name)
        return obj
    raise ImportError(f"cannot resolve {dotted!r}")


def _fmt_default(value):
    if value is _EMPTY:
        return "(required)"
    if isinstance(value, type):
        return f"``{value.__name__}``"
    text = repr(dict(value)) if type(value).__name__ == "mappingproxy" else repr(value)
    if "\n" in text or len(text) > 60:
        text = " ".join(text.split())
        if len(text) > 60:
            text = text[:57] + "..."
    return f"``{text}``"


def parameter_docs(obj):
    """``{name: description}`` from the numpydoc ``Parameters`` section of ``obj``."""
    from numpydoc.docscrape import FunctionDoc

    target = obj.__init__ if inspect.isclass(obj) else obj
    doc = inspect.getdoc(obj if inspect.isclass(obj) else target) or ""
    try:
        parsed = FunctionDoc(None, doc=doc)
    except Exception as exc:  # noqa: BLE001 - a docstring numpydoc cannot parse
        raise ValueError(f"cannot parse the docstring of {obj!r}: {exc}") from exc
    out = {}
    for p in parsed["Parameters"]:
        text = " ".join(" ".join(p.desc).split())
        kind = p.type.strip()
        if kind:
            text = f"*{kind}*. {text}" if text else f"*{kind}*"
        for name in p.name.replace("*", "").split(","):
            name = name.strip()
            if name:
                out[name] = text
    return out


def _list_table(header, rows, widths):
    lines = [".. list-table::", "   :header-rows: 1", f"   :widths: {widths}", ""]
    for row in [header, *rows]:
        first = True
        for cell in row:
            prefix = "   * - " if first else "     - "
            lines.append(prefix + (cell or " "))
            first = False
    return lines


class OptionsDirective(SphinxDirective):
    """``.. sc-options:: dotted.path``: parameter table of a callable."""

    required_arguments = 1
    option_spec = {"only": directives.unchanged, "exclude": directives.unchanged}

    def run(self):
        obj = resolve(self.arguments[0])
        target = obj.__init__ if inspect.isclass(obj) else obj
        sig = inspect.signature(target)
        docs = parameter_docs(obj)
        only = [s.strip() for s in self.options.get("only", "").split(",") if s.strip()]
        exclude = {s.strip() for s in self.options.get("exclude", "").split(",") if s.strip()}
        rows = []
        for name, par in sig.parameters.items():
            if name == "self" or par.kind in (par.VAR_POSITIONAL, par.VAR_KEYWORD):
                continue
            if (only and name not in only) or name in exclude:
                continue
            rows.append((f"``{name}``", _fmt_default(par.default), docs.get(name, "")))
        if only:
            missing = set(only) - {r[0].strip("`") for r in rows}
            if missing:
                raise self.error(f"{self.arguments[0]} has no parameter(s) {sorted(missing)}")
            rows.sort(key=lambda r: only.index(r[0].strip("`")))
        lines = _list_table(("option", "default", "meaning (units)"), rows, "22 18 60")
        container = nodes.container()
        self.state.nested_parse(StringList(lines, source=self.arguments[0]), 0, container)
        return container.children


class DictDirective(SphinxDirective):
    """``.. sc-dict:: dotted.path``: key/value table of a dictionary constant."""

    required_arguments = 1

    def run(self):
        obj = resolve(self.arguments[0])
        rows = [(f"``{k}``", _fmt_default(v)) for k, v in dict(obj).items()]
        lines = _list_table(("key", "default"), rows, "40 60")
        container = nodes.container()
        self.state.nested_parse(StringList(lines, source=self.arguments[0]), 0, container)
        return container.children


def setup(app):
    app.add_directive("sc-options", OptionsDirective)
    app.add_directive("sc-dict", DictDirective)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
