"""Which pixels' rays pass through which cell (Mega-NeRF §2.3), with memory bounded per batch.

A pixel belongs to cell k when some sample of its ray (``ray_samples`` points evenly spaced
between near and far) is within ``boundary_margin`` times its distance to the nearest centroid:
``min_s d_k(s) / d_min(s) <= margin``.  Mega-NeRF evaluates ``cdist`` for all cells at once
(rays x samples x cells floats: 18 GiB at 10x10); here cells are visited one at a time and
squared distances come in closed form along each ray, so memory is a few rays x samples arrays,
whatever the number of cells.

Mask files use Mega-NeRF's format: ``MASKS/<k>/<stem>.pt`` is a zip holding one member
``<stem>.pt``, a ``torch.save``d bool (H, W) tensor at full resolution.
"""
from __future__ import annotations

import io
import zipfile
from pathlib import Path

import torch

from mega_nerf.errors import UserError
from mega_nerf.io_utils import atomic_write_with


def ray_cell_membership(rays_o: torch.Tensor, rays_d: torch.Tensor, near: torch.Tensor, far: torch.Tensor,
                        centroids: torch.Tensor, boundary_margin: float, cluster_2d: bool,
                        ray_samples: int) -> torch.Tensor:
    """Cells each ray passes through, expanded by the margin.

    Args:
        rays_o, rays_d: (N, 3); near, far: (N,); centroids: (K, 3).
    Returns:
        (N, K) bool.
    """
    s = torch.linspace(0, 1, ray_samples, device=rays_o.device)
    z = near[:, None] * (1 - s) + far[:, None] * s  # (N, S)
    z2 = z * z
    c = 1 if cluster_2d else 0
    o, d = rays_o[:, c:], rays_d[:, c:]
    dd = (d * d).sum(-1, keepdim=True)  # (N, 1)
    cents = centroids[:, c:].to(rays_o)

    def squared_distance(k: int) -> torch.Tensor:
        # |o + z d - c|^2 = |d|^2 z^2 + 2 z d.(o - c) + |o - c|^2: no (N, S, 3) point array needed.
        oc = o - cents[k]
        b = (d * oc).sum(-1, keepdim=True)
        e = (oc * oc).sum(-1, keepdim=True)
        return (dd * z2 + 2 * b * z + e).clamp_min(0)

    nearest = squared_distance(0)
    for k in range(1, cents.shape[0]):
        nearest = torch.minimum(nearest, squared_distance(k))
    nearest = nearest + 1e-16
    member = torch.empty(rays_o.shape[0], cents.shape[0], dtype=torch.bool, device=rays_o.device)
    for k in range(cents.shape[0]):
        member[:, k] = (squared_distance(k) / nearest).min(dim=1).values <= boundary_margin ** 2
    return member


def mask_path(mask_root: Path, cell: int, stem: str) -> Path:
    return Path(mask_root) / str(cell) / f"{stem}.pt"


def write_mask(path: Path, mask: torch.Tensor) -> None:
    """Write a bool (H, W) mask in Mega-NeRF's zip format, atomically."""
    path = Path(path)
    buffer = io.BytesIO()
    torch.save(mask.bool().cpu().contiguous(), buffer)

    def write(tmp: str) -> None:
        with zipfile.ZipFile(tmp, compression=zipfile.ZIP_DEFLATED, mode="w") as zf:
            zf.writestr(path.name, buffer.getvalue())

    atomic_write_with(path, write)


def read_mask(path: Path) -> torch.Tensor:
    """Read a mask written by us or by Mega-NeRF; bool (H, W)."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as zf:
            with zf.open(path.name) as f:
                return torch.load(io.BytesIO(f.read()), map_location="cpu", weights_only=True).bool()
    except FileNotFoundError:
        raise UserError(f"{path}: cluster mask is missing; rerun create_cluster_masks.py") from None
    except Exception as e:
        raise UserError(f"{path}: cannot read cluster mask ({type(e).__name__}); rerun "
                        f"create_cluster_masks.py with --resume") from None
