"""Result pictures: coloured depth maps, rendered | ground truth | depth strips, atomic PNG writes.

Images are (H, W, 3) RGB; functions accept torch tensors or numpy arrays and return uint8 torch
tensors (``save_png`` accepts either).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

import cv2
import numpy as np
import torch

from mega_nerf.io_utils import atomic_write_bytes

ImageLike = Union[torch.Tensor, np.ndarray]


def _to_numpy(x: ImageLike) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def to_uint8(image: ImageLike) -> torch.Tensor:
    """Float image in [0, 1] (any shape) -> uint8 tensor: clamp, scale by 255, round.

    uint8 input is returned unchanged (as a tensor).
    """
    t = torch.as_tensor(image).detach().cpu()
    if t.dtype == torch.uint8:
        return t
    t = t.to(torch.float32).nan_to_num(0.0).clamp(0.0, 1.0)
    return (t * 255.0).round().to(torch.uint8)


def colorize_depth(depth: ImageLike, valid_mask: Optional[ImageLike] = None) -> torch.Tensor:
    """Colour a depth map: log depth through the inferno colormap (near dark, far bright).

    Log depth is normalised between the 1st and 99th percentiles of the valid values and clipped.
    Pixels that are not finite (inf/NaN), not positive, or outside ``valid_mask`` are black. With no
    valid pixel the whole picture is black.

    Args:
        depth: (H, W) float depth.
        valid_mask: optional (H, W) bool mask of pixels to colour.

    Returns:
        (H, W, 3) uint8 RGB tensor.
    """
    d = _to_numpy(depth).astype(np.float64)
    if d.ndim != 2:
        raise ValueError(f"depth must have shape (H, W), got {d.shape}")
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(d) & (d > 0)
    if valid_mask is not None:
        m = _to_numpy(valid_mask).astype(bool)
        if m.shape != d.shape:
            raise ValueError(f"valid_mask shape {m.shape} differs from depth shape {d.shape}")
        valid &= m
    out = np.zeros(d.shape + (3,), dtype=np.uint8)
    if not valid.any():
        return torch.from_numpy(out)
    logd = np.zeros_like(d)
    logd[valid] = np.log(d[valid])
    lo, hi = np.percentile(logd[valid], [1.0, 99.0])
    if hi > lo:
        norm = np.clip((logd - lo) / (hi - lo), 0.0, 1.0)
    else:  # constant depth: mid colour
        norm = np.full_like(logd, 0.5)
    gray = np.round(norm * 255.0).astype(np.uint8)
    rgb = cv2.cvtColor(cv2.applyColorMap(gray, cv2.COLORMAP_INFERNO), cv2.COLOR_BGR2RGB)
    out[valid] = rgb[valid]
    return torch.from_numpy(out)


def side_by_side(rendered: ImageLike, ground_truth: ImageLike, depth_rgb: ImageLike) -> torch.Tensor:
    """Horizontal strip ``rendered | ground truth | depth`` of three (H, W, 3) images.

    Like Mega-NeRF's validation strip, but Mega-NeRF orders it ground truth | prediction | depth;
    here the rendering comes first. Float inputs are taken as [0, 1] and converted with
    :func:`to_uint8`; uint8 inputs are used as they are.

    Returns:
        (H, 3W, 3) uint8 tensor.
    """
    parts = [to_uint8(x) for x in (rendered, ground_truth, depth_rgb)]
    shapes = {tuple(p.shape) for p in parts}
    if len(shapes) != 1 or parts[0].ndim != 3 or parts[0].shape[2] != 3:
        raise ValueError(f"side_by_side needs three (H, W, 3) images of one size, got {[tuple(p.shape) for p in parts]}")
    return torch.cat(parts, dim=1)


def save_png(image: ImageLike, path: Union[str, os.PathLike]) -> None:
    """Write an (H, W, 3) uint8 RGB image as PNG, atomically.

    The PNG is encoded with cv2 (RGB converted to cv2's BGR), written to a temporary file in the
    same folder, then renamed over ``path``; the folder is created if needed.
    """
    a = _to_numpy(image)
    if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"save_png needs an (H, W, 3) uint8 image, got {a.shape} {a.dtype}")
    ok, buf = cv2.imencode(".png", cv2.cvtColor(np.ascontiguousarray(a), cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError(f"could not encode PNG for {path}")
    atomic_write_bytes(buf.tobytes(), Path(path))
