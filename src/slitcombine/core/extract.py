"""The pixel table of a group and the 1D extraction from it (optimal and boxcar).

Pure functions, no state.

Pixel table
-----------
:func:`build_pixel_table` makes one row per valid pixel of every *positive* exposure:
for exposure ``e`` at nod position ``p`` and pixel ``q`` (flattened index of the common
slice),

``flux = D_e(q) - sum_j m_j(q) D_j(q) / n(q)``

where ``D`` is the sky-subtracted data, ``j`` runs over the exposures at the *other*
nod positions, ``m_j(q)`` is their validity mask and ``n(q) = sum_j m_j(q)`` (no
negative term when differencing is off).  Its variance is
``var = V_e(q) + sum_j m_j V_j(q) / n**2``; the same holds for the read-noise variance
and for the weighting variance whose inverse is ``weight``.  The bit ``j`` of
``neg_bits`` records which exposures entered the negative mean, so the table alone
describes every row as a linear combination of the exposures (used for exact errors).

``sky`` is everything subtracted from the exposure's own data: its sky model plus
(with differences) the negative mean, uJy per pixel.

``profile`` is the unit-flux model of the row, ``P_e - sum_j m_j P_j / n`` with ``P``
the pixel-integrated cross-dispersion profile of :func:`slitcombine.core.profile.pixel_profile`
of each exposure (the source sits at ``yslit = 0`` of every exposure), so it has the
positive trace and the negative traces of the other nods.  ``path_profile`` is the same
with each exposure's profile multiplied by its slit throughput ``T`` (``pathloss``
column: ``T_e``); without a path-loss model ``T = 1``.  ``path_profile_abs`` adds the
positive and negative terms of ``path_profile`` in absolute value: the source light in
the row whatever cancels (:mod:`slitcombine.core.noise`).

1D extraction
-------------
For a wavelength bin ``b`` and any row weights ``u`` the estimator is linear in the data:

``flux_b = sum(u * flux) / sum(u * path_profile)``

It is unbiased when ``u`` does not depend on the noise of the data: the expectation of
``flux`` is ``F * path_profile`` for a source of total flux density ``F`` (uJy), so
``flux_b`` estimates ``F`` itself, i.e. the flux *in front of the shutter* when the
throughput model is used.  Two choices of ``u``:

* optimal (Horne-type): ``u = weight * profile`` with ``weight`` the inverse of the
  ``weight_type`` variance (default: read noise, independent of the data); every pixel
  of the positive *and* negative traces contributes through the signed ``profile``;
* boxcar: ``u = 1`` for ``|yslit| <= boxcar_halfwidth`` (the positive trace), 0
  elsewhere; the profile normalisation makes it aperture-corrected.

``path_corr = sum(u * profile) / sum(u * path_profile)`` is the multiplicative
correction from the flux through the shutter to the flux in front of it (already
applied to ``flux`` and ``err``; 1 without a path-loss model).

Errors: the numerator is ``sum_{e,q} b_e(q) D_e(q)`` with coefficients ``b`` obtained
by summing each row's ``u`` over the positive term and ``-u/n`` over its negative
terms.  Its variance ``sum b_e(q)**2 V_e(q)`` is therefore exact for independent
pixels, *including* the covariance between rows that share a negative exposure (which
a sum of row variances would ignore).  No resampling is involved, so neighbouring
wavelength bins are independent.
"""

from __future__ import annotations

import logging

import numpy as np
from astropy import units as u
from astropy.table import QTable, Table

from slitcombine.core.resample import bin_edges, bin_index
from slitcombine.errors import SlitCombineError

__all__ = [
    "DEFAULT_BOXCAR_HALFWIDTH",
    "PIXEL_TABLE_UNITS",
    "build_pixel_table",
    "bin_footprints",
    "extract_1d",
    "collapsed_profile",
]

log = logging.getLogger(__name__)

#: Half-width (pixels) of the boxcar aperture around the trace.
DEFAULT_BOXCAR_HALFWIDTH = 2.5

#: Units of the pixel-table columns (``weight`` depends on ``weight_type``).
PIXEL_TABLE_UNITS = {
    "wave": u.um,
    "dwave_dx": u.um / u.pix,
    "yslit": u.pix,
    "yshutter": None,
    "xslit": u.pix,
    "ypix": u.pix,
    "flux": u.uJy,
    "var": u.uJy**2,
    "var_rnoise": u.uJy**2,
    "var_pos": u.uJy**2,
    "sky": u.uJy,
    "bar": None,
    "profile": None,
    "path_profile": None,
    "path_profile_abs": None,
    "pathloss": None,
    "normalization": None,
    "exptime": u.s,
}

_WEIGHT_UNITS = {
    "ivm": u.uJy**-2,
    "poisson": u.uJy**-2,
    "exptime": u.s,
    "exptime_bar": u.s,
    "mask": None,
}


def _masked_sum(values, mask):
    return np.where(mask, values, 0.0).sum(axis=0)


def build_pixel_table(
    data,
    var,
    wvar,
    var_rnoise,
    sky,
    mask,
    wave,
    yslit,
    positions,
    profile,
    *,
    throughput=None,
    diffs=True,
    extra=None,
    weight_type="ivm",
    float_dtype=float,
):
    """One row per valid pixel of every positive exposure (see the module docstring).

    Parameters
    ----------
    data : numpy.ndarray
        ``(N, npix)`` sky-subtracted data, uJy per pixel (NaN where invalid).
    var, wvar, var_rnoise : numpy.ndarray
        ``(N, npix)`` total variance (uJy^2), weighting variance (the ``weight_type``
        quantity whose inverse is the weight) and read-noise variance (uJy^2).
    sky : numpy.ndarray
        ``(N, npix)`` sky model already subtracted from ``data``, uJy per pixel.
    mask : numpy.ndarray
        ``(N, npix)`` valid pixels.
    wave, yslit : numpy.ndarray
        ``(N, npix)`` wavelength (um) and distance from the trace (pixels).
    positions : array-like
        ``(N,)`` nod-position key of each exposure.
    profile : numpy.ndarray
        ``(N, npix)`` unit-flux cross-dispersion profile of each exposure.
    throughput : numpy.ndarray, optional
        ``(N, npix)`` slit throughput of each exposure (default 1).
    diffs : bool
        Subtract the mean of the other nod positions.
    extra : dict of str -> numpy.ndarray, optional
        ``(N, npix)`` (or ``(N,)``) quantities copied from the positive exposure
        (``xslit``, ``ypix``, ``bar``, ``dwave_dx`` ...).
    weight_type : str
        Recorded in the metadata and used for the unit of ``weight``.
    float_dtype : numpy dtype
        Type of the floating-point columns.

    Returns
    -------
    astropy.table.Table
        Columns ``wave, yslit, flux, var, var_rnoise, var_pos, weight, sky, profile,
        path_profile, pathloss, exposure_index, position, pixel_index, neg_bits`` and
        the ``extra`` columns, with units.  ``meta`` holds ``N_EXP``, ``NPIX``,
        ``DIFFS`` and ``WGHTTYPE``.

    Raises
    ------
    SlitCombineError
        If no pixel is valid, or the group has more than 63 exposures.
    """
    data = np.asarray(data, float)
    n_exp, npix = data.shape
    if n_exp > 63:
        raise SlitCombineError(f"at most 63 exposures per group are supported, got {n_exp}")
    positions = np.asarray(positions)
    valid_all = np.asarray(mask, bool) & np.isfinite(data) & np.isfinite(var) & (var > 0)
    valid_all &= np.isfinite(wave) & np.isfinite(yslit) & np.isfinite(profile)
    thr = np.ones_like(data) if throughput is None else np.asarray(throughput, float)
    valid_all &= np.isfinite(thr)
    arrays = {
        "flux": data,
        "var": var,
        "wvar": wvar,
        "rn": var_rnoise,
        "sky": sky,
        "prof": profile,
        "ppl": profile * thr,
    }
    cat = _difference_rows(arrays, valid_all, positions, diffs)
    q = cat["q"].astype(np.int64)
    e = cat["e"].astype(np.int64)
    if q.size == 0:
        raise SlitCombineError("no valid pixel left for the pixel table (everything masked?)")
    tab = _pixel_table(cat, q, e, wave, yslit, thr, positions, extra, float_dtype, weight_type)
    tab.meta.update(
        {"N_EXP": int(n_exp), "NPIX": int(npix), "DIFFS": bool(diffs), "WGHTTYPE": weight_type}
    )
    return tab


def _negative_mean(arrays, valid, ineg):
    """Mean of the valid pixels of the exposures ``ineg`` (the nod difference's negative).

    Returns ``(means, bits, has_neg)``: per quantity the ``(npix,)`` mean (variances
    divided by the count squared; the ``sky`` of the negative is the mean of its data),
    the bitmask of the exposures used per pixel and whether any was.
    """
    npix = valid.shape[1]
    if not np.any(ineg):
        means = {k: np.zeros(npix) for k in ("flux", "var", "wvar", "rn", "prof", "ppl", "sky")}
        return means, np.zeros(npix, np.uint64), np.ones(npix, bool)
    m = valid[ineg]
    n = m.sum(axis=0).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        inv = np.where(n > 0, 1.0 / n, np.nan)
    means = {
        "flux": _masked_sum(arrays["flux"][ineg], m) * inv,
        "var": _masked_sum(arrays["var"][ineg], m) * inv**2,
        "wvar": _masked_sum(arrays["wvar"][ineg], m) * inv**2,
        "rn": _masked_sum(arrays["rn"][ineg], m) * inv**2,
        "sky": _masked_sum(arrays["flux"][ineg], m) * inv,
        "prof": _masked_sum(arrays["prof"][ineg], m) * inv,
        "ppl": _masked_sum(arrays["ppl"][ineg], m) * inv,
    }
    shifts = np.flatnonzero(ineg).astype(np.uint64)
    bits = (m.astype(np.uint64) << shifts[:, None]).sum(axis=0, dtype=np.uint64)
    return means, bits, n > 0


def _difference_rows(arrays, valid, positions, diffs):
    """Concatenated per-pixel columns of every positive exposure minus its negative."""
    names = ("q", "e", "flux", "var", "wvar", "rn", "vpos", "sky", "prof", "ppl", "pabs", "bits")
    cols = {k: [] for k in names}
    for pos in np.unique(positions):
        ipos = positions == pos
        ineg = ~ipos if diffs else np.zeros_like(ipos)
        neg, bits, has_neg = _negative_mean(arrays, valid, ineg)
        for e in np.flatnonzero(ipos):
            q = np.flatnonzero(valid[e] & has_neg)
            row = {k: arrays[k][e, q] for k in arrays}
            cols["q"].append(q)
            cols["e"].append(np.full(q.size, e))
            cols["flux"].append(row["flux"] - neg["flux"][q])
            cols["var"].append(row["var"] + neg["var"][q])
            cols["wvar"].append(row["wvar"] + neg["wvar"][q])
            cols["rn"].append(row["rn"] + neg["rn"][q])
            cols["vpos"].append(row["var"])
            cols["sky"].append(row["sky"] + neg["sky"][q])
            cols["prof"].append(row["prof"] - neg["prof"][q])
            cols["ppl"].append(row["ppl"] - neg["ppl"][q])
            cols["pabs"].append(np.abs(row["ppl"]) + np.abs(neg["ppl"][q]))
            cols["bits"].append(bits[q])
    return {k: np.concatenate(v) if v else np.zeros(0) for k, v in cols.items()}


def _pixel_table(cat, q, e, wave, yslit, thr, positions, extra, float_dtype, weight_type):
    """The :func:`build_pixel_table` table of the concatenated columns, with units."""
    with np.errstate(divide="ignore", invalid="ignore"):
        weight = np.where(cat["wvar"] > 0, 1.0 / cat["wvar"], 0.0)
    weight[~np.isfinite(weight)] = 0.0
    fd = np.dtype(float_dtype)
    tab = Table()
    tab["wave"] = np.asarray(wave)[e, q].astype(fd)
    tab["yslit"] = np.asarray(yslit)[e, q].astype(fd)
    for name, key in (
        ("flux", "flux"),
        ("var", "var"),
        ("var_rnoise", "rn"),
        ("var_pos", "vpos"),
    ):
        tab[name] = cat[key].astype(fd)
    tab["weight"] = weight.astype(fd)
    for name, key in (
        ("sky", "sky"),
        ("profile", "prof"),
        ("path_profile", "ppl"),
        ("path_profile_abs", "pabs"),
    ):
        tab[name] = cat[key].astype(fd)
    tab["pathloss"] = thr[e, q].astype(fd)
    for key, arr in ({} if extra is None else dict(extra)).items():
        a = np.asarray(arr)
        vals = a[e] if a.ndim == 1 else a[e, q]
        tab[key] = vals.astype(fd) if np.issubdtype(vals.dtype, np.floating) else vals
    tab["exposure_index"] = e.astype(np.int16)
    tab["position"] = positions[e]
    tab["pixel_index"] = q.astype(np.int32)
    tab["neg_bits"] = cat["bits"].astype(np.uint64)
    for name, unit in PIXEL_TABLE_UNITS.items():
        if name in tab.colnames and unit is not None:
            tab[name].unit = unit
    wunit = _WEIGHT_UNITS.get(weight_type)
    if wunit is not None:
        tab["weight"].unit = wunit
    return tab


def bin_footprints(wave, dwave, edges, max_span=8):
    """The wavelength bins each pixel falls in, and which fraction of it.

    A pixel is assigned whole to the bin of its wavelength when the bins are at least as
    wide as the detector columns (the default grid: one bin per column); when some bin
    is narrower than the local column width ``|dwave|``, every pixel is spread over the
    bins its footprint ``wave +- |dwave|/2`` overlaps, in proportion to the overlap, so
    that no bin of a grid finer than the pixels is left empty (neighbouring bins then
    share pixels).

    Parameters
    ----------
    wave : numpy.ndarray
        ``(n,)`` pixel wavelengths, um.
    dwave : numpy.ndarray or None
        ``(n,)`` wavelength step per column at each pixel, um (None: whole pixels).
    edges : numpy.ndarray
        Bin edges, um (increasing).
    max_span : int
        Most bins one pixel may be spread over.

    Returns
    -------
    rows : numpy.ndarray
        Row index of each (pixel, bin) entry.
    ibin : numpy.ndarray
        Bin index of each entry.
    frac : numpy.ndarray
        Fraction of the pixel in that bin (1 for whole pixels); fractions of a pixel
        partly off the grid sum to less than 1.
    """
    wave = np.asarray(wave, float)
    ib = bin_index(wave, edges)
    whole = np.flatnonzero(ib >= 0)
    if dwave is None:
        return whole, ib[whole], np.ones(whole.size)
    dw = np.abs(np.asarray(dwave, float))
    width = np.diff(edges)
    local = np.where(ib >= 0, width[np.clip(ib, 0, width.size - 1)], np.inf)
    finite = np.isfinite(dw) & (dw > 0)
    if not np.any(finite & (local < 0.999 * np.where(finite, dw, 0.0))):
        return whole, ib[whole], np.ones(whole.size)
    dw = np.where(finite, dw, 0.0)
    lo, hi = wave - 0.5 * dw, wave + 0.5 * dw
    first = np.searchsorted(edges, lo, side="right") - 1
    rows_all, bins_all, frac_all = [], [], []
    ok = np.isfinite(wave)
    for k in range(int(max_span)):
        b = first + k
        valid = ok & (b >= 0) & (b < width.size)
        if not valid.any():
            if np.all(~ok | (b >= width.size)):
                break
            continue
        bb = np.clip(b, 0, width.size - 1)
        overlap = np.minimum(hi, edges[bb + 1]) - np.maximum(lo, edges[bb])
        with np.errstate(invalid="ignore", divide="ignore"):
            f = np.where(dw > 0, overlap / np.where(dw > 0, dw, 1.0), (b == ib).astype(float))
        use = valid & (f > 1e-9)
        rows_all.append(np.flatnonzero(use))
        bins_all.append(b[use])
        frac_all.append(np.minimum(f[use], 1.0))
    if not rows_all:
        return whole, ib[whole], np.ones(whole.size)
    rows = np.concatenate(rows_all)
    order = np.argsort(rows, kind="stable")
    return rows[order], np.concatenate(bins_all)[order], np.concatenate(frac_all)[order]


def _dense_variance(tab, n_exp, npix):
    """``(N, npix)`` exposure variances recovered from the ``var_pos`` column (NaN if absent)."""
    dense = np.full((n_exp, npix), np.nan)
    dense[np.asarray(tab["exposure_index"], int), np.asarray(tab["pixel_index"], int)] = np.asarray(
        tab["var_pos"], float
    )
    return dense


class _Terms:
    """The exposures entering each selected row, grouped by (bin, exposure, pixel)."""

    def __init__(self, tab, rows, ibin, exposure_variance=None):
        n_exp = int(tab.meta.get("N_EXP", int(np.max(tab["exposure_index"])) + 1))
        npix = int(tab.meta.get("NPIX", int(np.max(tab["pixel_index"])) + 1))
        e = np.asarray(tab["exposure_index"], np.int64)[rows]
        q = np.asarray(tab["pixel_index"], np.int64)[rows]
        bits = np.asarray(tab["neg_bits"], np.uint64)[rows]
        vpos = np.asarray(tab["var_pos"], float)[rows]
        vrow = np.asarray(tab["var"], float)[rows]
        dense = (
            _dense_variance(tab, n_exp, npix)
            if exposure_variance is None
            else np.asarray(exposure_variance, float)
        )
        shifts = np.arange(n_exp, dtype=np.uint64)
        onoff = ((bits[:, None] >> shifts[None, :]) & np.uint64(1)).astype(bool)
        n_neg = onoff.sum(axis=1)
        r_neg, j_neg = np.nonzero(onoff)
        q_neg = q[r_neg]
        v_neg = dense[j_neg, q_neg]
        # Missing exposure variance: share the row's negative variance equally.
        fallback = (vrow[r_neg] - vpos[r_neg]) * n_neg[r_neg]
        v_neg = np.where(np.isfinite(v_neg), v_neg, fallback)
        self.term_row = np.concatenate([np.arange(rows.size), r_neg])
        self.term_coef = np.concatenate([np.ones(rows.size), -1.0 / n_neg[r_neg]])
        term_e = np.concatenate([e, j_neg])
        term_q = np.concatenate([q, q_neg])
        term_v = np.concatenate([vpos, v_neg])
        key = (ibin[self.term_row] * n_exp + term_e) * npix + term_q
        uniq, self.inverse = np.unique(key, return_inverse=True)
        self.key_bin = uniq // (n_exp * npix)
        self.key_var = np.zeros(uniq.size)
        self.key_var[self.inverse] = term_v

    def numerator_variance(self, weights, nbin):
        """Variance of ``sum(weights * flux)`` per bin."""
        b = np.bincount(self.inverse, weights[self.term_row] * self.term_coef)
        return np.bincount(self.key_bin, b**2 * self.key_var, minlength=nbin)


def _col(tab, name, default=None):
    if name in tab.colnames:
        return np.asarray(tab[name], float)
    return default


def extract_1d(
    tab,
    wave_grid,
    boxcar_halfwidth=DEFAULT_BOXCAR_HALFWIDTH,
    y_range=None,
    exposure_variance=None,
):
    """Optimal and boxcar 1D spectra from a pixel table (see the module docstring).

    Parameters
    ----------
    tab : astropy.table.Table
        Pixel table of :func:`build_pixel_table`.
    wave_grid : numpy.ndarray
        Wavelength bin centres, um; bin edges are half-way between them.
    boxcar_halfwidth : float
        Half-width of the boxcar aperture, pixels from the trace.
    y_range : (float, float), optional
        Use only rows with ``y_range[0] <= yslit <= y_range[1]`` in the optimal
        extraction (default: every row, so the negative traces contribute).
    exposure_variance : numpy.ndarray, optional
        ``(N, npix)`` variance of each exposure pixel (uJy^2); by default recovered from
        the table's ``var_pos`` column.

    Returns
    -------
    astropy.table.QTable
        Columns ``wave`` (um), ``flux``, ``err`` (uJy, optimal), ``valid``, ``sky``
        (uJy per pixel), ``path_corr``, ``npix``, ``flux_boxcar``, ``err_boxcar``
        (uJy), ``norm_corr``, ``flux_sum`` (uJy), ``profile_sum``, ``var_sum``
        (uJy^2), ``profile_weight`` (``sum(weight * profile**2)``) and ``wave_eff``
        (um, the ``weight * profile**2``-weighted mean wavelength of the pixels in the
        bin: where the bin's flux is actually measured).  Invalid bins have NaN ``flux``/``err`` and
        ``valid=False``.
    """
    wave_grid = np.asarray(wave_grid, float)
    nbin = wave_grid.size
    edges = bin_edges(wave_grid)
    wave = _col(tab, "wave")
    d = _col(tab, "flux")
    w = _col(tab, "weight")
    m0 = _col(tab, "profile")
    mpl = _col(tab, "path_profile", m0)
    finite = np.isfinite(d) & np.isfinite(w) & np.isfinite(m0) & np.isfinite(mpl)
    rows, ibin, frac = bin_footprints(wave, _col(tab, "dwave_dx"), edges)
    keep = finite[rows]
    rows, ibin, frac = rows[keep], ibin[keep], frac[keep]
    if rows.size == 0:
        raise SlitCombineError(
            f"no pixel of the table falls on the wavelength grid "
            f"({wave_grid[0]:.4f}-{wave_grid[-1]:.4f} um; data "
            f"{np.nanmin(wave):.4f}-{np.nanmax(wave):.4f} um)"
        )
    d, w, m0, mpl = d[rows], w[rows], m0[rows], mpl[rows]
    y = _col(tab, "yslit")[rows]
    sky = _col(tab, "sky", np.zeros(len(tab)))[rows]
    var = _col(tab, "var")[rows]
    norm = _col(tab, "normalization", np.ones(len(tab)))[rows]
    terms = _Terms(tab, rows, ibin, exposure_variance)

    def bsum(values):
        return np.bincount(ibin, frac * values, minlength=nbin)

    def estimate(uw):
        num = bsum(uw * d)
        den_pl = bsum(uw * mpl)
        den0 = bsum(uw * m0)
        vnum = terms.numerator_variance(frac * uw, nbin)
        with np.errstate(invalid="ignore", divide="ignore"):
            flux = num / den_pl
            err = np.sqrt(vnum) / np.abs(den_pl)
            pcorr = den0 / den_pl
        good = (den0 > 0) & np.isfinite(flux) & np.isfinite(err) & (err > 0)
        return flux, err, pcorr, good

    u_opt = w * m0
    if y_range is not None:
        u_opt = np.where((y >= y_range[0]) & (y <= y_range[1]), u_opt, 0.0)
    flux, err, pcorr, valid = estimate(u_opt)
    box = np.abs(y) <= float(boxcar_halfwidth)
    flux_b, err_b, _, valid_b = estimate(box.astype(float))

    p2 = u_opt * m0
    npix = np.bincount(ibin, (u_opt != 0).astype(float), minlength=nbin).astype(np.int32)
    with np.errstate(invalid="ignore", divide="ignore"):
        sp2 = bsum(p2)
        sky1 = bsum(p2 * sky) / sp2
        norm1 = bsum(p2 * norm) / sp2
        wave_eff = bsum(p2 * wave[rows]) / sp2
    valid &= npix > 0
    for arr in (flux, err):
        arr[~valid] = np.nan
    pcorr[~valid] = np.nan
    for arr in (flux_b, err_b):
        arr[~valid_b] = np.nan

    out = QTable()
    out["wave"] = wave_grid * u.um
    out["flux"] = flux * u.uJy
    out["err"] = err * u.uJy
    out["valid"] = valid
    out["sky"] = sky1 * u.uJy
    out["path_corr"] = pcorr
    out["npix"] = npix
    out["flux_boxcar"] = flux_b * u.uJy
    out["err_boxcar"] = err_b * u.uJy
    out["norm_corr"] = norm1
    out["flux_sum"] = bsum(np.where(box, d, 0.0)) * u.uJy
    out["profile_sum"] = bsum(np.where(box, m0, 0.0))
    out["var_sum"] = bsum(np.where(box, var, 0.0)) * u.uJy**2
    wunit = tab["weight"].unit
    out["profile_weight"] = sp2 * wunit if wunit is not None else sp2
    out["wave_eff"] = wave_eff * u.um
    return out


def collapsed_profile(sci2d, prof2d, flux, err, min_sn=3.0):
    """Cross-dispersion profile of the data and of the model, collapsed over wavelength.

    For every output row ``y`` the least-squares amplitude of ``sci2d[y] = a(y) *
    flux`` over the columns with ``flux / err > min_sn`` (weights ``1/err**2``):
    ``a(y) = sum(sci2d[y] flux / err**2) / sum(flux**2 / err**2)``, i.e. the fraction
    of the flux per row; the same for the model ``prof2d``.

    Parameters
    ----------
    sci2d, prof2d : numpy.ndarray
        ``(ny, nwave)`` rectified data (uJy per pixel) and unit-flux profile model.
    flux, err : numpy.ndarray
        ``(nwave,)`` 1D spectrum and its error (uJy).
    min_sn : float
        Minimum S/N of the columns used.

    Returns
    -------
    profile, pfit : numpy.ndarray
        ``(ny,)`` data and model profiles (fraction of the flux per row); NaN if no
        column qualifies.
    """
    f = np.asarray(flux, float)
    e = np.asarray(err, float)
    with np.errstate(invalid="ignore", divide="ignore"):
        use = np.isfinite(f) & np.isfinite(e) & (e > 0) & (f / e > min_sn)
        wt = np.where(use, f / e**2, 0.0)
        den = np.sum(np.where(use, f**2 / e**2, 0.0))
        data = np.nansum(np.where(np.isfinite(sci2d), sci2d, 0.0) * wt, axis=1) / den
        model = np.nansum(np.where(np.isfinite(prof2d), prof2d, 0.0) * wt * f, axis=1) / den
    if not use.any():
        return np.full(sci2d.shape[0], np.nan), np.full(sci2d.shape[0], np.nan)
    return data, model
