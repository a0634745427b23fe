"""SlitGroup core on the real CEERS PRISM trio and on modified copies of it."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from astropy.io import fits

from slitcombine import (
    ConfigurationError,
    IncompatibleExposuresError,
    InputFileError,
    SlitGroup,
    read_slit,
)
from slitcombine.core import geometry
from slitcombine.core.masks import Reject, dq_value


def test_metadata_and_positions(ceers_group):
    g = ceers_group
    assert g.N == 3 and g.grating == "PRISM" and g.filter == "CLEAR"
    assert g.sh == (25, 341)
    for col in (
        "y_index",
        "position_number",
        "shutter_state",
        "x_offset",
        "y_offset",
        "exptime",
        "grating",
        "filter",
        "detector",
    ):
        assert col in g.info.colnames
    # y offsets 11.82, 12.35, 11.29 arcsec -> y_index 2, 3, 1
    assert list(g.info["y_index"]) == [2, 3, 1]
    assert g.unp.values == [1, 2, 3] and g.unp.N == 3 and g.unp.counts == [1, 1, 1]
    assert list(g.unp[2]) == [True, False, False]
    assert g.calc_reference_exposure == 2
    assert np.allclose(g.exptime, 1021.222)
    assert not g.IS_FIXED_SLIT


def test_geometry_scales_and_nods(ceers_group):
    g = ceers_group
    # One definition each of the scales (see slitcombine.core.geometry)
    assert g.slit_pixel_scale == pytest.approx(0.1045, abs=0.001)
    assert g.slit_shutter_scale == pytest.approx(0.2284, abs=0.002)
    assert g.meta["nod_offset"] == pytest.approx(0.529 / g.slit_pixel_scale)
    # Nods are one shutter pitch (~5.06 px) apart, middle one as reference
    assert np.allclose(g.relative_nod_offset, [0.0, 5.064, -5.064], atol=0.01)
    assert g.meta["num_shutters"] == 3
    # The source is ~0.5 px from the shutter centre (source_ypos = -0.116)
    assert 0.3 < g.source_ypixel_position < 0.7
    ys = g.fixed_yshutter
    assert np.nanmin(ys) < -1.3 and np.nanmax(ys) > 1.3


def test_parsed_wcs_released_after_construction_and_rebuilt_on_access(ceers_group):
    """The group frees the converted WCS / ASDF trees (memory) but they stay usable."""
    s0 = ceers_group.slits[0]
    assert not {"wcs", "_slit_node", "_asdf_file"} & set(vars(s0))
    sy = geometry.slit_frame_grid(s0.wcs, s0.shape)[1]  # parsed again from the bytes
    np.testing.assert_array_equal(sy, ceers_group._slit_y0_full)
    assert s0.asdf_slit_attribute("quadrant") is not None


def test_traces_from_offsets_match_each_wcs(ceers_files):
    a = SlitGroup(ceers_files, "a", trace_from_yoffset=True)
    b = SlitGroup(ceers_files, "b", trace_from_yoffset=False)
    # The trace predicted from the dither offsets agrees with each exposure's own WCS
    assert np.nanmax(np.abs(a.ytr - b.ytr)) < 0.1
    assert a.meta["trace_source"] == "y offsets"
    assert b.meta["trace_source"] == "each exposure's WCS"


def test_units_and_wavelengths(ceers_files):
    # keep the pipeline bar-shadow correction so that sci is the pipeline flux in uJy
    g = SlitGroup(ceers_files, "units", undo_barshadow=False)
    e = read_slit(ceers_files[1])
    to_ujy = e.meta["photometry"]["pixelarea_steradians"] * 1e12
    expected = e.sci.astype(float).ravel() * to_ujy * e.pathloss_un.ravel()
    ok = g.mask[1]
    assert np.allclose(g.sci[1][ok], expected[ok], rtol=1e-6)
    assert np.allclose(
        g.var_rnoise[1][ok],
        (e.var_rnoise.ravel() * (to_ujy * e.pathloss_un.ravel()) ** 2)[ok],
        rtol=1e-5,
    )
    assert np.allclose(g.var, g.var_rnoise + g.var_poisson + g.var_sky, equal_nan=True)
    w = g.wave[g.mask]
    assert 0.55 < w.min() and w.max() < 5.5
    # Sky-dominated PRISM continuum: tenths of uJy per pixel
    assert 0.01 < np.nanmedian(g.data[g.mask]) < 1.0


def test_masks_exclude_flagged_pixels(ceers_group, ceers_files):
    g = ceers_group
    bad_dq = dq_value(
        ["DO_NOT_USE", "SATURATED", "DEAD", "HOT", "MSA_FAILED_OPEN", "OPEN", "ADJ_OPEN"]
    )
    flagged = (g.dq & bad_dq) > 0
    assert flagged.sum() > 6000
    assert not np.any(g.mask & flagged)
    assert np.all(g.reject[flagged] & Reject.DQ)
    assert np.array_equal(g.mask, g.reject == 0)
    assert not np.any(g.mask & ~np.isfinite(g.sci))
    assert np.all(g.var[g.mask] > 0)
    # pad_border masks the slit edges; more of them with a wider border
    wide = SlitGroup(ceers_files, "wide", pad_border=4)
    assert wide.mask.sum() < g.mask.sum()
    assert g.meta["rejected"]["BORDER"] > 0


def test_nod_differences_show_traces_where_geometry_says(ceers_group):
    g = ceers_group
    n, (ny, nx) = g.N, g.sh
    wave = np.nanmedian(g.wave.reshape(n, ny, nx), axis=(0, 1))
    oiii = (wave > 2.58) & (wave < 2.66)  # [OIII] 5008 at z = 4.23
    rows = np.arange(ny)
    for pos in g.unp.values:
        ipos, ineg, diff, bdiff, vdiff, wdiff = g.make_diff_image(pos)
        assert ipos.sum() == 1 and ineg.sum() == 2 and not np.any(ipos & ineg)
        img = diff.reshape(ny, nx)[:, oiii]
        err = np.sqrt(np.nansum(vdiff.reshape(ny, nx)[:, oiii], axis=1))
        # rows without a valid pixel (slit ends) have err 0: NaN there
        prof = np.divide(np.nansum(img, axis=1), err, out=np.full(ny, np.nan), where=err > 0)
        i = np.flatnonzero(ipos)[0]
        ytr = np.nanmedian(g.ytr[i][oiii]) + g.source_ypixel_position
        assert abs(rows[np.nanargmax(prof)] - ytr) <= 1.0
        assert np.nanmax(prof) > 20  # strong positive [OIII] trace
        for j in np.flatnonzero(ineg):
            yneg = int(round(np.nanmedian(g.ytr[j][oiii]) + g.source_ypixel_position))
            assert np.min(prof[yneg - 1 : yneg + 2]) < -10  # negative traces at the other nods
        assert np.all(wdiff >= 0) and np.all(wdiff[~np.isfinite(diff)] == 0)


def test_diff_variance_and_separate(ceers_group):
    g = ceers_group
    (pos, neg), _, (vpos, vneg), _ = g.make_diff_image(2, separate=True)[2:]
    ipos, ineg, diff, _, vdiff, _ = g.make_diff_image(2)
    ok = np.isfinite(diff)
    assert np.allclose(diff[ok], (pos - neg)[ok])
    assert np.allclose(vdiff[ok], (vpos + vneg)[ok])
    # neg is the mean of two exposures: its variance is (v1 + v2) / 4 where both valid
    data, var, m = g.data, g.var, g.mask
    both = m[ineg].all(axis=0) & m[ipos].all(axis=0)
    expected = var[ineg][:, both].sum(axis=0) / 4.0
    assert np.allclose(vneg[both], expected)
    assert np.allclose(neg[both], data[ineg][:, both].mean(axis=0))


@pytest.mark.parametrize("weight_type", ["ivm", "poisson", "exptime", "exptime_bar", "mask"])
def test_weight_types(ceers_files, weight_type):
    g = SlitGroup(ceers_files, "w", weight_type=weight_type)
    *_, diff, _, vdiff, wdiff = g.make_diff_image(2)
    ok = np.isfinite(diff)
    assert np.all(wdiff[ok] > 0) and np.all(np.isfinite(wdiff[ok]))
    if weight_type == "poisson":
        assert np.allclose(wdiff[ok], 1 / vdiff[ok])


def test_no_diffs_returns_sky_subtracted_positions(ceers_files):
    g = SlitGroup(ceers_files, "nodiff", diffs=False)
    ipos, ineg, diff, bdiff, vdiff, wdiff = g.make_diff_image(1)
    assert not ineg.any()
    ok = np.isfinite(diff)
    assert np.allclose(diff[ok], g.data[ipos][0][ok])


def test_undo_barshadow_true_multiplies_by_bar(ceers_files):
    keep = SlitGroup(ceers_files, "keep", undo_barshadow=False)
    undo = SlitGroup(ceers_files, "undo", undo_barshadow=True)
    ok = keep.mask & undo.mask
    assert np.allclose(undo.data[ok], keep.data[ok] * keep.bar[ok])
    assert undo.meta["steps"]["barshadow"]["status"] == "COMPLETE"
    # the variance of the difference carries the same bar**2 factor (one exposure per
    # position: the variances add with weights 1 and 1/4 for the two negatives)
    ipos, ineg, d_keep, _, v_keep, _ = keep.make_diff_image(2)
    _, _, d_undo, _, v_undo, _ = undo.make_diff_image(2)
    both = np.isfinite(d_keep) & np.isfinite(d_undo)
    bar = keep.bar
    expect = (
        keep.var[ipos][0] * bar[ipos][0] ** 2 + (keep.var[ineg] * bar[ineg] ** 2).sum(axis=0) / 4
    )
    full = both & keep.mask.all(axis=0) & undo.mask.all(axis=0)
    assert full.sum() > 1000
    assert np.allclose(v_undo[full], expect[full])
    # S/N is unchanged where the bar shadow is the same in all exposures
    assert np.nanmedian(np.abs(d_undo / np.sqrt(v_undo))[full]) == pytest.approx(
        np.nanmedian(np.abs(d_keep / np.sqrt(v_keep))[full]), rel=0.1
    )


def test_constructor_records_every_step(ceers_group):
    steps = ceers_group.meta["steps"]
    for name in (
        "read",
        "pathloss_undo",
        "barshadow",
        "stuck_shutters",
        "global_sky",
        "normalization",
        "flag_trace",
        "flag_percentile",
        "multiple_mask",
    ):
        assert steps[name]["status"] in ("COMPLETE", "SKIPPED"), name
    assert steps["read"]["status"] == "COMPLETE"
    assert steps["pathloss_undo"]["arrays"] == ["PATHLOSS_UN"] * 3
    assert ceers_group.meta["weight_type"] == "ivm"


def test_bad_shutter_mask(ceers_files):
    g = SlitGroup(ceers_files, "bad", bad_shutter_names=[1])
    ys = g._yshutter_grid
    in_shutter = np.abs(ys - 1) < 0.6
    assert in_shutter.sum() > 500
    assert not g.mask[:, in_shutter].any()
    assert np.all(g.reject[:, in_shutter] & Reject.BAD_SHUTTER)


def test_stuck_shutter_detection_does_not_fire_on_good_data(ceers_group):
    st = ceers_group.meta["steps"]["stuck_shutters"]
    assert st["status"] == "COMPLETE" and st["stuck"] == []
    assert set(st["shutter_sn"]) == {-1, 0, 1}


def test_single_exposure(ceers_files):
    g = SlitGroup(ceers_files[:1], "single")
    assert g.N == 1 and g.unp.N == 1
    ipos, ineg, diff, *_ = g.make_diff_image(g.unp.values[0])
    assert not ineg.any() and np.isfinite(diff).sum() > 4000


def _crop_copy(src, dst, ny=None, nx=None):
    """Copy a slit file keeping the first ``ny`` rows / ``nx`` columns (same origin)."""
    shutil.copy(src, dst)
    with fits.open(dst, mode="update") as hdul:
        for h in hdul:
            if h.is_image and h.data is not None and h.data.ndim == 2:
                h.data = h.data[: ny or h.data.shape[0], : nx or h.data.shape[1]]
        if ny:
            hdul["SCI"].header["SLTSIZE2"] = ny
        if nx:
            hdul["SCI"].header["SLTSIZE1"] = nx
    return str(dst)


def test_unequal_cutouts_use_common_overlap(tmp_path, ceers_files):
    files = list(ceers_files)
    files[1] = _crop_copy(files[1], tmp_path / "exp2_cropped.fits", ny=23, nx=330)
    g = SlitGroup(files, "crop", undo_barshadow=False)
    assert g.sh == (23, 330)
    assert g.sci.shape == (3, 23 * 330)
    full = SlitGroup(ceers_files, "full", undo_barshadow=False)
    a = g.sci[0].reshape(23, 330)
    b = full.sci[0].reshape(25, 341)[:23, :330]
    ok = np.isfinite(a) & np.isfinite(b)
    assert np.allclose(a[ok], b[ok])


def test_bad_group_inputs(tmp_path, ceers_files):
    with pytest.raises(InputFileError, match="empty list"):
        SlitGroup([], "empty")
    with pytest.raises(IncompatibleExposuresError, match="twice"):
        SlitGroup([ceers_files[0], ceers_files[0]], "dup")
    other = shutil.copy(ceers_files[1], tmp_path / "other_grating.fits")
    with fits.open(other, mode="update") as hdul:
        hdul[0].header["GRATING"] = "G395M"
    with pytest.raises(IncompatibleExposuresError, match="grating"):
        SlitGroup([ceers_files[0], other], "mixed")
    other_src = shutil.copy(ceers_files[1], tmp_path / "other_source.fits")
    with fits.open(other_src, mode="update") as hdul:
        hdul["SCI"].header["SOURCEID"] = 12345
    with pytest.raises(IncompatibleExposuresError, match="source"):
        SlitGroup([ceers_files[0], other_src], "mixed")
    with pytest.raises(ConfigurationError, match="weight_type"):
        SlitGroup(ceers_files, "bad", weight_type="nonsense")
    with pytest.raises(ConfigurationError, match="position_key"):
        SlitGroup(ceers_files, "bad", position_key="nonsense")


def test_position_keys(ceers_files):
    g = SlitGroup(ceers_files, "pn", position_key="position_number")
    assert g.unp.values == [1, 2, 3]
    assert g.calc_reference_exposure == 1  # exposure 0 is the middle nod
    g2 = SlitGroup(ceers_files, "ss", position_key="shutter_state")
    assert g2.unp.N == 3
    assert g2.calc_reference_exposure == "1x1"


def test_slit_metadata_table(ceers_group):
    t = ceers_group.slit_metadata()
    assert len(t) == 3
    for col in (
        "filename",
        "checksum",
        "trace_c0",
        "slit_pixel_scale",
        "shutter_id",
        "source_xpos",
        "y_offset",
        "grating",
    ):
        assert col in t.colnames
    assert all(str(c).startswith("sha256:") for c in t["checksum"])


def test_seed_dict_defaults_on_and_none_off(ceers_files):
    on = SlitGroup(ceers_files, "on")
    off = SlitGroup(ceers_files, "off", flag_trace_kwargs=None, flag_percentile_kwargs=None)
    # the seed's {} defaults switch the outlier steps on; None switches them off
    assert on.meta["flag_trace_kwargs"] == {} and on.meta["flag_percentile_kwargs"] == {}
    assert off.meta["steps"]["flag_trace"]["status"] == "SKIPPED"
    assert off.meta["steps"]["flag_percentile"]["status"] == "SKIPPED"
    assert on.meta["steps"]["flag_percentile"]["status"] != "SKIPPED"
    assert off.mask.sum() >= on.mask.sum()


def test_negative_variance_component_rejected(tmp_path, ceers_files):
    """A pixel whose VAR_POISSON is negative is rejected even if the total is positive."""
    files = list(ceers_files)
    files[0] = shutil.copy(ceers_files[0], tmp_path / "negvar.fits")
    with fits.open(files[0], mode="update") as hdul:
        vp, vr = hdul["VAR_POISSON"].data, hdul["VAR_RNOISE"].data
        ok = np.isfinite(vp) & np.isfinite(vr) & (vr > 0)
        r, c = np.argwhere(ok)[len(np.argwhere(ok)) // 2]
        vp[r, c] = -0.5 * vr[r, c]  # total stays positive
    g = SlitGroup(files, "negvar", undo_barshadow=False)
    k = r * g.sh[1] + c
    assert not g.mask[0, k]
    assert g.reject[0, k] & Reject.NONFINITE


def test_ceers_noise_exceeds_the_pipeline_variance(ceers_group):
    """Real data: the residuals of the source model over the faint pixels scatter
    ~1.2-1.4x more than the pipeline's VAR_POISSON + VAR_RNOISE say (msaexp issue #51's
    underestimated errors), in every exposure and wavelength band."""
    res = ceers_group.measure_noise_scale()
    assert res["n_pixels"] > 5000
    assert 1.15 < res["scale"] < 1.45
    assert all(1.1 < v < 1.5 for v in res["per_exposure"].values())
    assert len(res["bands"]) >= 4
    assert all(1.05 < b["scale"] < 1.6 and b["scale_err"] < 0.05 for b in res["bands"])


def test_noise_scale_pure_function():
    from slitcombine.core import nods

    rng = np.random.default_rng(1)
    npix = 4000
    yslit = np.vstack([rng.uniform(-12, 12, npix) + o for o in (0.0, 5.0, -5.0)])
    diff = rng.normal(0, 1.3, npix)
    near = np.any(np.abs(yslit) < 1.0, axis=0)
    diff[near] += 50.0  # source light on the traces is excluded
    scale, n = nods.noise_scale(diff, np.ones(npix), yslit, margin=2.0)
    assert scale == pytest.approx(1.3, rel=0.06)
    assert n == int(np.count_nonzero(np.all(np.abs(yslit) > 2.0, axis=0)))
    assert np.isnan(nods.noise_scale(diff[:10], np.ones(10), yslit[:, :10])[0])


def test_dq_flags_are_stdatamodels_definitions_without_the_datamodel_package():
    """The JWST DQ flags come from stdatamodels' module, run without importing every
    JWST datamodel (a fresh interpreter: the test session has imported them)."""
    import json
    import subprocess
    import sys

    code = (
        "import sys, json; from slitcombine.core.masks import dq_flags; f = dq_flags(); "
        "print(json.dumps([f, 'stdatamodels.jwst.datamodels' in sys.modules]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    flags, imported = json.loads(out.stdout)
    from stdatamodels.jwst.datamodels.dqflags import pixel

    assert flags == dict(pixel) and not imported
    assert flags["DO_NOT_USE"] == 1 and flags["MSA_FAILED_OPEN"] == 2**29


def test_evaluate_steps_equals_gwcs_get_transform(ceers_files):
    """Step-by-step evaluation gives gwcs's composed transform's numbers exactly."""
    wcs = read_slit(ceers_files[0]).wcs
    x, y = np.array([10.0, 200.0, 300.0]), np.array([12.0, 14.5, 16.0])
    for a, b in (("detector", "world"), ("detector", "slit_frame"), ("slit_frame", "world")):
        inputs = (x, y) if a == "detector" else wcs.get_transform("detector", a)(x, y)
        ours = geometry.evaluate_steps(wcs, a, b, *inputs)
        ref = wcs.get_transform(a, b)(*inputs)
        for u, v in zip(ours, ref, strict=True):
            np.testing.assert_array_equal(u, v)
    with pytest.raises(ConfigurationError, match="does not come after"):
        geometry.evaluate_steps(wcs, "world", "detector", x, y)
    with pytest.raises(ConfigurationError, match="not in the WCS pipeline"):
        geometry.evaluate_steps(wcs, "detector", "nowhere", x, y)


def test_evaluate_steps_with_a_one_output_step():
    """A step with one output (a bare array from astropy) still gives a tuple."""
    import astropy.units as u
    from astropy.modeling.models import Scale
    from gwcs import WCS
    from gwcs import coordinate_frames as cf

    a = cf.SpectralFrame(name="a", unit=u.um)
    b = cf.SpectralFrame(name="b", unit=u.um)
    wcs = WCS([(a, Scale(2)), (b, None)])
    (out,) = geometry.evaluate_steps(wcs, "a", "b", np.array([1.0, 2.0, 3.0]))
    np.testing.assert_array_equal(out, wcs.get_transform("a", "b")(np.array([1.0, 2.0, 3.0])))


def test_msaexp_attributes_and_meta_keys(ceers_files):
    """var_total, dwave_dx, meta_comment and msaexp's bookkeeping keys (issue 17)."""
    g = SlitGroup(ceers_files, "attrs", hot_cold_kwargs={})
    ny, nx = g.sh
    assert g.var_total.shape == (g.N, ny * nx)
    np.testing.assert_array_equal(g.var_total, g.var_rnoise + g.var_poisson + g.var_sky)
    g.var_total = g.var_total * 2.0
    np.testing.assert_array_equal(g.var, g.var_total)
    assert g.dwave_dx.shape == (g.N, ny * nx)
    w = g.wave.reshape(g.N, ny, nx)
    col = nx // 2
    expect = 0.5 * (w[0, ny // 2, col + 1] - w[0, ny // 2, col - 1])
    assert g.dwave_dx.reshape(g.N, ny, nx)[0, ny // 2, col] == pytest.approx(expect)
    # PRISM: ~0.01 um per column at 3 um
    assert 0.005 < np.nanmedian(g.dwave_dx) < 0.03
    for key in ("nhot", "ncold", "percentile_outliers", "removed_pathloss", "own_barshadow"):
        assert key in g.meta and key in g.meta_comment
    assert g.meta["removed_pathloss"] == "PATHLOSS_UN"  # CEERS has no SRCTYPE
    assert (
        g.meta["percentile_outliers"]
        == g.meta["steps"]["flag_percentile"]["n_outliers"]
        + (g.meta["steps"]["flag_percentile"]["n_grown"])
    )
    hot = g.meta["steps"]["hot_cold"]
    assert (g.meta["nhot"], g.meta["ncold"]) == (hot["nhot"], hot["ncold"])
    assert all(isinstance(v, str) and v for v in g.meta_comment.values())
