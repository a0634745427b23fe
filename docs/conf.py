"""Sphinx configuration of the slitcombine documentation.

Build (no network needed)::

    pip install -e ".[docs]"
    python -m sphinx -W --keep-going -b html docs docs/_build/html

The figures in ``_static/`` and the tables in ``_static/validation/`` are made by the
scripts in ``docs/scripts/`` (see ``docs/scripts/README.md``); the build only includes
them, so it is fast and needs no data.
"""

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))
os.environ.setdefault("MPLBACKEND", "Agg")

import slitcombine  # noqa: E402

project = "slitcombine"
author = "slitcombine developers"
copyright = "slitcombine developers, MIT license"  # noqa: A001
version = release = slitcombine.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.viewcode",
    "numpydoc",
    "scdocs",
]

# No network during the build: no intersphinx inventories are fetched.
intersphinx_mapping = {}

templates_path = ["_templates"]
exclude_patterns = ["_build", "scripts", "Thumbs.db", ".DS_Store"]
root_doc = "index"
default_role = "py:obj"
nitpicky = False

autosummary_generate = True
autosummary_imported_members = False
autosummary_ignore_module_all = False
autodoc_default_options = {"member-order": "bysource"}
autodoc_typehints = "none"
autodoc_inherit_docstrings = True

numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_attributes_as_param_list = False
numpydoc_xref_param_type = False
numpydoc_validation_checks = set()

html_theme = "pydata_sphinx_theme"
html_title = f"slitcombine {release}"
html_static_path = ["_static"]
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "navbar_end": ["navbar-icon-links"],
    "icon_links": [],
}
html_show_sourcelink = False
html_last_updated_fmt = None
