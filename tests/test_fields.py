"""The four field backends behind one interface: shapes, fitting, save/load, mixed containers."""
from __future__ import annotations

import math

import pytest
import torch

from mega_nerf.container.container import Container, load_container, save_container
from mega_nerf.fields.model import BACKEND_KEYS, build_foreground
from mega_nerf.geometry.bounds import SceneBounds
from mega_nerf.render.renderer import SamplingConfig, render_rays

BACKENDS = ["hash", "vm", "grid", "mlp"]
SMALL = {"hash_levels": 6, "hash_features": 2, "hash_log2_size": 12, "hash_base_resolution": 4,
         "hash_max_resolution": 64, "pos_xyz_dim": 6, "mlp_layers": 4, "mlp_width": 64, "mlp_skip": 2,
         "vm_resolution": 32, "vm_density_rank": 4, "vm_appearance_rank": 8, "grid_resolution": 24,
         "grid_color": "mlp"}


def config(kind: str, **overrides) -> dict:
    cfg = {"model_type": kind, "appearance_dim": 8, "appearance_count": 3, "bg_nerf": True, "layer_dim": 32,
           "bg_layer_dim": 16, "geo_feat_dim": 15, "pos_dir_dim": 2, "aabb": [[-1, -1, -1], [1, 1, 1]]}
    cfg.update({k: SMALL[k] for k in BACKEND_KEYS[kind]})
    cfg.update(overrides)
    return cfg


def inputs(n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, generator=g) * 2 - 1
    d = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=-1)
    return x, d, torch.randint(0, 3, (n,), generator=g)


@pytest.mark.parametrize("kind", BACKENDS)
def test_interface_shapes_are_the_same_for_every_backend(kind):
    torch.manual_seed(0)
    field = build_foreground(config(kind))
    x, d, a = inputs(50)
    sigma, rgb = field(x, d, a)
    assert sigma.shape == (50,) and rgb.shape == (50, 3)
    assert field.features(x).shape == (50, 16)
    assert field.density(x).shape == (50,)
    assert torch.allclose(field.density(x), sigma)
    assert bool((sigma >= 0).all()) and bool(((rgb >= 0) & (rgb <= 1)).all())
    assert field.parameter_count() == sum(p.numel() for p in field.parameters()) > 0
    assert field.memory_bytes() >= 4 * field.parameter_count()


def target_field(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A smooth known field: log-density and colour varying along every axis."""
    log_sigma = 2 * torch.sin(2 * x[:, 0]) + x[:, 1] ** 2
    rgb = 0.5 + 0.4 * torch.stack([torch.sin(3 * x[:, 0]), torch.cos(2 * x[:, 1]), torch.sin(x[:, 2] + x[:, 0])], -1)
    return log_sigma, rgb


@pytest.mark.parametrize("kind,lr", [("hash", 1e-2), ("vm", 2e-2), ("grid", 5e-2), ("mlp", 2e-3)])
def test_each_backend_fits_a_known_field(kind, lr):
    torch.manual_seed(0)
    field = build_foreground(config(kind, appearance_dim=0))
    opt = torch.optim.Adam(field.parameters(), lr=lr)
    d = torch.nn.functional.normalize(torch.tensor([[0.0, 0.0, 1.0]]), dim=-1)

    def loss_at(x: torch.Tensor) -> torch.Tensor:
        log_sigma, rgb = target_field(x)
        sigma, pred = field(x, d.expand_as(x), torch.zeros(len(x), dtype=torch.long))
        return ((torch.log(sigma + 1e-6) - log_sigma) ** 2).mean() + ((pred - rgb) ** 2).mean()

    x_test = inputs(2000, seed=1)[0]
    with torch.no_grad():
        start = loss_at(x_test).item()
    for step in range(300):
        x = torch.rand(1024, 3) * 2 - 1
        opt.zero_grad()
        loss_at(x).backward()
        opt.step()
    with torch.no_grad():
        end = loss_at(x_test).item()
    assert end < 0.1 * start and end < 0.25, (start, end)


@pytest.mark.parametrize("kind", BACKENDS)
def test_save_load_round_trip_gives_identical_outputs(kind, tmp_path):
    torch.manual_seed(1)
    field = build_foreground(config(kind))
    torch.save(field.state_dict(), tmp_path / "f.pt")
    torch.manual_seed(2)
    other = build_foreground(config(kind))
    other.load_state_dict(torch.load(tmp_path / "f.pt", weights_only=True))
    x, d, a = inputs(64)
    for got, want in zip(other(x, d, a), field(x, d, a)):
        assert torch.equal(got, want)


def test_grid_with_spherical_harmonics_colour_depends_on_view():
    torch.manual_seed(0)
    field = build_foreground(config("grid", grid_color="sh"))
    with torch.no_grad():
        field.voxels[:, 1:] = torch.randn_like(field.voxels[:, 1:])
    x = torch.zeros(2, 3)
    d = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    _, rgb = field(x, d, torch.zeros(2, dtype=torch.long))
    assert not torch.allclose(rgb[0], rgb[1])
    assert field.features(x).shape == (2, 16)


def test_sh_basis_is_orthonormal_on_the_sphere():
    from mega_nerf.fields.grid_field import sh_basis_deg2

    d = torch.nn.functional.normalize(torch.randn(200000, 3, dtype=torch.float64), dim=-1)
    basis = sh_basis_deg2(d)
    gram = basis.T @ basis * (4 * math.pi / len(d))
    assert torch.allclose(gram, torch.eye(9, dtype=torch.float64), atol=0.03)


def test_container_of_mixed_backends_renders(tmp_path):
    torch.manual_seed(0)
    bounds = SceneBounds(origin_drb=[0, 0, 0], pose_scale_factor=1.0, near=0.01, far=None,
                         altitude_range=[-0.2, 0.5], center=[0, 0, 0], radius=[1, 1, 1])
    centroids = torch.tensor([[0, -0.5, -0.5], [0, -0.5, 0.5], [0, 0.5, -0.5], [0, 0.5, 0.5]])
    container = Container([config(k) for k in BACKENDS], bounds, centroids, [0, 1, 2, 3], 1.15, False)
    assert [type(m).__name__ for m in container.sub_modules] == ["HashField", "VMField", "GridField", "MLPField"]
    n = 64
    rays_o = torch.zeros(n, 3)
    rays_o[:, 0] = -0.5
    rays_o[:, 1:] = torch.rand(n, 2) - 0.5
    rays_d = torch.nn.functional.normalize(torch.cat([torch.ones(n, 1), 0.6 * torch.randn(n, 2)], -1), dim=-1)
    app = torch.zeros(n, dtype=torch.long)
    out = render_rays(container, rays_o, rays_d, app, bounds, SamplingConfig(8, 8, 4), train=False)
    assert out["rgb"].shape == (n, 3) and bool(torch.isfinite(out["rgb"]).all())
    save_container(container, tmp_path / "mixed.pt")
    loaded = load_container(tmp_path / "mixed.pt")
    again = render_rays(loaded, rays_o, rays_d, app, bounds, SamplingConfig(8, 8, 4), train=False)
    assert torch.equal(out["rgb"], again["rgb"])
