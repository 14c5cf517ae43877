"""Mega-NeRF's dataset layout: read, validate and write.

Layout (identical to Mega-NeRF's, so datasets move both ways unchanged)::

    DATASET/coordinates.pt                 {'origin_drb': (3,), 'pose_scale_factor': float}
    DATASET/{train,val}/rgbs/<stem>.{jpg,png}
    DATASET/{train,val}/metadata/<stem>.pt {'W', 'H', 'intrinsics': (4,) [fx, fy, cx, cy],
                                            'c2w': (3, 4), optional 'distortion'}
    DATASET/{train,val}/depths/<stem>.npy  optional ground truth: metric distance along the
                                           unit ray, float32 (H, W), inf where nothing is hit

Optional files that :func:`load_dataset` ignores (written by ``scripts/prepare_dataset.py``)::

    DATASET/points3d.pt    sparse points {'xyz': (P, 3) float32 normalised DRB,
                           optional 'rgb': (P, 3) uint8}
    DATASET/mappings.txt   original_image_name,stem per line (Mega-NeRF's file)
    DATASET/{train,val}/sparse_depth/<stem>.pt
                           sparse depth observations from SfM tracks (COLMAP sources), read by
                           training with --depth_loss_weight (see importers/writer.py)
    DATASET/import.json    source, world_to_drb (3, 3) including the metre scale, split
    DATASET/config.yaml    suggested scene options (ray_altitude_range, near, ...)
    DATASET/colmap/        --images / --video: the SfM model (sparse/0, binary; ENU metres when
                           aligned to GPS), sfm.json (what was done), colmap.log, and for a video
                           the extracted frames (images/), so ``--colmap DATASET/colmap`` re-imports it

The world frame is DRB (x = down, y = right, z = back), so altitude is -x.  ``c2w`` columns
are the camera's (right, up, back) axes in that frame (OpenGL convention) and its translation
is normalised: ``(position_metric - origin_drb) / pose_scale_factor``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence

import cv2
import numpy as np
import torch

from mega_nerf.errors import UserError, require
from mega_nerf.io_utils import atomic_torch_save

IMAGE_SUFFIXES = (".jpg", ".JPG", ".jpeg", ".JPEG", ".png", ".PNG")
SPLITS = ("train", "val")


@dataclass
class ImageMetadata:
    """One posed image.  ``image_index`` is its appearance-embedding id (see :func:`load_dataset`)."""

    stem: str
    split: str
    image_path: Path
    W: int
    H: int
    intrinsics: torch.Tensor  # (4,) fx, fy, cx, cy at full resolution
    c2w: torch.Tensor  # (3, 4) DRB world, OpenGL columns, normalised translation
    distortion: Optional[torch.Tensor] = None
    image_index: int = -1
    depth_path: Optional[Path] = None

    def scaled(self, scale_factor: int) -> "ImageMetadata":
        """The same camera at ``1/scale_factor`` resolution (W and H must divide evenly)."""
        if scale_factor == 1:
            return self
        require(self.W % scale_factor == 0 and self.H % scale_factor == 0,
                f"{self.image_path}: size {self.W}x{self.H} is not divisible by scale factor "
                f"{scale_factor}; pick a factor that divides both")
        return ImageMetadata(self.stem, self.split, self.image_path, self.W // scale_factor,
                             self.H // scale_factor, self.intrinsics / scale_factor, self.c2w,
                             self.distortion, self.image_index, self.depth_path)

    def load_image(self) -> torch.Tensor:
        """uint8 (H, W, 3) RGB, resized to this metadata's W x H if the file differs."""
        return load_rgb(self.image_path, self.W, self.H)

    def load_depth(self) -> Optional[torch.Tensor]:
        """Ground-truth metric ray depth (H, W) float32 at this metadata's size, or None."""
        if self.depth_path is None or not self.depth_path.exists():
            return None
        depth = np.load(self.depth_path)
        if depth.shape != (self.H, self.W):
            depth = cv2.resize(depth, (self.W, self.H), interpolation=cv2.INTER_NEAREST)
        return torch.from_numpy(np.ascontiguousarray(depth, dtype=np.float32))


@dataclass
class PosedDataset:
    """A whole dataset: coordinates plus train and val images, sorted by file name."""

    path: Path
    origin_drb: torch.Tensor  # (3,)
    pose_scale_factor: float
    train: List[ImageMetadata] = field(default_factory=list)
    val: List[ImageMetadata] = field(default_factory=list)

    @property
    def items(self) -> List[ImageMetadata]:
        """Every image in appearance-index order (train kept by ``train_every`` plus val)."""
        return sorted(self.train + self.val, key=lambda m: m.image_index)

    @property
    def camera_positions(self) -> torch.Tensor:
        """(N, 3) normalised DRB camera centres of every train and val image."""
        return torch.stack([m.c2w[:, 3] for m in self.train + self.val])

    def to_normalized(self, metric_drb: torch.Tensor) -> torch.Tensor:
        return (metric_drb - self.origin_drb) / self.pose_scale_factor


def load_rgb(path: Path, W: int, H: int) -> torch.Tensor:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise UserError(f"{path}: cannot read this image (missing or corrupt); re-export it")
    image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    h, w = image.shape[:2]
    if abs(w / h - W / H) > 0.01 * (W / H):
        raise UserError(f"{path}: image is {w}x{h} but its metadata says {W}x{H} (another aspect ratio); "
                        f"the image and metadata do not belong together")
    if h != H or w != W:
        interp = cv2.INTER_AREA if image.shape[1] > W else cv2.INTER_LINEAR
        image = cv2.resize(image, (W, H), interpolation=interp)
    return torch.from_numpy(image)


def _load_pt(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except FileNotFoundError:
        raise UserError(f"{path}: file is missing") from None
    except Exception as e:  # corrupt zip, pickle error, truncated file
        raise UserError(f"{path}: cannot load ({type(e).__name__}: {e}); the file is corrupt, "
                        f"regenerate it") from None


def load_coordinates(dataset_path: Path) -> tuple[torch.Tensor, float]:
    """``(origin_drb (3,), pose_scale_factor)`` from ``coordinates.pt``, validated."""
    path = Path(dataset_path) / "coordinates.pt"
    require(Path(dataset_path).is_dir(), f"{dataset_path}: dataset folder does not exist")
    coords = _load_pt(path)
    require(isinstance(coords, dict) and "origin_drb" in coords and "pose_scale_factor" in coords,
            f"{path}: needs keys 'origin_drb' and 'pose_scale_factor'")
    origin = torch.as_tensor(coords["origin_drb"], dtype=torch.float64).float().reshape(-1)
    require(origin.numel() == 3, f"{path}: 'origin_drb' must have 3 values, got {origin.numel()}")
    require(bool(torch.isfinite(origin).all()), f"{path}: 'origin_drb' is not finite")
    scale = float(coords["pose_scale_factor"])
    require(math.isfinite(scale) and scale > 0,
            f"{path}: 'pose_scale_factor' must be a positive number, got {scale}")
    return origin, scale


def load_image_metadata(metadata_path: Path, split: str) -> ImageMetadata:
    """Load and validate one ``metadata/<stem>.pt`` and find its image."""
    metadata_path = Path(metadata_path)
    md = _load_pt(metadata_path)
    require(isinstance(md, dict), f"{metadata_path}: expected a dict")
    for key in ("W", "H", "intrinsics", "c2w"):
        require(key in md, f"{metadata_path}: missing key '{key}'")
    W, H = int(md["W"]), int(md["H"])
    require(W > 0 and H > 0, f"{metadata_path}: W and H must be positive, got {W}x{H}")
    intrinsics = torch.as_tensor(md["intrinsics"]).float().reshape(-1)
    require(intrinsics.numel() == 4,
            f"{metadata_path}: 'intrinsics' must be [fx, fy, cx, cy], got {intrinsics.numel()} values")
    c2w = torch.as_tensor(md["c2w"]).float()
    require(tuple(c2w.shape) == (3, 4), f"{metadata_path}: 'c2w' must be 3x4, got {tuple(c2w.shape)}")
    require(bool(torch.isfinite(c2w).all()), f"{metadata_path}: 'c2w' contains NaN or inf")
    require(bool(torch.isfinite(intrinsics).all()) and bool((intrinsics[:2] > 0).all()),
            f"{metadata_path}: 'intrinsics' must be finite with positive focal lengths")
    rot = c2w[:, :3].double()
    require(bool(torch.allclose(rot.T @ rot, torch.eye(3, dtype=torch.float64), atol=1e-3)),
            f"{metadata_path}: the rotation part of 'c2w' is not orthonormal")
    distortion = md.get("distortion")
    if distortion is not None:
        distortion = torch.as_tensor(distortion).float().reshape(-1)

    split_dir = metadata_path.parent.parent
    stem = metadata_path.stem
    image_path = None
    for suffix in IMAGE_SUFFIXES:
        candidate = split_dir / "rgbs" / f"{stem}{suffix}"
        if candidate.exists():
            image_path = candidate
            break
    require(image_path is not None,
            f"{split_dir / 'rgbs' / stem}.(jpg|png): image for {metadata_path.name} is missing")
    depth_path = split_dir / "depths" / f"{stem}.npy"
    return ImageMetadata(stem, split, image_path, W, H, intrinsics, c2w, distortion,
                         depth_path=depth_path if depth_path.exists() else None)


def load_dataset(dataset_path: Path, train_every: int = 1) -> PosedDataset:
    """Load a Mega-NeRF dataset.

    Appearance indices follow Mega-NeRF exactly: ``sorted(train)[::train_every] + sorted(val)``
    re-sorted by file name, index = position in that list.  Validation images are part of this
    list because Mega-NeRF trains their left halves (see ``mega_nerf.evaluation.protocols``).
    """
    dataset_path = Path(dataset_path)
    origin, scale = load_coordinates(dataset_path)
    require(train_every >= 1, f"--train_every must be >= 1, got {train_every}")
    splits = {}
    for split in SPLITS:
        md_dir = dataset_path / split / "metadata"
        require(md_dir.is_dir(), f"{md_dir}: folder is missing; a dataset needs "
                                 f"{split}/metadata/*.pt and {split}/rgbs/")
        paths = sorted(md_dir.glob("*.pt"))
        if split == "train":
            require(len(paths) > 0, f"{md_dir}: holds no *.pt metadata files")
            paths = paths[::train_every]
        splits[split] = [load_image_metadata(p, split) for p in paths]
    ordered = sorted(splits["train"] + splits["val"], key=lambda m: m.stem + ".pt")  # Mega-NeRF sorts metadata names
    for index, item in enumerate(ordered):
        item.image_index = index
    dataset = PosedDataset(dataset_path, origin, scale, splits["train"], splits["val"])
    positions = dataset.camera_positions
    if positions.abs().max() > 10:
        # Mega-NeRF's encodings assume normalised coordinates in roughly [-1, 1].
        raise UserError(f"{dataset_path}/coordinates.pt: camera positions reach "
                        f"{positions.abs().max():.1f} after normalisation; raise "
                        f"'pose_scale_factor' so they lie within about [-1, 1]")
    return dataset


def write_coordinates(dataset_path: Path, origin_drb: Sequence[float], pose_scale_factor: float) -> None:
    atomic_torch_save({"origin_drb": torch.as_tensor(origin_drb, dtype=torch.float32).reshape(3),
                       "pose_scale_factor": float(pose_scale_factor)},
                      Path(dataset_path) / "coordinates.pt")


def write_image(dataset_path: Path, split: str, stem: str, rgb: np.ndarray, intrinsics: Sequence[float],
                c2w: torch.Tensor, image_suffix: str = ".png", depth: Optional[np.ndarray] = None,
                distortion: Optional[Sequence[float]] = None) -> None:
    """Write one image, its metadata and optional depth in Mega-NeRF's layout.

    ``rgb``: uint8 (H, W, 3); ``c2w``: (3, 4) normalised DRB with OpenGL columns.
    """
    split_dir = Path(dataset_path) / split
    H, W = rgb.shape[:2]
    (split_dir / "rgbs").mkdir(parents=True, exist_ok=True)
    image_path = split_dir / "rgbs" / f"{stem}{image_suffix}"
    tmp = image_path.with_name(f".{image_path.stem}.tmp{image_suffix}")
    require(cv2.imwrite(str(tmp), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)), f"{image_path}: cannot write")
    tmp.replace(image_path)
    metadata = {"W": int(W), "H": int(H),
                "intrinsics": torch.as_tensor(intrinsics, dtype=torch.float32).reshape(4),
                "c2w": torch.as_tensor(c2w, dtype=torch.float32).reshape(3, 4)}
    if distortion is not None:
        metadata["distortion"] = torch.as_tensor(distortion, dtype=torch.float32)
    atomic_torch_save(metadata, split_dir / "metadata" / f"{stem}.pt")
    if depth is not None:
        (split_dir / "depths").mkdir(parents=True, exist_ok=True)
        np.save(split_dir / "depths" / f"{stem}.npy", depth.astype(np.float32))


# The two frame conversions users trip over most (Mega-NeRF issues #52, #64).
RDF_TO_DRB = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])


def opengl_c2w_from_drb_camera(rotation_drb: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
    """Stored c2w from a camera whose columns are its (down, right, back) axes in DRB.

    Args:
        rotation_drb: (3, 3) columns = camera down, right, back axes in the DRB world.
        position: (3,) normalised camera centre.
    Returns:
        (3, 4) c2w with OpenGL columns (right, up, back, position).
    """
    return torch.cat([rotation_drb[:, 1:2], -rotation_drb[:, 0:1], rotation_drb[:, 2:3],
                      position.reshape(3, 1)], dim=1)
