#!/usr/bin/env python
"""Where rendering time goes: a container (teacher) and a one-cell student, stage by stage.

Builds both over a prepared dataset's scene (brighton by default: the bench config's sizes, a 2 x 2
teacher of ``hash`` cells and a ``hash`` student with a smaller table), with occupancy grids that
hold a band of the slab above the ground (``--teacher_band``, ``--student_band``: the fraction of
the slab's height, as measured on trained brighton models), and times one batch of the first
training camera's rays through each stage of ``render_rays`` without gradients: ray segments,
occupancy candidates and sample placement, the foreground fields, compositing, the background
model, and the whole call.  Random weights: timing does not depend on what the fields learned,
only on where samples go.  Writes bench/results/<name>.json and prints a table.

With ``--container_path`` (and ``--student_path``) it profiles those trained models instead, on
the first validation view at ``--scale`` (their own occupancy grids, the student's
stored render settings), and also times whole-image renders as eval.py does for each
``--image_batches`` rays per render call.

    python bench/render_profile.py --dataset_path data/brighton
    python bench/render_profile.py --dataset_path D --config_file D/config.yaml \
        --container_path container.pt --student_path student.pt
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import timed, versions, write_bench_config, write_result
from mega_nerf.config import parse, train_parser
from mega_nerf.container.container import Container, load_container
from mega_nerf.data.format import load_dataset
from mega_nerf.evaluation.evaluator import render_view
from mega_nerf.fields.model import model_config_from_args
from mega_nerf.geometry.bounds import ray_segments, scene_bounds_from_args
from mega_nerf.geometry.rays import image_rays
from mega_nerf.render import renderer
from mega_nerf.render.renderer import DEFAULT_COLOR_MIN_WEIGHT, SamplingConfig, render_rays
from mega_nerf.render.volume import composite_intervals, occupied_samples


def band_occupancy(model: Container, band: float) -> None:
    """Occupy the lowest ``band`` of each grid's altitude axis (x is down: the highest x)."""
    for grid in model.occupancy_grids:
        r = grid.resolution
        layers = max(1, round(band * r))
        occupied = torch.zeros(r, r, r, dtype=torch.bool, device=grid.occupied.device)
        occupied[r - layers:] = True
        grid.occupied.copy_(occupied.reshape(-1))


def timed_result(fn, repeats: int) -> tuple[float, object]:
    """Median seconds of ``fn()`` (:func:`bench.common.timed`) and its result."""
    return timed(fn, repeats), fn()


@torch.no_grad()
def profile(model, rays_o, rays_d, appearance, bounds, sampling: SamplingConfig, repeats: int) -> dict:
    """Seconds per stage for one batch (the stages of ``_composite_occupied`` and the background)."""
    n = rays_o.shape[0]
    seconds = {}
    seconds["segments"], (near, far, t_exit) = timed_result(
        lambda: ray_segments(rays_o, rays_d, bounds, model.has_background), repeats)
    if not model.has_occupancy:  # coarse + importance sampling: only the whole call
        seconds["whole"], _ = timed_result(
            lambda: render_rays(model, rays_o, rays_d, appearance, bounds, sampling, train=False), repeats)
        samples = sampling.coarse_samples + sampling.fine_samples
        return {"seconds": seconds, "rays_per_second": n / seconds["whole"], "valid_samples_per_ray": samples,
                "candidates_per_ray": None, "occupied_fraction": None}
    fg_far = torch.minimum(far, torch.maximum(t_exit, near))
    samples = sampling.coarse_samples + sampling.fine_samples
    seconds["candidates"], (z, deltas, valid) = timed_result(
        lambda: occupied_samples(rays_o, rays_d, near, fg_far, model.occupied, sampling.occupancy_candidates,
                                 samples, False), repeats)
    points = rays_o[:, None] + rays_d[:, None] * z[..., None]
    seconds["fields"], (sigma, rgb) = timed_result(
        lambda: renderer._evaluate_until_opaque(model, points, rays_d, appearance, valid, deltas, 0.0,
                                                sampling.color_min_weight), repeats)
    seconds["composite"], _ = timed_result(
        lambda: composite_intervals(sigma.reshape(n, -1), rgb.reshape(n, -1, 3), z, deltas), repeats)
    seconds["whole"], out = timed_result(
        lambda: render_rays(model, rays_o, rays_d, appearance, bounds, sampling, train=False), repeats)
    seconds["background"] = max(seconds["whole"] - sum(seconds[k] for k in ("segments", "candidates", "fields",
                                                                            "composite")), 0.0)
    return {"seconds": seconds, "rays_per_second": n / seconds["whole"],
            "valid_samples_per_ray": float(valid.sum(1).float().mean()),
            # colour is a sigmoid, never exactly 0 where evaluated (see --color_min_weights)
            "coloured_samples_per_ray": float((rgb.reshape(n, -1, 3).abs().sum(-1) > 0).sum(1).float().mean()),
            "background_ray_fraction": float((far > t_exit).float().mean()) if model.has_background else 0.0,
            "candidates_per_ray": sampling.occupancy_candidates,
            "occupied_fraction": sum(g.occupied_fraction() for g in model.occupancy_grids) / len(model.occupancy_grids)}


def random_models(args, dataset, train_args, bounds) -> tuple[Container, Container]:
    """A 2 x 2 teacher and a one-cell student with random weights and banded occupancy."""
    cfg = model_config_from_args(train_args, bounds, len(dataset.items))
    box = bounds.fields_aabb()
    mid = (box[0] + box[1]) / 2
    quarter = (box[1] - box[0]) / 4
    centroids = torch.stack([torch.stack([mid[0], mid[1] + sy * quarter[1], mid[2] + sz * quarter[2]])
                             for sy in (-1, 1) for sz in (-1, 1)])
    torch.manual_seed(0)
    teacher = Container(cfg, bounds, centroids, [0, 1, 2, 3], train_args.boundary_margin, False)
    student = Container({**cfg, "hash_log2_size": args.student_log2_size}, bounds, mid[None], [0],
                        train_args.boundary_margin, False)
    band_occupancy(teacher, args.teacher_band)
    band_occupancy(student, args.student_band)
    return teacher, student


@torch.no_grad()
def image_seconds(model, item, dataset, protocol: str, bounds, sampling: SamplingConfig, ray_batch: int, device,
                  repeats: int) -> float:
    """Median seconds of one whole-image render as eval.py times it (:func:`render_view`)."""
    return timed(lambda: render_view(model, item, dataset, protocol, bounds, sampling, ray_batch, device,
                                     device.type == "cuda"), repeats)


def print_kernel_table(name: str, fn, rows: int) -> None:
    """torch.profiler's operators of ``fn()`` by total device time (self time on CPU)."""
    from torch.profiler import ProfilerActivity, profile as torch_profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with torch_profile(activities=activities) as prof:
        fn()
    key = "cuda_time_total" if torch.cuda.is_available() else "self_cpu_time_total"
    print(f"--- {name}: operators by {key}")
    print(prof.key_averages().table(sort_by=key, row_limit=rows))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset_path", required=True)
    p.add_argument("--name", default="render_profile_brighton")
    p.add_argument("--config", default="brighton.yaml", help="settings file in configs/bench/")
    p.add_argument("--rays", type=int, default=16384, help="rays per batch (eval.py's default batch)")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--teacher_band", type=float, default=0.63)
    p.add_argument("--student_band", type=float, default=0.15)
    p.add_argument("--student_log2_size", type=int, default=18)
    p.add_argument("--candidates", type=int, nargs="+", default=[1024, 256],
                   help="occupancy candidates per ray to profile")
    p.add_argument("--color_min_weights", type=float, nargs="+", default=[DEFAULT_COLOR_MIN_WEIGHT],
                   help="profile with each of these --color_min_weight values (0: colour at every sample)")
    p.add_argument("--container_path", default=None, help="a trained container to profile (else random weights)")
    p.add_argument("--student_path", default=None, help="with --container_path: a distilled student too")
    p.add_argument("--config_file", default=None,
                   help="with --container_path: the models' config (default: --config on the dataset's)")
    p.add_argument("--image_batches", type=int, nargs="*", default=[],
                   help="time whole-image renders with these rays per render call (trained models)")
    p.add_argument("--scale", type=int, default=None,
                   help="with --container_path: the view's downscale (default: the config's val_scale_factor)")
    p.add_argument("--kernel_table", type=int, default=0,
                   help="print torch.profiler's this many most expensive operators of each model's first "
                        "whole-image render")
    p.add_argument("--results_dir", default=None)
    args = p.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dataset = load_dataset(Path(args.dataset_path))
    work = Path(os.environ.get("TMPDIR", "/tmp")) / "render_profile"
    work.mkdir(parents=True, exist_ok=True)
    config = Path(args.config_file) if args.config_file else write_bench_config(Path(args.dataset_path), work,
                                                                                args.config)
    train_args = parse(train_parser(), ["--config_file", str(config), "--exp_name", "x", "--dataset_path",
                                        args.dataset_path])
    bounds = scene_bounds_from_args(dataset, train_args, require_altitude_range=True)
    settings = {}
    if args.container_path:
        teacher = load_container(Path(args.container_path), device)
        bounds = teacher.bounds
        models = {"teacher": teacher}
        if args.student_path:
            models["student"] = load_container(Path(args.student_path), device)
            settings = dict(models["student"].render_settings or {})
        item = dataset.val[0].scaled(args.scale or train_args.val_scale_factor)
    else:
        teacher, student = random_models(args, dataset, train_args, bounds)
        models = {"teacher": teacher, "student": student}
        item = dataset.train[0].scaled(train_args.val_scale_factor)
    for model in models.values():
        model.to(device).eval()
    rays_o, rays_d = image_rays(item.W, item.H, item.intrinsics.to(device), item.c2w.to(device), bounds.center_pixels)
    pick = torch.randperm(rays_o.shape[0], device=device)[:args.rays]
    rays_o, rays_d = rays_o[pick], rays_d[pick]
    appearance = torch.full((rays_o.shape[0],), item.image_index, dtype=torch.long, device=device)
    rows = {}
    use_amp = device.type == "cuda"
    for candidates in args.candidates:
        for weight in args.color_min_weights:
            sampling = SamplingConfig(train_args.coarse_samples, train_args.fine_samples, train_args.bg_samples,
                                      candidates, 0.0, weight)
            for name, model in models.items():
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                    rows[f"{name}-c{candidates}-w{weight:g}"] = profile(model, rays_o, rays_d, appearance, bounds,
                                                                        sampling, args.repeats)
    images = {}
    for name, model in models.items():
        candidates = settings.get("occupancy_candidates", train_args.occupancy_candidates) if name == "student" \
            else train_args.occupancy_candidates
        for weight in args.color_min_weights:
            sampling = SamplingConfig(train_args.coarse_samples, train_args.fine_samples, train_args.bg_samples,
                                      candidates, None, weight)
            for batch in args.image_batches:
                seconds = image_seconds(model, item, dataset, train_args.val_protocol, bounds, sampling, batch,
                                        device, args.repeats)
                images[f"{name}-c{candidates}-w{weight:g}-b{batch}"] = {"seconds": seconds,
                                                                       "rays_per_second": item.W * item.H / seconds}
        if args.kernel_table and args.image_batches:
            print_kernel_table(name, lambda: image_seconds(model, item, dataset, train_args.val_protocol, bounds,
                                                           sampling, args.image_batches[0], device, 1),
                               args.kernel_table)
    result = {"name": args.name, "command": " ".join([Path(sys.executable).name, *sys.argv]),
              "device": torch.cuda.get_device_name(0) if device.type == "cuda" else f"CPU ({os.cpu_count()} cores)",
              "versions": versions(), "dataset": args.dataset_path, "rays": args.rays,
              "bands": None if args.container_path else {"teacher": args.teacher_band, "student": args.student_band},
              "models": {"container": args.container_path, "student": args.student_path},
              "image": {"width": item.W, "height": item.H}, "runs": rows, "images": images}
    write_result(args.name, result, Path(args.results_dir) if args.results_dir else None)
    stages = ["segments", "candidates", "fields", "composite", "background", "whole"]
    print(f"{'run':<26}" + "".join(f"{s:>12}" for s in stages) + f"{'rays/s':>12}{'samples':>9}{'coloured':>9}")
    for run, r in rows.items():
        coloured = r.get("coloured_samples_per_ray")
        print(f"{run:<26}" + "".join(f"{1000 * r['seconds'][s]:>10.2f}ms" if s in r["seconds"] else f"{'-':>12}"
                                     for s in stages)
              + f"{r['rays_per_second']:>12.0f}{r['valid_samples_per_ray']:>9.1f}"
              + (f"{coloured:>9.1f}" if coloured is not None else f"{'-':>9}"))
    for run, r in images.items():
        print(f"whole {item.W}x{item.H} image, {run}: {1000 * r['seconds']:.2f} ms, {r['rays_per_second']:.0f} rays/s")


if __name__ == "__main__":
    main()
