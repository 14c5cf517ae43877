"""Frames from a video for structure-from-motion: a target count or rate, the sharpest per window.

Blur: the sharpness of a frame is the variance of its Laplacian (on a grey copy whose long side
is at most :data:`SHARPNESS_SIZE` pixels, so the measure does not depend on the resolution).
The decoded frames are cut into equal windows, one per wanted frame, and the sharpest frame of
each window is kept, so motion-blurred frames are skipped while the frames stay spread evenly
over time.

The video is decoded twice: once to measure every frame (frame counts reported by containers
are often wrong), once to write the chosen frames.  Frames are named ``frame_000123.jpg`` after
their index in the video, so name order is time order (what sequential matching expects).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

import cv2
import numpy as np
from tqdm import tqdm

from mega_nerf.errors import UserError, require

#: Long side (pixels) of the grey copy the sharpness is measured on.
SHARPNESS_SIZE = 640
#: Frames to extract when neither a count nor a rate is given.
DEFAULT_FRAMES = 100
FRAME_FORMATS = ("jpg", "png")


@dataclass
class ExtractedFrames:
    """What :func:`extract_frames` wrote.

    ``indices``: index in the video of each written frame; ``sharpness``: variance of the
    Laplacian of every decoded frame; ``warnings``: things the user should know (fewer frames
    than asked).
    """

    paths: List[Path]
    indices: List[int]
    sharpness: np.ndarray
    fps: float
    warnings: List[str] = field(default_factory=list)

    @property
    def num_decoded(self) -> int:
        return len(self.sharpness)


def sharpness(image: np.ndarray) -> float:
    """Variance of the Laplacian of a BGR or grey uint8 image (higher is sharper)."""
    grey = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    long_side = max(grey.shape[:2])
    if long_side > SHARPNESS_SIZE:
        f = SHARPNESS_SIZE / long_side
        grey = cv2.resize(grey, (max(1, round(grey.shape[1] * f)), max(1, round(grey.shape[0] * f))),
                          interpolation=cv2.INTER_AREA)
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def select_sharpest(scores: np.ndarray, count: int) -> List[int]:
    """Indices of the sharpest frame in each of ``count`` equal windows over ``scores``.

    Window ``k`` covers frames ``[k * n / count, (k + 1) * n / count)``; with ``count >= n``
    every frame is kept.
    """
    n = len(scores)
    if count >= n:
        return list(range(n))
    edges = np.linspace(0, n, count + 1).round().astype(int)
    return [int(a + np.argmax(scores[a:b])) for a, b in zip(edges[:-1], edges[1:]) if b > a]


def _open(video: Path) -> cv2.VideoCapture:
    capture = cv2.VideoCapture(str(video))
    if not capture.isOpened():
        capture.release()
        raise UserError(f"--video {video}: cannot open this video (unknown format or corrupt file; "
                        f"OpenCV reads e.g. MP4/H.264, MOV, AVI/MJPG)")
    return capture


def extract_frames(video: Path, output_dir: Path, frames: Optional[int] = None, fps: Optional[float] = None,
                   image_format: str = "jpg", progress: bool = True) -> ExtractedFrames:
    """Write the sharpest frame of each window of ``video`` to ``output_dir``.

    Args:
        frames: how many frames to keep (default :data:`DEFAULT_FRAMES` when ``fps`` is None too).
        fps: or keep this many frames per second of video.
        image_format: ``jpg`` (quality 95) or ``png``.
    Raises:
        UserError: the video is missing or cannot be opened or decoded, or the options are invalid.
    """
    video, output_dir = Path(video), Path(output_dir)
    require(video.is_file(), f"--video {video}: file does not exist")
    require(frames is None or fps is None, "pass --frames or --fps, not both")
    require(frames is None or frames >= 1, f"--frames must be >= 1, got {frames}")
    require(fps is None or fps > 0, f"--fps must be positive, got {fps}")
    require(image_format in FRAME_FORMATS, f"frame format must be one of {FRAME_FORMATS}, got {image_format}")

    capture = _open(video)
    video_fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
    reported = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    scores = []
    with tqdm(total=reported if reported > 0 else None, desc="measuring frames", unit="frame",
              disable=not progress) as bar:
        while True:
            ok, image = capture.read()
            if not ok:
                break
            scores.append(sharpness(image))
            bar.update()
    capture.release()
    scores = np.asarray(scores, dtype=np.float64)
    require(len(scores) > 0, f"--video {video}: cannot decode any frame (unsupported codec or corrupt file)")

    warnings = []
    if fps is not None:
        require(math.isfinite(video_fps) and video_fps > 0,
                f"--video {video}: the file does not report its frame rate; use --frames instead of --fps")
        wanted = max(1, int(round(len(scores) / video_fps * fps)))
        target = f"{fps:g} fps over {len(scores) / video_fps:.1f} s"
    else:
        wanted = frames if frames is not None else DEFAULT_FRAMES
        target = f"{wanted} frames"
    if wanted > len(scores):
        warnings.append(f"the video has only {len(scores)} decodable frames ({target} asked for); using all of them")
    chosen = select_sharpest(scores, wanted)

    output_dir.mkdir(parents=True, exist_ok=True)
    digits = max(6, len(str(len(scores))))
    params = [cv2.IMWRITE_JPEG_QUALITY, 95] if image_format == "jpg" else []
    wanted_set, paths, index = set(chosen), [], 0
    capture = _open(video)
    with tqdm(total=len(chosen), desc="writing frames", unit="frame", disable=not progress) as bar:
        while len(paths) < len(chosen):
            ok, image = capture.read()
            if not ok:
                break
            if index in wanted_set:
                path = output_dir / f"frame_{index:0{digits}d}.{image_format}"
                require(cv2.imwrite(str(path), image, params), f"{path}: cannot write the frame (disk full?)")
                paths.append(path)
                bar.update()
            index += 1
    capture.release()
    require(len(paths) == len(chosen), f"--video {video}: the second decoding pass ended after {index} frames "
                                       f"(the first read {len(scores)}); the file changed or decodes unreliably")
    return ExtractedFrames(paths, chosen, scores, video_fps, warnings)
