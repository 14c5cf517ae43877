"""Render rays through a radiance model: foreground inside the ellipsoid, background outside.

The model is anything with ``density(x)``, ``foreground(x, d, appearance)`` and, when it has a
background, ``background(unit_dir, inv_radius, d, appearance, route_points)`` — a single cell's
:class:`~mega_nerf.fields.model.SceneModel` or a merged :class:`~mega_nerf.container.Container`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch

from mega_nerf.geometry.bounds import SceneBounds, ray_segments
from mega_nerf.geometry.rays import image_rays
from mega_nerf.render.volume import (
    OPAQUE_DELTA,
    composite,
    composite_intervals,
    ellipsoid_radius_crossing,
    occupied_samples,
    sample_pdf,
    stratified_samples,
)


#: Default ``min_transmittance`` on CPU (1.2-1.5x faster on an opaque test scene).
CPU_MIN_TRANSMITTANCE = 1e-3
#: Default ``color_min_weight``: off.  Colouring only the weighted samples pays where rays hold
#: their weight in a few samples; on hazy models nearly every sample has weight and the extra pass
#: costs 5-15 % on an H200 (the 1,200-step city, bench/results/render_profile_city_levers.json).
DEFAULT_COLOR_MIN_WEIGHT = 0.0


@dataclass
class SamplingConfig:
    coarse_samples: int = 64
    fine_samples: int = 64
    bg_samples: int = 16
    occupancy_candidates: int = 512  # used when the model has an occupancy grid
    #: Rendering without gradients through an occupancy grid stops evaluating a ray once the light
    #: left for it falls below this (0: evaluate every sample; None: :data:`CPU_MIN_TRANSMITTANCE`
    #: on CPU, 0 on CUDA, where the checks between chunks cost more than the samples they skip:
    #: 2.2x slower on an H200 for a brighton container and its student).
    min_transmittance: Optional[float] = None
    #: Rendering without gradients through an occupancy grid first evaluates density alone at every
    #: sample, then colour only at the samples whose compositing weight is at least this (0: colour
    #: everywhere).  Saves the colour path (view encoding, appearance lookup, colour MLP) at the
    #: samples that carry no weight: many on a ray that ends on a sharp surface, few on a hazy one.
    color_min_weight: float = DEFAULT_COLOR_MIN_WEIGHT

    @staticmethod
    def from_args(args) -> "SamplingConfig":
        return SamplingConfig(args.coarse_samples, args.fine_samples, args.bg_samples,
                              getattr(args, "occupancy_candidates", 512), getattr(args, "min_transmittance", None),
                              getattr(args, "color_min_weight", DEFAULT_COLOR_MIN_WEIGHT))


def _repeat_rows(t: torch.Tensor, n: int) -> torch.Tensor:
    return t[:, None].expand(t.shape[0], n, *t.shape[1:]).reshape(-1, *t.shape[1:])


def render_rays(model, rays_o: torch.Tensor, rays_d: torch.Tensor, appearance: torch.Tensor,
                bounds: SceneBounds, sampling: SamplingConfig, train: bool,
                with_samples: bool = False) -> dict[str, torch.Tensor]:
    """Render a batch of rays.

    Args:
        rays_o, rays_d: (N, 3) normalised DRB, unit directions; appearance: (N,) int64.
        train: jitter samples (stratified / random inverse-CDF) instead of deterministic ones.
        with_samples: also return the foreground samples' depths and weights.
    Returns:
        rgb (N, 3), depth (N,), rgb_fg (N, 3), transmittance_fg (N,); with ``with_samples``
        also z (N, S) and weights (N, S) of the foreground samples (zero weight on padding); for a
        model with an occupancy grid, samples (N,): the foreground samples placed in occupied space
        (what render speed depends on most), when rendering without gradients.

    A model with ``white_background`` (and no background model) composites the light left after
    the foreground onto white instead of making the last sample opaque.
    """
    n = rays_o.shape[0]
    has_bg_model = getattr(model, "has_background", False)
    white = getattr(model, "white_background", False)
    near, far, t_exit = ray_segments(rays_o, rays_d, bounds, has_bg_model)
    fg_far = torch.minimum(far, torch.maximum(t_exit, near))
    has_bg = (far > t_exit) if has_bg_model else torch.zeros(n, dtype=torch.bool, device=rays_o.device)
    open_end = torch.ones_like(has_bg) if white else has_bg  # no opaque last sample

    if getattr(model, "has_occupancy", False):
        fg = _composite_occupied(model, rays_o, rays_d, appearance, near, fg_far, open_end, sampling, train)
    else:
        fg = _composite_importance(model, rays_o, rays_d, appearance, near, fg_far, t_exit, open_end, sampling,
                                   train)
    out = {"rgb": fg["rgb"], "depth": fg["depth"], "rgb_fg": fg["rgb"], "transmittance_fg": fg["transmittance"]}
    if "samples" in fg:
        out["samples"] = fg["samples"]
    if with_samples:
        out["z"], out["weights"] = fg["z"], fg["weights"]
    if white:
        out["rgb"] = out["rgb"] + fg["transmittance"][:, None]

    if has_bg_model and bool(has_bg.any()):
        idx = torch.nonzero(has_bg).reshape(-1)
        center, radius = bounds.ellipsoid(rays_o.device)
        out_bg = render_background(model, rays_o[idx], rays_d[idx], appearance[idx], far[idx], t_exit[idx],
                                    center, radius, sampling.bg_samples, train)
        trans = fg["transmittance"][idx]
        out["rgb"] = out["rgb"].index_add(0, idx, trans[:, None] * out_bg["rgb"])
        out["depth"] = out["depth"].index_add(0, idx, trans * out_bg["depth"])
    return out


def _composite_occupied(model, rays_o, rays_d, appearance, near, fg_far, has_bg, sampling, train):
    """Samples in occupied cells only, plus one at the end of the foreground segment that is
    opaque for rays that stop at the ground (Mega-NeRF's last-sample rule)."""
    n = rays_o.shape[0]
    z, deltas, valid = occupied_samples(rays_o, rays_d, near, fg_far, model.occupied, sampling.occupancy_candidates,
                                        sampling.coarse_samples + sampling.fine_samples, train)
    end_delta = torch.where(has_bg, torch.zeros_like(fg_far), torch.full_like(fg_far, OPAQUE_DELTA))
    z = torch.cat([z, fg_far[:, None]], -1)
    deltas = torch.cat([deltas, end_delta[:, None]], -1)
    samples = z.shape[1]
    points = rays_o[:, None] + rays_d[:, None] * z[..., None]
    if train or torch.is_grad_enabled():  # fixed shapes for compiled steps; padding has zero length
        sigma, rgb = model.foreground(points.reshape(-1, 3), _repeat_rows(rays_d, samples),
                                      _repeat_rows(appearance, samples))
    else:  # rendering without gradients: only the samples in occupied space, front to back
        eps = sampling.min_transmittance
        if eps is None:
            eps = CPU_MIN_TRANSMITTANCE if rays_o.device.type == "cpu" else 0.0
        sigma, rgb = _evaluate_until_opaque(model, points, rays_d, appearance,
                                            torch.cat([valid, torch.ones_like(valid[:, :1])], -1), deltas, eps,
                                            sampling.color_min_weight)
    out = composite_intervals(sigma.reshape(n, samples), rgb.reshape(n, samples, 3), z, deltas)
    out["z"] = z
    if not (train or torch.is_grad_enabled()):  # kept off the training step
        out["samples"] = valid.sum(1)
    return out


#: Samples per ray evaluated between two early-termination checks.
TERMINATION_CHUNK = 16


def _evaluate_until_opaque(model, points: torch.Tensor, rays_d: torch.Tensor, appearance: torch.Tensor,
                           valid: torch.Tensor, deltas: torch.Tensor, min_transmittance: float,
                           color_min_weight: float = 0.0,
                           chunk: int = TERMINATION_CHUNK) -> tuple[torch.Tensor, torch.Tensor]:
    """The foreground at the valid samples only, front to back in chunks of ``chunk`` samples; a
    ray whose transmittance has fallen below ``min_transmittance`` is not evaluated further
    (zero density and colour there, so its pixel changes by less than that much light).

    With ``color_min_weight`` > 0 each chunk is evaluated in two passes: density at all of its
    samples, then colour only where a sample's compositing weight is at least
    ``color_min_weight`` (:func:`_density_then_colour`); elsewhere the colour is zero, so a pixel
    loses at most that much light per skipped sample.

    Args:
        points: (N, S, 3); rays_d: (N, 3); appearance: (N,); valid: (N, S) bool; deltas: (N, S)
        interval lengths.
    Returns:
        sigma (N * S,), rgb (N * S, 3).
    """
    n, s = valid.shape
    sigma = torch.zeros(n, s, device=points.device)
    rgb = torch.zeros(n, s, 3, device=points.device)
    optical_depth = torch.zeros(n, device=points.device)  # -log transmittance so far
    limit = -math.log(min_transmittance) if min_transmittance > 0 else math.inf
    step = chunk if min_transmittance > 0 else s
    for start in range(0, s, step):
        alive = optical_depth < limit
        if start > 0 and not bool(alive.any()):
            break
        ray, sample = torch.nonzero(valid[:, start:start + step] & alive[:, None], as_tuple=True)
        if ray.numel() == 0:
            continue
        sample = sample + start
        if color_min_weight > 0:
            _density_then_colour(model, points, rays_d, appearance, ray, sample, deltas, optical_depth,
                                 slice(start, start + step), color_min_weight, sigma, rgb)
        else:
            sigma_v, rgb_v = model.foreground(points[ray, sample], rays_d[ray], appearance[ray])
            sigma[ray, sample] = sigma_v.float()
            rgb[ray, sample] = rgb_v.float()
        optical_depth = optical_depth + (sigma[:, start:start + step] * deltas[:, start:start + step]).sum(1)
    return sigma.reshape(-1), rgb.reshape(-1, 3)


def _density_then_colour(model, points, rays_d, appearance, ray, sample, deltas, optical_depth, chunk: slice,
                         color_min_weight: float, sigma: torch.Tensor, rgb: torch.Tensor) -> None:
    """One chunk of :func:`_evaluate_until_opaque` in two passes: density at the samples
    ``(ray, sample)``, then colour where their compositing weight is at least ``color_min_weight``.
    Writes into ``sigma`` (N, S) and ``rgb`` (N, S, 3).

    A model with ``density_with_features`` hands back its geometry features with the density, so
    colour costs only the colour head; any other model evaluates its kept samples again in full.

    Args:
        ray, sample: (M,) the chunk's samples to evaluate; optical_depth: (N,) before the chunk;
        chunk: the chunk's sample columns.
    """
    at = points[ray, sample]
    with_features = getattr(model, "density_with_features", None)
    sigma_v, features = with_features(at) if with_features is not None else (model.density(at), None)
    sigma[ray, sample] = sigma_v.float()
    part = sigma[:, chunk] * deltas[:, chunk]  # (N, chunk) each sample's optical depth
    before = optical_depth[:, None] + torch.cumsum(part, 1) - part
    weight = torch.exp(-before) * -torch.expm1(-part)
    keep = weight[ray, sample - chunk.start] >= color_min_weight
    ray, sample = ray[keep], sample[keep]
    if ray.numel() == 0:
        return
    if features is not None:
        rgb[ray, sample] = model.color_from_features(features[keep], rays_d[ray], appearance[ray]).float()
    else:
        rgb[ray, sample] = model.foreground(at[keep], rays_d[ray], appearance[ray])[1].float()


def _composite_importance(model, rays_o, rays_d, appearance, near, fg_far, t_exit, has_bg, sampling, train):
    """Stratified samples, then importance samples from a no-grad density pass (Mega-NeRF's
    coarse + fine union, rendered once)."""
    n = rays_o.shape[0]
    z = stratified_samples(near, fg_far, sampling.coarse_samples, train)
    if sampling.fine_samples > 0:
        with torch.no_grad():
            points = rays_o[:, None] + rays_d[:, None] * z[..., None]
            sigma = model.density(points.reshape(-1, 3)).reshape(z.shape)
            deltas = torch.cat([z[:, 1:] - z[:, :-1], torch.full_like(z[:, :1], OPAQUE_DELTA)], -1)
            weights = 1 - torch.exp(-deltas * sigma)
            weights = weights * torch.cumprod(torch.cat([torch.ones_like(weights[:, :1]),
                                                         1 - weights[:, :-1] + 1e-10], -1), -1)
            mids = 0.5 * (z[:, 1:] + z[:, :-1])
            fine = sample_pdf(mids, weights[:, 1:-1], sampling.fine_samples, deterministic=not train)
        z = torch.sort(torch.cat([z, fine], -1), -1).values
    points = rays_o[:, None] + rays_d[:, None] * z[..., None]
    samples = z.shape[1]
    sigma, rgb = model.foreground(points.reshape(-1, 3), _repeat_rows(rays_d, samples),
                                  _repeat_rows(appearance, samples))
    last_delta = torch.where(has_bg, (t_exit - z[:, -1]).clamp_min(0), torch.full_like(t_exit, OPAQUE_DELTA))
    out = composite(sigma.reshape(n, samples), rgb.reshape(n, samples, 3), z, last_delta)
    out["z"] = z
    return out


def render_background(model, rays_o, rays_d, appearance, far, t_exit, center, radius, num, train):
    """The background model's colour along rays past the foreground: samples uniform in inverse
    radius from the ellipsoid surface (s = 1) towards ``far``, routed to a cell by the point where
    each ray leaves the foreground (``t_exit``).

    Args:
        rays_o, rays_d: (M, 3); appearance: (M,); far, t_exit: (M,); center, radius: (3,) the
        foreground ellipsoid; num: samples per ray; train: jitter the samples.
    Returns:
        the compositing of :func:`composite` over the (M, num) samples.
    """
    o = (rays_o - center) / radius
    d = rays_d / radius
    r_far = (o + d * far[:, None].clamp(max=1e6)).norm(dim=-1).clamp_min(1.0)
    s = stratified_samples(torch.ones_like(far), 1 / r_far, num, train).clamp_min(1e-6)  # (M, num), falling
    t = ellipsoid_radius_crossing(o, d, 1 / s)
    t = torch.maximum(t, t_exit[:, None])
    unit_dir = torch.nn.functional.normalize(o[:, None] + d[:, None] * t[..., None], dim=-1)
    route = rays_o + rays_d * t_exit[:, None]  # exit point: which cell's background answers
    m = rays_o.shape[0]
    sigma, rgb = model.background(unit_dir.reshape(-1, 3), s.reshape(-1), _repeat_rows(rays_d, num),
                                  _repeat_rows(appearance, num), _repeat_rows(route, num))
    return composite(sigma.reshape(m, num), rgb.reshape(m, num, 3), t, torch.full_like(t_exit, OPAQUE_DELTA))


@torch.no_grad()
def render_image(model, W: int, H: int, intrinsics: torch.Tensor, c2w: torch.Tensor, appearance_index: int,
                 bounds: SceneBounds, sampling: SamplingConfig, ray_batch: int,
                 device: torch.device, stats: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Render a whole image deterministically.

    Args:
        stats: if given, ``stats["samples_per_ray"]`` is set to the mean number of foreground samples
            placed in occupied space per ray (models with an occupancy grid).
    Returns:
        rgb (H, W, 3) float in [0, 1] on CPU, depth (H, W) normalised ray distance on CPU.
    """
    rays_o, rays_d = image_rays(W, H, intrinsics.to(device), c2w.to(device), bounds.center_pixels)
    rgbs, depths, samples = [], [], []
    for start in range(0, rays_o.shape[0], ray_batch):
        o, d = rays_o[start:start + ray_batch], rays_d[start:start + ray_batch]
        app = torch.full((o.shape[0],), appearance_index, dtype=torch.long, device=device)
        out = render_rays(model, o, d, app, bounds, sampling, train=False)
        rgbs.append(out["rgb"].float().clamp(0, 1).cpu())
        depths.append(out["depth"].float().cpu())
        if stats is not None and "samples" in out:
            samples.append(out["samples"].sum())
    if samples:
        stats["samples_per_ray"] = float(torch.stack(samples).sum()) / rays_o.shape[0]
    return torch.cat(rgbs).reshape(H, W, 3), torch.cat(depths).reshape(H, W)
