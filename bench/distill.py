#!/usr/bin/env python
"""Issue 6, part 1: a container (teacher) distilled into one student of each backend.

For the teacher and every student: validation PSNR/SSIM (eval.py), parameters, render speed
(eval.py's rays/s over the validation images) and distillation seconds; plus each student's
PSNR against the teacher on held-out views (distill.py's metrics).  Writes
bench/results/<name>.json and prints a table.  Target: a ``hash`` student within 0.5 dB of the
container, at most a quarter of its parameters and at least 3x its render speed.

On one GPU, the embedded city (the scene and a 2 x 2 container are made first unless given):

    python bench/distill.py --name distill_city --preset city --num_images 300 --grid_dim 2 2 \\
        --train_iterations 3000 --train_extra "--batch_size 8192 --occupancy_resolution 128" \\
        --distill_seconds 300 --distill_extra "--distill_batch_rays 8192"
    python bench/distill.py --name distill_brighton --dataset_path data/brighton \\
        --container_path brighton/container.pt --config_file data/brighton/config.yaml --distill_seconds 300

CPU smoke test (tiny scene, 2 x 1 cells, a few steps; about 7 minutes on 2 cores):

    python bench/distill.py --name distill_smoke --preset tiny --num_images 16 --grid_dim 2 1 \\
        --train_iterations 40 --students hash vm --distill_steps 30 --results_dir /tmp/distill_results \\
        --train_extra "--batch_size 256 --coarse_samples 16 --fine_samples 16 --bg_samples 4 --hash_log2_size 14 --num_chunks 4" \\
        --distill_extra "--distill_batch_rays 256 --rays_per_view 256 --occupancy_resolution 32 --occupancy_candidates 64 --hash_log2_size 12 --vm_resolution 48 --max_val_images 2" \\
        --eval_extra "--coarse_samples 16 --fine_samples 16 --bg_samples 4 --occupancy_candidates 64 --max_val_images 2"
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

from bench.common import log_path, run_logged, versions, write_result

#: Issue 6's target for the hash student against the container.
TARGET = {"max_psnr_drop_db": 0.5, "max_parameter_ratio": 0.25, "min_speedup": 3.0}


def make_teacher(args, work: Path, py: str, log: Path) -> tuple[Path, Path, Path, dict]:
    """(dataset, config, container, seconds): the synthetic scene and a container trained with the
    pipeline's own stages, as bench/pipeline.py does."""
    data, masks, config = work / "dataset", work / "masks", work / "dataset" / "config.yaml"
    times = {}
    if not data.exists():
        cmd = [py, "scripts/make_synthetic_scene.py", "--output", str(data), "--preset", args.preset, "--quiet"]
        if args.num_images:
            cmd += ["--num_images", str(args.num_images)]
        times["scene"] = run_logged(cmd, log)
    container = work / "container.pt"
    if container.exists():
        return data, config, container, times
    times["masks"] = run_logged([py, "scripts/create_cluster_masks.py", "--config", str(config), "--dataset_path",
                                 str(data), "--output", str(masks), "--grid_dim", *args.grid_dim], log)
    cells = int(args.grid_dim[0]) * int(args.grid_dim[1])
    times["training"] = 0.0
    for cell in range(cells):
        times["training"] += run_logged(
            [py, "mega_nerf/train.py", "--config_file", str(config), "--exp_name", str(work / "exp" / f"cell-{cell}"),
             "--dataset_path", str(data), "--chunk_paths", str(work / "chunks" / f"cell-{cell}"), "--cluster_mask_path",
             str(masks / str(cell)), "--train_iterations", str(args.train_iterations), "--ckpt_interval",
             str(args.train_iterations), *args.train_extra.split()], log)
    times["merge"] = run_logged([py, "scripts/merge_submodules.py", "--config_file", str(config), "--ckpt_prefix",
                                 str(work / "exp" / "cell-"), "--centroid_path", str(masks / "params.pt"), "--output",
                                 str(container), "--train_iterations", str(args.train_iterations)], log)
    return data, config, container, times


def evaluate(py: str, config: Path, data: Path, model: Path, out: Path, extra: str, log: Path) -> dict:
    run_logged([py, "mega_nerf/eval.py", "--config_file", str(config), "--exp_name", str(out), "--dataset_path",
                str(data), "--container_path", str(model), "--output_path", str(out), *extra.split()], log)
    return json.loads((out / "metrics.json").read_text())


def eval_numbers(metrics: dict) -> dict:
    """The row entries taken from eval.py's metrics.json."""
    return {"psnr": metrics["psnr"]["mean"], "ssim": metrics["ssim"]["mean"],
            "rays_per_second": metrics["rays_per_second"], "samples_per_ray": metrics.get("samples_per_ray")}


def parse_student(spec: str) -> tuple[str, str, str]:
    """``KIND`` or ``NAME=KIND:FLAGS`` of ``--students`` -> (NAME, KIND, FLAGS)."""
    if "=" not in spec.split(":")[0]:
        return spec, spec, ""
    name, rest = spec.split("=", 1)
    kind, _, flags = rest.partition(":")
    return name, kind, flags


def parse_eval_variant(spec: str) -> tuple[str, str]:
    """``NAME=FLAGS`` of ``--eval_variant`` and ``--student_eval_variant`` -> (NAME, FLAGS)."""
    name, sep, flags = spec.partition("=")
    if not sep or not name or "@" in name:
        raise SystemExit(f"an eval variant wants NAME=FLAGS (NAME without '@'), got {spec!r}")
    return name, flags


def teacher_row(row: str, rows: dict) -> str:
    """The teacher row a student row is judged against: ``teacher@V`` for a row ``STUDENT@V`` of an
    ``--eval_variant`` V (both rendered alike), else ``teacher``."""
    variant = row.partition("@")[2]
    return f"teacher@{variant}" if f"teacher@{variant}" in rows else "teacher"


def render_speed(row: dict) -> float:
    """A row's render rays/s: from the ``--speed_eval_extra`` renders when made, else eval.py's."""
    return row.get("speed_rays_per_second") or row["rays_per_second"]


def against_target(teacher: dict, student: dict) -> dict:
    """A student row against issue 6's target for the hash student (:data:`TARGET`)."""
    verdict = {"psnr_drop_db": teacher["psnr"] - student["psnr"],
               "parameter_ratio": student["parameters"] / teacher["parameters"],
               "speedup": render_speed(student) / render_speed(teacher)}
    verdict["met"] = (verdict["psnr_drop_db"] <= TARGET["max_psnr_drop_db"]
                      and verdict["parameter_ratio"] <= TARGET["max_parameter_ratio"]
                      and verdict["speedup"] >= TARGET["min_speedup"])
    return verdict


def hash_verdicts(rows: dict) -> dict:
    """Every hash student row (any name) against its teacher row (:func:`teacher_row`)."""
    return {row: {"against": teacher_row(row, rows), **against_target(rows[teacher_row(row, rows)], r)}
            for row, r in rows.items() if r.get("kind") == "hash"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--name", default="distill")
    p.add_argument("--dataset_path", default=None, help="an existing dataset (else the synthetic scene is made)")
    p.add_argument("--config_file", default=None, help="its config (default: DATASET/config.yaml)")
    p.add_argument("--container_path", default=None, help="an existing container (else one is trained)")
    p.add_argument("--preset", default="city")
    p.add_argument("--num_images", type=int, default=None)
    p.add_argument("--grid_dim", nargs=2, default=["2", "2"])
    p.add_argument("--train_iterations", type=int, default=2000)
    p.add_argument("--train_extra", default="", help="extra train.py flags")
    p.add_argument("--students", nargs="+", default=["hash", "vm", "grid", "mlp"],
                   help="student backends; NAME=KIND:FLAGS adds a named run of KIND with extra distill.py flags, "
                        "e.g. 'hash_v003=hash:--visibility_threshold 0.003'")
    p.add_argument("--distill_seconds", type=float, default=None, help="time budget per student")
    p.add_argument("--distill_steps", type=int, default=3000, help="step budget per student (without seconds)")
    p.add_argument("--distill_extra", default="", help="extra distill.py flags (student sizes, batch, ...)")
    p.add_argument("--eval_extra", default="", help="extra eval.py flags (same for teacher and students)")
    p.add_argument("--student_eval_extra", default="",
                   help="more eval.py flags for the students only, e.g. '--occupancy_candidates 256': a student's "
                        "visible band is thin, so coarser candidates still place its samples densely")
    p.add_argument("--student_eval_variant", action="append", default=[], metavar="NAME=FLAGS",
                   help="evaluate every student once more with these eval.py flags, as row STUDENT@NAME "
                        "(repeatable), e.g. 'c256=--occupancy_candidates 256'")
    p.add_argument("--eval_variant", action="append", default=[], metavar="NAME=FLAGS",
                   help="evaluate the teacher and every student once more with these eval.py flags, as rows "
                        "teacher@NAME and STUDENT@NAME (repeatable; a student row is judged against the teacher "
                        "row of its variant), e.g. 'w0=--color_min_weight 0'")
    p.add_argument("--speed_eval_extra", default="",
                   help="time every model once more with these eval.py flags, e.g. '--val_scale_factor 1 "
                        "--max_val_images 4': small validation renders (a few thousand rays each) measure "
                        "per-call overheads as much as rendering; the target then uses these rays/s")
    p.add_argument("--work", default=None, help="work folder (default: a temporary one)")
    p.add_argument("--results_dir", default=None, help="where <name>.json goes (default: bench/results)")
    args = p.parse_args()
    py = sys.executable
    work = Path(args.work or tempfile.mkdtemp(prefix="mega_nerf_distill_"))
    work.mkdir(parents=True, exist_ok=True)
    log = log_path(args.name, work)
    times = {}
    if args.dataset_path and args.container_path:
        data, container = Path(args.dataset_path), Path(args.container_path)
        config = Path(args.config_file or data / "config.yaml")
    else:
        data, config, container, times = make_teacher(args, work, py, log)
    rows = {}
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"
    budget = (["--distill_seconds", str(args.distill_seconds)] if args.distill_seconds
              else ["--distill_steps", str(args.distill_steps)])

    def save(complete: bool) -> dict:
        """Write <name>.json with the rows so far (after every model, so a run cut off by a time
        limit keeps what it measured; ``complete`` says whether every model was done)."""
        verdicts = hash_verdicts(rows)
        result = {"name": args.name, "command": " ".join([Path(py).name, *sys.argv]), "device": device,
                  "versions": versions(), "dataset": str(data), "container": str(container), "stage_seconds": times,
                  "budget": budget, "student_eval_extra": args.student_eval_extra,
                  "speed_eval_extra": args.speed_eval_extra,
                  "val_protocol": teacher_eval["protocol"], "images": teacher_eval["images"],
                  "models": rows, "target": TARGET,
                  "hash_vs_target": next((v for row, v in verdicts.items() if "@" not in row), None),
                  "hash_runs_vs_target": verdicts, "complete": complete}
        write_result(args.name, result, Path(args.results_dir) if args.results_dir else None)
        return result

    teacher_eval = evaluate(py, config, data, container, work / "eval-teacher", args.eval_extra, log)
    rows["teacher"] = {**eval_numbers(teacher_eval), "parameters": None, "distill_seconds": None}

    def time_renders(row: str, model: Path, flags: str) -> None:
        if args.speed_eval_extra:
            metrics = evaluate(py, config, data, model, work / f"speed-{row}", f"{flags} {args.speed_eval_extra}", log)
            rows[row]["speed_rays_per_second"] = metrics["rays_per_second"]
            rows[row]["speed_samples_per_ray"] = metrics.get("samples_per_ray")

    time_renders("teacher", container, args.eval_extra)
    save(complete=False)
    variants = list(map(parse_eval_variant, args.eval_variant))
    for eval_name, eval_flags in variants:
        row = f"teacher@{eval_name}"
        metrics = evaluate(py, config, data, container, work / f"eval-{row}", f"{args.eval_extra} {eval_flags}", log)
        rows[row] = {"eval_flags": eval_flags, **eval_numbers(metrics), "parameters": None, "distill_seconds": None}
        time_renders(row, container, f"{args.eval_extra} {eval_flags}")
        save(complete=False)
    for spec in args.students:
        name, kind, flags = parse_student(spec)
        student = work / f"student-{name}.pt"
        seconds = run_logged([py, "scripts/distill.py", "--config_file", str(config), "--container_path",
                              str(container), "--dataset_path", str(data), "--model_type", kind, "--output",
                              str(student), "--overwrite", "--quiet", *budget, *args.distill_extra.split(),
                              *flags.split()], log)
        info = json.loads(student.with_name(student.name + ".json").read_text())
        for row in rows:
            if row.split("@")[0] == "teacher":
                rows[row]["parameters"] = info["teacher_parameters"]
        for eval_name, eval_flags in [("", ""), *variants, *map(parse_eval_variant, args.student_eval_variant)]:
            row = f"{name}@{eval_name}" if eval_name else name
            metrics = evaluate(py, config, data, student, work / f"eval-{row}",
                               f"{args.eval_extra} {args.student_eval_extra} {eval_flags}", log)
            rows[row] = {"kind": kind, "flags": flags, "eval_flags": eval_flags, **eval_numbers(metrics),
                         "parameters": info["student_parameters"],
                         "distill_seconds": sum(r["seconds"] for r in info["runs"]), "command_seconds": seconds,
                         "distill_steps": sum(r["steps"] for r in info["runs"]),
                         "packs_made": sum(r.get("packs_made", 0) for r in info["runs"]),
                         "packs_in_memory": info["runs"][-1].get("packs_in_memory"),
                         "vs_teacher_psnr": info["heldout"]["student_vs_teacher_psnr"],
                         "occupied_fraction": info["occupied_fraction"],
                         "occupied_with_density": info.get("occupied_with_density"),
                         "occupancy_candidates": metrics.get("sampling", {}).get("occupancy_candidates")}
            time_renders(row, student, f"{args.eval_extra} {args.student_eval_extra} {eval_flags}")
            save(complete=False)
    result = save(complete=True)
    verdicts = result["hash_runs_vs_target"]
    print(f"{'model':<12}{'params':>12}{'PSNR':>8}{'SSIM':>8}{'vs teacher':>12}{'rays/s':>11}{'timed':>11}"
          f"{'samples':>9}{'distil s':>10}{'steps':>7}{'packs':>7}")
    for name, r in rows.items():
        vs = f"{r['vs_teacher_psnr']:.2f}" if r.get("vs_teacher_psnr") is not None else "-"
        ds = f"{r['distill_seconds']:.1f}" if r.get("distill_seconds") is not None else "-"
        timed = f"{r['speed_rays_per_second']:.0f}" if r.get("speed_rays_per_second") else "-"
        samples = f"{r['samples_per_ray']:.1f}" if r.get("samples_per_ray") is not None else "-"
        print(f"{name:<12}{r['parameters'] or 0:>12,}{r['psnr']:>8.2f}{r['ssim']:>8.4f}{vs:>12}"
              f"{r['rays_per_second']:>11.0f}{timed:>11}{samples:>9}{ds:>10}{r.get('distill_steps', '-'):>7}"
              f"{r.get('packs_made', '-'):>7}")
    for row, v in verdicts.items():
        print(f"{row} vs {v['against']}: {v['psnr_drop_db']:+.2f} dB drop, {v['parameter_ratio']:.3f}x parameters, "
              f"{v['speedup']:.2f}x render speed; target {'met' if v['met'] else 'not met'}")


if __name__ == "__main__":
    main()
