"""Occupancy grid and empty-space-skipping sampler."""
from __future__ import annotations

import torch

from mega_nerf.render.occupancy import OccupancyGrid
from mega_nerf.render.volume import composite_intervals, occupied_samples

BOX = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])


def test_fresh_grid_culls_nothing_and_update_finds_the_dense_slab():
    grid = OccupancyGrid(BOX, resolution=16)
    x = torch.rand(1000, 3) * 2 - 1
    assert bool(grid.occupied_at(x).all())
    slab = lambda p: torch.where(p[:, 0].abs() < 0.25, torch.full_like(p[:, 0], 100.0), torch.zeros_like(p[:, 0]))  # noqa: E731
    grid.update(slab, threshold=1.0)
    centers = grid.cell_points(torch.arange(16 ** 3))
    # Cells wholly inside |x| < 0.25 are occupied, cells wholly outside it are empty.
    ix = ((centers[:, 0] + 1) / 2 * 16).floor()
    inside = (ix >= 7) & (ix <= 8)  # cells spanning [-0.125, 0.125]
    outside = (ix <= 4) | (ix >= 11)
    assert bool(grid.occupied[inside].all())
    assert not bool(grid.occupied[outside].any())
    # Points outside the box are never culled.
    assert bool(grid.occupied_at(torch.tensor([[0.0, 5.0, 0.0]])).all())


def test_decay_keeps_a_cell_for_a_while_after_its_density_drops():
    grid = OccupancyGrid(BOX, resolution=4, decay=0.5)
    grid.update(lambda p: torch.full_like(p[:, 0], 10.0), threshold=2.0)
    grid.update(lambda p: torch.zeros_like(p[:, 0]), threshold=2.0)  # 10 * 0.5 = 5 > 2
    assert bool(grid.occupied.all())
    grid.update(lambda p: torch.zeros_like(p[:, 0]), threshold=2.0)  # 2.5
    grid.update(lambda p: torch.zeros_like(p[:, 0]), threshold=2.0)  # 1.25
    assert not bool(grid.occupied.any())


def test_occupied_samples_are_the_occupied_candidates_padded_to_a_fixed_shape():
    rays_o = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    rays_d = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    near, far = torch.zeros(2), torch.ones(2)
    # Ray 0: occupied only for 0.3 < x < 0.5; ray 1 (y shifted) everywhere empty.
    rays_o[1, 1] = 5.0

    def occupied(p):
        return (p[:, 0] > 0.3) & (p[:, 0] < 0.5) & (p[:, 1] == 0)

    z, deltas, valid = occupied_samples(rays_o, rays_d, near, far, occupied, num_candidates=100, num_samples=30,
                                        perturb=False)
    assert z.shape == deltas.shape == valid.shape == (2, 30)
    assert int(valid[0].sum()) == 20 and int(valid[1].sum()) == 0  # candidates k/99 in (0.3, 0.5)
    zs = z[0][valid[0]]
    assert bool((zs > 0.3).all() and (zs < 0.5).all() and (zs[1:] > zs[:-1]).all())
    assert torch.allclose(deltas[0][valid[0]], torch.full((20,), 1 / 99))
    assert bool((deltas[~valid] == 0).all())
    # Invalid (padded) samples add nothing: an opaque field renders only where samples are valid.
    out = composite_intervals(torch.full((2, 30), 1e4), torch.ones(2, 30, 3), z, deltas)
    assert torch.allclose(out["rgb"][0], torch.ones(3)) and torch.allclose(out["rgb"][1], torch.zeros(3))
    assert 0.3 < float(out["depth"][0]) < 0.33


def test_more_occupied_candidates_than_samples_are_strided_over_the_whole_occupied_length():
    rays_o, rays_d = torch.zeros(1, 3), torch.tensor([[1.0, 0.0, 0.0]])
    near, far = torch.zeros(1), torch.ones(1)

    def occupied(p):  # two occupied segments: 20 + 30 of the 101 candidates (0, 0.01, ..., 1)
        return ((p[:, 0] > 0.105) & (p[:, 0] < 0.305)) | ((p[:, 0] > 0.595) & (p[:, 0] < 0.895))

    z, deltas, valid = occupied_samples(rays_o, rays_d, near, far, occupied, num_candidates=101, num_samples=10,
                                        perturb=False)
    assert bool(valid.all())
    zs = z[0]
    assert bool(occupied(torch.stack([zs, torch.zeros(10), torch.zeros(10)], -1)).all())
    assert bool((zs[1:] > zs[:-1]).all())
    # Both segments are sampled (not only the front one), in proportion to their lengths.
    assert int((zs < 0.5).sum()) == 4 and int((zs > 0.5).sum()) == 6
    # Each sample stands for 5 candidate intervals: together the occupied length is covered.
    assert torch.allclose(deltas.sum(), torch.tensor(50 * 0.01))


def test_update_keeps_every_cell_that_holds_surface_in_the_synthetic_city(tmp_path):
    """A field whose density is a thin shell (half a cell thick) around the city's exact
    surfaces: after a few updates no cell that holds a surface point seen by a training camera
    is culled, while most of the air is."""
    from mega_nerf.data.format import load_dataset
    from mega_nerf.geometry.rays import image_rays
    from mega_nerf.synthetic.city import load_scene, write_dataset

    write_dataset(tmp_path / "tiny", "tiny", seed=0, progress=False)
    scene, dataset = load_scene(tmp_path / "tiny"), load_dataset(tmp_path / "tiny")
    surface = []
    for item in dataset.train:
        md = item.scaled(2)
        rays_o, rays_d = image_rays(md.W, md.H, md.intrinsics, md.c2w)
        _, depth = scene.cast(rays_o, rays_d)
        hit = torch.isfinite(depth)
        unit = torch.nn.functional.normalize(rays_d[hit], dim=-1)
        surface.append(rays_o[hit] + depth[hit, None] / dataset.pose_scale_factor * unit)
    surface = torch.cat(surface)
    lo, hi = surface.min(0).values, surface.max(0).values
    box = torch.stack([lo - 0.1 * (hi - lo), hi + 0.1 * (hi - lo)])
    resolution = 24
    grid = OccupancyGrid(box, resolution=resolution)
    cell_m = float((box[1] - box[0]).min()) * dataset.pose_scale_factor / resolution

    def shell(points):
        distance = scene.surface_distance_enu(scene.normalized_drb_to_enu(points))
        return (1e3 * torch.exp(-(distance / (0.25 * cell_m)) ** 2)).float()

    torch.manual_seed(0)
    for _ in range(8):
        grid.update(shell, threshold=10.0)
    index, inside = grid.cell_index(surface)
    assert bool(inside.all())
    assert bool(grid.occupied[index].all()), f"{int((~grid.occupied[index]).sum())} surface points culled"
    assert grid.occupied_fraction() < 0.5


def test_container_point_is_occupied_if_any_answering_cell_says_so():
    from mega_nerf.container.container import Container
    from mega_nerf.geometry.bounds import SceneBounds

    cfg = {"model_type": "grid", "appearance_dim": 0, "appearance_count": 1, "bg_nerf": False, "layer_dim": 8,
           "bg_layer_dim": 8, "geo_feat_dim": 15, "pos_dir_dim": 0, "aabb": BOX.tolist(), "grid_resolution": 4,
           "grid_color": "mlp", "occupancy_resolution": 4}
    bounds = SceneBounds([0, 0, 0], 1.0, 0.0, None, None, [0, 0, 0], [2, 2, 2])
    c = Container(cfg, bounds, torch.tensor([[0.0, -0.5, 0.0], [0.0, 0.5, 0.0]]), [0, 1], 1.15, False)
    assert c.has_occupancy
    c.occupancy_grids[0].occupied.zero_()  # cell 0 says its space is empty, cell 1 keeps everything
    deep0, deep1, band = torch.tensor([[0.0, -0.9, 0.0]]), torch.tensor([[0.0, 0.9, 0.0]]), torch.tensor([[0.0, 0.01, 0.0]])
    assert not bool(c.occupied(deep0)) and bool(c.occupied(deep1)) and bool(c.occupied(band))


def _random_grid_container(cells: int):
    from mega_nerf.container.container import Container
    from mega_nerf.geometry.bounds import SceneBounds

    torch.manual_seed(0)
    cfg = {"model_type": "grid", "appearance_dim": 0, "appearance_count": 1, "bg_nerf": False, "layer_dim": 8,
           "bg_layer_dim": 8, "geo_feat_dim": 15, "pos_dir_dim": 0, "aabb": BOX.tolist(), "grid_resolution": 8,
           "grid_color": "mlp", "occupancy_resolution": 8}
    bounds = SceneBounds([0, 0, 0], 1.0, 0.0, None, None, [0, 0, 0], [1, 1, 1], box=True)
    centroids = torch.tensor([[0.0, -0.5, 0.0], [0.0, 0.5, 0.0]])[:cells]
    c = Container(cfg, bounds, centroids, list(range(cells)), 1.15, False)
    with torch.no_grad():
        for p in c.parameters():
            p.normal_(0, 1)
        for g in c.occupancy_grids:
            g.occupied.copy_(torch.rand(g.occupied.shape) > 0.5)
    return c, bounds


def test_rendering_evaluates_only_occupied_samples_and_matches_the_padded_batch():
    """Without gradients the renderer evaluates the valid samples only (packed); with them it
    keeps the fixed padded shape.  Both must give the same pixels, for a student (one cell, no
    routing) and a container."""
    from mega_nerf.render.renderer import SamplingConfig, render_rays

    for cells in (1, 2):
        model, bounds = _random_grid_container(cells)
        n = 300
        rays_o = torch.tensor([[-3.0, 0.0, 0.0]]).repeat(n, 1) + 0.2 * torch.randn(n, 3)
        rays_d = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0, 0.0]]) + 0.3 * torch.randn(n, 3), dim=-1)
        appearance = torch.zeros(n, dtype=torch.long)
        sampling = SamplingConfig(8, 8, 0, 64, min_transmittance=0.0, color_min_weight=0.0)  # every valid sample
        calls = []
        original = model.foreground

        def counting(x, d, a):
            calls.append(len(x))
            return original(x, d, a)

        model.foreground = counting
        padded = render_rays(model, rays_o, rays_d, appearance, bounds, sampling, train=False)
        with torch.no_grad():
            packed = render_rays(model, rays_o, rays_d, appearance, bounds, sampling, train=False)
        assert calls[0] == n * 17 and calls[1] < 0.8 * calls[0]
        assert float(padded["transmittance_fg"].detach().min()) < 0.5  # the fields are not empty
        for key in ("rgb", "depth", "transmittance_fg"):
            assert torch.allclose(padded[key], packed[key], atol=1e-5), (cells, key)


class _OpaqueBelow(torch.nn.Module):
    """Dense matter (density 40) for x > 0, nothing above; colour from x; an all-occupied grid."""

    has_background = False
    white_background = False
    has_occupancy = True

    def occupied(self, x):
        return torch.ones(x.shape[0], dtype=torch.bool)

    def density(self, x):
        return torch.where(x[:, 0] > 0, 40.0, 0.0)

    def foreground(self, x, d, a):
        self.evaluated += x.shape[0]
        return self.density(x), torch.sigmoid(x).clone()


def test_rendering_stops_evaluating_rays_once_they_are_opaque():
    """Without gradients, samples behind an opaque surface are skipped: far fewer evaluations, and
    pixels within the light left when a ray stops (``min_transmittance``)."""
    from mega_nerf.geometry.bounds import SceneBounds
    from mega_nerf.render.renderer import SamplingConfig, render_rays

    bounds = SceneBounds([0, 0, 0], 1.0, 0.0, None, None, [0, 0, 0], [1, 1, 1], box=True)
    n = 200
    rays_o = torch.tensor([[-0.9, 0.0, 0.0]]).repeat(n, 1) + 0.05 * torch.randn(n, 3)
    rays_d = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0, 0.0]]) + 0.1 * torch.randn(n, 3), dim=-1)
    appearance = torch.zeros(n, dtype=torch.long)
    model = _OpaqueBelow()
    outputs, counts = {}, {}
    for eps in (0.0, 1e-3):
        model.evaluated = 0
        with torch.no_grad():
            outputs[eps] = render_rays(model, rays_o, rays_d, appearance, bounds, SamplingConfig(32, 32, 0, 128, eps),
                                       train=False)
        counts[eps] = model.evaluated
    assert counts[0.0] == n * 65  # 64 samples and the end sample, all occupied
    assert counts[1e-3] < 0.75 * counts[0.0]  # the surface is halfway: the back half is skipped
    exact, early = outputs[0.0], outputs[1e-3]
    assert float(exact["transmittance_fg"].max()) < 1e-6  # every ray ends in the matter
    assert torch.allclose(exact["rgb"], early["rgb"], atol=2e-3)
    assert torch.allclose(exact["depth"], early["depth"], atol=2e-3 * 2)


def test_colour_only_where_the_weight_matters_keeps_the_pixels():
    """Two-pass rendering (``color_min_weight``): density everywhere, colour only at samples with
    weight; the few colour evaluations give the pixels of the one-pass render within the light
    the skipped samples carry.  A routed container reuses its cells' features: the same pixels as
    when its kept samples are evaluated again in full."""
    from mega_nerf.render.renderer import SamplingConfig, render_rays

    class _Counting(torch.nn.Module):
        """Wraps a model; counts colour evaluations; ``features=False`` hides its two-pass methods."""

        def __init__(self, model, features):
            super().__init__()
            self.model, self.coloured = model, 0
            for name in ("has_background", "white_background", "has_occupancy", "occupied", "density"):
                setattr(self, name, getattr(model, name))
            if features:
                self.density_with_features = model.density_with_features

        def foreground(self, x, d, a):
            self.coloured += x.shape[0]
            return self.model.foreground(x, d, a)

        def color_from_features(self, features, d, a):
            self.coloured += d.shape[0]
            return self.model.color_from_features(features, d, a)

    torch.manual_seed(0)
    for cells in (1, 2):
        model, bounds = _random_grid_container(cells)
        for sub in model.sub_modules:  # dense matter: rays become opaque partway
            sub.voxels.data[0, 0] += 3.0
        n = 200
        rays_o = torch.tensor([[-3.0, 0.0, 0.0]]).repeat(n, 1) + 0.2 * torch.randn(n, 3)
        rays_d = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0, 0.0]]) + 0.3 * torch.randn(n, 3), dim=-1)
        appearance = torch.zeros(n, dtype=torch.long)
        out, counts = {}, {}
        for name, weight, features in (("one-pass", 0.0, True), ("features", 1e-3, True), ("again", 1e-3, False)):
            wrapped = _Counting(model, features)
            with torch.no_grad():
                out[name] = render_rays(wrapped, rays_o, rays_d, appearance, bounds,
                                        SamplingConfig(16, 16, 0, 64, 0.0, weight), train=False)
            counts[name] = wrapped.coloured
        assert float(out["one-pass"]["transmittance_fg"].max()) < 0.05, cells  # the matter is opaque
        assert counts["features"] == counts["again"] < 0.5 * counts["one-pass"], (cells, counts)
        assert torch.allclose(out["features"]["rgb"], out["again"]["rgb"], atol=1e-5), cells
        lost = (out["one-pass"]["rgb"] - out["features"]["rgb"]).abs().max()
        assert 0 < float(lost) < 33 * 1e-3, (cells, float(lost))  # at most 33 samples of weight < 1e-3
        assert torch.equal(out["features"]["depth"], out["again"]["depth"])
