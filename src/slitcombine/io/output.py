"""The ``{name}.spec.fits`` product: layout, atomic writer and a specutils loader.

Layout (HDU order; compatible with msaexp's ``slit_combine`` product so that
``msaexp.spectrum.read_spectrum`` reads it, with the additions marked "new")

==  ============  =========================================================================
#   EXTNAME       content
==  ============  =========================================================================
0   PRIMARY       header only: ``ORIGIN='slitcombine'``, source, grating, provenance cards
1   SPEC1D        1D table, first columns ``wave`` [um], ``flux`` [uJy], ``err`` [uJy],
                  ``valid`` (bool), then ``sky`` [uJy], ``path_corr``, ``npix``,
                  ``flux_boxcar``, ``err_boxcar`` [uJy], ``norm_corr``, ``flux_sum``
                  [uJy], ``profile_sum``, ``var_sum`` [uJy2], ``profile_weight``,
                  ``wave_eff`` [um]
2   SCI           rectified 2D spectrum ``(2 ny + 1, nwave)``, uJy per pixel, divided by
                  each exposure's slit throughput (as msaexp), with a WCS (new)
3   WHT           inverse variance of SCI, uJy-2
4   PROFILE       unit-flux model of SCI (the nod-difference profile)
5   PROF1D        ``pix`` [pix], ``profile`` (data), ``pfit`` (model): fraction of the
                  flux per detector pixel at each row (it sums to 1/step over the rows),
                  collapsed over the columns with S/N > 3
6   BACKGROUND    background subtracted from each pixel (sky + negative nods), uJy
7   SLITS         one row per input exposure (``SlitGroup.slit_metadata``)
8   REJECT        (new) rejection bits: ``bit``, ``name``, pixels per exposure
9   WCS-TAB       (new) wavelength lookup table of the 2D WCS (``-TAB`` convention)
10  PROVENANCE    (new) versions, every parameter, group options/steps, inputs
==  ============  =========================================================================

The binary tables are built by :func:`binary_table_hdu` from their header cards and
big-endian record bytes (no astropy ``Column`` objects, which cost ~0.25 ms each): the
file is the same, byte for byte, as the one :func:`astropy.io.fits.table_to_hdu` would
give (``tests/test_output.py`` checks this).

Conventions: bad 1D bins have ``flux = err = NaN`` and ``valid = False`` (never a zero
error); ``path_corr`` is the multiplicative path-loss correction *already applied* to
``flux`` and ``err`` (1 where none); the 2D WCS is ``WAVE-TAB`` (um) along axis 1 and a
linear offset from the trace along axis 2 (arcsec, ``YSTEP`` pixels per row).
"""

from __future__ import annotations

import errno
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.io import fits
from astropy.table import Table

from slitcombine._atomic import atomic_path
from slitcombine.core.masks import Reject
from slitcombine.errors import OutputError
from slitcombine.io.fits_tables import _columns_table_hdu, binary_table_hdu, table_hdu

__all__ = [
    "SPEC1D_DESCRIPTIONS",
    "GroupSummary",
    "binary_table_hdu",
    "table_hdu",
    "build_hdulist",
    "write_hdulist",
    "check_output_dir",
    "read_spec1d",
    "register_specutils_loader",
]

log = logging.getLogger(__name__)

#: Meaning of every SPEC1D column (written as TCOMMn cards).
SPEC1D_DESCRIPTIONS = {
    "wave": "bin centre wavelength",
    "flux": "optimal f_nu, path-loss corrected",
    "err": "1-sigma error of flux",
    "valid": "bin has a valid flux and error",
    "sky": "profile-weighted background per pixel",
    "path_corr": "path-loss factor applied to flux, err",
    "npix": "pixels used by the optimal extraction",
    "flux_boxcar": "boxcar f_nu, aperture+path corrected",
    "err_boxcar": "1-sigma error of flux_boxcar",
    "norm_corr": "profile-weighted normalisation factor",
    "flux_sum": "sum of diff pixels in boxcar, all exps",
    "profile_sum": "sum of profile model over same pixels",
    "var_sum": "sum of pixel variances over same pixels",
    "profile_weight": "sum of weight*profile**2 (optimal den)",
    "wave_eff": "mean wavelength of the pixels used",
}


def check_output_dir(directory):
    """Create ``directory`` if needed and check that it can be written.

    Parameters
    ----------
    directory : str or path-like
        Output folder.

    Returns
    -------
    pathlib.Path
        The folder.

    Raises
    ------
    OutputError
        If it cannot be created or written.
    """
    path = Path(directory)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create output directory {path}: {exc}") from exc
    if not path.is_dir():
        raise OutputError(f"output path {path} is not a directory")
    if not os.access(path, os.W_OK | os.X_OK):
        raise OutputError(f"output directory {path} is not writable")
    return path


def _wcs_tab_hdu(wave, columns=False):
    wave = np.asarray(wave, float)
    comment = ("COMMENT", "wavelength lookup table of the 2D WCS (FITS -TAB convention)", "")
    if not columns:
        # one row holding a (1, n) array: TFORM1 = '{n}D', TDIM1 = '(1,{n})'
        arrays = {"WAVELENGTH": wave.reshape(1, wave.size, 1)}
        return binary_table_hdu(arrays, "WCS-TAB", units={"WAVELENGTH": "um"}, cards=[comment])
    col = fits.Column(
        name="WAVELENGTH",
        format=f"{wave.size}D",
        dim=f"(1,{wave.size})",
        unit="um",
        array=wave.reshape(1, wave.size, 1),
    )
    hdu = fits.BinTableHDU.from_columns([col], name="WCS-TAB")
    hdu.header["COMMENT"] = comment[1]
    return hdu


def _image_header(wave, y, pixel_scale, bunit, extname, step=None):
    h = fits.Header()
    h["EXTNAME"] = extname
    h["WCSAXES"] = 2
    h["CTYPE1"] = "WAVE-TAB"
    h["CUNIT1"] = "um"
    h["CRPIX1"] = 1.0
    h["CRVAL1"] = 1.0
    h["CDELT1"] = 1.0
    h["PS1_0"] = ("WCS-TAB", "extension of the wavelength table")
    h["PS1_1"] = ("WAVELENGTH", "column of the wavelength table")
    if step is None:  # from the rows (a single row: one detector pixel)
        step = float(y[1] - y[0]) if len(y) > 1 else 1.0
    ny = (len(y) - 1) // 2
    scale = pixel_scale if (pixel_scale is not None and np.isfinite(pixel_scale)) else 0.1
    h["CTYPE2"] = ("OFFSET", "cross-dispersion offset from the trace")
    h["CUNIT2"] = "arcsec"
    h["CRPIX2"] = (ny + 1.0, "row of the trace (1-based)")
    h["CRVAL2"] = 0.0
    h["CDELT2"] = (step * scale, "arcsec per row")
    h["YSTEP"] = (step, "[pix] detector pixels per row")
    h["YPIXSCL"] = (scale, "[arcsec/pix] cross-dispersion pixel scale")
    h["WAVEMIN"] = (float(np.min(wave)), "[um] first wavelength")
    h["WAVEMAX"] = (float(np.max(wave)), "[um] last wavelength")
    if bunit:
        h["BUNIT"] = bunit
    return h


def _reject_hdu(reject, columns=False):
    reject = np.asarray(reject)
    bits = np.array([int(bit) for bit in Reject], np.int64)
    names = np.array([bit.name for bit in Reject])
    # (nbit, N): pixels of each exposure with each bit set
    counts = np.count_nonzero(reject[None] & bits.astype(reject.dtype)[:, None, None], axis=-1)
    cards = [("NVALID", int(np.count_nonzero(reject == 0)), "valid pixels")]
    arrays = {"bit": bits, "name": names, "npix": counts.astype(np.int64)}
    if not columns:
        return binary_table_hdu(arrays, "REJECT", cards=cards)
    tab = Table(arrays)
    tab["npix"].description = "rejected pixels per exposure"
    return _columns_table_hdu(tab, "REJECT", cards=cards)


@dataclass(frozen=True)
class GroupSummary:
    """What a product takes from its group (header cards and the REJECT table).

    Attributes
    ----------
    grating, filter : str
        Disperser and filter (upper case).
    source_name, source_id : str
        Of exposure 0.
    source_ra, source_dec : float
        Of exposure 0, degrees (0 where unknown).
    exptime : float
        Summed effective exposure time, s.
    n_exposures : int
        Number of exposures.
    slit_pixel_scale : float
        Cross-dispersion pixel scale, arcsec / pixel.
    reject : numpy.ndarray
        ``(N, ny*nx)`` rejection bits (:class:`slitcombine.core.masks.Reject`).
    """

    grating: str
    filter: str
    source_name: str
    source_id: str
    source_ra: float
    source_dec: float
    exptime: float
    n_exposures: int
    slit_pixel_scale: float
    reject: np.ndarray


def build_hdulist(result, columns=False):
    """The HDUList of a combination (see the module docstring for the layout).

    Parameters
    ----------
    result : slitcombine.pipeline.result.CombineResult
        The combination: its ``summary`` (:class:`GroupSummary`), ``name``,
        ``provenance``, ``spec``, ``drizzled``, ``prof1d``, ``sigma``, ``slits``,
        ``params``, ``pathloss_used``, ``include_pixtab`` and ``pixtab``.
    columns : bool
        Build the binary tables with astropy ``Column`` objects
        (:func:`astropy.io.fits.table_to_hdu`): the slower reference path, same file.

    Returns
    -------
    astropy.io.fits.HDUList
    """
    from slitcombine.io.provenance import header_cards, provenance_table

    group = result.summary
    prov = result.provenance
    src = {
        "ORIGIN": ("slitcombine", "software that wrote this file"),
        "FILETYPE": ("spec", "combined 2D + 1D spectrum"),
        "NAME": (result.name, "combination name"),
        "GRATING": (group.grating, "disperser"),
        "FILTER": (group.filter, "filter"),
        "SRCNAME": (group.source_name, "source name"),
        "SRCID": (group.source_id, "source id"),
        "SRCRA": (group.source_ra, "[deg] source RA"),
        "SRCDEC": (group.source_dec, "[deg] source Dec"),
        "EXPTIME": (group.exptime, "[s] summed effective exposure time"),
        "NCOMBINE": (group.n_exposures, "number of exposures"),
        "TOMUJY": (1.0, "flux columns are in uJy"),
        "SIGMA": (float(np.median(result.sigma)), "[pix] intrinsic profile width"),
        "PATHUSED": (result.pathloss_used, "path-loss model used"),
    }
    cards = [(k, v, c) for k, (v, c) in src.items()] + header_cards(prov)

    primary = fits.PrimaryHDU()
    for key, value, comment in cards:
        primary.header[key] = (value, comment)

    d = result.drizzled
    scale = group.slit_pixel_scale
    step = result.params.get("step") if isinstance(result.params, dict) else None
    spec1d = table_hdu(result.spec, "SPEC1D", SPEC1D_DESCRIPTIONS, cards, columns=columns)
    hdus = [primary, spec1d]
    for extname, data, bunit in (
        ("SCI", d["sci"], "uJy"),
        ("WHT", d["wht"], "uJy-2"),
        ("PROFILE", d["profile"], ""),
    ):
        h = _image_header(d["wave"], d["y"], scale, bunit, extname, step)
        hdus.append(fits.ImageHDU(np.asarray(data, np.float64), header=h, name=extname))
    p1 = Table()
    p1["pix"] = d["y"] * u.pix
    p1["profile"] = result.prof1d["profile"]
    p1["pfit"] = result.prof1d["pfit"]
    width = [("PROFSIG", float(np.median(result.sigma)), "[pix] intrinsic width")]
    hdus.append(table_hdu(p1, "PROF1D", cards=width, columns=columns))
    h = _image_header(d["wave"], d["y"], scale, "uJy", "BACKGROUND", step)
    hdus.append(fits.ImageHDU(np.asarray(d["sky"], np.float64), header=h, name="BACKGROUND"))
    hdus.append(table_hdu(result.slits, "SLITS", columns=columns))
    hdus.append(_reject_hdu(group.reject, columns=columns))
    hdus.append(_wcs_tab_hdu(d["wave"], columns=columns))
    hdus.append(table_hdu(provenance_table(prov), "PROVENANCE", columns=columns))
    if result.include_pixtab:
        hdus.append(table_hdu(result.pixtab, "PIXTAB", columns=columns))
    return fits.HDUList(hdus)


def write_hdulist(hdul, path, overwrite=True):
    """Write an HDUList atomically: a temporary file in the same folder, then rename.

    Parameters
    ----------
    hdul : astropy.io.fits.HDUList
        What to write.
    path : str or path-like
        Destination.
    overwrite : bool
        Replace an existing file.

    Returns
    -------
    pathlib.Path
        The written file.

    Raises
    ------
    OutputError
        If the folder is not writable, the file exists and ``overwrite`` is False, or
        writing fails; no partial file is left behind.
    """
    path = Path(path)
    check_output_dir(path.parent)
    if path.exists() and not overwrite:
        raise OutputError(f"{path} exists (overwrite=False)")
    try:
        # by name, not through an open descriptor: astropy's out-of-space handler
        # fails with an AttributeError on a file object made from a descriptor
        with atomic_path(path) as tmp:
            hdul.writeto(tmp, output_verify="exception", overwrite=True)
    except OSError as exc:
        clean = _write_os_error(exc)
        raise OutputError(f"cannot write {path}: {clean}") from clean
    except (fits.verify.VerifyError, ValueError) as exc:
        raise OutputError(f"cannot write {path}: {exc}") from exc
    return path


#: astropy's words for a full disk, prefixed to the OSError by each nested writer
_ASTROPY_NO_SPACE = re.compile(r"Not enough space on disk: requested (\d+), available (\d+)\. ")


def _write_os_error(exc):
    """The OSError of a failed FITS write, with astropy's repeated words made one.

    astropy's writers are nested (the HDUList, then each HDU) and each one that fails
    on a full disk re-raises with ``"Not enough space on disk: requested N, available
    M. "`` prefixed, so one full disk reads ``"Not enough space on disk: requested
    682479, available 0. Not enough space on disk: requested 73872, available 0. [Errno
    28] ..."``.  This gives ``[Errno 28] No space left on device (the file needs 682479
    bytes, 0 available)``, with the original error as its ``__cause__``.

    Parameters
    ----------
    exc : OSError
        The error raised by ``HDUList.writeto``.

    Returns
    -------
    OSError
        ``exc`` itself when astropy added nothing.
    """
    text = str(exc)
    sizes = _ASTROPY_NO_SPACE.findall(text)
    if not sizes:
        return exc
    needed, available = sizes[0]  # the outermost writer's: the whole file
    clean = OSError(
        errno.ENOSPC,
        f"{os.strerror(errno.ENOSPC)} (the file needs {needed} bytes, {available} available)",
    )
    clean.__cause__ = exc
    return clean


def read_spec1d(path):
    """Read the ``SPEC1D`` table of a product, with units and the bad-bin mask.

    Parameters
    ----------
    path : str or path-like
        A ``.spec.fits`` file.

    Returns
    -------
    astropy.table.QTable
        The table (``wave`` um, ``flux``/``err`` uJy, ``valid`` bool ...).
    """
    from astropy.table import QTable

    return QTable.read(path, hdu="SPEC1D")


def _is_slitcombine_product(origin, *args, **kwargs):
    """specutils identifier: a FITS file written by slitcombine with a SPEC1D table."""
    if isinstance(args[0], str | os.PathLike):
        try:
            with fits.open(args[0], memmap=False) as hdul:
                return "SPEC1D" in hdul and hdul[0].header.get("ORIGIN") == "slitcombine"
        except (OSError, ValueError):
            return False
    hdul = args[2] if len(args) > 2 else None
    if isinstance(hdul, fits.HDUList):
        return "SPEC1D" in hdul and hdul[0].header.get("ORIGIN") == "slitcombine"
    return False


def _load_spectrum(file_obj, **kwargs):
    from astropy.nddata import StdDevUncertainty
    from specutils import Spectrum

    with fits.open(file_obj, memmap=False) as hdul:
        tab = Table.read(hdul["SPEC1D"])
        header = hdul["SPEC1D"].header.copy()
    wave = np.asarray(tab["wave"], float) * u.um
    flux = np.asarray(tab["flux"], float) * u.uJy
    err = np.asarray(tab["err"], float)
    valid = np.asarray(tab["valid"], bool)
    return Spectrum(
        flux=flux,
        spectral_axis=wave,
        uncertainty=StdDevUncertainty(err, unit=u.uJy),
        mask=~valid,
        meta={"header": header, "table": tab},
    )


def register_specutils_loader():
    """Register the ``'slitcombine'`` format with specutils (idempotent).

    After this call ``specutils.Spectrum.read(path)`` (or with
    ``format='slitcombine'``) returns the optimal 1D spectrum of a product, with
    ``mask = ~valid``, the uncertainty as ``StdDevUncertainty`` and the SPEC1D header
    and full table in ``meta``.

    Returns
    -------
    bool
        True if the loader was registered by this call, False if it already was.
    """
    from astropy.io import registry
    from specutils import Spectrum
    from specutils.io.registers import data_loader

    if "slitcombine" in registry.get_formats(Spectrum)["Format"]:
        return False
    data_loader(
        "slitcombine",
        identifier=_is_slitcombine_product,
        dtype=Spectrum,
        extensions=["fits"],
        priority=20,
    )(_load_spectrum)
    return True
