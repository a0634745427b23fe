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

Slit throughput and path loss
-----------------------------
:func:`slit_throughput` is the fraction of a source's total flux that passes the
shutter: the fraction ``core_fraction`` of the flux in the Gaussian core (total width
converted to arcsec with ``pixel_scale``, assumed round) integrated over the open shutter
(0.20 arcsec wide in the dispersion direction, 0.46 arcsec high along the slit); the
remainder (wide diffraction wings) is assumed lost.  :func:`path_loss_correction` is the
factor that multiplies a measured flux (pipeline flux calibration with the path-loss
correction *undone*, as ``SlitGroup.sci``) to give the source's flux in front of the MSA;
see its docstring for the reference options.  The throughput of the optics model
(:class:`slitcombine.core.apertures.SourceImageModel`) is the physical one.
"""

from __future__ import annotations

import logging
from typing import Protocol, runtime_checkable

import numpy as np
from scipy.optimize import least_squares
from scipy.special import ndtr

from slitcombine.errors import ConfigurationError, FitError
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
    "total_sigma",
    "pixel_profile",
    "difference_profile",
    "slit_throughput",
    "path_loss_correction",
    "PATH_LOSS_REFERENCES",
    "DifferenceProfileModel",
    "fit_difference_profile",
]

log = logging.getLogger(__name__)

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

_INV_SQRT_2PI = 1.0 / np.sqrt(2.0 * np.pi)


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
    prf = _DEFAULT_PRF if lookup_prf is None else lookup_prf
    for m in methods:
        if not callable(getattr(prf, m, None)):
            raise ConfigurationError(
                f"lookup_prf {type(prf).__name__} has no method {m}(); "
                "see slitcombine.core.profile.LookupPRF for the protocol"
            )
    return prf


def total_sigma(wave, sigma):
    """Total Gaussian width on the detector, ``sqrt(psf_sigma(wave)**2 + sigma**2)``, pixels.

    Parameters
    ----------
    wave : array-like
        Wavelength, um.
    sigma : array-like
        Intrinsic source width, pixels.
    """
    return _DEFAULT_PRF.total_sigma(wave, sigma)


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
        A point-response model object (see :class:`LookupPRF`); None uses
        :class:`GaussianPRF` with :func:`psf_sigma`.

    Returns
    -------
    numpy.ndarray
        Broadcast shape of the inputs.  For the Gaussian model
        ``Phi((yslit + 1/2)/s) - Phi((yslit - 1/2)/s)`` (``= 0.5 [erf((yslit + 1/2) /
        (sqrt(2) s)) - erf((yslit - 1/2) / (sqrt(2) s))]``) with
        ``s = sqrt(psf_sigma(wave)**2 + sigma**2)``; the sum over all pixels of a column
        is 1.  NaN where an input is NaN.
    """
    prf = _resolve_prf(lookup_prf, "pixel_profile")
    return np.asarray(prf.pixel_profile(yslit, wave, sigma), dtype=float)


def _masked_profile_mean(prof, mask):
    """Masked mean over axis 0 (NaN where no valid value)."""
    n = mask.sum(axis=0)
    s = np.where(mask, prof, 0.0).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = s / n
    mean[n == 0] = np.nan
    return mean


def difference_profile(yslit, wave, mask, ipos, ineg, sigma, lookup_prf=None):
    """Model of a nod-difference image for a source of unit flux.

    The same combination as :func:`slitcombine.core.nods.difference_image`: the masked mean
    over the positive exposures of their profiles minus the masked mean over the
    negative exposures of theirs, with the same masks.

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
        Point-response model; None uses the Gaussian of :func:`pixel_profile`.

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
    pos = _masked_profile_mean(pp, mask[ipos] & np.isfinite(pp))
    if not np.any(ineg):
        return pos
    pn = pixel_profile(yslit[ineg], wave[ineg], sigma, lookup_prf=lookup_prf)
    neg = _masked_profile_mean(pn, mask[ineg] & np.isfinite(pn))
    return pos - neg


# ====================================================================== throughput
def slit_throughput(
    wave,
    sigma,
    xpos,
    ypos=0.0,
    lookup_prf=None,
    slit_width=SHUTTER_WIDTH,
    slit_height=SHUTTER_HEIGHT,
):
    """Fraction of a compact source's total flux that passes the shutter.

    Gaussian model (``lookup_prf=None``): ``core_fraction`` (0.92) times the fraction
    of a round Gaussian of width ``sqrt(psf_sigma(wave)**2 + sigma**2)`` pixels
    (converted to arcsec with the pixel scale, 0.1035 arcsec/px) inside
    ``|x - xpos * slit_width| < slit_width / 2`` and ``|y - ypos * slit_height| <
    slit_height / 2`` (see :class:`GaussianPRF`; pass ``GaussianPRF(core_fraction=1,
    pixel_scale=...)`` for other choices).

    The PSF at the MSA is narrower than on the detector (no detector or spectrograph
    blur), so this model over-estimates the core losses somewhat, and ``core_fraction``
    stands for the wings.  It is msaexp's kind of model, used with ``source_type=None``;
    :class:`slitcombine.core.apertures.SourceImageModel` computes the throughput from the
    optics (Airy wings, the cut of the bars) for point and compact sources.

    Parameters
    ----------
    wave : array-like
        Wavelength, um.
    sigma : array-like
        Intrinsic source width, pixels (0 for a point source).
    xpos : array-like
        Source position across the shutter (dispersion direction) in units of the
        shutter width, 0 at the centre, +-0.5 at the edges (jwst's SRCXPOS).
    ypos : array-like
        Source position along the shutter in units of the open shutter height, 0 at the
        centre (jwst's SRCYPOS).
    lookup_prf : LookupPRF or None
        Point-response model; its ``slit_throughput`` is used.
    slit_width : float
        Open shutter width, arcsec (0.20 for the MSA; 0.2/0.4/1.6 for fixed slits).
    slit_height : float or None
        Open shutter height, arcsec (0.46 for the MSA, 3.2-3.3 for fixed slits), or None
        for no loss along the slit.

    Returns
    -------
    numpy.ndarray
        Throughput in ``[0, 1]`` (broadcast shape of the inputs).
    """
    prf = _resolve_prf(lookup_prf, "slit_throughput")
    return np.asarray(
        prf.slit_throughput(wave, sigma, xpos, ypos, slit_width, slit_height), dtype=float
    )


#: Valid ``reference`` values of :func:`path_loss_correction`.
PATH_LOSS_REFERENCES = ("total", "centered_point")


def path_loss_correction(
    wave,
    sigma,
    xpos,
    ypos=0.0,
    lookup_prf=None,
    slit_width=SHUTTER_WIDTH,
    slit_height=SHUTTER_HEIGHT,
    reference="total",
):
    """Multiplicative path-loss correction: ``flux * correction`` = flux before the MSA.

    Parameters
    ----------
    wave, sigma, xpos, ypos, lookup_prf, slit_width, slit_height
        As :func:`slit_throughput`.
    reference : {'total', 'centered_point'}
        ``'total'`` (default): ``1 / slit_throughput(wave, sigma, xpos, ypos)``.  It
        corrects a flux measured through the shutter (pipeline calibration with the
        path-loss correction undone, as ``SlitGroup.sci`` with the default
        ``undo_pathloss=True``) to the source's total flux density in front of the
        telescope.
        ``'centered_point'``: ``slit_throughput(wave, 0, 0, 0) / slit_throughput(wave,
        sigma, xpos, ypos)``, the correction relative to a centred point source
        (msaexp's convention, for data whose calibration already corrects the losses of
        a centred point source; 1 for a centred point source).

    Returns
    -------
    numpy.ndarray
        Correction factor (>= 1 for ``'total'``); NaN where the throughput is 0.
    """
    if reference not in PATH_LOSS_REFERENCES:
        raise ConfigurationError(
            f"reference must be one of {PATH_LOSS_REFERENCES}, got {reference!r}"
        )
    kw = dict(lookup_prf=lookup_prf, slit_width=slit_width, slit_height=slit_height)
    thr = slit_throughput(wave, sigma, xpos, ypos, **kw)
    with np.errstate(divide="ignore", invalid="ignore"):
        if reference == "total":
            corr = 1.0 / thr
        else:
            corr = slit_throughput(wave, 0.0, 0.0, 0.0, **kw) / thr
    return np.where(thr > 0, corr, np.nan)


# ================================================================== profile fitting
def _gauss_pixel_and_derivs(y, s):
    """Pixel-integrated Gaussian and its derivatives with respect to ``y`` and ``s``."""
    a = 1.0 / s
    up = (y + 0.5) * a
    um = (y - 0.5) * a
    g = ndtr(up) - ndtr(um)
    php = np.exp(-0.5 * up * up) * _INV_SQRT_2PI
    phm = np.exp(-0.5 * um * um) * _INV_SQRT_2PI
    dy = (php - phm) * a
    ds = -(up * php - um * phm) * a
    return g, dy, ds


class DifferenceProfileModel:
    """The profile model of one nod-difference image, for a fit of width and trace offset.

    The model of the difference image is, per column ``c``, ``F_c * P(y; sigma, theta)``
    (plus a constant ``b_c`` per column with ``background=True``), where ``P`` is
    :func:`difference_profile` with the positive exposures' ``yslit`` shifted by the
    trace-offset polynomial ``polyval(theta, xn)``.  The amplitudes ``F_c`` (and
    ``b_c``) are solved linearly per column at every evaluation (weighted least squares
    with weights ``1/var``), so only ``sigma`` and ``theta`` are non-linear: a
    variable-projection problem whose residuals and exact Jacobian (including the
    dependence of the amplitudes on the parameters) this class computes, vectorised over
    all exposures and columns.

    Parameters
    ----------
    ybase : numpy.ndarray
        ``(N, npix)`` cross-dispersion coordinate, pixels.  For the positive exposures
        the row minus the *base* trace (``ypix - polyval(base_coeffs_i, xn)``): the
        fitted offset is subtracted from it.  For the negative exposures the same with
        ``shift_negatives`` (the offset is common to all nods), otherwise their current
        ``yslit`` (kept fixed).
    wave : numpy.ndarray
        ``(N, npix)`` wavelength, um.
    mask : numpy.ndarray
        ``(N, npix)`` valid pixels (the mask of the difference image).
    ipos, ineg : numpy.ndarray
        Boolean ``(N,)`` positive and negative exposures (``ineg`` may be empty).
    xn : numpy.ndarray
        ``(npix,)`` normalised column ``(x - nx/2)/nx`` of the trace polynomials.
    column : numpy.ndarray
        ``(npix,)`` integer column index of each pixel.
    diff, var : numpy.ndarray
        ``(npix,)`` difference image (uJy) and its variance (uJy^2).
    degree : int
        Degree of the trace-offset polynomial.
    force_positive : bool
        Clip the model profile at 0 (ignore the negative traces).
    background : bool
        Also solve a constant per column (for data that were not differenced).
    lookup_prf : LookupPRF or None
        Point-response model.  With None or a :class:`GaussianPRF` the derivatives
        are analytic; otherwise they are central finite differences of the model.
    shift_negatives : bool
        Apply the fitted offset to the negative exposures too.

    Attributes
    ----------
    valid : numpy.ndarray
        ``(npix,)`` pixels used: finite ``diff``, ``var > 0``, defined model.
    npix, ncol : int
        Number of pixels used and number of columns.
    """

    def __init__(
        self,
        ybase,
        wave,
        mask,
        ipos,
        ineg,
        xn,
        column,
        diff,
        var,
        degree,
        *,
        force_positive=True,
        background=False,
        lookup_prf=None,
        shift_negatives=False,
    ):
        ipos = np.asarray(ipos, bool)
        ineg = np.asarray(ineg, bool)
        mask = np.asarray(mask, bool) & np.isfinite(ybase) & np.isfinite(wave)
        if not ipos.any():
            raise FitError("no positive exposure selected")
        diff = np.asarray(diff, float)
        var = np.asarray(var, float)
        with np.errstate(invalid="ignore"):
            valid = np.isfinite(diff) & np.isfinite(var) & (var > 0)
        valid &= mask[ipos].any(axis=0)
        if ineg.any():
            valid &= mask[ineg].any(axis=0)
        self.valid = valid
        self.npix_total = diff.size
        self.npix = int(valid.sum())
        self.degree = int(degree)
        if self.degree < 0:
            raise FitError(f"degree must be >= 0, got {degree}")
        self.force_positive = bool(force_positive)
        self.background = bool(background)
        self.shift_negatives = bool(shift_negatives)
        col = np.asarray(column)[valid].astype(np.intp)
        self.ncol_total = int(np.asarray(column).max()) + 1 if np.size(column) else 0
        self.col = col
        self.d = diff[valid]
        self.w = 1.0 / var[valid]
        self.sw = np.sqrt(self.w)
        xv = np.asarray(xn, float)[valid]
        self.xpow = np.array([xv ** (self.degree - k) for k in range(self.degree + 1)])

        def part(sel):
            m = mask[sel][:, valid]
            n = m.sum(axis=0)
            with np.errstate(invalid="ignore", divide="ignore"):
                wt = np.where(m, 1.0 / np.maximum(n, 1), 0.0)
            keep = m.any(axis=1)  # exposures with at least one valid pixel
            y = np.where(m, ybase[sel][:, valid], 0.0)[keep]
            wv = np.where(m, wave[sel][:, valid], 1.0)[keep]
            return y, wv, wt[keep]

        self.ypos, self.wpos_wave, self.wt_pos = part(ipos)
        if ineg.any():
            self.yneg, self.wneg_wave, self.wt_neg = part(ineg)
        else:
            self.yneg = None
        self.prf = _resolve_prf(lookup_prf, "pixel_profile")
        self.analytic = isinstance(self.prf, GaussianPRF)
        if self.analytic:
            self.s2_pos = self.prf.psf_sigma(self.wpos_wave) ** 2
            self.s2_neg = None if self.yneg is None else self.prf.psf_sigma(self.wneg_wave) ** 2
        self._neg_cache = (None, None, None)
        self._cache_key = None
        self._cache = None
        self.nfev = 0
        self.njev = 0

    # ------------------------------------------------------------ the profile
    def _component(self, y, wave_arr, s2, sigma, derivs):
        """Profile of one set of exposures at coordinates ``y``; optional derivatives."""
        if self.analytic:
            s = np.sqrt(s2 + sigma * sigma)
            g, dy, ds = _gauss_pixel_and_derivs(y, s)
            if not derivs:
                return g, None, None
            return g, dy, ds * (sigma / s)
        g = self.prf.pixel_profile(y, wave_arr, sigma)
        if not derivs:
            return g, None, None
        h = 1.0e-4
        dy = (
            self.prf.pixel_profile(y + h, wave_arr, sigma)
            - self.prf.pixel_profile(y - h, wave_arr, sigma)
        ) / (2 * h)
        hs = 1.0e-4 if sigma > 2.0e-4 else 0.0
        if hs > 0:
            dsig = (
                self.prf.pixel_profile(y, wave_arr, sigma + hs)
                - self.prf.pixel_profile(y, wave_arr, sigma - hs)
            ) / (2 * hs)
        else:
            dsig = (self.prf.pixel_profile(y, wave_arr, sigma + 1.0e-4) - g) / 1.0e-4
        return g, dy, dsig

    def _negative(self, sigma, off, derivs):
        """Negative part: profile, d/dsigma, d/dy (zeros when the negatives are fixed)."""
        if self.yneg is None:
            return 0.0, 0.0, 0.0
        if self.shift_negatives:
            g, dy, ds = self._component(
                self.yneg - off,
                self.wneg_wave,
                self.s2_neg if self.analytic else None,
                sigma,
                derivs,
            )
            p = (self.wt_neg * g).sum(axis=0)
            if not derivs:
                return p, None, None
            return p, (self.wt_neg * ds).sum(axis=0), (self.wt_neg * dy).sum(axis=0)
        key, p, dp = self._neg_cache
        if key == sigma and (dp is not None or not derivs):
            return p, dp, 0.0
        g, _, ds = self._component(
            self.yneg, self.wneg_wave, self.s2_neg if self.analytic else None, sigma, derivs
        )
        p = (self.wt_neg * g).sum(axis=0)
        dp = (self.wt_neg * ds).sum(axis=0) if derivs else None
        self._neg_cache = (sigma, p, dp)
        return p, dp, 0.0

    def profile(self, sigma, coeffs, derivs=False):
        """Unit-flux difference profile on the used pixels, and its derivatives.

        Parameters
        ----------
        sigma : float
            Intrinsic width, pixels.
        coeffs : array-like
            Trace-offset polynomial (``numpy.polyval`` order, pixels).
        derivs : bool
            Also return the derivatives.

        Returns
        -------
        P : numpy.ndarray
            ``(npix,)`` profile (clipped at 0 with ``force_positive``).
        dP_dsigma, dP_dcoeffs : numpy.ndarray or None
            ``(npix,)`` and ``(degree+1, npix)`` derivatives.
        """
        sigma = float(abs(sigma))
        off = np.asarray(coeffs, float) @ self.xpow
        y = self.ypos - off
        g, dy, ds = self._component(
            y, self.wpos_wave, self.s2_pos if self.analytic else None, sigma, derivs
        )
        p = (self.wt_pos * g).sum(axis=0)
        pn, dpn, dpny = self._negative(sigma, off, derivs)
        p = p - pn
        if not derivs:
            return (np.maximum(p, 0.0) if self.force_positive else p), None, None
        dps = (self.wt_pos * ds).sum(axis=0) - dpn
        dpy = (self.wt_pos * dy).sum(axis=0) - dpny
        dpc = -self.xpow * dpy  # d y / d c_k = -xn**(degree-k)
        if self.force_positive:
            pos = p > 0
            p = np.where(pos, p, 0.0)
            dps = np.where(pos, dps, 0.0)
            dpc = np.where(pos, dpc, 0.0)
        return p, dps, dpc

    # ------------------------------------------------------------ linear amplitudes
    def _bc(self, v):
        return np.bincount(self.col, weights=v, minlength=self.ncol_total)

    def amplitudes(self, p, dp=None):
        """Per-column linear amplitudes (and background) and their parameter derivatives.

        Parameters
        ----------
        p : numpy.ndarray
            ``(npix,)`` profile.
        dp : numpy.ndarray or None
            ``(nparam, npix)`` profile derivatives.

        Returns
        -------
        dict
            ``F``, ``b``, ``F_var`` per column (``ncol``), ``ok`` columns with a
            solution, and with ``dp`` the derivatives ``dF``, ``db`` ``(nparam, ncol)``.
        """
        w, d = self.w, self.d
        spp = self._bc(w * p * p)
        sdp = self._bc(w * d * p)
        out = {}
        if not self.background:
            ok = spp > 1e-300
            spp_s = np.where(ok, spp, 1.0)
            F = np.where(ok, sdp / spp_s, 0.0)
            b = np.zeros_like(F)
            out.update(F=F, b=b, F_var=np.where(ok, 1.0 / spp_s, np.inf), ok=ok)
            if dp is not None:
                dF = np.empty((dp.shape[0], F.size))
                for j, dpj in enumerate(dp):
                    dF[j] = np.where(
                        ok, (self._bc(w * d * dpj) - 2 * F * self._bc(w * p * dpj)) / spp_s, 0.0
                    )
                out.update(dF=dF, db=np.zeros_like(dF))
            return out
        sp = self._bc(w * p)
        s1 = self._bc(w)
        sd = self._bc(w * d)
        det = spp * s1 - sp * sp
        ok = det > 1e-10 * np.maximum(spp * s1, 1e-300)
        det_s = np.where(ok, det, 1.0)
        F = np.where(ok, (s1 * sdp - sp * sd) / det_s, 0.0)
        b = np.where(ok, (spp * sd - sp * sdp) / det_s, 0.0)
        out.update(F=F, b=b, F_var=np.where(ok, s1 / det_s, np.inf), ok=ok)
        if dp is not None:
            dF = np.empty((dp.shape[0], F.size))
            db = np.empty_like(dF)
            for j, dpj in enumerate(dp):
                swd = self._bc(w * dpj)
                r0 = self._bc(w * d * dpj) - 2 * F * self._bc(w * p * dpj) - b * swd
                r1 = -F * swd
                dF[j] = np.where(ok, (s1 * r0 - sp * r1) / det_s, 0.0)
                db[j] = np.where(ok, (spp * r1 - sp * r0) / det_s, 0.0)
            out.update(dF=dF, db=db)
        return out

    # ------------------------------------------------------------ residuals
    def evaluate(self, sigma, coeffs, jacobian=False, free_sigma=True):
        """Normalised residuals ``(diff - model)/sqrt(var)`` and their Jacobian.

        Parameters
        ----------
        sigma : float
            Intrinsic width, pixels.
        coeffs : array-like
            Trace-offset polynomial, pixels.
        jacobian : bool
            Also return the Jacobian.
        free_sigma : bool
            Whether ``sigma`` is a parameter (first column of the Jacobian).

        Returns
        -------
        r : numpy.ndarray
            ``(npix,)`` residuals (0 in columns without a linear solution).
        J : numpy.ndarray or None
            ``(npix, nparam)`` Jacobian with respect to ``[sigma,] coeffs``.
        amp : dict
            Output of :meth:`amplitudes`.
        p : numpy.ndarray
            The profile.
        """
        self.nfev += 1
        p, dps, dpc = self.profile(sigma, coeffs, derivs=jacobian)
        dp = None
        if jacobian:
            self.njev += 1
            dp = np.vstack([dps[None, :], dpc]) if free_sigma else dpc
        amp = self.amplitudes(p, dp)
        okpix = amp["ok"][self.col]
        Fp = amp["F"][self.col]
        model = Fp * p + amp["b"][self.col]
        r = np.where(okpix, self.sw * (self.d - model), 0.0)
        if not jacobian:
            return r, None, amp, p
        J = -(amp["dF"][:, self.col] * p + Fp * dp + amp["db"][:, self.col]) * self.sw
        J = np.where(okpix, J, 0.0).T
        return r, J, amp, p

    def full(self, values, fill=np.nan):
        """Scatter ``(npix,)`` values of the used pixels into an ``(npix_total,)`` array.

        Parameters
        ----------
        values : numpy.ndarray
            ``(npix,)`` values of the pixels used by the model.
        fill : float
            Value of the other pixels.

        Returns
        -------
        numpy.ndarray
            ``(npix_total,)`` array.
        """
        out = np.full(self.npix_total, fill, dtype=float)
        out[self.valid] = values
        return out


def _robust_chi2(r, loss, f_scale):
    """``sum(f_scale**2 * rho((r / f_scale)**2))``: the chi2 minimised by least_squares."""
    z = (r / f_scale) ** 2
    if loss == "linear":
        rho = z
    elif loss == "huber":
        rho = np.where(z <= 1, z, 2 * np.sqrt(z) - 1)
    elif loss == "soft_l1":
        rho = 2 * (np.sqrt(1 + z) - 1)
    elif loss == "cauchy":
        rho = np.log1p(z)
    elif loss == "arctan":
        rho = np.arctan(z)
    else:
        raise ConfigurationError(f"unknown loss {loss!r}")
    return float(f_scale**2 * rho.sum())


def fit_difference_profile(
    model,
    sigma0,
    coeffs0,
    *,
    fix_sigma=False,
    sigma_bounds=(0.1, 2.0),
    coeff_bounds=(-1.0, 1.0),
    with_bounds=True,
    sigma_prior=None,
    offset_prior=None,
    loss="huber",
    f_scale=7.0,
    tol=1e-6,
    max_nfev=None,
    evaluate=False,
    signal_threshold=5.0,
):
    """Fit the width and trace-offset polynomial of a :class:`DifferenceProfileModel`.

    A bounded non-linear least-squares fit (``scipy.optimize.least_squares``, 'trf',
    exact Jacobian, robust loss) of ``sigma`` and the offset coefficients; the per-column
    amplitudes are solved linearly inside every evaluation.

    Parameters
    ----------
    model : DifferenceProfileModel
        The data and model.
    sigma0 : float
        Start (or fixed) intrinsic width, pixels.
    coeffs0 : array-like
        Start offset polynomial (``degree + 1`` values, pixels, ``numpy.polyval`` order).
    fix_sigma : bool
        Keep ``sigma = sigma0``.
    sigma_bounds : (float, float)
        Bounds on sigma, pixels.
    coeff_bounds : (float, float) or array-like of shape (degree + 1, 2)
        Bounds on every offset coefficient, pixels; or one ``(low, high)`` pair per
        coefficient (``numpy.polyval`` order, the constant term last).
    with_bounds : bool
        Apply the bounds (otherwise unbounded; sigma is then taken as ``|sigma|``).
    sigma_prior : (float, float) or None
        Gaussian prior ``(mean, width)`` on sigma, pixels (an extra residual).
    offset_prior : (float, float) or None
        Gaussian prior on the offset polynomial, pixels: ``(mean, width)`` for the
        constant term, ``(0, width)`` for the others.
    loss : str
        Robust loss of ``least_squares`` ('huber', 'soft_l1', 'linear', ...).
    f_scale : float
        Residual (in sigma) where the robust loss starts to act.
    tol : float
        ``ftol``, ``xtol`` and ``gtol`` of ``least_squares``.
    max_nfev : int or None
        Maximum number of evaluations (None: scipy's default).
    evaluate : bool
        Do not fit: evaluate at the start values.
    signal_threshold : float
        The fit is only done if the source is detected: the chi2 of the profile
        amplitudes (sum over columns of ``(F/err)**2``) at the start values must exceed
        the number of columns by ``signal_threshold * sqrt(2 ncol)`` (and by at least 25).
        Otherwise the result has ``status='NO_SIGNAL'`` and the start values.

    Returns
    -------
    dict
        ``sigma`` (px), ``trace_coeffs`` (px), their ``sigma_err``/``trace_coeffs_err``
        (formal, from the Jacobian, profiled over the amplitudes), ``err_scale``
        (``sqrt(max(1, chi2_fit / (npix - nparam)))``: multiply the formal errors by it
        when the residuals scatter more than the variances), ``chi2_init``, ``chi2_fit``
        (robust chi2 at start and end), ``dchi2``, ``chi2_plain`` (sum of squared
        residuals at the end), ``npix``, ``nparam``, ``nfev``, ``njev``, ``status``
        ('OK', 'EVALUATED', 'NO_SIGNAL', or 'MAX_NFEV'), ``success``, ``message``,
        ``at_bound`` (per parameter: within 1e-3 of the bound interval of a bound),
        ``signal_chi2``, ``ncol_fit`` and the arrays of
        the end point: ``profile`` (unit-flux model, npix), ``model`` (fitted model,
        npix), ``flux``, ``flux_err``, ``background`` (per column), ``sn`` (per column).

    Raises
    ------
    FitError
        No valid pixel, start values outside the bounds, inconsistent bounds, or a
        non-finite result.
    """
    coeffs0 = np.asarray(coeffs0, float).ravel()
    if coeffs0.size != model.degree + 1:
        raise FitError(f"{coeffs0.size} offset coefficients given for degree {model.degree}")
    if model.npix == 0:
        raise FitError("no valid pixel in the difference image (everything masked?)")
    if not np.isfinite(sigma0) or not np.all(np.isfinite(coeffs0)):
        raise FitError(f"non-finite start values: sigma={sigma0}, coeffs={coeffs0}")
    slo, shi = (float(v) for v in sigma_bounds)
    cb = np.asarray(coeff_bounds, float)
    if cb.shape not in ((2,), (coeffs0.size, 2)):
        raise FitError(
            f"trace_bounds must be (low, high) or {coeffs0.size} (low, high) pairs, "
            f"got shape {cb.shape}"
        )
    clo, chi = np.broadcast_to(cb, (coeffs0.size, 2)).T
    if with_bounds:
        if not (0 <= slo < shi) or not np.all(clo < chi):
            raise FitError(
                f"inconsistent bounds: sigma_bounds=({slo}, {shi}) px, "
                f"trace_bounds={cb.tolist()} px"
            )
        if not fix_sigma and not (slo <= sigma0 <= shi):
            raise FitError(
                f"start sigma {sigma0:.4g} px is outside sigma_bounds ({slo:.4g}, {shi:.4g}) px"
            )
        if np.any(coeffs0 < clo) or np.any(coeffs0 > chi):
            raise FitError(
                f"start offset coefficients {coeffs0} are outside trace_bounds {cb.tolist()} px"
            )
    free_sigma = not fix_sigma
    priors = []
    if sigma_prior is not None and free_sigma:
        priors.append((0, float(sigma_prior[0]), float(sigma_prior[1])))
    if offset_prior is not None:
        i0 = 1 if free_sigma else 0
        for k in range(model.degree + 1):
            mean = float(offset_prior[0]) if k == model.degree else 0.0
            priors.append((i0 + k, mean, float(offset_prior[1])))
    for _, _, width in priors:
        if not width > 0:
            raise FitError(f"prior widths must be positive, got {width}")

    def unpack(x):
        if free_sigma:
            return abs(x[0]), x[1:]
        return sigma0, x

    def prior_res(x):
        return np.array([(x[i] - m) / wdt for i, m, wdt in priors])

    def prior_jac(nparam):
        jp = np.zeros((len(priors), nparam))
        for row, (i, _, wdt) in enumerate(priors):
            jp[row, i] = 1.0 / wdt
        return jp

    x0 = np.concatenate([[sigma0], coeffs0]) if free_sigma else coeffs0.copy()
    nparam = x0.size
    cache = {}

    def compute(x):
        # residuals and Jacobian together (least_squares asks for the Jacobian at the
        # points it accepts, which are the points whose residuals it just computed)
        key = x.tobytes()
        if key in cache:
            return cache[key]
        s, c = unpack(x)
        r, J, amp, p = model.evaluate(s, c, jacobian=True, free_sigma=free_sigma)
        if priors:
            r = np.concatenate([r, prior_res(x)])
            J = np.vstack([J, prior_jac(nparam)])
        cache.clear()
        cache[key] = (r, J, amp, p)
        return cache[key]

    r0, _, amp0, _ = compute(x0)
    chi2_init = _robust_chi2(r0, loss, f_scale)
    ok0 = amp0["ok"]
    with np.errstate(divide="ignore", invalid="ignore"):
        sn0 = np.where(ok0, amp0["F"] / np.sqrt(amp0["F_var"]), 0.0)
    ncol_fit = int(ok0.sum())
    signal_chi2 = float(np.sum(sn0**2))
    excess_needed = max(25.0, signal_threshold * np.sqrt(2.0 * max(ncol_fit, 1)))
    detected = ncol_fit > 0 and (signal_chi2 - ncol_fit) > excess_needed

    status, message, x = "EVALUATED", "evaluated at the start values", x0
    nfev = njev = 0
    if not evaluate and not detected:
        status = "NO_SIGNAL"
        message = (
            f"source not detected (profile chi2 {signal_chi2:.1f} over {ncol_fit} columns, "
            f"needs > {ncol_fit + excess_needed:.1f}): start values kept"
        )
    elif not evaluate:
        if with_bounds:
            lb = np.concatenate([[slo], clo]) if free_sigma else clo.copy()
            ub = np.concatenate([[shi], chi]) if free_sigma else chi.copy()
        else:
            lb, ub = np.full(nparam, -np.inf), np.full(nparam, np.inf)
        res = least_squares(
            lambda x: compute(x)[0],
            x0,
            jac=lambda x: compute(x)[1],
            bounds=(lb, ub),
            method="trf",
            loss=loss,
            f_scale=f_scale,
            x_scale="jac",
            ftol=tol,
            xtol=tol,
            gtol=tol,
            max_nfev=max_nfev,
        )
        x = res.x
        nfev, njev = int(res.nfev), int(res.njev or 0)
        status = "OK" if res.status > 0 else "MAX_NFEV"
        message = res.message
    r, J, amp, p = compute(x)
    if not np.all(np.isfinite(x)) or not np.all(np.isfinite(r)):
        raise FitError(f"the profile fit gave non-finite values (x={x})")
    s_fit, c_fit = unpack(x)
    chi2_fit = _robust_chi2(r, loss, f_scale)
    jtj = J.T @ J
    # Formal errors from the curvature.  ``err_scale`` = sqrt(reduced chi2) (>= 1) is
    # the factor for residuals that scatter more than the variances say (the
    # pipeline's variances of real data are ~1.3x too small in rms; a PSF model is
    # never perfect at high S/N).
    dof = max(model.npix - nparam, 1)
    err_scale = float(np.sqrt(max(chi2_fit / dof, 1.0)))
    try:
        cov = np.linalg.inv(jtj)
        err = np.sqrt(np.clip(np.diag(cov), 0, None))
    except np.linalg.LinAlgError:
        err = np.full(nparam, np.nan)
    if with_bounds and not evaluate and detected:
        span = np.maximum(ub - lb, 1e-12)
        at_bound = (x - lb <= 1e-3 * span) | (ub - x <= 1e-3 * span)
    else:
        at_bound = np.zeros(nparam, bool)
    sigma_err = float(err[0]) if free_sigma else 0.0
    coeffs_err = err[1:] if free_sigma else err
    ok = amp["ok"]
    with np.errstate(divide="ignore", invalid="ignore"):
        flux_err = np.where(ok, np.sqrt(amp["F_var"]), np.nan)
        flux = np.where(ok, amp["F"], np.nan)
        sn = flux / flux_err
    model_pix = amp["F"][model.col] * p + amp["b"][model.col]
    return {
        "sigma": float(s_fit),
        "sigma_err": sigma_err,
        "trace_coeffs": np.asarray(c_fit, float).copy(),
        "trace_coeffs_err": np.asarray(coeffs_err, float),
        "fix_sigma": bool(fix_sigma),
        "chi2_init": chi2_init,
        "chi2_fit": chi2_fit,
        "dchi2": chi2_fit - chi2_init,
        "chi2_plain": float(np.sum(r[: model.npix] ** 2)),
        "npix": model.npix,
        "nparam": nparam,
        "nfev": nfev,
        "njev": njev,
        "status": status,
        "success": status in ("OK", "EVALUATED"),
        "message": message,
        "at_bound": [bool(a) for a in at_bound],
        "err_scale": err_scale,
        "signal_chi2": signal_chi2,
        "ncol_fit": ncol_fit,
        "loss": loss,
        "f_scale": f_scale,
        "profile": model.full(p),
        "model": model.full(model_pix),
        "flux": flux,
        "flux_err": flux_err,
        "background": np.where(ok, amp["b"], np.nan),
        "sn": sn,
    }
