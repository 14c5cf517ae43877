"""What every importer produces: cameras, posed frames and sparse points in the source's world.

An importer (COLMAP, ``transforms.json``, LLFF, and the SfM path through a pycolmap
``Reconstruction``) only parses its source into a :class:`SourceScene`;
:mod:`mega_nerf.data.importers.writer` does the rest (alignment, undistortion, splits, config).

Conventions of this module:

* Cameras follow COLMAP: pixel centres at ``+0.5`` (``cx = W / 2`` is the image centre) and
  OpenCV distortion coefficients.
* ``Frame.c2w`` is camera-to-world with **OpenCV camera axes** (x right, y down, z forward),
  in source world units; :func:`opencv_from_opengl` converts OpenGL / NeRF poses.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np

from mega_nerf.errors import UserError, require

#: Camera models the importers undistort to a pinhole camera.
CAMERA_MODELS = ("SIMPLE_PINHOLE", "PINHOLE", "SIMPLE_RADIAL", "RADIAL", "OPENCV", "OPENCV_FISHEYE")

BACKGROUNDS = {"white": 255.0, "black": 0.0}


@dataclass(frozen=True)
class Camera:
    """An OpenCV camera (COLMAP pixel convention).

    ``distortion``: OpenCV ``(k1, k2, p1, p2[, k3])`` for perspective models, ``(k1, k2, k3, k4)``
    for ``fisheye``; all zero for a pinhole camera.
    """

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    distortion: tuple = (0.0, 0.0, 0.0, 0.0)
    fisheye: bool = False

    @property
    def K(self) -> np.ndarray:
        """(3, 3) calibration matrix."""
        return np.array([[self.fx, 0, self.cx], [0, self.fy, self.cy], [0, 0, 1]], dtype=np.float64)

    @property
    def intrinsics(self) -> List[float]:
        """``[fx, fy, cx, cy]`` as the dataset metadata stores them."""
        return [self.fx, self.fy, self.cx, self.cy]

    @property
    def is_pinhole(self) -> bool:
        return not self.fisheye and not any(self.distortion)


@dataclass
class Frame:
    """One posed source image.

    ``name``: the image's name in the source (relative path), used for splits and mappings.
    ``c2w``: (3, 4) float64 camera-to-world, OpenCV axes, source world units.
    ``point_ids``: (K,) int64 rows of :attr:`SourceScene.points` whose track holds this image
    (COLMAP models), or None when the source has no tracks.
    """

    name: str
    image_path: Path
    camera: Camera
    c2w: np.ndarray
    #: rows of ``SourceScene.points`` this image observes (a COLMAP track holds this image), or None
    point_ids: Optional[np.ndarray] = None


@dataclass
class SourceScene:
    """A parsed capture, before alignment.

    Attributes:
        frames: posed images (any order; the writer sorts them by name).
        points: (P, 3) sparse points in the source world, or None.
        point_colors: (P, 3) uint8 RGB, or None.
        point_errors: (P,) mean reprojection error in pixels (COLMAP), or None.
        point_track_lengths: (P,) number of images observing each point (COLMAP), or None.
        up: (3,) known world up vector, or None to estimate it from the cameras.
        metres_per_unit: source units in metres when known (metric model), else None.
        val_names: names of validation images when the source defines a split, else None.
        depth_bounds: (N, 2) per-frame near/far depths (LLFF), source units, or None.
        foreground_box: (2, 3) min/max corners of the source's own scene box (Instant-NGP's
            ``aabb_scale``), source world, or None.
        source: what was read (for messages).
        skipped: frames left out (with the reason), reported to the user.
        notes: what the importer decided about the source (printed and written to config.yaml).
    """

    frames: List[Frame]
    points: Optional[np.ndarray] = None
    point_colors: Optional[np.ndarray] = None
    point_errors: Optional[np.ndarray] = None
    point_track_lengths: Optional[np.ndarray] = None
    up: Optional[np.ndarray] = None
    metres_per_unit: Optional[float] = None
    val_names: Optional[List[str]] = None
    depth_bounds: Optional[np.ndarray] = None
    foreground_box: Optional[np.ndarray] = None
    source: str = ""
    skipped: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)


def opencv_from_opengl(c2w: np.ndarray) -> np.ndarray:
    """Flip an OpenGL camera's (x right, y up, z back) axes to OpenCV's (right, down, forward).

    Args:
        c2w: (..., 3, 4) or (..., 4, 4).
    Returns:
        (..., 3, 4) float64.
    """
    c2w = np.asarray(c2w, dtype=np.float64)[..., :3, :4].copy()
    c2w[..., :, 1:3] *= -1
    return c2w


def natural_key(name: str) -> list:
    """Sort key that orders ``r_2`` before ``r_10``."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def read_split_file(path: Path) -> List[str]:
    """Validation image names, one per line (``#`` comments and blank lines ignored)."""
    path = Path(path)
    require(path.is_file(), f"--split_file {path}: file does not exist")
    names = [line.split("#")[0].strip() for line in path.read_text().splitlines()]
    return [n for n in names if n]


def _name_variants(name: str) -> set:
    p = Path(name)
    return {name, p.name, p.stem, str(p.with_suffix(""))}


def assign_splits(names: Sequence[str], val_names: Optional[Sequence[str]], val_every: int) -> List[str]:
    """``'train'`` / ``'val'`` for every name (already sorted).

    With ``val_names`` (an explicit split) those images are validation; a name that matches
    no image is an error.  Otherwise images ``0, N, 2N, ...`` of the sorted list are
    validation (Mega-NeRF's brighton protocol: N = 6; NeRF / LLFF: N = 8); ``val_every = 0``
    puts every image in train.
    """
    if val_names is not None:
        wanted = {v for v in val_names}
        matched, splits = set(), []
        for name in names:
            hit = _name_variants(name) & wanted
            matched |= hit
            splits.append("val" if hit else "train")
        missing = sorted(wanted - matched)
        require(not missing, f"split: validation image '{missing[0] if missing else ''}' is not among the "
                             f"{len(names)} posed images ({len(missing)} unknown names); check the split file")
    else:
        require(val_every >= 0, f"--val_every must be >= 0, got {val_every}")
        splits = ["val" if val_every and i % val_every == 0 else "train" for i in range(len(names))]
    require("train" in splits, "split: every image is a validation image; nothing is left to train on")
    return splits


def load_source_image(path: Path, background: str = "white") -> Tuple[np.ndarray, bool]:
    """``(uint8 (H, W, 3) RGB, had_alpha)``; an alpha channel is composited onto ``background``.

    16-bit images are scaled to 8 bits, grey images expanded to RGB.
    """
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise UserError(f"{path}: cannot read this image (missing or corrupt)")
    if image.dtype == np.uint16:
        image = (image.astype(np.float32) / 257.0).round().astype(np.uint8)
    require(image.dtype == np.uint8, f"{path}: unsupported pixel type {image.dtype}; export 8-bit images")
    if image.ndim == 2:
        image = image[..., None]
    if image.shape[2] == 1:
        return np.repeat(image, 3, axis=2), False
    had_alpha = image.shape[2] == 4
    if had_alpha:
        alpha = image[..., 3:].astype(np.float32) / 255.0
        rgb = image[..., :3].astype(np.float32) * alpha + BACKGROUNDS[background] * (1 - alpha)
        image = rgb.round().clip(0, 255).astype(np.uint8)
    return cv2.cvtColor(image[..., :3], cv2.COLOR_BGR2RGB), had_alpha


def image_size(path: Path) -> tuple:
    """``(W, H)`` of an image file, reading only what OpenCV needs."""
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise UserError(f"{path}: cannot read this image (missing or corrupt)")
    return image.shape[1], image.shape[0]
