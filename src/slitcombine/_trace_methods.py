"""``SlitGroup`` methods for trace and profile fitting.

Methods: fit_single_trace, fit_all_traces, get_trace_sn, fit_params_by_sn,
fit_shutter_offset, plot_profile.

They are thin: they read the group's arrays, call the pure functions of
slitcombine.profile, and store the results on the group.  ``SlitGroup``
inherits this class, which holds no state of its own.
"""

from __future__ import annotations

import logging

__all__ = ["TraceMethods"]

log = logging.getLogger(__name__)


class TraceMethods:
    """Mixin of :class:`slitcombine.SlitGroup`: trace and profile fitting."""
