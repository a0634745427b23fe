"""One exposure of one slit as read from a pipeline product (:class:`SlitExposure`), with
its lazily parsed ASDF tree and WCS, and the checksum of a file (:func:`file_checksum`).

:func:`slitcombine.io.reading.read_slit` builds the exposures.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
from astropy.io import fits

from slitcombine.errors import InputFileError, MissingExtensionError, NotASlitError
from slitcombine.io import _asdf_cache
from slitcombine.io._asdf_plugins import _restrict_asdf_plugins

__all__ = ["SlitExposure", "file_checksum"]


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


def _fmt(value, spec):
    return "?" if value is None else format(value, spec)
