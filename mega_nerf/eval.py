#!/usr/bin/env python
"""Evaluate a merged container or one model's checkpoint on the validation images (see
mega_nerf.evaluation.evaluator).

    python mega_nerf/eval.py --config_file C --exp_name E --dataset_path D --container_path container.pt
    python mega_nerf/eval.py --config_file C --exp_name E --dataset_path D --ckpt_path E/models/t60.pt
    python -m torch.distributed.run --standalone --nproc_per_node N mega_nerf/eval.py ...
"""
import pathlib
import sys

if __package__ in (None, ""):
    # Run as a script: import the package from the repository, not this folder's modules.
    sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])

from mega_nerf.errors import cli_entry  # noqa: E402


def main(argv=None) -> dict:
    from mega_nerf.evaluation.evaluator import main as evaluate_main

    return evaluate_main(argv)


cli = cli_entry(main)

if __name__ == "__main__":
    cli()
