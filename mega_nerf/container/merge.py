"""Assemble trained cells into one container (``scripts/merge_submodules.py``)."""
from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import torch

from mega_nerf.config import add_scene_options, new_parser, parse
from mega_nerf.container.container import Container, save_container
from mega_nerf.errors import UserError, require
from mega_nerf.geometry.bounds import SceneBounds
from mega_nerf.training.cells import train_summary
from mega_nerf.training.trainer import checkpoints


def merge_parser() -> argparse.ArgumentParser:
    p = new_parser("Merge every cell's final checkpoint into one container model.")
    add_scene_options(p)
    g = p.add_argument_group("merge")
    g.add_argument("--ckpt_prefix", type=str, required=True, help="experiment prefix: cells are PREFIX0, PREFIX1, ...")
    g.add_argument("--centroid_path", type=str, required=True, help="MASKS/params.pt")
    g.add_argument("--output", type=str, required=True, help="container file to write")
    g.add_argument("--train_iterations", type=int, default=None,
                   help="take each cell's checkpoint at this iteration, so unfinished cells are refused "
                        "(a config's train_iterations sets it); unset: each cell's newest checkpoint")
    g.add_argument("--unrefined", default=False, action="store_true",
                   help="cells refined at their seams (refine_seams.py): take the checkpoint they were refined "
                        "from instead of the refined one, e.g. to compare the two containers")
    g.add_argument("--overwrite", default=False, action="store_true", help="replace an existing --output")
    return p


def _final_checkpoint(cell_dir: Path, iterations: int | None, unrefined: bool = False) -> Path:
    """The checkpoint to merge of one cell: at ``iterations`` (None: the newest), or the refined one
    of a cell refined at its seams after training to ``iterations`` unless ``unrefined``."""
    found = checkpoints(cell_dir)
    require(found, f"{cell_dir}: no checkpoint in {cell_dir}/models; train this cell first")
    summary = train_summary(cell_dir) or {}
    refined = summary.get("seam_refine") or {}
    if unrefined and refined:
        require(iterations in (None, refined["from_iteration"]),
                f"{cell_dir}: was refined from iteration {refined['from_iteration']}, not --train_iterations "
                f"{iterations}; drop one of --unrefined and --train_iterations")
        iterations = refined["from_iteration"]
    elif iterations is None:
        return found[-1][1]
    elif refined.get("from_iteration") == iterations and summary.get("iterations") == found[-1][0]:
        return found[-1][1]
    for iteration, path in found:
        if iteration == iterations:
            return path
    raise UserError(f"{cell_dir}: no checkpoint at iteration {iterations} (has {[i for i, _ in found]}); "
                    f"finish training or pass --train_iterations")


def merge(args: argparse.Namespace) -> Container:
    output = Path(args.output)
    require(not output.exists() or args.overwrite,
            f"{output}: already exists; pass --overwrite or choose another --output")
    params_path = Path(args.centroid_path)
    require(params_path.exists(), f"{params_path}: missing; pass the params.pt written by create_cluster_masks.py")
    params = torch.load(params_path, map_location="cpu", weights_only=False)
    centroids = params["centroids"]
    counts = params.get("cell_pixel_counts")
    prefix = Path(args.ckpt_prefix)
    states, cell_ids, configs, bounds, taken = [], [], [], None, []
    for k in range(len(centroids)):
        if counts is not None and int(counts[k]) == 0:
            warnings.warn(f"cell {k} has no rays and was not trained; its neighbours cover its space")
            continue
        path = _final_checkpoint(prefix.parent / f"{prefix.name}{k}", args.train_iterations, args.unrefined)
        state = torch.load(path, map_location="cpu", weights_only=False)
        require(state.get("cell") == k, f"{path}: was trained for cell {state.get('cell')}, not cell {k}; "
                                        f"check --ckpt_prefix and --centroid_path")
        bounds = bounds or state["bounds"]
        require(state["bounds"] == bounds, f"{path}: trained with another scene frame or bounds than the first "
                                           f"cell; train every cell with the same dataset and scene options")
        refined = None if args.unrefined else state.get("seam_refine")
        how = "refined" if (refined or {}).get("blend", True) else "continued alone"  # alone: the bench's control
        taken.append(f"{k}: {path.name}" + (f" ({how} from {refined['from_iteration']})" if refined else ""))
        configs.append(state["model_config"])  # cells may use different backends
        states.append(state["model_state_dict"])
        cell_ids.append(k)
    require(cell_ids, f"{params_path}: no trained cell to merge")
    container = Container(configs, SceneBounds.from_dict(bounds), centroids[cell_ids], cell_ids,
                          args.boundary_margin, bool(params.get("cluster_2d", args.cluster_2d)),
                          args.blend_weights or "inverse_distance")
    for i, state in enumerate(states):
        container.sub_modules[i].load_state_dict({k[3:]: v for k, v in state.items() if k.startswith("fg.")})
        if container.bg_sub_modules is not None:
            container.bg_sub_modules[i].load_state_dict({k[3:]: v for k, v in state.items() if k.startswith("bg.")})
        if container.occupancy_grids is not None:
            container.occupancy_grids[i].load_state_dict(
                {k[len("occupancy."):]: v for k, v in state.items() if k.startswith("occupancy.")})
    save_container(container, output)
    print(f"merged {len(cell_ids)} cells ({container.parameter_count():,} parameters) into {output}; checkpoints "
          f"{', '.join(taken)}", flush=True)
    return container


def main(argv=None) -> None:
    merge(parse(merge_parser(), argv))


def cli() -> None:
    """Console entry point."""
    from mega_nerf.errors import cli_entry

    cli_entry(main)()
