"""The procedural city generator: layout, exact geometry, determinism, CLI safety."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from mega_nerf.data.format import load_dataset
from mega_nerf.synthetic.city import GROUND, SKY, Appearance, apply_appearance, load_scene, ray_box_slabs, write_dataset

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "make_synthetic_scene.py"

# v_drb = ENU_TO_DRB @ v_enu, written out here so the tests do not trust the module's copy.
ENU_TO_DRB = np.array([[0.0, 0.0, -1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("synthetic") / "tiny"
    write_dataset(path, "tiny", seed=0, progress=False)
    return path


@pytest.fixture(scope="module")
def scene(tiny) -> dict:
    return json.loads((tiny / "scene.json").read_text())


def boxes_of(scene: dict) -> np.ndarray:
    """(B, 6) ENU boxes [xmin, ymin, zmin, xmax, ymax, zmax] straight from scene.json."""
    return np.array([box for b in scene["layout"]["buildings"] for box in b["boxes"]], dtype=np.float64)


def pixel_rays(md, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Documented convention, float64: (P, 2) [i, j] -> normalised DRB origins, unit dirs."""
    fx, fy, cx, cy = md.intrinsics.double().numpy()
    c2w = md.c2w.double().numpy()
    cam = np.stack([(pixels[:, 0] + 0.5 - cx) / fx, -(pixels[:, 1] + 0.5 - cy) / fy,
                    -np.ones(len(pixels))], axis=-1)
    dirs = cam @ c2w[:, :3].T
    dirs /= np.linalg.norm(dirs, axis=-1, keepdims=True)
    return np.broadcast_to(c2w[:, 3], dirs.shape), dirs


def to_enu(points_normalized_drb: np.ndarray, dataset) -> np.ndarray:
    metric = points_normalized_drb * dataset.pose_scale_factor + dataset.origin_drb.double().numpy()
    return metric @ ENU_TO_DRB  # ENU_TO_DRB.T @ p per row


def box_surface_distance(points: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """(P,) distance (m) from each point to the boundary of its nearest box."""
    lo, hi = boxes[None, :, :3], boxes[None, :, 3:]
    p = points[:, None, :]
    outside = np.linalg.norm(np.maximum(np.maximum(lo - p, p - hi), 0), axis=-1)
    inside = np.minimum(p - lo, hi - p).min(-1).clip(min=0)
    return np.where(outside > 0, outside, inside).min(-1)


def slab_hits_any(origins: np.ndarray, dirs: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """(P,) whether each ray (t > 0) crosses any box; independent float64 slab test."""
    with np.errstate(divide="ignore", invalid="ignore"):
        t0 = (boxes[None, :, :3] - origins[:, None]) / dirs[:, None]
        t1 = (boxes[None, :, 3:] - origins[:, None]) / dirs[:, None]
    near = np.nanmax(np.minimum(t0, t1), -1)
    far = np.nanmin(np.maximum(t0, t1), -1)
    return ((near <= far) & (far > 0)).any(-1)


def test_layout_and_loading(tiny, scene):
    for name in ("coordinates.pt", "config.yaml", "scene.json", "appearance.json"):
        assert (tiny / name).is_file(), name
    for split in ("train", "val"):
        stems = {p.stem for p in (tiny / split / "rgbs").glob("*.png")}
        assert stems and stems == {p.stem for p in (tiny / split / "metadata").glob("*.pt")}
        assert stems == {p.stem for p in (tiny / split / "depths").glob("*.npy")}
    assert not list(tiny.parent.glob("tiny.tmp-*")), "staging folder left behind"

    dataset = load_dataset(tiny)
    items = dataset.items
    assert len(items) == scene["num_images"] and 40 <= len(items) <= 48
    assert len(dataset.val) == scene["num_val"] and len(dataset.val) >= 4
    assert [m.image_index for m in items] == list(range(len(items)))
    assert sorted(m.stem for m in items) == [f"{i:06d}" for i in range(len(items))]
    config = yaml.safe_load((tiny / "config.yaml").read_text())
    assert config["near"] == 1 and config["train_scale_factor"] == 1
    for m in items:
        assert (m.W, m.H) == (scene["image_width"], scene["image_height"])
        assert m.load_image().shape == (m.H, m.W, 3)
        depth = m.load_depth()
        assert depth.shape == (m.H, m.W) and depth.dtype == torch.float32
        small = m.scaled(config["val_scale_factor"])
        assert small.W >= 24 and small.W * config["val_scale_factor"] == m.W
        rot = m.c2w[:, :3].double()
        assert torch.det(rot) == pytest.approx(1.0, abs=1e-5)  # right-handed, no mirror
    appearance = json.loads((tiny / "appearance.json").read_text())["images"]
    assert set(appearance) == {m.stem for m in items}
    for gains in appearance.values():
        assert 0.75 <= gains["exposure"] <= 1.25
        assert all(0.9 <= g <= 1.1 for g in gains["white_balance"])


def test_normalisation_keeps_cameras_and_ground_in_unit_cube(tiny, scene):
    dataset = load_dataset(tiny)
    positions = dataset.camera_positions
    assert positions.abs().max() <= 1.0
    # The ground (DRB x = 0) and the tallest roof right under the cameras are inside too.
    for height in (0.0, scene["max_height_m"]):
        assert abs((-height - float(dataset.origin_drb[0])) / dataset.pose_scale_factor) <= 1.0
    metric = positions.double() * dataset.pose_scale_factor + dataset.origin_drb.double()
    assert torch.allclose(-metric[:, 0], torch.full((len(metric),), scene["flight_altitude_m"],
                                                    dtype=torch.float64), atol=1e-3)


def test_altitude_range_brackets_geometry_and_cameras_fly_above(tiny, scene):
    dataset = load_dataset(tiny)
    top, ground = yaml.safe_load((tiny / "config.yaml").read_text())["ray_altitude_range"]
    assert top < -boxes_of(scene)[:, 5].max() and ground > 0
    camera_x_metric = dataset.camera_positions[:, 0].double() * dataset.pose_scale_factor + float(dataset.origin_drb[0])
    assert bool((camera_x_metric < top).all()), "cameras must be above the top of the range"


def test_depths_land_on_ground_or_box_faces(tiny, scene):
    dataset = load_dataset(tiny)
    boxes = boxes_of(scene)
    rng = np.random.default_rng(0)
    on_box = on_ground = 0
    for m in dataset.items:
        pixels = np.stack([rng.integers(0, m.W, 64), rng.integers(0, m.H, 64)], axis=-1)
        depth = m.load_depth().double().numpy()[pixels[:, 1], pixels[:, 0]]
        origins, dirs = pixel_rays(m, pixels)
        hit = np.isfinite(depth)
        points = to_enu(origins[hit] + (depth[hit] / dataset.pose_scale_factor)[:, None] * dirs[hit], dataset)
        ground = np.abs(points[:, 2]) < 1e-3
        face = box_surface_distance(points, boxes) < 1e-3
        assert bool((ground | face).all()), points[~(ground | face)][:3]
        on_box += int((face & ~ground).sum())
        on_ground += int(ground.sum())
    assert on_box > 100 and on_ground > 100  # both kinds of surface are actually seen


def test_sky_rays_point_up_and_miss_everything(tiny, scene):
    dataset = load_dataset(tiny)
    city = load_scene(tiny)
    boxes = boxes_of(scene)
    # Any sky pixel in the images must be an upward ray that misses every box.
    for m in dataset.items:
        depth = m.load_depth().numpy()
        j, i = np.nonzero(~np.isfinite(depth))
        if len(i):
            origins, dirs = pixel_rays(m, np.stack([i, j], -1))
            dirs_enu = dirs @ ENU_TO_DRB
            assert bool((dirs_enu[:, 2] >= 0).all())
            assert not slab_hits_any(to_enu(origins, dataset), dirs_enu, boxes).any()
    # Arbitrary rays through the oracle: inf exactly when upward and missing all boxes.
    rng = np.random.default_rng(1)
    origins_enu = np.concatenate([rng.uniform(-80, 80, (2000, 2)), rng.uniform(1, 60, (2000, 1))], -1)
    dirs_enu = rng.normal(size=(2000, 3))
    dirs_enu /= np.linalg.norm(dirs_enu, axis=-1, keepdims=True)
    inside = (box_surface_distance(origins_enu, boxes) < 0.05) | (
        (origins_enu[:, None, :] > boxes[None, :, :3]) & (origins_enu[:, None, :] < boxes[None, :, 3:])).all(-1).any(-1)
    origins_enu, dirs_enu = origins_enu[~inside], dirs_enu[~inside]
    origins_n = (origins_enu @ ENU_TO_DRB.T - dataset.origin_drb.double().numpy()) / dataset.pose_scale_factor
    rgb, depth = city.cast(torch.from_numpy(origins_n), torch.from_numpy(dirs_enu @ ENU_TO_DRB.T))
    sky = ~torch.isfinite(depth).numpy()
    expected_sky = (dirs_enu[:, 2] >= 0) & ~slab_hits_any(origins_enu, dirs_enu, boxes)
    assert sky.any() and (sky == expected_sky).all()
    assert bool((rgb[torch.from_numpy(sky)][:, 2] > rgb[torch.from_numpy(sky)][:, 0]).all())  # blue sky


def test_oracle_reproduces_stored_pixels_and_depths(tiny):
    dataset = load_dataset(tiny)
    city = load_scene(tiny)
    appearance = json.loads((tiny / "appearance.json").read_text())["images"]
    for m in dataset.items[::9]:
        rgb, depth = city.render_image(m.c2w, m.intrinsics.tolist(), m.W, m.H)
        assert torch.equal(depth, m.load_depth())
        gains = appearance[m.stem]
        expected = apply_appearance(rgb, Appearance(gains["exposure"], tuple(gains["white_balance"])))
        assert np.array_equal(expected, m.load_image().numpy())


def test_tallest_roof_projects_where_its_depth_is(tiny, scene):
    """Independent pinhole projection of a known 3D point agrees with the stored depth map."""
    dataset = load_dataset(tiny)
    boxes = boxes_of(scene)
    tallest = boxes[boxes[:, 5].argmax()]
    roof_enu = np.array([(tallest[0] + tallest[3]) / 2, (tallest[1] + tallest[4]) / 2, tallest[5]])
    roof_n = (ENU_TO_DRB @ roof_enu - dataset.origin_drb.double().numpy()) / dataset.pose_scale_factor
    checked = 0
    for m in dataset.items:
        c2w = m.c2w.double().numpy()
        cam = c2w[:, :3].T @ (roof_n - c2w[:, 3])  # OpenGL camera frame: looks along -z
        if cam[2] >= 0:
            continue
        fx, fy, cx, cy = m.intrinsics.double().numpy()
        i, j = fx * cam[0] / -cam[2] + cx, -fy * cam[1] / -cam[2] + cy
        if not (1 <= i < m.W - 1 and 1 <= j < m.H - 1):
            continue
        expected = np.linalg.norm(cam) * dataset.pose_scale_factor
        assert m.load_depth()[int(j), int(i)].item() == pytest.approx(expected, rel=0.03)
        checked += 1
    assert checked >= 5


def test_box_culling_matches_brute_force(tiny):
    city = load_scene(tiny)
    gen = torch.Generator().manual_seed(0)
    origins = torch.cat([torch.rand(3000, 2, generator=gen) * 200 - 100,
                         torch.rand(3000, 1, generator=gen) * 100 + 0.5], -1)
    dirs = torch.nn.functional.normalize(torch.randn(3000, 3, generator=gen), dim=-1)
    dirs[:500, 2] = 0.0  # exactly horizontal rays defeat the height-slab bound
    t, index = city.nearest_box_hit(origins, dirs)
    t_near, t_far = ray_box_slabs(origins, dirs, city.box_lo, city.box_hi)
    brute = torch.where((t_near <= t_far) & (t_near > 0), t_near, torch.full_like(t_near, float("inf")))
    best, best_index = brute.min(-1)
    assert torch.equal(t, best)
    assert torch.equal(index[torch.isfinite(t)], best_index[torch.isfinite(t)])
    assert bool((index[~torch.isfinite(t)] == -1).all()) and torch.isfinite(t).sum() > 100


def test_hit_kinds_and_normals(tiny):
    city = load_scene(tiny)
    origins = torch.tensor([[0.0, 0.0, 500.0]] * 3)
    dirs = torch.tensor([[0.0, 0.0, 1.0], [0.6, 0.0, -0.8], [0.0, 0.0, -1.0]])
    hits = city.intersect_enu(origins, dirs)
    assert hits.box_index[0] == SKY and not torch.isfinite(hits.depth[0])
    assert bool((hits.box_index[1:] != SKY).all())
    far = city.intersect_enu(torch.tensor([[5000.0, 5000.0, 50.0]]), torch.tensor([[0.0, 0.0, -1.0]]))
    assert far.box_index[0] == GROUND and far.depth[0] == pytest.approx(50.0)
    assert torch.equal(far.normal[0], torch.tensor([0.0, 0.0, 1.0]))


def test_same_seed_same_images_other_seed_differs(tmp_path):
    def pngs(path: Path) -> dict:
        return {p.relative_to(path): p.read_bytes() for p in sorted(path.glob("*/rgbs/*.png"))}

    write_dataset(tmp_path / "a", "tiny", seed=3, num_images=4, progress=False)
    write_dataset(tmp_path / "b", "tiny", seed=3, num_images=4, progress=False)
    write_dataset(tmp_path / "c", "tiny", seed=4, num_images=4, progress=False)
    a, b, c = pngs(tmp_path / "a"), pngs(tmp_path / "b"), pngs(tmp_path / "c")
    assert len(a) == 4 and a == b
    assert set(a) == set(c) and all(a[k] != c[k] for k in a)
    assert (tmp_path / "a" / "scene.json").read_text() == (tmp_path / "b" / "scene.json").read_text()


def test_cli_writes_then_refuses_to_overwrite(tmp_path):
    out = tmp_path / "ds"
    done = subprocess.run([sys.executable, str(SCRIPT), "--output", str(out), "--num_images", "3",
                           "--image_width", "32", "--quiet"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert len(list(out.glob("*/rgbs/*.png"))) == 3
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]  # no staging folder left

    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    refused = subprocess.run([sys.executable, str(SCRIPT), "--output", str(out)],
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "not empty" in lines[0] and "Traceback" not in refused.stderr
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]
