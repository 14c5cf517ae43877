"""Write a parscript job list that trains every cell of a grid, one line per cell.

    python scripts/write_parscript.py --grid_dim 2 4 --output parscripts/run_8.txt [--mask_path MASKS]
    CONFIG_FILE=... EXP_PREFIX=... DATASET_PATH=... CHUNK_PREFIX=... MASK_PATH=... \\
        python -m parscript.dispatcher parscripts/run_8.txt -g NUM_GPUS

Lines use the same environment variables as Mega-NeRF's run_8.txt.  With --mask_path, cells
that no ray reaches (per params.pt) get no line.
"""
from __future__ import annotations

import argparse
import pathlib
import warnings

import torch

from mega_nerf.errors import cli_entry, require
from mega_nerf.io_utils import atomic_write_text
from mega_nerf.training.cells import unreached_cells

LINE = ("export CENTROID={cell}; OMP_NUM_THREADS={threads} python mega_nerf/train.py --config_file $CONFIG_FILE "
        "--exp_name ${{EXP_PREFIX}}-${{CENTROID}} --dataset_path $DATASET_PATH "
        "--chunk_paths ${{CHUNK_PREFIX}}-${{CENTROID}} --cluster_mask_path ${{MASK_PATH}}/${{CENTROID}}{extra}")


def job_lines(cells, threads: int, extra_args: str) -> list[str]:
    extra = f" {extra_args}" if extra_args else ""
    return [LINE.format(cell=k, threads=threads, extra=extra) for k in cells]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--grid_dim", nargs=2, type=int, required=True, metavar=("GX", "GY"))
    p.add_argument("--output", required=True, help="job list to write, e.g. parscripts/run_8.txt")
    p.add_argument("--mask_path", default=None, help="mask folder: skip cells no ray reaches")
    p.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS per job")
    p.add_argument("--extra_args", default="", help="appended to every train.py line")
    p.add_argument("--overwrite", action="store_true", help="replace an existing job list")
    args = p.parse_args(argv)
    gx, gy = args.grid_dim
    require(gx >= 1 and gy >= 1, f"--grid_dim {gx} {gy}: both values must be at least 1")
    output = pathlib.Path(args.output)
    require(not output.exists() or args.overwrite, f"{output}: already exists; pass --overwrite")
    cells = list(range(gx * gy))
    if args.mask_path:
        params_path = pathlib.Path(args.mask_path) / "params.pt"
        require(params_path.exists(), f"{params_path}: missing; run create_cluster_masks.py first")
        params = torch.load(params_path, map_location="cpu", weights_only=False)
        require(list(params["grid_dim"]) == [gx, gy],
                f"{params_path}: masks have grid {params['grid_dim']}, not {[gx, gy]}")
        empty = unreached_cells(params)
        for k in empty:
            warnings.warn(f"cell {k} is reached by no ray: no job written for it")
        cells = [k for k in cells if k not in empty]
    atomic_write_text("\n".join(job_lines(cells, args.threads, args.extra_args)) + "\n", output)
    # parscript keeps its counters beside the list; a fresh list starts from job 0.
    for suffix in ("-start.txt", "-finish.txt"):
        output.with_name(output.stem + suffix).unlink(missing_ok=True)
    print(f"wrote {len(cells)} jobs to {output}")


def cli() -> None:
    """Console entry point."""
    cli_entry(main)()
