"""A nearest-neighbour RGBA image that fills its axes, drawn as one blit.

matplotlib's :class:`~matplotlib.image.AxesImage` resamples through a general
floating-point pipeline (masking, affine resampling, alpha handling): for the ~100 x 400
pixel images of the nod-difference figure that is ~8 ms and ~3 MB of temporaries per
image.  :class:`PixelImage` maps every screen pixel of the axes to the data pixel under
its centre with two integer index arrays and hands the uint8 result to the renderer's
``draw_image`` (a copy into the Agg buffer).  Imported only when a figure is drawn.
"""

from __future__ import annotations

import numpy as np
from matplotlib.artist import Artist

__all__ = ["PixelImage"]


class PixelImage(Artist):
    """RGBA image covering the whole data range of its axes (``origin='lower'``).

    Parameters
    ----------
    ax : matplotlib.axes.Axes
        The axes; its limits must be ``(-0.5, nx - 0.5)`` and ``(-0.5, ny - 0.5)``.
    rgba : numpy.ndarray
        ``(ny, nx, 4)`` uint8 colours, row 0 at the bottom.
    """

    zorder = 0

    def __init__(self, ax, rgba):
        super().__init__()
        self._rgba = np.asarray(rgba, np.uint8)
        self.set_figure(ax.get_figure(root=False))
        self.axes = ax

    def get_array(self):
        """The ``(ny, nx, 4)`` uint8 colours (row 0 at the bottom)."""
        return self._rgba

    def draw(self, renderer):
        """Blit the image into the axes rectangle (nearest data pixel per screen pixel)."""
        if not self.get_visible():
            return
        bbox = self.axes.bbox
        x0, y0 = int(np.floor(bbox.x0)), int(np.floor(bbox.y0))
        width, height = int(np.ceil(bbox.x1)) - x0, int(np.ceil(bbox.y1)) - y0
        if width <= 0 or height <= 0:
            return
        ny, nx = self._rgba.shape[:2]
        rows = np.minimum(((np.arange(height) + 0.5) * ny / height).astype(np.intp), ny - 1)
        cols = np.minimum(((np.arange(width) + 0.5) * nx / width).astype(np.intp), nx - 1)
        # the Agg renderer takes the image with its first row at y0 (the bottom)
        image = self._rgba[rows[:, None], cols[None, :]]
        gc = renderer.new_gc()
        gc.set_clip_rectangle(bbox)
        renderer.draw_image(gc, x0, y0, image)
        gc.restore()
        self.stale = False
