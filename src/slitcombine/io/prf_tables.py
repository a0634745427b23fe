"""Tabulated point-response models: msaexp's empirical PSF lookup tables.

msaexp publishes (MIT licence) cross-dispersion profiles of a point source measured in
the fixed slits, tabulated against wavelength and a source-width parameter, with the
slit loss against the source's position across the slit:
``psf/nirspec_merged_{slit}_exp_psf_lookup_001.fits`` (``slitcombine calib fetch``
puts them in the calibration cache).  :class:`TablePRF` reads one and implements the
:class:`slitcombine.core.psf.LookupPRF` protocol, so it can be given as ``lookup_prf``
to :class:`slitcombine.SlitGroup` / :func:`slitcombine.pipeline.combine.combine`: the profile fit,
the extraction's profile and the path loss then use the table.

Table layout (extensions of the FITS file)
------------------------------------------
``PROF``
    ``(ny, nwave, nsigma)`` profile density (per pixel, unit integral over ``YSLIT``) of
    a source of width ``SIGMA`` at each ``WAVE``.
``YSLIT``
    ``(ny,)`` offsets from the source centre, pixels (uniform).
``WAVE``
    ``(nwave,)`` wavelengths, um.
``SIGMA``
    ``(nsigma,)`` source widths, pixels (msaexp: the scale of an exponential profile
    convolved with the measured PSF; 0 is a point source).
``LOSS_XOFFSET``, ``LOSS``
    ``(nx,)`` source offsets across the slit (units of the slit width, 0 = centre) and
    ``(nwave, nsigma, nx)`` the fraction of the source passing the slit width.

Differences with the optics model (:mod:`slitcombine.core.optics`, the default): the table is
a measured detector profile in a long slit, so it carries the wings as they are but not
the cut of the MSA bars, and its width parameter is msaexp's (an exponential scale, not
a Gaussian sigma); its throughput along the slit is approximated by the part of the
detector profile within the open height.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from scipy.ndimage import map_coordinates

from slitcombine.errors import InputFileError

__all__ = ["TablePRF", "read_psf_lookup"]

log = logging.getLogger(__name__)

_REQUIRED = ("PROF", "YSLIT", "WAVE", "SIGMA")


def read_psf_lookup(path):
    """Read an msaexp PSF lookup table.

    Parameters
    ----------
    path : str or path-like
        ``nirspec_merged_*_exp_psf_lookup_*.fits``.

    Returns
    -------
    TablePRF

    Raises
    ------
    slitcombine.errors.InputFileError
        If the file cannot be read or lacks an extension or has inconsistent shapes.
    """
    from astropy.io import fits

    path = Path(path)
    try:
        with fits.open(path) as hdul:
            names = {h.name for h in hdul}
            missing = [n for n in _REQUIRED if n not in names]
            if missing:
                raise InputFileError(path, f"not a PSF lookup table: missing {missing}")
            arrays = {n: np.asarray(hdul[n].data, float) for n in _REQUIRED}
            loss = None
            if "LOSS" in names and "LOSS_XOFFSET" in names:
                loss = (
                    np.asarray(hdul["LOSS_XOFFSET"].data, float),
                    np.asarray(hdul["LOSS"].data, float),
                )
    except OSError as exc:
        raise InputFileError(path, f"cannot read the PSF lookup table: {exc}") from exc
    return TablePRF(
        arrays["PROF"], arrays["YSLIT"], arrays["WAVE"], arrays["SIGMA"], loss, name=path.name
    )


class TablePRF:
    """A tabulated point-response model (the :class:`~slitcombine.core.psf.LookupPRF` protocol).

    Parameters
    ----------
    prof : numpy.ndarray
        ``(ny, nwave, nsigma)`` profile density per pixel.
    yslit, wave, sigma : numpy.ndarray
        The table's axes: offsets (pixels, uniform), wavelengths (um), widths (pixels).
    loss : (numpy.ndarray, numpy.ndarray) or None
        ``(xoffset, loss)``: offsets across the slit (slit widths) and the fraction
        passing the slit width, ``(nwave, nsigma, nx)``; None: no x loss.
    name : str
        Label (the file name).
    """

    def __init__(self, prof, yslit, wave, sigma, loss=None, name="table"):
        prof = np.asarray(prof, float)
        self.yslit = np.asarray(yslit, float)
        self.wave = np.asarray(wave, float)
        self.sigma = np.asarray(sigma, float)
        if prof.shape != (self.yslit.size, self.wave.size, self.sigma.size):
            raise InputFileError(
                name,
                f"PROF has shape {prof.shape}, expected "
                f"{(self.yslit.size, self.wave.size, self.sigma.size)}",
            )
        dy = np.diff(self.yslit)
        if not np.allclose(dy, dy[0], rtol=1e-6) or dy[0] <= 0:
            raise InputFileError(name, "YSLIT must be uniform and increasing")
        for label, axis in (("WAVE", self.wave), ("SIGMA", self.sigma)):
            if axis.size > 1 and not np.all(np.diff(axis) > 0):
                raise InputFileError(name, f"{label} must be increasing")
        self.dy = float(dy[0])
        # cumulative along y at the upper cell edges: exact pixel integrals by differences
        cum = np.cumsum(np.nan_to_num(prof), axis=0) * self.dy
        self._cum = np.concatenate([np.zeros((1, *cum.shape[1:])), cum], axis=0)
        self._edges = np.concatenate([self.yslit - 0.5 * self.dy, [self.yslit[-1] + 0.5 * self.dy]])
        if loss is not None:
            xoff, table = (np.asarray(a, float) for a in loss)
            if table.shape != (self.wave.size, self.sigma.size, xoff.size):
                raise InputFileError(
                    name,
                    f"LOSS has shape {table.shape}, expected "
                    f"{(self.wave.size, self.sigma.size, xoff.size)}",
                )
            loss = (xoff, table)
        self.loss = loss
        self.name = str(name)

    # ------------------------------------------------------------------ helpers
    def _coords(self, axis, values):
        """Fractional index of ``values`` on a (possibly non-uniform) axis, clamped."""
        return np.interp(values, axis, np.arange(axis.size, dtype=float))

    def _cumulative(self, y, wave, sigma):
        iy = (np.asarray(y, float) - self._edges[0]) / self.dy
        iy = np.clip(iy, 0.0, self._edges.size - 1.0)
        coords = [
            iy.ravel(),
            self._coords(self.wave, wave).ravel(),
            self._coords(self.sigma, sigma).ravel(),
        ]
        out = map_coordinates(self._cum, coords, order=1, mode="nearest")
        return out.reshape(np.shape(y))

    # ------------------------------------------------------------------ protocol
    def pixel_profile(self, yslit, wave, sigma):
        """Fraction of the source's flux in the pixel centred ``yslit`` from the source.

        Parameters
        ----------
        yslit : array-like
            Pixel centre minus source centre, pixels.
        wave : array-like
            Wavelength, um (clamped to the table's range).
        sigma : array-like
            Source width, pixels (msaexp's width parameter; clamped).

        Returns
        -------
        numpy.ndarray
            The table's profile integrated over the pixel; NaN where an input is NaN.
        """
        y, w, s = np.broadcast_arrays(
            np.asarray(yslit, float), np.asarray(wave, float), np.asarray(sigma, float)
        )
        bad = ~(np.isfinite(y) & np.isfinite(w) & np.isfinite(s))
        y0, w0, s0 = (np.where(bad, 0.0, a) for a in (y, w, s))
        w0 = np.where(bad, self.wave[0], w0)
        val = self._cumulative(y0 + 0.5, w0, s0) - self._cumulative(y0 - 0.5, w0, s0)
        return np.where(bad, np.nan, val)

    def slit_throughput(self, wave, sigma, xpos, ypos=0.0, slit_width=None, slit_height=None):
        """Fraction of the source passing the slit.

        Parameters
        ----------
        wave : array-like
            Wavelength, um.
        sigma : array-like
            Source width, pixels.
        xpos, ypos : array-like
            Source position in units of the slit width / open height (0 = centre).
        slit_width : float or None
            Ignored: the table's loss is for the slit it was measured in.
        slit_height : float or None
            Open height, arcsec (None: no loss along the slit); the part of the
            detector profile inside it, a close approximation of the cut at the MSA.

        Returns
        -------
        numpy.ndarray
            Throughput in ``[0, 1]``.
        """
        w, s, x, yp = np.broadcast_arrays(
            np.asarray(wave, float),
            np.asarray(sigma, float),
            np.abs(np.asarray(xpos, float)),
            np.asarray(ypos, float),
        )
        if self.loss is None:
            frac = np.ones(w.shape)
        else:
            xoff, loss = self.loss
            coords = [
                self._coords(self.wave, w).ravel(),
                self._coords(self.sigma, s).ravel(),
                self._coords(xoff, x).ravel(),
            ]
            frac = map_coordinates(loss, coords, order=1, mode="nearest").reshape(w.shape)
        if slit_height is not None:
            from slitcombine.instrument import PIXEL_SCALE

            half = 0.5 * float(slit_height) / PIXEL_SCALE  # pixels
            centre = yp * float(slit_height) / PIXEL_SCALE
            frac = frac * (
                self._cumulative(half - centre, w, s) - self._cumulative(-half - centre, w, s)
            )
        return np.clip(frac, 0.0, 1.0)

    def __repr__(self):
        return (
            f"TablePRF({self.name!r}, {self.wave.min():.2f}-{self.wave.max():.2f} um, "
            f"sigma {self.sigma.min():.2f}-{self.sigma.max():.2f} px)"
        )
