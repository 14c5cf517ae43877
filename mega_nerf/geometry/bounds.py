"""Where the scene is: near/far, altitude planes and the foreground ellipsoid (or box).

Aerial scenes use Mega-NeRF's ellipsoid around the cameras; object-centric scenes
(``--foreground_bounds``, e.g. NeRF-Synthetic) use an axis-aligned box around the object, with the
cameras outside it: rays are clipped to the box.

All quantities are in normalised DRB coordinates (``(metric - origin_drb) / pose_scale_factor``);
altitude is -x, so the altitude range is ``[top, ground]`` with ``top < ground``.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Optional

import torch

from mega_nerf.errors import UserError
from mega_nerf.geometry.rays import camera_directions, world_rays

#: Far distance for rays that are not bounded by the ground plane (Mega-NeRF uses 1e5 with a
#: background model).
UNBOUNDED_FAR = 1e5


@dataclass
class SceneBounds:
    """Bounds every stage shares; stored in ``params.pt``, checkpoints and containers."""

    origin_drb: list
    pose_scale_factor: float
    near: float  # normalised
    far: Optional[float]  # normalised; None = unbounded (background model) or 2 without one
    altitude_range: Optional[list]  # normalised [top, ground]
    center: list  # ellipsoid (or box) centre (3,)
    radius: list  # ellipsoid semi-axes (or box half-extents) (3,)
    center_pixels: bool = True
    box: bool = False  # True: the foreground is the box center +- radius (``--foreground_bounds``)
    #: [[lo], [hi]] normalised box the fields span, or None for the ellipsoid's (or box's) box.
    field_box: Optional[list] = None

    def fields_aabb(self) -> torch.Tensor:
        """(2, 3) [lo, hi] of the box the radiance fields and occupancy grids cover."""
        if self.field_box is not None:
            return torch.tensor(self.field_box, dtype=torch.float32)
        center, radius = self.ellipsoid()
        return torch.stack([center - radius, center + radius])

    def to_dict(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_dict(d: dict) -> "SceneBounds":
        return SceneBounds(**d)

    def ellipsoid(self, device=None) -> tuple[torch.Tensor, torch.Tensor]:
        return (torch.tensor(self.center, device=device, dtype=torch.float32),
                torch.tensor(self.radius, device=device, dtype=torch.float32))


def normalized_altitude_range(ray_altitude_range, origin_drb: torch.Tensor, scale: float) -> Optional[list]:
    if ray_altitude_range is None:
        return None
    return [(float(a) - float(origin_drb[0])) / scale for a in ray_altitude_range]


def compute_scene_bounds(camera_positions: torch.Tensor, origin_drb: torch.Tensor, pose_scale_factor: float,
                         ray_altitude_range=None, near: float = 1.0, far: Optional[float] = None,
                         ellipse_bounds: bool = True, ellipse_scale_factor: float = 1.1,
                         center_pixels: bool = True, foreground_bounds=None,
                         footprint: Optional[torch.Tensor] = None) -> SceneBounds:
    """Mega-NeRF's foreground ellipsoid around the cameras and the altitude slab, or a box.

    Args:
        camera_positions: (N, 3) normalised camera centres (train and val).
        ray_altitude_range: metric DRB x ``[top, ground]`` or None.
        foreground_bounds: metric DRB ``[xmin, ymin, zmin, xmax, ymax, zmax]`` or None: the
            foreground is this box (it wins over ``ellipse_bounds``).
        footprint: (M, 3) normalised points the ellipsoid must also hold, e.g. where the images'
            corner rays meet the ground (:func:`ground_footprint`), or None.
    """
    alt = normalized_altitude_range(ray_altitude_range, origin_drb, pose_scale_factor)
    field_box = None
    if foreground_bounds is not None:
        lo, hi = torch.tensor([float(v) for v in foreground_bounds], dtype=torch.float64).reshape(2, 3)
        lo = (lo - origin_drb.double()) / pose_scale_factor
        hi = (hi - origin_drb.double()) / pose_scale_factor
        center, radius = (lo + hi) / 2, (hi - lo) / 2
    elif ellipse_bounds:
        min_p = camera_positions.min(0).values.clone()
        max_p = camera_positions.max(0).values.clone()
        if alt is not None:
            max_p[0] = alt[1]
        center = (max_p + min_p) / 2
        radius = (max_p - min_p) / 2
        # A flat axis (e.g. one flight line) would give a zero semi-axis: give it some extent.
        radius = torch.maximum(radius, radius.max() * 0.05 + 1e-6)
        used = [camera_positions]
        if alt is not None:
            for a in alt:
                projected = camera_positions.clone()
                projected[:, 0] = a
                used.append(projected)
        used = torch.cat(used)
        s = ((used - center) / radius).norm(dim=-1).max()
        radius = radius * s * ellipse_scale_factor
        if footprint is not None and len(footprint):
            # Widen the horizontal semi-axes only, just enough that each footprint point sits as
            # deep inside as the cameras do: the altitude axis already spans top to ground.
            u = (footprint.float() - center) / radius
            room = (1 / ellipse_scale_factor ** 2 - u[:, 0] ** 2).clamp_min(1e-3)
            grow = ((u[:, 1] ** 2 + u[:, 2] ** 2) / room).sqrt().max().clamp_min(1.0)
            radius = torch.cat([radius[:1], radius[1:] * grow])
            if alt is not None:
                # Downward rays sample only between the altitude planes, and over the ground the
                # cameras see: the fields spend their resolution there, not on the whole
                # ellipsoid's box (four times taller than the slab on a low flight).
                seen = torch.cat([camera_positions, footprint.float()])
                lo, hi = seen.min(0).values, seen.max(0).values
                pad = 0.02 * (hi - lo)
                lo, hi = torch.maximum(lo - pad, center - radius), torch.minimum(hi + pad, center + radius)
                lo[0], hi[0] = alt[0], alt[1]
                field_box = torch.stack([lo, hi]).tolist()
    else:
        center, radius = torch.zeros(3), torch.ones(3)
    return SceneBounds(
        origin_drb=[float(v) for v in origin_drb], pose_scale_factor=float(pose_scale_factor),
        near=near / pose_scale_factor, far=None if far is None else far / pose_scale_factor,
        altitude_range=alt, center=[float(v) for v in center], radius=[float(v) for v in radius],
        center_pixels=center_pixels, box=foreground_bounds is not None, field_box=field_box)


ALTITUDE_RANGE_MISSING = ("ray_altitude_range is not set: add 'ray_altitude_range: [top, ground]' (metric DRB x, "
                          "top < ground) to the config; the synthetic scene's config.yaml has one")


def ground_footprint(items, ground: float, max_tilt_degrees: float = 60.0) -> torch.Tensor:
    """Where each image's four corner rays meet the ground plane.

    An ellipsoid around the cameras alone (Mega-NeRF's) leaves the outer part of every image's
    ground outside the foreground on a small flight (a quarter of brighton's rays), so the
    background model has to paint real ground there.  The ellipsoid holding these points holds
    every ray from a camera down to the ground it sees (the footprint is convex), so ground rays
    stay in the foreground.  Corner rays more than ``max_tilt_degrees`` from straight down
    (oblique views reaching for the horizon) are left to the background model.

    Args:
        items: images with ``W``, ``H``, ``intrinsics`` (4,) and normalised ``c2w`` (3, 4).
        ground: normalised DRB x of the ground plane.
    Returns:
        (M, 3) normalised points, M <= 4 * len(items).
    """
    points = []
    cos_limit = math.cos(math.radians(max_tilt_degrees))
    for item in items:
        i = torch.tensor([0.0, item.W, 0.0, item.W])
        j = torch.tensor([0.0, 0.0, item.H, item.H])
        rays_o, rays_d = world_rays(item.c2w, camera_directions(i, j, item.intrinsics, center_pixels=False))
        keep = (rays_d[:, 0] >= cos_limit) & (rays_o[:, 0] < ground)
        start = torch.zeros(len(rays_o))
        _, t_ground = truncate_with_altitude_planes(rays_o, rays_d, start, torch.full_like(start, UNBOUNDED_FAR),
                                                    [float(rays_o[:, 0].min()), ground])
        points.append((rays_o + rays_d * t_ground[:, None])[keep])
    return torch.cat(points) if points else torch.zeros(0, 3)


def scene_bounds_from_args(dataset, args, require_altitude_range: bool) -> SceneBounds:
    """:func:`compute_scene_bounds` for a loaded dataset and the scene options of any stage.

    Args:
        dataset: a :class:`mega_nerf.data.format.PosedDataset`.
        require_altitude_range: refuse a config without ``ray_altitude_range`` (masks always
            need it; training only while the ellipsoid bounds are on) unless ``--foreground_bounds``
            gives the scene's extent.
    """
    foreground = getattr(args, "foreground_bounds", None)
    if require_altitude_range and args.ray_altitude_range is None and foreground is None:
        raise UserError(ALTITUDE_RANGE_MISSING)
    footprint = None
    if getattr(args, "ellipse_footprint", False) and args.ray_altitude_range is not None:
        ground = normalized_altitude_range(args.ray_altitude_range, dataset.origin_drb, dataset.pose_scale_factor)[1]
        footprint = ground_footprint(dataset.items, ground)
    return compute_scene_bounds(dataset.camera_positions, dataset.origin_drb, dataset.pose_scale_factor,
                                args.ray_altitude_range, args.near, args.far, args.ellipse_bounds,
                                args.ellipse_scale_factor, args.center_pixels, foreground, footprint)


def truncate_with_altitude_planes(rays_o: torch.Tensor, rays_d: torch.Tensor, near: torch.Tensor,
                                  far: torch.Tensor, altitude_range: Optional[list]) -> tuple[torch.Tensor, torch.Tensor]:
    """Clip rays to the slab between the top and ground planes (planes x = a, altitude = -x).

    Rays that start above the top plane and go down begin at the top plane; rays that go down
    end at the ground plane.  Rays going up keep their far (the background explains them).

    Args:
        rays_o, rays_d: (N, 3).
        near, far: (N,).
    Returns:
        near, far: (N,) with far >= near.
    """
    if altitude_range is None:
        return near, far
    top, ground = altitude_range
    going_down = rays_d[:, 0] > 0
    safe_dx = torch.where(going_down, rays_d[:, 0], torch.ones_like(rays_d[:, 0]))
    t_top = (top - rays_o[:, 0]) / safe_dx
    t_ground = (ground - rays_o[:, 0]) / safe_dx
    near = torch.where(going_down & (rays_o[:, 0] < top), torch.maximum(near, t_top), near)
    far = torch.where(going_down, torch.minimum(far, t_ground), far)
    return near, torch.maximum(near, far)


def ellipsoid_exit(rays_o: torch.Tensor, rays_d: torch.Tensor, center: torch.Tensor,
                   radius: torch.Tensor) -> torch.Tensor:
    """Distance along each ray to where it leaves the axis-aligned ellipsoid.

    Args:
        rays_o, rays_d: (N, 3); origins must lie inside the ellipsoid.
        center, radius: (3,).
    Returns:
        (N,) exit distance (in the ray's own units).
    """
    o = (rays_o - center) / radius
    d = rays_d / radius
    a = (d * d).sum(-1)
    b = (o * d).sum(-1)
    c = (o * o).sum(-1) - 1
    disc = (b * b - a * c).clamp_min(0)
    return (-b + disc.sqrt()) / a


def box_crossing(rays_o: torch.Tensor, rays_d: torch.Tensor, center: torch.Tensor,
                 radius: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Distances where rays enter and leave the box ``center +- radius`` (slab test).

    Returns:
        t_enter, t_exit: (N,); both 0 for rays that miss the box (or have it behind them), so
        their foreground segment ``[max(near, t_enter), min(far, t_exit)]`` is empty.
    """
    d = torch.where(rays_d.abs() < 1e-9, torch.full_like(rays_d, 1e-9), rays_d)
    t_lo = (center - radius - rays_o) / d
    t_hi = (center + radius - rays_o) / d
    t_enter = torch.minimum(t_lo, t_hi).max(-1).values
    t_exit = torch.maximum(t_lo, t_hi).min(-1).values
    hit = (t_exit > t_enter) & (t_exit > 0)
    zero = torch.zeros_like(t_enter)
    return torch.where(hit, t_enter, zero), torch.where(hit, t_exit, zero)


def inside_foreground(points: torch.Tensor, bounds: SceneBounds) -> torch.Tensor:
    """(N, 3) normalised points -> (N,) bool: inside the foreground ellipsoid (or box)."""
    center, radius = bounds.ellipsoid(points.device)
    scaled = (points - center) / radius
    if bounds.box:
        return (scaled.abs() <= 1).all(-1)
    return scaled.norm(dim=-1) < 1


def check_cameras_inside(rays_o: torch.Tensor, bounds: SceneBounds, where: str) -> None:
    if bounds.box:
        return  # object-centric: the cameras look at the box from outside
    center, radius = bounds.ellipsoid(rays_o.device)
    r = ((rays_o - center) / radius).norm(dim=-1).max()
    if r >= 1:
        raise UserError(f"{where}: a camera lies outside the foreground ellipsoid (radius {r:.2f}); "
                        f"check ray_altitude_range and coordinates.pt or raise --ellipse_scale_factor")


def ray_segments(rays_o: torch.Tensor, rays_d: torch.Tensor, bounds: SceneBounds,
                 background: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-ray [near, far] as Mega-NeRF computes them for training and rendering, and where each
    ray leaves the foreground (ellipsoid or box).

    With a foreground box, the foreground segment also starts where the ray enters the box;
    rays that miss it get an empty one.

    Returns:
        near, far, t_exit: (N,).
    """
    n = rays_o.shape[0]
    far_default = bounds.far if bounds.far is not None else (UNBOUNDED_FAR if background else 2.0)
    near = torch.full((n,), bounds.near, device=rays_o.device)
    far = torch.full((n,), far_default, device=rays_o.device)
    center, radius = bounds.ellipsoid(rays_o.device)
    if bounds.box:
        t_enter, t_exit = box_crossing(rays_o, rays_d, center, radius)
        near = torch.maximum(near, t_enter)
        if not background:  # nothing beyond the box
            far = torch.maximum(torch.minimum(far, t_exit), near)
    else:
        t_exit = ellipsoid_exit(rays_o, rays_d, center, radius)
    near, far = truncate_with_altitude_planes(rays_o, rays_d, near, far, bounds.altitude_range)
    return near, far, t_exit


def ray_bounds(rays_o: torch.Tensor, rays_d: torch.Tensor, bounds: SceneBounds,
               background: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(N,) near and far of :func:`ray_segments`."""
    near, far, _ = ray_segments(rays_o, rays_d, bounds, background)
    return near, far
