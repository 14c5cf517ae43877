#!/usr/bin/env python
"""Held-out PSNR against wall-clock training time, per field backend (issue 3).

Every backend trains one whole-scene model with the library's trainer (``mega_nerf/train.py``'s
options, ``--train_seconds`` with ``--checkpoint_at_seconds`` at each mark) and each mark's
checkpoint is scored by the library's evaluator (``mega_nerf/eval.py --ckpt_path``) on the
validation views.  The training clock counts the training loop only; data preparation (dataset,
ray chunks, written once and shared by the backends) and evaluation are timed separately.

    # 4 GPUs, one backend per GPU (about 7 minutes for 5-minute runs):
    python bench/time_to_psnr.py --scene lego --dataset_path LEGO --gpus 4
    python bench/time_to_psnr.py --scene city --gpus 4
    # one GPU, backends one after another:
    python bench/time_to_psnr.py --scene lego --dataset_path LEGO --gpus 1
    # CPU smoke test:
    python bench/time_to_psnr.py --scene city --max_images 24 --minutes 0.1 0.2 --results_dir /tmp/r \\
        --extra "--batch_size 256 --coarse_samples 16 --fine_samples 16 ..."

Scenes: ``lego`` is NeRF-Synthetic lego (every 8th view held out, composited on white), from
``--dataset_path`` (made by scripts/prepare_dataset.py) or prepared here from ``--source``;
``city`` is the embedded synthetic city (preset 'city', ``--city_images`` images), generated here
unless ``--dataset_path`` is given.  Settings per scene: configs/bench/<scene>.yaml (any
train.py option, plus ``bench_overrides: {backend: {option: value}}``).

Writes bench/results/time_to_psnr_<scene>.json (or --results_dir), and on the device machine
$OUT/time_to_psnr_<scene>.json, one log per backend and one held-out render strip per backend
(ground truth | render at each mark).
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import run_logged, versions, write_result  # noqa: E402

BACKENDS = ("hash", "vm", "grid", "mlp")
LEGO_SOURCE = REPO.parent / "shared" / "data" / "nerf_synthetic_lego_train" / "transforms_train.json"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scene", choices=["lego", "city"], required=True)
    p.add_argument("--dataset_path", default=None,
                   help="an already prepared dataset (Mega-NeRF layout); default: prepare lego from --source, "
                        "generate the city")
    p.add_argument("--source", default=str(LEGO_SOURCE),
                   help="lego without --dataset_path: the transforms_train.json to prepare it from")
    p.add_argument("--city_images", type=int, default=256,
                   help="city without --dataset_path: images to generate (every 8th is a validation view)")
    p.add_argument("--config_file", default=None, help="scene settings (default: configs/bench/<scene>.yaml)")
    p.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS))
    p.add_argument("--minutes", nargs="+", type=float, default=[1, 2, 5],
                   help="marks of training time; training runs to the last one")
    p.add_argument("--gpus", type=int, default=None,
                   help="backends run in parallel, one per GPU (CUDA_VISIBLE_DEVICES=i); 1: one after another "
                        "(default: every visible GPU, 1 without CUDA)")
    p.add_argument("--max_images", type=int, default=None,
                   help="use only the first N images (name order, train and validation alike): smoke tests")
    p.add_argument("--downscale", type=int, default=None,
                   help="train and score at 1/N resolution (train_scale_factor = val_scale_factor = N)")
    p.add_argument("--max_val_images", type=int, default=None, help="score only the first N validation views")
    p.add_argument("--extra", default="", help="extra train.py/eval.py options for every backend, e.g. "
                                              "'--batch_size 1024' (they win over the config)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads per backend process")
    p.add_argument("--work", default=None, help="work folder (default: a new temporary one)")
    p.add_argument("--results_dir", default=None,
                   help="where the result JSON goes (default bench/results; use another for smoke tests)")
    p.add_argument("--name", default=None, help="result name (default time_to_psnr_<scene>)")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # internal: run one backend
    args = p.parse_args(argv)
    args.config_file = args.config_file or str(REPO / "configs" / "bench" / f"{args.scene}.yaml")
    args.name = args.name or f"time_to_psnr_{args.scene}"
    if sorted(args.minutes) != args.minutes or min(args.minutes) <= 0:
        p.error("--minutes must be positive and increasing")
    return args


# ------------------------------------------------------------------------------------ data

def subset_dataset(source: Path, target: Path, max_images: int) -> Path:
    """The first ``max_images`` images of a dataset (appearance order), as symlinks."""
    from mega_nerf.data.format import load_dataset

    dataset = load_dataset(source)
    items = dataset.items[:max_images]
    if not any(m.split == "val" for m in items) and dataset.val:
        items = items[:-1] + [dataset.val[0]]  # keep one validation view
    target.mkdir(parents=True)
    for name in ("coordinates.pt", "config.yaml"):
        if (source / name).exists():
            (target / name).symlink_to((source / name).resolve())
    for m in items:
        split = source / m.split
        files = [m.image_path, split / "metadata" / f"{m.stem}.pt"]
        if m.depth_path is not None and m.depth_path.exists():
            files.append(m.depth_path)
        for f in files:
            link = target / m.split / f.parent.name / f.name
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(f.resolve())
    for split in ("train", "val"):
        for sub in ("rgbs", "metadata"):
            (target / split / sub).mkdir(parents=True, exist_ok=True)
    return target


def prepare_dataset(args: argparse.Namespace, work: Path, log: Path) -> Path:
    if args.dataset_path:
        path = Path(args.dataset_path).resolve()
        if not (path / "coordinates.pt").exists():
            raise SystemExit(f"--dataset_path {path}: not a prepared dataset (no coordinates.pt)")
    elif args.scene == "lego":
        if not Path(args.source).exists():
            raise SystemExit(f"--source {args.source} does not exist; pass --dataset_path PREPARED_LEGO")
        path = work / "dataset"
        run_logged([sys.executable, "scripts/prepare_dataset.py", "--transforms", str(args.source), "--output",
                    str(path), "--val_every", "8", "--up", "+z", "--quiet"], log)
    else:
        path = work / "dataset"
        count = min(args.city_images, args.max_images or args.city_images)
        run_logged([sys.executable, "scripts/make_synthetic_scene.py", "--output", str(path), "--preset", "city",
                    "--num_images", str(count), "--quiet"], log)
    if args.max_images:
        from mega_nerf.data.format import load_dataset

        if len(load_dataset(path).items) > args.max_images:
            path = subset_dataset(path, work / "dataset_subset", args.max_images)
    return path


# ------------------------------------------------------------------------------ commands

def load_bench_config(path: str) -> dict:
    return yaml.safe_load(Path(path).read_text()) or {}


def common_options(args: argparse.Namespace, dataset: Path, work: Path) -> list[str]:
    """train.py/eval.py options every backend shares (the config file first, the command line wins)."""
    config = load_bench_config(args.config_file)
    options = ["--config_file", args.config_file, "--dataset_path", str(dataset),
               "--chunk_paths", str(work / "chunks")]
    scene_config = dataset / "config.yaml"
    if "ray_altitude_range" not in config and "foreground_bounds" not in config and scene_config.exists():
        altitude = (yaml.safe_load(scene_config.read_text()) or {}).get("ray_altitude_range")
        if altitude is not None:  # the generated city's altitude slab
            options += ["--ray_altitude_range", *[str(v) for v in altitude]]
    if args.downscale:
        options += ["--train_scale_factor", str(args.downscale), "--val_scale_factor", str(args.downscale)]
    if args.threads:
        options += ["--num_threads", str(args.threads)]
    return options


def backend_options(args: argparse.Namespace, backend: str) -> list[str]:
    overrides = (load_bench_config(args.config_file).get("bench_overrides") or {}).get(backend) or {}
    options = ["--model_type", backend]
    for key, value in overrides.items():
        options += [f"--{key}", *([str(v) for v in value] if isinstance(value, list) else [str(value)])]
    return options + args.extra.split()


def marks_seconds(args: argparse.Namespace) -> list[float]:
    return [round(m * 60, 3) for m in args.minutes]


# ---------------------------------------------------------------------------------- worker

def write_partial(args: argparse.Namespace, backend: str, result: dict) -> None:
    """On the device machine, each backend's numbers so far, in case the whole run is cut short."""
    if os.environ.get("OUT"):
        path = Path(os.environ["OUT"]) / f"{args.name}_{backend}.json"
        path.write_text(json.dumps(result, indent=2) + "\n")


def run_worker(args: argparse.Namespace) -> None:
    """One backend, in this process: train to the last mark, then score every mark's checkpoint."""
    from mega_nerf.eval import main as eval_main
    from mega_nerf.train import main as train_main
    from mega_nerf.training.trainer import time_checkpoint_path

    backend, work, dataset = args.worker, Path(args.work), Path(args.dataset_path)
    out_dir = work / backend
    marks = marks_seconds(args)
    base = common_options(args, dataset, work) + backend_options(args, backend)
    result = {"backend": backend, "marks": []}
    started = time.time()
    try:
        summary = train_main(base + ["--exp_name", str(out_dir / "exp"), "--train_seconds", str(marks[-1]),
                                     "--checkpoint_at_seconds", *map(str, marks)])
        result["train"] = summary
        for mark in marks:
            record = next(m for m in summary["time_checkpoints"] if m["mark_seconds"] == mark)
            eval_dir = out_dir / f"eval_t{mark:g}"
            shutil.rmtree(eval_dir, ignore_errors=True)
            eval_started = time.time()
            extra = ["--max_val_images", str(args.max_val_images)] if args.max_val_images else []
            metrics = eval_main(base + extra + ["--exp_name", str(out_dir / "exp"), "--output_path", str(eval_dir),
                                                "--ckpt_path", str(time_checkpoint_path(out_dir / "exp", mark))])
            result["marks"].append({
                "minutes": mark / 60, "seconds": mark, "elapsed_seconds": record["elapsed_seconds"],
                "iteration": record["iteration"], "psnr": metrics["psnr"]["mean"], "ssim": metrics["ssim"]["mean"],
                "lpips": metrics["lpips"]["mean"] if metrics["lpips"].get("count") else None,
                "eval_images": metrics["images"], "eval_seconds": time.time() - eval_started,
                "eval_rays_per_second": metrics["rays_per_second"],
                "eval_phase_seconds": metrics.get("main_rank_phase_seconds"), "eval_dir": str(eval_dir)})
            print(f"[{backend}] {mark / 60:g} min: PSNR {metrics['psnr']['mean']:.2f} dB, "
                  f"SSIM {metrics['ssim']['mean']:.4f} ({record['iteration']} iterations)", flush=True)
            write_partial(args, backend, result)
        result["protocol"] = metrics["protocol"]
        result["val_scale_factor"] = metrics["val_scale_factor"]
    except Exception as e:  # record the failure; the other backends go on
        import traceback

        traceback.print_exc()
        result["error"] = f"{type(e).__name__}: {e}"[:1000]
    result["worker_seconds"] = time.time() - started
    (out_dir / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    if "error" in result:
        sys.exit(1)


# ---------------------------------------------------------------------------------- driver

def samples_per_ray(args: argparse.Namespace, backend: str) -> int:
    """Samples the renderer evaluates per training ray (fixed shape)."""
    from mega_nerf.config import parse, train_parser

    a = parse(train_parser(), ["--config_file", args.config_file, "--exp_name", "x", "--dataset_path", "x",
                               *backend_options(args, backend)])
    if a.occupancy_resolution > 0:
        return a.coarse_samples + a.fine_samples + 1
    return a.coarse_samples + a.fine_samples


def prepare_chunks(args: argparse.Namespace, dataset: Path, work: Path) -> dict:
    """Write the shuffled ray chunks once (the library's trainer does it), shared by every backend."""
    from mega_nerf.config import parse, train_parser
    from mega_nerf.training.trainer import Trainer

    argv = common_options(args, dataset, work) + backend_options(args, args.backends[0]) + [
        "--exp_name", str(work / "chunk_prep"), "--device", "cpu"]
    chunks = Trainer(parse(train_parser(), argv)).prepare_chunks()
    return {"rays": chunks.num_rays, "files": len(chunks.files), "bytes": chunks.bytes_on_disk}


def render_strip(result: dict, dataset: Path, target: Path) -> None:
    """Ground truth | render at each mark, for the first scored validation view."""
    from mega_nerf.evaluation.images import save_png

    marks = result.get("marks") or []
    if not marks:
        return
    renders = sorted((Path(marks[0]["eval_dir"]) / "rendered").glob("*.png"))
    if not renders:
        return
    stem = renders[0].stem
    import cv2

    pictures = []
    strip = cv2.imread(str(Path(marks[0]["eval_dir"]) / "images" / f"{stem}.png"))  # rendered | gt | depth
    if strip is not None:
        pictures.append(strip[:, strip.shape[1] // 3: 2 * strip.shape[1] // 3])  # ground truth
    for m in marks:
        image = cv2.imread(str(Path(m["eval_dir"]) / "rendered" / f"{stem}.png"))
        if image is not None:
            pictures.append(image)
    save_png(cv2.cvtColor(np.concatenate(pictures, axis=1), cv2.COLOR_BGR2RGB), target)


def run_queue(jobs: list[tuple[str, list[str], dict, Path]], work: Path, results: dict, on_done) -> None:
    """Run one GPU's backends one after another."""
    for backend, cmd, env, log in jobs:
        started = time.time()
        with open(log, "w") as f:
            f.write("$ " + " ".join(cmd) + "\n")
            f.flush()
            code = subprocess.run(cmd, cwd=REPO, stdout=f, stderr=subprocess.STDOUT,
                                  env={**os.environ, **env}).returncode
        path = work / backend / "result.json"
        result = json.loads(path.read_text()) if path.exists() else {"backend": backend}
        if code != 0 and "error" not in result:
            result["error"] = f"worker exited with status {code}; see {log}"
        result["wall_seconds"] = time.time() - started
        results[backend] = result
        on_done()


def device_name() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}"
    return f"CPU ({os.cpu_count()} cores)"


def print_table(result: dict) -> None:
    marks = result["minutes"]
    head = f"{'backend':<8}" + "".join(f"{f'{m:g} min PSNR/SSIM':>20}" for m in marks)
    head += f"{'iters':>8}{'Mrays/s':>9}{'Msamples/s':>11}{'peak GiB':>9}{'params':>12}"
    print(head)
    for backend, r in result["backends"].items():
        if "error" in r:
            print(f"{backend:<8}  error: {r['error'][:100]}")
            continue
        line = f"{backend:<8}"
        by_minute = {round(m["minutes"], 6): m for m in r["marks"]}
        for m in marks:
            rec = by_minute.get(round(m, 6))
            cell = "-" if rec is None else "{:.2f}/{:.3f}".format(rec["psnr"], rec["ssim"])
            line += f"{cell:>20}"
        t = r["train"]
        peak = "-" if t.get("peak_memory_bytes") is None else f"{t['peak_memory_bytes'] / 2 ** 30:.1f}"
        line += (f"{t['iterations']:>8}{t['rays_per_second'] / 1e6:>9.3f}{r['samples_per_second'] / 1e6:>11.1f}"
                 f"{peak:>9}{t['parameters']:>12,}")
        print(line)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.worker:
        run_worker(args)
        return
    started = time.time()
    work = Path(args.work or tempfile.mkdtemp(prefix="mega_nerf_ttp_")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    out = Path(os.environ["OUT"]) if os.environ.get("OUT") else None
    log = (out or work) / f"{args.name}.log"
    gpus = args.gpus or (torch.cuda.device_count() if torch.cuda.is_available() else 1)
    if torch.cuda.is_available() and gpus > torch.cuda.device_count():
        raise SystemExit(f"--gpus {gpus}: only {torch.cuda.device_count()} visible")

    times = {}
    t0 = time.time()
    dataset = prepare_dataset(args, work, log)
    times["dataset_seconds"] = time.time() - t0
    t0 = time.time()
    chunks = prepare_chunks(args, dataset, work)
    times["chunk_seconds"] = time.time() - t0
    print(f"dataset {dataset} ready in {times['dataset_seconds']:.1f} s; {chunks['rays']:,} training rays written "
          f"to chunks in {times['chunk_seconds']:.1f} s", flush=True)

    result = {"name": args.name, "command": shlex.join([Path(sys.executable).name, *sys.argv]),
              "device": device_name(), "versions": versions(), "scene": args.scene, "dataset": str(dataset),
              "config_file": str(Path(args.config_file).resolve().relative_to(REPO))
              if Path(args.config_file).resolve().is_relative_to(REPO) else args.config_file,
              "config": load_bench_config(args.config_file), "extra": args.extra, "downscale": args.downscale,
              "max_images": args.max_images, "minutes": args.minutes, "gpus": gpus, "chunks": chunks,
              **times, "backends": {}}
    results: dict = {}
    lock = threading.Lock()

    def on_done() -> None:  # keep a partial result on disk as backends finish
        with lock:
            result["backends"] = {b: results[b] for b in args.backends if b in results}
            for b, r in result["backends"].items():
                if "train" in r:
                    r["samples_per_ray"] = samples_per_ray(args, b)
                    r["samples_per_second"] = r["train"]["rays_per_second"] * r["samples_per_ray"]
            result["total_seconds"] = time.time() - started
            write_result(args.name, result, args.results_dir)

    forwarded = list(argv if argv is not None else sys.argv[1:])
    queues: list[list] = [[] for _ in range(gpus)]
    for i, backend in enumerate(args.backends):
        cmd = [sys.executable, str(Path(__file__).resolve()), *forwarded, "--worker", backend, "--work", str(work),
               "--dataset_path", str(dataset)]
        logfile = (out or work) / f"{args.name}_{backend}.log"
        env = {"CUDA_VISIBLE_DEVICES": str(i % gpus)} if torch.cuda.is_available() else {}
        queues[i % gpus].append((backend, cmd, env, logfile))
    threads = [threading.Thread(target=run_queue, args=(q, work, results, on_done)) for q in queues if q]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    on_done()
    for backend, r in result["backends"].items():
        strip = (out or work) / f"{args.name}_{backend}.png"
        try:
            render_strip(r, dataset, strip)
            r["strip"] = str(strip)
        except Exception as e:  # a picture must not lose the numbers
            r["strip_error"] = f"{type(e).__name__}: {e}"
    result["total_seconds"] = time.time() - started
    write_result(args.name, result, args.results_dir)
    print_table(result)
    target = Path(args.results_dir or REPO / "bench" / "results") / f"{args.name}.json"
    print(f"dataset {times['dataset_seconds']:.1f} s, chunks {times['chunk_seconds']:.1f} s, total "
          f"{result['total_seconds']:.1f} s; result {target}; work folder {work}", flush=True)


if __name__ == "__main__":
    main()
