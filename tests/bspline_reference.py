"""An independent clamped cubic B-spline basis for the tests (not a test module)."""

from __future__ import annotations

import numpy as np
from scipy.interpolate import BSpline


def reference_basis(x, df, lo, hi):
    """Independent clamped cubic B-spline basis (uniform knots), one BSpline per function."""
    t = np.concatenate([[lo] * 4, np.linspace(lo, hi, df - 2)[1:-1], [hi] * 4])
    out = np.empty((np.size(x), df))
    for k in range(df):
        c = np.zeros(df)
        c[k] = 1.0
        out[:, k] = BSpline(t, c, 3, extrapolate=False)(x)
    return out
