#!/usr/bin/env python
"""Every stage on one machine (CPU or one GPU), timed: scene, masks, chunks + training of every
cell (sequentially, one device), merge, eval.  Writes bench/results/<name>.json.

    python bench/pipeline.py --name pipeline_gpu --preset city --num_images 300 --grid_dim 2 2 \
        --train_iterations 2000 --train_extra "--batch_size 8192"
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import log_path, run_logged, versions, write_result  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--name", default="pipeline")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--num_images", type=int, default=None)
    p.add_argument("--grid_dim", nargs=2, default=["2", "2"])
    p.add_argument("--train_iterations", type=int, default=500)
    p.add_argument("--train_extra", default="", help="extra train.py flags, e.g. '--batch_size 8192'")
    p.add_argument("--eval_extra", default="", help="extra eval.py flags")
    p.add_argument("--work", default=None, help="work folder (default: a temporary one)")
    p.add_argument("--compare_cpu_masks", action="store_true", help="also make masks on CPU and compare")
    args = p.parse_args()
    py = sys.executable
    work = Path(args.work or tempfile.mkdtemp(prefix="mega_nerf_bench_"))
    log = log_path(args.name, work)
    work.mkdir(parents=True, exist_ok=True)
    data, masks, config = work / "dataset", work / "masks", work / "dataset" / "config.yaml"
    times = {}
    scene_cmd = [py, "scripts/make_synthetic_scene.py", "--output", str(data), "--preset", args.preset, "--quiet"]
    if args.num_images:
        scene_cmd += ["--num_images", str(args.num_images)]
    times["scene"] = run_logged(scene_cmd, log)
    times["masks"] = run_logged([py, "scripts/create_cluster_masks.py", "--config", str(config), "--dataset_path", str(data),
                          "--output", str(masks), "--grid_dim", *args.grid_dim], log)
    masks_match_cpu = None
    if args.compare_cpu_masks and torch.cuda.is_available():
        from mega_nerf.partition.masks import read_mask

        times["masks_cpu"] = run_logged([py, "scripts/create_cluster_masks.py", "--config", str(config), "--dataset_path",
                                  str(data), "--output", str(work / "masks_cpu"), "--grid_dim", *args.grid_dim,
                                  "--device", "cpu"], log)
        files = sorted(masks.glob("*/*.pt"))
        differing = sum(int((read_mask(f) != read_mask(work / "masks_cpu" / f.relative_to(masks))).sum()) for f in files)
        total = sum(read_mask(f).numel() for f in files)
        masks_match_cpu = {"differing_pixels": differing, "pixels": total}
    extra = args.train_extra.split()
    cells = int(args.grid_dim[0]) * int(args.grid_dim[1])
    train_seconds, summaries = 0.0, []
    for cell in range(cells):
        exp = work / "exp" / f"cell-{cell}"
        train_seconds += run_logged([py, "mega_nerf/train.py", "--config_file", str(config), "--exp_name", str(exp),
                              "--dataset_path", str(data), "--chunk_paths", str(work / "chunks" / f"cell-{cell}"),
                              "--cluster_mask_path", str(masks / str(cell)), "--train_iterations",
                              str(args.train_iterations), "--ckpt_interval", str(args.train_iterations), *extra], log)
        summaries.append(json.loads((exp / "train_summary.json").read_text()))
    times["chunks_and_training"] = train_seconds
    times["merge"] = run_logged([py, "scripts/merge_submodules.py", "--config_file", str(config), "--ckpt_prefix",
                          str(work / "exp" / "cell-"), "--centroid_path", str(masks / "params.pt"), "--output",
                          str(work / "container.pt"), "--train_iterations", str(args.train_iterations)], log)
    times["eval"] = run_logged([py, "mega_nerf/eval.py", "--config_file", str(config), "--exp_name", str(work / "exp" / "eval"),
                         "--dataset_path", str(data), "--container_path", str(work / "container.pt"), "--output_path",
                         str(work / "eval"), *args.eval_extra.split()], log)
    metrics = json.loads((work / "eval" / "metrics.json").read_text())
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"
    result = {
        "name": args.name, "command": " ".join([Path(py).name, *sys.argv]), "device": device,
        "versions": versions(),
        "preset": args.preset, "num_images": args.num_images, "grid_dim": args.grid_dim,
        "train_iterations": args.train_iterations, "stage_seconds": times,
        "train_rays_per_second": [s["rays_per_second"] for s in summaries],
        "training_rays": [s["training_rays"] for s in summaries],
        "chunk_bytes_per_ray": [s["chunk_bytes_per_ray"] for s in summaries],
        "val_psnr": metrics["psnr"], "val_ssim": metrics["ssim"], "val_protocol": metrics["protocol"],
        "eval_rays_per_second": metrics["rays_per_second"], "masks_match_cpu": masks_match_cpu,
    }
    write_result(args.name, result)
    print(f"{'stage':<22}{'seconds':>10}")
    for k, v in times.items():
        print(f"{k:<22}{v:>10.1f}")
    print(f"train rays/s per cell: {[round(r) for r in result['train_rays_per_second']]}")
    print(f"val PSNR {metrics['psnr']['mean']:.2f} dB, SSIM {metrics['ssim']['mean']:.4f}; eval {metrics['rays_per_second']:.0f} rays/s")
    print(f"masks vs CPU: {masks_match_cpu}")


if __name__ == "__main__":
    main()
