"""Writing the simulated exposures: datamodels with the pipeline's metadata, atomically."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from slitcombine._atomic import atomic_path
from slitcombine.errors import OutputError
from slitcombine.instrument import PIXAR_SR
from slitcombine.testing.sim_models import SourceTruth

__all__ = [
    "write_observation",
    "exposure_table",
    "fill_exposure_meta",
    "fill_slit",
    "new_model",
    "write_model",
    "write_table",
    "prepare_output_dir",
]


# --------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------
def fill_exposure_meta(model, opts, grating, exp, nexp_positions, fixed_slit, filename):
    """Set the exposure-level metadata (program, instrument, exposure, dither, steps)."""
    meta = model.meta
    meta.filename = filename
    meta.telescope = "JWST"
    meta.origin = "slitcombine.testing.simulate"
    root = opts["root"]
    program, obsnum, visit = root[2:7], root[7:10], root[10:13]
    obs = meta.observation
    obs.program_number = program
    obs.observation_number = obsnum
    obs.visit_number = visit
    obs.visit_id = f"{program}{obsnum}{visit}"
    obs.visit_group = "03"
    obs.sequence_id = "1"
    obs.activity_id = "01"
    obs.exposure_number = str(exp.number)
    obs.obs_id = f"V{program}{obsnum}{visit}P00000000031{exp.number:02d}"
    obs.date = "2025-01-01"
    obs.time = "00:00:00.000"
    inst = meta.instrument
    inst.name = "NIRSPEC"
    inst.detector = opts["detector"]
    inst.grating = grating.grating
    inst.filter = grating.filter
    if fixed_slit is None:
        inst.lamp_mode = "MSASPEC"
        inst.msa_metadata_file = f"{root}_01_msa.fits"
        inst.msa_metadata_id = 1
        inst.msa_configuration_id = 1
        inst.fixed_slit = "NONE"
    else:
        inst.lamp_mode = "FIXEDSLIT"
        inst.fixed_slit = fixed_slit
    ex = meta.exposure
    ex.type = "NRS_MSASPEC" if fixed_slit is None else "NRS_FIXEDSLIT"
    ex.exposure_time = opts["exptime"]
    ex.effective_exposure_time = opts["exptime"]
    ex.integration_time = opts["exptime"]
    ex.nints = 1
    ex.ngroups = 14
    ex.nframes = 5
    ex.groupgap = 0
    ex.readpatt = "NRSIRS2"
    start = 60676.0 + exp.index * (opts["exptime"] + 120.0) / 86400.0
    ex.start_time = start
    ex.mid_time = start + 0.5 * opts["exptime"] / 86400.0
    ex.end_time = start + opts["exptime"] / 86400.0
    dith = meta.dither
    dith.position_number = exp.position
    dith.total_points = nexp_positions
    dith.x_offset = float(exp.x_offset)
    dith.y_offset = float(exp.y_offset)
    if fixed_slit is None:
        dith.primary_type = "NONE"
        dith.nod_type = opts["nod_type"]
    else:
        dith.primary_type = f"{nexp_positions}-POINT-NOD" if nexp_positions in (2, 3) else "NONE"
        dith.nod_type = "NONE"
    meta.target.ra = opts["ra"]
    meta.target.dec = opts["dec"]
    cal = meta.cal_step
    for step in ("assign_wcs", "extract_2d", "srctype", "flat_field", "pathloss", "photom"):
        setattr(cal, step, "COMPLETE")
    cal.barshadow = "COMPLETE" if fixed_slit is None else "SKIPPED"
    cal.wavecorr = "SKIPPED"


def fill_slit(slit, arrays, attrs, wcs, grating):
    """Set the arrays, slit attributes, WCS and slit-level meta of a slit (or SlitModel)."""
    meta = slit.meta
    meta.bunit_data = "MJy/sr"
    meta.bunit_err = "MJy/sr"
    meta.photometry.pixelarea_steradians = PIXAR_SR
    meta.photometry.pixelarea_arcsecsq = PIXAR_SR * (180 / np.pi * 3600) ** 2
    meta.wcsinfo.dispersion_direction = 1
    meta.wcsinfo.waverange_start = grating.wave_min * 1e-6
    meta.wcsinfo.waverange_end = grating.wave_max * 1e-6
    meta.wcsinfo.spectral_order = 0 if grating.grating == "PRISM" else 1
    for key, arr in arrays.items():
        setattr(slit, key, arr)
    for key, val in attrs.items():
        setattr(slit, key, val)
    slit.meta.wcs = wcs


def new_model(cls):
    """A datamodel that validates once, strictly, before saving (faster than on assignment)."""
    return cls(validate_on_assignment=False, strict_validation=True)


def write_model(model, path):
    """Validate a datamodel and write it atomically (temporary file, then rename)."""
    model.validate()
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        # through a file object: given a name, stdatamodels would record the
        # temporary name as meta.filename
        model.to_fits(fh, overwrite=True)


def write_table(table, path):
    """Write an astropy table as ECSV atomically."""
    with atomic_path(path) as tmp:
        table.write(tmp, format="ascii.ecsv", overwrite=True)


def prepare_output_dir(output_dir):
    """Create ``output_dir`` if needed and check that it is writable."""
    path = Path(output_dir)
    if path.exists() and not path.is_dir():
        raise OutputError(f"output_dir {str(path)!r} exists and is not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".slitcombine-probe.", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputError(f"output_dir {str(path)!r} is not writable: {exc}") from exc
    return path


def write_observation(plan, products, output_dir):
    """Write the data files and the truth tables of a simulated observation.

    Parameters
    ----------
    plan : slitcombine.testing.sim_options.ObservationPlan
    products : list of slitcombine.testing.sim_source.SlitProducts
        One per source.
    output_dir : str or path-like
        Created if missing.

    Returns
    -------
    out_dir : pathlib.Path
    all_files : list of pathlib.Path
        The data files, in exposure order.
    results : list of SourceTruth
        One per source.

    Raises
    ------
    OutputError
        ``output_dir`` cannot be written, or writing failed midway (the files written
        by this call are removed).
    """
    out_dir = prepare_output_dir(output_dir)
    written = []
    try:
        all_files, src_files = _write_data_files(plan, products, out_dir, written)
        results = []
        for i, (src, prod) in enumerate(zip(plan.sources, products, strict=True)):
            prod.truth.meta["files"] = [p.name for p in src_files[i]]
            path = out_dir / plan.truth_names[i]
            write_table(prod.truth, path)
            written.append(path)
            results.append(
                SourceTruth(
                    source_id=src["source_id"],
                    source_name=src["source_name"],
                    slitlet_id=prod.attrs[0]["slitlet_id"],
                    slit_name=prod.attrs[0]["name"],
                    files=src_files[i],
                    truth_path=path,
                    truth=prod.truth,
                    cosmic_rays=prod.cosmic_rays,
                    bad_pixels=prod.bad_pixels,
                )
            )
    except OSError as exc:
        for p in written:
            p.unlink(missing_ok=True)
        raise OutputError(f"writing to {str(out_dir)!r} failed: {exc}") from exc
    return out_dir, all_files, results


def _write_data_files(plan, products, out_dir, written):
    """Write one SlitModel per exposure, or one MultiSlitModel per exposure (``multi``).

    Returns the files in exposure order and, per source, the files holding it;
    ``written`` gets every path written.
    """
    from stdatamodels.jwst import datamodels

    setup, fixed_slit = plan.setup, plan.fixed_slit
    all_files = []
    src_files = [[] for _ in plan.sources]
    for k, exp in enumerate(plan.exposures):
        fname = plan.names[0][k]
        path = out_dir / fname
        if plan.multi:
            model = new_model(datamodels.MultiSlitModel)
            fill_exposure_meta(model, plan.opts, setup, exp, plan.n_nods, fixed_slit, fname)
            for i, prod in enumerate(products):
                slit = new_model(datamodels.SlitModel)
                fill_slit(slit, prod.arrays[k], prod.attrs[k], prod.wcs[k], setup)
                model.slits.append(slit)
                src_files[i].append(path)
        else:
            prod = products[0]
            model = new_model(datamodels.SlitModel)
            fill_exposure_meta(model, plan.opts, setup, exp, plan.n_nods, fixed_slit, fname)
            fill_slit(model, prod.arrays[k], prod.attrs[k], prod.wcs[k], setup)
            src_files[0].append(path)
        write_model(model, path)
        written.append(path)
        all_files.append(path)
    return all_files, src_files


def exposure_table(exposures, files):
    """One row per exposure: number, nod position and offsets, trace shift, file name."""
    from astropy.table import Table

    exp_table = Table()
    exp_table["exposure"] = [e.number for e in exposures]
    exp_table["position"] = [e.position for e in exposures]
    exp_table["nod_offset"] = [e.nod_offset for e in exposures]
    exp_table["x_offset"] = [e.x_offset for e in exposures]
    exp_table["y_offset"] = [e.y_offset for e in exposures]
    exp_table["delta_rows"] = [e.delta_rows for e in exposures]
    exp_table["file"] = [p.name for p in files]
    return exp_table
