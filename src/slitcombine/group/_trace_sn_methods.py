"""``SlitGroup`` methods for the trace S/N, the fit options it decides, and the profile figure.

Methods: get_trace_sn (S/N along the trace), fit_params_by_sn (msaexp's choice of the
trace degree and of a fixed width from that S/N), plot_profile.

``SlitGroup`` inherits this class, which holds no state of its own.
"""

from __future__ import annotations

import logging

import numpy as np

from slitcombine.errors import ConfigurationError, FitError

__all__ = ["TraceSNMethods"]

log = logging.getLogger(__name__)


class TraceSNMethods:
    """Mixin of :class:`slitcombine.SlitGroup`: the trace S/N and the profile figure."""

    # ------------------------------------------------------------ S/N
    def get_trace_sn(
        self,
        exposure_position="auto",
        theta=None,
        force_positive=True,
        *,
        fix_sigma=-1,
        verbose=False,
        **fit_kwargs,
    ):
        """Spectrum S/N along the trace, from the profile model evaluated (not fitted).

        Parameters
        ----------
        exposure_position : position value or 'auto'
            Position whose difference image is used ('auto':
            :attr:`calc_reference_exposure`).
        theta : array-like or None
            Model parameters in msaexp's layout, ``[10 sigma, offset coefficients]``;
            None means ``[4.0, 0]`` (sigma 0.4 px, nominal trace).  With ``fix_sigma``
            > 0 the first element is dropped.
        force_positive : bool
            As :meth:`fit_single_trace`.
        fix_sigma : float
            As :meth:`fit_single_trace`.
        verbose : bool
            Log the evaluation at INFO level (DEBUG otherwise).
        **fit_kwargs
            Further keywords of :meth:`fit_single_trace` (``x0``, ``exp`` and
            ``evaluate`` are set here).

        Returns
        -------
        dict
            The :meth:`fit_single_trace` result; ``sn`` is ``flux / flux_err`` per
            column (NaN where no valid pixel).
        """
        theta = [4.0, 0.0] if theta is None else list(theta)
        pos = self.calc_reference_exposure if exposure_position == "auto" else exposure_position
        x0 = theta[1:] if (fix_sigma is not None and fix_sigma > 0) else theta
        return self.fit_single_trace(
            x0=x0,
            exp=pos,
            evaluate=True,
            force_positive=force_positive,
            fix_sigma=fix_sigma,
            verbose=verbose,
            **fit_kwargs,
        )

    def fit_params_by_sn(self, sn_percentile=80, sigma_threshold=5, degree_sn=None, **sn_kwargs):
        """Offset-polynomial degree and whether to fix the width, from the trace S/N.

        Parameters
        ----------
        sn_percentile : float
            Percentile of the per-column S/N (:meth:`get_trace_sn`) that characterises
            the source.
        sigma_threshold : float
            Below this S/N the width should be fixed (``fix_sigma`` True).
        degree_sn : [array-like, array-like] or None
            ``x_sn, y_degree``: the degree is ``int(np.interp(sn_value, x_sn, y_degree))``;
            None means ``[[-1000], [0]]`` (always 0).
        **sn_kwargs
            Keywords of :meth:`get_trace_sn`.

        Returns
        -------
        sn : numpy.ndarray
            S/N per column.
        sn_value : float
            Its ``sn_percentile`` percentile (over columns with a finite S/N).
        fix_sigma : bool
            ``sn_value < sigma_threshold``.
        interp_degree : int
            The degree for that S/N.

        Raises
        ------
        FitError
            If no column has a finite S/N.
        """
        if degree_sn is None:
            degree_sn = [[-1000], [0]]
        x_sn, y_deg = (np.atleast_1d(np.asarray(a, float)) for a in degree_sn)
        if x_sn.size != y_deg.size or x_sn.size == 0:
            raise ConfigurationError(f"degree_sn must be two equal-length lists, got {degree_sn}")
        tfit = self.get_trace_sn(**sn_kwargs)
        sn = tfit["sn"]
        good = sn[np.isfinite(sn)]
        if good.size == 0:
            raise FitError(f"{self.name}: no column with a finite S/N along the trace")
        sn_value = float(np.percentile(good, sn_percentile))
        fix_sigma = bool(sn_value < sigma_threshold)
        interp_degree = int(np.interp(sn_value, x_sn, y_deg))
        self._step(
            "trace_fit_params",
            "COMPLETE",
            sn_percentile=sn_percentile,
            sn_value=round(sn_value, 4),
            sigma_threshold=sigma_threshold,
            fix_sigma=fix_sigma,
            degree=interp_degree,
            ncol=int(good.size),
        )
        return sn, sn_value, fix_sigma, interp_degree

    # ------------------------------------------------------------ figure
    def plot_profile(self, exp=1, ax=None, fit_result=None, ymax=0.2):
        """Cross-dispersion profile of the difference image of one nod position.

        The difference image (uJy per pixel) is plotted against the trace-centred row
        of the positive exposures, with its running median; with ``fit_result`` (a
        :meth:`fit_single_trace` result or :attr:`fit` entry) the fitted model and its
        coordinate at the fitted offset are used and the model is over-plotted.

        Parameters
        ----------
        exp : position value
            Nod position (ignored when ``fit_result`` is given: its own position).
        ax : matplotlib.axes.Axes or None
            Axes to draw on; None creates a :class:`matplotlib.figure.Figure`.
        fit_result : dict or None
            A fit result.
        ymax : float or None
            Upper y limit (uJy); the lower limit is ``-0.5 ymax``.  None: automatic.

        Returns
        -------
        matplotlib.figure.Figure
            The figure (that of ``ax`` if given).
        """
        from matplotlib.figure import Figure

        if ax is None:
            fig = Figure(figsize=(6, 4))
            ax = fig.add_subplot(111)
        else:
            fig = ax.figure
        if fit_result is not None:
            diff, y = fit_result["diff"], fit_result["yslit"]
            exp = fit_result.get("exp", exp)
        else:
            ipos, _, diff, *_ = self._difference_image(exp)
            m = self.mask[ipos]
            with np.errstate(invalid="ignore", divide="ignore"):
                y = np.where(m, self.yslit[ipos], 0).sum(axis=0) / m.sum(axis=0)
        ok = np.isfinite(diff) & np.isfinite(y)
        ax.scatter(
            y[ok], diff[ok], s=2, alpha=0.3, color="0.5", label="difference image", rasterized=True
        )
        if ok.sum() > 10:
            order = np.argsort(y[ok])
            ys, ds = y[ok][order], diff[ok][order]
            edges = np.arange(np.floor(ys.min()), np.ceil(ys.max()) + 0.25, 0.25)
            idx = np.digitize(ys, edges)
            cen = [np.median(ys[idx == i]) for i in np.unique(idx)]
            med = [np.median(ds[idx == i]) for i in np.unique(idx)]
            ax.plot(cen, med, color="k", lw=1.5, label="median")
        if fit_result is not None:
            mod = fit_result["model"]
            okm = np.isfinite(mod) & np.isfinite(y)
            ax.scatter(
                y[okm],
                mod[okm],
                s=2,
                color="tab:red",
                alpha=0.4,
                rasterized=True,
                label=f"model: sigma={fit_result['sigma']:.3f} px, "
                f"offset={float(fit_result['trace_coeffs'][-1]):+.3f} px",
            )
        ax.axhline(0, color="0.3", lw=0.5)
        ax.axvline(0, color="0.3", lw=0.5, ls=":")
        if ymax is not None:
            ax.set_ylim(-0.5 * ymax, ymax)
        ax.set_xlabel("cross-dispersion offset from the trace (pixels)")
        ax.set_ylabel("difference (uJy / pixel)")
        ax.set_title(f"{self.name}: position {exp}")
        ax.legend(loc="upper right", fontsize=7)
        return fig
