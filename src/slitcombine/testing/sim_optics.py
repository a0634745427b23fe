"""Geometry and image formation of the simulator: cutout, WCS and the light through the MSA.

:func:`make_geometry` lays out the cutout (trace, open apertures, wavelength knots),
:func:`build_wcs` writes the ``detector -> slit_frame -> world`` transform of one
exposure, and :class:`FormedImages` forms the detector images of the source and of a
uniform source through the apertures with :mod:`slitcombine.core.optics`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from slitcombine.core import optics
from slitcombine.instrument import (
    FIXED_SLITS,
    PIXEL_SCALE,
    SHUTTER_HEIGHT,
    SHUTTER_WIDTH,
)
from slitcombine.testing.sim_models import PITCH_UNITS, YSLIT_DIRECTION, dispersion_knots

log = logging.getLogger(__name__)

__all__ = ["Exposure", "Geometry", "make_geometry", "build_wcs", "slit_limits", "FormedImages"]


# --------------------------------------------------------------------------------------
# Geometry
# --------------------------------------------------------------------------------------
@dataclass
class Exposure:
    index: int
    number: int
    position: int
    nod_offset: float
    x_offset: float
    y_offset: float
    delta_rows: float  # source shift relative to the reference trace [px]
    frame_shift: float  # shift of the y_slit origin [px] (MSA: = delta_rows; FS: 0)


@dataclass
class Geometry:
    """Cutout geometry shared by all exposures of one slit."""

    fixed_slit: str | None
    n_shutters: int
    source_shutter: int  # j0: index (by increasing y_slit) of the source shutter, exposure 0
    unit_arcsec: float  # arcsec per y_slit unit
    width_arcsec: float  # arcsec per x_slit unit
    yslit_per_pixel: float
    centres: np.ndarray  # open aperture centres in exposure-0 y_slit units
    extent: tuple[float, float]  # y_slit extent (exposure 0 frame)
    nx: int
    ny: int
    yc: float
    slope: float
    curvature: float
    xk: np.ndarray
    wave_knots: np.ndarray

    def trace_ref(self, x):
        """Row of ``y_slit = 0`` of the reference exposure at columns ``x``."""
        t = (np.asarray(x, dtype=float) - 0.5 * (self.nx - 1)) / (0.5 * max(self.nx - 1, 1))
        return self.yc + 0.5 * self.slope * t + self.curvature * t**2

    def trace_poly(self):
        """Coefficients ``A0, A1, A2`` of ``trace_ref(x) = A0 + A1 x + A2 x^2``."""
        xm = 0.5 * (self.nx - 1)
        h = 0.5 * max(self.nx - 1, 1)
        a = 0.5 * self.slope
        b = self.curvature
        a2 = b / h**2
        a1 = a / h - 2.0 * b * xm / h**2
        a0 = self.yc - a * xm / h + b * xm**2 / h**2
        return a0, a1, a2


def make_geometry(grating, fixed_slit, n_shutters, rel_offsets, nx, trace_slope, trace_curvature):
    if fixed_slit is None:
        unit = SHUTTER_HEIGHT
        width = SHUTTER_WIDTH
        # index shifts of the source shutter, in increasing y_slit order
        shifts = [int(round(YSLIT_DIRECTION * o)) for o in rel_offsets]
        lo = -min(shifts)
        hi = n_shutters - 1 - max(shifts)
        j0 = (lo + hi) // 2
        centres = (np.arange(n_shutters) - j0) * PITCH_UNITS
        extent = (centres.min() - 0.5 - 0.55, centres.max() + 0.5 + 0.55)
    else:
        width, length = FIXED_SLITS[fixed_slit]
        unit = length
        j0 = 0
        centres = np.zeros(1)
        extent = (-0.55, 0.55)
    u = PIXEL_SCALE / unit
    rows = np.array(extent) / (YSLIT_DIRECTION * u)
    t = np.linspace(-1, 1, 201)
    q = 0.5 * trace_slope * t + trace_curvature * t**2
    height = (rows.max() - rows.min()) + (q.max() - q.min())
    ny = int(np.ceil(height + 3.0))
    yc = 0.5 * (ny - 1) - 0.5 * (rows.min() + rows.max()) - 0.5 * (q.min() + q.max())
    xk, wk = dispersion_knots(grating, nx)
    return Geometry(
        fixed_slit,
        n_shutters,
        j0,
        unit,
        width,
        u,
        centres,
        extent,
        nx,
        ny,
        yc,
        trace_slope,
        trace_curvature,
        xk,
        wk,
    )


def build_wcs(geom, grating, exposure, source_xpos, source_ypos_k, ra, dec, pa):
    """Build the gwcs ``detector -> slit_frame -> world`` of one exposure."""
    from astropy.modeling import models as m
    from gwcs import wcs as gwcs_wcs

    det2slit = _detector_to_slit(geom, grating, exposure)

    spatial = (
        (m.Shift(-source_xpos) & m.Shift(-source_ypos_k))
        | (m.Scale(geom.width_arcsec / 3600.0) & m.Scale(geom.unit_arcsec / 3600.0))
        | m.Rotation2D(angle=pa)
        | m.Pix2Sky_TAN()
        | m.RotateNative2Celestial(ra, dec, 180.0)
    )
    slit2world = spatial & m.Scale(1e6)
    slit2world.name = "slit2world"

    detector, slit_frame, world = _frames()
    wcs = gwcs_wcs.WCS([(detector, det2slit), (slit_frame, slit2world), (world, None)])
    wcs.bounding_box = ((-0.5, geom.nx - 0.5), (-0.5, geom.ny - 0.5))
    return wcs


def _detector_to_slit(geom, grating, exposure):
    """The ``detector -> slit_frame`` transform of one exposure, with its analytic inverse.

    ``y_slit`` is a polynomial of ``(x, y)`` (the trace shifted by the exposure's frame
    shift), the wavelength a table of ``x``; outside the slit's open extent or the
    grating's range all three outputs are NaN.
    """
    from astropy.modeling import models as m

    d = YSLIT_DIRECTION
    s = geom.yslit_per_pixel
    a0, a1, a2 = geom.trace_poly()
    a0 = a0 + exposure.frame_shift
    ypoly = m.Polynomial2D(2, c0_0=-d * s * a0, c1_0=-d * s * a1, c2_0=-d * s * a2, c0_1=d * s)
    lam_tab = m.Tabular1D(
        points=geom.xk,
        lookup_table=geom.wave_knots * 1e-6,
        method="linear",
        bounds_error=False,
        fill_value=np.nan,
    )
    ymin, ymax = slit_limits(geom, exposure)
    wmin, wmax = grating.wave_min * 1e-6, grating.wave_max * 1e-6

    def window(lo, hi, zero):
        table = np.zeros(2) if zero else np.array([lo, hi])
        return m.Tabular1D(
            points=np.array([lo, hi]),
            lookup_table=table,
            method="linear",
            bounds_error=False,
            fill_value=np.nan,
        )

    p0 = m.Mapping((0,), n_inputs=2)
    p1 = m.Mapping((1,), n_inputs=2)
    x_out = (p0 | window(ymin, ymax, True)) + (p1 | window(wmin, wmax, True))
    y_out = (p0 | window(ymin, ymax, False)) + (p1 | window(wmin, wmax, True))
    w_out = (p1 | window(wmin, wmax, False)) + (p0 | window(ymin, ymax, True))
    det2slit = (
        m.Mapping((0, 1, 0))
        | (ypoly & lam_tab)
        | m.Mapping((0, 1, 0, 1, 0, 1))
        | (x_out & y_out & w_out)
    )
    # Analytic inverse (slit_frame -> detector): x from the wavelength, y from (x, y_slit).
    x_of_lam = m.Tabular1D(
        points=geom.wave_knots * 1e-6,
        lookup_table=geom.xk,
        method="linear",
        bounds_error=False,
        fill_value=np.nan,
    )
    y_of_x_yslit = m.Polynomial2D(2, c0_0=a0, c1_0=a1, c2_0=a2, c0_1=1.0 / (d * s))
    det2slit.inverse = (
        m.Mapping((2, 1))
        | (x_of_lam & m.Identity(1))
        | m.Mapping((0, 0, 1))
        | (m.Identity(1) & y_of_x_yslit)
    )
    det2slit.name = "det2slit"
    return det2slit


def _frames():
    """The gwcs frames ``detector``, ``slit_frame`` and ``world`` of a slit WCS."""
    from astropy import coordinates as coord
    from astropy import units as u
    from gwcs import coordinate_frames as cf

    detector = cf.Frame2D(
        name="detector", axes_order=(0, 1), unit=(u.pix, u.pix), axes_names=("x", "y")
    )
    slit_spatial = cf.Frame2D(
        name="slit_spatial", axes_order=(0, 1), unit=(u.one, u.one), axes_names=("x_slit", "y_slit")
    )
    spec_m = cf.SpectralFrame(
        name="spectral", axes_order=(2,), unit=(u.m,), axes_names=("wavelength",)
    )
    slit_frame = cf.CompositeFrame([slit_spatial, spec_m], name="slit_frame")
    sky = cf.CelestialFrame(
        name="sky",
        axes_order=(0, 1),
        reference_frame=coord.ICRS(),
        unit=(u.deg, u.deg),
        axes_names=("lon", "lat"),
    )
    spec_um = cf.SpectralFrame(
        name="spectral", axes_order=(2,), unit=(u.um,), axes_names=("wavelength",)
    )
    world = cf.CompositeFrame([sky, spec_um], name="world")
    return detector, slit_frame, world


def slit_limits(geom, exposure):
    """``slit_ymin, slit_ymax`` of an exposure (y_slit units)."""
    shift = YSLIT_DIRECTION * geom.yslit_per_pixel * exposure.frame_shift
    return geom.extent[0] - shift, geom.extent[1] - shift


class FormedImages:
    """Detector images of one source and of a uniform source, through MSA apertures.

    The optics of :mod:`slitcombine.core.optics`: the source at the MSA (intrinsic Gaussian
    convolved with the telescope PSF), cut by the dispersion-direction window and by the
    open apertures along the slit, blurred by the post-MSA kernel and integrated over the
    detector rows.  Apertures are given as centres in ``y_slit`` units of the reference
    exposure (open height 1 unit); they are fixed to the MSA, the source moves with the
    nods.
    """

    _STEP = 0.05  # fine sampling along the slit, pixels

    def __init__(self, model, geom, wave_col, src, ypos_k, exposures):
        self.model = model
        self.ny = geom.ny
        x = np.arange(geom.nx, dtype=float)
        self.wave = wave_col
        self.z, self.edges = optics.fine_grid(geom.ny, step=self._STEP, pad=3.0)
        self.rows_per_unit = 1.0 / (YSLIT_DIRECTION * geom.yslit_per_pixel)
        self.trace0 = geom.trace_ref(x)
        self.centre_rows = np.array([self.trace0 + e.frame_shift for e in exposures])
        self.src_rows = self.centre_rows + ypos_k[:, None] * self.rows_per_unit
        lo, hi = np.nanmin(wave_col), np.nanmax(wave_col)
        self.nodes = np.geomspace(lo, hi, 24)
        self.xpos = float(src["source_xpos"])
        self.width = geom.width_arcsec
        half = geom.ny + 8.0
        self.u = np.arange(-half, half + 0.5 * self._STEP, self._STEP)

    def transmission(self, centres):
        """``(nx, nz)`` open-aperture transmission of the shutters at ``centres``."""
        c = np.asarray(centres, float)
        a = self.trace0[:, None] + (c - 0.5)[None, :] * self.rows_per_unit
        b = self.trace0[:, None] + (c + 0.5)[None, :] * self.rows_per_unit
        iv = np.stack([np.minimum(a, b), np.maximum(a, b)], axis=-1)
        return optics.aperture_transmission(self.edges, iv)

    def illumination(self, centres):
        """``(ny, nx)`` detector image of a uniform source of 1 per pixel."""
        return optics.illumination(self.model, self.transmission(centres), self.z, self.ny).T

    def source(self, sigma, centres, profiles=True):
        """Source light per exposure through the apertures at ``centres``.

        Returns ``profiles`` ``(nexp, ny, nx)`` (fraction of the source flux per pixel,
        or None) and the throughput ``(nexp, nx)`` (fraction through the apertures).
        """
        strips = self.model.strip_profiles(
            self.nodes, self.u, sigma=sigma, xpos=self.xpos, slit_width=self.width
        )
        trans = self.transmission(centres)
        out, tput = [], []
        for rows in self.src_rows:
            light = optics.sample_strips(strips, self.u, self.nodes, self.wave, self.z, rows)
            tput.append((light * trans).sum(axis=1) * self._STEP)
            if profiles:
                out.append(optics.detector_profiles(self.model, light, trans, self.z, self.ny).T)
        return (np.array(out) if profiles else None), np.array(tput)
