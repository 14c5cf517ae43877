#!/usr/bin/env python
"""Convert a COLMAP model, transforms.json or LLFF capture to a Mega-NeRF dataset (mega_nerf.data.importers)."""
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from mega_nerf.data.importers.cli import cli  # noqa: E402

if __name__ == "__main__":
    cli()
