"""scripts/prepare_dataset.py: COLMAP, transforms.json and LLFF captures to the Mega-NeRF layout.

Small generated captures (a z-up ENU "city block" seen from a drone, an object ring) check the
geometry end to end through our own rays; bad input must fail with one line and touch nothing.
"""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

from mega_nerf.config import train_parser
from mega_nerf.data.format import load_dataset
from mega_nerf.data.importers.cli import main as prepare_main
from mega_nerf.data.importers.alignment import estimate_up
from mega_nerf.data.importers.common import Camera
from mega_nerf.data.importers.undistort import Undistorter
from mega_nerf.errors import EXIT_USER_ERROR, cli_entry
from mega_nerf.geometry.bounds import scene_bounds_from_args
from mega_nerf.geometry.rays import camera_directions, world_rays

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "prepare_dataset.py"
SHARED = REPO.parent / "shared" / "data"
HAS_PYCOLMAP = importlib.util.find_spec("pycolmap") is not None
needs_pycolmap = pytest.mark.skipif(not HAS_PYCOLMAP, reason="COLMAP importer needs pycolmap (pip install pycolmap==4.2.1)")

W, H = 96, 72
ROOF_M = 6.0  # tallest structure, ENU metres
FLIGHT_M = 30.0


# ----------------------------------------------------------------------------------------------
# Generated captures


def nadir_c2w(position, yaw_deg, tilt_deg, tilt_axis_deg) -> np.ndarray:
    """(3, 4) OpenCV camera-to-world looking down from ``position`` (ENU), slightly tilted."""
    yaw = np.radians(yaw_deg)
    right = np.array([np.cos(yaw), np.sin(yaw), 0.0])
    forward = np.array([0.0, 0.0, -1.0])
    R = np.stack([right, np.cross(forward, right), forward], axis=1)
    a, t = np.radians(tilt_axis_deg), np.radians(tilt_deg)
    axis = np.array([np.cos(a), np.sin(a), 0.0])
    K = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    tilt = np.eye(3) + np.sin(t) * K + (1 - np.cos(t)) * K @ K
    return np.concatenate([tilt @ R, np.asarray(position, float)[:, None]], axis=1)


def aerial_points(rng) -> np.ndarray:
    ground = rng.uniform([-25, -25, 0], [25, 25, 0.3], (400, 3))
    roof = rng.uniform([-6, -6, ROOF_M - 0.2], [0, 0, ROOF_M], (60, 3))
    return np.concatenate([ground, roof])


def aerial_poses() -> list:
    poses, k = [], 0
    for x in (-10, 0, 10):
        for y in (-10, 0, 10):
            poses.append(nadir_c2w([x, y, FLIGHT_M + 0.2 * k], 90 * k, 4 + k % 3, 40 * k))
            k += 1
    return poses


def observe(camera, c2w: np.ndarray, points: np.ndarray):
    """``(point indices, pixels (K, 2))`` of points in front of the camera and inside it."""
    cam = (points - c2w[:, 3]) @ c2w[:, :3]
    front = np.flatnonzero(cam[:, 2] > 0.1)
    xy = camera.img_from_cam(cam[front])
    inside = (xy[:, 0] > 1) & (xy[:, 0] < camera.width - 1) & (xy[:, 1] > 1) & (xy[:, 1] < camera.height - 1)
    return front[inside], xy[inside]


def write_colmap_text(folder: Path, model: str, params, poses, points, names=None, extra_images=()) -> dict:
    """A COLMAP text model plus grey images; returns ``{name: (point indices, pixels)}``."""
    import pycolmap
    sparse = folder / "sparse" / "0"
    images = folder / "images"
    sparse.mkdir(parents=True)
    images.mkdir()
    camera = pycolmap.Camera(model=model, width=W, height=H, params=list(params))
    (sparse / "cameras.txt").write_text(f"1 {model} {W} {H} {' '.join(map(str, params))}\n")
    names = names or [f"IMG_{i:04d}.png" for i in range(len(poses))]
    observations, tracks, lines = {}, {i: [] for i in range(len(points))}, []
    for image_id, (name, c2w) in enumerate(zip(names, poses), start=1):
        R_w2c = c2w[:, :3].T
        t = -R_w2c @ c2w[:, 3]
        qx, qy, qz, qw = pycolmap.Rotation3d(R_w2c).quat
        idx, xy = observe(camera, c2w, points)
        observations[name] = (idx, xy)
        lines.append(f"{image_id} {qw} {qx} {qy} {qz} {t[0]} {t[1]} {t[2]} 1 {name}")
        lines.append(" ".join(f"{u} {v} {p + 1}" for (u, v), p in zip(xy, idx)))
        for k, p in enumerate(idx):
            tracks[p].append(f"{image_id} {k}")
        cv2.imwrite(str(images / name), np.full((H, W, 3), 128, np.uint8))
    (sparse / "images.txt").write_text("\n".join(lines) + "\n")
    (sparse / "points3D.txt").write_text("".join(
        f"{p + 1} {x} {y} {z} 200 100 50 0.1 {' '.join(tracks[p])}\n"
        for p, (x, y, z) in enumerate(points) if tracks[p]))
    for name in extra_images:
        cv2.imwrite(str(images / name), np.full((H, W, 3), 128, np.uint8))
    return {"camera": camera, "observations": observations, "points": points, "poses": poses}


def ring_poses(count: int, radius: float = 4.0, elevation_deg: float = 30.0) -> list:
    """OpenGL camera-to-world matrices on a ring around the origin of a z-up world, looking at it."""
    poses = []
    for k in range(count):
        az, el = 2 * np.pi * k / count, np.radians(elevation_deg + 10 * (k % 3))
        position = radius * np.array([np.cos(az) * np.cos(el), np.sin(az) * np.cos(el), np.sin(el)])
        back = position / np.linalg.norm(position)
        right = np.cross([0, 0, 1.0], back)
        right /= np.linalg.norm(right)
        poses.append(np.concatenate([np.stack([right, np.cross(back, right), back], 1), position[:, None]], 1))
    return poses


def project_opengl(c2w: np.ndarray, fx, fy, cx, cy, X: np.ndarray) -> np.ndarray:
    cam = (X - c2w[:, 3]) @ c2w[:, :3]
    return np.stack([fx * cam[:, 0] / -cam[:, 2] + cx, -fy * cam[:, 1] / -cam[:, 2] + cy], -1)


def write_transforms(folder: Path, count: int = 12, sizes=None, alpha: bool = True) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train").mkdir()
    poses = ring_poses(count)
    frames = []
    for k, c2w in enumerate(poses):
        w, h = sizes[k] if sizes else (W, H)
        image = np.full((h, w, 4 if alpha else 3), 90, np.uint8)
        if alpha:
            image[..., 3] = 255
            image[: h // 4, : w // 4, 3] = 0  # transparent corner
        cv2.imwrite(str(folder / "train" / f"r_{k}.png"), image)
        frames.append({"file_path": f"./train/r_{k}", "transform_matrix": np.vstack([c2w, [0, 0, 0, 1]]).tolist()})
    meta = {"fl_x": 70.0, "fl_y": 72.0, "cx": 47.0, "cy": 35.5, "w": W, "h": H, "aabb_scale": 1}
    (folder / "transforms.json").write_text(json.dumps({**meta, "frames": frames}))
    return {"poses": poses, **meta}


def prepare(*args) -> Path:
    prepare_main([*map(str, args), "--quiet"])
    return Path(args[args.index("--output") + 1])


def prepare_fails(capsys, *args) -> str:
    """Run the command in-process; it must exit 2 with one 'error:' line and no traceback."""
    with pytest.raises(SystemExit) as exit_info:
        cli_entry(prepare_main)([*map(str, args), "--quiet"])
    assert exit_info.value.code == EXIT_USER_ERROR
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def snapshot(folder: Path) -> dict:
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def import_info(dataset: Path) -> dict:
    info = json.loads((dataset / "import.json").read_text())
    info["world_to_drb"] = np.array(info["world_to_drb"])
    info["origin_drb"] = np.array(info["origin_drb"])
    return info


def to_normalised(info: dict, X: np.ndarray) -> np.ndarray:
    return (X @ info["world_to_drb"].T - info["origin_drb"]) / info["pose_scale_factor"]


def items_by_name(dataset: Path) -> dict:
    ds = load_dataset(dataset)
    stems = dict(line.split(",") for line in (dataset / "mappings.txt").read_text().split())
    by_stem = {m.stem: m for m in ds.items}
    return {name: by_stem[stem] for name, stem in stems.items()}


def ray_miss_px(item, pixels: np.ndarray, X_norm: np.ndarray) -> np.ndarray:
    """Pixels between each point and our ray through its (continuous, +0.5-centred) pixel."""
    uv = torch.from_numpy(pixels - 0.5)
    dirs = camera_directions(uv[:, 0], uv[:, 1], item.intrinsics, center_pixels=True)
    rays_o, rays_d = world_rays(item.c2w.double(), dirs.double())
    offset = torch.from_numpy(X_norm) - rays_o
    along = (offset * rays_d).sum(-1, keepdim=True)
    miss = (offset - along * rays_d).norm(dim=-1) / along[:, 0]
    return (miss * item.intrinsics[0]).numpy()


# ----------------------------------------------------------------------------------------------
# COLMAP


COLMAP_CAMERAS = {
    "SIMPLE_PINHOLE": [70.0, 48.0, 36.0],
    "PINHOLE": [70.0, 72.0, 47.5, 36.5],
    "SIMPLE_RADIAL": [70.0, 48.0, 36.0, -0.08],
    "RADIAL": [70.0, 48.0, 36.0, -0.08, 0.01],
    "OPENCV": [70.0, 72.0, 47.5, 36.5, -0.12, 0.02, 0.002, -0.001],
    "OPENCV_FISHEYE": [60.0, 61.0, 48.2, 35.8, 0.05, -0.01, 0.003, 0.0],
}


@pytest.fixture(scope="module")
def aerial(tmp_path_factory):
    if not HAS_PYCOLMAP:
        pytest.skip("COLMAP importer needs pycolmap (pip install pycolmap==4.2.1)")
    root = tmp_path_factory.mktemp("aerial")
    capture = write_colmap_text(root / "capture", "PINHOLE", COLMAP_CAMERAS["PINHOLE"], aerial_poses(),
                                aerial_points(np.random.default_rng(0)))
    dataset = prepare("--colmap", root / "capture", "--up", "+z", "--metric", "--output", root / "ds")
    return capture, dataset, root


@needs_pycolmap
@pytest.mark.parametrize("model", sorted(COLMAP_CAMERAS))
def test_colmap_points_reproject_through_our_rays(tmp_path, model):
    capture = write_colmap_text(tmp_path / "c", model, COLMAP_CAMERAS[model], aerial_poses(),
                                aerial_points(np.random.default_rng(1)))
    dataset = prepare("--colmap", tmp_path / "c", "--output", tmp_path / "ds", "--downscale", 2)
    info, items = import_info(dataset), items_by_name(dataset)
    checked = 0
    for name, (idx, xy) in capture["observations"].items():
        item = items[name]
        assert (item.W, item.H) == (W // 2, H // 2)
        normalized = capture["camera"].cam_from_img(xy)  # exact inverse of COLMAP's model
        fx, fy, cx, cy = item.intrinsics.double().numpy()
        pixels = np.stack([fx * normalized[:, 0] + cx, fy * normalized[:, 1] + cy], -1)
        miss = ray_miss_px(item, pixels, to_normalised(info, capture["points"][idx]))
        assert miss.max() < 0.02, (name, miss.max())
        checked += len(idx)
    assert checked > 500
    points = torch.load(dataset / "points3d.pt", weights_only=False)
    assert points["xyz"].shape[1] == 3 and points["rgb"].dtype == torch.uint8


@needs_pycolmap
@pytest.mark.parametrize("model", ["OPENCV", "OPENCV_FISHEYE"])
def test_undistorted_images_show_points_where_our_rays_say(tmp_path, model):
    """Blobs drawn at the distorted projections land, after undistortion, on our projections."""
    capture = write_colmap_text(tmp_path / "c", model, COLMAP_CAMERAS[model], aerial_poses()[:2],
                                np.array([[-18.0, -12.0, 0.0], [-3.0, -14.0, 3.0], [-9.0, -5.0, 1.0], [-17.0, 1.0, 5.0],
                                          [-2.0, 2.0, 0.0], [-10.0, 8.0, 2.0]]))
    u, v = np.meshgrid(np.arange(W) + 0.5, np.arange(H) + 0.5)
    for name, (idx, xy) in capture["observations"].items():
        blobs = sum(np.exp(-((u - x) ** 2 + (v - y) ** 2) / (2 * 1.5 ** 2)) for x, y in xy)
        cv2.imwrite(str(tmp_path / "c" / "images" / name), np.repeat((40 + 200 * blobs)[..., None], 3, 2).astype(np.uint8))
    dataset = prepare("--colmap", tmp_path / "c", "--up", "+z", "--output", tmp_path / "ds")
    info, items = import_info(dataset), items_by_name(dataset)
    found = 0
    for name, (idx, xy) in capture["observations"].items():
        item = items[name]
        image = item.load_image().numpy()[..., 0].astype(np.float64) - 40
        fx, fy, cx, cy = item.intrinsics.double().numpy()
        X = to_normalised(info, capture["points"][idx])
        c2w = item.c2w.double().numpy()
        expected = project_opengl(c2w, fx, fy, cx, cy, X)
        for k, (ex, ey) in enumerate(expected):
            others = np.delete(expected, k, axis=0)
            if not (8 < ex < W - 8 and 8 < ey < H - 8) or np.hypot(*(others - [ex, ey]).T).min() < 14:
                continue  # too close to the border or to another blob to measure
            x0, y0 = int(ex), int(ey)
            window = image[y0 - 6:y0 + 7, x0 - 6:x0 + 7].clip(min=0)
            wy, wx = np.mgrid[y0 - 6:y0 + 7, x0 - 6:x0 + 7] + 0.5
            centroid = np.array([(window * wx).sum(), (window * wy).sum()]) / window.sum()
            assert np.hypot(*(centroid - [ex, ey])) < 0.25, (name, centroid, (ex, ey))
            found += 1
    assert found >= 4


@needs_pycolmap
def test_drb_frame_puts_altitude_on_minus_x(aerial):
    capture, dataset, _ = aerial
    ds = load_dataset(dataset)
    info = import_info(dataset)
    metric = ds.camera_positions.double().numpy() * ds.pose_scale_factor + ds.origin_drb.double().numpy()
    enu = np.array([capture["poses"][int(m.stem)][:, 3] for m in ds.train + ds.val])  # stems follow name order
    np.testing.assert_allclose(metric, np.stack([-enu[:, 2], enu[:, 0], -enu[:, 1]], 1), atol=1e-3)
    assert metric[:, 0].max() < -FLIGHT_M + 1e-3  # cameras 30 m up: x = -30
    points = torch.load(dataset / "points3d.pt", weights_only=False)["xyz"].double().numpy()
    points_metric = points * ds.pose_scale_factor + ds.origin_drb.double().numpy()
    assert points_metric[:, 0].min() == pytest.approx(-ROOF_M, abs=0.01)
    assert np.allclose(info["world_to_drb"], [[0, 0, -1], [1, 0, 0], [0, -1, 0]])
    # Every camera looks down: its OpenGL back axis (column 2) points up, i.e. along -x.
    assert all(float(m.c2w[0, 2]) < -0.9 for m in ds.train + ds.val)


@needs_pycolmap
def test_up_estimated_from_cameras_matches_the_world(aerial, tmp_path):
    capture, _, root = aerial
    dataset = prepare("--colmap", root / "capture", "--metric", "--output", tmp_path / "auto")
    up = np.array(import_info(dataset)["up_in_source"])
    assert np.degrees(np.arccos(up @ [0, 0, 1])) < 2.0


def test_up_from_a_flight_with_one_heading():
    """Nadir views along one heading (or back and forth): the flight plane tells up."""
    rng = np.random.default_rng(0)
    for headings in ((30,), (30, 210)):
        poses = np.array([nadir_c2w([x, y, FLIGHT_M + rng.normal(0, 0.2)], headings[k % len(headings)] + rng.normal(0, 3),
                                    rng.uniform(0, 5), rng.uniform(0, 360))
                          for k, (x, y) in enumerate(rng.uniform(-40, 40, (12, 2)))])
        assert np.degrees(np.arccos(estimate_up(poses) @ [0, 0, 1])) < 2.0
    line = np.array([nadir_c2w([x, 0, FLIGHT_M], 30, 0, 0) for x in range(6)])
    with pytest.raises(Exception, match="pass --up"):
        estimate_up(line)


@needs_pycolmap
def test_altitude_range_brackets_ground_and_tops(aerial):
    _, dataset, _ = aerial
    config = yaml.safe_load((dataset / "config.yaml").read_text())
    top, ground = config["ray_altitude_range"]
    assert -FLIGHT_M < top < -ROOF_M  # above the roofs, below the cameras
    assert 0.0 < ground < 5.0  # below the ground (z = 0..0.3 m)
    assert "ground = 99th percentile" in (dataset / "config.yaml").read_text()
    # The config is valid for the training stages and gives bounds that hold the cameras.
    args = train_parser().parse_args(["--config_file", str(dataset / "config.yaml"), "--exp_name", "x",
                                      "--dataset_path", str(dataset)])
    bounds = scene_bounds_from_args(load_dataset(dataset), args, require_altitude_range=True)
    assert bounds.altitude_range[0] < bounds.altitude_range[1]


@needs_pycolmap
def test_val_every_and_split_file_pick_name_sorted_images(aerial, tmp_path):
    _, _, root = aerial
    dataset = prepare("--colmap", root / "capture", "--up", "+z", "--val_every", 3, "--output", tmp_path / "a")
    assert import_info(dataset)["val"] == ["IMG_0000.png", "IMG_0003.png", "IMG_0006.png"]
    split = tmp_path / "val.txt"
    split.write_text("IMG_0004.png\n# comment\nIMG_0007\n")
    dataset = prepare("--colmap", root / "capture", "--split_file", split, "--output", tmp_path / "b")
    assert import_info(dataset)["val"] == ["IMG_0004.png", "IMG_0007.png"]
    assert len(list((dataset / "val" / "rgbs").iterdir())) == 2


@needs_pycolmap
def test_downscale_scales_intrinsics(aerial, tmp_path):
    _, full, root = aerial
    half = prepare("--colmap", root / "capture", "--up", "+z", "--metric", "--downscale", 2, "--output", tmp_path / "h")
    for a, b in zip(load_dataset(full).items, load_dataset(half).items):
        assert (b.W, b.H) == (a.W // 2, a.H // 2) and b.load_image().shape == (H // 2, W // 2, 3)
        torch.testing.assert_close(b.intrinsics, a.intrinsics / 2)
        torch.testing.assert_close(b.c2w, a.c2w)


@needs_pycolmap
def test_colmap_with_unregistered_images_is_refused(tmp_path, capsys):
    write_colmap_text(tmp_path / "c", "PINHOLE", COLMAP_CAMERAS["PINHOLE"], aerial_poses()[:3],
                      aerial_points(np.random.default_rng(2)), extra_images=["IMG_9999.png"])
    line = prepare_fails(capsys, "--colmap", tmp_path / "c", "--output", tmp_path / "ds")
    assert "1 of 4 images are not registered" in line and "IMG_9999.png" in line
    assert not (tmp_path / "ds").exists()
    dataset = prepare("--colmap", tmp_path / "c", "--allow_unregistered", "--output", tmp_path / "ds")
    assert len(load_dataset(dataset).items) == 3


@needs_pycolmap
def test_colmap_without_images_is_refused(tmp_path, capsys):
    write_colmap_text(tmp_path / "c", "PINHOLE", COLMAP_CAMERAS["PINHOLE"], aerial_poses()[:3],
                      aerial_points(np.random.default_rng(3)))
    for image in (tmp_path / "c" / "images").iterdir():
        image.unlink()
    assert "holds no images" in prepare_fails(capsys, "--colmap", tmp_path / "c", "--output", tmp_path / "ds")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]


# ----------------------------------------------------------------------------------------------
# transforms.json and LLFF


def test_transforms_round_trip_rays_hit_the_same_points(tmp_path):
    meta = write_transforms(tmp_path / "src")
    dataset = prepare("--transforms", tmp_path / "src" / "transforms.json", "--output", tmp_path / "ds")
    info, items = import_info(dataset), items_by_name(dataset)
    assert np.degrees(np.arccos(np.array(info["up_in_source"]) @ [0, 0, 1])) < 1.0
    assert info["val"] == ["train/r_0", "train/r_8"]  # natural order: r_8 before r_10
    X = np.random.default_rng(0).uniform(-0.8, 0.8, (50, 3))
    for k, c2w in enumerate(meta["poses"]):
        item = items[f"train/r_{k}"]
        pixels = project_opengl(c2w, meta["fl_x"], meta["fl_y"], meta["cx"], meta["cy"], X)
        assert ray_miss_px(item, pixels, to_normalised(info, X)).max() < 1e-3
        assert tuple(item.load_image()[0, 0].tolist()) == (255, 255, 255)  # transparent: white
        assert tuple(item.load_image()[-1, -1].tolist()) == (90, 90, 90)
    text = (dataset / "config.yaml").read_text()
    assert "object capture" in text
    config = yaml.safe_load(text)
    top, ground = config["ray_altitude_range"]
    half = 0.5 / 0.33  # Instant-NGP's box (aabb_scale 1), padded
    assert top < -half < half < ground
    np.testing.assert_allclose(config["foreground_bounds"], [-half] * 3 + [half] * 3, rtol=0.12)
    args = train_parser().parse_args(["--config_file", str(dataset / "config.yaml"), "--exp_name", "x",
                                      "--dataset_path", str(dataset)])
    assert args.white_background and not args.bg_nerf and len(args.foreground_bounds) == 6
    assert scene_bounds_from_args(load_dataset(dataset), args, require_altitude_range=True).box
    black = prepare("--transforms", tmp_path / "src", "--background", "black", "--output", tmp_path / "black")
    assert tuple(items_by_name(black)["train/r_1"].load_image()[0, 0].tolist()) == (0, 0, 0)


def look_at_c2w(position, target) -> np.ndarray:
    """(3, 4) OpenGL camera-to-world at ``position`` looking at ``target``, level (z-up world)."""
    back = np.asarray(position, float) - target
    back /= np.linalg.norm(back)
    right = np.cross([0, 0, 1.0], back)
    right /= np.linalg.norm(right)
    return np.concatenate([np.stack([right, np.cross(back, right), back], 1), np.asarray(position, float)[:, None]], 1)


def test_transforms_with_a_large_aabb_scale_takes_the_box_from_the_cameras(tmp_path):
    """Instant-NGP's aabb_scale 16 is the region it renders, background included (a cube of
    +-24 units here): the foreground box comes from the cameras instead: around the point they
    look at (two cameras aimed elsewhere do not move it), sized by their field of view, holding
    no camera; photos without alpha keep the background model; the altitude planes bracket it."""
    target = np.array([1.5, -0.7, 0.4])
    poses = []
    for k in range(16):
        az, el = np.radians(360 * k / 16), np.radians(15 + 20 * (k % 2))
        distance = 4.0 + 0.5 * (k % 3)
        poses.append(look_at_c2w(target + distance * np.array([np.cos(az) * np.cos(el), np.sin(az) * np.cos(el),
                                                                np.sin(el)]), target))
    for az in (40, 220):  # aimed 1.8 units above the target (~25 deg off)
        position = target + 4.2 * np.array([np.cos(np.radians(az)), np.sin(np.radians(az)), 0.5])
        poses.append(look_at_c2w(position, target + [0, 0, 1.8]))
    (tmp_path / "src" / "images").mkdir(parents=True)
    frames = []
    for k, c2w in enumerate(poses):
        cv2.imwrite(str(tmp_path / "src" / "images" / f"{k:03d}.jpg"), np.full((H, W, 3), 90, np.uint8))
        frames.append({"file_path": f"images/{k:03d}.jpg", "transform_matrix": np.vstack([c2w, [0, 0, 0, 1]]).tolist()})
    fx, fy = 70.0, 72.0
    (tmp_path / "src" / "transforms.json").write_text(json.dumps(
        {"fl_x": fx, "fl_y": fy, "cx": W / 2, "cy": H / 2, "w": W, "h": H, "aabb_scale": 16, "frames": frames}))
    dataset = prepare("--transforms", tmp_path / "src" / "transforms.json", "--output", tmp_path / "ds")
    info = import_info(dataset)
    text = (dataset / "config.yaml").read_text()
    config = yaml.safe_load(text)
    assert "aabb_scale 16" in text and "estimated from the cameras" in text
    lo, hi = np.array(config["foreground_bounds"]).reshape(2, 3)
    target_drb = info["world_to_drb"] @ target
    cameras_drb = np.stack([c2w[:, 3] for c2w in poses]) @ info["world_to_drb"].T
    half = (hi - lo) / 2
    np.testing.assert_allclose((lo + hi) / 2, target_drb, atol=0.02 * 4)  # centred on the look-at point
    np.testing.assert_allclose(half, half[0], rtol=1e-3)  # a cube
    median = float(np.median(np.linalg.norm(cameras_drb - target_drb, axis=-1)))
    short, long = np.arctan(H / 2 / fy), np.arctan(W / 2 / fx)
    assert median * np.sin(short) * 1.09 < half[0] < median * np.sin(long) * 1.11  # framed by the median camera
    assert not ((cameras_drb > lo) & (cameras_drb < hi)).all(-1).any()  # no camera inside
    top, ground = config["ray_altitude_range"]
    assert top < lo[0] and hi[0] < ground and (cameras_drb[:, 0] < ground).all()
    args = train_parser().parse_args(["--config_file", str(dataset / "config.yaml"), "--exp_name", "x",
                                      "--dataset_path", str(dataset)])
    assert args.bg_nerf and not args.white_background  # real photos: the background model explains the rest
    check = json.loads((dataset / "scene_check.json").read_text())
    assert check["warnings"] == [] and not any("inside the foreground box" in n for n in check["notes"])


def test_transforms_with_mixed_sizes_and_shared_intrinsics_is_refused(tmp_path, capsys):
    write_transforms(tmp_path / "src", count=4, sizes=[(W, H)] * 3 + [(W * 2, H * 2)])
    line = prepare_fails(capsys, "--transforms", tmp_path / "src" / "transforms.json", "--output", tmp_path / "ds")
    assert "r_3.png" in line and f"{W * 2}x{H * 2}" in line and "shares with 3 other images" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]  # no dataset, no staging folder left


def test_transforms_without_images_is_refused(tmp_path, capsys):
    write_transforms(tmp_path / "src", count=3)
    for image in (tmp_path / "src" / "train").iterdir():
        image.unlink()
    line = prepare_fails(capsys, "--transforms", tmp_path / "src" / "transforms.json", "--output", tmp_path / "ds")
    assert "3 of 3 frames have no image" in line
    line = prepare_fails(capsys, "--transforms", tmp_path / "src" / "transforms.json", "--skip_missing_images",
                         "--output", tmp_path / "ds")
    assert "no posed images" in line


def test_existing_output_is_never_touched(tmp_path):
    write_transforms(tmp_path / "src", count=3)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    before = snapshot(out)
    proc = subprocess.run([sys.executable, str(SCRIPT), "--transforms", str(tmp_path / "src"), "--output", str(out)],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == EXIT_USER_ERROR, proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert proc.stderr.startswith("error: ") and str(out) in proc.stderr and "not empty" in proc.stderr
    assert snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "src"]


def test_undistortion_straightens_lines():
    """Straight 3D lines drawn through distorting cameras come out straight."""
    for fisheye, distortion in ((False, (-0.25, 0.05, 0.001, -0.002)), (True, (0.1, -0.05, 0.01, 0.0))):
        camera = Camera(160, 120, 100.0, 101.0, 80.3, 59.6, distortion, fisheye)
        image = np.full((120, 160, 3), 255, np.uint8)
        rows = (-0.35, 0.0, 0.3)
        K_cv = camera.K - np.array([[0, 0, 0.5], [0, 0, 0.5], [0, 0, 0]])
        for y in rows:
            line = np.stack([np.linspace(-1.2, 1.2, 400), np.full(400, y), np.ones(400)], -1)
            if fisheye:
                xy = cv2.fisheye.projectPoints(line[:, None], np.zeros(3), np.zeros(3), K_cv, np.array(distortion))[0]
            else:
                xy = cv2.projectPoints(line, np.zeros(3), np.zeros(3), K_cv, np.array(distortion))[0]
            cv2.polylines(image, [np.round(xy * 16).astype(np.int32)], False, (0, 0, 0), 1, cv2.LINE_AA, shift=4)
        undistort = Undistorter()
        target = undistort.target(camera)
        assert target.is_pinhole and (target.width, target.height) == (160, 120)

        def worst_residual(img, cam, y):
            dark = 255.0 - img[..., 0]
            centre = cam.fy * y + cam.cy - 0.5  # row (integer-centred) of the straight line
            rows_ = np.arange(img.shape[0])[:, None]
            band = np.abs(rows_ - centre) < 6
            cols = np.arange(30, 130)
            weights = (dark * band)[:, cols]
            ok = weights.sum(0) > 50
            centroid = (weights * rows_).sum(0)[ok] / weights.sum(0)[ok]
            fit = np.polyval(np.polyfit(cols[ok], centroid, 1), cols[ok])
            return np.abs(centroid - fit).max()

        straight = undistort(image, camera)
        for y in rows[::2]:  # the outer lines bend most
            assert worst_residual(straight, target, y) < 0.3
            assert worst_residual(image, camera, y) > 1.0  # the test would notice no undistortion


def test_llff_round_trip(tmp_path):
    poses = ring_poses(9, elevation_deg=20)
    (tmp_path / "src" / "images").mkdir(parents=True)
    rows = []
    for k, c2w in enumerate(poses):
        right, up, back, position = c2w.T
        llff = np.stack([-up, right, back, position, [H, W, 70.0]], 1)  # columns: down, right, back
        rows.append(np.concatenate([llff.ravel(), [2.5, 5.5]]))
        cv2.imwrite(str(tmp_path / "src" / "images" / f"{k:03d}.jpg"), np.full((H, W, 3), 100, np.uint8))
    np.save(tmp_path / "src" / "poses_bounds.npy", np.array(rows))
    dataset = prepare("--llff", tmp_path / "src", "--output", tmp_path / "ds")
    info, items = import_info(dataset), items_by_name(dataset)
    assert info["val"] == ["000.jpg", "008.jpg"]
    X = np.random.default_rng(0).uniform(-1, 1, (30, 3))
    for k, c2w in enumerate(poses):
        pixels = project_opengl(c2w, 70.0, 70.0, W / 2, H / 2, X)
        assert ray_miss_px(items[f"{k:03d}.jpg"], pixels, to_normalised(info, X)).max() < 1e-3
    assert "LLFF depth bounds" in (dataset / "config.yaml").read_text()


# ----------------------------------------------------------------------------------------------
# Real captures (../shared/data)


@pytest.mark.skipif(not SHARED.is_dir(), reason=f"{SHARED} not present")
def test_real_captures_convert(tmp_path):
    start = time.perf_counter()
    lego = prepare("--transforms", SHARED / "nerf_synthetic_lego_train" / "transforms_train.json",
                   "--val_every", 8, "--downscale", 8, "--output", tmp_path / "lego")
    ds = load_dataset(lego)
    assert (len(ds.train), len(ds.val), ds.train[0].W) == (87, 13, 100)
    # Lego keeps Instant-NGP's box (aabb_scale 1), padded: configs/bench/lego.yaml was tuned with it.
    lego_config = yaml.safe_load((lego / "config.yaml").read_text())
    np.testing.assert_allclose(lego_config["foreground_bounds"], [-1.667] * 3 + [1.667] * 3, atol=2e-3)
    fox = prepare("--transforms", SHARED / "fox" / "transforms.json", "--downscale", 8, "--output", tmp_path / "fox")
    ds = load_dataset(fox)
    assert len(ds.items) == 67
    # The fox's aabb_scale 4 (+-6.06 units, every camera inside) is Instant-NGP's render region: the
    # box comes from the cameras (3.8 .. 6.3 units from the look-at point): +-2.56, no camera inside.
    lo, hi = np.array(yaml.safe_load((fox / "config.yaml").read_text())["foreground_bounds"]).reshape(2, 3)
    cameras = (ds.camera_positions.double() * ds.pose_scale_factor + ds.origin_drb.double()).numpy()
    distance = np.median(np.linalg.norm(cameras - (lo + hi) / 2, axis=-1))
    assert 0.4 < (hi - lo).max() / 2 / distance < 0.6
    assert not ((cameras > lo) & (cameras < hi)).all(-1).any()
    if HAS_PYCOLMAP:
        brighton = prepare("--colmap", SHARED / "brighton_beach_drone", "--up", "+z", "--metric", "--val_every", 6,
                           "--downscale", 8, "--output", tmp_path / "brighton")
        info = import_info(brighton)
        assert info["val"] == ["DJI_0018.JPG", "DJI_0024.JPG", "DJI_0030.JPG"]
        top, ground = yaml.safe_load((brighton / "config.yaml").read_text())["ray_altitude_range"]
        assert -20 < top < -2 and 1.5 < ground < 8  # ground ~0..1.5 m ENU (x ~ -1.5..2), cameras at x ~ -40
        assert info["scene_kind"] == "aerial"
    assert time.perf_counter() - start < 30
