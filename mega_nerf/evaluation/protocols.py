"""Validation protocols: which pixels of a validation image are trained, which are scored, and
which appearance embedding renders it.

* ``mega_nerf`` (Mega-NeRF's): the left half of each validation image is trained (that is how its
  appearance embedding is learned); only the right half is scored.
* ``held_out``: validation images are never trained; the whole image is scored, rendered with the
  appearance embedding of the nearest training camera.
"""
from __future__ import annotations

import torch

from mega_nerf.data.format import ImageMetadata, PosedDataset

DESCRIPTIONS = {
    "mega_nerf": "Mega-NeRF protocol: left half of each validation image trained, right half scored",
    "held_out": "held-out protocol: validation images never trained, whole image scored",
}


def appearance_index(dataset: PosedDataset, item: ImageMetadata, protocol: str) -> int:
    """The appearance embedding a validation image is rendered with."""
    if protocol == "mega_nerf":
        return item.image_index
    positions = torch.stack([m.c2w[:, 3] for m in dataset.train])
    nearest = (positions - item.c2w[:, 3]).norm(dim=-1).argmin()
    return dataset.train[int(nearest)].image_index
