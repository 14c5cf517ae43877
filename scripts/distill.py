#!/usr/bin/env python
"""Distil a merged container into one model of any backend (see mega_nerf.distillation.cli)."""
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from mega_nerf.distillation.cli import main
from mega_nerf.errors import cli_entry

if __name__ == "__main__":
    cli_entry(main)()
