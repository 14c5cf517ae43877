"""Input encodings: multi-resolution hash grid (Instant-NGP) and frequency encoding."""
from __future__ import annotations

import math

import torch
from torch import nn

from mega_nerf.fields import hash_kernels

# Instant-NGP's spatial hash primes (the first is 1 so coherent x-neighbours stay close in memory).
_PRIMES = (1, 2654435761, 805459861)

def frequency_encoding(x: torch.Tensor, num_frequencies: int) -> torch.Tensor:
    """NeRF positional encoding ``[x, sin(2^k x), cos(2^k x)]`` (Mega-NeRF: no pi factor).

    Args:
        x: (N, D).
    Returns:
        (N, D + 2 * D * num_frequencies).
    """
    if num_frequencies == 0:
        return x
    freqs = 2.0 ** torch.arange(num_frequencies, device=x.device, dtype=x.dtype)
    scaled = (x[..., None, :] * freqs[:, None]).flatten(-2)
    return torch.cat([x, torch.sin(scaled), torch.cos(scaled)], dim=-1)


def hash_grid_resolutions(levels: int, base_resolution: int, max_resolution: int) -> list[int]:
    """Per-level grid resolutions growing geometrically from base to max."""
    if levels == 1:
        return [base_resolution]
    growth = math.exp((math.log(max_resolution) - math.log(base_resolution)) / (levels - 1))
    return [int(math.floor(base_resolution * growth ** level)) for level in range(levels)]


class HashGridEncoding(nn.Module):
    """Multi-resolution hash encoding in pure PyTorch (CPU and CUDA).

    Levels whose dense grid fits in the table are indexed densely (no collisions); finer levels
    are hashed.  Inputs are points in the unit cube; points outside are clamped.

    On CUDA with Triton installed, :mod:`~mega_nerf.fields.hash_kernels` computes the same
    features in fused kernels; :meth:`reference_forward` is the pure-PyTorch definition they are
    tested against, used on CPU and whenever a gradient with respect to the points is needed.
    """

    def __init__(self, levels: int = 16, features_per_level: int = 2, log2_table_size: int = 19,
                 base_resolution: int = 16, max_resolution: int = 2048):
        super().__init__()
        self.levels = levels
        self.features_per_level = features_per_level
        self.table_size = 2 ** log2_table_size
        resolutions = hash_grid_resolutions(levels, base_resolution, max_resolution)
        sizes = [min((r + 1) ** 3, self.table_size) for r in resolutions]
        self.register_buffer("resolutions", torch.tensor(resolutions, dtype=torch.int64), persistent=False)
        self.register_buffer("level_sizes", torch.tensor(sizes, dtype=torch.int64), persistent=False)
        self.register_buffer("level_offsets", torch.tensor([0] + sizes[:-1], dtype=torch.int64).cumsum(0),
                             persistent=False)
        self.register_buffer("dense", torch.tensor([(r + 1) ** 3 <= self.table_size for r in resolutions]),
                             persistent=False)
        self.register_buffer("dense_i8", self.dense.to(torch.int8), persistent=False)
        #: Each level's share of the features: all ones except while training coarse to fine.
        self.register_buffer("level_weights", torch.ones(levels), persistent=False)
        self.active_levels = float(levels)
        #: Use the Triton kernels where they apply (switch off to time or debug the reference).
        self.use_triton = True
        self.embeddings = nn.Parameter(torch.empty(sum(sizes), features_per_level).uniform_(-1e-4, 1e-4))

    @property
    def output_dim(self) -> int:
        return self.levels * self.features_per_level

    def triton_applies(self, x: torch.Tensor) -> bool:
        return (self.use_triton and x.is_cuda and hash_kernels.available()
                and not (x.requires_grad and torch.is_grad_enabled()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x: (N, 3) points in [0, 1]^3.
        Returns:
            (N, levels * features_per_level) float32 features.
        """
        if self.triton_applies(x):
            features = hash_kernels.hash_encode(x, self.embeddings, self.resolutions, self.level_offsets,
                                                self.level_sizes, self.dense_i8)
        else:
            features = self.reference_forward(x)
        if self.active_levels < self.levels:
            features = features * self.level_weights.repeat_interleave(self.features_per_level)
        return features

    def set_active_levels(self, active: float) -> None:
        """Use the first ``active`` levels (a fractional level is faded in); ``levels`` or more:
        all of them, the encoding's normal output."""
        active = min(float(active), float(self.levels))
        if active != self.active_levels:  # called every step: no copy once the schedule is done
            self.level_weights.copy_((active - torch.arange(self.levels, dtype=torch.float32)).clamp(0, 1))
            self.active_levels = active

    def reference_forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pure-PyTorch features: (N, 3) -> (N, levels * features_per_level)."""
        x = x.float().clamp(0, 1)
        scaled = x[:, None, :] * self.resolutions[None, :, None].float()  # (N, L, 3)
        base = scaled.floor().long()
        frac = scaled - base
        # Per axis, the two corner coordinates and their interpolation weights: (N, L, 2) each.
        # The 8 corners are formed by broadcasting, never materialising (N, L, 8, 3) tensors.
        step = torch.arange(2, device=x.device)
        cx, cy, cz = (base[..., a, None] + step for a in range(3))
        wx, wy, wz = (torch.stack([1 - frac[..., a], frac[..., a]], -1) for a in range(3))
        weights = (wx[..., :, None, None] * wy[..., None, :, None] * wz[..., None, None, :]).reshape(*base.shape[:2], 8)
        res1 = (self.resolutions + 1)[None, :, None]
        dense_index = (cx[..., :, None, None] + (cy * res1)[..., None, :, None]
                       + (cz * res1 * res1)[..., None, None, :])
        hashed = ((cx * _PRIMES[0])[..., :, None, None] ^ (cy * _PRIMES[1])[..., None, :, None]
                  ^ (cz * _PRIMES[2])[..., None, None, :])
        index = torch.where(self.dense[None, :, None, None, None], dense_index, hashed).reshape(*base.shape[:2], 8)
        index = index % self.level_sizes[None, :, None] + self.level_offsets[None, :, None]
        values = self.embeddings[index]  # (N, L, 8, F)
        return (values * weights[..., None].to(values.dtype)).sum(2).reshape(x.shape[0], -1)


def mlp(in_dim: int, hidden: int, out_dim: int, layers: int) -> nn.Sequential:
    """``layers`` hidden ReLU layers of width ``hidden`` then a linear output."""
    mods: list[nn.Module] = []
    dim = in_dim
    for _ in range(layers):
        mods += [nn.Linear(dim, hidden), nn.ReLU(inplace=True)]
        dim = hidden
    mods.append(nn.Linear(dim, out_dim))
    return nn.Sequential(*mods)
