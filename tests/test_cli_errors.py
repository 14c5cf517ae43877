"""Command-line stages fail on user mistakes with exit 2 and one 'error:' line, touching nothing."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers_pipeline import make_nadir_dataset, write_config  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MASKS = REPO / "scripts" / "create_cluster_masks.py"
MERGE = REPO / "scripts" / "merge_submodules.py"
TRAIN = REPO / "mega_nerf" / "train.py"


def run(script: Path, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(script), *map(str, args)], capture_output=True, text=True,
                          cwd=REPO, timeout=120)


def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: "), proc.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def snapshot(folder: Path) -> dict:
    return {p.relative_to(folder): (p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    info = make_nadir_dataset(root / "ds", n_images=6, W=16, H=12)
    masks = root / "masks"
    proc = run(MASKS, "--config", info["config"], "--dataset_path", info["path"], "--output", masks,
               "--grid_dim", 2, 2, "--ray_samples", 32, "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    return info, masks


def test_mask_run_output_is_complete(scene):
    info, masks = scene
    params = torch.load(masks / "params.pt", weights_only=False)
    assert params["grid_dim"] == [2, 2] and len(params["centroids"]) == 4
    assert params["ray_altitude_range"] == pytest.approx([-0.2, 0.4])
    for k in range(4):
        assert sorted(p.name for p in (masks / str(k)).iterdir()) == [f"{s}.pt" for s in info["stems"]]
    assert int(params["cell_pixel_counts"].min()) > 0


def test_grid_dim_zero(scene, tmp_path):
    info, _ = scene
    out = tmp_path / "m"
    proc = run(MASKS, "--config", info["config"], "--dataset_path", info["path"], "--output", out,
               "--grid_dim", 0, 2, "--ray_samples", 32)
    assert_one_line_error(proc, "--grid_dim")
    assert not out.exists()


def test_previous_results_without_resume_are_left_alone(scene):
    info, masks = scene
    before = snapshot(masks)
    assert len(before) == 4 * 6 + 2
    proc = run(MASKS, "--config", info["config"], "--dataset_path", info["path"], "--output", masks,
               "--grid_dim", 2, 2, "--ray_samples", 32)
    assert_one_line_error(proc, str(masks), "--resume")
    assert snapshot(masks) == before
    # --resume with other settings is refused too, still touching nothing
    proc = run(MASKS, "--config", info["config"], "--dataset_path", info["path"], "--output", masks,
               "--grid_dim", 3, 2, "--ray_samples", 32, "--resume")
    assert_one_line_error(proc, str(masks))
    assert snapshot(masks) == before


def test_missing_dataset(tmp_path, scene):
    info, _ = scene
    proc = run(MASKS, "--config", info["config"], "--dataset_path", tmp_path / "nope", "--output", tmp_path / "m",
               "--grid_dim", 2, 2, "--ray_samples", 32)
    assert_one_line_error(proc, str(tmp_path / "nope"))
    assert not (tmp_path / "m").exists()


def test_config_without_altitude_range(tmp_path, scene):
    info, _ = scene
    cfg = write_config(tmp_path / "noalt.yaml", ray_altitude_range=None, extra="near: 1\n")
    proc = run(MASKS, "--config", cfg, "--dataset_path", info["path"], "--output", tmp_path / "m",
               "--grid_dim", 2, 2, "--ray_samples", 32)
    assert_one_line_error(proc, "ray_altitude_range")
    assert not (tmp_path / "m").exists()


def test_merge_refuses_existing_output(scene, tmp_path):
    info, masks = scene
    out = tmp_path / "container.pt"
    out.write_bytes(b"precious")
    before = out.stat().st_mtime_ns
    proc = run(MERGE, "--config", info["config"], "--ckpt_prefix", tmp_path / "exp-", "--centroid_path",
               masks / "params.pt", "--output", out)
    assert_one_line_error(proc, str(out), "--overwrite")
    assert out.read_bytes() == b"precious" and out.stat().st_mtime_ns == before


def test_train_with_missing_cluster_mask_path(scene, tmp_path):
    info, _ = scene
    exp = tmp_path / "exp"
    proc = run(TRAIN, "--config", info["config"], "--exp_name", exp, "--dataset_path", info["path"],
               "--cluster_mask_path", tmp_path / "nomasks" / "0", "--device", "cpu")
    assert_one_line_error(proc, str(tmp_path / "nomasks" / "0"))
    assert not exp.exists()


def test_unreachable_cell_is_reported_and_not_trainable(tmp_path):
    # Two narrow-view cameras at y = -0.5 and y = +0.5: a 3x1 grid puts centroids at y = -1/3, 0, 1/3.
    # Every ray stays within |y| >= 0.39, where the middle centroid is > 1.3x farther than an outer
    # one, so cell 1 gets no pixel.
    info = make_nadir_dataset(tmp_path / "ds", n_images=2, W=16, H=12, focal=64.0,
                              positions=[(-0.5, -0.5, 0.0), (-0.5, 0.5, 0.0)], val_every=2)
    masks = tmp_path / "masks"
    proc = run(MASKS, "--config", info["config"], "--dataset_path", info["path"], "--output", masks,
               "--grid_dim", 3, 1, "--ray_samples", 32, "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    assert "cell 1 is reached by no ray" in proc.stderr
    assert "Traceback" not in proc.stderr
    params = torch.load(masks / "params.pt", weights_only=False)
    counts = params["cell_pixel_counts"].tolist()
    assert counts[1] == 0 and counts[0] > 0 and counts[2] > 0
    assert counts[0] + counts[2] == 2 * 16 * 12  # every pixel goes to exactly one outer cell
    proc = run(TRAIN, "--config", info["config"], "--exp_name", tmp_path / "exp", "--dataset_path", info["path"],
               "--cluster_mask_path", masks / "1", "--device", "cpu")
    assert_one_line_error(proc, "cell 1")
    assert not (tmp_path / "exp").exists()


def test_refine_seams_refuses_untrained_cells_and_missing_masks(scene, tmp_path):
    info, masks = scene
    script = REPO / "scripts" / "refine_seams.py"
    common = ["--config_file", info["config"], "--exp_name", tmp_path / "exp", "--dataset_path", info["path"]]
    assert_one_line_error(run(script, *common, "--cluster_mask_path", masks), "exp-", "no such folder")
    assert_one_line_error(run(script, *common, "--cluster_mask_path", tmp_path / "nowhere"), "params.pt: missing")
    assert not any(tmp_path.iterdir())  # nothing written
    help_text = run(script, "--help")
    assert help_text.returncode == 0 and "--seam_refine_iterations" in help_text.stdout
