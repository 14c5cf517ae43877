"""Read COLMAP models (binary or text) with pycolmap.

:func:`read_colmap_model` takes a ``pycolmap.Reconstruction``, so structure-from-motion
that ends in one (``--images`` / ``--video``) shares everything after it.

COLMAP stores ``cam_from_world`` (world -> OpenCV camera); camera models map onto OpenCV's:

=========================  =====================================  ===================
COLMAP model               params                                 OpenCV distortion
=========================  =====================================  ===================
SIMPLE_PINHOLE             f, cx, cy                              none
PINHOLE                    fx, fy, cx, cy                         none
SIMPLE_RADIAL              f, cx, cy, k                           (k, 0, 0, 0)
RADIAL                     f, cx, cy, k1, k2                      (k1, k2, 0, 0)
OPENCV                     fx, fy, cx, cy, k1, k2, p1, p2         (k1, k2, p1, p2)
FULL_OPENCV                fx, fy, cx, cy, k1, k2, p1, p2, k3..6  all eight
SIMPLE_FISHEYE             f, cx, cy                              fisheye (0, 0, 0, 0)
SIMPLE_RADIAL_FISHEYE      f, cx, cy, k                           fisheye (k, 0, 0, 0)
RADIAL_FISHEYE             f, cx, cy, k1, k2                      fisheye (k1, k2, 0, 0)
OPENCV_FISHEYE             fx, fy, cx, cy, k1, k2, k3, k4         fisheye (k1..k4)
=========================  =====================================  ===================
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Optional

import numpy as np

from mega_nerf.data.format import IMAGE_SUFFIXES
from mega_nerf.data.importers.common import Camera, Frame, SourceScene
from mega_nerf.errors import UserError, require

# model -> (focal params: 1 or 2, number of distortion params, fisheye)
COLMAP_MODELS = {
    "SIMPLE_PINHOLE": (1, 0, False), "PINHOLE": (2, 0, False), "SIMPLE_RADIAL": (1, 1, False),
    "RADIAL": (1, 2, False), "OPENCV": (2, 4, False), "FULL_OPENCV": (2, 8, False),
    "SIMPLE_FISHEYE": (1, 0, True), "SIMPLE_RADIAL_FISHEYE": (1, 1, True), "RADIAL_FISHEYE": (1, 2, True),
    "OPENCV_FISHEYE": (2, 4, True),
}


def camera_from_colmap(model: str, width: int, height: int, params) -> Camera:
    """A :class:`Camera` from a COLMAP camera model name and parameter list."""
    require(model in COLMAP_MODELS, f"COLMAP camera model {model} is not supported; use one of "
                                    f"{', '.join(COLMAP_MODELS)} (e.g. re-run mapping with OPENCV)")
    focals, extra, fisheye = COLMAP_MODELS[model]
    p = [float(v) for v in params]
    require(len(p) == focals + 2 + extra, f"COLMAP camera {model} needs {focals + 2 + extra} parameters, got {len(p)}")
    fx, fy = (p[0], p[0]) if focals == 1 else (p[0], p[1])
    cx, cy = p[focals], p[focals + 1]
    k = p[focals + 2:]
    if fisheye:
        distortion = tuple(k + [0.0] * (4 - len(k)))
    elif extra <= 2:
        distortion = tuple(k + [0.0] * (4 - len(k)))
    else:
        distortion = tuple(k)
    return Camera(int(width), int(height), fx, fy, cx, cy, distortion, fisheye)


def _image_files(image_dir: Path) -> set:
    return {p.relative_to(image_dir).as_posix() for p in image_dir.rglob("*")
            if p.is_file() and p.suffix in IMAGE_SUFFIXES}


def read_colmap_model(reconstruction, image_dir: Path, source: str = "", skip_missing: bool = False,
                      allow_unregistered: bool = False) -> SourceScene:
    """A :class:`SourceScene` from a ``pycolmap.Reconstruction`` and its images folder.

    Every image file under ``image_dir`` must be registered (posed) in the model unless
    ``allow_unregistered``; every registered image must exist unless ``skip_missing``.
    """
    image_dir = Path(image_dir)
    require(image_dir.is_dir(), f"{image_dir}: images folder does not exist; pass --image_dir")
    on_disk = _image_files(image_dir)
    require(on_disk, f"{image_dir}: holds no images ({', '.join(sorted(set(s.lower() for s in IMAGE_SUFFIXES)))})")
    cameras, frames, missing, unposed = {}, [], [], []
    for image in reconstruction.images.values():
        if not image.has_pose:
            unposed.append(image.name)
            continue
        if image.name not in on_disk:
            missing.append(image.name)
            continue
        cam = reconstruction.cameras[image.camera_id]
        if image.camera_id not in cameras:
            cameras[image.camera_id] = camera_from_colmap(cam.model.name, cam.width, cam.height, cam.params)
        w2c = np.asarray(image.cam_from_world().matrix(), dtype=np.float64)
        rotation = w2c[:, :3].T
        observed = np.array([p.point3D_id for p in image.get_observation_points2D()], dtype=np.int64)
        frames.append(Frame(image.name, image_dir / image.name, cameras[image.camera_id],
                            np.concatenate([rotation, -rotation @ w2c[:, 3:]], axis=1), observed))
    registered = {f.name for f in frames} | set(missing)
    unregistered = sorted((on_disk - registered) | set(unposed))
    skipped = []
    if unregistered:
        message = (f"{source}: {len(unregistered)} of {len(on_disk)} images are not registered in the model "
                   f"(first: {unregistered[0]})")
        require(allow_unregistered, message + "; re-run mapping, remove them, or pass --allow_unregistered")
        skipped += [f"{name}: not registered" for name in unregistered]
    if missing:
        require(skip_missing, f"{source}: {len(missing)} registered images are missing from {image_dir} "
                              f"(first: {missing[0]}); pass --image_dir or --skip_missing_images")
        skipped += [f"{name}: image missing" for name in missing]
    require(frames, f"{source}: no registered image has its file in {image_dir}")
    points = colors = errors = track_lengths = None
    if reconstruction.num_points3D() > 0:
        point_ids, values = zip(*reconstruction.points3D.items())
        points = np.array([p.xyz for p in values], dtype=np.float64)
        colors = np.array([p.color for p in values], dtype=np.uint8)
        errors = np.array([p.error if p.has_error() else -1.0 for p in values], dtype=np.float64)
        track_lengths = np.array([p.track.length() for p in values], dtype=np.int64)
        # Each frame's observations as rows of ``points`` (its track ids -> row numbers).
        row = {pid: k for k, pid in enumerate(point_ids)}
        frames = [replace(f, point_ids=np.array([row[p] for p in f.point_ids if p in row], dtype=np.int64))
                  for f in frames]
    else:
        frames = [replace(f, point_ids=None) for f in frames]
    return SourceScene(frames, points, colors, errors, track_lengths, source=source, skipped=skipped)


def find_model(folder: Path, image_dir: Optional[Path]) -> tuple:
    """``(model folder, images folder)`` from a model folder or a project folder."""
    folder = Path(folder)
    require(folder.is_dir(), f"--colmap {folder}: folder does not exist")
    has_model = lambda d: any((d / f"cameras.{ext}").is_file() for ext in ("bin", "txt"))  # noqa: E731
    candidates = [folder, folder / "sparse" / "0", folder / "sparse"]
    model = next((d for d in candidates if has_model(d)), None)
    require(model is not None, f"--colmap {folder}: no COLMAP model (cameras.bin/.txt) here or in sparse/0")
    if image_dir is None:
        guesses = [folder / "images", model.parent / "images", model.parent.parent / "images"]
        image_dir = next((d for d in guesses if d.is_dir()), folder / "images")
    return model, Path(image_dir)


def read_colmap_folder(folder: Path, image_dir: Optional[Path] = None, skip_missing: bool = False,
                       allow_unregistered: bool = False) -> SourceScene:
    """Read a COLMAP model folder (or a project holding ``sparse/0`` and ``images/``)."""
    try:
        import pycolmap
    except ImportError:
        raise UserError("reading COLMAP models needs pycolmap: pip install pycolmap==4.2.1") from None
    model, image_dir = find_model(folder, image_dir)
    try:
        reconstruction = pycolmap.Reconstruction(str(model))
    except Exception as e:  # pycolmap raises plain RuntimeError / ValueError on bad files
        raise UserError(f"{model}: cannot read the COLMAP model ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    return read_colmap_model(reconstruction, image_dir, str(model), skip_missing, allow_unregistered)
