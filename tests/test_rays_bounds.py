"""Pixel rays of nadir cameras, altitude-plane truncation, the foreground ellipsoid."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers_pipeline import nadir_c2w  # noqa: E402

from mega_nerf.geometry.bounds import (  # noqa: E402
    UNBOUNDED_FAR,
    compute_scene_bounds,
    ellipsoid_exit,
    ray_bounds,
    truncate_with_altitude_planes,
)
from mega_nerf.geometry.rays import camera_directions, image_rays, pixel_coordinates, world_rays  # noqa: E402

# A 5x3 camera whose principal point is the centre of pixel (2, 1).
W, H = 5, 3
INTR = torch.tensor([2.0, 2.0, 2.5, 1.5])


def test_nadir_centre_and_corner_directions():
    c2w = nadir_c2w(0.1, 0.2)
    rays_o, rays_d = image_rays(W, H, INTR, c2w)
    assert rays_o.shape == (15, 3) and rays_d.shape == (15, 3)
    assert torch.allclose(rays_o, torch.tensor([-0.5, 0.1, 0.2]).expand(15, 3))
    # centre pixel (i=2, j=1) -> flat index 1*5 + 2 = 7 looks straight down (+x in DRB)
    assert torch.allclose(rays_d[7], torch.tensor([1.0, 0.0, 0.0]), atol=1e-7)
    # camera x (image right) = world +y; camera y (image up) = world -z.  Pixel (0, 0):
    # x = (0.5 - 2.5)/2 = -1, y = -(0.5 - 1.5)/2 = 0.5 -> world (1, -1, -0.5) / 1.5
    expected = {0: (1.0, -1.0, -0.5), 4: (1.0, 1.0, -0.5), 10: (1.0, -1.0, 0.5), 14: (1.0, 1.0, 0.5)}
    for flat, v in expected.items():
        assert torch.allclose(rays_d[flat], torch.tensor(v) / 1.5, atol=1e-6), flat
    assert torch.allclose(rays_d.norm(dim=-1), torch.ones(15), atol=1e-6)


def test_corner_pixels_without_centering():
    _, rays_d = image_rays(W, H, INTR, nadir_c2w(0.0, 0.0), center_pixels=False)
    # pixel (0, 0): x = -2.5/2 = -1.25, y = 1.5/2 = 0.75 -> (1, -1.25, -0.75)
    v = torch.tensor([1.0, -1.25, -0.75])
    assert torch.allclose(rays_d[0], v / v.norm(), atol=1e-6)


def test_image_rays_match_per_pixel_formula():
    rng = np.random.default_rng(0)
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] *= -1
    c2w = torch.tensor(np.concatenate([q, [[0.3], [-0.1], [0.7]]], 1), dtype=torch.float32)
    Wd, Hd = 7, 4
    intr = torch.tensor([5.0, 6.0, 3.2, 2.1])
    rays_o, rays_d = image_rays(Wd, Hd, intr, c2w)
    fx, fy, cx, cy = intr.double().tolist()
    R = c2w[:, :3].double().numpy()
    for j in range(Hd):
        for i in range(Wd):
            d = R @ np.array([(i + 0.5 - cx) / fx, -(j + 0.5 - cy) / fy, -1.0])
            d /= np.linalg.norm(d)
            assert np.allclose(rays_d[j * Wd + i].double().numpy(), d, atol=1e-6)
            assert np.allclose(rays_o[j * Wd + i].numpy(), [0.3, -0.1, 0.7])


def test_pixel_coordinates_and_batched_world_rays():
    i, j = pixel_coordinates(torch.tensor([0, 4, 5, 14]), 5)
    assert i.tolist() == [0, 4, 0, 4] and j.tolist() == [0, 0, 1, 2]
    dirs = camera_directions(i, j, INTR)
    c2ws = torch.stack([nadir_c2w(0.0, 0.0), nadir_c2w(0.3, 0.0), nadir_c2w(0.0, 0.3), nadir_c2w(0.3, 0.3)])
    o, d = world_rays(c2ws, dirs)
    _, single = image_rays(W, H, INTR, nadir_c2w(0.0, 0.0))
    assert torch.allclose(d, single[[0, 4, 5, 14]], atol=1e-6)
    assert torch.allclose(o, c2ws[:, :, 3])


# ----------------------------------------------------------------------- altitude planes
def test_truncate_with_altitude_planes_hand_computed():
    top, ground = -0.2, 0.4
    rays_o = torch.tensor([[-0.5, 0.0, 0.0],   # above the top, slanted down
                           [0.0, 0.0, 0.0],    # inside the slab, slanted down
                           [-0.5, 0.0, 0.0],   # going up
                           [-0.5, 0.0, 0.0],   # horizontal
                           [-0.5, 0.0, 0.0],   # slanted down but far is already short
                           [-0.5, 0.0, 0.0]])  # near beyond the ground hit -> far = near
    rays_d = torch.tensor([[0.6, 0.8, 0.0], [0.6, 0.0, 0.8], [-0.6, 0.8, 0.0], [0.0, 1.0, 0.0],
                           [0.6, 0.0, -0.8], [0.6, 0.8, 0.0]])
    near = torch.tensor([0.01, 0.01, 0.01, 0.01, 0.01, 1.6])
    far = torch.tensor([2.0, 2.0, 2.0, 2.0, 1.0, 2.0])
    n, f = truncate_with_altitude_planes(rays_o, rays_d, near, far, [top, ground])
    # ray 0: t_top = 0.3 / 0.6 = 0.5, t_ground = 0.9 / 0.6 = 1.5
    # ray 1: origin below the top: near kept; t_ground = 0.4 / 0.6
    # ray 4: far 1.0 < t_ground 1.5 stays; ray 5: t_top 0.5 < near 1.6 keeps near, far = max(1.6, 1.5)
    assert torch.allclose(n, torch.tensor([0.5, 0.01, 0.01, 0.01, 0.5, 1.6]), atol=1e-6)
    assert torch.allclose(f, torch.tensor([1.5, 0.4 / 0.6, 2.0, 2.0, 1.0, 1.6]), atol=1e-6)
    # the truncated ray 0 ends exactly on the ground plane and starts on the top plane
    assert (rays_o[0] + f[0] * rays_d[0])[0].item() == pytest.approx(ground, abs=1e-6)
    assert (rays_o[0] + n[0] * rays_d[0])[0].item() == pytest.approx(top, abs=1e-6)
    # no altitude range: unchanged
    n2, f2 = truncate_with_altitude_planes(rays_o, rays_d, near, far, None)
    assert torch.equal(n2, near) and torch.equal(f2, far)


def test_ray_bounds_far_defaults():
    bounds = compute_scene_bounds(torch.tensor([[-0.5, -0.5, -0.5], [-0.5, 0.5, 0.5]]), torch.zeros(3), 100.0,
                                  [-20.0, 40.0], near=1.0, far=None)
    o = torch.tensor([[-0.5, 0.0, 0.0], [-0.5, 0.0, 0.0]])
    d = torch.tensor([[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0]])
    n, f = ray_bounds(o, d, bounds, background=True)
    assert torch.allclose(n, torch.tensor([0.3, 0.01]), atol=1e-6)
    assert torch.allclose(f, torch.tensor([0.9, UNBOUNDED_FAR]), atol=1e-5)
    _, f = ray_bounds(o, d, bounds, background=False)
    assert torch.allclose(f, torch.tensor([0.9, 2.0]), atol=1e-6)


# ------------------------------------------------------------------------- ellipsoid
def test_ellipsoid_exit_hand_computed():
    o = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.5, 0.0, 0.0]])
    d = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])
    t = ellipsoid_exit(o, d, torch.zeros(3), torch.tensor([2.0, 1.0, 1.0]))
    assert torch.allclose(t, torch.tensor([2.0, 1.0, 2.5]), atol=1e-6)


def test_ellipsoid_exit_lands_on_surface():
    g = torch.Generator().manual_seed(0)
    center = torch.tensor([0.1, -0.3, 0.2])
    radius = torch.tensor([0.8, 2.0, 1.3])
    u = torch.randn(200, 3, generator=g)
    u = u / u.norm(dim=-1, keepdim=True) * torch.rand(200, 1, generator=g) * 0.95
    rays_o = center + u * radius
    rays_d = torch.nn.functional.normalize(torch.randn(200, 3, generator=g), dim=-1)
    t = ellipsoid_exit(rays_o, rays_d, center, radius)
    assert bool((t > 0).all())
    p = rays_o + t[:, None] * rays_d
    assert torch.allclose(((p - center) / radius).norm(dim=-1), torch.ones(200), atol=1e-5)
    # it is the exit (forward) crossing: slightly further along is outside
    q = rays_o + (t[:, None] + 1e-3) * rays_d
    assert bool((((q - center) / radius).norm(dim=-1) > 1).all())


def test_compute_scene_bounds_contains_cameras_and_plane_projections():
    ys = [-0.5, 0.0, 0.5]
    zs = [-0.5, 0.5]
    cams = torch.tensor([[-0.5, y, z] for z in zs for y in ys])
    b = compute_scene_bounds(cams, torch.zeros(3), 100.0, [-20.0, 40.0])
    assert b.altitude_range == pytest.approx([-0.2, 0.4])
    assert b.near == pytest.approx(0.01) and b.far is None
    # min (-0.5, -0.5, -0.5), max with x <- ground 0.4: (0.4, 0.5, 0.5)
    assert b.center == pytest.approx([-0.05, 0.0, 0.0], abs=1e-6)
    # semi-axes (0.45, 0.5, 0.5); worst point is a corner at normalised norm sqrt(3)
    s = math.sqrt(3) * 1.1
    assert b.radius == pytest.approx([0.45 * s, 0.5 * s, 0.5 * s], rel=1e-5)
    center, radius = b.ellipsoid()
    used = [cams]
    for a in (-0.2, 0.4):
        p = cams.clone()
        p[:, 0] = a
        used.append(p)
    norms = ((torch.cat(used) - center) / radius).norm(dim=-1)
    assert bool((norms < 1).all())
    assert norms.max().item() == pytest.approx(1 / 1.1, rel=1e-5)


def test_compute_scene_bounds_origin_offset_and_unit_sphere():
    cams = torch.tensor([[-0.5, -0.5, 0.0], [-0.5, 0.5, 0.0]])
    b = compute_scene_bounds(cams, torch.tensor([10.0, 0.0, 0.0]), 100.0, [-20.0, 40.0], near=2.0, far=50.0)
    assert b.altitude_range == pytest.approx([-0.3, 0.3])
    assert b.near == pytest.approx(0.02) and b.far == pytest.approx(0.5)
    b2 = compute_scene_bounds(cams, torch.zeros(3), 100.0, None, ellipse_bounds=False)
    assert b2.center == [0.0, 0.0, 0.0] and b2.radius == [1.0, 1.0, 1.0] and b2.altitude_range is None


def test_rays_keep_float32_precision_under_autocast():
    """Eval renders inside bf16 autocast: the camera-to-world product must not drop to bf16."""
    from mega_nerf.geometry.rays import image_rays

    torch.manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(3, 3))
    c2w = torch.cat([q, torch.randn(3, 1)], 1)
    intrinsics = torch.tensor([1111.1, 1111.1, 400.0, 400.0])
    reference = image_rays(800, 800, intrinsics, c2w)[1]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_amp = image_rays(800, 800, intrinsics, c2w)[1]
    assert under_amp.dtype == torch.float32
    # bf16 would be ~4e-3 off; a tenth of a pixel at f = 1111 is 9e-5.
    assert float((under_amp - reference).abs().max()) < 1e-6


def test_footprint_keeps_every_ground_ray_in_the_foreground():
    """Mega-NeRF's ellipsoid around the cameras of a small flight sends image edges to the
    background model; with the ground footprint every ray reaches the ground inside it."""
    from types import SimpleNamespace

    from mega_nerf.geometry.bounds import ground_footprint

    W_, H_ = 64, 48
    intr = torch.tensor([40.0, 40.0, 32.0, 24.0])  # ~77 degrees across
    items = [SimpleNamespace(W=W_, H=H_, intrinsics=intr, c2w=nadir_c2w(y, z))
             for y in (-0.2, 0.0, 0.2) for z in (-0.1, 0.1)]
    cams = torch.stack([m.c2w[:, 3] for m in items])
    altitude_range = [-20.0, 40.0]  # normalised [-0.2, 0.4] at scale 100
    footprint = ground_footprint(items, 0.4)
    assert footprint.shape == (24, 3)
    assert torch.allclose(footprint[:, 0], torch.full((24,), 0.4))
    # a nadir camera 0.9 above the ground at this focal length sees +-0.72 across its width
    assert footprint[:, 1].max().item() == pytest.approx(0.2 + 0.9 * 32 / 40, rel=1e-5)

    def rays_leaving_early(bounds):
        center, radius = bounds.ellipsoid()
        leaving = 0
        for m in items:
            o, d = image_rays(W_, H_, m.intrinsics, m.c2w)
            n = torch.zeros(len(o))
            _, far = truncate_with_altitude_planes(o, d, n, torch.full_like(n, UNBOUNDED_FAR), bounds.altitude_range)
            leaving += int((ellipsoid_exit(o, d, center, radius) < far - 1e-5).sum())
        return leaving

    plain = compute_scene_bounds(cams, torch.zeros(3), 100.0, altitude_range)
    assert rays_leaving_early(plain) > 0.1 * W_ * H_ * len(items)
    covered = compute_scene_bounds(cams, torch.zeros(3), 100.0, altitude_range, footprint=footprint)
    assert rays_leaving_early(covered) == 0
    # the fields span the altitude slab over the seen ground, not the ellipsoid's whole box
    lo, hi = covered.fields_aabb()
    assert lo[0].item() == pytest.approx(-0.2) and hi[0].item() == pytest.approx(0.4)
    assert bool((footprint[:, 1:] >= lo[1:]).all() and (footprint[:, 1:] <= hi[1:]).all())
    assert plain.field_box is None and bool((hi - lo)[0] < 0.5 * 2 * covered.radius[0])
    # an oblique corner ray past the tilt limit does not stretch the ellipsoid to the horizon
    tilted = SimpleNamespace(W=W_, H=H_, intrinsics=torch.tensor([5.0, 5.0, 32.0, 24.0]), c2w=items[0].c2w)
    assert ground_footprint([tilted], 0.4).shape == (0, 3)


def test_training_refuses_masks_made_with_another_footprint_setting(tmp_path):
    """Masks split rays with the ellipsoid; training with ``--ellipse_footprint`` (another
    ellipsoid) on masks made without it, or the other way round, is refused in one line."""
    from mega_nerf.errors import UserError
    from mega_nerf.training.trainer import check_params_match

    cams = torch.tensor([[-0.5, y, z] for y in (-0.2, 0.2) for z in (-0.1, 0.1)])
    footprint = torch.tensor([[0.4, y, z] for y in (-0.8, 0.8) for z in (-0.6, 0.6)])
    plain = compute_scene_bounds(cams, torch.zeros(3), 100.0, [-20.0, 40.0])
    wide = compute_scene_bounds(cams, torch.zeros(3), 100.0, [-20.0, 40.0], footprint=footprint)
    assert wide.field_box is not None and wide.radius[1] > plain.radius[1]
    common = {"pose_scale_factor": 100.0, "origin_drb": torch.zeros(3), "ray_altitude_range": plain.altitude_range,
              "near": plain.near}
    with_ellipsoid = {**common, "foreground_ellipsoid": torch.tensor([wide.center, wide.radius])}
    check_params_match(common, plain, tmp_path)
    check_params_match(with_ellipsoid, wide, tmp_path)
    for params, bounds in ((common, wide), (with_ellipsoid, plain)):
        with pytest.raises(UserError, match="ellipse_footprint"):
            check_params_match(params, bounds, tmp_path)
