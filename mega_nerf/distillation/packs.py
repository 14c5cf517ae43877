"""View packs: the unit of distillation data.

A pack is R rays through random pixels of one virtual view, their samples in the teacher's
occupied space and everything the losses need from the teacher there.  A pack is a pure function
of (teacher, view, seed): computed on the fly (live) or read from a cache written earlier
(:mod:`.teacher_cache`), the student sees the same numbers, so both routes give the same student.
Hard views are drawn again by drawing their pack again.

Pack fields (R rays, S samples per ray including the end sample)::

    rays_o, rays_d (R, 3) float32       appearance (R,) int64
    z, deltas (R, S) float32            valid (R, S) bool
    t_sigma (R, S) float32              teacher density (blended over cells, as it renders)
    t_rgb (R, S, 3) float16             teacher colour
    t_feat (R, S, G) float16            geometry feature of the sample's own (nearest) cell
    t_cell (R, S) int64                 that cell's position in the container
    t_weight (R, S) float32             the sample's compositing weight in the teacher's render
    t_pixel (R, 3) float32              the teacher's pixel as it renders it (its own sampling,
                                        background or white); for a region, its samples'
                                        composite (the rest of the ray belongs to other regions)
    t_transmittance (R,) float32        light left after the teacher's foreground samples
    bg (R,) bool                        rays whose pixel includes the background term
    far, t_exit (R,) float32            ray segment ends (background sampling)
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from mega_nerf.distillation.cameras import Views, view_rays
from mega_nerf.distillation.samples import ray_samples
from mega_nerf.geometry.bounds import ray_segments
from mega_nerf.partition.centroids import routing_weights
from mega_nerf.render.renderer import SamplingConfig, render_background, render_rays
from mega_nerf.render.volume import composite_intervals

HALF_MAX = 6.0e4  # features are stored in float16


def pack_seed(seed: int, view: int, region: int) -> int:
    """The random seed of one pack: independent of the order packs are made in."""
    return (seed * 1_000_003 + view * 7919 + (region + 1) * 104_729) % (2 ** 63)


@torch.no_grad()
def teacher_sample_outputs(teacher, x: torch.Tensor, d: torch.Tensor, appearance: torch.Tensor,
                           chunk: int = 2 ** 18) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """What a container says at samples.

    Density and colour are the container's blend (what it renders).  Geometry features are not
    blended: each cell has its own feature space (and colour decoder), so a sample's feature is
    the one of its nearest cell, with that cell's index for the loss's per-cell adapter.

    Args:
        teacher: Container; x, d: (M, 3); appearance: (M,) int64.
    Returns:
        sigma (M,), rgb (M, 3), feat (M, G) with G the widest cell feature (narrower ones
        zero-padded), cell (M,) int64.
    """
    widths = [m.geo_feat_dim for m in teacher.sub_modules]
    G = max(widths)
    sigma = torch.zeros(x.shape[0], device=x.device)
    rgb = torch.zeros(x.shape[0], 3, device=x.device)
    feat = torch.zeros(x.shape[0], G, device=x.device)
    cell = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
    for start in range(0, x.shape[0], chunk):
        part = slice(start, start + chunk)
        xs = x[part]
        s, c = teacher.foreground(xs, d[part], appearance[part])
        nearest = routing_weights(xs, teacher.centroids, 1.0, teacher.cluster_2d).argmax(1)
        f = torch.zeros(xs.shape[0], G, device=x.device)
        for k, module in enumerate(teacher.sub_modules):
            index = torch.nonzero(nearest == k).reshape(-1)
            if index.numel():
                f[index, :widths[k]] = module.features(xs[index])[:, 1:].float()
        sigma[part], rgb[part], feat[part], cell[part] = s.float(), c.float(), f, nearest
    return sigma, rgb, feat, cell


def background_rgb(model, rays_o, rays_d, appearance, far, t_exit, bounds, bg_samples: int,
                   train: bool) -> torch.Tensor:
    """(R, 3) colour of the background of rays: the renderer's own background pass, so the
    student's background is taught exactly as it will be rendered."""
    center, radius = bounds.ellipsoid(rays_o.device)
    return render_background(model, rays_o, rays_d, appearance, far, t_exit, center, radius, bg_samples,
                              train)["rgb"]


@torch.no_grad()
def make_pack(teacher, views: Views, view: int, rays: int, bounds, occupied_fn: Callable, candidates: int,
              samples: int, bg_samples: int, seed: int, region: int = -1,
              region_fn: Callable | None = None, device: torch.device | str = "cpu",
              oversample: int = 4, sampling: SamplingConfig | None = None) -> dict[str, torch.Tensor]:
    """One pack (see the module docstring).  With ``region_fn``, ``oversample`` x ``rays``
    candidate rays are drawn and the ones with samples in the region are kept first.
    ``sampling``: how the teacher renders its pixels (default: ``samples`` coarse + ``samples``
    fine, ``bg_samples``)."""
    device = torch.device(device)
    generator = torch.Generator().manual_seed(pack_seed(seed, view, region))
    count = rays * (oversample if region_fn is not None else 1)
    rays_o, rays_d, _ = view_rays(views, view, count, generator)
    rays_o, rays_d = rays_o.to(device), rays_d.to(device)
    appearance = torch.full((count,), int(views.appearance[view]), dtype=torch.long, device=device)
    has_bg_model = teacher.has_background
    white = teacher.white_background
    # The sample jitter comes from the global generator: fork it so a pack never depends on (or
    # changes) the random state of the run that asks for it.
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(pack_seed(seed, view, region))
        s = ray_samples(rays_o, rays_d, bounds, occupied_fn, candidates, samples, has_bg_model, white, region_fn)
    if region_fn is not None:
        # rays with samples in the region first (a stable sort keeps the random order otherwise)
        order = torch.argsort((~s["valid"].any(1)).to(torch.int8), stable=True)[:rays]
        rays_o, rays_d, appearance = rays_o[order], rays_d[order], appearance[order]
        s = {k: v[order] for k, v in s.items()}
    n, S = s["z"].shape
    points = rays_o[:, None] + rays_d[:, None] * s["z"][..., None]
    flat_valid = s["valid"].reshape(-1)
    index = torch.nonzero(flat_valid).reshape(-1)
    sig, col, fea, cel = teacher_sample_outputs(
        teacher, points.reshape(-1, 3)[index], rays_d[:, None].expand(n, S, 3).reshape(-1, 3)[index],
        appearance[:, None].expand(n, S).reshape(-1)[index])
    G = fea.shape[1]
    t_sigma = torch.zeros(n * S, device=device).index_copy(0, index, sig).reshape(n, S)
    t_rgb = torch.zeros(n * S, 3, device=device).index_copy(0, index, col).reshape(n, S, 3)
    t_feat = torch.zeros(n * S, G, device=device).index_copy(0, index, fea).reshape(n, S, G)
    t_cell = torch.zeros(n * S, dtype=torch.long, device=device).index_copy(0, index, cel).reshape(n, S)
    fg = composite_intervals(t_sigma, t_rgb, s["z"], s["deltas"])
    _, far, t_exit = ray_segments(rays_o, rays_d, bounds, has_bg_model)
    bg = (far > t_exit) if has_bg_model else torch.zeros(n, dtype=torch.bool, device=device)
    if region_fn is None:
        # The target is what the teacher's images show, with its own sampling, not its composite
        # over our samples: the student is scored against those images.
        sampling = sampling or SamplingConfig(samples, samples, bg_samples, candidates)
        pixel = torch.cat([render_rays(teacher, rays_o[i:i + 8192], rays_d[i:i + 8192], appearance[i:i + 8192],
                                       bounds, sampling, train=False)["rgb"].float() for i in range(0, n, 8192)])
    else:
        # A region's share of the pixel: its samples, and the background where the ray leaves
        # the foreground inside the region.
        pixel = fg["rgb"] + (fg["transmittance"][:, None] if white else 0.0)
        if has_bg_model:
            bg &= region_fn(rays_o + rays_d * t_exit[:, None])
        if bool(bg.any()):
            idx = torch.nonzero(bg).reshape(-1)
            b = background_rgb(teacher, rays_o[idx], rays_d[idx], appearance[idx], far[idx], t_exit[idx], bounds,
                               bg_samples, train=False)
            pixel = pixel.index_add(0, idx, fg["transmittance"][idx, None] * b.float())
    return {"rays_o": rays_o, "rays_d": rays_d, "appearance": appearance, "z": s["z"], "deltas": s["deltas"],
            "valid": s["valid"], "t_sigma": t_sigma, "t_rgb": t_rgb.half(),
            "t_feat": t_feat.clamp(-HALF_MAX, HALF_MAX).half(), "t_cell": t_cell, "t_weight": fg["weights"],
            "t_pixel": pixel, "t_transmittance": fg["transmittance"], "bg": bg, "far": far, "t_exit": t_exit}


def packs_that_fit(pack_bytes: int, budget_bytes: int) -> int:
    """How many packs of ``pack_bytes`` fit in ``budget_bytes`` (at least one)."""
    return max(int(budget_bytes // max(pack_bytes, 1)), 1)


def pack_to(pack: dict[str, torch.Tensor], device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in pack.items()}


def take_rays(pack: dict[str, torch.Tensor], index: torch.Tensor) -> dict[str, torch.Tensor]:
    """The rows ``index`` of every field of a pack."""
    return {k: v[index] for k, v in pack.items()}


def concat_packs(parts: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
