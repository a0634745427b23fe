"""Run configuration: TOML sections per step, --set overrides, effective config, hash."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from slitcombine import ConfigurationError, SlitGroup
from slitcombine.cli import main
from slitcombine.pipeline.config import Config, load_config, parse_override, step_defaults


@pytest.fixture(scope="module")
def sim_files(tmp_path_factory):
    from slitcombine.testing.simulate import simulate_observation

    sim = simulate_observation(
        tmp_path_factory.mktemp("cfgsim"), grating="PRISM", nx=64, n_crs=2, seed=7
    )
    return [str(f) for f in sim.files]


def test_default_round_trip_and_hash(tmp_path):
    cfg = Config.default()
    path = cfg.write(tmp_path / "config.toml")
    text = path.read_text()
    assert f"# config_hash = {cfg.hash}" in text
    assert "[group]" in text and "[extract]" in text and "[hot_cold]" in text
    assert "# nod_offset = none" in text  # None written as a comment
    again = load_config(path)
    assert again.hash == cfg.hash and again.sections == cfg.sections
    # an edited, re-read effective config keeps its values and its hash
    if hasattr(SlitGroup, "flag_hot_cold_pixels"):
        with pytest.raises(ConfigurationError, match="sigma_guard.*did you mean sn_guard"):
            # flag_hot_cold_pixels has no sigma_guard: step keys are checked when read
            cfg.with_overrides(["hot_cold.sigma_guard=1"])
    edited = cfg.with_overrides(["group.weight_type=poisson", "hot_cold.sn_guard=2.5"])
    path2 = edited.write(tmp_path / "edited.toml")
    reread = load_config(path2)
    assert reread.hash == edited.hash != cfg.hash
    assert reread.group_kwargs()["hot_cold_kwargs"] == {"sn_guard": 2.5}
    assert reread.group_kwargs()["weight_type"] == "poisson"


def test_hash_covers_outputs_only():
    base = Config.default()
    # the default written explicitly, and 2 vs 2.0, hash alike
    assert base.with_overrides(["group.pad_border=2.0", "extract.ny=13"]).hash == base.hash
    # discovery and log level do not change outputs: same hash
    assert base.with_overrides(["discovery.join=[0, 3, 5]"]).hash == base.hash
    assert base.with_overrides(["batch.log_level=DEBUG"]).hash == base.hash
    # anything that changes the outputs changes it
    hashes = {
        base.hash,
        base.with_overrides(["group.pad_border=3"]).hash,
        base.with_overrides(["extract.ny=10"]).hash,
        base.with_overrides(["batch.mode=prepare"]).hash,
        base.with_overrides(["batch.figures=false"]).hash,
        base.with_overrides(["estimate_sky.enabled=true"]).hash,
        base.with_overrides(["trace.niter=2"]).hash,
    }
    assert len(hashes) == 7
    assert len(base.hash) == 16 and int(base.hash, 16) >= 0


def test_parse_override_values():
    assert parse_override("group.weight_type=poisson") == (["group", "weight_type"], "poisson")
    assert parse_override("extract.ny=7") == (["extract", "ny"], 7)
    assert parse_override("extract.pixfrac=0.5") == (["extract", "pixfrac"], 0.5)
    assert parse_override("discovery.join=[0,3,5]") == (["discovery", "join"], [0, 3, 5])
    assert parse_override("group.diffs=false") == (["group", "diffs"], False)
    assert parse_override("extract.wave_range=none") == (["extract", "wave_range"], None)
    assert parse_override('group.sky_file="a b.csv"') == (["group", "sky_file"], "a b.csv")
    assert parse_override("flag_trace.x.y=1") == (["flag_trace", "x", "y"], 1)
    for bad in ("group.weight_type", "weight_type=ivm", ".x=1"):
        with pytest.raises(ConfigurationError):
            parse_override(bad)


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(ConfigurationError, match="unknown configuration section 'grop'.*group"):
        Config.from_dict({"grop": {}})
    with pytest.raises(ConfigurationError, match="weight_typ.*did you mean weight_type"):
        Config.default().with_overrides(["group.weight_typ=ivm"])
    with pytest.raises(ConfigurationError, match="pad_border must be a number"):
        Config.default().with_overrides(["group.pad_border=wide"])
    with pytest.raises(ConfigurationError, match="cannot be turned off.*fit_traces"):
        Config.default().with_overrides(["trace.enabled=false"])
    with pytest.raises(ConfigurationError, match="batch.mode"):
        Config.default().with_overrides(["batch.mode=fast"])
    with pytest.raises(ConfigurationError, match="discovery.join"):
        Config.default().with_overrides(["discovery.join=nrs"])
    with pytest.raises(ConfigurationError, match="not found"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[group\npad_border = 2\n")
    with pytest.raises(ConfigurationError, match="cannot read configuration"):
        load_config(bad)


def test_step_sections_map_to_seed_keywords(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text(
        "[group]\nweight_type = 'poisson'\n\n[hot_cold]\nenabled = true\n\n"
        "[flag_trace]\nthreshold = 2.0\n\n[flag_percentile]\nenabled = false\n\n"
        "[extended_calibration]\nquadrant_correction = true\n"
    )
    cfg = load_config(toml)
    kw = cfg.group_kwargs()
    defaults = step_defaults()
    assert kw["weight_type"] == "poisson"
    assert kw["hot_cold_kwargs"] == defaults["hot_cold"][1]  # on with its own defaults
    assert kw["flag_trace_kwargs"] == {"threshold": 2.0}
    assert kw["flag_percentile_kwargs"] is None  # off
    # options are merged onto the step's default options
    assert kw["extended_calibration_kwargs"] == {
        **defaults["extended_calibration"][1],
        "quadrant_correction": True,
    }
    # untouched steps get their defaults: off steps None, on steps their options
    for step in ("estimate_sky", "slit_hotpix", "flag_2d"):
        on, options = defaults[step]
        assert kw[f"{step}_kwargs"] == (options if on else None)
    # the extraction's trace options: None (its defaults) unless given
    assert cfg.combine_kwargs()["trace_kwargs"] is None
    assert cfg.with_overrides(["trace.niter=2"]).combine_kwargs()["trace_kwargs"] == {"niter": 2}


def test_step_defaults_match_slitgroup(sim_files):
    """A default group has each step on or off as the configuration says."""
    cfg = Config.default()
    g = SlitGroup(sim_files, "cfg", **cfg.group_kwargs())
    steps = [k[: -len("_kwargs")] for k in cfg.group_kwargs() if k.endswith("_kwargs")]
    assert len(steps) >= 10
    default_group = SlitGroup(sim_files, "seed")  # no keyword given at all
    for step in steps:
        on, options = step_defaults()[step]
        assert (g.meta[f"{step}_kwargs"] is None) == (not on), step
        assert g.meta[f"{step}_kwargs"] == default_group.meta[f"{step}_kwargs"], step
    # options reach the group
    g2 = SlitGroup(
        sim_files,
        "cfg2",
        **cfg.with_overrides(["group.weight_type=poisson", "group.pad_border=4"]).group_kwargs(),
    )
    assert g2.meta["weight_type"] == "poisson" and g2.meta["pad_border"] == 4
    assert np.count_nonzero(g2.mask) < np.count_nonzero(g.mask)  # wider border rejected


def test_extract_cli_uses_config(sim_files, tmp_path):
    toml = tmp_path / "extract.toml"
    toml.write_text("[extract]\nny = 9\nfit_traces = false\n")
    out = tmp_path / "out"
    rc = main(
        [
            "extract",
            *sim_files,
            "--name",
            "cfgtest",
            "--output-dir",
            str(out),
            "--no-figures",
            "--config",
            str(toml),
            "--set",
            "extract.ny=5",
        ]
    )
    assert rc == 0
    with fits.open(out / "cfgtest.spec.fits") as hdul:
        # 2 ny + 1 rows of the rectified 2D grid: --set overrides the file
        assert hdul["SCI"].data.shape[0] == 11
    assert main(["extract", *sim_files, "--output-dir", str(out), "--set", "extract.nyy=3"]) == 2


def test_written_config_lists_every_option(tmp_path):
    """Every keyword of a step's methods appears (commented with its default) and parses."""
    cfg = Config.default()
    text = cfg.write(tmp_path / "config.toml").read_text()
    section = text.split("[trace]")[1].split("\n[")[0]
    # fit_single_trace keywords are passed on by fit_all_traces: listed with their defaults
    assert "# degree = 2  # unset: 0, 1 or 2 from the trace S/N" in section
    assert "# sigma_bounds = [1, 20]" in section
    assert "# ref_exp = 2" in section
    # every group keyword of SlitGroup that is a configuration value has a line with a note
    group = text.split("[group]")[1].split("\n[")[0]
    assert 'position_key = "y_index"  # ' in group
    # every extraction option has its note (from the comments of EXTRACT_DEFAULTS)
    extract = text.split("[extract]")[1].split("\n[")[0]
    lines = [ln for ln in extract.strip().splitlines() if ln.strip()]
    assert len(lines) >= 15 and all("  # " in ln for ln in lines), extract
    assert "wave_sample = 1.0  # output wavelength points per native detector column" in extract
    # uncommenting a listed default gives a valid configuration with that value set
    edited = text.replace("# degree = 2  #", "degree = 1  #", 1)
    path = tmp_path / "edited.toml"
    path.write_text(edited)
    reread = load_config(path)
    assert reread.sections["trace"]["degree"] == 1
    assert reread.hash != cfg.hash


def test_figure_options():
    """batch.figures (all/summary/none; true/false the same as all/none) and
    batch.figure_dpi: defaults, normalised values, hash, clear errors."""
    from slitcombine.plots import DEFAULT_DPI

    base = Config.default()
    assert base.section("batch")["figures"] == "all"
    assert base.section("batch")["figure_dpi"] == DEFAULT_DPI
    for alias, value in ((True, "all"), (False, "none"), ('"SUMMARY"', "summary")):
        cfg = base.with_overrides([f"batch.figures={str(alias).lower()}"])
        assert cfg.section("batch")["figures"] == value
        assert cfg.hash == base.with_overrides([f"batch.figures={value}"]).hash
    assert base.with_overrides(["batch.figure_dpi=80.0"]).hash == base.hash
    assert base.with_overrides(["batch.figure_dpi=100"]).hash != base.hash
    for bad, message in (
        ("batch.figures=1", "batch.figures must be one of all, summary, none"),
        ("batch.figure_dpi=0", "batch.figure_dpi must be a number of dots per inch from 10"),
        ("batch.figure_dpi=true", "batch.figure_dpi must be a number of dots per inch"),
    ):
        with pytest.raises(ConfigurationError, match=message):
            base.with_overrides([bad])
