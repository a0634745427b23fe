"""Shutters stuck closed, found from the data (:func:`stuck_shutters`).

A stuck-closed shutter shows neither sky nor source whatever the metadata say: its
median S/N is compared with that of the brightest well-covered shutter.  Array
conventions as in :mod:`slitcombine.core.outliers`.
"""

from __future__ import annotations

import numpy as np

__all__ = ["stuck_shutters"]


def stuck_shutters(
    sci,
    var,
    valid,
    yshutter,
    bar,
    *,
    stuck_threshold=0.3,
    min_bar=0.7,
    min_significance=5.0,
    fixed_slit=False,
):
    """Find shutters that pass no light (stuck closed) from the data.

    Parameters
    ----------
    sci, var : numpy.ndarray
        ``(N, npix)`` science (uJy per pixel) and variance (uJy^2), *before* any sky
        subtraction: an open shutter shows the sky in every exposure.
    valid : numpy.ndarray
        ``(N, npix)`` valid pixels.
    yshutter : numpy.ndarray
        ``(npix,)`` or ``(N, npix)`` shutter coordinate fixed to the MSA (shutter
        pitches, 0 at the centre of exposure 0's source shutter).
    bar : numpy.ndarray
        ``(N, npix)`` bar-shadow throughput claimed by the pipeline.
    stuck_threshold : float
        A shutter is stuck when its median S/N is below ``stuck_threshold`` times that of
        the brightest well-covered shutter (several shutters), or below
        ``stuck_threshold`` in absolute terms and consistent with no light at all (a
        single shutter).
    min_bar : float
        Only pixels with ``bar > min_bar`` (away from the bars) are used.
    min_significance : float
        The shortfall must also be significant: the difference of the medians larger
        than ``min_significance`` times its error (several shutters).
    fixed_slit : bool
        Fixed slits have no shutters: nothing is done.

    Returns
    -------
    stuck : list of int
        Indices of the stuck shutters (``round(yshutter)``).
    info : dict
        Per shutter: ``n`` pixels, median S/N ``sn``, its error ``err`` and ratio to the
        reference; ``status`` (``'ok'``, ``'undetermined'`` when the reference itself
        is not significant, ``'skipped'``) and ``reason``.

    Notes
    -----
    The median of ``sci / sqrt(var)`` over the pixels of a shutter (all exposures) is
    robust to cosmic rays and to the source (which occupies a few rows of one nod).  A
    stuck-closed shutter shows neither sky nor source, whatever the metadata say, so its
    median S/N is ~0 while the open shutters show the sky.  Its error is
    ``1.2533 * 1.4826 MAD / sqrt(n)``, measured, not assumed.  With gratings the sky
    S/N per pixel is low (~0.1-2) but the medians over thousands of pixels still
    separate an open shutter from a closed one by tens of sigma; when even the brightest
    shutter is not significantly above zero (sky subtracted upstream, very short
    exposure) the test cannot decide and nothing is masked.

    The body is the list of the stages (:func:`_shutter_medians`, :func:`_stuck_among`
    or the single-shutter test, the per-shutter record); the function's length is its
    documentation.
    """
    info = {"status": "skipped", "reason": "", "shutters": {}}
    if fixed_slit:
        info["reason"] = "fixed slit: no shutters"
        return [], info
    medians = _shutter_medians(sci, var, valid, yshutter, bar, min_bar)
    if isinstance(medians, str):
        info["reason"] = medians
        return [], info
    shutters, counts, med, err = medians
    full = counts > 0.5 * counts.max()
    if shutters.size > 1:
        stuck, ref = _stuck_among(shutters, med, err, full, stuck_threshold, min_significance, info)
    else:
        info["status"] = "ok"
        ref = None
        # a single shutter: stuck only if it shows no light at all
        stuck = []
        if med[0] < stuck_threshold and abs(med[0]) < 3.0 * err[0]:
            stuck.append(int(shutters[0]))
    for m, j in enumerate(shutters):
        info["shutters"][int(j)] = {
            "n": int(counts[m]),
            "sn": round(float(med[m]), 4),
            "err": round(float(err[m]), 4),
            "ratio": None if not ref else round(float(med[m] / ref), 4),
            "full": bool(full[m]),
        }
    info["reference_sn"] = ref
    return stuck, info


def _shutter_medians(sci, var, valid, yshutter, bar, min_bar):
    """Median S/N of the usable pixels of each shutter, and its measured error.

    Returns
    -------
    tuple or str
        ``(shutters, counts, median, error)`` (arrays over the shutters met, ordered by
        index), or the reason there is nothing to measure.
    """
    ys = np.broadcast_to(yshutter, sci.shape)
    with np.errstate(invalid="ignore", divide="ignore"):
        use = np.asarray(valid, bool) & (bar > min_bar) & np.isfinite(ys) & (var > 0)
        use &= np.isfinite(sci)
        sn = sci / np.sqrt(var)
    if use.sum() < 10:
        return f"only {int(use.sum())} usable pixels"
    k = np.round(ys[use]).astype(int)
    v = sn[use]
    order = np.argsort(k, kind="stable")
    k, v = k[order], v[order]
    shutters, start, counts = np.unique(k, return_index=True, return_counts=True)
    med = np.empty(shutters.size)
    err = np.empty(shutters.size)
    for m, (a, c) in enumerate(zip(start, counts, strict=True)):  # per shutter (<= ~10)
        seg = v[a : a + c]
        med[m] = np.median(seg)
        mad = 1.4826 * np.median(np.abs(seg - med[m]))
        err[m] = 1.2533 * max(mad, 1e-12) / np.sqrt(c)
    return shutters, counts, med, err


def _stuck_among(shutters, med, err, full, stuck_threshold, min_significance, info):
    """Stuck shutters among several: well below the brightest well-covered one.

    ``info`` gets the ``status`` (and the ``reason`` when undetermined).

    Returns
    -------
    (list of int, float)
        The stuck shutters and the reference median S/N.
    """
    stuck = []
    cand = np.where(full, med, -np.inf)
    iref = int(np.argmax(cand))
    ref = float(med[iref])
    ref_sig = ref / err[iref]
    if ref_sig < min_significance:
        info["status"] = "undetermined"
        info["reason"] = (
            f"brightest shutter median S/N {ref:.3f} is only {ref_sig:.1f} sigma above "
            "zero: no sky to compare with"
        )
        return stuck, ref
    info["status"] = "ok"
    for m in range(shutters.size):
        if m == iref or not full[m]:
            continue
        short = ref - med[m]
        if med[m] < stuck_threshold * ref and short > min_significance * np.hypot(
            err[m], err[iref]
        ):
            stuck.append(int(shutters[m]))
    return stuck, ref
