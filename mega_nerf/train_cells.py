#!/usr/bin/env python
"""Train every cell of a grid on all the GPUs (or CPU processes) of one or several machines.

    python -m torch.distributed.run --standalone --nproc_per_node G -m mega_nerf.train_cells \\
        --config_file C --exp_name E --dataset_path D --chunk_paths P --cluster_mask_path MASKS
    # several nodes: the same command on each, with
    #   --nnodes M --node_rank i --rdzv_backend c10d --rdzv_endpoint HOST:PORT   (or --master_addr/--master_port)

Cell k trains in E-k (chunks P-k, masks MASKS/k), as the parscript job list does; every rank takes
the next untrained cell from a queue shared through the torch.distributed store.  Without
torch.distributed.run it trains the cells one after another in this process.  See
mega_nerf.training.grid_runner.
"""
import pathlib
import sys

if __package__ in (None, ""):
    sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])

from mega_nerf.config import parse, train_cells_parser  # noqa: E402
from mega_nerf.errors import cli_entry  # noqa: E402


def main(argv=None) -> int:
    from mega_nerf.training.grid_runner import train_cells

    return train_cells(parse(train_cells_parser(), argv))


def _main_exit(argv=None) -> None:
    sys.exit(main(argv))


cli = cli_entry(_main_exit)

if __name__ == "__main__":
    cli()
