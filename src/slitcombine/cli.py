"""The ``slitcombine`` command line.

Each subcommand imports what it needs inside its function, so ``--help`` and
``--version`` are fast.  Errors of the package (:class:`SlitCombineError`) are shown as
one line with exit code 2; a traceback only with ``-v``.
"""

from __future__ import annotations

import argparse
import gc
import logging
import sys
from pathlib import Path

from slitcombine._version import __version__
from slitcombine.errors import SlitCombineError

log = logging.getLogger("slitcombine")


def _one_line(message):
    """``message`` on one line (a parser's error quoted in an error may span several)."""
    return " ".join(str(message).split())


def _cmd_info(args):
    from slitcombine.io.reading import list_slits, read_slit
    from slitcombine.pipeline.discovery import expand_patterns

    status = 0
    exposures = []
    try:
        files = expand_patterns(args.files)
    except SlitCombineError as exc:
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return 2
    for path in files:
        try:
            slits = list_slits(path)
            if len(slits) > 1:
                print(f"{path}: MultiSlitModel with {len(slits)} slits")
                for s in slits:
                    exp = read_slit(path, extver=s["extver"])
                    print("  " + exp.summary())
            else:
                exp = read_slit(path)
                exposures.append(exp)
                print(exp.summary())
        except SlitCombineError as exc:
            print(f"error: {_one_line(exc)}", file=sys.stderr)
            status = 2
    for line in _nod_offset_lines(exposures):
        print(line)
    return status


def _nod_offset_lines(exposures):
    """Nod offsets (arcsec, shutters, pixels) of the exposures of each source/slitlet."""
    from slitcombine.core.nods import nod_offsets
    from slitcombine.instrument import PIXEL_SCALE, SHUTTER_PITCH

    groups = {}
    for exp in exposures:
        key = (exp.slit.get("source_name"), exp.slit.get("slitlet_id"), exp.grating, exp.filter)
        groups.setdefault(key, []).append(exp)
    lines = []
    for (source, slitlet, grating, filt), members in groups.items():
        y = [m.meta["dither"].get("y_offset") for m in members]
        if len(members) < 2 or any(v is None for v in y):
            continue
        ref, arcsec, shutters, pixels = nod_offsets(y)
        lines.append(
            f"nod offsets of {source} (slitlet {slitlet}, {grating}/{filt}) from the median "
            f"YOFFSET {ref:.3f} arcsec (1 shutter = {SHUTTER_PITCH} arcsec = "
            f"{SHUTTER_PITCH / PIXEL_SCALE:.2f} px at the nominal {PIXEL_SCALE} arcsec/px):"
        )
        for m, a, sh, px in zip(members, arcsec, shutters, pixels, strict=True):
            lines.append(f"  {m.path.name}: {a:+.3f} arcsec = {sh:+.2f} shutter = {px:+.2f} px")
    return lines


def _add_demo(sub):
    p = sub.add_parser("demo", help="simulate a 3-nod PRISM observation and combine it")
    p.add_argument(
        "--output-dir", default="slitcombine-demo", help="where to write (default %(default)s)"
    )
    p.add_argument("--seed", type=int, default=1, help="random seed (default %(default)s)")
    p.set_defaults(func=_cmd_demo)


def _cmd_demo(args):
    from slitcombine.testing.demo import run_demo

    result = run_demo(args.output_dir, seed=args.seed)
    for line in result["lines"]:
        print(line)
    return 0


def _add_simulate(sub):
    p = sub.add_parser("simulate", help="write simulated NIRSpec slit files with a truth table")
    p.add_argument("output_dir")
    p.add_argument("--grating", default="PRISM")
    p.add_argument("--filter", default=None)
    p.add_argument("--shutters", type=int, default=3, help="shutters in the slitlet (1, 2, 3 or 5)")
    p.add_argument("--fixed-slit", default=None, help="fixed slit name, e.g. S200A1")
    p.add_argument("--nods", type=int, default=3, help="nod positions (2 or 3)")
    p.add_argument("--per-position", type=int, default=1, help="exposures per nod position")
    p.add_argument("--snr", type=float, default=20.0)
    p.add_argument("--redshift", type=float, default=4.23)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--crs", type=int, default=20, help="cosmic rays per exposure (not flagged)")
    p.add_argument("--source-id", type=int, default=1, help="SOURCEID (default %(default)s)")
    p.add_argument("--slitlet-id", type=int, default=42, help="SLITID (default %(default)s)")
    p.add_argument(
        "--visit",
        default="jw09999001001",
        help="visit root jwPPPPPOOOVVV: program, observation, visit (default %(default)s)",
    )
    p.add_argument("--detector", default="NRS1", help="NRS1 or NRS2 (default %(default)s)")
    p.set_defaults(func=_cmd_simulate)


def _cmd_simulate(args):
    from slitcombine.testing.simulate import simulate_observation

    sim = simulate_observation(
        args.output_dir,
        grating=args.grating,
        filter=args.filter,
        n_shutters=args.shutters,
        fixed_slit=args.fixed_slit,
        n_nods=args.nods,
        n_per_position=args.per_position,
        snr=args.snr,
        redshift=args.redshift,
        n_crs=args.crs,
        seed=args.seed,
        root=args.visit,
        source_id=args.source_id,
        slitlet_id=args.slitlet_id,
        detector=args.detector.upper(),
    )
    for f in sim.files:
        print(f)
    print(sim.truth_path)
    return 0


def _add_extract(sub):
    p = sub.add_parser(
        "extract", help="combine the exposures of one source: 2D + optimal 1D spectrum"
    )
    p.add_argument(
        "files",
        nargs="+",
        metavar="FILE",
        help="exposures of one source: per-slit *_phot.*.fits files, or MultiSlitModel "
        "*_cal.fits files with --source-id",
    )
    p.add_argument(
        "--source-id",
        default=None,
        metavar="ID",
        help="the source to take from each file (needed for MultiSlitModel files)",
    )
    p.add_argument("--name", default=None, help="output name (default: source_grating-filter)")
    p.add_argument("--output-dir", default=".", help="where to write (default %(default)s)")
    p.add_argument("--no-figures", action="store_true", help="do not write the PNG figures")
    _add_figure_dpi_option(p)
    _add_config_options(p)
    p.set_defaults(func=_cmd_extract)


def _cmd_extract(args):
    import numpy as np

    from slitcombine.io.output import check_output_dir
    from slitcombine.pipeline.combine import combine
    from slitcombine.pipeline.discovery import expand_patterns

    check_output_dir(args.output_dir)  # fail before the work, not after
    config = _load_config(args)
    files = expand_patterns(args.files)
    if args.source_id is not None:
        sid = args.source_id.strip()
        sid = int(sid) if sid.lstrip("+-").isdigit() else sid
        files = [(f, sid) for f in files]
    result = combine(files, name=args.name, **config.combine_kwargs())
    result.provenance["config_hash"] = config.hash
    figures = config.section("batch")
    paths = result.write(
        args.output_dir, figures=figures["figures"], figure_dpi=figures["figure_dpi"]
    )
    spec = result.spec
    valid = np.asarray(spec["valid"])
    sn = np.asarray(spec["flux"] / spec["err"])[valid]
    scale = result.params.get("error_scale", 1.0)
    noise = (result.params.get("noise_scale") or {}).get("scale")
    applied = "applied" if result.params.get("rescale_variance") else "not applied"
    noise_text = (
        f"; noise {noise:.2f}x the pipeline's sigma ({applied}: errors x{scale:.2f})"
        if isinstance(noise, float)
        else ""
    )
    print(
        f"{result.name}: {int(valid.sum())}/{len(spec)} valid bins, "
        f"median S/N {np.nanmedian(sn):.2f}, max S/N {np.nanmax(sn):.1f}{noise_text}"
    )
    for path in paths.values():
        print(path)
    return 0


def _discovery_lines(inputs, groups, skipped, config):
    """What discovery found: files, folders, groups, skipped files and unsearched folders."""
    from collections import Counter

    from slitcombine.pipeline.discovery import unsearched_folders

    files = {str(m[0] if isinstance(m, (tuple, list)) else m) for g in groups for m in g.members}
    folders = {str(Path(f).parent) for f in files}
    kinds = Counter(
        f"{g.info.get('grating')}/{g.info.get('filter')}" for g in groups if g.info.get("grating")
    )
    lines = [
        f"found {len(files)} slit file(s) in {len(folders)} folder(s): {len(groups)} group(s)"
        + (f" ({', '.join(f'{n} {k}' for k, n in sorted(kinds.items()))})" if kinds else "")
        + f"; {len(skipped)} file(s) skipped"
    ]
    d = config.section("discovery")
    if not d["recursive"]:
        dirs = [i for i in inputs if not str(i).lower().endswith(".ecsv")]
        for folder, n in unsearched_folders(dirs, d["patterns"]):
            lines.append(
                f"not searched: {folder} ({n} slit file(s)); search sub-folders with "
                "--set discovery.recursive=true"
            )
    return lines


def _add_config_options(p):
    p.add_argument("--config", metavar="FILE.toml", default=None, help="TOML configuration")
    p.add_argument(
        "--set",
        metavar="STEP.PARAM=VALUE",
        action="append",
        default=[],
        help="override one option, e.g. group.weight_type=poisson (repeatable)",
    )


def _add_figure_dpi_option(p):
    p.add_argument(
        "--figure-dpi",
        metavar="N",
        default=None,
        help="resolution of the PNG figures, dots per inch (10-600; default: "
        "batch.figure_dpi of the configuration, 80)",
    )


def _figure_overrides(args):
    """The figure options of the command line as ``--set`` overrides (checked first, so
    that a bad value is reported with the option's name)."""
    from slitcombine.errors import ConfigurationError
    from slitcombine.plots import DPI_RANGE, check_figure_options

    figures = "none" if getattr(args, "no_figures", False) else getattr(args, "figures", None)
    dpi = getattr(args, "figure_dpi", None)
    if dpi is not None:
        try:
            dpi = float(dpi)
        except ValueError as exc:
            lo, hi = DPI_RANGE
            raise ConfigurationError(
                f"--figure-dpi must be a number of dots per inch from {lo} to {hi}, got {dpi!r}"
            ) from exc
    if figures is None and dpi is None:
        return []
    check_figure_options(
        True if figures is None else figures, dpi, names=("--figures", "--figure-dpi")
    )
    overrides = [] if figures is None else [f"batch.figures={figures.strip().lower()}"]
    return overrides + ([] if dpi is None else [f"batch.figure_dpi={dpi:g}"])


def _load_config(args):
    """The effective configuration: ``--config``, then ``--set``, then the figure options
    given as their own flags (``--figures``, ``--figure-dpi``, ``--no-figures``)."""
    from slitcombine.pipeline.config import load_config

    return load_config(args.config, [*args.set, *_figure_overrides(args)])


def _add_batch(sub):
    import os

    p = sub.add_parser(
        "batch",
        help="combine every source/grating/visit group of folders, files or a manifest",
        description="Find slit files (folders, files) or read manifests (*.ecsv), group "
        "them by source, grating/filter and visit, and combine every group on dask. "
        "Exit status: 0 all groups ok, 1 some groups failed, 2 bad input or usage.",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="folders, slit files, manifests")
    p.add_argument("--output-dir", required=True, help="where to write")
    p.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="local worker processes (default %(default)s)",
    )
    p.add_argument("--scheduler", default=None, metavar="ADDRESS", help="tcp://host:port")
    p.add_argument("--resume", action="store_true", help="skip groups done with this config")
    p.add_argument(
        "--retry-failed", action="store_true", help="with --resume, rerun bad-input failures"
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        help="seconds to reach the scheduler and its first worker (default 10)",
    )
    p.add_argument(
        "--dry-run", action="store_true", help="only write manifest.ecsv and config.toml"
    )
    p.add_argument(
        "--figures",
        metavar="{all,summary,none}",
        default=None,
        help="PNG figures of each group: all (summary .fnu.png and nod differences "
        ".d2d.png), summary or none (default: batch.figures of the configuration, all)",
    )
    _add_figure_dpi_option(p)
    _add_config_options(p)
    p.set_defaults(func=_cmd_batch)


def _cmd_batch(args):
    from slitcombine.pipeline.batch import (
        BatchInterrupted,
        groups_from_inputs,
        output_lock,
        run_batch,
        write_inputs,
    )

    # dask's own INFO messages only with -vv
    logging.getLogger("distributed").setLevel(logging.INFO if args.verbose > 1 else logging.WARNING)
    config = _load_config(args)
    groups, skipped = groups_from_inputs(args.inputs, config)
    for _, reason in skipped:
        print(f"skipped {_one_line(reason)}", file=sys.stderr)
    if args.dry_run:
        with output_lock(args.output_dir):  # not under a running batch's feet
            paths = write_inputs(groups, config, args.output_dir)
        for line in _discovery_lines(args.inputs, groups, skipped, config):
            print(line)
        for path in paths:
            print(path)
        return 0
    try:
        result = run_batch(
            groups,
            config,
            args.output_dir,
            workers=args.workers,
            scheduler=args.scheduler,
            resume=args.resume,
            retry_failed=args.retry_failed,
            progress=False if args.quiet else None,
            timeout=args.timeout,
            skipped_files=skipped,
        )
    except BatchInterrupted as exc:
        result = exc.result
        if result is None:
            print("interrupted before the run started: nothing written", file=sys.stderr)
        else:
            c = result.counts
            print(
                f"interrupted: {result.summary_path} lists {c['ok']} group(s) ok, "
                f"{c['failed']} failed, {c['not_run']} not run; run the same command with "
                "--resume to finish",
                file=sys.stderr,
            )
        return 130
    for r in result.records:
        if r["status"] != "ok":
            bug = " [unexpected error: a bug]" if r.get("bug") else ""
            print(f"failed {r['group']}: {_one_line(r.get('error', ''))}{bug}", file=sys.stderr)
        if r.get("stale_outputs"):
            print(
                f"kept {len(r['stale_outputs'])} stale product(s) of {r['group']} from an "
                f"earlier run ({r['stale_from']})",
                file=sys.stderr,
            )
    c = result.counts
    print(
        f"{len(result.records)} group(s): {c['ok']} ok, {c['failed']} failed, "
        f"{c['resumed']} from a previous run; {result.wall_time:.1f} s "
        f"(+{result.startup_time:.1f} s cluster start)"
    )
    if c.get("warned"):
        print(
            f"{c['warned']} of the ok group(s) finished with warnings: see the warnings "
            "column of summary.ecsv and their logs"
        )
    print(result.summary_path)
    print(result.index_path)
    return result.exit_code


def _add_calib(sub):
    p = sub.add_parser(
        "calib",
        help="calibration tables: fetch msaexp's published tables, show what uses them",
        description="The seed's default steps (global sky, PRISM renormalisation, bar-shadow "
        "tables, extended-range sensitivity, extra bad pixels) read reference tables that "
        "msaexp publishes inside its package.  'fetch' downloads that package with pip "
        "(nothing is installed) and keeps only its tables, in the user cache; they are "
        "searched after $SLITCOMBINE_CALIB_DIR.  Exit status 2 on any error.",
    )
    csub = p.add_subparsers(dest="calib_command", metavar="ACTION")
    f = csub.add_parser(
        "fetch",
        help="download msaexp's distribution with pip and unpack its tables into the cache",
    )
    f.add_argument(
        "--msaexp-version",
        default=None,
        metavar="V",
        help="msaexp version (default: the one slitcombine was compared with, or the archive's)",
    )
    f.add_argument(
        "--from-archive",
        default=None,
        metavar="FILE",
        help="unpack a local msaexp source archive (.tar.gz) or wheel instead of running pip",
    )
    f.add_argument("--force", action="store_true", help="fetch again even if already there")
    f.set_defaults(func=_cmd_calib_fetch)
    s = csub.add_parser("status", help="which default steps will run, with which table")
    s.add_argument("files", nargs="*", metavar="FILE", help="slit files to check")
    s.add_argument("--grating", default=None, help="a grating instead of files (e.g. PRISM)")
    s.add_argument("--filter", default=None, help="with --grating (e.g. CLEAR)")
    _add_config_options(s)
    s.set_defaults(func=_cmd_calib_status)
    q = csub.add_parser("path", help="print the folder of the fetched tables")
    q.set_defaults(func=_cmd_calib_path)
    for action in csub.choices.values():
        for flag, name, text in (("-v", "--verbose", "more"), ("-q", "--quiet", "fewer")):
            action.add_argument(
                flag, name, action="count", default=argparse.SUPPRESS, help=f"{text} messages"
            )
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _cmd_calib_fetch(args):
    from slitcombine.io.calib import fetch

    result = fetch(
        version=args.msaexp_version,
        archive=args.from_archive,
        force=args.force,
        report=lambda message: print(f"{message} ...", flush=True),
    )
    m = result.manifest
    counts = ", ".join(f"{n} {kind}" for kind, n in result.counts.items())
    state = "fetched" if result.changed else "already there (intact)"
    print(f"msaexp {m['version']} tables {state}: {counts}")
    print(f"from {m['archive']['name']} (sha256 {m['archive']['sha256'][:16]}...)")
    print(result.folder)
    return 0


def _cmd_calib_status(args):
    from slitcombine.group.calib_plan import Target, default_plan, format_plan, target_from_file
    from slitcombine.io.calib import read_manifest
    from slitcombine.io.tables import CALIB_DIR_ENV, calibration_dirs

    dirs = calibration_dirs()
    env_dirs = calibration_dirs(fetched=False)
    print("calibration folders, searched in order:")
    if not dirs:
        print(f"  none: ${CALIB_DIR_ENV} is not set and no tables were fetched")
    for d in dirs:
        if d in env_dirs:
            print(f"  {d}  (${CALIB_DIR_ENV})")
        else:
            m = read_manifest(d) or {}
            print(f"  {d}  (msaexp {m.get('version')} tables, slitcombine calib fetch)")
    options = None
    if args.config or args.set:
        options = _load_config(args).group_kwargs()
    if args.files:
        targets = [target_from_file(f) for f in args.files]
    else:
        grating = args.grating.upper() if args.grating else None
        filt = args.filter.upper() if args.filter else ("CLEAR" if grating == "PRISM" else None)
        targets = [Target(grating=grating, filter=filt, label=grating or "any grating")]
    missing = False
    for t in targets:
        rows = default_plan(t, options, dirs)
        missing |= any(r.missing for r in rows)
        print()
        print(format_plan(t, rows, dirs))
    if missing:
        print("\nsome default steps will be skipped: run `slitcombine calib fetch`")
    return 0


def _cmd_calib_path(args):
    from slitcombine.io.calib import fetched_dir, tables_dir

    folder = fetched_dir()
    if folder is None:
        print(f"{tables_dir()} (nothing fetched yet: slitcombine calib fetch)", file=sys.stderr)
        print(tables_dir())
        return 1
    print(folder)
    return 0


def build_parser():
    """The argument parser of the ``slitcombine`` command."""
    parser = argparse.ArgumentParser(
        prog="slitcombine",
        description="Combine JWST NIRSpec MSA / fixed-slit 2D spectra into 2D and 1D spectra.",
    )
    parser.add_argument("--version", action="version", version=f"slitcombine {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more messages")
    parser.add_argument("-q", "--quiet", action="count", default=0, help="fewer messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser("info", help="summarise slit files")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.set_defaults(func=_cmd_info)
    _add_demo(sub)
    _add_simulate(sub)
    _add_extract(sub)
    _add_batch(sub)
    _add_calib(sub)
    # -v/-q also after the command (``slitcombine batch ... -q``); given there they
    # replace the count given before it
    for command in sub.choices.values():
        for flag, name, text in (("-v", "--verbose", "more"), ("-q", "--quiet", "fewer")):
            command.add_argument(
                flag, name, action="count", default=argparse.SUPPRESS, help=f"{text} messages"
            )
    return parser


def main(argv=None):
    """Entry point of the ``slitcombine`` console script.

    Returns
    -------
    int
        Exit status: 0 success, 2 a reported error, 1 an unexpected failure.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * args.verbose + 10 * args.quiet
    logging.basicConfig(
        level=max(level, logging.DEBUG), format="%(levelname)s %(name)s: %(message)s"
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except SlitCombineError as exc:
        if args.verbose:
            log.exception("failed")
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return 2


def console_main(argv=None):
    """The ``slitcombine`` console script: :func:`main`, then a quick interpreter exit.

    When the process ends, Python tears down its ~1200 modules and runs its cyclic
    garbage collector several times on the way, each time over every object that the
    numpy/scipy/astropy/matplotlib imports left behind: ~0.3 s of a ~2.2 s
    ``slitcombine extract`` on the reference machine.  The command is finished at that
    point (output files closed and renamed into place, a dask cluster shut down), so
    the remaining objects are frozen (:func:`gc.freeze`) and the collector skips them;
    the interpreter still flushes stdout/stderr and runs the ``atexit`` handlers
    (logging's among them) as usual.  :func:`main` itself does not do this, so calling
    it from Python (tests, notebooks) leaves the collector alone.

    Parameters
    ----------
    argv : list of str or None
        Arguments (default ``sys.argv[1:]``).

    Returns
    -------
    int
        The exit status of :func:`main`.
    """
    status = main(argv)
    gc.freeze()
    return status


if __name__ == "__main__":  # pragma: no cover
    sys.exit(console_main())
