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
import io
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.io import fits
from astropy.table import Column, Table

from slitcombine._atomic import atomic_path
from slitcombine.core.masks import Reject
from slitcombine.errors import OutputError

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


#: numpy (kind, itemsize) -> FITS binary-table type code, for the types stored without
#: TZERO/TSCAL scaling (signed int8 and unsigned 16-64 bit integers are not).
_TYPE_CODES = {
    ("b", 1): "L",
    ("u", 1): "B",
    ("i", 2): "I",
    ("i", 4): "J",
    ("i", 8): "K",
    ("f", 4): "E",
    ("f", 8): "D",
    ("c", 8): "C",
    ("c", 16): "M",
}

#: FITS block size, bytes.
_BLOCK = 2880

#: Header of an empty primary HDU, put before a table to read it back as a file.
_EMPTY_PRIMARY = b"".join(
    f"{card:80s}".encode("ascii")
    for card in (
        "SIMPLE  =                    T",
        "BITPIX  =                    8",
        "NAXIS   =                    0",
        "END",
    )
).ljust(_BLOCK, b" ")


def _string_card(keyword, value):
    """The 80-character image of a string card without comment, as astropy writes it.

    Formatted here (~0.5 us) rather than by :class:`astropy.io.fits.Card` (~18 us);
    values that need more than one card (``CONTINUE``), are empty or are not printable
    ASCII are left to astropy.
    """
    if value and value.isascii() and value.isprintable():
        quoted = "'" + f"{value.replace(chr(39), chr(39) * 2):8}" + "'"
        image = f"{keyword:8}= {quoted:20}"
        if len(image) <= 80:
            return f"{image:80}"
    return fits.Card(keyword, value).image


def _type_code(dtype):
    """FITS type code of a numpy scalar dtype, or None if it needs scaling/is unknown."""
    if dtype.kind in "SU":
        return "A" if dtype.itemsize > 0 else None
    return _TYPE_CODES.get((dtype.kind, dtype.itemsize))


def binary_table_hdu(columns, name, units=None, comments=None, cards=()):
    """A FITS binary table built from its header cards and big-endian record bytes.

    Same HDU as ``fits.table_to_hdu(Table(columns))`` with ``EXTNAME``, ``TCOMMn`` and
    ``cards`` appended in that order (same cards, same data bytes), without creating
    astropy ``Column`` objects: the column cards (``TTYPEn``, ``TFORMn``, ``TUNITn``,
    ``TDIMn``, ``TCOMMn``) are formatted as 80-character strings, the data are packed
    into one big-endian structured array, and the HDU is read back from these bytes
    as from a file (its data are parsed only if accessed, and written to a file as
    they are; ``output_verify`` still checks every card when writing).

    Column conventions (those of astropy): booleans become logical ``L`` (bytes
    ``T``/``F``), unicode strings ASCII ``nA`` (NUL padded), floats keep NaN; a column
    of shape ``(nrow, *shape)`` has a repeat count ``prod(shape)`` (strings: times the
    length, always written, e.g. ``1A``) and ``TDIMn = (shape reversed)`` (strings:
    ``(nchar, shape reversed)``).

    Parameters
    ----------
    columns : dict of str -> numpy.ndarray, or numpy structured array
        The columns, in order, all with the same first dimension (rows).  Supported
        dtypes: bool, uint8, int16/32/64, float32/64, complex64/128, bytes and unicode
        strings (ASCII).
    name : str
        ``EXTNAME``.
    units : dict of str -> str, optional
        FITS unit string (``TUNITn``) of some columns, e.g. ``{'wave': 'um'}``.
    comments : dict of str -> str, optional
        Description (``TCOMMn``) of some columns.
    cards : sequence of (str, object, str), optional
        Further header cards ``(keyword, value, comment)``, appended in order (a
        keyword other than ``COMMENT``/``HISTORY`` must not repeat one already there).

    Returns
    -------
    astropy.io.fits.BinTableHDU

    Raises
    ------
    OutputError
        If a column has an unsupported dtype, the columns differ in length, a string
        is not ASCII or a keyword repeats.
    """
    if isinstance(columns, np.ndarray):
        columns = {key: columns[key] for key in columns.dtype.names}
    units = units or {}
    comments = comments or {}
    arrays = [np.asarray(v) for v in columns.values()]
    nrow = len(arrays[0]) if arrays else 0
    descr, colcards = [], []
    for i, (key, arr) in enumerate(zip(columns, arrays, strict=True), start=1):
        code = _type_code(arr.dtype)
        if code is None or arr.ndim == 0 or len(arr) != nrow:
            raise OutputError(
                f"table {name}: column {key!r} ({arr.dtype}, shape {arr.shape}) cannot be "
                "written as a FITS binary-table column"
            )
        shape = arr.shape[1:]
        repeat = int(np.prod(shape, dtype=int))
        if code == "A":
            nchar = arr.dtype.itemsize // (4 if arr.dtype.kind == "U" else 1)
            dtype = np.dtype(f"S{nchar}")
            repeat *= nchar
            dims = (nchar, *shape[::-1]) if shape else ()
        else:
            dtype = np.dtype("u1") if code == "L" else arr.dtype.newbyteorder(">")
            dims = shape[::-1]
        descr.append((key, dtype, shape))
        tform = code if repeat == 1 and code != "A" else f"{repeat}{code}"  # '1A', not 'A'
        colcards += [(f"TTYPE{i}", key), (f"TFORM{i}", tform)]
        if key in units:  # '' (dimensionless) too, as astropy
            colcards.append((f"TUNIT{i}", units[key]))
        if dims:
            colcards.append((f"TDIM{i}", "(" + ",".join(map(str, dims)) + ")"))
    rec = np.empty(nrow, dtype=descr)
    for key, arr in zip(columns, arrays, strict=True):
        if arr.dtype.kind == "b":
            rec[key] = np.where(arr, ord("T"), ord("F"))
        elif arr.dtype.kind == "U":
            try:
                rec[key] = np.char.encode(arr, "ascii")
            except UnicodeEncodeError as exc:
                raise OutputError(f"table {name}: column {key!r} is not ASCII: {exc}") from exc
        else:
            rec[key] = arr
    tcomm = [(f"TCOMM{i}", comments[key]) for i, key in enumerate(columns, 1) if key in comments]
    fixed = [
        ("XTENSION", "BINTABLE", "binary table extension"),
        ("BITPIX", 8, "array data type"),
        ("NAXIS", 2, "number of array dimensions"),
        ("NAXIS1", rec.dtype.itemsize, "length of dimension 1"),
        ("NAXIS2", nrow, "length of dimension 2"),
        ("PCOUNT", 0, "number of group parameters"),
        ("GCOUNT", 1, "number of groups"),
        ("TFIELDS", len(descr), "number of table fields"),
    ]
    keys = [c[0].upper() for c in (*fixed, *colcards, ("EXTNAME",), *tcomm, *cards)]
    keys = [k for k in keys if k not in ("COMMENT", "HISTORY", "")]
    if len(set(keys)) != len(keys):
        dup = sorted({k for k in keys if keys.count(k) > 1})
        raise OutputError(f"table {name}: repeated header keyword(s) {dup}")
    # the card order of table_to_hdu followed by setting EXTNAME, TCOMMn and the cards
    header = "".join(
        [
            fits.Header(fixed).tostring(endcard=False, padding=False),
            *(_string_card(k, v) for k, v in colcards),
            fits.Card("EXTNAME", name, "extension name").image,
            *(_string_card(k, v) for k, v in tcomm),
            fits.Header(list(cards)).tostring(endcard=False, padding=False),
            f"{'END':80}",
        ]
    )
    header += " " * (-len(header) % _BLOCK)
    data = rec.tobytes()
    padding = b"\0" * (-len(data) % _BLOCK)
    buffer = io.BytesIO(_EMPTY_PRIMARY + header.encode("ascii") + data + padding)
    # Read back as from a file (not ``BinTableHDU.fromstring``, whose HDU can be
    # written only once and has read-only data): the data stay raw bytes until
    # accessed (then a writable copy) and are written by copying these bytes.
    return fits.open(buffer, memmap=False)[1]


def _columns_table_hdu(table, name, comments=None, cards=()):
    """``binary_table_hdu`` through astropy ``Column`` objects (``fits.table_to_hdu``).

    The reference implementation (and the fallback for tables that
    :func:`binary_table_hdu` does not handle: masked or mixin columns, display formats,
    table ``meta``, scaled integer types).  Python-object columns are written as the
    ``str`` of their values.
    """
    if any(getattr(table[key], "dtype", None) == np.dtype("O") for key in table.colnames):
        table = _safe_table(table)
    hdu = fits.table_to_hdu(table)
    hdu.name = name
    for i, key in enumerate(table.colnames, start=1):
        if comments and key in comments:
            hdu.header[f"TCOMM{i}"] = comments[key]
    for key, value, comment in cards:
        hdu.header[key] = (value, comment)
    return hdu


def table_hdu(table, name, comments=None, cards=(), columns=False):
    """The binary-table HDU of an astropy table (units as ``TUNITn``).

    Parameters
    ----------
    table : astropy.table.Table or astropy.table.QTable
        The table; ``Quantity`` and unit-bearing columns give ``TUNITn`` (FITS unit
        strings), Python-object columns are written as the ``str`` of their values.
    name : str
        ``EXTNAME``.
    comments : dict of str -> str, optional
        Description (``TCOMMn``) of some columns.
    cards : sequence of (str, object, str), optional
        Further header cards ``(keyword, value, comment)``, after ``TCOMMn``.
    columns : bool
        Build it with astropy ``Column`` objects (:func:`astropy.io.fits.table_to_hdu`,
        ~0.25 ms per column) instead of :func:`binary_table_hdu`; same result.  Tables
        that :func:`binary_table_hdu` does not handle (masked or mixin columns other
        than Quantity, display formats, ``meta``, scaled integer types, units with no
        FITS form) always take this path.

    Returns
    -------
    astropy.io.fits.BinTableHDU
    """
    if columns or table.meta or table.masked:
        return _columns_table_hdu(table, name, comments, cards)
    arrays, units = {}, {}
    for key in table.colnames:
        col = table[key]
        if not isinstance(col, Column | u.Quantity) or col.info.format is not None:
            return _columns_table_hdu(table, name, comments, cards)
        value = np.asarray(col.value if isinstance(col, u.Quantity) else col)
        if value.dtype.kind == "O":  # as _safe_table: Python objects as their str
            value = np.array([str(v) for v in value])
        if getattr(col, "mask", None) is not None or _type_code(value.dtype) is None:
            return _columns_table_hdu(table, name, comments, cards)
        if col.unit is not None:
            try:
                units[key] = col.unit.to_string(format="fits")
            except ValueError:  # no FITS form: let astropy warn and drop it
                return _columns_table_hdu(table, name, comments, cards)
        arrays[key] = value
    return binary_table_hdu(arrays, name, units=units, comments=comments, cards=cards)


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
