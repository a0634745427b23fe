"""Helpers for the slitcombine benchmark scripts: shared data and the msaexp peer process.

msaexp is never imported here.  It runs in its own virtual environment, as a subprocess
executing ``benchmarks/msaexp_peer.py``, which prints one JSON object to stdout.  This module
only uses the standard library, so importing it costs nothing and needs no msaexp.

Typical use from a ``benchmarks/bench_*.py`` script::

    from _peer import ceers_files, run_peer

    ref = run_peer(args.msaexp_python, "slitgroup", [*map(str, ceers_files()), "--repeat", "3"])
    print(ref["variants"]["default"]["timing"]["median_s"])
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

#: Repository root (the parent of ``benchmarks/``).
REPO_ROOT = Path(__file__).resolve().parents[1]
#: The peer script, run by the msaexp interpreter.
PEER_SCRIPT = Path(__file__).resolve().with_name("msaexp_peer.py")
#: Where the msaexp 0.9.19 / jwst 1.16.1 environment lives on the reference machine.
DEFAULT_MSAEXP_PYTHON = "/root/msaexp-venv/bin/python"
#: Environment variable that overrides :data:`DEFAULT_MSAEXP_PYTHON`.
MSAEXP_PYTHON_ENV = "SLITCOMBINE_MSAEXP_PYTHON"

CEERS_DIR = "data/ceers-prism-1345_933"
CEERS_PATTERN = "jw01345062001_03101_0000?_nrs2_phot.138.1345_933.fits"
SUBCOMMANDS = ("slitgroup", "fit_all_traces", "extract", "read_spectrum", "data_dir")


class PeerError(RuntimeError):
    """The msaexp peer could not be run or did not return a JSON result."""


def find_shared() -> Path:
    """Return the shared folder: ``$SLITCOMBINE_SHARED`` or ``../shared`` from the repo root."""
    env = os.environ.get("SLITCOMBINE_SHARED")
    path = Path(env).expanduser() if env else REPO_ROOT.parent / "shared"
    if not path.is_dir():
        how = "SLITCOMBINE_SHARED" if env else f"{REPO_ROOT.parent / 'shared'} (default)"
        raise FileNotFoundError(f"shared data folder not found: {path} (from {how})")
    return path.resolve()


def ceers_files(shared: Path | None = None) -> list[Path]:
    """The three CEERS PRISM nod exposures of source 1345_933, sorted by exposure number."""
    folder = (Path(shared) if shared is not None else find_shared()) / CEERS_DIR
    files = sorted(folder.glob(CEERS_PATTERN))
    if len(files) != 3:
        raise FileNotFoundError(
            f"expected 3 files matching {CEERS_PATTERN} in {folder}, found {len(files)}"
        )
    return files


def default_msaexp_python() -> str:
    """``$SLITCOMBINE_MSAEXP_PYTHON`` or :data:`DEFAULT_MSAEXP_PYTHON`."""
    return os.environ.get(MSAEXP_PYTHON_ENV) or DEFAULT_MSAEXP_PYTHON


def peer_env(crds_path: str) -> dict[str, str]:
    """Environment for the peer: offline CRDS, a scratch CRDS cache, non-interactive plots.

    Variables that would leak this interpreter's packages into the msaexp venv
    (``PYTHONPATH``, ``PYTHONHOME``, ``VIRTUAL_ENV``) are removed.
    """
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "__PYVENV_LAUNCHER__")
    }
    env.update(
        {
            "CRDS_SERVER_URL": "https://localhost:1",
            "CRDS_PATH": crds_path,
            "MPLBACKEND": "Agg",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def run_peer(
    python: str | os.PathLike | None,
    subcommand: str,
    args: list[str] | tuple[str, ...] = (),
    timeout: float | None = 900,
    *,
    stderr_path: str | os.PathLike | None = None,
) -> dict:
    """Run ``msaexp_peer.py SUBCOMMAND ARGS...`` with the msaexp interpreter; return its JSON.

    Parameters
    ----------
    python
        The msaexp virtual environment's python; ``None`` means :func:`default_msaexp_python`.
    subcommand
        ``"slitgroup"``, ``"fit_all_traces"``, ``"extract"``, ``"read_spectrum"`` or
        ``"data_dir"``.
    args
        Further command-line arguments (input files first, then options).
    timeout
        Seconds before the peer is killed (``None``: no limit).
    stderr_path
        If given, the peer's stderr (msaexp's log and warnings) is written to this file.

    Raises
    ------
    PeerError
        If the interpreter does not exist, the peer exits with an error or times out, or its
        stdout is not one JSON object.
    """
    if subcommand not in SUBCOMMANDS:
        raise ValueError(f"unknown subcommand {subcommand!r}; expected one of {SUBCOMMANDS}")
    python = str(python) if python is not None else default_msaexp_python()
    exe = Path(python)
    if not (exe.is_file() and os.access(exe, os.X_OK)):
        raise PeerError(
            f"msaexp python not found or not executable: {python!r}. Pass --msaexp-python or "
            f"set {MSAEXP_PYTHON_ENV} to the python of a virtual environment with msaexp."
        )
    cmd = [python, str(PEER_SCRIPT), subcommand, *map(str, args)]
    with tempfile.TemporaryDirectory(prefix="slitcombine_crds_") as crds:
        try:
            proc = subprocess.run(
                cmd,
                env=peer_env(crds),
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise PeerError(f"msaexp peer timed out after {timeout} s: {' '.join(cmd)}") from exc
    if stderr_path is not None:
        Path(stderr_path).write_text(proc.stderr)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-25:])
        raise PeerError(
            f"msaexp peer failed (exit code {proc.returncode}): {' '.join(cmd)}\n"
            f"--- last lines of stderr ---\n{tail}"
        )
    try:
        return json.loads(proc.stdout)
    except json.JSONDecodeError as exc:
        raise PeerError(
            f"msaexp peer did not print one JSON object ({exc}); stdout starts with "
            f"{proc.stdout[:300]!r}"
        ) from exc


def ensure_bytecode():
    """Byte-compile the installed slitcombine package, as ``pip install .`` does.

    A regular install writes ``__pycache__`` at install time (the msaexp venv has it
    for every package).  An editable install from the repository compiles the sources
    on every import when ``PYTHONDONTWRITEBYTECODE`` is set (it is on the reference
    machine): ~70 ms per process that a user never pays.  Returns the package folder.
    """
    import compileall
    import importlib.util

    spec = importlib.util.find_spec("slitcombine")
    folder = Path(next(iter(spec.submodule_search_locations)))
    compileall.compile_dir(folder, quiet=1)
    return folder


def run_fresh_child(script, repeat, files):
    """Run ``script --child --repeat R FILES...`` with this python in a fresh process.

    The child times slitcombine after its imports and prints one JSON object as its
    last line; that object is returned.
    """
    proc = subprocess.run(
        [sys.executable, str(script), "--child", "--repeat", str(repeat), *map(str, files)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def fresh_child_main(script, doc, child, default_repeat):
    """The command line shared by the fresh-process benchmarks.

    Parses ``[--msaexp-python P] [--repeat R] [FILES...]`` (default files: the CEERS
    trio).  Run as ``--child`` (by :func:`run_fresh_child`), calls ``child(files,
    repeat)`` and returns None; otherwise times the script in a fresh child process.

    Returns
    -------
    tuple or None
        ``(args, files, ours)`` with ``ours`` the child's JSON object, or None in the
        child.
    """
    import argparse

    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--msaexp-python", default=None)
    parser.add_argument("--repeat", type=int, default=default_repeat)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("files", nargs="*")
    args = parser.parse_args()
    files = args.files or [str(f) for f in ceers_files()]
    if args.child:
        child(files, args.repeat)
        return None
    ensure_bytecode()
    return args, files, run_fresh_child(script, args.repeat, files)


if __name__ == "__main__":  # tiny smoke test: python benchmarks/_peer.py [msaexp-python]
    result = run_peer(
        sys.argv[1] if len(sys.argv) > 1 else None,
        "slitgroup",
        [*map(str, ceers_files()), "--repeat", "1", "--variants", "nobar_nosky"],
    )
    res = result["variants"]["nobar_nosky"]
    print(json.dumps({"versions": result["versions"], "timing": res["timing"]}, indent=1))
