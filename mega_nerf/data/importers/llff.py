"""Read LLFF captures: ``poses_bounds.npy`` plus ``images/``.

Each row of ``poses_bounds.npy`` (N, 17) is a 3x5 matrix, row-major, then two depth bounds:
columns 0-2 are the camera's (down, right, back) axes in the world, column 3 its position,
column 4 ``(H, W, focal)`` of the full-size images; then near and far depth (z along the
view) of that view's sparse points.  Images are the name-sorted files of ``images/``;
smaller copies (``images_4``) scale the focal length by their width.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from mega_nerf.data.format import IMAGE_SUFFIXES
from mega_nerf.data.importers.common import Camera, Frame, SourceScene, image_size, natural_key
from mega_nerf.errors import UserError, require


def read_llff(folder: Path, image_dir: Optional[Path] = None) -> SourceScene:
    """A :class:`SourceScene` with ``depth_bounds`` from an LLFF folder."""
    folder = Path(folder)
    path = folder / "poses_bounds.npy"
    require(path.is_file(), f"--llff {folder}: poses_bounds.npy is missing")
    try:
        data = np.load(path)
    except Exception as e:
        raise UserError(f"{path}: cannot load ({type(e).__name__}: {e})") from None
    require(data.ndim == 2 and data.shape[1] == 17 and len(data) > 0 and np.isfinite(data).all(),
            f"{path}: expected a finite (N, 17) array, got shape {data.shape}")
    image_dir = Path(image_dir) if image_dir is not None else folder / "images"
    require(image_dir.is_dir(), f"{image_dir}: images folder does not exist; pass --image_dir")
    files = sorted((p for p in image_dir.iterdir() if p.is_file() and p.suffix in IMAGE_SUFFIXES),
                   key=lambda p: natural_key(p.name))
    require(files, f"{image_dir}: holds no images")
    require(len(files) == len(data), f"{image_dir}: {len(files)} images but {path.name} has {len(data)} poses; "
                                     f"they must match one to one in name order")
    poses = data[:, :15].reshape(-1, 3, 5)
    H, W, focal = poses[0, :, 4]
    w, h = image_size(files[0])
    require(abs(w / h - W / H) < 0.01 * W / H, f"{files[0]}: image is {w}x{h} but poses_bounds.npy is for {W:.0f}x{H:.0f}")
    f = focal * w / W
    camera = Camera(int(w), int(h), f, f, w / 2, h / 2)
    frames = []
    for file, pose in zip(files, poses):
        down, right, back, position = pose[:, 0], pose[:, 1], pose[:, 2], pose[:, 3]
        frames.append(Frame(file.name, file, camera, np.stack([right, down, -back, position], axis=1)))
    return SourceScene(frames, depth_bounds=data[:, 15:17].astype(np.float64), source=str(path))
