"""Tiny hand-checkable datasets for the pipeline tests (a grid of nadir cameras).

A nadir camera in DRB (x = down, y = right, z = back) looks along +x.  Its (down, right, back)
axes in the world are: image-down -> (0, 0, 1), image-right -> (0, 1, 0), back -> (-1, 0, 0);
``opengl_c2w_from_drb_camera`` turns that into the stored OpenGL c2w.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from mega_nerf.data.format import opengl_c2w_from_drb_camera, write_coordinates, write_image  # noqa: E402

#: Columns = the camera's (down, right, back) axes in the DRB world, for a camera looking down.
NADIR_DRB = torch.tensor([[0.0, 0.0, -1.0],
                          [0.0, 1.0, 0.0],
                          [1.0, 0.0, 0.0]])

#: Metric DRB x [top, ground]; with origin 0 and scale 100 this is [-0.2, 0.4] normalised,
#: below the cameras at x = -0.5.
RAY_ALTITUDE_RANGE = (-20.0, 40.0)
POSE_SCALE_FACTOR = 100.0


def nadir_c2w(y: float, z: float, x: float = -0.5) -> torch.Tensor:
    """Stored (3, 4) c2w of a nadir camera at normalised position (x, y, z)."""
    return opengl_c2w_from_drb_camera(NADIR_DRB, torch.tensor([x, y, z]))


def write_config(path: Path, ray_altitude_range=RAY_ALTITUDE_RANGE, extra: str = "") -> Path:
    path = Path(path)
    lines = []
    if ray_altitude_range is not None:
        lines.append(f"ray_altitude_range: [{ray_altitude_range[0]}, {ray_altitude_range[1]}]")
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


def make_nadir_dataset(path: Path, n_images: int = 6, W: int = 16, H: int = 12, seed: int = 0,
                       positions=None, val_every: int = 3, image_suffix: str = ".png",
                       focal: float | None = None) -> dict:
    """Write a dataset of nadir cameras with random images.

    By default the cameras form a grid at altitude x = -0.5 with y, z in [-0.5, 0.5]; image i
    (stem ``{i:06d}``) goes to val when ``i % val_every == 1``.  Intrinsics: fx = fy = W,
    principal point at the image centre (``focal`` overrides fx = fy).

    Returns:
        dict with 'path', 'positions' (N, 3), 'stems', 'splits', 'images' (stem -> uint8 HxWx3),
        'intrinsics', 'c2w' (stem -> (3, 4)), 'W', 'H', 'config' (a YAML file with
        ray_altitude_range next to the dataset).
    """
    path = Path(path)
    rng = np.random.default_rng(seed)
    if positions is None:
        ny = 3
        nz = max(1, int(np.ceil(n_images / ny)))
        ys = np.linspace(-0.5, 0.5, ny)
        zs = np.linspace(-0.5, 0.5, nz) if nz > 1 else np.zeros(1)
        grid = [(-0.5, y, z) for z in zs for y in ys]
        positions = grid[:n_images]
    positions = torch.tensor(np.asarray(positions, dtype=np.float32))
    write_coordinates(path, [0.0, 0.0, 0.0], POSE_SCALE_FACTOR)
    f = float(W if focal is None else focal)
    intrinsics = [f, f, W / 2, H / 2]
    out = {"path": path, "positions": positions, "stems": [], "splits": [], "images": {}, "c2w": {},
           "intrinsics": torch.tensor(intrinsics), "W": W, "H": H}
    for i, p in enumerate(positions):
        stem = f"{i:06d}"
        split = "val" if (val_every and i % val_every == 1) else "train"
        rgb = rng.integers(0, 256, size=(H, W, 3), dtype=np.uint8)
        c2w = nadir_c2w(float(p[1]), float(p[2]), float(p[0]))
        write_image(path, split, stem, rgb, intrinsics, c2w, image_suffix=image_suffix)
        out["stems"].append(stem)
        out["splits"].append(split)
        out["images"][stem] = rgb
        out["c2w"][stem] = c2w
    for split in ("train", "val"):
        (path / split / "metadata").mkdir(parents=True, exist_ok=True)
        (path / split / "rgbs").mkdir(parents=True, exist_ok=True)
    out["config"] = write_config(path.parent / f"{path.name}_config.yaml")
    return out
