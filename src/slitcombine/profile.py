"""Cross-dispersion profile, nod-difference profile and slit-throughput (path-loss) models.

Pure functions, no state.  Conventions:

* ``yslit`` is the cross-dispersion distance (pixels) of a pixel *centre* from the
  source centre in the same exposure (``SlitGroup.yslit``: row minus trace).
* ``wave`` is the wavelength in um.
* ``sigma`` is the *intrinsic* Gaussian width of the source in detector pixels (0 for a
  point source).  The profile on the detector is a Gaussian of total width
  ``sqrt(psf_sigma(wave)**2 + sigma**2)`` pixels, integrated exactly over each pixel.

PSF model
---------
The cross-dispersion PSF core of NIRSpec on the detector is modelled as a Gaussian whose
FWHM (pixels) adds in quadrature a constant instrumental term (detector pixel response,
charge diffusion, inter-pixel capacitance and spectrograph optics) and a term that grows
linearly with wavelength like the telescope's diffraction limit::

    FWHM(wave) = sqrt(PSF_FWHM_CONST_PIX**2 + (PSF_FWHM_SLOPE_PIX_PER_UM * wave)**2)

The two numbers are fixed by two anchor points of the measured NIRSpec cross-dispersion
profile width: FWHM = 1.25 pixels at 1.0 um and 1.90 pixels at 5.0 um (the range of
widths reported for NIRSpec point sources in the public JWST documentation and in the
literature on NIRSpec MOS reductions, e.g. msaexp's study notes quote 1.24-1.90 px over
0.6-5.6 um; no table is copied here).  This gives ``PSF_FWHM_CONST_PIX = 1.2154`` and
``PSF_FWHM_SLOPE_PIX_PER_UM = 0.2921``.  The slope equals ``0.955 lambda/D`` for the
6.5 m telescope at the nominal cross-dispersion pixel scale ``NIRSPEC_PIXEL_SCALE``
(0.1037 arcsec/px), i.e. the wavelength term is the diffraction core, as it should be.
Values: 1.23 px (0.6 um), 1.25 (1), 1.35 (2), 1.50 (3), 1.68 (4), 1.90 (5), 2.04 (5.6).

A user point-response model can replace the Gaussian everywhere (profile fit, difference
profile, slit throughput) through the ``lookup_prf`` argument; see :class:`LookupPRF`.

Slit throughput and path loss
-----------------------------
:func:`slit_throughput` is the fraction of a source's total flux that passes the
shutter: the same Gaussian (total width converted to arcsec with ``pixel_scale``)
integrated over the open shutter width in the dispersion direction (and optionally over
its height).  :func:`path_loss_correction` is the factor that multiplies a measured
flux (pipeline flux calibration with the path-loss correction *undone*) to give the
source's flux before the shutter; see its docstring for the reference options.
"""

from __future__ import annotations

import logging
from typing import Protocol, runtime_checkable

import numpy as np
from scipy.special import erf

from .errors import ConfigurationError

__all__ = [
    "PSF_FWHM_CONST_PIX",
    "PSF_FWHM_SLOPE_PIX_PER_UM",
    "NIRSPEC_PIXEL_SCALE",
    "SHUTTER_WIDTH_ARCSEC",
    "SHUTTER_HEIGHT_ARCSEC",
    "FWHM_TO_SIGMA",
    "LookupPRF",
    "psf_fwhm",
    "psf_sigma",
    "total_sigma",
    "pixel_profile",
    "difference_profile",
    "slit_throughput",
    "path_loss_correction",
]

log = logging.getLogger(__name__)

#: Constant (instrumental) term of the PSF FWHM, pixels.
PSF_FWHM_CONST_PIX = 1.2154
#: Wavelength (diffraction) term of the PSF FWHM, pixels per um.
PSF_FWHM_SLOPE_PIX_PER_UM = 0.2921
#: Nominal NIRSpec detector pixel scale, arcsec per pixel (cross-dispersion; the
#: dispersion direction is within ~2% of it).  Used to convert PSF widths to arcsec for
#: the slit throughput when the caller gives no better value.
NIRSPEC_PIXEL_SCALE = 0.1037
#: Open width of an MSA shutter (dispersion direction), arcsec.
SHUTTER_WIDTH_ARCSEC = 0.20
#: Open height of an MSA shutter (cross-dispersion direction), arcsec.
SHUTTER_HEIGHT_ARCSEC = 0.46
#: sigma = FWHM * FWHM_TO_SIGMA for a Gaussian.
FWHM_TO_SIGMA = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))

_SQRT2 = np.sqrt(2.0)


@runtime_checkable
class LookupPRF(Protocol):
    """Protocol of a user point-response model (``lookup_prf``).

    An object passed as ``lookup_prf`` must provide both methods; they replace the
    Gaussian model of this module wherever it is used.

    Methods
    -------
    pixel_profile(yslit, wave, sigma)
        Fraction of the source's flux (per unit flux entering the spectrograph, so the
        sum over all pixels of a column is ~1) that falls in the pixel whose centre is
        ``yslit`` pixels from the source centre, at wavelength ``wave`` (um), for a
        source of intrinsic width ``sigma`` (pixels, same meaning as this module's
        Gaussian ``sigma``).  Arguments broadcast like numpy arrays; returns an array of
        the broadcast shape.
    slit_throughput(wave, sigma, xpos, ypos, slit_width)
        Fraction of the source's total flux that passes a shutter of width
        ``slit_width`` arcsec, for a source at ``xpos`` (dispersion direction, in
        units of the shutter width, centre = 0) and ``ypos`` (cross-dispersion, in
        units of the open shutter height, as jwst's SRCYPOS).  Broadcasting arrays.
    """

    def pixel_profile(self, yslit, wave, sigma):  # pragma: no cover - protocol
        """Pixel-integrated cross-dispersion fraction."""

    def slit_throughput(self, wave, sigma, xpos, ypos, slit_width):  # pragma: no cover
        """Fraction of the total flux passing the shutter."""


def _check_lookup(lookup_prf, method):
    if not callable(getattr(lookup_prf, method, None)):
        raise ConfigurationError(
            f"lookup_prf {type(lookup_prf).__name__} has no method {method}(); "
            "see slitcombine.profile.LookupPRF for the protocol"
        )
    return getattr(lookup_prf, method)


def psf_fwhm(wave):
    """FWHM of the NIRSpec cross-dispersion PSF core, pixels.

    Parameters
    ----------
    wave : array-like
        Wavelength, um.

    Returns
    -------
    numpy.ndarray or float
        ``sqrt(PSF_FWHM_CONST_PIX**2 + (PSF_FWHM_SLOPE_PIX_PER_UM * wave)**2)`` pixels
        (see the module docstring for the origin of the numbers).
    """
    w = np.asarray(wave, dtype=float)
    return np.sqrt(PSF_FWHM_CONST_PIX**2 + (PSF_FWHM_SLOPE_PIX_PER_UM * w) ** 2)


def psf_sigma(wave):
    """Gaussian sigma of the NIRSpec cross-dispersion PSF core, pixels.

    Parameters
    ----------
    wave : array-like
        Wavelength, um.

    Returns
    -------
    numpy.ndarray or float
        ``psf_fwhm(wave) / 2.3548`` pixels: 0.531 px at 1 um, 0.807 px at 5 um.
    """
    return psf_fwhm(wave) * FWHM_TO_SIGMA


def total_sigma(wave, sigma):
    """Total Gaussian width on the detector, ``sqrt(psf_sigma(wave)**2 + sigma**2)``, pixels.

    Parameters
    ----------
    wave : array-like
        Wavelength, um.
    sigma : array-like
        Intrinsic source width, pixels.
    """
    s = np.asarray(sigma, dtype=float)
    return np.sqrt(psf_sigma(wave) ** 2 + s**2)


def _gauss_pixel(y, s):
    """Fraction of a unit Gaussian (centre 0, width ``s``) in the pixel centred at ``y``."""
    a = 1.0 / (_SQRT2 * s)
    return 0.5 * (erf((y + 0.5) * a) - erf((y - 0.5) * a))


def pixel_profile(yslit, wave, sigma, lookup_prf=None):
    """Fraction of a compact source's flux in the pixel centred ``yslit`` from the source.

    Parameters
    ----------
    yslit : array-like
        Distance of the pixel centre from the source centre, pixels (cross-dispersion).
    wave : array-like
        Wavelength, um.
    sigma : array-like
        Intrinsic Gaussian width of the source, pixels (0 = point source).
    lookup_prf : LookupPRF or None
        A user point-response model (see :class:`LookupPRF`); None uses the Gaussian.

    Returns
    -------
    numpy.ndarray
        Broadcast shape of the inputs.  For the Gaussian model:
        ``0.5 * [erf((yslit + 1/2) / (sqrt(2) s)) - erf((yslit - 1/2) / (sqrt(2) s))]``
        with ``s = sqrt(psf_sigma(wave)**2 + sigma**2)``; the sum over all pixels of a
        column is 1.  NaN where an input is NaN.
    """
    if lookup_prf is not None:
        fn = _check_lookup(lookup_prf, "pixel_profile")
        return np.asarray(fn(yslit, wave, sigma), dtype=float)
    y = np.asarray(yslit, dtype=float)
    return _gauss_pixel(y, total_sigma(wave, sigma))


def _masked_profile_mean(prof, mask):
    """Masked mean over axis 0 and the number of valid values (NaN where none)."""
    m = mask.astype(float)
    n = m.sum(axis=0)
    s = np.where(mask, prof, 0.0).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = s / n
    mean[n == 0] = np.nan
    return mean, n


def difference_profile(yslit, wave, mask, ipos, ineg, sigma, lookup_prf=None):
    """Model of a nod-difference image for a source of unit flux.

    The same combination as :func:`slitcombine.nods.difference_image`: the masked mean
    over the positive exposures of their profiles minus the masked mean over the
    negative exposures of theirs, with the same masks (``var(mean)`` aside, a profile
    has no variance).

    Parameters
    ----------
    yslit : numpy.ndarray
        ``(N, npix)`` distance of each pixel from the source centre *in its own
        exposure*, pixels (``SlitGroup.yslit``).  In a negative exposure the source sits
        at ``yslit = 0`` of that exposure.
    wave : numpy.ndarray
        ``(N, npix)`` wavelength, um.
    mask : numpy.ndarray
        ``(N, npix)`` boolean, valid pixels (the mask given to ``difference_image``).
    ipos, ineg : numpy.ndarray
        Boolean ``(N,)`` selections of the positive and negative exposures; ``ineg``
        may select nothing (no differencing: the model is the positive mean).
    sigma : float
        Intrinsic source width, pixels.
    lookup_prf : LookupPRF or None
        User point-response model; None uses the Gaussian of :func:`pixel_profile`.

    Returns
    -------
    numpy.ndarray
        ``(npix,)`` model of ``diff`` per unit source flux (the flux in a column times
        this is the model of that column).  NaN exactly where ``difference_image``
        gives NaN: no valid positive exposure, or (with ``ineg``) no valid negative one.
    """
    ipos = np.asarray(ipos, bool)
    ineg = np.asarray(ineg, bool)
    mask = np.asarray(mask, bool)
    pp = pixel_profile(yslit[ipos], wave[ipos], sigma, lookup_prf=lookup_prf)
    pos, _ = _masked_profile_mean(pp, mask[ipos] & np.isfinite(pp))
    if not np.any(ineg):
        return pos
    pn = pixel_profile(yslit[ineg], wave[ineg], sigma, lookup_prf=lookup_prf)
    neg, _ = _masked_profile_mean(pn, mask[ineg] & np.isfinite(pn))
    return pos - neg


def _pixel_scale_or_default(pixel_scale):
    scale = NIRSPEC_PIXEL_SCALE if pixel_scale is None else float(pixel_scale)
    if not np.isfinite(scale) or scale <= 0:
        raise ConfigurationError(f"pixel_scale must be positive (arcsec/px), got {pixel_scale}")
    return scale


def slit_throughput(
    wave,
    sigma,
    xpos,
    ypos=0.0,
    lookup_prf=None,
    slit_width=SHUTTER_WIDTH_ARCSEC,
    slit_height=None,
    pixel_scale=None,
):
    """Fraction of a compact source's total flux that passes the shutter.

    The source image at the MSA is the Gaussian of :func:`pixel_profile` (total width
    ``sqrt(psf_sigma(wave)**2 + sigma**2)`` pixels), converted to arcsec with
    ``pixel_scale`` and assumed round.  In the dispersion direction the shutter passes
    ``|x - xpos * slit_width| < slit_width / 2``; in the cross-dispersion direction
    nothing is lost by default (``slit_height=None``: the slitlet is contiguous and the
    bar shadows between shutters are a separate correction), or
    ``|y - ypos * slit_height| < slit_height / 2`` if a height is given.

    Note that the detector-plane PSF is slightly wider than the PSF on the MSA, so this
    model somewhat over-estimates losses for point sources; it is the same model used
    for the profile fit, which keeps fit, extraction and path loss consistent.

    Parameters
    ----------
    wave : array-like
        Wavelength, um.
    sigma : array-like
        Intrinsic source width, pixels.
    xpos : array-like
        Source position across the shutter width (dispersion direction) in units of the
        shutter width, 0 at the centre, +-0.5 at the edges (jwst's SRCXPOS).
    ypos : array-like
        Source position along the shutter (cross-dispersion) in units of the open
        shutter height (jwst's SRCYPOS); used only with ``slit_height`` or by a
        ``lookup_prf``.
    lookup_prf : LookupPRF or None
        User model; its ``slit_throughput(wave, sigma, xpos, ypos, slit_width)`` is
        returned instead.
    slit_width : float
        Open shutter width, arcsec (0.20 for the MSA; 0.2/0.4/1.6 for fixed slits).
    slit_height : float or None
        Open shutter height, arcsec (0.46 for the MSA), or None for no cross-dispersion
        loss.
    pixel_scale : float or None
        Detector pixel scale, arcsec/px; None uses ``NIRSPEC_PIXEL_SCALE``.

    Returns
    -------
    numpy.ndarray
        Throughput in ``[0, 1]`` (broadcast shape of the inputs).
    """
    if lookup_prf is not None:
        fn = _check_lookup(lookup_prf, "slit_throughput")
        return np.asarray(fn(wave, sigma, xpos, ypos, slit_width), dtype=float)
    scale = _pixel_scale_or_default(pixel_scale)
    s = total_sigma(wave, sigma) * scale  # arcsec
    half = 0.5 * float(slit_width)
    mu = np.asarray(xpos, dtype=float) * float(slit_width)
    a = 1.0 / (_SQRT2 * s)
    frac = 0.5 * (erf((half - mu) * a) - erf((-half - mu) * a))
    if slit_height is not None:
        hh = 0.5 * float(slit_height)
        muy = np.asarray(ypos, dtype=float) * float(slit_height)
        frac = frac * 0.5 * (erf((hh - muy) * a) - erf((-hh - muy) * a))
    return frac


PATH_LOSS_REFERENCES = ("total", "centered_point")


def path_loss_correction(
    wave,
    sigma,
    xpos,
    ypos=0.0,
    lookup_prf=None,
    slit_width=SHUTTER_WIDTH_ARCSEC,
    slit_height=None,
    pixel_scale=None,
    reference="total",
):
    """Multiplicative path-loss correction: ``flux * correction`` = flux before the slit.

    Parameters
    ----------
    wave, sigma, xpos, ypos, lookup_prf, slit_width, slit_height, pixel_scale
        As :func:`slit_throughput`.
    reference : {'total', 'centered_point'}
        ``'total'`` (default): ``1 / slit_throughput(wave, sigma, xpos, ...)``, the
        correction of a flux measured through the shutter (pipeline calibration with
        the path-loss correction undone, as in ``SlitGroup.sci``) to the source's total
        flux in front of the MSA.  ``'centered_point'``: ``slit_throughput(wave, 0, 0,
        0) / slit_throughput(wave, sigma, xpos, ypos)``, the correction relative to a
        centred point source (msaexp's convention, for data whose calibration already
        includes the losses of a centred point source).

    Returns
    -------
    numpy.ndarray
        Correction factor >= 1 for ``'total'``; NaN where the throughput is 0.
    """
    if reference not in PATH_LOSS_REFERENCES:
        raise ConfigurationError(
            f"reference must be one of {PATH_LOSS_REFERENCES}, got {reference!r}"
        )
    kw = dict(
        lookup_prf=lookup_prf,
        slit_width=slit_width,
        slit_height=slit_height,
        pixel_scale=pixel_scale,
    )
    thr = slit_throughput(wave, sigma, xpos, ypos, **kw)
    with np.errstate(divide="ignore", invalid="ignore"):
        if reference == "total":
            corr = 1.0 / thr
        else:
            corr = slit_throughput(wave, 0.0, 0.0, 0.0, **kw) / thr
    return np.where(thr > 0, corr, np.nan)
