"""Read nerfstudio / Instant-NGP / NeRF-synthetic ``transforms.json`` files.

* Poses: ``transform_matrix`` is camera-to-world with OpenGL camera axes.
* Intrinsics: shared at the top level or per frame (frame keys win): ``fl_x``/``fl_y`` or
  ``camera_angle_x``/``camera_angle_y``, ``cx``/``cy`` (default: the image centre), ``w``/``h``
  (default: the first image's size), OpenCV ``k1 k2 p1 p2 [k3]`` or, with ``camera_model:
  OPENCV_FISHEYE`` / ``is_fisheye``, fisheye ``k1..k4``.
* Splits: nerfstudio's ``train_filenames``/``val_filenames``/``test_filenames``; a folder with
  ``transforms_{train,val,test}.json`` (NeRF synthetic) takes validation images from test (or
  val).  A single ``transforms_train.json`` has no split of its own.
* Scene box: Instant-NGP's ``aabb_scale`` (1 when absent in NeRF-synthetic files) with its
  ``scale`` (0.33) and ``offset`` (0.5): the box is ``(0.5 +- aabb_scale / 2 - offset) / scale``
  in the file's world (NGP's axis permutation does not matter for its cube).  Only
  ``aabb_scale`` 1 is the object's box (NeRF synthetic: lego fits in it).  A larger one is the
  region Instant-NGP *renders*, background included (fox: 4, a cube of +-6.06 units that holds
  every camera and the room), so it is not used: the content box then comes from the cameras
  (:func:`mega_nerf.data.importers.scene_config.camera_content`).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import List, Optional

import numpy as np

from mega_nerf.data.format import IMAGE_SUFFIXES
from mega_nerf.data.importers.common import Camera, Frame, SourceScene, image_size, opencv_from_opengl
from mega_nerf.errors import UserError, require

FISHEYE_MODELS = ("OPENCV_FISHEYE",)
INTRINSIC_KEYS = ("w", "h", "fl_x", "fl_y", "camera_angle_x", "camera_angle_y", "cx", "cy", "k1", "k2", "k3",
                  "k4", "p1", "p2", "camera_model", "is_fisheye")


def _load_json(path: Path) -> dict:
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: file does not exist") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not valid JSON ({e})") from None
    require(isinstance(data, dict) and isinstance(data.get("frames"), list) and data["frames"],
            f"{path}: needs a non-empty 'frames' list")
    return data


def _image_path(root: Path, file_path: str) -> Optional[Path]:
    """The image a ``file_path`` names; Blender files leave the extension out."""
    path = root / file_path
    if path.is_file():
        return path
    for suffix in IMAGE_SUFFIXES:
        candidate = path.with_name(path.name + suffix)
        if candidate.is_file():
            return candidate
    return None


def _camera(keys: dict, image_path: Path, where: str) -> Camera:
    """Intrinsics from merged top-level and frame keys."""
    if "w" in keys and "h" in keys:
        W, H = int(keys["w"]), int(keys["h"])
    else:
        W, H = image_size(image_path)
    if "fl_x" in keys:
        fx = float(keys["fl_x"])
    elif "camera_angle_x" in keys:
        fx = 0.5 * W / math.tan(0.5 * float(keys["camera_angle_x"]))
    else:
        raise UserError(f"{where}: no focal length (needs 'fl_x' or 'camera_angle_x')")
    if "fl_y" in keys:
        fy = float(keys["fl_y"])
    elif "camera_angle_y" in keys and "fl_x" not in keys:
        fy = 0.5 * H / math.tan(0.5 * float(keys["camera_angle_y"]))
    else:
        fy = fx
    fisheye = keys.get("camera_model") in FISHEYE_MODELS or bool(keys.get("is_fisheye", False))
    get = lambda k: float(keys.get(k, 0.0))  # noqa: E731
    if fisheye:
        distortion = (get("k1"), get("k2"), get("k3"), get("k4"))
    else:
        distortion = (get("k1"), get("k2"), get("p1"), get("p2")) + ((get("k3"),) if get("k3") else ())
    require(fx > 0 and fy > 0 and W > 0 and H > 0, f"{where}: focal length and image size must be positive")
    return Camera(W, H, fx, fy, float(keys.get("cx", W / 2)), float(keys.get("cy", H / 2)), distortion, fisheye)


def _frames(path: Path, data: dict, skip_missing: bool, skipped: List[str]) -> List[Frame]:
    root = path.parent
    shared = {k: v for k, v in data.items() if k != "frames"}
    cameras, frames, missing = {}, [], []
    for number, item in enumerate(data["frames"]):
        where = f"{path}: frame {number}"
        require(isinstance(item, dict) and "file_path" in item and "transform_matrix" in item,
                f"{where}: needs 'file_path' and 'transform_matrix'")
        name = str(Path(item["file_path"])).removeprefix("./")
        image_path = _image_path(root, item["file_path"])
        if image_path is None:
            missing.append(name)
            continue
        matrix = np.asarray(item["transform_matrix"], dtype=np.float64)
        require(matrix.shape in ((4, 4), (3, 4)) and np.isfinite(matrix).all(),
                f"{where}: 'transform_matrix' must be a finite 4x4 matrix")
        keys = {k: item.get(k, shared.get(k)) for k in INTRINSIC_KEYS if k in item or k in shared}
        signature = tuple(sorted((k, str(v)) for k, v in keys.items()))
        if signature not in cameras:  # images that share intrinsics share one Camera
            cameras[signature] = _camera(keys, image_path, where)
        frames.append(Frame(name, image_path, cameras[signature], opencv_from_opengl(matrix)))
    if missing:
        message = f"{path}: {len(missing)} of {len(data['frames'])} frames have no image (first: {missing[0]})"
        require(skip_missing, message + "; restore them or pass --skip_missing_images")
        skipped.extend(f"{name}: image missing" for name in missing)
    return frames


def _scene_box(data: dict, notes: List[str]) -> Optional[np.ndarray]:
    """(2, 3) Instant-NGP's box when it is the object's box (``aabb_scale`` 1), else None."""
    if "aabb_scale" not in data and "fl_x" in data:
        return None  # not an Instant-NGP / NeRF-synthetic scene: no box convention
    aabb = float(data.get("aabb_scale", 1))
    if aabb > 1:
        half = aabb / 2 / float(data.get("scale", 0.33))
        notes.append(f"Instant-NGP aabb_scale {aabb:g} (a cube of +-{half:.3g} source units) is the region "
                     f"Instant-NGP renders, background included, not the object: the foreground box is "
                     f"estimated from the cameras instead")
        return None
    scale = float(data.get("scale", 0.33))
    offset = np.broadcast_to(np.asarray(data.get("offset", 0.5), dtype=np.float64), (3,))
    return np.stack([(0.5 - aabb / 2 - offset) / scale, (0.5 + aabb / 2 - offset) / scale])


def read_transforms(path: Path, skip_missing: bool = False) -> SourceScene:
    """Parse a ``transforms.json`` file, or a folder holding ``transforms.json`` or
    ``transforms_{train,val,test}.json``, into a :class:`SourceScene`."""
    path = Path(path)
    skipped: List[str] = []
    notes: List[str] = []
    val_names = None
    if path.is_dir():
        if (path / "transforms.json").is_file():
            path = path / "transforms.json"
        else:
            require((path / "transforms_train.json").is_file(),
                    f"--transforms {path}: folder holds neither transforms.json nor transforms_train.json")
            held = path / "transforms_test.json"
            held = held if held.is_file() else path / "transforms_val.json"
            data = _load_json(path / "transforms_train.json")
            frames = _frames(path / "transforms_train.json", data, skip_missing, skipped)
            if held.is_file():
                val = _frames(held, _load_json(held), skip_missing, skipped)
                frames += val
                val_names = [f.name for f in val]
            return SourceScene(frames, foreground_box=_scene_box(data, notes), val_names=val_names,
                               source=str(path), skipped=skipped, notes=notes)
    data = _load_json(path)
    frames = _frames(path, data, skip_missing, skipped)
    if "val_filenames" in data or "test_filenames" in data:
        val_names = [str(Path(n)).removeprefix("./") for key in ("val_filenames", "test_filenames")
                     for n in data.get(key, [])]
    return SourceScene(frames, foreground_box=_scene_box(data, notes), val_names=val_names, source=str(path),
                       skipped=skipped, notes=notes)
