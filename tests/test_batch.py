"""Discovery, manifests and batch processing on dask (LocalCluster and an external cluster).

One batch of 25 simulated groups (4 gratings, 2 detectors, 3 sources of a MultiSlitModel,
2 groups broken on purpose, 1 unreadable file in the folder) is run once on a
LocalCluster with 2 workers; the tests below read what it wrote.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from slitcombine.batch import inputs_hash, process_group
from slitcombine.cli import main
from slitcombine.config import Config, load_config
from slitcombine.discovery import (
    discover,
    format_member,
    parse_member,
    read_manifest,
    visit_key,
    write_manifest,
)

GRATINGS = ("PRISM", "G140M", "G235M", "G395M")
N_GOOD = 20
ROOT = "jw01234001001"
MULTI_ROOT = "jw01234002001"
SINGLE_ROOT = "jw01234003001"  # same data as MULTI_ROOT's first source, another visit
N_GROUPS = N_GOOD + 2 + 3 + 1
SIM = {"nx": 48, "n_crs": 2, "n_hot": 2, "n_dead": 2, "snr": 15.0}


def _simulate(outdir, i, **extra):
    from slitcombine.simulate import simulate_observation

    opts = dict(
        grating=GRATINGS[i % len(GRATINGS)],
        detector="NRS1" if i % 2 == 0 else "NRS2",
        seed=100 + i,
        source_id=100 + i,
        slitlet_id=10 + i,
        root=ROOT,
        **SIM,
    )
    opts.update(extra)
    return simulate_observation(outdir, **opts)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Simulated inputs: 22 per-slit groups (2 broken), 3 MultiSlitModel sources, junk."""
    base = tmp_path_factory.mktemp("batch")
    folder = base / "data"
    sims = [_simulate(folder, i) for i in range(N_GOOD + 2)]
    # broken on purpose: one exposure without its ASDF (WCS) extension ...
    with fits.open(sims[N_GOOD].files[1], mode="update") as hdul:
        del hdul["ASDF"]
    # ... and a group whose data are all NaN
    for f in sims[N_GOOD + 1].files:
        with fits.open(f, mode="update") as hdul:
            hdul["SCI"].data[:] = np.nan
    # an unreadable file among the slit files
    (folder / f"{ROOT}_03101_00009_nrs1_cal.fits").write_bytes(b"this is not FITS" * 100)
    # three sources in one MultiSlitModel *_cal.fits per exposure, and the first source
    # simulated alone (same seed and options) as per-slit files
    multi_opts = dict(grating="PRISM", seed=5, root=MULTI_ROOT, source_id=1, **SIM)
    from slitcombine.simulate import simulate_observation

    multi = simulate_observation(base / "multi", multi_slit_sources=3, **multi_opts)
    simulate_observation(base / "single", **{**multi_opts, "root": SINGLE_ROOT})
    return {
        "base": base,
        "folder": folder,
        "sims": sims,
        "multi": multi,
        "broken_ids": {100 + N_GOOD, 100 + N_GOOD + 1},
    }


@pytest.fixture(scope="module")
def first_run(data):
    out = data["base"] / "out"
    rc = main(
        [
            "-q",
            "batch",
            str(data["folder"]),
            str(data["base"] / "multi"),
            str(data["base"] / "single"),
            "--output-dir",
            str(out),
            "--workers",
            "2",
        ]
    )
    summary = Table.read(out / "summary.ecsv")
    return {"rc": rc, "out": out, "summary": summary}


# ------------------------------------------------------------------------ discovery
def test_visit_key_join():
    name = "jw01345062001_03101_00001_nrs2_phot.138.1345_933.fits"
    assert visit_key(name) == "jw01345062001_nrs2"
    assert visit_key(name, [0]) == "jw01345062001"
    assert visit_key(f"/some/dir/{name}", [0, 1, 3]) == "jw01345062001_03101_nrs2"
    assert visit_key(name, [0, 9]) == "jw01345062001"  # past the end: ignored
    assert format_member(("/a/b_cal.fits", 12)) == "/a/b_cal.fits[12]"
    assert parse_member("b_cal.fits[12]", "/a") == ("/a/b_cal.fits", 12)
    assert parse_member("x_phot.001.fits", "/a") == "/a/x_phot.001.fits"


def test_discovery_groups_and_manifest(data, tmp_path):
    groups, skipped = discover([data["folder"], data["base"] / "multi", data["base"] / "single"])
    assert len(groups) == N_GROUPS
    assert len(skipped) == 1 and "not a FITS file" in skipped[0][1]
    by_source = {g.info["source_id"]: g for g in groups if g.info["visit"].startswith(ROOT)}
    for i, sim in enumerate(data["sims"]):
        g = by_source[100 + i]
        assert g.info["grating"] == GRATINGS[i % 4]
        det = "nrs1" if i % 2 == 0 else "nrs2"
        assert g.info["visit"] == f"{ROOT}_{det}" and g.info["n_exposures"] == 3
        assert list(g.members) == [str(f) for f in sim.files]  # exposure order
    multi = [g for g in groups if g.info["visit"].startswith(MULTI_ROOT)]
    assert sorted(g.info["source_id"] for g in multi) == [1, 2, 3]
    for g in multi:
        sid = g.info["source_id"]
        assert list(g.members) == [(str(f), sid) for f in data["multi"].files]
    # the manifest round-trips; files below its folder are written relative to it
    path = write_manifest(groups, data["base"] / "m.ecsv")
    text = path.read_text()
    assert "_cal.fits[2]" in text and str(data["base"]) not in text
    assert f" multi/{MULTI_ROOT}_03101_00001_nrs1_cal.fits[2];" in text
    elsewhere = write_manifest(groups, tmp_path / "m.ecsv").read_text()
    assert f"{data['base'].resolve()}/multi/{MULTI_ROOT}" in elsewhere and ".." not in elsewhere
    assert [g.members for g in read_manifest(tmp_path / "m.ecsv")] == [
        g.members for g in read_manifest(path)
    ]
    back = read_manifest(path)
    assert [g.name for g in back] == [g.name for g in groups]
    norm = lambda ms: [  # noqa: E731
        (os.path.realpath(m[0]), m[1]) if isinstance(m, tuple) else os.path.realpath(m) for m in ms
    ]
    assert [norm(g.members) for g in back] == [norm(g.members) for g in groups]
    assert back[0].info["grating"] == groups[0].info["grating"]


# ------------------------------------------------------------------------ LocalCluster run
def test_batch_outputs_and_failures(data, first_run):
    out, summary = first_run["out"], first_run["summary"]
    assert first_run["rc"] == 1  # some groups failed
    assert len(summary) == N_GROUPS
    ok = summary[summary["status"] == "ok"]
    failed = summary[summary["status"] == "failed"]
    assert len(ok) == N_GROUPS - 2
    assert set(failed["source_id"]) == data["broken_ids"]
    assert not np.any(summary["bug"]) and not np.any(summary["resumed"])
    errors = {int(r["source_id"]): str(r["error"]) for r in failed}
    assert "ASDF" in errors[100 + N_GOOD] and "missing" in errors[100 + N_GOOD]
    assert "no valid pixel" in errors[100 + N_GOOD + 1]
    # every good group: a readable spectrum, its S/N in the summary
    for row in ok:
        name = row["group"]
        outputs = str(row["outputs"]).split(";")
        assert f"{name}.spec.fits" in outputs and row["figure"] == f"{name}.fnu.png"
        for o in outputs:
            assert (out / o).is_file()
        spec = Table.read(out / f"{name}.spec.fits", hdu="SPEC1D")
        valid = np.asarray(spec["valid"])
        sn = np.asarray(spec["flux"] / spec["err"])[valid]
        assert row["sn_max"] == pytest.approx(np.max(sn), rel=1e-3)
        # combining 3 exposures beats the single-exposure peak continuum S/N of 15
        assert row["sn_max"] > 15 and row["sn_median"] > 2
        assert row["runtime"] > 0 and row["n_exposures"] == 3
    # skipped file, logs, no half-written files
    assert len(summary.meta["skipped_files"]) == 1
    assert "not a FITS file" in summary.meta["skipped_files"][0]["reason"]
    for row in summary:
        log_text = (out / row["log"]).read_text()
        assert row["group"] in log_text
    bad_log = (out / failed["log"][0]).read_text()
    assert "failed" in bad_log
    assert not list(out.glob(".*.tmp")) and not list(out.glob("*.tmp"))


def test_config_hash_saved_with_outputs(first_run):
    out, summary = first_run["out"], first_run["summary"]
    cfg = load_config(out / "config.toml")
    assert cfg.hash == summary.meta["config_hash"] == Config.default().hash
    row = summary[summary["status"] == "ok"][0]
    side = json.loads((out / f"{row['group']}.batch.json").read_text())
    assert side["config_hash"] == cfg.hash and side["status"] == "ok"
    prov = Table.read(out / f"{row['group']}.spec.fits", hdu="PROVENANCE")
    batch_rows = prov[prov["section"] == "batch"]
    values = {r["key"]: json.loads(r["value"]) for r in batch_rows}
    assert values["config_hash"] == cfg.hash
    assert fits.getheader(out / f"{row['group']}.spec.fits")["CFGHASH"] == cfg.hash
    # the run's manifest can be re-run as is
    assert [g.name for g in read_manifest(out / "manifest.ecsv")] == list(summary["group"])


def test_index_page_links_figures(first_run):
    out, summary = first_run["out"], first_run["summary"]
    page = (out / "index.html").read_text()
    for row in summary:
        assert f"id='{row['group']}'" in page
        if row["status"] == "ok":
            assert f"src='{row['figure']}'" in page and (out / row["figure"]).is_file()
    assert str(out) not in page  # relative links only
    assert page.count("class='g failed'") == 2


def test_multislit_same_spectra_as_per_slit(data, first_run):
    """A MultiSlitModel slit read by source id gives the per-slit files' spectrum."""
    out, summary = first_run["out"], first_run["summary"]
    rows = {}
    for root in (MULTI_ROOT, SINGLE_ROOT):
        row = summary[(summary["source_id"] == 1) & (summary["visit"] == f"{root}_nrs1")]
        assert len(row) == 1 and row["status"][0] == "ok"
        rows[root] = row[0]
    side = json.loads((out / f"{rows[MULTI_ROOT]['group']}.batch.json").read_text())
    assert all(m.endswith("_cal.fits[1]") for m in side["members"])
    multi = Table.read(out / f"{rows[MULTI_ROOT]['group']}.spec.fits", hdu="SPEC1D")
    single = Table.read(out / f"{rows[SINGLE_ROOT]['group']}.spec.fits", hdu="SPEC1D")
    assert len(multi) == len(single) > 20
    np.testing.assert_array_equal(multi["valid"], single["valid"])
    v = np.asarray(single["valid"])
    for col in ("wave", "flux", "err"):
        np.testing.assert_allclose(multi[col][v], single[col][v], rtol=1e-6)


def test_resume_does_no_work(data, first_run):
    out = first_run["out"]
    args = ["-q", "batch", str(data["folder"]), str(data["base"] / "multi")]
    args += [str(data["base"] / "single")]
    args += ["--output-dir", str(out), "--workers", "2", "--resume"]
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*.batch.json")}
    stamps.update({p: p.stat().st_mtime_ns for p in (out / "logs").glob("*.log")})
    assert len(stamps) == 2 * N_GROUPS
    assert main(args) == 1  # the two bad inputs are still reported as failed
    summary = Table.read(out / "summary.ecsv")
    assert np.all(summary["resumed"]) and summary.meta["startup_time"] == 0
    assert list(summary["status"]) == list(first_run["summary"]["status"])
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())
    # what makes a group "done": same config hash, same inputs, outputs present
    from slitcombine.batch import _resumable, read_sidecar

    cfg = Config.default()
    for row in summary:
        side = read_sidecar(out, row["group"])
        members = [parse_member(m) for m in side["members"]]
        assert _resumable(side, cfg, members, False, out)
        assert not _resumable(side, cfg.with_overrides(["extract.ny=10"]), members, False, out)
        assert not _resumable(side, cfg, members[:2], False, out)
        # bad-input failures are rerun on request, successes are not
        assert _resumable(side, cfg, members, True, out) == (row["status"] == "ok")


def test_interrupted_run_leaves_no_half_files_and_resumes(data, tmp_path):
    """Ctrl-C during a batch: exit 130, complete files only, --resume does the rest."""
    groups, _ = discover([f for s in data["sims"][:8] for f in s.files])
    manifest = write_manifest(groups, tmp_path / "manifest.ecsv")
    out = tmp_path / "out"
    args = ["batch", str(manifest), "--output-dir", str(out), "--workers", "2"]
    args += ["--set", "batch.figures=false"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "slitcombine.cli", "-q", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        t0 = time.monotonic()
        while not list(out.glob("*.batch.json")) and time.monotonic() - t0 < 120:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130 and "interrupted" in err
    summary = Table.read(out / "summary.ecsv")
    done = set(summary["group"][summary["status"] == "ok"])
    # the interrupt may come before the client has received the result of the group
    # whose sidecar it waited for: the summary may list no group as ok yet
    assert "not run" in set(summary["status"])
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    for spec in out.glob("*.spec.fits"):  # whatever was written is complete
        with fits.open(spec) as hdul:
            assert len(hdul["SPEC1D"].data) > 20
    finished = {p.name[: -len(".batch.json")] for p in out.glob("*.batch.json")}
    assert len(finished) >= 1  # the interrupt came after a group had completed
    # resume: only the groups not finished are run
    assert main(["-q", *args, "--resume"]) == 0
    again = Table.read(out / "summary.ecsv")
    assert np.all(again["status"] == "ok")
    # a task already running when the run stopped may still have finished: a group is
    # done exactly when its sidecar exists
    assert done <= finished
    assert set(again["group"][again["resumed"]]) == finished
    assert len(again["group"][~again["resumed"]]) >= 1


# ------------------------------------------------------------------------ failure capture
def test_unexpected_exception_is_recorded_as_bug(data, tmp_path, monkeypatch):
    import slitcombine.batch as batch

    def boom(*args, **kwargs):
        raise ZeroDivisionError("simulated bug")

    monkeypatch.setattr(batch, "_work_prepare", boom)
    cfg = Config.default().with_overrides(["batch.mode=prepare"])
    members = [str(f) for f in data["sims"][0].files]
    rec = process_group({"group": "g", "members": members}, cfg, tmp_path)
    assert rec["status"] == "failed" and rec["bug"] is True
    assert rec["error"] == "ZeroDivisionError: simulated bug"
    log_text = (tmp_path / "logs" / "g.log").read_text()
    assert "Traceback" in log_text and "a bug" in log_text
    side = json.loads((tmp_path / "g.batch.json").read_text())
    assert side["bug"] is True and side["inputs_hash"] == inputs_hash(members)


def test_nested_folders_need_recursive_discovery(data, tmp_path, capsys):
    """MAST-like nesting: slit files one level down are found with discovery.recursive."""
    import shutil

    from slitcombine.discovery import read_manifest

    top = tmp_path / "mastDownload"
    obs = top / "JWST" / "obs1"
    obs.mkdir(parents=True)
    for f in data["multi"].files:
        shutil.copy(f, obs)
    args = ["batch", str(top), "--output-dir", str(tmp_path / "o"), "--dry-run"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "no slit files" in err and "in this folder;" in err
    assert "--set discovery.recursive=true" in err
    assert main([*args, "--set", "discovery.recursive=true"]) == 0
    groups = read_manifest(tmp_path / "o" / "manifest.ecsv")
    assert len(groups) == 3  # the three sources of the MultiSlitModel files
    assert all(str(obs) in str(m) for g in groups for m in g.members)


def test_bad_inputs_are_usage_errors(data, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no slits here")
    assert main(["batch", str(empty), "--output-dir", str(tmp_path / "o")]) == 2
    assert "no slit files" in capsys.readouterr().err
    assert main(["batch", str(tmp_path / "nope"), "--output-dir", str(tmp_path / "o")]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    # duplicate group names in a manifest
    groups, _ = discover([data["sims"][0].files[0].parent])
    path = write_manifest(groups[:2], tmp_path / "dup.ecsv")
    t = Table.read(path)
    t["group"] = ["same", "same"]
    t.write(path, overwrite=True)
    assert main(["batch", str(path), "--output-dir", str(tmp_path / "o")]) == 2
    assert "duplicated group name" in capsys.readouterr().err


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_scheduler_is_a_clear_error(data, tmp_path, capsys):
    groups, _ = discover([data["sims"][0].files[0]])
    path = write_manifest(groups, tmp_path / "m.ecsv")
    address = f"tcp://127.0.0.1:{_free_port()}"
    rc = main(
        ["batch", str(path), "--output-dir", str(tmp_path / "o"), "--scheduler", address]
        + ["--timeout", "2"]
    )
    assert rc == 2
    assert f"cannot connect to the dask scheduler '{address}'" in capsys.readouterr().err


# ------------------------------------------------------------------------ external cluster
def _wait_for_port(port, proc, timeout=60.0):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            return False
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.2)
    return False


def test_external_scheduler_and_manifest_with_missing_file(data, tmp_path):
    """`dask scheduler` + `dask worker` processes; a manifest group names a missing file."""
    groups, _ = discover([f for s in data["sims"][:3] for f in s.files])
    path = write_manifest(groups, tmp_path / "manifest.ecsv")
    t = Table.read(path)
    files = str(t["files"][1]).split(";")
    files[2] = files[2].replace("00003", "00007")  # a file that does not exist
    t["files"][1] = ";".join(files)
    t.write(path, overwrite=True)

    dask = shutil.which("dask") or str(Path(sys.executable).parent / "dask")
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    logs = [open(tmp_path / n, "wb") for n in ("scheduler.log", "worker.log")]  # noqa: SIM115
    procs = []
    try:
        procs.append(
            subprocess.Popen(
                [dask, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
                stdout=logs[0],
                stderr=subprocess.STDOUT,
            )
        )
        assert _wait_for_port(port, procs[0]), (tmp_path / "scheduler.log").read_text()
        procs.append(
            subprocess.Popen(
                [dask, "worker", address, "--nworkers", "1", "--nthreads", "1", "--no-dashboard"],
                stdout=logs[1],
                stderr=subprocess.STDOUT,
            )
        )
        out = tmp_path / "out"
        rc = main(
            ["-q", "batch", str(path), "--output-dir", str(out), "--scheduler", address]
            + ["--timeout", "90", "--set", "batch.figures=false"]
        )
        summary = Table.read(out / "summary.ecsv")
        assert rc == 1
        assert list(summary["status"]) == ["ok", "failed", "ok"]
        assert "00007" in summary["error"][1] and "file not found" in summary["error"][1]
        assert summary.meta["executor"] == address
        for name in summary["group"][[0, 2]]:
            assert (out / f"{name}.spec.fits").is_file()
        worker_pids = {str(w).rsplit(":", 1)[1] for w in summary["worker"]}
        assert str(os.getpid()) not in worker_pids  # the work ran in the dask worker
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in reversed(procs):
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for fh in logs:
            fh.close()


def test_each_exposure_is_used_once(tmp_path, caplog):
    """A MultiSlitModel file and the per-slit file cut from it hold the same exposure;
    a file reached through two paths (folder + file, symbolic link) is one file."""
    import logging

    from slitcombine import SlitGroup
    from slitcombine.discovery import discover, read_manifest, write_manifest
    from slitcombine.errors import IncompatibleExposuresError
    from slitcombine.simulate import simulate_observation

    opts = dict(seed=6, nx=100, snr=20, n_crs=0)
    multi = simulate_observation(tmp_path / "ms", multi_slit_sources=2, **opts)
    single = simulate_observation(tmp_path / "msp", source_id=1, slitlet_id=42, **opts)
    with caplog.at_level(logging.WARNING, logger="slitcombine"):
        groups, _ = discover([tmp_path / "ms", tmp_path / "msp"])
    by_source = {g.info["source_id"]: g for g in groups}
    assert by_source[1].info["n_exposures"] == 3  # not 6
    assert all(isinstance(m, str) for m in by_source[1].members)  # the per-slit files
    assert "repeats the exposure of" in caplog.text
    with pytest.raises(IncompatibleExposuresError, match="the same exposure as"):
        SlitGroup([(str(multi.files[0]), 1), str(single.files[0])], "twice")
    # one file, three paths
    (tmp_path / "link").symlink_to(tmp_path / "msp")
    paths = [tmp_path / "msp", tmp_path / "link", single.files[0].resolve()]
    (group,) = discover(paths)[0]
    assert group.info["n_exposures"] == 3
    # unknown ids stay unknown through a manifest
    group.info["slitlet_id"] = None
    back = read_manifest(write_manifest([group], tmp_path / "m.ecsv"))
    assert back[0].info["slitlet_id"] is None


def test_failed_rerun_removes_stale_products_and_odd_names_are_skipped(tmp_path, capsys):
    """A group that fails on a rerun leaves no product of the earlier run behind; a file
    whose name holds the manifest separator is skipped, not fatal; -q works after the
    command."""
    from astropy.table import Table

    from slitcombine.simulate import simulate_observation

    sim = simulate_observation(tmp_path / "in", seed=4, nx=80, snr=20, n_crs=0)
    odd = tmp_path / "in" / "jw09999001001_03101_00009_nrs1_phot.042.a;b.fits"
    odd.write_bytes(sim.files[0].read_bytes())
    out = tmp_path / "out"
    args = ["batch", str(tmp_path / "in"), "--output-dir", str(out), "--workers", "1", "-q"]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "a;b.fits" in err and "manifest separator" in err
    (spec,) = out.glob("*.spec.fits")
    manifest = Table.read(out / "manifest.ecsv")
    manifest["files"] = [str(tmp_path / "missing_phot.fits")]
    manifest.write(tmp_path / "broken.ecsv", overwrite=True)
    rerun = ["batch", str(tmp_path / "broken.ecsv"), "--output-dir", str(out), "--workers", "1"]
    assert main([*rerun, "-q"]) == 1
    assert not spec.exists() and not list(out.glob("*.png"))
    summary = Table.read(out / "summary.ecsv")
    assert list(summary["status"]) == ["failed"]
