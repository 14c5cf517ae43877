"""scripts/plot_scene.py: the picture of where the scene sits, and the checks behind it."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers_pipeline import POSE_SCALE_FACTOR, make_nadir_dataset, write_config  # noqa: E402

from mega_nerf.data.importers.cli import main as prepare_main  # noqa: E402
from mega_nerf.config import parse  # noqa: E402
from mega_nerf.data.scene_check import (cameras_per_cell, check_dataset, check_parser, frame_info,  # noqa: E402
                                        load_scene_inputs)
from mega_nerf.data.scene_plot import _frusta  # noqa: E402
from mega_nerf.data.scene_plot import main as plot_main  # noqa: E402
from mega_nerf.io_utils import atomic_torch_save  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PLOT = REPO / "scripts" / "plot_scene.py"


def ground_and_roofs(rng, count: int = 2000, roof_fraction: float = 0.1, roof_altitude: float = 10.0) -> torch.Tensor:
    """(P, 3) normalised DRB points under the nadir grid of ``make_nadir_dataset`` (origin 0, scale
    100): ground at altitude -30 m (x = 30) and a fraction of roof points at ``roof_altitude``."""
    yz = rng.uniform(-0.5, 0.5, size=(count, 2))
    x = np.full(count, 30.0)
    roofs = rng.random(count) < roof_fraction
    x[roofs] = -roof_altitude
    x += rng.normal(0, 0.3, count)
    return torch.tensor(np.column_stack([x / POSE_SCALE_FACTOR, yz]), dtype=torch.float32)


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """A nadir dataset (cameras at altitude 50 m) with sparse points; its config's altitude range
    [-20, 40] (altitude 20 down to -40 m) brackets them."""
    root = tmp_path_factory.mktemp("scene_plot")
    info = make_nadir_dataset(root / "ds", n_images=9, W=16, H=12)
    rng = np.random.default_rng(0)
    atomic_torch_save({"xyz": ground_and_roofs(rng),
                       "rgb": torch.from_numpy(rng.integers(0, 256, (2000, 3), dtype=np.uint8))},
                      info["path"] / "points3d.pt")
    return info


def check(info, config, *extra):
    return check_dataset(["--config_file", str(config), "--dataset_path", str(info["path"]), *map(str, extra)])


def test_png_and_summary_are_written(scene, tmp_path, capsys):
    output = tmp_path / "pictures" / "scene.png"
    plot_main(["--config_file", str(scene["config"]), "--dataset_path", str(scene["path"]), "--grid_dim", "2", "2",
               "--output", str(output)])
    printed = capsys.readouterr().out
    assert str(output) in printed and "ray_altitude_range" in printed
    image = cv2.imread(str(output))
    assert image is not None and image.shape[0] > 600 and image.shape[1] > 1000
    assert output.stat().st_size > 30_000
    # Not a blank canvas: many colours (points, cells, frusta, text).
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 200
    assert not list(output.parent.glob(".*.tmp"))  # written atomically, no leftovers
    summary = json.loads((tmp_path / "pictures" / "scene_check.json").read_text())
    assert summary["warnings"] == []
    assert summary["points"]["count"] == 2000
    assert summary["ray_altitude_range"]["altitude"] == pytest.approx([20.0, -40.0])
    assert summary["camera_altitude"]["median"] == pytest.approx(50.0)
    assert summary["cells"]["count"] == 4 and summary["cells"]["unseen"] == []


def test_no_warnings_when_everything_fits(scene):
    report = check(scene, scene["config"], "--grid_dim", 2, 2)
    assert report.warnings == [], report.warnings
    points = report.summary["points"]
    assert points["above_top_fraction"] == 0 and points["below_ground_fraction"] == 0
    assert points["altitude_percentiles"]["50"] == pytest.approx(-30, abs=1)
    assert all(n > 0 for n in report.summary["cells"]["cameras_per_cell"])


def test_warns_when_the_top_plane_cuts_roofs(scene, tmp_path):
    # Top at altitude 5 m: the roofs at 10 m (10 % of the points) are cut off.
    config = write_config(tmp_path / "low_top.yaml", (-5.0, 40.0))
    report = check(scene, config)
    assert report.summary["points"]["above_top_fraction"] == pytest.approx(0.1, abs=0.03)
    [warning] = [w for w in report.warnings if "above the top plane" in w]
    assert "roofs" in warning and "lower the first value" in warning


def test_warns_when_points_are_below_the_ground_plane(scene, tmp_path):
    config = write_config(tmp_path / "high_ground.yaml", (-20.0, 25.0))  # ground at altitude -25 m, points at -30
    report = check(scene, config)
    assert any("below the ground plane" in w and "raise the second value" in w for w in report.warnings)


def test_warns_when_cameras_are_below_the_ground(scene, tmp_path):
    # Altitude range given as altitudes instead of DRB x: [top, ground] = [-80, -60] puts the ground
    # at altitude 60 m, above the cameras at 50 m.
    config = write_config(tmp_path / "upside_down.yaml", (-80.0, -60.0))
    report = check(scene, config)
    [warning] = [w for w in report.warnings if "cameras are below the ground plane" in w]
    assert warning.startswith("9 of 9 cameras")


def test_warns_about_cells_no_camera_sees(scene, tmp_path):
    masks = tmp_path / "masks"
    atomic_torch_save({"origin_drb": torch.zeros(3), "pose_scale_factor": POSE_SCALE_FACTOR,
                       "centroids": torch.tensor([[0.0, 0.0, 0.0], [0.0, 5.0, 5.0]]), "grid_dim": [1, 2],
                       "cell_pixel_counts": torch.tensor([1000, 0])}, masks / "params.pt")
    report = check(scene, scene["config"], "--mask_path", masks)
    assert report.summary["cells"]["unseen"] == [1]
    assert any("cell 1 of 2 is seen by no camera" in w for w in report.warnings)
    # Without params.pt's pixel counts the coarse ray test (the mask stage's, on fewer rays) finds the same.
    inputs = load_scene_inputs(parse(check_parser(), ["--config_file", str(scene["config"]), "--dataset_path",
                                                      str(scene["path"]), "--mask_path", str(masks)]))
    counts = cameras_per_cell(inputs.dataset, inputs.bounds, inputs.centroids, 1.15, False)
    assert counts.tolist() == [9, 0]


def test_warns_when_masks_belong_to_another_dataset(scene, tmp_path):
    masks = tmp_path / "masks"
    atomic_torch_save({"origin_drb": torch.zeros(3), "pose_scale_factor": 50.0, "ray_altitude_range": [-0.2, 0.4],
                       "centroids": torch.zeros(1, 3), "grid_dim": [1, 1], "cell_pixel_counts": torch.tensor([5])},
                      masks / "params.pt")
    report = check(scene, scene["config"], "--mask_path", masks)
    [warning] = report.warnings
    assert "does not match" in warning and "pose_scale_factor 50" in warning


def test_frusta_of_nadir_cameras_point_down(scene):
    inputs = load_scene_inputs(parse(check_parser(), ["--config_file", str(scene["config"]), "--dataset_path",
                                                      str(scene["path"])]))
    apex, corners, is_val = _frusta(inputs, 5.0)
    assert apex[:, 0] == pytest.approx(-50.0)  # metric DRB x of altitude 50 m
    assert np.allclose(corners[..., 0], -45.0)  # 5 m below, all four corners
    assert is_val.sum() == len(inputs.dataset.val)


def test_axis_names_from_import_json(tmp_path):
    enu = {"metres_per_unit": 2.0, "world_to_drb": (2 * np.array([[0, 0, -1], [1, 0, 0], [0, -1, 0]])).tolist()}
    (tmp_path / "import.json").write_text(json.dumps(enu))
    assert frame_info(tmp_path).enu and frame_info(tmp_path).unit == "m"
    (tmp_path / "import.json").write_text(json.dumps({"metres_per_unit": None, "world_to_drb": enu["world_to_drb"]}))
    info = frame_info(tmp_path)
    assert not info.enu and info.unit == "units"


def test_prepare_dataset_writes_the_picture(tmp_path, capsys):
    """The importer ends with DATASET/scene.png and prints its path."""
    source = tmp_path / "ring"
    (source / "train").mkdir(parents=True)
    frames = []
    for k in range(8):
        az = 2 * np.pi * k / 8
        position = 4 * np.array([np.cos(az) * 0.8, np.sin(az) * 0.8, 0.6 + 0.05 * (k % 2)])
        back = position / np.linalg.norm(position)
        right = np.cross([0, 0, 1.0], back)
        right /= np.linalg.norm(right)
        c2w = np.concatenate([np.stack([right, np.cross(back, right), back], 1), position[:, None]], 1)
        cv2.imwrite(str(source / "train" / f"r_{k}.png"), np.full((12, 16, 3), 90 + 10 * k, np.uint8))
        frames.append({"file_path": f"./train/r_{k}", "transform_matrix": np.vstack([c2w, [0, 0, 0, 1]]).tolist()})
    (source / "transforms.json").write_text(json.dumps({"fl_x": 14.0, "fl_y": 14.0, "cx": 8, "cy": 6, "w": 16,
                                                         "h": 12, "aabb_scale": 1, "frames": frames}))
    output = tmp_path / "dataset"
    prepare_main(["--transforms", str(source / "transforms.json"), "--output", str(output), "--quiet"])
    printed = capsys.readouterr().out
    assert f"picture: {output / 'scene.png'}" in printed
    assert cv2.imread(str(output / "scene.png")) is not None
    summary = json.loads((output / "scene_check.json").read_text())
    assert summary["train_images"] + summary["val_images"] == 8 and summary["foreground"]["kind"] == "box"


def run(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(PLOT), *map(str, args)], capture_output=True, text=True, cwd=REPO,
                          timeout=120)


def assert_one_line_error(proc: subprocess.CompletedProcess, needle: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], proc.stderr


def test_missing_dataset_is_one_line_exit_2(scene, tmp_path):
    proc = run("--config_file", scene["config"], "--dataset_path", tmp_path / "nope", "--output", tmp_path / "a.png")
    assert_one_line_error(proc, "dataset folder does not exist")
    assert not (tmp_path / "a.png").exists()


def test_missing_config_is_one_line_exit_2(scene, tmp_path):
    proc = run("--config_file", tmp_path / "nope.yaml", "--dataset_path", scene["path"], "--output", tmp_path / "a.png")
    assert_one_line_error(proc, "config file does not exist")
    assert not (tmp_path / "a.png").exists()
