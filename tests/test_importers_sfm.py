"""scripts/prepare_dataset.py --images / --video: frame extraction, structure-from-motion, bad input.

The end-to-end check renders a short orbit over the synthetic city, writes it as an MJPG video
with motion-blurred frames between the sharp ones, and runs ``--video`` through frame selection,
pycolmap and the writer; the cameras must agree with the rendered ones after a similarity fit.
"""
from __future__ import annotations

import importlib.util
import json
import math
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from mega_nerf.data.format import load_dataset
from mega_nerf.data.importers.cli import main as prepare_main
from mega_nerf.data.importers.sfm import choose_matcher, pose_agreement, reconstruction_poses, umeyama
from mega_nerf.data.importers.video import extract_frames, select_sharpest, sharpness
from mega_nerf.errors import EXIT_USER_ERROR, UserError, cli_entry

HAS_PYCOLMAP = importlib.util.find_spec("pycolmap") is not None
needs_pycolmap = pytest.mark.skipif(not HAS_PYCOLMAP, reason="SfM needs pycolmap (pip install pycolmap==4.2.1)")

W, H = 320, 240
HFOV_DEG = 70.0
BLUR_PERIOD = 3  # frames k with k % 3 == 1 are sharp, their neighbours motion-blurred


def prepare(*args) -> Path:
    prepare_main([*map(str, args), "--quiet"])
    return Path(args[args.index("--output") + 1])


def prepare_fails(capsys, *args) -> str:
    """The command must exit 2 with one 'error:' line, no traceback."""
    with pytest.raises(SystemExit) as exit_info:
        cli_entry(prepare_main)([*map(str, args), "--quiet"])
    assert exit_info.value.code == EXIT_USER_ERROR
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def no_leftovers(folder: Path) -> bool:
    """Nothing half-written next to an output: no staging folders."""
    return not any(".tmp-" in p.name for p in folder.iterdir())


def motion_blur(image: np.ndarray, length: int = 15) -> np.ndarray:
    kernel = np.zeros((length, length), np.float32)
    kernel[length // 2, :] = 1.0 / length
    return cv2.filter2D(image, -1, kernel)


def write_video(path: Path, frames, fps: float = 10.0) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, frames[0].shape[1::-1])
    assert writer.isOpened(), "OpenCV cannot write MJPG/AVI here"
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


def texture(seed: int, w: int = 160, h: int = 120) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (h // 4, w // 4, 3), dtype=np.uint8)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)


def blurred_sequence(count: int):
    """Frames of a panning texture; only every BLUR_PERIOD-th (offset 1) is sharp."""
    base = texture(0, 400, 120)
    frames = []
    for k in range(count):
        frame = np.ascontiguousarray(base[:, 4 * k:4 * k + 160])
        frames.append(frame if k % BLUR_PERIOD == 1 else motion_blur(frame))
    return frames


# ----------------------------------------------------------------------------------------------
# Frame extraction (fast)


def test_select_sharpest_takes_the_best_of_each_window():
    scores = np.array([1, 5, 2, 9, 1, 1, 3, 3, 8, 0.5])
    assert select_sharpest(scores, 3) == [1, 3, 8]  # windows [0,3) [3,7) [7,10)
    assert select_sharpest(scores, 10) == list(range(10))
    assert select_sharpest(scores, 50) == list(range(10))
    assert select_sharpest(scores, 1) == [3]


def test_sharpness_prefers_sharp_frames():
    frame = texture(1)
    assert sharpness(frame) > 3 * sharpness(motion_blur(frame))
    assert sharpness(cv2.resize(frame, (1600, 1200))) > 0  # large frames are measured on a small copy


def test_video_frames_are_the_sharp_ones(tmp_path):
    video = write_video(tmp_path / "pan.avi", blurred_sequence(30))
    out = extract_frames(video, tmp_path / "frames", frames=10, progress=False)
    assert out.num_decoded == 30 and not out.warnings
    assert out.indices == list(range(1, 30, BLUR_PERIOD))
    assert [p.name for p in out.paths] == [f"frame_{i:06d}.jpg" for i in out.indices]
    assert all(cv2.imread(str(p)).shape == (120, 160, 3) for p in out.paths)
    by_fps = extract_frames(video, tmp_path / "fps", fps=10 / BLUR_PERIOD, image_format="png", progress=False)
    assert by_fps.indices == out.indices and by_fps.paths[0].suffix == ".png"


def test_video_with_fewer_frames_than_asked_uses_them_all(tmp_path):
    video = write_video(tmp_path / "short.avi", blurred_sequence(6))
    out = extract_frames(video, tmp_path / "frames", frames=20, progress=False)
    assert out.indices == list(range(6)) and len(out.paths) == 6
    assert len(out.warnings) == 1 and "only 6 decodable frames" in out.warnings[0]


def test_matcher_choice():
    assert choose_matcher("auto", 18, True, False)[0] == "exhaustive"
    assert choose_matcher("auto", 18, False, True)[0] == "sequential"
    assert choose_matcher("auto", 500, True, False)[0] == "spatial"
    assert choose_matcher("auto", 500, False, False)[0] == "sequential"
    assert choose_matcher("exhaustive", 500, False, True)[0] == "exhaustive"
    with pytest.raises(UserError, match="needs GPS"):
        choose_matcher("spatial", 50, False, False)


def test_umeyama_and_pose_agreement_recover_a_similarity():
    rng = np.random.default_rng(0)
    R = cv2.Rodrigues(np.array([0.3, -0.5, 1.0]))[0]
    ours = {f"img{k}": np.concatenate([cv2.Rodrigues(rng.normal(size=3))[0], rng.normal(size=(3, 1))], 1)
            for k in range(6)}
    ref = {n: np.concatenate([R @ c[:, :3], (2.5 * R @ c[:, 3] + [1, 2, 3])[:, None]], 1) for n, c in ours.items()}
    scale, R_fit, _ = umeyama(np.stack([c[:, 3] for c in ours.values()]), np.stack([c[:, 3] for c in ref.values()]))
    assert scale == pytest.approx(2.5) and np.allclose(R_fit, R)
    agreement = pose_agreement(ours, ref)
    assert agreement["rotation_deg"]["max"] < 1e-6 and agreement["position"]["max"] < 1e-9


# ----------------------------------------------------------------------------------------------
# Bad input: one line, exit 2, nothing written


def test_images_folder_missing_or_a_file(tmp_path, capsys):
    assert "folder does not exist" in prepare_fails(capsys, "--images", tmp_path / "nope", "--output", tmp_path / "ds")
    (tmp_path / "photo.jpg").write_bytes(b"x")
    assert "not a folder" in prepare_fails(capsys, "--images", tmp_path / "photo.jpg", "--output", tmp_path / "ds")
    assert not (tmp_path / "ds").exists() and no_leftovers(tmp_path)


def test_images_folder_without_enough_images(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images")
    assert "holds no images" in prepare_fails(capsys, "--images", tmp_path / "empty", "--output", tmp_path / "ds")
    (tmp_path / "two").mkdir()
    for k in range(2):
        cv2.imwrite(str(tmp_path / "two" / f"{k}.png"), texture(k))
    line = prepare_fails(capsys, "--images", tmp_path / "two", "--output", tmp_path / "ds")
    assert "2 images" in line and "at least 3" in line
    assert not (tmp_path / "ds").exists() and no_leftovers(tmp_path)


def test_video_that_cannot_be_opened(tmp_path, capsys):
    assert "does not exist" in prepare_fails(capsys, "--video", tmp_path / "nope.mp4", "--output", tmp_path / "ds")
    (tmp_path / "fake.mp4").write_bytes(b"this is not a video" * 100)
    assert "cannot open this video" in prepare_fails(capsys, "--video", tmp_path / "fake.mp4",
                                                     "--output", tmp_path / "ds")
    assert not (tmp_path / "ds").exists() and no_leftovers(tmp_path)


def test_flags_that_do_not_fit_the_source(tmp_path, capsys):
    (tmp_path / "imgs").mkdir()
    for k in range(3):
        cv2.imwrite(str(tmp_path / "imgs" / f"{k}.png"), texture(k))
    assert "--frames / --fps are for --video" in prepare_fails(
        capsys, "--images", tmp_path / "imgs", "--frames", 5, "--output", tmp_path / "ds")
    video = write_video(tmp_path / "v.avi", blurred_sequence(6))
    assert "not both" in prepare_fails(capsys, "--video", video, "--frames", 3, "--fps", 1, "--output", tmp_path / "ds")
    assert not (tmp_path / "ds").exists() and no_leftovers(tmp_path)


def test_output_inside_the_images_folder_is_refused(tmp_path, capsys):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for k in range(3):
        cv2.imwrite(str(folder / f"{k}.png"), texture(k))
    assert "lies inside --images" in prepare_fails(capsys, "--images", folder, "--output", folder / "ds")
    assert sorted(p.name for p in folder.iterdir()) == ["0.png", "1.png", "2.png"]


def test_existing_output_is_refused_before_any_work(tmp_path, capsys):
    output = tmp_path / "ds"
    output.mkdir()
    (output / "keep.txt").write_text("mine")
    video = write_video(tmp_path / "v.avi", blurred_sequence(6))
    line = prepare_fails(capsys, "--video", video, "--output", output)
    assert "ds" in line
    assert [p.name for p in output.iterdir()] == ["keep.txt"] and (output / "keep.txt").read_text() == "mine"
    assert no_leftovers(tmp_path)


@needs_pycolmap
def test_one_camera_per_image_size_and_known_focal_lengths(tmp_path):
    """Import only (no features): cameras per size; --sensor_width_mm uses the EXIF focal length in mm."""
    from PIL import Image

    import pycolmap

    from mega_nerf.data.importers.sfm import SfmOptions, _import_images, probe_image

    folder = tmp_path / "mixed"
    folder.mkdir()
    for k in range(5):
        exif = Image.Exif()
        exif.get_ifd(0x8769)[0x920A] = 4.5  # FocalLength, mm
        Image.fromarray(texture(k, *((160, 120) if k < 3 else (200, 150)))).save(folder / f"img_{k}.jpg", exif=exif)
    names = sorted(p.name for p in folder.iterdir())
    assert probe_image(folder / names[0]) == (160, 120, 4.5)

    def cameras(options):
        database_path = tmp_path / f"db_{len(list(tmp_path.glob('db_*')))}.db"
        pycolmap.Database.open(str(database_path)).close()
        notes = _import_images(database_path, folder, names, options)
        database = pycolmap.Database.open(str(database_path))
        try:
            return {(c.width, c.height): c for c in database.read_all_cameras()}, notes
        finally:
            database.close()

    plain, _ = cameras(SfmOptions(camera_model="PINHOLE"))
    assert sorted(plain) == [(160, 120), (200, 150)] and all(c.model.name == "PINHOLE" for c in plain.values())
    known, notes = cameras(SfmOptions(sensor_width_mm=6.0))
    for (w, _), camera in known.items():
        assert camera.has_prior_focal_length and camera.params[0] == pytest.approx(4.5 / 6.0 * w)
    assert len(notes) == 2 and "4.5 mm EXIF focal length" in notes[0]
    with pytest.raises(UserError, match="one size"):
        cameras(SfmOptions(focal_px=100.0))


@needs_pycolmap
def test_sfm_that_registers_too_few_images_is_refused(tmp_path, capsys):
    """Unrelated noise images: nothing matches, so nothing (or too little) registers."""
    folder = tmp_path / "noise"
    folder.mkdir()
    for k in range(4):
        cv2.imwrite(str(folder / f"noise_{k}.png"), texture(100 + k, 160, 120))
    line = prepare_fails(capsys, "--images", folder, "--num_threads", 2, "--output", tmp_path / "ds")
    assert "registered only" in line and "of 4 images" in line
    assert not (tmp_path / "ds").exists() and no_leftovers(tmp_path)


# ----------------------------------------------------------------------------------------------
# End to end: a rendered video through frame extraction and SfM


def orbit_poses(count: int) -> list:
    """ENU camera poses on a half orbit around the synthetic city, looking at its centre."""
    from mega_nerf.synthetic.city import CameraPose, look_rotation_enu

    poses = []
    for k in range(count):
        a = math.pi * k / count
        position = np.array([70 * math.cos(a), 70 * math.sin(a), 70.0])
        forward = np.array([0.0, 0.0, 5.0]) - position
        forward /= np.linalg.norm(forward)
        image_up = np.array([0.0, 0.0, 1.0]) - forward * forward[2]
        image_up /= np.linalg.norm(image_up)
        poses.append(CameraPose(tuple(position), tuple(map(tuple, look_rotation_enu(forward, image_up))), "orbit"))
    return poses


def render_orbit(count: int) -> tuple:
    """``(BGR frames, ENU OpenCV camera-to-world (3, 4) per frame)``."""
    from mega_nerf.synthetic.city import (SyntheticCity, c2w_normalized_drb, generate_layout, pinhole_intrinsics,
                                          resolve_preset, torch_threads)

    city = SyntheticCity(generate_layout(resolve_preset("tiny"), 0))
    intrinsics = pinhole_intrinsics(W, H, HFOV_DEG)
    frames, c2ws = [], []
    with torch_threads(1):
        for pose in orbit_poses(count):
            rgb, _ = city.render_image(c2w_normalized_drb(pose, [0.0, 0.0, 0.0], 1.0), intrinsics, W, H)
            frames.append(cv2.cvtColor(rgb.clamp(0, 1).mul(255).round().byte().numpy(), cv2.COLOR_RGB2BGR))
            rotation = np.array(pose.rotation_enu) * [1, -1, -1]  # (right, up, back) -> (right, down, forward)
            c2ws.append(np.concatenate([rotation, np.array(pose.position_enu)[:, None]], 1))
    return frames, c2ws


ORBIT_FRAMES = 24  # 7.5 deg apart: at 12 deg (14 frames) the chain already breaks in two


@pytest.fixture(scope="module")
def orbit():
    start = time.perf_counter()
    frames, truth = render_orbit(ORBIT_FRAMES)
    return frames, truth, time.perf_counter() - start


def dms(value: float) -> tuple:
    value = abs(value)
    degrees, minutes = int(value), int(abs(value) * 60) % 60
    return (degrees, minutes, round((value * 3600) % 60, 4))


def save_with_gps(path: Path, bgr: np.ndarray, lat: float, lon: float, alt: float) -> None:
    from PIL import Image

    exif = Image.Exif()
    gps = exif.get_ifd(0x8825)
    gps.update({1: "N" if lat >= 0 else "S", 2: dms(lat), 3: "E" if lon >= 0 else "W", 4: dms(lon),
                5: b"\x00", 6: round(alt, 3)})
    Image.fromarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)).save(path, exif=exif, quality=95)


@needs_pycolmap
def test_photos_with_gps_come_out_in_metres_with_z_up(tmp_path, orbit):
    """EXIF GPS -> pose priors -> model aligned to local ENU metres, ground at z ~ 0, altitude on -x."""
    import pycolmap

    frames, truth, _ = orbit
    ref = (46.8426, -91.9946, 150.0)  # WGS84 of the synthetic city's ENU origin (ground level)
    wgs84 = pycolmap.GPSTransform().enu_to_ellipsoid(np.stack([c[:, 3] for c in truth]), *ref)
    folder = tmp_path / "photos"
    folder.mkdir()
    for k, (frame, (lat, lon, alt)) in enumerate(zip(frames, wgs84)):
        save_with_gps(folder / f"IMG_{k:04d}.JPG", frame, lat, lon, alt)
    dataset = prepare("--images", folder, "--num_threads", 2, "--output", tmp_path / "ds")
    record = json.loads((dataset / "colmap" / "sfm.json").read_text())
    assert record["matcher"] == "exhaustive" and record["gps"]["num_images"] == record["num_registered"]
    assert record["num_registered"] >= 0.8 * ORBIT_FRAMES
    model = reconstruction_poses(pycolmap.Reconstruction(str(dataset / "colmap" / "sparse" / "0")))
    # No fit: the model is already ENU metres, origin at the first image's lat/lon, z = 0 on the ground
    # (the city's ground is z = 0; the GPS altitudes here are exact).
    offset = truth[0][:2, 3]
    for k, c2w in enumerate(truth):
        name = f"IMG_{k:04d}.JPG"
        if name in model:
            assert np.linalg.norm(model[name][:2, 3] - (c2w[:2, 3] - offset)) < 1.5
            assert abs(model[name][2, 3] - c2w[2, 3]) < 2.0
    info = json.loads((dataset / "import.json").read_text())
    assert info["up_in_source"] == [0.0, 0.0, 1.0] and info["metres_per_unit"] == 1.0
    assert np.allclose(info["world_to_drb"], [[0, 0, -1], [1, 0, 0], [0, -1, 0]])  # (x, y, z) -> (-z, x, -y)


@needs_pycolmap
def test_video_of_the_synthetic_city_through_sfm(tmp_path, orbit):
    start = time.perf_counter()
    count = ORBIT_FRAMES
    frames, truth, render_seconds = orbit
    video_frames, frame_truth = [], {}
    for k, (frame, c2w) in enumerate(zip(frames, truth)):
        for j in range(BLUR_PERIOD):  # blurred, sharp, blurred
            index = BLUR_PERIOD * k + j
            video_frames.append(frame if j == 1 else motion_blur(frame))
            frame_truth[f"frame_{index:06d}.jpg"] = c2w
    video = write_video(tmp_path / "orbit.avi", video_frames)

    dataset = prepare("--video", video, "--frames", count, "--num_threads", 2, "--val_every", 0,
                      "--output", tmp_path / "ds")
    record = json.loads((dataset / "colmap" / "sfm.json").read_text())
    assert record["frame_indices"] == [BLUR_PERIOD * k + 1 for k in range(count)]  # only sharp frames
    assert record["matcher"] == "sequential" and record["gps"] is None
    assert record["num_registered"] >= 0.8 * count
    import pycolmap

    model = reconstruction_poses(pycolmap.Reconstruction(str(dataset / "colmap" / "sparse" / "0")))
    agreement = pose_agreement(model, frame_truth)
    assert agreement["num_images"] == record["num_registered"]
    assert agreement["rotation_deg"]["median"] < 1.0 and agreement["rotation_deg"]["max"] < 3.0
    assert agreement["position"]["median"] < 1.0 and agreement["position"]["max"] < 3.0  # metres, orbit radius 70
    focal = next(iter(record["cameras"].values()))["params"][0]
    true_focal = (W / 2) / math.tan(math.radians(HFOV_DEG) / 2)
    assert abs(focal / true_focal - 1) < 0.05
    # No GPS: up comes from the cameras; in the true (ENU) frame it must point up.
    names = sorted(model)
    _, R, _ = umeyama(np.stack([model[n][:, 3] for n in names]), np.stack([frame_truth[n][:, 3] for n in names]))
    up = R @ np.array(json.loads((dataset / "import.json").read_text())["up_in_source"])
    assert np.degrees(np.arccos(np.clip(up[2], -1, 1))) < 2.0
    ds = load_dataset(dataset)
    assert len(ds.train) == record["num_registered"] and ds.train[0].W == W
    print(f"\nvideo SfM: rendered in {render_seconds:.0f} s, then {time.perf_counter() - start:.0f} s; "
          f"rotation median {agreement['rotation_deg']['median']:.3f} deg, position median "
          f"{agreement['position']['median']:.3f} m; max {agreement['rotation_deg']['max']:.3f} deg, "
          f"{agreement['position']['max']:.3f} m; focal {focal:.1f} px (true {true_focal:.1f}); "
          f"{record['num_registered']}/{count} registered")
