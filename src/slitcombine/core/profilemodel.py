"""Model of one nod-difference image for the fit of the source width and trace offset.

:class:`DifferenceProfileModel` evaluates, vectorised over exposures and columns, the
residuals of a difference image against the unit-flux difference profile of
:func:`slitcombine.core.profile.difference_profile` (the point-response model of
:mod:`slitcombine.core.psf`) with the per-column amplitudes solved linearly, and their
exact Jacobian.  :func:`slitcombine.core.profilefit.fit_difference_profile` fits it.
"""

from __future__ import annotations

import numpy as np
from scipy.special import ndtr

from slitcombine.core.psf import GaussianPRF, _resolve_prf
from slitcombine.errors import FitError

__all__ = ["DifferenceProfileModel"]

_INV_SQRT_2PI = 1.0 / np.sqrt(2.0 * np.pi)


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
    :func:`slitcombine.core.profile.difference_profile` with the positive exposures'
    ``yslit`` shifted by the trace-offset polynomial ``polyval(theta, xn)``.  The
    amplitudes ``F_c`` (and ``b_c``) are solved linearly per column at every evaluation
    (weighted least squares with weights ``1/var``), so only ``sigma`` and ``theta`` are
    non-linear: a variable-projection problem whose residuals and exact Jacobian
    (including the dependence of the amplitudes on the parameters) this class computes,
    vectorised over all exposures and columns.

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
