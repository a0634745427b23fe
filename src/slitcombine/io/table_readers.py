"""Readers of the calibration tables, with errors that name the file.

Each reader checks what it reads (required keys or columns, shapes, finite values,
increasing wavelengths, the grating a table declares) and raises
:class:`~slitcombine.errors.CalibrationFileError` naming the file; where the tables are
found is :mod:`slitcombine.io.tables`.  The tables become the records of
:mod:`slitcombine.core.barshadow` and :mod:`slitcombine.core.fluxcal`, or plain arrays.

File formats
------------
Bar-shadow coefficients (msaexp's format, YAML)
    ``coeffs``: ``(df,)`` (wavelength-independent, mode ``'slit'``) or ``(df, nw)`` (mode
    ``'wave'``); ``minmax``: ``[ymin, ymax]`` range of the shutter coordinate
    ``fixed_yshutter`` (shutter pitches) spanned by the cubic B-spline basis of ``df``
    functions with uniform knots; ``wavelengths``: ``(nw,)`` nodes (um) of the
    wavelength dependence, interpolated linearly and clamped at the ends.  Optional
    ``grating``: checked against the group.  See
    :func:`slitcombine.core.barshadow.evaluate_bar_coeffs`.
Slit renormalisation (msaexp's ``prism_slit_renormalize.yaml``)
    ``coeffs``: ``(df, 4, 3)``: for spline coefficient ``k`` and MSA quadrant ``q``
    (1-4) the coefficients ``(a, b, c)`` of ``c_k = a + b * xcen + c * ycen`` (``xcen``,
    ``ycen``: shutter column/row of the slitlet in its quadrant); ``df``; and
    ``reference_wavelengths`` (um, increasing).  The correction that multiplies the data
    is ``1 / sum_k B_k(u) c_k`` with ``u`` the fractional index of the wavelength in
    ``reference_wavelengths`` scaled to [0, 1] and ``B_k`` cubic B-splines with uniform
    knots on [0, 1]; NaN outside the reference range.  See
    :func:`slitcombine.core.fluxcal.normalization_correction`.
S-flat (FITS table, ``sflat_{grating}_q{quadrant}.fits``)
    Columns ``wave`` (um, ``nw`` rows, increasing) and ``coeffs`` (``nw`` x ``dfx*dfy``):
    per wavelength node, the coefficients of a tensor cubic B-spline in the MSA shutter
    position ``(xcen, ycen)`` (index ``i * dfy + j`` for x basis ``i`` and y basis
    ``j``); header keywords ``DFX``, ``DFY``, ``XMIN``, ``XMAX``, ``YMIN``, ``YMAX``
    (shutter units) and optionally ``GRATING``.  The flat is evaluated at the slitlet's
    ``(xcen, ycen)``, interpolated linearly in wavelength (NaN outside), and the data are
    **divided** by it.  See :func:`read_sflat`,
    :func:`slitcombine.core.fluxcal.sflat_correction`.
Extended-range sensitivity (FITS table, ``sensitivity_{grating}_{filter}.fits``)
    Columns ``wavelength`` (um, increasing) and ``sensitivity`` (response relative to
    the pipeline's flux calibration; the data are **divided** by it), optionally a
    column named after the detector (``nrs1``/``nrs2``) that multiplies
    ``sensitivity`` for that detector; optional keyword ``GRATING``.  Used only when
    the pipeline used extended-range flats (``_ext`` in the ``R_FFLAT``, ``R_SFLAT`` or
    ``R_DFLAT`` keywords).  See :func:`read_sensitivity`.
Extra bad pixels
    ``badpix_{detector}.fits``: an image HDU (primary or ``EXTNAME='BADPIX'``) of the full
    detector (2048 x 2048), non-zero = bad; or msaexp's YAML ``msaexp_badpix_{detector}.yaml``
    with ``shape`` and ``pixel_index`` (flat indices into ``shape``; ``pixel_value``
    optional).  See :func:`read_bad_pixel_map`.
Tabulated sky (CSV, ``{visit}_sky.csv``)
    Columns ``wave`` (um) and ``flux`` (uJy per pixel); comment lines start with ``#``,
    ``# grating: NAME`` declares the disperser.  See :func:`read_sky_table`.
Background spectra (FITS table, ``{file_root}_gbkg.fits``)
    Columns ``wave``, ``p50``, ``perr`` and the keyword ``REFPAREA``.  See
    :func:`read_background_spectrum`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from slitcombine.core.barshadow import BarCoefficients
from slitcombine.core.fluxcal import RenormalizationTable, SflatTable
from slitcombine.errors import CalibrationFileError
from slitcombine.io.tables import KNOWN_GRATINGS

__all__ = [
    "declared_grating",
    "check_grating",
    "read_fits_table",
    "read_bar_coeffs",
    "read_renormalization",
    "read_sflat",
    "read_bad_pixel_map",
    "read_sensitivity",
    "read_sky_table",
    "read_background_spectrum",
]


# ====================================================================== helpers
def _read_yaml(path):
    """Parse a YAML mapping, with errors naming the file."""
    import yaml

    path = Path(path)
    try:
        with open(path) as fh:
            content = yaml.safe_load(fh)
    except FileNotFoundError as exc:
        raise CalibrationFileError(f"{path}: file not found") from exc
    except (OSError, yaml.YAMLError) as exc:
        raise CalibrationFileError(f"{path}: cannot be read as YAML ({exc})") from exc
    if not isinstance(content, dict):
        raise CalibrationFileError(f"{path}: expected a YAML mapping, got {type(content).__name__}")
    return content


def declared_grating(path, content=None):
    """Grating a calibration file declares (``grating`` key or file-name prefix), or None."""
    if content is not None and content.get("grating"):
        return str(content["grating"]).lower()
    prefix = Path(path).name.split("_")[0].lower()
    return prefix if prefix in KNOWN_GRATINGS else None


def read_fits_table(path, required=(), not_found="file not found"):
    """The first binary table of a FITS calibration file.

    Parameters
    ----------
    path : path-like
        The FITS file.
    required : iterable of str
        Column names (case-insensitive) that must be present.
    not_found : str
        Message for a missing file.

    Returns
    -------
    columns : dict
        Lower-case column name -> numpy array.
    header : astropy.io.fits.Header
        The table's header.

    Raises
    ------
    CalibrationFileError
        Missing or unreadable file, no binary table, or a required column missing.
    """
    from astropy.io import fits

    path = Path(path)
    try:
        with fits.open(path) as hdul:
            hdu = next((h for h in hdul if isinstance(h, fits.BinTableHDU)), None)
            if hdu is None:
                raise CalibrationFileError(f"{path}: no binary table extension")
            columns = {c.lower(): np.asarray(hdu.data[c]) for c in hdu.columns.names}
            header = hdu.header.copy()
    except FileNotFoundError as exc:
        raise CalibrationFileError(f"{path}: {not_found}") from exc
    except OSError as exc:
        raise CalibrationFileError(f"{path}: cannot be read as FITS ({exc})") from exc
    missing = [c for c in required if c not in columns]
    if missing:
        raise CalibrationFileError(f"{path}: missing column(s) {missing}")
    return columns, header


def check_grating(path, grating, content=None):
    """Raise :class:`CalibrationFileError` if ``path`` is a table of another grating."""
    if grating is None:
        return
    declared = declared_grating(path, content)
    if declared is not None and declared != str(grating).lower():
        raise CalibrationFileError(
            f"{path}: table for grating {declared.upper()}, but the data are {str(grating).upper()}"
        )


def _float_array(path, content, key, ndim=None):
    if key not in content:
        raise CalibrationFileError(f"{path}: required key {key!r} is missing")
    try:
        arr = np.asarray(content[key], dtype=float)
    except (TypeError, ValueError) as exc:
        raise CalibrationFileError(f"{path}: {key!r} is not a numeric array ({exc})") from exc
    if ndim is not None and arr.ndim not in np.atleast_1d(ndim):
        raise CalibrationFileError(f"{path}: {key!r} has shape {arr.shape}, expected {ndim}-D")
    if not np.all(np.isfinite(arr)):
        raise CalibrationFileError(f"{path}: {key!r} has non-finite values")
    return arr


# ====================================================================== bar shadow
def read_bar_coeffs(path, grating=None):
    """Read a bar-shadow table in msaexp's YAML format.

    Parameters
    ----------
    path : path-like
        The YAML file.
    grating : str or None
        The group's grating: a table declaring another one raises.

    Returns
    -------
    BarCoefficients

    Raises
    ------
    CalibrationFileError
        Missing, unreadable or malformed file, or a table of another grating.
    """
    path = Path(path)
    content = _read_yaml(path)
    check_grating(path, grating, content)
    coeffs = _float_array(path, content, "coeffs", ndim=(1, 2))
    minmax = _float_array(path, content, "minmax", ndim=1)
    if minmax.size != 2 or not minmax[1] > minmax[0]:
        raise CalibrationFileError(f"{path}: 'minmax' must be [ymin, ymax] with ymin < ymax")
    if coeffs.shape[0] < 4:
        raise CalibrationFileError(f"{path}: need at least 4 spline coefficients")
    waves = None
    if coeffs.ndim == 2:
        waves = _float_array(path, content, "wavelengths", ndim=1)
        if waves.size != coeffs.shape[1]:
            raise CalibrationFileError(
                f"{path}: 'coeffs' has {coeffs.shape[1]} wavelength columns but "
                f"'wavelengths' has {waves.size} values"
            )
        if not np.all(np.diff(waves) > 0):
            raise CalibrationFileError(f"{path}: 'wavelengths' must increase")
    return BarCoefficients(path, coeffs, (float(minmax[0]), float(minmax[1])), waves)


# ====================================================================== flux calibration
def read_renormalization(path, grating=None):
    """Read a slit renormalisation table (msaexp's ``prism_slit_renormalize.yaml`` format).

    Parameters
    ----------
    path : path-like
        The YAML file.
    grating : str or None
        The group's grating: a table declaring another one raises.

    Returns
    -------
    RenormalizationTable

    Raises
    ------
    CalibrationFileError
        Missing, unreadable or malformed file, or a table of another grating.
    """
    path = Path(path)
    content = _read_yaml(path)
    check_grating(path, grating, content)
    coeffs = _float_array(path, content, "coeffs", ndim=3)
    ref = _float_array(path, content, "reference_wavelengths", ndim=1)
    if coeffs.shape[1:] != (4, 3):
        raise CalibrationFileError(
            f"{path}: 'coeffs' has shape {coeffs.shape}, expected (df, 4 quadrants, 3)"
        )
    if "df" in content and int(content["df"]) != coeffs.shape[0]:
        raise CalibrationFileError(
            f"{path}: df={content['df']} but 'coeffs' has {coeffs.shape[0]} functions"
        )
    if coeffs.shape[0] < 4 or ref.size < 2 or not np.all(np.diff(ref) > 0):
        raise CalibrationFileError(
            f"{path}: need >= 4 coefficients and increasing 'reference_wavelengths'"
        )
    return RenormalizationTable(path, coeffs, ref)


def read_sflat(path, grating=None):
    """Read an s-flat table (``sflat_{grating}_q{quadrant}.fits``).

    Parameters
    ----------
    path : path-like
        FITS file with a binary table (``wave``, ``coeffs``) and the keywords ``DFX``,
        ``DFY``, ``XMIN``, ``XMAX``, ``YMIN``, ``YMAX``.
    grating : str or None
        The group's grating (checked against ``GRATING`` or the file name).

    Returns
    -------
    SflatTable

    Raises
    ------
    CalibrationFileError
        Missing, unreadable or malformed file, or a table of another grating.
    """
    path = Path(path)
    cols, hdr = read_fits_table(path, required=("wave", "coeffs"))
    wave = np.asarray(cols["wave"], float)
    coeffs = np.asarray(cols["coeffs"], float)
    try:
        keys = {k: hdr[k] for k in ("DFX", "DFY", "XMIN", "XMAX", "YMIN", "YMAX")}
    except KeyError as exc:
        raise CalibrationFileError(f"{path}: missing column or keyword {exc}") from exc
    declared = hdr.get("GRATING")
    check_grating(path, grating, {"grating": declared} if declared else None)
    dfx, dfy = int(keys["DFX"]), int(keys["DFY"])
    if coeffs.ndim != 2 or coeffs.shape != (wave.size, dfx * dfy):
        raise CalibrationFileError(
            f"{path}: 'coeffs' has shape {coeffs.shape}, expected ({wave.size}, {dfx * dfy})"
        )
    if wave.size < 2 or not np.all(np.diff(wave) > 0) or not np.all(np.isfinite(coeffs)):
        raise CalibrationFileError(f"{path}: 'wave' must increase and 'coeffs' be finite")
    return SflatTable(
        path,
        wave,
        coeffs,
        dfx,
        dfy,
        (float(keys["XMIN"]), float(keys["XMAX"])),
        (float(keys["YMIN"]), float(keys["YMAX"])),
    )


def read_sensitivity(path, grating=None, detector=None):
    """Read an extended-range sensitivity table (``sensitivity_{grating}_{filter}.fits``).

    Parameters
    ----------
    path : path-like
        FITS file with a binary table (see the module docstring).
    grating : str or None
        The group's grating (checked against ``GRATING`` or the file name).
    detector : str or None
        Detector name: its column, if present, multiplies the sensitivity.

    Returns
    -------
    wave, sensitivity : numpy.ndarray
        Wavelength (um) and relative sensitivity.

    Raises
    ------
    CalibrationFileError
        Missing, unreadable or malformed file, or a table of another grating.
    """
    path = Path(path)
    cols, hdr = read_fits_table(path, required=("wavelength", "sensitivity"))
    wave = np.asarray(cols["wavelength"], float)
    sens = np.asarray(cols["sensitivity"], float)
    det = None if detector is None else str(detector).lower()
    if det is not None and det in cols:
        sens = sens * np.asarray(cols[det], float)
    declared = hdr.get("GRATING")
    check_grating(path, grating, {"grating": declared} if declared else None)
    ok = np.isfinite(wave) & np.isfinite(sens)
    if ok.sum() < 2 or np.any(np.diff(wave[ok]) <= 0):
        raise CalibrationFileError(f"{path}: need >= 2 finite rows with increasing wavelength")
    return wave[ok], sens[ok]


# ====================================================================== bad pixels
def read_bad_pixel_map(path, shape=(2048, 2048)):
    """Read an extra bad-pixel map of a detector.

    Parameters
    ----------
    path : path-like
        ``*.fits`` (image, non-zero = bad) or msaexp's YAML (``shape``, ``pixel_index``).
    shape : (int, int)
        Expected detector shape.

    Returns
    -------
    numpy.ndarray
        Boolean ``shape`` array, True = bad.

    Raises
    ------
    CalibrationFileError
        Missing, unreadable or malformed file.
    """
    path = Path(path)
    if path.suffix.lower() in (".yaml", ".yml"):
        content = _read_yaml(path)
        fshape = tuple(int(v) for v in content.get("shape", shape))
        index = _float_array(path, content, "pixel_index", ndim=1).astype(np.int64)
        if fshape != tuple(shape):
            raise CalibrationFileError(f"{path}: map shape {fshape}, expected {tuple(shape)}")
        if index.size and (index.min() < 0 or index.max() >= np.prod(fshape)):
            raise CalibrationFileError(f"{path}: 'pixel_index' out of range for {fshape}")
        bad = np.zeros(int(np.prod(fshape)), bool)
        bad[index] = True
        return bad.reshape(fshape)
    from astropy.io import fits

    try:
        with fits.open(path) as hdul:
            hdu = hdul["BADPIX"] if "BADPIX" in hdul else hdul[0]
            data = None if hdu.data is None else np.asarray(hdu.data)
    except FileNotFoundError as exc:
        raise CalibrationFileError(f"{path}: file not found") from exc
    except OSError as exc:
        raise CalibrationFileError(f"{path}: cannot be read as FITS ({exc})") from exc
    if data is None or data.shape != tuple(shape):
        got = None if data is None else data.shape
        raise CalibrationFileError(f"{path}: image shape {got}, expected {tuple(shape)}")
    return data != 0


# ====================================================================== sky
def read_sky_table(path, grating=None, wave_range=None, min_overlap=0.5):
    """Read a tabulated sky spectrum (CSV with columns ``wave`` in um and ``flux`` in uJy/pixel).

    Comment lines start with ``#``; a comment ``# grating: NAME`` declares the disperser.

    Parameters
    ----------
    path : path-like
        The CSV file.
    grating : str or None
        The group's grating: a table declaring another one raises.
    wave_range : (float, float) or None
        The group's wavelength range (um): a table covering less than ``min_overlap``
        of it raises (a table of another grating or of the wrong units).
    min_overlap : float
        Minimum covered fraction of ``wave_range``.

    Returns
    -------
    wave, flux : numpy.ndarray
        Sorted by wavelength (um, uJy per pixel).

    Raises
    ------
    CalibrationFileError
        Missing, unreadable or malformed table, another grating, or no overlap.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError as exc:
        raise CalibrationFileError(f"{path}: sky table not found") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise CalibrationFileError(f"{path}: cannot be read as text ({exc})") from exc
    declared = None
    lines = []
    for line in text.splitlines():
        s = line.strip()
        if not s:
            continue
        if s.startswith("#"):
            key, _, value = s.lstrip("#").partition(":")
            if key.strip().lower() == "grating" and value.strip():
                declared = value.strip()
            continue
        lines.append(s)
    if not lines:
        raise CalibrationFileError(f"{path}: empty sky table")
    header = [h.strip().lower() for h in lines[0].split(",")]
    if "wave" not in header or "flux" not in header:
        raise CalibrationFileError(
            f"{path}: sky table needs the columns 'wave' (um) and 'flux' (uJy per pixel); "
            f"found {header}"
        )
    iw, jf = header.index("wave"), header.index("flux")
    try:
        rows = np.array([[float(v) for v in ln.split(",")] for ln in lines[1:]], float)
    except ValueError as exc:
        raise CalibrationFileError(f"{path}: non-numeric value in the sky table ({exc})") from exc
    if rows.ndim != 2 or rows.shape[0] < 2 or rows.shape[1] != len(header):
        raise CalibrationFileError(f"{path}: sky table needs >= 2 rows of {len(header)} values")
    wave, flux = rows[:, iw], rows[:, jf]
    if not (np.all(np.isfinite(wave)) and np.all(np.isfinite(flux))):
        raise CalibrationFileError(f"{path}: sky table has non-finite values")
    check_grating(path, grating, {"grating": declared} if declared else None)
    order = np.argsort(wave)
    wave, flux = wave[order], flux[order]
    if np.any(np.diff(wave) <= 0):
        raise CalibrationFileError(f"{path}: repeated wavelengths in the sky table")
    if wave[0] < 0.1 or wave[-1] > 30:
        raise CalibrationFileError(
            f"{path}: wavelengths {wave[0]:.3g}-{wave[-1]:.3g} are not in um"
        )
    if wave_range is not None:
        lo, hi = wave_range
        cover = max(0.0, min(hi, wave[-1]) - max(lo, wave[0])) / max(hi - lo, 1e-9)
        if cover < min_overlap:
            raise CalibrationFileError(
                f"{path}: the sky table ({wave[0]:.3f}-{wave[-1]:.3f} um) covers "
                f"{cover:.0%} of the data's {lo:.3f}-{hi:.3f} um (another grating?)"
            )
    return wave, flux


def read_background_spectrum(path, grating=None, wave_range=None):
    """Read a background spectrum ``{file_root}_gbkg.fits``.

    Format: the first binary-table HDU with columns ``wave`` (um, increasing), ``p50``
    (background in uJy per pixel of solid angle ``REFPAREA``, in the units of
    ``SlitGroup.sci``: bar shadow divided out, pipeline path-loss correction undone) and
    ``perr`` (its 1-sigma uncertainty, same unit); header keyword ``REFPAREA`` (sr,
    required) and optionally ``GRATING``.

    Parameters
    ----------
    path : path-like
        The FITS file.
    grating : str or None
        The group's grating (checked against ``GRATING``).
    wave_range : (float, float) or None
        The data's wavelength range: a spectrum covering less than half of it raises.

    Returns
    -------
    dict
        ``wave``, ``p50``, ``perr`` (numpy arrays) and ``refparea`` (sr).

    Raises
    ------
    CalibrationFileError
        Missing, unreadable or malformed file, another grating, or no overlap.
    """
    path = Path(path)
    cols, hdr = read_fits_table(
        path, required=("wave", "p50", "perr"), not_found="background spectrum not found"
    )
    wave = np.asarray(cols["wave"], float)
    p50 = np.asarray(cols["p50"], float)
    perr = np.asarray(cols["perr"], float)
    refparea = hdr.get("REFPAREA")
    declared = hdr.get("GRATING")
    if refparea is None or not (float(refparea) > 0):
        raise CalibrationFileError(f"{path}: keyword REFPAREA (pixel area, sr) missing or <= 0")
    check_grating(path, grating, {"grating": declared} if declared else None)
    ok = np.isfinite(wave) & np.isfinite(p50) & np.isfinite(perr)
    if ok.sum() < 2:
        raise CalibrationFileError(f"{path}: fewer than 2 finite rows")
    wave, p50, perr = wave[ok], p50[ok], perr[ok]
    if np.any(np.diff(wave) <= 0):
        raise CalibrationFileError(f"{path}: 'wave' must increase")
    if wave_range is not None:
        lo, hi = wave_range
        cover = max(0.0, min(hi, wave[-1]) - max(lo, wave[0])) / max(hi - lo, 1e-9)
        if cover < 0.5:
            raise CalibrationFileError(
                f"{path}: background spectrum ({wave[0]:.3f}-{wave[-1]:.3f} um) covers "
                f"{cover:.0%} of the data ({lo:.3f}-{hi:.3f} um)"
            )
    return {"wave": wave, "p50": p50, "perr": perr, "refparea": float(refparea)}
