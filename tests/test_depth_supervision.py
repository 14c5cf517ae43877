"""Sparse depth supervision from SfM tracks: the importer's observations, the loss, and training
with ``--depth_loss_weight`` (see mega_nerf/training/depth_supervision.py)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers_pipeline import make_nadir_dataset
from mega_nerf.config import parse, train_parser
from mega_nerf.data.format import load_dataset
from mega_nerf.errors import UserError
from mega_nerf.geometry.rays import camera_directions, world_rays
from mega_nerf.render.renderer import render_rays
from mega_nerf.training.depth_supervision import DEPTH_FOLDER, DepthObservations, depth_loss
from mega_nerf.training.ray_data import RayTable
from mega_nerf.training.trainer import Trainer
from test_importers import (COLMAP_CAMERAS, HAS_PYCOLMAP, aerial_points, aerial_poses, import_info, prepare,
                            to_normalised, write_colmap_text)

needs_pycolmap = pytest.mark.skipif(not HAS_PYCOLMAP, reason="needs pycolmap (pip install pycolmap==4.2.1)")

TINY = ["--batch_size", "64", "--coarse_samples", "8", "--fine_samples", "8", "--hash_levels", "4",
        "--hash_log2_size", "10", "--hash_max_resolution", "64", "--layer_dim", "16", "--num_chunks", "2",
        "--num_threads", "1", "--log_interval", "5", "--val_scale_factor", "2", "--appearance_dim", "8",
        "--val_protocol", "held_out"]


@pytest.fixture(scope="module")
def capture(tmp_path_factory):
    """A distorted (OPENCV) aerial COLMAP model imported at half size: undistortion and
    downscaling both move the pixels of the observations."""
    if not HAS_PYCOLMAP:
        pytest.skip("needs pycolmap (pip install pycolmap==4.2.1)")
    root = tmp_path_factory.mktemp("depth")
    source = write_colmap_text(root / "c", "OPENCV", COLMAP_CAMERAS["OPENCV"], aerial_poses(),
                               aerial_points(np.random.default_rng(0)))
    dataset = prepare("--colmap", root / "c", "--up", "+z", "--metric", "--downscale", 2, "--val_every", 3,
                      "--output", root / "ds")
    return {"source": source, "dataset": dataset}


def train_args(dataset: Path, exp: Path, extra: list[str]):
    return parse(train_parser(), ["--config_file", str(dataset / "config.yaml"), "--exp_name", str(exp),
                                  "--dataset_path", str(dataset), "--chunk_paths", str(exp / "chunks"),
                                  *TINY, *extra])


# ------------------------------------------------------------------ import

@needs_pycolmap
def test_observations_reproject_onto_the_points_they_observe(capture):
    """Distance x the unit ray through each stored pixel, from the written camera, lands on the point
    (so the pixels are those of the undistorted, downscaled image); only points whose track holds the
    image are kept."""
    dataset, source = capture["dataset"], capture["source"]
    points = torch.load(dataset / "points3d.pt")["xyz"].double()
    info = import_info(dataset)
    names = dict(line.split(",")[::-1] for line in (dataset / "mappings.txt").read_text().split())
    by_stem = {m.stem: m for m in load_dataset(dataset).items}
    checked = 0
    for stem, item in by_stem.items():
        obs = torch.load(dataset / item.split / DEPTH_FOLDER / f"{stem}.pt")
        assert (obs["W"], obs["H"]) == (item.W, item.H)
        xy = obs["xy"].double()
        assert ((xy >= 0) & (xy < torch.tensor([item.W, item.H]))).all()
        dirs = camera_directions(xy[:, 0] - 0.5, xy[:, 1] - 0.5, item.intrinsics.double(), center_pixels=True)
        rays_o, rays_d = world_rays(item.c2w.double(), dirs.double())
        landed = rays_o.double() + obs["distance"].double()[:, None] * rays_d.double()
        target = points[obs["point_index"]]
        scale = info["pose_scale_factor"]
        assert (landed - target).norm(dim=-1).max() * scale < 0.02  # metres, at ~30 m range
        # z is the depth along the viewing axis: distance = z * |(x, y, 1)|
        ratio = obs["distance"] / obs["z"]
        assert torch.allclose(ratio.double(), (dirs.double().norm(dim=-1)), rtol=1e-4)
        # Every kept point is one this image observes in the source model.
        seen_idx, _ = source["observations"][names[stem]]
        seen = torch.from_numpy(to_normalised(info, source["points"][seen_idx]))
        nearest = torch.cdist(target, seen).min(dim=1).values
        assert nearest.max() * scale < 1e-3
        assert len(target) >= 0.8 * len(seen_idx)  # most observations survive the undistortion crop
        assert ((obs["weight"] > 0) & (obs["weight"] <= 2)).all()
        checked += len(target)
    assert checked > 500


def test_importers_without_tracks_write_no_depth(tmp_path):
    data = make_nadir_dataset(tmp_path / "ds")
    assert not any((data["path"] / split / DEPTH_FOLDER).exists() for split in ("train", "val"))


# ------------------------------------------------------------------ loss and lookup

def test_loss_is_zero_at_the_target_and_pulls_depth_toward_it():
    target = torch.tensor([1.0, 2.0, 0.5, 3.0])
    weight = torch.tensor([1.0, 0.5, 2.0, 0.0])  # the last ray has no observation
    assert depth_loss(target.clone(), target, weight, 3).item() == 0.0
    rendered = torch.tensor([1.2, 1.5, 0.5, 7.0], requires_grad=True)
    loss = depth_loss(rendered, target, weight, 3)
    loss.backward()
    step = rendered.detach() - 0.01 * rendered.grad
    assert ((step - target).abs()[:2] < (rendered.detach() - target).abs()[:2]).all()
    assert rendered.grad[2] == 0 and rendered.grad[3] == 0  # at the target; unsupervised
    # Huber: a far outlier pulls no harder than a moderate error (relative error > beta: |grad| = w / t / n).
    far = torch.tensor([10.0], requires_grad=True)
    depth_loss(far, torch.tensor([1.0]), torch.tensor([1.0]), 1).backward()
    assert math.isclose(far.grad.item(), 1.0, rel_tol=1e-5)


def test_lookup_and_sample_use_sorted_global_ids():
    obs = DepthObservations(torch.tensor([3, 10, 42]), torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, 0.5, 2.0]))
    target, weight = obs.lookup(torch.tensor([42, 0, 10, 50, 3]))
    assert weight.tolist() == [2.0, 0.0, 0.5, 0.0, 1.0]
    assert target[[0, 2, 4]].tolist() == [3.0, 2.0, 1.0]
    ids, depth, w = obs.sample(100, torch.Generator().manual_seed(0))
    assert ids.shape == (100,) and set(ids.tolist()) == {3, 10, 42}
    assert torch.equal(obs.lookup(ids)[0], depth) and torch.equal(obs.lookup(ids)[1], w)


@needs_pycolmap
def test_observations_of_a_cell_stay_in_its_mask(capture):
    dataset = capture["dataset"]
    items = load_dataset(dataset).items
    every = DepthObservations.load(dataset, items, None, True, torch.device("cpu"))
    left = DepthObservations.load(dataset, items, lambda m: (torch.arange(m.H * m.W) % m.W < m.W // 2),
                                  True, torch.device("cpu"))
    table = RayTable(items, torch.device("cpu"), True)
    image = torch.searchsorted(table.offsets, left.ids, right=True) - 1
    column = (left.ids - table.offsets[image]) % table.width[image]
    assert 0 < len(left) < len(every) and (column < table.width[image] // 2).all()
    assert torch.isin(left.ids, every.ids).all()
    assert (torch.diff(every.ids) > 0).all()  # sorted, one observation per pixel


# ------------------------------------------------------------------ training

def depth_error(trainer: Trainer, observations: DepthObservations) -> float:
    """Mean relative error of the rendered depth at every observed training pixel."""
    table = RayTable(trainer.items, trainer.device, True)
    rays_o, rays_d, appearance = table.rays(observations.ids)
    with torch.no_grad():
        out = render_rays(trainer.model, rays_o, rays_d, appearance, trainer.bounds, trainer.sampling, train=False)
    return float(((out["depth"] - observations.depth).abs() / observations.depth).mean())


@needs_pycolmap
def test_depth_loss_lowers_depth_error_and_is_logged(capture, tmp_path):
    """Grey images say nothing about geometry; the sparse points do."""
    dataset = capture["dataset"]
    steps = ["--train_iterations", "200", "--depth_rays_per_batch", "64"]
    off = Trainer(train_args(dataset, tmp_path / "off", steps))
    off.train()
    on = Trainer(train_args(dataset, tmp_path / "on", [*steps, "--depth_loss_weight", "1"]))
    on.train()
    observations = on.depth
    assert observations is not None and off.depth is None
    error_off, error_on = depth_error(off, observations), depth_error(on, observations)
    # The footprint-fitted fields' box (the altitude slab over the seen ground) already keeps the
    # unsupervised depth within a few per cent; the sparse depths still cut that error by a third.
    assert error_on < 0.7 * error_off, (error_on, error_off)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(tmp_path / "on" / "tb"))
    events.Reload()
    assert {"train/depth_loss", "train/depth_rays", "train/depth_weight"} <= set(events.Tags()["scalars"])
    assert events.Scalars("train/depth_rays")[-1].value >= 64


def test_option_off_trains_bit_identically(tmp_path):
    """--depth_loss_weight 0 (the default) ignores the other depth options and reads no depth files."""
    data = make_nadir_dataset(tmp_path / "ds", n_images=6, W=16, H=12)

    def run(name, extra):
        args = parse(train_parser(), ["--config_file", str(data["config"]), "--exp_name", str(tmp_path / name),
                                      "--dataset_path", str(data["path"]), "--chunk_paths",
                                      str(tmp_path / name / "chunks"), *TINY, "--train_iterations", "6", *extra])
        trainer = Trainer(args)
        trainer.train()
        return trainer

    plain = run("plain", [])
    zero = run("zero", ["--depth_loss_weight", "0", "--depth_rays_per_batch", "999", "--depth_loss_decay", "0.5"])
    assert plain.depth is None and zero.depth is None
    for key, value in plain.model.state_dict().items():
        assert torch.equal(value, zero.model.state_dict()[key]), key


def test_option_on_without_observations_is_one_clear_line(tmp_path):
    data = make_nadir_dataset(tmp_path / "ds", n_images=6, W=16, H=12)
    args = parse(train_parser(), ["--config_file", str(data["config"]), "--exp_name", str(tmp_path / "e"),
                                  "--dataset_path", str(data["path"]), *TINY, "--depth_loss_weight", "0.1"])
    with pytest.raises(UserError) as error:
        Trainer(args)
    message = str(error.value)
    assert "\n" not in message and "re-import with scripts/prepare_dataset.py from a COLMAP model" in message
    with pytest.raises(UserError, match="depth_rays_per_batch"):
        parse(train_parser(), ["--exp_name", "x", "--dataset_path", "y", "--depth_loss_weight", "1",
                               "--depth_rays_per_batch", "-1"])


@needs_pycolmap
def test_cells_supervise_only_their_masks_pixels_and_train_cells_runs(capture, tmp_path):
    import subprocess
    import sys

    from mega_nerf.partition.create_masks import create_cluster_masks, mask_parser
    from mega_nerf.training.ray_data import pixel_selector

    dataset = capture["dataset"]
    create_cluster_masks(parse(mask_parser(), ["--config", str(dataset / "config.yaml"), "--dataset_path",
                                               str(dataset), "--output", str(tmp_path / "masks"), "--grid_dim", "2",
                                               "2", "--ray_samples", "16"]))
    trainer = Trainer(train_args(dataset, tmp_path / "cell0", ["--cluster_mask_path", str(tmp_path / "masks" / "0"),
                                                               "--depth_loss_weight", "1", "--train_iterations", "3"]))
    every = DepthObservations.load(dataset, trainer.items, None, True, torch.device("cpu"))
    assert trainer.depth is not None and 0 < len(trainer.depth) < len(every)
    select = pixel_selector(trainer.mask_root, 0, "held_out", False, {m.stem: (m.H, m.W) for m in trainer.items})
    in_mask = torch.cat([select(m) if select(m) is not None else torch.zeros(m.H * m.W, dtype=torch.bool)
                         for m in trainer.items])
    assert in_mask[trainer.depth.ids].all()
    trainer.train()
    argv = [sys.executable, "-m", "mega_nerf.train_cells", "--config_file", str(dataset / "config.yaml"),
            "--exp_name", str(tmp_path / "grid"), "--dataset_path", str(dataset), "--cluster_mask_path",
            str(tmp_path / "masks"), *TINY, "--train_iterations", "3", "--depth_loss_weight", "1",
            "--depth_rays_per_batch", "16", "--cells", "0", "1"]
    done = subprocess.run(argv, cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True,
                          timeout=180, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "grid-0" / "models" / "3.pt").exists() and (tmp_path / "grid-1" / "models" / "3.pt").exists()
