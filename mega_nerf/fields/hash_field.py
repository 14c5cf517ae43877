"""``hash``: multi-resolution hash grid (Instant-NGP) with a small MLP decoder."""
from __future__ import annotations

import torch

from mega_nerf.fields.base import RadianceField
from mega_nerf.fields.encodings import HashGridEncoding, mlp


class HashField(RadianceField):
    def __init__(self, aabb: torch.Tensor, appearance_count: int, appearance_dim: int = 48,
                 levels: int = 16, features_per_level: int = 2, log2_table_size: int = 19,
                 base_resolution: int = 16, max_resolution: int = 2048, hidden_dim: int = 64,
                 geo_feat_dim: int = 15, dir_frequencies: int = 4):
        super().__init__(aabb, appearance_count, appearance_dim, hidden_dim, geo_feat_dim, dir_frequencies)
        self.encoding = HashGridEncoding(levels, features_per_level, log2_table_size, base_resolution,
                                         max_resolution)
        self.density_net = mlp(self.encoding.output_dim, hidden_dim, 1 + geo_feat_dim, 1)

    def geometry(self, u: torch.Tensor) -> torch.Tensor:
        return self.density_net(self.encoding(u))
