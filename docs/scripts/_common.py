"""Helpers shared by the documentation scripts (figures, validation tables).

Not part of the package: these scripts only use its public API.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path

os.environ.setdefault("MPLBACKEND", "Agg")

DOCS = Path(__file__).resolve().parents[1]
STATIC = DOCS / "_static"
REPO = DOCS.parent


def say(message):
    """Write one line of progress to stdout (the scripts' only output)."""
    sys.stdout.write(f"{message}\n")
    sys.stdout.flush()


def shown(path):
    """``path`` relative to the repository if it is inside it (for progress lines)."""
    path = Path(path).resolve()
    try:
        return path.relative_to(REPO)
    except ValueError:
        return path


def new_figure(figsize):
    """An object-oriented matplotlib figure (constrained layout, Agg canvas, no pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_png(fig, path, dpi=80):
    """Save a small optimised PNG and return its size in bytes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, pil_kwargs={"optimize": True})
    size = path.stat().st_size
    say(f"wrote {shown(path)} ({size / 1024:.0f} KB)")
    return size


def environment():
    """Versions and machine of the run, recorded next to every generated table."""
    import astropy
    import numpy
    import scipy

    import slitcombine

    return {
        "slitcombine": slitcombine.__version__,
        "python": sys.version.split()[0],
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
        "astropy": astropy.__version__,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "load_average_1_5_15min": [round(v, 2) for v in os.getloadavg()],
    }


def write_json(obj, path):
    """Write ``obj`` as indented JSON."""
    Path(path).write_text(json.dumps(obj, indent=1, default=str) + "\n")
    say(f"wrote {shown(path)}")


def shared_data():
    """The shared data folder (``$SLITCOMBINE_SHARED/data`` or ``../shared/data``), or None."""
    env = os.environ.get("SLITCOMBINE_SHARED")
    for base in ([Path(env)] if env else []) + [REPO.parent / "shared"]:
        if (base / "data").is_dir():
            return base / "data"
    return None
