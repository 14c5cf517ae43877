#!/usr/bin/env python
"""Merge trained cells into one container (see mega_nerf.container.merge)."""
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from mega_nerf.container.merge import main  # noqa: E402
from mega_nerf.errors import cli_entry  # noqa: E402

if __name__ == "__main__":
    cli_entry(main)()
