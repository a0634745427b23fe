"""Cross-dispersion profiles on the detector, the nod-difference profile and the
slit-throughput (path-loss) model.

Built on the point-response model of :mod:`slitcombine.core.psf` (the NIRSpec PSF core
width, the :class:`~slitcombine.core.psf.LookupPRF` protocol and the default
:class:`~slitcombine.core.psf.GaussianPRF`).  The fit of a nod-difference image is in
:mod:`slitcombine.core.profilemodel` (:class:`~slitcombine.core.profilemodel.
DifferenceProfileModel`) and :mod:`slitcombine.core.profilefit`
(:func:`~slitcombine.core.profilefit.fit_difference_profile`); the names of those three
modules remain importable from here.

Pure functions, no state.  Conventions:

* ``yslit`` is the cross-dispersion distance (pixels) of a pixel *centre* from the
  source centre in the same exposure (``SlitGroup.yslit``: row minus trace).
* ``wave`` is the wavelength in um.
* ``sigma`` is the *intrinsic* Gaussian width of the source in detector pixels (0 for a
  point source).  The profile on the detector is a Gaussian of total width
  ``sqrt(psf_sigma(wave)**2 + sigma**2)`` pixels, integrated exactly over each pixel.


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

import numpy as np

# Names of the point-response model and of the fit, importable from here as before the
# split (redundant aliases: re-exports).
from slitcombine.core.profilefit import fit_difference_profile as fit_difference_profile
from slitcombine.core.profilemodel import DifferenceProfileModel as DifferenceProfileModel
from slitcombine.core.psf import _DEFAULT_PRF, _resolve_prf
from slitcombine.core.psf import FWHM_TO_SIGMA as FWHM_TO_SIGMA
from slitcombine.core.psf import PSF_CORE_FRACTION as PSF_CORE_FRACTION
from slitcombine.core.psf import PSF_FWHM_AT_1UM as PSF_FWHM_AT_1UM
from slitcombine.core.psf import PSF_FWHM_FLOOR as PSF_FWHM_FLOOR
from slitcombine.core.psf import PSF_FWHM_SLOPE as PSF_FWHM_SLOPE
from slitcombine.core.psf import GaussianPRF as GaussianPRF
from slitcombine.core.psf import LookupPRF as LookupPRF
from slitcombine.core.psf import psf_fwhm as psf_fwhm
from slitcombine.core.psf import psf_sigma as psf_sigma
from slitcombine.errors import ConfigurationError
from slitcombine.instrument import SHUTTER_HEIGHT, SHUTTER_WIDTH

__all__ = [
    "total_sigma",
    "pixel_profile",
    "difference_profile",
    "slit_throughput",
    "path_loss_correction",
    "PATH_LOSS_REFERENCES",
]


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
