"""Suggested scene options for an imported capture: altitude range, near/far, foreground box.

Everything here is metric DRB (x = down, so altitude = -x).  The scene's content comes from
its sparse points, or where a source has none from LLFF depth bounds or Instant-NGP's scene
box (see :func:`mega_nerf.data.importers.writer.scene_content`).

Two kinds of capture:

* **aerial** (the median view is within ~45 deg of nadir): ``ray_altitude_range`` is
  ``[top, ground]``: ground = a high percentile of the points' x plus a margin, top = a low
  percentile (the tallest structures) minus a generous margin, as Mega-NeRF's author advises.
* **object** (lego, fox: views converge on something): the altitude planes bracket a
  foreground box around the content, which the current options accept; the box itself is
  written as comments for foreground-bounds options.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np
import yaml

SCENE_KINDS = ("auto", "aerial", "object")


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


def _look_at_point(positions: np.ndarray, forward: np.ndarray) -> np.ndarray:
    """(3,) least-squares point nearest to every optical axis (damped towards the cameras' centre)."""
    projectors = np.eye(3)[None] - forward[:, :, None] * forward[:, None, :]
    A = projectors.sum(0) + 1e-3 * len(positions) * np.eye(3)
    b = (projectors @ positions[:, :, None]).sum(0)[:, 0] + 1e-3 * len(positions) * positions.mean(0)
    return np.linalg.solve(A, b)


def plan_scene(camera_positions: np.ndarray, forward: np.ndarray, content: Optional[np.ndarray],
               kind: str = "auto") -> ScenePlan:
    """Suggest ``ray_altitude_range``, near and the foreground box.

    Args:
        camera_positions: (N, 3) metric DRB.
        forward: (N, 3) unit viewing directions, DRB.
        content: (P, 3) metric DRB samples of the scene (sparse points...), or None.
        kind: ``'auto'``, ``'aerial'`` or ``'object'``.
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
            centre = _look_at_point(camera_positions, forward)
            radius = 0.5 * float(np.median(np.linalg.norm(camera_positions - centre, axis=-1)))
            content = centre + radius * np.array([[-1, -1, -1], [1, 1, 1]])
            notes.append("No sparse points or scene box: the foreground is GUESSED as a box around the point the "
                         "cameras look at, half as far from it as the cameras.")
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
        pad = 0.05 * (hi - lo).max()
        lo, hi = lo - pad, hi + pad
        top, ground = float(lo[0]), float(hi[0])
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
            "# [xmin, ymin, zmin, xmax, ymax, zmax]; the altitude planes bracket the same box (masks need them).",
            f"# Farthest box corner from a camera: {_fmt(plan.far)} (a far plane, should you want one).",
        ]
        if background == "white":
            lines.append("# Images with alpha were composited on white (NeRF-synthetic protocol): train that way.")
            body.update(no_bg_nerf=True, white_background=True)
        elif background is not None:
            lines.append(f"# Images with alpha were composited on {background}.")
    else:
        body["val_scale_factor"] = val_scale_factor
        lines += [f"# near: half the distance from a camera to the nearest content ({_fmt(plan.near)}); rays "
                  f"going down start at the top plane anyway.",
                  "# far: unset (auto): rays end at the ground plane; others go to the background model."]
    return "\n".join(lines) + "\n" + yaml.safe_dump(body, default_flow_style=None, sort_keys=False)
