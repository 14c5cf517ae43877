#!/usr/bin/env python
"""Write a parscript job list, one line per cell (see mega_nerf.training.job_list)."""
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from mega_nerf.training.job_list import cli  # noqa: E402

if __name__ == "__main__":
    cli()
