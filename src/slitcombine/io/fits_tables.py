"""FITS binary-table HDUs built from header cards and record bytes.

:func:`binary_table_hdu` writes a table's header cards and its big-endian records
directly (no astropy ``Column`` objects, which cost ~0.25 ms each); the file is the
same, byte for byte, as the one :func:`astropy.io.fits.table_to_hdu` gives
(``tests/test_output.py`` checks this).  :func:`table_hdu` is the entry point for an
:class:`astropy.table.Table`.
"""

from __future__ import annotations

import io

import numpy as np
from astropy import units as u
from astropy.io import fits
from astropy.table import Column, Table

from slitcombine.errors import OutputError

__all__ = ["binary_table_hdu", "table_hdu"]


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
