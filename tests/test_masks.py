"""Centroid grid, routing weights, ray/cell membership and the mask file format."""
from __future__ import annotations

import io
import zipfile

import pytest
import torch

from mega_nerf.errors import UserError
from mega_nerf.partition.centroids import grid_centroids, routing_weights
from mega_nerf.partition.masks import mask_path, ray_cell_membership, read_mask, write_mask


# ------------------------------------------------------------------------- centroids
def test_grid_centroids_2x3_hand_computed():
    cams = torch.tensor([[-0.5, -1.0, 0.0], [-0.4, 1.0, 3.0], [-0.6, 0.2, 1.0]])
    c = grid_centroids(cams, (2, 3))
    # Right (y) span 2 -> centres -0.5, 0.5; Back (z) span 3 -> centres 0.5, 1.5, 2.5; flat i*GY + j
    expected = torch.tensor([[0.0, y, z] for y in (-0.5, 0.5) for z in (0.5, 1.5, 2.5)])
    assert c.shape == (6, 3)
    assert torch.allclose(c, expected, atol=1e-6)
    assert c[4].tolist() == pytest.approx([0.0, 0.5, 1.5])  # i=1, j=1 -> 1*3 + 1


def test_grid_centroids_single_cell_is_footprint_centre():
    cams = torch.tensor([[-0.5, -0.2, 0.1], [-0.5, 0.6, 0.5]])
    assert torch.allclose(grid_centroids(cams, (1, 1)), torch.tensor([[0.0, 0.2, 0.3]]), atol=1e-6)


# ------------------------------------------------------------------------- routing
CENTS = torch.tensor([[0.0, -1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 5.0]])


def test_hard_routing_with_margin_one():
    pts = torch.tensor([[0.0, -0.9, 0.0], [0.0, 0.05, 0.0], [0.0, 0.0, 4.0]])
    w = routing_weights(pts, CENTS, 1.0, cluster_2d=False)
    assert torch.equal(w, torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]]))


def test_soft_blending_hand_computed():
    pts = torch.tensor([[0.0, -0.9, 0.0], [0.0, 0.05, 0.0]])
    w = routing_weights(pts, CENTS, 1.15, cluster_2d=False)
    assert torch.allclose(w.sum(1), torch.ones(2))
    # point 0: d = (0.1, 1.9, ~5.08): only the nearest is within 1.15x
    assert torch.equal(w[0], torch.tensor([1.0, 0.0, 0.0]))
    # point 1: d = (1.05, 0.95, ~5.0): ratio 1.105 <= 1.15; w ~ 1/d -> (0.95, 1.05) / 2
    assert w[1, 2].item() == 0.0
    assert w[1, 0].item() == pytest.approx(0.475, abs=1e-6)
    assert w[1, 1].item() == pytest.approx(0.525, abs=1e-6)
    assert (w[1, 1] / w[1, 0]).item() == pytest.approx(1.05 / 0.95, rel=1e-6)


def test_routing_altitude_term_and_cluster_2d():
    # At altitude x = 4 the distances (4.001, 4.428) are within 1.15x of each other; in 2D they are not.
    pts = torch.tensor([[4.0, -0.9, 0.0]])
    w2d = routing_weights(pts, CENTS[:2], 1.15, cluster_2d=True)
    assert torch.equal(w2d, torch.tensor([[1.0, 0.0]]))
    w3d = routing_weights(pts, CENTS[:2], 1.15, cluster_2d=False)
    d0, d1 = (16 + 0.01) ** 0.5, (16 + 1.9 ** 2) ** 0.5
    assert w3d[0].tolist() == pytest.approx([d1 / (d0 + d1), d0 / (d0 + d1)], rel=1e-6)


def test_soft_weights_random_points_properties():
    g = torch.Generator().manual_seed(0)
    pts = torch.randn(500, 3, generator=g)
    cents = torch.randn(6, 3, generator=g)
    w = routing_weights(pts, cents, 1.15, cluster_2d=False)
    d = torch.cdist(pts, cents)
    near = d.min(1, keepdim=True).values
    assert torch.allclose(w.sum(1), torch.ones(500), atol=1e-6)
    assert bool((w[d > 1.15 * near + 1e-6] == 0).all())
    assert bool((w[d < 1.15 * near - 1e-6] > 0).all())
    # the nearest centroid always carries the largest weight
    assert torch.equal(w.argmax(1), d.argmin(1))


# ---------------------------------------------------------------------- membership
TWO = torch.tensor([[0.0, -0.5, 0.0], [0.0, 0.5, 0.0]])


def _membership(o, d, near, far, cents, margin, c2d, samples=33):
    return ray_cell_membership(torch.tensor(o), torch.tensor(d), torch.tensor(near), torch.tensor(far),
                               cents, margin, c2d, samples)


def test_membership_hand_built_case_2d():
    o = [[-0.5, -0.9, 0.0],   # vertical ray staying at y = -0.9
         [0.0, -0.6, 0.0],    # horizontal ray crossing y = 0
         [-0.5, 0.02, 0.0],   # at y = 0.02: d = (0.52, 0.48), ratio 1.083 <= 1.15
         [-0.5, 0.05, 0.0],   # at y = 0.05: d = (0.55, 0.45), ratio 1.22 > 1.15
         [-0.5, 0.6, 0.0]]
    d = [[1.0, 0, 0], [0, 1.0, 0], [1.0, 0, 0], [1.0, 0, 0], [1.0, 0, 0]]
    near = [0.3, 0.0, 0.3, 0.3, 0.3]
    far = [0.9, 1.2, 0.9, 0.9, 0.9]
    m = _membership(o, d, near, far, TWO, 1.15, True)
    assert m.tolist() == [[True, False], [True, True], [True, True], [False, True], [False, True]]


def test_membership_altitude_widens_overlap_3d():
    # y = 0.05 vertical ray from x = -0.5 to 0.4: at x = -0.5 the 3D ratio is
    # sqrt(0.25 + 0.3025) / sqrt(0.25 + 0.2025) = 1.105 <= 1.15, so it belongs to both.
    m = _membership([[-0.5, 0.05, 0.0]], [[1.0, 0, 0]], [0.0], [0.9], TWO, 1.15, False)
    assert m.tolist() == [[True, True]]
    # starting at x = -0.2 instead: ratio >= sqrt(0.04 + 0.3025) / sqrt(0.04 + 0.2025) = 1.19 -> cell 1 only
    m = _membership([[-0.2, 0.05, 0.0]], [[1.0, 0, 0]], [0.0], [0.4], TWO, 1.15, False)
    assert m.tolist() == [[False, True]]
    m = _membership([[-0.5, -0.9, 0.0]], [[1.0, 0, 0]], [0.0], [0.9], TWO, 1.15, False)
    assert m.tolist() == [[True, False]]


def _brute_force(rays_o, rays_d, near, far, centroids, margin, cluster_2d, samples):
    """Mega-NeRF's create_cluster_masks.py: one (rays, samples, cells) cdist, then any over samples."""
    c = 1 if cluster_2d else 0
    s = torch.linspace(0, 1, samples)
    z = near[:, None] * (1 - s) + far[:, None] * s
    xyz = rays_o[:, None, :] + rays_d[:, None, :] * z[..., None]
    dist = torch.cdist(xyz.reshape(-1, 3)[:, c:], centroids[:, c:],
                       compute_mode="donot_use_mm_for_euclid_dist").reshape(len(rays_o), samples, -1)
    min_dist = dist.min(dim=2, keepdim=True).values
    return (dist / (min_dist + 1e-8) <= margin).any(dim=1)


@pytest.mark.parametrize("cluster_2d", [False, True])
@pytest.mark.parametrize("margin", [1.0, 1.15, 1.5])
def test_membership_equals_brute_force_cdist(cluster_2d, margin):
    g = torch.Generator().manual_seed(int(margin * 100) + cluster_2d)
    n = 400
    rays_o = torch.cat([torch.full((n, 1), -0.5), torch.rand(n, 2, generator=g) - 0.5], 1)
    rays_d = torch.nn.functional.normalize(
        torch.cat([torch.ones(n, 1), 0.6 * (torch.rand(n, 2, generator=g) - 0.5)], 1), dim=-1)
    near = torch.full((n,), 0.3 / 1.0) + 0.05 * torch.rand(n, generator=g)
    far = near + 0.5 + 0.5 * torch.rand(n, generator=g)
    cents = grid_centroids(rays_o, (3, 2))
    got = ray_cell_membership(rays_o, rays_d, near, far, cents, margin, cluster_2d, 40)
    want = _brute_force(rays_o, rays_d, near, far, cents, margin, cluster_2d, 40)
    assert got.dtype == torch.bool and got.shape == (n, 6)
    assert torch.equal(got, want)
    assert bool(got.any(1).all())  # every ray belongs to its nearest cell at least
    if margin > 1:
        assert int(got.sum()) > n  # some overlap exists, so the comparison is not trivial


# ---------------------------------------------------------------------------- files
def test_mask_round_trip_and_mega_nerf_format(tmp_path):
    g = torch.Generator().manual_seed(0)
    mask = torch.rand(5, 7, generator=g) > 0.5
    path = mask_path(tmp_path, 3, "000012")
    assert path == tmp_path / "3" / "000012.pt"
    path.parent.mkdir(parents=True)
    write_mask(path, mask)
    assert torch.equal(read_mask(path), mask)
    with zipfile.ZipFile(path) as zf:
        assert zf.namelist() == ["000012.pt"]
        assert zf.getinfo("000012.pt").compress_type == zipfile.ZIP_DEFLATED
        # exactly how Mega-NeRF reads it
        with zf.open(path.name) as f:
            loaded = torch.load(f, map_location="cpu", weights_only=True)
    assert loaded.dtype == torch.bool and torch.equal(loaded, mask)
    assert sorted(p.name for p in path.parent.iterdir()) == ["000012.pt"]  # no temp file left


def test_read_mask_written_by_mega_nerf(tmp_path):
    mask = torch.zeros(4, 6, dtype=torch.bool)
    mask[1:3, 2:5] = True
    path = tmp_path / "000001.pt"
    buffer = io.BytesIO()
    torch.save(mask, buffer)
    with zipfile.ZipFile(path, compression=zipfile.ZIP_DEFLATED, mode="w") as zf:
        zf.writestr(path.name, buffer.getvalue())
    got = read_mask(path)
    assert got.dtype == torch.bool and torch.equal(got, mask)


def test_corrupt_or_missing_mask_raises_user_error(tmp_path):
    bad = tmp_path / "000001.pt"
    bad.write_bytes(b"PK\x03\x04 this is not really a zip")
    with pytest.raises(UserError) as e:
        read_mask(bad)
    assert str(bad) in str(e.value)
    # a zip without the expected member
    other = tmp_path / "000002.pt"
    with zipfile.ZipFile(other, mode="w") as zf:
        zf.writestr("something_else.pt", b"x")
    with pytest.raises(UserError) as e:
        read_mask(other)
    assert str(other) in str(e.value)
    with pytest.raises(UserError) as e:
        read_mask(tmp_path / "missing.pt")
    assert str(tmp_path / "missing.pt") in str(e.value)


def test_mask_files_respect_umask(tmp_path):
    """Mask folders are shared by every cell's training job; files must not be private (0600)."""
    import os
    import stat

    old = os.umask(0o022)
    try:
        write_mask(tmp_path / "000001.pt", torch.ones(2, 2, dtype=torch.bool))
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "000001.pt").stat().st_mode) == 0o644
