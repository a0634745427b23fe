"""The shutter offset: align a bar-shadow table with the sky, as pure functions.

The algorithm of ``SlitGroup.fit_shutter_offset`` (:mod:`slitcombine.group._sky_methods`).
A bar-shadow table in msaexp's format is a function of the shutter coordinate
(``fixed_yshutter``: pixels / 5 from the middle shutter's centre); an offset ``dy`` of
that coordinate moves the modelled bar shadows against the data.  The sky pixels
(:func:`shutter_offset_pixels`) constrain it through the bar edges:
:class:`ShutterOffsetChi2` is their chi2 against the shifted model and
:func:`fit_shutter_offset` minimises it with a Gaussian prior.

Units: ``dy`` in pixels, fluxes in uJy, variances in uJy^2, wavelengths in um.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from slitcombine.core.sky import outside_ranges

__all__ = [
    "SHUTTER_OFFSET_Y_MAX",
    "MIN_SKY_PIXELS",
    "shutter_offset_pixels",
    "ShutterOffsetChi2",
    "ShutterOffsetFit",
    "fit_shutter_offset",
]

log = logging.getLogger(__name__)

#: The shutter-offset fit uses pixels with ``|fixed_yshutter|`` below this (shutter
#: pitches from the centre of the slitlet's middle shutter).
SHUTTER_OFFSET_Y_MAX = 1.4

#: The shutter-offset fit needs at least this many sky pixels.
MIN_SKY_PIXELS = 50


def shutter_offset_pixels(yshutter, yslit, mask, sky2d, mask_yslit=((-4.5, 4.5),)):
    """The sky pixels that constrain the shutter offset.

    Off-source pixels at every throughput (the bar edges constrain the offset): valid,
    outside every ``mask_yslit`` range, ``|yshutter| <``
    :data:`SHUTTER_OFFSET_Y_MAX`, with a finite sky model.

    Parameters
    ----------
    yshutter : numpy.ndarray
        Shutter coordinate of every pixel (``fixed_yshutter``: pixels / 5 in the
        bar-shadow table's frame).
    yslit : numpy.ndarray
        Trace-centred row, pixels.
    mask : numpy.ndarray
        Valid pixels.
    sky2d : numpy.ndarray
        Sky model, uJy.
    mask_yslit : sequence of (float, float)
        Source region excluded, pixels from the trace.

    Returns
    -------
    numpy.ndarray
        Boolean, the shape of the inputs.
    """
    off = outside_ranges(yslit, [tuple(r) for r in mask_yslit])
    with np.errstate(invalid="ignore"):
        return off & mask & (np.abs(yshutter) < SHUTTER_OFFSET_Y_MAX) & np.isfinite(sky2d)


class ShutterOffsetChi2:
    """chi2 of the sky pixels against a bar-shadow model shifted by an offset.

    ``chi2(dy) = sum ((sci * bar - sky * bar_model(y + dy / 5, wave)) / sigma)^2 +
    ((dy - prior[0]) / prior[1])^2`` over the finite terms, with ``dy`` in pixels and
    ``sigma^2 = var * bar^2`` (the data with the bar shadow in).

    Parameters
    ----------
    bar_model : callable
        ``bar_model(yshutter, wave) -> throughput`` (e.g. a bar-shadow table evaluated by
        :func:`slitcombine.core.barshadow.evaluate_bar_coeffs`).
    yshutter, wave : numpy.ndarray
        Shutter coordinate (pixels / 5) and wavelength (um) of the pixels.
    sci : numpy.ndarray
        Data with the bar shadow divided out, uJy.
    bar : numpy.ndarray
        The bar-shadow throughput divided out of ``sci``.
    sky : numpy.ndarray
        Sky model (bar shadow divided out), uJy.
    var : numpy.ndarray
        Variance of ``sci``, uJy^2.
    prior : (float, float)
        Gaussian prior ``(mean, sigma)`` on ``dy``, pixels.
    """

    def __init__(self, bar_model, yshutter, wave, sci, bar, sky, var, prior=(0, 0.05)):
        self.bar_model = bar_model
        self.y = yshutter
        self.wave = wave
        self.data = sci * bar
        self.sky = sky
        self.sig2 = var * bar**2
        self.mu, self.sd = float(prior[0]), float(prior[1])

    @property
    def npix(self):
        """Number of pixels."""
        return int(np.size(self.data))

    def __call__(self, dy):
        """chi2 at the offset ``dy``, pixels."""
        b = self.bar_model(self.y + dy / 5.0, self.wave)
        r = (self.data - self.sky * b) ** 2 / self.sig2
        return float(np.sum(r[np.isfinite(r)]) + ((dy - self.mu) / self.sd) ** 2)

    def scaled(self, x):
        """chi2 at ``dy = x * prior[1]`` (the variable of the minimisation)."""
        return self(float(np.atleast_1d(x)[0]) * self.sd)


@dataclass(frozen=True)
class ShutterOffsetFit:
    """Result of :func:`fit_shutter_offset`.

    Attributes
    ----------
    offset : float
        The fitted offset, pixels.
    chi2_start, chi2_fit : float
        chi2 at 0 and at the offset.
    npix : int
        Number of sky pixels.
    converged : bool
        The minimiser's ``success``.
    """

    offset: float
    chi2_start: float
    chi2_fit: float
    npix: int
    converged: bool


def fit_shutter_offset(chi2, minimizer_kwargs=None):
    """Minimise a :class:`ShutterOffsetChi2` over the offset.

    Parameters
    ----------
    chi2 : ShutterOffsetChi2
        The chi2 of the sky pixels.
    minimizer_kwargs : dict or None
        Options of :func:`scipy.optimize.minimize` (default
        ``{'method': 'bfgs', 'tol': 1e-5}``), which works on ``dy / prior[1]`` from
        ``prior[0] / prior[1]``.

    Returns
    -------
    ShutterOffsetFit
    """
    from scipy.optimize import minimize

    if minimizer_kwargs is None:
        minimizer_kwargs = {"method": "bfgs", "tol": 1e-5}
    chi0 = chi2.scaled(0.0)
    res = minimize(chi2.scaled, x0=[chi2.mu / chi2.sd], **minimizer_kwargs)
    offset = float(res.x[0]) * chi2.sd
    log.debug("shutter offset %.4f px after %d evaluations", offset, res.nfev)
    return ShutterOffsetFit(
        offset=offset,
        chi2_start=chi0,
        chi2_fit=float(res.fun),
        npix=chi2.npix,
        converged=bool(res.success),
    )
