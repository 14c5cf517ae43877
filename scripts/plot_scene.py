#!/usr/bin/env python
"""Picture of where a dataset's scene sits, with the checks behind it (mega_nerf.data.scene_plot)."""
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from mega_nerf.data.scene_plot import cli  # noqa: E402

if __name__ == "__main__":
    cli()
