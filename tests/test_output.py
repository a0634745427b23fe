"""The .spec.fits product: layout, units, WCS, provenance, readers, atomic writing, CLI."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from slitcombine.errors import OutputError
from slitcombine.pipeline.combine import combine


@pytest.fixture(scope="module")
def product(tmp_path_factory):
    from slitcombine.testing.simulate import simulate_observation

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


def test_single_row_grid_keeps_its_step(product, tmp_path):
    """ny=0: one row; its header still says the row height that was asked for."""
    sim, _, _ = product
    result = combine(sim.files, ny=0, step=0.5, fit_traces=False)
    with fits.open(result.write(tmp_path, figures=False)["spec"]) as hdul:
        h = hdul["SCI"].header
        assert h["NAXIS2"] == 1 and h["YSTEP"] == 0.5
        assert h["CDELT2"] == pytest.approx(0.5 * h["YPIXSCL"])


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

    from slitcombine.io.output import register_specutils_loader

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
    from slitcombine.pipeline.config import Config

    head = fits.getheader(out / "cli.spec.fits")
    assert head["CFGHASH"] == Config.default().hash  # the effective configuration
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    status = main(["extract", *map(str, sim.files), "--output-dir", str(blocker)])
    assert status == 2
    assert "error:" in capsys.readouterr().err


def _texts(container, gid=None):
    """Texts of the artists of ``container`` (a figure or axes) with this ``gid``."""
    from matplotlib.text import Text

    return [
        a.get_text()
        for a in container.get_children()
        if isinstance(a, Text) and a.get_text() and (gid is None or a.get_gid() == gid)
    ]


def test_figures_use_no_pyplot(product):
    import inspect

    from slitcombine import plots

    _, result, _ = product
    assert "import matplotlib.pyplot" not in inspect.getsource(plots)
    assert "from matplotlib import pyplot" not in inspect.getsource(plots)
    fig = result.plot()
    assert type(fig).__name__ == "Figure"
    # 1D, 2D, profile; the colour bar and the inset are panels without an Axes
    ax1, ax2, axp = fig.axes
    assert "uJy/px" in _texts(fig, "colourbar")
    assert _texts(ax1, "legend")[:3] == ["optimal", "boxcar", "\u00b11 sigma"]
    # the 2D image is drawn on the output wavelength grid, the profile on its rows
    (image,) = ax2.artists
    wave = result.drizzled["wave"]
    assert ax1.get_xlim() == ax2.get_xlim()
    assert ax2.get_xlim()[0] < wave[0] < wave[-1] < ax2.get_xlim()[1]
    assert image.get_array().shape[:2] == result.drizzled["sci"].shape
    assert image.get_extent()[:2] == ax2.get_xlim()
    assert axp.get_ylim() == ax2.get_ylim()


def test_nod_difference_figure(product):
    """One column per image kind; blocks = the positions' differences over their scale."""
    import matplotlib

    _, result, _ = product
    g = result.group
    ny, nx = g.sh
    fig = g.plot_2d_differences(clip_sigma=3, figsize=(5, 1.5))
    assert [ax.get_title() for ax in fig.axes] == ["difference", "model", "residual"]
    bar = _texts(fig, "colourbar")  # the colour bar: -3 .. +3 sigma
    assert "data / error (sigma)" in bar and {"\u22123", "0", "+3"} <= set(bar)
    assert all(ax.get_xlabel() == "x (pixel)" for ax in fig.axes)
    assert all(len(ax.texts) >= 3 for ax in fig.axes)  # x tick labels on every column
    assert any("reference position" in t.get_text() for t in fig.texts)
    npos = g.unp.N
    rgba = [np.asarray(ax.artists[0].get_array()) for ax in fig.axes[:3]]  # PixelImage
    assert rgba[0].shape == (npos * ny, nx, 4) and rgba[0].dtype == np.uint8
    cmap = matplotlib.colormaps["RdBu_r"]
    red_minus_blue = []
    for k, pos in enumerate(g.unp.values):
        # the figure shows the data the source is measured on (the detector image of a
        # compact source)
        ipos, _, diff, _, vdiff, _ = g._difference_image(pos)
        err = np.sqrt(vdiff)
        row0 = (npos - 1 - k) * ny  # the first position is the top block
        block = rgba[0][row0 : row0 + ny]
        # each pixel in units of 3 times its own error (no saturation at a noisy end)
        with np.errstate(invalid="ignore", divide="ignore"):
            scaled = np.clip((diff / (3 * err)).reshape(ny, nx), -1, 1)
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
    ylabels = _texts(fig.axes[0], "position")
    assert len(ylabels) == npos and all("uJy" in t for t in ylabels)
    assert sum(t.endswith("*") for t in (s.split("\n")[0] for s in ylabels)) == 1
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
    assert not any("uJy" in t for t in _texts(fig.axes[0], "position"))
    assert "uJy / pixel (kws)" in _texts(fig, "colourbar")


def test_noise_scale_and_rescaled_errors(product):
    """The simulator's variances are right: NOISESCL ~ 1 and the errors stay as
    propagated (ERRSCALE ~1); with variances 4x too small the measured scale is applied
    by default (each bin's errors multiplied by its ``err_scale``), the fluxes unchanged;
    ``rescale_variance=False`` keeps the pipeline's variances."""
    sim, result, paths = product
    head = fits.getheader(paths["spec"])
    assert head["NOISESCL"] == pytest.approx(1.0, abs=0.05)
    assert 1.0 <= head["ERRSCALE"] < 1.05
    spec = Table.read(paths["spec"], hdu="SPEC1D")
    assert np.all(np.asarray(spec["err_scale"]) >= 1.0)
    g = result.group
    g.var_rnoise = g.var_rnoise / 4.0  # pretend the read noise was underestimated
    g.var = g.var_rnoise + g.var_poisson + g.var_sky
    from slitcombine.pipeline.combine import combine_group

    low = combine_group(
        g, wave_sample=1.0, fit_traces=False, profile_sigma=0.3, rescale_variance=False
    )
    assert low.params["error_scale"] == 1.0 and np.all(low.spec["err_scale"] == 1.0)
    measured = g.meta["noise_scale"]["scale"]
    assert 1.1 < measured < 2.0
    fixed = combine_group(g, wave_sample=1.0, fit_traces=False, profile_sigma=0.3)
    s = fixed.params["error_scale"]
    assert s == pytest.approx(measured, rel=0.1)  # the median factor of the rows
    ok = np.asarray(low.spec["valid"]) & np.asarray(fixed.spec["valid"])
    ratio = (fixed.spec["err"] / low.spec["err"]).value[ok]
    np.testing.assert_allclose(ratio, np.asarray(fixed.spec["err_scale"])[ok], rtol=2e-3)
    np.testing.assert_allclose(fixed.spec["flux"].value[ok], low.spec["flux"].value[ok], rtol=1e-3)
    assert fixed.to_hdulist()[0].header["ERRSCALE"] == pytest.approx(s)


# --- binary tables written from header cards and record bytes ----------------------

#: Header cards that change between two writes of the same product.
_VOLATILE = {"DATE", "CHECKSUM", "DATASUM"}


def _to_bytes(hdul):
    import io

    buffer = io.BytesIO()
    hdul.writeto(buffer, output_verify="exception")
    return buffer.getvalue()


def _assert_same_hdus(new, ref):
    """Every HDU of ``new`` equals the one of ``ref``: cards, column definitions, data."""
    # the files are the same, byte for byte (DATE comes from the same provenance); before
    # the data are touched: astropy moves an empty TUNITn card of a table read from a
    # file to the end of the header once its data are loaded
    assert _to_bytes(new) == _to_bytes(ref)
    assert [(h.name, type(h)) for h in new] == [(h.name, type(h)) for h in ref]
    for a, b in zip(new, ref, strict=True):
        cards_a = [tuple(c) for c in a.header.cards if c.keyword not in _VOLATILE]
        cards_b = [tuple(c) for c in b.header.cards if c.keyword not in _VOLATILE]
        assert cards_a == cards_b, a.name
        if isinstance(a, fits.BinTableHDU):
            # what a FITS reader sees: names, TFORM, TUNIT, TDIM (an empty TUNIT is
            # None once read from bytes, '' in the in-memory reference)
            for ca, cb in zip(a.columns, b.columns, strict=True):
                got = (ca.name, ca.format, ca.unit or None, ca.dim)
                assert got == (cb.name, cb.format, cb.unit or None, cb.dim)
            for key in b.columns.names:
                va, vb = a.data[key], b.data[key]
                # (byte order aside: big-endian as read from a file, native in the reference)
                assert va.dtype.str[1:] == vb.dtype.str[1:] and va.shape == vb.shape, key
                np.testing.assert_array_equal(va, vb, err_msg=f"{a.name}.{key}")  # NaN == NaN
        elif b.data is not None:
            np.testing.assert_array_equal(a.data, b.data, err_msg=a.name)


def _check_against_astropy_columns(result, tmp_path):
    from slitcombine.io.output import build_hdulist

    # written first: writing records the figure options in the provenance
    path = result.write(tmp_path, figures=False)["spec"]
    new = build_hdulist(result)
    ref = build_hdulist(result, columns=True)
    _assert_same_hdus(new, ref)
    # the written product reads back the same through the registered readers
    ref.writeto(tmp_path / "ref.fits")
    with fits.open(path) as fa, fits.open(tmp_path / "ref.fits") as fb:
        for ha, hb in zip(fa[1:], fb[1:], strict=True):
            if isinstance(hb, fits.BinTableHDU):
                ta, tb = Table.read(ha), Table.read(hb)
                assert ta.colnames == tb.colnames
                for key in tb.colnames:
                    assert ta[key].unit == tb[key].unit and ta[key].dtype == tb[key].dtype
                    np.testing.assert_array_equal(ta[key], tb[key])
    spec = Table.read(path, hdu="SPEC1D")
    assert spec["valid"].dtype == bool
    assert spec["wave"].unit == "um"
    return new


def test_tables_equal_the_astropy_column_path_sim(product, tmp_path):
    _, result, _ = product
    new = _check_against_astropy_columns(result, tmp_path)
    assert new["WCS-TAB"].columns["WAVELENGTH"].dim == f"(1,{len(result.spec)})"
    assert new["SPEC1D"].columns["valid"].format == "L"


def test_tables_equal_the_astropy_column_path_ceers(ceers_files, tmp_path):
    result = combine(ceers_files, name="ceers")
    new = _check_against_astropy_columns(result, tmp_path)
    assert len(new["SLITS"].columns) > 40  # the many-column table of the measurement
    assert new["SPEC1D"].data["valid"].dtype == bool  # FITS logical read back as bool


def test_table_hdu_matches_table_to_hdu_for_every_column_kind():
    from astropy import units as u
    from astropy.table import QTable

    from slitcombine.io.output import _columns_table_hdu, table_hdu

    n = 4
    tab = QTable()
    tab["wave"] = np.linspace(1, 2, n) * u.um
    tab["flux"] = np.array([1.0, np.nan, -np.inf, 3.5]) * u.uJy
    tab["var"] = np.ones(n) * u.uJy**2
    tab["ratio"] = np.ones(n) * u.dimensionless_unscaled
    tab["f4"] = np.arange(n, dtype=np.float32)
    tab["ok"] = np.array([True, False, True, False])
    tab["u1"] = np.arange(n, dtype=np.uint8)
    tab["i2"] = np.arange(n, dtype=np.int16)
    tab["i4"] = np.arange(n, dtype=np.int32)
    tab["i8"] = np.arange(n, dtype=np.int64) - 2**40
    tab["c16"] = np.arange(n) * (1 + 2j)
    tab["name"] = ["a", "bb", "", "d'e"]
    tab["one"] = ["x"] * n
    tab["raw"] = np.array([b"ab", b"c", b"", b"dd"])
    tab["vec"] = np.arange(3 * n, dtype=float).reshape(n, 3)
    tab["cube"] = np.arange(6 * n, dtype=np.int32).reshape(n, 2, 3)
    tab["col1"] = np.arange(n, dtype=float).reshape(n, 1)
    tab["strs"] = np.array([["ab", "c"]] * n)
    tab["obj"] = np.array([None, 1, "s", 2.5], dtype=object)
    comments = {"wave": "bin centre", "ok": "it's fine"}
    cards = [("NVALID", 3, "valid pixels"), ("COMMENT", "a comment", "")]
    new = table_hdu(tab, "T", comments=comments, cards=cards)
    ref = _columns_table_hdu(tab, "T", comments=comments, cards=cards)
    _assert_same_hdus(
        fits.HDUList([fits.PrimaryHDU(), new]), fits.HDUList([fits.PrimaryHDU(), ref])
    )
    assert new.header["TUNIT3"] == "uJy2" and new.header["TDIM16"] == "(3,2)"
    assert new.header["TDIM18"] == "(2,2)" and new.header["TFORM13"] == "1A"
    # empty table: zero rows
    _assert_same_hdus(
        fits.HDUList([fits.PrimaryHDU(), table_hdu(tab[:0], "E")]),
        fits.HDUList([fits.PrimaryHDU(), _columns_table_hdu(tab[:0], "E")]),
    )


def test_table_hdu_falls_back_to_astropy_columns():
    from astropy.table import MaskedColumn

    from slitcombine.io.output import _columns_table_hdu, table_hdu

    tab = Table()
    tab["m"] = MaskedColumn([1, 2, 3], mask=[False, True, False])  # TNULL
    tab["i1"] = np.array([-1, 0, 1], np.int8)  # scaled (TZERO)
    tab["u4"] = np.array([1, 2, 3], np.uint32)
    tab.meta["ORIGIN"] = "test"
    new = table_hdu(tab, "F")
    _assert_same_hdus(
        fits.HDUList([fits.PrimaryHDU(), new]),
        fits.HDUList([fits.PrimaryHDU(), _columns_table_hdu(tab, "F")]),
    )
    assert new.header["ORIGIN"] == "test" and "TNULL1" in new.header


def test_binary_table_hdu_is_an_ordinary_hdu():
    """Written any number of times, its data readable, writable and written when changed."""
    import io

    from slitcombine.io.output import binary_table_hdu

    rec = np.zeros(3, dtype=[("x", "<f8"), ("s", "U3"), ("b", "?")])
    rec["x"] = [1.0, np.nan, 3.0]
    rec["s"] = ["a", "bc", "def"]
    rec["b"] = [True, False, True]
    hdu = binary_table_hdu(rec, "R", units={"x": "um"}, comments={"b": "flag"})
    first = _to_bytes(fits.HDUList([fits.PrimaryHDU(), hdu]))
    assert _to_bytes(fits.HDUList([fits.PrimaryHDU(), hdu])) == first
    assert list(hdu.data["s"]) == ["a", "bc", "def"] and list(hdu.data["b"]) == [True, False, True]
    assert _to_bytes(fits.HDUList([fits.PrimaryHDU(), hdu])) == first
    hdu.data["x"][0] = 7.0
    hdu.data["s"][1] = "zz"
    written = io.BytesIO(_to_bytes(fits.HDUList([fits.PrimaryHDU(), hdu])))
    back = Table.read(written, hdu=1, mask_invalid=False)
    assert back["x"][0] == 7.0 and back["s"][1] == "zz" and np.isnan(back["x"][1])
    assert back["x"].unit == "um" and back["b"].dtype == bool


def test_binary_table_hdu_errors():
    from slitcombine.io.output import binary_table_hdu

    with pytest.raises(OutputError, match="not ASCII"):
        binary_table_hdu({"s": np.array(["é"])}, "X")
    with pytest.raises(OutputError, match="cannot be written"):
        binary_table_hdu({"i": np.array([1], np.int8)}, "X")
    with pytest.raises(OutputError, match="cannot be written"):
        binary_table_hdu({"a": np.zeros(2), "b": np.zeros(3)}, "X")
    with pytest.raises(OutputError, match="repeated"):
        binary_table_hdu({"a": np.zeros(2)}, "X", cards=[("TFORM1", "E", "")])


def test_opaque_figures_are_saved_as_rgb(product, tmp_path):
    """Same pixels and metadata as savefig's RGBA PNG, without the constant alpha."""
    from matplotlib.figure import Figure
    from PIL import Image

    from slitcombine.plots import DEFAULT_DPI, save_figure

    _, result, _ = product
    for fig in (result.plot(), result.group.plot_2d_differences()):
        fig.savefig(tmp_path / "rgba.png", format="png", dpi=DEFAULT_DPI)
        with (
            Image.open(save_figure(fig, tmp_path / "rgb.png")) as im,
            Image.open(tmp_path / "rgba.png") as ref,
        ):
            assert im.mode == "RGB" and ref.mode == "RGBA"
            assert im.info["Software"] == ref.info["Software"] and im.info["dpi"] == ref.info["dpi"]
            pixels, expected = np.asarray(im), np.asarray(ref)
        assert np.all(expected[..., 3] == 255)
        np.testing.assert_array_equal(pixels, expected[..., :3])
    # a figure with a transparent background keeps its alpha channel
    fig = Figure(figsize=(1, 1), dpi=50, facecolor="none")
    fig.add_axes((0.1, 0.1, 0.8, 0.8)).plot([0, 1])
    with Image.open(save_figure(fig, tmp_path / "clear.png", dpi=50)) as im:
        assert im.mode == "RGBA" and np.asarray(im)[..., 3].min() == 0


def test_raw_sink_keeps_one_write_without_copying():
    """savefig's raw bytes are kept as a view (no 3 MB copy); several writes still join."""
    from slitcombine.plots import _RawSink

    buffer = bytearray(b"abcd" * 4)
    sink = _RawSink()
    assert sink.write(buffer) == 16
    view = sink.data()
    buffer[0:1] = b"z"  # a view sees the change, a copy would not
    assert bytes(view[:4]) == b"zbcd"
    sink = _RawSink()
    sink.write(b"ab")
    sink.write(memoryview(np.arange(2, dtype="<u2")))
    assert bytes(sink.data()) == b"ab\x00\x00\x01\x00"


# ------------------------------------------------------------------ figures (issue 19)
def test_write_chooses_the_figures_and_their_resolution(product, tmp_path):
    """figures='all'/'summary'/'none' (True/False) write exactly those files; figure_dpi
    sets the PNG size; what was drawn is in the provenance; bad values fail first."""
    from PIL import Image

    from slitcombine.errors import ConfigurationError
    from slitcombine.plots import DEFAULT_DPI

    _, result, _ = product
    expected = {
        "all": ["x.d2d.png", "x.fnu.png", "x.spec.fits"],
        True: ["x.d2d.png", "x.fnu.png", "x.spec.fits"],
        "summary": ["x.fnu.png", "x.spec.fits"],
        "none": ["x.spec.fits"],
        False: ["x.spec.fits"],
    }
    name = result.name
    try:
        result.name = "x"
        for choice, files in expected.items():
            folder = tmp_path / str(choice)
            paths = result.write(folder, figures=choice)
            assert sorted(p.name for p in folder.iterdir()) == files
            assert sorted(p.name for p in paths.values()) == files
        sizes = {}
        for dpi in (40, None):
            paths = result.write(tmp_path / f"dpi{dpi}", figures="all", figure_dpi=dpi)
            with Image.open(paths["summary"]) as im:
                sizes[dpi] = im.size
                assert im.info["dpi"] == pytest.approx((dpi or DEFAULT_DPI,) * 2, abs=0.01)
            with fits.open(paths["spec"]) as hdul:
                prov = Table(hdul["PROVENANCE"].data)
            rows = {r["key"]: json.loads(r["value"]) for r in prov if r["section"] == "figures"}
            assert rows == {"figures": "all", "figure_dpi": dpi or DEFAULT_DPI}
        assert sizes[40] == (9 * 40, round(5.5 * 40))
        assert sizes[None] == (9 * DEFAULT_DPI, round(5.5 * DEFAULT_DPI))
        for bad in ({"figures": "some"}, {"figures": 2}, {"figure_dpi": 5}, {"figure_dpi": "x"}):
            with pytest.raises(ConfigurationError, match="figure"):
                result.write(tmp_path / "bad", **bad)
        assert not (tmp_path / "bad").exists()
    finally:
        result.name = name


def _spectrum(wave, flux, err):
    return Table(
        {
            "wave": wave,
            "flux": flux,
            "err": err,
            "valid": np.isfinite(flux),
            "flux_boxcar": flux * 1.01,
        }
    )


def test_summary_figure_carries_its_elements(product):
    """Colour bar (ramp, ticks, unit), legend with line samples, the +-1 sigma band,
    x labels, the truth overlay; the full-range inset only when lines rise far above."""
    import matplotlib
    from matplotlib.collections import PolyCollection
    from matplotlib.lines import Line2D
    from matplotlib.patches import Rectangle

    from slitcombine._pixel_image import PixelImage
    from slitcombine.plots import summary_figure

    _, result, _ = product
    spec = result.spec
    wave = np.asarray(spec["wave"], float)
    truth = (wave, np.nan_to_num(np.asarray(spec["flux"], float)))
    fig = result.plot(truth=truth)
    ax1, ax2, axp = fig.axes
    # the colour bar: a ramp of the colour map, its unit and tick labels, no Axes
    bar = [a for a in fig.get_children() if a.get_gid() == "colourbar"]
    (ramp,) = [a for a in bar if isinstance(a, PixelImage)]
    cmap = matplotlib.colormaps["RdBu_r"]
    np.testing.assert_array_equal(ramp.get_array()[[0, -1], 0], cmap([0.0, 1.0], bytes=True))
    labels = _texts(fig, "colourbar")
    assert labels[-1] == "uJy/px" and "0" in labels and len(labels) >= 4
    # the legend: a sample per entry (lines, the band) and its label
    assert _texts(ax1, "legend") == ["optimal", "boxcar", "\u00b11 sigma", "truth"]
    samples = [a for a in ax1.get_children() if a.get_gid() == "legend" and a not in ax1.texts]
    assert [type(a) for a in samples] == [Line2D, Line2D, Rectangle, Line2D]
    colours = [
        matplotlib.colors.to_hex(a.get_facecolor() if isinstance(a, Rectangle) else a.get_color())
        for a in samples
    ]
    assert colours == ["#000000", "#ff7f0e", "#1f77b4", "#d62728"]
    # the +-1 sigma band on the 1D panel: flux - err .. flux + err over the valid bins
    (band,) = [c for c in ax1.collections if c.get_gid() is None]
    assert isinstance(band, PolyCollection) and band.get_alpha() == pytest.approx(0.3)
    heights = np.concatenate([path.vertices[:, 1] for path in band.get_paths()])
    valid = np.asarray(spec["valid"])
    flux, err = np.asarray(spec["flux"])[valid], np.asarray(spec["err"])[valid]
    assert heights.max() == pytest.approx(np.max(flux + err))
    assert heights.min() == pytest.approx(np.min(flux - err))
    # the truth: a red line with its data
    red = [a for a in ax1.lines if a.get_color() == "tab:red" and a.get_gid() is None]
    assert len(red) == 1 and np.array_equal(red[0].get_xdata(), truth[0])
    # axis labels; ticks and their labels are plain artists
    assert ax1.get_xlabel() == "wavelength (um)" and ax1.get_ylabel() == "f_nu (uJy)"
    assert ax2.get_ylabel() == "y (pixel)" and axp.get_xlabel() == "profile"
    assert {"data", "model"} <= set(_texts(axp))
    # a continuum alone: the whole range on the main scale, no inset
    w = np.linspace(1.0, 5.0, 300)
    f = np.full(w.size, 1.0)
    sci = np.zeros((5, w.size))
    err = np.full(w.size, 0.05)
    fig = summary_figure(_spectrum(w, f, err), sci, w, np.arange(-2.0, 3.0))
    assert not [a for a in fig.axes[0].get_children() if a.get_gid() == "inset"]
    # a line 50x the continuum: the main scale follows the continuum, an inset the peak
    f[150] = 50.0
    fig = summary_figure(_spectrum(w, f, err), sci, w, np.arange(-2.0, 3.0))
    ax1 = fig.axes[0]
    assert ax1.get_ylim()[1] < 5
    inset = [a for a in ax1.get_children() if a.get_gid() == "inset"]
    assert "full range" in [a.get_text() for a in inset if hasattr(a, "get_text")]
    peak = max(np.nanmax(a.get_ydata()) for a in inset if isinstance(a, Line2D))
    assert peak == pytest.approx(50.0 * 1.01)  # the boxcar's 50.5: the peak is shown


def test_pixel_image_shows_every_outlier():
    """More columns than screen pixels: with a priority the deviant pixel is kept."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from slitcombine._pixel_image import PixelImage

    values = np.zeros((4, 400))
    values[2, 201] = 1.0  # one hot pixel
    rgba = np.zeros(values.shape + (4,), np.uint8)
    rgba[..., 3] = 255
    rgba[values > 0] = (255, 0, 0, 255)
    found = {}
    for label, priority in (("priority", np.abs(values)), ("nearest", None)):
        fig = Figure(figsize=(1.0, 0.5), dpi=100)  # 100 px for 400 columns
        FigureCanvasAgg(fig)
        ax = fig.add_axes((0, 0, 1, 1))
        ax.set_xlim(-0.5, 399.5)
        ax.set_ylim(-0.5, 3.5)
        ax.add_artist(PixelImage(ax, rgba, priority=priority))
        fig.canvas.draw()
        canvas = np.asarray(fig.canvas.buffer_rgba())
        found[label] = int(np.sum(canvas[..., 0] > 200))
    assert found["priority"] > 0 and found["priority"] >= found["nearest"]
    # on a non-uniform grid the columns land at their edges (data coordinates)
    fig = Figure(figsize=(2.0, 0.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0.0, 10.0)
    ax.set_ylim(0.0, 1.0)
    two = np.array([[[255, 0, 0, 255], [0, 0, 255, 255]]], np.uint8)
    ax.add_artist(PixelImage(ax, two, x_edges=[0.0, 2.0, 10.0], y_edges=[0.0, 1.0]))
    fig.canvas.draw()
    row = np.asarray(fig.canvas.buffer_rgba())[25]
    red = np.flatnonzero((row[:, 0] > 200) & (row[:, 2] < 50))
    blue = np.flatnonzero((row[:, 2] > 200) & (row[:, 0] < 50))
    assert red.max() == 39 and blue.min() == 40  # 2 of 10 data units = 40 of 200 px


def test_text_cache_canvas_draws_like_agg():
    """Cached text looks like matplotlib's (up to half-pixel placement), alpha included,
    and the same figure drawn twice is the same."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from slitcombine import _agg

    def draw(canvas):
        fig = Figure(figsize=(3, 2), dpi=80)
        canvas(fig)
        ax = fig.add_axes((0.25, 0.25, 0.7, 0.7))
        ax.set_xticks([0, 0.5, 1])
        ax.set_ylabel("f_nu (uJy)")
        fig.text(0.05, 0.02, "half alpha", alpha=0.5, color="tab:red")
        fig.text(0.6, 0.02, "rgba", color=(0, 0, 1, 0.4))
        ax.text(0.5, 0.5, "rotated", rotation=30)
        fig.canvas.draw()
        return np.asarray(fig.canvas.buffer_rgba()).astype(float)

    _agg.clear_text_cache()
    reference = draw(FigureCanvasAgg)
    first, second = draw(_agg.TextCacheCanvas), draw(_agg.TextCacheCanvas)
    np.testing.assert_array_equal(first, second)
    ink = [np.sum(255 - img[..., :3]) for img in (reference, first)]
    assert ink[1] == pytest.approx(ink[0], rel=0.01)
    assert len(_agg._masks) and len(_agg._masks) <= _agg.MAX_ENTRIES
    # the half-transparent red text has the same strength as matplotlib's
    rows = slice(int(2 * 80 * 0.8), None)
    strength = [np.sum(255 - img[rows, : int(3 * 80 * 0.5), 1]) for img in (reference, first)]
    assert strength[1] == pytest.approx(strength[0], rel=0.02)


def test_provenance_collect_takes_explicit_inputs():
    """collect() reads only what it is given (no group object)."""
    from astropy.table import Table

    from slitcombine.io.provenance import collect

    meta = {"steps": {"read": {"status": "COMPLETE"}}, "diffs": True}
    inputs = Table({"filename": ["a.fits", "b.fits"], "checksum": ["1", "2"]})
    fit = {1: {"sigma": 0.5, "per_pixel": np.zeros(1000)}}
    prov = collect(meta, {"ny": 13}, inputs, fit=fit)
    assert prov["inputs"] == [
        {"filename": "a.fits", "checksum": "1"},
        {"filename": "b.fits", "checksum": "2"},
    ]
    assert prov["group_meta"]["steps"] == meta["steps"]
    assert prov["trace_fit"] == {"1": {"sigma": 0.5}}
    assert prov["parameters"] == {"ny": 13}
    assert collect(meta, {}, inputs)["trace_fit"] is None
