"""Validation of the simulator's options: each raises ConfigurationError naming the option."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from slitcombine.core import optics
from slitcombine.errors import ConfigurationError, OutputError
from slitcombine.instrument import FIXED_SLITS, PIXEL_SCALE, SHUTTER_PITCH
from slitcombine.testing.sim_models import (
    GRATINGS,
    YSLIT_DIRECTION,
    EmissionLine,
    GratingSetup,
)
from slitcombine.testing.sim_optics import Exposure, Geometry, make_geometry

__all__ = [
    "ObservationPlan",
    "plan_observation",
    "check_int",
    "check_float",
    "check_source",
    "SOURCE_KEYS",
]


# --------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------
def check_int(name, value, minimum):
    """``value`` as an int >= ``minimum``, else ConfigurationError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ConfigurationError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ConfigurationError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_float(name, value, minimum=None, maximum=None, allow_none=False):
    """``value`` as a finite float in ``[minimum, maximum]`` (None if allowed)."""
    if value is None and allow_none:
        return None
    try:
        val = float(value)
    except (TypeError, ValueError):
        raise ConfigurationError(f"{name} must be a number, got {value!r}") from None
    if not np.isfinite(val):
        raise ConfigurationError(f"{name} must be finite, got {value!r}")
    if minimum is not None and val < minimum:
        raise ConfigurationError(f"{name} must be >= {minimum}, got {value!r}")
    if maximum is not None and val > maximum:
        raise ConfigurationError(f"{name} must be <= {maximum}, got {value!r}")
    return val


def check_lines(lines):
    if lines is None:
        return None
    if isinstance(lines, (str, bytes)) or not isinstance(lines, Sequence):
        raise ConfigurationError("lines must be a sequence of EmissionLine")
    out = []
    for line in lines:
        if not isinstance(line, EmissionLine):
            raise ConfigurationError(f"lines: {line!r} is not an EmissionLine")
        check_float("lines.rest_wavelength", line.rest_wavelength, minimum=1.0)
        if (line.peak_ratio is None) == (line.flux is None):
            raise ConfigurationError(f"lines: give exactly one of peak_ratio and flux for {line!r}")
        if line.peak_ratio is not None:
            check_float("lines.peak_ratio", line.peak_ratio, minimum=0.0)
        if line.flux is not None:
            check_float("lines.flux", line.flux, minimum=0.0)
        out.append(line)
    return tuple(out)


def check_spectrum(spectrum):
    if spectrum is None:
        return None
    try:
        wave, flux = (np.asarray(a, dtype=float) for a in spectrum)
    except (TypeError, ValueError):
        raise ConfigurationError(
            "spectrum must be a pair (wave [micron], flux [microJy]) of 1-D arrays"
        ) from None
    if wave.ndim != 1 or flux.shape != wave.shape or wave.size < 2:
        raise ConfigurationError("spectrum: wave and flux must be 1-D arrays of equal length >= 2")
    if not (np.all(np.isfinite(wave)) and np.all(np.isfinite(flux))):
        raise ConfigurationError("spectrum: wave and flux must be finite")
    if np.any(np.diff(wave) <= 0):
        raise ConfigurationError("spectrum: wave must be strictly increasing")
    if np.any(flux < 0):
        raise ConfigurationError("spectrum: flux must be >= 0")
    return wave, flux


#: The per-source options, in the order of simulate_observation's signature.
SOURCE_KEYS_ORDER = (
    "redshift",
    "snr",
    "continuum_ujy",
    "continuum_slope",
    "lines",
    "spectrum",
    "intrinsic_sigma",
    "source_xpos",
    "source_ypos",
    "source_id",
    "slitlet_id",
    "source_name",
    "line_sigma_kms",
)
#: The keys a ``multi_slit_sources`` dict may hold.
SOURCE_KEYS = frozenset(SOURCE_KEYS_ORDER)


def check_source(src, fixed_slit):
    """Validate and normalise the per-source options (a dict)."""
    out = dict(src)
    out["redshift"] = check_float("redshift", src["redshift"], minimum=0.0, maximum=30.0)
    out["snr"] = check_float("snr", src["snr"], minimum=0.0, allow_none=True)
    out["continuum_ujy"] = check_float(
        "continuum_ujy", src["continuum_ujy"], minimum=0.0, allow_none=True
    )
    out["continuum_slope"] = check_float(
        "continuum_slope", src["continuum_slope"], minimum=-10, maximum=10
    )
    out["intrinsic_sigma"] = check_float(
        "intrinsic_sigma", src["intrinsic_sigma"], minimum=0.0, maximum=20.0
    )
    out["line_sigma_kms"] = check_float(
        "line_sigma_kms", src["line_sigma_kms"], minimum=0.0, maximum=5000.0
    )
    lim = 0.5
    out["source_xpos"] = check_float("source_xpos", src["source_xpos"], -lim, lim)
    out["source_ypos"] = check_float("source_ypos", src["source_ypos"], -lim, lim)
    out["lines"] = check_lines(src["lines"])
    out["spectrum"] = check_spectrum(src["spectrum"])
    if out["spectrum"] is not None:
        for key in ("snr", "continuum_ujy", "lines"):
            if out[key] is not None:
                raise ConfigurationError(f"{key} cannot be combined with spectrum")
    if out["snr"] is not None and out["continuum_ujy"] is not None:
        raise ConfigurationError("give only one of snr and continuum_ujy")
    if out["spectrum"] is None and out["snr"] is None and out["continuum_ujy"] is None:
        out["snr"] = 20.0
    out["source_id"] = check_int("source_id", src["source_id"], 0)
    if fixed_slit is None:
        out["slitlet_id"] = check_int("slitlet_id", src["slitlet_id"], 1)
    name = src["source_name"]
    if not isinstance(name, str) or not name or any(c in name for c in "/\\ \t\n"):
        raise ConfigurationError(
            f"source_name must be a non-empty string without spaces or slashes, got {name!r}"
        )
    return out


# --------------------------------------------------------------------------------------
# The options of simulate_observation, checked in the order of its signature
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ObservationPlan:
    """The validated options of one :func:`~slitcombine.testing.simulate.simulate_observation`.

    Attributes
    ----------
    setup : GratingSetup
    fixed_slit : str or None
    n_shutters, n_nods, n_per_position : int
    nod_offsets : list of float
    multi : bool
        One ``MultiSlitModel`` file per exposure (``multi_slit_sources``).
    sources : list of dict
        The validated per-source options (:func:`check_source`).
    exposures : list of Exposure
    geom : Geometry
    names : list of list of str
        The data file names (one list; per exposure).
    truth_names : list of str
        The truth table names, one per source.
    opts : dict
        The run's options passed to :func:`slitcombine.testing.sim_source.simulate_source`.
    """

    setup: GratingSetup
    fixed_slit: str | None
    n_shutters: int
    n_nods: int
    n_per_position: int
    nod_offsets: list
    multi: bool
    sources: list
    exposures: list
    geom: Geometry
    names: list
    truth_names: list
    opts: dict


def plan_observation(given):
    """Check every option of ``simulate_observation`` and lay out the observation.

    Parameters
    ----------
    given : dict
        The parameters of :func:`~slitcombine.testing.simulate.simulate_observation` as
        given (``output_dir`` included).

    Returns
    -------
    ObservationPlan

    Raises
    ------
    ConfigurationError
        An invalid option (nothing is written).
    OutputError
        ``overwrite=False`` and a file to write exists.
    """
    setup, fixed_slit, n_shutters = _check_instrument(given)
    nods = _check_nods(given, fixed_slit, n_shutters)
    n_nods, n_per_position, nod_offsets, rel = nods[:4]
    det = _check_detector(given, setup, fixed_slit, n_shutters)
    run = _check_run(given, fixed_slit)
    sources, multi = _check_sources(given, int(det["root"][2:7]), fixed_slit)
    exposures = _exposures(nod_offsets, n_per_position, fixed_slit, *nods[4:])
    geom = make_geometry(
        setup, fixed_slit, n_shutters, rel, det["nx"], det["trace_slope"], det["trace_curvature"]
    )
    if fixed_slit is not None:
        _check_fixed_slit_positions(sources[0], exposures, geom, fixed_slit)
    nod_type = (
        {1: "NONE", 2: "2-SHUTTER-SLITLET", 3: "3-SHUTTER-SLITLET", 5: "5-SHUTTER-SLITLET"}[
            n_shutters
        ]
        if n_nods > 1
        else "NONE"
    )
    names, truth_names = _file_names(
        det["root"], det["detector"], exposures, sources, fixed_slit, multi
    )
    out_dir = Path(given["output_dir"])
    if not run["overwrite"] and out_dir.is_dir():
        clash = [n for n in names[0] + truth_names if (out_dir / n).exists()]
        if clash:
            raise OutputError(f"{clash[0]} exists in {str(out_dir)!r} and overwrite=False")
    opts = _run_options(det, run, nod_type)
    return ObservationPlan(
        setup,
        fixed_slit,
        n_shutters,
        n_nods,
        n_per_position,
        nod_offsets,
        multi,
        sources,
        exposures,
        geom,
        names,
        truth_names,
        opts,
    )


def _check_instrument(g):
    """The grating (its setup), the filter, the fixed slit and the number of shutters."""
    grating, filter_, fixed_slit, n_shutters = (
        g["grating"],
        g["filter"],
        g["fixed_slit"],
        g["n_shutters"],
    )
    if not isinstance(grating, str) or grating.upper() not in GRATINGS:
        raise ConfigurationError(f"grating must be one of {sorted(GRATINGS)}, got {grating!r}")
    setup = GRATINGS[grating.upper()]
    if filter_ is not None and (not isinstance(filter_, str) or filter_.upper() != setup.filter):
        raise ConfigurationError(
            f"filter {filter_!r} does not go with grating {setup.grating} (expected {setup.filter})"
        )
    if fixed_slit is not None:
        if not isinstance(fixed_slit, str) or fixed_slit.upper() not in FIXED_SLITS:
            raise ConfigurationError(
                f"fixed_slit must be one of {sorted(FIXED_SLITS)} or None, got {fixed_slit!r}"
            )
        fixed_slit = fixed_slit.upper()
    if fixed_slit is None and (isinstance(n_shutters, bool) or n_shutters not in (1, 2, 3, 5)):
        raise ConfigurationError(f"n_shutters must be 1, 2, 3 or 5, got {n_shutters!r}")
    n_shutters = 1 if fixed_slit is not None else int(n_shutters)
    return setup, fixed_slit, n_shutters


def _check_nods(g, fixed_slit, n_shutters):
    """The nod pattern: ``n_nods, n_per_position, nod_offsets, rel, fs_nod_step, x0, y0``.

    ``rel`` are the offsets relative to the first one, ``x0, y0`` the dither origin
    [arcsec].
    """
    n_nods = check_int("n_nods", g["n_nods"], 1)
    n_per_position = check_int("n_per_position", g["n_per_position"], 1)
    nod_offsets = g["nod_offsets"]
    if nod_offsets is None:
        defaults = {1: [0.0], 2: [-0.5, 0.5], 3: [0.0, 1.0, -1.0]}
        if n_nods not in defaults:
            raise ConfigurationError(
                f"n_nods={n_nods} has no default pattern; give nod_offsets explicitly"
            )
        nod_offsets = defaults[n_nods]
    try:
        nod_offsets = [float(v) for v in nod_offsets]
    except (TypeError, ValueError):
        raise ConfigurationError(f"nod_offsets must be numbers, got {nod_offsets!r}") from None
    if len(nod_offsets) != n_nods or not np.all(np.isfinite(nod_offsets)):
        raise ConfigurationError(
            f"nod_offsets must hold n_nods={n_nods} finite values, got {nod_offsets!r}"
        )
    rel = np.array(nod_offsets) - nod_offsets[0]
    if fixed_slit is None:
        if np.any(np.abs(rel - np.round(rel)) > 1e-9):
            raise ConfigurationError(
                f"nod_offsets {nod_offsets} must differ by whole shutter pitches for the MSA"
            )
        shifts = YSLIT_DIRECTION * np.round(rel)
        if shifts.max() - shifts.min() + 1 > n_shutters:
            raise ConfigurationError(
                f"nod_offsets {nod_offsets} move the source out of a {n_shutters}-shutter "
                "slitlet; use more shutters (n_shutters) or fewer nods (n_nods)"
            )
    fs_nod_step = check_float("fs_nod_step", g["fs_nod_step"], minimum=0.0, maximum=5.0)
    try:
        x0_off, y0_off = (float(v) for v in g["dither_origin"])
    except (TypeError, ValueError):
        raise ConfigurationError(
            f"dither_origin must be (x_offset, y_offset), got {g['dither_origin']!r}"
        ) from None
    return n_nods, n_per_position, nod_offsets, rel, fs_nod_step, x0_off, y0_off


def _check_detector(g, setup, fixed_slit, n_shutters):
    """The trace, sky, noise, cutout, defect and shutter options, and the file naming."""
    out = {
        "trace_slope": check_float("trace_slope", g["trace_slope"], -20, 20),
        "trace_curvature": check_float("trace_curvature", g["trace_curvature"], -20, 20),
        "sky_level": check_float("sky_level", g["sky_level"], minimum=0.0),
        "read_noise": check_float("read_noise", g["read_noise"], minimum=0.0),
        "exptime": check_float("exptime", g["exptime"], minimum=1e-3),
    }
    if out["exptime"] <= 0:
        raise ConfigurationError("exptime must be > 0")
    nx = g["nx"]
    if nx is not None:
        nx = check_int("nx", nx, 16)
        if nx > setup.nx:
            raise ConfigurationError(f"nx must be <= {setup.nx} for {setup.grating}, got {nx}")
    else:
        nx = setup.nx
    out["nx"] = nx
    for name in ("n_crs", "n_hot", "n_dead"):
        out[name] = check_int(name, g[name], 0)
    stuck = g["stuck_closed_shutter"]
    if stuck is not None:
        if fixed_slit is not None:
            raise ConfigurationError("stuck_closed_shutter needs an MSA slitlet, not a fixed slit")
        stuck = check_int("stuck_closed_shutter", stuck, 0)
        if stuck >= n_shutters:
            raise ConfigurationError(
                f"stuck_closed_shutter must be < n_shutters={n_shutters}, got {stuck}"
            )
    out["stuck_closed_shutter"] = stuck
    failed_open = g["failed_open_neighbour"]
    if not isinstance(failed_open, (bool, np.bool_)):
        raise ConfigurationError(
            f"failed_open_neighbour must be True or False, got {failed_open!r}"
        )
    if failed_open and fixed_slit is not None:
        raise ConfigurationError("failed_open_neighbour needs an MSA slitlet, not a fixed slit")
    out["failed_open_neighbour"] = bool(failed_open)
    if g["detector"] not in ("NRS1", "NRS2"):
        raise ConfigurationError(f"detector must be 'NRS1' or 'NRS2', got {g['detector']!r}")
    out["detector"] = g["detector"]
    root = g["root"]
    if (
        not isinstance(root, str)
        or len(root) != 13
        or not root.startswith("jw")
        or not root[2:].isdigit()
    ):
        raise ConfigurationError(f"root must look like 'jwPPPPPOOOVVV', got {root!r}")
    out["root"] = root
    return out


def _check_run(g, fixed_slit):
    """The pointing, the noise switches, the seed, the optics and the source type."""
    out = {
        "ra": check_float("ra", g["ra"], 0.0, 360.0),
        "dec": check_float("dec", g["dec"], -90.0, 90.0),
        "position_angle": check_float("position_angle", g["position_angle"]),
    }
    for name in ("noise", "overwrite"):
        if not isinstance(g[name], (bool, np.bool_)):
            raise ConfigurationError(f"{name} must be True or False, got {g[name]!r}")
        out[name] = bool(g[name])
    seed = g["seed"]
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ConfigurationError(f"seed must be an integer, got {seed!r}")
    out["seed"] = int(seed)
    out["excess_noise"] = check_float("excess_noise", g["excess_noise"], 1.0, 10.0)
    out["excess_noise_rows"] = check_float("excess_noise_rows", g["excess_noise_rows"], 0.0, 1.0)
    out["excess_noise_length"] = check_float("excess_noise_length", g["excess_noise_length"], 0.1)
    out["optics"] = _check_optics(g["optics_model"])
    source_type = g["source_type"]
    if source_type is not None:
        if not isinstance(source_type, str) or source_type.upper() not in (
            "POINT",
            "EXTENDED",
            "UNKNOWN",
        ):
            raise ConfigurationError(
                f"source_type must be None, 'POINT', 'EXTENDED' or 'UNKNOWN', got {source_type!r}"
            )
        source_type = source_type.upper()
        if source_type == "POINT" and fixed_slit is not None:
            raise ConfigurationError("source_type='POINT' is simulated for MSA slitlets only")
    out["source_type"] = source_type
    return out


def _check_optics(optics_model):
    """The :class:`~slitcombine.core.optics.OpticsModel` of ``optics_model``."""
    if optics_model is None or optics_model == "airy":
        return optics.DEFAULT_OPTICS
    if optics_model == "gaussian":
        return optics.OpticsModel(telescope="gaussian", kernel_wing_fraction=0.0)
    if not isinstance(optics_model, optics.OpticsModel):
        raise ConfigurationError(
            "optics_model must be 'airy', 'gaussian' or a slitcombine.core.optics.OpticsModel, "
            f"got {optics_model!r}"
        )
    return optics_model


def _check_sources(g, program, fixed_slit):
    """The validated sources (one, or ``multi_slit_sources``) and whether there are several."""
    base_src = {key: g[key] for key in SOURCE_KEYS_ORDER}
    multi_slit_sources = g["multi_slit_sources"]
    multi = multi_slit_sources is not None
    if not multi:
        src_specs = [dict(base_src)]
    else:
        src_specs = _multi_source_specs(g, base_src, multi_slit_sources)
    sources = []
    for spec in src_specs:
        if spec["source_name"] is None:
            spec["source_name"] = f"{program}_{spec['source_id']}"
        sources.append(check_source(spec, fixed_slit))
    ids = [s["source_id"] for s in sources]
    if len(set(ids)) != len(ids):
        raise ConfigurationError(f"multi_slit_sources: source ids must be unique, got {ids}")
    if fixed_slit is not None and len(sources) > 1:
        raise ConfigurationError("multi_slit_sources is only supported for MSA slitlets")
    if fixed_slit is None:
        slitlets = [s["slitlet_id"] for s in sources]
        if len(set(slitlets)) != len(slitlets):
            raise ConfigurationError(f"slitlet ids must be unique, got {slitlets}")
    return sources, multi


def _multi_source_specs(g, base_src, multi_slit_sources):
    """The per-source options of ``multi_slit_sources`` (an int or a list of dicts)."""
    if isinstance(multi_slit_sources, (int, np.integer)) and not isinstance(
        multi_slit_sources, bool
    ):
        if multi_slit_sources < 1:
            raise ConfigurationError(f"multi_slit_sources must be >= 1, got {multi_slit_sources}")
        src_specs = [{} for _ in range(int(multi_slit_sources))]
    elif isinstance(multi_slit_sources, Sequence) and not isinstance(multi_slit_sources, str):
        src_specs = list(multi_slit_sources)
        if not src_specs:
            raise ConfigurationError("multi_slit_sources must not be empty")
    else:
        raise ConfigurationError(
            f"multi_slit_sources must be an int or a list of dicts, got {multi_slit_sources!r}"
        )
    specs = []
    for i, over in enumerate(src_specs):
        if not isinstance(over, Mapping):
            raise ConfigurationError(f"multi_slit_sources[{i}] must be a dict")
        bad_keys = set(over) - SOURCE_KEYS
        if bad_keys:
            raise ConfigurationError(f"multi_slit_sources[{i}] has unknown keys {sorted(bad_keys)}")
        spec = dict(base_src)
        spec.update(
            redshift=check_float("redshift", g["redshift"], 0.0) + 0.1 * i,
            source_id=check_int("source_id", g["source_id"], 0) + i,
            slitlet_id=check_int("slitlet_id", g["slitlet_id"], 1) + i,
            source_name=None,
        )
        spec.update(over)
        specs.append(spec)
    return specs


def _exposures(nod_offsets, n_per_position, fixed_slit, fs_nod_step, x0_off, y0_off):
    """The exposures, in order: nod positions, ``n_per_position`` each."""
    exposures = []
    step = SHUTTER_PITCH if fixed_slit is None else fs_nod_step
    number = 0
    for p, off in enumerate(nod_offsets):
        for _ in range(n_per_position):
            number += 1
            yoff = y0_off + off * step
            if fixed_slit is None:
                delta = (off - nod_offsets[0]) * step / PIXEL_SCALE
                frame = delta
            else:
                delta = off * step / PIXEL_SCALE
                frame = 0.0
            exposures.append(Exposure(number - 1, number, p + 1, off, x0_off, yoff, delta, frame))
    return exposures


def _check_fixed_slit_positions(src, exposures, geom, fixed_slit):
    """Raise ConfigurationError if a nod puts the source outside the fixed slit."""
    half = 0.5 - 2.0 * PIXEL_SCALE / geom.unit_arcsec
    for e in exposures:
        ypos = src["source_ypos"] + YSLIT_DIRECTION * geom.yslit_per_pixel * (e.delta_rows)
        if abs(ypos) > half:
            raise ConfigurationError(
                f"nod_offsets/fs_nod_step put the source at y_slit={ypos:.3f}, outside "
                f"the {fixed_slit} slit"
            )


def _file_names(root, detector, exposures, sources, fixed_slit, multi):
    """The data file names (a list of one list, per exposure) and the truth table names."""
    det = detector.lower()
    if multi:
        names = [[f"{root}_03101_{e.number:05d}_{det}_cal.fits" for e in exposures]]
    else:
        label = fixed_slit.lower() if fixed_slit else f"{sources[0]['slitlet_id']:03d}"
        names = [
            [
                f"{root}_03101_{e.number:05d}_{det}_phot.{label}.{sources[0]['source_name']}.fits"
                for e in exposures
            ]
        ]
    truth_names = []
    for s in sources:
        label = fixed_slit.lower() if fixed_slit else f"{s['slitlet_id']:03d}"
        truth_names.append(f"{root}_truth.{label}.{s['source_name']}.ecsv")
    return names, truth_names


def _run_options(det, run, nod_type):
    """The options :func:`~slitcombine.testing.sim_source.simulate_source` reads."""
    return {
        "excess_noise": run["excess_noise"],
        "excess_noise_rows": run["excess_noise_rows"],
        "excess_noise_length": run["excess_noise_length"],
        "optics": run["optics"],
        "source_type": run["source_type"],
        "stuck_closed_shutter": det["stuck_closed_shutter"],
        "failed_open_neighbour": det["failed_open_neighbour"],
        "sky_level": det["sky_level"],
        "read_noise": det["read_noise"],
        "exptime": det["exptime"],
        "n_crs": det["n_crs"],
        "n_hot": det["n_hot"],
        "n_dead": det["n_dead"],
        "ra": run["ra"],
        "dec": run["dec"],
        "position_angle": run["position_angle"],
        "seed": run["seed"],
        "root": det["root"],
        "noise": run["noise"],
        "detector": det["detector"],
        "nod_type": nod_type,
        "quadrant": 3,
        "xcen": 180,
        "ycen": 84,
    }
