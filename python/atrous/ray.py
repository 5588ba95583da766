"""Batch segmentation that scales out on Ray Data.

``segment(dataset, model=...)`` maps a Ray dataset of images — rows with an ``image`` column
(H x W x 3 uint8) or a ``path`` column (files decoded exactly as the CLI decodes them) — to class
maps with ``map_batches`` and a callable class: each actor builds one session for the model and
reuses it for every batch (pipelined on its device). On a cluster with GPU workers, pass
``num_gpus=1`` so each actor holds one GPU.
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from . import Model, load_image


class Segmenter:
    """One session per actor, reused for every batch."""

    def __init__(self, model: str, size: Optional[Tuple[int, int]] = None, device: Optional[str] = None):
        self.model = Model(model)
        self.session = self.model.session(size=size, device=device)

    def __call__(self, batch: dict) -> dict:
        if "image" in batch:
            images = list(batch["image"])
        elif "path" in batch:
            images = [load_image(p) for p in batch["path"]]
        else:
            raise KeyError("rows need an `image` (H x W x 3 uint8) or a `path` column")
        maps = self.session.segment_batch(images)
        out = {k: v for k, v in batch.items() if k != "image"}
        # class maps of different sizes: an object array (Ray stores variable-shaped tensors)
        arr = np.empty(len(maps), dtype=object)
        arr[:] = maps
        out["classes"] = arr
        return out


def segment(dataset, model: str, size: Optional[Tuple[int, int]] = None, concurrency: int = 1, num_gpus: float = 0, batch_size: int = 8, device: Optional[str] = None):
    """The dataset with a ``classes`` column (H x W uint8 per row; the ``image`` column dropped).

    ``concurrency`` actors each build one session of ``model`` (a file path or zoo name, resolved
    on the worker); ``num_gpus`` is reserved per actor."""
    return dataset.map_batches(
        Segmenter,
        fn_constructor_kwargs={"model": str(model), "size": size, "device": device},
        batch_size=batch_size,
        batch_format="numpy",
        concurrency=concurrency,
        num_gpus=num_gpus,
    )
