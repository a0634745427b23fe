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
    assert len(fig.axes) in (4, 5)  # 1D, 2D, profile, colour bar (and an inset)
    # the 2D image is drawn on the output wavelength grid, the profile on its rows
    ax1, ax2, axp, cax = fig.axes[:4]
    assert cax.get_title() == "uJy/px"
    labels = [t.get_text() for t in ax1.get_legend().get_texts()]
    assert labels[:3] == ["optimal", "boxcar", "\u00b11 sigma"]
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
    assert [ax.get_title() for ax in fig.axes[:3]] == ["difference", "model", "residual"]
    assert "sigma" in fig.axes[3].get_ylabel()  # the colour bar
    assert all(ax.get_xlabel() == "x (pixel)" for ax in fig.axes[:3])
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
    from slitcombine.combine import combine_group

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
    from slitcombine.output import build_hdulist

    new = build_hdulist(result)
    ref = build_hdulist(result, columns=True)
    _assert_same_hdus(new, ref)
    # the written product reads back the same through the registered readers
    path = result.write(tmp_path, figures=False)["spec"]
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

    from slitcombine.output import _columns_table_hdu, table_hdu

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

    from slitcombine.output import _columns_table_hdu, table_hdu

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

    from slitcombine.output import binary_table_hdu

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
    from slitcombine.output import binary_table_hdu

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

    from slitcombine.plots import save_figure

    _, result, _ = product
    for fig in (result.plot(), result.group.plot_2d_differences()):
        fig.savefig(tmp_path / "rgba.png", format="png", dpi=100)
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
