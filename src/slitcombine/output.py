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
                  flux per row, collapsed over the columns with S/N > 3
6   BACKGROUND    background subtracted from each pixel (sky + negative nods), uJy
7   SLITS         one row per input exposure (``SlitGroup.slit_metadata``)
8   REJECT        (new) rejection bits: ``bit``, ``name``, pixels per exposure
9   WCS-TAB       (new) wavelength lookup table of the 2D WCS (``-TAB`` convention)
10  PROVENANCE    (new) versions, every parameter, group options/steps, inputs
==  ============  =========================================================================

Conventions: bad 1D bins have ``flux = err = NaN`` and ``valid = False`` (never a zero
error); ``path_corr`` is the multiplicative path-loss correction *already applied* to
``flux`` and ``err`` (1 where none); the 2D WCS is ``WAVE-TAB`` (um) along axis 1 and a
linear offset from the trace along axis 2 (arcsec, ``YSTEP`` pixels per row).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.io import fits
from astropy.table import Table

from ._atomic import atomic_path
from .errors import OutputError
from .masks import Reject

__all__ = [
    "SPEC1D_DESCRIPTIONS",
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


def _wcs_tab_hdu(wave):
    col = fits.Column(
        name="WAVELENGTH",
        format=f"{wave.size}D",
        dim=f"(1,{wave.size})",
        unit="um",
        array=np.asarray(wave, float).reshape(1, wave.size, 1),
    )
    hdu = fits.BinTableHDU.from_columns([col], name="WCS-TAB")
    hdu.header["COMMENT"] = "wavelength lookup table of the 2D WCS (FITS -TAB convention)"
    return hdu


def _image_header(wave, y, pixel_scale, bunit, extname):
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


def _spec1d_hdu(spec, header_cards):
    tab = Table(spec, copy=True)
    hdu = fits.table_to_hdu(tab)
    hdu.name = "SPEC1D"
    for i, name in enumerate(tab.colnames, start=1):
        if name in SPEC1D_DESCRIPTIONS:
            hdu.header[f"TCOMM{i}"] = SPEC1D_DESCRIPTIONS[name]
    for key, value, comment in header_cards:
        hdu.header[key] = (value, comment)
    return hdu


def _reject_hdu(reject):
    names, bits = [], []
    for bit in Reject:
        names.append(bit.name)
        bits.append(int(bit))
    counts = np.array([[int(np.count_nonzero(row & np.uint32(b))) for row in reject] for b in bits])
    tab = Table()
    tab["bit"] = np.array(bits, np.int64)
    tab["name"] = names
    tab["npix"] = counts.astype(np.int64)
    tab["npix"].description = "rejected pixels per exposure"
    hdu = fits.table_to_hdu(tab)
    hdu.name = "REJECT"
    hdu.header["NVALID"] = (int(np.count_nonzero(np.asarray(reject) == 0)), "valid pixels")
    return hdu


def _safe_table(tab):
    """A copy of ``tab`` that FITS can hold (objects/mixed types as strings)."""
    out = Table()
    for name in tab.colnames:
        col = tab[name]
        if col.dtype.kind == "O":
            out[name] = [str(v) for v in col]
        else:
            out[name] = col
    return out


def build_hdulist(result):
    """The HDUList of a combination (see the module docstring for the layout).

    Parameters
    ----------
    result : slitcombine.combine.CombineResult
        The combination.

    Returns
    -------
    astropy.io.fits.HDUList
    """
    from .provenance import header_cards, provenance_table

    group = result.group
    prov = result.provenance
    src = {
        "ORIGIN": ("slitcombine", "software that wrote this file"),
        "FILETYPE": ("spec", "combined 2D + 1D spectrum"),
        "NAME": (result.name, "combination name"),
        "GRATING": (group.grating, "disperser"),
        "FILTER": (group.filter, "filter"),
        "SRCNAME": (str(group.info["source_name"][0]), "source name"),
        "SRCID": (str(group.info["source_id"][0]), "source id"),
        "SRCRA": (float(np.nan_to_num(group.info["source_ra"][0])), "[deg] source RA"),
        "SRCDEC": (float(np.nan_to_num(group.info["source_dec"][0])), "[deg] source Dec"),
        "EXPTIME": (
            float(np.nansum(group.info["effective_exposure_time"])),
            "[s] summed effective exposure time",
        ),
        "NCOMBINE": (int(group.N), "number of exposures"),
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
    hdus = [primary, _spec1d_hdu(result.spec, cards)]
    for extname, data, bunit in (
        ("SCI", d["sci"], "uJy"),
        ("WHT", d["wht"], "uJy-2"),
        ("PROFILE", d["profile"], ""),
    ):
        h = _image_header(d["wave"], d["y"], scale, bunit, extname)
        hdus.append(fits.ImageHDU(np.asarray(data, np.float64), header=h, name=extname))
    p1 = Table()
    p1["pix"] = d["y"] * u.pix
    p1["profile"] = result.prof1d["profile"]
    p1["pfit"] = result.prof1d["pfit"]
    hp = fits.table_to_hdu(p1)
    hp.name = "PROF1D"
    hp.header["PROFSIG"] = (float(np.median(result.sigma)), "[pix] intrinsic width")
    hdus.append(hp)
    h = _image_header(d["wave"], d["y"], scale, "uJy", "BACKGROUND")
    hdus.append(fits.ImageHDU(np.asarray(d["sky"], np.float64), header=h, name="BACKGROUND"))
    slits = fits.table_to_hdu(_safe_table(result.slits))
    slits.name = "SLITS"
    hdus.append(slits)
    hdus.append(_reject_hdu(group.reject))
    hdus.append(_wcs_tab_hdu(d["wave"]))
    prov_hdu = fits.table_to_hdu(provenance_table(prov))
    prov_hdu.name = "PROVENANCE"
    hdus.append(prov_hdu)
    if result.include_pixtab:
        pt = fits.table_to_hdu(result.pixtab)
        pt.name = "PIXTAB"
        hdus.append(pt)
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
    except (OSError, fits.verify.VerifyError, ValueError) as exc:
        raise OutputError(f"cannot write {path}: {exc}") from exc
    return path


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
