"""NIRSpec and JWST constants used across the package, with their units and sources.

One place for the numbers of the instrument: the optics model
(:mod:`slitcombine.core.optics`), the simulator and the corrections read them from here.

Sources: the JWST User Documentation (JDox) pages on the NIRSpec MSA and detectors, and
the JWST pipeline's documentation of its ``pathloss`` and ``barshadow`` steps; the
values are nominal (the MSA shutter pitch and the pixel scale vary by ~1% over the
field).
"""

from __future__ import annotations

__all__ = [
    "PIXEL_SCALE",
    "SHUTTER_WIDTH",
    "SHUTTER_HEIGHT",
    "SHUTTER_PITCH",
    "SHUTTER_PITCH_X",
    "BAR_WIDTH",
    "FIXED_SLITS",
    "TELESCOPE_DIAMETER",
    "TELESCOPE_OBSCURATION",
    "PIXAR_SR",
    "MSA_NOD_ARCSEC",
    "TELESCOPE_AREA",
]

#: Detector pixel scale along the slit, arcsec per pixel (the CEERS cutouts measure
#: 0.1038 from their WCS).
PIXEL_SCALE = 0.1035

#: Open width of an MSA shutter (dispersion direction), arcsec.
SHUTTER_WIDTH = 0.20

#: Open height of an MSA shutter (along the slit), arcsec: one ``y_slit`` unit of the
#: pipeline's ``slit_frame``.
SHUTTER_HEIGHT = 0.46

#: MSA shutter pitch along the slit, arcsec (the nod step of a 3-shutter slitlet).
SHUTTER_PITCH = 0.529

#: MSA shutter pitch across the slit (dispersion direction), arcsec.
SHUTTER_PITCH_X = 0.268

#: Width of the bar between two shutters of a slitlet, arcsec (pitch minus open height).
BAR_WIDTH = SHUTTER_PITCH - SHUTTER_HEIGHT

#: Fixed slits: name -> (open width, open length), arcsec.
FIXED_SLITS = {
    "S200A1": (0.2, 3.2),
    "S200A2": (0.2, 3.2),
    "S400A1": (0.4, 3.65),
    "S1600A1": (1.6, 1.6),
}

#: Diameter of the JWST primary mirror used for the diffraction pattern, metres (the
#: circumscribed diameter is 6.6 m; the collecting area equals a 6.5 m disc less the
#: obscuration).
TELESCOPE_DIAMETER = 6.5

#: Linear central obscuration of the pupil (secondary mirror, ~0.74 m, over the
#: diameter), dimensionless.
TELESCOPE_OBSCURATION = 0.11

#: Nominal solid angle of a NIRSpec detector pixel, steradian (the CEERS value of
#: ``PIXAR_SR``): ``MJy/sr * PIXAR_SR * 1e12`` is microJy per pixel.
PIXAR_SR = 4.84956822732858e-13

#: Size of one standard MSA nod step, arcsec: one shutter pitch (msaexp's name).
MSA_NOD_ARCSEC = SHUTTER_PITCH

#: Collecting area of the JWST primary mirror, square metres (the simulator's photon
#: conversion, :mod:`slitcombine.testing.sim_models`).
TELESCOPE_AREA = 25.4
