"""Tests of slitcombine.core.stats: masked and binned medians."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from slitcombine.core import stats


@pytest.mark.parametrize("k", [1, 2, 3, 5, 8, 9, 20])
def test_masked_median_matches_nanmedian(k):
    rng = np.random.default_rng(k)
    a = rng.normal(size=(6, 7, k))
    a[rng.random(a.shape) < 0.3] = np.nan
    with warnings.catch_warnings():  # all-NaN slices
        warnings.simplefilter("ignore", RuntimeWarning)
        ref = np.nanmedian(a, axis=-1)
    med, n = stats.masked_median(a, np.isfinite(a), axis=-1)
    assert np.array_equal(np.isnan(med), np.isnan(ref))
    assert med[np.isfinite(ref)] == pytest.approx(ref[np.isfinite(ref)])
    assert np.array_equal(n, np.isfinite(a).sum(axis=-1))
    # another axis, and the mask honoured even for finite values
    med0, _ = stats.masked_median(np.moveaxis(a, -1, 0), np.isfinite(np.moveaxis(a, -1, 0)), 0)
    assert np.array_equal(np.isnan(med0), np.isnan(ref))
    assert med0[np.isfinite(ref)] == pytest.approx(ref[np.isfinite(ref)])
    none, count = stats.masked_median(np.ones((2, k)), np.zeros((2, k), bool), axis=1)
    assert np.isnan(none).all() and not count.any()


def test_binned_median():
    x = np.array([0.1, 0.2, 0.3, 1.5, 1.6, 3.5, -1.0, 9.0])
    v = np.array([5.0, 1.0, 3.0, 2.0, 4.0, 7.0, 10.0, 20.0])
    edges = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    med = stats.binned_median(x, v, edges)
    # x outside the edges count in the first and last bins
    assert med[0] == pytest.approx(np.median([5.0, 1.0, 3.0, 10.0]))
    assert med[1] == pytest.approx(3.0)
    assert np.isnan(med[2])
    assert med[3] == pytest.approx(13.5)
