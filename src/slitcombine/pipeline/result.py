"""The result of a combination: :class:`CombineResult` (2D and 1D spectra, the pixel
table, provenance), its products (FITS, figures) and how they are written.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

__all__ = ["CombineResult"]

log = logging.getLogger(__name__)


@dataclass
class CombineResult:
    """A combined spectrum, in memory.

    Attributes
    ----------
    name : str
        Name of the combination (output file ``{name}.spec.fits``).
    group : slitcombine.SlitGroup
        The group, after the trace fit.
    pixtab : astropy.table.Table
        The pixel table (:meth:`SlitGroup.get_flat_diff_arrays`).
    spec : astropy.table.QTable
        The 1D spectrum (``SPEC1D``).
    drizzled : dict
        Rectified 2D arrays: ``sci``, ``var``, ``wht``, ``profile``, ``sky``, ``npix``,
        ``wave`` (um), ``y`` (pix).
    prof1d : dict
        ``profile`` and ``pfit``: collapsed data and model profiles.
    sigma : numpy.ndarray
        Intrinsic profile width per exposure, pixels.
    slits : astropy.table.Table
        ``group.slit_metadata()``.
    params : dict
        Every extraction parameter, resolved.
    provenance : dict
        :func:`slitcombine.io.provenance.collect`.
    pathloss_used : str
        The throughput model used (``'pipeline'``, ``'model'`` or ``'none'``).
    include_pixtab : bool
        Write the pixel table with the product.
    """

    name: str
    group: object
    pixtab: object
    spec: object
    drizzled: dict
    prof1d: dict
    sigma: np.ndarray
    slits: object
    params: dict
    provenance: dict = field(default_factory=dict)
    pathloss_used: str = "none"
    include_pixtab: bool = False

    @property
    def summary(self):
        """What the product's header and REJECT table take from the group.

        Returns
        -------
        slitcombine.io.output.GroupSummary
        """
        from slitcombine.io.output import GroupSummary

        g = self.group
        return GroupSummary(
            grating=g.grating,
            filter=g.filter,
            source_name=str(g.info["source_name"][0]),
            source_id=str(g.info["source_id"][0]),
            source_ra=float(np.nan_to_num(g.info["source_ra"][0])),
            source_dec=float(np.nan_to_num(g.info["source_dec"][0])),
            exptime=float(np.nansum(g.info["effective_exposure_time"])),
            n_exposures=int(g.N),
            slit_pixel_scale=g.slit_pixel_scale,
            reject=g.reject,
        )

    def to_hdulist(self):
        """The product as an :class:`astropy.io.fits.HDUList` (see :mod:`slitcombine.io.output`)."""
        from slitcombine.io.output import build_hdulist

        return build_hdulist(self)

    def plot(self, truth=None):
        """Summary figure: rectified 2D spectrum above the 1D f_nu spectrum, with the profile.

        Parameters
        ----------
        truth : (array-like, array-like), optional
            ``(wave, flux)`` (um, uJy) of a known spectrum to overplot (simulations).

        Returns
        -------
        matplotlib.figure.Figure
        """
        from slitcombine.plots import summary_figure

        d = self.drizzled
        prof = {"pix": d["y"], "profile": self.prof1d["profile"], "pfit": self.prof1d["pfit"]}
        title = f"{self.name}  {self.group.grating}/{self.group.filter}  N={self.group.N}"
        return summary_figure(
            self.spec, d["sci"], d["wave"], d["y"], prof1d=prof, title=title, truth=truth
        )

    def write(self, directory, figures=True, overwrite=True, figure_dpi=None, truth=None):
        """Write ``{name}.spec.fits`` (and the PNG figures) into ``directory``.

        All or nothing: the files are first written into a temporary folder inside
        ``directory`` and moved into place (figures first, the spectrum last) only when
        all of them are complete, so a failure (full disk, unwritable folder, a
        figure that cannot be drawn) leaves neither a spectrum without its figures
        nor temporary files behind.  What was drawn is recorded in the provenance
        (``figures``: ``{'figures': ..., 'figure_dpi': ...}``).

        Parameters
        ----------
        directory : str or path-like
            Output folder (created if missing).
        figures : bool or str
            Which figures to write: ``'all'`` (or True): ``{name}.fnu.png`` (summary)
            and ``{name}.d2d.png`` (nod differences); ``'summary'``: only the summary;
            ``'none'`` (or False): none.  Figures of an earlier run that this one does
            not write are left as they are.
        overwrite : bool
            Replace existing files.
        figure_dpi : float, optional
            Resolution of the figures, dots per inch (10-600); None for
            :data:`slitcombine.plots.DEFAULT_DPI`.
        truth : (array-like, array-like), optional
            ``(wave, flux)`` (um, uJy) of a known spectrum drawn on the summary figure
            (simulations).

        Returns
        -------
        dict
            ``{'spec': path, 'summary': path, 'diff2d': path}`` (figures only if written).

        Raises
        ------
        slitcombine.errors.ConfigurationError
            A ``figures`` or ``figure_dpi`` value that is not one of those above.
        slitcombine.errors.OutputError
            If the folder or a file cannot be written.
        """
        import os
        import shutil
        import tempfile
        from pathlib import Path

        from slitcombine._threads import paused_gc
        from slitcombine.errors import OutputError
        from slitcombine.io.output import check_output_dir, write_hdulist
        from slitcombine.plots import check_figure_options

        figures, dpi = check_figure_options(figures, figure_dpi)
        folder = check_output_dir(directory)
        paths = {"spec": folder / f"{self.name}.spec.fits"}
        if figures in ("all", "summary"):
            paths["summary"] = folder / f"{self.name}.fnu.png"
        if figures == "all":
            paths["diff2d"] = folder / f"{self.name}.d2d.png"
        self.provenance["figures"] = {"figures": figures, "figure_dpi": dpi}
        if not overwrite:
            for path in paths.values():
                if path.exists():
                    raise OutputError(f"{path} exists (overwrite=False)")
        # The FITS cards and matplotlib artists are many small containers freed by
        # reference counting; with the cyclic collector on, their allocation triggers
        # full collections of the whole process heap (~0.1 s each on the CEERS trio).
        with paused_gc():
            hdul = self.to_hdulist()
            try:
                stage = Path(tempfile.mkdtemp(prefix=f".{self.name}.", suffix=".tmp", dir=folder))
            except OSError as exc:
                raise OutputError(f"cannot write in {folder}: {exc}") from exc
            current = paths["spec"]
            try:
                write_hdulist(hdul, stage / current.name)
                # with the collector paused, what is not released by hand here stays
                # allocated until the end: each figure would add its peak to the next's
                del hdul
                if "summary" in paths:
                    current = paths["summary"]
                    _save_and_release(self.plot(truth=truth), stage / current.name, dpi)
                if "diff2d" in paths:
                    current = paths["diff2d"]
                    _save_and_release(self.group.plot_2d_differences(), stage / current.name, dpi)
                for key in sorted(paths, key=lambda k: k == "spec"):  # the spectrum last
                    current = paths[key]
                    os.replace(stage / current.name, current)
            except (OSError, OutputError) as exc:
                cause = exc.__cause__ if isinstance(exc.__cause__, OSError) else exc
                raise OutputError(f"cannot write {current}: {cause}") from exc
            finally:
                shutil.rmtree(stage, ignore_errors=True)
        return paths


def _save_and_release(fig, path, dpi):
    """Save a figure, then break its reference cycles (its axes and artists).

    Under :func:`slitcombine._threads.paused_gc` a figure is otherwise kept until the
    collector runs again: ~7 MiB per figure on top of the next one's peak.
    """
    from slitcombine.plots import save_figure

    try:
        save_figure(fig, path, dpi=dpi)
    finally:
        fig.clear()
