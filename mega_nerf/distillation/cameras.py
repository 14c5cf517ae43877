"""Virtual cameras for aerial scenes.

PVD draws virtual cameras on a sphere around an object, looking at its centre.  Over a city seen
from a drone that puts most cameras below the ground or looking at the horizon, where the teacher
was never trained.  Here virtual cameras stay where the teacher is reliable:

* the training cameras themselves;
* jittered copies of them (a small shift along the flight, a few degrees of rotation), which
  keep each source image's appearance embedding;
* cameras at training altitudes anywhere over the cameras' footprint, looking down with the tilt
  range of the flight, rendered with the appearance of the nearest training camera.

A view set is a :class:`Views` of packed tensors; pixels are drawn from it with
:func:`view_rays`.  All positions are normalised DRB (x = down, altitude = -x); ``c2w`` columns
are OpenGL (right, up, back), so a camera looks along ``-c2w[:, 2]``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from mega_nerf.geometry.rays import camera_directions, world_rays

#: ``source`` values of :class:`Views`.
TRAINING, JITTERED, FOOTPRINT = 0, 1, 2

#: A nadir camera (looks along +x, image right = +y): columns right, up, back.
NADIR_ROTATION = torch.tensor([[0.0, 0.0, -1.0],
                               [1.0, 0.0, 0.0],
                               [0.0, -1.0, 0.0]])


@dataclass
class Views:
    """V cameras.

    Attributes:
        c2w: (V, 3, 4); intrinsics: (V, 4) fx, fy, cx, cy; wh: (V, 2) int64 width, height;
        appearance: (V,) int64 embedding index; source: (V,) int64 (TRAINING, JITTERED, FOOTPRINT).
    """

    c2w: torch.Tensor
    intrinsics: torch.Tensor
    wh: torch.Tensor
    appearance: torch.Tensor
    source: torch.Tensor

    def __len__(self) -> int:
        return self.c2w.shape[0]

    @staticmethod
    def cat(parts: list[Views]) -> Views:
        return Views(*(torch.cat([getattr(p, f) for p in parts]) for f in
                       ("c2w", "intrinsics", "wh", "appearance", "source")))

    def select(self, index: torch.Tensor) -> Views:
        return Views(self.c2w[index], self.intrinsics[index], self.wh[index], self.appearance[index],
                     self.source[index])

    def to_dict(self) -> dict:
        return {f: getattr(self, f) for f in ("c2w", "intrinsics", "wh", "appearance", "source")}


def training_views(items, scale_factor: int = 1) -> Views:
    """The dataset's cameras (``ImageMetadata``, optionally downscaled) as a :class:`Views`."""
    items = [m.scaled(scale_factor) for m in items]
    return Views(torch.stack([m.c2w.float() for m in items]), torch.stack([m.intrinsics.float() for m in items]),
                 torch.tensor([[m.W, m.H] for m in items]), torch.tensor([m.image_index for m in items]),
                 torch.full((len(items),), TRAINING))


def axis_angle_rotation(axis: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Rodrigues: (N, 3) unit axes, (N,) radians -> (N, 3, 3)."""
    k = torch.zeros(axis.shape[0], 3, 3)
    x, y, z = axis.unbind(-1)
    k[:, 0, 1], k[:, 0, 2], k[:, 1, 2] = -z, y, -x
    k = k - k.transpose(1, 2)
    s, c = angle.sin()[:, None, None], angle.cos()[:, None, None]
    return torch.eye(3).expand_as(k) + s * k + (1 - c) * (k @ k)


def tilt_degrees(c2w: torch.Tensor) -> torch.Tensor:
    """(V, 3, 4) -> (V,) angle between each camera's viewing direction and straight down."""
    forward = -c2w[:, :, 2]
    return torch.rad2deg(torch.acos(forward[:, 0].clamp(-1, 1)))


def camera_spacing(positions: torch.Tensor) -> float:
    """Median distance from each camera to its nearest neighbour (0 for a single camera)."""
    if positions.shape[0] < 2:
        return 0.0
    dist = torch.cdist(positions, positions)
    dist.fill_diagonal_(float("inf"))
    return float(dist.min(1).values.median())


def jittered_views(base: Views, count: int, generator: torch.Generator, max_degrees: float = 5.0,
                   shift: float | None = None, pick: torch.Tensor | None = None) -> Views:
    """``count`` copies of random cameras of ``base``: rotated by up to ``max_degrees`` about a
    random axis and moved horizontally by up to ``shift`` (default: half the median camera
    spacing, so a copy sees between its neighbours).  Altitude is kept: the teacher was trained
    at these altitudes.  Each copy keeps its source's appearance and intrinsics.  ``pick``: (count,)
    the sources (default: random)."""
    if count <= 0 or len(base) == 0:
        return base.select(torch.zeros(0, dtype=torch.long))
    if pick is None:
        pick = torch.randint(0, len(base), (count,), generator=generator)
    out = base.select(pick)
    axis = torch.nn.functional.normalize(torch.randn(count, 3, generator=generator), dim=-1)
    angle = torch.deg2rad(max_degrees * torch.rand(count, generator=generator))
    c2w = out.c2w.clone()
    c2w[:, :, :3] = axis_angle_rotation(axis, angle) @ c2w[:, :, :3]
    shift = 0.5 * camera_spacing(base.c2w[:, :, 3]) if shift is None else shift
    step = (torch.rand(count, 2, generator=generator) * 2 - 1) * shift
    c2w[:, 1:, 3] += step
    return Views(c2w, out.intrinsics, out.wh, out.appearance, torch.full((count,), JITTERED))


def downward_rotation(yaw: torch.Tensor, tilt: torch.Tensor) -> torch.Tensor:
    """(N,) yaw about the vertical and (N,) tilt away from nadir, radians -> (N, 3, 3) c2w rotations."""
    n = yaw.shape[0]
    about_right = axis_angle_rotation(torch.tensor([[0.0, 1.0, 0.0]]).expand(n, 3), tilt)
    about_vertical = axis_angle_rotation(torch.tensor([[1.0, 0.0, 0.0]]).expand(n, 3), yaw)
    return about_vertical @ about_right @ NADIR_ROTATION


def footprint_views(base: Views, count: int, generator: torch.Generator) -> Views:
    """``count`` cameras over the footprint of ``base``: positions uniform in the box of the
    training camera centres (altitude included), any heading, tilt up to the flight's largest,
    the intrinsics of a random training camera and the appearance of the nearest one."""
    if count <= 0 or len(base) == 0:
        return base.select(torch.zeros(0, dtype=torch.long))
    positions = base.c2w[:, :, 3]
    lo, hi = positions.min(0).values, positions.max(0).values
    centre = lo + (hi - lo) * torch.rand(count, 3, generator=generator)
    yaw = 2 * math.pi * torch.rand(count, generator=generator)
    max_tilt = math.radians(float(tilt_degrees(base.c2w).max()))
    tilt = max_tilt * torch.rand(count, generator=generator)
    c2w = torch.cat([downward_rotation(yaw, tilt), centre[:, :, None]], -1)
    like = torch.randint(0, len(base), (count,), generator=generator)
    nearest = torch.cdist(centre, positions).argmin(1)
    return Views(c2w, base.intrinsics[like], base.wh[like], base.appearance[nearest],
                 torch.full((count,), FOOTPRINT))


def bounds_views(bounds, count: int, appearance_count: int, generator: torch.Generator,
                 size: int = 64, fov_degrees: float = 60.0) -> Views:
    """Without a dataset: cameras between the top plane and the top of the foreground ellipsoid
    (where Mega-NeRF's cameras are), over the middle half of its horizontal extent, looking down
    with up to 30 degrees of tilt; square images of ``size`` pixels; random appearance."""
    center, radius = bounds.ellipsoid()
    top = bounds.altitude_range[0] if bounds.altitude_range else float(center[0])
    sky = float(center[0] - 0.8 * radius[0])
    x = sky + (min(top, float(center[0])) - sky) * torch.rand(count, generator=generator) * 0.5
    yz = center[1:] + radius[1:] * 0.5 * (torch.rand(count, 2, generator=generator) * 2 - 1)
    position = torch.cat([x[:, None], yz], -1)
    yaw = 2 * math.pi * torch.rand(count, generator=generator)
    tilt = math.radians(30.0) * torch.rand(count, generator=generator)
    c2w = torch.cat([downward_rotation(yaw, tilt), position[:, :, None]], -1)
    f = 0.5 * size / math.tan(math.radians(fov_degrees) / 2)
    intrinsics = torch.tensor([f, f, size / 2, size / 2]).expand(count, 4).clone()
    appearance = torch.randint(0, max(appearance_count, 1), (count,), generator=generator)
    return Views(c2w, intrinsics, torch.tensor([[size, size]]).expand(count, 2).clone(), appearance,
                 torch.full((count,), FOOTPRINT))


def appearance_views(base: Views, appearance: torch.Tensor, positions: torch.Tensor, per_id: int,
                     generator: torch.Generator, max_degrees: float = 5.0) -> Views:
    """Views for appearance embeddings no training camera carries (Mega-NeRF's protocol trains the
    left half of each validation image, so the teacher knows their appearance): ``per_id``
    jittered copies of the training camera nearest to ``positions[i]``, rendered with
    ``appearance[i]``.  The validation images' own poses and pixels are never used.

    Args:
        appearance: (A,) int64 ids; positions: (A, 3) where those images were taken.
    """
    if per_id <= 0 or appearance.numel() == 0:
        return base.select(torch.zeros(0, dtype=torch.long))
    nearest = torch.cdist(positions.float(), base.c2w[:, :, 3]).argmin(1).repeat_interleave(per_id)
    out = jittered_views(base, len(nearest), generator, max_degrees, pick=nearest)
    out.appearance = appearance.repeat_interleave(per_id)
    return out


def aerial_views(base: Views, jittered: int, footprint: int, seed: int, max_degrees: float = 5.0,
                 extra_appearance: tuple[torch.Tensor, torch.Tensor] | None = None, per_id: int = 2) -> Views:
    """The training cameras, ``jittered`` jittered copies, ``footprint`` footprint cameras and
    ``per_id`` views for each ``(ids, positions)`` of ``extra_appearance`` (see
    :func:`appearance_views`)."""
    g = torch.Generator().manual_seed(seed)
    parts = [base, jittered_views(base, jittered, g, max_degrees), footprint_views(base, footprint, g)]
    if extra_appearance is not None:
        parts.append(appearance_views(base, *extra_appearance, per_id, g, max_degrees))
    return Views.cat(parts)


def view_rays(views: Views, index: int, count: int,
              generator: torch.Generator, center_pixels: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``count`` rays through uniformly random pixels of view ``index``.

    Returns:
        rays_o (count, 3), rays_d (count, 3) unit, pixel (count,) int64 flat pixel index.
    """
    W, H = (int(v) for v in views.wh[index])
    pixel = torch.randint(0, W * H, (count,), generator=generator)
    i, j = pixel % W, torch.div(pixel, W, rounding_mode="floor")
    rays_o, rays_d = world_rays(views.c2w[index], camera_directions(i, j, views.intrinsics[index], center_pixels))
    return rays_o, rays_d, pixel
