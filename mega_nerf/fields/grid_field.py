"""``grid``: a dense voxel grid (Plenoxels-like), with spherical-harmonic or small-decoder colour.

Channel 0 is the density logit; the rest are either ``geo_feat_dim`` features for the shared
colour decoder (``color_mode='mlp'``) or 3 x 9 spherical-harmonic coefficients of degree 2
(``color_mode='sh'``, no network at all: rgb = sigmoid(SH(d) . c)).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mega_nerf.fields.base import RadianceField, density_activation


def sh_basis_deg2(d: torch.Tensor) -> torch.Tensor:
    """Real spherical harmonics up to degree 2 (9 values) of unit directions (N, 3) -> (N, 9)."""
    x, y, z = d.unbind(-1)
    return torch.stack([
        torch.full_like(x, 0.28209479177387814),
        -0.4886025119029199 * y, 0.4886025119029199 * z, -0.4886025119029199 * x,
        1.0925484305920792 * x * y, -1.0925484305920792 * y * z,
        0.31539156525252005 * (2 * z * z - x * x - y * y), -1.0925484305920792 * x * z,
        0.5462742152960396 * (x * x - y * y)], -1)


class GridField(RadianceField):
    def __init__(self, aabb: torch.Tensor, appearance_count: int, appearance_dim: int = 48, resolution: int = 128,
                 color_mode: str = "mlp", hidden_dim: int = 64, geo_feat_dim: int = 15, dir_frequencies: int = 4):
        super().__init__(aabb, appearance_count, appearance_dim, hidden_dim, geo_feat_dim, dir_frequencies)
        if color_mode not in ("mlp", "sh"):
            raise ValueError(f"color_mode must be 'mlp' or 'sh', got {color_mode!r}")
        self.color_mode = color_mode
        channels = 1 + (geo_feat_dim if color_mode == "mlp" else 27)
        self.voxels = nn.Parameter(0.02 * torch.randn(1, channels, resolution, resolution, resolution))

    def _sample(self, u: torch.Tensor) -> torch.Tensor:
        g = (u * 2 - 1).to(self.voxels.dtype)[:, [2, 1, 0]].reshape(1, -1, 1, 1, 3)  # grid_sample wants (z, y, x)
        return F.grid_sample(self.voxels, g, align_corners=True)[0, :, :, 0, 0].T  # (N, C)

    def geometry(self, u: torch.Tensor) -> torch.Tensor:
        v = self._sample(u)
        if self.color_mode == "mlp":
            return v
        # Fixed-width features for distillation: density logit plus the first geo_feat_dim coefficients.
        return v[:, : 1 + self.geo_feat_dim]

    def density_with_features(self, x):
        """As the base class; with SH colour the features are the 27 coefficients."""
        if self.color_mode == "mlp":
            return super().density_with_features(x)
        v = self._sample(self.normalize(x))
        return density_activation(v[:, 0]), v[:, 1:]

    def color(self, geo, d, appearance):
        """With SH colour ``geo`` is :meth:`density_with_features`'s (N, 27) coefficients."""
        if self.color_mode == "mlp":
            return super().color(geo, d, appearance)
        coeffs = geo.reshape(-1, 3, 9)
        return torch.sigmoid((coeffs * sh_basis_deg2(d).to(coeffs.dtype)[:, None, :]).sum(-1).float())
