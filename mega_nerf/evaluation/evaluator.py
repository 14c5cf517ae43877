"""Evaluate a container (or a single whole-scene checkpoint) on the validation images, under the
protocol given by ``--val_protocol`` (see :mod:`mega_nerf.evaluation.protocols`).

Under ``torch.distributed.run`` rank r renders images ``r::world_size`` and rank 0 gathers the
per-image results, so the metrics are the same for any number of processes.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from mega_nerf import distributed
from mega_nerf.config import apply_render_settings, eval_parser, parse
from mega_nerf.container.container import load_container
from mega_nerf.data.format import load_dataset
from mega_nerf.errors import require
from mega_nerf.evaluation.images import colorize_depth, save_png, side_by_side, to_uint8
from mega_nerf.evaluation.metrics import LpipsMetric, psnr, split_for_protocol, ssim, summarize
from mega_nerf.evaluation.protocols import DESCRIPTIONS, appearance_index
from mega_nerf.evaluation.seams import image_seam_metrics, summarize_seams
from mega_nerf.fields.model import SceneModel
from mega_nerf.geometry.bounds import SceneBounds
from mega_nerf.io_utils import atomic_write_json
from mega_nerf.render.renderer import SamplingConfig, render_image


def load_model(args: argparse.Namespace, device: torch.device):
    """``(model, bounds)`` from ``--container_path`` or a whole-scene ``--ckpt_path``."""
    if args.container_path:
        container = load_container(Path(args.container_path), device, args.boundary_margin,
                                   args.blend_weights)
        return container, container.bounds
    require(args.ckpt_path is not None, "pass --container_path (a merged model) or --ckpt_path (a whole-scene "
                                        "checkpoint) to evaluate")
    path = Path(args.ckpt_path)
    require(path.exists(), f"{path}: checkpoint is missing")
    state = torch.load(path, map_location="cpu", weights_only=False)
    model = SceneModel(state["model_config"])
    model.load_state_dict(state["model_state_dict"])
    return model.to(device).eval(), SceneBounds.from_dict(state["bounds"])


#: Warm-up renders are this many times smaller than the scored images along each side.
WARM_UP_DOWNSCALE = 8


def pooled_samples_per_ray(per_image: list[dict]) -> float | None:
    """Foreground samples placed in occupied space per ray over all images (weighted by their
    rays), or None when a model without occupancy grid rendered them."""
    if not per_image or any(r["samples_per_ray"] is None for r in per_image):
        return None
    return sum(r["samples_per_ray"] * r["rays"] for r in per_image) / sum(r["rays"] for r in per_image)


def render_view(model, item, dataset, protocol: str, bounds: SceneBounds, sampling: SamplingConfig, ray_batch: int,
                device: torch.device, use_amp: bool, downscale: int = 1,
                stats: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(rgb, depth) of one validation view, at 1/``downscale`` of ``item``'s size, with its protocol's
    appearance; the fields in bf16 under ``use_amp`` as in training, compositing in fp32
    (``stats``: see :func:`render_image`)."""
    w, h = max(1, item.W // downscale), max(1, item.H // downscale)
    scale = torch.tensor([w / item.W, h / item.H, w / item.W, h / item.H], dtype=item.intrinsics.dtype)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
        return render_image(model, w, h, item.intrinsics * scale, item.c2w, appearance_index(dataset, item, protocol),
                            bounds, sampling, ray_batch, device, stats)


def warm_up(model, items, *render_args) -> None:
    """Render each of ``items`` once at 1/``WARM_UP_DOWNSCALE`` of its size, untimed and discarded
    (``render_args``: :func:`render_view`'s after ``item``).

    The first call of each cell's field compiles kernels (Triton, cuBLAS heuristics) and sizes the
    caching allocator; without this those seconds land on the first images and the reported
    rays/s measures compilation, not rendering (about 1/64 of the scored rays; all of this rank's
    cameras, so every cell they see is warmed).
    """
    for item in items:
        render_view(model, item, *render_args, downscale=WARM_UP_DOWNSCALE)


def evaluate(args: argparse.Namespace) -> dict:
    phase_started = time.time()
    phases = {}  # wall seconds of each phase on this rank, so fixed costs show up in metrics.json

    def phase_done(name: str) -> None:
        nonlocal phase_started
        now = time.time()
        phases[name] = phases.get(name, 0.0) + now - phase_started
        phase_started = now

    info = distributed.init_from_env(args.device)
    device = distributed.default_device(args.device, info)
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    output = Path(args.output_path) if args.output_path else Path(args.exp_name) / "eval"
    if info.is_main:
        require(not (output / "metrics.json").exists(),
                f"{output}: already holds evaluation results; pass another --output_path or delete it")
    dataset = load_dataset(Path(args.dataset_path), args.train_every)
    require(dataset.val, f"{args.dataset_path}/val: no validation images to evaluate")
    phase_done("load_dataset")
    model, bounds = load_model(args, device)
    applied = apply_render_settings(args, model, args.container_path or args.ckpt_path)
    phase_done("load_model")
    require(abs(bounds.pose_scale_factor - dataset.pose_scale_factor) < 1e-6 * dataset.pose_scale_factor,
            f"{args.dataset_path}: pose_scale_factor differs from the model's; evaluate on the dataset it was "
            f"trained on")
    sampling = SamplingConfig.from_args(args)
    items = dataset.val[: args.max_val_images] if args.max_val_images else dataset.val
    lpips = LpipsMetric(device=device)
    render_args = (dataset, args.val_protocol, bounds, sampling, args.image_pixel_batch_size, device,
                   args.amp and device.type == "cuda")
    results = []
    phase_done("setup")
    mine = {i: items[i].scaled(args.val_scale_factor) for i in range(info.rank, len(items), info.world_size)}
    warm_up(model, mine.values(), *render_args)
    phase_done("warm_up")
    for index, item in tqdm(mine.items(), desc=f"eval[rank {info.rank}]", disable=not info.is_main, file=sys.stdout):
        started, stats = time.time(), {}
        rgb, depth = render_view(model, item, *render_args, stats=stats)
        seconds = time.time() - started
        phase_done("render")
        gt = item.load_image().float() / 255
        pred_s, gt_s = split_for_protocol(rgb, args.val_protocol), split_for_protocol(gt, args.val_protocol)
        metric_depth = depth * dataset.pose_scale_factor
        save_png(side_by_side(rgb, gt, colorize_depth(metric_depth)), output / "images" / f"{item.stem}.png")
        save_png(to_uint8(rgb), output / "rendered" / f"{item.stem}.png")
        results.append({"index": index, "stem": item.stem, "psnr": psnr(pred_s, gt_s), "ssim": ssim(pred_s, gt_s),
                        "lpips": lpips(pred_s, gt_s), "seconds": seconds, "rays": item.W * item.H,
                        "samples_per_ray": stats.get("samples_per_ray"),
                        "width": item.W, "height": item.H})
        if getattr(args, "seam_metrics", False):  # pixels that look at a border between cells
            results[-1]["seams"] = image_seam_metrics(model, bounds, item.W, item.H, item.intrinsics, item.c2w,
                                                      appearance_index(dataset, item, args.val_protocol), rgb,
                                                      depth, gt, args.val_protocol)
        phase_done("metrics_and_images")
    gathered = sorted((r for part in distributed.gather_objects(results) for r in part), key=lambda r: r["index"])
    metrics = {}
    if info.is_main:
        total_seconds = sum(r["seconds"] for r in gathered)
        metrics = {
            "protocol": args.val_protocol, "protocol_description": DESCRIPTIONS[args.val_protocol],
            "images": len(gathered), "val_scale_factor": args.val_scale_factor,
            "psnr": summarize([r["psnr"] for r in gathered]), "ssim": summarize([r["ssim"] for r in gathered]),
            "lpips": summarize([r["lpips"] for r in gathered]),
            "lpips_status": "computed (vgg)" if lpips.available else f"not computed: {lpips.reason}",
            "rays_per_second": sum(r["rays"] for r in gathered) / max(total_seconds, 1e-9),
            "seconds_per_image": total_seconds / max(len(gathered), 1),
            "samples_per_ray": pooled_samples_per_ray(gathered),
            "processes": info.world_size, "device": str(device), "main_rank_phase_seconds": phases,
            "model": str(args.container_path or args.ckpt_path),
            "sampling": {"occupancy_candidates": args.occupancy_candidates, "coarse_samples": args.coarse_samples,
                         "fine_samples": args.fine_samples, "bg_samples": args.bg_samples},
            "render_settings_from_model": applied, "per_image": gathered,
        }
        if getattr(args, "seam_metrics", False):
            metrics["seams"] = summarize_seams([r.get("seams") for r in gathered])
            print(seam_line(metrics["seams"]), flush=True)
        atomic_write_json(metrics, output / "metrics.json")
        print(f"PSNR {metrics['psnr']['mean']:.2f} dB, SSIM {metrics['ssim']['mean']:.4f} over {len(gathered)} "
              f"validation images ({DESCRIPTIONS[args.val_protocol]}); "
              f"{metrics['rays_per_second']:.0f} rays/s"
              + ("" if metrics["samples_per_ray"] is None else f" ({metrics['samples_per_ray']:.1f} samples per ray)")
              + f"; results in {output}", flush=True)
    distributed.barrier()
    distributed.shutdown()
    return metrics


def seam_line(seams: dict | None) -> str:
    """One line of ``--seam_metrics`` results for the console."""
    if seams is None:
        return "--seam_metrics: nothing to measure (a single model, not a container of cells)"

    def db(group: str) -> str:
        value = seams[group]["psnr"]
        return "-" if value is None else f"{value:.2f} dB"

    gap = seams["cell_color_gap"]
    return (f"seams: {100 * seams['seam_fraction']:.1f} % of the foreground pixels look at a border; PSNR there "
            f"{db('seam')} (across a surface {db('seam_surface')}, at occlusion edges {db('seam_edge')}), where cells "
            f"blend {db('blend')}, where one cell answers {db('interior')}; cells' colour "
            f"gap {'-' if gap is None else f'{gap:.4f}'} (all in metrics.json)")


def main(argv=None) -> dict:
    return evaluate(parse(eval_parser(), argv))
