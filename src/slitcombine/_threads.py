"""Runtime settings of the package's compute calls: one BLAS thread, no cyclic GC.

One BLAS thread
---------------

slitcombine solves many small problems (penalised spline fits of a few hundred
coefficients, per-column profile fits).  Multi-threaded BLAS makes them 2-3x *slower*
as soon as another process uses a core (measured on the CEERS trio on 2 cores:
``combine`` 1.4 s with 2 OpenBLAS threads under load, 0.49 s with 1), and a batch runs
one group per core anyway.  The limit is set for the duration of a call and restored
afterwards (process-wide, as BLAS thread pools are).

Cyclic garbage collector paused
-------------------------------
Building a group allocates tens of thousands of short-lived containers (the YAML tree
of a slit WCS, its astropy models).  Each allocation burst makes Python's cyclic
collector scan *every* tracked object of the process, including the millions that
numpy/scipy/astropy imports leave behind: ~0.1 s, every other group (measured on the
CEERS trio, ``SlitGroup`` median 0.35 s with the collector, 0.23 s without).  Those
containers are freed by reference counting, so :func:`paused_gc` switches the
collector off for the call and back on afterwards (only if it was on: nested calls
and callers who disabled it themselves are respected).
"""

from __future__ import annotations

import gc
from contextlib import contextmanager
from functools import cache, wraps

__all__ = ["paused_gc", "compute_call"]


@cache
def _controller():
    """The thread-pool controller (inspecting the loaded libraries once)."""
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


@contextmanager
def paused_gc():
    """Context manager: the cyclic garbage collector off inside, restored on exit."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def compute_call(func):
    """Decorator: run ``func`` on one BLAS thread with the cyclic collector paused.

    Parameters
    ----------
    func : callable
        The function to wrap.

    Returns
    -------
    callable
        The wrapped function.
    """

    @wraps(func)
    def wrapper(*args, **kwargs):
        with _controller().limit(limits=1, user_api="blas"), paused_gc():
            return func(*args, **kwargs)

    return wrapper
