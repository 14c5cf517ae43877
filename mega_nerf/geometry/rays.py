"""Pixels to rays, in Mega-NeRF's conventions.

Camera frame: OpenGL (x right, y up, z back; the camera looks along -z).  Ray through pixel
column ``i`` and row ``j`` (pixel centres at +0.5 unless ``center_pixels`` is off)::

    dir_cam = normalize([(i - cx) / fx, -(j - cy) / fy, -1])
    rays_d  = normalize(c2w[:, :3] @ dir_cam),   rays_o = c2w[:, 3]

Directions are unit length, so distances along a ray are in normalised world units.
"""
from __future__ import annotations

import torch


def pixel_coordinates(pixel_index: torch.Tensor, W: torch.Tensor | int) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat row-major pixel index -> (column i, row j).

    Args:
        pixel_index: (N,) int64.
        W: image width, int or (N,) int64.
    Returns:
        i, j: (N,) int64.
    """
    return pixel_index % W, torch.div(pixel_index, W, rounding_mode="floor")


def camera_directions(i: torch.Tensor, j: torch.Tensor, intrinsics: torch.Tensor,
                      center_pixels: bool = True) -> torch.Tensor:
    """Unnormalised camera-frame directions through pixels.

    Args:
        i, j: (N,) column and row indices (any numeric dtype).
        intrinsics: (4,) or (N, 4) [fx, fy, cx, cy].
        center_pixels: add 0.5 to cast through pixel centres.
    Returns:
        (N, 3) float32 directions with z = -1.
    """
    offset = 0.5 if center_pixels else 0.0
    intrinsics = intrinsics.float()
    fx, fy, cx, cy = intrinsics.unbind(-1)
    x = (i.float() + offset - cx) / fx
    y = -(j.float() + offset - cy) / fy
    return torch.stack([x, y, -torch.ones_like(x)], dim=-1)


def world_rays(c2w: torch.Tensor, dirs_cam: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Camera-frame directions to world rays.

    Args:
        c2w: (3, 4) or (N, 3, 4).
        dirs_cam: (N, 3).
    Returns:
        rays_o (N, 3), rays_d (N, 3) unit length.
    """
    # A broadcast multiply-add, not a matmul: under autocast a matmul would run in bf16 and
    # bend the rays by up to ~0.4 %, several pixels at the edge of a large image.
    c2w, dirs_cam = c2w.float(), dirs_cam.float()
    if c2w.dim() == 2:
        rays_d = (dirs_cam[:, None, :] * c2w[None, :, :3]).sum(-1)
        rays_o = c2w[:, 3].expand_as(rays_d)
    else:
        rays_d = (dirs_cam[:, None, :] * c2w[:, :, :3]).sum(-1)
        rays_o = c2w[:, :, 3]
    return rays_o.contiguous(), torch.nn.functional.normalize(rays_d, dim=-1)


def image_rays(W: int, H: int, intrinsics: torch.Tensor, c2w: torch.Tensor,
               center_pixels: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Every pixel's ray of one image in row-major order.

    Returns:
        rays_o (H*W, 3), rays_d (H*W, 3).
    """
    pixel_index = torch.arange(H * W, device=c2w.device)
    i, j = pixel_coordinates(pixel_index, W)
    return world_rays(c2w.float(), camera_directions(i, j, intrinsics.to(c2w.device), center_pixels))
