"""Drawing helpers of the figures: the canvas, fixed-place axes, ticks, labels, titles,
legends, colour bars and :class:`_Panel` (a frame with data coordinates, without an Axes).

See :mod:`slitcombine.plots` for why they replace matplotlib's own layout.
"""

from __future__ import annotations

import numpy as np

from slitcombine.plots._options import DEFAULT_DPI

__all__: list[str] = []  # private helpers of the figure modules


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
