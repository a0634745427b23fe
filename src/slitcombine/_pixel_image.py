"""A nearest-neighbour RGBA image on its axes' data grid, drawn as one blit.

matplotlib's :class:`~matplotlib.image.AxesImage` resamples through a general
floating-point pipeline (masking, affine resampling, alpha handling): for the ~100 x 400
pixel images of the nod-difference figure that is ~8 ms and ~3 MB of temporaries per
image.  :class:`PixelImage` maps every screen pixel of the axes to the data pixel under
its centre with two integer index arrays and hands the uint8 result to the renderer's
``draw_image`` (a copy into the Agg buffer).  Pixel edges may be non-uniform (the
wavelength grid of a spectrum).

Where a screen pixel spans several data pixels (more columns than screen pixels: a
grating spectrum, a low resolution), a nearest-neighbour image drops some of them; with
``priority`` the one of highest priority is shown instead (e.g. the largest ``|value|``:
no single deviant pixel disappears).  Imported only when a figure is drawn.
"""

from __future__ import annotations

import numpy as np
from matplotlib.artist import Artist

__all__ = ["PixelImage"]


def _edges(edges, n):
    """Pixel edges (``n + 1``, increasing): given, or ``-0.5 ... n - 0.5``."""
    if edges is None:
        return np.arange(n + 1, dtype=float) - 0.5
    edges = np.asarray(edges, float)
    if edges.shape != (n + 1,):
        raise ValueError(f"expected {n + 1} pixel edges, got {edges.shape}")
    return edges


def _screen_to_data(edges, lo, hi, size):
    """Data pixel under each screen pixel's centre and the range each one spans.

    Parameters
    ----------
    edges : numpy.ndarray
        Data pixel edges (increasing), data units.
    lo, hi : float
        Data coordinates of the first screen pixel's lower edge and of the last one's
        upper edge.
    size : int
        Number of screen pixels.

    Returns
    -------
    centre, first, last : numpy.ndarray of int
        Data pixel under the centre (-1 outside the image) and the first and last data
        pixels that each screen pixel overlaps (clipped to the image).
    """
    n = edges.size - 1
    scale = (hi - lo) / size
    bounds = lo + scale * np.arange(size + 1, dtype=float)  # screen pixel edges, data units
    centres = 0.5 * (bounds[:-1] + bounds[1:])
    centre = np.searchsorted(edges, centres, side="right") - 1
    centre[(centre < 0) | (centre >= n) | (centres > edges[-1])] = -1
    first = np.clip(np.searchsorted(edges, bounds[:-1], side="right") - 1, 0, n - 1)
    last = np.clip(np.searchsorted(edges, bounds[1:], side="left") - 1, 0, n - 1)
    return centre, first, np.maximum(last, first)


def _drops(centre, first, last, n):
    """True if a data pixel inside the screen pixels' span is under no screen pixel's
    centre (nearest-neighbour sampling would drop it)."""
    hit = np.zeros(n, bool)
    hit[centre[centre >= 0]] = True
    inside = centre >= 0
    if not inside.any():
        return False
    return not hit[first[inside].min() : last[inside].max() + 1].all()


def _choose(priority, centre, first, last, axis):
    """Index, along ``axis`` of ``priority``, of the pixel each screen pixel shows.

    Returns None where the screen pixels' centres already reach every data pixel (the
    nearest one is shown); else ``(n_other, n_screen)`` for ``axis=1`` (per row) or
    ``(n_screen, n_other)`` for ``axis=0``: the highest-priority data pixel of each
    screen pixel's span (clipped to the image).
    """
    span = int((last - first).max()) + 1 if first.size else 1
    if span <= 1 or not _drops(centre, first, last, priority.shape[axis]):
        return None
    cand = np.minimum(first[:, None] + np.arange(span), last[:, None])  # (n_screen, span)
    if axis == 1:
        best = np.argmax(priority[:, cand], axis=2)  # (n_other, n_screen)
        return cand[np.arange(centre.size)[None, :], best]
    best = np.argmax(priority[cand, :], axis=1)  # (n_screen, n_other)
    return cand[np.arange(centre.size)[:, None], best]


class PixelImage(Artist):
    """RGBA image on the data grid of its axes (``origin='lower'``, nearest pixels).

    Parameters
    ----------
    ax : matplotlib.axes.Axes or object
        The axes (linear scales), or any object with a display-space ``bbox``,
        ``get_xlim()``, ``get_ylim()`` and a ``figure`` (a panel drawn without an Axes
        of its own); the image fills that rectangle.
    rgba : numpy.ndarray
        ``(ny, nx, 4)`` uint8 colours, row 0 at the bottom.
    x_edges, y_edges : numpy.ndarray, optional
        ``(nx + 1,)`` and ``(ny + 1,)`` increasing pixel edges in data units; default
        ``-0.5, 0.5, ..., n - 0.5`` (pixel indices).
    priority : numpy.ndarray, optional
        ``(ny, nx)``: where a screen pixel spans several data pixels, the one of
        highest priority is shown (NaN counts as lowest); default: the one under the
        screen pixel's centre.
    """

    zorder = 0

    def __init__(self, ax, rgba, x_edges=None, y_edges=None, priority=None):
        super().__init__()
        self._rgba = np.asarray(rgba, np.uint8)
        ny, nx = self._rgba.shape[:2]
        if self._rgba.shape != (ny, nx, 4):
            raise ValueError(f"rgba must be (ny, nx, 4), got {self._rgba.shape}")
        # one uint32 per pixel: a quarter of the index work when the image is drawn
        self._rgba32 = np.ascontiguousarray(self._rgba).view(np.uint32).reshape(ny, nx)
        self._x_edges = _edges(x_edges, nx)
        self._y_edges = _edges(y_edges, ny)
        if priority is not None:
            priority = np.asarray(priority, float)
            if priority.shape != (ny, nx):
                raise ValueError(f"priority must be {(ny, nx)}, got {priority.shape}")
            priority = np.where(np.isfinite(priority), priority, -np.inf)
        self._priority = priority
        self._panel = ax
        from matplotlib.axes import Axes

        if isinstance(ax, Axes):
            self.set_figure(ax.get_figure(root=False))
            self.axes = ax
        else:
            self.set_figure(ax.figure)

    def get_array(self):
        """The ``(ny, nx, 4)`` uint8 colours (row 0 at the bottom)."""
        return self._rgba

    def get_extent(self):
        """``(left, right, bottom, top)`` of the image in data units."""
        return (self._x_edges[0], self._x_edges[-1], self._y_edges[0], self._y_edges[-1])

    def draw(self, renderer):
        """Blit the image into the axes rectangle (one data pixel per screen pixel)."""
        if not self.get_visible():
            return
        bbox = self._panel.bbox
        x0, y0 = int(np.floor(bbox.x0)), int(np.floor(bbox.y0))
        width, height = int(np.ceil(bbox.x1)) - x0, int(np.ceil(bbox.y1)) - y0
        if width <= 0 or height <= 0:
            return
        (xlo, xhi), (ylo, yhi) = self._panel.get_xlim(), self._panel.get_ylim()
        # data coordinates of the screen pixels x0 .. x0 + width, y0 .. y0 + height
        sx = (xhi - xlo) / bbox.width
        sy = (yhi - ylo) / bbox.height
        xa, xb = xlo + (x0 - bbox.x0) * sx, xlo + (x0 + width - bbox.x0) * sx
        ya, yb = ylo + (y0 - bbox.y0) * sy, ylo + (y0 + height - bbox.y0) * sy
        cx = _screen_to_data(self._x_edges, xa, xb, width)
        cy = _screen_to_data(self._y_edges, ya, yb, height)
        pri = self._priority
        rows0, cols0 = np.maximum(cy[0], 0), np.maximum(cx[0], 0)  # nearest pixels
        cols = None if pri is None else _choose(pri, *cx, axis=1)  # (ny, width) or None
        if cols is None:
            rows = None if pri is None else _choose(pri[:, cols0], *cy, axis=0)
            if rows is None:
                image = self._rgba32[rows0[:, None], cols0[None, :]]
            else:
                image = self._rgba32[rows, cols0[None, :]]
        else:
            # per data row the best pixel of each screen column's span, then per screen
            # column the best of those rows in each screen row's span
            rows = _choose(np.take_along_axis(pri, cols, axis=1), *cy, axis=0)
            if rows is None:
                image = self._rgba32[rows0[:, None], cols[rows0]]
            else:
                image = self._rgba32[rows, np.take_along_axis(cols, rows, axis=0)]
        image[cy[0] < 0, :] = 0  # outside the image: transparent
        image[:, cx[0] < 0] = 0
        image = image.view(np.uint8).reshape(height, width, 4)
        gc = renderer.new_gc()
        gc.set_clip_rectangle(bbox)
        # the Agg renderer takes the image with its first row at y0 (the bottom)
        renderer.draw_image(gc, x0, y0, image)
        gc.restore()
        self.stale = False
