"""The cluster-mask stage: centroids, per-image per-cell masks, ``params.pt``.

Runs as one process or under ``torch.distributed.run``; rank r handles images ``r::world_size``
of the name-sorted list, so the output is identical for any number of processes.
"""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import torch
from tqdm import tqdm

from mega_nerf import distributed
from mega_nerf.config import add_scene_options, new_parser, parse
from mega_nerf.data.format import load_dataset
from mega_nerf.errors import UserError, require
from mega_nerf.geometry.bounds import box_crossing, scene_bounds_from_args, truncate_with_altitude_planes
from mega_nerf.geometry.rays import image_rays
from mega_nerf.io_utils import atomic_torch_save
from mega_nerf.partition.centroids import grid_centroids
from mega_nerf.partition.masks import mask_path, ray_cell_membership, read_mask, write_mask

PLAN_FILE = ".plan.pt"


def mask_parser() -> argparse.ArgumentParser:
    p = new_parser("Partition the scene into a grid of cells and write per-image, per-cell pixel masks.")
    add_scene_options(p)
    g = p.add_argument_group("masks")
    g.add_argument("--dataset_path", type=str, required=True)
    g.add_argument("--output", type=str, required=True, help="mask folder to create")
    g.add_argument("--grid_dim", nargs=2, type=int, required=True, metavar=("GX", "GY"),
                   help="cells along Right and Back")
    g.add_argument("--ray_samples", type=int, default=1000, help="samples per ray for the distance test")
    g.add_argument("--ray_chunk_size", type=int, default=48 * 1024,
                   help="rays per batch: memory is about ray_chunk_size x ray_samples x 16 bytes")
    g.add_argument("--dist_chunk_size", type=int, default=64 * 1024 * 1024,
                   help="accepted for Mega-NeRF compatibility; memory is bounded by --ray_chunk_size")
    g.add_argument("--segmentation_path", type=str, default=None,
                   help="optional folder of <stem>.pt masks ANDed with every cell's mask")
    g.add_argument("--resume", default=False, action="store_true", help="continue an interrupted run")
    g.add_argument("--device", type=str, default=None, help="cpu or cuda (default: cuda if available)")
    return p


def _plan(args: argparse.Namespace) -> dict:
    dataset = load_dataset(Path(args.dataset_path), args.train_every)
    gx, gy = args.grid_dim
    require(gx >= 1 and gy >= 1, f"--grid_dim {gx} {gy}: both values must be at least 1")
    require(args.ray_samples >= 2, "--ray_samples must be at least 2")
    require(args.ray_chunk_size >= 1, "--ray_chunk_size must be at least 1")
    positions = dataset.camera_positions
    bounds = scene_bounds_from_args(dataset, args, require_altitude_range=True)
    plan = {
        "origin_drb": dataset.origin_drb, "pose_scale_factor": dataset.pose_scale_factor,
        "ray_altitude_range": bounds.altitude_range, "near": bounds.near,
        # Mega-NeRF: masks use far = 2 (normalised) when no far is configured.
        "far": bounds.far if bounds.far is not None else 2.0,
        "centroids": grid_centroids(positions, (gx, gy)), "grid_dim": [gx, gy],
        "min_position": positions.min(0).values, "max_position": positions.max(0).values,
        "cluster_2d": args.cluster_2d, "boundary_margin": args.boundary_margin,
        "ray_samples": args.ray_samples, "center_pixels": args.center_pixels,
        "image_stems": [m.stem for m in dataset.items],
    }
    if bounds.box:  # object-centric scene: rays count only inside the foreground box
        plan["foreground_bounds"] = list(args.foreground_bounds)
        plan["foreground_box"] = torch.tensor([bounds.center, bounds.radius])
    elif bounds.field_box is not None:  # --ellipse_footprint: training must use the same ellipsoid
        plan["foreground_ellipsoid"] = torch.tensor([bounds.center, bounds.radius])
    return dataset, plan


def _same_plan(a: dict, b: dict) -> bool:
    for key, value in a.items():
        other = b.get(key)
        if isinstance(value, torch.Tensor):
            if not isinstance(other, torch.Tensor) or value.shape != other.shape or not torch.allclose(value, other):
                return False
        elif value != other:
            return False
    return True


def _prepare_output(output: Path, plan: dict, resume: bool) -> None:
    if output.exists() and any(output.iterdir()):
        previous = output / PLAN_FILE
        if not resume:
            raise UserError(f"{output}: folder already holds results; pass --resume to continue that run "
                            f"or choose a new --output")
        require(previous.exists(), f"{output}: not a cluster-mask folder (no {PLAN_FILE}); choose a new --output")
        require(_same_plan(plan, torch.load(previous, weights_only=False)),
                f"{output}: was made with other settings (grid, margin, dataset); choose a new --output")
    output.mkdir(parents=True, exist_ok=True)
    for k in range(len(plan["centroids"])):
        (output / str(k)).mkdir(exist_ok=True)
    atomic_torch_save(plan, output / PLAN_FILE)


def create_cluster_masks(args: argparse.Namespace) -> dict:
    info = distributed.init_from_env(args.device)
    device = distributed.default_device(args.device, info)
    output = Path(args.output)
    dataset, plan = _plan(args)
    if info.is_main:
        _prepare_output(output, plan, args.resume)
    distributed.barrier()

    centroids = plan["centroids"].to(device)
    num_cells = len(centroids)
    counts = torch.zeros(num_cells, dtype=torch.float64)
    items = dataset.items[info.rank::info.world_size]
    progress = tqdm(items, desc=f"masks[rank {info.rank}]", disable=not info.is_main, file=sys.stdout)
    for item in progress:
        paths = [mask_path(output, k, item.stem) for k in range(num_cells)]
        if args.resume and all(p.exists() for p in paths):
            counts += torch.tensor([float(read_mask(p).sum()) for p in paths], dtype=torch.float64)
            continue
        rays_o, rays_d = image_rays(item.W, item.H, item.intrinsics.to(device), item.c2w.to(device),
                                    args.center_pixels)
        member = torch.empty(item.H * item.W, num_cells, dtype=torch.bool)
        for start in range(0, len(rays_o), args.ray_chunk_size):
            o = rays_o[start:start + args.ray_chunk_size]
            d = rays_d[start:start + args.ray_chunk_size]
            near = torch.full((len(o),), plan["near"], device=device)
            far = torch.full((len(o),), plan["far"], device=device)
            if "foreground_box" in plan:
                t_enter, t_exit = box_crossing(o, d, *plan["foreground_box"].to(device))
                near = torch.maximum(near, t_enter)
                far = torch.maximum(torch.minimum(far, t_exit), near)
            near, far = truncate_with_altitude_planes(o, d, near, far, plan["ray_altitude_range"])
            member[start:start + len(o)] = ray_cell_membership(
                o, d, near, far, centroids, args.boundary_margin, args.cluster_2d, args.ray_samples).cpu()
        if args.segmentation_path is not None:
            segmentation = read_mask(Path(args.segmentation_path) / f"{item.stem}.pt")
            require(tuple(segmentation.shape) == (item.H, item.W),
                    f"{args.segmentation_path}/{item.stem}.pt: shape {tuple(segmentation.shape)} does not "
                    f"match the image ({item.H}, {item.W})")
            member &= segmentation.reshape(-1, 1)
        for k, path in enumerate(paths):
            write_mask(path, member[:, k].reshape(item.H, item.W))
        counts += member.sum(0).double()

    counts = distributed.all_reduce_sum(counts)
    params = {key: value for key, value in plan.items() if key != "image_stems"}
    params["cell_pixel_counts"] = counts.long()
    if info.is_main:
        empty = [k for k in range(num_cells) if counts[k] == 0]
        for k in empty:
            warnings.warn(f"cell {k} is reached by no ray; it will be skipped by training and merging")
        atomic_torch_save(params, output / "params.pt")
        print(f"wrote masks for {len(dataset.items)} images x {num_cells} cells to {output}; "
              f"pixels per cell: {counts.long().tolist()}", flush=True)
    distributed.barrier()
    distributed.shutdown()
    return params


def main(argv=None) -> None:
    create_cluster_masks(parse(mask_parser(), argv))


def cli() -> None:
    """Console entry point."""
    from mega_nerf.errors import cli_entry

    cli_entry(main)()
