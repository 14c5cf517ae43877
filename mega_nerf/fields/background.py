"""Far field outside the foreground ellipsoid (NeRF++ inverted sphere)."""
from __future__ import annotations

import torch
from torch import nn

from mega_nerf.fields.base import density_activation
from mega_nerf.fields.encodings import frequency_encoding, mlp


class BackgroundField(nn.Module):
    """Inputs: the point's direction from the ellipsoid centre (unit 3-vector, in
    ellipsoid-normalised space) and its inverse radius ``s`` in (0, 1]."""

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
        return density_activation(h[:, 0]), rgb
