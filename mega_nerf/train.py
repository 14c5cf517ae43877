#!/usr/bin/env python
"""Train one cell's submodule (``--cluster_mask_path MASKS/<i>``) or one model on the whole scene.

Mega-NeRF's command line works unchanged::

    python mega_nerf/train.py --config_file C --exp_name E --dataset_path D \
        --chunk_paths P --cluster_mask_path MASKS/<i>
"""
import pathlib
import sys

if __package__ in (None, ""):
    # Run as a script: import the package from the repository, not this folder's modules.
    sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])

from mega_nerf.config import parse, train_parser  # noqa: E402
from mega_nerf.errors import cli_entry  # noqa: E402


def main(argv=None) -> dict:
    from mega_nerf.training.trainer import Trainer

    return Trainer(parse(train_parser(), argv)).train()


cli = cli_entry(main)

if __name__ == "__main__":
    cli()
