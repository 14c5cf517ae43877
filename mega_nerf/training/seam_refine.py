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

Each refinement is an ordinary continuation of the cell's run: checkpoints ``models/<N+r>.pt``
(the trained one at ``N`` is kept), ``train_summary.json`` with a ``seam_refine`` record, so an
interrupted refinement resumes where it stopped, a refined cell is not refined again, and
``merge_submodules.py --train_iterations N`` takes the refined checkpoint.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from mega_nerf.errors import require
from mega_nerf.io_utils import atomic_write_json
from mega_nerf.training.cells import (cell_args, cell_finished, grid_cells, largest_first,
                                      train_summary)


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
    untrained = [k for k in order if not cell_finished(cell_args(args, k))]
    require(not untrained, f"cells {' '.join(map(str, untrained))} of {args.exp_name} are not trained to the end "
                           f"(--train_iterations / --train_seconds as trained); train every cell before refining")
    from mega_nerf.training.trainer import Trainer

    started, out = time.time(), {}
    for k in order:
        trainer = Trainer(cell_args(args, k), refine_iterations=iterations, refine_blend=blend)
        summary = trainer.train()
        record = summary.get("seam_refine") or (train_summary(trainer.exp_dir) or {}).get("seam_refine") or {}
        agreement = summary.get("agreement") or {}
        out[str(k)] = {**record, "end_iteration": summary.get("iterations"),
                       "neighbors": agreement.get("agreed_with", []),
                       "final_train_psnr": summary.get("final_train_psnr")}
        how = f"refined through the blend with cells {out[str(k)]['neighbors']}" if blend else "continued alone"
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
