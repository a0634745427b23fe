"""Reader: real CEERS slit files and every kind of bad input."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from astropy.io import fits

from slitcombine import (
    InputFileError,
    MissingExtensionError,
    NotASlitError,
    SlitCombineError,
    read_slit,
)
from slitcombine.io.reading import file_checksum


def _sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_read_real_slit(ceers_files):
    before = [_sha(f) for f in ceers_files]
    exps = [read_slit(f) for f in ceers_files]
    for e in exps:
        assert e.shape == (25, 341)
        assert e.sci.dtype == np.float32 and e.dq.dtype == np.uint32
        assert e.grating == "PRISM" and e.filter == "CLEAR"
        assert e.slit["slitlet_id"] == 138 and e.slit["source_id"] == 933
        assert e.meta["photometry"]["pixelarea_steradians"] == pytest.approx(
            4.85e-13, rel=1e-2, abs=0
        )
        assert e.meta["exposure"]["exposure_time"] == pytest.approx(1021.222)
        # WAVELENGTH in um: the PRISM range that falls on NRS2, NaN outside the slit
        w = e.wavelength[np.isfinite(e.wavelength)]
        assert 1.3 < w.min() < 1.4 and 5.3 < w.max() < 5.5
        assert e.fallbacks == {}
        assert e.checksum == file_checksum(e.path)
    # Position numbers and the 0.529 arcsec nod steps of the dither
    assert [e.meta["dither"]["position_number"] for e in exps] == [1, 2, 3]
    yoff = np.array([e.meta["dither"]["y_offset"] for e in exps])
    assert np.allclose(np.diff(np.sort(yoff)), 0.529, atol=0.002)
    # Shutter states differ per nod: the source shutter moves
    assert [e.slit["shutter_state"] for e in exps] == ["1x1", "x11", "11x"]
    # inputs untouched
    assert [_sha(f) for f in ceers_files] == before


def test_lazy_asdf_attributes_and_wcs(ceers_files):
    e = read_slit(ceers_files[0])
    assert e.asdf_slit_attribute("quadrant") == 2
    assert e.asdf_slit_attribute("xcen") == 295
    assert e.asdf_slit_attribute("not_there", -1) == -1
    assert {"detector", "slit_frame", "world"} <= set(e.wcs.available_frames)
    # WCS wavelength (m) agrees with the WAVELENGTH extension (um) to float32 precision
    y, x = np.mgrid[:25, :341]
    lam = e.wcs.get_transform("detector", "slit_frame")(x, y)[2] * 1e6
    ok = np.isfinite(lam) & np.isfinite(e.wavelength)
    assert ok.sum() > 6000
    assert np.max(np.abs(lam[ok] - e.wavelength[ok])) < 1e-5


# ---------------------------------------------------------------- bad input
def _write_variant(src, dst, drop=(), primary_updates=None, add=()):
    with fits.open(src) as hdul:
        hdus = [h.copy() for h in hdul if h.name not in drop]
    hdul = fits.HDUList(hdus)
    for k, v in (primary_updates or {}).items():
        hdul[0].header[k] = v
    for h in add:
        hdul.append(h)
    hdul.writeto(dst)
    return dst


def test_missing_file(tmp_path):
    with pytest.raises(InputFileError, match="file not found") as err:
        read_slit(tmp_path / "nope.fits")
    assert "nope.fits" in str(err.value)


def test_directory_instead_of_file(tmp_path):
    with pytest.raises(InputFileError, match="directory"):
        read_slit(tmp_path)


def test_zero_byte_file(tmp_path):
    p = tmp_path / "empty.fits"
    p.write_bytes(b"")
    with pytest.raises(InputFileError, match="empty file"):
        read_slit(p)


def test_not_fits(tmp_path):
    p = tmp_path / "notes.fits"
    p.write_text("this is not FITS\n" * 100)
    with pytest.raises(InputFileError, match="not a FITS file"):
        read_slit(p)


def test_truncated_fits(tmp_path, ceers_files):
    data = open(ceers_files[0], "rb").read()
    p = tmp_path / "truncated.fits"
    p.write_bytes(data[: len(data) // 3])
    with pytest.raises(InputFileError) as err:
        read_slit(p)
    assert "truncated.fits" in str(err.value)


@pytest.mark.parametrize("ext", ["SCI", "DQ", "ASDF"])
def test_missing_required_extension(tmp_path, ceers_files, ext):
    p = _write_variant(ceers_files[0], tmp_path / f"no_{ext}.fits", drop=(ext,))
    with pytest.raises(MissingExtensionError) as err:
        read_slit(p)
    assert ext in str(err.value) and f"no_{ext}.fits" in str(err.value)


def test_missing_optional_extensions_fall_back(tmp_path, ceers_files):
    p = _write_variant(
        ceers_files[0], tmp_path / "nobar.fits", drop=("BARSHADOW", "PATHLOSS_UN", "PATHLOSS_PS")
    )
    e = read_slit(p)
    assert e.barshadow is None and e.pathloss_un is None
    assert set(e.fallbacks) == {"BARSHADOW", "PATHLOSS_UN", "PATHLOSS_PS"}


def test_missing_wavelength_computed_from_wcs(tmp_path, ceers_files):
    from slitcombine import SlitGroup

    p = _write_variant(ceers_files[0], tmp_path / "nowave.fits", drop=("WAVELENGTH",))
    e = read_slit(p)
    assert "WAVELENGTH" in e.fallbacks
    g = SlitGroup([p], "nowave", stuck_threshold=0)
    ref = read_slit(ceers_files[0]).wavelength.ravel()
    ok = np.isfinite(ref) & np.isfinite(g.wave[0])
    assert ok.sum() > 6000
    assert np.max(np.abs(g.wave[0][ok] - ref[ok])) < 1e-5


def test_nircam_image_rejected(tmp_path):
    p = tmp_path / "nircam_cal.fits"
    prim = fits.PrimaryHDU()
    prim.header["INSTRUME"] = "NIRCAM"
    prim.header["DATAMODL"] = "ImageModel"
    hdul = fits.HDUList(
        [
            prim,
            fits.ImageHDU(np.zeros((20, 20), np.float32), name="SCI"),
            fits.ImageHDU(np.zeros((20, 20), np.int32), name="DQ"),
        ]
    )
    hdul.writeto(p)
    with pytest.raises(NotASlitError, match="NIRCAM"):
        read_slit(p)


def test_x1d_rejected(tmp_path):
    p = tmp_path / "jw_x1d.fits"
    prim = fits.PrimaryHDU()
    prim.header["INSTRUME"] = "NIRSPEC"
    tab = fits.BinTableHDU.from_columns(
        [fits.Column(name="WAVELENGTH", format="D", array=np.linspace(1, 5, 10))], name="EXTRACT1D"
    )
    fits.HDUList([prim, tab]).writeto(p)
    with pytest.raises(NotASlitError, match="1D"):
        read_slit(p)


def test_s2d_rejected(tmp_path, ceers_files):
    wht = fits.ImageHDU(np.ones((25, 341), np.float32), name="WHT")
    con = fits.ImageHDU(np.ones((25, 341), np.int32), name="CON")
    p = _write_variant(ceers_files[0], tmp_path / "x_s2d.fits", add=(wht, con))
    with pytest.raises(NotASlitError, match="s2d"):
        read_slit(p)


def test_corrupt_asdf_extension(tmp_path, ceers_files):
    with fits.open(ceers_files[0]) as hdul:
        hdus = [h.copy() for h in hdul]
    raw = np.frombuffer(b"#ASDF 1.0.0\n%YAML 1.1\n--- !<garbage\n: : [\n" * 10, np.uint8)
    col = fits.Column(name="ASDF_METADATA", format=f"{raw.size}B", array=raw[None, :])
    hdus[-1] = fits.BinTableHDU.from_columns([col], name="ASDF")
    p = tmp_path / "corrupt_asdf.fits"
    fits.HDUList(hdus).writeto(p)
    e = read_slit(p)  # arrays and headers are fine; the ASDF is parsed lazily
    with pytest.raises(InputFileError, match="corrupt ASDF"):
        _ = e.wcs


def test_errors_share_one_base_class():
    for cls in (InputFileError, MissingExtensionError, NotASlitError):
        assert issubclass(cls, SlitCombineError)


_PLUGIN_PROBE = r"""
import json, sys
from slitcombine import read_slit
e = read_slit(sys.argv[1])
frames = e.wcs.available_frames
loaded_before = sorted(m for m in ("ndcube", "specutils") if m in sys.modules)
import asdf
packages = sorted({x.package_name for x in asdf.get_config().extensions})
print(json.dumps({"frames": frames, "heavy": loaded_before, "global": packages}))
"""


def test_wcs_reads_with_the_slit_plugins_only(ceers_files):
    """Reading a slit WCS imports only the asdf plugins it needs; asdf's global list is intact."""
    import json
    import subprocess
    import sys
    from importlib.metadata import entry_points

    out = subprocess.run(
        [sys.executable, "-c", _PLUGIN_PROBE, str(ceers_files[0])],
        capture_output=True,
        text=True,
        check=True,
    )
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert "slit_frame" in res["frames"] and "world" in res["frames"]
    # ndcube/specutils register asdf plugins in the test environment: not imported
    assert res["heavy"] == []
    installed = {ep.dist.name for ep in entry_points(group="asdf.extensions")}
    # the process-wide asdf configuration still lists every installed plugin
    assert set(res["global"]) == installed


def test_wcs_reads_after_asdf_loaded_all_plugins(ceers_files):
    """When asdf already holds its full plugin list, the reader uses it."""
    import asdf

    asdf.get_config().extensions  # noqa: B018
    e = read_slit(ceers_files[1])
    tr = e.wcs.get_transform("detector", "slit_frame")
    sx, sy, lam = tr(170.0, 12.0)
    assert np.isfinite(lam) and 0.6e-6 < lam < 5.5e-6


def test_slit_plugins_parse_manifests_like_pyyaml():
    """libyaml reads the extension manifests into the same objects as PyYAML's pure loader.

    The datamodel schemas are left out (not needed without validation), and asdf's
    manifest module gets its ``yaml`` module back.
    """
    import yaml
    from asdf.extension import _manifest

    from slitcombine.io._asdf_plugins import _slit_asdf_plugins

    mappings, extensions = _slit_asdf_plugins()
    assert _manifest.yaml is yaml
    assert not any("jwst_datamodel" in str(m.delegate) for m in mappings)
    manifests = [
        e.delegate for e in extensions if isinstance(e.delegate, _manifest.ManifestExtension)
    ]
    assert len(manifests) > 20
    import asdf

    with asdf.config_context() as config:
        config._resource_mappings = list(mappings)
        config._resource_manager = None
        for ext in manifests:
            text = config.resource_manager[ext._manifest["id"]]
            assert yaml.load(text, Loader=yaml.SafeLoader) == ext._manifest


def test_slit_entry_points_are_those_of_the_slit_distributions():
    """Looking the slit plugins up by distribution name finds what a full scan finds."""
    from importlib.metadata import entry_points

    from slitcombine.io._asdf_plugins import SLIT_ASDF_PLUGINS, _dist_key, _slit_entry_points

    wanted = {_dist_key(n) for n in SLIT_ASDF_PLUGINS}
    for group in ("asdf.extensions", "asdf.resource_mappings"):
        full = {
            (_dist_key(ep.dist.name), ep.value)
            for ep in entry_points(group=group)
            if _dist_key(ep.dist.name) in wanted
        }
        ours = {
            (_dist_key(ep.dist.name), ep.value) for ep in _slit_entry_points().select(group=group)
        }
        assert ours == full and len(full) > 0
