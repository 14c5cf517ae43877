#!/usr/bin/env python
"""How every stage scales with the number of GPUs (issue 5) on the benchmark-sized embedded city.

    python bench/scaling.py --gpus 1       # one GPU
    python bench/scaling.py --gpus 4       # 4 GPUs of the same machine; then bench/results/scaling.json
                                           # holds both runs and the speed-ups per stage

Stages, each on ``--gpus`` processes (torch.distributed.run, NCCL; gloo on a machine without CUDA):
masks (create_cluster_masks), chunks (train_cells --chunks_only: each rank writes the next cell's
chunks), training (train_cells: each rank trains the next cell, a fixed number of steps), merge (one
process), eval (eval.py).  Chunks are written as their own stage, so training never waits for them
(each cell's ``chunk_seconds`` during training is only the opening of its chunks: reported).

Every stage is timed twice: the command's wall time, and the stage's work inside its processes after
the imports (bench/timed_stage.py, the slowest rank), which leaves out Python and torch start-up.
The scene (``--preset city --num_images N``) is generated once in ``--work`` and reused by the next
command.  Each run writes ``<name>_<N>gpu.json``; ``<name>.json`` gathers every run found (in
``--results_dir`` or ``--work``) with speed-ups against the 1-GPU run.

CPU smoke test (1 then 2 gloo processes, tiny sizes, results to a temporary folder), about a minute
each on 2 cores:

    S="--batch_size 256 --coarse_samples 16 --fine_samples 16 --bg_samples 4 --occupancy_resolution 32
       --occupancy_candidates 64"
    for n in 1 2; do python bench/scaling.py --gpus $n --preset tiny --grid_dim 2 2 --train_iterations 30 \\
        --work /tmp/scaling_work --results_dir /tmp/scaling_results --masks_extra "--ray_samples 64" \\
        --train_extra "$S --hash_levels 8 --hash_log2_size 14 --hash_max_resolution 512 --num_chunks 4" \\
        --eval_extra "$S --val_scale_factor 2"; done
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import sys
import time
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import log_path, run_logged, versions, write_bench_config, write_result  # noqa: E402

STAGES = ("masks", "chunks", "training", "merge", "eval")
#: Issue 5's targets: speed-up of 4 GPUs over 1.
TARGETS = {"training": 3.8, "masks": 3.5, "eval": 3.5}


def stage_seconds(prefix: Path) -> float | None:
    """The slowest rank's in-process seconds written by bench/timed_stage.py."""
    parts = [json.loads(Path(p).read_text()) for p in glob.glob(f"{prefix}.rank*.json")]
    return max(p["seconds"] for p in parts) if parts else None


def prepare_scene(args, work: Path, py: str, log: Path) -> tuple[Path, float]:
    """The dataset in ``work/dataset`` (generated unless an earlier run of the same settings made it)."""
    data = work / "dataset"
    spec = {"preset": args.preset, "num_images": args.num_images, "seed": args.seed}
    marker = work / "dataset.json"
    if data.exists() and marker.exists() and json.loads(marker.read_text()) == spec:
        return data, 0.0
    if data.exists():
        raise SystemExit(f"{data}: holds another scene than {spec}; pass another --work")
    cmd = [py, "scripts/make_synthetic_scene.py", "--output", str(data), "--preset", args.preset, "--seed",
           str(args.seed), "--quiet"]
    if args.num_images:
        cmd += ["--num_images", str(args.num_images)]
    seconds = run_logged(cmd, log)
    marker.write_text(json.dumps(spec))
    return data, seconds


def eval_render_seconds(metrics: dict, processes: int) -> float:
    """Rendering wall time of eval: the slowest rank's sum (rank r renders images r::processes)."""
    per_rank = [0.0] * processes
    for row in metrics["per_image"]:
        per_rank[row["index"] % processes] += row["seconds"]
    return max(per_rank)


def combine(name: str, results_dir: Path, work: Path, settings: dict) -> dict | None:
    """Every ``<name>_<N>gpu.json`` run of the same ``settings`` found, with speed-ups of each against
    the 1-GPU run."""
    runs = {}
    for folder in (work, results_dir):
        for path in sorted(folder.glob(f"{name}_*gpu.json")):
            run = json.loads(path.read_text())
            if run.get("settings") == settings:
                runs.setdefault(str(run["gpus"]), run)
    if "1" not in runs or len(runs) < 2:
        return None
    base = runs["1"]
    speedups = {}
    for gpus, run in runs.items():
        if gpus == "1":
            continue
        per = {}
        for kind in ("wall_seconds", "stage_seconds"):
            per[kind] = {s: (base[kind][s] / run[kind][s] if base[kind].get(s) and run[kind].get(s) else None)
                         for s in STAGES}
        per["training_rays_per_second"] = (run["training"]["aggregate_rays_per_second"]
                                           / base["training"]["aggregate_rays_per_second"])
        per["meets_targets"] = {s: (per["stage_seconds"][s] or 0) >= t for s, t in TARGETS.items()} \
            if gpus == "4" else None
        per["eval_render_seconds"] = base["eval"]["render_seconds"] / max(run["eval"]["render_seconds"], 1e-9)
        per["psnr_difference_db"] = run["eval"]["psnr"] - base["eval"]["psnr"]
        speedups[f"{gpus}_vs_1"] = per
    return {"name": name, "device": base["device_name"], "versions": base["versions"],
            "targets_4_vs_1": TARGETS, "speedups": speedups,
            "runs": {g: {k: r[k] for k in ("command", "device", "wall_seconds", "stage_seconds", "training", "eval",
                                           "total_seconds")} for g, r in sorted(runs.items(), key=lambda x: int(x[0]))}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gpus", type=int, required=True, help="processes per stage (one per GPU)")
    p.add_argument("--name", default="scaling")
    p.add_argument("--preset", default="city")
    p.add_argument("--num_images", type=int, default=256, help="images of the preset's flight (0: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--grid_dim", nargs=2, default=["4", "2"])
    p.add_argument("--train_iterations", type=int, default=1500, help="steps per cell")
    p.add_argument("--max_val_images", type=int, default=None, help="evaluate only the first N")
    p.add_argument("--train_extra", default="", help="extra train_cells flags (win over the config)")
    p.add_argument("--eval_extra", default="", help="extra eval.py flags (win over the config)")
    p.add_argument("--masks_extra", default="", help="extra create_cluster_masks.py flags")
    p.add_argument("--no_warmup", dest="warmup", default=True, action="store_false",
                   help="skip the untimed 2-step training of cell 0 that fills the Triton kernel cache first")
    p.add_argument("--scene_only", default=False, action="store_true", help="only generate the scene in --work")
    p.add_argument("--work", default="/tmp/mega_nerf_scaling", help="work folder, shared by the runs")
    p.add_argument("--results_dir", default=None, help="default: bench/results")
    args = p.parse_args()
    args.num_images = args.num_images or None
    py, n = sys.executable, args.gpus
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    results_dir = Path(args.results_dir) if args.results_dir else REPO / "bench" / "results"
    log = log_path(f"{args.name}_{n}gpu", work)
    started = time.time()
    data, scene_seconds = prepare_scene(args, work, py, log)
    config = write_bench_config(data, work, "scaling.yaml")
    if args.scene_only:
        print(f"scene in {data} ({scene_seconds:.0f} s)")
        return
    run = work / f"{n}gpu"
    shutil.rmtree(run, ignore_errors=True)  # every run starts from nothing (no resuming)
    run.mkdir()
    cores = os.cpu_count() or 1
    env = {"OMP_NUM_THREADS": str(max(1, cores // n)), "PYTHONUNBUFFERED": "1"}
    torchrun = [py, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(n), "bench/timed_stage.py"]
    masks, exp, chunks = run / "masks", run / "exp" / "cell", run / "chunks" / "cell"

    def cells_args(exp_prefix: Path, iterations: int) -> list[str]:
        return ["--config_file", str(config), "--exp_name", str(exp_prefix), "--dataset_path", str(data),
                "--chunk_paths", str(chunks), "--cluster_mask_path", str(masks), "--train_iterations", str(iterations),
                "--ckpt_interval", str(iterations), "--progress_interval", "30", *args.train_extra.split()]

    cells = cells_args(exp, args.train_iterations)
    commands = {
        "masks": torchrun + [str(run / "t_masks"), "mega_nerf.partition.create_masks", "--config", str(config),
                             "--dataset_path", str(data), "--output", str(masks), "--grid_dim", *args.grid_dim,
                             *args.masks_extra.split()],
        "chunks": torchrun + [str(run / "t_chunks"), "mega_nerf.train_cells", *cells, "--chunks_only"],
        "training": torchrun + [str(run / "t_training"), "mega_nerf.train_cells", *cells],
        "merge": [py, "bench/timed_stage.py", str(run / "t_merge"), "mega_nerf.container.merge", "--config_file",
                  str(config), "--ckpt_prefix", f"{exp}-", "--centroid_path", str(masks / "params.pt"), "--output",
                  str(run / "container.pt"), "--train_iterations", str(args.train_iterations)],
        "eval": torchrun + [str(run / "t_eval"), "mega_nerf.evaluation.evaluator", "--config_file", str(config),
                            "--exp_name", str(run / "eval_exp"), "--dataset_path", str(data), "--container_path",
                            str(run / "container.pt"), "--output_path", str(run / "eval"), *args.eval_extra.split()]
                            + (["--max_val_images", str(args.max_val_images)] if args.max_val_images else []),
    }
    settings = {"scene": [args.preset, args.num_images, args.seed], "grid_dim": [int(v) for v in args.grid_dim],
                "train_iterations": args.train_iterations, "max_val_images": args.max_val_images,
                "train_extra": args.train_extra, "eval_extra": args.eval_extra, "masks_extra": args.masks_extra,
                "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"}
    wall, inside, warmup_seconds = {}, {}, None
    for stage in STAGES:
        if stage == "training" and args.warmup:  # just-in-time kernels compiled off the clock, as on any rerun
            warmup_seconds = run_logged([py, "-m", "mega_nerf.train_cells", *cells_args(run / "warmup" / "cell", 2),
                                         "--cells", "0"], log, env=env)
        wall[stage] = run_logged(commands[stage], log, env=env)
        inside[stage] = stage_seconds(run / f"t_{stage}")
        print(f"{stage:<10} {wall[stage]:8.1f} s wall, {inside[stage]:8.1f} s in the processes", flush=True)

    grid = json.loads((run / "exp" / "cell" / "cells_summary.json").read_text())
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    cell_rows = grid["cells"].values()
    cuda = torch.cuda.is_available()
    device_name = torch.cuda.get_device_name(0) if cuda else f"CPU ({cores} cores)"
    result = {
        "name": f"{args.name}_{n}gpu", "gpus": n, "settings": settings,
        "command": " ".join([Path(py).name, *sys.argv]),
        "device": f"{n} x {device_name}" if cuda else f"{n} processes on {device_name}",
        "device_name": device_name, "versions": versions(),
        "scene": {"preset": args.preset, "num_images": args.num_images, "seed": args.seed,
                  "generated_seconds": scene_seconds},
        "grid_dim": [int(v) for v in args.grid_dim], "cells": grid["cells_total"],
        "config": yaml.safe_load(config.read_text()), "train_extra": args.train_extra,
        "omp_num_threads": env["OMP_NUM_THREADS"],
        "wall_seconds": wall, "stage_seconds": inside, "warmup_seconds": warmup_seconds,
        "training": {
            "iterations_per_cell": args.train_iterations, "batch_size": grid["batch_size"],
            "train_cells_wall_seconds": grid["wall_seconds"],
            "aggregate_rays_per_second": grid["aggregate_rays_per_second"],
            "rays_per_second_per_cell": {c: r["rays_per_second"] for c, r in grid["cells"].items()},
            "cell_seconds": {c: r["seconds"] for c, r in grid["cells"].items()},
            "cells_per_rank": {str(rank): sum(1 for r in cell_rows if r["rank"] == rank)
                               for rank in sorted({r["rank"] for r in cell_rows})},
            "training_rays_per_cell": {c: r["training_rays"] for c, r in grid["cells"].items()},
            "max_chunk_seconds_during_training": max(r["chunk_seconds"] or 0 for r in cell_rows),
            "val_psnr_first_image": {c: r["val_psnr"] for c, r in grid["cells"].items()},
        },
        "eval": {"psnr": metrics["psnr"]["mean"], "ssim": metrics["ssim"]["mean"], "images": metrics["images"],
                 "rays_per_second_per_process": metrics["rays_per_second"],
                 "render_seconds": eval_render_seconds(metrics, n), "processes": metrics["processes"]},
        "total_seconds": time.time() - started,
    }
    write_result(f"{args.name}_{n}gpu", result, results_dir)
    (work / f"{args.name}_{n}gpu.json").write_text(json.dumps(result, indent=2) + "\n")
    combined = combine(args.name, results_dir, work, settings)
    if combined is not None:
        write_result(args.name, combined, results_dir)
    print(f"\n{n} process(es) on {device_name}: total {result['total_seconds']:.0f} s "
          f"(scene {scene_seconds:.0f} s); training {grid['aggregate_rays_per_second']:,.0f} rays/s over "
          f"{grid['cells_total']} cells; eval PSNR {metrics['psnr']['mean']:.2f} dB")
    if combined is not None:
        for key, per in combined["speedups"].items():
            print(f"speed-up {key} (in the processes / wall): " + ", ".join(
                f"{s} {per['stage_seconds'][s] or 0:.2f}/{per['wall_seconds'][s] or 0:.2f}" for s in STAGES)
                + f"; PSNR difference {per['psnr_difference_db']:+.3f} dB")


if __name__ == "__main__":
    main()
