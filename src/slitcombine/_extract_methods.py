"""``SlitGroup`` methods for the pixel table and figures.

Methods: get_flat_diff_arrays, plot_2d_differences.

They are thin: they read the group's arrays, call the pure functions of
slitcombine.resample, slitcombine.extract
and slitcombine.plots, and store the results on the group.  ``SlitGroup``
inherits this class, which holds no state of its own.
"""

from __future__ import annotations

import logging

__all__ = ["ExtractMethods"]

log = logging.getLogger(__name__)


class ExtractMethods:
    """Mixin of :class:`slitcombine.SlitGroup`: the pixel table and figures."""
