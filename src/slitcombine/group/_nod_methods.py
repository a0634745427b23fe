"""``SlitGroup`` methods for nod differences and the noise scale.

Methods: make_diff_image, measure_noise_scale and their helpers (the weighting variance,
the source view of the data).  Adapters of :mod:`slitcombine.core.nods`; ``SlitGroup``
inherits this class, which holds no state of its own.
"""

from __future__ import annotations

import logging

import numpy as np

from slitcombine.core import nods

__all__ = ["NodMethods"]

log = logging.getLogger(__name__)


class NodMethods:
    """Mixin of :class:`slitcombine.SlitGroup`: nod differences and the noise scale."""

    # ================================================================ nod differences
    def _weight_variance(self):
        return nods.weight_variance(
            self.options.weight_type, self.var, self.var_rnoise, self.exptime, self.bar
        )

    def measure_noise_scale(self, min_pixels=1500):
        """Measure how the noise compares with the propagated variances.

        :func:`slitcombine.core.noise.measure_noise_scale` of the pixel table
        (:meth:`get_flat_diff_arrays` with the current traces, width and
        :attr:`source_type`): the spread of the residuals of the fitted source model as
        a function of the source light in each pixel, split into the noise over the
        propagated sigma and the model's own error, per wavelength band.

        Parameters
        ----------
        min_pixels : int
            Pixels per wavelength band.

        Returns
        -------
        dict
            ``scale`` (noise / propagated sigma, all pixels together, dimensionless;
            None if not measured), ``scale_err``, ``model_error`` (the source model's
            fractional error), ``n_pixels``, ``bands`` (``wave_min``, ``wave_max``
            [um], ``scale``, ``scale_err``, ``model_error``, ``npix`` per band) and
            ``per_exposure`` (``{exposure index: scale}``).  Also stored in
            ``meta['noise_scale']``.
        """
        from slitcombine.core import noise

        tab = self.get_flat_diff_arrays(with_pathloss=False)
        out = noise.measure_noise_scale(tab, min_pixels).as_dict()
        self.meta["noise_scale"] = out
        if out["scale"] is not None:
            log.info(
                "%s: noise / propagated sigma = %.3f (%d pixels)",
                self.name,
                out["scale"],
                out["n_pixels"],
            )
        else:
            log.info("%s: too few faint pixels to measure the noise", self.name)
        return out

    def _source_view(self, source_type=...):
        """The data the source is measured on, and the bar-shadow factor applied to sci.

        With ``source_type`` (default :attr:`source_type`) ``'compact'`` the bar-shadow
        correction that divides ``sci`` (the group's own model, a table or the
        pipeline's) is undone: a compact source's light that passed the shutter is not
        shadowed by the bars (:mod:`slitcombine.core.optics`), so its flux is measured on the
        detector image; the sky subtracted is ``sky_background * bar``.  Otherwise the
        data of :attr:`data` (msaexp's meaning).

        Returns
        -------
        data : numpy.ndarray
            ``(N, ny*nx)`` sky-subtracted data, uJy per pixel, NaN where masked.
        bar_factor : numpy.ndarray or float
            The factor applied to ``sci - sky_background`` (and to the errors).
        """
        kind = self.source_type if source_type is ... else source_type
        if kind == "compact" or self.meta["undo_barshadow"] is True:
            bf = self.bar
        else:
            bf = 1.0
        return np.where(self.mask, (self.sci - self.sky_background) * bf, np.nan), bf

    def make_diff_image(self, exp=1, separate=False):
        """Difference image of one nod position against the others (of :attr:`data`).

        msaexp's difference image, of :attr:`data` (the bar-shadow correction applied
        as ``undo_barshadow`` says).  The trace fit and the figures use the same
        difference of the data the source is measured on (:meth:`_source_view`: the
        detector image for a compact source).

        Parameters
        ----------
        exp : position-key value
            The nod position (a value of ``unp.values``).
        separate : bool
            Return the positive and negative components separately.

        Returns
        -------
        ipos : numpy.ndarray
            Boolean ``(N,)``: the "positive" exposures (at position ``exp``).
        ineg : numpy.ndarray
            Boolean ``(N,)``: the "negative" exposures at the other nod positions (none
            when ``meta['diffs']`` is False).
        diff : numpy.ndarray
            ``(ny*nx,)`` difference ``mean(pos) - mean(neg)`` of :attr:`data`, uJy.
        bdiff : numpy.ndarray
            Sky-background difference, uJy.
        vdiff : numpy.ndarray
            Variance of ``diff``, uJy^2 (same masks in numerators and denominators).
        wdiff : numpy.ndarray
            Weight of ``diff``: the inverse of the ``weight_type`` variance, 0 where
            invalid.
        """
        return self._difference_image(exp, separate, source_type=None)

    def _difference_image(self, exp, separate=False, source_type=...):
        """:meth:`make_diff_image` of the data of :meth:`_source_view` (``source_type``)."""
        ipos = np.asarray(self.unp[exp])
        ineg = ~ipos if self.meta["diffs"] else np.zeros_like(ipos)
        data, bf = self._source_view(source_type)
        # data carrying the bar-shadow throughput: so do their variances
        var, wvar = self.var * bf**2, self._weight_variance() * bf**2
        out = nods.difference_image(
            data,
            var,
            wvar,
            self.sky_background,
            self.mask & np.isfinite(data),
            ipos,
            ineg,
            separate=separate,
        )
        return (ipos, ineg, *out)
