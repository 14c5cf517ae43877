"""Command line of ``scripts/prepare_dataset.py``: one source in, a Mega-NeRF dataset out."""
from __future__ import annotations

import argparse
import time
from contextlib import nullcontext
from pathlib import Path

from mega_nerf.config import new_parser
from mega_nerf.data.importers.alignment import parse_up
from mega_nerf.data.importers.colmap import COLMAP_MODELS
from mega_nerf.data.importers.common import BACKGROUNDS, read_split_file
from mega_nerf.data.importers.scene_config import SCENE_KINDS
from mega_nerf.data.importers.sfm import EXHAUSTIVE_MAX, MATCHERS, MIN_IMAGES, SfmOptions, list_images, sfm_scene
from mega_nerf.data.importers.video import DEFAULT_FRAMES, FRAME_FORMATS, extract_frames
from mega_nerf.data.importers.writer import ImportOptions, write_dataset
from mega_nerf.errors import cli_entry, require
from mega_nerf.io_utils import staged_folder


def parser():
    p = new_parser("Convert photos or a video (structure-from-motion with pycolmap), a COLMAP model, a "
                   "transforms.json or an LLFF capture into a Mega-NeRF dataset with a suggested config.yaml.")
    p.add_argument("--output", required=True, type=Path, help="dataset folder to create; must not exist or be empty")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--images", type=Path, help="folder of photos (subfolders too): structure-from-motion with "
                                                   "pycolmap; the model is kept in DATASET/colmap/sparse/0")
    source.add_argument("--video", type=Path, help="video file: the sharpest frame of each window (--frames / --fps), "
                                                  "then structure-from-motion with sequential matching")
    source.add_argument("--colmap", type=Path, help="COLMAP model folder (sparse/0), or a project folder "
                                                   "holding sparse/0 (or sparse/) and images/")
    source.add_argument("--transforms", type=Path, help="nerfstudio / Instant-NGP transforms.json (or a folder "
                                                       "with transforms_{train,val,test}.json)")
    source.add_argument("--llff", type=Path, help="LLFF folder with poses_bounds.npy and images/")
    p.add_argument("--image_dir", type=Path, default=None,
                   help="images folder (COLMAP / LLFF; default: images/ next to the model)")
    p.add_argument("--up", default="auto", help="world up vector of the source: auto (from the cameras), an axis "
                                                "such as +z, or x,y,z; COLMAP models aligned to ENU: +z")
    p.add_argument("--metric", action="store_true", help="the source is in metres (e.g. a COLMAP model aligned "
                                                         "to GPS); altitude ranges are then in metres")
    p.add_argument("--scale_metres", type=float, default=None, help="metres per source unit (implies --metric)")
    p.add_argument("--downscale", type=int, default=1, help="shrink images (and intrinsics) by this factor")
    p.add_argument("--background", choices=sorted(BACKGROUNDS), default="white",
                   help="composite images with alpha (NeRF synthetic) onto this colour")
    p.add_argument("--val_every", type=int, default=8,
                   help="without a split file: images 0, N, 2N, ... of the name-sorted list are validation "
                        "(Mega-NeRF's brighton protocol: 6; 0: no validation images)")
    p.add_argument("--split_file", type=Path, default=None, help="validation image names, one per line")
    p.add_argument("--scene_kind", choices=SCENE_KINDS, default="auto",
                   help="aerial: altitude range from ground and tops; object: a box around the content")
    p.add_argument("--skip_missing_images", action="store_true",
                   help="leave out frames whose image file is missing instead of stopping")
    p.add_argument("--allow_unregistered", action="store_true",
                   help="COLMAP: leave out images the model did not register instead of stopping")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    sfm = p.add_argument_group("structure-from-motion (--images, --video)")
    sfm.add_argument("--matcher", choices=MATCHERS, default="auto",
                     help=f"auto: exhaustive up to {EXHAUSTIVE_MAX} images, sequential for video frames, spatial "
                          f"(from EXIF GPS) for larger sets, else sequential in name order (capture order); "
                          f"vocabulary-tree matching is not offered (it needs a vocabulary file)")
    sfm.add_argument("--camera_model", choices=sorted(COLMAP_MODELS), default="SIMPLE_RADIAL",
                     help="COLMAP camera model to calibrate; one camera per image size (and EXIF focal length)")
    sfm.add_argument("--max_image_size", type=int, default=3200,
                     help="extract features on images shrunk to this long side (poses stay in full-size pixels)")
    sfm.add_argument("--num_threads", type=int, default=-1, help="CPU threads for SfM (-1: all cores)")
    sfm.add_argument("--focal_px", type=float, default=None,
                     help="known focal length in pixels of the full-size images; held fixed (see --refine_focal)")
    sfm.add_argument("--sensor_width_mm", type=float, default=None,
                     help="sensor width in mm: focal length from the EXIF focal length (mm), held fixed; use it "
                          "for flat scenes seen from above, where self-calibration drifts (DJI Phantom 3: 6.17)")
    sfm.add_argument("--refine_focal", action="store_true",
                     help="refine a --focal_px / --sensor_width_mm focal length instead of holding it")
    sfm.add_argument("--no_gps", action="store_true",
                     help="ignore EXIF GPS (by default it aligns the model to local ENU metres, z up)")
    sfm.add_argument("--frames", type=int, default=None,
                     help=f"--video: number of frames to keep (default {DEFAULT_FRAMES} unless --fps)")
    sfm.add_argument("--fps", type=float, default=None, help="--video: frames to keep per second of video")
    sfm.add_argument("--frame_format", choices=FRAME_FORMATS, default="jpg", help="--video: frame files")
    return p


def sfm_options(args: argparse.Namespace) -> SfmOptions:
    require(args.num_threads == -1 or args.num_threads >= 1,
            f"--num_threads must be -1 or >= 1, got {args.num_threads}")
    return SfmOptions(matcher=args.matcher, camera_model=args.camera_model, max_image_size=args.max_image_size,
                      num_threads=args.num_threads, focal_px=args.focal_px, sensor_width_mm=args.sensor_width_mm,
                      refine_focal=args.refine_focal, use_gps=not args.no_gps, video=args.video is not None,
                      progress=not args.quiet)


def source_staging(args: argparse.Namespace):
    """SfM sources work inside the dataset's staging folder (held until the writer is done)."""
    return staged_folder(args.output) if args.images is not None or args.video is not None else nullcontext()


def read_sfm(args: argparse.Namespace, staging: Path):
    """Frames (video) and structure-from-motion in ``staging/colmap``; its notes printed."""
    require(args.image_dir is None, "--image_dir is for --colmap and --llff; --images names its folder")
    options = sfm_options(args)
    folder = staging / "colmap"
    extra = {}
    if args.video is not None:
        frames = extract_frames(args.video, folder / "images", args.frames, args.fps, args.frame_format,
                                progress=options.progress)
        for warning in frames.warnings:
            print(f"warning: {warning}")
        print(f"video: kept {len(frames.paths)} of {frames.num_decoded} frames (the sharpest of each window)")
        image_dir = folder / "images"
        extra = {"video": str(args.video.resolve()), "video_fps": frames.fps, "frames_decoded": frames.num_decoded,
                 "frame_indices": frames.indices}
        names = [p.name for p in frames.paths]
        require(len(names) >= MIN_IMAGES, f"--video {args.video}: only {len(names)} frames; structure-from-motion "
                                          f"needs at least {MIN_IMAGES}")
    else:
        require(args.frames is None and args.fps is None, "--frames / --fps are for --video")
        require(not args.output.resolve().is_relative_to(args.images.resolve()),
                f"--output {args.output} lies inside --images {args.images}; write the dataset elsewhere")
        image_dir, names = args.images, list_images(args.images)
    scene, result = sfm_scene(image_dir, folder, options, names, extra)
    print(f"SfM: {result.num_registered} of {len(names)} images registered, "
          f"{result.reconstruction.num_points3D()} points, {sum(result.seconds.values()):.0f} s "
          f"(features {result.seconds['features']:.0f}, matching {result.seconds['matching']:.0f}, "
          f"mapping {result.seconds['mapping']:.0f}); {result.matcher} matching ({result.matcher_reason})")
    for note in result.notes:
        print(f"note: {note}")
    return scene


def read_source(args: argparse.Namespace, staging=None):
    """The :class:`SourceScene` of whichever source flag is set (SfM sources work in ``staging``)."""
    if args.images is not None or args.video is not None:
        return read_sfm(args, staging)
    if args.transforms is not None:
        require(args.image_dir is None, "--image_dir is for --colmap and --llff; transforms.json names its images")
        from mega_nerf.data.importers.transforms import read_transforms
        return read_transforms(args.transforms, args.skip_missing_images)
    if args.colmap is not None:
        from mega_nerf.data.importers.colmap import read_colmap_folder
        return read_colmap_folder(args.colmap, args.image_dir, args.skip_missing_images, args.allow_unregistered)
    from mega_nerf.data.importers.llff import read_llff
    return read_llff(args.llff, args.image_dir)


def options_from_args(args: argparse.Namespace) -> ImportOptions:
    require(args.scale_metres is None or args.scale_metres > 0,
            f"--scale_metres must be positive, got {args.scale_metres}")
    require(args.downscale >= 1, f"--downscale must be >= 1, got {args.downscale}")
    require(args.val_every >= 0, f"--val_every must be >= 0, got {args.val_every}")
    return ImportOptions(
        val_every=args.val_every, val_names=None if args.split_file is None else read_split_file(args.split_file),
        downscale=args.downscale, up=parse_up(args.up),
        metres_per_unit=args.scale_metres or (1.0 if args.metric else None),
        background=args.background, scene_kind=args.scene_kind, progress=not args.quiet)


def main(argv=None) -> None:
    args = parser().parse_args(argv)
    start = time.perf_counter()
    options = options_from_args(args)
    with source_staging(args) as staging:
        scene = read_source(args, staging)
        if scene.skipped:
            print(f"warning: left out {len(scene.skipped)} images: {'; '.join(scene.skipped[:3])}"
                  f"{'; ...' if len(scene.skipped) > 3 else ''}")
        s = write_dataset(scene, args.output, options, staging=staging)
    for note in s.notes:
        print(f"note: {note}")
    top, ground = s.plan.ray_altitude_range
    sizes = ", ".join(f"{w}x{h}" for w, h in s.sizes)
    print(f"wrote {s.output}: {s.num_train} train + {s.num_val} val images of {sizes}, {s.num_points} sparse "
          f"points in {time.perf_counter() - start:.1f} s")
    print(f"  up (source world) = [{', '.join(f'{v:.3f}' for v in s.up)}]; origin_drb = "
          f"[{', '.join(f'{v:.4g}' for v in s.origin_drb)}]; pose_scale_factor = {s.pose_scale_factor:.4g}")
    print(f"  {s.plan.kind} scene: suggested ray_altitude_range [{top:.4g}, {ground:.4g}] (metric DRB x; altitude "
          f"{-top:.4g} to {-ground:.4g}), near {s.plan.near:.4g}")
    print(f"  config: {s.output / 'config.yaml'} (pass it with --config_file)")
    # The picture of where the scene sits (scripts/plot_scene.py) and its check; the dataset is done either way.
    from mega_nerf.data.scene_plot import write_dataset_plot
    from mega_nerf.errors import UserError
    grid = (2, 2) if s.plan.kind == "aerial" else None
    try:
        png, _, report = write_dataset_plot(s.output, s.output / "config.yaml", s.output / "scene.png", grid)
    except UserError as e:
        print(f"warning: no scene picture: {e}")
        return
    for warning in report.warnings:
        print(f"warning: {warning}")
    print(f"  picture: {png} (cameras, points, altitude planes, foreground{', 2x2 cells' if grid else ''}: "
          f"check the scene sits where the pipeline thinks)")


def cli() -> None:
    """Console entry point."""
    cli_entry(main)()
