"""Training options for time-to-PSNR runs: time-based training and checkpoint marks, foreground
bounds for object-centric scenes, white background, evaluating a single checkpoint."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

from helpers_pipeline import POSE_SCALE_FACTOR, make_nadir_dataset
from mega_nerf.config import eval_parser, parse, train_parser
from mega_nerf.container.container import Container, load_container, save_container
from mega_nerf.data.format import load_dataset
from mega_nerf.errors import UserError
from mega_nerf.evaluation.evaluator import evaluate, load_model
from mega_nerf.fields.model import SceneModel, model_config_from_args
from mega_nerf.geometry.bounds import SceneBounds, ray_bounds, scene_bounds_from_args
from mega_nerf.render.renderer import SamplingConfig, render_rays
from mega_nerf.training.trainer import Trainer, checkpoints, time_checkpoint_path

TINY = ["--batch_size", "64", "--coarse_samples", "8", "--fine_samples", "8", "--hash_levels", "4",
        "--hash_log2_size", "10", "--hash_max_resolution", "64", "--layer_dim", "16", "--num_chunks", "2",
        "--num_threads", "1", "--log_interval", "5", "--val_scale_factor", "2", "--appearance_dim", "8"]
#: Metric DRB box below the nadir cameras (x = -50 m): normalised [-0.2, 0.4] x [-0.6, 0.6]^2.
BOX = ["-20", "-60", "-60", "40", "60", "60"]
OBJECT = ["--foreground_bounds", *BOX, "--near", "1", "--no_bg_nerf", "--white_background"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> dict:
    return make_nadir_dataset(tmp_path_factory.mktemp("options") / "dataset", n_images=6, W=16, H=12)


def args_for(data: dict, exp: Path, extra: list[str], parser=train_parser):
    return parse(parser(), ["--config_file", str(data["config"]), "--exp_name", str(exp), "--dataset_path",
                            str(data["path"]), "--chunk_paths", str(exp.parent / "chunks"), *TINY, *extra])


# ------------------------------------------------------------------ time-based training

def test_train_seconds_stops_on_the_clock_and_keeps_marks(dataset, tmp_path):
    exp = tmp_path / "timed"
    trainer = Trainer(args_for(dataset, exp, ["--train_seconds", "1.2", "--checkpoint_at_seconds", "0.3", "0.6",
                                              "--train_iterations", "3", "--ckpt_interval", "1"]))
    summary = trainer.train()
    # Past train_iterations (3): the time budget decides, the lr stays at its final value.
    assert summary["iterations"] > 3
    assert trainer._lr(10 ** 6) == pytest.approx(trainer.lr * 0.1)
    assert 1.2 <= summary["elapsed_seconds"] < 5
    marks = {m["mark_seconds"]: m for m in summary["time_checkpoints"]}
    assert sorted(marks) == [0.3, 0.6]
    for mark, record in marks.items():
        path = time_checkpoint_path(exp, mark)
        assert path.exists() and Path(record["path"]) == path
        state = torch.load(path, map_location="cpu", weights_only=False)
        assert state["elapsed_seconds"] >= mark
        assert "optimizer" not in state  # the model only: marks are for evaluation
        assert state["iteration"] == record["iteration"] >= 1
    assert marks[0.3]["iteration"] < marks[0.6]["iteration"] < summary["iterations"]
    # Rotation (every step here) removed old numbered checkpoints but not the marks.
    assert [i for i, _ in checkpoints(exp)] == [summary["iterations"]]
    # A finished time-based run is not trained again.
    again = Trainer(args_for(dataset, exp, ["--train_seconds", "1.2", "--checkpoint_at_seconds", "0.3", "0.6",
                                            "--train_iterations", "3", "--ckpt_interval", "1"]))
    again.train()
    assert again.iteration == summary["iterations"]


def test_training_clock_excludes_checkpoint_saving(dataset, tmp_path):
    trainer = Trainer(args_for(dataset, tmp_path / "slow", ["--train_seconds", "0.5", "--ckpt_interval", "1"]))
    original = trainer.save_checkpoint

    def slow_save():
        time.sleep(0.1)
        return original()

    trainer.save_checkpoint = slow_save
    summary = trainer.train()
    assert summary["seconds"] < 1.5
    assert summary["wall_seconds"] >= summary["seconds"] + 0.1 * (summary["iterations"] - 1)


def test_time_options_are_checked(dataset, tmp_path):
    with pytest.raises(UserError, match="beyond --train_seconds"):
        args_for(dataset, tmp_path / "x", ["--train_seconds", "10", "--checkpoint_at_seconds", "5", "20"])
    with pytest.raises(UserError, match="train_seconds must be > 0"):
        args_for(dataset, tmp_path / "x", ["--train_seconds", "0"])


# ------------------------------------------------------------------ foreground bounds

def test_foreground_bounds_set_the_box_and_the_field_aabb(dataset, tmp_path):
    args = args_for(dataset, tmp_path / "fg", OBJECT)
    data = load_dataset(dataset["path"])
    bounds = scene_bounds_from_args(data, args, require_altitude_range=True)  # no altitude range needed
    assert bounds.box
    assert bounds.center == pytest.approx([0.1, 0.0, 0.0])
    assert bounds.radius == pytest.approx([0.3, 0.6, 0.6])
    config = model_config_from_args(args, bounds, 6)
    assert torch.allclose(torch.tensor(config["aabb"]), torch.tensor([[-0.2, -0.6, -0.6], [0.4, 0.6, 0.6]]))
    assert SceneBounds.from_dict(bounds.to_dict()) == bounds
    # Rays start where they enter the box; rays that miss it have an empty segment.
    o = torch.tensor([[-0.5, 0.0, 0.0], [-0.5, 0.0, 0.0]])
    d = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]), dim=-1)
    near, far = ray_bounds(o, d, bounds, background=False)
    assert near[0].item() == pytest.approx(0.3) and far[0].item() == pytest.approx(0.9)
    assert far[1].item() == near[1].item()
    # Old bounds dicts (no 'box' key) still load as ellipsoids.
    legacy = {k: v for k, v in bounds.to_dict().items() if k != "box"}
    assert not SceneBounds.from_dict(legacy).box
    with pytest.raises(UserError, match="smaller than its maximum"):
        args_for(dataset, tmp_path / "bad", ["--foreground_bounds", "1", "0", "0", "0", "1", "1"])
    with pytest.raises(UserError, match="needs --no_bg_nerf"):
        args_for(dataset, tmp_path / "bad", ["--white_background"])


def test_object_scene_trains_and_survives_checkpoint_container_and_eval(dataset, tmp_path):
    exp = tmp_path / "object"
    trainer = Trainer(args_for(dataset, exp, [*OBJECT, "--val_protocol", "held_out", "--train_iterations", "4",
                                              "--ckpt_interval", "4", "--occupancy_resolution", "8",
                                              "--occupancy_update_interval", "2"]))
    trainer.train()
    ckpt = exp / "models" / "4.pt"
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    assert state["bounds"]["box"] and state["model_config"]["white_background"]
    # A single checkpoint evaluates with eval's --ckpt_path, rendering the same way.
    eval_args = args_for(dataset, tmp_path / "eval", [*OBJECT, "--val_protocol", "held_out", "--ckpt_path",
                                                      str(ckpt), "--output_path", str(tmp_path / "eval_out")],
                         parser=eval_parser)
    model, bounds = load_model(eval_args, torch.device("cpu"))
    assert bounds.box and model.white_background
    assert torch.allclose(model.fg.aabb, torch.tensor(state["model_config"]["aabb"]))
    metrics = evaluate(eval_args)
    assert metrics["images"] == 2 and metrics["protocol"] == "held_out"
    assert (tmp_path / "eval_out" / "metrics.json").exists()
    # A container keeps the box and the white background.
    container = Container(state["model_config"], bounds, torch.zeros(1, 3), [0], 1.15, False)
    container.sub_modules[0].load_state_dict({k[3:]: v for k, v in state["model_state_dict"].items()
                                              if k.startswith("fg.")})
    save_container(container, tmp_path / "container.pt")
    loaded = load_container(tmp_path / "container.pt")
    assert loaded.bounds == bounds and loaded.white_background
    assert torch.allclose(loaded.sub_modules[0].aabb, model.fg.aabb)


def test_masks_use_the_foreground_box(dataset, tmp_path):
    from mega_nerf.partition.create_masks import create_cluster_masks, mask_parser

    masks = tmp_path / "masks"
    params = create_cluster_masks(parse(mask_parser(), [
        "--config", str(dataset["config"]), "--dataset_path", str(dataset["path"]), "--output", str(masks),
        "--grid_dim", "1", "1", "--ray_samples", "16", "--foreground_bounds", *BOX]))
    assert params["foreground_bounds"] == [float(v) for v in BOX]
    # Training must use the same box as the masks.
    with pytest.raises(UserError, match="foreground_bounds"):
        Trainer(args_for(dataset, tmp_path / "cell", ["--cluster_mask_path", str(masks / "0")]))
    Trainer(args_for(dataset, tmp_path / "cell", [*OBJECT, "--cluster_mask_path", str(masks / "0")]))


# ------------------------------------------------------------------ white background

class _EmptyField(torch.nn.Module):
    """Zero density everywhere, grey colour; optionally with an all-occupied grid."""

    has_background = False

    def __init__(self, white: bool, occupancy: bool):
        super().__init__()
        self.white_background = white
        self.has_occupancy = occupancy

    def occupied(self, x):
        return torch.ones(x.shape[0], dtype=torch.bool)

    def density(self, x):
        return torch.zeros(x.shape[0])

    def foreground(self, x, d, a):
        return torch.zeros(x.shape[0]), torch.full((x.shape[0], 3), 0.3)


@pytest.mark.parametrize("occupancy", [False, True])
def test_empty_field_renders_white_only_with_white_background(occupancy):
    bounds = SceneBounds(origin_drb=[0, 0, 0], pose_scale_factor=1.0, near=0.1, far=None, altitude_range=None,
                         center=[0.1, 0, 0], radius=[0.3, 0.6, 0.6], box=True)
    o = torch.tensor([[-0.5, 0.0, 0.0]]).repeat(4, 1)
    d = torch.nn.functional.normalize(torch.tensor([[1.0, 0.1, 0.0], [1.0, -0.2, 0.1], [1.0, 0.0, 0.3],
                                                    [0.0, 1.0, 0.0]]), dim=-1)  # the last one misses
    app = torch.zeros(4, dtype=torch.long)
    for white, expected in ((True, 1.0), (False, 0.0)):
        out = render_rays(_EmptyField(white, occupancy), o, d, app, bounds, SamplingConfig(8, 8, 0, 32), train=True)
        assert torch.allclose(out["rgb"], torch.full((4, 3), expected), atol=1e-5), (white, out["rgb"])


def test_white_background_is_part_of_the_model_config(dataset, tmp_path):
    args = args_for(dataset, tmp_path / "w", OBJECT)
    bounds = scene_bounds_from_args(load_dataset(dataset["path"]), args, require_altitude_range=False)
    assert SceneModel(model_config_from_args(args, bounds, 6)).white_background
    plain = args_for(dataset, tmp_path / "p", [])
    plain_bounds = scene_bounds_from_args(load_dataset(dataset["path"]), plain, require_altitude_range=True)
    assert not SceneModel(model_config_from_args(plain, plain_bounds, 6)).white_background
    assert POSE_SCALE_FACTOR == 100.0  # the box above is in these metres
    assert json.dumps(model_config_from_args(args, bounds, 6))  # plain data, stored in checkpoints


def test_whole_scene_training_uses_every_training_pixel(dataset, tmp_path):
    """Without --cluster_mask_path every pixel of every training image is a training ray."""
    data = load_dataset(dataset["path"])
    pixels = dataset["W"] * dataset["H"]
    held = Trainer(args_for(dataset, tmp_path / "h" / "exp", ["--val_protocol", "held_out"])).prepare_chunks()
    assert held.num_rays == len(data.train) * pixels
    mega = Trainer(args_for(dataset, tmp_path / "m" / "exp", [])).prepare_chunks()
    assert mega.num_rays == len(data.train) * pixels + len(data.val) * pixels // 2


def test_warm_up_pass_changes_nothing(dataset, tmp_path):
    """The warm-up of time-based CUDA runs (here called on CPU) leaves weights, grads and RNG as they were."""
    from mega_nerf.training.ray_data import RayTable

    trainer = Trainer(args_for(dataset, tmp_path / "warm", ["--occupancy_resolution", "8"]))
    table = RayTable(trainer.items, trainer.device, True)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    rng = torch.get_rng_state()
    assert trainer._warm_up(table, use_amp=False) >= 0
    assert torch.equal(rng, torch.get_rng_state())
    assert all(p.grad is None for p in trainer.model.parameters())
    for key, value in trainer.model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_time_lr_schedule_follows_the_clock(dataset, tmp_path):
    trainer = Trainer(args_for(dataset, tmp_path / "lr", ["--train_seconds", "0.5", "--lr_schedule", "time",
                                                          "--train_iterations", "1000000"]))
    assert trainer._lr(0) == pytest.approx(trainer.lr)
    trainer.train()
    assert trainer.iteration < 10 ** 6
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(trainer.lr * 0.1, rel=0.2)
    assert trainer._lr(0) == pytest.approx(trainer.lr * 0.1)  # the clock is past train_seconds
    with pytest.raises(UserError, match="needs --train_seconds"):
        args_for(dataset, tmp_path / "x", ["--lr_schedule", "time"])


def test_a_time_mark_is_not_a_resume_point(dataset, tmp_path):
    exp = tmp_path / "marks"
    Trainer(args_for(dataset, exp, ["--train_seconds", "0.3", "--checkpoint_at_seconds", "0.1"])).train()
    with pytest.raises(UserError, match="holds a model only"):
        Trainer(args_for(dataset, tmp_path / "again", ["--ckpt_path", str(time_checkpoint_path(exp, 0.1)),
                                                       "--train_seconds", "1"])).train()
