"""Losses that make neighbouring cells agree (``--neighbor_agreement``): pure functions, no I/O.

Where the container blends two cells (the overlap band of
:func:`mega_nerf.partition.centroids.routing_weights`), a cell being trained is pulled toward the
density and colour that its already-trained neighbours predict at the same samples, and its
per-image appearance embeddings toward theirs.  :mod:`mega_nerf.training.neighbor_agreement` finds
the neighbours and the samples; these functions only compare tensors.

Density is compared as a *clamped log-density*: below ``density_floor`` (the trainer uses the
density at which even a ray across the whole field box stays more transparent than
``--occupancy_alpha_threshold``) two fields that both say "empty" agree whatever their
exact values, so empty space costs nothing.  The comparison is one-sided there: where the
neighbour is below the floor, the cell is only pulled down to the floor (never further), and
where the neighbour is above it, the cell is pulled to the neighbour's value from either side
(a clamp on the cell's own value would kill that gradient when the cell is empty and the
neighbour is not).  Colour is compared only where the neighbour's density is above the floor:
elsewhere colour is never seen.
"""
from __future__ import annotations

import math

import torch

#: Log of the smallest density taken seriously by the log (densities underflow to 0 in float32).
_LOG_TINY = math.log(1e-30)


def clamped_log_density(sigma: torch.Tensor, density_floor: float) -> torch.Tensor:
    """(N,) densities -> (N,) ``log(max(sigma, density_floor))``."""
    return torch.log(sigma.float().clamp_min(density_floor))


def agreement_loss(sigma: torch.Tensor, rgb: torch.Tensor, target_sigma: torch.Tensor, target_rgb: torch.Tensor,
                   weight: torch.Tensor, density_floor: float, color_weight: float = 1.0,
                   normalizer: float | None = None) -> torch.Tensor:
    """Agreement of a cell's samples with a frozen neighbour's predictions at the same samples.

    Per sample ``i`` with blend weight ``w_i`` (the neighbour's routing weight there)::

        a_i = log(sigma_i),  b_i = log(max(target_sigma_i, floor)),  lf = log(floor)
        density_i = (a_i - b_i)^2            if target_sigma_i >= floor
                    max(a_i - lf, 0)^2       otherwise (only pulled down to the floor)
        color_i   = |rgb_i - target_rgb_i|^2 summed over channels, if target_sigma_i >= floor, else 0
        loss = sum_i w_i (density_i + color_weight * color_i) / normalizer

    It is exactly 0 when the cell predicts what the neighbour predicts (or both are below the
    floor), positive otherwise, and its gradient moves ``sigma`` and ``rgb`` toward the targets.

    Args:
        sigma: (N,) the cell's densities (with gradients).
        rgb: (N, 3) the cell's colours in [0, 1] (with gradients).
        target_sigma: (N,) the neighbour's densities (no gradients needed).
        target_rgb: (N, 3) the neighbour's colours.
        weight: (N,) non-negative blend weights (0 outside the overlap band).
        density_floor: density below which a sample counts as empty (> 0).
        color_weight: relative weight of the colour term.
        normalizer: the sum is divided by this (default: N, i.e. a mean over the samples given).
    Returns:
        () scalar tensor; 0 for N == 0.
    """
    if sigma.shape[0] == 0:
        return sigma.float().sum() * 0.0
    lf = math.log(density_floor)
    a = torch.log(sigma.float().clamp_min(1e-30))
    target = target_sigma.detach().float()
    seen = target >= density_floor
    b = clamped_log_density(target, density_floor)
    diff = a - b
    density = torch.where(seen, diff, torch.relu(a - lf)).square()
    # Samples whose own density underflowed (a at the 1e-30 clamp) carry no gradient: that is
    # fine, their logit is far below the floor and the photometric loss governs them.
    color = (rgb.float() - target_rgb.detach().float()).square().sum(-1) * seen
    per_sample = density + color_weight * color
    denominator = float(sigma.shape[0] if normalizer is None else normalizer)
    return (weight.detach().float() * per_sample).sum() / max(denominator, 1e-12)


def trained_rows(embedding: torch.Tensor) -> torch.Tensor:
    """(A, D) appearance table -> (A,) bool: rows some training step changed.

    Embeddings start at exactly zero (:class:`~mega_nerf.fields.base.RadianceField`) and the rows
    of images a cell never saw stay zero, so a non-zero row is one the cell learned.
    """
    return (embedding != 0).any(dim=-1)


def appearance_targets(tables: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Average of several cells' appearance tables over the rows each of them learned.

    Args:
        tables: K tensors (A, D), the neighbours' ``embedding_a`` weights.
    Returns:
        target (A, D) (zero where no neighbour learned the row), rows (A,) bool where some did.
    """
    stacked = torch.stack([t.detach().float() for t in tables])  # (K, A, D)
    learned = torch.stack([trained_rows(t) for t in stacked]).float()  # (K, A)
    count = learned.sum(0)  # (A,)
    target = (stacked * learned[..., None]).sum(0) / count.clamp_min(1)[:, None]
    return target, count > 0


def appearance_alignment_loss(embedding: torch.Tensor, target: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Mean over the aligned rows of the squared distance between a cell's embedding row and the
    target row of the same image.

    Args:
        embedding: (A, D) the cell's ``embedding_a.weight`` (with gradients).
        target: (A, D) the neighbours' rows (:func:`appearance_targets`).
        rows: (A,) bool, the rows to align (images some neighbour learned).
    Returns:
        () scalar; 0 when no row is aligned or the rows are equal.
    """
    if not bool(rows.any()):
        return embedding.sum() * 0.0
    diff = embedding[rows].float() - target[rows].detach().float()
    return diff.square().sum(-1).mean()
