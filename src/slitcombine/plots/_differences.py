"""The figure of nod-difference images (:func:`plot_2d_differences`)."""

from __future__ import annotations

import numpy as np

from slitcombine.plots._axes import (
    _add_axes,
    _add_ticks,
    _axis_label,
    _colour_bar,
    _minus,
    _new_figure,
    _ticks,
    _title,
)

__all__ = ["plot_2d_differences"]


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
    blocks = _stack_blocks(panels, kinds, clip_sigma, in_ujy)

    fig = _new_figure((figsize[0] * (1 + 0.6 * (ncol - 1)) + 0.6, figsize[1] * npos + 0.2))
    width, height = fig.get_size_inches()
    lay = {"left": 1.1, "right": 0.8, "bottom": 0.65, "top": 0.45, "gap": 0.08}
    lay["aw"] = (width - lay["left"] - lay["right"] - lay["gap"] * (ncol - 1)) / ncol
    lay["ah"] = height - lay["bottom"] - lay["top"]
    colour = _colourer(user, -1.0, 1.0)  # takes the colour keywords out of ``user``
    opts = {"origin": "lower", "aspect": "auto", "interpolation": "nearest"}
    opts.update(user)
    overlays = _overlays(blocks["traces"], npos, ny, nx)
    for c, kind in enumerate(kinds):
        style = {"user": user, "opts": opts, "in_ujy": in_ujy, "colour": colour}
        _image_column(fig, c, kind, blocks, overlays, lay, style)
    _difference_colour_bar(fig, lay, colour, clip_sigma, in_ujy)
    _difference_notes(fig, lay, blocks["starred"], title)
    return fig


def _stack_blocks(panels, kinds, clip_sigma, in_ujy):
    """The images of each kind stacked by position, in units of each pixel's error.

    Returns
    -------
    dict
        ``stacks`` (kind -> ``(npos * ny, nx)`` array), the position labels' rows
        ``centres`` and texts ``labels``, the ``traces`` (positive -> list of ``(x, y)``
        polylines), ``starred`` (a position label ends with ``*``), ``ny`` and ``nx``.
    """
    npos = len(panels)
    ny, nx = np.shape(panels[0]["diff"])
    with_model = "model" in kinds
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
    return {
        "stacks": stacks,
        "centres": centres,
        "labels": labels,
        "traces": traces,
        "starred": starred,
        "ny": ny,
        "nx": nx,
    }


def _overlays(traces, npos, ny, nx):
    """The trace polylines (positive -> ``(x, y)``) and the separators between blocks.

    Returns
    -------
    (dict, (numpy.ndarray, numpy.ndarray))
        The joined traces of each sign, and the black lines between the blocks (one
        NaN-separated polyline).
    """
    lines = {}
    for positive in (True, False):
        if traces[positive]:
            x = np.concatenate([t[0] for t in traces[positive]])
            y = np.concatenate([t[1] for t in traces[positive]])
            lines[positive] = (x, y)
    cuts = np.arange(1, npos) * ny - 0.5
    sep_x = np.tile([-0.5, nx - 0.5, np.nan], npos - 1)
    sep_y = np.repeat(cuts, 3)
    sep_y[2::3] = np.nan
    return lines, (sep_x, sep_y)


def _image_column(fig, c, kind, blocks, overlays, layout, style):
    """The axes of column ``c`` (one ``kind`` of image): the stacked image, the traces,
    the separators, the ticks, labels and title.

    Parameters
    ----------
    fig : matplotlib.figure.Figure
        The figure.
    c : int
        Column index (0: the position labels on the left).
    kind : str
        ``'difference'``, ``'model'`` or ``'residual'``.
    blocks : dict
        From :func:`_stack_blocks`.
    overlays : (dict, (numpy.ndarray, numpy.ndarray))
        From :func:`_overlays`.
    layout : dict
        Margins, gap and axes size, inches.
    style : dict
        ``user`` and ``opts`` (imshow keywords), ``in_ujy`` and ``colour``.
    """
    from matplotlib.lines import Line2D

    from slitcombine._pixel_image import PixelImage

    stack, ny, nx = blocks["stacks"][kind], blocks["ny"], blocks["nx"]
    npos = len(blocks["centres"])
    lines, separators = overlays
    left = layout["left"] + c * (layout["aw"] + layout["gap"])
    ax = _add_axes(fig, left, layout["bottom"], layout["aw"], layout["ah"])
    ax.set_xlim(-0.5, nx - 0.5)
    ax.set_ylim(-0.5, npos * ny - 0.5)
    # colours computed here (uint8 RGBA) and blitted by a PixelImage: matplotlib's
    # float-image path is ~5x slower to draw and needs ~3 MB of temporaries each
    if style["user"]:
        ax.imshow(style["colour"](stack), **style["opts"])
        ax.set_xlim(-0.5, nx - 0.5)
        ax.set_ylim(-0.5, npos * ny - 0.5)
    else:
        priority = None if style["in_ujy"] else np.abs(stack)
        ax.add_artist(PixelImage(ax, style["colour"](stack), priority=priority))
    for positive, line in ((True, "red"), (False, "wheat")):
        if positive in lines:
            ax.add_artist(Line2D(*lines[positive], color=line, lw=0.8, alpha=0.8))
    if npos > 1:
        ax.add_artist(Line2D(*separators, color="k", lw=0.8))
    room = _add_ticks(ax, "bottom", _ticks(0, nx - 1, 4, integer=True), fontsize=8)
    _axis_label(ax, "bottom", "x (pixel)", room, fontsize=9)
    if c == 0:
        _add_ticks(ax, "left", blocks["centres"], blocks["labels"], fontsize=8, gid="position")
    _title(ax, kind, fontsize=9)


def _difference_colour_bar(fig, layout, colour, clip_sigma, in_ujy):
    """The colour bar: the images are in units of each pixel's error (or uJy with kws)."""
    width = fig.get_size_inches()[0]
    ramp = colour(np.linspace(-1.0, 1.0, 101))  # the -1..1 of the images
    ends = (f"-{clip_sigma:g}", "0", f"+{clip_sigma:g}") if not in_ujy else ("-1", "0", "1")
    bar, room = _colour_bar(
        fig,
        (width - layout["right"] + 0.12, layout["bottom"], 0.12, layout["ah"]),
        ramp,
        [0.0, 0.5, 1.0],
        [_minus(e) for e in ends],
        fontsize=8,
    )
    unit = "uJy / pixel (kws)" if in_ujy else "data / error (sigma)"
    _axis_label(bar, "right", unit, room, fontsize=8)


def _difference_notes(fig, layout, starred, title):
    """The note on the reference position (if a label is starred) and the title."""
    width, height = fig.get_size_inches()
    if starred:
        fig.text(
            layout["left"] / width,
            0.04 / height,
            "* the reference position: its trace fit is applied to every position",
            fontsize=8,
            ha="left",
            va="bottom",
        )
    if title:
        fig.text(0.5, 1 - 0.05 / height, title, ha="center", va="top", fontsize=10)
