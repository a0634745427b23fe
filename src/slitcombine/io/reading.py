"""Read JWST NIRSpec 2D slit products without the ``jwst`` package.

A pipeline ``SlitModel`` file (``*_phot.<slitlet>.<source>.fits``, ``*_cal.fits`` for a
single slit) or one slit of a ``MultiSlitModel`` (``*_cal.fits``) is read into a
:class:`SlitExposure`.

Fast path
---------
Full datamodel validation costs 0.2-1 s per file, while reading the FITS arrays and
headers costs ~5 ms.  We therefore

* read every image extension and the headers with :mod:`astropy.io.fits` (the file is
  opened read-only and never modified);
* take the metadata we need (slit attributes, dither, exposure, instrument, photometry)
  from the FITS keywords that the datamodel writes for them;
* keep the raw bytes of the ``ASDF`` extension and parse them only when something asks
  for the WCS or for an attribute stored only in the ASDF tree (``quadrant``, ``xcen``,
  ``ycen``, ``slit_ymin``, ``slit_ymax``).  Parsing costs ~35-50 ms for the YAML
  (libyaml) and ~55-200 ms for the astropy models of the gwcs of a NIRSpec MSA slit, so
  a group typically parses one file;
* convert each distinct subtree of a WCS tree once per process
  (:mod:`slitcombine.io._asdf_cache`, keyed by content): the exposures of a source, and
  the sources of a visit and grating, share the instrument model, and a later file
  builds only the models that differ (CEERS: 55 of 380 nodes, ~35 ms instead of ~220).

Fallbacks for optional extensions are recorded in :attr:`SlitExposure.fallbacks`.
"""

from __future__ import annotations

import hashlib
import io
import logging
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from astropy.io import fits

from slitcombine.errors import InputFileError, MissingExtensionError, NotASlitError
from slitcombine.io import _asdf_cache

__all__ = ["SlitExposure", "read_slit", "list_slits", "file_checksum"]

log = logging.getLogger(__name__)

#: Image extensions of a slit product.  ``required`` ones raise when absent.
REQUIRED_EXTENSIONS = ("SCI", "DQ")
OPTIONAL_EXTENSIONS = (
    "ERR",
    "WAVELENGTH",
    "BARSHADOW",
    "VAR_POISSON",
    "VAR_RNOISE",
    "VAR_FLAT",
    "PATHLOSS_PS",
    "PATHLOSS_UN",
)

#: Slit attributes -> FITS keyword of the SCI header (as written by stdatamodels).
SLIT_KEYWORDS = {
    "name": "SLTNAME",
    "xstart": "SLTSTRT1",
    "xsize": "SLTSIZE1",
    "ystart": "SLTSTRT2",
    "ysize": "SLTSIZE2",
    "slitlet_id": "SLITID",
    "shutter_id": "SHUTTRID",
    "source_id": "SOURCEID",
    "source_name": "SRCNAME",
    "source_alias": "SRCALIAS",
    "stellarity": "STLARITY",
    "source_xpos": "SRCXPOS",
    "source_ypos": "SRCYPOS",
    "shutter_state": "SHUTSTA",
    "source_ra": "SRCRA",
    "source_dec": "SRCDEC",
    "source_type": "SRCTYPE",
}

#: Slit attributes stored only in the ASDF tree (read lazily).
ASDF_ONLY_SLIT_ATTRIBUTES = ("quadrant", "xcen", "ycen", "slit_ymin", "slit_ymax")

#: meta.<group>.<attribute> -> keyword(s), first found wins; (header) 0 = primary, 1 = SCI.
META_KEYWORDS = {
    "instrument": {
        "name": ("INSTRUME",),
        "detector": ("DETECTOR",),
        "grating": ("GRATING",),
        "filter": ("FILTER",),
        "lamp_state": ("LAMP",),
        "lamp_mode": ("OPMODE", "LAMPMODE"),
        "fixed_slit": ("FXD_SLIT",),
        "msa_metadata_file": ("MSAMETFL",),
        "msa_metadata_id": ("MSAMETID",),
        "msa_configuration_id": ("MSACONID",),
    },
    "dither": {
        "position_number": ("PATT_NUM",),
        "total_points": ("NUMDTHPT",),
        "nod_type": ("NOD_TYPE",),
        "primary_type": ("PATTTYPE", "PRIDTYPE"),
        "x_offset": ("XOFFSET",),
        "y_offset": ("YOFFSET",),
    },
    "exposure": {
        "type": ("EXP_TYPE",),
        "exposure_time": ("EXPTIME", "EFFEXPTM"),
        "effective_exposure_time": ("XPOSURE", "EFFEXPTM", "EXPTIME"),
        "nframes": ("NFRAMES",),
        "ngroups": ("NGROUPS",),
        "nints": ("NINTS",),
        "readpatt": ("READPATT",),
        "start_time": ("EXPSTART",),
    },
    "observation": {
        "visit_id": ("VISIT_ID",),
        "program_number": ("PROGRAM",),
        "observation_number": ("OBSERVTN",),
        "visit_number": ("VISIT",),
        "exposure_number": ("EXPOSURE",),
    },
    "pointing": {"ra_v1": ("RA_V1",), "dec_v1": ("DEC_V1",), "pa_v3": ("PA_V3",)},
    "photometry": {
        "pixelarea_steradians": ("PIXAR_SR",),
        "pixelarea_arcsecsq": ("PIXAR_A2",),
    },
}


def file_checksum(path, algorithm="sha256"):
    """Checksum of a file's bytes.

    Parameters
    ----------
    path : str or path-like
        File to hash.
    algorithm : str
        Any :mod:`hashlib` algorithm name.

    Returns
    -------
    str
        ``"<algorithm>:<hex digest>"``.
    """
    with open(path, "rb") as fh:
        digest = hashlib.file_digest(fh, algorithm)
    return f"{algorithm}:{digest.hexdigest()}"


@dataclass(frozen=True, eq=False)
class SlitExposure:
    """One exposure of one slit, as read from a pipeline product.

    Arrays are the cutout as stored in the file (``(ny, nx)``, float32 for images,
    uint32 for ``dq``); nothing is converted or corrected here.

    Attributes
    ----------
    path : pathlib.Path
        The file read.
    extver : int
        ``EXTVER`` of the slit's extensions (1 for a per-slit file).
    checksum : str
        ``sha256:...`` of the whole input file.
    sci : numpy.ndarray
        SCI, surface brightness in MJy/sr (``BUNIT``).
    dq : numpy.ndarray
        DQ bit flags (JWST pixel flag definitions).
    err, var_poisson, var_rnoise, var_flat : numpy.ndarray
        Uncertainty (MJy/sr) and variances ((MJy/sr)^2).
    wavelength : numpy.ndarray or None
        Wavelength of each pixel in um (None when the extension is absent; see
        :attr:`fallbacks` and :meth:`wavelength_um`).
    barshadow, pathloss_ps, pathloss_un : numpy.ndarray or None
        Pipeline correction arrays (dimensionless) or None when absent.
    slit : dict
        Slit attributes (slitlet_id, source_id, source_xpos, shutter_state, xstart ...).
    meta : dict of dict
        ``instrument``, ``dither``, ``exposure``, ``observation``, ``pointing``,
        ``photometry`` groups, named as in the JWST datamodel.
    fallbacks : dict
        Extension name -> what was used instead of a missing optional extension.
    primary_header, sci_header : astropy.io.fits.Header
        The original headers.
    """

    path: Path
    extver: int
    checksum: str
    sci: np.ndarray
    dq: np.ndarray
    err: np.ndarray | None
    var_poisson: np.ndarray
    var_rnoise: np.ndarray
    var_flat: np.ndarray | None
    wavelength: np.ndarray | None
    barshadow: np.ndarray | None
    pathloss_ps: np.ndarray | None
    pathloss_un: np.ndarray | None
    slit: dict
    meta: dict
    fallbacks: dict
    primary_header: fits.Header = field(repr=False)
    sci_header: fits.Header = field(repr=False)
    _asdf_bytes: bytes = field(repr=False, default=b"")
    _slit_index: int | None = field(repr=False, default=None)

    # ------------------------------------------------------------------ lazy ASDF
    @cached_property
    def _asdf_file(self):
        """The opened ``AsdfFile`` of the ASDF extension, kept alive with the exposure.

        The tree is lazy: its nodes are converted on access and need this file object.
        """
        import asdf

        try:
            # Schema validation and default filling of the tree cost ~0.2 s per
            # file and add nothing to what we check ourselves.
            with warnings.catch_warnings(), asdf.config_context() as config:
                warnings.simplefilter("ignore")
                _restrict_asdf_plugins(config)
                config.validate_on_read = False
                config.legacy_fill_schema_defaults = False
                return asdf.open(
                    io.BytesIO(self._asdf_bytes),
                    lazy_load=True,
                    memmap=False,
                    lazy_tree=True,
                )
        except Exception as exc:  # asdf raises many unrelated types for corrupt YAML
            raise InputFileError(self.path, f"corrupt ASDF extension ({exc})") from exc

    @property
    def asdf_tree(self):
        """The ASDF tree of the file (lazily converted), parsed on first access.

        Raises
        ------
        InputFileError
            If the ASDF extension cannot be parsed.
        """
        try:
            return self._asdf_file.tree
        except InputFileError:
            raise
        except Exception as exc:  # a lazily parsed corrupt tree fails here
            raise InputFileError(self.path, f"corrupt ASDF extension ({exc})") from exc

    @cached_property
    def _slit_node(self):
        """The ASDF node holding this slit's attributes (root or ``slits[i]``)."""
        tree = self.asdf_tree
        if self._slit_index is None:
            return tree
        try:
            return tree["slits"][self._slit_index]
        except (KeyError, IndexError) as exc:
            raise InputFileError(
                self.path, f"ASDF tree has no slit number {self._slit_index}"
            ) from exc

    @cached_property
    def wcs(self):
        """The slit's ``gwcs.WCS`` (``detector -> ... -> slit_frame -> ... -> world``).

        The WCS object and its pipeline steps belong to this exposure; the astropy
        models and frames inside are shared with other exposures whose ASDF subtrees are
        identical (:mod:`slitcombine.io._asdf_cache`; ``SLITCOMBINE_WCS_CACHE=0`` turns the
        sharing off).  Evaluate them freely; to modify a model in place (a parameter,
        ``bounding_box``, ``inverse``, or ``wcs.bounding_box = ...``) take a
        ``copy.deepcopy`` of it first.

        Raises
        ------
        MissingExtensionError
            If the file has no WCS.
        """
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                meta = self._slit_node["meta"]
                # the raw tagged node under asdf's lazy AsdfDictNode, not yet converted
                lazy = isinstance(getattr(meta, "data", None), dict)
                raw = meta.data["wcs"] if lazy else meta["wcs"]
            except (KeyError, TypeError) as exc:
                raise MissingExtensionError(self.path, "ASDF meta.wcs") from exc
            # each distinct subtree is converted once per process (see _asdf_cache)
            wcs = _asdf_cache.convert(self._asdf_file, raw)
        if lazy:
            meta.data["wcs"] = wcs  # what asdf's lazy tree does with a converted node
        frames = getattr(wcs, "available_frames", [])
        if "detector" not in frames or "slit_frame" not in frames:
            raise NotASlitError(
                self.path, f"WCS has no detector -> slit_frame transform (frames {frames})"
            )
        return wcs

    def release_asdf(self):
        """Forget the parsed ASDF tree and the converted WCS (kept bytes stay).

        They are caches: the next access to :attr:`wcs`, :attr:`asdf_tree` or
        :meth:`asdf_slit_attribute` parses the ASDF extension again (~40 ms for a
        NIRSpec slit; its models then come from the process-wide cache of
        :mod:`slitcombine.io._asdf_cache` while they are in it).  A converted NIRSpec WCS
        and its file's tree hold ~4-6 MiB; :class:`slitcombine.SlitGroup` releases them
        once it has built its geometry.
        """
        for name in ("wcs", "_slit_node", "_asdf_file"):
            self.__dict__.pop(name, None)

    def asdf_slit_attribute(self, name, default=None):
        """A slit attribute stored only in the ASDF tree (``quadrant``, ``xcen`` ...).

        Parameters
        ----------
        name : str
            Attribute name.
        default : object
            Returned when the attribute is absent.
        """
        try:
            return self._slit_node[name]
        except KeyError:
            return default

    # ------------------------------------------------------------------ helpers
    @property
    def shape(self):
        """``(ny, nx)`` of the cutout, pixels."""
        return self.sci.shape

    @property
    def grating(self):
        """Grating name, upper case (e.g. ``'PRISM'``)."""
        return str(self.meta["instrument"].get("grating", "")).upper()

    @property
    def filter(self):
        """Filter name, upper case (e.g. ``'CLEAR'``)."""
        return str(self.meta["instrument"].get("filter", "")).upper()

    @property
    def is_fixed_slit(self):
        """True for a fixed-slit (``NRS_FIXEDSLIT``) exposure."""
        return str(self.meta["exposure"].get("type", "")).upper() == "NRS_FIXEDSLIT"

    @property
    def visit(self):
        """Visit key from the file name (``jw01345062001``)."""
        return self.path.name.split("_")[0]

    def summary(self):
        """One-line human summary used by ``slitcombine info``."""
        s, d, e = self.slit, self.meta["dither"], self.meta["exposure"]
        return (
            f"{self.path.name}: source {s.get('source_name')} (id {s.get('source_id')}) "
            f"slitlet {s.get('slitlet_id')} {self.grating}/{self.filter} "
            f"shape {self.shape[0]}x{self.shape[1]} "
            f"nod position {d.get('position_number')} of {d.get('total_points')} "
            f"shutters {s.get('shutter_state') or '?'} "
            f"(YOFFSET {_fmt(d.get('y_offset'), '.3f')} arcsec: dither offset of the "
            "pointing; nod steps are its differences) "
            f"exptime {_fmt(e.get('exposure_time'), '.1f')} s"
        )


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


def _fmt(value, spec):
    return "?" if value is None else format(value, spec)


def _header_value(headers, keys):
    for key in keys:
        for hdr in headers:
            if key in hdr:
                value = hdr[key]
                if isinstance(value, str):
                    value = value.strip()
                return value
    return None


def _open_fits(path):
    """Open ``path`` read-only, turning every failure into an InputFileError."""
    path = Path(path)
    if not path.exists():
        raise InputFileError(path, "file not found")
    if path.is_dir():
        raise InputFileError(path, "is a directory, not a FITS file")
    if path.stat().st_size == 0:
        raise InputFileError(path, "empty file (0 bytes)")
    with open(path, "rb") as fh:
        magic = fh.read(30)
    if not magic.startswith(b"SIMPLE  ="):
        raise InputFileError(path, "not a FITS file")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            warnings.simplefilter("error", fits.verify.VerifyWarning)
            hdul = fits.open(path, mode="readonly", memmap=False, lazy_load_hdus=False)
    except (OSError, ValueError, fits.verify.VerifyWarning, TypeError, IndexError) as exc:
        raise InputFileError(path, f"unreadable or truncated FITS ({exc})") from exc
    # astropy only warns when the last data unit is cut short (the arrays then fail
    # later with an unrelated reshape error): a truncated file is an error here.
    truncated = [w for w in caught if "truncated" in str(w.message)]
    if truncated:
        hdul.close()
        raise InputFileError(path, f"truncated FITS ({truncated[0].message})")
    for w in caught:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return path, hdul


def list_slits(path):
    """List the slits in a (Multi)SlitModel file.

    Parameters
    ----------
    path : str or path-like
        A per-slit or multi-slit product.

    Returns
    -------
    list of dict
        One dict per ``SCI`` extension with ``extver``, ``slitlet_id``, ``source_id``,
        ``source_name`` and ``name``.
    """
    path, hdul = _open_fits(path)
    with hdul:
        out = []
        for hdu in hdul:
            if hdu.name == "SCI":
                h = hdu.header
                out.append(
                    {
                        "extver": h.get("EXTVER", 1),
                        "slitlet_id": h.get("SLITID"),
                        "source_id": h.get("SOURCEID"),
                        "source_name": h.get("SRCNAME"),
                        "name": h.get("SLTNAME"),
                    }
                )
    return out


def _select_extver(path, hdul, source_id, slitlet_id, extver):
    sci_hdus = [hdu for hdu in hdul if hdu.name == "SCI"]
    if not sci_hdus:
        if "EXTRACT1D" in hdul or "COMBINE1D" in hdul:
            raise NotASlitError(path, "a 1D extracted spectrum (x1d), not a 2D slit")
        raise MissingExtensionError(path, "SCI")
    candidates = []
    for hdu in sci_hdus:
        h = hdu.header
        if extver is not None and h.get("EXTVER", 1) != extver:
            continue
        if source_id is not None and str(h.get("SOURCEID")) != str(source_id):
            continue
        if slitlet_id is not None and str(h.get("SLITID")) != str(slitlet_id):
            continue
        candidates.append((h.get("EXTVER", 1), h.get("SOURCEID"), h.get("SLITID")))
    if not candidates:
        raise InputFileError(
            path,
            f"no slit with source_id={source_id} slitlet_id={slitlet_id} extver={extver}",
        )
    if len(candidates) > 1:
        if source_id is not None:
            slitlets = ", ".join(str(c[2]) for c in candidates[:20])
            raise InputFileError(
                path,
                f"{len(candidates)} slits have source_id {source_id} (slitlets {slitlets}); "
                "choose one with slitlet_id or extver",
            )
        sources = ", ".join(str(c[1]) for c in candidates[:20])
        more = ", ..." if len(candidates) > 20 else ""
        raise InputFileError(
            path,
            f"{len(candidates)} slits match (source ids {sources}{more}); choose one with "
            "source_id or slitlet_id (command line: --source-id ID)",
        )
    return candidates[0][0], len(sci_hdus)


def read_slit(path, *, source_id=None, slitlet_id=None, extver=None):
    """Read one slit exposure.

    Parameters
    ----------
    path : str or path-like
        A per-slit ``SlitModel`` file, or a ``MultiSlitModel`` file with the slit chosen
        by ``source_id``, ``slitlet_id`` or ``extver``.
    source_id, slitlet_id : int or str, optional
        Select a slit of a multi-slit file by its source or slitlet id.
    extver : int, optional
        Select a slit by the ``EXTVER`` of its extensions.

    Returns
    -------
    SlitExposure

    Raises
    ------
    InputFileError
        Missing, empty, non-FITS or truncated file, or no/ambiguous slit selection.
    MissingExtensionError
        No ``SCI``, ``DQ`` or ``ASDF`` extension.
    NotASlitError
        An image, a 1D spectrum or a resampled (s2d) product instead of a slit.
    """
    path, hdul = _open_fits(path)
    with hdul:
        primary = hdul[0].header
        ver, n_slits = _select_extver(path, hdul, source_id, slitlet_id, extver)
        # One pass over the HDUs (``(name, ver) in hdul`` scans them all, every time).
        by_key = {}
        for hdu in hdul:
            by_key.setdefault((hdu.name.upper(), hdu.ver), hdu)
        arrays = {}
        for name in REQUIRED_EXTENSIONS + OPTIONAL_EXTENSIONS:
            hdu = by_key.get((name, ver))
            if hdu is not None:
                try:
                    arrays[name] = hdu.data
                except (OSError, ValueError, TypeError) as exc:
                    raise InputFileError(path, f"cannot read extension {name} ({exc})") from exc
        sci_header = by_key[("SCI", ver)].header
        hdu_names = {name for name, _ in by_key}
        for name in REQUIRED_EXTENSIONS:
            if name not in arrays or arrays[name] is None:
                raise MissingExtensionError(path, name)
        _check_is_slit(path, primary, sci_header, arrays, hdu_names)
        if "ASDF" not in hdul:
            raise MissingExtensionError(path, "ASDF (WCS)")
        try:
            asdf_bytes = hdul["ASDF"].data[0][0].tobytes()
        except (OSError, ValueError, TypeError, IndexError) as exc:
            raise InputFileError(path, f"cannot read the ASDF extension ({exc})") from exc

    # In a MultiSlitModel the slit attributes and WCS live in tree['slits'][i], where i
    # is the order of the slit's SCI extension (EXTVER = i + 1 as written by stdatamodels).
    is_multi = str(primary.get("DATAMODL", "")).strip() == "MultiSlitModel"
    slit_index = int(ver) - 1 if is_multi else None
    sci = np.asarray(arrays["SCI"], dtype=np.float32)
    shape = sci.shape
    for name, arr in arrays.items():
        if arr is not None and arr.shape != shape:
            raise InputFileError(path, f"extension {name} has shape {arr.shape}, SCI {shape}")

    fallbacks = {}
    var_p = arrays.get("VAR_POISSON")
    var_r = arrays.get("VAR_RNOISE")
    err = arrays.get("ERR")
    if var_r is None or var_p is None:
        if err is None:
            raise MissingExtensionError(path, "VAR_RNOISE/VAR_POISSON (and no ERR)")
        var_r = np.asarray(err, dtype=np.float32) ** 2
        var_p = np.zeros(shape, np.float32)
        fallbacks["VAR_RNOISE"] = "ERR**2 used as read-noise variance; VAR_POISSON = 0"
    for name, text in (
        ("WAVELENGTH", "computed from the WCS detector -> slit_frame"),
        ("BARSHADOW", "no pipeline bar-shadow correction to undo (treated as 1)"),
        ("PATHLOSS_UN", "no pipeline path-loss correction to undo (treated as 1)"),
        ("PATHLOSS_PS", "no pipeline point-source path loss (treated as 1)"),
    ):
        if arrays.get(name) is None:
            fallbacks[name] = text

    slit = {k: _header_value([sci_header], (kw,)) for k, kw in SLIT_KEYWORDS.items()}
    meta = {
        group: {k: _header_value([primary, sci_header], kws) for k, kws in keys.items()}
        for group, keys in META_KEYWORDS.items()
    }
    meta["filename"] = path.name
    meta["n_slits_in_file"] = n_slits
    _check_exposure_time(path, meta["exposure"])

    def _f32(name):
        arr = arrays.get(name)
        return None if arr is None else np.asarray(arr, dtype=np.float32)

    exposure = SlitExposure(
        path=path,
        extver=int(ver),
        checksum=file_checksum(path),
        sci=sci,
        dq=np.asarray(arrays["DQ"]).astype(np.uint32),
        err=_f32("ERR"),
        var_poisson=np.asarray(var_p, dtype=np.float32),
        var_rnoise=np.asarray(var_r, dtype=np.float32),
        var_flat=_f32("VAR_FLAT"),
        wavelength=_f32("WAVELENGTH"),
        barshadow=_f32("BARSHADOW"),
        pathloss_ps=_f32("PATHLOSS_PS"),
        pathloss_un=_f32("PATHLOSS_UN"),
        slit=slit,
        meta=meta,
        fallbacks=fallbacks,
        primary_header=primary,
        sci_header=sci_header,
        _asdf_bytes=asdf_bytes,
        _slit_index=slit_index,
    )
    if fallbacks:
        log.info("%s: fallbacks for missing extensions: %s", path.name, fallbacks)
    return exposure


def _check_exposure_time(path, exposure):
    """Reject a non-positive or non-numeric exposure time (a corrupt header).

    The exposure times weight the exposures (``weight_type='exptime'``) and are summed
    into the product's ``EXPTIME``; an absent keyword is allowed (left as None).
    """
    for key in ("exposure_time", "effective_exposure_time"):
        value = exposure.get(key)
        if value is None:
            continue
        try:
            ok = bool(np.isfinite(float(value)) and float(value) > 0)
        except (TypeError, ValueError):
            ok = False
        if not ok:
            cards = "/".join(META_KEYWORDS["exposure"][key])
            raise InputFileError(path, f"exposure time {cards} = {value!r} s is not positive")


def _check_is_slit(path, primary, sci_header, arrays, hdu_names):
    """Reject products that are not 2D NIRSpec slits, with a reason."""
    instrument = str(primary.get("INSTRUME", "")).strip().upper()
    if instrument and instrument != "NIRSPEC":
        raise NotASlitError(path, f"INSTRUME={instrument}, not a NIRSpec slit")
    model = str(primary.get("DATAMODL", "")).strip()
    if model and model not in ("SlitModel", "MultiSlitModel"):
        raise NotASlitError(path, f"DATAMODL={model}, not a SlitModel / MultiSlitModel")
    if {"WHT", "CON"} & hdu_names:
        raise NotASlitError(path, "a resampled (s2d) product, not a 2D slit cutout")
    sci = arrays["SCI"]
    if sci.ndim != 2:
        raise NotASlitError(path, f"SCI has {sci.ndim} dimensions, a 2D slit cutout is needed")
    exp_type = str(primary.get("EXP_TYPE", "")).strip().upper()
    if exp_type and exp_type not in ("NRS_MSASPEC", "NRS_FIXEDSLIT", "NRS_AUTOWAVE"):
        raise NotASlitError(path, f"EXP_TYPE={exp_type}, not an MSA or fixed-slit spectrum")
    for key in ("SLTSTRT1", "SLTSTRT2"):
        if key not in sci_header:
            raise NotASlitError(path, f"SCI header has no {key}: not a slit cutout")
