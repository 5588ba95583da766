"""atrous: GPU semantic segmentation on wgpu, from Python.

    import atrous, numpy as np
    model = atrous.Model("../shared/models/espnet_camvid.safetensors")   # a file or a zoo name
    session = model.session()
    classes = session.segment(image)         # H x W x 3 uint8 array (or a Pillow image) -> H x W uint8

The device work runs with the GIL released. Errors are ``atrous.ModelError``, ``atrous.ImageError``
and ``atrous.DeviceError`` (all ``atrous.AtrousError``), with the same messages as the CLI.
"""

from __future__ import annotations

import os
from typing import Iterable, List, Sequence, Tuple, Union

import numpy as np

from . import _atrous
from ._atrous import AtrousError, DeviceError, ImageError, ModelError

__version__ = _atrous.__version__
__all__ = ["Model", "Session", "AtrousError", "ModelError", "ImageError", "DeviceError", "load_image", "save_palette_png"]


def _rgb(image) -> Tuple[int, int, bytes]:
    """(h, w, bytes) of an H x W x 3 uint8 array or a Pillow image; one copy at most."""
    if hasattr(image, "convert") and hasattr(image, "size") and not isinstance(image, np.ndarray):
        image = np.asarray(image.convert("RGB"))
    a = np.asarray(image)
    if a.ndim != 3 or a.shape[2] != 3:
        raise ImageError(f"an image must be H x W x 3 (RGB), got shape {a.shape}")
    if a.dtype != np.uint8:
        raise ImageError(f"an image must be uint8, got {a.dtype}")
    a = np.ascontiguousarray(a)
    return a.shape[0], a.shape[1], a.tobytes()


class Session:
    """Sessions of one model on one device (one per run size, built on first use)."""

    def __init__(self, inner, model: "Model"):
        self._s = inner
        self.model = model

    @property
    def device(self) -> str:
        return self._s.device

    def segment(self, image) -> np.ndarray:
        """The class map (H x W uint8) of an H x W x 3 uint8 image, at the image's size."""
        h, w, b = _rgb(image)
        return np.frombuffer(self._s.segment(h, w, b), dtype=np.uint8).reshape(h, w)

    def logits(self, image) -> Tuple[np.ndarray, np.ndarray]:
        """(class map H x W, logits C x h x w float32 at the size the model ran at)."""
        h, w, b = _rgb(image)
        m, l, shape = self._s.logits(h, w, b)
        return np.frombuffer(m, dtype=np.uint8).reshape(h, w), np.frombuffer(l, dtype=np.float32).reshape(shape)

    def probabilities(self, image) -> Tuple[np.ndarray, np.ndarray]:
        """(class map H x W, probabilities C x h x w float32: softmax, or the sigmoid for one channel)."""
        h, w, b = _rgb(image)
        m, p, shape = self._s.probabilities(h, w, b)
        return np.frombuffer(m, dtype=np.uint8).reshape(h, w), np.frombuffer(p, dtype=np.float32).reshape(shape)

    def segment_batch(self, images: Iterable) -> List[np.ndarray]:
        """Class maps of many images, in order, through the pipelined path."""
        items = [_rgb(im) for im in images]
        maps = self._s.segment_batch(items)
        return [np.frombuffer(m, dtype=np.uint8).reshape(h, w) for m, (h, w, _) in zip(maps, items)]


class Model:
    """A model: a safetensors file (any architecture atrous recognises) or a zoo name."""

    def __init__(self, path_or_name: Union[str, "os.PathLike[str]"]):
        self._m = _atrous.Model(str(path_or_name))

    @property
    def name(self) -> str:
        return self._m.name

    @property
    def architecture(self) -> str:
        return self._m.architecture

    @property
    def classes(self) -> List[str]:
        return self._m.classes

    @property
    def palette(self) -> List[Tuple[int, int, int]]:
        return self._m.palette

    @property
    def size_rule(self):
        """("multiple_of", m) or ("fixed", (h, w))."""
        return self._m.size_rule

    @property
    def parameters(self) -> int:
        return self._m.parameters

    def input_size(self, h: int, w: int) -> Tuple[int, int]:
        """The (height, width) an h x w image runs at."""
        return self._m.input_size(h, w)

    def session(self, size: Union[Tuple[int, int], None] = None, precision: str = "f32", device: Union[str, None] = None, crf: Union[str, None] = None) -> Session:
        return Session(self._m.session(size, precision, device, crf), self)

    def __repr__(self) -> str:
        return repr(self._m)


def load_image(path: str) -> np.ndarray:
    """An image file as H x W x 3 uint8, decoded as the CLI decodes it."""
    h, w, b = _atrous.load_image(str(path))
    return np.frombuffer(b, dtype=np.uint8).reshape(h, w, 3)


def save_palette_png(path: str, classes: np.ndarray, palette: Sequence[Tuple[int, int, int]]) -> None:
    """Writes a class map as an 8-bit palette PNG exactly as `atrous segment` does."""
    a = np.ascontiguousarray(classes, dtype=np.uint8)
    if a.ndim != 2:
        raise ImageError(f"a class map is H x W, got shape {a.shape}")
    _atrous.save_palette_png(str(path), a.shape[0], a.shape[1], a.tobytes(), list(palette))

