"""The ``slitcombine`` command line.

Each subcommand imports what it needs inside its function, so ``--help`` and
``--version`` are fast.  Errors of the package (:class:`SlitCombineError`) are shown as
one line with exit code 2; a traceback only with ``-v``.
"""

from __future__ import annotations

import argparse
import logging
import sys

from ._version import __version__
from .errors import SlitCombineError

log = logging.getLogger("slitcombine")


def _cmd_info(args):
    from .reading import list_slits, read_slit

    status = 0
    for path in args.files:
        try:
            slits = list_slits(path)
            if len(slits) > 1:
                print(f"{path}: MultiSlitModel with {len(slits)} slits")
                for s in slits:
                    exp = read_slit(path, extver=s["extver"])
                    print("  " + exp.summary())
            else:
                print(read_slit(path).summary())
        except SlitCombineError as exc:
            print(f"error: {exc}", file=sys.stderr)
            status = 2
    return status


def _add_demo(sub):
    p = sub.add_parser("demo", help="simulate a 3-nod PRISM observation and combine it")
    p.add_argument(
        "--output-dir", default="slitcombine-demo", help="where to write (default %(default)s)"
    )
    p.add_argument("--seed", type=int, default=1, help="random seed (default %(default)s)")
    p.set_defaults(func=_cmd_demo)


def _cmd_demo(args):
    from .demo import run_demo

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
    p.set_defaults(func=_cmd_simulate)


def _cmd_simulate(args):
    from .simulate import simulate_observation

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
    )
    for f in sim.files:
        print(f)
    print(sim.truth_path)
    return 0


def _add_extract(sub):
    p = sub.add_parser(
        "extract", help="combine the exposures of one source: 2D + optimal 1D spectrum"
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="per-slit files of one source")
    p.add_argument("--name", default=None, help="output name (default: source_grating-filter)")
    p.add_argument("--output-dir", default=".", help="where to write (default %(default)s)")
    p.add_argument("--no-figures", action="store_true", help="do not write the PNG figures")
    p.set_defaults(func=_cmd_extract)


def _cmd_extract(args):
    import numpy as np

    from .combine import combine
    from .output import check_output_dir

    check_output_dir(args.output_dir)  # fail before the work, not after
    result = combine(args.files, name=args.name)
    paths = result.write(args.output_dir, figures=not args.no_figures)
    spec = result.spec
    valid = np.asarray(spec["valid"])
    sn = np.asarray(spec["flux"] / spec["err"])[valid]
    print(
        f"{result.name}: {int(valid.sum())}/{len(spec)} valid bins, "
        f"median S/N {np.nanmedian(sn):.2f}, max S/N {np.nanmax(sn):.1f}"
    )
    for path in paths.values():
        print(path)
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
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
