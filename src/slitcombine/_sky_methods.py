"""``SlitGroup`` methods for sky, bar-shadow and flux-calibration corrections.

Methods: estimate_sky, get_global_sky, set_background_spectra,
apply_spline_bar_correction, apply_normalization_correction.

They are thin: they read the group's arrays, call the pure functions of
slitcombine.sky and slitcombine.corrections, and store the results on the group.  ``SlitGroup``
inherits this class, which holds no state of its own.
"""

from __future__ import annotations

import logging

__all__ = ["SkyMethods"]

log = logging.getLogger(__name__)


class SkyMethods:
    """Mixin of :class:`slitcombine.SlitGroup`: sky, bar-shadow and flux-calibration corrections."""
