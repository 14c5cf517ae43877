"""Merged container: routing to submodules, inverse-distance blending, save/load."""
from __future__ import annotations

import pytest
import torch

from mega_nerf.config import train_parser
from mega_nerf.container.container import Container, load_container, save_container
from mega_nerf.errors import UserError
from mega_nerf.fields.model import model_config_from_args
from mega_nerf.geometry.bounds import compute_scene_bounds

CENTROIDS = torch.tensor([[0.0, -0.6, 0.0], [0.0, 0.0, 0.0], [0.0, 0.6, 0.0]])


def tiny_config():
    args = train_parser().parse_args([
        "--exp_name", "x", "--dataset_path", "y", "--hash_levels", "3", "--hash_features", "2",
        "--hash_log2_size", "8", "--hash_base_resolution", "2", "--hash_max_resolution", "16",
        "--layer_dim", "16", "--bg_layer_dim", "16", "--geo_feat_dim", "4", "--pos_dir_dim", "2",
        "--appearance_dim", "3"])
    cams = torch.tensor([[-0.5, -0.5, -0.5], [-0.5, 0.5, 0.5], [-0.5, 0.0, 0.0]])
    bounds = compute_scene_bounds(cams, torch.zeros(3), 100.0, [-20.0, 40.0])
    return model_config_from_args(args, bounds, appearance_count=5), bounds


def make_container(margin=1.15):
    cfg, bounds = tiny_config()
    c = Container(cfg, bounds, CENTROIDS, [0, 1, 2], margin, cluster_2d=False)
    # distinct weights per cell (and non-zero appearance embeddings)
    with torch.no_grad():
        for k, module in enumerate(list(c.sub_modules) + list(c.bg_sub_modules)):
            g = torch.Generator().manual_seed(100 + k)
            for p in module.parameters():
                p.copy_(torch.rand(p.shape, generator=g) * 2 - 1)
    return c.eval()


def inputs(points, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.as_tensor(points, dtype=torch.float32)
    d = torch.nn.functional.normalize(torch.randn(len(x), 3, generator=g), dim=-1)
    app = torch.randint(0, 5, (len(x),), generator=g)
    return x, d, app


def test_submodules_differ():
    c = make_container()
    x, d, app = inputs([[0.0, 0.01, 0.02]])
    outs = [c.sub_modules[k](x, d, app) for k in range(3)]
    assert not torch.allclose(outs[0][0], outs[1][0]) and not torch.allclose(outs[1][1], outs[2][1])


@pytest.mark.parametrize("cell, y", [(0, -0.62), (1, 0.01), (2, 0.65)])
def test_point_deep_inside_cell_is_that_submodule_exactly(cell, y):
    c = make_container()
    g = torch.Generator().manual_seed(cell)
    pts = torch.tensor([[0.0, y, 0.0]]) + 0.03 * (torch.rand(6, 3, generator=g) - 0.5)
    x, d, app = inputs(pts, seed=cell)
    with torch.no_grad():
        sigma, rgb = c.foreground(x, d, app)
        s_k, c_k = c.sub_modules[cell](x, d, app)
        dens = c.density(x)
    assert torch.equal(sigma, s_k.float()) and torch.equal(rgb, c_k.float())
    assert torch.equal(dens, c.sub_modules[cell].density(x).float())


def test_margin_band_is_inverse_distance_blend():
    c = make_container()
    # d = (0.92, 0.32, 0.28): cells 1 and 2 within 1.15x (0.32 / 0.28 = 1.143), cell 0 not
    x, d, app = inputs([[0.0, 0.32, 0.0], [0.0, -0.31, 0.0], [0.0, 0.01, 0.0]], seed=5)
    with torch.no_grad():
        sigma, rgb = c.foreground(x, d, app)
        subs = [c.sub_modules[k](x, d, app) for k in range(3)]
    w1, w2 = (1 / 0.32) / (1 / 0.32 + 1 / 0.28), (1 / 0.28) / (1 / 0.32 + 1 / 0.28)
    assert w1 == pytest.approx(0.28 / 0.6)
    exp_sigma0 = w1 * subs[1][0][0] + w2 * subs[2][0][0]
    exp_rgb0 = w1 * subs[1][1][0] + w2 * subs[2][1][0]
    assert sigma[0].item() == pytest.approx(exp_sigma0.item(), rel=1e-5)
    assert torch.allclose(rgb[0], exp_rgb0, atol=1e-6)
    # (0, -0.31, 0): d = (0.29, 0.31, 0.91) -> cells 0 and 1
    v0, v1 = (1 / 0.29) / (1 / 0.29 + 1 / 0.31), (1 / 0.31) / (1 / 0.29 + 1 / 0.31)
    assert sigma[1].item() == pytest.approx((v0 * subs[0][0][1] + v1 * subs[1][0][1]).item(), rel=1e-5)
    assert torch.allclose(rgb[1], v0 * subs[0][1][1] + v1 * subs[1][1][1], atol=1e-6)
    # the third point is alone in cell 1 (evaluated in a batch with others: same value up to rounding)
    assert sigma[2].item() == pytest.approx(subs[1][0][2].item(), rel=1e-5)
    # blended colours are convex combinations of sigmoid outputs
    assert bool(((rgb >= 0) & (rgb <= 1)).all())


def test_tapered_blend_has_no_step_at_the_band_edge():
    """Along a line across two band edges, Mega-NeRF's weights step by about 0.47 where a cell
    leaves the band; tapered weights change by no more than their slope allows, take the same
    cells, sum to 1, rank the cells alike and match the hand-computed values."""
    from mega_nerf.partition.centroids import routing_weights

    y = torch.linspace(-0.45, 0.45, 9001)
    points = torch.stack([torch.zeros_like(y), y, torch.full_like(y, 0.05)], dim=1)
    plain = routing_weights(points, CENTROIDS, 1.15, False)
    tapered = routing_weights(points, CENTROIDS, 1.15, False, tapered=True)
    assert (plain[1:] - plain[:-1]).abs().max() > 0.4
    assert (tapered[1:] - tapered[:-1]).abs().max() < 0.01  # steps of 1e-4 in y
    assert torch.equal(plain > 0, tapered > 0)
    assert torch.allclose(tapered.sum(1), torch.ones(len(y)))
    assert torch.equal(plain.argmax(1), tapered.argmax(1))
    # (0, 0.29, 0): d = (0.89, 0.29, 0.31), cells 1 and 2: w ~ 1/d - 1/(1.15 * 0.29)
    w = routing_weights(torch.tensor([[0.0, 0.29, 0.0]]), CENTROIDS, 1.15, False, tapered=True)[0]
    raw = torch.tensor([1 / 0.29, 1 / 0.31]) - 1 / (1.15 * 0.29)
    assert w[0] == 0 and torch.allclose(w[1:], raw / raw.sum(), atol=1e-5)
    # margin 1: both are hard routing
    assert torch.equal(routing_weights(points, CENTROIDS, 1.0, False, tapered=True),
                       routing_weights(points, CENTROIDS, 1.0, False))


def test_tapered_container_blends_with_tapered_weights_and_keeps_them(tmp_path):
    from mega_nerf.partition.centroids import routing_weights

    c = make_container()
    c.blend_weights = "tapered"
    x, d, app = inputs([[0.0, 0.29, 0.0]], seed=5)
    with torch.no_grad():
        sigma, _ = c.foreground(x, d, app)
        subs = [c.sub_modules[k](x, d, app)[0] for k in range(3)]
    w = routing_weights(x, CENTROIDS, 1.15, False, tapered=True)[0]
    assert sigma[0].item() == pytest.approx((w[1] * subs[1][0] + w[2] * subs[2][0]).item(), rel=1e-5)
    save_container(c, tmp_path / "c.pt")
    assert load_container(tmp_path / "c.pt").blend_weights == "tapered"
    assert load_container(tmp_path / "c.pt", blend_weights="inverse_distance").blend_weights == "inverse_distance"
    with pytest.raises(UserError, match="blend weights 'soft'"):
        Container(c.model_configs, c.bounds, CENTROIDS, [0, 1, 2], 1.15, False, blend_weights="soft")


def test_hard_routing_container():
    c = make_container(margin=1.0)
    x, d, app = inputs([[0.0, 0.32, 0.0]], seed=5)
    with torch.no_grad():
        sigma, rgb = c.foreground(x, d, app)
        s2, c2 = c.sub_modules[2](x, d, app)
    assert torch.equal(sigma, s2) and torch.equal(rgb, c2)


def test_background_routed_by_route_points():
    c = make_container()
    g = torch.Generator().manual_seed(3)
    n = 4
    unit_dir = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=-1)
    inv_r = torch.rand(n, generator=g)
    d = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=-1)
    app = torch.randint(0, 5, (n,), generator=g)
    route = torch.tensor([[0.0, 0.7, 0.0]]).expand(n, 3)
    with torch.no_grad():
        sigma, rgb = c.background(unit_dir, inv_r, d, app, route)
        s2, c2 = c.bg_sub_modules[2](unit_dir, inv_r, d, app)
    assert torch.equal(sigma, s2) and torch.equal(rgb, c2)


def test_save_load_round_trip(tmp_path):
    c = make_container()
    path = tmp_path / "container.pt"
    save_container(c, path)
    loaded = load_container(path)
    assert loaded.cell_ids == [0, 1, 2] and loaded.boundary_margin == 1.15 and loaded.cluster_2d is False
    assert torch.equal(loaded.centroids, CENTROIDS)
    assert loaded.bounds == c.bounds and loaded.model_configs == c.model_configs
    g = torch.Generator().manual_seed(7)
    pts = (torch.rand(50, 3, generator=g) - 0.5) * torch.tensor([0.4, 1.6, 0.8])
    x, d, app = inputs(pts, seed=7)
    with torch.no_grad():
        a = c.foreground(x, d, app)
        b = loaded.foreground(x, d, app)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    # the file is self-contained: a plain dict with a format tag
    data = torch.load(path, weights_only=False)
    assert data["format"] == "mega_nerf.container/2" and set(data["cell_ids"]) == {0, 1, 2}
    # loading with another margin changes routing
    hard = load_container(path, boundary_margin=1.0)
    assert hard.boundary_margin == 1.0
    assert loaded.blend_weights == "inverse_distance" == data["blend_weights"]


def test_loading_non_container_files_raises_user_error(tmp_path):
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {}}, other)
    with pytest.raises(UserError) as e:
        load_container(other)
    assert str(other) in str(e.value)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(UserError) as e:
        load_container(garbage)
    assert str(garbage) in str(e.value)
    with pytest.raises(UserError) as e:
        load_container(tmp_path / "missing.pt")
    assert str(tmp_path / "missing.pt") in str(e.value)
