"""Command line of the embedded scene generator (``scripts/make_synthetic_scene.py``)."""
from __future__ import annotations

import argparse
import pathlib
import time

from mega_nerf.errors import cli_entry
from mega_nerf.synthetic.city import PRESETS, write_dataset


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Generate a procedural aerial city as a Mega-NeRF dataset.", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--output", required=True, type=pathlib.Path,
                   help="dataset folder to create; must not exist or be empty")
    p.add_argument("--preset", choices=sorted(PRESETS), default="tiny",
                   help="tiny: 45 images of 96x72 over 120 m (seconds); "
                        "city: 2028 images of 320x240 over 1 km (benchmark)")
    p.add_argument("--seed", type=int, default=0, help="layout and appearance seed")
    p.add_argument("--image_width", type=int, default=None,
                   help="override the preset's width (multiple of 4; height keeps the aspect ratio)")
    p.add_argument("--num_images", type=int, default=None,
                   help="override the image count (the flight still covers the whole area)")
    p.add_argument("--num_threads", type=int, default=1,
                   help="torch threads (ray batches are small: 1 is usually fastest)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    start = time.perf_counter()
    summary = write_dataset(args.output, args.preset, args.seed, image_width=args.image_width,
                            num_images=args.num_images, progress=not args.quiet,
                            num_threads=args.num_threads)
    print(f"wrote {summary.path}: {summary.num_train} train + {summary.num_val} val images of "
          f"{summary.image_width}x{summary.image_height}, {summary.num_buildings} buildings "
          f"({summary.num_boxes} boxes) in {time.perf_counter() - start:.1f} s")


def cli() -> None:
    """Console entry point."""
    cli_entry(main)()
