"""Structure-from-motion with pycolmap: a folder of photos (or video frames) to a posed :class:`SourceScene`.

Steps (all in a work folder; :func:`sfm_scene` keeps the model, its log and a summary)::

    import      one camera per image size (and EXIF focal length); EXIF GPS -> pose priors
    extract     SIFT (CPU here; pycolmap uses CUDA when its build has it), --max_image_size
    match       exhaustive (<= 100 images), sequential (video frames; large sets without GPS,
                in name order), spatial (large sets with GPS)
    map         incremental mapping; the largest model is kept
    align       to GPS when the images carry it: similarity fit of the camera centres to local
                ENU (x east, y north, z up, metres, origin at the first image); else nothing
                (the writer then takes up from the cameras, scale arbitrary)

The reconstruction then goes through :func:`~mega_nerf.data.importers.colmap.read_colmap_model`
like any COLMAP model, so undistortion, alignment and the writer are shared.

Vocabulary-tree matching (and sequential loop detection) need a vocabulary file that is not
available offline, so large sets use spatial matching from the GPS priors, or sequential
matching in name order (cameras number their photos in capture order).

Focal length: COLMAP starts from the EXIF 35 mm-equivalent focal length and refines it.  On
flat scenes seen from straight above, focal length and distance to the ground trade off and
self-calibration drifts (the brighton flight: 849 px from EXIF -> 1120 px, for a true ~936 px).
A known focal (``focal_px``, or ``sensor_width_mm`` with the EXIF focal length in mm) is held
fixed unless ``refine_focal``.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np
from tqdm import tqdm

from mega_nerf.data.format import IMAGE_SUFFIXES
from mega_nerf.data.importers.colmap import COLMAP_MODELS, read_colmap_model
from mega_nerf.data.importers.common import SourceScene, natural_key
from mega_nerf.errors import UserError, require

MATCHERS = ("auto", "exhaustive", "sequential", "spatial")
#: Image sets up to this size are matched exhaustively by ``auto``.
EXHAUSTIVE_MAX = 100
#: Structure-from-motion needs at least this many images, and must register this many.
MIN_IMAGES = 3
#: ... and at least this fraction of the images.
MIN_REGISTERED_FRACTION = 0.5
#: Sequential matching: neighbours in name order (quadratic overlap adds 2, 4, 8, ... further).
SEQUENTIAL_OVERLAP = 10
LARGE_SET_SEQUENTIAL_OVERLAP = 20
#: Spatial matching: each image with its nearest neighbours by GPS (east/north) within this distance.
SPATIAL_NEIGHBOURS = 50
SPATIAL_MAX_DISTANCE_M = 250.0
#: GPS alignment is used when the GPS positions spread at least this far (metres, RMS about
#: their centre) and fit the cameras within max(GPS_MAX_RESIDUAL_M, 10 % of that spread) (median).
GPS_MIN_SPREAD_M = 5.0
GPS_MAX_RESIDUAL_M = 3.0
#: After GPS alignment z = 0 is put at this percentile of the sparse points' heights (the ground
#: under most aerial captures), so altitudes read as heights above the ground.
GROUND_PERCENTILE = 10.0
#: Relative change of a self-calibrated focal length from its EXIF start that earns a warning.
FOCAL_DRIFT_WARNING = 0.1


@dataclass
class SfmOptions:
    """Choices for :func:`run_sfm` (the ``--images`` / ``--video`` flags)."""

    matcher: str = "auto"
    camera_model: str = "SIMPLE_RADIAL"
    max_image_size: int = 3200
    num_threads: int = -1  # -1: all cores
    focal_px: Optional[float] = None  # known focal length (pixels, full image size)
    sensor_width_mm: Optional[float] = None  # focal = EXIF focal (mm) / sensor width * image width
    refine_focal: bool = False  # refine a given focal length in bundle adjustment
    use_gps: bool = True
    video: bool = False  # the images are video frames, in time order by name
    progress: bool = True


@dataclass
class GpsAlignment:
    """How the model was put into local ENU metres from the EXIF GPS of ``num_images`` images."""

    origin_wgs84: List[float]  # lat, lon, alt of the ENU origin (alt: ground level, see GROUND_PERCENTILE)
    num_images: int
    scale: float  # metres per SfM unit
    residual_median_m: float
    residual_max_m: float
    spread_m: float


@dataclass
class SfmResult:
    reconstruction: object  # pycolmap.Reconstruction, GPS-aligned when ``gps`` is set
    image_dir: Path
    names: List[str]  # every image given to SfM
    matcher: str
    matcher_reason: str
    num_models: int
    gps: Optional[GpsAlignment]
    seconds: Dict[str, float]
    notes: List[str] = field(default_factory=list)

    @property
    def num_registered(self) -> int:
        return self.reconstruction.num_reg_images()


def _pycolmap():
    try:
        import pycolmap
    except ImportError:
        raise UserError("structure-from-motion needs pycolmap: pip install pycolmap==4.2.1") from None
    return pycolmap


def list_images(image_dir: Path, flag: str = "--images") -> List[str]:
    """Image names (relative paths, natural order) under ``image_dir``; at least :data:`MIN_IMAGES`."""
    image_dir = Path(image_dir)
    require(image_dir.exists(), f"{flag} {image_dir}: folder does not exist")
    require(image_dir.is_dir(), f"{flag} {image_dir}: not a folder; pass the folder that holds the images")
    names = sorted((p.relative_to(image_dir).as_posix() for p in image_dir.rglob("*")
                    if p.is_file() and p.suffix in IMAGE_SUFFIXES), key=natural_key)
    require(names, f"{flag} {image_dir}: holds no images "
                   f"({', '.join(sorted(set(s.lower() for s in IMAGE_SUFFIXES)))})")
    require(len(names) >= MIN_IMAGES, f"{flag} {image_dir}: {len(names)} image{'s' if len(names) != 1 else ''}; "
                                      f"structure-from-motion needs at least {MIN_IMAGES} overlapping views")
    return names


def probe_image(path: Path) -> Tuple[int, int, Optional[float]]:
    """``(width, height, EXIF focal length in mm or None)`` from the file header.

    The size is the stored one: like COLMAP and the writer, we do not apply EXIF orientation.
    """
    try:
        from PIL import Image
    except ImportError:  # Pillow comes with tensorboard; without it, decode the image
        import cv2
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        require(image is not None, f"{path}: cannot read this image (missing or corrupt)")
        return image.shape[1], image.shape[0], None
    try:
        with Image.open(path) as image:
            exif = image.getexif()
            width, height = image.size
            focal = exif.get_ifd(0x8769).get(0x920A)  # FocalLength
    except (OSError, SyntaxError, ValueError) as e:
        raise UserError(f"{path}: cannot read this image ({e})") from None
    try:
        focal = float(focal) if focal is not None else None
    except (TypeError, ValueError, ZeroDivisionError):
        focal = None
    return width, height, focal if focal and math.isfinite(focal) and focal > 0 else None


def choose_matcher(requested: str, count: int, has_gps: bool, video: bool) -> Tuple[str, str]:
    """``(matcher, why)`` for ``count`` images."""
    require(requested in MATCHERS, f"--matcher must be one of {', '.join(MATCHERS)}, got {requested}")
    if requested == "spatial":
        require(has_gps, "--matcher spatial needs GPS positions in the images' EXIF; none have them")
    if requested != "auto":
        return requested, "chosen with --matcher"
    if video:
        return "sequential", "video frames"
    if count <= EXHAUSTIVE_MAX:
        return "exhaustive", f"{count} <= {EXHAUSTIVE_MAX} images"
    if has_gps:
        return "spatial", f"{count} images with GPS"
    return "sequential", (f"{count} images without GPS: neighbours in name order (vocabulary-tree "
                          f"matching needs a vocabulary file; use --matcher exhaustive for unordered photos)")


@contextlib.contextmanager
def colmap_log(path: Path) -> Iterator[None]:
    """Send COLMAP's (glog) messages to ``path`` instead of the terminal (our own errors say what failed)."""
    pycolmap = _pycolmap()
    log = pycolmap.logging
    previous = log.alsologtostderr, log.logtostderr, log.stderrthreshold
    base = str(path) + "."
    log.alsologtostderr, log.logtostderr, log.stderrthreshold = False, False, 3  # FATAL only
    log.set_log_destination(log.INFO, base)
    for level in (log.WARNING, log.ERROR):
        log.set_log_destination(level, "")
    try:
        yield
    finally:
        log.set_log_destination(log.INFO, "")  # closes the file
        log.alsologtostderr, log.logtostderr, log.stderrthreshold = previous
        parts = sorted(path.parent.glob(path.name + ".*"))
        if parts:
            with open(path, "ab") as out:
                for part in parts:
                    out.write(part.read_bytes())
                    part.unlink()


@contextlib.contextmanager
def _step(name: str) -> Iterator[None]:
    """pycolmap reports failed checks as RuntimeError / ValueError: make them one line."""
    try:
        yield
    except (RuntimeError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"structure-from-motion failed during {name}: {first}") from None


def _gps_priors(database) -> Dict[str, np.ndarray]:
    """``{image name: (lat, lon, alt)}`` for images with EXIF GPS."""
    pycolmap = _pycolmap()
    names = {image.image_id: image.name for image in database.read_all_images()}
    priors = {}
    for prior in database.read_all_pose_priors():
        position = np.asarray(prior.position, dtype=np.float64)
        if prior.coordinate_system == pycolmap.PosePriorCoordinateSystem.WGS84 and np.isfinite(position).all() \
                and prior.corr_data_id.id in names and not (position[0] == 0 and position[1] == 0):
            priors[names[prior.corr_data_id.id]] = position
    return priors


def _import_images(database_path: Path, image_dir: Path, names: List[str], options: SfmOptions) -> List[str]:
    """Create one camera per (size, EXIF focal) group and the images; set known focal lengths.

    Returns notes for the user.
    """
    pycolmap = _pycolmap()
    groups: Dict[tuple, List[str]] = {}
    focal_mm = {}
    for name in names:
        w, h, f = probe_image(image_dir / name)
        focal_mm[name] = f
        groups.setdefault((w, h, None if f is None else round(f, 2)), []).append(name)
    sizes = {(w, h) for w, h, _ in groups}
    require(options.focal_px is None or len(sizes) == 1,
            f"--focal_px needs images of one size, these have {len(sizes)}; use --sensor_width_mm")
    reader = pycolmap.ImageReaderOptions()
    reader.camera_model = options.camera_model
    for group in groups.values():
        pycolmap.import_images(str(database_path), str(image_dir), pycolmap.CameraMode.SINGLE, group, reader)
    notes = []
    if options.focal_px is None and options.sensor_width_mm is None:
        return notes
    database = pycolmap.Database.open(str(database_path))
    try:
        first_image = {}
        for image in database.read_all_images():
            first_image.setdefault(image.camera_id, image.name)
        for camera in database.read_all_cameras():
            if options.focal_px is not None:
                focal = options.focal_px
            else:
                mm = focal_mm.get(first_image.get(camera.camera_id))
                require(mm is not None, f"{image_dir / first_image[camera.camera_id]}: no EXIF focal length (mm) "
                                        f"for --sensor_width_mm; pass --focal_px instead")
                focal = mm / options.sensor_width_mm * camera.width
                notes.append(f"focal length {focal:.1f} px for the {camera.width}x{camera.height} images "
                             f"({mm:g} mm EXIF focal length on a {options.sensor_width_mm:g} mm wide sensor)")
            params = np.asarray(camera.params, dtype=np.float64)
            params[list(camera.focal_length_idxs())] = focal
            camera.params = params
            camera.has_prior_focal_length = True
            database.update_camera(camera)
    finally:
        database.close()
    return notes


def _extract(database_path: Path, image_dir: Path, names: List[str], options: SfmOptions) -> None:
    pycolmap = _pycolmap()
    extraction = pycolmap.FeatureExtractionOptions()
    extraction.max_image_size = options.max_image_size
    extraction.num_threads = options.num_threads
    threads = options.num_threads if options.num_threads > 0 else (os.cpu_count() or 1)
    chunk = max(4 * threads, math.ceil(len(names) / 20))  # calls are cheap; a few per progress step
    with tqdm(total=len(names), desc="SfM features", unit="img", disable=not options.progress) as bar:
        for start in range(0, len(names), chunk):
            part = names[start:start + chunk]
            pycolmap.extract_features(str(database_path), str(image_dir), image_names=part,
                                      extraction_options=extraction)
            bar.update(len(part))


def _match(database_path: Path, matcher: str, count: int, options: SfmOptions) -> None:
    pycolmap = _pycolmap()
    matching = pycolmap.FeatureMatchingOptions()
    matching.num_threads = options.num_threads
    path = str(database_path)
    if matcher == "exhaustive":
        pycolmap.match_exhaustive(path, matching_options=matching)
    elif matcher == "sequential":
        pairing = pycolmap.SequentialPairingOptions()
        pairing.overlap = SEQUENTIAL_OVERLAP if options.video or count <= EXHAUSTIVE_MAX \
            else LARGE_SET_SEQUENTIAL_OVERLAP
        pairing.quadratic_overlap = True
        pairing.loop_detection = False  # needs a vocabulary tree file
        pycolmap.match_sequential(path, matching_options=matching, pairing_options=pairing)
    else:
        pairing = pycolmap.SpatialPairingOptions()
        pairing.num_threads = options.num_threads
        pairing.max_num_neighbors = SPATIAL_NEIGHBOURS  # the nearest ones by GPS, horizontally
        pairing.max_distance = SPATIAL_MAX_DISTANCE_M
        pycolmap.match_spatial(path, matching_options=matching, pairing_options=pairing)


def _map(database_path: Path, image_dir: Path, output: Path, count: int, options: SfmOptions,
         fixed_focal: bool) -> list:
    """Reconstructions, largest first."""
    pycolmap = _pycolmap()
    mapping = pycolmap.IncrementalPipelineOptions()
    mapping.num_threads = options.num_threads
    mapping.random_seed = 0
    mapping.min_model_size = MIN_IMAGES
    if fixed_focal:
        mapping.ba_refine_focal_length = False
        mapping.mapper.abs_pose_refine_focal_length = False
    output.mkdir(parents=True, exist_ok=True)
    with tqdm(total=count, desc="SfM mapping", unit="img", disable=not options.progress) as bar:
        def registered():
            if bar.n < bar.total:
                bar.update()
        models = pycolmap.incremental_mapping(str(database_path), str(image_dir), str(output), mapping,
                                              initial_image_pair_callback=lambda: bar.update(min(2, bar.total - bar.n)),
                                              next_image_callback=registered)
    return sorted(models.values(), key=lambda r: r.num_reg_images(), reverse=True)


def align_to_gps(reconstruction, priors: Dict[str, np.ndarray]) -> Tuple[Optional[GpsAlignment], str]:
    """Transform ``reconstruction`` in place to local ENU metres from GPS priors, when they are usable.

    Returns ``(alignment or None, note for the user)``.
    """
    pycolmap = _pycolmap()
    images = sorted((image for image in reconstruction.images.values()
                     if image.has_pose and image.name in priors), key=lambda i: natural_key(i.name))
    if len(images) < MIN_IMAGES:
        return None, (f"GPS: only {len(images)} registered images carry EXIF GPS; up taken from the cameras, "
                      f"scale arbitrary" if priors else "no GPS in the images' EXIF: up taken from the cameras, "
                                                       "scale arbitrary (pass --scale_metres if you know it)")
    origin = priors[images[0].name]
    wgs84 = np.stack([priors[image.name] for image in images])
    enu = np.asarray(pycolmap.GPSTransform().ellipsoid_to_enu(wgs84, *origin), dtype=np.float64)
    centres = np.stack([np.asarray(image.projection_center(), dtype=np.float64) for image in images])
    centred = enu - enu.mean(0)
    spread = float(np.sqrt((centred ** 2).sum(1).mean()))
    singular = np.linalg.svd(centred, compute_uv=False)
    if spread < GPS_MIN_SPREAD_M or singular[1] < 0.05 * singular[0]:
        why = f"spread only {spread:.1f} m" if spread < GPS_MIN_SPREAD_M else "along one line"
        return None, f"GPS not used to align the model (positions {why}); up taken from the cameras, scale arbitrary"
    ransac = pycolmap.RANSACOptions()
    ransac.max_error = max(GPS_MAX_RESIDUAL_M, 0.1 * spread)
    ransac.random_seed = 0
    sim3 = pycolmap.estimate_sim3d_robust(centres, enu, ransac)
    if sim3 is None:
        return None, "GPS and camera positions do not fit one similarity; up taken from the cameras, scale arbitrary"
    if isinstance(sim3, dict):  # older pycolmap returned {'tgt_from_src': ..., 'inlier_mask': ...}
        sim3 = sim3["tgt_from_src"]
    matrix = np.asarray(sim3.matrix(), dtype=np.float64)
    residual = np.linalg.norm(centres @ matrix[:, :3].T + matrix[:, 3] - enu, axis=1)
    median = float(np.median(residual))
    if median > max(GPS_MAX_RESIDUAL_M, 0.1 * spread):
        return None, (f"GPS fits the cameras poorly (median {median:.1f} m over {spread:.1f} m spread); "
                      f"up taken from the cameras, scale arbitrary")
    reconstruction.transform(sim3)
    ground = 0.0
    if reconstruction.num_points3D() > 0:
        heights = np.array([point.xyz[2] for point in reconstruction.points3D.values()])
        ground = float(np.percentile(heights, GROUND_PERCENTILE))
        reconstruction.transform(pycolmap.Sim3d(1.0, pycolmap.Rotation3d(np.eye(3)), np.array([0.0, 0.0, -ground])))
    origin = [float(origin[0]), float(origin[1]), float(origin[2] + ground)]
    alignment = GpsAlignment(origin, len(images), float(sim3.scale), median, float(residual.max()), spread)
    return alignment, (f"aligned to EXIF GPS of {len(images)} images: local ENU metres, z up, origin "
                       f"{origin[0]:.7f}, {origin[1]:.7f} at ground level (GPS altitude {origin[2]:.1f} m, "
                       f"{-ground:.1f} m below the first camera); residual median {median:.2f} m, "
                       f"max {residual.max():.2f} m")


def run_sfm(image_dir: Path, work: Path, options: Optional[SfmOptions] = None,
            names: Optional[List[str]] = None) -> SfmResult:
    """Structure-from-motion on ``names`` (default: every image) under ``image_dir``.

    ``work`` holds the database (``database.db``), the mapper's models and ``colmap.log``.

    Raises:
        UserError: too few images, or too few registered.
    """
    options = options or SfmOptions()
    pycolmap = _pycolmap()
    require(options.matcher in MATCHERS, f"--matcher must be one of {', '.join(MATCHERS)}")
    require(options.camera_model in COLMAP_MODELS,
            f"--camera_model {options.camera_model}: use one of {', '.join(COLMAP_MODELS)}")
    require(options.max_image_size >= 64, f"--max_image_size must be >= 64, got {options.max_image_size}")
    require(options.focal_px is None or options.focal_px > 0, f"--focal_px must be positive, got {options.focal_px}")
    require(options.sensor_width_mm is None or options.sensor_width_mm > 0,
            f"--sensor_width_mm must be positive, got {options.sensor_width_mm}")
    require(options.focal_px is None or options.sensor_width_mm is None,
            "pass --focal_px or --sensor_width_mm, not both")
    image_dir, work = Path(image_dir), Path(work)
    names = names if names is not None else list_images(image_dir)
    require(len(names) >= MIN_IMAGES, f"{image_dir}: {len(names)} images; structure-from-motion needs at least "
                                      f"{MIN_IMAGES} overlapping views")
    work.mkdir(parents=True, exist_ok=True)
    database_path = work / "database.db"
    seconds, notes = {}, []
    fixed_focal = (options.focal_px is not None or options.sensor_width_mm is not None) and not options.refine_focal
    with colmap_log(work / "colmap.log"):
        tick = time.perf_counter()
        with _step("feature extraction"):
            pycolmap.Database.open(str(database_path)).close()
            notes += _import_images(database_path, image_dir, names, options)
            database = pycolmap.Database.open(str(database_path))
            exif_focals = {c.camera_id: c.mean_focal_length() for c in database.read_all_cameras()
                           if c.has_prior_focal_length}
            priors = _gps_priors(database) if options.use_gps else {}
            database.close()
            _extract(database_path, image_dir, names, options)
        seconds["features"] = time.perf_counter() - tick

        tick = time.perf_counter()
        matcher, why = choose_matcher(options.matcher, len(names), bool(priors), options.video)
        if options.progress:
            print(f"SfM matching: {matcher} ({why})", flush=True)
        with _step("matching"):
            _match(database_path, matcher, len(names), options)
        seconds["matching"] = time.perf_counter() - tick

        tick = time.perf_counter()
        with _step("mapping"):
            models = _map(database_path, image_dir, work / "models", len(names), options, fixed_focal)
        seconds["mapping"] = time.perf_counter() - tick

    registered = models[0].num_reg_images() if models else 0
    require(registered >= MIN_IMAGES and registered >= MIN_REGISTERED_FRACTION * len(names),
            f"structure-from-motion registered only {registered} of {len(names)} images (needs at least "
            f"{MIN_IMAGES} and half){f'; it split into {len(models)} models' if len(models) > 1 else ''}: the views "
            f"overlap too little or lack texture; try more images or frames, --matcher exhaustive, or a known "
            f"focal length (--focal_px / --sensor_width_mm)")
    best = models[0]
    if len(models) > 1:
        notes.append(f"SfM made {len(models)} separate models; keeping the largest ({registered} images)")
    for camera in best.cameras.values():
        start = exif_focals.get(camera.camera_id)
        if not fixed_focal and start and abs(camera.mean_focal_length() / start - 1) > FOCAL_DRIFT_WARNING:
            notes.append(f"self-calibration moved the focal length from its prior {start:.1f} px (EXIF) to "
                         f"{camera.mean_focal_length():.1f} px; on flat scenes seen from above this is the "
                         f"focal/depth ambiguity: pass --sensor_width_mm or --focal_px if the lens is known")
    gps, note = align_to_gps(best, priors) if options.use_gps else (None, "GPS not used (--no_gps)")
    notes.append(note)
    return SfmResult(best, image_dir, names, matcher, why, len(models), gps, seconds, notes)


def write_sfm_record(result: SfmResult, folder: Path, options: SfmOptions, extra: Optional[dict] = None) -> None:
    """``folder/sparse/0`` (the model, binary) and ``folder/sfm.json`` (what was done)."""
    sparse = Path(folder) / "sparse" / "0"
    sparse.mkdir(parents=True, exist_ok=True)
    result.reconstruction.write(str(sparse))
    registered = {image.name for image in result.reconstruction.images.values() if image.has_pose}
    cameras = {str(c.camera_id): {"model": c.model.name, "width": c.width, "height": c.height,
                                  "params": [float(v) for v in c.params]}
               for c in result.reconstruction.cameras.values()}
    image_dir = result.image_dir.resolve()
    inside = image_dir.is_relative_to(Path(folder).resolve())  # video frames kept next to the model
    record = {
        "image_dir": image_dir.relative_to(Path(folder).resolve()).as_posix() if inside else str(image_dir), "num_images": len(result.names),
        "num_registered": len(registered), "unregistered": [n for n in result.names if n not in registered],
        "num_points": result.reconstruction.num_points3D(),
        "mean_reprojection_error_px": float(result.reconstruction.compute_mean_reprojection_error()),
        "matcher": result.matcher, "matcher_reason": result.matcher_reason, "num_models": result.num_models,
        "cameras": cameras, "gps": None if result.gps is None else asdict(result.gps),
        "world": "local ENU metres (x east, y north, z up)" if result.gps else "arbitrary SfM frame",
        "seconds": result.seconds, "options": asdict(options), "notes": result.notes, **(extra or {}),
    }
    (Path(folder) / "sfm.json").write_text(json.dumps(record, indent=2) + "\n")


def sfm_scene(image_dir: Path, folder: Path, options: Optional[SfmOptions] = None,
              names: Optional[List[str]] = None, extra: Optional[dict] = None) -> Tuple[SourceScene, SfmResult]:
    """Run SfM with its work files in ``folder`` (a folder of the dataset being staged), keep
    ``folder/sparse/0``, ``folder/sfm.json`` and ``folder/colmap.log``, drop the database, and
    return the scene for :func:`~mega_nerf.data.importers.writer.write_dataset`.

    With GPS the scene's world is local ENU metres (``up = +z``, ``metres_per_unit = 1``).
    """
    options = options or SfmOptions()
    folder = Path(folder)
    work = folder / "work"
    try:
        result = run_sfm(image_dir, work, options, names)
        write_sfm_record(result, folder, options, extra)
    finally:
        if (work / "colmap.log").is_file():
            shutil.move(str(work / "colmap.log"), str(folder / "colmap.log"))
        shutil.rmtree(work, ignore_errors=True)
    scene = read_colmap_model(result.reconstruction, image_dir, source=f"SfM of {image_dir}",
                              allow_unregistered=True)
    # Only the images given to SfM count (read_colmap_model lists every image file in the folder).
    given = set(result.names)
    scene.skipped = [s for s in scene.skipped if s.split(": ")[0] in given]
    if result.gps is not None:
        scene.up, scene.metres_per_unit = np.array([0.0, 0.0, 1.0]), 1.0
    return scene, result


# ----------------------------------------------------------------------------------------------
# Checking poses against known ones (tests, bench/sfm_agreement.py)


def umeyama(src: np.ndarray, dst: np.ndarray) -> Tuple[float, np.ndarray, np.ndarray]:
    """Least-squares similarity ``dst ~ scale * R @ src + t`` (Umeyama 1991).

    Args:
        src, dst: (N, 3), N >= 3 and not collinear.
    Returns:
        ``(scale, R (3, 3), t (3,))``.
    """
    src, dst = np.asarray(src, dtype=np.float64), np.asarray(dst, dtype=np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    a, b = src - mu_s, dst - mu_d
    U, S, Vt = np.linalg.svd(b.T @ a / len(src))
    D = np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt))])
    R = U @ D @ Vt
    scale = float(np.trace(np.diag(S) @ D) / (a ** 2).sum(1).mean())
    return scale, R, mu_d - scale * R @ mu_s


def pose_agreement(ours: Dict[str, np.ndarray], reference: Dict[str, np.ndarray]) -> dict:
    """Rotation and position errors of ``ours`` against ``reference`` after a similarity fit of the
    camera centres (Umeyama).

    Args:
        ours, reference: ``{image name: (3, 4) camera-to-world}`` with OpenCV axes; images of both.
    Returns:
        ``{'num_images', 'scale' (reference units per unit of ours), 'rotation_deg': {median, max},
        'position': {median, max} (reference units), 'per_image': {name: [rot deg, pos]}}``.
    """
    names = sorted(set(ours) & set(reference), key=natural_key)
    require(len(names) >= 3, f"pose comparison needs 3 common images, got {len(names)}")
    a = np.stack([ours[n] for n in names]).astype(np.float64)
    b = np.stack([reference[n] for n in names]).astype(np.float64)
    scale, R, t = umeyama(a[:, :, 3], b[:, :, 3])
    position = np.linalg.norm(scale * a[:, :, 3] @ R.T + t - b[:, :, 3], axis=1)
    relative = np.einsum("nji,njk->nik", b[:, :, :3], R @ a[:, :, :3])  # R_ref^T R R_ours
    # Angle of each relative rotation from atan2(sin, cos): arccos of the trace alone loses half
    # the digits near 0 (1e-6 degree noise for identical poses).
    cos = (np.trace(relative, axis1=1, axis2=2) - 1) / 2
    axis = np.stack([relative[:, 2, 1] - relative[:, 1, 2], relative[:, 0, 2] - relative[:, 2, 0],
                     relative[:, 1, 0] - relative[:, 0, 1]], 1)
    rotation = np.degrees(np.arctan2(np.linalg.norm(axis, axis=1) / 2, cos))
    return {"num_images": len(names), "scale": scale,
            "rotation_deg": {"median": float(np.median(rotation)), "max": float(rotation.max())},
            "position": {"median": float(np.median(position)), "max": float(position.max())},
            "per_image": {n: [float(r), float(p)] for n, r, p in zip(names, rotation, position)}}


def reconstruction_poses(reconstruction) -> Dict[str, np.ndarray]:
    """``{image name: (3, 4) OpenCV camera-to-world}`` of the registered images of a pycolmap model."""
    poses = {}
    for image in reconstruction.images.values():
        if image.has_pose:
            w2c = np.asarray(image.cam_from_world().matrix(), dtype=np.float64)
            rotation = w2c[:, :3].T
            poses[image.name] = np.concatenate([rotation, -rotation @ w2c[:, 3:]], axis=1)
    return poses
