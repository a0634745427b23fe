"""Nod positions and nod-difference images.

A nod *position* groups the exposures taken with the source in the same shutter.  For a
position ``p`` the difference image is

``diff = pos - neg``, with ``pos`` the masked mean of the exposures at ``p`` and ``neg``
the masked mean of the exposures at every *other* position, so that the sky cancels
and the source appears positive at ``p`` and negative (scaled by ``1/(N_pos - 1)`` for
equal exposures) at the other positions.

Variances of masked means use the same mask in numerator and denominator:
``var(mean) = sum(m * v) / sum(m)**2``.
"""

from __future__ import annotations

import logging

import numpy as np

__all__ = [
    "NodPositions",
    "y_index",
    "nod_offsets",
    "masked_mean",
    "weight_variance",
    "WEIGHT_TYPES",
    "difference_image",
    "noise_scale",
    "off_trace_residuals",
    "robust_rms",
]

log = logging.getLogger(__name__)

#: Valid ``weight_type`` values.
WEIGHT_TYPES = ("ivm", "poisson", "exptime", "exptime_bar", "mask")


class NodPositions:
    """The distinct nod positions of a group (like msaexp's ``unp``).

    Parameters
    ----------
    keys : array-like
        The position key of each exposure, in file order.

    Attributes
    ----------
    values : list
        Sorted distinct position keys.
    N : int
        Number of distinct positions.
    counts : list of int
        Number of exposures at each position (same order as ``values``).
    indices : list of numpy.ndarray
        Exposure indices at each position.
    """

    def __init__(self, keys):
        self.keys = np.asarray(keys)
        vals, counts = np.unique(self.keys, return_counts=True)
        self.values = list(vals.tolist())
        self.counts = [int(c) for c in counts]
        self.N = len(self.values)
        self.indices = [np.flatnonzero(self.keys == v) for v in self.values]

    def __getitem__(self, value):
        """Boolean selection of the exposures at position ``value``."""
        if value not in self.values:
            raise KeyError(f"no nod position {value!r}; positions are {self.values}")
        return self.keys == value

    def __contains__(self, value):
        return value in self.values

    def __iter__(self):
        return iter(self.values)

    def __len__(self):
        return self.N

    def __repr__(self):
        pairs = ", ".join(f"{v!r}: {c}" for v, c in zip(self.values, self.counts, strict=True))
        return f"NodPositions({{{pairs}}})"


def y_index(y_offsets, precision=0.1):
    """Index (1-based) of each exposure's rounded y offset among the distinct ones.

    Parameters
    ----------
    y_offsets : array-like
        Dither y offsets (arcsec).
    precision : float
        Rounding step (arcsec) that defines "the same" position.

    Returns
    -------
    numpy.ndarray
        Integer position index per exposure, 1 for the smallest offset.
    """
    rounded = np.round(np.asarray(y_offsets, float) / precision) * precision
    _, inverse = np.unique(np.round(rounded, 6), return_inverse=True)
    return inverse + 1


def nod_offsets(y_offsets, pixel_scale=None, pitch=None):
    """Nod offsets of a group's exposures, in arcsec, shutters and detector pixels.

    ``YOFFSET`` (``meta.dither.y_offset``) is the pointing's dither offset in arcsec in
    the ideal frame of the MSA aperture, counted from the target acquisition's pointing:
    its absolute value (e.g. 11.8 arcsec) depends on where the aperture reference point
    lies and means nothing on its own; the *differences* between the exposures of a
    group are the nod steps along the slitlet.

    Parameters
    ----------
    y_offsets : array-like
        ``YOFFSET`` of each exposure, arcsec.
    pixel_scale : float, optional
        Detector pixel scale along the slit, arcsec per pixel (default the nominal
        :data:`slitcombine.instrument.PIXEL_SCALE`; the exact one is the group's
        ``slit_pixel_scale``).
    pitch : float, optional
        Shutter pitch along the slit, arcsec (default
        :data:`slitcombine.instrument.SHUTTER_PITCH`, 0.529).

    Returns
    -------
    reference : float
        The median ``YOFFSET`` the offsets are counted from, arcsec.
    arcsec, shutters, pixels : numpy.ndarray
        Each exposure's offset from ``reference`` in arcsec, in shutter pitches and in
        pixels.
    """
    from slitcombine.instrument import PIXEL_SCALE, SHUTTER_PITCH

    y = np.asarray(y_offsets, float)
    reference = float(np.median(y))
    arcsec = y - reference
    return (
        reference,
        arcsec,
        arcsec / (SHUTTER_PITCH if pitch is None else pitch),
        arcsec / (PIXEL_SCALE if pixel_scale is None else pixel_scale),
    )


def masked_mean(values, variances, mask, axis=0):
    """Masked mean and its variance along ``axis``.

    Parameters
    ----------
    values, variances : numpy.ndarray
        Arrays to average and their variances.
    mask : numpy.ndarray
        Boolean, True where valid.
    axis : int
        Axis over which to average (the exposure axis).

    Returns
    -------
    mean, var, n : numpy.ndarray
        Mean (NaN where no valid value), variance of the mean, and number of values.
    """
    m = mask.astype(float)
    n = m.sum(axis=axis)
    v = np.where(mask, values, 0.0)
    vv = np.where(mask, variances, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = (v * m).sum(axis=axis) / n
        var = (vv * m).sum(axis=axis) / n**2
    mean[n == 0] = np.nan
    var[n == 0] = np.nan
    return mean, var, n


def weight_variance(weight_type, var_total, var_rnoise, exptime, bar):
    """The variance-like quantity whose inverse is the weight of each pixel.

    Parameters
    ----------
    weight_type : {'ivm', 'poisson', 'exptime', 'exptime_bar', 'mask'}
        ``ivm``: read-noise variance (as ``jwst.resample``); ``poisson``: total
        variance; ``exptime``: 1/exposure time; ``exptime_bar``: 1/(exposure time *
        bar**2), i.e. the exposure-time weight of data divided by the bar-shadow
        throughput; ``mask``: 1.
    var_total, var_rnoise : numpy.ndarray
        ``(N, npix)`` variances (uJy^2).
    exptime : numpy.ndarray
        ``(N,)`` exposure times (s).
    bar : numpy.ndarray
        ``(N, npix)`` bar-shadow throughput.

    Returns
    -------
    numpy.ndarray
        ``(N, npix)`` weighting variance (arbitrary but consistent units).
    """
    et = np.asarray(exptime, float)[:, None]
    if weight_type == "ivm":
        return var_rnoise
    if weight_type == "poisson":
        return var_total
    if weight_type == "exptime":
        return np.broadcast_to(1.0 / et, var_total.shape)
    if weight_type == "exptime_bar":
        with np.errstate(divide="ignore"):
            return 1.0 / (et * bar**2)
    if weight_type == "mask":
        return np.ones_like(var_total)
    raise ValueError(f"weight_type must be one of {WEIGHT_TYPES}, got {weight_type!r}")


def difference_image(data, var, wvar, bkg, mask, ipos, ineg, separate=False):
    """Nod difference of one position against the others.

    Parameters
    ----------
    data, var, wvar, bkg : numpy.ndarray
        ``(N, npix)`` sky-subtracted data (uJy), total variance, weighting variance
        (:func:`weight_variance`) and sky background.
    mask : numpy.ndarray
        ``(N, npix)`` valid pixels.
    ipos, ineg : numpy.ndarray
        Boolean ``(N,)`` selections of the positive and negative exposures; ``ineg``
        may select nothing (no differencing).
    separate : bool
        Return the positive and negative parts separately.

    Returns
    -------
    diff, bdiff, vdiff, wdiff : numpy.ndarray
        ``(npix,)`` difference, background difference, variance and weight
        (``1 / weighting variance``; 0 where invalid).  With ``separate`` each is a
        ``(pos, neg)`` pair and ``wdiff`` is the pair of weighting variances.
    """
    pos, vpos, _ = masked_mean(data[ipos], var[ipos], mask[ipos])
    _, wpos, _ = masked_mean(data[ipos], wvar[ipos], mask[ipos])
    bpos, _, _ = masked_mean(bkg[ipos], var[ipos], mask[ipos])
    if np.any(ineg):
        neg, vneg, _ = masked_mean(data[ineg], var[ineg], mask[ineg])
        _, wneg, _ = masked_mean(data[ineg], wvar[ineg], mask[ineg])
        bneg, _, _ = masked_mean(bkg[ineg], var[ineg], mask[ineg])
    else:
        zero = np.zeros_like(pos)
        neg, vneg, wneg, bneg = zero, zero, zero, zero
    if separate:
        return (pos, neg), (bpos, bneg), (vpos, vneg), (wpos, wneg)
    diff = pos - neg
    vdiff = vpos + vneg
    wtot = wpos + wneg
    with np.errstate(divide="ignore", invalid="ignore"):
        wdiff = np.where(np.isfinite(wtot) & (wtot > 0) & np.isfinite(diff), 1.0 / wtot, 0.0)
    return diff, bpos - bneg, vdiff, wdiff


def off_trace_residuals(diff, vdiff, yslit, margin=2.0):
    """Normalised residuals ``diff / sqrt(vdiff)`` of the pixels away from every trace.

    Parameters
    ----------
    diff, vdiff : numpy.ndarray
        ``(npix,)`` difference (uJy) and its variance (uJy^2).
    yslit : numpy.ndarray
        ``(N, npix)`` row of each pixel relative to each exposure's trace, pixels.
    margin : float
        Minimum distance from every trace, pixels.

    Returns
    -------
    numpy.ndarray
        The residuals (dimensionless) of the valid pixels farther than ``margin``.
    """
    yslit = np.atleast_2d(np.asarray(yslit, float))
    with np.errstate(invalid="ignore"):
        far = np.all(np.abs(yslit) > margin, axis=0)
        ok = far & np.isfinite(diff) & np.isfinite(vdiff) & (vdiff > 0)
    return diff[ok] / np.sqrt(vdiff[ok])


def robust_rms(z, min_pixels=50):
    """1.4826 x the median absolute deviation of ``z`` (:func:`astropy.stats.mad_std`).

    Parameters
    ----------
    z : numpy.ndarray
        Values (e.g. normalised residuals).
    min_pixels : int
        Fewer values give NaN.

    Returns
    -------
    rms : float
        The robust rms (NaN if too few values).
    n : int
        Number of values.
    """
    from astropy.stats import mad_std

    z = np.asarray(z, float)
    if z.size < min_pixels:
        return float("nan"), int(z.size)
    return float(mad_std(z)), int(z.size)


def noise_scale(diff, vdiff, yslit, margin=2.0, min_pixels=50):
    """Empirical noise of a difference image relative to its propagated variance.

    The robust rms (:func:`robust_rms`) of :func:`off_trace_residuals`: 1 when the
    variances describe the noise; the pipeline's variances of real NIRSpec data are
    typically ~1.3x too small in rms.

    Parameters
    ----------
    diff, vdiff : numpy.ndarray
        ``(npix,)`` difference (uJy) and its variance (uJy^2).
    yslit : numpy.ndarray
        ``(N, npix)`` row of each pixel relative to each exposure's trace, pixels.
    margin : float
        Minimum distance from every trace, pixels.
    min_pixels : int
        Fewer such pixels give NaN.

    Returns
    -------
    scale : float
        Robust rms of the normalised residuals (dimensionless), NaN if too few pixels.
    n_pixels : int
        Number of pixels used.
    """
    return robust_rms(off_trace_residuals(diff, vdiff, yslit, margin), min_pixels)
