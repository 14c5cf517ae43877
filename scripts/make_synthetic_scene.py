#!/usr/bin/env python
"""Generate a procedural aerial city as a Mega-NeRF dataset (see mega_nerf.synthetic.city)."""
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from mega_nerf.synthetic.cli import cli  # noqa: E402

if __name__ == "__main__":
    cli()
