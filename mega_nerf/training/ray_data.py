"""Which pixels a cell trains on, and rays rebuilt from stored pixel ids."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F

from mega_nerf.data.format import ImageMetadata
from mega_nerf.errors import UserError
from mega_nerf.geometry.rays import camera_directions, pixel_coordinates, world_rays
from mega_nerf.partition.masks import mask_path, read_mask


def left_half(H: int, W: int) -> torch.Tensor:
    """(H, W) bool, True on columns < W // 2 (the half of a val image Mega-NeRF trains on)."""
    keep = torch.zeros(H, W, dtype=torch.bool)
    keep[:, : W // 2] = True
    return keep


def resized_mask(mask: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """Nearest-neighbour resize of a full-resolution mask to the training scale."""
    if tuple(mask.shape) == (H, W):
        return mask
    return F.interpolate(mask[None, None].float(), size=(H, W), mode="nearest")[0, 0].bool()


def select_val_pixels(mask: Optional[torch.Tensor], H: int, W: int, all_val: bool, seed: int) -> torch.Tensor:
    """Training pixels of a validation image under Mega-NeRF's protocol.

    Only the left half is trained.  When a cell mask reaches into the right half, as many random
    unmasked left-half pixels are added instead so the image's appearance embedding still sees
    the same number of pixels in this cell (Mega-NeRF's count-preserving rule).

    Returns:
        (H, W) bool.
    """
    left = left_half(H, W)
    if mask is None or all_val:
        return left
    keep = mask & left
    missing = int((mask & ~left).sum())
    candidates = torch.nonzero((left & ~mask).reshape(-1)).reshape(-1)
    if missing and len(candidates):
        g = torch.Generator().manual_seed(seed)
        extra = candidates[torch.randperm(len(candidates), generator=g)[:missing]]
        keep = keep.reshape(-1).clone()
        keep[extra] = True
        keep = keep.reshape(H, W)
    return keep


def pixel_selector(mask_root: Optional[Path], cell: Optional[int], val_protocol: str, all_val: bool,
                   full_sizes: dict) -> Callable[[ImageMetadata], Optional[torch.Tensor]]:
    """Per image (at training scale) the flat bool of pixels this run trains on (None: none).

    Args:
        mask_root: the mask folder (parent of ``<cell>/``) or None to train on every pixel.
        full_sizes: stem -> (H, W) at full resolution, to check mask shapes.
    """

    def select(item: ImageMetadata) -> Optional[torch.Tensor]:
        mask = None
        if mask_root is not None:
            mask = read_mask(mask_path(mask_root, cell, item.stem))
            if tuple(mask.shape) != tuple(full_sizes[item.stem]):
                raise UserError(f"{mask_path(mask_root, cell, item.stem)}: mask is {tuple(mask.shape)} but the "
                                f"image is {full_sizes[item.stem]}; the masks belong to another dataset")
            mask = resized_mask(mask, item.H, item.W)
        if item.split == "val":
            if val_protocol == "held_out":
                return None
            return select_val_pixels(mask, item.H, item.W, all_val, item.image_index).reshape(-1)
        if mask is None:  # whole-scene training: every pixel of a training image
            return torch.ones(item.H * item.W, dtype=torch.bool)
        return mask.reshape(-1)

    return select


class RayTable:
    """Per-image poses and intrinsics on the device; rebuilds rays from global pixel ids.

    Args:
        items: images at the training scale in appearance-index order (the chunk id space).
    """

    def __init__(self, items: Sequence[ImageMetadata], device: torch.device, center_pixels: bool):
        self.device = device
        self.center_pixels = center_pixels
        self.c2w = torch.stack([m.c2w for m in items]).to(device)
        self.intrinsics = torch.stack([m.intrinsics for m in items]).to(device)
        self.width = torch.tensor([m.W for m in items], device=device)
        sizes = torch.tensor([m.W * m.H for m in items], device=device)
        self.offsets = torch.cat([torch.zeros(1, dtype=torch.long, device=device), sizes.cumsum(0)])
        self.image_indices = torch.tensor([m.image_index for m in items], device=device)

    def rays(self, global_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """
        Args:
            global_ids: (N,) int64.
        Returns:
            rays_o (N, 3), rays_d (N, 3), appearance index (N,) int64.
        """
        global_ids = global_ids.to(self.device)
        image = torch.searchsorted(self.offsets, global_ids, right=True) - 1
        i, j = pixel_coordinates(global_ids - self.offsets[image], self.width[image])
        dirs = camera_directions(i, j, self.intrinsics[image], self.center_pixels)
        rays_o, rays_d = world_rays(self.c2w[image], dirs)
        return rays_o, rays_d, self.image_indices[image]
