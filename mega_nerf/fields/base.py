"""What every foreground field shares: a geometry part that gives a fixed-width feature, and the
density and colour heads on top of it.

``features(x)`` is the ``1 + geo_feat_dim`` vector before the heads (channel 0 = density logit,
the rest = geometry feature): the same width for every backend, so distillation can match it
between any two.  Colour is ``color_net([geo feature, encoded view direction, appearance])``.
"""
from __future__ import annotations

import torch
from torch import nn

from mega_nerf.fields.encodings import frequency_encoding, mlp


def trunc_exp(x: torch.Tensor) -> torch.Tensor:
    """``exp`` clamped for stability (density activation of Instant-NGP)."""
    return torch.exp(x.clamp(max=15.0))


def tensor_bytes(tensors) -> int:
    """Bytes the given tensors hold."""
    return sum(t.numel() * t.element_size() for t in tensors)


def density_activation(logit: torch.Tensor) -> torch.Tensor:
    """Density from a logit, in float32 (shifted so a zero-initialised field starts nearly empty)."""
    return trunc_exp(logit.float() - 1.0)


class RadianceField(nn.Module):
    """Base class: subclasses implement :meth:`geometry` on points normalised to ``[0, 1]^3``."""

    def __init__(self, aabb: torch.Tensor, appearance_count: int, appearance_dim: int, hidden_dim: int,
                 geo_feat_dim: int, dir_frequencies: int):
        super().__init__()
        self.register_buffer("aabb", aabb.float().reshape(2, 3))
        self.geo_feat_dim = geo_feat_dim
        self.dir_frequencies = dir_frequencies
        self.embedding_a = nn.Embedding(max(appearance_count, 1), appearance_dim) if appearance_dim > 0 else None
        if self.embedding_a is not None:
            nn.init.zeros_(self.embedding_a.weight)
        self.color_net = mlp(geo_feat_dim + 3 + 6 * dir_frequencies + appearance_dim, hidden_dim, 3, 2)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3) world points -> (N, 3) in [0, 1]^3 over the field's box."""
        return (x - self.aabb[0]) / (self.aabb[1] - self.aabb[0])

    def geometry(self, u: torch.Tensor) -> torch.Tensor:
        """(N, 3) points in [0, 1]^3 -> (N, 1 + geo_feat_dim) features."""
        raise NotImplementedError

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3) world points -> (N, 1 + geo_feat_dim): density logit and geometry feature."""
        return self.geometry(self.normalize(x))

    def density(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3) points -> (N,) density."""
        return density_activation(self.features(x)[:, 0])

    def density_with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 3) points -> density (N,) and the geometry feature (N, geo_feat_dim) that
        :meth:`color` takes: density first, colour later only where it is needed."""
        h = self.features(x)
        return density_activation(h[:, 0]), h[:, 1:]

    def color(self, geo: torch.Tensor, d: torch.Tensor, appearance: torch.Tensor) -> torch.Tensor:
        inputs = [geo, frequency_encoding(d, self.dir_frequencies).to(geo.dtype)]
        if self.embedding_a is not None:
            inputs.append(self.embedding_a(appearance).to(geo.dtype))
        return torch.sigmoid(self.color_net(torch.cat(inputs, -1)).float())

    def forward(self, x: torch.Tensor, d: torch.Tensor, appearance: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            x: (N, 3) points; d: (N, 3) unit view directions; appearance: (N,) int64 image indices.
        Returns:
            sigma (N,), rgb (N, 3) in [0, 1].
        """
        sigma, geo = self.density_with_features(x)
        return sigma, self.color(geo, d, appearance)

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def memory_bytes(self) -> int:
        """Bytes held by parameters and buffers."""
        return tensor_bytes([*self.parameters(), *self.buffers()])
