"""Tests of a detector pixel across the exposures: hot and cold pixels
(:func:`hot_cold_pixels`) and the multiple-exposure mask (:func:`multiple_exposure_mask`,
:func:`majority_count`).

A pixel bad in the same detector position in several exposures is a detector defect,
not a cosmic ray; the statistic is the consensus residual of
:mod:`slitcombine.core.consensus`, so that a pixel bright because a real source sits on it
is never hot.  Array conventions as in :mod:`slitcombine.core.outliers`.
"""

from __future__ import annotations

import numpy as np

from slitcombine.errors import ConfigurationError

__all__ = ["hot_cold_pixels", "majority_count", "multiple_exposure_mask"]


def majority_count(n_exp):
    """Smallest number of exposures that is a strict majority of ``n_exp``.

    ``n // 2 + 1`` (2 of 3, 3 of 4, 3 of 5, 4 of 6 ...); None for fewer than three
    exposures, where "most but not all" does not exist.

    Parameters
    ----------
    n_exp : int
        Number of exposures.

    Returns
    -------
    int or None
        The majority count.
    """
    if n_exp < 3:
        return None
    return n_exp // 2 + 1


def multiple_exposure_mask(bad):
    """Detector pixels bad in most, but not all, exposures.

    Parameters
    ----------
    bad : numpy.ndarray
        ``(N, npix)`` boolean, True where a pixel is rejected.

    Returns
    -------
    numpy.ndarray or None
        ``(npix,)`` boolean: rejected in at least :func:`majority_count` exposures and
        not in all; None if ``N < 3``.
    """
    n_exp = bad.shape[0]
    need = majority_count(n_exp)
    if need is None:
        return None
    count = bad.sum(axis=0)
    return (count >= need) & (count < n_exp)


def hot_cold_pixels(
    data,
    valid,
    z,
    *,
    z_low=None,
    cold=-0.1,
    hot=1.5,
    absolute=True,
    min_nexp=-1,
    sn_limits=None,
    sn_guard=3.0,
):
    """Detector pixels that are hot or cold in several exposures.

    Parameters
    ----------
    data : numpy.ndarray
        ``(N, npix)`` data, uJy per pixel.
    valid : numpy.ndarray
        ``(N, npix)`` valid pixels.
    z : numpy.ndarray
        ``(N, npix)`` residual S/N for high values (:attr:`ConsensusResult.z_high`).
    z_low : numpy.ndarray or None
        ``(N, npix)`` residual S/N for low values (:attr:`ConsensusResult.z_low`);
        ``z`` if None.
    cold, hot : float
        With ``absolute=True``: limits in uJy per pixel on ``data`` (the seed's
        defaults -0.1 and 1.5 uJy suit faint PRISM sources only).  With
        ``absolute=False``: percentiles (0-100) of the valid data.
    absolute : bool
        See ``cold``/``hot``.
    min_nexp : int
        Number of exposures in which a pixel must be hot (cold): ``N + min_nexp`` if
        negative, ``min_nexp`` if positive; at least 2 (one exposure alone is a cosmic
        ray, not a detector defect).
    sn_limits : (float, float) or None
        The S/N path (recommended, e.g. ``(-5, 5)``): the limits apply to ``z`` instead
        of the data, i.e. to the excess over the pixel's own row *after* subtracting what
        the other exposures see at the same source position.  Overrides ``cold``, ``hot``
        and ``absolute``.
    sn_guard : float or None
        With the flux limits, a pixel also needs ``z > sn_guard`` to be hot (``z <
        -sn_guard`` to be cold): a pixel bright because a real source sits on it is then
        never hot.  None gives the seed's behaviour.

    Returns
    -------
    flag : numpy.ndarray
        ``(npix,)`` int: 1 cold, 2 hot, 0 neither.
    info : dict
        ``ncold``, ``nhot``, the limits and ``nmin``.

    Notes
    -----
    Kept in one piece: its code (the limits, the per-exposure tests, the count over
    exposures) is short; its length is the documentation of its eight options.
    """
    n_exp = data.shape[0]
    ok = np.asarray(valid, bool) & np.isfinite(data)
    zl = z if z_low is None else z_low
    if min_nexp < 0:
        nmin = n_exp + int(min_nexp)
    else:
        nmin = int(min_nexp)
    nmin = max(2, nmin)
    with np.errstate(invalid="ignore"):
        if sn_limits is not None:
            lo, hi = sorted(float(v) for v in sn_limits)
            is_cold = ok & (zl < lo)
            is_hot = ok & (z > hi)
            mode = "sn"
        else:
            lo, hi = _flux_limits(data, ok, cold, hot, absolute)
            is_cold = ok & (data < lo)
            is_hot = ok & (data > hi)
            mode = "absolute" if absolute else "percentile"
            if sn_guard is not None:
                is_cold &= zl < -float(sn_guard)
                is_hot &= z > float(sn_guard)
    cold_pix = is_cold.sum(axis=0) >= nmin
    hot_pix = is_hot.sum(axis=0) >= nmin
    flag = cold_pix.astype(int) + 2 * hot_pix.astype(int)
    flag[cold_pix & hot_pix] = 2
    info = {
        "mode": mode,
        "ncold": int((flag == 1).sum()),
        "nhot": int((flag == 2).sum()),
        "limits": [float(lo), float(hi)],
        "nmin": int(nmin),
    }
    return flag, info


def _flux_limits(data, ok, cold, hot, absolute):
    """The cold and hot limits on the data, uJy per pixel (see :func:`hot_cold_pixels`).

    Raises
    ------
    ConfigurationError
        Percentile limits outside ``[0, 100]``.
    """
    if absolute:
        return float(cold), float(hot)
    for p in (cold, hot):
        if not (0.0 <= float(p) <= 100.0):
            raise ConfigurationError(
                f"with absolute=False the limits are percentiles in [0, 100]; "
                f"got cold={cold}, hot={hot}"
            )
    vals = data[ok]
    if vals.size == 0:
        return np.nan, np.nan
    lo, hi = (float(v) for v in np.percentile(vals, [cold, hot]))
    return lo, hi
