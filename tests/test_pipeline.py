"""End-to-end behaviour on the embedded synthetic city: masks against the exact scene, training,
resume, merge, evaluation, and 1 vs 2 gloo processes giving identical results."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mega_nerf.config import eval_parser, parse, train_parser
from mega_nerf.container.container import load_container
from mega_nerf.data.format import load_dataset
from mega_nerf.geometry.rays import image_rays
from mega_nerf.partition.centroids import routing_weights
from mega_nerf.partition.masks import mask_path, read_mask
from mega_nerf.synthetic.city import write_dataset
from mega_nerf.training.trainer import Trainer, checkpoints

REPO = Path(__file__).resolve().parents[1]
GRID = ["--grid_dim", "2", "2"]
# Small settings so every training run here takes seconds on one core.
TINY_TRAIN = ["--batch_size", "256", "--coarse_samples", "16", "--fine_samples", "16", "--bg_samples", "4",
              "--hash_levels", "6", "--hash_log2_size", "12", "--hash_max_resolution", "256",
              "--layer_dim", "32", "--bg_layer_dim", "32", "--num_chunks", "4", "--num_threads", "1",
              "--log_interval", "10"]


def run(args: list[str], nproc: int = 1, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    prefix = [sys.executable] if nproc == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)]
    return subprocess.run(prefix + args, cwd=REPO, env=env, capture_output=True, text=True, timeout=600, **kwargs)


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("pipeline") / "dataset"
    write_dataset(path, "tiny", seed=3, progress=False)
    return path


@pytest.fixture(scope="module")
def masks(scene: Path) -> dict:
    """The same masks made by one process and by two gloo processes."""
    out = {}
    for nproc in (1, 2):
        target = scene.parent / f"masks_{nproc}"
        result = run(["scripts/create_cluster_masks.py", "--config", str(scene / "config.yaml"), "--dataset_path",
                      str(scene), "--output", str(target), "--ray_samples", "256", *GRID], nproc=nproc)
        assert result.returncode == 0, result.stderr[-2000:]
        out[nproc] = target
    return out


def test_masks_identical_for_one_and_two_processes(scene, masks):
    files = sorted(p.relative_to(masks[1]) for p in masks[1].glob("*/*.pt"))
    assert len(files) == 4 * len(load_dataset(scene).items)
    assert files == sorted(p.relative_to(masks[2]) for p in masks[2].glob("*/*.pt"))
    for rel in files:
        assert torch.equal(read_mask(masks[1] / rel), read_mask(masks[2] / rel)), rel
    p1 = torch.load(masks[1] / "params.pt", weights_only=False)
    p2 = torch.load(masks[2] / "params.pt", weights_only=False)
    assert torch.equal(p1["centroids"], p2["centroids"])
    assert torch.equal(p1["cell_pixel_counts"], p2["cell_pixel_counts"])


def test_masks_contain_every_pixel_whose_surface_lies_in_the_cell(scene, masks):
    """Oracle: the exact depth gives each pixel's surface point; its nearest centroid's mask must
    hold that pixel, and a pixel is never in a cell whose expanded region its ray misses."""
    dataset = load_dataset(scene)
    params = torch.load(masks[1] / "params.pt", weights_only=False)
    centroids = params["centroids"]
    checked = 0
    for item in dataset.items:
        depth = item.load_depth().reshape(-1)
        hit = torch.isfinite(depth)
        rays_o, rays_d = image_rays(item.W, item.H, item.intrinsics, item.c2w)
        points = rays_o + rays_d * (depth / dataset.pose_scale_factor).nan_to_num(posinf=0)[:, None]
        nearest = routing_weights(points, centroids, 1.0, False).argmax(1)
        stack = torch.stack([read_mask(mask_path(masks[1], k, item.stem)).reshape(-1) for k in range(4)], 1)
        assert bool(stack[hit, nearest[hit]].all()), item.stem
        assert bool(stack.any(1).all())  # every pixel belongs to some cell
        checked += int(hit.sum())
    assert checked > 10000
    # Overlap exists (margin 1.15) but cells are far from holding everything.
    counts = params["cell_pixel_counts"].double()
    total = sum(m.W * m.H for m in dataset.items)
    assert counts.sum() > total and bool((counts < 0.9 * total).all())


def train_args(scene: Path, exp: Path, extra: list[str]) -> list[str]:
    return ["--config_file", str(scene / "config.yaml"), "--exp_name", str(exp), "--dataset_path", str(scene),
            *TINY_TRAIN, *extra]


def test_training_lowers_loss_and_reaches_psnr(scene, tmp_path):
    exp = tmp_path / "whole"
    # The first logged loss is the first step's (an untrained model), so the drop is measurable.
    summary = Trainer(parse(train_parser(), train_args(scene, exp, ["--train_iterations", "150",
                                                                    "--ckpt_interval", "150",
                                                                    "--log_interval", "1"]))).train()
    events = list((exp / "tb").glob("events.out.tfevents.*"))
    assert events, "no TensorBoard log"
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(exp / "tb"), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    losses = [e.value for e in acc.Scalars("train/loss")]
    assert losses[-1] < 0.5 * losses[0]
    assert "val/0" in acc.Tags()["images"]
    assert summary["final_train_psnr"] > 18.0
    assert summary["val_psnr_first_image"] > 16.0
    assert summary["chunk_bytes_per_ray"] <= 9
    assert (exp / "models" / "150.pt").exists()


def test_resume_continues_from_checkpoint_exactly(scene, tmp_path):
    common = ["--train_iterations", "16", "--ckpt_interval", "8", "--chunk_paths", str(tmp_path / "chunks")]
    straight = Trainer(parse(train_parser(), train_args(scene, tmp_path / "a", common)))
    straight.train()

    class Crash(Exception):
        pass

    crashing = Trainer(parse(train_parser(), train_args(scene, tmp_path / "b", common)))
    original = crashing.save_checkpoint

    def save_then_crash():
        path = original()
        raise Crash(path)

    crashing.save_checkpoint = save_then_crash
    with pytest.raises(Crash):
        crashing.train()
    assert [i for i, _ in checkpoints(tmp_path / "b")] == [8]

    resumed = Trainer(parse(train_parser(), train_args(scene, tmp_path / "b", common)))
    resumed.train()
    assert resumed.iteration == 16
    a = straight.model.state_dict()
    b = resumed.model.state_dict()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    # A finished run is not trained again.
    again = Trainer(parse(train_parser(), train_args(scene, tmp_path / "b", common)))
    again.train()
    assert again.iteration == 16


@pytest.fixture(scope="module")
def container(scene, masks, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cells")
    for cell in range(4):
        Trainer(parse(train_parser(), train_args(scene, root / f"cell-{cell}", [
            "--train_iterations", "30", "--ckpt_interval", "30", "--chunk_paths", str(root / f"chunks-{cell}"),
            "--cluster_mask_path", str(masks[1] / str(cell))]))).train()
    out = root / "container.pt"
    result = run(["scripts/merge_submodules.py", "--config_file", str(scene / "config.yaml"), "--ckpt_prefix",
                  str(root / "cell-"), "--centroid_path", str(masks[1] / "params.pt"), "--output", str(out),
                  "--train_iterations", "30"])
    assert result.returncode == 0, result.stderr[-2000:]
    return out


def test_container_renders_without_training_state(container):
    model = load_container(container)
    assert len(model.sub_modules) == 4 and model.has_background
    x = torch.rand(100, 3) * 0.2 - 0.1
    d = torch.nn.functional.normalize(torch.randn(100, 3), dim=-1)
    sigma, rgb = model.foreground(x, d, torch.zeros(100, dtype=torch.long))
    assert sigma.shape == (100,) and rgb.shape == (100, 3)
    assert bool(torch.isfinite(sigma).all()) and bool(((rgb >= 0) & (rgb <= 1)).all())


def test_eval_one_and_two_processes_agree(scene, container, tmp_path):
    metrics = {}
    for nproc in (1, 2):
        out = tmp_path / f"eval_{nproc}"
        result = run(["mega_nerf/eval.py", "--config_file", str(scene / "config.yaml"), "--exp_name",
                      str(tmp_path / "exp"), "--dataset_path", str(scene), "--container_path", str(container),
                      "--output_path", str(out), "--coarse_samples", "16", "--fine_samples", "16",
                      "--bg_samples", "4"], nproc=nproc)
        assert result.returncode == 0, result.stderr[-2000:]
        metrics[nproc] = json.loads((out / "metrics.json").read_text())
        n_val = len(load_dataset(scene).val)
        assert metrics[nproc]["images"] == n_val
        assert len(list((out / "images").glob("*.png"))) == n_val
        assert metrics[nproc]["lpips_status"].startswith(("computed", "not computed"))
    for key in ("psnr", "ssim"):
        assert metrics[1][key]["mean"] == pytest.approx(metrics[2][key]["mean"], abs=1e-6)
        a = [r[key] for r in metrics[1]["per_image"]]
        b = [r[key] for r in metrics[2]["per_image"]]
        assert np.allclose(a, b, atol=1e-6)
    assert metrics[1]["psnr"]["mean"] > 12  # a barely trained container still resembles the scene
    assert metrics[2]["processes"] == 2


def test_eval_scores_right_half_under_mega_nerf_protocol(scene, container, tmp_path):
    from mega_nerf.evaluation.evaluator import evaluate
    from mega_nerf.evaluation.metrics import psnr

    out = tmp_path / "eval"
    metrics = evaluate(parse(eval_parser(), ["--config_file", str(scene / "config.yaml"), "--exp_name",
                                             str(tmp_path / "e"), "--dataset_path", str(scene), "--container_path",
                                             str(container), "--output_path", str(out), "--max_val_images", "1",
                                             "--coarse_samples", "16", "--fine_samples", "16"]))
    item = load_dataset(scene).val[0].scaled(2)
    rendered = torch.from_numpy(__import__("cv2").imread(str(out / "rendered" / f"{item.stem}.png"))[..., ::-1].copy())
    gt = item.load_image()
    right = slice(item.W // 2, None)
    expected = psnr(rendered[:, right].float() / 255, gt[:, right].float() / 255)
    assert metrics["per_image"][0]["psnr"] == pytest.approx(expected, abs=0.3)  # png quantisation only


def test_unreachable_cell_is_warned_and_skipped(scene, tmp_path):
    """A segmentation mask keeping only the first image's pixels empties far cells: masks warn, the
    job list skips them, training refuses them in one line."""
    seg = tmp_path / "seg"
    seg.mkdir()
    from mega_nerf.partition.masks import write_mask

    for n, item in enumerate(load_dataset(scene).items):
        write_mask(seg / f"{item.stem}.pt", torch.full((item.H, item.W), n == 0, dtype=torch.bool))
    masks = tmp_path / "masks"
    result = run(["scripts/create_cluster_masks.py", "--config", str(scene / "config.yaml"), "--dataset_path",
                  str(scene), "--output", str(masks), "--ray_samples", "64", "--grid_dim", "4", "4",
                  "--segmentation_path", str(seg), "--cluster_2d"])
    assert result.returncode == 0, result.stderr[-2000:]
    counts = torch.load(masks / "params.pt", weights_only=False)["cell_pixel_counts"]
    empty = [k for k in range(16) if counts[k] == 0]
    assert empty and len(empty) < 16
    assert f"cell {empty[0]} is reached by no ray" in result.stderr
    jobs = tmp_path / "jobs.txt"
    result = run(["scripts/write_parscript.py", "--grid_dim", "4", "4", "--mask_path", str(masks), "--output",
                  str(jobs)])
    assert result.returncode == 0
    lines = jobs.read_text().splitlines()
    assert len(lines) == 16 - len(empty)
    assert not any(f"CENTROID={k};" in line for line in lines for k in empty)
    result = run(["mega_nerf/train.py", *train_args(scene, tmp_path / "x", ["--cluster_mask_path",
                                                                            str(masks / str(empty[0]))])])
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "reached by no ray" in result.stderr
    assert "Traceback" not in result.stderr


def test_experiment_of_one_cell_is_not_resumed_for_another(scene, masks, tmp_path):
    from mega_nerf.errors import UserError

    def trainer(cell: int) -> Trainer:
        return Trainer(parse(train_parser(), train_args(scene, tmp_path / "exp", [
            "--train_iterations", "4", "--ckpt_interval", "2", "--chunk_paths", str(tmp_path / f"chunks-{cell}"),
            "--cluster_mask_path", str(masks[1] / str(cell))])))

    trainer(0).train()
    with pytest.raises(UserError, match="belongs to cell 0"):
        trainer(1).train()


def test_missing_config_file_is_one_line(scene, tmp_path):
    result = run(["mega_nerf/train.py", "--config_file", str(tmp_path / "nope.yaml"), "--exp_name",
                  str(tmp_path / "e"), "--dataset_path", str(scene)])
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: --config_file {tmp_path / 'nope.yaml'}: config file does not exist"
