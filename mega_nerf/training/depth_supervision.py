"""Sparse depth supervision from structure-from-motion tracks (``--depth_loss_weight``, DS-NeRF style).

The importer writes ``{train,val}/sparse_depth/<stem>.pt`` for COLMAP sources (see
:mod:`mega_nerf.data.importers.writer`).  A training run gathers the observations of its
training images (only the ``train`` split; within a cell's mask when cluster masks are used) once,
as a sorted tensor of global pixel ids (the chunk id space of :class:`~.ray_data.RayTable`) with
a target depth and a weight each:

* a batch's pixels that have an observation are found with ``torch.searchsorted``;
* ``--depth_rays_per_batch`` more observed pixels are drawn each step (with replacement, so
  shapes stay fixed) and rendered with the batch, for the depth loss only.

Target: the distance along the unit ray through the observation's pixel (the ray training casts,
through the pixel centre unless ``--no_center_pixels``) at which it reaches the point's depth
along the viewing axis, ``z * |direction|`` with ``direction``'s axis component 1; this is what
``render_rays``'s ``depth`` estimates (expected distance along the unit ray, normalised units).

Loss (:func:`depth_loss`): a Huber (smooth L1, ``HUBER_BETA``) on the relative error
``(rendered - target) / target``, weighted by the observation's weight, summed and divided by
the number of supervised rays of the step.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Sequence

import torch

from mega_nerf.data.format import ImageMetadata
from mega_nerf.errors import UserError
from mega_nerf.geometry.rays import camera_directions

DEPTH_FOLDER = "sparse_depth"
#: Relative depth error below which the loss is quadratic (5 %), linear above (robust to bad points).
HUBER_BETA = 0.05


def depth_file(dataset_path: Path, item: ImageMetadata) -> Path:
    return Path(dataset_path) / item.split / DEPTH_FOLDER / f"{item.stem}.pt"


def depth_loss(rendered: torch.Tensor, target: torch.Tensor, weight: torch.Tensor,
               count: torch.Tensor | float) -> torch.Tensor:
    """``sum(weight * huber((rendered - target) / target)) / count``; rays with weight 0 add nothing.

    Args:
        rendered, target, weight: (N,); target > 0 where weight > 0.
        count: the number of supervised rays (clamped to >= 1).
    """
    safe = torch.where(weight > 0, target, torch.ones_like(target))
    relative = (rendered.float() - safe) / safe
    per_ray = torch.nn.functional.smooth_l1_loss(relative, torch.zeros_like(relative), reduction="none",
                                                 beta=HUBER_BETA)
    count = torch.as_tensor(count, dtype=per_ray.dtype, device=per_ray.device).clamp_min(1)
    return (weight * per_ray).sum() / count


class DepthObservations:
    """Observed pixels of one training run, sorted by global pixel id.

    Attributes:
        ids: (M,) int64 sorted unique global pixel ids; depth: (M,) float32 target distance along
        the unit ray (normalised); weight: (M,) float32.
    """

    def __init__(self, ids: torch.Tensor, depth: torch.Tensor, weight: torch.Tensor):
        self.ids, self.depth, self.weight = ids, depth, weight

    def __len__(self) -> int:
        return int(self.ids.numel())

    @staticmethod
    def available(dataset_path: Path, items: Sequence[ImageMetadata]) -> bool:
        return any(depth_file(dataset_path, m).is_file() for m in items if m.split == "train")

    @classmethod
    def load(cls, dataset_path: Path, items: Sequence[ImageMetadata],
             select: Optional[Callable[[ImageMetadata], Optional[torch.Tensor]]], center_pixels: bool,
             device: torch.device) -> "DepthObservations":
        """Gather the training images' observations.

        Args:
            items: images at the training scale in appearance-index order (the chunk id space).
            select: the run's :func:`~.ray_data.pixel_selector` (observations outside the pixels the run
                trains on, e.g. outside the cell's mask, are left out), or None for every pixel.
        Raises:
            UserError: no training image has observations.
        """
        if not cls.available(dataset_path, items):
            raise UserError(f"--depth_loss_weight needs sparse depth observations, but {dataset_path} has none "
                            f"(no train/{DEPTH_FOLDER}/); re-import with scripts/prepare_dataset.py from a COLMAP "
                            f"model (--colmap or --images)")
        ids, depths, weights = [], [], []
        offset = 0
        for item in items:
            path = depth_file(dataset_path, item)
            if item.split == "train" and path.is_file():
                obs = torch.load(path, map_location="cpu", weights_only=False)
                sx, sy = item.W / obs["W"], item.H / obs["H"]
                x, y = obs["xy"][:, 0].double() * sx, obs["xy"][:, 1].double() * sy
                if center_pixels:
                    i, j = x.floor(), y.floor()
                else:  # rays through pixel corners: the nearest corner
                    i, j = x.round(), y.round()
                i, j = i.clamp(0, item.W - 1).long(), j.clamp(0, item.H - 1).long()
                direction = camera_directions(i, j, item.intrinsics, center_pixels)
                depth = obs["z"].float() * direction.norm(dim=-1)
                flat = j * item.W + i
                keep = (obs["weight"] > 0) & (depth > 0)
                if select is not None:
                    chosen = select(item)
                    keep &= torch.zeros(len(flat), dtype=torch.bool) if chosen is None else chosen[flat]
                ids.append(offset + flat[keep])
                depths.append(depth[keep])
                weights.append(obs["weight"][keep].float())
            offset += item.W * item.H
        ids = torch.cat(ids) if ids else torch.zeros(0, dtype=torch.long)
        depth = torch.cat(depths) if depths else torch.zeros(0)
        weight = torch.cat(weights) if weights else torch.zeros(0)
        # One observation per pixel (several points can fall in one pixel at a coarse scale): the
        # most confident one.
        order = torch.argsort(weight, descending=True, stable=True)
        ids, depth, weight = ids[order], depth[order], weight[order]
        order = torch.argsort(ids, stable=True)
        ids, depth, weight = ids[order], depth[order], weight[order]
        first = torch.ones(len(ids), dtype=torch.bool)
        first[1:] = ids[1:] != ids[:-1]
        return cls(ids[first].to(device), depth[first].to(device), weight[first].to(device))

    def lookup(self, global_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(target (N,), weight (N,))`` of a batch's pixels; weight 0 where a pixel has no observation."""
        global_ids = global_ids.to(self.ids.device)
        pos = torch.searchsorted(self.ids, global_ids).clamp_max(len(self.ids) - 1)
        hit = self.ids[pos] == global_ids
        return torch.where(hit, self.depth[pos], torch.ones_like(self.depth[pos])), self.weight[pos] * hit

    def sample(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``n`` observations drawn uniformly with replacement: ``(ids, target, weight)``."""
        pick = torch.randint(0, len(self.ids), (n,), generator=generator).to(self.ids.device)
        return self.ids[pick], self.depth[pick], self.weight[pick]
