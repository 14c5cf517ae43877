"""Hash-grid radiance field (Instant-NGP style) with per-image appearance embeddings."""
from __future__ import annotations

import torch
from torch import nn

from mega_nerf.fields.encodings import HashGridEncoding, frequency_encoding, mlp


def trunc_exp(x: torch.Tensor) -> torch.Tensor:
    """``exp`` clamped for stability (density activation of Instant-NGP)."""
    return torch.exp(x.clamp(max=15.0))


class HashField(nn.Module):
    """Density and view/appearance-conditioned colour at 3D points.

    Points are normalised into the unit cube spanned by ``aabb`` (the scene's foreground box).
    """

    def __init__(self, aabb: torch.Tensor, appearance_count: int, appearance_dim: int = 48,
                 levels: int = 16, features_per_level: int = 2, log2_table_size: int = 19,
                 base_resolution: int = 16, max_resolution: int = 2048, hidden_dim: int = 64,
                 geo_feat_dim: int = 15, dir_frequencies: int = 4):
        super().__init__()
        self.register_buffer("aabb", aabb.float().reshape(2, 3))
        self.encoding = HashGridEncoding(levels, features_per_level, log2_table_size, base_resolution,
                                         max_resolution)
        self.density_net = mlp(self.encoding.output_dim, hidden_dim, 1 + geo_feat_dim, 1)
        self.dir_frequencies = dir_frequencies
        self.appearance_dim = appearance_dim
        dir_dim = 3 + 6 * dir_frequencies
        self.embedding_a = nn.Embedding(max(appearance_count, 1), appearance_dim) if appearance_dim > 0 else None
        if self.embedding_a is not None:
            nn.init.zeros_(self.embedding_a.weight)
        self.color_net = mlp(geo_feat_dim + dir_dim + appearance_dim, hidden_dim, 3, 2)

    def _features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lo, hi = self.aabb[0], self.aabb[1]
        h = self.density_net(self.encoding((x - lo) / (hi - lo)))
        return trunc_exp(h[:, 0].float() - 1.0), h[:, 1:]

    def density(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3) points -> (N,) density."""
        return self._features(x)[0]

    def forward(self, x: torch.Tensor, d: torch.Tensor, appearance: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            x: (N, 3) points; d: (N, 3) unit view directions; appearance: (N,) int64 image indices.
        Returns:
            sigma (N,), rgb (N, 3) in [0, 1].
        """
        sigma, geo = self._features(x)
        inputs = [geo, frequency_encoding(d, self.dir_frequencies).to(geo.dtype)]
        if self.embedding_a is not None:
            inputs.append(self.embedding_a(appearance).to(geo.dtype))
        rgb = torch.sigmoid(self.color_net(torch.cat(inputs, -1)).float())
        return sigma, rgb


class BackgroundField(nn.Module):
    """Far field outside the foreground ellipsoid (NeRF++ inverted sphere).

    Inputs are the point's direction from the ellipsoid centre (unit 3-vector, in
    ellipsoid-normalised space) and its inverse radius ``s`` in (0, 1].
    """

    def __init__(self, appearance_count: int, appearance_dim: int = 48, hidden_dim: int = 64,
                 xyz_frequencies: int = 6, dir_frequencies: int = 4):
        super().__init__()
        self.xyz_frequencies = xyz_frequencies
        self.dir_frequencies = dir_frequencies
        in_dim = 4 + 8 * xyz_frequencies
        self.trunk = mlp(in_dim, hidden_dim, 1 + hidden_dim, 2)
        self.embedding_a = nn.Embedding(max(appearance_count, 1), appearance_dim) if appearance_dim > 0 else None
        if self.embedding_a is not None:
            nn.init.zeros_(self.embedding_a.weight)
        self.color_net = mlp(hidden_dim + 3 + 6 * dir_frequencies + appearance_dim, hidden_dim, 3, 1)

    def forward(self, unit_dir: torch.Tensor, inv_radius: torch.Tensor, d: torch.Tensor,
                appearance: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            unit_dir: (N, 3); inv_radius: (N,); d: (N, 3) ray directions; appearance: (N,) int64.
        Returns:
            sigma (N,), rgb (N, 3).
        """
        h = self.trunk(frequency_encoding(torch.cat([unit_dir, inv_radius[:, None]], -1), self.xyz_frequencies))
        inputs = [h[:, 1:], frequency_encoding(d, self.dir_frequencies).to(h.dtype)]
        if self.embedding_a is not None:
            inputs.append(self.embedding_a(appearance).to(h.dtype))
        rgb = torch.sigmoid(self.color_net(torch.cat(inputs, -1)).float())
        return trunc_exp(h[:, 0].float() - 1.0), rgb
