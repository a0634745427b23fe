"""How NIRSpec images a source through the MSA: a forward model from the optics.

Pure functions and one frozen model object, no state.  Used by the simulator
(:mod:`slitcombine.testing.simulate`) to form the detector image of a source and of the sky, and
by the profile model of the extraction (:mod:`slitcombine.core.profile`), so that the
cross-dispersion profile, the slit throughput (path loss) and the bar shadow come from
one description of the instrument.

Image formation (cross-dispersion direction ``y``, along the slit; dispersion ``x``)
------------------------------------------------------------------------------------
1. **Telescope.**  The source's surface brightness at the MSA is its intrinsic profile
   (a round Gaussian of width ``sigma`` detector pixels; 0 for a point source) convolved
   with the telescope point-spread function.  ``telescope='airy'``: the diffraction
   pattern of a circular pupil of diameter :data:`~slitcombine.instrument.TELESCOPE_DIAMETER`
   with a central obscuration :data:`~slitcombine.instrument.TELESCOPE_OBSCURATION`
   (the Airy rings are its wings; the pattern beyond ``PSF_RADIUS`` lambda/D, ~0.8% of
   the light, is neglected).  ``telescope='gaussian'``: a round Gaussian of the same
   FWHM (no wings), for tests of how much the wings matter.
2. **MSA.**  Only the light inside the open apertures passes: a window ``|x - x_src| <
   w/2`` in the dispersion direction (``w`` = 0.20 arcsec for a shutter; the source at
   ``xpos`` shutter widths from the centre, jwst's ``SRCXPOS``) and, along the slit, the
   open shutters of the slitlet (0.46 arcsec high on a 0.529 arcsec pitch: the bars
   between them block 0.069 arcsec) or the fixed slit.  Light that falls on a bar or a
   closed shutter is lost.  The fraction that passes is the *slit throughput* ``T``
   (the geometric part of the pipeline's ``PATHLOSS_PS``).
3. **Spectrograph and detector.**  The light that passed is imaged onto the detector
   and blurred by the post-MSA kernel ``K`` (collimator, disperser, camera, detector
   charge diffusion): a core Gaussian of ``kernel_sigma`` pixels plus a fraction
   ``kernel_wing_fraction`` in a Gaussian of ``kernel_wing_sigma`` pixels; then it is
   integrated over the detector pixels.

Consequences: a compact source's detector flux is ``F * T``: the bars take their share
at the MSA (in ``T``) but the light that passed is **not** modulated again by the bar
pattern, however close its trace runs to the image of a bar.  A uniform source (the
sky) gives the *illumination* ``I(y) = (A * K)(y)`` integrated over pixels (``A`` the
open-aperture function): ~1 inside the shutters, ~0.5 on the images of the bars, 0
outside the slitlet: this is what the pipeline's ``BARSHADOW`` describes, and why the
bar shadow belongs to the sky and to extended sources.  Sources of intermediate size are
in between, automatically.

Calibration of the default parameters (``OpticsModel()``): the obscured Airy pattern of
a 6.5 m pupil (0.316 px FWHM per um of wavelength at 0.1035 arcsec/px) seen through a
0.2 arcsec slit and blurred by ``K`` with ``kernel_sigma = 0.48`` px,
``kernel_wing_fraction = 0.058`` and ``kernel_wing_sigma = 1.9`` px reproduces the
measured cross-dispersion profile of a point source in the S200A1 fixed slit (the
encircled fractions of msaexp's published empirical PSF, measured on the standard star
P330E) to within 0.01-0.03 in the fraction within +-1 pixel row and 0.01 within +-2 rows
over 0.7-5 um: FWHM 1.2 px at 1 um to 1.9 px at 5 um, 97-98% of the light within +-2
rows, 99.5% within +-5 rows.  The model has no wavelength-dependent wavefront error (it
is too sharp below ~1 um, where JWST is not diffraction limited) and no diffraction
losses at the grating (part of the pipeline's ``PATHLOSS_PS``): the throughput ``T`` is
the geometric fraction through the aperture.

Coordinates: ``u``, ``z`` and rows are detector pixels along the slit; arcsec are
converted with ``pixel_scale`` (arcsec/px).  Wavelengths in um.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy.ndimage import gaussian_filter1d
from scipy.special import j1, ndtr

from slitcombine import instrument
from slitcombine.errors import ConfigurationError

__all__ = [
    "OpticsModel",
    "DEFAULT_OPTICS",
    "TELESCOPE_MODELS",
    "PSF_RADIUS",
    "fine_grid",
    "aperture_transmission",
    "sample_strips",
    "detector_profiles",
    "illumination",
]

#: Telescope PSF models of :class:`OpticsModel`.
TELESCOPE_MODELS = ("airy", "gaussian")

#: Radius (in lambda/D) out to which the Airy pattern is computed.
PSF_RADIUS = 25.0

#: Sampling of the tabulated Airy pattern, lambda/D.
_AIRY_STEP = 0.1

#: FWHM of the obscured Airy core, lambda/D (1.029 unobscured; 0.11 obscuration
#: narrows it by ~1%).
_AIRY_FWHM = 1.018

_SIGMA_PER_FWHM = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))


@dataclass(frozen=True)
class OpticsModel:
    """The NIRSpec image-formation model (see the module docstring).

    Parameters
    ----------
    telescope : {'airy', 'gaussian'}
        Telescope point-spread function at the MSA.
    diameter : float
        Pupil diameter, m.
    obscuration : float
        Linear central obscuration of the pupil, in [0, 0.5).
    pixel_scale : float
        Detector pixel scale along the slit, arcsec/px.
    kernel_sigma : float
        Core sigma of the post-MSA blur ``K``, detector pixels.
    kernel_wing_fraction : float
        Fraction of the light of ``K`` in its wide component, in [0, 1).
    kernel_wing_sigma : float
        Sigma of the wide component of ``K``, detector pixels.
    """

    telescope: str = "airy"
    diameter: float = instrument.TELESCOPE_DIAMETER
    obscuration: float = instrument.TELESCOPE_OBSCURATION
    pixel_scale: float = instrument.PIXEL_SCALE
    kernel_sigma: float = 0.48
    kernel_wing_fraction: float = 0.058
    kernel_wing_sigma: float = 1.9

    def __post_init__(self):
        if self.telescope not in TELESCOPE_MODELS:
            raise ConfigurationError(
                f"telescope must be one of {TELESCOPE_MODELS}, got {self.telescope!r}"
            )
        for name in ("diameter", "pixel_scale", "kernel_sigma", "kernel_wing_sigma"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value > 0):
                raise ConfigurationError(f"{name} must be a positive number, got {value!r}")
        if not 0 <= self.obscuration < 0.5:
            raise ConfigurationError(f"obscuration must be in [0, 0.5), got {self.obscuration}")
        if not 0 <= self.kernel_wing_fraction < 1:
            raise ConfigurationError(
                f"kernel_wing_fraction must be in [0, 1), got {self.kernel_wing_fraction}"
            )

    # ------------------------------------------------------------------ telescope
    def lambda_over_d(self, wave):
        """Diffraction scale ``lambda / D``.

        Parameters
        ----------
        wave : array-like
            Wavelength, um.

        Returns
        -------
        numpy.ndarray
            lambda/D in detector pixels.
        """
        rad = np.asarray(wave, float) * 1e-6 / self.diameter
        return rad * 206264.806 / self.pixel_scale

    def telescope_fwhm(self, wave):
        """FWHM of the telescope PSF core at the MSA.

        Parameters
        ----------
        wave : array-like
            Wavelength, um.

        Returns
        -------
        numpy.ndarray
            FWHM in detector pixels (0.32 px at 1 um, 1.6 px at 5 um for 6.5 m).
        """
        return _AIRY_FWHM * self.lambda_over_d(wave)

    # ------------------------------------------------------------------ MSA plane
    def strip_profiles(self, wave, u, *, sigma=0.0, xpos=0.0, slit_width=None):
        """Profile along the slit of the light inside the dispersion-direction window.

        For a source centred at ``u = 0``: the surface brightness at the MSA (intrinsic
        Gaussian convolved with the telescope PSF) integrated over ``|x - x_src| <
        slit_width / 2``; not yet cut along the slit by the shutters.

        Parameters
        ----------
        wave : array-like
            ``(nwave,)`` wavelengths, um.
        u : numpy.ndarray
            ``(nu,)`` uniform grid of positions along the slit relative to the source,
            detector pixels.
        sigma : float
            Intrinsic Gaussian sigma of the source, detector pixels (both directions).
        xpos : float
            Source position across the window, in units of ``slit_width`` (0 = centre).
        slit_width : float, optional
            Window width, arcsec (default the MSA shutter, 0.20).

        Returns
        -------
        numpy.ndarray
            ``(nwave, nu)`` flux per detector pixel of ``u`` for unit source flux; its
            integral over ``u`` is the fraction of the source inside the window.
        """
        wave = np.atleast_1d(np.asarray(wave, float))
        u = np.asarray(u, float)
        width = instrument.SHUTTER_WIDTH if slit_width is None else float(slit_width)
        sigma = float(sigma)
        if sigma < 0 or not np.isfinite(sigma):
            raise ConfigurationError(f"sigma must be >= 0 pixels, got {sigma}")
        du = float(u[1] - u[0]) if u.size > 1 else 1.0
        half = 0.5 * width / self.pixel_scale  # window half-width, px
        x0 = float(xpos) * width / self.pixel_scale
        out = np.empty((wave.size, u.size))
        if self.telescope == "gaussian":
            s_tel = self.telescope_fwhm(wave) * _SIGMA_PER_FWHM
            s = np.sqrt(s_tel**2 + sigma**2)[:, None]
            fx = ndtr((half - x0) / s) - ndtr((-half - x0) / s)
            out[:] = fx * np.exp(-0.5 * (u[None, :] / s) ** 2) / (np.sqrt(2 * np.pi) * s)
            return out
        grid, cum = _airy_cumulative(self.obscuration)
        step = grid[1] - grid[0]
        # x offsets of the intrinsic Gaussian (the window centre moves by t)
        if sigma > 0:
            t = np.linspace(-5.0, 5.0, 41)
            wt = np.exp(-0.5 * t * t)
            wt /= wt.sum()
            t = t * sigma
        else:
            t, wt = np.zeros(1), np.ones(1)
        for k, lod in enumerate(self.lambda_over_d(wave)):
            lo = (x0 + t - half) / lod  # window edges, lambda/D
            hi = (x0 + t + half) / lod
            strip = wt[:, None] * (_cum_at(cum, grid, step, hi) - _cum_at(cum, grid, step, lo))
            strip = strip.sum(axis=0)  # (ny_grid,) per unit y in lambda/D
            # onto u (px): y = u / lod (lambda/D); density per px = per (lambda/D) / lod
            out[k] = np.interp(u / lod, grid, strip, left=0.0, right=0.0) / lod
        if sigma > 0:
            out = gaussian_filter1d(out, sigma / du, axis=1, mode="constant")
        return out

    # ------------------------------------------------------------------ detector
    def kernel_pixel(self, d):
        """The post-MSA blur integrated over a detector pixel.

        Parameters
        ----------
        d : array-like
            Pixel centre minus position of a point of light at the MSA image, pixels.

        Returns
        -------
        numpy.ndarray
            Fraction of the light of that point falling in the pixel (sums to 1 over
            all pixels).
        """
        d = np.asarray(d, float)
        f = self.kernel_wing_fraction
        out = (1.0 - f) * (
            ndtr((d + 0.5) / self.kernel_sigma) - ndtr((d - 0.5) / self.kernel_sigma)
        )
        if f > 0:
            s = self.kernel_wing_sigma
            out = out + f * (ndtr((d + 0.5) / s) - ndtr((d - 0.5) / s))
        return out

    def kernel_matrix(self, z, ny):
        """``K[r, j]``: fraction of light at fine position ``z[j]`` landing in row ``r``.

        Parameters
        ----------
        z : numpy.ndarray
            ``(nz,)`` fine positions along the slit, detector rows.
        ny : int
            Number of rows.

        Returns
        -------
        numpy.ndarray
            ``(ny, nz)`` matrix.
        """
        return self.kernel_pixel(np.arange(ny)[:, None] - np.asarray(z)[None, :])


#: The default model (obscured Airy telescope, calibrated post-MSA kernel); immutable.
DEFAULT_OPTICS = OpticsModel()


@lru_cache(maxsize=4)
def _airy_cumulative(obscuration):
    """Cumulative (along x) obscured Airy pattern on a grid in lambda/D units.

    A pure function of the obscuration, memoised (a few MB; the arrays are read-only).

    Returns
    -------
    grid : numpy.ndarray
        Cell centres of both axes, lambda/D.
    cum : numpy.ndarray
        ``cum[iy, ix]``: integral of the pattern (unit total flux over the plane) along
        x from the grid's lower edge to the upper edge of cell ``ix``.
    """
    step = _AIRY_STEP
    grid = np.arange(-PSF_RADIUS, PSF_RADIUS + step / 2, step)
    v = np.pi * np.hypot(grid[None, :], grid[:, None])
    eps = float(obscuration)
    with np.errstate(invalid="ignore", divide="ignore"):
        amp = 2 * j1(v) / v
        if eps > 0:
            amp = amp - eps * eps * 2 * j1(eps * v) / (eps * v)
    amp = np.where(v > 0, amp, 1.0 - eps * eps) / (1.0 - eps * eps)
    # peak 1; the total flux of the obscured pattern is 4 / (pi (1 - eps^2)) (lambda/D)^2
    dens = amp * amp * (np.pi * (1.0 - eps * eps) / 4.0)
    cum = np.cumsum(dens, axis=1) * step
    grid.setflags(write=False)
    cum.setflags(write=False)
    return grid, cum


def _cum_at(cum, grid, step, x):
    """Linear interpolation of the cumulative table along x at positions ``x``.

    ``x``: ``(nt,)`` positions (lambda/D); returns ``(nt, ny_grid)``.  Values below the
    grid are 0, above it the row total.
    """
    # cum[:, i] is the integral up to the upper edge of cell i: grid[i] + step/2
    pos = (np.asarray(x, float) - (grid[0] + 0.5 * step)) / step
    n = grid.size
    pos_c = np.clip(pos, 0.0, n - 1.0)
    i0 = np.minimum(np.floor(pos_c).astype(int), n - 2)
    frac = pos_c - i0
    val = cum[:, i0] * (1.0 - frac) + cum[:, i0 + 1] * frac  # (ny_grid, nt)
    below = pos < -1.0
    partial = (pos >= -1.0) & (pos < 0.0)
    val = np.where(below[None, :], 0.0, val)
    val = np.where(partial[None, :], cum[:, 0:1] * (pos + 1.0)[None, :], val)
    return val.T


def fine_grid(ny, step=0.05, pad=0.5):
    """Fine positions along the slit covering rows 0 to ``ny - 1``.

    Parameters
    ----------
    ny : int
        Number of detector rows.
    step : float
        Spacing, pixels.
    pad : float
        Margin beyond the outer pixel edges, pixels.

    Returns
    -------
    z : numpy.ndarray
        ``(nz,)`` cell centres, rows.
    edges : numpy.ndarray
        ``(nz + 1,)`` cell edges, rows.
    """
    lo, hi = -0.5 - pad, ny - 0.5 + pad
    n = int(np.ceil((hi - lo) / step))
    edges = lo + step * np.arange(n + 1)
    return 0.5 * (edges[:-1] + edges[1:]), edges


def aperture_transmission(edges, intervals):
    """Fraction of each fine cell inside the open intervals, per column.

    Parameters
    ----------
    edges : numpy.ndarray
        ``(nz + 1,)`` fine cell edges, rows.
    intervals : numpy.ndarray
        ``(ncol, nopen, 2)`` open intervals ``(low, high)`` in rows, per column (NaN
        rows are ignored).

    Returns
    -------
    numpy.ndarray
        ``(ncol, nz)`` transmission in [0, 1].
    """
    iv = np.asarray(intervals, float)
    lo = np.nan_to_num(iv[..., 0], nan=0.0)[:, :, None]
    hi = np.nan_to_num(iv[..., 1], nan=0.0)[:, :, None]
    a, b = edges[None, None, :-1], edges[None, None, 1:]
    overlap = np.clip(np.minimum(b, hi) - np.maximum(a, lo), 0.0, None)
    return np.minimum(overlap.sum(axis=1) / (edges[1] - edges[0]), 1.0)


def sample_strips(strips, u, wave_nodes, wave, z, src_rows):
    """Strip profiles of each column, placed at the source row, on the fine grid.

    Parameters
    ----------
    strips : numpy.ndarray
        ``(nnode, nu)`` :meth:`OpticsModel.strip_profiles` at ``wave_nodes``.
    u : numpy.ndarray
        ``(nu,)`` their uniform grid, pixels from the source.
    wave_nodes : numpy.ndarray
        ``(nnode,)`` increasing wavelengths of the strips, um.
    wave : numpy.ndarray
        ``(ncol,)`` wavelength of each column, um (linear interpolation between nodes,
        clamped at the ends).
    z : numpy.ndarray
        ``(nz,)`` fine positions, rows.
    src_rows : numpy.ndarray
        ``(ncol,)`` source row in each column.

    Returns
    -------
    numpy.ndarray
        ``(ncol, nz)`` flux per pixel at ``z`` for unit source flux (0 where the column
        wavelength is not finite).
    """
    wave = np.asarray(wave, float)
    good = np.isfinite(wave) & np.isfinite(src_rows)
    w = np.where(good, wave, wave_nodes[0])
    if wave_nodes.size > 1:
        j = np.clip(np.searchsorted(wave_nodes, w) - 1, 0, wave_nodes.size - 2)
        t = np.clip((w - wave_nodes[j]) / (wave_nodes[j + 1] - wave_nodes[j]), 0.0, 1.0)
    else:
        j, t = np.zeros(w.size, int), np.zeros(w.size)
    du = u[1] - u[0]
    pos = (z[None, :] - np.where(good, src_rows, 0.0)[:, None] - u[0]) / du
    inside = (pos >= 0) & (pos <= u.size - 1)
    pos = np.clip(pos, 0, u.size - 1)
    i0 = np.minimum(np.floor(pos).astype(int), u.size - 2)
    f = pos - i0
    jn = np.minimum(j + 1, wave_nodes.size - 1)

    def at(node):
        s = strips[node[:, None], i0]
        s1 = strips[node[:, None], i0 + 1]
        return s * (1 - f) + s1 * f

    out = at(j) * (1 - t[:, None]) + at(jn) * t[:, None]
    out = np.where(inside, out, 0.0)
    out[~good] = 0.0
    return out


def detector_profiles(model, source, transmission, z, ny):
    """Detector rows of the light that passed the apertures, per column.

    Parameters
    ----------
    model : OpticsModel
        For the post-MSA kernel.
    source : numpy.ndarray
        ``(ncol, nz)`` source light at the MSA on the fine grid (:func:`sample_strips`),
        per pixel of ``z``.
    transmission : numpy.ndarray
        ``(ncol, nz)`` open-aperture transmission (:func:`aperture_transmission`).
    z : numpy.ndarray
        ``(nz,)`` uniform fine positions, rows.
    ny : int
        Number of detector rows.

    Returns
    -------
    numpy.ndarray
        ``(ncol, ny)``: fraction of the source flux in each row; its sum over rows is the
        slit throughput (less what the kernel spreads beyond the cutout).
    """
    dz = z[1] - z[0]
    kmat = model.kernel_matrix(z, ny)
    return (source * transmission) @ kmat.T * dz


def illumination(model, transmission, z, ny):
    """Detector rows of a uniform source (unit flux per pixel): the bar-shadow pattern.

    Parameters
    ----------
    model : OpticsModel
        For the post-MSA kernel.
    transmission : numpy.ndarray
        ``(ncol, nz)`` open-aperture transmission.
    z : numpy.ndarray
        ``(nz,)`` uniform fine positions, rows.
    ny : int
        Number of rows.

    Returns
    -------
    numpy.ndarray
        ``(ncol, ny)``: ~1 inside wide open apertures, ~0.5 on the image of a bar, 0 far
        from any opening.
    """
    dz = z[1] - z[0]
    kmat = model.kernel_matrix(z, ny)
    return transmission @ kmat.T * dz
