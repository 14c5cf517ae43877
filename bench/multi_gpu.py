#!/usr/bin/env python
"""Multi-process stages on several GPUs (NCCL): masks and eval on 1 vs N processes must agree,
and the parscript dispatcher trains the cells one per GPU.  Writes bench/results/<name>.json.

    python bench/multi_gpu.py --gpus 2
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
from mega_nerf.partition.masks import read_mask  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--gpus", type=int, default=2)
    p.add_argument("--name", default="multi_gpu")
    p.add_argument("--train_iterations", type=int, default=300)
    args = p.parse_args()
    py, n = sys.executable, str(args.gpus)
    torchrun = [py, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", n]
    work = Path(tempfile.mkdtemp(prefix="mega_nerf_mgpu_"))
    log = log_path(args.name, work)
    data, config = work / "dataset", work / "dataset" / "config.yaml"
    t = {"scene": run_logged([py, "scripts/make_synthetic_scene.py", "--output", str(data), "--preset", "tiny", "--quiet"], log)}
    for procs in ("1", n):
        cmd = ([py] if procs == "1" else torchrun) + ["scripts/create_cluster_masks.py", "--config", str(config),
                                                     "--dataset_path", str(data), "--output", str(work / f"masks{procs}"),
                                                     "--grid_dim", "2", "2"]
        t[f"masks_{procs}proc"] = run_logged(cmd, log)
    files = sorted((work / "masks1").glob("*/*.pt"))
    differing = sum(int((read_mask(f) != read_mask(work / f"masks{n}" / f.relative_to(work / "masks1"))).sum())
                    for f in files)
    jobs = work / "jobs.txt"
    run_logged([py, "scripts/write_parscript.py", "--grid_dim", "2", "2", "--mask_path", str(work / "masks1"), "--output",
         str(jobs), "--extra_args", f"--train_iterations {args.train_iterations}"], log)
    t["train_parscript"] = run_logged([py, "-m", "parscript.dispatcher", str(jobs), "-g", n], log, env={
        "CONFIG_FILE": str(config), "EXP_PREFIX": str(work / "exp" / "cell"), "DATASET_PATH": str(data),
        "CHUNK_PREFIX": str(work / "chunks" / "cell"), "MASK_PATH": str(work / "masks1"),
        "PATH": f"{Path(py).parent}:{os.environ['PATH']}"})
    devices = sorted({f'{json.loads(s.read_text())["device"]} (CUDA_VISIBLE_DEVICES={json.loads(s.read_text())["cuda_visible_devices"]})' for s in (work / "exp").glob("cell-*/train_summary.json")})
    run_logged([py, "scripts/merge_submodules.py", "--config_file", str(config), "--ckpt_prefix", str(work / "exp" / "cell-"),
         "--centroid_path", str(work / "masks1" / "params.pt"), "--output", str(work / "container.pt"),
         "--train_iterations", str(args.train_iterations)], log)
    metrics = {}
    for procs in ("1", n):
        cmd = ([py] if procs == "1" else torchrun) + ["mega_nerf/eval.py", "--config_file", str(config), "--exp_name",
                                                     str(work / "e"), "--dataset_path", str(data), "--container_path",
                                                     str(work / "container.pt"), "--output_path",
                                                     str(work / f"eval{procs}")]
        t[f"eval_{procs}proc"] = run_logged(cmd, log)
        metrics[procs] = json.loads((work / f"eval{procs}" / "metrics.json").read_text())
    result = {
        "name": args.name, "command": " ".join([Path(py).name, *sys.argv]),
        "device": f"{args.gpus} x {torch.cuda.get_device_name(0)}",
        "versions": versions(),
        "stage_seconds": t, "masks_differing_pixels_1_vs_n": differing,
        "mask_pixels": sum(read_mask(f).numel() for f in files), "cells_trained_on": devices,
        "psnr_1proc": metrics["1"]["psnr"]["mean"], "psnr_nproc": metrics[n]["psnr"]["mean"],
        "ssim_1proc": metrics["1"]["ssim"]["mean"], "ssim_nproc": metrics[n]["ssim"]["mean"],
        "eval_processes": metrics[n]["processes"],
    }
    write_result(args.name, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
