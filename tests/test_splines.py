"""Tests of slitcombine.core.splines: bases, penalties, (banded) penalised least squares."""

from __future__ import annotations

import numpy as np
import pytest

from bspline_reference import reference_basis
from slitcombine.core import splines
from slitcombine.errors import FitError


def test_bspline_basis_is_partition_of_unity_and_matches_scipy():
    x = np.linspace(-0.55, 0.55, 37)
    b = splines.bspline_basis(x, 11, -0.55, 0.55).toarray()
    assert b.sum(axis=1) == pytest.approx(1.0, abs=1e-12)
    ref = reference_basis(x, 11, -0.55, 0.55)
    ref[-1] = b[-1]  # scipy's extrapolate=False gives NaN exactly at the right end
    assert b == pytest.approx(ref, abs=1e-12)
    out = splines.bspline_basis([-1.0, np.nan, 2.0], 11, -0.55, 0.55, outside="nan").toarray()
    assert np.isnan(out.sum(axis=1)).all()
    assert splines.bspline_basis([2.0], 11, -0.55, 0.55, outside="clip").toarray()[0, -1] == 1.0


def test_solve_penalized_recovers_a_spline_and_banded_matches_dense():
    """Noise-free data of a spline: the penalised fit (tiny penalty) gives it back."""
    x = np.linspace(0.0, 10.0, 400)
    a = splines.bspline_basis(x, 14, 0.0, 10.0)
    truth = np.sin(np.arange(14) / 2.0)
    y = a @ truth
    w = np.ones(x.size)
    pen = 1e-10 * splines.difference_penalty(14)
    coeffs, covar = splines.solve_penalized(a, w, y, pen)  # banded path (m > 8)
    assert coeffs == pytest.approx(truth, abs=1e-6)
    dense, covar_dense = splines.solve_penalized(a.toarray(), w, y, pen)
    assert dense == pytest.approx(coeffs, abs=1e-9)
    assert covar == pytest.approx(covar_dense, rel=1e-6, abs=1e-12)
    assert splines.scaled_solve(a, w, y, 1e-12 * splines.difference_penalty(14)) == (
        pytest.approx(truth, abs=1e-6)
    )
    with pytest.raises(FitError, match="no weight"):
        splines.solve_penalized(a, np.zeros(x.size), y, pen)


def test_difference_penalties_band_and_dense_agree():
    p = splines.difference_penalty(7)
    assert p.shape == (7, 7) and np.allclose(p, p.T)
    assert p @ np.arange(7.0) == pytest.approx(0.0, abs=1e-12)  # a line is not penalised
    band = splines.difference_band(7)
    for d in range(3):
        assert band[3 - d, d:] == pytest.approx(np.diagonal(p, d))
    assert splines.difference_penalty(2) == pytest.approx(np.zeros((2, 2)))


def test_band_and_tensor_solvers_match_the_dense_solution():
    rng = np.random.default_rng(3)
    x = np.sort(rng.uniform(0, 1, 300))
    vals, first = splines.cubic_rows(x, 12, 0.0, 1.0)
    dense = splines.bspline_basis(x, 12, 0.0, 1.0).toarray()
    c = rng.normal(size=12)
    assert splines.band_eval(vals, first, c) == pytest.approx(dense @ c)
    d = rng.uniform(0.5, 2.0, x.size)
    y = dense @ c + rng.normal(0, 0.01, x.size)
    band = splines.BandSolver(vals, first, 12, 1e-4 * splines.difference_band(12))
    got = band.solve(d, d * y)
    ata = dense.T @ (dense * d[:, None])
    normal = ata + float(np.mean(np.diag(ata))) * 1e-4 * splines.difference_penalty(12)
    expect = np.linalg.solve(normal, dense.T @ (d * y))
    assert got == pytest.approx(expect, rel=1e-6, abs=1e-9)
    assert band(got) == pytest.approx(dense @ got)
    cols = first[:, None] + np.arange(4)[None, :]
    tensor = splines.TensorSolver(vals, cols, 12)
    pen = 1e-3 * splines.difference_penalty(12)
    coeffs, _ = tensor.solve(d, d * y, pen, factor=True)
    assert coeffs == pytest.approx(np.linalg.solve(ata + pen, dense.T @ (d * y)), rel=1e-6)
    assert tensor.dense_rows(np.arange(5)) == pytest.approx(dense[:5])
    assert splines.mean_normal_diag(dense, d) == pytest.approx(np.mean(np.diag(ata)))


def test_column_coordinate_maps_and_inverts():
    wtr = np.full(50, np.nan)
    wtr[5:45] = np.linspace(1.0, 3.0, 40)  # increasing where defined
    coord = splines.ColumnCoordinate(wtr)
    assert coord(np.array([1.0, 3.0])) == pytest.approx([5.0, 44.0])
    assert coord.inverse(coord(np.array([1.7, 2.2]))) == pytest.approx([1.7, 2.2])
    # linear beyond the ends, NaN for NaN
    step = 39 / 2.0
    assert coord(np.array([0.9, 3.1, np.nan]))[:2] == pytest.approx(
        [5 - 0.1 * step, 44 + 0.1 * step]
    )
    assert np.isnan(coord(np.array([np.nan])))[0]
    with pytest.raises(FitError, match="fewer than two"):
        splines.ColumnCoordinate(np.full(10, np.nan))
