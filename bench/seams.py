#!/usr/bin/env python
"""Seams with and without the options that make cells agree: one scene (the synthetic city, or a
prepared capture with ``--dataset_path``), one cell grid, trained with independent cells and with
each variant (default: cells that agree with the neighbours trained before them), each merged and
evaluated with ``eval.py --seam_metrics``.  Prints a table and writes bench/results/<name>.json.

    python bench/seams.py --name seams_cpu_smoke --smoke --results_dir /tmp/seams_results
    python bench/seams.py --name seams --preset tiny --grid_dim 2 2 --train_iterations 500

Both variants train every cell with ``mega_nerf.train_cells`` in this process, one cell after the
other in the queue's order (largest first), so under the agreement option every cell but the
first agrees with the cells trained before it; chunks are written once and shared.  The numbers
(see :mod:`mega_nerf.evaluation.seams`): PSNR and mean absolute colour error of seam pixels (the
cells answering at the visible point change from a neighbouring pixel's) and of the rest of the
foreground (blend: several cells answer; interior: one), the overall validation PSNR, and
``cell_color_gap``, how far the blended cells' own colours differ at seam pixels.

The default variant is ``--neighbor_agreement 0.01 --agreement_appearance 0``.  The runs below
before the weight sweep used the default of then, 1.0 and 0.1; the sweep and the three-seed runs
used ``--agreement_appearance 0.01``, until the brighton runs at the end showed what it costs.

CPU smoke run (2 cores; ``--smoke``: the tiny preset, a 2 x 2 grid, 80 steps per cell with tiny
fields; about 2 minutes on an idle machine, 6.5 with other jobs on the cores), as run for the record::

    .venv/bin/python bench/seams.py --name seams_cpu_smoke --smoke --results_dir /tmp/seams_smoke \
        --work /tmp/seams_smoke/work

prints the table below.  Smoke numbers only show that the pipeline works end to end: after 80
steps the neighbours' density is still nearly flat, and pulling a cell toward such neighbours
costs PSNR here (the cells' colour gap at the blend still shrinks); the option's effect has to be
measured with trained cells (e.g. the tiny preset at 500+ steps per cell, several
--neighbor_agreement weights, on a GPU)::

    variant             PSNR   seam PSNR    seam MAE   rest PSNR    rest MAE  blend PSNR    cell gap     train s
    independent        19.32       17.40      0.1000       17.98      0.0981       18.48      0.0147      249.53
    agreement          18.81       16.72      0.1102       17.53      0.1034       17.95      0.0134       80.07
    delta              -0.51       -0.68      0.0102       -0.44      0.0053       -0.53     -0.0013           -
    seam pixels: 1697 (48.7 % of the foreground pixels scored); agreement run's cells agreed with: {'0': [2], '1': [0, 2], '2': [], '3': [0, 1, 2]}

With trained cells (one H200, shared with another bench; bench/results/seams_gpu.json)::

    python3 bench/seams.py --name seams_gpu --preset tiny --grid_dim 2 2 --train_iterations 1500

    variant             PSNR   seam PSNR    seam MAE   rest PSNR    rest MAE  blend PSNR    cell gap
    independent        25.25       23.56      0.0448       24.06      0.0427       24.58      0.0455
    agreement          25.32       23.49      0.0458       24.25      0.0429       24.71      0.0117
    delta               0.07       -0.07      0.0010        0.19      0.0002        0.13     -0.0338

The cells' own colours at the border agree four times better and overall PSNR holds, but the
seam pixels' error does not drop yet.

``--refine R`` (seam refinement, ``scripts/refine_seams.py``) copies the independent cells twice:
``continued`` trains each on alone for R steps at its final lr (the control), ``refined`` trains
each through the container's blend with all the others; the ``refined`` delta is against
``continued`` (bench/results/seams_gpu_refine.json, one H200 shared with a brighton run)::

    python3 bench/seams.py --name seams_gpu_refine --preset tiny --grid_dim 2 2 --train_iterations 1000 --refine 300

    variant                     PSNR   seam PSNR    seam MAE   rest PSNR    rest MAE  blend PSNR    interior    cell gap
    independent                25.49       23.66      0.0457       24.51      0.0422       24.93       23.44      0.0426
    continued                  25.31       23.45      0.0465       24.27      0.0427       24.67       23.25      0.0449
      - independent            -0.18       -0.21      0.0007       -0.24      0.0005       -0.26       -0.18      0.0023
    refined                    25.11       23.25      0.0474       24.10      0.0434       24.51       23.03      0.0488
      - continued              -0.20       -0.20      0.0009       -0.18      0.0007       -0.16       -0.22      0.0039

More steps lower validation PSNR on this small scene (it overfits), and interior pixels move by
as much as seam pixels, so differences of 0.2 dB here are noise.  Note also that independent
cells' seam pixels (23.66 dB) are no worse than interior pixels, where one cell answers alone
(23.44): on this scene there is no seam penalty for an option to remove.

On the benchmark-sized city and on a real capture (one H200, each pair side by side)::

    python3 bench/seams.py --name seams_city_tapered --preset city --num_images 200 --grid_dim 2 2 \
        --train_iterations 1200 --refine 300 --eval_variant "tapered=--blend_weights tapered" \
        --train_extra "--batch_size 8192 --occupancy_resolution 128" --eval_extra "--max_val_images 16"
    python3 bench/seams.py --name seams_brighton_tapered --dataset_path BRIGHTON --config brighton.yaml \
        --grid_dim 2 2 --train_iterations 1500 --refine 300 --eval_variant "tapered=--blend_weights tapered"

    variant (city)              PSNR   seam PSNR    seam MAE   rest PSNR    rest MAE  blend PSNR    interior    cell gap
    independent                23.69       21.88      0.0563       22.85      0.0481       24.65       22.51      0.0838
    tapered                    23.65       21.75      0.0568       22.83      0.0482       24.50       22.51      0.0661
      - independent            -0.04       -0.13      0.0005       -0.02      0.0001       -0.15       -0.00     -0.0178
    continued                  23.54       21.89      0.0564       22.73      0.0488       24.58       22.38      0.0880
    refined                    23.48       21.67      0.0572       22.68      0.0492       24.37       22.35      0.0864
      - continued              -0.06       -0.22      0.0008       -0.05      0.0004       -0.22       -0.03     -0.0016

On the city seam pixels are 0.7 dB under interior ones, and blend pixels (two cells averaged) the
best of all; refinement and the tapered blend make the cells agree more and the seam pixels a
little worse (brighton alike: -0.24 and -0.21 dB).  Seam pixels include occlusion edges that fall
on a change of cells; the ``surface`` and ``edge`` columns (added after these runs) tell them apart.
Measured on the same city container (bench/results/seams_city_split.json, one H200): seam pixels
that cross a surface are 23.88 dB, 1.3 dB *above* interior pixels (22.56); the seam deficit is all
at occlusion edges (20.82 dB).  Rendering with a wider band (``--boundary_margin 1.3``) lowered
overall PSNR by 0.03 dB.

Agreement weights and seed noise (this 2-core CPU, ``--smoke --train_iterations 400 --train_extra
"--batch_size 512"``, one work folder; bench/results/seams_cpu_weights.json and
seams_cpu_weights2.json; ``w0003`` is ``--neighbor_agreement 0.003 --agreement_appearance 0.01``,
``w001a0`` 0.01 without appearance alignment, ``seed1`` independent cells with ``--random_seed
1``; deltas against the independent cells of seed 42)::

    variant         overall  seam   surface  edge   interior
    independent     23.58    22.16  22.51    21.31  20.44
    seed1           +0.34    +0.48  +0.50    +0.40  +0.63
    w0003           +0.52    +0.68  +0.92    +0.73  +0.55
    w001            +0.26    +0.41  +0.40    +0.60  +0.31
    w001a0          +0.11    +0.25  +0.33    +0.25  -0.19
    w003            -0.14    +0.10  +0.16    -0.03  -0.78
    w01             -0.51    -0.43  -0.68    +0.13  -1.46
    w1              -1.28    -1.37  -      -      -1.70   (seams_cpu.json, before the split)

Another seed moves every number by 0.3 to 0.6 dB, as much as any weight up to 0.01 does; 0.03
and above cost interior pixels and 0.1 and above overall PSNR, beyond that noise.

Three seeds each of independent and w001 cells, rendered blended and with hard routing
(``--eval_variant "hard=--boundary_margin 1" --eval_each_variant``, bench/results/seams_cpu_hard.json;
means over the seeds)::

    routing   cells         overall  seam MAE  seam PSNR  rest MAE
    blended   independent   23.80    0.0544    22.53      0.0570
    blended   w001          23.83    0.0534    22.61      0.0560
    hard      independent   23.65    0.0606    21.80      0.0558
    hard      w001          23.65    0.0588    21.97      0.0550

Hard routing shows the border: every w001 seed's seam error is below every independent seed's,
at the same overall PSNR.

The same three seeds with ``--neighbor_agreement 0.01 --agreement_appearance 0`` (the field term
alone, bench/results/seams_cpu_density.json): hard-routed seam MAE 0.0589, the same as with the
appearance term.  On brighton the appearance term is what hurts, and the field term alone lowers
the hard-routed border error at the same overall PSNR (one H200, two seeds,
seams_brighton_gpu{,_seed1}.json; the table is in the README, "On the brighton flight").
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.common import versions, write_bench_config, write_result

#: Small fields and samples for the CPU smoke run.
SMOKE_TRAIN = ["--batch_size", "256", "--coarse_samples", "16", "--fine_samples", "16", "--bg_samples", "4",
               "--hash_levels", "6", "--hash_log2_size", "12", "--hash_max_resolution", "256", "--layer_dim", "32",
               "--bg_layer_dim", "32", "--num_chunks", "4", "--log_interval", "20"]


def _grid(work: Path, preset: str, num_images: int | None, grid_dim: tuple[int, int], seed: int,
          dataset: Path | None = None, bench_config: str | None = None,
          masks_extra: list[str] = ()) -> tuple[Path, Path]:
    """The dataset and its masks (made once; an existing work folder is reused).  ``dataset`` (an
    existing one, e.g. a prepared drone flight) replaces the synthetic city; its config is then
    ``work/config.yaml``: the dataset's own with ``configs/bench/<bench_config>`` on top."""
    from mega_nerf.config import parse
    from mega_nerf.partition.create_masks import create_cluster_masks, mask_parser
    from mega_nerf.synthetic.city import write_dataset

    masks = work / "masks"
    if dataset is not None:
        data = Path(dataset)
        if not (data / "config.yaml").exists():
            raise SystemExit(f"--dataset_path {data}: no config.yaml there; make the dataset with "
                             "scripts/prepare_dataset.py")
        if bench_config:
            write_bench_config(data, work, bench_config)
        else:
            (work / "config.yaml").write_text((data / "config.yaml").read_text())
    else:
        data = work / "dataset"
        if not (data / "config.yaml").exists():
            write_dataset(data, preset, seed=seed, num_images=num_images, progress=False)
        (work / "config.yaml").write_text((data / "config.yaml").read_text())
    if not (masks / "params.pt").exists():
        create_cluster_masks(parse(mask_parser(), ["--config", str(work / "config.yaml"), "--dataset_path", str(data),
                                                   "--output", str(masks), "--grid_dim", *map(str, grid_dim),
                                                   *masks_extra]))
    return data, masks


def _grid_argv(work: Path, data: Path, masks: Path, name: str) -> list[str]:
    """The flags that place a variant's cells (EXP-k), chunks and masks."""
    return ["--config_file", str(work / "config.yaml"), "--exp_name", str(work / name / "exp"), "--dataset_path",
            str(data), "--chunk_paths", str(work / "chunks" / "cell"), "--cluster_mask_path", str(masks)]


def _variant(work: Path, data: Path, masks: Path, name: str, iterations: int, train_argv: list[str],
             eval_argv: list[str]) -> dict:
    """Train every cell, merge, evaluate with seam metrics; the numbers of one variant."""
    from mega_nerf.config import parse, train_cells_parser
    from mega_nerf.training.grid_runner import train_cells

    started = time.perf_counter()
    code = train_cells(parse(train_cells_parser(), [*_grid_argv(work, data, masks, name), *train_argv]))
    if code != 0:
        raise SystemExit(f"{name}: train_cells failed (exit {code})")
    return _evaluate(work, data, masks, name, iterations, eval_argv, time.perf_counter() - started)


def _refined(work: Path, data: Path, masks: Path, name: str, iterations: int, refine_iterations: int,
             train_argv: list[str], eval_argv: list[str], blend: bool) -> dict:
    """The independent cells, copied, then refined at their seams (``blend``) or continued alone
    for as many iterations at the same lr (the control); merged and evaluated."""
    import shutil

    from mega_nerf.config import parse, refine_seams_parser
    from mega_nerf.training.seam_refine import refine_seams

    for cell_dir in sorted((work / "independent").glob("exp-*")):
        target = work / name / cell_dir.name
        if not target.exists():
            shutil.copytree(cell_dir, target)
    started = time.perf_counter()
    refine_seams(parse(refine_seams_parser(), [*_grid_argv(work, data, masks, name), *train_argv,
                                               "--seam_refine_iterations", str(refine_iterations)]), blend=blend)
    return _evaluate(work, data, masks, name, iterations, eval_argv, time.perf_counter() - started)


def _evaluate(work: Path, data: Path, masks: Path, name: str, iterations: int, eval_argv: list[str],
              train_seconds: float, cells: str | None = None) -> dict:
    """Merge a variant's cells (a refined cell's refined checkpoint) and evaluate with seam metrics;
    ``cells``: another variant's cells (default: ``name``'s own), e.g. to render them otherwise."""
    from mega_nerf.config import eval_parser, parse
    from mega_nerf.container.merge import merge, merge_parser
    from mega_nerf.evaluation.evaluator import evaluate

    config = work / "config.yaml"
    exp = work / (cells or name) / "exp"
    (work / name).mkdir(parents=True, exist_ok=True)
    container = work / name / "container.pt"
    merge(parse(merge_parser(), ["--config_file", str(config), "--ckpt_prefix", f"{exp}-", "--centroid_path",
                                 str(masks / "params.pt"), "--output", str(container), "--overwrite",
                                 "--train_iterations", str(iterations)]))
    output = work / name / "eval"
    if (output / "metrics.json").exists():
        (output / "metrics.json").unlink()
    metrics = evaluate(parse(eval_parser(), [
        "--config_file", str(config), "--exp_name", str(exp), "--dataset_path", str(data), "--container_path",
        str(container), "--output_path", str(output), "--seam_metrics", *eval_argv]))
    seams = metrics["seams"]
    cells = {}
    for cell_dir in sorted(exp.parent.glob(f"{exp.name}-*")):
        summary = json.loads((cell_dir / "train_summary.json").read_text())
        cells[cell_dir.name.rsplit("-", 1)[1]] = {
            "agreed_with": (summary.get("agreement") or {}).get("agreed_with", []),
            "final_train_psnr": summary.get("final_train_psnr"), "iterations": summary.get("iterations")}
    surface, interior = seams["seam_surface"]["psnr"], seams["interior"]["psnr"]
    return {"psnr": metrics["psnr"]["mean"], "ssim": metrics["ssim"]["mean"],
            "seam_surface_penalty_db": None if surface is None or interior is None else interior - surface,
            "seam_psnr": seams["seam"]["psnr"], "seam_mean_abs_error": seams["seam"]["mean_abs_error"],
            "seam_surface_psnr": seams["seam_surface"]["psnr"], "seam_edge_psnr": seams["seam_edge"]["psnr"],
            "seam_surface_pixels": seams["seam_surface"]["pixels"],
            "rest_psnr": seams["rest"]["psnr"], "rest_mean_abs_error": seams["rest"]["mean_abs_error"],
            "blend_psnr": seams["blend"]["psnr"], "interior_psnr": seams["interior"]["psnr"],
            "cell_color_gap": seams["cell_color_gap"], "seam_fraction": seams["seam_fraction"],
            "seam_pixels": seams["seam"]["pixels"], "train_seconds": train_seconds, "cells": cells,
            "seams": seams}


#: Names the result uses for itself (not --variant names).
RESERVED = ("independent", "continued", "refined", "delta", "baseline")
DELTA_KEYS = ("psnr", "seam_psnr", "seam_mean_abs_error", "seam_surface_psnr", "seam_edge_psnr", "rest_psnr",
              "rest_mean_abs_error", "blend_psnr", "interior_psnr", "seam_surface_penalty_db", "cell_color_gap")


def agreement_flags(neighbor_agreement: float = 0.01, agreement_appearance: float = 0.0) -> str:
    """The default variant's flags.  Weights of 0.1 and 1 lowered PSNR everywhere (the field term is
    a squared log-density difference, far larger than the photometric loss); at 0.01 the border
    pixels' error fell about 3 % with hard routing over three seeds of the tiny city, at the same
    overall PSNR, with or without the appearance term (``seams_cpu_hard.json``,
    ``seams_cpu_density.json``).  On brighton the appearance term at 0.01 cost 0.64 dB
    (``seams_brighton_gpu.json``); without it the border error fell 4-7 % with hard routing over two
    seeds at the same overall PSNR (``seams_brighton_gpu{,_seed1}.json``)."""
    return f"--neighbor_agreement {neighbor_agreement} --agreement_appearance {agreement_appearance}"


def seam_comparison(work: Path, preset: str = "tiny", grid_dim: tuple[int, int] = (2, 2),
                    train_iterations: int = 500, variants: dict[str, str] | None = None,
                    train_extra: list[str] = (), eval_extra: list[str] = (), num_images: int | None = None,
                    seed: int = 0, refine_iterations: int = 0, dataset: Path | None = None,
                    bench_config: str | None = None, masks_extra: list[str] = (),
                    eval_variants: dict[str, str] | None = None, eval_each_variant: bool = False,
                    on_result=None) -> dict:
    """Train a grid of the synthetic city with independent cells and with each variant's agreement
    flags, merge and evaluate each; seam and overall numbers of each.

    Args:
        work: work folder (dataset, masks, chunks, experiments); an existing one is reused, so a
            second call with other agreement flags trains only the variants whose folders were deleted.
        variants: name -> extra train_cells flags (default: ``agreement``, :func:`agreement_flags`).
        eval_variants: name -> extra eval.py flags: the independent cells merged again and
            rendered otherwise, e.g. ``tapered='--blend_weights tapered'``.
        eval_each_variant: also render every variant's cells so (``VARIANT@NAME``, against ``NAME``).
        train_extra, eval_extra, masks_extra: extra train_cells.py / eval.py / create_cluster_masks.py flags.
        dataset, bench_config: an existing dataset instead of the synthetic city (``preset`` and
            ``num_images`` then unused), with ``configs/bench/<bench_config>`` on top of its config.
        refine_iterations: > 0 adds two variants made from the independent cells: ``continued``
            (each cell trained on alone this many iterations at its final lr) and ``refined``
            (``scripts/refine_seams.py``: the same iterations through the container's blend); the
            ``refined`` delta is against ``continued``, so the extra iterations cancel out.
        on_result: called with the result so far (as returned) after each variant.
    Returns:
        {"independent": numbers, NAME: numbers, ..., "delta": {NAME: NAME minus its baseline},
        "baseline": {NAME: baseline}} (the baseline is ``independent`` but for ``refined``), each
        numbers dict with psnr (overall), seam_psnr, seam_mean_abs_error, rest_psnr, rest_mean_abs_error
        (every other foreground pixel), blend_psnr, interior_psnr, cell_color_gap, seam_fraction,
        train_seconds and per-cell agreed_with.

    CPU smoke (about 2 minutes on 2 cores)::

        seam_comparison(Path("/tmp/w"), train_iterations=80, train_extra=SMOKE_TRAIN)
    """
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    variants = {"agreement": agreement_flags()} if variants is None else variants
    data, masks = _grid(work, preset, num_images, grid_dim, seed, dataset, bench_config, list(masks_extra))
    trained = ["--train_iterations", str(train_iterations), "--ckpt_interval", str(train_iterations), *train_extra]
    common = [*trained, "--progress_interval", "30"]  # train_cells only
    out, baseline = {}, {}

    def done(name: str, numbers: dict, base: str | None) -> None:
        out[name] = numbers
        if base is not None:
            baseline[name] = base
        if on_result is not None:
            on_result(with_deltas(out, baseline))

    done("independent", _variant(work, data, masks, "independent", train_iterations, common, list(eval_extra)), None)
    for name, flags in variants.items():
        done(name, _variant(work, data, masks, name, train_iterations, common + flags.split(), list(eval_extra)),
             "independent")
    for name, flags in (eval_variants or {}).items():
        done(name, _evaluate(work, data, masks, name, train_iterations, [*eval_extra, *flags.split()], None,
                             cells="independent"), "independent")
        for variant in variants if eval_each_variant else ():
            done(f"{variant}@{name}", _evaluate(work, data, masks, f"{variant}@{name}", train_iterations,
                                                [*eval_extra, *flags.split()], None, cells=variant), name)
    if refine_iterations > 0:
        for name, blend in (("continued", False), ("refined", True)):
            done(name, _refined(work, data, masks, name, train_iterations, refine_iterations, trained,
                                list(eval_extra), blend), "independent" if name == "continued" else "continued")
    return with_deltas(out, baseline)


def with_deltas(out: dict, baseline: dict) -> dict:
    """The variants' numbers, each one's differences from its baseline (``delta``) and the baselines."""
    delta = {name: {key: (None if out[name][key] is None or out[base][key] is None
                          else out[name][key] - out[base][key]) for key in DELTA_KEYS}
             for name, base in baseline.items()}
    return {**out, "delta": delta, "baseline": dict(baseline)}


def table(result: dict) -> str:
    cols = [("psnr", "PSNR"), ("seam_psnr", "seam PSNR"), ("seam_mean_abs_error", "seam MAE"),
            ("seam_surface_psnr", "surface"), ("seam_edge_psnr", "edge"),
            ("rest_psnr", "rest PSNR"), ("rest_mean_abs_error", "rest MAE"), ("blend_psnr", "blend PSNR"),
            ("interior_psnr", "interior"), ("seam_surface_penalty_db", "penalty"), ("cell_color_gap", "cell gap"),
            ("train_seconds", "train s")]
    variants = [name for name in result if name not in ("independent", "delta", "baseline")]
    lines = [f"{'variant':<20}" + "".join(f"{title:>12}" for _, title in cols)]
    rows = [("independent", result["independent"])]
    for name in variants:
        rows += [(name, result[name]), (f"  - {result['baseline'][name]}", result["delta"][name])]
    for label, row in rows:
        cells = []
        for key, _ in cols:
            value = row.get(key)
            cells.append(f"{'-':>12}" if value is None else f"{value:>12.4f}" if "error" in key or "gap" in key
                         else f"{value:>12.2f}")
        lines.append(f"{label:<20}" + "".join(cells))
    seam = result["independent"]
    lines.append(f"seam pixels: {seam['seam_pixels']} ({100 * seam['seam_fraction']:.1f} % of the foreground "
                 f"pixels scored), {seam['seam_surface_pixels']} of them where one surface crosses cells (surface), "
                 f"the others at occlusion edges (edge)")
    for name in variants:
        lines.append(f"{name}: cells agreed with {({k: v['agreed_with'] for k, v in result[name]['cells'].items()})}")
    return "\n".join(lines)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--name", default="seams")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--num_images", type=int, default=None)
    p.add_argument("--dataset_path", default=None,
                   help="an existing dataset (e.g. a drone flight from scripts/prepare_dataset.py) instead of the "
                        "synthetic city")
    p.add_argument("--config", default=None, metavar="FILE",
                   help="settings file in configs/bench/ put on top of the dataset's config.yaml, e.g. brighton.yaml")
    p.add_argument("--grid_dim", nargs=2, type=int, default=[2, 2])
    p.add_argument("--train_iterations", type=int, default=500)
    p.add_argument("--neighbor_agreement", type=float, default=0.01,
                   help="the 'agreement' variant's weight (when no --variant is given)")
    p.add_argument("--agreement_appearance", type=float, default=0.0)
    p.add_argument("--variant", action="append", default=[], metavar="NAME=FLAGS",
                   help="a named set of train_cells flags compared with independent cells (repeatable), e.g. "
                        "blend=--agreement_blend; default: agreement='--neighbor_agreement W "
                        "--agreement_appearance A' from the two flags above")
    p.add_argument("--eval_variant", action="append", default=[], metavar="NAME=FLAGS",
                   help="the independent cells rendered with these eval.py flags, compared with independent "
                        "(repeatable), e.g. tapered='--blend_weights tapered'")
    p.add_argument("--eval_each_variant", action="store_true",
                   help="render every --variant's cells with each --eval_variant's flags too (rows VARIANT@NAME, "
                        "against NAME), e.g. hard='--boundary_margin 1' for hard routing, where a cell's border "
                        "shows")
    p.add_argument("--refine", type=int, default=0, metavar="ITERATIONS",
                   help="also refine the independent cells at their seams for this many iterations per cell "
                        "(scripts/refine_seams.py) and continue them alone as long (the control)")
    p.add_argument("--train_extra", default="", help="extra train_cells flags, e.g. '--batch_size 8192'")
    p.add_argument("--eval_extra", default="", help="extra eval.py flags")
    p.add_argument("--masks_extra", default="", help="extra create_cluster_masks.py flags, e.g. '--ray_samples 16'")
    p.add_argument("--smoke", action="store_true", help="CPU smoke run: tiny fields, 80 steps per cell")
    p.add_argument("--work", default=None, help="work folder (default: a temporary one)")
    p.add_argument("--results_dir", default=None, help="where <name>.json goes (default: bench/results)")
    args = p.parse_args(argv)
    train_extra = args.train_extra.split()
    iterations = args.train_iterations
    if args.smoke:
        train_extra = [*SMOKE_TRAIN, *train_extra]
        iterations = 80 if iterations == p.get_default("train_iterations") else iterations
    work = Path(args.work or tempfile.mkdtemp(prefix="mega_nerf_seams_"))
    started = time.time()
    variants, eval_variants = {}, {}
    for option, specs, named in (("--variant", args.variant, variants), ("--eval_variant", args.eval_variant,
                                                                          eval_variants)):
        for spec in specs:
            name, sep, flags = spec.partition("=")
            if not sep or not name.isidentifier() or name in RESERVED or name in variants or name in eval_variants:
                raise SystemExit(f"{option} {spec!r}: expected NAME=FLAGS (NAME a new word other than "
                                 f"{', '.join(RESERVED)})")
            named[name] = flags
    if not variants and not eval_variants and not args.refine:  # the default comparison
        variants = {"agreement": agreement_flags(args.neighbor_agreement, args.agreement_appearance)}
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"

    def save(result: dict, complete: bool) -> dict:
        """<name>.json with the variants so far (a run cut off by a time limit keeps what it measured)."""
        record = {"name": args.name, "command": " ".join([Path(sys.executable).name, *sys.argv]), "device": device,
                  "versions": versions(), "preset": None if args.dataset_path else args.preset,
                  "dataset_path": args.dataset_path, "bench_config": args.config, "num_images": args.num_images,
                  "grid_dim": args.grid_dim, "train_iterations": iterations, "smoke": args.smoke,
                  "variants": variants, "eval_variants": eval_variants, "refine_iterations": args.refine,
                  "train_extra": train_extra, "wall_seconds": time.time() - started, "complete": complete,
                  **{k: ({kk: vv for kk, vv in v.items() if kk != "seams"} if k not in ("delta", "baseline") else v)
                     for k, v in result.items()},
                  "seams": {k: v["seams"] for k, v in result.items() if k not in ("delta", "baseline")}}
        write_result(args.name, record, Path(args.results_dir) if args.results_dir else None)
        return record

    result = seam_comparison(work, args.preset, tuple(args.grid_dim), iterations, variants, train_extra,
                             args.eval_extra.split(), args.num_images, refine_iterations=args.refine,
                             dataset=args.dataset_path, bench_config=args.config,
                             masks_extra=args.masks_extra.split(), eval_variants=eval_variants,
                             eval_each_variant=args.eval_each_variant,
                             on_result=lambda partial: save(partial, complete=False))
    record = save(result, complete=True)
    print(table(result))
    return record


if __name__ == "__main__":
    main()
