"""An Agg canvas whose renderer keeps the text it has drawn, for the package's figures.

matplotlib lays out and rasterises every string each time a figure is drawn: a text
shaping pass to measure it and one FreeType rendering per glyph to draw it, ~1 ms per
label, a third of the drawing time of the summary figure.  The labels of successive
figures are mostly the same strings ("wavelength (um)", "0", "10", "x (pixel)", the
legend ...), so :class:`TextCacheRenderer` keeps, for each string, font, size, angle and
resolution, its size (what layout asks for) and its anti-aliased coverage mask, drawn
once by Agg itself into a small scratch canvas.  Drawing a known string is then one
blit of that mask in the text's colour (``draw_image``), at the nearest whole pixel
(matplotlib positions glyphs to 1/64 pixel: a label may move by up to half a pixel).

Both caches are bounded (:data:`MAX_ENTRIES` each: a few hundred kB) and shared by the
figures of a process.  Mathtext, TeX and text with OpenType features or a language set
take matplotlib's own path.  Imported only when a figure is drawn.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg, RendererAgg

__all__ = ["TextCacheCanvas", "TextCacheRenderer", "MAX_ENTRIES", "clear_text_cache"]

#: Strings kept per cache (least recently used dropped first).
MAX_ENTRIES = 1024

_lock = threading.Lock()
_metrics = OrderedDict()
_masks = OrderedDict()


def clear_text_cache():
    """Forget every string measured or drawn so far (both caches)."""
    with _lock:
        _metrics.clear()
        _masks.clear()


def _font_key(prop):
    """Everything of a :class:`~matplotlib.font_manager.FontProperties` that shapes text."""
    return (
        tuple(prop.get_family()),
        prop.get_style(),
        prop.get_variant(),
        prop.get_weight(),
        prop.get_stretch(),
        prop.get_size_in_points(),
        prop.get_file(),
        prop.get_math_fontfamily(),
    )


def _get(cache, key):
    with _lock:
        value = cache.get(key)
        if value is not None:
            cache.move_to_end(key)
        return value


def _put(cache, key, value):
    with _lock:
        cache[key] = value
        while len(cache) > MAX_ENTRIES:
            cache.popitem(last=False)
    return value


def _plain(mtext):
    """True unless the text asks for OpenType features or a language (not in the key)."""
    for getter in ("get_fontfeatures", "get_language"):
        get = getattr(mtext, getter, None)
        if get is not None and get() is not None:
            return False
    return True


class TextCacheRenderer(RendererAgg):
    """:class:`~matplotlib.backends.backend_agg.RendererAgg` that reuses measured and
    rasterised strings (see the module notes)."""

    def get_text_width_height_descent(self, s, prop, ismath):
        """Width, height and descent of ``s`` in pixels (cached for plain text)."""
        if ismath:
            return super().get_text_width_height_descent(s, prop, ismath)
        key = (s, _font_key(prop), self.dpi)
        value = _get(_metrics, key)
        if value is None:
            value = _put(_metrics, key, super().get_text_width_height_descent(s, prop, ismath))
        return value

    def _mask(self, s, prop, angle, antialiased, mtext):
        """``(coverage, dx, dy)``: the uint8 mask of ``s`` (first row at the top) and the
        offset of its top-left pixel from the text's anchor (pixels, y downwards); None
        for a string that draws nothing."""
        key = (s, _font_key(prop), self.dpi, float(angle), bool(antialiased))
        value = _get(_masks, key)
        if value is not None:
            return value
        width, height, _ = self.get_text_width_height_descent(s, prop, False)
        margin = int(np.ceil(max(width, height))) + 4
        size = 2 * margin + 1
        scratch = RendererAgg(size, size, self.dpi)
        gc = scratch.new_gc()
        gc.set_foreground((0.0, 0.0, 0.0, 1.0))
        gc.set_antialiased(antialiased)
        RendererAgg.draw_text(scratch, gc, margin, margin, s, prop, angle, False, mtext)
        gc.restore()
        coverage = np.asarray(scratch.buffer_rgba())[..., 3]
        rows = np.flatnonzero(coverage.any(axis=1))
        cols = np.flatnonzero(coverage.any(axis=0))
        if rows.size == 0:
            return _put(_masks, key, (None, 0, 0))
        # the anchor's row counted from the top of the scratch canvas
        anchor = margin if scratch.flipy() else size - margin
        crop = coverage[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1].copy()
        return _put(_masks, key, (crop, int(cols[0]) - margin, int(rows[0]) - anchor))

    def draw_text(self, gc, x, y, s, prop, angle, ismath=False, mtext=None):
        """Draw ``s`` with its anchor at ``x, y`` (a cached mask for plain text)."""
        if ismath or not _plain(mtext):
            return super().draw_text(gc, x, y, s, prop, angle, ismath, mtext)
        coverage, dx, dy = self._mask(s, prop, angle, gc.get_antialiased(), mtext)
        if coverage is None:
            return None
        rgba = gc.get_rgb()  # its alpha: the text's own if set, else the colour's
        alpha = float(rgba[3]) if len(rgba) == 4 else float(gc.get_alpha())
        image = np.empty(coverage.shape + (4,), np.uint8)
        image[..., :3] = np.round(np.clip(rgba[:3], 0.0, 1.0) * 255.0).astype(np.uint8)
        if alpha >= 1.0:
            image[..., 3] = coverage
        else:
            image[..., 3] = (coverage * alpha + 0.5).astype(np.uint8)
        top = (round(y) if self.flipy() else round(self.height - y)) + dy
        # draw_image takes the bottom-left corner (y upwards) and the bottom row first;
        # the alpha is in the image (a context alpha is not applied alike by all versions)
        opaque = self.new_gc()
        opaque.copy_properties(gc)
        opaque.set_alpha(1.0)
        bottom = self.height - top - coverage.shape[0]
        self.draw_image(opaque, round(x) + dx, bottom, image[::-1])
        opaque.restore()
        return None


class TextCacheCanvas(FigureCanvasAgg):
    """:class:`~matplotlib.backends.backend_agg.FigureCanvasAgg` drawing with a
    :class:`TextCacheRenderer`."""

    def get_renderer(self, *args, **kwargs):
        """The canvas's renderer (a :class:`TextCacheRenderer`)."""
        renderer = super().get_renderer(*args, **kwargs)
        if type(renderer) is RendererAgg:  # a new one: teach it the cache
            renderer.__class__ = TextCacheRenderer
        return renderer
