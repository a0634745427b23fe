"""The truth of a simulated slit: the truth table, its metadata, cosmic rays and bad pixels.

Stage 6 of :func:`slitcombine.testing.sim_source.simulate_source`; the columns and
metadata are described in :func:`slitcombine.testing.simulate.simulate_observation`.
"""

from __future__ import annotations

import numpy as np

from slitcombine.instrument import PIXEL_SCALE, SHUTTER_PITCH
from slitcombine.testing.sim_models import BARSHADOW_FLOOR, YSLIT_DIRECTION

__all__ = [
    "TRUTH_DEFINITION",
    "truth_table",
    "cosmic_ray_table",
    "bad_pixel_table",
    "truth_meta",
    "truth_meta_run",
]


def truth_table(scene, light, pipe, flux):
    """Stage 6b: the truth table, one row per detector column (its meta still empty)."""
    from astropy.table import Table

    truth = Table()
    truth["x"] = np.arange(scene.x.size)
    truth["wave"] = scene.wave_col
    truth["wave"].unit = "um"
    truth["wave_true"] = scene.wave_true
    truth["wave_true"].unit = "um"
    truth["flux"] = flux.flux
    truth["flux"].unit = "uJy"
    truth["flux_continuum"] = flux.flux_cont
    truth["flux_continuum"].unit = "uJy"
    truth["slit_throughput"] = light.tput.T
    truth["throughput"] = light.tput_true.T
    truth["pathloss_uniform"] = pipe.pl_un
    truth["sky"] = scene.sky1d
    truth["sky"].unit = "uJy"
    truth["sigma"] = scene.sigma
    truth["sigma"].unit = "pix"
    truth["psf_sigma"] = scene.sig_psf
    truth["psf_sigma"].unit = "pix"
    truth["trace"] = light.image.src_rows.T
    truth["trace"].unit = "pix"
    truth["yslit0_row"] = light.image.centre_rows.T
    truth["yslit0_row"].unit = "pix"
    truth["snr_column"] = flux.snr_col
    truth["electrons_per_ujy"] = flux.gain
    return truth


def cosmic_ray_table(cr_rows):
    """The injected cosmic rays, one row per pixel (:attr:`SourceTruth.cosmic_rays`)."""
    from astropy.table import Table

    crs = Table(
        names=("exposure", "index", "row", "col", "amplitude", "sigma"),
        dtype=(int, int, int, int, float, float),
    )
    for block in cr_rows:
        for vals in zip(*block, strict=True):
            crs.add_row(vals)
    return crs


def bad_pixel_table(defects):
    """The hot and dead pixels (:attr:`SourceTruth.bad_pixels`)."""
    from astropy.table import Table

    bad = Table()
    bad["row"] = np.concatenate([defects.hot_rows, defects.dead_rows]).astype(int)
    bad["col"] = np.concatenate([defects.hot_cols, defects.dead_cols]).astype(int)
    kinds = ["hot"] * defects.hot_rows.size + ["dead"] * defects.dead_rows.size
    bad["kind"] = np.array(kinds, dtype="U4")
    return bad


#: The definition of the truth columns, written in the truth table's metadata.
TRUTH_DEFINITION = (
    "flux [uJy] is the source flux density entering the telescope at instrument "
    "resolution, sampled at wave_true (the true wavelength of the source light in each "
    "column). throughput[x, k] is the fraction of that flux that passes the open "
    "apertures in the k-th file (it reaches the detector, not modulated by the bar "
    "shadow); slit_throughput[x, k] (= PATHLOSS_PS) is the same for a point source at "
    "the catalogue position through the planned shutters (equal to throughput for a "
    "point source without stuck shutters). The detector image of the source, summed "
    "over rows, is flux*throughput in raw = SCI * calib * PIXAR_SR * 1e12 with calib = "
    "BARSHADOW*PATHLOSS_UN (default), PATHLOSS_PS (source_type POINT) or PATHLOSS_UN "
    "(fixed slits). The sky S [uJy/pixel] is raw sky / illumination, the illumination "
    "being ~BARSHADOW. trace[x, k] is the row of the source centre in the k-th file, "
    "yslit0_row[x, k] the row where the WCS gives y_slit = 0."
)


def truth_meta(meta, src, opts, grating, geom, exposures, scene, flux, attrs, ymins):
    """Stage 6c: the truth table's metadata of the source, its slit and its exposures."""
    meta["truth_definition"] = TRUTH_DEFINITION
    meta.update(
        {
            "source_id": src["source_id"],
            "source_name": src["source_name"],
            "slit_name": attrs[0]["name"],
            "grating": grating.grating,
            "filter": grating.filter,
            "fixed_slit": geom.fixed_slit,
            "n_shutters": geom.n_shutters,
            "source_shutter_index": geom.source_shutter,
            "redshift": src["redshift"],
            "snr_requested": src["snr"],
            "snr_peak": float(np.max(flux.snr_col)),
            "continuum_ujy_at_2um": float(flux.amp) if not scene.user_spec else None,
            "continuum_slope": src["continuum_slope"],
            "user_spectrum": scene.user_spec,
            "lines": scene.line_info,
            "intrinsic_sigma_pix": src["intrinsic_sigma"],
            "line_sigma_kms": src["line_sigma_kms"],
            "source_xpos": src["source_xpos"],
            "source_ypos": src["source_ypos"],
            "source_ypos_per_exposure": [float(v) for v in scene.ypos_k],
            "source_xshift_pix": float(scene.xshift),
            "sky_level_ujy_2um": opts["sky_level"],
            "read_noise_e": opts["read_noise"],
            "exptime_s": opts["exptime"],
            "pixel_scale_arcsec": PIXEL_SCALE,
            "yslit_per_pixel": float(YSLIT_DIRECTION * geom.yslit_per_pixel),
            "yslit_unit_arcsec": geom.unit_arcsec,
            "shutter_pitch_arcsec": SHUTTER_PITCH,
            "nod_offsets": [float(e.nod_offset) for e in exposures],
            "x_offsets_arcsec": [float(e.x_offset) for e in exposures],
            "y_offsets_arcsec": [float(e.y_offset) for e in exposures],
            "delta_rows": [float(e.delta_rows) for e in exposures],
            "exposure_numbers": [int(e.number) for e in exposures],
            "slit_limits": [list(v) for v in ymins],
        }
    )


def truth_meta_run(opts, geom, ystart, crs, defects):
    """Stage 6d: the truth table's metadata of the run: defects, noise, pipeline options."""
    hot = zip(defects.hot_rows, defects.hot_cols, strict=True)
    dead = zip(defects.dead_rows, defects.dead_cols, strict=True)
    return {
        "stuck_closed_shutter": opts["stuck_closed_shutter"],
        "failed_open_neighbour": bool(opts["failed_open_neighbour"]),
        "pathloss_applied": "PATHLOSS_PS" if opts["source_type"] == "POINT" else "PATHLOSS_UN",
        "source_type": opts["source_type"],
        "optics": repr(opts["optics"]),
        "barshadow_floor": None if geom.fixed_slit is not None else BARSHADOW_FLOOR,
        "cutout_shape": [geom.ny, geom.nx],
        "ystart": int(ystart),
        "cosmic_rays": {c: [v.item() for v in crs[c]] for c in crs.colnames},
        "hot_pixels": [[int(r), int(c)] for r, c in hot],
        "dead_pixels": [[int(r), int(c)] for r, c in dead],
        "seed": opts["seed"],
        "noise": opts["noise"],
        "excess_noise": opts["excess_noise"],
        "excess_noise_rows": opts["excess_noise_rows"],
        "excess_noise_length_px": opts["excess_noise_length"],
    }
