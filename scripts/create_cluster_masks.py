#!/usr/bin/env python
"""Write per-image, per-cell cluster masks and params.pt (see mega_nerf.partition.create_masks)."""
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from mega_nerf.errors import cli_entry  # noqa: E402
from mega_nerf.partition.create_masks import main  # noqa: E402

if __name__ == "__main__":
    cli_entry(main)()
