"""Coarse-to-fine training of hash grids (``--coarse_to_fine``).

With few views of each spot (a drone flight's 15 photos), a hash grid's fine levels fit each
training image's pixels with high-frequency detail before the coarse geometry is right, and
novel views show it as ghosted, doubled texture.  Switching the fine levels on one after another
(FreeNeRF's frequency schedule and Neuralangelo's progressive levels, on Instant-NGP's grid)
makes the coarse levels settle the shape first.
"""
from __future__ import annotations

import torch

from mega_nerf.fields.encodings import HashGridEncoding


def active_levels(progress: float, levels: int, start_levels: int, fraction: float) -> float:
    """Levels in use at ``progress`` in [0, 1] of training: ``start_levels`` at the start, growing
    linearly to all ``levels`` at ``fraction`` of training (all of them from the start when
    ``fraction`` is 0)."""
    if fraction <= 0 or progress >= fraction:
        return float(levels)
    return min(float(levels), start_levels + (levels - start_levels) * progress / fraction)


def hash_encodings(model: torch.nn.Module) -> list[HashGridEncoding]:
    return [m for m in model.modules() if isinstance(m, HashGridEncoding)]


def set_coarse_to_fine(model: torch.nn.Module, progress: float, start_levels: int, fraction: float) -> float:
    """Set every hash grid of ``model`` to the levels of :func:`active_levels`; returns the
    smallest number of levels in use (for the logs)."""
    used = []
    for encoding in hash_encodings(model):
        used.append(active_levels(progress, encoding.levels, start_levels, fraction))
        encoding.set_active_levels(used[-1])
    return min(used)
