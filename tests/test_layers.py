"""The package's layers: every import inside ``slitcombine`` points down (docs/development.rst).

Layers, bottom to top: the top-level basics (errors, instrument constants, version,
atomic writes, threads), ``core`` (pure array functions), ``io`` and ``plots`` (files and
figures), ``group`` (the SlitGroup facade), ``pipeline`` (combine, batch, discovery,
configuration), ``testing`` (simulator, demo) and the command line.  A module may import
modules of its own layer or of lower layers, never of a higher one; lazy imports inside
functions count too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import slitcombine

PKG = Path(slitcombine.__file__).parent

#: Rank of each layer; a module of rank r may import ranks <= r only.
LAYERS = {
    "errors": 0,
    "instrument": 0,
    "_version": 0,
    "_atomic": 0,
    "_threads": 0,
    "core": 1,
    "io": 2,
    "plots": 2,
    "_agg": 2,
    "_pixel_image": 2,
    "group": 3,
    "pipeline": 4,
    "testing": 5,
    "cli": 6,
    "__init__": 6,
}


def _layer(dotted):
    """Layer name of ``slitcombine.<dotted>`` (its first component)."""
    return dotted.split(".")[0]


def _module_name(path):
    rel = path.relative_to(PKG).with_suffix("")
    return ".".join(rel.parts)


def _imports(path):
    """``(line, imported module within slitcombine)`` of every import of ``path``."""
    return _imports_of(path.read_text(), _module_name(path))


def _imports_of(text, module):
    """Imports of the source ``text`` of the module ``slitcombine.<module>``."""
    tree = ast.parse(text)
    package = module.rsplit(".", 1)[0] if "." in module else ""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("slitcombine."):
                    found.append((node.lineno, alias.name.removeprefix("slitcombine.")))
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = package.split(".") if package else []
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join([*base, *([node.module] if node.module else [])])
            elif node.module and node.module.startswith("slitcombine"):
                mod = node.module.removeprefix("slitcombine").lstrip(".")
            else:
                continue
            if mod and node.module:
                found.append((node.lineno, mod))
            else:  # from slitcombine import x, y / from . import x: modules or re-exports
                prefix = f"{mod}." if mod else ""
                for alias in node.names:
                    name = prefix + alias.name
                    found.append((node.lineno, name if _layer(name) in LAYERS else "__init__"))
    return found


MODULES = sorted(p for p in PKG.rglob("*.py") if "__pycache__" not in p.parts)


def test_every_module_belongs_to_a_layer():
    unknown = [str(p.relative_to(PKG)) for p in MODULES if _layer(_module_name(p)) not in LAYERS]
    assert not unknown, f"modules outside the layers of docs/development.rst: {unknown}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PKG)))
def test_imports_point_down(path):
    here = _layer(_module_name(path))
    upward = [
        f"line {line}: imports slitcombine.{mod} ({_layer(mod)}, above {here})"
        for line, mod in _imports(path)
        if LAYERS.get(_layer(mod), 99) > LAYERS[here]
    ]
    assert not upward, f"{path.relative_to(PKG)}:\n" + "\n".join(upward)


def test_the_checker_sees_an_upward_import():
    """The check can fail: imports of a core module are resolved to their layers."""
    text = (
        "from slitcombine.group.slitgroup import SlitGroup\n"
        "from . import masks\n"
        "def f():\n"
        "    from slitcombine import SlitGroup\n"
    )
    found = [mod for _, mod in _imports_of(text, "core.geometry")]
    assert found == ["group.slitgroup", "core.masks", "__init__"]
    assert [LAYERS[_layer(m)] > LAYERS["core"] for m in found] == [True, False, True]
