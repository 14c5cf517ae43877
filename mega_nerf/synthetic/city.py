"""A procedural aerial city with exact ground truth, written as a Mega-NeRF dataset.

The scene is an infinite textured ground plane (fields, an asphalt road grid with lane
markings, sidewalks, lots) plus buildings made of axis-aligned boxes, lit by a fixed sun with
hard shadows and a sky gradient.  Images are rendered by an exact analytic ray caster (one ray
per pixel, no anti-aliasing), so every pixel has an exact metric depth and tests can use
:meth:`SyntheticCity.cast` as an oracle.

Frames and units
----------------
* **ENU** (generation frame): metres; x = east, y = north, z = up; the ground is z = 0.
* **DRB** (dataset frame, see :mod:`mega_nerf.data.format`): x = down, y = right (east),
  z = back (south), so ``p_drb = [-up, east, -north]``; right-handed.
* **normalised DRB**: ``(p_drb_metric - origin_drb) / pose_scale_factor``; what ``c2w``
  translations and :meth:`SyntheticCity.cast` ray origins hold.

Depth is always the *metric* distance along the *unit* ray direction; ``inf`` where a ray hits
nothing (sky).  Colours are linear floats in [0, 1] before the per-image exposure and white
balance that :func:`apply_appearance` applies.

Determinism: the layout comes from ``numpy.random.default_rng`` seeded with the user's seed,
textures from an integer hash of a stored ``texture_seed``; the same seed gives byte-identical
datasets.
"""
from __future__ import annotations

import contextlib
import json
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import torch
import yaml
from tqdm import tqdm

from mega_nerf.data.format import write_coordinates, write_image
from mega_nerf.errors import UserError, require
from mega_nerf.geometry.rays import image_rays
from mega_nerf.io_utils import atomic_write_json, atomic_write_text, check_output_free, staged_folder

SCENE_FORMAT = "mega_nerf.synthetic.city/1"

# v_drb = ENU_TO_DRB @ v_enu: down = -up, right = east, back = -north (a proper rotation).
ENU_TO_DRB = torch.tensor([[0.0, 0.0, -1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]], dtype=torch.float64)

#: ``box_index`` values of :class:`RayHits` for rays that end on the ground or in the sky.
GROUND = -1
SKY = -2

Color = Tuple[float, float, float]
Box = Tuple[float, float, float, float, float, float]  # ENU metres: xmin, ymin, zmin, xmax, ymax, zmax


# ----------------------------------------------------------------------------------------------
# Presets


@dataclass(frozen=True)
class Preset:
    """Everything that sizes a generated dataset (the seed picks the rest)."""

    name: str
    city_size_m: float  # the city is the square [-s/2, s/2]^2 (ENU x, y)
    block_pitch_m: float  # distance between neighbouring road centre lines
    road_width_m: float
    sidewalk_width_m: float
    min_height_m: float
    max_height_m: float  # tallest main building (rooftop structures may add a few metres)
    altitude_m: float  # flight altitude above the ground
    flight_half_extent_m: float  # waypoints cover [-e, e]^2
    flight_rows: int
    waypoints_per_row: int
    obliques_per_waypoint: int  # 0..4 tilted views per waypoint besides the nadir one
    oblique_tilt_deg: float  # off nadir
    image_width: int
    image_height: int
    horizontal_fov_deg: float
    val_every: int  # image i is a validation image when i % val_every == val_every // 2
    val_scale_factor: int

    @property
    def images_per_waypoint(self) -> int:
        return 1 + self.obliques_per_waypoint


PRESETS: Dict[str, Preset] = {
    # CI / demo: 45 images of 96x72, 3x3 blocks, ~20 buildings; generates in about a second.
    "tiny": Preset("tiny", city_size_m=120.0, block_pitch_m=40.0, road_width_m=8.0,
                   sidewalk_width_m=2.0, min_height_m=5.0, max_height_m=40.0, altitude_m=90.0,
                   flight_half_extent_m=45.0, flight_rows=3, waypoints_per_row=5,
                   obliques_per_waypoint=2, oblique_tilt_deg=35.0, image_width=96,
                   image_height=72, horizontal_fov_deg=65.0, val_every=8, val_scale_factor=2),
    # Benchmark: 2028 images of 320x240 over 1 km x 1 km, 20x20 blocks, ~800 buildings.
    "city": Preset("city", city_size_m=1000.0, block_pitch_m=50.0, road_width_m=10.0,
                   sidewalk_width_m=2.5, min_height_m=5.0, max_height_m=60.0, altitude_m=150.0,
                   flight_half_extent_m=480.0, flight_rows=26, waypoints_per_row=26,
                   obliques_per_waypoint=2, oblique_tilt_deg=35.0, image_width=320,
                   image_height=240, horizontal_fov_deg=65.0, val_every=8, val_scale_factor=4),
}


def resolve_preset(name: str, image_width: Optional[int] = None) -> Preset:
    """A preset by name, optionally at another width (height keeps the aspect ratio).

    Width and height stay multiples of 4 so validation images downscale evenly.
    """
    require(name in PRESETS, f"unknown preset '{name}'; choose one of {', '.join(PRESETS)}")
    preset = PRESETS[name]
    if image_width is None:
        return preset
    require(image_width >= 8 and image_width % 4 == 0,
            f"--image_width must be a multiple of 4 and at least 8, got {image_width}")
    height = max(4, int(round(image_width * preset.image_height / preset.image_width / 4)) * 4)
    return replace(preset, image_width=image_width, image_height=height)


# ----------------------------------------------------------------------------------------------
# Scene description (what scene.json holds)


@dataclass(frozen=True)
class Building:
    """One building: 1-3 boxes sharing a material (main block, L wing, rooftop structure)."""

    boxes: Tuple[Box, ...]
    wall_color: Color
    roof_color: Color
    window_color: Color
    floor_height_m: float  # window rows repeat every floor
    window_spacing_m: float  # window columns repeat along each wall
    window_fraction: float  # fraction of a column's width that is glass


@dataclass(frozen=True)
class Lighting:
    sun_direction_enu: Tuple[float, float, float]  # unit vector towards the sun
    sun_color: Color  # irradiance on a surface facing the sun
    ambient_color: Color  # skylight everywhere, also in shadow
    sky_horizon_color: Color
    sky_zenith_color: Color


@dataclass(frozen=True)
class CityLayout:
    """The full scene: enough to re-render every pixel exactly."""

    city_size_m: float
    block_pitch_m: float
    road_width_m: float
    sidewalk_width_m: float
    texture_seed: int  # salts the procedural ground and facade textures
    buildings: Tuple[Building, ...]
    lighting: Lighting

    @property
    def boxes(self) -> List[Box]:
        return [box for building in self.buildings for box in building.boxes]

    @property
    def max_height_m(self) -> float:
        return max((box[5] for box in self.boxes), default=0.0)

    def to_json(self) -> dict:
        return {
            "city_size_m": self.city_size_m, "block_pitch_m": self.block_pitch_m,
            "road_width_m": self.road_width_m, "sidewalk_width_m": self.sidewalk_width_m,
            "texture_seed": self.texture_seed,
            "lighting": {k: list(v) for k, v in vars(self.lighting).items()},
            "buildings": [{**{k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(b).items()},
                           "boxes": [list(box) for box in b.boxes]} for b in self.buildings],
        }

    @staticmethod
    def from_json(data: dict) -> "CityLayout":
        buildings = tuple(
            Building(boxes=tuple(tuple(float(c) for c in box) for box in b["boxes"]),
                     wall_color=tuple(b["wall_color"]), roof_color=tuple(b["roof_color"]),
                     window_color=tuple(b["window_color"]), floor_height_m=b["floor_height_m"],
                     window_spacing_m=b["window_spacing_m"], window_fraction=b["window_fraction"])
            for b in data["buildings"])
        lighting = Lighting(**{k: tuple(v) for k, v in data["lighting"].items()})
        return CityLayout(data["city_size_m"], data["block_pitch_m"], data["road_width_m"],
                          data["sidewalk_width_m"], int(data["texture_seed"]), buildings, lighting)


# Material palettes (linear RGB albedo).
WALL_COLORS = [(0.76, 0.70, 0.58), (0.60, 0.60, 0.62), (0.58, 0.32, 0.25), (0.84, 0.83, 0.79),
               (0.80, 0.66, 0.45), (0.42, 0.52, 0.60), (0.66, 0.55, 0.48)]
ROOF_COLORS = [(0.30, 0.30, 0.32), (0.62, 0.62, 0.60), (0.55, 0.26, 0.19), (0.80, 0.80, 0.78),
               (0.32, 0.44, 0.26), (0.19, 0.19, 0.20)]
WINDOW_COLORS = [(0.12, 0.16, 0.22), (0.20, 0.28, 0.36), (0.09, 0.11, 0.13), (0.30, 0.38, 0.42)]

# Sun from the south-east, 50 degrees up: shadows fall to the north-west.
SUN_ELEVATION_DEG, SUN_AZIMUTH_DEG = 50.0, 135.0  # azimuth clockwise from north


def default_lighting() -> Lighting:
    el, az = math.radians(SUN_ELEVATION_DEG), math.radians(SUN_AZIMUTH_DEG)
    sun = (math.sin(az) * math.cos(el), math.cos(az) * math.cos(el), math.sin(el))
    return Lighting(sun_direction_enu=sun, sun_color=(0.75, 0.72, 0.66),
                    ambient_color=(0.30, 0.33, 0.38), sky_horizon_color=(0.80, 0.86, 0.93),
                    sky_zenith_color=(0.30, 0.50, 0.82))


def _jittered(rng: np.random.Generator, palette: Sequence[Color], spread: float = 0.08) -> Color:
    base = np.asarray(palette[rng.integers(len(palette))])
    return tuple(float(c) for c in np.clip(base * rng.uniform(1 - spread, 1 + spread, 3), 0, 1).round(4))


def _building_in_lot(rng: np.random.Generator, lot: Tuple[float, float, float, float],
                     height_m: float) -> Building:
    """One building inside the rectangle ``lot = (x0, y0, x1, y1)`` (ENU metres)."""
    lx0, ly0, lx1, ly1 = lot
    w = (lx1 - lx0) * rng.uniform(0.55, 0.95)
    d = (ly1 - ly0) * rng.uniform(0.55, 0.95)
    x0 = lx0 + rng.uniform(0, lx1 - lx0 - w)
    y0 = ly0 + rng.uniform(0, ly1 - ly0 - d)
    shape = rng.random()
    if shape < 0.3:
        # L shape: a full-width arm plus a full-depth arm meeting in one corner.
        arm_d, arm_w = d * rng.uniform(0.35, 0.55), w * rng.uniform(0.35, 0.55)
        south, west = rng.random() < 0.5, rng.random() < 0.5
        ya = y0 if south else y0 + d - arm_d
        xb = x0 if west else x0 + w - arm_w
        wing_h = max(3.0, height_m * rng.uniform(0.6, 1.0))
        raw = [(x0, ya, 0.0, x0 + w, ya + arm_d, height_m), (xb, y0, 0.0, xb + arm_w, y0 + d, wing_h)]
    else:
        raw = [(x0, y0, 0.0, x0 + w, y0 + d, height_m)]
        if shape < 0.55 and height_m > 10:
            # Rooftop structure (stair tower, plant room) on a tall block.
            sw, sd = w * rng.uniform(0.2, 0.4), d * rng.uniform(0.2, 0.4)
            sx, sy = x0 + rng.uniform(0.1 * w, 0.9 * w - sw), y0 + rng.uniform(0.1 * d, 0.9 * d - sd)
            raw.append((sx, sy, height_m, sx + sw, sy + sd, height_m + rng.uniform(2.0, 4.0)))
    # Centimetre coordinates: readable scene.json, and the stored numbers are the rendered ones.
    boxes = tuple(tuple(round(float(c), 2) for c in box) for box in raw)
    return Building(boxes=boxes, wall_color=_jittered(rng, WALL_COLORS),
                    roof_color=_jittered(rng, ROOF_COLORS), window_color=_jittered(rng, WINDOW_COLORS, 0.05),
                    floor_height_m=round(float(rng.uniform(3.0, 4.0)), 3),
                    window_spacing_m=round(float(rng.uniform(2.5, 4.0)), 3),
                    window_fraction=round(float(rng.uniform(0.35, 0.7)), 3))


def _lots_in_block(rng: np.random.Generator, x0: float, y0: float, x1: float, y1: float,
                   gap_m: float = 2.0) -> List[Tuple[float, float, float, float]]:
    """Split a block's buildable area into 1, 2 or 4 lots separated by ``gap_m``."""
    split_x, split_y = [(False, False), (True, False), (False, True), (True, True)][
        rng.choice(4, p=[0.15, 0.3, 0.3, 0.25])]
    xs = [(x0, (x0 + x1 - gap_m) / 2), ((x0 + x1 + gap_m) / 2, x1)] if split_x else [(x0, x1)]
    ys = [(y0, (y0 + y1 - gap_m) / 2), ((y0 + y1 + gap_m) / 2, y1)] if split_y else [(y0, y1)]
    return [(a, c, b, d) for a, b in xs for c, d in ys]


def generate_layout(preset: Preset, seed: int) -> CityLayout:
    """Place buildings in the blocks between roads; taller towards the centre (downtown)."""
    rng = np.random.default_rng([int(seed), 0])
    half, pitch = preset.city_size_m / 2, preset.block_pitch_m
    setback = preset.road_width_m / 2 + preset.sidewalk_width_m
    n_blocks = int(round(preset.city_size_m / pitch))
    buildings = []
    for bx in range(n_blocks):
        for by in range(n_blocks):
            x0, y0 = -half + bx * pitch + setback, -half + by * pitch + setback
            x1, y1 = -half + (bx + 1) * pitch - setback, -half + (by + 1) * pitch - setback
            centre_dist = math.hypot((x0 + x1) / 2, (y0 + y1) / 2) / (half * math.sqrt(2))
            local_max = preset.max_height_m - (preset.max_height_m - preset.min_height_m) * 0.5 * centre_dist
            for lot in _lots_in_block(rng, x0, y0, x1, y1):
                if rng.random() < 0.1:
                    continue  # an empty lot: park or parking
                height = preset.min_height_m + (local_max - preset.min_height_m) * rng.random() ** 1.2
                buildings.append(_building_in_lot(rng, lot, round(float(height), 2)))
    texture_seed = int(rng.integers(1 << 20))  # small: keeps the texture hash inside int64
    return CityLayout(preset.city_size_m, pitch, preset.road_width_m, preset.sidewalk_width_m,
                      texture_seed, tuple(buildings), default_lighting())


# ----------------------------------------------------------------------------------------------
# Procedural textures (pure functions of ENU position)


def _hash01(ix: torch.Tensor, iy: torch.Tensor, salt: int) -> torch.Tensor:
    """Deterministic integer-lattice hash -> float in [0, 1).

    Args:
        ix, iy: (N,) int64 lattice coordinates, |ix|, |iy| <= ~1e7.
        salt: int in [0, 2**22).
    Returns:
        (N,) float32.
    """
    # Masking to 32 bits after each multiply keeps every product inside int64.
    h = (ix * 374761393 + iy * 668265263 + salt * 2246822519) & 0xFFFFFFFF
    h = ((h ^ (h >> 13)) * 1274126177) & 0xFFFFFFFF
    h = h ^ (h >> 16)
    return (h & 0xFFFFFF).float() / float(1 << 24)


def value_noise(x: torch.Tensor, y: torch.Tensor, cell_m: float, salt: int) -> torch.Tensor:
    """Smooth value noise in [0, 1] with features of about ``cell_m`` metres.

    Args:
        x, y: (N,) float32 metres.
    Returns:
        (N,) float32.
    """
    # Far-away ground hits (grazing rays) can be km away; clamping keeps the hash exact.
    gx, gy = x.clamp(-1e6, 1e6) / cell_m, y.clamp(-1e6, 1e6) / cell_m
    fx, fy = torch.floor(gx), torch.floor(gy)
    ix, iy = fx.long(), fy.long()
    tx, ty = gx - fx, gy - fy
    tx, ty = tx * tx * (3 - 2 * tx), ty * ty * (3 - 2 * ty)  # smoothstep: no grid creases
    v00, v10 = _hash01(ix, iy, salt), _hash01(ix + 1, iy, salt)
    v01, v11 = _hash01(ix, iy + 1, salt), _hash01(ix + 1, iy + 1, salt)
    return torch.lerp(torch.lerp(v00, v10, tx), torch.lerp(v01, v11, tx), ty)


def _rgb(color: Sequence[float]) -> torch.Tensor:
    return torch.tensor(color, dtype=torch.float32)


def _distance_to_grid_line(coord: torch.Tensor, half: float, pitch: float, n_blocks: int) -> torch.Tensor:
    """Distance (m) from ``coord`` to the nearest road line ``-half + k * pitch``, k in 0..n."""
    k = torch.round((coord + half) / pitch).clamp(0, n_blocks)
    return (coord - (-half + k * pitch)).abs()


def ground_albedo(layout: CityLayout, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Albedo of the ground plane at ENU ``(x, y)``.

    Args:
        x, y: (N,) float32 metres.
    Returns:
        (N, 3) float32 in [0, 1].
    """
    salt = layout.texture_seed
    half, pitch = layout.city_size_m / 2, layout.block_pitch_m
    n_blocks = int(round(layout.city_size_m / pitch))
    hw, sw = layout.road_width_m / 2, layout.sidewalk_width_m

    # Countryside and unbuilt lots: grass/dirt mix with fine grain.
    mix = value_noise(x, y, 14.0, salt + 1).unsqueeze(-1)
    grain = (0.85 + 0.3 * value_noise(x, y, 2.5, salt + 2)).unsqueeze(-1)
    albedo = torch.lerp(_rgb((0.26, 0.40, 0.17)), _rgb((0.50, 0.42, 0.29)), mix ** 2) * grain

    in_city = (x.abs() <= half + hw + sw) & (y.abs() <= half + hw + sw)
    dx = _distance_to_grid_line(x, half, pitch, n_blocks)  # to the nearest north-south road
    dy = _distance_to_grid_line(y, half, pitch, n_blocks)  # to the nearest east-west road
    road = in_city & ((dx < hw) | (dy < hw))
    sidewalk = in_city & ~road & ((dx < hw + sw) | (dy < hw + sw))
    lot = in_city & ~road & ~sidewalk

    # Half the blocks are paved (parking, plazas): picked by hashing the block index.
    block_x = torch.floor((x + half) / pitch).long()
    block_y = torch.floor((y + half) / pitch).long()
    paved = lot & (_hash01(block_x, block_y, salt + 3) < 0.5)
    fine = value_noise(x, y, 1.5, salt + 4).unsqueeze(-1)
    albedo = torch.where(paved.unsqueeze(-1), _rgb((0.47, 0.46, 0.44)) * (0.92 + 0.16 * fine), albedo)
    albedo = torch.where(sidewalk.unsqueeze(-1), _rgb((0.64, 0.62, 0.58)) * (0.95 + 0.1 * fine), albedo)
    patches = (0.85 + 0.3 * value_noise(x, y, 6.0, salt + 5)).unsqueeze(-1)
    albedo = torch.where(road.unsqueeze(-1), _rgb((0.23, 0.23, 0.25)) * patches, albedo)

    # Dashed centre lines (3 m dash, 3 m gap) that stop short of the intersections.
    mark_hw, dash = 0.25, 6.0
    ns_mark = road & (dx < mark_hw) & (dy > hw + sw) & (torch.remainder(y, dash) < dash / 2)
    ew_mark = road & (dy < mark_hw) & (dx > hw + sw) & (torch.remainder(x, dash) < dash / 2)
    albedo = torch.where((ns_mark | ew_mark).unsqueeze(-1), _rgb((0.88, 0.87, 0.80)), albedo)
    return albedo.clamp(0, 1)


# ----------------------------------------------------------------------------------------------
# Ray casting


class RayHits(NamedTuple):
    """Nearest hits of N rays.

    depth: (N,) metric distance along the unit ray, inf for sky.
    box_index: (N,) int64 index into :attr:`SyntheticCity.box_lo`, or GROUND (-1) / SKY (-2).
    normal: (N, 3) ENU unit normal of the hit face (0 for sky).
    """

    depth: torch.Tensor
    box_index: torch.Tensor
    normal: torch.Tensor


def ray_box_slabs(origins: torch.Tensor, dirs: torch.Tensor, lo: torch.Tensor,
                  hi: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Slab test of every ray against every box.

    Args:
        origins, dirs: (N, 3).
        lo, hi: (B, 3) box corners.
    Returns:
        t_near, t_far: (N, B) entry and exit distances (in units of |dir|); the ray's line
        crosses the box iff ``t_near <= t_far``.
    """
    # Replacing zero components by a tiny one keeps 0 * inf (= nan) out of parallel slabs.
    safe = torch.where(dirs.abs() < 1e-12, torch.full_like(dirs, 1e-12), dirs)
    inv = (1.0 / safe).unsqueeze(1)
    t0 = (lo.unsqueeze(0) - origins.unsqueeze(1)) * inv
    t1 = (hi.unsqueeze(0) - origins.unsqueeze(1)) * inv
    return torch.minimum(t0, t1).amax(-1), torch.maximum(t0, t1).amin(-1)


def box_entry_normals(origins: torch.Tensor, dirs: torch.Tensor, lo: torch.Tensor,
                      hi: torch.Tensor) -> torch.Tensor:
    """Outward normal of the face where each ray enters its own box.

    Args:
        origins, dirs: (N, 3); lo, hi: (N, 3) the box each ray hits.
    Returns:
        (N, 3) axis-aligned unit normals.
    """
    safe = torch.where(dirs.abs() < 1e-12, torch.full_like(dirs, 1e-12), dirs)
    t_axis = torch.minimum((lo - origins) / safe, (hi - origins) / safe)
    axis = t_axis.argmax(-1, keepdim=True)  # the last slab entered is the face hit
    normal = torch.zeros_like(dirs)
    return normal.scatter_(1, axis, -torch.sign(safe.gather(1, axis)))


def sky_color(lighting: Lighting, dirs: torch.Tensor) -> torch.Tensor:
    """Sky gradient from horizon to zenith.  dirs: (N, 3) unit ENU -> (N, 3)."""
    t = dirs[:, 2].clamp(0, 1).sqrt().unsqueeze(-1)
    return torch.lerp(_rgb(lighting.sky_horizon_color), _rgb(lighting.sky_zenith_color), t)


class SyntheticCity:
    """Exact renderer and geometry oracle of a :class:`CityLayout`.

    ``origin_drb`` (3,) and ``pose_scale_factor`` define the dataset's normalised frame; they
    only matter for :meth:`cast`, :meth:`render_image` and the frame conversions.
    """

    #: Rays per batch in :meth:`cast`; bounds memory together with :attr:`SLAB_BUDGET`.
    CHUNK = 8192
    #: Max ray-box pairs per slab test (about 12 bytes of temporaries each, several live).
    SLAB_BUDGET = 1 << 21

    def __init__(self, layout: CityLayout, origin_drb: Sequence[float] = (0.0, 0.0, 0.0),
                 pose_scale_factor: float = 1.0):
        self.layout = layout
        self.origin_drb = torch.as_tensor(origin_drb, dtype=torch.float64).reshape(3)
        self.pose_scale_factor = float(pose_scale_factor)
        boxes, owner = [], []
        for index, building in enumerate(layout.buildings):
            boxes += building.boxes
            owner += [index] * len(building.boxes)
        box_tensor = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 6)
        self.box_lo, self.box_hi = box_tensor[:, :3].contiguous(), box_tensor[:, 3:].contiguous()
        self.box_building = torch.tensor(owner, dtype=torch.long)
        b = layout.buildings
        self._wall = torch.tensor([x.wall_color for x in b], dtype=torch.float32).reshape(-1, 3)
        self._roof = torch.tensor([x.roof_color for x in b], dtype=torch.float32).reshape(-1, 3)
        self._window = torch.tensor([x.window_color for x in b], dtype=torch.float32).reshape(-1, 3)
        self._floor_h = torch.tensor([x.floor_height_m for x in b], dtype=torch.float32)
        self._win_spacing = torch.tensor([x.window_spacing_m for x in b], dtype=torch.float32)
        self._win_fraction = torch.tensor([x.window_fraction for x in b], dtype=torch.float32)
        self.top_m = float(self.box_hi[:, 2].max()) if len(boxes) else 0.0
        self.sun = torch.tensor(layout.lighting.sun_direction_enu, dtype=torch.float32)

    # -- frames ---------------------------------------------------------------------------------

    def normalized_drb_to_enu(self, points: torch.Tensor) -> torch.Tensor:
        """(N, 3) normalised DRB points -> (N, 3) float64 ENU metres."""
        metric_drb = points.double() * self.pose_scale_factor + self.origin_drb
        return metric_drb @ ENU_TO_DRB  # row-vector form of ENU_TO_DRB.T @ p

    def enu_to_normalized_drb(self, points: torch.Tensor) -> torch.Tensor:
        """(N, 3) ENU metres -> (N, 3) float64 normalised DRB."""
        return (points.double() @ ENU_TO_DRB.T - self.origin_drb) / self.pose_scale_factor

    # -- geometry -------------------------------------------------------------------------------

    def _candidate_boxes(self, origins: torch.Tensor, dirs: torch.Tensor) -> torch.Tensor:
        """Indices of boxes that any of these rays can hit (conservative, cheap).

        The rays can only meet a box inside the height slab z in [0, top]; the boxes whose
        footprints miss the bounding rectangle of the rays' stretches inside that slab are
        dropped.  Image rows are spatially coherent, so this keeps the slab test small.
        """
        all_boxes = torch.arange(len(self.box_lo))
        dz = dirs[:, 2]
        safe_dz = torch.where(dz.abs() < 1e-12, torch.full_like(dz, 1e-12), dz)
        t_a, t_b = -origins[:, 2] / safe_dz, (self.top_m - origins[:, 2]) / safe_dz
        t_in = torch.minimum(t_a, t_b).clamp(min=0)
        t_out = torch.maximum(t_a, t_b)
        crosses = t_out >= t_in
        if not bool(crosses.any()):
            return all_boxes[:0]
        t_in, t_out = t_in[crosses], t_out[crosses]
        if bool((t_out > 1e7).any()):
            return all_boxes  # (nearly) horizontal rays inside the slab: no useful bound
        o2, d2 = origins[crosses, :2], dirs[crosses, :2]
        ends = torch.cat([o2 + t_in.unsqueeze(-1) * d2, o2 + t_out.unsqueeze(-1) * d2])
        lo, hi = ends.amin(0), ends.amax(0)
        keep = ((self.box_lo[:, :2] <= hi) & (self.box_hi[:, :2] >= lo)).all(-1)
        return all_boxes[keep]

    def nearest_box_hit(self, origins: torch.Tensor, dirs: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Nearest box each ray enters ahead of its origin.

        A box containing a ray's origin is ignored by that ray (boxes are seen from outside).

        Args:
            origins: (N, 3) float32 ENU metres; dirs: (N, 3) float32 unit ENU.
        Returns:
            t: (N,) metric distance, inf for no hit; index: (N,) int64 box index, -1 for none.
        """
        n = len(origins)
        best_t = torch.full((n,), math.inf)
        best_i = torch.full((n,), -1, dtype=torch.long)
        candidates = self._candidate_boxes(origins, dirs)
        group = max(1, self.SLAB_BUDGET // max(n, 1))
        for start in range(0, len(candidates), group):
            ids = candidates[start:start + group]
            t_near, t_far = ray_box_slabs(origins, dirs, self.box_lo[ids], self.box_hi[ids])
            t = torch.where((t_near <= t_far) & (t_near > 0), t_near, torch.full_like(t_near, math.inf))
            t_min, arg = t.min(-1)
            better = t_min < best_t
            best_t = torch.where(better, t_min, best_t)
            best_i = torch.where(better, ids[arg], best_i)
        return best_t, best_i

    def intersect_enu(self, origins: torch.Tensor, dirs: torch.Tensor) -> RayHits:
        """Nearest hit over the ground plane (seen from above) and all boxes.

        Args:
            origins: (N, 3) ENU metres; dirs: (N, 3) unit ENU.
        """
        origins, dirs = origins.float(), dirs.float()
        down = (dirs[:, 2] < 0) & (origins[:, 2] > 0)
        t_ground = torch.where(down, -origins[:, 2] / dirs[:, 2].clamp(max=-1e-30),
                               torch.full_like(dirs[:, 2], math.inf))
        t_box, box = self.nearest_box_hit(origins, dirs)
        on_box = t_box < t_ground
        depth = torch.where(on_box, t_box, t_ground)
        index = torch.where(on_box, box, torch.where(torch.isfinite(depth), GROUND, SKY))
        normal = torch.zeros_like(dirs)
        normal[index == GROUND] = torch.tensor([0.0, 0.0, 1.0])
        if bool(on_box.any()):
            ids = box[on_box]
            normal[on_box] = box_entry_normals(origins[on_box], dirs[on_box], self.box_lo[ids], self.box_hi[ids])
        return RayHits(depth, index, normal)

    # -- shading --------------------------------------------------------------------------------

    def building_albedo(self, points: torch.Tensor, normals: torch.Tensor, box_index: torch.Tensor) -> torch.Tensor:
        """Facade (windows in floors and columns) or roof (parapet rim) albedo.

        Args:
            points: (N, 3) ENU metres on the boxes; normals: (N, 3); box_index: (N,) int64.
        Returns:
            (N, 3) float32.
        """
        salt = self.layout.texture_seed
        owner = self.box_building[box_index]
        lo, hi = self.box_lo[box_index], self.box_hi[box_index]
        x, y, z = points.unbind(-1)

        # Roofs: slightly mottled, with a darker parapet rim 0.5 m wide.
        rim = torch.minimum(torch.minimum(x - lo[:, 0], hi[:, 0] - x),
                            torch.minimum(y - lo[:, 1], hi[:, 1] - y)) < 0.5
        mottle = 0.9 + 0.2 * value_noise(x, y, 1.5, salt + 10)
        roof = self._roof[owner] * (mottle * torch.where(rim, 0.75, 1.0)).unsqueeze(-1)

        # Walls: u runs along the wall in world coordinates so both arms of an L line up.
        u = torch.where(normals[:, 0].abs() > 0.5, y, x)
        floor_h, spacing = self._floor_h[owner], self._win_spacing[owner]
        v_frac = torch.remainder(z, floor_h) / floor_h
        u_frac = torch.remainder(u, spacing) / spacing
        window = ((v_frac > 0.3) & (v_frac < 0.75) & ((u_frac - 0.5).abs() < self._win_fraction[owner] / 2)
                  & (z > floor_h) & (z < hi[:, 2] - 0.5))
        grime = (0.93 + 0.14 * value_noise(u, z, 2.0, salt + 11)).unsqueeze(-1)
        wall = torch.where(window.unsqueeze(-1), self._window[owner], self._wall[owner] * grime)
        return torch.where((normals[:, 2] > 0.5).unsqueeze(-1), roof, wall).clamp(0, 1)

    def shade_enu(self, origins: torch.Tensor, dirs: torch.Tensor, hits: RayHits) -> torch.Tensor:
        """Lambert + ambient with hard sun shadows; sky gradient where nothing is hit.

        Returns:
            (N, 3) float32 linear RGB, before exposure and white balance.
        """
        lighting = self.layout.lighting
        origins, dirs = origins.float(), dirs.float()
        rgb = sky_color(lighting, dirs)
        hit = torch.isfinite(hits.depth)
        if not bool(hit.any()):
            return rgb
        points = origins[hit] + hits.depth[hit].unsqueeze(-1) * dirs[hit]
        normals, index = hits.normal[hit], hits.box_index[hit]
        albedo = torch.empty_like(points)
        ground = index == GROUND
        albedo[ground] = ground_albedo(self.layout, points[ground, 0], points[ground, 1])
        albedo[~ground] = self.building_albedo(points[~ground], normals[~ground], index[~ground])

        lambert = (normals @ self.sun).clamp(min=0)
        facing = lambert > 0
        # Start shadow rays 1 mm off the surface so they do not re-hit their own face.
        shadow_o = points[facing] + 1e-3 * normals[facing]
        t_block, _ = self.nearest_box_hit(shadow_o, self.sun.expand_as(shadow_o).contiguous())
        sunlit = torch.zeros_like(lambert)
        sunlit[facing] = torch.isfinite(t_block).logical_not().float()
        light = _rgb(lighting.ambient_color) + _rgb(lighting.sun_color) * (lambert * sunlit).unsqueeze(-1)
        rgb[hit] = albedo * light
        return rgb

    def trace_enu(self, origins: torch.Tensor, dirs: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Colour and depth of rays given in ENU metres (one batch, no chunking).

        Args:
            origins: (N, 3) ENU metres; dirs: (N, 3) unit ENU.
        Returns:
            rgb (N, 3) float32 in [0, ~1.05] before exposure; depth (N,) float32 metres, inf = sky.
        """
        hits = self.intersect_enu(origins, dirs)
        return self.shade_enu(origins, dirs, hits), hits.depth

    def cast(self, rays_o: torch.Tensor, rays_d: torch.Tensor,
             chunk_size: Optional[int] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """Exact colour and metric depth of arbitrary rays in the dataset's normalised DRB frame.

        Args:
            rays_o: (N, 3) normalised DRB origins (as ``c2w[:, 3]``).
            rays_d: (N, 3) DRB directions, any non-zero length (normalised here).
            chunk_size: rays per batch (memory bound), default :attr:`CHUNK`.
        Returns:
            rgb: (N, 3) float32 linear colour before exposure / white balance.
            depth: (N,) float32 *metric* distance along the unit ray, inf where nothing is hit.
            The hit point is ``rays_o + depth / pose_scale_factor * normalize(rays_d)``
            in normalised DRB.
        """
        chunk_size = chunk_size or self.CHUNK
        origins = self.normalized_drb_to_enu(rays_o.reshape(-1, 3)).float()
        dirs = torch.nn.functional.normalize(rays_d.reshape(-1, 3).double() @ ENU_TO_DRB, dim=-1).float()
        rgbs, depths = [], []
        for start in range(0, len(origins), chunk_size):
            rgb, depth = self.trace_enu(origins[start:start + chunk_size], dirs[start:start + chunk_size])
            rgbs.append(rgb)
            depths.append(depth)
        if not rgbs:
            return torch.zeros(0, 3), torch.zeros(0)
        return torch.cat(rgbs), torch.cat(depths)

    def render_image(self, c2w: torch.Tensor, intrinsics: Sequence[float], W: int,
                     H: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """Render one camera with the project's own pixel-ray convention.

        Args:
            c2w: (3, 4) normalised DRB, OpenGL columns; intrinsics: [fx, fy, cx, cy].
        Returns:
            rgb (H, W, 3) float32 before exposure; depth (H, W) float32 metres (inf = sky).
        """
        rays_o, rays_d = image_rays(W, H, torch.as_tensor(intrinsics, dtype=torch.float32),
                                    torch.as_tensor(c2w, dtype=torch.float32))
        rgb, depth = self.cast(rays_o, rays_d)
        return rgb.reshape(H, W, 3), depth.reshape(H, W)

    def surface_distance_enu(self, points: torch.Tensor) -> torch.Tensor:
        """Unsigned distance (m) to the nearest surface: the ground or any box's boundary.

        Args:
            points: (N, 3) ENU metres.
        Returns:
            (N,) float64.
        """
        p = points.double()
        best = p[:, 2].abs()
        if len(self.box_lo):
            lo, hi = self.box_lo.double().unsqueeze(0), self.box_hi.double().unsqueeze(0)
            pe = p.unsqueeze(1)
            outside = torch.maximum(torch.maximum(lo - pe, pe - hi), torch.zeros(())).norm(dim=-1)
            inside = torch.minimum(pe - lo, hi - pe).amin(-1).clamp(min=0)
            best = torch.minimum(best, torch.where(outside > 0, outside, inside).amin(-1))
        return best


# ----------------------------------------------------------------------------------------------
# Cameras


@dataclass(frozen=True)
class CameraPose:
    """A camera in ENU metres; ``rotation_enu`` columns are its right, up and back axes."""

    position_enu: Tuple[float, float, float]
    rotation_enu: Tuple[Tuple[float, ...], ...]  # (3, 3)
    view: str  # nadir, forward, right, backward, left


def look_rotation_enu(forward: np.ndarray, image_up: np.ndarray) -> np.ndarray:
    """(3, 3) rotation with columns (right, up, back) for a camera looking along ``forward``.

    ``image_up`` must be perpendicular to ``forward``; both unit ENU vectors.
    """
    right = np.cross(forward, image_up)
    return np.stack([right, image_up, -forward], axis=1)


def _waypoint_grid(preset: Preset, num_images: Optional[int]) -> Tuple[int, int]:
    """(rows, waypoints per row) of the flight; a requested image count re-spaces the grid."""
    if num_images is None:
        return preset.flight_rows, preset.waypoints_per_row
    waypoints = math.ceil(num_images / preset.images_per_waypoint)
    per_row = math.ceil(math.sqrt(waypoints))
    return math.ceil(waypoints / per_row), per_row


def _oblique_views(waypoint: int, position: np.ndarray, looks: Dict[str, np.ndarray], count: int,
                   reach_m: float, limit_m: float) -> List[str]:
    """Names of the ``count`` oblique views at one waypoint.

    Directions rotate from waypoint to waypoint (opposite pairs first) so every facade gets
    seen; directions whose view centre ``position + reach_m * dir`` falls outside the square
    ``|x|, |y| <= limit_m`` go last, so edge waypoints look back at the city, not the fields.
    """
    names = list(looks)
    order = [names[(waypoint + k) % 4] for k in (0, 2, 1, 3)]
    inside = [bool(np.abs(position[:2] + reach_m * looks[n][:2]).max() <= limit_m) for n in order]
    ranked = [n for n, ok in zip(order, inside) if ok] + [n for n, ok in zip(order, inside) if not ok]
    return ranked[:count]


def plan_flight(preset: Preset, num_images: Optional[int] = None) -> List[CameraPose]:
    """Lawn-mower flight at constant altitude: east/west rows stepping north.

    At each waypoint one nadir view (image top = flight heading) and
    ``obliques_per_waypoint`` views tilted ``oblique_tilt_deg`` off nadir towards the
    forward / right / backward / left of the heading (see :func:`_oblique_views`).
    ``num_images`` (optional) keeps the covered area and picks a grid with enough waypoints,
    then drops the surplus images at the end.
    """
    require(num_images is None or num_images >= 1, f"--num_images must be >= 1, got {num_images}")
    rows, per_row = _waypoint_grid(preset, num_images)
    e, up = preset.flight_half_extent_m, np.array([0.0, 0.0, 1.0])
    ys = np.linspace(-e, e, rows) if rows > 1 else np.zeros(1)
    xs = np.linspace(-e, e, per_row) if per_row > 1 else np.zeros(1)
    tilt = math.radians(preset.oblique_tilt_deg)
    reach, limit = preset.altitude_m * math.tan(tilt), preset.city_size_m / 2
    poses, waypoint = [], 0
    for row, y in enumerate(ys):
        heading = np.array([1.0, 0.0, 0.0]) if row % 2 == 0 else np.array([-1.0, 0.0, 0.0])
        right_of_heading = np.cross(heading, up)
        looks = {"forward": heading, "right": right_of_heading, "backward": -heading,
                 "left": -right_of_heading}
        for x in (xs if row % 2 == 0 else xs[::-1]):
            position = np.array([x, y, preset.altitude_m], dtype=np.float64)
            obliques = _oblique_views(waypoint, position, looks, preset.obliques_per_waypoint, reach, limit)
            views = [("nadir", heading, 0.0)] + [(name, looks[name], tilt) for name in obliques]
            for view, horizontal, angle in views:
                forward = math.cos(angle) * -up + math.sin(angle) * horizontal
                image_up = math.cos(angle) * horizontal + math.sin(angle) * up
                rotation = look_rotation_enu(forward, image_up)
                poses.append(CameraPose(tuple(position.tolist()), tuple(map(tuple, rotation.tolist())), view))
            waypoint += 1
    return poses[:num_images] if num_images is not None else poses


def pinhole_intrinsics(W: int, H: int, horizontal_fov_deg: float) -> List[float]:
    """[fx, fy, cx, cy] with square pixels and the principal point at the image centre."""
    fx = (W / 2) / math.tan(math.radians(horizontal_fov_deg) / 2)
    return [fx, fx, W / 2, H / 2]


def normalization_for(positions_enu: np.ndarray) -> Tuple[List[float], float]:
    """``(origin_drb, pose_scale_factor)`` for cameras at ``positions_enu`` (N, 3) metres.

    The origin is the centre of the cameras' bounding box (metric DRB), rounded to float32 as
    coordinates.pt stores it.  The scale leaves 20 % margin around the cameras and keeps the
    ground under them (DRB x = 0) inside [-1, 1] as well.
    """
    drb = positions_enu @ ENU_TO_DRB.numpy().T
    origin = (drb.max(0) + drb.min(0)) / 2
    origin = np.asarray(origin, dtype=np.float32).astype(np.float64)
    half_extent = float(np.abs(drb - origin).max())
    scale = max(1.2 * half_extent, 1.1 * abs(float(origin[0])), 1.0)
    return origin.tolist(), scale


def c2w_normalized_drb(pose: CameraPose, origin_drb: Sequence[float], pose_scale_factor: float) -> torch.Tensor:
    """(3, 4) float32 stored c2w: OpenGL columns in DRB, normalised translation."""
    rotation = ENU_TO_DRB @ torch.tensor(pose.rotation_enu, dtype=torch.float64)
    position = ENU_TO_DRB @ torch.tensor(pose.position_enu, dtype=torch.float64)
    translation = (position - torch.tensor(origin_drb, dtype=torch.float64)) / pose_scale_factor
    return torch.cat([rotation, translation.unsqueeze(1)], dim=1).float()


# ----------------------------------------------------------------------------------------------
# Appearance


@dataclass(frozen=True)
class Appearance:
    """Per-image camera response: ``out = clamp(rgb * exposure * white_balance, 0, 1)``."""

    exposure: float
    white_balance: Tuple[float, float, float]


def sample_appearances(seed: int, count: int) -> List[Appearance]:
    """Exposure ~ U[0.75, 1.25] and per-channel white balance ~ U[0.9, 1.1], per image."""
    rng = np.random.default_rng([int(seed), 1])
    return [Appearance(round(float(rng.uniform(0.75, 1.25)), 4),
                       tuple(round(float(g), 4) for g in rng.uniform(0.9, 1.1, 3))) for _ in range(count)]


def apply_appearance(rgb: torch.Tensor, appearance: Appearance) -> np.ndarray:
    """(H, W, 3) float linear colour -> (H, W, 3) uint8 after exposure and white balance."""
    gain = appearance.exposure * torch.tensor(appearance.white_balance, dtype=torch.float32)
    return (rgb * gain).clamp(0, 1).mul(255).round().to(torch.uint8).numpy()


# ----------------------------------------------------------------------------------------------
# Dataset writing


def split_of(index: int, val_every: int) -> str:
    """Every ``val_every``-th image, starting at ``val_every // 2``, is a validation image."""
    return "val" if index % val_every == val_every // 2 else "train"


def ray_altitude_range_for(max_height_m: float) -> List[float]:
    """[top, ground] in metric DRB x (down): 10 % + 1 m above the tallest box, 1 m below ground."""
    return [round(-max_height_m * 1.1 - 1.0, 3), 1.0]


@dataclass(frozen=True)
class DatasetSummary:
    path: Path
    num_train: int
    num_val: int
    image_width: int
    image_height: int
    num_buildings: int
    num_boxes: int


def _config_yaml(preset: Preset, seed: int, max_height_m: float) -> str:
    header = (f"# Synthetic city (preset '{preset.name}', seed {seed}), written by "
              f"scripts/make_synthetic_scene.py.\n"
              f"# Pass to any stage with --config_file DATASET/config.yaml.\n"
              f"# ray_altitude_range: [top, ground] in metric DRB x (x points down, so top = "
              f"-height); it brackets all geometry (tallest box {max_height_m:.2f} m).\n")
    body = {"ray_altitude_range": ray_altitude_range_for(max_height_m), "near": 1,
            "train_scale_factor": 1, "val_scale_factor": preset.val_scale_factor}
    # Training settings sized for this preset live in configs/synthetic_<preset>.yaml.
    training = Path(__file__).resolve().parents[2] / "configs" / f"synthetic_{preset.name}.yaml"
    if training.exists():
        body.update({k: v for k, v in (yaml.safe_load(training.read_text()) or {}).items() if k not in body})
        header += f"# Training settings from configs/synthetic_{preset.name}.yaml.\n"
    return header + yaml.safe_dump(body, default_flow_style=None, sort_keys=False)


@contextlib.contextmanager
def torch_threads(count: int):
    """Temporarily run torch ops on ``count`` threads."""
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def write_dataset(output: Path, preset: str = "tiny", seed: int = 0, image_width: Optional[int] = None,
                  num_images: Optional[int] = None, progress: bool = True,
                  num_threads: int = 1) -> DatasetSummary:
    """Generate a synthetic city dataset in Mega-NeRF's layout at ``output``.

    Images stream to a sibling staging folder ``OUTPUT.tmp-xxxx`` one by one, which is renamed
    to ``output`` only when complete, so a crash never leaves a half dataset under that name.

    Writes coordinates.pt, {train,val}/{rgbs,metadata,depths}, config.yaml (scene options),
    scene.json (the full scene, see :func:`load_scene`) and appearance.json (per-image gains).

    ``num_threads`` defaults to 1: the ray batches are small, so OpenMP synchronisation costs
    more than it gains (on a loaded 2-core machine, 30x more); the output does not depend on it.

    Raises:
        UserError: ``output`` exists and is not empty, or a size override is invalid.
    """
    require(num_threads >= 1, f"--num_threads must be >= 1, got {num_threads}")
    with torch_threads(num_threads):
        return _write_dataset(Path(output), preset, seed, image_width, num_images, progress)


def _write_dataset(output: Path, preset: str, seed: int, image_width: Optional[int],
                   num_images: Optional[int], progress: bool) -> DatasetSummary:
    check_output_free(output)
    config = resolve_preset(preset, image_width)
    layout = generate_layout(config, seed)
    poses = plan_flight(config, num_images)
    origin_drb, scale = normalization_for(np.array([p.position_enu for p in poses]))
    city = SyntheticCity(layout, origin_drb, scale)
    W, H = config.image_width, config.image_height
    intrinsics = pinhole_intrinsics(W, H, config.horizontal_fov_deg)
    appearances = sample_appearances(seed, len(poses))

    with staged_folder(output) as staging:
        write_coordinates(staging, origin_drb, scale)
        records = {}
        for index, (pose, appearance) in enumerate(tqdm(list(zip(poses, appearances)), desc="rendering",
                                                        unit="img", disable=not progress)):
            stem, split = f"{index:06d}", split_of(index, config.val_every)
            c2w = c2w_normalized_drb(pose, origin_drb, scale)
            rgb, depth = city.render_image(c2w, intrinsics, W, H)
            write_image(staging, split, stem, apply_appearance(rgb, appearance), intrinsics, c2w,
                        image_suffix=".png", depth=depth.numpy())
            records[stem] = {"split": split, "view": pose.view, "exposure": appearance.exposure,
                             "white_balance": list(appearance.white_balance)}
        num_val = sum(r["split"] == "val" for r in records.values())
        atomic_write_json({"description": "per-image gains: out = clamp(rgb * exposure * white_balance, 0, 1)",
                           "images": records}, staging / "appearance.json")
        atomic_write_json({
            "format": SCENE_FORMAT, "preset": config.name, "seed": int(seed),
            "units": "ENU metres (x east, y north, z up, ground z = 0); boxes are "
                     "[xmin, ymin, zmin, xmax, ymax, zmax]; origin_drb in metric DRB",
            "origin_drb": origin_drb, "pose_scale_factor": scale,
            "flight_altitude_m": config.altitude_m, "image_width": W, "image_height": H,
            "intrinsics": intrinsics, "num_images": len(poses), "num_train": len(poses) - num_val,
            "num_val": num_val, "ray_altitude_range": ray_altitude_range_for(layout.max_height_m),
            "max_height_m": layout.max_height_m, "num_boxes": len(layout.boxes),
            "layout": layout.to_json(),
        }, staging / "scene.json")
        atomic_write_text(_config_yaml(config, seed, layout.max_height_m), staging / "config.yaml")
    return DatasetSummary(output, len(poses) - num_val, num_val, W, H, len(layout.buildings), len(layout.boxes))


def load_scene(dataset_path: Path) -> SyntheticCity:
    """Rebuild the exact renderer of a generated dataset from its ``scene.json``."""
    path = Path(dataset_path) / "scene.json"
    require(path.is_file(), f"{path}: missing; only datasets written by make_synthetic_scene.py have it")
    try:
        data = json.loads(path.read_text())
        require(data.get("format") == SCENE_FORMAT,
                f"{path}: format {data.get('format')!r} is not {SCENE_FORMAT!r}; regenerate the dataset")
        return SyntheticCity(CityLayout.from_json(data["layout"]), data["origin_drb"], data["pose_scale_factor"])
    except (ValueError, KeyError, TypeError) as e:
        raise UserError(f"{path}: cannot parse ({type(e).__name__}: {e}); regenerate the dataset") from None
