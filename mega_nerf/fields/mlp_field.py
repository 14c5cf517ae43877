"""``mlp``: the NeRF MLP with positional encoding, as in Mega-NeRF (8 x 256, skip at layer 4)."""
from __future__ import annotations

import torch
from torch import nn

from mega_nerf.fields.base import RadianceField
from mega_nerf.fields.encodings import frequency_encoding


class MLPField(RadianceField):
    def __init__(self, aabb: torch.Tensor, appearance_count: int, appearance_dim: int = 48,
                 xyz_frequencies: int = 12, layers: int = 8, width: int = 256, skip: int = 4,
                 hidden_dim: int = 64, geo_feat_dim: int = 15, dir_frequencies: int = 4):
        super().__init__(aabb, appearance_count, appearance_dim, hidden_dim, geo_feat_dim, dir_frequencies)
        self.xyz_frequencies = xyz_frequencies
        self.skip = skip
        in_dim = 3 + 6 * xyz_frequencies
        self.trunk = nn.ModuleList()
        dim = in_dim
        for i in range(layers):
            self.trunk.append(nn.Linear(dim + (in_dim if i == skip else 0), width))
            dim = width
        self.head = nn.Linear(width, 1 + geo_feat_dim)

    def geometry(self, u: torch.Tensor) -> torch.Tensor:
        # Mega-NeRF encodes coordinates in about [-1, 1] with frequencies 2^k (no pi factor).
        encoded = frequency_encoding(u * 2 - 1, self.xyz_frequencies)
        h = encoded
        for i, layer in enumerate(self.trunk):
            if i == self.skip:
                h = torch.cat([encoded.to(h.dtype), h], -1)
            h = torch.relu(layer(h))
        return self.head(h)
