#!/usr/bin/env python
"""Structure-from-motion from raw photos against a known model: ``prepare_dataset.py --images``
on the brighton drone flight, poses compared with the provided COLMAP model (ENU metres) after a
similarity fit of the camera centres (Umeyama).  Writes bench/results/sfm_agreement.json.

Variants: ``exif`` (COLMAP's EXIF 35 mm-equivalent focal length, self-calibrated) and ``sensor``
(focal from the EXIF focal length and the FC300S's 6.17 mm sensor width, held fixed, as the
provided model was made).

    .venv/bin/python bench/sfm_agreement.py [--variants exif sensor] [--work DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import log_path, run_logged, versions, write_result  # noqa: E402

SHARED = REPO.parent / "shared" / "data" / "brighton_beach_drone"
VARIANTS = {"exif": [], "sensor": ["--sensor_width_mm", "6.17"]}


def main() -> None:
    import cv2
    import pycolmap

    from mega_nerf.data.importers.sfm import pose_agreement, reconstruction_poses

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=Path, default=SHARED / "images")
    p.add_argument("--reference", type=Path, default=SHARED / "sparse" / "0")
    p.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=["exif", "sensor"])
    p.add_argument("--extra", default="", help="more prepare_dataset.py flags for every variant")
    p.add_argument("--work", type=Path, default=None, help="work folder (default: a temporary one, removed)")
    p.add_argument("--name", default="sfm_agreement")
    args = p.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="mega_nerf_sfm_"))
    work.mkdir(parents=True, exist_ok=True)
    log = log_path(args.name, work)
    reference = reconstruction_poses(pycolmap.Reconstruction(str(args.reference)))
    rows, commands = {}, {}
    for variant in args.variants:
        output = work / variant
        shutil.rmtree(output, ignore_errors=True)
        cmd = [sys.executable, "scripts/prepare_dataset.py", "--images", str(args.images), "--output", str(output),
               "--val_every", "6", "--downscale", "4", "--quiet", *VARIANTS[variant], *args.extra.split()]
        seconds = run_logged(cmd, log)
        record = json.loads((output / "colmap" / "sfm.json").read_text())
        model = pycolmap.Reconstruction(str(output / "colmap" / "sparse" / "0"))
        ours = reconstruction_poses(model)
        agreement = pose_agreement(ours, reference)
        # In the GPS frame itself (both models put the ENU origin at the first image's lat/lon):
        # horizontal distance without any fit.
        common = sorted(set(ours) & set(reference))
        horizontal = [float(np.linalg.norm(ours[n][:2, 3] - reference[n][:2, 3])) for n in common]
        camera = next(iter(record["cameras"].values()))
        rows[variant] = {
            "registered": f"{record['num_registered']}/{record['num_images']}",
            "points": record["num_points"], "reprojection_px": record["mean_reprojection_error_px"],
            "focal_px": camera["params"][0], "camera": camera,
            "matcher": record["matcher"], "gps": record["gps"],
            "sfm_seconds": record["seconds"], "command_seconds": seconds,
            "rotation_deg": agreement["rotation_deg"], "position_m": agreement["position"],
            "fit_scale": agreement["scale"],
            "gps_frame_horizontal_m": {"median": float(np.median(horizontal)), "max": float(max(horizontal))},
            "per_image": agreement["per_image"],
        }
        commands[variant] = " ".join(["python", *cmd[1:]])

    print(f"{'variant':8} {'reg':>6} {'focal px':>9} {'rot med/max deg':>16} {'pos med/max m':>15} "
          f"{'fit scale':>9} {'GPS-frame xy m':>15} {'SfM s':>7}")
    for variant, r in rows.items():
        print(f"{variant:8} {r['registered']:>6} {r['focal_px']:>9.1f} "
              f"{r['rotation_deg']['median']:>7.3f}/{r['rotation_deg']['max']:<8.3f} "
              f"{r['position_m']['median']:>6.3f}/{r['position_m']['max']:<8.3f} {r['fit_scale']:>9.4f} "
              f"{r['gps_frame_horizontal_m']['median']:>6.2f}/{r['gps_frame_horizontal_m']['max']:<8.2f} "
              f"{sum(r['sfm_seconds'].values()):>7.1f}")
    write_result(args.name, {
        "name": args.name,
        "command": "python bench/sfm_agreement.py " + " ".join(sys.argv[1:]),
        "variant_commands": commands,
        "device": f"CPU: {platform.machine()}, {os.cpu_count()} cores (SIFT and matching on CPU)",
        "versions": {**versions(), "pycolmap": pycolmap.__version__, "opencv": cv2.__version__},
        "reference": "../shared/data/brighton_beach_drone/sparse/0 (pycolmap 4.2.1, f fixed 936.2 px, "
                     "similarity-aligned to GPS, ENU metres)",
        "comparison": "similarity (Umeyama) fit of our camera centres to the reference's; rotation error = "
                      "angle of R_ref^T R_fit R_ours; position error in reference metres after the fit; "
                      "gps_frame_horizontal_m: without any fit, east/north distance in the two GPS-aligned frames",
        "variants": rows,
    })
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
