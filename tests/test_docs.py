"""The documentation cannot rot: public docstrings, the README example, the doc tables.

* every public name (``slitcombine.__all__`` and the ``__all__`` of every public
  module) has a docstring; public constants have a ``#:`` comment; callables that take
  parameters have a numpydoc ``Parameters`` section (known gaps are listed and may only
  shrink);
* the README's Python example runs, on a small simulation, and gives the truth back;
  its command lines parse; its table of output extensions matches the written file;
* the msaexp migration table lists every ``SlitGroup`` option with its actual default,
  and every method and property of msaexp's ``SlitGroup`` exists;
* the TOML example of the batch guide is a valid configuration.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import os
import pkgutil
import re
import shlex
from pathlib import Path

import numpy as np
import pytest

import slitcombine

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCS = REPO / "docs"

PUBLIC_MODULES = sorted(
    m.name for m in pkgutil.iter_modules(slitcombine.__path__) if not m.name.startswith("_")
)

#: Public callables that take parameters but have no ``Parameters`` section yet (their
#: modules were still being written when this list was made).  The list may only shrink:
#: a new gap fails the test, a fixed one is simply no longer reported.
KNOWN_PARAMETER_GAPS: set[str] = set()

#: Public methods and properties of ``msaexp.slit_combine.SlitGroup`` (its documentation,
#: ../shared/docs/seed-SlitGroup.txt), all of which the migration page says exist.
SEED_MEMBERS = (
    "IS_FIXED_SLIT N calc_reference_exposure data exptime filter fixed_yshutter grating "
    "relative_nod_offset sky_background slit_pixel_scale slit_shutter_scale "
    "source_ypixel_position unp apply_bad_shutter_mask apply_normalization_correction "
    "apply_spline_bar_correction calculate_slices estimate_sky fit_all_traces "
    "fit_params_by_sn fit_shutter_offset fit_single_trace flag_2d_outliers flag_from_profile "
    "flag_hot_cold_pixels flag_percentile_outliers flag_trace_outliers get_flat_diff_arrays "
    "get_global_sky get_trace_sn make_diff_image mask_stuck_closed_shutters parse_data "
    "parse_metadata plot_2d_differences plot_profile set_background_spectra set_trace_coeffs "
    "slit_metadata update_trace_from_coeffs"
).split()


# --------------------------------------------------------------------------- helpers
def _public_objects():
    """``(qualified name, object)`` of every public name of the package."""
    out = [(f"slitcombine.{n}", getattr(slitcombine, n)) for n in slitcombine.__all__]
    for name in PUBLIC_MODULES:
        mod = importlib.import_module(f"slitcombine.{name}")
        for n in getattr(mod, "__all__", ()):
            out.append((f"{name}.{n}", getattr(mod, n)))
    return out


def _members(cls):
    """Public methods and properties that ``cls`` or its slitcombine bases define."""
    for name in dir(cls):
        if name.startswith("_"):
            continue
        owner = next((k for k in cls.__mro__ if name in vars(k)), None)
        if owner is None or not owner.__module__.startswith("slitcombine"):
            continue
        attr = vars(owner)[name]
        if isinstance(attr, property):
            yield name, attr.fget
        elif type(attr).__name__ == "cached_property":
            yield name, attr.func
        elif inspect.isfunction(attr):
            yield name, attr


def _documented_constants(module):
    """Names assigned at module level with a ``#:`` comment above or a string below."""
    lines = inspect.getsource(module).splitlines()
    body = ast.parse("\n".join(lines)).body
    out = set()
    for i, node in enumerate(body):
        if isinstance(node, ast.Assign):
            names = [t.id for t in node.targets if isinstance(t, ast.Name)]
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names = [node.target.id]
        else:
            continue
        above = lines[node.lineno - 2].strip() if node.lineno > 1 else ""
        nxt = body[i + 1] if i + 1 < len(body) else None
        below = (
            isinstance(nxt, ast.Expr)
            and isinstance(nxt.value, ast.Constant)
            and isinstance(nxt.value.value, str)
        )
        if above.startswith("#:") or below:
            out.update(names)
    return out


def _takes_parameters(obj):
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return False
    return any(
        p.name not in ("self", "cls") and p.kind is not p.VAR_POSITIONAL
        for p in sig.parameters.values()
    )


def _readme_block(language, after=None):
    """The first fenced block of ``language`` in the README (after a heading)."""
    text = README.read_text()
    if after is not None:
        text = text[text.index(after) :]
    m = re.search(rf"```{language}\n(.*?)```", text, re.S)
    assert m, f"no ```{language} block in README.md"
    return m.group(1)


# --------------------------------------------------------------------------- docstrings
def test_every_public_module_has_a_docstring_and_all():
    for name in PUBLIC_MODULES:
        mod = importlib.import_module(f"slitcombine.{name}")
        assert (mod.__doc__ or "").strip(), f"slitcombine.{name} has no module docstring"
        if name != "cli":  # the command line's only API is main(), documented
            assert hasattr(mod, "__all__"), f"slitcombine.{name} has no __all__"


def test_every_public_name_has_a_docstring():
    missing = []
    for qual, obj in _public_objects():
        if qual.endswith("__version__"):
            continue
        if inspect.isclass(obj) or inspect.isfunction(obj) or inspect.ismodule(obj):
            if not (inspect.getdoc(obj) or "").strip():
                missing.append(qual)
            if inspect.isclass(obj):
                for name, fn in _members(obj):
                    if not (fn.__doc__ or "").strip():
                        missing.append(f"{qual}.{name}")
    assert not missing, f"public names without a docstring: {sorted(set(missing))}"


def test_public_constants_are_documented():
    missing = []
    for name in PUBLIC_MODULES:
        mod = importlib.import_module(f"slitcombine.{name}")
        documented = _documented_constants(mod)
        for n in getattr(mod, "__all__", ()):
            obj = getattr(mod, n)
            if callable(obj) or inspect.ismodule(obj) or n == "__version__":
                continue
            if n not in documented:
                missing.append(f"{name}.{n}")
    assert not missing, f"constants without a '#:' comment or docstring: {missing}"


def test_callables_with_parameters_have_a_parameters_section():
    gaps = set()
    for qual, obj in _public_objects():
        if qual.startswith("slitcombine."):
            continue  # the package namespace re-exports names checked with their module
        if inspect.isfunction(obj):
            targets = [(qual, obj)]
        elif inspect.isclass(obj):
            targets = [(f"{qual}.{n}", fn) for n, fn in _members(obj)]
        else:
            targets = []
        for q, fn in targets:
            doc = inspect.getdoc(fn) or ""
            if _takes_parameters(fn) and not re.search(r"^Parameters\n-+$", doc, re.M):
                gaps.add(q)
    new = sorted(gaps - KNOWN_PARAMETER_GAPS)
    assert not new, f"callables with parameters but no 'Parameters' section: {new}"


def test_docstrings_parse_as_numpydoc():
    docscrape = pytest.importorskip("numpydoc.docscrape")
    bad = []
    for qual, obj in _public_objects():
        if inspect.isfunction(obj) or inspect.isclass(obj):
            try:
                docscrape.FunctionDoc(None, doc=inspect.getdoc(obj) or "")
            except Exception as exc:  # noqa: BLE001 - report every unparsable docstring
                bad.append(f"{qual}: {exc}")
    assert not bad, bad


def test_slitgroup_has_every_member_of_msaexp():
    missing = [m for m in SEED_MEMBERS if not hasattr(slitcombine.SlitGroup, m)]
    assert not missing, f"SlitGroup lacks msaexp members {missing}"


# --------------------------------------------------------------------------- README
@pytest.fixture(scope="module")
def readme_run(tmp_path_factory):
    """Run the README's Python example on a small simulated observation."""
    from slitcombine.testing.simulate import simulate_observation

    work = tmp_path_factory.mktemp("readme")
    sim = simulate_observation(
        work / "slitcombine-demo" / "inputs",
        grating="PRISM",
        n_shutters=3,
        n_nods=3,
        snr=15.0,
        n_crs=10,
        nx=200,
        seed=4,
    )
    code = _readme_block("python", after="## Reduce a source in Python")
    cwd = os.getcwd()
    os.chdir(work)
    try:
        namespace = {}
        exec(compile(code, str(README), "exec"), namespace)  # noqa: S102 - the README example
    finally:
        os.chdir(cwd)
    return work, namespace, sim


def test_readme_example_runs_and_recovers_the_truth(readme_run):
    work, ns, sim = readme_run
    assert (work / "out" / "my_source.spec.fits").is_file()
    assert set(ns["paths"]) >= {"spec"}
    spec = ns["spec"]
    assert str(spec["flux"].unit) == "uJy" and str(spec["wave"].unit) == "um"
    # the example's result against the simulator's truth (continuum bins with S/N > 5)
    from slitcombine.testing.demo import compare_with_truth

    m = compare_with_truth(spec, sim.truth)
    assert m["n_bins"] > 50
    assert abs(m["median_ratio"] - 1) < 0.05
    assert 0.7 < m["chi_std"] < 1.4


def test_readme_extension_table_matches_the_file(readme_run):
    from astropy.io import fits

    work, _, _ = readme_run
    text = README.read_text()
    section = text[text.index("## The output file") : text.index("`SPEC1D` columns")]
    listed = re.findall(r"^\| (\d+) \| `([A-Z0-9-]+)` \|", section, re.M)
    with fits.open(work / "out" / "my_source.spec.fits") as hdul:
        names = [h.name for h in hdul]
    assert [(int(i), n) for i, n in listed] == list(enumerate(names))


def test_readme_spec1d_columns_match_the_file(readme_run):
    from astropy import units as u
    from astropy.table import Table

    work, _, _ = readme_run
    text = README.read_text()
    section = text[text.index("`SPEC1D` columns") :]
    section = section[: section.index("\n\n", section.index("| column"))]
    listed = []
    for cell in re.findall(r"^\| ([^|]+) \|", section, re.M):
        listed += re.findall(r"`(\w+)`", cell)
    spec = Table.read(work / "out" / "my_source.spec.fits", hdu="SPEC1D")
    assert listed == spec.colnames
    units = dict(re.findall(r"^\| `(\w+)`[^|]*\| ([^|]*) \|", section, re.M))
    for name, unit in units.items():
        unit = unit.strip().replace("^", "")
        if unit and unit != "bool":
            assert spec[name].unit == u.Unit(unit), name


def _command_lines(text, code_only=False):
    """``slitcombine ...`` command lines of a text (continuations joined, comments cut).

    With ``code_only`` only indented lines count (the code blocks of an RST page).
    """
    text = text.replace("\\\n", " ")
    lines = [
        line.split("#")[0].strip()
        for line in text.splitlines()
        if not code_only or line.startswith("   ")
    ]
    return [
        line
        for line in lines
        if line.startswith("slitcombine ") and not line.endswith(("--version", "--help"))
    ]


def test_documented_command_lines_parse():
    from slitcombine.cli import build_parser

    parser = build_parser()
    readme = _command_lines(_readme_block("bash", after="## Command line"))
    assert any(" extract " in line for line in readme) and any(" batch " in line for line in readme)
    pages = [(DOCS / p).read_text() for p in ("getting_started.rst", "batch.rst")]
    lines = readme + [line for text in pages for line in _command_lines(text, code_only=True)]
    assert len(lines) > len(readme) + 5
    for line in lines:
        args = parser.parse_args(shlex.split(line)[1:])
        assert callable(args.func), line


def test_readme_real_data_commands_run_from_a_fresh_clone(tmp_path, monkeypatch, caplog):
    """Issue 18.12: the README's CEERS command lines run on the files kept in tests/data."""
    import glob
    import logging

    from slitcombine.cli import main

    block = _readme_block("bash", after="## Command line")
    folder = re.search(r"^D=(\S+)", block, re.M).group(1)
    assert (REPO / folder).is_dir() and folder.startswith("tests/data/")
    lines = [line for line in _command_lines(block) if "$D/" in line]
    assert any(line.startswith("slitcombine info ") for line in lines)
    assert any(line.startswith("slitcombine extract ") for line in lines)
    monkeypatch.chdir(tmp_path)
    for line in lines:
        args = []
        for arg in shlex.split(line)[1:]:
            if "$D/" in arg:
                matched = sorted(glob.glob(arg.replace("$D", str(REPO / folder))))
                assert matched, arg
                args += matched
            else:
                args.append(arg)
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            assert main(args) == 0, line
        if args[0] == "extract":
            warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
            assert not any("bound" in w for w in warnings), warnings
    assert (tmp_path / "out" / "1345_933_prism-clear.spec.fits").is_file()


def _rst_python_blocks(page):
    text = (DOCS / page).read_text()
    blocks = re.findall(r"\.\. code-block:: python\n\n(.*?)(?:\n\n(?=\S)|\Z)", text, re.S)
    return ["\n".join(line[3:] for line in b.splitlines()) for b in blocks]


@pytest.mark.parametrize("page", ["getting_started.rst", "guide/trace.rst", "guide/outputs.rst"])
def test_python_examples_of_the_pages_run(readme_run, page):
    work, ns, _ = readme_run
    blocks = _rst_python_blocks(page)
    assert blocks
    namespace = {"files": ns["files"], "group": ns["group"]}
    cwd = os.getcwd()
    os.chdir(work)
    try:
        for code in blocks:
            if "logging.basicConfig" in code:
                continue  # would configure the test process's logging
            exec(compile(code, page, "exec"), namespace)  # noqa: S102 - the page's example
    finally:
        os.chdir(cwd)


def test_masks_guide_example_runs(readme_run):
    _, ns, _ = readme_run
    group = ns["group"]
    text = (DOCS / "guide" / "masks.rst").read_text()
    block = re.search(r"\.\. code-block:: python\n\n(.*?)\n\n(?=\S)", text, re.S).group(1)
    code = "\n".join(line[3:] for line in block.splitlines())
    before = int(group.mask.sum())
    exec(compile(code, "masks.rst", "exec"), {"group": group})  # noqa: S102 - the guide example
    from slitcombine.core.masks import Reject

    user = (group.reject & np.uint32(Reject.USER)) > 0
    assert user.any() and not (group.mask & user).any()
    assert int(group.mask.sum()) < before


def test_readme_keeps_the_two_setup_commands():
    text = README.read_text()
    assert "pip install . && slitcombine demo" in text
    assert 'pip install -e ".[test]" && python -m pytest' in text


# --------------------------------------------------------------------------- docs pages
def _migration_rows():
    text = (DOCS / "migration.rst").read_text()
    table = text[text.index(":class: migration-table") : text.index("Conventions that differ")]
    rows = []
    for block in re.split(r"\n   \* - ", table)[2:]:
        cells = [c.strip() for c in re.split(r"\n     - ", block)]
        rows.append(cells)
    return rows


def test_migration_table_lists_every_option_with_its_default():
    from slitcombine.group.slitgroup import SlitGroup

    params = inspect.signature(SlitGroup.__init__).parameters
    rows = {r[0].strip("`").lstrip("*"): r for r in _migration_rows()}
    expected = [n for n in params if n not in ("self", "kwargs")]
    assert [n for n in rows if n != "kwargs"] == expected
    for name in expected:
        default = params[name].default
        if default is inspect.Parameter.empty:
            shown = "(required)"
        else:
            value = dict(default) if type(default).__name__ == "mappingproxy" else default
            shown = f"``{value!r}``"
        assert rows[name][2] == shown, f"{name}: table says {rows[name][2]}, code {shown}"


def test_batch_guide_toml_is_a_valid_configuration(tmp_path):
    from slitcombine.pipeline.config import load_config

    text = (DOCS / "batch.rst").read_text()
    m = re.search(r"\.\. code-block:: toml\n\n(.*?)\n\n(?=\S)", text, re.S)
    toml = "\n".join(line[3:] for line in m.group(1).splitlines())
    path = tmp_path / "example.toml"
    path.write_text(toml)
    config = load_config(path)
    kwargs = config.combine_kwargs()
    assert kwargs["estimate_sky_kwargs"]["df"] == 31
    assert kwargs["flag_2d_kwargs"]["threshold"] == [-6, 6]
    assert kwargs["trace_kwargs"] == {"ref_exp": "auto", "degree": 1}
    assert kwargs["ny"] == 15


def test_generated_doc_assets_exist_and_are_small():
    static = DOCS / "_static"
    for name in ("demo.png", "validation/validation.png"):
        path = static / name
        assert path.is_file(), f"{path} missing: run the scripts in docs/scripts/"
        assert path.stat().st_size < 200_000
    for name in ("injection_summary.csv", "benchmark.csv"):
        rows = (static / "validation" / name).read_text().strip().splitlines()
        assert len(rows) > 2
