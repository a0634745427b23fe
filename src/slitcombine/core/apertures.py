"""The image of a source through the open apertures of a group: profile and throughput.

Pure functions and one immutable-input model object; no group, no files.  It applies the
image formation of :mod:`slitcombine.core.optics` to the geometry of a real cutout: the open
apertures (shutters of the slitlet, or the fixed slit) are fixed to the MSA and located
in every detector column from the slit frame of the WCS; the source is at its trace in
each exposure.  The result is, per exposure and pixel, the fraction of the source's flux
that reaches the pixel: the *profile* (with its wings, cut where the source's light
falls on a bar or beyond the slitlet) and its sum over rows, the *throughput*.  The
extraction uses the same model for the weights, the flux normalisation and the path
loss (:meth:`SlitGroup.get_flat_diff_arrays`), so that they are consistent.

Coordinates: rows of the common slice (``0 .. ny-1``, pixel centres at integers),
columns ``0 .. nx-1``; wavelengths in um.
"""

from __future__ import annotations

import logging
from functools import cached_property

import numpy as np

from slitcombine import instrument
from slitcombine.core import optics
from slitcombine.core.profile import DifferenceProfileModel
from slitcombine.errors import SlitCombineError

__all__ = [
    "ApertureDifferenceModel",
    "SIGMA_NODES",
    "SOURCE_TYPES",
    "EXTENDED_SIGMA_FRACTION",
    "classify_source",
    "PITCH_UNITS",
    "shutter_centres",
    "open_intervals",
    "SourceImageModel",
]

log = logging.getLogger(__name__)

#: Shutter pitch in units of the open shutter height (jwst's slit frame), 1.15.
PITCH_UNITS = instrument.SHUTTER_PITCH / instrument.SHUTTER_HEIGHT

#: Margin of the jwst slit extent beyond the outer open shutters, slit-frame units.
_EXTENT_MARGIN = 0.55

#: Intrinsic widths (pixels) at which the source profiles are tabulated; a width in
#: between is interpolated linearly in sigma**2 (the profile of a wider source is that
#: of a narrower one convolved with a Gaussian, nearly linear in the added variance).
#: Below 0.6 px the telescope PSF and the pixel dominate the profile and 0.15 px steps
#: are exact enough; above, the nodes are 5% apart: with the earlier 0.3-0.5 px steps
#: the interpolated profile's wings biased the fitted width of a noise-free 3.25 px
#: source by +0.07 px and its flux by +2.2% (now +0.006 px, +0.2%).  Tables are built
#: only for the nodes a fit visits.
SIGMA_NODES = np.concatenate([[0.0, 0.15, 0.3, 0.45], 0.6 * 1.05 ** np.arange(73)])


def shutter_centres(shutter_state, slit_y=None, closed=()):
    """Centres of the open shutters in the slit frame of the exposure (``y_slit`` units).

    Parameters
    ----------
    shutter_state : str
        jwst's ``shutter_state`` of the exposure (``'1'`` open, ``'0'`` closed, ``'x'``
        the source shutter, at ``y_slit = 0``).
    slit_y : numpy.ndarray, optional
        The exposure's ``slit_frame`` y on the cutout (NaN outside the slit's extent).
        Decides the order of the shutters along ``y_slit`` when the state is not
        symmetric: the order whose extent (outer open shutters +- 1.05 units) matches
        the finite range of ``slit_y`` best.  Without it: increasing ``y_slit``.
    closed : iterable of int
        Indices (into ``shutter_state``, the order of the state) of shutters to treat as
        closed (e.g. stuck closed).

    Returns
    -------
    numpy.ndarray
        Centres of the open shutters, ``y_slit`` units (open height 1, pitch 1.15).

    Raises
    ------
    SlitCombineError
        If the state has no source shutter ``'x'``.
    """
    state = str(shutter_state or "")
    j0 = state.find("x")
    if j0 < 0:
        raise SlitCombineError(f"shutter_state {state!r} has no source shutter 'x'")
    closed = set(int(c) for c in closed)
    index = np.arange(len(state))
    is_open = np.array([c != "0" and i not in closed for i, c in enumerate(state)])
    up = (index - j0) * PITCH_UNITS
    choice = up
    if slit_y is not None and np.isfinite(slit_y).any() and state != state[::-1]:
        lo, hi = np.nanmin(slit_y), np.nanmax(slit_y)
        every = (index - j0) * PITCH_UNITS  # all planned shutters, open or not

        def mismatch(c):
            pad = 0.5 + _EXTENT_MARGIN
            return abs(c.min() - pad - lo) + abs(c.max() + pad - hi)

        if mismatch(-every) < mismatch(every):
            choice = -up
    return np.sort(choice[is_open])


def open_intervals(slit_y, centres, half_height=0.5):
    """Rows of the open apertures in every column.

    ``slit_y`` is linear in the row within a column (the slit frame is an affine image
    of the detector along a column to < 0.01 px over a cutout): it is fitted per column
    and inverted at ``centres +- half_height``.  Columns without enough valid pixels take
    the fit interpolated from their neighbours.

    Parameters
    ----------
    slit_y : numpy.ndarray
        ``(ny, nx)`` slit-frame y of the reference exposure (units of the open height;
        NaN outside the slit).
    centres : array-like
        Open-aperture centres, ``y_slit`` units.
    half_height : float
        Half the open height, ``y_slit`` units (0.5).

    Returns
    -------
    numpy.ndarray
        ``(nx, nopen, 2)`` lower and upper row of each open aperture.

    Raises
    ------
    SlitCombineError
        If no column has at least 3 valid pixels.
    """
    sy = np.asarray(slit_y, float)
    ny, nx = sy.shape
    rows = np.arange(ny, dtype=float)[:, None]
    ok = np.isfinite(sy)
    n = ok.sum(axis=0)
    r = np.where(ok, rows, 0.0)
    y = np.where(ok, sy, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mr, my = r.sum(0) / n, y.sum(0) / n
        cov = (np.where(ok, (rows - mr) * (sy - my), 0.0)).sum(0)
        var = (np.where(ok, (rows - mr) ** 2, 0.0)).sum(0)
        slope = cov / var
        icpt = my - slope * mr
    good = (n >= 3) & np.isfinite(slope) & (slope != 0)
    if not good.any():
        raise SlitCombineError("the slit frame has no column with 3 valid pixels")
    cols = np.arange(nx, dtype=float)
    slope = np.interp(cols, cols[good], slope[good])
    icpt = np.interp(cols, cols[good], icpt[good])
    c = np.asarray(centres, float)
    lo = ((c[None, :] - half_height) - icpt[:, None]) / slope[:, None]
    hi = ((c[None, :] + half_height) - icpt[:, None]) / slope[:, None]
    return np.stack([np.minimum(lo, hi), np.maximum(lo, hi)], axis=-1)


class SourceImageModel:
    """Detector image of a unit-flux source through fixed apertures, for given traces.

    Parameters
    ----------
    wave : numpy.ndarray
        ``(ny, nx)`` wavelength of the reference exposure, um (the column's median is
        used; the model's wavelength dependence is smooth).
    intervals : numpy.ndarray
        ``(nx, nopen, 2)`` open apertures in rows (:func:`open_intervals`).
    xpos : float
        Source position across the aperture, units of its width (jwst's ``SRCXPOS``).
    slit_width : float
        Open width of the aperture in the dispersion direction, arcsec.
    model : slitcombine.core.optics.OpticsModel, optional
        The optics (default :data:`slitcombine.core.optics.DEFAULT_OPTICS`).
    step : float
        Fine sampling along the slit, pixels.
    nodes : int
        Number of wavelength nodes of the tabulated source profiles.
    """

    def __init__(self, wave, intervals, xpos=0.0, slit_width=None, model=None, step=0.1, nodes=16):
        self.model = optics.DEFAULT_OPTICS if model is None else model
        wave = np.asarray(wave, float)
        self.ny, self.nx = wave.shape
        with np.errstate(invalid="ignore"):
            wave = np.where(wave > 0, wave, np.nan)
        good = np.isfinite(wave).any(axis=0)
        wcol = np.full(self.nx, np.nan)
        wcol[good] = np.nanmedian(wave[:, good], axis=0)
        cols = np.arange(self.nx, dtype=float)
        if not good.any():
            raise SlitCombineError("no finite wavelength in the cutout")
        self.wave_col = np.interp(cols, cols[good], wcol[good])
        self.xpos = float(np.nan_to_num(xpos))
        self.slit_width = instrument.SHUTTER_WIDTH if slit_width is None else float(slit_width)
        self.step = float(step)
        self.z, edges = optics.fine_grid(self.ny, step=self.step, pad=2.0)
        self.transmission = optics.aperture_transmission(edges, intervals)
        self.kernel = self.model.kernel_matrix(self.z, self.ny)
        lo, hi = np.nanmin(self.wave_col), np.nanmax(self.wave_col)
        self.nodes = np.geomspace(lo, max(hi, lo * 1.0001), int(nodes))
        half = self.ny + 10.0
        self.u = np.arange(-half, half + 0.5 * self.step, self.step)
        self._strips = {}

    def _strip_table(self, sigma):
        """Strip profiles at the wavelength nodes for one width (a few kept).

        Averages over the cells of the grid ``u`` (from a grid 5 times finer): the
        light of each cell is right whatever the sampling of a narrow Airy core.
        """
        key = round(float(sigma), 4)
        table = self._strips.get(key)
        if table is None:
            sub = 5
            fine = self.u[:, None] + ((np.arange(sub) + 0.5) / sub - 0.5)[None, :] * self.step
            table = self.model.strip_profiles(
                self.nodes, fine.ravel(), sigma=key, xpos=self.xpos, slit_width=self.slit_width
            )
            table = table.reshape(self.nodes.size, self.u.size, sub).mean(axis=2)
            if len(self._strips) >= 24:
                self._strips.clear()
            self._strips[key] = table
        return table

    def _windows(self, k, i0):
        """``(nx, nz + 1)`` strip profile of every column at the width node ``k``, from
        the sample ``i0 - P`` of :attr:`u` on (``P = nz + 2``; zero outside ``u``).

        Each column's strip is interpolated linearly between its two wavelength nodes on
        the window's samples only (a full ``(nx, nu)`` table per width node took ~5 MiB
        and was rebuilt whenever the fit moved to another node).
        """
        nodes = self._strip_table(SIGMA_NODES[k])
        nz, nu = self.z.size, self.u.size
        j, t = self._wave_weights
        first = i0 - (nz + 2)  # sample of u at the window's start, per column
        pos = first[:, None] + np.arange(nz + 1)  # sample of u of every window element
        row = (j * nu)[:, None]  # flat index of u[0] in node j's row (node j + 1 follows)
        lin = pos + row
        inside = None
        if first.min() < 0 or first.max() + nz >= nu:  # some window leaves u: zeros there
            inside = (pos >= 0) & (pos < nu)
            lin = np.where(inside, lin, row)
        flat = nodes.ravel()
        win = flat.take(lin) * (1.0 - t)[:, None] + flat.take(lin + nu) * t[:, None]
        if inside is not None:
            win[~inside] = 0.0
        return win

    @cached_property
    def _wave_weights(self):
        """Per column: the lower wavelength node ``j`` and the fraction ``t`` towards
        node ``j + 1`` (fixed with the model: computed once, used by every window)."""
        w = np.clip(self.wave_col, self.nodes[0], self.nodes[-1])
        j = np.clip(np.searchsorted(self.nodes, w) - 1, 0, self.nodes.size - 2)
        t = np.clip((w - self.nodes[j]) / (self.nodes[j + 1] - self.nodes[j]), 0.0, 1.0)
        return j, t

    def _light(self, rows, sigma, derivs=False):
        """Source light at the MSA on the fine grid, per column: ``(nx, nz)``.

        Linear in ``sigma**2`` between the width nodes :data:`SIGMA_NODES`; with
        ``derivs`` also the derivatives with respect to the source row and to sigma.
        The fine grid and the table share their step, so a column's samples are one
        contiguous window of its table, interpolated with one fraction.
        """
        sigma = float(abs(sigma))
        s2 = SIGMA_NODES**2
        k = int(np.clip(np.searchsorted(s2, sigma * sigma) - 1, 0, s2.size - 2))
        a = (sigma * sigma - s2[k]) / (s2[k + 1] - s2[k])
        nz = self.z.size
        pad = nz + 2
        rows = np.asarray(rows, float)
        good = np.isfinite(rows)
        du = self.step
        # position of z[0] on the table (in samples, padding included)
        p0 = (self.z[0] - np.where(good, rows, 0.0) - self.u[0]) / du + pad
        i0 = np.floor(p0).astype(np.intp)
        f = (p0 - i0)[:, None]
        last = self.u.size + pad  # a window starting beyond this holds only padding
        good &= (i0 >= 0) & (i0 <= last)
        i0 = np.clip(i0, 0, last)
        seg = []
        for node in (k, k + 1):
            win = self._windows(node, i0)  # (nx, nz + 1)
            seg.append((win[:, :-1], win[:, 1:] - win[:, :-1]))
        (lo0, d0), (lo1, d1) = seg
        v0 = lo0 + f * d0
        v1 = lo1 + f * d1
        light = v0 + a * (v1 - v0)
        light[~good] = 0.0
        if not derivs:
            return light, None, None
        # d/d(row) = -d/du; d/dsigma = 2 sigma d/d(sigma^2)
        d_row = -(d0 + a * (d1 - d0)) / du
        d_sig = (v1 - v0) * (2.0 * sigma / (s2[k + 1] - s2[k]))
        d_row[~good] = 0.0
        d_sig[~good] = 0.0
        return light, d_row, d_sig

    def images(self, src_rows, sigma, derivs=False):
        """Unit-flux detector images and throughputs (and derivatives).

        Parameters
        ----------
        src_rows : numpy.ndarray
            ``(m, nx)`` source row in every column, one row per exposure.
        sigma : float or array-like
            Intrinsic Gaussian width of the source, pixels (scalar or ``(m,)``).
        derivs : bool
            Also return the derivatives of the images with respect to the source row
            (the same shift in every column) and to sigma.

        Returns
        -------
        images : numpy.ndarray
            ``(m, ny, nx)`` fraction of the source flux in each pixel.
        throughput : numpy.ndarray
            ``(m, nx)`` fraction through the apertures (the images' column sums, but for
            the post-MSA blur beyond the cutout).
        d_row, d_sigma : numpy.ndarray
            With ``derivs``: ``(m, ny, nx)`` derivatives, per pixel of source row shift
            and per pixel of sigma.
        """
        src_rows = np.atleast_2d(np.asarray(src_rows, float))
        m = src_rows.shape[0]
        sig = np.broadcast_to(np.asarray(sigma, float), (m,))
        kt = self.kernel.T * self.step
        imgs = np.empty((m, self.ny, self.nx))
        thr = np.empty((m, self.nx))
        d_row = np.empty((m, self.ny, self.nx)) if derivs else None
        d_sig = np.empty((m, self.ny, self.nx)) if derivs else None
        for k, rows in enumerate(src_rows):
            light, dl_row, dl_sig = self._light(rows, sig[k], derivs)
            light *= self.transmission
            thr[k] = light.sum(axis=1) * self.step
            imgs[k] = (light @ kt).T
            if derivs:
                d_row[k] = ((dl_row * self.transmission) @ kt).T
                d_sig[k] = ((dl_sig * self.transmission) @ kt).T
        if derivs:
            return imgs, thr, d_row, d_sig
        return imgs, thr

    def throughput(self, src_rows, sigma, transmission=None):
        """Fraction of the source through the apertures, ``(m, nx)``.

        Parameters
        ----------
        src_rows : numpy.ndarray
            ``(m, nx)`` source rows.
        sigma : float or array-like
            Intrinsic width(s), pixels.
        transmission : numpy.ndarray, optional
            ``(nx, nz)`` other apertures on the same fine grid (e.g. the planned ones).

        Returns
        -------
        numpy.ndarray
            ``(m, nx)`` throughput.
        """
        src_rows = np.atleast_2d(np.asarray(src_rows, float))
        sig = np.broadcast_to(np.asarray(sigma, float), (src_rows.shape[0],))
        trans = self.transmission if transmission is None else transmission
        return np.array(
            [
                (self._light(rows, sig[k])[0] * trans).sum(axis=1) * self.step
                for k, rows in enumerate(src_rows)
            ]
        )

    def window_fraction(self, sigma):
        """Fraction of the source inside the dispersion-direction window, ``(nx,)``.

        The throughput without any cut along the slit (an extended source's slit
        loss when the bar shadow is corrected in the data).

        Parameters
        ----------
        sigma : float
            Intrinsic width, pixels.

        Returns
        -------
        numpy.ndarray
            ``(nx,)`` fraction per column.
        """
        frac = self._strip_table(sigma).sum(axis=1) * self.step
        return np.interp(np.log(self.wave_col), np.log(self.nodes), frac)


#: Values of the ``source_type`` option of :func:`slitcombine.pipeline.combine.combine_group`.
SOURCE_TYPES = ("auto", "point", "extended")

#: Intrinsic width (Gaussian sigma) above which ``source_type='auto'`` treats a source as
#: extended, in units of the open aperture height: 0.46 arcsec (4.4 px; FWHM 2.4
#: shutters).  On the simulator the optics model measures sources up to this width to
#: 1-3% (sigma 1.5 px: 1.02; 2.5 px: 0.99; 4 px: 0.97-0.99 of the truth) where the
#: bar-corrected data with a Gaussian profile are off by 10-30%; beyond it the nod
#: differences subtract the source from itself and the flux is that of a surface
#: brightness.
EXTENDED_SIGMA_FRACTION = 1.0


def classify_source(option, srctypes=(), sigma=None, height_px=None, fixed_slit=False):
    """Decide how a source's flux is measured: ``'compact'`` or ``'extended'``.

    ``'compact'``: the flux is measured on the detector image (the bar shadow undone)
    with the profile and throughput of the optics model, right for point sources and for
    sources smaller than the shutter.  ``'extended'``: on the data corrected for the
    bar shadow (the pipeline's extended-source convention), with an uncut profile.

    Parameters
    ----------
    option : {'auto', 'point', 'extended'}
        The user's choice.  ``'auto'``: ``SRCTYPE = POINT`` in every file gives
        ``'compact'``; otherwise the fitted intrinsic width decides (``'extended'`` above
        :data:`EXTENDED_SIGMA_FRACTION` of the open height), whatever ``SRCTYPE`` says
        (products prepared the msaexp way mark every source EXTENDED); without a width
        measurement ``'compact'``.  Fixed slits have no bars: always ``'compact'``.
    srctypes : iterable of str or None
        ``SRCTYPE`` of the files (None where absent).
    sigma : float or None
        Fitted intrinsic width, pixels (None: not measured).
    height_px : float or None
        Open aperture height, pixels.
    fixed_slit : bool
        Fixed-slit data.

    Returns
    -------
    kind : str
        ``'compact'`` or ``'extended'``.
    reason : str
        Why, in words (logged and recorded).

    Raises
    ------
    ConfigurationError
        For an unknown ``option``.
    """
    from slitcombine.errors import ConfigurationError

    if option not in SOURCE_TYPES:
        raise ConfigurationError(f"source_type must be one of {SOURCE_TYPES}, got {option!r}")
    if option == "point":
        return "compact", "source_type='point'"
    if option == "extended":
        return "extended", "source_type='extended'"
    types = {str(t).upper() for t in srctypes if t}
    label = "/".join(sorted(types)) if types else "not set"
    if fixed_slit:
        return "compact", "fixed slit (no bar shadow)"
    if types == {"POINT"}:
        return "compact", "SRCTYPE = POINT"
    if sigma is None or not np.isfinite(sigma) or height_px is None:
        return "compact", f"SRCTYPE {label}; intrinsic width not measured: treated as compact"
    limit = EXTENDED_SIGMA_FRACTION * float(height_px)
    if sigma > limit:
        return "extended", (
            f"fitted intrinsic width {sigma:.2f} px > {limit:.2f} px "
            f"({EXTENDED_SIGMA_FRACTION} open heights); SRCTYPE {label}"
        )
    return "compact", (
        f"fitted intrinsic width {sigma:.2f} px <= {limit:.2f} px "
        f"({EXTENDED_SIGMA_FRACTION} open heights); SRCTYPE {label}"
    )


class ApertureDifferenceModel(DifferenceProfileModel):
    """:class:`slitcombine.core.profilemodel.DifferenceProfileModel` with the optics model's images.

    The model of a nod-difference image is, per column, a flux times the masked mean of
    the positive exposures' unit-flux images minus that of the negative exposures'
    (:meth:`SourceImageModel.images`: the source at its trace, cut by the apertures,
    with the telescope's and the spectrograph's wings), instead of a translation-
    invariant profile: the light a compact source loses on a bar is missing from the
    model exactly where it is missing from the data.  The fitted parameters are the
    same (the intrinsic width and the trace-offset polynomial) and the derivatives are
    exact for the tabulated model.

    Parameters
    ----------
    image_model : SourceImageModel
        The group's apertures.
    base_rows : numpy.ndarray
        ``(N, nx)`` source row of every exposure at zero offset (the base traces).
    current_rows : numpy.ndarray
        ``(N, nx)`` current source rows (the negative exposures without
        ``shift_negatives``).
    ybase, wave, mask, ipos, ineg, xn, column, diff, var, degree, force_positive, \
background, shift_negatives
        As :class:`slitcombine.core.profilemodel.DifferenceProfileModel`.
    """

    def __init__(
        self,
        image_model,
        base_rows,
        current_rows,
        ybase,
        wave,
        mask,
        ipos,
        ineg,
        xn,
        column,
        diff,
        var,
        degree,
        force_positive=True,
        background=False,
        shift_negatives=False,
    ):
        super().__init__(
            ybase,
            wave,
            mask,
            ipos,
            ineg,
            xn,
            column,
            diff,
            var,
            degree,
            force_positive=force_positive,
            background=background,
            lookup_prf=None,
            shift_negatives=shift_negatives,
        )
        self.images_model = image_model
        self.analytic = False
        mask = np.asarray(mask, bool) & np.isfinite(ybase) & np.isfinite(wave)
        nx = image_model.nx
        q = np.flatnonzero(self.valid)
        self.pix_row, self.pix_col = q // nx, q % nx
        xcols = np.asarray(xn, float).reshape(-1, nx)[0]
        self.col_pow = np.array([xcols ** (self.degree - k) for k in range(self.degree + 1)])

        def members(sel):
            idx = np.flatnonzero(np.asarray(sel, bool))
            m = mask[idx][:, self.valid]
            return idx[m.any(axis=1)]

        self.pos_idx = members(ipos)
        self.neg_idx = members(ineg) if np.any(ineg) else np.zeros(0, int)
        self.base_rows = np.asarray(base_rows, float)
        self.current_rows = np.asarray(current_rows, float)
        self.prf = image_model.model

    def _part(self, idx, wt, rows, sigma, derivs):
        imgs = self.images_model.images(rows, sigma, derivs=derivs)
        r, c = self.pix_row, self.pix_col
        p = (wt * imgs[0][:, r, c]).sum(axis=0)
        if not derivs:
            return p, None, None
        return p, (wt * imgs[3][:, r, c]).sum(axis=0), (wt * imgs[2][:, r, c]).sum(axis=0)

    def profile(self, sigma, coeffs, derivs=False):
        """Unit-flux difference image on the used pixels, and its derivatives.

        Parameters
        ----------
        sigma : float
            Intrinsic width, pixels.
        coeffs : array-like
            Trace-offset polynomial (``numpy.polyval`` order, pixels).
        derivs : bool
            Also return the derivatives.

        Returns
        -------
        P : numpy.ndarray
            ``(npix,)`` model (clipped at 0 with ``force_positive``).
        dP_dsigma, dP_dcoeffs : numpy.ndarray or None
            ``(npix,)`` and ``(degree+1, npix)`` derivatives.
        """
        sigma = float(abs(sigma))
        off = np.asarray(coeffs, float) @ self.col_pow  # (nx,) offset per column
        p, dps, dpr = self._part(
            self.pos_idx, self.wt_pos, self.base_rows[self.pos_idx] + off, sigma, derivs
        )
        if self.neg_idx.size:
            rows = (
                self.base_rows[self.neg_idx] + off
                if self.shift_negatives
                else self.current_rows[self.neg_idx]
            )
            pn, dpns, dpnr = self._part(self.neg_idx, self.wt_neg, rows, sigma, derivs)
            p = p - pn
            if derivs:
                dps = dps - dpns
                dpr = dpr - (dpnr if self.shift_negatives else 0.0)
        if not derivs:
            return (np.maximum(p, 0.0) if self.force_positive else p), None, None
        dpc = self.xpow * dpr  # d row / d c_k = xn**(degree-k)
        if self.force_positive:
            pos = p > 0
            p = np.where(pos, p, 0.0)
            dps = np.where(pos, dps, 0.0)
            dpc = np.where(pos, dpc, 0.0)
        return p, dps, dpc
