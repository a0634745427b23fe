"""Robust statistics shared by the pure modules: masked and binned medians.

The lowest module of :mod:`slitcombine.core` (it imports only numpy): the masks, the
outlier tests, the sky fit and the bar-shadow fit take their medians from here rather
than from each other.
"""

from __future__ import annotations

import numpy as np

__all__ = ["masked_median", "binned_median"]


def _sorted_small(cols):
    """Sort a short list of equally shaped arrays element-wise (odd-even network)."""
    cols = list(cols)
    k = len(cols)
    for p in range(k):
        for j in range(p % 2, k - 1, 2):
            lo = np.minimum(cols[j], cols[j + 1])
            cols[j + 1] = np.maximum(cols[j], cols[j + 1])
            cols[j] = lo
    return cols


def masked_median(values, valid, axis):
    """Median of the valid elements along an axis (NaN where none is valid).

    Parameters
    ----------
    values : numpy.ndarray
        Input array (any unit).
    valid : numpy.ndarray
        Boolean array of the same shape, True for the elements to use.
    axis : int
        Axis along which to take the median.

    Returns
    -------
    median : numpy.ndarray
        The median (mean of the two central values for an even count), NaN where no
        element is valid; same unit as ``values``.
    count : numpy.ndarray
        Number of valid elements.

    Notes
    -----
    Invalid elements are set to ``+inf`` and sorted last; for short axes (up to 8
    elements, the running windows of :mod:`slitcombine.core.outliers`) an element-wise
    sorting network replaces :func:`numpy.sort`.
    """
    ok = np.asarray(valid, bool) & np.isfinite(values)
    v = np.where(ok, values, np.inf)
    k = v.shape[axis]
    n = ok.sum(axis=axis)
    lo = np.maximum(n - 1, 0) // 2
    hi = np.minimum(n // 2, max(k - 1, 0))
    if 0 < k <= 8:
        cols = _sorted_small(np.moveaxis(v, axis, 0))
        with np.errstate(invalid="ignore"):
            med = 0.5 * (np.choose(lo, cols) + np.choose(hi, cols))
    else:
        v = np.sort(v, axis=axis)
        with np.errstate(invalid="ignore"):
            med = 0.5 * (
                np.take_along_axis(v, np.expand_dims(lo, axis), axis)
                + np.take_along_axis(v, np.expand_dims(hi, axis), axis)
            )
        med = np.squeeze(med, axis=axis)
    med = np.where(n > 0, med, np.nan)
    return med, n


def binned_median(x, values, edges):
    """Median of ``values`` in bins of ``x`` (vectorised), NaN in empty bins.

    Parameters
    ----------
    x : numpy.ndarray
        ``(n,)`` coordinates (any unit, that of ``edges``).
    values : numpy.ndarray
        ``(n,)`` values (any unit).
    edges : numpy.ndarray
        ``(nb + 1,)`` increasing bin edges; coordinates outside them count in the first
        or last bin.

    Returns
    -------
    numpy.ndarray
        ``(nb,)`` medians (mean of the two central values for an even count), same unit
        as ``values``; NaN in bins without values.
    """
    nb = edges.size - 1
    b = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, nb - 1)
    order = np.lexsort((values, b))
    counts = np.bincount(b, minlength=nb)
    start = np.concatenate([[0], np.cumsum(counts)[:-1]])
    sv = np.asarray(values)[order]
    out = np.full(nb, np.nan)
    ok = counts > 0
    lo = start[ok] + (counts[ok] - 1) // 2
    hi = start[ok] + counts[ok] // 2
    out[ok] = 0.5 * (sv[lo] + sv[hi])
    return out
