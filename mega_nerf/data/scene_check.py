"""Does the scene sit where the pipeline thinks?  Checks behind ``scripts/plot_scene.py``.

Everything the pipeline assumes about a dataset's geometry (the altitude slab of
``ray_altitude_range``, the foreground ellipsoid or box, the cell grid) is gathered here from the
same code the stages use (:func:`mega_nerf.geometry.bounds.scene_bounds_from_args`,
:func:`mega_nerf.partition.centroids.grid_centroids`, ``MASKS/params.pt``) and compared with where
the cameras and the scene's content (``points3d.pt``, else ground-truth depth maps) really are.
The result is a JSON-able summary plus warnings a user must act on; :mod:`mega_nerf.data.scene_plot`
draws the same data.  No plotting library is needed here, so tests can assert the checks directly.

Frames: DRB (x = down, y = right, z = back), altitude = -x.  Internally everything is normalised
(``(metric - origin_drb) / pose_scale_factor``); reports are metric.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

import numpy as np
import torch

from mega_nerf.config import add_scene_options, new_parser
from mega_nerf.data.format import PosedDataset, _load_pt, load_dataset
from mega_nerf.errors import require
from mega_nerf.geometry.bounds import SceneBounds, ray_bounds, scene_bounds_from_args
from mega_nerf.geometry.rays import camera_directions, world_rays
from mega_nerf.partition.centroids import grid_centroids
from mega_nerf.partition.masks import ray_cell_membership

#: A warning fires when more than this fraction of the points lies on the wrong side of a bound.
OUTSIDE_FRACTION = 0.01
#: Points outside the foreground ellipsoid beyond the cameras' horizontal extent are not lost (the
#: background model explains them, more coarsely): above this fraction they get a note.
ELLIPSOID_OUTSIDE_FRACTION = 0.05
#: Altitude percentiles reported for the points.
PERCENTILES = (0.1, 1, 5, 50, 95, 99, 99.9)
#: v_drb = ENU_TO_DRB @ v_enu (down = -up, right = east, back = -north), as the importers and the
#: synthetic city map a z-up east-north-up world.
ENU_TO_DRB = np.array([[0.0, 0.0, -1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


def add_check_options(p: argparse.ArgumentParser) -> None:
    """Options of the scene picture and check (besides the scene group of :mod:`mega_nerf.config`)."""
    g = p.add_argument_group("scene check")
    g.add_argument("--dataset_path", type=str, required=True, help="Mega-NeRF layout dataset")
    g.add_argument("--mask_path", type=str, default=None,
                   help="cluster-mask folder: its params.pt gives the cells (centroids, pixels per cell)")
    g.add_argument("--grid_dim", nargs=2, type=int, default=None, metavar=("GX", "GY"),
                   help="without --mask_path: show the cells create_cluster_masks.py would make with this grid")
    g.add_argument("--max_points", type=int, default=20000, help="points drawn (all are checked)")


def check_parser() -> argparse.ArgumentParser:
    p = new_parser("Check where the cameras, the scene's points, the altitude planes, the foreground "
                   "ellipsoid and the cells lie.")
    add_scene_options(p)
    add_check_options(p)
    return p


@dataclass
class FrameInfo:
    """How to name the axes: metres or not, and whether DRB y / -z are east / north."""

    metric: Optional[bool]  # None: unknown (Mega-NeRF datasets are metric by convention)
    enu: bool
    note: str = ""

    @property
    def unit(self) -> str:
        return "units" if self.metric is False else "m"


@dataclass
class SceneInputs:
    """Everything the check and the picture look at.  Positions are normalised DRB."""

    dataset: PosedDataset
    bounds: SceneBounds
    frame: FrameInfo
    points: Optional[torch.Tensor] = None  # (P, 3)
    point_colors: Optional[torch.Tensor] = None  # (P, 3) uint8
    points_source: str = "none"
    centroids: Optional[torch.Tensor] = None  # (K, 3)
    cells_source: str = ""
    grid_dim: Optional[list] = None
    cell_pixel_counts: Optional[torch.Tensor] = None  # (K,) from params.pt
    cameras_per_cell: Optional[torch.Tensor] = None  # (K,) estimated from a coarse pixel grid
    params_mismatch: List[str] = field(default_factory=list)
    boundary_margin: float = 1.15
    ellipse_bounds: bool = True  # False: --no_ellipse_bounds, a unit sphere at the origin
    scene_kind: Optional[str] = None  # from import.json

    # Metric conversions (DRB, absolute as in the config file) ------------------------------
    def metric(self, normalised: torch.Tensor) -> np.ndarray:
        p = np.asarray(normalised, dtype=np.float64)
        return p * self.dataset.pose_scale_factor + self.dataset.origin_drb.double().numpy()

    def altitude(self, x_normalised) -> np.ndarray:
        """Metric altitude (= -metric DRB x) of normalised x values."""
        x = np.asarray(x_normalised, dtype=np.float64)
        return -(x * self.dataset.pose_scale_factor + float(self.dataset.origin_drb[0]))


@dataclass
class SceneReport:
    summary: dict
    warnings: List[str]
    notes: List[str] = field(default_factory=list)  # worth knowing, not necessarily wrong

    def text(self) -> str:
        return format_report(self)


def frame_info(dataset_path: Path) -> FrameInfo:
    """Units and axis names from ``import.json`` (prepare_dataset.py) or ``scene.json`` (synthetic city)."""
    dataset_path = Path(dataset_path)
    info = _read_json(dataset_path / "import.json")
    if info is not None:
        metres = info.get("metres_per_unit")
        explicit = str(info.get("world_frame", info.get("source_frame", ""))).lower()
        enu = explicit == "enu" or bool(info.get("enu", False))
        if not enu and metres and "world_to_drb" in info:
            rotation = np.asarray(info["world_to_drb"], dtype=np.float64) / float(metres)
            enu = rotation.shape == (3, 3) and np.allclose(rotation, ENU_TO_DRB, atol=1e-6)
        note = "source world z-up in metres, taken as ENU (x east, y north)" if enu else ""
        return FrameInfo(metres is not None, enu, note)
    scene = _read_json(dataset_path / "scene.json")
    if scene is not None and str(scene.get("units", "")).startswith("ENU"):
        return FrameInfo(True, True, "synthetic city: ENU metres")
    return FrameInfo(None, False, "no import.json: Mega-NeRF's metric DRB assumed")


def _read_json(path: Path) -> Optional[dict]:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def load_points(dataset_path: Path) -> tuple:
    """``(xyz (P, 3) normalised or None, rgb (P, 3) uint8 or None)`` from ``points3d.pt``."""
    path = Path(dataset_path) / "points3d.pt"
    if not path.is_file():
        return None, None
    data = _load_pt(path)
    require(isinstance(data, dict) and "xyz" in data, f"{path}: needs a key 'xyz' with (P, 3) points")
    xyz = torch.as_tensor(data["xyz"]).float().reshape(-1, 3)
    rgb = data.get("rgb")
    if rgb is not None:
        rgb = torch.as_tensor(rgb).to(torch.uint8).reshape(-1, 3)
        rgb = rgb if len(rgb) == len(xyz) else None
    keep = torch.isfinite(xyz).all(-1)
    return xyz[keep], None if rgb is None else rgb[keep]


def depth_points(dataset: PosedDataset, max_images: int = 40, per_image: int = 600, seed: int = 0) -> tuple:
    """Scene samples from ground-truth depth maps (synthetic datasets), when there is no ``points3d.pt``.

    Returns:
        ``(xyz (P, 3) normalised, rgb (P, 3) uint8)`` or ``(None, None)`` without depth maps.
    """
    items = [m for m in dataset.items if m.depth_path is not None]
    if not items:
        return None, None
    items = [items[i] for i in np.linspace(0, len(items) - 1, min(max_images, len(items))).round().astype(int)]
    rng = np.random.default_rng(seed)
    xyz, rgb = [], []
    for item in items:
        depth = item.load_depth().reshape(-1)
        pick = torch.from_numpy(rng.choice(len(depth), min(per_image, len(depth)), replace=False))
        i, j = (pick % item.W).float(), torch.div(pick, item.W, rounding_mode="floor").float()
        o, d = world_rays(item.c2w, camera_directions(i, j, item.intrinsics, True))
        t = depth[pick]
        hit = torch.isfinite(t)
        xyz.append(o[hit] + d[hit] * (t[hit] / dataset.pose_scale_factor)[:, None])
        rgb.append(item.load_image().reshape(-1, 3)[pick][hit])
    return torch.cat(xyz), torch.cat(rgb)


def cameras_per_cell(dataset: PosedDataset, bounds: SceneBounds, centroids: torch.Tensor, boundary_margin: float,
                     cluster_2d: bool, pixels_per_side: int = 8, ray_samples: int = 64) -> torch.Tensor:
    """(K,) how many images have a ray through each cell, on a coarse pixel grid.

    The same test as ``create_cluster_masks.py`` (its near/far, box and plane clipping and
    :func:`ray_cell_membership`), on ``pixels_per_side``\\ :sup:`2` rays per image instead of all.
    """
    counts = torch.zeros(len(centroids), dtype=torch.long)
    u = (torch.arange(pixels_per_side, dtype=torch.float32) + 0.5) / pixels_per_side
    for item in dataset.items:
        i, j = torch.meshgrid(u * item.W, u * item.H, indexing="xy")
        o, d = world_rays(item.c2w, camera_directions(i.reshape(-1), j.reshape(-1), item.intrinsics, False))
        near, far = ray_bounds(o, d, bounds, background=False)  # masks: far = 2 unless configured
        member = ray_cell_membership(o, d, near, far, centroids, boundary_margin, cluster_2d, ray_samples)
        counts += member.any(0).long()
    return counts


def _params_mismatch(params: dict, dataset: PosedDataset, bounds: SceneBounds) -> List[str]:
    """What training would refuse: params.pt made for another dataset or config."""
    problems = []
    origin = torch.as_tensor(params.get("origin_drb", dataset.origin_drb)).float()
    if not torch.allclose(origin, dataset.origin_drb.float(), rtol=1e-4, atol=1e-4):
        problems.append(f"origin_drb {origin.tolist()} (dataset: {dataset.origin_drb.tolist()})")
    scale = float(params.get("pose_scale_factor", dataset.pose_scale_factor))
    if abs(scale - dataset.pose_scale_factor) > 1e-5 * scale:
        problems.append(f"pose_scale_factor {scale:.6g} (dataset: {dataset.pose_scale_factor:.6g})")
    alt = params.get("ray_altitude_range")
    if alt is not None and bounds.altitude_range is not None:
        if not np.allclose(np.asarray(alt, dtype=float), bounds.altitude_range, atol=1e-5):
            metric = [a * dataset.pose_scale_factor + float(dataset.origin_drb[0]) for a in alt]
            problems.append(f"ray_altitude_range [{metric[0]:.4g}, {metric[1]:.4g}] (config: "
                            f"[{bounds.altitude_range[0] * dataset.pose_scale_factor + float(dataset.origin_drb[0]):.4g}, "
                            f"{bounds.altitude_range[1] * dataset.pose_scale_factor + float(dataset.origin_drb[0]):.4g}])")
    if "near" in params and abs(float(params["near"]) - bounds.near) > 1e-6:
        problems.append(f"near {float(params['near']) * dataset.pose_scale_factor:.4g} m "
                        f"(config: {bounds.near * dataset.pose_scale_factor:.4g} m)")
    return problems


def load_scene_inputs(args: argparse.Namespace) -> SceneInputs:
    """Load the dataset, the bounds every stage computes from ``args``, points and cells."""
    dataset_path = Path(args.dataset_path)
    require(dataset_path.is_dir(), f"--dataset_path {dataset_path}: dataset folder does not exist")
    dataset = load_dataset(dataset_path, args.train_every)
    bounds = scene_bounds_from_args(dataset, args, require_altitude_range=False)
    inputs = SceneInputs(dataset, bounds, frame_info(dataset_path), boundary_margin=args.boundary_margin,
                         ellipse_bounds=args.ellipse_bounds)
    imported = _read_json(dataset_path / "import.json")
    if imported is not None:
        inputs.scene_kind = imported.get("scene_kind")

    points, colors = load_points(dataset_path)
    if points is not None:
        inputs.points_source = f"points3d.pt ({len(points)} sparse points)"
    else:
        points, colors = depth_points(dataset)
        if points is not None:
            inputs.points_source = f"depth maps ({len(points)} samples of {min(40, len(dataset.items))} images)"
    inputs.points, inputs.point_colors = points, colors

    cluster_2d, margin = args.cluster_2d, args.boundary_margin
    if args.mask_path is not None:
        params_path = Path(args.mask_path) / "params.pt"
        require(params_path.is_file(), f"--mask_path {args.mask_path}: no params.pt there; pass the folder "
                                       f"create_cluster_masks.py wrote (--output)")
        params = _load_pt(params_path)
        require(isinstance(params, dict) and "centroids" in params, f"{params_path}: has no 'centroids'")
        inputs.centroids = torch.as_tensor(params["centroids"]).float().reshape(-1, 3)
        inputs.grid_dim = list(params.get("grid_dim", [])) or None
        inputs.cells_source = f"{params_path}"
        if "cell_pixel_counts" in params:
            inputs.cell_pixel_counts = torch.as_tensor(params["cell_pixel_counts"]).long()
        inputs.params_mismatch = _params_mismatch(params, dataset, bounds)
        cluster_2d = bool(params.get("cluster_2d", cluster_2d))
        margin = float(params.get("boundary_margin", margin))
    elif args.grid_dim is not None:
        gx, gy = args.grid_dim
        require(gx >= 1 and gy >= 1, f"--grid_dim {gx} {gy}: both values must be at least 1")
        inputs.centroids = grid_centroids(dataset.camera_positions, (gx, gy))
        inputs.grid_dim = [gx, gy]
        inputs.cells_source = f"--grid_dim {gx} {gy} (as create_cluster_masks.py places them)"
    inputs.boundary_margin = margin
    if inputs.centroids is not None and inputs.cell_pixel_counts is None:
        inputs.cameras_per_cell = cameras_per_cell(dataset, bounds, inputs.centroids, margin, cluster_2d)
    return inputs


def _fraction(mask: torch.Tensor) -> float:
    return float(mask.float().mean()) if mask.numel() else 0.0


def fmt(v: float, digits: int = 4) -> str:
    """A coordinate for people: 4 significant digits, and 0 below a thousandth (no -1.4e-05)."""
    return "0" if abs(v) < 1e-3 else f"{v:.{digits}g}"


def check_scene(inputs: SceneInputs, outside_fraction: float = OUTSIDE_FRACTION,
                ellipsoid_outside_fraction: float = ELLIPSOID_OUTSIDE_FRACTION) -> SceneReport:
    """Summary (metric) and warnings: cameras on the wrong side of the altitude slab, points above
    the top plane or below the ground plane, points outside the foreground, cells no camera sees."""
    ds, bounds, unit = inputs.dataset, inputs.bounds, inputs.frame.unit
    scale, origin = ds.pose_scale_factor, ds.origin_drb.double().numpy()
    cams = ds.camera_positions
    cam_alt = inputs.altitude(cams[:, 0])
    warnings: List[str] = []
    notes: List[str] = []
    summary = {
        "dataset": str(ds.path), "train_images": len(ds.train), "val_images": len(ds.val),
        "pose_scale_factor": scale, "origin_drb": [float(v) for v in origin],
        "units": "metres" if inputs.frame.metric is not False else "source units (not metres)",
        "axes": "east = DRB y, north = -DRB z" if inputs.frame.enu else "DRB y (right), DRB z (back)",
        "altitude": "altitude = -(metric DRB x)",
        "scene_kind": inputs.scene_kind,
        "camera_altitude": {"min": float(cam_alt.min()), "median": float(np.median(cam_alt)),
                            "max": float(cam_alt.max())},
    }

    alt = bounds.altitude_range
    if alt is not None:
        top_x, ground_x = (a * scale + origin[0] for a in alt)
        summary["ray_altitude_range"] = {"drb_x": [float(top_x), float(ground_x)],
                                         "altitude": [float(-top_x), float(-ground_x)]}
        cams_below = cams[:, 0] > alt[1]
        if bool(cams_below.any()):
            warnings.append(
                f"{int(cams_below.sum())} of {len(cams)} cameras are below the ground plane (camera altitude down to "
                f"{fmt(float(cam_alt.min()))} {unit}, ground at altitude {fmt(-ground_x)} {unit}): ray_altitude_range "
                f"is [top, ground] in metric DRB x = -altitude; it is on the wrong side of the cameras or has the "
                f"wrong sign")
    elif not bounds.box:
        warnings.append("ray_altitude_range is not set: rays are not clipped to the scene's altitudes and "
                        "create_cluster_masks.py refuses to run; add 'ray_altitude_range: [top, ground]' "
                        "(metric DRB x) to the config")

    center, radius = (torch.tensor(v, dtype=torch.float32) for v in (bounds.center, bounds.radius))
    summary["foreground"] = {
        "kind": "box" if bounds.box else "ellipsoid" if inputs.ellipse_bounds else "unit sphere",
        "center_drb": [float(v) for v in inputs.metric(center)], "radius": [float(v) * scale for v in radius]}
    if bounds.box:
        inside = ((cams - center).abs() < radius).all(-1)
        if bool(inside.any()):
            notes.append(f"{int(inside.sum())} of {len(cams)} cameras lie inside the foreground box: it holds more "
                         f"than the object (with a background model that is allowed, but the fields' resolution is "
                         f"spread over the whole box)")
    else:
        r_cam = ((cams - center) / radius).norm(dim=-1)
        if float(r_cam.max()) >= 1:
            warnings.append(f"{int((r_cam >= 1).sum())} cameras lie outside the foreground ellipsoid: training "
                            f"will refuse them; check ray_altitude_range and coordinates.pt or raise "
                            f"--ellipse_scale_factor")

    pts = inputs.points
    if pts is not None and len(pts):
        pts_alt = inputs.altitude(pts[:, 0])
        points = {"source": inputs.points_source, "count": len(pts),
                  "altitude_percentiles": {str(q): float(np.percentile(pts_alt, q)) for q in PERCENTILES}}
        if alt is not None:
            above, below = pts[:, 0] < alt[0], pts[:, 0] > alt[1]
            points["above_top_fraction"], points["below_ground_fraction"] = _fraction(above), _fraction(below)
            if _fraction(above) > outside_fraction:
                highest = float(np.percentile(pts_alt, 99.9))
                warnings.append(
                    f"{100 * _fraction(above):.1f} % of the points lie above the top plane (altitude {fmt(-top_x)} "
                    f"{unit}; points reach {fmt(highest)} {unit} at the 99.9th percentile): roofs and trees there are "
                    f"cut off; lower the first value of ray_altitude_range to about {fmt(-highest - 0.1 * abs(highest + ground_x))}")
            if _fraction(below) > outside_fraction:
                lowest = float(np.percentile(pts_alt, 0.1))
                warnings.append(
                    f"{100 * _fraction(below):.1f} % of the points lie below the ground plane (altitude "
                    f"{fmt(-ground_x)} {unit}; points go down to {fmt(lowest)} {unit} at the 0.1th percentile): the "
                    f"ground is cut off; raise the second value of ray_altitude_range to about "
                    f"{fmt(-lowest + 0.05 * abs(top_x + lowest))}")
        if bounds.box:
            outside = ((pts - center).abs() > radius).any(-1)
            points["outside_foreground_fraction"] = _fraction(outside)
            if _fraction(outside) > outside_fraction:
                warnings.append(f"{100 * _fraction(outside):.1f} % of the points lie outside the foreground box "
                                f"(foreground_bounds): that content is lost; widen foreground_bounds")
        else:
            # Aerial captures see ground far beyond the flight area, which the background model is
            # for; what the foreground must hold is the content under the cameras.
            outside = ((pts - center) / radius).norm(dim=-1) > 1
            lo, hi = cams[:, 1:].min(0).values, cams[:, 1:].max(0).values
            under = ((pts[:, 1:] >= lo) & (pts[:, 1:] <= hi)).all(-1)
            points["outside_foreground_fraction"] = _fraction(outside)
            points["under_cameras_outside_foreground_fraction"] = _fraction(outside[under])
            if _fraction(outside[under]) > outside_fraction:
                warnings.append(f"{100 * _fraction(outside[under]):.1f} % of the points under the cameras (within their "
                                f"horizontal extent) lie outside the foreground ellipsoid: the ellipsoid misses the "
                                f"scene; check ray_altitude_range and coordinates.pt or raise --ellipse_scale_factor")
            elif _fraction(outside) > ellipsoid_outside_fraction:
                notes.append(f"{100 * _fraction(outside):.1f} % of all points lie outside the foreground ellipsoid, "
                             f"beyond the cameras' horizontal extent: the background model explains them, more "
                             f"coarsely (raise --ellipse_scale_factor to bring them in)")
        if float(np.median(pts_alt)) > float(cam_alt.max()) and not bounds.box:
            warnings.append(f"most points lie above the highest camera (median point altitude "
                            f"{fmt(float(np.median(pts_alt)))} {unit}, cameras up to {fmt(float(cam_alt.max()))} "
                            f"{unit}): the scene is probably upside down; re-import with the right --up")
        summary["points"] = points
    else:
        summary["points"] = {"source": "none", "count": 0}

    if inputs.centroids is not None:
        k = len(inputs.centroids)
        cells = {"source": inputs.cells_source, "count": k, "grid_dim": inputs.grid_dim,
                 "centroids_drb": [[float(v) for v in c] for c in inputs.metric(inputs.centroids)]}
        if inputs.cell_pixel_counts is not None:
            cells["pixels_per_cell"] = inputs.cell_pixel_counts.tolist()
            unseen = [i for i in range(k) if int(inputs.cell_pixel_counts[i]) == 0]
        else:
            cells["cameras_per_cell"] = inputs.cameras_per_cell.tolist()
            unseen = [i for i in range(k) if int(inputs.cameras_per_cell[i]) == 0]
        cells["unseen"] = unseen
        if unseen:
            warnings.append(f"cell{'s' if len(unseen) > 1 else ''} {', '.join(map(str, unseen))} of {k} "
                            f"{'are' if len(unseen) > 1 else 'is'} seen by no camera: training and merging skip "
                            f"{'them' if len(unseen) > 1 else 'it'}; use a smaller --grid_dim")
        if inputs.params_mismatch:
            warnings.append(f"{inputs.cells_source} does not match this dataset and config: "
                            f"{'; '.join(inputs.params_mismatch)}; training will refuse these masks, recreate them")
        summary["cells"] = cells
    summary["warnings"] = warnings
    summary["notes"] = notes
    return SceneReport(summary, warnings, notes)



def format_report(report: SceneReport) -> str:
    """A few lines for the console."""
    s = report.summary
    unit = "m" if s["units"] == "metres" else "units"
    lines = [f"scene check of {s['dataset']}: {s['train_images']} train + {s['val_images']} val images, "
             f"pose_scale_factor {fmt(s['pose_scale_factor'])}, {s['units']}, {s['altitude']}"]
    ca = s["camera_altitude"]
    lines.append(f"  cameras: altitude {fmt(ca['min'])} .. {fmt(ca['max'])} {unit} (median {fmt(ca['median'])})")
    if "ray_altitude_range" in s:
        top, ground = s["ray_altitude_range"]["altitude"]
        lines.append(f"  ray_altitude_range {[round(v, 4) for v in s['ray_altitude_range']['drb_x']]}: top plane at "
                     f"altitude {fmt(top)} {unit}, ground plane at altitude {fmt(ground)} {unit}")
    else:
        lines.append("  ray_altitude_range: not set")
    p = s["points"]
    if p["count"]:
        pct = " / ".join(fmt(v, 3) for v in p["altitude_percentiles"].values())
        lines.append(f"  points from {p['source']}: altitude at {'/'.join(p['altitude_percentiles'])} %: {pct} {unit}")
        extra = []
        if "above_top_fraction" in p:
            extra.append(f"{100 * p['above_top_fraction']:.2f} % above the top plane, "
                         f"{100 * p['below_ground_fraction']:.2f} % below the ground plane")
        extra.append(f"{100 * p['outside_foreground_fraction']:.2f} % outside the foreground {s['foreground']['kind']}"
                     + (f" ({100 * p['under_cameras_outside_foreground_fraction']:.2f} % of the points under the cameras)"
                        if "under_cameras_outside_foreground_fraction" in p else ""))
        lines.append("    " + "; ".join(extra))
    else:
        lines.append("  points: none (no points3d.pt or depth maps)")
    f = s["foreground"]
    lines.append(f"  foreground {f['kind']}: centre (DRB) [{', '.join(fmt(v) for v in f['center_drb'])}], "
                 f"{'half-extents' if f['kind'] == 'box' else 'semi-axes'} [{', '.join(fmt(v) for v in f['radius'])}] {unit}")
    if "cells" in s:
        c = s["cells"]
        seen = (f"pixels per cell {c['pixels_per_cell']}" if "pixels_per_cell" in c
                else f"cameras seeing each cell {c['cameras_per_cell']}")
        lines.append(f"  cells: {c['count']} from {c['source']}; {seen}")
    lines += [f"  note: {n}" for n in report.notes]
    if report.warnings:
        lines += [f"  WARNING: {w}" for w in report.warnings]
    else:
        lines.append("  no warnings: cameras, points, planes, foreground and cells agree")
    return "\n".join(lines)


def report_json(report: SceneReport) -> str:
    return json.dumps(report.summary, indent=2) + "\n"


def check_dataset(argv: Optional[list] = None) -> SceneReport:
    """Parse scene options like the stages do and check (for tests and scripts)."""
    from mega_nerf.config import parse

    return check_scene(load_scene_inputs(parse(check_parser(), argv)))

