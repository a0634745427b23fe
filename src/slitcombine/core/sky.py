"""Sky models: a robust spline fitted to off-source pixels, tabulated skies, background spectra.

Pure functions on ``(N, npix)`` arrays; :mod:`slitcombine.group._sky_methods` wraps them as
``SlitGroup`` methods.  Units: fluxes in uJy per pixel, variances in uJy^2, wavelengths
in um, ``yslit`` in pixels.

Sky spline (:func:`fit_sky`)
----------------------------
The sky is a smooth function of wavelength only, identical in every exposure and row
(the bar shadow is divided out of ``sci`` before).  It is a cubic B-spline in the
*column coordinate* ``u(lambda)`` of a reference trace (:class:`~slitcombine.core.corrections.
ColumnCoordinate`), so the ``df`` knots are uniform in detector pixels (resolution
elements) whatever the dispersion.  With a tabulated (global) sky ``T(lambda)`` the model
is ``T(lambda) * spline(u)``, a template modulated by a smooth function.  The fit is
weighted least squares with weights from the read-noise variance, which does not depend
on the measured counts and so does not bias the fit low (the total variance from the
measured slope does); a small second-difference penalty keeps knots without data well
defined.  Outliers are rejected iteratively in S/N units.

Thresholds
----------
msaexp's ``high_clip`` (0.8) and ``absolute_threshold`` (0.2) are absolute levels in uJy.
Here they keep their names and defaults but act in S/N units: they are converted once,
at the group's median noise ``sigma_med`` of the candidate sky pixels, to
``k_high = high_clip / sigma_med`` and ``k_abs = max(absolute_threshold / sigma_med, 3)``,
and every pixel is then judged by its own residual ``(sci - sky) / sigma``: pixels more
than ``k_high`` above a running-median first guess are never sky candidates, and pixels
with ``|z| > k_abs`` are rejected between iterations.  On the CEERS PRISM trio
(``sigma_med`` = 0.016 uJy with the group's own bar-shadow model) this gives k_high = 51
and k_abs = 12.7, i.e. msaexp's levels at the median pixel, but a noisy pixel is no
longer clipped for its noise and a quiet one keeps a proportionally tighter cut; the
rejection threshold never goes below 3 sigma (``min_clip``).  ``outlier_threshold`` was
already in sigma units.

Global sky
----------
A tabulated sky (``SlitGroup.sky_arrays``, from ``sky_arrays=`` or ``sky_file``) is not
used as is: :meth:`estimate_sky` fits ``T(lambda) * spline(u)`` with
``meta['global_sky_df']`` (7) functions, so the table fixes the fine spectral shape and
the data fix the level and any smooth difference (calibration, zodiacal level, the own
bar-shadow normalisation).  ``df=0`` fits one scale factor of the table and ``df<0``
uses it unscaled.  Without :meth:`estimate_sky`, ``sky_background`` interpolates the
table directly.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from scipy import sparse

from slitcombine.core.corrections import (
    bspline_basis,
    check_grating,
    difference_penalty,
    read_fits_table,
    solve_penalized,
)
from slitcombine.errors import CalibrationFileError, ConfigurationError, FitError

__all__ = [
    "DEFAULT_GRATING_LIMITS",
    "DEFAULT_MASK_YSLIT",
    "sky_candidates",
    "fit_sky",
    "read_sky_table",
    "background_file_root",
    "read_background_spectrum",
    "fit_background_scaling",
    "plot_sky",
]

log = logging.getLogger(__name__)

#: Wavelength limits and nominal sampling (um) per disperser: ``[wmin, wmax, dlambda]``.
DEFAULT_GRATING_LIMITS = {
    "g140h": [0.6, 1.9, 0.000238],
    "g140m": [0.6, 3.35, 0.00063],
    "g235h": [1.6, 3.2, 0.000396],
    "g235m": [1.5, 5.3, 0.00106],
    "g395h": [2.8, 5.3, 0.000666],
    "g395m": [2.6, 5.6, 0.00179],
    "grismc": [2.5, 5.1, 0.002],
    "grismr": [2.5, 5.1, 0.002],
    "prism": [0.5, 5.6, 0.01],
}

#: Default source region excluded from the sky, pixels from the trace.
DEFAULT_MASK_YSLIT = ((-4.5, 4.5),)

#: Minimum number of sky pixels per spline degree of freedom.
PIXELS_PER_DF = 8


# ====================================================================== candidates
def _outside_ranges(yslit, ranges):
    """True where ``yslit`` lies outside every ``(lo, hi)`` range."""
    out = np.isfinite(yslit)
    for lo, hi in ranges:
        with np.errstate(invalid="ignore"):
            out &= ~((yslit >= lo) & (yslit <= hi))
    return out


def _trim_by_variance(sel, var, var_percentiles):
    """Drop candidates with extreme variances (percentiles, or counts when negative)."""
    if var_percentiles is None:
        return sel, 0
    lo, hi = var_percentiles
    idx = np.flatnonzero(sel)
    if idx.size < 10:
        return sel, 0
    v = var.ravel()[idx]
    order = np.argsort(v, kind="stable")
    drop = np.zeros(idx.size, bool)
    if lo is not None:
        if lo < 0:
            drop[order[: int(-lo)]] = True
        elif lo > 0:
            drop |= v < np.percentile(v, lo)
    if hi is not None:
        if hi < 0:
            drop[order[::-1][: int(-hi)]] = True
        elif hi < 100:
            drop |= v > np.percentile(v, hi)
    out = sel.copy().ravel()
    out[idx[drop]] = False
    return out.reshape(sel.shape), int(drop.sum())


def sky_candidates(
    mask,
    yslit,
    bar,
    wave,
    var,
    *,
    mask_yslit=DEFAULT_MASK_YSLIT,
    min_bar=0.95,
    var_percentiles=(-5, -5),
    wave_limits=None,
):
    """Pixels that may be used for the sky: valid, off-source, unshadowed.

    Parameters
    ----------
    mask : numpy.ndarray
        ``(N, npix)`` valid pixels.
    yslit : numpy.ndarray
        ``(N, npix)`` distance from the trace (pixels).
    bar : numpy.ndarray
        ``(N, npix)`` bar-shadow throughput.
    wave, var : numpy.ndarray
        ``(N, npix)`` wavelength (um) and variance (uJy^2).
    mask_yslit : sequence of (float, float)
        ``yslit`` ranges excluded (source and contaminants), pixels.
    min_bar : float or None
        Minimum bar-shadow throughput.
    var_percentiles : (float, float) or None
        Exclude pixels with variances outside this percentile range; a negative value
        is a number of pixels dropped from that end instead (msaexp's convention).
    wave_limits : (float, float) or None
        Wavelength range (um).

    Returns
    -------
    candidates : numpy.ndarray
        ``(N, npix)`` boolean.
    counts : dict
        Pixels removed by each criterion.
    """
    sel = mask & np.isfinite(wave) & np.isfinite(var) & (var > 0)
    counts = {"valid": int(sel.sum())}
    sel &= _outside_ranges(yslit, mask_yslit or ())
    counts["off_source"] = int(sel.sum())
    if min_bar is not None:
        with np.errstate(invalid="ignore"):
            sel &= bar > min_bar
        counts["bar"] = int(sel.sum())
    if wave_limits is not None:
        with np.errstate(invalid="ignore"):
            sel &= (wave >= wave_limits[0]) & (wave <= wave_limits[1])
        counts["wave_limits"] = int(sel.sum())
    sel, ndrop = _trim_by_variance(sel, var, var_percentiles)
    counts["variance_trimmed"] = ndrop
    counts["candidates"] = int(sel.sum())
    return sel, counts


# ====================================================================== the fit
def _binned_median(u, values, edges):
    """Median of ``values`` in bins of ``u`` (vectorised), NaN in empty bins."""
    b = np.clip(np.searchsorted(edges, u, side="right") - 1, 0, edges.size - 2)
    order = np.lexsort((values, b))
    bs = b[order]
    counts = np.bincount(bs, minlength=edges.size - 1)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    med = np.full(edges.size - 1, np.nan)
    has = counts > 0
    lo = starts[has] + (counts[has] - 1) // 2
    hi = starts[has] + counts[has] // 2
    sv = values[order]
    med[has] = 0.5 * (sv[lo] + sv[hi])
    return med


def fit_sky(
    sci,
    var,
    wvar,
    wave,
    candidates,
    coordinate,
    *,
    df=51,
    template=None,
    high_clip=0.8,
    absolute_threshold=0.2,
    min_clip=3.0,
    max_iter=5,
    penalty=1e-4,
    min_pixels=20,
):
    """Robust spline fit of a wavelength-only sky to candidate pixels.

    Parameters
    ----------
    sci : numpy.ndarray
        ``(N, npix)`` data with the sky in (uJy per pixel, bar shadow divided out).
    var : numpy.ndarray
        ``(N, npix)`` total variance (uJy^2): defines the S/N of residuals.
    wvar : numpy.ndarray
        ``(N, npix)`` variance for the weights (read noise: independent of the counts).
    wave : numpy.ndarray
        ``(N, npix)`` wavelength (um).
    candidates : numpy.ndarray
        ``(N, npix)`` boolean sky candidates (:func:`sky_candidates`).
    coordinate : ColumnCoordinate
        Wavelength -> column coordinate of the spline.
    df : int
        Spline functions; 0: a scalar times the template (or a constant); < 0: the
        template as is (no fit, needs ``template``).  Reduced when there are fewer than
        ``8 * df`` pixels or ``4 * df`` detector columns.
    template : callable or None
        ``template(wave) -> uJy per pixel``: a tabulated sky to modulate.
    high_clip, absolute_threshold : float or None
        See the module docstring (converted to S/N at the median noise).
    min_clip : float
        Floor of the iterative rejection threshold (sigma).
    max_iter : int
        Maximum number of fit/reject iterations.
    penalty : float
        Second-difference penalty relative to the mean normal diagonal.
    min_pixels : int
        Minimum number of sky pixels.

    Returns
    -------
    dict
        ``coeffs``, ``covar``, ``df``, ``used`` (``(N, npix)`` pixels of the final fit),
        ``npix``, ``n_iter``, ``reduced_chi2``, ``sigma_med``, ``k_high``, ``k_abs``,
        ``evaluate`` (callable ``wave -> (sky, err)``) and ``urange``.

    Raises
    ------
    FitError
        Fewer than ``min_pixels`` candidates.
    ConfigurationError
        ``df < 0`` without a template.
    """
    cand = np.asarray(candidates, bool)
    n_cand = int(cand.sum())
    if df < 0 and template is None:
        raise ConfigurationError("df < 0 means 'use the tabulated sky as is' but none is given")
    if n_cand < min_pixels:
        raise FitError(
            f"only {n_cand} off-source sky pixels (need {min_pixels}); widen the slit region "
            "or give a tabulated sky"
        )
    finite = np.isfinite(wave)
    u_all = np.full(wave.shape, np.nan)
    u_all[finite] = coordinate(wave[finite])
    urange = (float(np.min(u_all[finite])), float(np.max(u_all[finite])))

    df_eff = int(df)
    if df_eff > 0:
        span = urange[1] - urange[0]  # columns
        df_eff = int(min(df_eff, max(4, n_cand // PIXELS_PER_DF), max(4, span // 4)))
        if df_eff < df:
            log.info("sky spline: %d pixels, df reduced from %d to %d", n_cand, df, df_eff)

    def design(w, u):
        tmpl = None if template is None else np.asarray(template(w), float)
        if df_eff > 0:
            mat = bspline_basis(u, df_eff, *urange, outside="clip")
            if tmpl is not None:
                mat = mat.multiply(tmpl[:, None]).tocsr()
            return mat
        col = np.ones((w.size, 1)) if tmpl is None else tmpl[:, None]
        return col

    idx = np.flatnonzero(cand.ravel())
    w_c = wave.ravel()[idx]
    u_c = u_all.ravel()[idx]
    y_c = sci.ravel()[idx]
    sig_c = np.sqrt(var.ravel()[idx])
    wt_c = 1.0 / wvar.ravel()[idx]
    sigma_med = float(np.median(sig_c))
    k_high = None if high_clip is None else float(high_clip) / sigma_med
    k_abs = (
        None if absolute_threshold is None else max(float(absolute_threshold) / sigma_med, min_clip)
    )

    good = np.isfinite(y_c) & np.isfinite(wt_c) & (wt_c > 0)
    if template is not None:
        good &= np.isfinite(np.asarray(template(w_c), float))
    # First guess: running median in bins of the knot spacing; drop bright pixels.
    if k_high is not None:
        nb = max(df_eff if df_eff > 0 else 16, 4)
        edges = np.linspace(urange[0], urange[1] + 1e-9, nb + 1)
        med = _binned_median(u_c[good], y_c[good], edges)
        centres = 0.5 * (edges[1:] + edges[:-1])
        ok = np.isfinite(med)
        if ok.any():
            guess = np.interp(u_c, centres[ok], med[ok])
            good &= (y_c - guess) / sig_c < k_high
    n_high = int(n_cand - good.sum())

    a = design(w_c, u_c)
    m = a.shape[1]
    pen = penalty * difference_penalty(m) if (df_eff > 0 and m > 2) else np.zeros((m, m))
    base = good.copy()
    coeffs = covar = None
    n_iter = 0
    chi2 = np.nan
    if df_eff < 0:
        coeffs = np.ones(1)
        covar = np.zeros((1, 1))
    else:
        for n_iter in range(1, max_iter + 1):  # noqa: B007 - n_iter is reported
            if good.sum() < max(min_pixels, m + 1):
                raise FitError(f"only {int(good.sum())} sky pixels left after rejection")
            scale = _mean_normal_diag(a, wt_c * good)
            coeffs, covar = solve_penalized(a, wt_c * good, np.nan_to_num(y_c), pen * scale)
            z = (y_c - np.asarray(a @ coeffs).ravel()) / sig_c
            new_good = base & np.isfinite(z)
            if k_abs is not None:
                new_good &= np.abs(z) < k_abs
            chi2 = float(np.sum(z[new_good] ** 2) / max(int(new_good.sum()) - m, 1))
            if np.array_equal(new_good, good):
                break
            good = new_good
        # The weights are 1/var_rnoise but the noise is var: sandwich covariance.
        wv = (wt_c * good) ** 2 * sig_c**2
        if sparse.issparse(a):
            meat = (a.T @ sparse.csr_array(a.multiply(wv[:, None]))).toarray()
        else:
            meat = a.T @ (a * wv[:, None])
        covar = covar @ meat @ covar

    used = np.zeros(cand.size, bool)
    used[idx[good]] = True
    used = used.reshape(cand.shape)

    def evaluate(w, with_err=True):
        """Sky (uJy per pixel) and its 1-sigma model error at wavelengths ``w`` (um)."""
        w = np.asarray(w, float)
        shape = w.shape
        wf = w.ravel()
        out = np.full(wf.size, np.nan)
        err = np.full(wf.size, np.nan)
        ok = np.isfinite(wf)
        if df_eff < 0:
            out[ok] = np.asarray(template(wf[ok]), float)
            err[ok] = 0.0
        else:
            mat = design(wf[ok], coordinate(wf[ok]))
            out[ok] = np.asarray(mat @ coeffs).ravel()
            if not with_err:
                pass
            elif sparse.issparse(mat):
                mc = np.asarray(mat @ covar)
                err[ok] = np.sqrt(np.maximum(np.asarray(mat.multiply(mc).sum(axis=1)).ravel(), 0))
            else:
                err[ok] = np.sqrt(np.maximum(np.sum((mat @ covar) * mat, axis=1), 0))
        return out.reshape(shape), err.reshape(shape)

    return {
        "coeffs": np.asarray(coeffs),
        "covar": covar,
        "df": df_eff,
        "used": used,
        "npix": int(good.sum()),
        "n_candidates": n_cand,
        "n_high_clipped": n_high,
        "n_iter": n_iter,
        "reduced_chi2": round(chi2, 4) if np.isfinite(chi2) else None,
        "sigma_med": sigma_med,
        "k_high": k_high,
        "k_abs": k_abs,
        "evaluate": evaluate,
        "urange": urange,
    }


def _mean_normal_diag(a, w):
    """Mean diagonal of ``A^T W A`` (the scale of the penalty)."""
    if sparse.issparse(a):
        d = np.asarray(a.multiply(a).multiply(w[:, None]).sum(axis=0)).ravel()
    else:
        d = np.sum(a * a * w[:, None], axis=0)
    s = float(np.mean(d)) if d.size else 0.0
    if not np.isfinite(s) or s <= 0:
        raise FitError("the sky pixels carry no weight")
    return s


# ====================================================================== tabulated sky
def read_sky_table(path, grating=None, wave_range=None, min_overlap=0.5):
    """Read a tabulated sky spectrum (CSV with columns ``wave`` in um and ``flux`` in uJy/pixel).

    Comment lines start with ``#``; a comment ``# grating: NAME`` declares the disperser.

    Parameters
    ----------
    path : path-like
        The CSV file.
    grating : str or None
        The group's grating: a table declaring another one raises.
    wave_range : (float, float) or None
        The group's wavelength range (um): a table covering less than ``min_overlap``
        of it raises (a table of another grating or of the wrong units).
    min_overlap : float
        Minimum covered fraction of ``wave_range``.

    Returns
    -------
    wave, flux : numpy.ndarray
        Sorted by wavelength (um, uJy per pixel).

    Raises
    ------
    CalibrationFileError
        Missing, unreadable or malformed table, another grating, or no overlap.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError as exc:
        raise CalibrationFileError(f"{path}: sky table not found") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise CalibrationFileError(f"{path}: cannot be read as text ({exc})") from exc
    declared = None
    lines = []
    for line in text.splitlines():
        s = line.strip()
        if not s:
            continue
        if s.startswith("#"):
            key, _, value = s.lstrip("#").partition(":")
            if key.strip().lower() == "grating" and value.strip():
                declared = value.strip()
            continue
        lines.append(s)
    if not lines:
        raise CalibrationFileError(f"{path}: empty sky table")
    header = [h.strip().lower() for h in lines[0].split(",")]
    if "wave" not in header or "flux" not in header:
        raise CalibrationFileError(
            f"{path}: sky table needs the columns 'wave' (um) and 'flux' (uJy per pixel); "
            f"found {header}"
        )
    iw, jf = header.index("wave"), header.index("flux")
    try:
        rows = np.array([[float(v) for v in ln.split(",")] for ln in lines[1:]], float)
    except ValueError as exc:
        raise CalibrationFileError(f"{path}: non-numeric value in the sky table ({exc})") from exc
    if rows.ndim != 2 or rows.shape[0] < 2 or rows.shape[1] != len(header):
        raise CalibrationFileError(f"{path}: sky table needs >= 2 rows of {len(header)} values")
    wave, flux = rows[:, iw], rows[:, jf]
    if not (np.all(np.isfinite(wave)) and np.all(np.isfinite(flux))):
        raise CalibrationFileError(f"{path}: sky table has non-finite values")
    check_grating(path, grating, {"grating": declared} if declared else None)
    order = np.argsort(wave)
    wave, flux = wave[order], flux[order]
    if np.any(np.diff(wave) <= 0):
        raise CalibrationFileError(f"{path}: repeated wavelengths in the sky table")
    if wave[0] < 0.1 or wave[-1] > 30:
        raise CalibrationFileError(
            f"{path}: wavelengths {wave[0]:.3g}-{wave[-1]:.3g} are not in um"
        )
    if wave_range is not None:
        lo, hi = wave_range
        cover = max(0.0, min(hi, wave[-1]) - max(lo, wave[0])) / max(hi - lo, 1e-9)
        if cover < min_overlap:
            raise CalibrationFileError(
                f"{path}: the sky table ({wave[0]:.3f}-{wave[-1]:.3f} um) covers "
                f"{cover:.0%} of the data's {lo:.3f}-{hi:.3f} um (another grating?)"
            )
    return wave, flux


# ====================================================================== background spectra
#: Default fractional systematic error of a background spectrum.
BACKGROUND_SYSTEMATIC = 0.03


def background_file_root(filename):
    """``{file_root}`` of an exposure: the first four ``_`` tokens of its file name.

    ``jw01345062001_03101_00001_nrs2_phot.138.1345_933.fits`` ->
    ``jw01345062001_03101_00001_nrs2`` (visit, activity, exposure, detector).

    Parameters
    ----------
    filename : str or path-like
        An exposure file (the folder is ignored).

    Returns
    -------
    str
        The root; the name up to its first ``.`` when it has fewer than four tokens.
    """
    name = Path(filename).name
    parts = name.split("_")
    return "_".join(parts[:4]) if len(parts) >= 4 else name.split(".")[0]


def read_background_spectrum(path, grating=None, wave_range=None):
    """Read a background spectrum ``{file_root}_gbkg.fits``.

    Format: the first binary-table HDU with columns ``wave`` (um, increasing), ``p50``
    (background in uJy per pixel of solid angle ``REFPAREA``, in the units of
    ``SlitGroup.sci``: bar shadow divided out, pipeline path-loss correction undone) and
    ``perr`` (its 1-sigma uncertainty, same unit); header keyword ``REFPAREA`` (sr,
    required) and optionally ``GRATING``.

    Parameters
    ----------
    path : path-like
        The FITS file.
    grating : str or None
        The group's grating (checked against ``GRATING``).
    wave_range : (float, float) or None
        The data's wavelength range: a spectrum covering less than half of it raises.

    Returns
    -------
    dict
        ``wave``, ``p50``, ``perr`` (numpy arrays) and ``refparea`` (sr).

    Raises
    ------
    CalibrationFileError
        Missing, unreadable or malformed file, another grating, or no overlap.
    """
    path = Path(path)
    cols, hdr = read_fits_table(
        path, required=("wave", "p50", "perr"), not_found="background spectrum not found"
    )
    wave = np.asarray(cols["wave"], float)
    p50 = np.asarray(cols["p50"], float)
    perr = np.asarray(cols["perr"], float)
    refparea = hdr.get("REFPAREA")
    declared = hdr.get("GRATING")
    if refparea is None or not (float(refparea) > 0):
        raise CalibrationFileError(f"{path}: keyword REFPAREA (pixel area, sr) missing or <= 0")
    check_grating(path, grating, {"grating": declared} if declared else None)
    ok = np.isfinite(wave) & np.isfinite(p50) & np.isfinite(perr)
    if ok.sum() < 2:
        raise CalibrationFileError(f"{path}: fewer than 2 finite rows")
    wave, p50, perr = wave[ok], p50[ok], perr[ok]
    if np.any(np.diff(wave) <= 0):
        raise CalibrationFileError(f"{path}: 'wave' must increase")
    if wave_range is not None:
        lo, hi = wave_range
        cover = max(0.0, min(hi, wave[-1]) - max(lo, wave[0])) / max(hi - lo, 1e-9)
        if cover < 0.5:
            raise CalibrationFileError(
                f"{path}: background spectrum ({wave[0]:.3f}-{wave[-1]:.3f} um) covers "
                f"{cover:.0%} of the data ({lo:.3f}-{hi:.3f} um)"
            )
    return {"wave": wave, "p50": p50, "perr": perr, "refparea": float(refparea)}


def fit_background_scaling(
    sci,
    var,
    sky2d,
    wave,
    select,
    *,
    df=-1,
    coordinate=None,
    by_wavelength=False,
    wsteps=None,
    poly=False,
    resid_limits=(-3, 5),
    max_iter=3,
):
    """Smooth multiplicative rescaling ``s(lambda)`` of a background model to the data.

    Minimises ``sum (sci - s(lambda) sky2d)^2 / var`` over the pixels ``select`` whose
    residual ``(sci - s sky2d) / sqrt(var)`` lies within ``resid_limits`` (iterated).

    Parameters
    ----------
    sci, var, sky2d, wave : numpy.ndarray
        ``(N, npix)`` data, variance, background model and wavelength.
    select : numpy.ndarray
        ``(N, npix)`` off-source pixels to use.
    df : int
        < 0: no rescaling (returns ones); 0: one scale factor; > 0: number of functions.
    coordinate : ColumnCoordinate or None
        Column coordinate for the B-spline (knots uniform in pixels); required unless
        ``by_wavelength`` or ``wsteps`` or ``poly``.
    by_wavelength : bool
        Knots uniform in wavelength instead of in detector columns.
    wsteps : array_like or None
        Wavelength grid (um) whose range and point density set the knots: the
        coordinate is the fractional index in ``wsteps``.
    poly : bool
        Chebyshev polynomial of degree ``df - 1`` in wavelength instead of a B-spline.
    resid_limits : (float, float)
        Residual limits (sigma) of the pixels used.
    max_iter : int
        Iterations of the residual selection.

    Returns
    -------
    scale : numpy.ndarray
        ``(N, npix)`` factor (NaN where the wavelength is not finite).
    info : dict
        ``df``, ``npix``, ``coeffs``.

    Raises
    ------
    FitError
        Too few pixels.
    """
    finite = np.isfinite(wave)
    if df < 0:
        return np.where(finite, 1.0, np.nan), {"df": df, "npix": 0, "coeffs": []}
    wf = wave[finite]
    if wsteps is not None:
        grid = np.sort(np.asarray(wsteps, float))

        def coord(w):
            return np.interp(w, grid, np.arange(grid.size, dtype=float))
    elif by_wavelength or poly or coordinate is None:

        def coord(w):
            return np.asarray(w, float)
    else:
        coord = coordinate
    x_all = np.full(wave.shape, np.nan)
    x_all[finite] = coord(wf)
    xr = (float(np.nanmin(x_all)), float(np.nanmax(x_all)))

    def design(x, s):
        if df == 0:
            return s[:, None]
        if poly:
            xn = 2 * (x - xr[0]) / max(xr[1] - xr[0], 1e-12) - 1
            return np.polynomial.chebyshev.chebvander(xn, max(df - 1, 0)) * s[:, None]
        return bspline_basis(x, max(df, 4), *xr, outside="clip").multiply(s[:, None]).tocsr()

    sel = select & finite & np.isfinite(sci) & np.isfinite(sky2d) & (var > 0)
    idx = np.flatnonzero(sel.ravel())
    if idx.size < 20:
        raise FitError(f"only {idx.size} pixels to rescale the background spectrum")
    x = x_all.ravel()[idx]
    s = sky2d.ravel()[idx]
    y = sci.ravel()[idx]
    w = 1.0 / var.ravel()[idx]
    a = design(x, s)
    m = a.shape[1]
    good = np.ones(idx.size, bool)
    coeffs = np.ones(m)
    for _ in range(max_iter):
        pen = 1e-4 * difference_penalty(m) * _mean_normal_diag(a, w * good) if m > 2 else 0.0
        coeffs, _ = solve_penalized(
            a, w * good, y, pen * np.eye(m) if np.isscalar(pen) else pen, covariance=False
        )
        z = (y - np.asarray(a @ coeffs).ravel()) * np.sqrt(w)
        new = (z > resid_limits[0]) & (z < resid_limits[1])
        if new.sum() < 20 or np.array_equal(new, good):
            break
        good = new
    ones = np.ones(int(finite.sum()))
    scale = np.full(wave.shape, np.nan)
    scale[finite] = np.asarray(design(x_all[finite], ones) @ coeffs).ravel()
    return scale, {"df": df, "npix": int(good.sum()), "coeffs": np.asarray(coeffs).tolist()}


# ====================================================================== plot
def plot_sky(wave, sci, sky2d, used, sky_wave, sky_model, title=""):
    """Diagnostic figure of a sky fit (matplotlib imported lazily).

    Parameters
    ----------
    wave, sci, sky2d : numpy.ndarray
        ``(N, npix)`` wavelength (um), data and sky model (uJy per pixel).
    used : numpy.ndarray
        ``(N, npix)`` pixels of the fit.
    sky_wave, sky_model : numpy.ndarray
        The 1D model.
    title : str
        Figure title.

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 1, figsize=(8, 5), sharex=True, height_ratios=[2, 1])
    axes[0].scatter(wave[used], sci[used], s=1, alpha=0.3, color="0.5", label="sky pixels")
    axes[0].plot(sky_wave, sky_model, color="tab:red", label="sky model")
    axes[0].set_ylabel("uJy / pixel")
    axes[0].legend(loc="upper left")
    axes[1].scatter(wave[used], (sci - sky2d)[used], s=1, alpha=0.3, color="0.3")
    axes[1].axhline(0, color="tab:red")
    axes[1].set_xlabel("wavelength (um)")
    axes[1].set_ylabel("residual")
    fig.suptitle(title)
    fig.tight_layout()
    return fig
