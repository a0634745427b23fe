"""Pixel masks: JWST DQ flags and the per-pixel "why rejected" bitfield.

Every step that rejects pixels sets its own bit in a ``uint32`` bitfield of the same
shape as the data (``SlitGroup.reject``); a pixel is valid when no bit is set.  The
bits are documented in :class:`Reject` and written to the outputs.
"""

from __future__ import annotations

import enum
import logging
from functools import cache

import numpy as np
from scipy import ndimage

from slitcombine.core.stats import masked_median

__all__ = [
    "Reject",
    "DEFAULT_BAD_DQ_FLAGS",
    "dq_flags",
    "dq_value",
    "dilate_stack",
    "noisy_pixels",
    "initial_rejections",
    "describe_rejections",
]

log = logging.getLogger(__name__)


class Reject(enum.IntFlag):
    """Bits of the per-pixel rejection bitfield (0 = valid pixel)."""

    #: A DQ bit of ``bad_dq_flags`` is set (DO_NOT_USE, SATURATED, DEAD, HOT ...).
    DQ = 1 << 0
    #: SCI, variance, wavelength or a correction factor is not finite, the variance is
    #: <= 0 or one of its components < 0.
    NONFINITE = 1 << 1
    #: Within ``dilate_failed_open`` pixels of an MSA_FAILED_OPEN pixel.
    FAILED_OPEN = 1 << 2
    #: Within ``pad_border`` pixels of the edge of the slit (undefined wavelength).
    BORDER = 1 << 3
    #: Bar-shadow throughput below ``min_bar``.
    LOW_BAR = 1 << 4
    #: In a shutter listed in ``bad_shutter_names`` (e.g. stuck closed).
    BAD_SHUTTER = 1 << 5
    #: Hot or cold in several exposures (``flag_hot_cold_pixels``).
    HOT_COLD = 1 << 6
    #: Extreme value with respect to the trace distribution (``flag_percentile_outliers``).
    PERCENTILE = 1 << 7
    #: Off-trace pixel brighter than the trace (``flag_trace_outliers``).
    TRACE = 1 << 8
    #: Outlier with respect to the cross-dispersion profile (``flag_from_profile``).
    PROFILE = 1 << 9
    #: Outlier with respect to its neighbours / the model (``flag_2d_outliers``).
    OUTLIER_2D = 1 << 10
    #: Bad in most exposures, so rejected in all (multiple-exposure mask).
    MULTIPLE = 1 << 11
    #: Outlier with respect to the sky model (``estimate_sky``).
    SKY = 1 << 12
    #: Outside the cutout overlap or otherwise excluded by the user.
    USER = 1 << 13
    #: Read-noise error far above the rest of its column (``flag_slit_hot_pixels``).
    NOISY = 1 << 14


#: DQ flags that make a pixel unusable by default.
DEFAULT_BAD_DQ_FLAGS = (
    "DO_NOT_USE",
    "SATURATED",
    "DEAD",
    "HOT",
    "MSA_FAILED_OPEN",
    "OPEN",
    "ADJ_OPEN",
)


#: The stdatamodels module that defines the JWST DQ flags.
JWST_DQFLAGS_MODULE = "stdatamodels.jwst.datamodels.dqflags"


def _jwst_dqflags_module():
    """stdatamodels' JWST DQ flag module, or a namespace with its ``pixel`` table.

    ``import stdatamodels.jwst.datamodels.dqflags`` first runs the package's
    ``__init__``, which imports all ~80 JWST datamodel classes (0.35 s of the first
    group of a process), and the module itself imports ``astropy.nddata.bitmask``, which
    pulls in ``astropy.nddata`` and ``astropy.wcs`` (0.1-0.2 s and ~18 MiB of resident
    memory) for names it only re-exports.  The flag table is a literal dictionary of
    powers of two, so it is read from the module's source with :mod:`ast`
    (:func:`_literal_pixel_table`) without running the module.  If the source is not
    where stdatamodels keeps it or the table is not a literal, or the package is
    already imported, the regular import is used.
    """
    import importlib
    import sys
    import types

    if JWST_DQFLAGS_MODULE in sys.modules or "stdatamodels.jwst.datamodels" in sys.modules:
        return importlib.import_module(JWST_DQFLAGS_MODULE)
    from importlib import resources

    try:
        path = resources.files("stdatamodels.jwst").joinpath("datamodels", "dqflags.py")
        pixel = _literal_pixel_table(path.read_text())
    except (ImportError, OSError, ValueError) as exc:
        log.debug("stdatamodels DQ flags loaded by the regular import (%s)", exc)
        return importlib.import_module(JWST_DQFLAGS_MODULE)
    return types.SimpleNamespace(pixel=pixel, __file__=str(path))


def _literal_pixel_table(source):
    """The ``pixel = {name: value}`` table of a DQ flag module's source, not executed.

    Values may be integers, ``2**n``, ``a | b`` or ``a << n`` of integers.

    Parameters
    ----------
    source : str
        Python source of ``stdatamodels/jwst/datamodels/dqflags.py``.

    Returns
    -------
    dict
        Flag name -> bit value.

    Raises
    ------
    ValueError
        If there is no such assignment or a value is not of that form.
    """
    import ast
    import operator

    ops = {ast.Pow: operator.pow, ast.BitOr: operator.or_, ast.LShift: operator.lshift}

    def value(node):
        if isinstance(node, ast.Constant) and type(node.value) is int:
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in ops:
            return ops[type(node.op)](value(node.left), value(node.right))
        raise ValueError(f"DQ flag value not a literal: {ast.dump(node)[:80]}")

    for node in ast.parse(source).body:
        if (
            isinstance(node, ast.Assign)
            and [getattr(t, "id", None) for t in node.targets] == ["pixel"]
            and isinstance(node.value, ast.Dict)
        ):
            keys = [k.value if isinstance(k, ast.Constant) else None for k in node.value.keys]
            if not all(isinstance(k, str) for k in keys):
                raise ValueError("DQ flag names not literal strings")
            return {k: value(v) for k, v in zip(keys, node.value.values, strict=True)}
    raise ValueError("no literal 'pixel = {...}' table in the DQ flag module")


@cache
def dq_flags():
    """The JWST pixel DQ flag definitions (name -> bit value), from stdatamodels.

    Returns
    -------
    dict
        A copy of ``stdatamodels.jwst.datamodels.dqflags.pixel``.
    """
    return dict(_jwst_dqflags_module().pixel)


def dq_value(names):
    """OR of the DQ bit values of the given flag names.

    Parameters
    ----------
    names : iterable of str
        JWST DQ mnemonics, e.g. ``("DO_NOT_USE", "HOT")``.

    Returns
    -------
    int
        The combined bit mask.
    """
    flags = dq_flags()
    value = 0
    for name in names:
        try:
            value |= flags[name]
        except KeyError as exc:
            raise KeyError(f"unknown JWST DQ flag {name!r}") from exc
    return value


def _plus_structure():
    s = np.zeros((1, 3, 3), bool)
    s[0, 1, :] = True
    s[0, :, 1] = True
    return s


def dilate_stack(mask, iterations=1, structure=None):
    """Binary dilation of each exposure of an ``(N, ny, nx)`` boolean stack.

    Parameters
    ----------
    mask : numpy.ndarray
        ``(N, ny, nx)`` boolean array.
    iterations : int
        Number of dilation steps (pixels).
    structure : numpy.ndarray, optional
        2D structuring element; a 3x3 plus by default.

    Returns
    -------
    numpy.ndarray
        Dilated mask (no growth across exposures).
    """
    if iterations <= 0 or not mask.any():
        return mask.copy()
    if structure is None:
        st = _plus_structure()
    else:
        st = np.asarray(structure, bool)[None, :, :]
    return ndimage.binary_dilation(mask, structure=st, iterations=int(iterations))


def noisy_pixels(var_rnoise, valid, threshold=16.0):
    """Pixels whose read-noise error is ``threshold`` times that of their column or more.

    The pipeline gives some detector pixels (noisy, unstable, not flagged in DQ) a
    read-noise variance thousands of times that of their neighbours.  Weighted sums
    ignore them, but unweighted ones (boxcar, ``flux_sum``) are ruined by them.  The
    reference is the median error of the pixel's own column in the same exposure, so
    it follows the sensitivity along the spectrum (a factor ~100 across the PRISM).

    Parameters
    ----------
    var_rnoise : numpy.ndarray
        ``(N, ny, nx)`` read-noise variance, uJy^2 per pixel.
    valid : numpy.ndarray
        ``(N, ny, nx)`` boolean, the pixels to consider (and to take the medians over).
    threshold : float
        Ratio of errors (not variances) above which a pixel is flagged.

    Returns
    -------
    numpy.ndarray
        ``(N, ny, nx)`` boolean.
    """
    var_rnoise = np.asarray(var_rnoise, float)
    use = np.asarray(valid, bool) & np.isfinite(var_rnoise) & (var_rnoise > 0)
    if use.shape[1] == 0:  # no rows
        return use
    sigma = np.sqrt(np.where(use, var_rnoise, np.nan))
    reference = masked_median(sigma, use, axis=1)[0][:, None, :]  # NaN: no valid row
    with np.errstate(invalid="ignore"):
        return use & (sigma >= threshold * reference)


def initial_rejections(
    dq,
    sci,
    var,
    wave,
    bar,
    *,
    bad_dq_flags=DEFAULT_BAD_DQ_FLAGS,
    dilate_failed_open=True,
    pad_border=2,
    min_bar=0.4,
    extra_factors=(),
    var_components=(),
):
    """Rejection bitfield from the pipeline products of a stack of exposures.

    Parameters
    ----------
    dq : numpy.ndarray
        ``(N, ny, nx)`` DQ flags.
    sci, var, wave, bar : numpy.ndarray
        ``(N, ny, nx)`` science (any flux unit), total variance, wavelength (um) and
        bar-shadow throughput.
    bad_dq_flags : iterable of str
        DQ flags that reject a pixel.
    dilate_failed_open : bool or int
        Grow MSA_FAILED_OPEN pixels by this many pixels (True = 1).
    pad_border : int
        Reject pixels within this many pixels of an undefined wavelength.
    min_bar : float or None
        Reject pixels with ``bar < min_bar``.
    extra_factors : iterable of numpy.ndarray
        Further multiplicative corrections that must be finite.
    var_components : iterable of numpy.ndarray
        Components of ``var`` (e.g. Poisson and read-noise variances) that must each
        be finite and non-negative.

    Returns
    -------
    numpy.ndarray
        ``(N, ny, nx)`` uint32 bitfield of :class:`Reject` bits.
    """
    reject = np.zeros(sci.shape, np.uint32)
    reject[(dq & np.uint32(dq_value(bad_dq_flags))) > 0] |= np.uint32(Reject.DQ)
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(sci) | ~np.isfinite(var) | ~(var > 0) | ~np.isfinite(wave)
    for factor in extra_factors:
        bad |= ~np.isfinite(factor)
    for component in var_components:
        with np.errstate(invalid="ignore"):
            bad |= ~(component >= 0)
    reject[bad] |= np.uint32(Reject.NONFINITE)
    n_open = int(dilate_failed_open)
    if n_open > 0:
        failed = (dq & np.uint32(dq_value(["MSA_FAILED_OPEN"]))) > 0
        if failed.any():
            reject[dilate_stack(failed, n_open) & ~failed] |= np.uint32(Reject.FAILED_OPEN)
    if pad_border and pad_border > 0:
        edge = dilate_stack(~np.isfinite(wave), int(pad_border)) & np.isfinite(wave)
        reject[edge] |= np.uint32(Reject.BORDER)
    if min_bar is not None:
        with np.errstate(invalid="ignore"):
            reject[~(bar >= min_bar) & np.isfinite(bar)] |= np.uint32(Reject.LOW_BAR)
    return reject


def describe_rejections(reject):
    """Count the pixels carrying each rejection bit.

    Parameters
    ----------
    reject : numpy.ndarray
        Bitfield of :class:`Reject` bits.

    Returns
    -------
    dict
        Bit name -> number of pixels with that bit set (bits never set are omitted).
    """
    counts = {}
    for bit in Reject:
        n = int(np.count_nonzero(reject & np.uint32(bit)))
        if n:
            counts[bit.name] = n
    return counts
