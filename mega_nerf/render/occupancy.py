"""Occupancy grid: which cells of the foreground box hold density, so samples skip empty space.

A dense grid of ``resolution`` cells per axis over the field's box keeps an exponential moving
maximum of the density sampled at a random point of each cell (Instant-NGP's update) and marks as
occupied the cells above a threshold.  Before the first update every cell is occupied, so nothing is culled
while the field is still empty.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import nn


class OccupancyGrid(nn.Module):
    """Args:
        aabb: (2, 3) [lo, hi] of the box the grid covers.
        resolution: cells per axis, one number (cubic grid) or three (x, y, z).
        keep_density: save the density estimate with the grid (training refreshes it); a grid
            only rendered through (a distilled student's) keeps just its occupied set.
        empty_outside: points outside the box are empty (a grid fitted to the occupied space)
            instead of occupied (a grid over a field's whole box: never cull what it cannot see).
    """

    def __init__(self, aabb: torch.Tensor, resolution: int | Sequence[int] = 128, decay: float = 0.95,
                 keep_density: bool = True, empty_outside: bool = False):
        super().__init__()
        self.empty_outside = empty_outside
        self.shape = (int(resolution),) * 3 if isinstance(resolution, int) else tuple(int(r) for r in resolution)
        if len(self.shape) != 3 or min(self.shape) < 1:
            raise ValueError(f"occupancy resolution {resolution}: expected one or three positive numbers")
        self.decay = decay
        cells = math.prod(self.shape)
        self.register_buffer("aabb", aabb.float().reshape(2, 3))
        self.register_buffer("density", torch.zeros(cells), persistent=keep_density)
        self.register_buffer("occupied", torch.ones(cells, dtype=torch.bool))
        self.register_buffer("_cells_per_axis", torch.tensor(self.shape, dtype=torch.float32), persistent=False)

    @property
    def cell_count(self) -> int:
        return self.occupied.numel()

    def cell_index(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 3) points -> flat cell index (N,) and whether the point is inside the box (N,)."""
        u = (x - self.aabb[0]) / (self.aabb[1] - self.aabb[0])
        inside = ((u >= 0) & (u <= 1)).all(-1)
        ijk = torch.minimum(u.clamp(0, 1) * self._cells_per_axis, self._cells_per_axis - 1).long()
        _, ry, rz = self.shape
        return (ijk[:, 0] * ry + ijk[:, 1]) * rz + ijk[:, 2], inside

    def occupied_at(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3) -> (N,) bool; points outside the box count as occupied (never culled) unless
        ``empty_outside``."""
        index, inside = self.cell_index(x)
        if self.empty_outside:
            return self.occupied[index] & inside
        return self.occupied[index] | ~inside

    def cell_ijk(self, cells: torch.Tensor) -> torch.Tensor:
        """(M,) flat cell indices -> (M, 3) integer cell coordinates."""
        _, ry, rz = self.shape
        return torch.stack([cells // (ry * rz), (cells // rz) % ry, cells % rz], -1)

    def cell_points(self, cells: torch.Tensor) -> torch.Tensor:
        """A uniformly random point inside each of the given flat cells: (M,) -> (M, 3)."""
        ijk = self.cell_ijk(cells).float()
        u = (ijk + torch.rand_like(ijk)) / self._cells_per_axis
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
        cells = torch.arange(self.cell_count, device=self.density.device)
        fresh = torch.empty_like(self.density)
        for start in range(0, len(cells), chunk):
            part = cells[start:start + chunk]
            fresh[part] = density_fn(self.cell_points(part)).float()
        self.density.copy_(torch.maximum(self.density * self.decay, fresh))
        dense = self.density > min(threshold, float(self.density.mean()))
        self.occupied.copy_(self.grown_by_one_cell(dense))

    def grown_by_one_cell(self, cells: torch.Tensor) -> torch.Tensor:
        """(cells,) bool -> the same set and every cell touching it.

        Occupied sets are grown so: the density a field has learned can sit a cell away from where
        the surface will end up (and a surface on a cell face touches both cells).
        """
        grown = torch.nn.functional.max_pool3d(cells.reshape(1, 1, *self.shape).float(), 3, stride=1, padding=1)
        return grown.reshape(-1) > 0

    def occupied_fraction(self) -> float:
        return float(self.occupied.float().mean())
