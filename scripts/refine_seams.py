#!/usr/bin/env python
"""Refine a trained grid at its seams (see mega_nerf.training.seam_refine).

    python scripts/refine_seams.py --config_file C --exp_name E --dataset_path D \\
        --chunk_paths P --cluster_mask_path MASKS --seam_refine_iterations 300
"""
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from mega_nerf.training.seam_refine import cli  # noqa: E402

if __name__ == "__main__":
    cli()
