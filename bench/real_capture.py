#!/usr/bin/env python
"""A real drone flight end to end on one GPU (issue 4): masks (2 x 2 cells), chunks and training
of every cell one after another, merge, eval, under a fixed wall-clock budget.

    python scripts/prepare_dataset.py --colmap ../shared/data/brighton_beach_drone --up +z --metric \\
        --val_every 6 --output BRIGHTON
    python bench/real_capture.py --dataset_path BRIGHTON --cell_seconds 75

Two runs of the same settings, started together on the same GPU (so each has about half of it):

* ``mega_nerf``: Mega-NeRF's protocol (the left half of each validation image is trained, the right
  half scored at 1/4 resolution), to compare with Mega-NeRF's own code on the same split;
* ``held_out``: validation images never trained; whole images scored at 1/4 resolution with the
  nearest training camera's appearance embedding.

``--variant NAME=FLAGS`` (repeatable) compares training settings: every variant runs every protocol,
all started together (runs named NAME-PROTOCOL), e.g. ``--variant base= --variant depth="--depth_loss_weight
0.1" --protocols mega_nerf``.

Each cell trains ``--cell_seconds`` on the training clock; the wall time of the whole training stage
(chunk writing, loading and the 4 cells, sharing the GPU with the other run) is reported beside it.
Settings: configs/bench/brighton.yaml on top of the dataset's own config.yaml.  Writes
bench/results/<name>.json (and $OUT/<name>.json on the device machine) and one render strip per run.

CPU smoke test (a few minutes on 2 cores, results to a temporary folder):

    python bench/real_capture.py --dataset_path BRIGHTON --cell_seconds 5 --results_dir /tmp/r \\
        --extra "--batch_size 256 --coarse_samples 16 --fine_samples 16 --occupancy_resolution 32 \\
        --occupancy_candidates 64 --hash_log2_size 14 --num_chunks 4" --masks_extra "--ray_samples 16" \\
        --eval_extra "--val_scale_factor 20 --coarse_samples 16 --fine_samples 16"
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import log_path, run_logged, versions, write_bench_config, write_result  # noqa: E402

PROTOCOLS = ("mega_nerf", "held_out")
#: Mega-NeRF's own code on this flight and split (issue 4): 6 minutes per cell, 4 cells sharing one H100.
MEGA_NERF_REFERENCE = {"psnr": 16.3, "ssim": 0.41, "minutes_per_cell": 6, "cells_sharing_one_gpu": 4,
                       "iterations_per_cell": 1250}


def run_all(jobs: dict[str, list[str]], log_dir: Path) -> dict[str, float]:
    """Start every job at once; seconds until each ended (raises if one failed)."""
    started, procs = time.time(), {}
    for key, cmd in jobs.items():
        log = open(log_dir / f"{key}.log", "w")
        log.write("$ " + " ".join(cmd) + "\n")
        log.flush()
        procs[key] = (subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT), log)
    seconds = {}
    for key, (proc, log) in procs.items():
        code = proc.wait()
        log.close()
        seconds[key] = time.time() - started
        if code != 0:
            print((log_dir / f"{key}.log").read_text()[-4000:])
            raise SystemExit(f"failed: {key}")
    return seconds


def parse_variant(text: str) -> tuple[str, str]:
    """``NAME=FLAGS`` of ``--variant`` -> (NAME, FLAGS)."""
    name, sep, flags = text.partition("=")
    if not sep or not name.replace("_", "").isalnum():
        raise SystemExit(f"--variant {text!r}: expected NAME=FLAGS with NAME in letters, digits and '_'")
    return name, flags


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset_path", required=True, help="a dataset made by scripts/prepare_dataset.py")
    p.add_argument("--name", default="real_capture_brighton")
    p.add_argument("--config", default="brighton.yaml", help="settings file in configs/bench/")
    p.add_argument("--grid_dim", nargs=2, default=["2", "2"])
    p.add_argument("--cell_seconds", type=float, default=75.0, help="training-clock seconds per cell")
    p.add_argument("--protocols", nargs="+", choices=PROTOCOLS, default=list(PROTOCOLS))
    p.add_argument("--extra", default="", help="extra train_cells flags for every run")
    p.add_argument("--variant", action="append", default=[], metavar="NAME=FLAGS",
                   help="a named set of extra train_cells flags (repeatable): every variant runs every protocol, "
                        "all at once on the same GPU; runs are then named NAME-PROTOCOL")
    p.add_argument("--eval_extra", default="", help="extra eval.py flags")
    p.add_argument("--masks_extra", default="", help="extra create_cluster_masks.py flags")
    p.add_argument("--work", default=None, help="work folder (default: a new temporary one)")
    p.add_argument("--results_dir", default=None, help="default: bench/results")
    args = p.parse_args()
    py, dataset = sys.executable, Path(args.dataset_path).resolve()
    work = Path(args.work or tempfile.mkdtemp(prefix="mega_nerf_real_"))
    work.mkdir(parents=True, exist_ok=True)
    log = log_path(args.name, work)
    # Render strips go to $OUT on the device machine; the per-run logs stay in the work folder
    # (the device returns at most 8 files: pack them up afterwards).
    pictures = Path(os.environ["OUT"]) if os.environ.get("OUT") else work
    logs = work / "logs"
    logs.mkdir(exist_ok=True)
    config = write_bench_config(dataset, work, args.config)
    started = time.time()
    masks = work / "masks"
    seconds = {"masks": run_logged([py, "scripts/create_cluster_masks.py", "--config", str(config), "--dataset_path",
                                    str(dataset), "--output", str(masks), "--grid_dim", *args.grid_dim,
                                    *args.masks_extra.split()], log)}

    variants = dict(parse_variant(v) for v in args.variant) or {"": ""}
    # run name -> (protocol, extra train flags)
    plan = {(f"{v}-{p}" if v else p): (p, f"{args.extra} {flags}") for v, flags in variants.items()
            for p in args.protocols}

    def train_cmd(run: str) -> list[str]:
        protocol, extra = plan[run]
        return [py, "-m", "mega_nerf.train_cells", "--config_file", str(config), "--dataset_path", str(dataset),
                "--exp_name", str(work / run / "exp" / "cell"), "--chunk_paths", str(work / run / "chunks" / "cell"),
                "--cluster_mask_path", str(masks), "--val_protocol", protocol, "--train_seconds",
                str(args.cell_seconds), "--lr_schedule", "time", "--progress_interval", "30", *extra.split()]

    seconds["training"] = run_all({f"train_{r}": train_cmd(r) for r in plan}, logs)
    for run in plan:
        seconds[f"merge_{run}"] = run_logged(
            [py, "scripts/merge_submodules.py", "--config_file", str(config), "--ckpt_prefix",
             str(work / run / "exp" / "cell-"), "--centroid_path", str(masks / "params.pt"), "--output",
             str(work / run / "container.pt")], log)
    seconds["eval"] = run_all({f"eval_{r}": [
        py, "mega_nerf/eval.py", "--config_file", str(config), "--dataset_path", str(dataset), "--exp_name",
        str(work / r / "eval_exp"), "--container_path", str(work / r / "container.pt"), "--output_path",
        str(work / r / "eval"), "--val_protocol", plan[r][0], *args.eval_extra.split()] for r in plan}, logs)

    runs = {}
    for run, (protocol, extra) in plan.items():
        grid = json.loads((work / run / "exp" / "cell" / "cells_summary.json").read_text())
        metrics = json.loads((work / run / "eval" / "metrics.json").read_text())
        runs[run] = {
            "protocol": protocol, "extra": extra.strip(),
            "psnr": metrics["psnr"]["mean"], "ssim": metrics["ssim"]["mean"],
            "lpips": metrics["lpips"]["mean"] if metrics["lpips"].get("count") else None,
            "per_image": [{k: r[k] for k in ("stem", "psnr", "ssim", "width", "height")} for r in metrics["per_image"]],
            "protocol_description": metrics["protocol_description"], "val_scale_factor": metrics["val_scale_factor"],
            "training_wall_seconds": grid["wall_seconds"],
            "cells": {c: {k: r.get(k) for k in ("iterations", "seconds", "rays_per_second", "training_rays",
                                                  "val_psnr")} for c, r in grid["cells"].items()},
            "eval_rays_per_second": metrics["rays_per_second"],
            "eval_phase_seconds": metrics.get("main_rank_phase_seconds"),
        }
        strip = pictures / f"{args.name}_{run}.jpg"
        images = sorted((work / run / "eval" / "images").glob("*.png"))
        if images:
            import cv2
            import numpy as np

            tiles = [cv2.imread(str(i)) for i in images]
            width = min(t.shape[1] for t in tiles)
            cv2.imwrite(str(strip), np.concatenate([t[:, :width] for t in tiles], 0), [cv2.IMWRITE_JPEG_QUALITY, 85])
            runs[run]["strip"] = strip.name
    cuda = torch.cuda.is_available()
    result = {
        "name": args.name, "command": " ".join([Path(py).name, *sys.argv]),
        "device": torch.cuda.get_device_name(0) if cuda else f"CPU ({os.cpu_count()} cores)",
        "versions": versions(), "dataset": str(dataset),
        "import": json.loads((dataset / "import.json").read_text()) if (dataset / "import.json").exists() else None,
        "config": yaml.safe_load(config.read_text()), "extra": args.extra, "grid_dim": args.grid_dim,
        "cell_seconds": args.cell_seconds, "runs_sharing_the_gpu": len(plan),
        "stage_seconds": seconds, "runs": runs, "mega_nerf_reference": MEGA_NERF_REFERENCE,
        "total_seconds": time.time() - started,
    }
    write_result(args.name, result, Path(args.results_dir) if args.results_dir else None)
    width = max(len(r) for r in runs) + 2
    print(f"{'run':<{width}}{'PSNR':>7}{'SSIM':>8}{'train wall s':>14}{'iterations per cell':>22}")
    for run, r in runs.items():
        its = "/".join(str(c["iterations"]) for c in r["cells"].values())
        print(f"{run:<{width}}{r['psnr']:>7.2f}{r['ssim']:>8.3f}{r['training_wall_seconds']:>14.0f}{its:>22}")
    print(f"Mega-NeRF (its code, 6 min per cell, 4 cells on one H100): {MEGA_NERF_REFERENCE['psnr']} dB / "
          f"{MEGA_NERF_REFERENCE['ssim']}; stage seconds {json.dumps(seconds)}")


if __name__ == "__main__":
    main()
