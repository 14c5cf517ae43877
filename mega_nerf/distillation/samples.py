"""Where the student is taught: the teacher's occupied space, and ray samples inside it.

Samples spread uniformly over a scene's bounding box are almost all in empty air above a city;
PVD marches rays through the teacher's occupancy bitfield instead.  A container trained without
occupancy grids has none, so the teacher's occupied space is measured here once by querying its
density on a grid (and intersected with the cells' own grids where they have them).  The same
grid seeds the student's occupancy grid, so the student starts rendering where the teacher has
content and is never asked about space the teacher culls.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from mega_nerf.geometry.bounds import ray_segments
from mega_nerf.partition.centroids import routing_weights
from mega_nerf.render.occupancy import OccupancyGrid
from mega_nerf.render.volume import OPAQUE_DELTA, occupied_samples


def density_threshold(aabb: torch.Tensor, candidates: int, alpha_threshold: float) -> float:
    """Density at which one candidate step (box diagonal / ``candidates``) is as opaque as
    ``alpha_threshold``: the trainer's rule for an empty occupancy cell."""
    step = float((aabb[1] - aabb[0]).norm()) / candidates
    return -math.log(1 - alpha_threshold) / step


@torch.no_grad()
def teacher_occupancy(teacher, aabb: torch.Tensor, resolution: int, threshold: float, passes: int = 2,
                      chunk: int = 2 ** 18, seed: int = 0) -> OccupancyGrid:
    """An occupancy grid of the teacher over ``aabb``: the maximum density of ``passes`` random
    points per cell (then grown by one cell, as in training).  Where the teacher's own cells have
    occupancy grids, space they cull stays empty: the teacher renders nothing there.

    Args:
        teacher: a Container (or SceneModel) with ``density(x)``; aabb: (2, 3).
    """
    device = teacher.centroids.device if hasattr(teacher, "centroids") else aabb.device
    grid = OccupancyGrid(aabb.to(device), resolution, decay=1.0).to(device)
    grid.density.zero_()

    def density(x: torch.Tensor) -> torch.Tensor:
        sigma = teacher.density(x).float()
        if getattr(teacher, "has_occupancy", False):
            sigma = torch.where(teacher.occupied(x), sigma, torch.zeros_like(sigma))
        return sigma

    # Seeded: the grid decides every sample, and a cached run must see the live run's grid.
    with torch.random.fork_rng(devices=[device] if torch.device(device).type == "cuda" else []):
        torch.manual_seed(seed)
        for _ in range(passes):
            grid.update(density, threshold, chunk)
    return grid


def region_filter(centroids: torch.Tensor, cells: Sequence[int] | None, cluster_2d: bool) -> Callable | None:
    """``(M, 3) -> (M,) bool``: the point's nearest centroid is one of ``cells`` (None: everywhere).

    ``cells`` are positions in ``centroids`` (not cell ids)."""
    if cells is None:
        return None
    wanted = torch.zeros(centroids.shape[0], dtype=torch.bool, device=centroids.device)
    wanted[list(cells)] = True

    def inside(x: torch.Tensor) -> torch.Tensor:
        nearest = routing_weights(x, centroids, 1.0, cluster_2d).argmax(1)
        return wanted[nearest]

    return inside


def ray_samples(rays_o: torch.Tensor, rays_d: torch.Tensor, bounds, occupied_fn: Callable, candidates: int,
                samples: int, has_background: bool, white_background: bool,
                region_fn: Callable | None = None) -> dict[str, torch.Tensor]:
    """Samples of each ray in occupied space, laid out as the renderer lays them out
    (:func:`mega_nerf.render.renderer.render_rays` with an occupancy grid): ``samples`` spread
    over the occupied candidates, then one sample at the end of the foreground segment, opaque
    for rays that stop at the ground.  With ``region_fn`` only samples inside the region are kept
    and the end sample only when it lies in the region.

    Args:
        rays_o, rays_d: (N, 3); occupied_fn: (M, 3) -> (M,) bool.
    Returns:
        z (N, S+1) depths, deltas (N, S+1) interval lengths (0 where invalid), valid (N, S+1) bool.
    """
    near, far, t_exit = ray_segments(rays_o, rays_d, bounds, has_background)
    fg_far = torch.minimum(far, torch.maximum(t_exit, near))
    open_end = torch.ones_like(near, dtype=torch.bool) if white_background else (
        (far > t_exit) if has_background else torch.zeros_like(near, dtype=torch.bool))

    def occupied(x: torch.Tensor) -> torch.Tensor:
        keep = occupied_fn(x)
        return keep & region_fn(x) if region_fn is not None else keep

    z, deltas, valid = occupied_samples(rays_o, rays_d, near, fg_far, occupied, candidates, samples, True)
    end_delta = torch.where(open_end, torch.zeros_like(fg_far), torch.full_like(fg_far, OPAQUE_DELTA))
    end_valid = torch.ones_like(valid[:, 0])
    if region_fn is not None:
        end_valid = region_fn(rays_o + rays_d * fg_far[:, None])
        end_delta = torch.where(end_valid, end_delta, torch.zeros_like(end_delta))
    return {"z": torch.cat([z, fg_far[:, None]], -1), "deltas": torch.cat([deltas, end_delta[:, None]], -1),
            "valid": torch.cat([valid, end_valid[:, None]], -1)}
