"""Undistort images to a pinhole camera and downscale them (OpenCV).

Our cameras put pixel centres at ``+0.5`` (COLMAP); OpenCV puts them at integers, so the
principal point is shifted by half a pixel on the way into and out of OpenCV.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Tuple

import cv2
import numpy as np

from mega_nerf.data.importers.common import Camera
from mega_nerf.errors import require

_HALF = np.array([[1, 0, -0.5], [0, 1, -0.5], [0, 0, 1]])


def _opencv_K(camera: Camera) -> np.ndarray:
    return _HALF @ camera.K


def _camera_from_opencv_K(K: np.ndarray, width: int, height: int) -> Camera:
    K = np.linalg.inv(_HALF) @ K
    return Camera(width, height, float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2]))


def pinhole_camera(camera: Camera) -> Camera:
    """The pinhole camera of the same size whose image holds only valid (non-border) pixels.

    Perspective models use ``cv2.getOptimalNewCameraMatrix(alpha=0)``, fisheye models
    ``cv2.fisheye.estimateNewCameraMatrixForUndistortRectify(balance=0)``; a camera without
    distortion is returned unchanged.
    """
    if camera.is_pinhole:
        return camera
    size = (camera.width, camera.height)
    D = np.asarray(camera.distortion, dtype=np.float64)
    if camera.fisheye:
        K = cv2.fisheye.estimateNewCameraMatrixForUndistortRectify(_opencv_K(camera), D, size, np.eye(3),
                                                                   balance=0.0)
    else:
        K, _ = cv2.getOptimalNewCameraMatrix(_opencv_K(camera), D, size, 0, size)
    require(np.isfinite(K).all() and K[0, 0] > 0 and K[1, 1] > 0,
            f"camera distortion {camera.distortion} cannot be undistorted to a valid pinhole camera")
    return _camera_from_opencv_K(K, camera.width, camera.height)


def undistort_maps(camera: Camera, pinhole: Camera) -> Tuple[np.ndarray, np.ndarray]:
    """``cv2.remap`` maps from ``camera``'s image to ``pinhole``'s (float32 (H, W) each)."""
    D = np.asarray(camera.distortion, dtype=np.float64)
    size = (pinhole.width, pinhole.height)
    if camera.fisheye:
        return cv2.fisheye.initUndistortRectifyMap(_opencv_K(camera), D, np.eye(3), _opencv_K(pinhole),
                                                   size, cv2.CV_32FC1)
    return cv2.initUndistortRectifyMap(_opencv_K(camera), D, None, _opencv_K(pinhole), size, cv2.CV_32FC1)


def downscaled(camera: Camera, factor: int) -> Camera:
    """The pinhole camera at ``1/factor`` size (``W // factor`` x ``H // factor``).

    Intrinsics scale by the actual size ratio per axis, which is exact for pixel-centre
    ``+0.5`` conventions whatever the rounding.
    """
    require(factor >= 1, f"--downscale must be >= 1, got {factor}")
    if factor == 1:
        return camera
    W, H = camera.width // factor, camera.height // factor
    require(W >= 1 and H >= 1, f"--downscale {factor}: images of {camera.width}x{camera.height} would vanish")
    sx, sy = W / camera.width, H / camera.height
    return replace(camera, width=W, height=H, fx=camera.fx * sx, fy=camera.fy * sy,
                   cx=camera.cx * sx, cy=camera.cy * sy)


class Undistorter:
    """Source image -> undistorted, downscaled pinhole image; maps are cached per camera."""

    def __init__(self, downscale: int = 1):
        self.downscale = downscale
        self._cache = {}

    def target(self, camera: Camera) -> Camera:
        """The pinhole camera the image of ``camera`` is written with."""
        return self._prepare(camera)[0]

    def _prepare(self, camera: Camera):
        if camera not in self._cache:
            pinhole = pinhole_camera(camera)
            maps = None if camera.is_pinhole else undistort_maps(camera, pinhole)
            self._cache[camera] = (downscaled(pinhole, self.downscale), maps)
        return self._cache[camera]

    def __call__(self, image: np.ndarray, camera: Camera) -> np.ndarray:
        """uint8 (H, W, 3) at ``camera``'s size -> uint8 (H', W', 3) at :meth:`target`'s size."""
        target, maps = self._prepare(camera)
        if maps is not None:
            image = cv2.remap(image, maps[0], maps[1], interpolation=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REPLICATE)
        if (target.width, target.height) != (image.shape[1], image.shape[0]):
            image = cv2.resize(image, (target.width, target.height), interpolation=cv2.INTER_AREA)
        return image
