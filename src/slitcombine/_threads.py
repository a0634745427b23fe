"""Run the package's linear algebra on one BLAS thread.

slitcombine solves many small problems (penalised spline fits of a few hundred
coefficients, per-column profile fits).  Multi-threaded BLAS makes them 2-3x *slower*
as soon as another process uses a core (measured on the CEERS trio on 2 cores:
``combine`` 1.4 s with 2 OpenBLAS threads under load, 0.49 s with 1), and a batch runs
one group per core anyway.  The limit is set for the duration of a call and restored
afterwards (process-wide, as BLAS thread pools are).
"""

from __future__ import annotations

from functools import cache, wraps

__all__ = ["single_blas_thread"]


@cache
def _controller():
    """The thread-pool controller (inspecting the loaded libraries once)."""
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def single_blas_thread(func):
    """Decorator: run ``func`` with BLAS limited to one thread.

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
        with _controller().limit(limits=1, user_api="blas"):
            return func(*args, **kwargs)

    return wrapper
