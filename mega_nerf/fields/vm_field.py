"""``vm``: TensoRF vector-matrix decomposition with a small decoder.

Density logit = sum over the three (plane, line) pairs and ranks of plane x line; the appearance
feature is a linear map of the concatenated plane x line products.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mega_nerf.fields.base import RadianceField

# (plane axes, line axis): XY with Z, XZ with Y, YZ with X.
_PAIRS = (((0, 1), 2), ((0, 2), 1), ((1, 2), 0))


def _sample_pairs(planes: nn.ParameterList, lines: nn.ParameterList, u: torch.Tensor) -> torch.Tensor:
    """Plane x line products for every pair and rank.

    Args:
        planes: 3 x (1, R, res, res); lines: 3 x (1, R, res, 1); u: (N, 3) in [0, 1].
    Returns:
        (N, 3 * R).
    """
    g = (u * 2 - 1).to(planes[0].dtype)
    out = []
    for (a, b), c in _PAIRS:
        plane_xy = g[:, [a, b]].reshape(1, -1, 1, 2)
        line_xy = torch.stack([torch.zeros_like(g[:, c]), g[:, c]], -1).reshape(1, -1, 1, 2)
        p = F.grid_sample(planes[len(out)], plane_xy, align_corners=True)[0, :, :, 0]  # (R, N)
        l = F.grid_sample(lines[len(out)], line_xy, align_corners=True)[0, :, :, 0]  # noqa: E741
        out.append((p * l).T)
    return torch.cat(out, -1)


class VMField(RadianceField):
    def __init__(self, aabb: torch.Tensor, appearance_count: int, appearance_dim: int = 48,
                 resolution: int = 300, density_rank: int = 16, appearance_rank: int = 48,
                 hidden_dim: int = 64, geo_feat_dim: int = 15, dir_frequencies: int = 4):
        super().__init__(aabb, appearance_count, appearance_dim, hidden_dim, geo_feat_dim, dir_frequencies)

        def factors(rank: int, scale: float) -> tuple[nn.ParameterList, nn.ParameterList]:
            planes = nn.ParameterList([nn.Parameter(scale * torch.randn(1, rank, resolution, resolution))
                                       for _ in _PAIRS])
            lines = nn.ParameterList([nn.Parameter(scale * torch.randn(1, rank, resolution, 1)) for _ in _PAIRS])
            return planes, lines

        self.density_planes, self.density_lines = factors(density_rank, 0.1)
        self.app_planes, self.app_lines = factors(appearance_rank, 0.1)
        self.basis_mat = nn.Linear(3 * appearance_rank, geo_feat_dim, bias=False)

    def geometry(self, u: torch.Tensor) -> torch.Tensor:
        sigma = _sample_pairs(self.density_planes, self.density_lines, u).sum(-1, keepdim=True)
        app = self.basis_mat(_sample_pairs(self.app_planes, self.app_lines, u))
        return torch.cat([sigma, app.to(sigma.dtype)], -1)
