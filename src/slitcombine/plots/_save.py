"""Writing a figure as a PNG file (:func:`save_figure`)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from slitcombine._atomic import atomic_path
from slitcombine.errors import OutputError
from slitcombine.plots._options import DEFAULT_DPI, PNG_COMPRESS_LEVEL

__all__ = ["save_figure"]


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
