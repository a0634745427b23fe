"""Figures: nod differences, the summary of a combined spectrum, and step diagnostics.

Object-oriented matplotlib only (:class:`matplotlib.figure.Figure` with an Agg canvas):
no ``pyplot``, safe in batch loops and threads.  matplotlib is imported only when a
figure is drawn (``import slitcombine`` does not import it).

Drawing speed (a batch draws two figures per group; ``benchmarks/bench_figures.py``):

* few axes, at fixed rectangles (no layout engine); the colour bars and the inset are
  panels drawn without an Axes of their own (``_axes._Panel``);
* no matplotlib ticks (five artists each, laid out at every draw): tick marks are one
  artist per side, their labels plain texts, axis labels and titles at fixed places;
* images are pre-coloured uint8 arrays blitted by :class:`~slitcombine._pixel_image.
  PixelImage`, legends are line samples and texts;
* the canvas keeps the text it has rendered (:mod:`slitcombine._agg`: successive
  figures share most of their labels);
* :data:`DEFAULT_DPI` and the fastest zlib level (:data:`PNG_COMPRESS_LEVEL`) for the
  PNG files, written as RGB.

Which figures are written, and at which resolution, are the ``batch.figures`` and
``batch.figure_dpi`` options (:data:`FIGURE_CHOICES`, :func:`check_figure_options`).

The figures are built in the private modules of this package: ``_options`` (the
options), ``_axes`` (drawing helpers), ``_differences`` (nod differences), ``_summary``
(the summary figure), ``_diagnostics`` (the diagnostic figures of the profile outliers,
the shutter offset and the sky fit) and ``_save`` (PNG files).
"""

from __future__ import annotations

from slitcombine.plots import _options
from slitcombine.plots._diagnostics import (
    profile_residual_figure,
    shutter_offset_figure,
    sky_fit_figure,
)
from slitcombine.plots._differences import plot_2d_differences
from slitcombine.plots._options import check_figure_options
from slitcombine.plots._save import _RawSink as _RawSink
from slitcombine.plots._save import save_figure
from slitcombine.plots._summary import summary_figure

__all__ = [
    "plot_2d_differences",
    "summary_figure",
    "profile_residual_figure",
    "shutter_offset_figure",
    "sky_fit_figure",
    "save_figure",
    "check_figure_options",
    "DEFAULT_DPI",
    "DPI_RANGE",
    "FIGURE_CHOICES",
    "PNG_COMPRESS_LEVEL",
]

#: Resolution of the PNG figures, dots per inch (``figure_dpi`` of the command line and
#: the configuration): a 720 x 440 pixel summary figure, its 8-10 pt labels 9-11 pixels
#: high.  The pixels to encode grow as its square.  A nod-difference panel narrower than
#: its image (here a PRISM panel of ~320 pixels for ~340-430 columns) shows the most
#: deviant pixel under each screen pixel: no outlier disappears.
DEFAULT_DPI = _options.DEFAULT_DPI

#: zlib level of the PNG files: 1 (the fastest; files ~10% larger than at the default 6,
#: written ~2x faster).  Encoding time is dominated by Pillow's per-row filter search
#: and grows with the number of pixels (the resolution squared).
PNG_COMPRESS_LEVEL = _options.PNG_COMPRESS_LEVEL

#: Values of the ``figures`` option: both figures, only the summary (``{name}.fnu.png``)
#: or none.
FIGURE_CHOICES = _options.FIGURE_CHOICES

#: Accepted resolutions, dots per inch.
DPI_RANGE = _options.DPI_RANGE
