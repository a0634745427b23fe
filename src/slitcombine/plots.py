"""Figures: nod differences and the summary of a combined spectrum.

Object-oriented matplotlib only (:class:`matplotlib.figure.Figure` with an Agg canvas):
no ``pyplot``, safe in batch loops and threads.  matplotlib is imported only when a
figure is drawn (``import slitcombine`` does not import it).

Drawing speed (a batch draws two figures per group; ``benchmarks/bench_figures.py``):

* few axes, at fixed rectangles (no layout engine); the colour bars and the inset are
  panels drawn without an Axes of their own (:class:`_Panel`);
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
"""

from __future__ import annotations

import io
import logging
import numbers
from pathlib import Path

import numpy as np

from slitcombine._atomic import atomic_path
from slitcombine.errors import ConfigurationError, OutputError

__all__ = [
    "plot_2d_differences",
    "summary_figure",
    "save_figure",
    "check_figure_options",
    "DEFAULT_DPI",
    "DPI_RANGE",
    "FIGURE_CHOICES",
    "PNG_COMPRESS_LEVEL",
]

log = logging.getLogger(__name__)


#: Resolution of the PNG figures, dots per inch (``figure_dpi`` of the command line and
#: the configuration): a 720 x 440 pixel summary figure, its 8-10 pt labels 9-11 pixels
#: high.  The pixels to encode grow as its square.  A nod-difference panel narrower than
#: its image (here a PRISM panel of ~320 pixels for ~340-430 columns) shows the most
#: deviant pixel under each screen pixel: no outlier disappears.
DEFAULT_DPI = 80

#: zlib level of the PNG files: 1 (the fastest; files ~10% larger than at the default 6,
#: written ~2x faster).  Encoding time is dominated by Pillow's per-row filter search
#: and grows with the number of pixels (the resolution squared).
PNG_COMPRESS_LEVEL = 1

#: Values of the ``figures`` option: both figures, only the summary (``{name}.fnu.png``)
#: or none.
FIGURE_CHOICES = ("all", "summary", "none")

#: Accepted resolutions, dots per inch.
DPI_RANGE = (10, 600)


def check_figure_options(figures=True, dpi=None, names=("figures", "figure_dpi")):
    """The ``figures`` and ``figure_dpi`` options, checked and normalised.

    Parameters
    ----------
    figures : bool or str
        ``'all'``, ``'summary'`` or ``'none'`` (:data:`FIGURE_CHOICES`, any case); True
        means ``'all'``, False and None ``'none'``.
    dpi : float, optional
        Resolution, dots per inch, within :data:`DPI_RANGE`; None for
        :data:`DEFAULT_DPI`.
    names : (str, str)
        How the error messages name the two options (``batch.figures``,
        ``--figure-dpi`` ...).

    Returns
    -------
    (str, int or float)
        The choice and the resolution.

    Raises
    ------
    slitcombine.errors.ConfigurationError
        A value that is not one of these.
    """
    if figures is True:
        figures = "all"
    elif figures is False or figures is None:
        figures = "none"
    elif isinstance(figures, str) and figures.strip().lower() in FIGURE_CHOICES:
        figures = figures.strip().lower()
    else:
        raise ConfigurationError(
            f"{names[0]} must be one of {', '.join(FIGURE_CHOICES)} (or true/false), "
            f"got {figures!r}"
        )
    if dpi is None:
        dpi = DEFAULT_DPI
    lo, hi = DPI_RANGE
    if isinstance(dpi, bool) or not isinstance(dpi, numbers.Real) or not lo <= dpi <= hi:
        raise ConfigurationError(
            f"{names[1]} must be a number of dots per inch from {lo} to {hi}, got {dpi!r}"
        )
    dpi = float(dpi)
    return figures, int(dpi) if dpi.is_integer() else dpi


#: Tick length and the gap between a tick and its label, points (matplotlib's defaults).
_TICK, _PAD = 3.5, 3.5


def _new_figure(figsize, dpi=DEFAULT_DPI):
    """A figure on an Agg canvas that reuses its rendered text (:mod:`slitcombine._agg`)."""
    from matplotlib.figure import Figure

    from slitcombine._agg import TextCacheCanvas

    fig = Figure(figsize=figsize, dpi=dpi)
    TextCacheCanvas(fig)
    return fig


def _ticks(lo, hi, nbins, integer=False):
    """At most ``nbins + 1`` round tick values inside ``[lo, hi]``."""
    from matplotlib.ticker import MaxNLocator

    if not (np.isfinite(lo) and np.isfinite(hi)) or hi <= lo:
        return []
    steps = [1, 2, 2.5, 5, 10]
    values = MaxNLocator(nbins=nbins, steps=steps, integer=integer).tick_values(lo, hi)
    return [float(v) for v in values if lo <= v <= hi]


def _minus(text):
    """``text`` with a typographic minus sign (as matplotlib's tick labels)."""
    return text.replace("-", "\u2212")


def _tick_labels(values):
    """Labels of round tick values: the fewest decimals that write each one exactly."""
    values = [float(v) for v in values]
    if not values:
        return []
    span = max(abs(v) for v in values) or 1.0
    for decimals in range(7):
        if all(abs(round(v, decimals) - v) <= 1e-9 * span for v in values):
            texts = [f"{v:.{decimals}f}" for v in values]
            break
    else:
        texts = [f"{v:.3g}" for v in values]
    return [_minus("0" if float(t) == 0 else t) for t in texts]


def _text_width(fig, text, fontsize):
    """Width (points) of the widest line of ``text`` in the default font.

    Measured by the figure's renderer (:class:`slitcombine._agg.TextCacheRenderer`
    keeps the result, and the drawing asks for the same strings).
    """
    from matplotlib.font_manager import FontProperties

    renderer = fig.canvas.get_renderer()
    prop = FontProperties(size=fontsize)
    lines = str(text).split("\n")
    widths = [renderer.get_text_width_height_descent(line, prop, False)[0] for line in lines]
    return max(widths) * 72.0 / fig.dpi


def _add_axes(fig, left, bottom, width, height):
    """Axes at a rectangle given in inches from the lower left corner of ``fig``, without
    matplotlib's ticks (see :func:`_add_ticks`)."""
    fw, fh = fig.get_size_inches()
    ax = fig.add_axes((left / fw, bottom / fh, width / fw, height / fh))
    ax.set_xticks([])
    ax.set_yticks([])
    return ax


class _Panel:
    """A rectangle with its own data coordinates, drawn by its parent without an Axes.

    Creating a matplotlib Axes costs ~5 ms (it builds its axis, tick and text objects);
    the colour bars and the inset need only a frame, a transform and clipping.  The
    panel's artists are children of ``parent`` (a figure or an axes), transformed by
    :attr:`transData` and clipped to :attr:`bbox`; it offers the few methods of an
    Axes that :func:`_add_ticks`, :func:`_title` and :class:`PixelImage` use.

    Parameters
    ----------
    parent : matplotlib.figure.Figure or matplotlib.axes.Axes
        Where it is drawn.
    rect : (float, float, float, float)
        Left, bottom, width, height in the parent's fraction coordinates.
    xlim, ylim : (float, float)
        Data limits.
    zorder : float
        Drawing order among the parent's artists (the panel's background; its content
        and frame come just above).
    facecolor : colour or None
        Background (hides what the parent drew below), None for none.
    gid : str, optional
        ``gid`` of every artist of the panel.
    """

    def __init__(self, parent, rect, xlim, ylim, zorder=2.0, facecolor=None, gid=None):
        from matplotlib.figure import Figure
        from matplotlib.patches import Rectangle
        from matplotlib.transforms import Bbox, BboxTransformFrom, BboxTransformTo, TransformedBbox

        self.parent = parent
        on_figure = isinstance(parent, Figure)
        self.figure = parent if on_figure else parent.get_figure(root=False)
        self.bbox = TransformedBbox(
            Bbox.from_bounds(*rect), parent.transFigure if on_figure else parent.transAxes
        )
        self.transAxes = BboxTransformTo(self.bbox)
        self._limits = Bbox([[xlim[0], ylim[0]], [xlim[1], ylim[1]]])
        self.transData = BboxTransformFrom(self._limits) + self.transAxes
        self.zorder = zorder
        self.gid = gid
        if facecolor is not None:
            self.add_artist(
                Rectangle((0, 0), 1, 1, transform=self.transAxes, facecolor=facecolor, lw=0),
                zorder=0.0,
            )
        frame = Rectangle(
            (0, 0), 1, 1, transform=self.transAxes, facecolor="none", edgecolor="k", lw=0.8
        )
        self.add_artist(frame, clip=False, zorder=0.9)

    def get_figure(self, root=False):
        """The figure."""
        return self.figure

    def get_xlim(self):
        """Data limits along x."""
        return tuple(float(v) for v in self._limits.intervalx)

    def get_ylim(self):
        """Data limits along y."""
        return tuple(float(v) for v in self._limits.intervaly)

    def get_xaxis_transform(self):
        """x in data, y in panel fractions."""
        from matplotlib.transforms import blended_transform_factory

        return blended_transform_factory(self.transData, self.transAxes)

    def get_yaxis_transform(self):
        """x in panel fractions, y in data."""
        from matplotlib.transforms import blended_transform_factory

        return blended_transform_factory(self.transAxes, self.transData)

    def add_artist(self, artist, clip=True, zorder=None):
        """Add ``artist`` (data coordinates unless it has a transform) to the parent.

        ``zorder`` (0-1: background 0, content ~0.1-0.5, frame 0.9, text 0.95) is
        relative to the panel's; by default from the artist's own (Line2D 2 -> 0.2).
        """
        if not artist.is_transform_set():
            artist.set_transform(self.transData)
        if clip and artist.get_clip_on():
            artist.set_clip_box(self.bbox)
        else:
            artist.set_clip_on(False)
        rel = zorder if zorder is not None else min(artist.get_zorder(), 9.0) / 10.0
        artist.set_zorder(self.zorder + rel)
        if self.gid is not None:
            artist.set_gid(self.gid)
        self.parent.add_artist(artist)
        return artist

    def text(self, x, y, s, transform=None, **kwargs):
        """Add a text at ``x, y`` (data coordinates unless ``transform`` is given)."""
        from matplotlib.text import Text

        text = Text(x, y, s, **kwargs)
        text.set_transform(self.transData if transform is None else transform)
        return self.add_artist(text, clip=False, zorder=0.95)


def _add_ticks(ax, side, values, labels=None, fontsize=7, gid=None):
    """Tick marks on one side of ``ax`` (one artist) and their labels (one text each).

    matplotlib's own ticks are five artists each (two marks, a grid line, two labels)
    laid out at every draw: ~1.5 ms per tick.  These look like its defaults (outward,
    3.5 pt, 0.8 pt wide, the label 3.5 pt beyond).

    Parameters
    ----------
    ax : matplotlib.axes.Axes
        The axes (limits set).
    side : {'bottom', 'left', 'right'}
        Where.
    values : sequence of float
        Tick positions, data units.
    labels : list of str, optional
        One per value; None: the values (:func:`_tick_labels`); ``[]``: marks only.
    fontsize : float
        Label size, points.
    gid : str, optional
        ``gid`` of the labels.

    Returns
    -------
    float
        Room the ticks and labels take outside the axes, points (to place an axis label).
    """
    from matplotlib.lines import Line2D
    from matplotlib.markers import TICKDOWN, TICKLEFT, TICKRIGHT
    from matplotlib.transforms import ScaledTranslation

    values = [float(v) for v in values]
    if not values:
        return 0.0
    if labels is None:
        labels = _tick_labels(values)
    n = len(values)
    out = (_TICK + _PAD) / 72.0
    if side == "bottom":
        base, marker, xy = ax.get_xaxis_transform(), TICKDOWN, (values, [0.0] * n)
        shift, align = (0.0, -out), {"ha": "center", "va": "top"}
    elif side in ("left", "right"):
        right = side == "right"
        base, marker = ax.get_yaxis_transform(), TICKRIGHT if right else TICKLEFT
        xy = ([1.0 if right else 0.0] * n, values)
        shift = (out if right else -out, 0.0)
        align = {"ha": "left" if right else "right", "va": "center"}
    else:
        raise ValueError(f"side must be 'bottom', 'left' or 'right', got {side!r}")
    marks = Line2D(
        *xy,
        transform=base,
        marker=marker,
        markersize=_TICK,
        markeredgewidth=0.8,
        color="k",
        linestyle="none",
        clip_on=False,
    )
    ax.add_artist(marks)
    if not labels:
        return _TICK
    transform = base + ScaledTranslation(*shift, ax.get_figure(root=False).dpi_scale_trans)
    for x, y, text in zip(*xy, labels, strict=True):
        ax.text(x, y, text, transform=transform, fontsize=fontsize, gid=gid, **align)
    if side == "bottom":
        lines = max(str(t).count("\n") + 1 for t in labels)
        return _TICK + _PAD + 1.2 * fontsize * lines
    fig = ax.get_figure(root=False)
    return _TICK + _PAD + max(_text_width(fig, t, fontsize) for t in labels)


def _axis_label(ax, side, text, room, fontsize):
    """The x (``side='bottom'``) or y label of ``ax``, 3 points beyond ``room`` points
    outside that side (a fixed place: matplotlib would measure the tick labels).  On an
    Axes it is the axis label (``get_xlabel``); on a :class:`_Panel`, a text."""
    from matplotlib.axes import Axes
    from matplotlib.transforms import ScaledTranslation

    scale = ax.get_figure(root=False).dpi_scale_trans
    gap = (room + 3.0) / 72.0
    right = side == "right"
    if side == "bottom":
        shift, anchor = ScaledTranslation(0.0, -gap, scale), (0.5, 0.0)
    else:
        shift, anchor = ScaledTranslation(gap if right else -gap, 0.0, scale), (float(right), 0.5)
    transform = ax.transAxes + shift
    if not isinstance(ax, Axes):
        style = {"ha": "center", "va": "top", "fontsize": fontsize}
        if side != "bottom":
            style.update(rotation=90, rotation_mode="anchor", va="top" if right else "bottom")
        ax.text(*anchor, text, transform=transform, **style)
    elif side == "bottom":
        ax.set_xlabel(text, fontsize=fontsize)
        ax.xaxis.set_label_coords(*anchor, transform=transform)
    else:
        ax.set_ylabel(text, fontsize=fontsize)
        if right:
            ax.yaxis.set_label_position("right")
        ax.yaxis.set_label_coords(*anchor, transform=transform)


def _title(ax, text, fontsize, pad=3.0):
    """A title ``pad`` points above ``ax`` (an Axes title, or a text on a :class:`_Panel`),
    at a fixed place: matplotlib's automatic one measures every axis at each draw."""
    from matplotlib.axes import Axes
    from matplotlib.transforms import ScaledTranslation

    if isinstance(ax, Axes):
        ax.set_title(text, fontsize=fontsize, y=1.0, pad=pad)
        return
    shift = ScaledTranslation(0.0, pad / 72.0, ax.get_figure(root=False).dpi_scale_trans)
    ax.text(
        0.5, 1.0, text, transform=ax.transAxes + shift, ha="center", va="bottom", fontsize=fontsize
    )


def _legend(ax, entries, fontsize=8):
    """A legend in the upper right corner of ``ax``: a sample and a label per entry.

    Drawn with plain artists (matplotlib's :class:`~matplotlib.legend.Legend` lays out
    boxes at every draw, ~5 ms): a line sample (``Line2D``) or a band sample
    (``Rectangle``), then the label; every artist has the ``gid`` ``'legend'``.

    Parameters
    ----------
    ax : matplotlib.axes.Axes
        The axes.
    entries : list of (str, dict)
        Label and sample style: ``color``, ``lw`` and ``alpha`` (a line) or ``color``,
        ``alpha`` and ``band=True`` (a band).
    fontsize : float
        Points.
    """
    from matplotlib.lines import Line2D
    from matplotlib.patches import Rectangle
    from matplotlib.transforms import Affine2D, ScaledTranslation

    fig = ax.get_figure(root=False)
    # coordinates in points from the axes' upper right corner
    points = (
        Affine2D().scale(1 / 72.0) + fig.dpi_scale_trans + ScaledTranslation(1, 1, ax.transAxes)
    )
    row, sample = 1.3 * fontsize, 2.2 * fontsize
    x_text = -(max(_text_width(fig, label, fontsize) for label, _ in entries) + 0.6 * fontsize)
    x0, x1 = x_text - 0.5 * fontsize - sample, x_text - 0.5 * fontsize
    for i, (label, style) in enumerate(entries):
        y = -0.6 * fontsize - (i + 0.5) * row
        if style.get("band"):
            h = 0.7 * fontsize
            art = Rectangle(
                (x0, y - 0.5 * h), sample, h, color=style["color"], alpha=style.get("alpha"), lw=0
            )
        else:
            art = Line2D(
                [x0, x1], [y, y], color=style["color"], lw=style["lw"], alpha=style.get("alpha")
            )
        art.set_transform(points)
        art.set_clip_on(False)
        art.set_gid("legend")
        ax.add_artist(art)
        text = ax.text(x_text, y, label, transform=points, fontsize=fontsize, va="center")
        text.set_gid("legend")


def _colour_bar(fig, rect, rgba, ticks, labels, fontsize=7):
    """A colour ramp (bottom to top) with tick labels on the right, drawn as a
    :class:`_Panel` of the figure (its artists have the ``gid`` ``'colourbar'``).

    Parameters
    ----------
    fig : matplotlib.figure.Figure
        The figure.
    rect : (float, float, float, float)
        Left, bottom, width, height in inches.
    rgba : numpy.ndarray
        ``(n, 4)`` uint8 colours of the ramp, bottom first.
    ticks : sequence of float
        Tick positions as fractions of the ramp's height (0 bottom, 1 top).
    labels : list of str
        Their labels.
    fontsize : float
        Label size, points.

    Returns
    -------
    (_Panel, float)
        The panel (data coordinates 0-1 both ways) and the room its labels take on the
        right (points).
    """
    from slitcombine._pixel_image import PixelImage

    fw, fh = fig.get_size_inches()
    left, bottom, width, height = rect
    frac = (left / fw, bottom / fh, width / fw, height / fh)
    bar = _Panel(fig, frac, (0.0, 1.0), (0.0, 1.0), zorder=1.0, gid="colourbar")
    n = len(rgba)
    ramp = np.asarray(rgba, np.uint8)[:, None, :]
    bar.add_artist(PixelImage(bar, ramp, x_edges=[0.0, 1.0], y_edges=np.linspace(0, 1, n + 1)))
    room = _add_ticks(bar, "right", ticks, labels, fontsize=fontsize)
    return bar, room


def _colour_scale(err, clip_sigma):
    """``clip_sigma`` times the median positive finite error (1 if there is none)."""
    good = np.isfinite(err) & (err > 0)
    scale = float(np.median(err[good])) if good.any() else 1.0
    return clip_sigma * scale


def _colourer(kws, vmin, vmax):
    """A function mapping values to uint8 RGBA with the colour map and limits of ``kws``.

    ``kws`` (imshow keywords) loses its ``cmap``, ``norm``, ``vmin`` and ``vmax``;
    NaN values get the colour map's "bad" colour (transparent).
    """
    import matplotlib
    from matplotlib.colors import Normalize

    cmap = kws.pop("cmap", "RdBu_r")
    cmap = matplotlib.colormaps[cmap] if isinstance(cmap, str) else cmap
    norm = kws.pop("norm", None)
    lo, hi = kws.pop("vmin", vmin), kws.pop("vmax", vmax)
    if norm is None:
        norm = Normalize(lo, hi)

    def colour(values):
        return cmap(norm(np.ma.masked_invalid(values)), bytes=True)

    return colour


def _trace_path(traces, ny, row0, positive):
    """x, y of the ``positive`` (or negative) traces as one NaN-separated polyline.

    Rows outside ``[-0.5, ny - 0.5]`` are dropped so that a trace never spills into
    the neighbouring block of the stacked image.
    """
    xs, ys = [], []
    for row, pos in traces:
        if bool(pos) != positive:
            continue
        row = np.asarray(row, float)
        inside = (row >= -0.5) & (row <= ny - 0.5)
        xs.append(np.append(np.arange(row.size, dtype=float), np.nan))
        ys.append(np.append(np.where(inside, row + row0, np.nan), np.nan))
    if not xs:
        return None, None
    return np.concatenate(xs), np.concatenate(ys)


def plot_2d_differences(panels, clip_sigma=5, kws=None, figsize=(6, 2), title=None):
    """Figure of nod-difference images, one block of rows per nod position.

    One column per kind of image (the difference, and if any panel has a model, the
    model and the residual difference - model).  In each column the images of the
    nod positions are stacked vertically (first position on top, black separators).
    Every pixel is shown in units of its own error (the colour bar: -``clip_sigma`` to
    +``clip_sigma`` sigma), so the noisy red end of a PRISM spectrum does not saturate
    and the residual shows what the model misses in sigma; the left axis names each
    position and its median error (uJy per pixel); a ``*`` marks the reference position
    (explained under the figure).  The traces are drawn on every block (red: positive,
    wheat: negative).  Where a screen pixel covers several image pixels (many columns,
    a low resolution), the most deviant one is shown: no outlier disappears.

    Parameters
    ----------
    panels : list of dict
        One per nod position with keys ``label`` (str), ``diff`` (``(ny, nx)``
        difference, uJy per pixel), ``err`` (``(ny, nx)`` its error, uJy per pixel),
        ``model`` (``(ny, nx)``, uJy per pixel, or None) and ``traces`` (list of
        ``(row_per_column, positive)``, rows in pixels).
    clip_sigma : float
        Colour scale: +-``clip_sigma`` times each pixel's error.
    kws : dict, optional
        Extra ``imshow`` keywords (override the defaults).  If they set ``vmin``,
        ``vmax`` or ``norm`` the images are shown in uJy per pixel, not divided by
        the errors.
    figsize : (float, float)
        Size of one row of panels (one nod position, one column), inches; the figure
        is ``figsize[0] * (1 + 0.6 * (ncol - 1))`` by ``figsize[1] * npos`` inches.
    title : str, optional
        Figure title.

    Returns
    -------
    matplotlib.figure.Figure
        ``ncol`` axes (the image of each is ``(npos * ny, nx)``; the position labels are
        texts of the first, ``gid='position'``) and the colour bar's axes.
    """
    if not panels:
        fig = _new_figure(figsize)
        fig.text(0.5, 0.5, "no nod-difference image", ha="center", va="center")
        return fig
    user = dict(kws or {})
    in_ujy = bool({"vmin", "vmax", "norm"} & set(user))
    with_model = any(p.get("model") is not None for p in panels)
    kinds = ["difference", "model", "residual"] if with_model else ["difference"]
    ncol, npos = len(kinds), len(panels)
    ny, nx = np.shape(panels[0]["diff"])

    stacks = {kind: np.full((npos * ny, nx), np.nan) for kind in kinds}
    centres, labels, traces = [], [], {True: [], False: []}
    starred = False
    for k, panel in enumerate(panels):
        row0 = (npos - 1 - k) * ny  # first position on top
        err = np.asarray(panel["err"], float)
        median_err = _colour_scale(err, 1.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            scale = 1.0 if in_ujy else np.where(err > 0, err * clip_sigma, np.nan)
        diff = np.asarray(panel["diff"], float)
        model = panel.get("model")
        stacks["difference"][row0 : row0 + ny] = diff / scale
        if with_model and model is not None:
            model = np.asarray(model, float)
            stacks["model"][row0 : row0 + ny] = model / scale
            stacks["residual"][row0 : row0 + ny] = (diff - model) / scale
        centres.append(row0 + 0.5 * (ny - 1))
        starred |= str(panel["label"]).endswith("*")
        labels.append(panel["label"] + ("" if in_ujy else f"\nerr {median_err:.3g} uJy"))
        for positive in (True, False):
            x, y = _trace_path(panel.get("traces", []), ny, row0, positive)
            if x is not None:
                traces[positive].append((x, y))

    from matplotlib.lines import Line2D

    from slitcombine._pixel_image import PixelImage

    fig = _new_figure((figsize[0] * (1 + 0.6 * (ncol - 1)) + 0.6, figsize[1] * npos + 0.2))
    width, height = fig.get_size_inches()
    left, right, bottom, top, gap = 1.1, 0.8, 0.65, 0.45, 0.08
    aw = (width - left - right - gap * (ncol - 1)) / ncol
    ah = height - bottom - top
    xticks = _ticks(0, nx - 1, 4, integer=True)
    colour = _colourer(user, -1.0, 1.0)  # takes the colour keywords out of ``user``
    opts = {"origin": "lower", "aspect": "auto", "interpolation": "nearest"}
    opts.update(user)
    lines = {}
    for positive in (True, False):
        if traces[positive]:
            x = np.concatenate([t[0] for t in traces[positive]])
            y = np.concatenate([t[1] for t in traces[positive]])
            lines[positive] = (x, y)
    # the black lines between the blocks, one NaN-separated polyline
    cuts = np.arange(1, npos) * ny - 0.5
    sep_x = np.tile([-0.5, nx - 0.5, np.nan], npos - 1)
    sep_y = np.repeat(cuts, 3)
    sep_y[2::3] = np.nan

    for c, kind in enumerate(kinds):
        ax = _add_axes(fig, left + c * (aw + gap), bottom, aw, ah)
        ax.set_xlim(-0.5, nx - 0.5)
        ax.set_ylim(-0.5, npos * ny - 0.5)
        # colours computed here (uint8 RGBA) and blitted by a PixelImage: matplotlib's
        # float-image path is ~5x slower to draw and needs ~3 MB of temporaries each
        if user:
            ax.imshow(colour(stacks[kind]), **opts)
            ax.set_xlim(-0.5, nx - 0.5)
            ax.set_ylim(-0.5, npos * ny - 0.5)
        else:
            priority = None if in_ujy else np.abs(stacks[kind])
            ax.add_artist(PixelImage(ax, colour(stacks[kind]), priority=priority))
        for positive, line in ((True, "red"), (False, "wheat")):
            if positive in lines:
                ax.add_artist(Line2D(*lines[positive], color=line, lw=0.8, alpha=0.8))
        if npos > 1:
            ax.add_artist(Line2D(sep_x, sep_y, color="k", lw=0.8))
        room = _add_ticks(ax, "bottom", xticks, fontsize=8)
        _axis_label(ax, "bottom", "x (pixel)", room, fontsize=9)
        if c == 0:
            _add_ticks(ax, "left", centres, labels, fontsize=8, gid="position")
        _title(ax, kind, fontsize=9)
    # colour bar: the images are in units of each pixel's error (or uJy with kws)
    ramp = colour(np.linspace(-1.0, 1.0, 101))  # the -1..1 of the images
    ends = (f"-{clip_sigma:g}", "0", f"+{clip_sigma:g}") if not in_ujy else ("-1", "0", "1")
    bar, room = _colour_bar(
        fig,
        (width - right + 0.12, bottom, 0.12, ah),
        ramp,
        [0.0, 0.5, 1.0],
        [_minus(e) for e in ends],
        fontsize=8,
    )
    unit = "uJy / pixel (kws)" if in_ujy else "data / error (sigma)"
    _axis_label(bar, "right", unit, room, fontsize=8)
    if starred:
        fig.text(
            left / width,
            0.04 / height,
            "* the reference position: its trace fit is applied to every position",
            fontsize=8,
            ha="left",
            va="bottom",
        )
    if title:
        fig.text(0.5, 1 - 0.05 / height, title, ha="center", va="top", fontsize=10)
    return fig


def _step_band(x, lo, hi):
    """Polygons of a band between ``lo`` and ``hi`` drawn as steps centred on ``x``
    (``fill_between(..., step='mid')``), one per run of finite values.

    Returns
    -------
    list of numpy.ndarray
        ``(2 m, 2)`` vertices of each polygon (upper edge left to right, then the lower
        edge back).
    """
    x, lo, hi = (np.asarray(a, float) for a in (x, lo, hi))
    ok = np.isfinite(x) & np.isfinite(lo) & np.isfinite(hi)
    if x.size < 2 or not ok.any():
        return []
    edges = np.concatenate([[x[0] - 0.5 * (x[1] - x[0])], 0.5 * (x[1:] + x[:-1])])
    edges = np.append(edges, x[-1] + 0.5 * (x[-1] - x[-2]))
    polys = []
    flags = np.concatenate([[False], ok, [False]])
    starts = np.flatnonzero(flags[1:] & ~flags[:-1])
    stops = np.flatnonzero(~flags[1:] & flags[:-1])
    for i, j in zip(starts, stops, strict=True):
        xs = np.repeat(edges[i : j + 1], 2)[1:-1]  # each bin's left and right edges
        up, down = np.repeat(hi[i:j], 2), np.repeat(lo[i:j], 2)
        polys.append(
            np.column_stack([np.concatenate([xs, xs[::-1]]), np.concatenate([up, down[::-1]])])
        )
    return polys


def _mid_edges(centres, lo, hi):
    """Pixel edges half-way between ``centres``, the outer ones at ``lo`` and ``hi``."""
    centres = np.asarray(centres, float)
    return np.concatenate([[lo], 0.5 * (centres[1:] + centres[:-1]), [hi]])


def summary_figure(spec, sci2d, wave, y, prof1d=None, title=None, figsize=(9, 5.5), truth=None):
    """Rectified 2D spectrum above the 1D spectrum (f_nu), with the collapsed profile.

    The 2D image has a colour bar in uJy per pixel on an arcsinh stretch (linear within
    the noise, compressed above: the noisy red end and the lines both readable).  The
    1D panel shows the optimal and boxcar spectra, the +-1 sigma band, and the truth if
    given, with a legend of line samples; when emission lines rise far above the
    continuum the main scale follows the continuum and an inset shows the full range
    (no peak is clipped unseen).

    Parameters
    ----------
    spec : astropy.table.Table
        The ``SPEC1D`` table (``wave`` um, ``flux``, ``err`` uJy, ``valid``; optionally
        ``flux_boxcar`` uJy).
    sci2d : numpy.ndarray
        ``(ny, nwave)`` rectified data, uJy per pixel.
    wave, y : numpy.ndarray
        Wavelength (um) and cross-dispersion (pixels) grids of ``sci2d``.
    prof1d : dict, optional
        ``{'pix', 'profile', 'pfit'}``: rows (pixels) and the collapsed data and
        model profiles (fraction of the flux per row).
    title : str, optional
        Title.
    figsize : (float, float)
        Inches.
    truth : (numpy.ndarray, numpy.ndarray), optional
        ``(wave, flux)``: a known spectrum (um, uJy) to overplot (simulations).

    Returns
    -------
    matplotlib.figure.Figure
        The axes of the 1D spectrum (its legend: artists with ``gid='legend'``), the 2D
        spectrum (a :class:`~slitcombine._pixel_image.PixelImage`), the profile and the
        colour bar (title ``'uJy/px'``), and the inset when there is one.
    """
    import matplotlib
    from matplotlib.colors import AsinhNorm
    from matplotlib.lines import Line2D

    from slitcombine._pixel_image import PixelImage

    wave = np.asarray(wave, float)
    y = np.asarray(y, float)
    sci2d = np.asarray(sci2d, float)
    valid = np.asarray(spec["valid"], bool)
    flux = np.asarray(getattr(spec["flux"], "value", spec["flux"]), float)
    err = np.asarray(getattr(spec["err"], "value", spec["err"]), float)
    dw0 = wave[1] - wave[0] if wave.size > 1 else 0.01
    dw1 = wave[-1] - wave[-2] if wave.size > 1 else 0.01
    xlim = (wave[0] - 0.5 * dw0, wave[-1] + 0.5 * dw1)
    dy = y[1] - y[0] if len(y) > 1 else 1.0
    ylim2 = (y[0] - 0.5 * dy, y[-1] + 0.5 * dy)

    width, height = figsize
    fig = _new_figure(figsize)
    left, bottom, top, gap, pgap, right = 0.85, 0.55, 0.45, 0.08, 0.2, 0.15
    pw = 0.13 * width
    bar_room = 0.65  # the colour bar and its labels
    mw = width - left - pgap - pw - right - bar_room
    h = height - bottom - top - gap
    h1, h2 = h * 1.6 / 2.6, h / 2.6
    ax1 = _add_axes(fig, left, bottom, mw, h1)
    ax2 = _add_axes(fig, left, bottom + h1 + gap, mw, h2)
    axp = _add_axes(fig, left + mw + pgap + bar_room, bottom + h1 + gap, pw, h2)
    xticks = _ticks(*xlim, 6)
    yticks2 = _ticks(*ylim2, 4, integer=True)

    finite = sci2d[np.isfinite(sci2d)]
    if finite.size:
        noise = 1.4826 * float(np.median(np.abs(finite - np.median(finite)))) or 1.0
        vlim = float(np.percentile(np.abs(finite), 99.9)) or 1.0
    else:
        noise, vlim = 1.0, 1.0
    norm = AsinhNorm(linear_width=2.0 * noise, vmin=-vlim, vmax=vlim)
    cmap = matplotlib.colormaps["RdBu_r"]
    # nearest pixels on the (non-uniform) wavelength grid, coloured here and blitted:
    # the picture of a flat pcolormesh with mid-point edges, much faster to draw
    ax2.set_xlim(*xlim)
    ax2.set_ylim(*ylim2)
    rgba = cmap(norm(np.ma.masked_invalid(sci2d)), bytes=True)
    ax2.add_artist(
        PixelImage(ax2, rgba, x_edges=_mid_edges(wave, *xlim), y_edges=_mid_edges(y, *ylim2))
    )
    _add_ticks(ax2, "bottom", xticks, [])
    room = _add_ticks(ax2, "left", yticks2, fontsize=9)
    _axis_label(ax2, "left", "y (pixel)", room, fontsize=10)
    # colour bar: the ramp is uniform in the stretched scale, ticks where values fall
    ticks = sorted({0.0, *(round(float(v), 3) for v in (vlim, -vlim, 3 * noise, -3 * noise))})
    ticks = [t for t in ticks if -vlim <= t <= vlim]
    bar, _ = _colour_bar(
        fig,
        (left + mw + 0.08, bottom + h1 + gap, 0.1, h2),
        cmap(np.linspace(0.0, 1.0, 256), bytes=True),
        [float(norm(t)) for t in ticks],
        [_minus(f"{t:.2g}") for t in ticks],
        fontsize=8,
    )
    _title(bar, "uJy/px", fontsize=8, pad=2)

    fv = np.where(valid, flux, np.nan)
    ev = np.where(valid, err, np.nan)
    fb = None
    if "flux_boxcar" in spec.colnames:
        fb = np.asarray(getattr(spec["flux_boxcar"], "value", spec["flux_boxcar"]), float)

    def draw_1d(ax, lw=0.8):
        from matplotlib.collections import PolyCollection

        band = PolyCollection(
            _step_band(wave, fv - ev, fv + ev), facecolors="tab:blue", alpha=0.3, lw=0
        )
        ax.add_artist(band)
        if fb is not None:
            ax.add_artist(
                Line2D(wave, fb, drawstyle="steps-mid", color="tab:orange", lw=0.6 * lw, alpha=0.7)
            )
        ax.add_artist(Line2D(wave, fv, drawstyle="steps-mid", color="k", lw=lw))
        if truth is not None:
            ax.add_artist(Line2D(*truth, color="tab:red", lw=lw))
        ax.add_artist(Line2D(xlim, (0.0, 0.0), color="0.5", lw=0.5))
        return band

    ax1.set_xlim(*xlim)
    draw_1d(ax1)
    entries = [("optimal", {"color": "k", "lw": 0.8})]
    if fb is not None:
        entries.append(("boxcar", {"color": "tab:orange", "lw": 0.6, "alpha": 0.7}))
    entries.append(("\u00b11 sigma", {"color": "tab:blue", "alpha": 0.3, "band": True}))
    if truth is not None:
        entries.append(("truth", {"color": "tab:red", "lw": 0.8}))
    ylim1 = (-1.0, 1.0)
    full_top = np.nan
    if np.isfinite(fv).any():
        top1 = float(np.nanpercentile(fv + ev, 95))
        full_top = float(np.nanmax(fv + ev))
        low1 = float(min(-0.1 * top1, np.nanpercentile(fv - ev, 0.5)))
        if np.isfinite(top1) and top1 > 0 and np.isfinite(low1):
            # the whole range unless a few bins (lines) rise far above the continuum
            top = full_top if full_top < 2.0 * top1 else 1.5 * top1
            ylim1 = (low1, 1.15 * top)
    ax1.set_ylim(*ylim1)
    room = _add_ticks(ax1, "bottom", xticks, fontsize=9)
    _axis_label(ax1, "bottom", "wavelength (um)", room, fontsize=10)
    room = _add_ticks(ax1, "left", _ticks(*ylim1, 5), fontsize=9)
    _axis_label(ax1, "left", "f_nu (uJy)", room, fontsize=10)
    _legend(ax1, entries, fontsize=8)
    if np.isfinite(full_top) and full_top > ylim1[1]:
        # peaks above the scale: the full range in an inset (a panel of ax1)
        inset = _Panel(
            ax1,
            (0.06, 0.5, 0.28, 0.44),
            xlim,
            (ylim1[0], 1.05 * full_top),
            zorder=4.0,
            facecolor="w",
            gid="inset",
        )
        draw_1d(inset, lw=0.5)
        _add_ticks(inset, "left", _ticks(0, full_top, 2), fontsize=7)
        _title(inset, "full range", fontsize=7, pad=2)

    if prof1d is not None:
        pix = np.asarray(prof1d["pix"], float)
        pdata = np.asarray(prof1d["profile"], float)
        pfit = np.asarray(prof1d["pfit"], float)
        axp.add_artist(Line2D(pdata, pix, drawstyle="steps-mid", color="k", lw=0.8))
        axp.add_artist(Line2D(pfit, pix, color="tab:red", lw=0.8))
        both = np.concatenate([pdata, pfit, [0.0]])
        both = both[np.isfinite(both)]
        pad = 0.05 * (both.max() - both.min()) or 0.05
        axp.set_xlim(both.min() - pad, both.max() + pad)
        axp.add_artist(Line2D((0.0, 0.0), ylim2, color="0.5", lw=0.5))
        pticks = _ticks(both.min(), both.max(), 2)
        for i, (text, colour) in enumerate((("data", "k"), ("model", "tab:red"))):
            axp.text(
                0.97,
                0.03 + 0.1 * (1 - i),
                text,
                color=colour,
                fontsize=8,
                ha="right",
                va="bottom",
                transform=axp.transAxes,
            )
    else:
        pticks = []
    axp.set_ylim(*ylim2)
    room = _add_ticks(axp, "bottom", pticks, fontsize=8)
    _add_ticks(axp, "left", yticks2, [])
    _axis_label(axp, "bottom", "profile", room, fontsize=9)
    if title:
        fig.text(0.5, 1 - 0.08 / height, title, ha="center", va="top", fontsize=10)
    return fig


class _RawSink(io.RawIOBase):
    """A write-only binary stream that keeps what is written without copying it.

    ``savefig(format='raw')`` writes the Agg renderer's RGBA buffer in one ``write``
    call; a ``BytesIO`` would copy those 4 bytes per pixel (3 MB for the
    nod-difference figure) while the renderer and the PNG image are alive.
    """

    def __init__(self):
        super().__init__()
        self._chunks = []

    def writable(self):
        """True: a sink is written to."""
        return True

    def write(self, data):
        """Keep a view of ``data`` (bytes-like); returns its length in bytes."""
        view = memoryview(data).cast("B")
        self._chunks.append(view)
        return view.nbytes

    def data(self):
        """Everything written, as one bytes-like object (a view if written at once)."""
        if len(self._chunks) == 1:
            return self._chunks[0]
        return memoryview(b"".join(self._chunks))


def _render(fig, dpi):
    """The figure as ``savefig`` draws it, RGB if it is opaque, else RGBA.

    Parameters
    ----------
    fig : matplotlib.figure.Figure
        The figure.
    dpi : float
        Resolution, dots per inch.

    Returns
    -------
    PIL.Image.Image or None
        The image, or None if its size is not the figure size times ``dpi`` (a
        ``savefig.bbox = 'tight'`` setting) or is empty.
    """
    from PIL import Image

    sink = _RawSink()
    # through savefig (its facecolor, transparency and dpi handling): raw RGBA bytes
    fig.savefig(sink, format="raw", dpi=dpi)
    width, height = (int(v) for v in fig.bbox_inches.size * dpi)
    raw = sink.data()
    if raw.nbytes != 4 * width * height or raw.nbytes == 0:
        return None
    image = Image.frombuffer("RGBA", (width, height), raw, "raw", "RGBA", 0, 1)
    # opaque: alpha (every 4th byte) is 255 everywhere (a strided view: no temporary)
    if np.frombuffer(raw, np.uint8)[3::4].min() == 255:
        return image.convert("RGB")
    return image.copy()  # not a view of the buffer


def save_figure(fig, path, dpi=DEFAULT_DPI, compress_level=PNG_COMPRESS_LEVEL):
    """Write a figure as PNG atomically (temporary file in the same folder, then rename).

    The pixels and PNG metadata of ``fig.savefig(path, format='png')``, but an opaque
    figure (all of ours: opaque background) is written as RGB, without the constant
    alpha channel (lossless, ~20% less to encode: ~4 ms per figure).

    Parameters
    ----------
    fig : matplotlib.figure.Figure
        The figure.
    path : str or path-like
        Output ``.png`` path.
    dpi : float
        Resolution, dots per inch (default :data:`DEFAULT_DPI`); the encoding time grows
        with its square.
    compress_level : int
        zlib level, 0-9 (default :data:`PNG_COMPRESS_LEVEL`, the fastest that
        compresses).

    Returns
    -------
    pathlib.Path
        The written path.

    Raises
    ------
    OutputError
        If the file cannot be written.
    """
    import matplotlib as mpl
    from PIL import PngImagePlugin

    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            image = _render(fig, dpi)
            if image is None:
                fig.savefig(
                    tmp, format="png", dpi=dpi, pil_kwargs={"compress_level": compress_level}
                )
            else:
                info = PngImagePlugin.PngInfo()  # the text chunk matplotlib writes
                info.add_text(
                    "Software", f"Matplotlib version{mpl.__version__}, https://matplotlib.org/"
                )
                image.save(
                    tmp, format="png", dpi=(dpi, dpi), pnginfo=info, compress_level=compress_level
                )
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc}") from exc
    return path
