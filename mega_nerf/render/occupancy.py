"""Occupancy grid: which cells of the foreground box hold density, so samples skip empty space.

A dense ``resolution^3`` grid over the field's box keeps an exponential moving maximum of the
density sampled at a random point of each cell (Instant-NGP's update) and marks as occupied the
cells above a threshold.  Before the first update every cell is occupied, so nothing is culled
while the field is still empty.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn


class OccupancyGrid(nn.Module):
    def __init__(self, aabb: torch.Tensor, resolution: int = 128, decay: float = 0.95):
        super().__init__()
        self.resolution = resolution
        self.decay = decay
        self.register_buffer("aabb", aabb.float().reshape(2, 3))
        self.register_buffer("density", torch.zeros(resolution ** 3))
        self.register_buffer("occupied", torch.ones(resolution ** 3, dtype=torch.bool))

    def cell_index(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 3) points -> flat cell index (N,) and whether the point is inside the box (N,)."""
        u = (x - self.aabb[0]) / (self.aabb[1] - self.aabb[0])
        inside = ((u >= 0) & (u <= 1)).all(-1)
        ijk = (u.clamp(0, 1) * self.resolution).long().clamp_max(self.resolution - 1)
        return (ijk[:, 0] * self.resolution + ijk[:, 1]) * self.resolution + ijk[:, 2], inside

    def occupied_at(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3) -> (N,) bool; points outside the box count as occupied (never culled)."""
        index, inside = self.cell_index(x)
        return self.occupied[index] | ~inside

    def cell_points(self, cells: torch.Tensor) -> torch.Tensor:
        """A uniformly random point inside each of the given flat cells: (M,) -> (M, 3)."""
        r = self.resolution
        ijk = torch.stack([cells // (r * r), (cells // r) % r, cells % r], -1).float()
        u = (ijk + torch.rand_like(ijk)) / r
        return self.aabb[0] + u * (self.aabb[1] - self.aabb[0])

    @torch.no_grad()
    def update(self, density_fn: Callable[[torch.Tensor], torch.Tensor], threshold: float,
               chunk: int = 2 ** 18) -> None:
        """Re-sample every cell's density and refresh the occupied set.

        Args:
            density_fn: (M, 3) points -> (M,) density.
            threshold: density under which a cell is empty (the mean density caps it, so a
                field that is dim everywhere keeps its densest cells).
        """
        cells = torch.arange(self.resolution ** 3, device=self.density.device)
        fresh = torch.empty_like(self.density)
        for start in range(0, len(cells), chunk):
            part = cells[start:start + chunk]
            fresh[part] = density_fn(self.cell_points(part)).float()
        self.density.copy_(torch.maximum(self.density * self.decay, fresh))
        dense = self.density > min(threshold, float(self.density.mean()))
        self.occupied.copy_(self.grown_by_one_cell(dense))

    def grown_by_one_cell(self, cells: torch.Tensor) -> torch.Tensor:
        """(resolution^3,) bool -> the same set and every cell touching it.

        Occupied sets are grown so: the density a field has learned can sit a cell away from where
        the surface will end up (and a surface on a cell face touches both cells).
        """
        r = self.resolution
        grown = torch.nn.functional.max_pool3d(cells.reshape(1, 1, r, r, r).float(), 3, stride=1, padding=1)
        return grown.reshape(-1) > 0

    def occupied_fraction(self) -> float:
        return float(self.occupied.float().mean())
