"""Mega-NeRF's dataset layout: our writers/readers, compatibility both ways, validation errors."""
from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers_pipeline import NADIR_DRB, make_nadir_dataset  # noqa: E402

from mega_nerf.data.format import (  # noqa: E402
    load_dataset,
    opengl_c2w_from_drb_camera,
    write_coordinates,
    write_image,
)
from mega_nerf.errors import UserError  # noqa: E402

# Mega-NeRF's colmap_to_mega_nerf.py constant, written out here (not the module's copy).
RDF_TO_DRB = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


# ----------------------------------------------------------------------------- round trip
def test_round_trip_exact(tmp_path):
    ds = tmp_path / "ds"
    rng = np.random.default_rng(1)
    write_coordinates(ds, [1.5, -2.25, 3.0], 50.0)
    written = {}
    specs = [("train", "b", (7, 5)), ("train", "a", (7, 5)), ("val", "c", (8, 6)), ("train", "d", (7, 5))]
    for split, stem, (W, H) in specs:
        rgb = rng.integers(0, 256, size=(H, W, 3), dtype=np.uint8)
        rot = torch.tensor(random_rotation(rng), dtype=torch.float32)
        c2w = torch.cat([rot, torch.tensor([[0.1], [-0.2], [0.3]])], 1)
        intr = [11.0, 12.5, W / 2 + 0.25, H / 2 - 0.25]
        write_image(ds, split, stem, rgb, intr, c2w, distortion=[0.01, 0, 0, 0] if stem == "a" else None)
        written[stem] = (split, rgb, c2w, intr, W, H)
    (ds / "val" / "metadata").mkdir(parents=True, exist_ok=True)

    dataset = load_dataset(ds)
    assert torch.equal(dataset.origin_drb, torch.tensor([1.5, -2.25, 3.0]))
    assert dataset.pose_scale_factor == 50.0
    assert [m.stem for m in dataset.train] == ["a", "b", "d"]
    assert [m.stem for m in dataset.val] == ["c"]
    for m in dataset.train + dataset.val:
        split, rgb, c2w, intr, W, H = written[m.stem]
        assert m.split == split
        assert (m.W, m.H) == (W, H)
        assert torch.equal(m.c2w, c2w)
        assert torch.equal(m.intrinsics, torch.tensor(intr, dtype=torch.float32))
        assert np.array_equal(m.load_image().numpy(), rgb)  # PNG is lossless
        if m.stem == "a":
            assert torch.equal(m.distortion, torch.tensor([0.01, 0, 0, 0], dtype=torch.float32))
        else:
            assert m.distortion is None
    # Appearance indices: all images sorted by name.
    assert {m.stem: m.image_index for m in dataset.items} == {"a": 0, "b": 1, "c": 2, "d": 3}
    assert torch.equal(dataset.camera_positions, torch.tensor([[0.1, -0.2, 0.3]] * 4))
    assert torch.allclose(dataset.to_normalized(torch.tensor([51.5, -2.25, -47.0])), torch.tensor([1.0, 0.0, -1.0]))


def test_files_we_write_are_mega_nerf_plain_dicts(tmp_path):
    info = make_nadir_dataset(tmp_path / "ds", n_images=3)
    coords = torch.load(tmp_path / "ds" / "coordinates.pt", weights_only=True)
    assert type(coords) is dict and set(coords) == {"origin_drb", "pose_scale_factor"}
    assert isinstance(coords["origin_drb"], torch.Tensor) and coords["origin_drb"].shape == (3,)
    assert coords["origin_drb"].dtype == torch.float32
    assert type(coords["pose_scale_factor"]) is float and coords["pose_scale_factor"] == 100.0

    md = torch.load(tmp_path / "ds" / "train" / "metadata" / "000000.pt", weights_only=True)
    assert type(md) is dict and set(md) == {"W", "H", "intrinsics", "c2w"}
    assert type(md["W"]) is int and type(md["H"]) is int and (md["W"], md["H"]) == (16, 12)
    assert md["intrinsics"].dtype == torch.float32 and md["intrinsics"].shape == (4,)
    assert md["intrinsics"].tolist() == [16.0, 16.0, 8.0, 6.0]
    assert md["c2w"].dtype == torch.float32 and md["c2w"].shape == (3, 4)
    assert torch.equal(md["c2w"], info["c2w"]["000000"])

    write_image(tmp_path / "ds", "train", "zz", np.zeros((4, 4, 3), np.uint8), [4, 4, 2, 2],
                info["c2w"]["000000"], image_suffix=".jpg", distortion=[0.1, 0, 0, 0])
    md = torch.load(tmp_path / "ds" / "train" / "metadata" / "zz.pt", weights_only=True)
    assert set(md) == {"W", "H", "intrinsics", "c2w", "distortion"}
    assert md["distortion"].dtype == torch.float32 and md["distortion"].tolist() == pytest.approx([0.1, 0, 0, 0])
    assert (tmp_path / "ds" / "train" / "rgbs" / "zz.jpg").exists()
    # No temporary files left behind by the atomic writes.
    leftovers = [p.name for p in (tmp_path / "ds").rglob("*") if p.name.startswith(".")]
    assert leftovers == []


# ------------------------------------------------------------------ Mega-NeRF-made dataset
def _mega_nerf_dataset(path: Path, n: int = 7, num_val: int = 3, seed: int = 3):
    """Build a dataset exactly as Mega-NeRF's colmap_to_mega_nerf.py does (plain torch.save)."""
    rng = np.random.default_rng(seed)
    W, H = 10, 8
    positions_metric = rng.uniform(-30, 30, size=(n, 3))
    origin = torch.tensor((positions_metric.max(0) + positions_metric.min(0)) / 2, dtype=torch.float32)
    scale = 40.0
    path.mkdir(parents=True)
    torch.save({"origin_drb": origin, "pose_scale_factor": scale}, path / "coordinates.pt")
    expected = {}
    for i in range(n):
        w2c = torch.eye(4)
        rot_rdf = torch.tensor(random_rotation(rng), dtype=torch.float32)
        # camera centre C: w2c = [R | -R C] with the world in RDF, C = M^-1 p_drb
        c_rdf = torch.linalg.inv(RDF_TO_DRB) @ torch.tensor(positions_metric[i], dtype=torch.float32)
        w2c[:3, :3] = rot_rdf.T
        w2c[:3, 3] = -(rot_rdf.T @ c_rdf)
        c2w = torch.inverse(w2c)
        c2w = torch.hstack((RDF_TO_DRB @ c2w[:3, :3] @ torch.inverse(RDF_TO_DRB), RDF_TO_DRB @ c2w[:3, 3:]))
        camera_in_drb = c2w + 0
        camera_in_drb[:, 3] = (camera_in_drb[:, 3] - origin) / scale
        assert bool(((camera_in_drb >= -1) & (camera_in_drb <= 1)).all())
        split = "val" if i % int(n / num_val) == 0 else "train"
        (path / split / "metadata").mkdir(parents=True, exist_ok=True)
        (path / split / "rgbs").mkdir(parents=True, exist_ok=True)
        image = rng.integers(0, 256, size=(H, W, 3), dtype=np.uint8)  # BGR as cv2 writes it
        cv2.imwrite(str(path / split / "rgbs" / f"{i:06d}.jpg"), image)
        stored = torch.cat([camera_in_drb[:, 1:2], -camera_in_drb[:, :1], camera_in_drb[:, 2:4]], -1)
        torch.save({"H": H, "W": W, "c2w": stored,
                    "intrinsics": torch.FloatTensor([9.0, 9.0, 5.0, 4.0]),
                    "distortion": torch.FloatTensor([0.02, 0, 0, 0])},
                   path / split / "metadata" / f"{i:06d}.pt")
        decoded = cv2.cvtColor(cv2.imread(str(path / split / "rgbs" / f"{i:06d}.jpg")), cv2.COLOR_BGR2RGB)
        expected[f"{i:06d}"] = (split, stored, decoded, camera_in_drb, positions_metric[i])
    return origin, scale, expected


def test_mega_nerf_made_dataset_loads_unchanged(tmp_path):
    origin, scale, expected = _mega_nerf_dataset(tmp_path / "mn")
    dataset = load_dataset(tmp_path / "mn")
    assert torch.equal(dataset.origin_drb, origin)
    assert dataset.pose_scale_factor == scale
    # split rule i % int(7 / 3) == 0 -> 0, 2, 4, 6 are val
    assert [m.stem for m in dataset.val] == ["000000", "000002", "000004", "000006"]
    assert [m.stem for m in dataset.train] == ["000001", "000003", "000005"]
    for m in dataset.items:
        split, stored, decoded, camera_in_drb, p_metric = expected[m.stem]
        assert m.split == split and (m.W, m.H) == (10, 8)
        assert torch.equal(m.c2w, stored)
        assert torch.equal(m.intrinsics, torch.tensor([9.0, 9.0, 5.0, 4.0]))
        assert torch.equal(m.distortion, torch.tensor([0.02, 0, 0, 0]))
        assert np.array_equal(m.load_image().numpy(), decoded)
        assert m.image_index == int(m.stem)
        # the stored translation is the normalised metric DRB position
        assert torch.allclose(m.c2w[:, 3], (torch.tensor(p_metric, dtype=torch.float32) - origin) / scale, atol=1e-5)
        # our converter reproduces the stored c2w from the DRB camera matrix (README formula)
        assert torch.allclose(opengl_c2w_from_drb_camera(camera_in_drb[:, :3], camera_in_drb[:, 3]), stored)


def test_appearance_indices_follow_mega_nerf(tmp_path):
    ds = tmp_path / "ds"
    write_coordinates(ds, [0, 0, 0], 1.0)
    c2w = torch.cat([torch.eye(3), torch.zeros(3, 1)], 1)
    img = np.zeros((2, 2, 3), np.uint8)
    train = ["a1", "a3", "a5", "a7", "a9", "b0"]
    val = ["a4", "a8"]
    for s in train:
        write_image(ds, "train", s, img, [1, 1, 1, 1], c2w)
    for s in val:
        write_image(ds, "val", s, img, [1, 1, 1, 1], c2w)
    # train_every=2: sorted(train)[::2] = a1, a5, a9; plus val a4, a8; re-sorted by name
    d = load_dataset(ds, train_every=2)
    assert [m.stem for m in d.train] == ["a1", "a5", "a9"]
    assert {m.stem: m.image_index for m in d.items} == {"a1": 0, "a4": 1, "a5": 2, "a8": 3, "a9": 4}
    assert [m.stem for m in d.items] == ["a1", "a4", "a5", "a8", "a9"]
    d1 = load_dataset(ds)
    assert [m.stem for m in d1.items] == ["a1", "a3", "a4", "a5", "a7", "a8", "a9", "b0"]
    assert [m.image_index for m in d1.items] == list(range(8))


# ------------------------------------------------------------------------- validation
@pytest.fixture
def small(tmp_path):
    info = make_nadir_dataset(tmp_path / "ds", n_images=3)
    return info


def _rewrite_metadata(path: Path, **changes):
    md = torch.load(path, weights_only=True)
    md.update(changes)
    torch.save(md, path)


def _assert_user_error_mentions(dataset_path: Path, needle: Path):
    with pytest.raises(UserError) as e:
        load_dataset(dataset_path)
    assert str(needle) in str(e.value), str(e.value)
    assert "\n" not in str(e.value)


def test_wrong_c2w_shape_names_the_file(small):
    md = small["path"] / "train" / "metadata" / "000002.pt"
    _rewrite_metadata(md, c2w=torch.eye(4))
    _assert_user_error_mentions(small["path"], md)


def test_nan_c2w_names_the_file(small):
    md = small["path"] / "train" / "metadata" / "000000.pt"
    c2w = small["c2w"]["000000"].clone()
    c2w[1, 3] = float("nan")
    _rewrite_metadata(md, c2w=c2w)
    _assert_user_error_mentions(small["path"], md)


def test_missing_image_names_the_file(small):
    image = small["path"] / "val" / "rgbs" / "000001.png"
    image.unlink()
    with pytest.raises(UserError) as e:
        load_dataset(small["path"])
    assert str(small["path"] / "val" / "rgbs" / "000001") in str(e.value)


def test_missing_coordinates_names_the_file(small):
    (small["path"] / "coordinates.pt").unlink()
    _assert_user_error_mentions(small["path"], small["path"] / "coordinates.pt")


def test_truncated_metadata_names_the_file(small):
    md = small["path"] / "train" / "metadata" / "000002.pt"
    data = md.read_bytes()
    md.write_bytes(data[: len(data) // 2])
    _assert_user_error_mentions(small["path"], md)


def test_missing_dataset_folder(tmp_path):
    with pytest.raises(UserError) as e:
        load_dataset(tmp_path / "nope")
    assert str(tmp_path / "nope") in str(e.value)


# -------------------------------------------------------------------- frame conversion
def test_opengl_c2w_from_drb_camera_matches_readme_formula():
    rng = np.random.default_rng(7)
    for _ in range(5):
        cam = torch.tensor(np.concatenate([random_rotation(rng), rng.uniform(-1, 1, (3, 1))], 1), dtype=torch.float32)
        readme = torch.cat([cam[:, 1:2], -cam[:, :1], cam[:, 2:4]], -1)
        assert torch.equal(opengl_c2w_from_drb_camera(cam[:, :3], cam[:, 3]), readme)


def test_nadir_camera_columns():
    c2w = opengl_c2w_from_drb_camera(NADIR_DRB, torch.tensor([-0.5, 0.1, 0.2]))
    # columns: right = (0,1,0), up = -down = (0,0,-1), back = (-1,0,0), position
    expected = torch.tensor([[0.0, 0.0, -1.0, -0.5], [1.0, 0.0, 0.0, 0.1], [0.0, -1.0, 0.0, 0.2]])
    assert torch.equal(c2w, expected)


# --------------------------------------------------------------------- file permissions
def test_written_files_respect_umask(tmp_path):
    """A dataset we write must be readable like one written by Mega-NeRF's plain torch.save
    (which honours the umask); atomic writes must not leave files private (0600)."""
    import os
    import stat

    old = os.umask(0o022)
    try:
        make_nadir_dataset(tmp_path / "ds", n_images=2)
    finally:
        os.umask(old)
    ds = tmp_path / "ds"
    modes = {p.relative_to(ds).as_posix(): stat.S_IMODE(p.stat().st_mode)
             for p in [ds / "coordinates.pt", ds / "train" / "metadata" / "000000.pt",
                       ds / "train" / "rgbs" / "000000.png"]}
    assert modes == {"coordinates.pt": 0o644, "train/metadata/000000.pt": 0o644, "train/rgbs/000000.png": 0o644}


def test_image_of_another_shape_than_its_metadata_names_the_file(small):
    """A downscaled copy loads (resized, as Mega-NeRF does); another aspect ratio is an error."""
    dataset = load_dataset(small["path"])
    item = dataset.train[0]
    full = item.load_image().numpy()
    half = cv2.resize(full, (item.W // 2, item.H // 2), interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(item.image_path), half[..., ::-1])
    assert tuple(item.load_image().shape) == (item.H, item.W, 3)
    cv2.imwrite(str(item.image_path), np.zeros((item.H, item.W * 2, 3), np.uint8))
    with pytest.raises(UserError) as e:
        item.load_image()
    assert str(item.image_path) in str(e.value) and "aspect" in str(e.value)
