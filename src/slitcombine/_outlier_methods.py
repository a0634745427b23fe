"""``SlitGroup`` methods for outlier rejection.

Methods: flag_hot_cold_pixels, flag_percentile_outliers, flag_from_profile,
flag_trace_outliers, flag_2d_outliers, apply_multiple_mask.

They are thin: they read the group's arrays, call the pure functions of
slitcombine.outliers, and store the results on the group.  ``SlitGroup``
inherits this class, which holds no state of its own.
"""

from __future__ import annotations

import logging

__all__ = ["OutlierMethods"]

log = logging.getLogger(__name__)


class OutlierMethods:
    """Mixin of :class:`slitcombine.SlitGroup`: outlier rejection."""
