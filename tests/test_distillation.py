"""Distillation (issue 6, part 1): a container into one student of any backend.

The teacher is a two-cell container of hand-set voxel grids (a ground slab and a block with
smooth colours), so what the student must reproduce is known and quick to fit; every model is
tiny and every run takes seconds on one CPU core.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers_pipeline import POSE_SCALE_FACTOR, RAY_ALTITUDE_RANGE, make_nadir_dataset

from mega_nerf.config import train_parser
from mega_nerf.container.container import Container, load_container, save_container
from mega_nerf.data.format import load_dataset
from mega_nerf.distillation import cli as distill_cli
from mega_nerf.distillation.cameras import (
    TRAINING,
    aerial_views,
    tilt_degrees,
    training_views,
)
from mega_nerf.distillation.distiller import Distiller, DistillSettings, PackSource
from mega_nerf.distillation.losses import FeatureAdapters, log_density_loss
from mega_nerf.distillation.packs import concat_packs, make_pack, packs_that_fit
from mega_nerf.distillation.samples import density_threshold, teacher_occupancy
from mega_nerf.distillation.student import (
    build_student,
    init_from_teacher,
    student_config,
    visibility_prune,
)
from mega_nerf.errors import UserError
from mega_nerf.evaluation.metrics import psnr
from mega_nerf.fields.base import tensor_bytes
from mega_nerf.fields.model import model_config_from_args
from mega_nerf.geometry.bounds import compute_scene_bounds
from mega_nerf.render.renderer import SamplingConfig, render_image

torch.set_num_threads(1)  # the runs are small: one thread is fastest and steady on a busy machine
REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "distill.py"
COMMON = ["--layer_dim", "16", "--bg_layer_dim", "16", "--geo_feat_dim", "4", "--pos_dir_dim", "2",
          "--appearance_dim", "2"]
STUDENT_SIZES = {
    "hash": ["--hash_levels", "4", "--hash_features", "2", "--hash_log2_size", "10", "--hash_base_resolution", "4",
             "--hash_max_resolution", "48"],
    "vm": ["--vm_resolution", "24", "--vm_density_rank", "4", "--vm_appearance_rank", "6"],
    "grid": ["--grid_resolution", "20"],
    "mlp": ["--mlp_width", "48", "--mlp_layers", "3", "--mlp_skip", "1", "--pos_xyz_dim", "4"],
}
# Small sampling so a run takes seconds on one core.
FAST = ["--distill_batch_rays", "128", "--views_per_batch", "2", "--rays_per_view", "64", 
        "--occupancy_candidates", "48", "--occupancy_resolution", "16", "--coarse_samples", "12", "--fine_samples",
        "12", "--bg_samples", "4", "--jittered_views", "6", "--footprint_views", "4", "--val_scale_factor", "1",
        "--max_val_images", "0", "--hard_ray_pool", "512", "--num_threads", "1", "--log_interval", "0",
        "--device", "cpu", "--quiet"]
GROUND, ROOF = 0.3, 0.1  # normalised DRB x (down) of the ground and of the block's roof
LR = {"hash": 3e-2, "vm": 3e-2, "grid": 1e-1, "mlp": 3e-3}
STEPS = {"hash": 150, "vm": 150, "grid": 150, "mlp": 150}
PSNR_BOUND = {"hash": 16.0, "vm": 16.0, "grid": 18.0, "mlp": 16.0}


def analytic_teacher(bounds, appearance_count: int) -> Container:
    """Two cells of SH voxel grids holding the same scene: opaque ground below x = GROUND, a block
    up to x = ROOF over |y - 0.15| < 0.15, |z| < 0.2, smooth view-independent colours."""
    args = train_parser().parse_args(["--exp_name", "x", "--dataset_path", "y", "--model_type", "grid",
                                      "--grid_resolution", "24", "--grid_color", "sh", *COMMON])
    cfg = model_config_from_args(args, bounds, appearance_count)
    centroids = torch.tensor([[0.0, -0.25, 0.0], [0.0, 0.25, 0.0]])
    teacher = Container(cfg, bounds, centroids, [0, 1], 1.15, cluster_2d=False)
    aabb = torch.tensor(cfg["aabb"])
    r = 24
    u = torch.linspace(0, 1, r)
    x, y, z = torch.meshgrid(*(aabb[0, i] + u * (aabb[1, i] - aabb[0, i]) for i in range(3)), indexing="ij")
    solid = (x > GROUND) | ((x > ROOF) & ((y - 0.15).abs() < 0.15) & (z.abs() < 0.2))
    colour = torch.stack([0.5 + 0.35 * torch.sin(4 * y), 0.5 + 0.35 * torch.cos(3 * z),
                          torch.where(x > GROUND, 0.25, 0.8) + 0 * x])
    logit = torch.log(colour / (1 - colour)) / 0.28209479177387814  # SH band 0 only
    with torch.no_grad():
        for module in teacher.sub_modules:
            voxels = torch.zeros_like(module.voxels)
            voxels[0, 0] = torch.where(solid, 8.0, -8.0)
            for c in range(3):
                voxels[0, 1 + 9 * c] = logit[c]
            module.voxels.copy_(voxels)
    return teacher.eval()


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    root = tmp_path_factory.mktemp("distill")
    info = make_nadir_dataset(root / "ds", n_images=9, W=16, H=12, val_every=3)
    dataset = load_dataset(info["path"])
    bounds = compute_scene_bounds(dataset.camera_positions, torch.zeros(3), POSE_SCALE_FACTOR, RAY_ALTITUDE_RANGE)
    teacher = analytic_teacher(bounds, len(dataset.items))
    save_container(teacher, root / "teacher.pt")
    return {"root": root, "info": info, "dataset": dataset, "teacher": teacher, "path": root / "teacher.pt"}


def cli_args(scene, output: Path, model_type: str, *extra) -> list[str]:
    return ["--config_file", str(scene["info"]["config"]), "--container_path", str(scene["path"]),
            "--dataset_path", str(scene["info"]["path"]), "--output", str(output), "--model_type", model_type,
            *COMMON, *STUDENT_SIZES[model_type], *FAST, *map(str, extra)]


def render_psnr(teacher, student, dataset, bounds) -> float:
    """Mean PSNR of the student against the teacher over the validation views (never drawn from)."""
    sampling = SamplingConfig(12, 12, 4, 48)
    values = []
    for item in dataset.val:
        args = (item.W, item.H, item.intrinsics, item.c2w, item.image_index, bounds, sampling, 4096, torch.device("cpu"))
        values.append(psnr(render_image(student, *args)[0], render_image(teacher, *args)[0]))
    return sum(values) / len(values)


# ---------------------------------------------------------------------------------------- units
def test_virtual_cameras_stay_over_the_flight_and_look_down(scene):
    base = training_views(scene["dataset"].train)
    views = aerial_views(base, jittered=20, footprint=20, seed=0, max_degrees=5.0)
    assert len(views) == len(base) + 40 and int((views.source == TRAINING).sum()) == len(base)
    positions, train_positions = views.c2w[:, :, 3], base.c2w[:, :, 3]
    # altitudes within the flight's, positions within (half a spacing of) its footprint, never a sphere
    assert float(positions[:, 0].min()) >= float(train_positions[:, 0].min()) - 1e-5
    assert float(positions[:, 0].max()) <= float(train_positions[:, 0].max()) + 1e-5
    assert float((positions[:, 1:].abs()).max()) <= 0.5 + 0.25 + 1e-5
    assert float(tilt_degrees(views.c2w).max()) <= 5.0 + 1e-3  # nadir flight: at most the jitter
    rotations = views.c2w[:, :, :3]
    assert torch.allclose(rotations @ rotations.transpose(1, 2), torch.eye(3).expand_as(rotations), atol=1e-5)
    assert set(views.appearance.tolist()) <= {m.image_index for m in scene["dataset"].train}


def test_log_density_loss_is_one_sided_outside_the_range():
    lo, hi = torch.full((4,), -1.0), torch.full((4,), 5.0)
    teacher = torch.tensor([-9.0, -9.0, 9.0, 2.0])
    student = torch.tensor([-3.0, 8.0, -3.0, 2.0], requires_grad=True)
    loss = log_density_loss(student, teacher, lo, hi)
    loss.sum().backward()
    # both empty: nothing to learn; student above the upper clamp over empty teacher: pushed down
    # (PVD's symmetric clamp gives it no gradient); opaque teacher, empty student: pushed up
    assert loss[0] == 0 and loss[3] == 0 and student.grad[0] == 0
    assert student.grad[1] > 0 and student.grad[2] < 0 and loss[1] > 0


def test_teacher_occupancy_covers_the_surfaces_and_not_the_air(scene):
    teacher = scene["teacher"]
    aabb = torch.tensor(teacher.model_configs[0]["aabb"])
    grid = teacher_occupancy(teacher, aabb, 16, density_threshold(aabb, 64, 0.01))
    ground = torch.tensor([[GROUND + 0.05, -0.3, 0.3], [GROUND + 0.05, 0.4, -0.4]])
    roof = torch.tensor([[ROOF + 0.03, 0.15, 0.0]])
    air = torch.tensor([[-0.3, 0.0, 0.0], [-0.1, -0.3, 0.3]])
    assert bool(grid.occupied_at(ground).all()) and bool(grid.occupied_at(roof).all())
    assert not bool(grid.occupied_at(air).any())
    assert 0.05 < grid.occupied_fraction() < 0.7


class _WithGrid(torch.nn.Module):
    """A model rendered through a given occupancy grid."""

    has_background = False
    white_background = False
    has_occupancy = True

    def __init__(self, model, grid):
        super().__init__()
        self.model, self.grid = model, grid

    def occupied(self, x):
        return self.grid.occupied_at(x)

    def density(self, x):
        return self.model.density(x)

    def foreground(self, x, d, a):
        return self.model.foreground(x, d, a)


def test_visibility_pruning_drops_the_matter_no_view_sees_and_keeps_the_pixels(scene):
    teacher, dataset = scene["teacher"], scene["dataset"]
    aabb = torch.tensor(teacher.model_configs[0]["aabb"])
    grid = teacher_occupancy(teacher, aabb, 16, density_threshold(aabb, 64, 0.01))
    before = grid.occupied.clone()
    sampling = SamplingConfig(24, 24, 0, 96)
    model = _WithGrid(teacher, grid)
    item = dataset.train[4]
    args = (item.W, item.H, item.intrinsics, item.c2w, item.image_index, teacher.bounds, sampling, 4096,
            torch.device("cpu"))
    before_stats, after_stats = {}, {}
    image = render_image(model, *args, stats=before_stats)[0]
    fraction = visibility_prune(grid, model, training_views(dataset.train), teacher.bounds, sampling, 512, 0.01,
                                torch.device("cpu"))
    assert not bool((grid.occupied & ~before).any())  # never grows
    assert fraction < 0.6 * before.float().mean()
    deep = torch.tensor([[GROUND + 0.4, 0.0, 0.0], [GROUND + 0.4, 0.3, -0.2]])  # inside the ground
    surface = torch.tensor([[GROUND + 0.02, -0.3, 0.1], [ROOF + 0.02, 0.15, 0.0]])  # ground and roof tops
    assert not bool(grid.occupied_at(deep).any()) and bool(grid.occupied_at(surface).all())
    assert psnr(render_image(model, *args, stats=after_stats)[0], image) > 35  # what the views see is unchanged
    # a grid that only shrinks never places more samples (at most coarse + fine of them)
    assert 0 < after_stats["samples_per_ray"] <= before_stats["samples_per_ray"] <= 48


def small_distiller(scene, model_type: str, steps: int, stages=(0.0, 0.0),
                    distortion: float = 0.0) -> tuple[Distiller, dict]:
    """A Distiller on the scene's views with live packs (no CLI), and a fixed evaluation batch."""
    args = distill_cli.parse(distill_cli.distill_parser(), cli_args(scene, scene["root"] / "unused.pt", model_type))
    teacher = scene["teacher"]
    cfg = student_config(args, teacher)
    aabb = torch.tensor(cfg["aabb"])
    threshold = density_threshold(aabb, 48, 0.01)
    grid = teacher_occupancy(teacher, aabb, 16, threshold)
    val = scene["dataset"].val
    views = aerial_views(training_views(scene["dataset"].train), 6, 4, 0, extra_appearance=(
        torch.tensor([m.image_index for m in val]), torch.stack([m.c2w[:, 3] for m in val])))
    torch.manual_seed(0)
    student = build_student(cfg, teacher)
    init_from_teacher(student, teacher, grid)
    adapters = FeatureAdapters(2, 4, 4)

    def make(v: int, seed: int = 0) -> dict:
        return make_pack(teacher, views, v, 64, teacher.bounds, grid.occupied_at, 48, 24, 4, seed,
                         sampling=SamplingConfig(12, 12, 4, 48))

    settings = DistillSettings(steps=steps, batch_rays=128, views_per_batch=2, feature_stage=stages[0],
                               sample_stage=stages[1], lr=LR[model_type], hard_ray_pool=512,
                               log_interval=10 ** 9, amp=False, distortion_weight=distortion)
    step = float((aabb[1] - aabb[0]).norm()) / 48
    distiller = Distiller(student, adapters, PackSource("cpu", make=make), len(views), teacher.bounds, settings,
                          torch.device("cpu"), step * 0.1, step * 16, show_progress=False)
    held_out = concat_packs([make(v, seed=99) for v in (0, 5, 11)])
    return distiller, held_out


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_each_stage_lowers_its_own_loss(scene, stage):
    """Stage s alone (its loss weights, its schedule) for a few steps lowers the loss it adds."""
    own = {1: ("feature", "density"), 2: ("colour",), 3: ("rendered",)}[stage]
    ends = {1: (1.0, 1.0), 2: (0.0, 1.0), 3: (0.0, 0.0)}[stage]
    distiller, held_out = small_distiller(scene, "hash", steps={1: 30, 2: 60, 3: 30}[stage], stages=ends)
    before = distiller.evaluate(held_out)
    distiller.run()
    after = distiller.evaluate(held_out)
    assert distiller.last["stage"] == stage
    for key in own:
        assert after[key] < 0.9 * before[key], (key, before[key], after[key])


def test_distortion_loss_pulls_the_students_weight_together(scene):
    """``--distortion_loss_weight``: the same rendered-colour stage with the distortion term ends
    with less of it on held-out rays than without (weight nearer the surfaces: fewer samples to
    colour), and the term is absent when off."""
    ends = {}
    for weight in (0.0, 5.0):
        torch.manual_seed(0)
        distiller, held_out = small_distiller(scene, "hash", steps=40, stages=(0.0, 0.0), distortion=weight)
        assert ("distortion" in distiller.evaluate(held_out)) == (weight > 0)
        distiller.run()
        distiller.settings.distortion_weight = 1.0  # measure the term for both runs
        ends[weight] = distiller.evaluate(held_out)
    assert ends[5.0]["distortion"] < 0.7 * ends[0.0]["distortion"], ends
    assert ends[5.0]["rendered"] < 2 * ends[0.0]["rendered"], ends  # still fits the teacher


def test_feature_adapters_map_each_cell_separately():
    adapters = FeatureAdapters(2, 3, 3)
    with torch.no_grad():
        adapters.weight[1] *= 2
    f = torch.ones(4, 3)
    out = adapters(f, torch.tensor([0, 1, 0, 1]))
    assert torch.equal(out[0], torch.ones(3)) and torch.equal(out[1], torch.full((3,), 2.0))


def test_pack_memory_holds_as_many_packs_as_fit_and_makes_the_others_again():
    """A budget of 2.5 packs keeps 2; a view pushed out of memory is made again when drawn."""
    made = []

    def make(view: int) -> dict:
        made.append(view)
        return {"rays_o": torch.full((10, 3), float(view)), "valid": torch.ones(10, 4, dtype=torch.bool)}

    size = tensor_bytes(make(0).values())
    assert size == 10 * 3 * 4 + 10 * 4 and packs_that_fit(size, 0) == 1 and packs_that_fit(size, 5 * size) == 5
    made.clear()
    source = PackSource("cpu", make=make, capacity=None, memory_budget=int(2.5 * size))
    for view in (0, 1, 0, 2, 1, 0):
        assert float(source.get(view)["rays_o"][0, 0]) == view
    assert source.capacity == 2 and source.pack_bytes == size and len(source.memory) == 2
    assert made == [0, 1, 2, 1, 0] and source.made == 5  # the second 0 was kept; 1 and 0 were pushed out
    everything = PackSource("cpu", make=make, capacity=None, memory_budget=10 * size)
    for view in (0, 1, 2, 0, 1, 2):
        everything.get(view)
    assert everything.made == 3


# ------------------------------------------------------------------------------ command line
def run_cli(argv: list[str]) -> dict:
    """``scripts/distill.py`` in this process (one interpreter start for the whole file)."""
    return distill_cli.main(argv)


@pytest.mark.parametrize("student_type, teacher_kind", [("hash", "grid"), ("vm", "grid"), ("mlp", "grid"),
                                                        ("grid", "hash")])
def test_student_of_each_type_fits_a_teacher_of_another_type(scene, student_type, teacher_kind):
    """The grid student's teacher is the hash student: a student is a container, distilled again."""
    teacher_path = scene["path"] if teacher_kind == "grid" else scene["root"] / "student-hash.pt"
    output = scene["root"] / f"student-{student_type}.pt"
    args = cli_args(scene, output, student_type, "--distill_steps", STEPS[student_type], "--lr", LR[student_type])
    args[args.index("--container_path") + 1] = str(teacher_path)
    metrics = run_cli(args)
    teacher, student = load_container(teacher_path), load_container(output)
    assert len(student.cell_ids) == 1 and student.model_configs[0]["model_type"] == student_type
    assert teacher.model_configs[0]["model_type"] == teacher_kind
    value = render_psnr(teacher, student, scene["dataset"], teacher.bounds)
    assert value > PSNR_BOUND[student_type], value
    # the metrics file says the same as an independent render
    saved = json.loads(output.with_name(output.name + ".json").read_text())
    assert saved["heldout"]["student_vs_teacher_psnr"] == pytest.approx(value, abs=0.5)
    assert metrics["student_parameters"] == student.parameter_count()
    # the student's occupancy grid lies inside the teacher's occupied space (pruned, never grown)
    assert 0 < student.occupancy_grids[0].occupied_fraction() < 1


def test_eval_py_evaluates_a_student_with_its_stored_candidates(scene, tmp_path):
    """The student stores the occupancy candidates to render it with (half of distillation's 48, but
    at least the 24 samples); eval.py uses them over a config file's value, and a command-line
    --occupancy_candidates over them."""
    from mega_nerf.evaluation.evaluator import main as evaluate_main

    path = scene["root"] / "student-hash.pt"
    assert load_container(path).render_settings == {"occupancy_candidates": 24}
    config = tmp_path / "config.yaml"
    config.write_text(scene["info"]["config"].read_text() + "\noccupancy_candidates: 96\n")

    def evaluate(name: str, *extra) -> dict:
        out = tmp_path / name
        return evaluate_main(["--config_file", str(config), "--exp_name", str(out), "--dataset_path",
                              str(scene["info"]["path"]), "--container_path", str(path), "--output_path", str(out),
                              "--val_scale_factor", "1", "--coarse_samples", "12", "--fine_samples", "12",
                              "--bg_samples", "4", "--device", "cpu", *COMMON, *extra])

    stored = evaluate("stored")
    assert stored["images"] == len(scene["dataset"].val) and math.isfinite(stored["psnr"]["mean"])
    assert stored["sampling"]["occupancy_candidates"] == 24
    assert stored["render_settings_from_model"] == {"occupancy_candidates": 24}
    assert 0 < stored["samples_per_ray"] <= 24  # at most coarse + fine samples, in occupied space only
    given = evaluate("given", "--occupancy_candidates", "48")
    assert given["sampling"]["occupancy_candidates"] == 48 and given["render_settings_from_model"] == {}
    # What distill.py stores: half the candidates with visibility pruning, the flag's value, or nothing.
    student = load_container(path)
    args = distill_cli.distill_parser().parse_args(cli_args(scene, tmp_path / "s.pt", "hash"))
    assert distill_cli.student_render_settings(args, student) == {"occupancy_candidates": 24}
    args.occupancy_candidates = 512
    assert distill_cli.student_render_settings(args, student) == {"occupancy_candidates": 256}
    args.visibility_threshold = 0.0
    assert distill_cli.student_render_settings(args, student) == {}
    args.render_occupancy_candidates = 300
    assert distill_cli.student_render_settings(args, student) == {"occupancy_candidates": 300}
    args.render_occupancy_candidates = 0
    assert distill_cli.student_render_settings(args, student) == {}
    # Samples per ray and two-pass rendering (the latter by default with the distortion loss).
    args.render_samples = 64
    args.distortion_loss_weight = 0.05
    assert distill_cli.student_render_settings(args, student) == {
        "coarse_samples": 32, "fine_samples": 32, "color_min_weight": distill_cli.STUDENT_COLOR_MIN_WEIGHT}
    args.render_color_min_weight = 0.0
    assert distill_cli.student_render_settings(args, student) == {"coarse_samples": 32, "fine_samples": 32}


def test_cached_teacher_gives_the_same_student_as_live(scene, tmp_path):
    live, cached = tmp_path / "live.pt", tmp_path / "cached.pt"
    cache = tmp_path / "cache"
    common = ["--distill_steps", "12"]
    run_cli(cli_args(scene, live, "hash", *common))
    run_cli(cli_args(scene, cached, "hash", *common, "--teacher_cache", cache, "--cache_only"))
    shards = sorted((cache / "all").glob("shard-*.pt"))
    assert shards and not cached.exists()
    # an interrupted build resumes: a missing shard is made again, the others are kept
    kept = shards[0].stat().st_mtime_ns
    shards[-1].unlink()
    run_cli(cli_args(scene, cached, "hash", *common, "--teacher_cache", cache))
    assert shards[-1].exists() and shards[0].stat().st_mtime_ns == kept
    a, b = load_container(live).state_dict(), load_container(cached).state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key].float(), b[key].float(), atol=1e-6), key
    # a cache from another container is never trusted
    other = tmp_path / "other.pt"
    teacher = load_container(scene["path"])
    with torch.no_grad():
        teacher.sub_modules[0].voxels.mul_(0.5)
    save_container(teacher, other)
    args = cli_args(scene, tmp_path / "x.pt", "hash", *common, "--teacher_cache", cache)
    args[args.index("--container_path") + 1] = str(other)
    with pytest.raises(UserError, match="another container"):
        run_cli(args)


def test_cells_one_at_a_time_fill_one_student_and_resume(scene, tmp_path):
    output = tmp_path / "cells.pt"
    common = ["--distill_steps", "8"]
    first = run_cli(cli_args(scene, output, "hash", *common, "--cell", 0))
    assert first["cells_done"] == ["cell-0"]
    with pytest.raises(UserError, match="already exists"):
        run_cli(cli_args(scene, output, "hash", *common, "--cell", 1))
    second = run_cli(cli_args(scene, output, "hash", *common, "--cell", 0, 1, "--resume"))
    assert second["cells_done"] == ["cell-0", "cell-1"] and [r["region"] for r in second["runs"]] == ["cell-1"]


def test_interrupted_run_resumes_to_the_same_student(scene, tmp_path, monkeypatch):
    whole, partial = tmp_path / "whole.pt", tmp_path / "partial.pt"
    common = ["--distill_steps", "8", "--ckpt_interval", "3"]
    run_cli(cli_args(scene, whole, "hash", *common))
    step = Distiller.step

    def interrupted(self):
        if self.step_count == 5:
            raise KeyboardInterrupt
        return step(self)

    monkeypatch.setattr(Distiller, "step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_cli(cli_args(scene, partial, "hash", *common))
    monkeypatch.setattr(Distiller, "step", step)
    assert distill_cli.progress_path(partial).exists() and not partial.exists()
    with pytest.raises(UserError, match="unfinished distillation"):
        run_cli(cli_args(scene, partial, "hash", *common))
    run_cli(cli_args(scene, partial, "hash", *common, "--resume"))  # from step 3
    assert not distill_cli.progress_path(partial).exists()
    a, b = load_container(whole).state_dict(), load_container(partial).state_dict()
    for key in a:
        assert torch.allclose(a[key].float(), b[key].float(), atol=1e-6), key


def assert_one_line_error(proc: subprocess.CompletedProcess, needle: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], proc.stderr


def test_bad_input_is_one_line_and_writes_nothing(scene, tmp_path):
    base = cli_args(scene, tmp_path / "s.pt", "hash", "--distill_steps", "2")

    def with_(flag, value):
        args = list(base)
        args[args.index(flag) + 1] = str(value)
        return args

    existing = tmp_path / "existing.pt"
    existing.write_bytes(b"keep")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    cases = [(with_("--container_path", tmp_path / "missing.pt"), "container file is missing"),
             (with_("--model_type", "nerf"), "invalid choice")]
    if os.geteuid() != 0:  # root writes anywhere
        cases.append((with_("--output", locked / "s.pt"), "cannot write"))
    for argv, needle in cases:
        proc = subprocess.run([sys.executable, str(SCRIPT), *argv], check=False, capture_output=True, text=True,
                              cwd=REPO,
                              timeout=120)
        assert_one_line_error(proc, needle)
    # the same one-line errors in this process (no interpreter start each)
    with pytest.raises(UserError, match="already exists"):
        run_cli(with_("--output", existing))
    with pytest.raises(UserError, match="not in the container"):
        run_cli(base + ["--cell", "7"])
    with pytest.raises(UserError, match="either --overwrite"):
        run_cli(base + ["--overwrite", "--resume"])
    with pytest.raises(UserError, match="--pack_memory_fraction must be in"):
        run_cli(base + ["--pack_memory_fraction", "0"])
    with pytest.raises(UserError, match="--max_packs_in_memory must be >= 1"):
        run_cli(base + ["--max_packs_in_memory", "0"])
    assert existing.read_bytes() == b"keep" and not (tmp_path / "s.pt").exists()
    help_text = subprocess.run([sys.executable, str(SCRIPT), "--help"], check=False, capture_output=True,
                               text=True, cwd=REPO)
    assert help_text.returncode == 0 and "--teacher_cache" in help_text.stdout
