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
The exposure class is in :mod:`slitcombine.io.exposure` and the restriction of asdf to
the plugins a slit needs in :mod:`slitcombine.io._asdf_plugins`; ``SlitExposure`` and
``file_checksum`` remain importable from here.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
from astropy.io import fits

from slitcombine.errors import InputFileError, MissingExtensionError, NotASlitError
from slitcombine.io.exposure import SlitExposure as SlitExposure
from slitcombine.io.exposure import file_checksum

__all__ = ["read_slit", "list_slits"]

log = logging.getLogger(__name__)

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
        arrays, sci_header = _read_extensions(path, hdul, primary, ver)
        asdf_bytes = _read_asdf_bytes(path, hdul)

    # In a MultiSlitModel the slit attributes and WCS live in tree['slits'][i], where i
    # is the order of the slit's SCI extension (EXTVER = i + 1 as written by stdatamodels).
    is_multi = str(primary.get("DATAMODL", "")).strip() == "MultiSlitModel"
    sci = np.asarray(arrays["SCI"], dtype=np.float32)
    for name, arr in arrays.items():
        if arr is not None and arr.shape != sci.shape:
            raise InputFileError(path, f"extension {name} has shape {arr.shape}, SCI {sci.shape}")
    var_p, var_r, fallbacks = _variances_and_fallbacks(path, arrays, sci.shape)
    slit = {k: _header_value([sci_header], (kw,)) for k, kw in SLIT_KEYWORDS.items()}
    meta = _read_meta(path, primary, sci_header, n_slits)

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
        _slit_index=int(ver) - 1 if is_multi else None,
    )
    if fallbacks:
        log.info("%s: fallbacks for missing extensions: %s", path.name, fallbacks)
    return exposure


def _read_extensions(path, hdul, primary, ver):
    """The image extensions of version ``ver`` and its SCI header, checked to be a slit.

    Returns
    -------
    (dict, astropy.io.fits.Header)
        Extension name -> array (the extensions present), and the SCI header.

    Raises
    ------
    InputFileError, MissingExtensionError, NotASlitError
        As :func:`read_slit`.
    """
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
    return arrays, sci_header


def _read_asdf_bytes(path, hdul):
    """The raw bytes of the ``ASDF`` extension (parsed later, on demand).

    Raises
    ------
    MissingExtensionError, InputFileError
        No ``ASDF`` extension, or one that cannot be read.
    """
    if "ASDF" not in hdul:
        raise MissingExtensionError(path, "ASDF (WCS)")
    try:
        return hdul["ASDF"].data[0][0].tobytes()
    except (OSError, ValueError, TypeError, IndexError) as exc:
        raise InputFileError(path, f"cannot read the ASDF extension ({exc})") from exc


def _variances_and_fallbacks(path, arrays, shape):
    """The Poisson and read-noise variances, and what stands in for missing extensions.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray, dict)
        ``VAR_POISSON`` and ``VAR_RNOISE`` ((MJy/sr)^2; ``ERR**2`` and 0 without them)
        and the fallbacks (extension name -> text).

    Raises
    ------
    MissingExtensionError
        Neither the variances nor ``ERR``.
    """
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
    return var_p, var_r, fallbacks


def _read_meta(path, primary, sci_header, n_slits):
    """The ``meta`` groups of :data:`META_KEYWORDS`, the file name and the number of slits
    in the file; the exposure time checked."""
    meta = {
        group: {k: _header_value([primary, sci_header], kws) for k, kws in keys.items()}
        for group, keys in META_KEYWORDS.items()
    }
    meta["filename"] = path.name
    meta["n_slits_in_file"] = n_slits
    _check_exposure_time(path, meta["exposure"])
    return meta


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
