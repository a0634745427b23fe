"""The asdf plugins a slit's tree needs, and asdf restricted to them.

asdf loads every installed plugin the first time it converts a tagged node; the reader
of :mod:`slitcombine.io.reading` gives its ``asdf.config_context`` only the resource
mappings and extensions of :data:`SLIT_ASDF_PLUGINS` (:func:`_restrict_asdf_plugins`),
found by distribution name and with the extension manifests parsed by libyaml.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from functools import lru_cache
from types import SimpleNamespace

__all__ = ["SLIT_ASDF_PLUGINS", "SKIPPED_ASDF_ENTRY_POINTS"]

log = logging.getLogger(__name__)


#: Distributions whose asdf plugins a slit tree needs: asdf's core types and schemas,
#: astropy's units/models/coordinates, gwcs and the NIRSpec transforms of stdatamodels
#: (extensions), and the schema packages their manifests live in (resource mappings).
SLIT_ASDF_PLUGINS = (
    "asdf",
    "asdf-astropy",
    "asdf-standard",
    "asdf-coordinates-schemas",
    "asdf-transform-schemas",
    "asdf-wcs-schemas",
    "gwcs",
    "stdatamodels",
)

#: Entry points of those distributions that a slit tree does not need: the schemas of
#: the JWST datamodels (only used to validate a whole datamodel, which the reader does
#: not do; loading them imports every datamodel class, ~0.14 s).
SKIPPED_ASDF_ENTRY_POINTS = ("stdatamodels.jwst.datamodels.integration:get_resource_mappings",)


def _dist_key(name):
    return name.lower().replace("_", "-").replace(".", "-")


@contextmanager
def _libyaml_manifests():
    """Let asdf parse extension manifests with libyaml's safe loader.

    asdf reads each manifest with ``yaml.safe_load`` (PyYAML's pure-Python loader):
    ~0.25 s for the ~50 manifests of asdf-astropy, gwcs and stdatamodels, once per
    process.  ``yaml.CSafeLoader`` builds the same plain objects (asdf already uses it
    for the trees of files) about 10x faster.  Only the module reference inside asdf's
    manifest module is swapped, for the duration of the block.
    """
    import yaml

    try:
        from asdf.extension import _manifest
    except ImportError:  # a private module: another asdf version may not have it
        _manifest = None
    if (
        _manifest is None
        or not getattr(yaml, "__with_libyaml__", False)
        or getattr(_manifest, "yaml", None) is not yaml
    ):
        yield
        return

    def safe_load(stream):
        return yaml.load(stream, Loader=yaml.CSafeLoader)

    _manifest.yaml = SimpleNamespace(safe_load=safe_load)
    try:
        yield
    finally:
        _manifest.yaml = yaml


def _load_entry_points(installed, group, proxy_class):
    """Load the ``group`` entry points of :data:`SLIT_ASDF_PLUGINS` in asdf's order.

    Parameters
    ----------
    installed : importlib.metadata.EntryPoints
        The entry points of the :data:`SLIT_ASDF_PLUGINS` distributions
        (:func:`_slit_entry_points`).
    group : str
        ``asdf.resource_mappings`` or ``asdf.extensions``.
    proxy_class : type
        asdf's proxy class of that group.
    """
    found = {}
    for ep in installed.select(group=group):
        if ep.value not in SKIPPED_ASDF_ENTRY_POINTS:
            found.setdefault((ep.dist.name, ep.value), ep)
    # asdf's own order: other packages sorted by name first, asdf's core last.
    out = []
    for key in sorted(found, key=lambda k: (_dist_key(k[0]) == "asdf", k[0], k[1])):
        dist = found[key].dist
        elements = found[key].load()()
        for element in elements if isinstance(elements, list) else [elements]:
            out.append(proxy_class(element, package_name=dist.name, package_version=dist.version))
    return out


def _slit_entry_points():
    """The entry points of the :data:`SLIT_ASDF_PLUGINS` distributions that are installed.

    Looked up by distribution name: ``importlib.metadata.entry_points()`` would read the
    metadata of every installed distribution (~170 in a scientific environment, ~40 ms
    of the first group of a process).
    """
    from importlib.metadata import EntryPoints, PackageNotFoundError, distribution

    found = []
    for name in SLIT_ASDF_PLUGINS:
        try:
            found.extend(distribution(name).entry_points)
        except PackageNotFoundError:
            log.debug("asdf plugin distribution %s is not installed", name)
    return EntryPoints(found)


@lru_cache(maxsize=1)
def _slit_asdf_plugins():
    """The asdf resource mappings and extensions of :data:`SLIT_ASDF_PLUGINS`.

    asdf loads *every* installed plugin the first time it converts a tagged node (with
    ndcube or specutils installed that imports matplotlib.pyplot, dask.array ... and
    costs ~1.2 s and ~40 MB per process).  The reader needs only the plugins above.

    Returns
    -------
    tuple or None
        ``(resource_mappings, extensions)`` (lists of asdf proxies), or None when asdf's
        configuration cannot be restricted (asdf then loads all its plugins).
    """
    import asdf
    from asdf.extension import ExtensionProxy
    from asdf.resource import ResourceMappingProxy

    with asdf.config_context() as config:
        if not all(hasattr(config, a) for a in ("_resource_mappings", "_extensions")):
            log.debug("asdf %s: cannot restrict its plugin list", asdf.__version__)
            return None
        try:
            installed = _slit_entry_points()
            mappings = _load_entry_points(installed, "asdf.resource_mappings", ResourceMappingProxy)
            # The extension packages read their manifests through the resource manager
            # of the current context when they are first imported: give them ours.
            config._resource_mappings = mappings
            config._resource_manager = None
            with _libyaml_manifests():
                extensions = _load_entry_points(installed, "asdf.extensions", ExtensionProxy)
        except Exception as exc:  # a broken plugin: asdf's own loader warns and goes on
            log.warning("restricted asdf plugin list failed (%s); asdf loads all plugins", exc)
            return None
    names = {_dist_key(e.package_name) for e in extensions}
    if not {"asdf", "asdf-astropy", "gwcs", "stdatamodels"} <= names:
        log.debug("asdf extensions found: %s; asdf loads all plugins", sorted(names))
        return None
    return mappings, extensions


def _restrict_asdf_plugins(config):
    """Give an ``asdf.config_context`` only the slit plugins, unless asdf has them all.

    Parameters
    ----------
    config : asdf.config.AsdfConfig
        The context's configuration (a copy: the global one is not touched).
    """
    if getattr(config, "_extensions", None) is not None:
        return  # asdf has already loaded its full plugin list in this process
    plugins = _slit_asdf_plugins()
    if plugins is None:
        return
    # AsdfConfig has no public setter for whole plugin lists (add_extension and
    # add_resource_mapping first load every plugin); set the context copy's lists.
    config._resource_mappings = list(plugins[0])
    config._resource_manager = None
    config._extensions = list(plugins[1])
