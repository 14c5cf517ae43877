"""From the source world to Mega-NeRF's metric DRB frame, and the normalisation.

DRB: x = down, y = right, z = back (altitude is -x; see :mod:`mega_nerf.data.format`).  The
source world is rotated so its up vector becomes -x and scaled to metres; a z-up ENU world
maps exactly as Mega-NeRF's ``colmap_to_mega_nerf.py`` maps it: ``(x, y, z) -> (-z, x, -y)``.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from mega_nerf.errors import UserError, require

_AXES = {"x": 0, "y": 1, "z": 2}


def parse_up(text: str) -> Optional[np.ndarray]:
    """``'+z'``, ``'-y'``, ``'0,0,1'`` -> unit (3,) vector; ``'auto'`` -> None."""
    text = text.strip().lower()
    if text == "auto":
        return None
    if len(text) in (1, 2) and text[-1] in _AXES and text[:-1] in ("", "+", "-"):
        up = np.zeros(3)
        up[_AXES[text[-1]]] = -1.0 if text.startswith("-") else 1.0
        return up
    try:
        up = np.array([float(v) for v in text.split(",")], dtype=np.float64)
    except ValueError:
        up = np.zeros(0)
    require(up.shape == (3,) and np.linalg.norm(up) > 0,
            f"--up {text}: expected auto, an axis such as +z or -y, or a vector such as 0,0,1")
    return up / np.linalg.norm(up)


def estimate_up(c2w: np.ndarray) -> np.ndarray:
    """World up from camera poses.

    Cameras are rarely rolled, so their right axes are horizontal: when the headings vary, up
    is the direction most orthogonal to all right axes (smallest singular vector).  When they
    barely vary (a drone flying one heading, or back and forth), that leaves a plane of
    candidates; the cameras' positions then decide: a flight at constant altitude spans a
    horizontal plane, whose normal is up.  The sign makes up agree with the cameras' average
    up minus their average viewing direction (cameras look level or down).  The average up
    vector alone would lie flat for nadir views.

    Args:
        c2w: (N, 3, 4) OpenCV camera-to-world.
    Returns:
        (3,) unit up vector.
    Raises:
        UserError: the poses cannot tell (one heading along one straight line).
    """
    right, down, forward, positions = c2w[:, :, 0], c2w[:, :, 1], c2w[:, :, 2], c2w[:, :, 3]
    hint = -down.mean(0) - forward.mean(0)
    count = len(c2w)
    _, s, vt = np.linalg.svd(right, full_matrices=False)
    if count >= 3 and s[1] > 0.15 * np.sqrt(count):
        up = vt[2]
    else:
        _, ps, pvt = np.linalg.svd(positions - positions.mean(0), full_matrices=False)
        planar = count >= 3 and ps[1] > 0.1 * ps[0] and ps[2] < 0.5 * ps[1]
        require(planar, "cannot tell which way is up: the cameras share one heading and do not span a "
                        "plane; pass --up (e.g. --up +z for a z-up model)")
        up = pvt[2] - vt[0] * (pvt[2] @ vt[0])
    if up @ hint < 0:
        up = -up
    norm = np.linalg.norm(up)
    if not np.isfinite(norm) or norm < 1e-9:
        raise UserError("cannot tell which way is up from the cameras; pass --up (e.g. --up +z)")
    return up / norm


def drb_rotation(up: np.ndarray) -> np.ndarray:
    """(3, 3) rotation ``R`` with ``R @ up = (-1, 0, 0)``: world vectors to DRB.

    The DRB right axis (y) is the first world axis (x, then y) not close to ``up``, made horizontal;
    back (z) completes a right-handed frame.  For ``up = +z`` this is ``(x, y, z) -> (-z, x, -y)``.
    """
    up = np.asarray(up, dtype=np.float64) / np.linalg.norm(up)
    axis = np.eye(3)[next(i for i in range(3) if abs(up[i]) < 0.9)]
    right = axis - up * (axis @ up)
    right /= np.linalg.norm(right)
    down = -up
    return np.stack([down, right, np.cross(down, right)])


def normalization(camera_positions: np.ndarray, points: Optional[np.ndarray] = None) -> Tuple[np.ndarray, float]:
    """``(origin_drb (3,), pose_scale_factor)`` as Mega-NeRF's ``colmap_to_mega_nerf.py`` picks them.

    The origin is the centre of the cameras' bounding box; the scale is the smallest that puts
    every camera inside [-1, 1] (Mega-NeRF asserts this), widened so the bulk of the sparse
    points (1st-99th percentile per axis) fits too.

    Args:
        camera_positions: (N, 3) metric DRB.
        points: (P, 3) metric DRB, or None.
    """
    origin = (camera_positions.max(0) + camera_positions.min(0)) / 2
    origin = origin.astype(np.float32).astype(np.float64)  # as coordinates.pt stores it
    extent = np.abs(camera_positions - origin).max()
    if points is not None and len(points) >= 10:
        lo, hi = np.percentile(points, [1, 99], axis=0)
        extent = max(extent, np.abs(lo - origin).max(), np.abs(hi - origin).max())
    require(extent > 0, "all cameras are at the same position; cannot choose a scale")
    return origin, float(extent)
