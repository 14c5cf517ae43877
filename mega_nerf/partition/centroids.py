"""Centroid grid over the camera footprint (Mega-NeRF §2.2)."""
from __future__ import annotations

import torch


def grid_centroids(camera_positions: torch.Tensor, grid_dim: tuple[int, int]) -> torch.Tensor:
    """Uniform grid of cell centres over the cameras' (right, back) extent at altitude 0.

    Args:
        camera_positions: (N, 3) normalised DRB camera centres.
        grid_dim: (GX, GY): cells along Right (axis 1) and Back (axis 2).
    Returns:
        (GX * GY, 3) centroids; flat index ``i * GY + j``, x (altitude) = 0.
    """
    gx, gy = grid_dim
    min_p = camera_positions.min(0).values
    max_p = camera_positions.max(0).values
    span = max_p - min_p
    off_1 = torch.arange(gx, dtype=torch.float32) * span[1] / gx + span[1] / (2 * gx)
    off_2 = torch.arange(gy, dtype=torch.float32) * span[2] / gy + span[2] / (2 * gy)
    cy, cz = torch.meshgrid(min_p[1] + off_1, min_p[2] + off_2, indexing="ij")
    return torch.stack([torch.zeros_like(cy), cy, cz], dim=-1).reshape(-1, 3)


#: How cells are weighted in the band where several answer (``--blend_weights``).
BLEND_WEIGHTS = ("inverse_distance", "tapered")


def routing_weights(points: torch.Tensor, centroids: torch.Tensor, boundary_margin: float,
                    cluster_2d: bool, tapered: bool = False) -> torch.Tensor:
    """Blending weights of points over cells.

    A cell takes part when its centroid is within ``boundary_margin`` times the nearest
    centroid's distance ``d_min``.  Mega-NeRF's weights (``tapered`` False) are ``1/d`` normalised
    over the cells that take part: a cell's weight jumps from about ``1/(1 + margin)`` to 0 where
    it leaves the band, so any disagreement between the cells shows as a step there.  ``tapered``
    weights are ``1/d - 1/(margin * d_min)``, normalised: the same band and the same order of
    weights, but each cell's weight falls continuously to 0 at the band's edge, so the blend has no
    step anywhere.  With ``boundary_margin == 1`` both are hard nearest-centroid routing.

    Args:
        points: (N, 3).
        centroids: (K, 3).
    Returns:
        (N, K) weights summing to 1 per point.
    """
    c = 1 if cluster_2d else 0
    dist = torch.cdist(points[:, c:].float(), centroids[:, c:].float())
    nearest = dist.min(dim=1, keepdim=True).values
    if boundary_margin <= 1:
        weights = torch.zeros_like(dist)
        weights.scatter_(1, dist.argmin(dim=1, keepdim=True), 1.0)
        return weights
    inv = 1.0 / (dist + 1e-8)
    if tapered:  # > 0 for the nearest cell: 1/d_min * (1 - 1/margin)
        inv = (inv - 1.0 / (boundary_margin * nearest + 1e-8)).clamp(min=0)
    else:
        inv = torch.where(dist <= boundary_margin * nearest, inv, torch.zeros_like(dist))
    return inv / inv.sum(dim=1, keepdim=True)
