"""Write a parsed capture (:class:`SourceScene`) as a Mega-NeRF dataset.

Every importer ends here: world alignment (up -> -x of DRB, metres), Mega-NeRF's origin and
scale, the train/val split, undistortion and downscaling, then the files of
:mod:`mega_nerf.data.format` plus::

    DATASET/config.yaml     suggested scene options (scene_config), with comments
    DATASET/points3d.pt     sparse points, normalised DRB (when the source has points)
    DATASET/mappings.txt    original_image_name,stem (Mega-NeRF's file)
    DATASET/import.json     how the source world maps to DRB, for tools and for the record
    DATASET/{train,val}/sparse_depth/<stem>.pt
                            sparse depth observations from structure-from-motion tracks (COLMAP
                            sources: --colmap, --images, --video), for --depth_loss_weight

``sparse_depth/<stem>.pt`` (:func:`sparse_depth_observations`) holds, for every sparse point
whose track contains the image and that lies in front of the written camera and inside its
image, re-projected through the *written* camera (undistorted pinhole, downscaled), so the
pixels match the written image, not the raw keypoints::

    'xy'          (K, 2) float32 continuous pixel coordinates at the written size (pixel (i, j)
                  spans [i, i+1) x [j, j+1); its centre, where rays are cast, is at +0.5)
    'z'           (K,) float32 depth along the camera's viewing axis, normalised units
    'distance'    (K,) float32 distance from the camera centre to the point along the unit ray
                  through 'xy', normalised units (what the renderer's 'depth' measures)
    'weight'      (K,) float32 2 exp(-(e / mean e)^2) (DS-NeRF, e = the point's reprojection
                  error) times min(1, (track length - 1) / 2) (two-view points count half)
    'point_index' (K,) int64 rows of points3d.pt
    'W', 'H'      the written image size

Training recomputes the target for the ray through each observation's pixel centre at the
training scale as ``z * |direction|`` (the distance at which that ray reaches the point's depth).

The dataset is built in a sibling staging folder and renamed at the end
(:func:`mega_nerf.io_utils.staged_folder`).
"""
from __future__ import annotations

from collections import Counter
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import List, Optional

import numpy as np
import torch
from tqdm import tqdm

from mega_nerf.data.format import RDF_TO_DRB, opengl_c2w_from_drb_camera, write_coordinates, write_image
from mega_nerf.data.importers.alignment import drb_rotation, estimate_up, normalization
from mega_nerf.data.importers.common import (BACKGROUNDS, Frame, SourceScene, assign_splits, image_size,
                                             load_source_image, natural_key)
from mega_nerf.data.importers.scene_config import ScenePlan, config_yaml, plan_scene
from mega_nerf.data.importers.undistort import Undistorter
from mega_nerf.errors import UserError, require
from mega_nerf.io_utils import atomic_torch_save, atomic_write_json, atomic_write_text, staged_folder


@dataclass
class ImportOptions:
    """Choices the user makes; ``None`` means: take it from the source or estimate it."""

    val_every: int = 8
    val_names: Optional[List[str]] = None  # explicit validation images (--split_file)
    downscale: int = 1
    up: Optional[np.ndarray] = None  # (3,) world up
    metres_per_unit: Optional[float] = None
    background: str = "white"
    scene_kind: str = "auto"
    progress: bool = True


@dataclass
class ImportSummary:
    output: Path
    num_train: int
    num_val: int
    sizes: List[tuple]  # distinct (W, H) written
    origin_drb: np.ndarray
    pose_scale_factor: float
    up: np.ndarray
    plan: ScenePlan
    num_points: int
    notes: List[str] = field(default_factory=list)


@dataclass
class AlignedScene:
    """The capture in metric DRB.  ``rotations``: (N, 3, 3) OpenCV camera axes as columns."""

    positions: np.ndarray  # (N, 3)
    rotations: np.ndarray  # (N, 3, 3)
    points: Optional[np.ndarray]  # (P, 3)
    world_to_drb: np.ndarray  # (3, 3), includes metres_per_unit
    up: np.ndarray  # (3,) source world


def align(scene: SourceScene, up: Optional[np.ndarray], metres_per_unit: float) -> AlignedScene:
    """Rotate the source world so up is -x (DRB) and scale it to metres."""
    c2w = np.stack([f.c2w for f in scene.frames])
    up = up if up is not None else scene.up if scene.up is not None else estimate_up(c2w)
    rotation = drb_rotation(up)
    world_to_drb = metres_per_unit * rotation
    points = None if scene.points is None else scene.points @ world_to_drb.T
    return AlignedScene(c2w[:, :, 3] @ world_to_drb.T, rotation @ c2w[:, :, :3], points, world_to_drb, up)


def scene_content(scene: SourceScene, aligned: AlignedScene) -> tuple:
    """``(samples (P, 3) metric DRB or None, description, measured)`` of where the scene's content is.

    ``measured``: the samples come from observations (points, depth bounds), not a declared box.
    """
    if aligned.points is not None and len(aligned.points) >= 4:
        return aligned.points, f"{len(aligned.points)} sparse points", True
    if scene.depth_bounds is not None:
        # Frustum corners and centres at each view's near and far depth (z-depth, like LLFF's bounds).
        samples = []
        for frame, R, o, (near, far) in zip(scene.frames, aligned.rotations, aligned.positions,
                                            scene.depth_bounds * np.linalg.norm(aligned.world_to_drb[0])):
            cam = frame.camera
            xs = (np.array([0, cam.width / 2, cam.width]) - cam.cx) / cam.fx
            ys = (np.array([0, cam.height / 2, cam.height]) - cam.cy) / cam.fy
            rays = np.array([[x, y, 1.0] for x in xs for y in ys]) @ R.T  # z-depth 1
            samples += [o + rays * near, o + rays * far]
        return np.concatenate(samples), "LLFF depth bounds (view frusta between each view's near and far)", True
    if scene.foreground_box is not None:
        lo, hi = scene.foreground_box
        corners = np.array(np.meshgrid(*zip(lo, hi), indexing="ij")).reshape(3, -1).T
        return corners @ aligned.world_to_drb.T, "the source's scene box (Instant-NGP aabb_scale)", False
    return None, "the cameras alone (no sparse points, depth bounds or scene box)", False


def point_weights(scene: SourceScene) -> Optional[np.ndarray]:
    """(P,) confidence of each sparse point (see the module docstring), or None without points."""
    if scene.points is None:
        return None
    weights = np.ones(len(scene.points))
    if scene.point_errors is not None:
        errors = np.asarray(scene.point_errors, dtype=np.float64)
        known = errors >= 0
        mean = errors[known].mean() if known.any() else 0.0
        if mean > 0:
            weights = np.where(known, 2 * np.exp(-(errors / mean) ** 2), 1.0)
    if scene.point_track_lengths is not None:
        weights = weights * np.clip((np.asarray(scene.point_track_lengths) - 1) / 2, 0.0, 1.0)
    return weights


def sparse_depth_observations(points_norm: np.ndarray, point_ids: np.ndarray, weights: np.ndarray,
                              rotation: np.ndarray, position_norm: np.ndarray, camera) -> dict:
    """The ``sparse_depth/<stem>.pt`` record of one image (see the module docstring).

    Args:
        points_norm: (P, 3) normalised DRB points; point_ids: (K,) rows this image observes;
        weights: (P,); rotation: (3, 3) OpenCV camera axes (columns) in DRB; position_norm: (3,)
        normalised camera centre; camera: the written pinhole :class:`Camera`.
    """
    ids = np.asarray(point_ids, dtype=np.int64)
    cam = (points_norm[ids] - position_norm) @ rotation  # OpenCV camera frame (x right, y down, z forward)
    z = cam[:, 2]
    front = z > 1e-9
    safe_z = np.where(front, z, 1.0)
    xy = np.stack([camera.fx * cam[:, 0] / safe_z + camera.cx, camera.fy * cam[:, 1] / safe_z + camera.cy], -1)
    keep = (front & (xy[:, 0] >= 0) & (xy[:, 0] < camera.width) & (xy[:, 1] >= 0) & (xy[:, 1] < camera.height)
            & (weights[ids] > 0))
    return {"xy": torch.from_numpy(xy[keep]).float(), "z": torch.from_numpy(z[keep]).float(),
            "distance": torch.from_numpy(np.linalg.norm(cam[keep], axis=-1)).float(),
            "weight": torch.from_numpy(weights[ids][keep]).float(),
            "point_index": torch.from_numpy(ids[keep]), "W": camera.width, "H": camera.height}


def fit_cameras_to_images(frames: List[Frame]) -> tuple:
    """``(frames, notes)``: cameras rescaled to their images' size when a model was made on
    uniformly resized copies (e.g. SfM at half size).  Reads one image per camera; images of
    mixed sizes under one camera are caught when each is loaded."""
    fitted, notes = {}, []
    for frame in frames:
        cam = frame.camera
        if cam in fitted:
            continue
        w, h = image_size(frame.image_path)
        fitted[cam] = cam
        if (w, h) != (cam.width, cam.height):
            require(abs(w / h - cam.width / cam.height) < 0.005 * cam.width / cam.height,
                    f"{frame.image_path}: image is {w}x{h} but its intrinsics are for {cam.width}x{cam.height} "
                    f"(another aspect ratio); the model and the images do not belong together")
            sx, sy = w / cam.width, h / cam.height
            fitted[cam] = replace(cam, width=w, height=h, fx=cam.fx * sx, fy=cam.fy * sy, cx=cam.cx * sx,
                                  cy=cam.cy * sy)
            notes.append(f"intrinsics for {cam.width}x{cam.height} scaled to the {w}x{h} images")
    return [replace(f, camera=fitted[f.camera]) for f in frames], notes


def write_dataset(scene: SourceScene, output: Path, options: Optional[ImportOptions] = None,
                  staging: Optional[Path] = None) -> ImportSummary:
    """Write ``scene`` as a Mega-NeRF dataset at ``output`` (which must not exist or be empty).

    Frames are ordered by natural name order; stems are ``000000, 000001, ...`` in that
    order (as Mega-NeRF's converter names them), so appearance indices follow it.

    ``staging``: a staging folder of ``output`` the caller already holds (``staged_folder``,
    e.g. with structure-from-motion files in it); the files go there and the caller renames it.
    """
    options = options or ImportOptions()
    output = Path(output)
    require(options.background in BACKGROUNDS, f"--background must be one of {sorted(BACKGROUNDS)}")
    require(len(scene.frames) > 0, f"{scene.source}: no posed images to import")
    order = sorted(range(len(scene.frames)), key=lambda i: natural_key(scene.frames[i].name))
    frames = [scene.frames[i] for i in order]
    names = [f.name for f in frames]
    duplicate = [n for n, c in Counter(names).items() if c > 1]
    require(not duplicate, f"{scene.source}: image '{duplicate[0] if duplicate else ''}' appears twice")
    frames, notes = fit_cameras_to_images(frames)
    scene = SourceScene(**{**scene.__dict__, "frames": frames,
                           "depth_bounds": None if scene.depth_bounds is None else scene.depth_bounds[order]})
    val_names = options.val_names if options.val_names is not None else scene.val_names
    splits = assign_splits(names, val_names, options.val_every)

    metres = options.metres_per_unit or scene.metres_per_unit
    aligned = align(scene, options.up, metres or 1.0)
    content, content_description, measured = scene_content(scene, aligned)
    origin, scale = normalization(aligned.positions, content if measured else None)
    forward = aligned.rotations[:, :, 2]
    half_fov = np.array([[np.arctan(0.5 * f.camera.width / f.camera.fx),
                          np.arctan(0.5 * f.camera.height / f.camera.fy)] for f in frames])
    plan = plan_scene(aligned.positions, forward, content, options.scene_kind, half_fov)
    plan.notes[:0] = scene.notes
    notes += scene.notes

    undistorter = Undistorter(options.downscale)
    sizes, any_alpha = set(), False
    weights = point_weights(scene)
    points_norm = None if aligned.points is None else (aligned.points - origin) / scale
    with nullcontext(staging) if staging is not None else staged_folder(output) as staging:
        write_coordinates(staging, origin, scale)
        for split in ("train", "val"):  # load_dataset expects both, also without validation images
            for sub in ("rgbs", "metadata"):
                (staging / split / sub).mkdir(parents=True, exist_ok=True)
        for index, (frame, split, R, position) in enumerate(tqdm(
                list(zip(frames, splits, aligned.rotations, aligned.positions)), desc="images", unit="img",
                disable=not options.progress)):
            rgb, had_alpha = load_source_image(frame.image_path, options.background)
            any_alpha |= had_alpha
            h, w = rgb.shape[:2]
            cam = frame.camera
            if (w, h) != (cam.width, cam.height):
                sharing = sum(f.camera == cam for f in frames)
                raise UserError(f"{frame.image_path}: image is {w}x{h} but the intrinsics it shares with "
                                f"{sharing - 1} other images are for {cam.width}x{cam.height}; images that share "
                                f"intrinsics must all have one size")
            target = undistorter.target(cam)
            sizes.add((target.width, target.height))
            rotation_drb = torch.from_numpy(R @ RDF_TO_DRB.double().numpy())
            c2w = opengl_c2w_from_drb_camera(rotation_drb, torch.from_numpy((position - origin) / scale))
            suffix = ".jpg" if frame.image_path.suffix.lower() in (".jpg", ".jpeg") else ".png"
            write_image(staging, split, f"{index:06d}", undistorter(rgb, cam), target.intrinsics, c2w, suffix)
            if frame.point_ids is not None and points_norm is not None:
                (staging / split / "sparse_depth").mkdir(exist_ok=True)
                atomic_torch_save(sparse_depth_observations(points_norm, frame.point_ids, weights, R,
                                                            (position - origin) / scale, target),
                                  staging / split / "sparse_depth" / f"{index:06d}.pt")
        if aligned.points is not None:
            saved = {"xyz": torch.from_numpy(points_norm).float()}
            if scene.point_colors is not None:
                saved["rgb"] = torch.from_numpy(np.asarray(scene.point_colors, dtype=np.uint8))
            atomic_torch_save(saved, staging / "points3d.pt")
        atomic_write_text("".join(f"{n},{i:06d}\n" for i, n in enumerate(names)), staging / "mappings.txt")
        val_scale = next(f for f in (4, 2, 1) if all(W % f == 0 and H % f == 0 for W, H in sizes))
        atomic_write_text(config_yaml(plan, origin, scale, aligned.positions, content_description, scene.source,
                                      metres is not None, val_scale if plan.kind == "aerial" else 1,
                                      options.background if any_alpha else None), staging / "config.yaml")
        atomic_write_json({
            "source": scene.source, "up_in_source": aligned.up.tolist(),
            "world_to_drb": aligned.world_to_drb.tolist(),
            "note": "metric DRB = world_to_drb @ source world point; normalised = (DRB - origin_drb) / pose_scale_factor",
            "metres_per_unit": metres, "origin_drb": origin.tolist(), "pose_scale_factor": scale,
            "downscale": options.downscale, "scene_kind": plan.kind,
            "ray_altitude_range": plan.ray_altitude_range,
            "val": [n for n, s in zip(names, splits) if s == "val"],
        }, staging / "import.json")
    return ImportSummary(output, splits.count("train"), splits.count("val"), sorted(sizes), origin, scale,
                         aligned.up, plan, 0 if aligned.points is None else len(aligned.points), notes)
