"""Suggested scene options for an imported capture: altitude range, near/far, foreground box.

Everything here is metric DRB (x = down, so altitude = -x).  The scene's content comes from
its sparse points, or where a source has none from LLFF depth bounds or Instant-NGP's scene
box (see :func:`mega_nerf.data.importers.writer.scene_content`).

Two kinds of capture:

* **aerial** (the median view is within ~45 deg of nadir): ``ray_altitude_range`` is
  ``[top, ground]``: ground = a high percentile of the points' x plus a margin, top = a low
  percentile (the tallest structures) minus a generous margin, as Mega-NeRF's author advises.
* **object** (lego, fox: views converge on something): ``foreground_bounds`` is a box around
  the content (padded 5 %); the altitude planes bracket it with a margin (masks need them; the
  box already clips the foreground, and with the margin rays that leave the box through its
  bottom face still reach the background model before the ground plane ends them).  Without
  sparse points or a scene box the content is estimated from the cameras
  (:func:`camera_content`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np
import yaml

SCENE_KINDS = ("auto", "aerial", "object")

#: Padding of an object's content box on each side, as a fraction of its largest extent.
BOX_PAD = 0.05


def _fmt(value: float) -> float:
    return float(f"{value:.4g}")


@dataclass
class ScenePlan:
    """Suggested options, metric DRB."""

    kind: str
    ray_altitude_range: List[float]  # [top, ground], metric DRB x
    near: float  # metres along the ray
    far: float  # metres: farthest content from any camera
    box_min: np.ndarray  # (3,) foreground box
    box_max: np.ndarray  # (3,)
    notes: List[str] = field(default_factory=list)


def scene_kind(forward: np.ndarray) -> str:
    """``'aerial'`` when the median view direction is within ~45 deg of straight down.

    Args:
        forward: (N, 3) unit viewing directions, DRB.
    """
    return "aerial" if float(np.median(forward[:, 0])) > 0.7 else "object"


def _subsample(points: np.ndarray, count: int = 20000) -> np.ndarray:
    if len(points) <= count:
        return points
    return points[np.random.default_rng(0).choice(len(points), count, replace=False)]


def _box_distance(positions: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """(N,) distance from each position to an axis-aligned box (0 inside)."""
    return np.linalg.norm(np.maximum(np.maximum(lo - positions, positions - hi), 0), axis=-1)


def _look_at_point(positions: np.ndarray, forward: np.ndarray, iterations: int = 20) -> np.ndarray:
    """(3,) the point nearest to every optical axis: least squares over the distances from the
    point to each axis, re-weighted (Cauchy weights, scale twice the median distance) so a few
    cameras aimed elsewhere barely move it, and damped towards the cameras' centre (parallel
    axes meet nowhere)."""
    eye = np.eye(3)
    projectors = eye[None] - forward[:, :, None] * forward[:, None, :]  # onto each axis' normal plane
    weights = np.ones(len(positions))
    spread = float(np.linalg.norm(positions - positions.mean(0), axis=-1).max()) + 1e-12
    for _ in range(iterations):
        A = (weights[:, None, None] * projectors).sum(0) + 1e-3 * weights.sum() * eye
        b = (weights[:, None, None] * projectors @ positions[:, :, None]).sum(0)[:, 0] + \
            1e-3 * weights.sum() * positions.mean(0)
        point = np.linalg.solve(A, b)
        miss = np.linalg.norm((projectors @ (point - positions)[:, :, None])[:, :, 0], axis=-1)
        scale = max(2 * float(np.median(miss)), 1e-6 * spread)
        weights = 1 / (1 + (miss / scale) ** 2)
    return point


@dataclass
class CameraContent:
    """Where the content of an object capture is, from the cameras alone (see :func:`camera_content`)."""

    centre: np.ndarray  # (3,) the point the optical axes converge on
    radius: float  # half-size of the (unpadded) content cube
    distance: float  # median camera distance from centre
    framed_short: float  # radius of the sphere the median camera frames along its short side
    framed_long: float  # ... along its long side
    nearest_camera: float  # L-inf distance from centre to the nearest camera
    converges: bool  # the look-at point lies in front of most cameras


def camera_content(positions: np.ndarray, forward: np.ndarray, half_fov: np.ndarray) -> CameraContent:
    """The content of an object capture without sparse points: a cube around the look-at point.

    Centre: the point the optical axes converge on (:func:`_look_at_point`).  Size: a camera at
    distance d from that point, half field of view a, frames exactly a sphere of radius
    d sin(a) around it (the sphere's silhouette touches the frame).  Photographers fill the
    frame with what they capture, so the content's radius lies between the sphere the median
    camera frames along the short side of the image (it fits whole) and the one along the long
    side (it fills the long side; portrait photos of an upright object).  Too small a box cuts
    the object, which the background model then renders coarsely; too large only spends the
    fields' resolution: so take the long side, but shrink towards the short side until the
    padded cube holds no camera (the content lies in front of the cameras, and a box holding
    cameras holds more than the object).  On NeRF-synthetic lego (d 4.03, a 19.8 deg) this gives
    +-1.37 (+-1.5 padded: the box hand-set in configs/bench/lego.yaml); on Instant-NGP's fox (d
    4.85, portrait, a 21.4 / 34.9 deg: 1.77 .. 2.78) +-2.32 (+-2.56 padded), held back by the
    nearest camera (2.68 per axis); it holds the wall-mounted fox head that the COLMAP points
    show (its snout ~2.5 units out of the wall, on which the optical axes converge).

    Args:
        positions: (N, 3) camera centres; forward: (N, 3) unit optical axes.
        half_fov: (N, 2) each camera's half fields of view in radians (either order).
    """
    centre = _look_at_point(positions, forward)
    offset = centre - positions
    distance = np.linalg.norm(offset, axis=-1)
    converges = bool(np.median((offset * forward).sum(-1)) > 0)
    framed_short = float(np.median(distance * np.sin(half_fov.min(-1))))
    framed_long = float(np.median(distance * np.sin(half_fov.max(-1))))
    nearest = float(np.abs(offset).max(-1).min())
    # The padded cube's half-size is radius * (1 + 2 BOX_PAD); keep the nearest camera 5 % outside.
    radius = float(np.clip(nearest / (1.05 * (1 + 2 * BOX_PAD)), framed_short, framed_long))
    return CameraContent(centre, radius, float(np.median(distance)), framed_short, framed_long, nearest, converges)


def plan_scene(camera_positions: np.ndarray, forward: np.ndarray, content: Optional[np.ndarray],
               kind: str = "auto", half_fov: Optional[np.ndarray] = None) -> ScenePlan:
    """Suggest ``ray_altitude_range``, near and the foreground box.

    Args:
        camera_positions: (N, 3) metric DRB.
        forward: (N, 3) unit viewing directions, DRB.
        content: (P, 3) metric DRB samples of the scene (sparse points...), or None.
        kind: ``'auto'``, ``'aerial'`` or ``'object'``.
        half_fov: (N, 2) half fields of view (radians) of each camera, for an object capture
            without ``content``; None: 30 deg.
    """
    kind = scene_kind(forward) if kind == "auto" else kind
    notes = []
    if content is None or len(content) < 4:
        if kind == "aerial":
            # Nadir axes do not meet: assume the ground lies as far below as the flight is wide.
            width = float(np.ptp(camera_positions[:, 1:], axis=0).max())
            ground = np.median(camera_positions[:, 0]) + max(width, 1e-3)
            content = camera_positions.copy()
            content[:, 0] = ground
            notes.append("No sparse points or depth bounds: the ground is GUESSED as far below the cameras as "
                         "the flight is wide; check it.")
        else:
            if half_fov is None:
                half_fov = np.full((len(camera_positions), 2), np.radians(30.0))
            est = camera_content(camera_positions, forward, half_fov)
            corners = np.array(np.meshgrid([-1, 1], [-1, 1], [-1, 1], indexing="ij")).reshape(3, -1).T
            content = est.centre + est.radius * corners  # 8 corners: the percentiles below keep them
            notes.append(f"No sparse points or scene box: the foreground box is ESTIMATED from the cameras, a cube "
                         f"of half-size {_fmt(est.radius)} (before padding) around the point their optical axes "
                         f"converge on {[_fmt(v) for v in est.centre]}, median camera distance "
                         f"{_fmt(est.distance)}: between the spheres the median camera frames along its short "
                         f"({_fmt(est.framed_short)}) and long ({_fmt(est.framed_long)}) image side, as large as "
                         f"holds no camera (nearest at {_fmt(est.nearest_camera)} per axis). Check it in scene.png.")
            if not est.converges:
                notes.append("The cameras' optical axes do not converge in front of them (a forward-facing or "
                             "outward-looking capture?): this box is a GUESS; pass foreground_bounds yourself.")
    content = _subsample(content)
    lo, hi = np.percentile(content, [1, 99], axis=0)
    nearest = np.sqrt(((camera_positions[:, None, :] - content[None, :, :]) ** 2).sum(-1)).min(1)
    if kind == "aerial":
        # A top plane that cuts a roof or tree is much worse than a few wasted samples: be generous.
        clearance = max(hi[0] - float(np.median(camera_positions[:, 0])), 1e-6)
        span = hi[0] - lo[0]
        highest = min(lo[0], float(np.percentile(content[:, 0], 0.1)))
        ground = hi[0] + max(0.1 * span, 0.05 * clearance)
        top = max(highest - max(0.5 * span, 0.25 * clearance), float(camera_positions[:, 0].min()))
        near = 0.5 * float(np.percentile(nearest, 5))
        notes.append(f"ground = 99th percentile of the scene's x ({hi[0]:.4g}) + 5 % of the camera height; top = "
                     f"0.1th percentile ({highest:.4g}) - 25 % of the camera height, for structures the sparse "
                     f"points miss.")
    else:
        pad = BOX_PAD * (hi - lo).max()
        lo, hi = lo - pad, hi + pad
        # The planes bracket the box with a margin: they never cut what the box holds, and rays that
        # leave the box through its bottom face still reach the background model before the ground
        # plane ends them (a plane on the face itself would make that depend on rounding).  The
        # ground also stays below every camera: a camera under it has no segment for rays going down.
        top = float(lo[0] - pad)
        ground = float(max(hi[0], camera_positions[:, 0].max()) + pad)
        dist_centre = np.linalg.norm(camera_positions - (lo + hi) / 2, axis=-1)
        near = max(0.9 * float(_box_distance(camera_positions, lo, hi).min()), 0.05 * float(np.median(dist_centre)))
    corners = np.array(np.meshgrid(*zip(lo, hi), indexing="ij")).reshape(3, -1).T
    far = float(np.linalg.norm(camera_positions[:, None] - corners[None], axis=-1).max())
    return ScenePlan(kind, [float(top), float(ground)], float(near), far, np.asarray(lo), np.asarray(hi), notes)


def config_yaml(plan: ScenePlan, origin_drb: np.ndarray, pose_scale_factor: float, camera_positions: np.ndarray,
                content_description: str, source: str, metric: bool, val_scale_factor: int,
                background: Optional[str]) -> str:
    """The dataset's ``config.yaml``: scene options with comments that explain each value."""
    top, ground = plan.ray_altitude_range
    unit = "metres" if metric else "source units (not known to be metres; see --scale_metres)"
    cam_alt = -float(np.median(camera_positions[:, 0]))
    lines = [
        f"# Written by scripts/prepare_dataset.py from {source} ({plan.kind} capture).",
        "# Pass to any stage with --config_file DATASET/config.yaml.",
        f"# Frame: DRB (x = down, y = right, z = back) in {unit}; altitude = -x (higher is more negative).",
        f"# origin_drb {[_fmt(v) for v in origin_drb]}, pose_scale_factor {_fmt(pose_scale_factor)}.",
        f"# Scene content from {content_description}.",
        f"# ray_altitude_range = [top, ground] in metric DRB x: altitude {_fmt(-top)} down to {_fmt(-ground)}; "
        f"cameras at altitude ~{_fmt(cam_alt)}.",
    ]
    lines += [f"# {note}" for note in plan.notes]
    body = {"ray_altitude_range": [_fmt(top), _fmt(ground)], "near": _fmt(plan.near)}
    if plan.kind == "object":
        body["val_scale_factor"] = val_scale_factor
        body["foreground_bounds"] = [_fmt(v) for v in np.concatenate([plan.box_min, plan.box_max])]
        lines += [
            "# Object-centric capture: foreground_bounds is a box around the content (padded 5 %), metric DRB",
            "# [xmin, ymin, zmin, xmax, ymax, zmax]; the altitude planes bracket the same box with a 5 % margin",
            "# (masks need them), the ground below every camera too.",
            f"# Farthest box corner from a camera: {_fmt(plan.far)} (a far plane, should you want one).",
        ]
        if background == "white":
            lines.append("# Images with alpha were composited on white (NeRF-synthetic protocol): train that way.")
            body.update(no_bg_nerf=True, white_background=True)
        elif background is not None:
            lines.append(f"# Images with alpha were composited on {background}.")
        else:
            lines.append("# Photos without alpha: what lies outside the box (the room) is the background model's "
                         "(bg_nerf, on by default); far unset (auto).")
    else:
        body["val_scale_factor"] = val_scale_factor
        body["ellipse_footprint"] = True
        lines += [f"# near: half the distance from a camera to the nearest content ({_fmt(plan.near)}); rays "
                  f"going down start at the top plane anyway.",
                  "# far: unset (auto): rays end at the ground plane; others go to the background model.",
                  "# ellipse_footprint: the foreground ellipsoid holds the ground every image sees, not only the "
                  "cameras,",
                  "# so image edges are foreground (Mega-NeRF's ellipsoid leaves them to the background model)."]
    return "\n".join(lines) + "\n" + yaml.safe_dump(body, default_flow_style=None, sort_keys=False)
