"""The .spec.fits product: layout, units, WCS, provenance, readers, atomic writing, CLI."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from slitcombine.combine import combine
from slitcombine.errors import OutputError


@pytest.fixture(scope="module")
def product(tmp_path_factory):
    from slitcombine.simulate import simulate_observation

    sim = simulate_observation(
        tmp_path_factory.mktemp("sim"), grating="PRISM", snr=20, seed=5, n_crs=0
    )
    result = combine(sim.files, name="sim_prism", wave_sample=1.0)
    out = tmp_path_factory.mktemp("out")
    paths = result.write(out)
    return sim, result, paths


def test_layout_and_units(product):
    _, result, paths = product
    assert paths["spec"].name == "sim_prism.spec.fits"
    assert paths["summary"].exists() and paths["diff2d"].exists()
    with fits.open(paths["spec"]) as hdul:
        names = [h.name for h in hdul]
        assert names[:8] == [
            "PRIMARY",
            "SPEC1D",
            "SCI",
            "WHT",
            "PROFILE",
            "PROF1D",
            "BACKGROUND",
            "SLITS",
        ]
        assert {"REJECT", "WCS-TAB", "PROVENANCE"} <= set(names)
        assert hdul[0].header["ORIGIN"] == "slitcombine"
        assert hdul["SPEC1D"].header["GRATING"] == "PRISM"
        assert hdul["SCI"].header["BUNIT"] == "uJy"
        nw = len(result.spec)
        assert hdul["SCI"].data.shape == (27, nw)
        assert len(hdul["SLITS"].data) == 3
    spec = Table.read(paths["spec"], hdu="SPEC1D")
    # specutils reads the first spectral column, the first flux column, then "the next
    # column with the flux unit" as the error: the order matters.
    assert spec.colnames[:4] == ["wave", "flux", "err", "valid"]
    assert spec["wave"].unit == "um" and spec["flux"].unit == "uJy" and spec["err"].unit == "uJy"
    assert spec["sky"].unit == "uJy" and spec["var_sum"].unit == "uJy2"
    assert spec["valid"].dtype == bool
    # Bad bins are NaN and flagged, never a zero error.
    bad = ~np.asarray(spec["valid"])
    assert np.all(np.isnan(spec["flux"][bad])) and np.all(np.isnan(spec["err"][bad]))
    assert np.all(spec["err"][~bad] > 0)
    # path_corr multiplies flux and err (the pipeline PATHLOSS_PS throughput here).
    assert np.nanmin(spec["path_corr"]) >= 1.0


def test_wcs_of_the_2d_images(product):
    from astropy.wcs import WCS

    _, result, paths = product
    with fits.open(paths["spec"]) as hdul:
        w = WCS(hdul["SCI"].header, fobj=hdul)
        ix = np.arange(len(result.spec))
        wave, offset = w.pixel_to_world_values(ix, np.full(ix.size, 13.0))
        np.testing.assert_allclose(wave, result.spec["wave"].value, rtol=1e-10)
        assert np.allclose(offset, 0.0)
        _, off1 = w.pixel_to_world_values([0], [14.0])
        assert off1[0] == pytest.approx(hdul["SCI"].header["YPIXSCL"], rel=1e-6)


def test_provenance(product):
    sim, result, paths = product
    with fits.open(paths["spec"]) as hdul:
        h = hdul[0].header
        prov = Table(hdul["PROVENANCE"].data)
    from slitcombine import __version__

    assert h["SCVERS"] == __version__
    assert h["NINPUT"] == 3
    checks = {r["filename"]: r["checksum"] for r in result.slits}
    for i in range(3):
        assert checks[h[f"INFILE{i}"]] == h[f"INSUM{i}"]
        assert h[f"INSUM{i}"].startswith("sha256:")
    rows = {(r["section"], r["key"]): json.loads(r["value"]) for r in prov}
    assert rows[("parameters", "wave_sample")] == 1.0
    assert rows[("parameters", "ny")] == 13
    assert rows[("group_meta", "weight_type")] == "ivm"
    assert rows[("group_meta", "undo_pathloss")] is True
    assert "steps" in {k for (s, k) in rows if s == "group_meta"}


def test_specutils_reads_the_product(product):
    pytest.importorskip("specutils")
    from specutils import Spectrum

    from slitcombine.output import register_specutils_loader

    _, result, paths = product
    register_specutils_loader()
    assert register_specutils_loader() is False  # idempotent
    spec = Spectrum.read(paths["spec"])
    assert spec.spectral_axis.unit == "um" and spec.flux.unit == "uJy"
    np.testing.assert_array_equal(spec.mask, ~np.asarray(result.spec["valid"]))
    ok = ~spec.mask
    np.testing.assert_allclose(spec.uncertainty.array[ok], result.spec["err"].value[ok])
    spec2 = Spectrum.read(paths["spec"], format="slitcombine")
    np.testing.assert_allclose(spec2.flux.value[ok], spec.flux.value[ok])


def test_unwritable_directory_writes_nothing(product, tmp_path):
    _, result, _ = product
    locked = tmp_path / "locked"
    locked.mkdir()
    os.chmod(locked, 0o500)
    try:
        if os.access(locked, os.W_OK):  # running as root: permissions are not enforced
            blocker = tmp_path / "file"
            blocker.write_text("not a folder")
            with pytest.raises(OutputError):
                result.write(blocker / "sub")
            assert blocker.read_text() == "not a folder"
        else:
            with pytest.raises(OutputError, match="not writable"):
                result.write(locked)
            assert list(locked.iterdir()) == []
    finally:
        os.chmod(locked, 0o700)


def test_atomic_write_leaves_no_temporary_files(product, tmp_path):
    _, result, _ = product
    paths = result.write(tmp_path, figures=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sim_prism.spec.fits"]
    with pytest.raises(OutputError, match="exists"):
        result.write(tmp_path, figures=False, overwrite=False)
    assert paths["spec"].stat().st_size > 0


def test_cli_extract(product, tmp_path, capsys):
    from slitcombine.cli import main

    sim, _, _ = product
    out = tmp_path / "cli"
    status = main(["extract", *map(str, sim.files), "--name", "cli", "--output-dir", str(out)])
    assert status == 0
    assert (out / "cli.spec.fits").exists() and (out / "cli.fnu.png").exists()
    assert "valid bins" in capsys.readouterr().out
    from slitcombine.config import Config

    head = fits.getheader(out / "cli.spec.fits")
    assert head["CFGHASH"] == Config.default().hash  # the effective configuration
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    status = main(["extract", *map(str, sim.files), "--output-dir", str(blocker)])
    assert status == 2
    assert "error:" in capsys.readouterr().err


def test_figures_use_no_pyplot(product):
    import inspect

    from slitcombine import plots

    _, result, _ = product
    assert "import matplotlib.pyplot" not in inspect.getsource(plots)
    assert "from matplotlib import pyplot" not in inspect.getsource(plots)
    fig = result.plot()
    assert type(fig).__name__ == "Figure"
    assert len(fig.axes) == 3
    # the 2D image is drawn on the output wavelength grid, the profile on its rows
    ax1, ax2, axp = fig.axes
    image = ax2.images[0]
    wave = result.drizzled["wave"]
    assert ax1.get_xlim() == ax2.get_xlim()
    assert ax2.get_xlim()[0] < wave[0] < wave[-1] < ax2.get_xlim()[1]
    assert image.get_array().shape == result.drizzled["sci"].shape
    assert axp.get_ylim() == ax2.get_ylim()


def test_nod_difference_figure(product):
    """One column per image kind; blocks = the positions' differences over their scale."""
    import matplotlib

    _, result, _ = product
    g = result.group
    ny, nx = g.sh
    fig = g.plot_2d_differences(clip_sigma=3, figsize=(5, 1.5))
    assert [ax.get_title() for ax in fig.axes] == ["difference", "model", "residual"]
    npos = g.unp.N
    rgba = [np.asarray(ax.artists[0].get_array()) for ax in fig.axes]  # PixelImage
    assert rgba[0].shape == (npos * ny, nx, 4) and rgba[0].dtype == np.uint8
    cmap = matplotlib.colormaps["RdBu_r"]
    red_minus_blue = []
    for k, pos in enumerate(g.unp.values):
        ipos, _, diff, _, vdiff, _ = g.make_diff_image(pos)
        err = np.sqrt(vdiff)
        vlim = 3 * np.median(err[np.isfinite(err) & (err > 0)])
        row0 = (npos - 1 - k) * ny  # the first position is the top block
        block = rgba[0][row0 : row0 + ny]
        scaled = np.clip(diff.reshape(ny, nx) / vlim, -1, 1)
        expected = cmap((scaled + 1) / 2, bytes=True)
        ok = np.isfinite(scaled)
        assert np.abs(block[ok].astype(int) - expected[ok]).max() <= 1
        assert not block[~ok][:, 3].any()  # masked pixels are transparent
        # the source is positive on the trace of the positive exposures: red there,
        # and the model removes it from the residual
        rows = (g.ypix - g.yslit).reshape(g.N, ny, nx)[np.argmax(ipos), 0]
        on = np.clip(np.round(rows).astype(int), 0, ny - 1)
        cols = np.arange(nx)
        rb = [
            np.nanmean(img[row0 + on, cols, 0].astype(float) - img[row0 + on, cols, 2])
            for img in (rgba[0], rgba[2])
        ]
        red_minus_blue.append(rb)
    red_minus_blue = np.array(red_minus_blue)
    assert np.all(red_minus_blue[:, 0] > 40)
    assert np.all(np.abs(red_minus_blue[:, 1]) < 0.25 * red_minus_blue[:, 0])
    ylabels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert len(ylabels) == npos and all("uJy" in t for t in ylabels)
    # drawn: the blitted image shows the stacked colours (first position on top)
    fig.canvas.draw()
    ax = fig.axes[0]
    canvas = np.asarray(fig.canvas.buffer_rgba())
    x0, y0, x1, y1 = ax.bbox.extents
    h = canvas.shape[0]
    centre = canvas[int(h - 0.5 * (y0 + y1)), int(0.5 * (x0 + x1))]
    j = int(0.5 * rgba[0].shape[0])
    i = int(0.5 * rgba[0].shape[1])
    assert np.abs(centre[:3].astype(int) - rgba[0][j, i, :3]).max() <= 2 or rgba[0][j, i, 3] == 0
    # user imshow keywords: a regular AxesImage in uJy per pixel
    fig = g.plot_2d_differences(kws={"vmin": -0.1, "vmax": 0.1, "interpolation": "bilinear"})
    assert fig.axes[0].images[0].get_array().shape == (npos * ny, nx, 4)
    assert "uJy" not in fig.axes[0].get_yticklabels()[0].get_text()


def test_noise_scale_and_rescaled_errors(product):
    """The simulator's variances are right: NOISESCL ~ 1; rescale_variance multiplies
    the errors by exactly the measured scale (>= 1) and leaves the fluxes alone."""
    sim, result, paths = product
    head = fits.getheader(paths["spec"])
    assert head["NOISESCL"] == pytest.approx(1.0, abs=0.05)
    assert head["ERRSCALE"] == 1.0
    g = result.group
    g.var_rnoise = g.var_rnoise / 4.0  # pretend the read noise was underestimated
    g.var = g.var_rnoise + g.var_poisson + g.var_sky
    from slitcombine.combine import combine_group

    low = combine_group(g, wave_sample=1.0, fit_traces=False, profile_sigma=0.3)
    fixed = combine_group(
        g, wave_sample=1.0, fit_traces=False, profile_sigma=0.3, rescale_variance=True
    )
    s = fixed.params["error_scale"]
    assert s == pytest.approx(g.meta["noise_scale"]["scale"])  # measured before scaling
    assert 1.1 < s < 2.0
    ok = np.asarray(low.spec["valid"]) & np.asarray(fixed.spec["valid"])
    ratio = (fixed.spec["err"] / low.spec["err"]).value[ok]
    assert np.allclose(ratio, s, rtol=1e-6)
    assert np.allclose(fixed.spec["flux"].value[ok], low.spec["flux"].value[ok], rtol=1e-6)
    assert fixed.to_hdulist()[0].header["ERRSCALE"] == pytest.approx(s)
