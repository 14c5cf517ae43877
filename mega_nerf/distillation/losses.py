"""Distillation losses over packed samples (M valid samples) and rays (R).

Differences from PVD (``fields_and_distillation.md`` §1.5), and why:

* Log-density range.  PVD clamps log-density to a fixed [-2, 7] in teacher and student.  In a
  scene normalised to about [-1, 1] a density of e^-2 is visible fog over a street, and a student
  above the upper clamp gets no gradient even where the teacher is empty.  Here the range comes
  from each sample's own interval: below ``lo`` the sample lets through all but ``alpha_lo`` of
  the light (empty for rendering), above ``hi`` it stops all but ``1 - alpha_hi`` (opaque).  The
  clamp is one-sided: the loss is zero only where teacher and student are *both* empty or both
  opaque; a student on the wrong side always gets a gradient.
* Feature loss.  Each cell of a container has its own feature space and colour decoder, so the
  student cannot copy one feature space.  A small linear adapter per cell maps the student's
  feature into that cell's space (identity at the start: for a one-cell teacher of the same width
  this is PVD's loss).  Its weight decays over the whole run (PVD's 0.995 per step leaves 1e-7
  by step 2000).
* Colour and feature losses are weighted by the teacher's compositing weight (plus a floor): a
  teacher's colour in empty space is arbitrary and invisible; matching it wastes capacity.  The
  density loss is unweighted, empty space must be learned as empty.
"""
from __future__ import annotations

import math

import torch
from torch import nn

#: Alpha over one interval below which a sample is empty, above which it is opaque.
ALPHA_EMPTY, ALPHA_OPAQUE = 1e-3, 0.999


def log_density_bounds(deltas: torch.Tensor, min_delta: float, max_delta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample ``[lo, hi]`` of log-density (see the module docstring).

    Args:
        deltas: (M,) interval lengths, clamped to ``[min_delta, max_delta]`` (the end sample's
            interval is "infinite": its range is that of a long interval).
    Returns:
        lo, hi: (M,).
    """
    d = deltas.clamp(min_delta, max_delta)
    lo = math.log(-math.log(1 - ALPHA_EMPTY)) - d.log()
    hi = math.log(-math.log(1 - ALPHA_OPAQUE)) - d.log()
    return lo, hi


def log_density_loss(log_student: torch.Tensor, log_teacher: torch.Tensor, lo: torch.Tensor,
                     hi: torch.Tensor) -> torch.Tensor:
    """Smooth-L1 between log-densities inside ``[lo, hi]``, one-sided outside it.

    Args:
        log_student, log_teacher, lo, hi: (M,).
    Returns:
        (M,) per-sample loss.
    """
    target = torch.minimum(torch.maximum(log_teacher, lo), hi)
    both_empty = (log_teacher <= lo) & (log_student <= lo)
    both_opaque = (log_teacher >= hi) & (log_student >= hi)
    student = torch.where(both_empty, lo, torch.where(both_opaque, hi, log_student))
    return nn.functional.smooth_l1_loss(student, target, reduction="none")


class FeatureAdapters(nn.Module):
    """One affine map per teacher cell, student feature (Gs) -> that cell's feature (Gt)."""

    def __init__(self, cells: int, student_dim: int, teacher_dim: int):
        super().__init__()
        eye = torch.eye(teacher_dim, student_dim)
        self.weight = nn.Parameter(eye.expand(cells, teacher_dim, student_dim).clone())
        self.bias = nn.Parameter(torch.zeros(cells, teacher_dim))

    def forward(self, feat: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
        """(M, Gs) student features, (M,) cells -> (M, Gt)."""
        out = feat.new_zeros(feat.shape[0], self.weight.shape[1])
        for k in torch.unique(cell).tolist():
            index = torch.nonzero(cell == k).reshape(-1)
            out = out.index_copy(0, index, feat[index] @ self.weight[k].T.to(feat.dtype) + self.bias[k].to(feat.dtype))
        return out


def sample_weights(teacher_weight: torch.Tensor, floor: float = 0.02) -> torch.Tensor:
    """(M,) teacher compositing weights -> (M,) loss weights summing to 1."""
    w = teacher_weight.float() + floor
    return w / w.sum().clamp_min(1e-12)


def feature_loss(student_feat: torch.Tensor, teacher_feat: torch.Tensor, cell: torch.Tensor,
                 adapters: FeatureAdapters, weight: torch.Tensor) -> torch.Tensor:
    """Weighted squared error of adapted student features, in units of the teacher features' RMS
    (backends' features differ in scale by orders of magnitude; one scale for all channels, as a
    channel may be constant).

    Args:
        student_feat: (M, Gs); teacher_feat: (M, Gt); cell: (M,); weight: (M,) summing to 1.
    """
    target = teacher_feat.float()
    scale = target.pow(2).mean().sqrt().detach().clamp_min(1e-6)
    err = ((adapters(student_feat.float(), cell) - target) / scale) ** 2
    return (weight[:, None] * err).sum() / err.shape[1]


def colour_loss(student_rgb: torch.Tensor, teacher_rgb: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Weighted squared colour error: (M, 3), (M, 3), (M,) summing to 1."""
    return (weight * ((student_rgb.float() - teacher_rgb.float()) ** 2).sum(-1)).sum() / 3


def rendered_loss(student_pixel: torch.Tensor, teacher_pixel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean squared pixel error and the (R,) per-ray errors (for hard-ray mining)."""
    per_ray = ((student_pixel.float() - teacher_pixel.float()) ** 2).mean(-1)
    return per_ray.mean(), per_ray.detach()
