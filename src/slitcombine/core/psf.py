"""Point-response model of the cross-dispersion profile: the NIRSpec PSF core width, the
:class:`LookupPRF` protocol and its Gaussian implementation :class:`GaussianPRF`.

The profiles, the nod-difference profile and the slit throughput built on these are in
:mod:`slitcombine.core.profile`; the model and fit of a nod-difference image in
:mod:`slitcombine.core.profilemodel` and :mod:`slitcombine.core.profilefit`.

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
FWHM (pixels) grows linearly with wavelength between two anchor points of the measured
NIRSpec point-source profile width, FWHM = 1.20 px at 1.0 um and 1.90 px at 5.0 um (the
range reported for NIRSpec point sources in the public JWST documentation and in NIRSpec
MOS reduction papers; msaexp's study notes quote 1.24-1.90 px over 0.6-5.6 um; no table
is copied here)::

    FWHM(wave) = max(PSF_FWHM_AT_1UM + PSF_FWHM_SLOPE * (wave - 1), PSF_FWHM_FLOOR)

with ``PSF_FWHM_AT_1UM = 1.20`` px, ``PSF_FWHM_SLOPE = 0.175`` px/um and a floor of
1.0 px (a FWHM below one pixel is never seen on the detector).  The wavelength term is
the diffraction limit (lambda/D of the 6.5 m telescope is 0.31 px/um at 0.1035
arcsec/px; the detector and spectrograph blur add a roughly constant width).  Values:
1.13 px at 0.6 um, 1.20 (1), 1.38 (2), 1.55 (3), 1.73 (4), 1.90 (5), 2.01 (5.6).
This Gaussian model is msaexp's kind of profile (used with ``source_type=None``, for
extended sources, and as the line-spread law of the simulator); point and compact
sources are measured with the image-formation model of :mod:`slitcombine.core.optics` through
the group's apertures (:mod:`slitcombine.core.apertures`), which carries the PSF wings and the
cut of the bars.

Every function takes an optional ``lookup_prf``: an explicit point-response model object
(:class:`LookupPRF` protocol).  :class:`GaussianPRF` is the Gaussian model above as such
an object, with a replaceable PSF-width law (e.g. a measured one); any other object (a
tabulated empirical PSF) can be used instead.  ``lookup_prf=None`` means
``GaussianPRF()``.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
from scipy.special import ndtr

from slitcombine.errors import ConfigurationError
from slitcombine.instrument import PIXEL_SCALE, SHUTTER_HEIGHT, SHUTTER_WIDTH

__all__ = [
    "PSF_FWHM_AT_1UM",
    "PSF_FWHM_SLOPE",
    "PSF_FWHM_FLOOR",
    "PSF_CORE_FRACTION",
    "FWHM_TO_SIGMA",
    "LookupPRF",
    "GaussianPRF",
    "psf_fwhm",
    "psf_sigma",
]

#: PSF FWHM at 1 um, pixels.
PSF_FWHM_AT_1UM = 1.20
#: Growth of the PSF FWHM with wavelength, pixels per um (1.90 px at 5 um).
PSF_FWHM_SLOPE = 0.175
#: Smallest PSF FWHM, pixels.
PSF_FWHM_FLOOR = 1.0
#: Fraction of a point source's flux in the Gaussian core of the PSF model; the rest (wide
#: diffraction wings) is taken as lost outside the shutter.  0.92 is also the value of
#: the Gaussian model's stand-in for the wings (the optics model computes them).
PSF_CORE_FRACTION = 0.92
#: sigma = FWHM * FWHM_TO_SIGMA for a Gaussian.
FWHM_TO_SIGMA = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))


# =============================================================================== PSF
def psf_fwhm(wave):
    """FWHM of the NIRSpec cross-dispersion PSF core, pixels.

    Parameters
    ----------
    wave : array-like
        Wavelength, um.

    Returns
    -------
    numpy.ndarray or float
        ``max(1.20 + 0.175 * (wave - 1), 1.0)`` pixels (see the module docstring).
    """
    w = np.asarray(wave, dtype=float)
    return np.maximum(PSF_FWHM_AT_1UM + PSF_FWHM_SLOPE * (w - 1.0), PSF_FWHM_FLOOR)


def psf_sigma(wave):
    """Gaussian sigma of the NIRSpec cross-dispersion PSF core, pixels.

    Parameters
    ----------
    wave : array-like
        Wavelength, um.

    Returns
    -------
    numpy.ndarray or float
        ``psf_fwhm(wave) / 2.3548`` pixels: 0.510 px at 1 um, 0.807 px at 5 um.
    """
    return psf_fwhm(wave) * FWHM_TO_SIGMA


@runtime_checkable
class LookupPRF(Protocol):
    """Protocol of a point-response model object (the ``lookup_prf`` argument).

    An object passed as ``lookup_prf`` must provide both methods; they replace the
    Gaussian model wherever it is used (profile fit, difference profile, throughput).

    Methods
    -------
    pixel_profile(yslit, wave, sigma)
        Fraction of the source's flux (per unit flux entering the spectrograph, so the
        sum over all pixels of a column is ~1) that falls in the pixel whose centre is
        ``yslit`` pixels from the source centre, at wavelength ``wave`` (um), for a
        source of intrinsic width ``sigma`` (pixels; whatever the model means by it, it
        must be 0 for a point source).  Arguments broadcast like numpy arrays; returns
        an array of the broadcast shape.
    slit_throughput(wave, sigma, xpos, ypos, slit_width, slit_height)
        Fraction of the source's total flux that passes a shutter ``slit_width`` by
        ``slit_height`` arcsec (``slit_height`` None: no loss along the slit), for a
        source at ``xpos`` (dispersion direction, in units of the shutter width, centre
        0, as jwst's SRCXPOS) and ``ypos`` (along the slit, in units of the open height,
        as SRCYPOS).  Broadcasting arrays.
    """

    def pixel_profile(self, yslit, wave, sigma):  # pragma: no cover - protocol
        """Pixel-integrated cross-dispersion fraction.

        Parameters
        ----------
        yslit : array-like
            Pixel centre minus source centre, pixels.
        wave : array-like
            Wavelength, um.
        sigma : array-like
            Intrinsic width, pixels.

        Returns
        -------
        numpy.ndarray
            Fraction of the flux in each pixel.
        """

    def slit_throughput(self, wave, sigma, xpos, ypos, slit_width, slit_height):  # pragma: no cover
        """Fraction of the total flux passing the shutter.

        Parameters
        ----------
        wave : array-like
            Wavelength, um.
        sigma : array-like
            Intrinsic width, pixels.
        xpos, ypos : array-like
            Source position in units of the shutter width / height (0 = centre).
        slit_width : float
            Open width, arcsec.
        slit_height : float or None
            Open height, arcsec (None: no loss along the slit).

        Returns
        -------
        numpy.ndarray
            Throughput in ``[0, 1]``.
        """


class GaussianPRF:
    """The Gaussian point-response model as an explicit object (default ``lookup_prf``).

    Parameters
    ----------
    psf_sigma : callable or None
        ``psf_sigma(wave_um) -> sigma_pixels``, the PSF core width law; None uses
        :func:`psf_sigma` of this module.
    core_fraction : float
        Fraction of a point source's flux in the Gaussian core (the rest is lost outside
        the shutter), see :data:`PSF_CORE_FRACTION`.
    pixel_scale : float
        Detector pixel scale, arcsec/pixel, to convert widths for the slit throughput.

    Notes
    -----
    The detector profile is ``pixel_profile = Phi((y + 1/2)/s) - Phi((y - 1/2)/s)`` with
    ``s = sqrt(psf_sigma(wave)**2 + sigma**2)`` (pixels, ``Phi`` the normal CDF).  The
    slit throughput is ``core_fraction * [Phi((W/2 - x0)/S) - Phi((-W/2 - x0)/S)] *
    [same along the slit with H, y0]`` with ``S = s * pixel_scale`` arcsec, ``x0 = xpos
    * W``, ``y0 = ypos * H``.  The fit uses the analytic derivatives of this model.
    """

    def __init__(self, psf_sigma=None, core_fraction=PSF_CORE_FRACTION, pixel_scale=None):
        self._psf_sigma = psf_sigma
        self.core_fraction = float(core_fraction)
        self.pixel_scale = PIXEL_SCALE if pixel_scale is None else float(pixel_scale)
        if not (0 < self.core_fraction <= 1):
            raise ConfigurationError(f"core_fraction must be in (0, 1], got {core_fraction}")
        if not (np.isfinite(self.pixel_scale) and self.pixel_scale > 0):
            raise ConfigurationError(f"pixel_scale must be positive, got {pixel_scale}")

    def psf_sigma(self, wave):
        """PSF core sigma at ``wave``.

        Parameters
        ----------
        wave : array-like
            Wavelength, um.

        Returns
        -------
        numpy.ndarray
            Gaussian sigma, pixels.
        """
        if self._psf_sigma is None:
            return psf_sigma(wave)
        return np.asarray(self._psf_sigma(np.asarray(wave, float)), dtype=float)

    def total_sigma(self, wave, sigma):
        """Total width ``sqrt(psf_sigma(wave)**2 + sigma**2)``.

        Parameters
        ----------
        wave : array-like
            Wavelength, um.
        sigma : array-like
            Intrinsic width, pixels.

        Returns
        -------
        numpy.ndarray
            Total Gaussian sigma, pixels.
        """
        s = np.asarray(sigma, dtype=float)
        return np.sqrt(self.psf_sigma(wave) ** 2 + s**2)

    def pixel_profile(self, yslit, wave, sigma):
        """Pixel-integrated Gaussian, see the class notes.

        Parameters
        ----------
        yslit : array-like
            Pixel centre minus source centre, pixels.
        wave : array-like
            Wavelength, um.
        sigma : array-like
            Intrinsic width, pixels.

        Returns
        -------
        numpy.ndarray
            Fraction of the source's cross-dispersion flux in each pixel.
        """
        y = np.asarray(yslit, dtype=float)
        a = 1.0 / self.total_sigma(wave, sigma)
        return ndtr((y + 0.5) * a) - ndtr((y - 0.5) * a)

    def slit_throughput(
        self,
        wave,
        sigma,
        xpos,
        ypos=0.0,
        slit_width=SHUTTER_WIDTH,
        slit_height=SHUTTER_HEIGHT,
    ):
        """Fraction of the total flux through the shutter, see the class notes.

        Parameters
        ----------
        wave : array-like
            Wavelength, um.
        sigma : array-like
            Intrinsic width, pixels.
        xpos, ypos : array-like
            Source position in units of the shutter width / height (0 = centre).
        slit_width : float
            Open width, arcsec.
        slit_height : float or None
            Open height, arcsec; None for no loss along the slit.

        Returns
        -------
        numpy.ndarray
            Throughput in ``[0, core_fraction]``.
        """
        s = self.total_sigma(wave, sigma) * self.pixel_scale
        w = float(slit_width)
        x0 = np.asarray(xpos, dtype=float) * w
        frac = ndtr((0.5 * w - x0) / s) - ndtr((-0.5 * w - x0) / s)
        if slit_height is not None:
            h = float(slit_height)
            y0 = np.asarray(ypos, dtype=float) * h
            frac = frac * (ndtr((0.5 * h - y0) / s) - ndtr((-0.5 * h - y0) / s))
        return self.core_fraction * frac

    def __repr__(self):
        law = "default" if self._psf_sigma is None else getattr(self._psf_sigma, "__name__", "?")
        return (
            f"GaussianPRF(psf_sigma={law}, core_fraction={self.core_fraction}, "
            f"pixel_scale={self.pixel_scale})"
        )


_DEFAULT_PRF = GaussianPRF()


def _resolve_prf(lookup_prf, *methods):
    """``lookup_prf`` (None: the default :class:`GaussianPRF`), checked to have ``methods``."""
    prf = _DEFAULT_PRF if lookup_prf is None else lookup_prf
    for m in methods:
        if not callable(getattr(prf, m, None)):
            raise ConfigurationError(
                f"lookup_prf {type(prf).__name__} has no method {m}(); "
                "see slitcombine.core.psf.LookupPRF for the protocol"
            )
    return prf
