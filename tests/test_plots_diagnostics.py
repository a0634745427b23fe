"""The diagnostic figures of slitcombine.plots (profile outliers, shutter offset, sky fit)
and the rule that no module of the figure package uses pyplot."""

from __future__ import annotations

import ast
import pkgutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from slitcombine import plots  # noqa: E402


def _texts(ax):
    return ax.get_xlabel(), ax.get_ylabel()


def test_no_pyplot_in_the_figure_package():
    folder = Path(plots.__file__).parent
    names = [m.name for m in pkgutil.iter_modules([str(folder)])] + ["__init__"]
    for name in names:
        tree = ast.parse((folder / f"{name}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                imported = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                imported = [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            assert not any("pyplot" in i for i in imported), (name, imported)


def test_profile_residual_figure():
    rng = np.random.default_rng(0)
    yslit = rng.normal(size=200)
    zp = rng.normal(size=200)
    zp[:5] = np.nan
    flags = np.abs(zp) > 1.5
    fig = plots.profile_residual_figure(yslit, zp, flags)
    assert isinstance(fig, Figure) and isinstance(fig.canvas, FigureCanvasAgg)
    (ax,) = fig.axes
    assert _texts(ax) == ("yslit (pixels)", "profile residual S/N")
    grey, red = ax.collections
    ok = np.isfinite(zp)
    assert len(grey.get_offsets()) == int((ok & ~flags).sum())
    assert len(red.get_offsets()) == int((ok & flags).sum())
    assert tuple(fig.get_size_inches()) == (6, 3)


def test_shutter_offset_figure():
    grid = np.linspace(-0.5, 0.5, 41)
    chi2 = 100 * (grid - 0.1) ** 2 + 3
    fig = plots.shutter_offset_figure(grid, chi2, 0.1)
    (ax,) = fig.axes
    assert _texts(ax) == ("shutter offset (pixels)", "chi2")
    curve, best = ax.get_lines()
    np.testing.assert_array_equal(curve.get_xdata(), grid)
    np.testing.assert_array_equal(curve.get_ydata(), chi2)
    assert list(best.get_xdata()) == [0.1, 0.1]
    assert tuple(fig.get_size_inches()) == (5, 3)


def test_sky_fit_figure():
    rng = np.random.default_rng(1)
    wave = np.linspace(1, 5, 400).reshape(2, 200)
    sci = rng.normal(size=(2, 200))
    sky2d = 0.5 * sci
    used = rng.random((2, 200)) > 0.5
    fig = plots.sky_fit_figure(wave, sci, sky2d, used, wave[0], np.sin(wave[0]), title="sky")
    top, bottom = fig.axes
    assert top.get_ylabel() == "uJy / pixel" and _texts(bottom) == ("wavelength (um)", "residual")
    assert [t.get_text() for t in top.get_legend().get_texts()] == ["sky pixels", "sky model"]
    np.testing.assert_allclose(
        bottom.collections[0].get_offsets()[:, 1], (sci - sky2d)[used], rtol=0, atol=0
    )
    assert fig.get_suptitle() == "sky"
    assert tuple(fig.get_size_inches()) == (8, 5)


# ------------------------------------------------------------------ the group methods
def test_estimate_sky_make_plot_returns_the_sky_figure(tmp_path, monkeypatch):
    """``estimate_sky(make_plot=True)`` returns :func:`slitcombine.plots.sky_fit_figure`."""
    from slitcombine import SlitGroup
    from slitcombine.io import tables
    from slitcombine.testing import simulate

    monkeypatch.delenv(tables.CALIB_DIR_ENV, raising=False)
    sim = simulate.simulate_observation(tmp_path, seed=11, n_crs=0)
    g = SlitGroup(sim.files, "sim", diffs=False)
    fig = g.estimate_sky(make_plot=True)
    assert isinstance(fig, Figure)
    top, bottom = fig.axes
    assert fig.get_suptitle() == "sim"
    assert bottom.get_xlabel() == "wavelength (um)"
    np.testing.assert_array_equal(top.get_lines()[0].get_ydata(), g.sky_data["sky_model"])


def test_fit_shutter_offset_make_plot_returns_the_chi2_figure(
    ceers_files, msaexp_calib_dir, monkeypatch
):
    """``fit_shutter_offset(make_plot=True)`` returns the chi2 curve around the offset."""
    from slitcombine import SlitGroup
    from slitcombine.io import tables

    monkeypatch.setenv(tables.CALIB_DIR_ENV, str(msaexp_calib_dir))
    g = SlitGroup(ceers_files, "shift", diffs=False, shutter_offset=0.6, estimate_sky_kwargs={})
    fig = g.fit_shutter_offset(prior=(0, 1.0), update=False, make_plot=True)
    (ax,) = fig.axes
    curve, best = ax.get_lines()
    assert len(curve.get_xdata()) == 41
    assert curve.get_xdata()[0] < best.get_xdata()[0] < curve.get_xdata()[-1]
    assert ax.get_xlabel() == "shutter offset (pixels)"
