"""Seam refinement (``scripts/refine_seams.py``): a trained grid's cells learn what the merged
container shows where they meet.

Cells trained independently each fit the photos on their own, but the container renders the
overlap band as a routing-weighted blend of several cells, which no cell ever saw.  Refinement
trains every cell a few more iterations with its rays rendered through that very blend (the
:class:`~mega_nerf.training.neighbor_agreement.BlendingModel` of ``--agreement_blend``), now with
*every* other cell trained and frozen, at the schedule's final learning rate: the photometric loss
is then the container's own error on those rays, and only the cell's share of the blend moves.

The cells are refined one after the other (Gauss-Seidel: a cell sees the already refined ones),
in the queue's order, largest first.  Refining neighbours at the same time would each correct the
same seam error against the other's old predictions and overshoot together.

Each refinement is an ordinary continuation of the cell's run, with the options the cell was
trained with (its ``hparams.txt``; options given on the command line win): checkpoints
``models/<N+r>.pt`` (the trained one at ``N`` is kept), ``train_summary.json`` with a
``seam_refine`` record, so an interrupted refinement resumes where it stopped, a refined cell is
not refined again (a larger R refines it further), and ``merge_submodules.py --train_iterations
N`` takes the refined checkpoint.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from mega_nerf.errors import require
from mega_nerf.io_utils import atomic_write_json
from mega_nerf.training.cells import cell_args, grid_cells, largest_first, read_hparams, train_summary
from mega_nerf.training.neighbor_agreement import finished_checkpoint

#: Options that place this run or configure the refinement itself, never taken from a cell's hparams.
OWN_OPTIONS = {"exp_name", "cluster_mask_path", "seam_refine_iterations", "cells", "ckpt_path", "command_line",
               "device", "num_threads", "config_file"}


def trained_cell_args(args: argparse.Namespace, cell: int) -> argparse.Namespace:
    """train.py's options for refining ``cell``: those it was trained with (``hparams.txt``: model
    sizes, iterations, chunks), but the ones given on this command line.  Refuses a cell that is
    missing or not trained to the end."""
    cargs = cell_args(args, cell)
    exp = Path(cargs.exp_name)
    require(exp.is_dir(), f"{exp}: no such folder; --exp_name is the prefix the cells were trained with (cell k "
                          f"in EXP_NAME-k, e.g. runs/city for runs/city-0)")
    require(finished_checkpoint(exp) is not None,
            f"{exp}: not trained to the end (no train_summary.json naming its newest checkpoint in "
            f"{exp}/models); finish training every cell before refining")
    given = set(getattr(args, "command_line", ()))
    for name, value in read_hparams(exp).items():
        if name not in OWN_OPTIONS and name not in given:
            setattr(cargs, name, value)
    return cargs


def refine_seams(args: argparse.Namespace, blend: bool = True) -> dict:
    """Refine every trained cell of ``args.exp_name`` (see the module docstring).

    Args:
        args: :func:`~mega_nerf.config.refine_seams_parser` options.
        blend: False continues each cell alone for the same iterations at the same learning rate,
            the control that tells the blend's effect from that of the extra iterations.
    Returns:
        {"cells": {k: {"from_iteration", "iterations", "neighbors", "final_train_psnr"}}, "seconds"},
        also written to ``EXP_NAME/seam_refine.json``.
    """
    iterations = args.seam_refine_iterations
    require(iterations > 0, f"--seam_refine_iterations must be > 0, got {iterations}")
    require(args.ckpt_path is None, "--ckpt_path is not for refine_seams.py: each cell continues from its own "
                                    "newest checkpoint in EXP_NAME-<cell>/models")
    mask_root = Path(args.cluster_mask_path)
    cells, _ = grid_cells(mask_root, args.cells)
    require(cells, f"{mask_root}: no cell to refine")
    order = list(args.cells) if args.cells else largest_first(mask_root, cells)
    refine_args = {k: trained_cell_args(args, k) for k in order}  # every cell checked before any is refined
    from mega_nerf.training.trainer import Trainer

    started, out = time.time(), {}
    for k in order:
        exp = Path(refine_args[k].exp_name)
        summary = train_summary(exp) or {}
        earlier = summary.get("seam_refine") or {}
        if earlier and summary.get("iterations", 0) >= earlier["from_iteration"] + iterations:
            how = "already refined"  # a smaller or equal R than before: nothing to do
        else:
            summary = Trainer(refine_args[k], refine_iterations=iterations, refine_blend=blend).train()
            how = (f"refined through the blend with cells {(summary.get('agreement') or {}).get('agreed_with', [])}"
                   if blend else "continued alone")
        record = summary.get("seam_refine") or {}
        out[str(k)] = {**record, "end_iteration": summary.get("iterations"),
                       "neighbors": (summary.get("agreement") or {}).get("agreed_with", []),
                       "final_train_psnr": summary.get("final_train_psnr"), "status": how}
        print(f"cell {k}: {record.get('from_iteration')} -> {summary.get('iterations')}, {how}", flush=True)
    result = {"cells": out, "iterations": iterations, "blend": blend, "order": order,
              "seconds": time.time() - started}
    atomic_write_json(result, Path(args.exp_name) / "seam_refine.json")
    return result


def main(argv=None) -> dict:
    from mega_nerf.config import parse, refine_seams_parser

    return refine_seams(parse(refine_seams_parser(), argv))


def cli() -> None:
    """Console entry point (``mega-nerf-refine-seams``)."""
    from mega_nerf.errors import cli_entry

    cli_entry(main)()
