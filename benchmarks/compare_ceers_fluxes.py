#!/usr/bin/env python
"""CEERS PRISM 1345_933: slitcombine's fluxes against msaexp 0.9.19, band by band, explained.

Issue 15, item 5.  One run of both tools on the same three exposures, both with their
defaults: slitcombine in this process (``slitcombine.combine(files)``), msaexp as a
subprocess in its own virtual environment (``msaexp_peer.py extract --arrays --traces``,
i.e. ``msaexp.slit_combine.extract_spectra`` with its defaults).  msaexp is never imported
here.

Per wavelength band (:data:`BANDS`) the ratio ours/msaexp of

* the **in-slit** flux ``flux / path_corr`` (the source light that passed the shutter, as
  each tool measures it; ``path_corr`` is the path-loss factor already applied to ``flux``),
* ``path_corr``, ``flux`` and ``err``,

and the integrated S/N of [OIII] 4959,5007 and H-alpha (+[NII]) in both products.

The two products have different wavelength grids (ours from the data's columns, msaexp's
fixed 501-point PRISM grid; both ~1.05 bins per detector column, the bin widths agree to
0.5%).  Two statistics, never crossing an invalid bin:

* ``*_median``: msaexp's spectrum is interpolated linearly onto our bin centres, only
  between two valid msaexp bins; the median of the per-bin ratio over our valid bins in
  the band.  Good for smooth quantities (``path_corr``, ``err``) and the continuum; an
  interpolated emission line is not the line binned on our grid, so ratios of single
  bins near a line are not meaningful (the median ignores the few).
* ``*_integral``: the ratio of the band integrals ``sum(f * dlambda)`` of each product on
  its own grid (valid bins with centres in the band, within the wavelength range both
  products cover): conserves line flux, insensitive to the grids.

Then the differences are taken apart (``explanation`` in the JSON): the pipeline
bar shadow at msaexp's trace (peer ``--traces``), msaexp's PRISM renormalisation
(``norm_corr``), the traces and profile widths, the factors of the two path losses
(msaexp's lookup table relative to a centred point source, our ``PATHLOSS_PS`` scaled by
the optics model), and **emulations of msaexp's choices inside slitcombine** (msaexp's
tabulated profile read from its data file with astropy, the data divided by the pipeline
bar shadow, the profile width fitted there, ``|yslit| <= 3`` and msaexp's relative path
loss; optionally its calibration tables through ``$SLITCOMBINE_CALIB_DIR``) whose in-slit
flux is compared with msaexp's own.

``--simulations`` runs the same treatments on simulated CEERS-like observations
(:func:`slitcombine.testing.simulate.simulate_observation`, known truth) and writes what each
recovers: ours (defaults), ``source_type='extended'`` (bar-shadow corrected data) and the
msaexp emulation.  msaexp itself does not read the simulated files (its asdf 3.5 does not
know the transform tags the simulator writes, and its ``slit_pixel_scale`` needs the
``v2v3vacorr`` frame, which the simulated WCS does not have), hence the emulation.

Usage::

    python benchmarks/compare_ceers_fluxes.py [--msaexp-python P]
        # -> benchmarks/results/ceers-fluxes-msaexp-<version>.json,
        #    docs/_static/validation/ceers_bands.csv
    python benchmarks/compare_ceers_fluxes.py --simulations [--seeds 1,2]
        # -> benchmarks/results/ceers-fluxes-simulations.json

Takes ~1 minute (msaexp ~20 s, ours and the emulations a few s each) and the simulations
~3 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import math
import os
import platform
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _peer  # noqa: E402

#: Wavelength bands, um (the CEERS cutout on NRS2 covers 1.46-5.30 um).
BANDS = ((1.2, 1.6), (1.6, 2.2), (2.2, 3.0), (3.0, 4.0), (4.0, 5.2))

#: Lines of 1345_933 (z = 4.23): integration window and continuum windows, um.  The
#: [OIII] window holds 4959 (2.594 um) and 5007 (2.619 um) but not H-beta (2.543 um);
#: the H-alpha one holds [NII], not [SII] (3.51 um).
LINES = {
    "[OIII]4959,5007": {
        "window": (2.565, 2.665),
        "continuum": ((2.40, 2.50), (2.70, 2.80)),
        "nominal": 2.62,
    },
    "H-alpha+[NII]": {
        "window": (3.39, 3.475),
        "continuum": ((3.25, 3.35), (3.58, 3.70)),
        "nominal": 3.43,
    },
}
#: Half-width (um) of the window of the per-bin peak S/N (as ``msaexp_peer.py extract``).
PEAK_HALF_WIDTH = 0.05

#: Default outputs.
RESULTS_DIR = _peer.REPO_ROOT / "benchmarks" / "results"
CSV_PATH = _peer.REPO_ROOT / "docs" / "_static" / "validation" / "ceers_bands.csv"

#: The simulated grid of ``--simulations``: CEERS-like PRISM, 3 shutters, 3 nods,
#: SRCXPOS -0.25 as 1345_933; positions along the slit (units of the open height) and
#: intrinsic widths (Gaussian sigma, pixels).
SIM_YPOS = (-0.116, 0.0, 0.35)
SIM_SIGMA = (0.0, 0.35, 1.0)
SIM_XPOS = -0.25
SIM_SNR = 30.0


# --------------------------------------------------------------------------------------
# msaexp's tabulated point response, read from its data file (no msaexp import)
# --------------------------------------------------------------------------------------
class MsaexpLookupTable:
    """msaexp's lookup-table PSF (``nirspec_merged_s200a1_exp_psf_lookup_001.fits``) as
    a slitcombine ``lookup_prf`` (:class:`slitcombine.core.profile.LookupPRF` protocol).

    The file holds ``PROF`` (cross-dispersion profile density per pixel, on a 1/32 px
    ``YSLIT`` grid, per wavelength ``WAVE`` and profile width ``SIGMA``: msaexp's
    empirical fixed-slit point-source profile convolved with an exponential of that
    width) and ``LOSS`` (fraction of the source through a 0.2 arcsec shutter, per
    wavelength, width and ``|SRCXPOS|`` ``LOSS_XOFFSET``).  Wavelength planes without a
    finite profile are dropped and non-finite values set to 0 (as msaexp reads it).

    Parameters
    ----------
    path : str or Path
        The FITS file.
    relative : bool
        ``slit_throughput`` relative to a centred point source (msaexp's ``path_loss``
        convention, ``LOSS / LOSS[sigma=0, x=0]``) instead of the absolute fraction.
    """

    def __init__(self, path, relative=True):
        from astropy.io import fits
        from scipy.interpolate import RegularGridInterpolator

        with fits.open(path) as hdul:
            prof = np.asarray(hdul["PROF"].data, float)  # (ny, nwave, nsigma)
            y = np.asarray(hdul["YSLIT"].data, float)
            wave = np.asarray(hdul["WAVE"].data, float)
            self.sigma_nodes = np.asarray(hdul["SIGMA"].data, float)
            loss = np.asarray(hdul["LOSS"].data, float)  # (nwave, nsigma, nx)
            self.xoff_nodes = np.asarray(hdul["LOSS_XOFFSET"].data, float)
        keep = np.isfinite(prof[:, :, 0]).sum(axis=0) > 0
        prof = np.nan_to_num(prof[:, keep, :])
        self.wave_nodes = wave[keep]
        loss = loss[keep]
        dy = float(np.median(np.diff(y)))
        edges = np.r_[y - dy / 2, y[-1] + dy / 2]
        cum = np.concatenate([np.zeros((1,) + prof.shape[1:]), np.cumsum(prof, axis=0) * dy])
        self._cum = RegularGridInterpolator((edges, self.wave_nodes, self.sigma_nodes), cum)
        self._ylim = (edges[0], edges[-1])
        self._loss = RegularGridInterpolator(
            (self.wave_nodes, self.sigma_nodes, self.xoff_nodes), loss
        )
        self.relative = bool(relative)
        self.path = str(path)

    def __repr__(self):
        return f"MsaexpLookupTable({Path(self.path).name!r}, relative={self.relative})"

    def _clip(self, w, s):
        return (
            np.clip(w, self.wave_nodes[0], self.wave_nodes[-1]),
            np.clip(s, self.sigma_nodes[0], self.sigma_nodes[-1]),
        )

    def _cumulative(self, y, w, s):
        w, s = self._clip(w, s)
        pts = np.stack([np.clip(y, *self._ylim), w, s], axis=-1)
        return self._cum(pts)

    def pixel_profile(self, yslit, wave, sigma):
        """Fraction of the flux in the pixel ``yslit`` px from the source centre."""
        y, w, s = np.broadcast_arrays(
            np.asarray(yslit, float), np.asarray(wave, float), np.asarray(sigma, float)
        )
        out = np.full(y.shape, np.nan)
        ok = np.isfinite(y) & np.isfinite(w) & np.isfinite(s)
        out[ok] = self._cumulative(y[ok] + 0.5, w[ok], s[ok]) - self._cumulative(
            y[ok] - 0.5, w[ok], s[ok]
        )
        return out

    def centred_point_throughput(self, wave):
        """``LOSS`` of a centred point source (what msaexp's path loss is relative to)."""
        w = np.clip(np.asarray(wave, float), self.wave_nodes[0], self.wave_nodes[-1])
        zero = np.zeros_like(w)
        return self._loss(np.stack([w, zero, zero], axis=-1))

    def slit_throughput(self, wave, sigma, xpos, ypos=0.0, slit_width=None, slit_height=None):
        """Throughput through the shutter for ``|xpos|`` (no dependence on ``ypos``)."""
        w, s, x = np.broadcast_arrays(
            np.asarray(wave, float), np.asarray(sigma, float), np.abs(np.asarray(xpos, float))
        )
        out = np.full(w.shape, np.nan)
        ok = np.isfinite(w) & np.isfinite(s) & np.isfinite(x)
        wc, sc = self._clip(w[ok], s[ok])
        xc = np.clip(x[ok], self.xoff_nodes[0], self.xoff_nodes[-1])
        t = self._loss(np.stack([wc, sc, xc], axis=-1))
        if self.relative:
            t = t / self.centred_point_throughput(wc)
        out[ok] = t
        return out


@contextmanager
def _calib_dir(value):
    """Set ``$SLITCOMBINE_CALIB_DIR`` for the duration (None: leave it as it is)."""
    if value is None:
        yield
        return
    key = "SLITCOMBINE_CALIB_DIR"
    old = os.environ.get(key)
    os.environ[key] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old


def emulate_msaexp(
    files, table, bar_divided=True, sigma=None, calib_dir=None, name="msaexp_emulation"
):
    """msaexp's measurement choices, made inside slitcombine.

    * the profile is msaexp's table (``table``), with a constant trace offset
      (``offset_degree=0``) and its width fitted (or fixed to ``sigma``);
    * ``bar_divided`` (msaexp's way): the data stay divided by the pipeline bar shadow
      (``undo_barshadow=False``, as ``extract_spectra``), also for the source, and the
      width is fitted on them (``source_type='extended'`` keeps the bar-shadow corrected
      data).  Otherwise the source is measured on the detector image (bar shadow
      undone, as slitcombine does for a compact source): only the profile differs from
      slitcombine's;
    * the optimal extraction uses the rows ``|yslit| <= 3`` (msaexp's ``y_range``),
      read-noise weights (both tools' ``ivm``) and the table's path loss (relative to a
      centred point source with ``table.relative``, msaexp's convention).

    Returns
    -------
    (slitcombine.CombineResult, astropy.table.QTable)
        The combination (for the fitted width) and the emulated 1D spectrum on its grid.
    """
    import slitcombine
    from slitcombine.core import extract

    opts = {
        "undo_barshadow": False,
        "lookup_prf": table,
        "source_type": "extended" if bar_divided else "point",
        "trace_kwargs": {"degree": 0},
    }
    if sigma is not None:
        opts["profile_sigma"] = float(sigma)
    with _calib_dir(calib_dir):
        result = slitcombine.combine(files, name=name, **opts)
        group = result.group
        # the table as the profile (not the optics model of a compact source)
        group.source_type = None
        if not bar_divided:
            group.meta["undo_barshadow"] = True  # data * bar: the detector image
        tab = group.get_flat_diff_arrays(
            with_pathloss=True, fit=opts.get("profile_sigma"), pathloss_source="model"
        )
        spec = extract.extract_1d(
            tab, result.spec["wave"].value, y_range=(-3.0, 3.0), exposure_variance=group.var
        )
    return result, spec


# --------------------------------------------------------------------------------------
# spectra and band statistics
# --------------------------------------------------------------------------------------
def _value(col):
    return np.asarray(getattr(col, "value", col), dtype=float)


def spectrum_arrays(tab, valid=None):
    """``wave, flux, err, path_corr, valid`` (+ ``err_scale``, ``norm_corr``) as arrays."""
    cols = tab.colnames if hasattr(tab, "colnames") else list(tab)
    out = {c: _value(tab[c]) for c in ("wave", "flux", "err", "path_corr")}
    for c in ("err_scale", "norm_corr"):
        if c in cols:
            out[c] = _value(tab[c])
    if valid is None:
        valid = np.asarray(tab["valid"], bool) if "valid" in cols else np.ones(len(out["wave"]))
    with np.errstate(invalid="ignore"):
        valid = (
            np.asarray(valid, bool)
            & np.isfinite(out["flux"])
            & np.isfinite(out["err"])
            & (out["err"] > 0)
            & np.isfinite(out["path_corr"])
        )
    out["valid"] = valid
    return out


def msaexp_arrays(ref):
    """msaexp's SPEC1D columns from the peer's ``spec1d.arrays`` (None -> NaN)."""
    arrays = {
        k: np.array([np.nan if v is None else v for v in vals], float)
        for k, vals in ref["spec1d"]["arrays"].items()
    }
    return spectrum_arrays(arrays, valid=np.ones(len(arrays["wave"]), bool))


def bin_widths(wave):
    """Widths of bins whose edges lie half-way between the centres ``wave`` (um)."""
    w = np.asarray(wave, float)
    edges = np.r_[w[0] - (w[1] - w[0]) / 2, (w[1:] + w[:-1]) / 2, w[-1] + (w[-1] - w[-2]) / 2]
    return np.diff(edges)


def interp_valid(w_src, y_src, valid_src, w_dst):
    """Linear interpolation of ``y_src`` at ``w_dst``, NaN unless both neighbours valid."""
    w_src = np.asarray(w_src, float)
    j = np.clip(np.searchsorted(w_src, w_dst), 1, w_src.size - 1)
    ok = valid_src[j] & valid_src[j - 1] & (w_dst >= w_src[0]) & (w_dst <= w_src[-1])
    t = (w_dst - w_src[j - 1]) / (w_src[j] - w_src[j - 1])
    return np.where(ok, (1 - t) * y_src[j - 1] + t * y_src[j], np.nan)


def common_range(*specs):
    """Wavelength range (um) where every spectrum has valid bins."""
    lo = max(float(np.min(s["wave"][s["valid"]])) for s in specs)
    hi = min(float(np.max(s["wave"][s["valid"]])) for s in specs)
    return lo, hi


def band_integral(spec, values, lo, hi):
    """``sum(values * dlambda)`` over the valid bins with centres in ``[lo, hi)`` and the
    number of bins summed."""
    w, ok = spec["wave"], spec["valid"] & np.isfinite(values)
    sel = ok & (w >= lo) & (w < hi)
    dw = bin_widths(w)
    return float(np.sum(values[sel] * dw[sel])), int(sel.sum())


def _median(x):
    x = np.asarray(x, float)
    x = x[np.isfinite(x)]
    return float(np.median(x)) if x.size else math.nan


def band_table(ours, theirs, bands=BANDS):
    """Per band: the ratios ours/msaexp (see the module docstring)."""
    w = ours["wave"]
    grid_lo, grid_hi = common_range(ours, theirs)
    interp = {
        c: interp_valid(theirs["wave"], theirs[c], theirs["valid"], w)
        for c in ("flux", "err", "path_corr")
    }
    o_in = ours["flux"] / ours["path_corr"]
    t_in = theirs["flux"] / theirs["path_corr"]
    i_in = interp["flux"] / interp["path_corr"]
    e_scale = ours.get("err_scale", np.ones_like(w))
    rows = []
    for lo, hi in bands:
        sel = ours["valid"] & (w >= lo) & (w < hi) & np.isfinite(i_in)
        lo2, hi2 = max(lo, grid_lo), min(hi, grid_hi)
        row = {"band_um": f"{lo:.1f}-{hi:.1f}", "lo": lo, "hi": hi, "n_bins": int(sel.sum())}
        if not sel.any() or lo2 >= hi2:
            rows.append(row)
            continue
        o_int, _ = band_integral(ours, o_in, lo2, hi2)
        t_int, _ = band_integral(theirs, t_in, lo2, hi2)
        of_int, _ = band_integral(ours, ours["flux"], lo2, hi2)
        tf_int, _ = band_integral(theirs, theirs["flux"], lo2, hi2)
        dw = bin_widths(w)
        sn_sel = ours["valid"] & (w >= lo2) & (w < hi2)
        band_sn = np.sum((ours["flux"] * dw)[sn_sel]) / np.sqrt(
            np.sum((ours["err"] * dw)[sn_sel] ** 2)
        )
        err_in_o = ours["err"] / e_scale / ours["path_corr"]
        err_in_t = interp["err"] / interp["path_corr"]
        row.update(
            {
                "range_um": [lo2, hi2],
                "band_sn_ours": float(band_sn),
                "inslit_median": _median(o_in[sel] / i_in[sel]),
                "inslit_integral": o_int / t_int,
                "path_corr_ratio": _median(ours["path_corr"][sel] / interp["path_corr"][sel]),
                "path_corr_ours": _median(ours["path_corr"][sel]),
                "path_corr_msaexp": _median(interp["path_corr"][sel]),
                "flux_median": _median(ours["flux"][sel] / interp["flux"][sel]),
                "flux_integral": of_int / tf_int,
                "err_ratio": _median(ours["err"][sel] / interp["err"][sel]),
                "err_scale_ours": _median(e_scale[sel]),
                "inslit_err_ratio_without_scale": _median(err_in_o[sel] / err_in_t[sel]),
            }
        )
        rows.append(row)
    return rows


def line_measure(spec, line):
    """Integrated line flux (uJy um, continuum subtracted) and its S/N; peak S/N."""
    w, f, e, ok = spec["wave"], spec["flux"], spec["err"], spec["valid"]
    dw = bin_widths(w)
    cont_sel = np.zeros_like(ok)
    for a, b in line["continuum"]:
        cont_sel |= (w >= a) & (w < b)
    cont = float(np.median(f[cont_sel & ok]))
    lo, hi = line["window"]
    sel = ok & (w >= lo) & (w < hi)
    flux = float(np.sum((f[sel] - cont) * dw[sel]))
    err = float(np.sqrt(np.sum((e[sel] * dw[sel]) ** 2)))
    near = ok & (np.abs(w - line["nominal"]) <= PEAK_HALF_WIDTH)
    sn = f / e
    j = np.flatnonzero(near)[np.argmax(sn[near])]
    out = {
        "window_um": [lo, hi],
        "n_bins": int(sel.sum()),
        "continuum_ujy": cont,
        "line_flux_ujy_um": flux,
        "line_err_ujy_um": err,
        "sn": flux / err,
        "peak_sn": float(sn[j]),
        "peak_wave_um": float(w[j]),
    }
    if "err_scale" in spec:
        scale = _median(spec["err_scale"][sel])
        out["err_scale"] = scale
        out["sn_without_err_scale"] = out["sn"] * scale
    return out


def band_median(wave, values, lo, hi):
    sel = (wave >= lo) & (wave < hi) & np.isfinite(values)
    return _median(values[sel])


# --------------------------------------------------------------------------------------
# explanation of the differences on CEERS
# --------------------------------------------------------------------------------------
def _trace_stats(result, ref, bands):
    """Bar shadow at msaexp's traces, trace offsets (ours - msaexp), per band."""
    group = result.group
    ny, nx = group.sh
    ours_rows = group.trace_rows()
    traces = next(iter(ref["traces"].values()))
    if traces["sh"] != [ny, nx]:
        return {"note": f"cutout shapes differ: ours {[ny, nx]}, msaexp {traces['sh']}"}
    exps = traces["exposures"]
    m_rows = np.array([np.array(e["trace_row"], float) for e in exps])
    m_bar = np.array([np.array(e["bar"], float) for e in exps])
    m_wave = np.array([np.array(e["wave"], float) for e in exps])
    out = {}
    for lo, hi in bands:
        key = f"{lo:.1f}-{hi:.1f}"
        out[key] = {
            "bar_at_msaexp_trace": band_median(m_wave.ravel(), m_bar.ravel(), lo, hi),
            "trace_ours_minus_msaexp_px": band_median(
                m_wave.ravel(), (ours_rows - m_rows).ravel(), lo, hi
            ),
        }
    out["msaexp_trace_coeffs"] = exps[0]["trace_coeffs"]
    return out


def _pathloss_stats(result, msaexp_spec, table, bands):
    """Factors of the two path losses per band (median over the band's bins)."""
    group = result.group
    ny, nx = group.sh
    model = group.source_image_model()
    sigma = group.profile_sigma()
    _, thr_fit = model.images(group.trace_rows(), sigma)
    t_cat = model.throughput(group.catalogue_rows(), 0.0, transmission=model.planned_transmission)
    rows = np.arange(ny, dtype=float)
    tr = group.trace_rows()
    ps_tr = np.full((group.N, nx), np.nan)
    for i, (slit, sl) in enumerate(zip(group.slits, group.slices, strict=True)):
        ps = np.asarray(slit.pathloss_ps, float)[sl]
        for j in range(nx):
            ok = np.isfinite(ps[:, j])
            if ok.sum() > 1 and np.isfinite(tr[i, j]):
                ps_tr[i, j] = np.interp(tr[i, j], rows[ok], ps[ok, j])
    wcol = np.nanmedian(group.wave.reshape(group.N, ny, nx)[0], axis=0)
    mw = msaexp_spec["wave"]
    mok = msaexp_spec["valid"]
    out = {}
    for lo, hi in bands:
        key = f"{lo:.1f}-{hi:.1f}"
        sel = (wcol >= lo) & (wcol < hi)
        msel = mok & (mw >= lo) & (mw < hi)
        entry = {
            "pathloss_ps_at_trace": _median(ps_tr[:, sel]),
            "model_point_throughput_at_catalogue": _median(t_cat[:, sel]),
            "model_throughput_at_fit": _median(thr_fit[:, sel]),
            "pathloss_ps_over_model_point": _median(ps_tr[:, sel] / t_cat[:, sel]),
            "fit_over_catalogue_point": _median(thr_fit[:, sel] / t_cat[:, sel]),
            "ours_absolute_throughput": _median(ps_tr[:, sel] * thr_fit[:, sel] / t_cat[:, sel]),
            "msaexp_relative_throughput": _median(1.0 / msaexp_spec["path_corr"][msel]),
        }
        if table is not None:
            t0 = table.centred_point_throughput(mw[msel])
            entry["msaexp_centred_point_throughput"] = _median(t0)
            entry["msaexp_absolute_throughput"] = _median(t0 / msaexp_spec["path_corr"][msel])
        out[key] = entry
    return out


def _ratio_rows(spec_a, spec_b, bands):
    """Band-integral ratios a/b of the in-slit flux, of the flux; path_corr medians."""
    lo_c, hi_c = common_range(spec_a, spec_b)
    out = {}
    for lo, hi in bands:
        lo2, hi2 = max(lo, lo_c), min(hi, hi_c)
        key = f"{lo:.1f}-{hi:.1f}"
        if lo2 >= hi2:
            out[key] = None
            continue
        ins_a, _ = band_integral(spec_a, spec_a["flux"] / spec_a["path_corr"], lo2, hi2)
        ins_b, _ = band_integral(spec_b, spec_b["flux"] / spec_b["path_corr"], lo2, hi2)
        f_a, _ = band_integral(spec_a, spec_a["flux"], lo2, hi2)
        f_b, _ = band_integral(spec_b, spec_b["flux"], lo2, hi2)
        sel = spec_a["valid"] & (spec_a["wave"] >= lo2) & (spec_a["wave"] < hi2)
        err_b = interp_valid(
            spec_b["wave"], spec_b["err"] / spec_b["path_corr"], spec_b["valid"], spec_a["wave"]
        )
        out[key] = {
            "inslit_integral": ins_a / ins_b,
            "flux_integral": f_a / f_b,
            "path_corr": _median(spec_a["path_corr"][sel]),
            "inslit_err_median": _median((spec_a["err"] / spec_a["path_corr"])[sel] / err_b[sel]),
        }
    return out


def explain_ceers(files, result, ours, theirs, ref, bands, with_emulation=True):
    """Measurements that take the differences apart (see the module docstring)."""
    import slitcombine

    hdr = ref["spec1d"]["header_fit"]
    out = {
        "sigma_px": {
            "ours (optics model, Gaussian source)": float(np.median(result.sigma)),
            "msaexp (lookup table, exponential)": hdr.get("SIGMA"),
        },
        "msaexp_fit_priors": ref.get("fit_priors"),
        "msaexp_norm_corr": {
            f"{lo:.1f}-{hi:.1f}": band_median(
                theirs["wave"][theirs["valid"]], theirs["norm_corr"][theirs["valid"]], lo, hi
            )
            for lo, hi in bands
        }
        if "norm_corr" in theirs
        else None,
        "traces": _trace_stats(result, ref, bands),
    }
    table = None
    prf = ref.get("lookup_prf_file")
    if prf and Path(prf).is_file():
        table = MsaexpLookupTable(prf, relative=True)
        out["lookup_prf_file"] = prf
    out["pathloss"] = _pathloss_stats(result, theirs, table, bands)
    variants = {}
    t0 = time.perf_counter()
    ext = slitcombine.combine(files, name="extended", source_type="extended")
    variants["ours, source_type='extended' (bar-shadow corrected data)"] = {
        "sigma_px": float(np.median(ext.sigma)),
        "vs_msaexp": _ratio_rows(spectrum_arrays(ext.spec), theirs, bands),
    }
    if with_emulation and table is not None:
        calib = os.pathsep.join(
            [ref["msaexp_data_dir"], str(Path(ref["msaexp_data_dir"]) / "msa_sky")]
        )
        steps = (
            ("E0 msaexp's profile table on the detector image", {"bar_divided": False}),
            ("E1 + data divided by the bar shadow, width fitted there", {}),
            ("E2 + msaexp's calibration tables", {"calib_dir": calib}),
            ("E3 + width = msaexp's SIGMA", {"calib_dir": calib, "sigma": hdr.get("SIGMA")}),
        )
        for label, kw in steps:
            res, spec = emulate_msaexp(files, table, **kw)
            arrays = spectrum_arrays(spec)
            variants[label] = {
                "sigma_px": float(kw.get("sigma") or np.median(res.sigma)),
                "calibration_steps": {
                    k: res.group.meta["steps"].get(k, {}).get("status")
                    for k in ("normalization", "global_sky", "extra_dq")
                },
                "vs_msaexp": _ratio_rows(arrays, theirs, bands),
                "ours_vs_it": _ratio_rows(ours, arrays, bands),
            }
    out["variants"] = variants
    out["variants_wall_s"] = time.perf_counter() - t0
    return out


# --------------------------------------------------------------------------------------
# CEERS run
# --------------------------------------------------------------------------------------
def _git_state():
    """The repository's commit and whether ``src/`` has uncommitted changes."""
    import subprocess

    def git(*cmd):
        proc = subprocess.run(
            ["git", *cmd], cwd=_peer.REPO_ROOT, capture_output=True, text=True, check=False
        )
        return proc.stdout.strip() if proc.returncode == 0 else None

    status = git("status", "--porcelain", "--", "src")
    return {
        "commit": git("rev-parse", "--short", "HEAD"),
        "src_modified": None if status is None else bool(status),
    }


def _versions():
    import importlib.metadata as md

    import slitcombine

    out = {"python": platform.python_version()}
    for name in ("slitcombine", "numpy", "scipy", "astropy", "gwcs", "asdf"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    out["slitcombine_path"] = str(Path(slitcombine.__file__).resolve().parent)
    out["git"] = _git_state()
    return out


def _machine():
    load = os.getloadavg() if hasattr(os, "getloadavg") else (math.nan,) * 3
    return {
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "loadavg_1_5_15": [round(v, 2) for v in load],
    }


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        return float(obj) if math.isfinite(obj) else None
    return obj


CSV_COLUMNS = (
    ("band_um", "band (um)", None),
    ("n_bins", "bins", None),
    ("band_sn_ours", "S/N (ours)", 0),
    ("inslit_median", "in-slit median", 3),
    ("inslit_integral", "in-slit integral", 3),
    ("path_corr_ratio", "path_corr ratio", 3),
    ("path_corr_ours", "path_corr ours", 3),
    ("path_corr_msaexp", "path_corr msaexp", 3),
    ("flux_median", "flux median", 3),
    ("flux_integral", "flux integral", 3),
    ("err_ratio", "err ratio", 3),
    ("err_scale_ours", "err_scale ours", 3),
    ("inslit_err_ratio_without_scale", "in-slit err ratio without err_scale", 3),
    ("line", "line", None),
    ("line_sn_ours", "line S/N ours", 1),
    ("line_sn_msaexp", "line S/N msaexp", 1),
)


def write_csv(path, rows, lines):
    """The band table (ratios ours/msaexp), one row per band, with the line in it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow([label for _, label, _ in CSV_COLUMNS])
        for row in rows:
            line = next(
                (k for k, v in LINES.items() if row["lo"] <= v["nominal"] < row["hi"]), None
            )
            values = dict(row)
            if line is not None:
                values["line"] = line
                values["line_sn_ours"] = lines[line]["ours"]["sn"]
                values["line_sn_msaexp"] = lines[line]["msaexp"]["sn"]
            out = []
            for key, _, digits in CSV_COLUMNS:
                v = values.get(key)
                if v is None or (isinstance(v, float) and not math.isfinite(v)):
                    out.append("")
                elif digits is None:
                    out.append(str(v))
                else:
                    out.append(f"{v:.{digits}f}")
            writer.writerow(out)
    return path


def run_ceers(args):
    import slitcombine

    files = [str(f) for f in _peer.ceers_files()]
    machine_start = _machine()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ceers_fluxes_msaexp_") as tmp:
        ref = _peer.run_peer(
            args.msaexp_python,
            "extract",
            [*files, "--arrays", "--traces", "--outdir", tmp],
            timeout=args.timeout,
        )
    msaexp_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    result = slitcombine.combine(files)
    ours_s = time.perf_counter() - t0
    ours = spectrum_arrays(result.spec)
    theirs = msaexp_arrays(ref)
    rows = band_table(ours, theirs)
    lines = {
        name: {"ours": line_measure(ours, spec), "msaexp": line_measure(theirs, spec)}
        for name, spec in LINES.items()
    }
    for v in lines.values():
        for what in ("line_flux_ujy_um", "sn"):
            v[f"{what}_ratio"] = v["ours"][what] / v["msaexp"][what]
    explanation = None
    if not args.no_explanation:
        explanation = explain_ceers(
            files, result, ours, theirs, ref, BANDS, with_emulation=not args.no_emulation
        )
    out = {
        "what": "CEERS PRISM 1345_933: slitcombine (defaults) / msaexp extract_spectra "
        "(defaults), per band; see benchmarks/compare_ceers_fluxes.py",
        "date_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "files": [Path(f).name for f in files],
        "versions": {"slitcombine_side": _versions(), "msaexp_side": ref["versions"]},
        "machine": {"start": machine_start, "end": _machine(), "msaexp": ref["machine"]},
        "wall_s": {"msaexp_process": msaexp_s, "ours_in_process": ours_s},
        "ours": {
            "source_type_used": result.params.get("source_type_used"),
            "pathloss_used": result.pathloss_used,
            "noise_scale": (result.params.get("noise_scale") or {}).get("scale"),
            "sigma_px": float(np.median(result.sigma)),
            "n_bins": int(ours["valid"].size),
            "n_valid": int(ours["valid"].sum()),
        },
        "msaexp": {
            "header": ref["spec1d"]["header"],
            "header_fit": ref["spec1d"]["header_fit"],
            "n_bins": int(theirs["valid"].size),
            "n_valid": int(theirs["valid"].sum()),
        },
        "bands": rows,
        "lines": lines,
        "explanation": explanation,
    }
    version = ref["versions"].get("msaexp") or "unknown"
    json_path = Path(args.json or RESULTS_DIR / f"ceers-fluxes-msaexp-{version}.json")
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(_jsonable(out), indent=1, allow_nan=False) + "\n")
    csv_path = write_csv(args.csv or CSV_PATH, rows, lines)
    _print_ceers(out)
    print(f"\nwrote {json_path}\nwrote {csv_path}")
    return out


def _fmt(v, digits=3):
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return f"{v:.{digits}f}"


def _print_ceers(out):
    print("ours / msaexp, CEERS 1345_933 PRISM (medians of per-bin ratios; integrals)")
    head = (
        f"{'band um':>9} {'n':>4} {'S/N':>4} {'inslit':>7} {'(int)':>7} {'pc':>7} "
        f"{'pc_o':>6} {'pc_m':>6} {'flux':>7} {'(int)':>7} {'err':>6} {'escl':>6} {'err0':>6}"
    )
    print(head)
    for r in out["bands"]:
        if "inslit_median" not in r:
            print(f"{r['band_um']:>9} {r['n_bins']:>4}  (no common valid bins)")
            continue
        print(
            f"{r['band_um']:>9} {r['n_bins']:>4} {r['band_sn_ours']:4.0f} "
            f"{_fmt(r['inslit_median']):>7} {_fmt(r['inslit_integral']):>7} "
            f"{_fmt(r['path_corr_ratio']):>7} {_fmt(r['path_corr_ours']):>6} "
            f"{_fmt(r['path_corr_msaexp']):>6} {_fmt(r['flux_median']):>7} "
            f"{_fmt(r['flux_integral']):>7} {_fmt(r['err_ratio']):>6} "
            f"{_fmt(r['err_scale_ours']):>6} {_fmt(r['inslit_err_ratio_without_scale']):>6}"
        )
    for name, v in out["lines"].items():
        o, m = v["ours"], v["msaexp"]
        parts = [
            f"{name}: S/N ours {o['sn']:.1f}",
            f"(without err_scale {o.get('sn_without_err_scale', 0):.1f}),",
            f"msaexp {m['sn']:.1f}; peak S/N {o['peak_sn']:.1f} / {m['peak_sn']:.1f};",
            f"line flux ratio {v['line_flux_ujy_um_ratio']:.3f}",
        ]
        print(" ".join(parts))
    ex = out.get("explanation")
    if not ex:
        return
    print("\nexplanation (per band)")
    print("sigma px:", ex["sigma_px"])
    for key in ex["traces"]:
        if key in ex["pathloss"]:
            t, p = ex["traces"][key], ex["pathloss"][key]
            parts = [
                f"{key:>8}: bar@msaexp trace {_fmt(t['bar_at_msaexp_trace'])},",
                f"trace diff {_fmt(t['trace_ours_minus_msaexp_px'], 2)} px,",
                f"norm_corr {_fmt((ex['msaexp_norm_corr'] or {}).get(key))};",
                f"PATHLOSS_PS {_fmt(p['pathloss_ps_at_trace'])},",
                f"PS/T_point {_fmt(p['pathloss_ps_over_model_point'])},",
                f"T_fit/T_cat {_fmt(p['fit_over_catalogue_point'])},",
                f"ours T {_fmt(p['ours_absolute_throughput'])};",
                f"msaexp T/T0 {_fmt(p['msaexp_relative_throughput'])},",
                f"T0 {_fmt(p.get('msaexp_centred_point_throughput'))},",
                f"T {_fmt(p.get('msaexp_absolute_throughput'))}",
            ]
            print(" ".join(parts))
    for label, v in ex["variants"].items():
        cells = " ".join(
            f"{k}:{_fmt(r['inslit_integral'])}" if r else f"{k}:-"
            for k, r in v["vs_msaexp"].items()
        )
        print(f"{label} (sigma {v['sigma_px']:.3f}) in-slit / msaexp: {cells}")


# --------------------------------------------------------------------------------------
# simulations
# --------------------------------------------------------------------------------------
def _truth_on(spec, truth, column):
    """The truth at the mean wavelength of each bin's pixels (mean over exposures)."""
    w = _value(spec["wave_eff"]) if "wave_eff" in spec.colnames else _value(spec["wave"])
    w = np.where(np.isfinite(w), w, _value(spec["wave"]))
    t = np.asarray(truth[column], float)
    if t.ndim == 2:
        t = t.mean(axis=1)
    return np.interp(w, np.asarray(truth["wave"], float), t)


def sim_scores(spec, truth, bands=BANDS):
    """Per band: flux / truth, in-slit / (truth * throughput), path_corr * throughput
    (ratios of sums over the valid bins where the truth exceeds 20% of its median)."""
    f = _value(spec["flux"])
    e = _value(spec["err"])
    pc = _value(spec["path_corr"])
    w = _value(spec["wave"])
    big_f = _truth_on(spec, truth, "flux")
    thr = _truth_on(spec, truth, "throughput")
    ok = np.asarray(spec["valid"], bool) & (big_f > 0.2 * np.median(big_f[big_f > 0]))
    out = {}
    for lo, hi in bands:
        sel = ok & (w >= lo) & (w < hi)
        if sel.sum() < 3:
            out[f"{lo:.1f}-{hi:.1f}"] = None
            continue
        out[f"{lo:.1f}-{hi:.1f}"] = {
            "flux": float(np.sum(f[sel]) / np.sum(big_f[sel])),
            "inslit": float(np.sum((f / pc)[sel]) / np.sum((big_f * thr)[sel])),
            "path_corr_x_T": _median(pc[sel] * thr[sel]),
            "n": int(sel.sum()),
        }
    pull = (f[ok] - big_f[ok]) / e[ok]
    out["pull_std"] = float(np.std(pull))
    return out


def run_simulations(args):
    import slitcombine
    from slitcombine.testing.simulate import simulate_observation

    seeds = [int(s) for s in args.seeds.split(",")]
    table = table_abs = None
    if not args.no_emulation:
        paths = _peer.run_peer(args.msaexp_python, "data_dir", [], timeout=120)
        if paths.get("lookup_prf_file"):
            table = MsaexpLookupTable(paths["lookup_prf_file"], relative=True)
            table_abs = MsaexpLookupTable(paths["lookup_prf_file"], relative=False)
    machine_start = _machine()
    cases = []
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ceers_fluxes_sim_") as tmp:
        for ypos in SIM_YPOS:
            for sigma in SIM_SIGMA:
                for seed in seeds:
                    folder = Path(tmp) / f"y{ypos}_s{sigma}_{seed}"
                    sim = simulate_observation(
                        folder,
                        grating="PRISM",
                        n_shutters=3,
                        n_nods=3,
                        snr=SIM_SNR,
                        n_crs=0,
                        source_ypos=ypos,
                        source_xpos=SIM_XPOS,
                        intrinsic_sigma=sigma,
                        seed=seed,
                        detector="NRS2",
                    )
                    files = [str(f) for f in sim.files]
                    case = {"source_ypos": ypos, "intrinsic_sigma_px": sigma, "seed": seed}
                    res = slitcombine.combine(files, name="ours")
                    case["ours"] = sim_scores(res.spec, sim.truth)
                    case["ours"]["sigma_px"] = float(np.median(res.sigma))
                    ext = slitcombine.combine(files, name="ext", source_type="extended")
                    case["extended"] = sim_scores(ext.spec, sim.truth)
                    if table is not None:
                        _, e0 = emulate_msaexp(files, table, bar_divided=False)
                        case["msaexp_profile_on_detector_image"] = sim_scores(e0, sim.truth)
                        er, espec = emulate_msaexp(files, table)
                        case["msaexp_emulation"] = sim_scores(espec, sim.truth)
                        case["msaexp_emulation"]["sigma_px"] = float(np.median(er.sigma))
                        _, aspec = emulate_msaexp(files, table_abs)
                        case["msaexp_emulation_absolute_pathloss"] = sim_scores(aspec, sim.truth)
                    cases.append(case)
                    print(_sim_line(case), flush=True)
        noise = []
        for excess in (1.0, 1.25):
            for seed in seeds:
                folder = Path(tmp) / f"noise{excess}_{seed}"
                sim = simulate_observation(
                    folder,
                    grating="PRISM",
                    n_shutters=3,
                    n_nods=3,
                    snr=SIM_SNR,
                    n_crs=0,
                    source_ypos=SIM_YPOS[0],
                    source_xpos=SIM_XPOS,
                    intrinsic_sigma=SIM_SIGMA[1],
                    seed=seed,
                    excess_noise=excess,
                )
                files = [str(f) for f in sim.files]
                row = {"excess_noise": excess, "seed": seed}
                for label, kw in (
                    ("defaults", {}),
                    ("rescale_variance=False", {"rescale_variance": False}),
                ):
                    r = slitcombine.combine(files, name="noise", **kw)
                    row[label] = {
                        "pull_std": sim_scores(r.spec, sim.truth)["pull_std"],
                        "noise_scale": (r.params.get("noise_scale") or {}).get("scale"),
                    }
                noise.append(row)
                print(
                    f"excess_noise {excess}: pull std defaults "
                    f"{row['defaults']['pull_std']:.3f} (noise scale "
                    f"{row['defaults']['noise_scale']}), rescale_variance=False "
                    f"{row['rescale_variance=False']['pull_std']:.3f}",
                    flush=True,
                )
    summary = sim_summary(cases)
    print_sim_summary(summary)
    out = {
        "what": "CEERS-like PRISM simulations (3 shutters, 3 nods, SRCXPOS -0.25, S/N 30): "
        "flux/truth, in-slit/(truth*throughput), path_corr*throughput per band; "
        "see benchmarks/compare_ceers_fluxes.py --simulations",
        "date_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "versions": _versions(),
        "machine": {"start": machine_start, "end": _machine()},
        "wall_s": time.perf_counter() - t_start,
        "grid": {
            "source_ypos": SIM_YPOS,
            "intrinsic_sigma_px": SIM_SIGMA,
            "source_xpos": SIM_XPOS,
            "snr": SIM_SNR,
            "seeds": seeds,
        },
        "msaexp_table": None if table is None else table.path,
        "summary": summary,
        "cases": cases,
        "noise": noise,
    }
    path = Path(args.json or RESULTS_DIR / "ceers-fluxes-simulations.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_jsonable(out), indent=1, allow_nan=False) + "\n")
    print(f"wrote {path}")
    return out


SIM_VARIANTS = (
    ("ours", "slitcombine defaults"),
    ("extended", "source_type='extended' (bar-shadow corrected data)"),
    ("msaexp_profile_on_detector_image", "E0: msaexp's profile table, detector image"),
    ("msaexp_emulation", "E1: msaexp emulation (bar-divided data, relative path loss)"),
    ("msaexp_emulation_absolute_pathloss", "E1 with the table's absolute path loss"),
)


def sim_summary(cases):
    """Per (position, width) and variant: the range over bands and seeds of flux/truth,
    in-slit/(truth x throughput) and path_corr x throughput."""
    out = []
    keys = sorted({(c["source_ypos"], c["intrinsic_sigma_px"]) for c in cases})
    for ypos, sigma in keys:
        group = [c for c in cases if (c["source_ypos"], c["intrinsic_sigma_px"]) == (ypos, sigma)]
        entry = {"source_ypos": ypos, "intrinsic_sigma_px": sigma}
        for label, _ in SIM_VARIANTS:
            vals = [
                v for c in group if label in c for v in c[label].values() if isinstance(v, dict)
            ]
            if not vals:
                continue
            entry[label] = {
                q: [min(v[q] for v in vals), max(v[q] for v in vals)]
                for q in ("flux", "inslit", "path_corr_x_T")
            }
        out.append(entry)
    return out


def print_sim_summary(summary):
    print("\nsummary: min-max over bands and seeds (flux/truth; in-slit/truth; path_corr*T)")
    for entry in summary:
        print(f"ypos {entry['source_ypos']:+.3f}, sigma {entry['intrinsic_sigma_px']:.2f} px")
        for label, text in SIM_VARIANTS:
            if label not in entry:
                continue
            v = entry[label]
            cells = "; ".join(f"{v[q][0]:.3f}-{v[q][1]:.3f}" for q in ("flux", "inslit"))
            pc = v["path_corr_x_T"]
            print(f"  {text:62s} {cells}; {pc[0]:.3f}-{pc[1]:.3f}")


def _sim_line(case):
    parts = [f"ypos {case['source_ypos']:+.3f} sigma {case['intrinsic_sigma_px']:.2f}"]
    labels = (
        "ours",
        "extended",
        "msaexp_profile_on_detector_image",
        "msaexp_emulation",
        "msaexp_emulation_absolute_pathloss",
    )
    for label in labels:
        if label not in case:
            continue
        cells = " ".join(
            f"{v['flux']:.3f}/{v['inslit']:.3f}/{v['path_corr_x_T']:.3f}"
            for k, v in case[label].items()
            if isinstance(v, dict)
        )
        parts.append(f"  {label:36s} {cells}")
    return "\n".join(parts)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--msaexp-python", default=None, help="python of the msaexp venv")
    parser.add_argument("--json", default=None, help="output JSON (default: results/)")
    parser.add_argument("--csv", default=None, help=f"band table CSV (default {CSV_PATH})")
    parser.add_argument("--timeout", type=float, default=900, help="peer time-out, s")
    parser.add_argument(
        "--simulations", action="store_true", help="run the simulation study instead"
    )
    parser.add_argument("--seeds", default="1", help="simulation seeds, comma-separated")
    parser.add_argument("--no-emulation", action="store_true", help="skip the msaexp emulations")
    parser.add_argument(
        "--no-explanation", action="store_true", help="CEERS: only the band table and lines"
    )
    args = parser.parse_args(argv)
    if args.simulations:
        run_simulations(args)
    else:
        run_ceers(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
