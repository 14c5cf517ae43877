"""Pure functions over packed (rays, samples) tensors: samplers and compositing."""
from __future__ import annotations

import torch

#: Length given to the last interval of a ray with no background: its last sample is opaque.
OPAQUE_DELTA = 1e10


def stratified_samples(near: torch.Tensor, far: torch.Tensor, num: int, perturb: bool) -> torch.Tensor:
    """Depths evenly spaced in [near, far], jittered within their bins when ``perturb``.

    Args:
        near, far: (N,).
    Returns:
        (N, num) increasing depths.
    """
    s = torch.linspace(0, 1, num, device=near.device)
    z = near[:, None] * (1 - s) + far[:, None] * s
    if perturb and num > 1:
        mids = 0.5 * (z[:, 1:] + z[:, :-1])
        upper = torch.cat([mids, z[:, -1:]], -1)
        lower = torch.cat([z[:, :1], mids], -1)
        z = lower + (upper - lower) * torch.rand_like(z)
    return z


def sample_pdf(bins: torch.Tensor, weights: torch.Tensor, num: int, deterministic: bool) -> torch.Tensor:
    """Inverse-CDF samples from a piecewise-constant pdf.

    Args:
        bins: (N, B + 1) bin edges; weights: (N, B) non-negative.
    Returns:
        (N, num) samples inside [bins[:, 0], bins[:, -1]].
    """
    weights = weights + 1e-5
    pdf = weights / weights.sum(-1, keepdim=True)
    cdf = torch.cat([torch.zeros_like(pdf[:, :1]), pdf.cumsum(-1)], -1)
    if deterministic:
        u = torch.linspace(0, 1, num, device=bins.device).expand(bins.shape[0], num).contiguous()
    else:
        u = torch.rand(bins.shape[0], num, device=bins.device)
    idx = torch.searchsorted(cdf, u, right=True).clamp(1, cdf.shape[-1] - 1)
    cdf_lo, cdf_hi = cdf.gather(1, idx - 1), cdf.gather(1, idx)
    bin_lo, bin_hi = bins.gather(1, idx - 1), bins.gather(1, idx)
    t = ((u - cdf_lo) / (cdf_hi - cdf_lo).clamp_min(1e-8)).clamp(0, 1)
    return bin_lo + t * (bin_hi - bin_lo)


def composite(sigma: torch.Tensor, rgb: torch.Tensor, z: torch.Tensor,
              last_delta: torch.Tensor) -> dict[str, torch.Tensor]:
    """Volume rendering (Mega-NeRF's compositing, unit-length directions).

    Args:
        sigma: (N, S); rgb: (N, S, 3); z: (N, S) increasing; last_delta: (N,).
    Returns:
        rgb (N, 3), depth (N,), weights (N, S), transmittance (N,) left after the last sample.
    """
    deltas = torch.cat([z[:, 1:] - z[:, :-1], last_delta[:, None]], -1)
    return composite_intervals(sigma, rgb, z, deltas)


def composite_intervals(sigma: torch.Tensor, rgb: torch.Tensor, z: torch.Tensor,
                        deltas: torch.Tensor) -> dict[str, torch.Tensor]:
    """Volume rendering with each sample's own interval length.

    Args:
        sigma: (N, S); rgb: (N, S, 3); z: (N, S) sample depths; deltas: (N, S) interval lengths.
    Returns:
        as :func:`composite`.
    """
    alpha = 1 - torch.exp(-deltas * sigma)
    trans = torch.cumprod(torch.cat([torch.ones_like(alpha[:, :1]), 1 - alpha + 1e-10], -1), -1)
    weights = alpha * trans[:, :-1]
    return {"rgb": (weights[..., None] * rgb).sum(1), "depth": (weights * z).sum(1),
            "weights": weights, "transmittance": trans[:, -1]}


def distortion_loss(z: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Mip-NeRF 360's distortion term between samples, ``sum_ij w_i w_j |z_i - z_j|`` per ray: small
    when a ray's weight sits in one compact place, large for weight spread along the ray (haze,
    floaters, several half-transparent layers that can explain the training views but no other).

    Computed in O(S) per ray from prefix sums (``2 sum_i w_i (z_i W_<i - (wz)_<i)``).  The
    within-interval term is left out: the last interval of a ray that stops at the ground is
    infinite.

    Args:
        z: (N, S) sample depths, increasing where the weight is non-zero; weights: (N, S).
    Returns:
        (N,) the loss of each ray.
    """
    w_before = torch.cumsum(weights, -1) - weights
    wz_before = torch.cumsum(weights * z, -1) - weights * z
    return 2 * (weights * (z * w_before - wz_before)).sum(-1)


def occupied_samples(rays_o: torch.Tensor, rays_d: torch.Tensor, near: torch.Tensor, far: torch.Tensor,
                     occupied_fn, num_candidates: int, num_samples: int,
                     perturb: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``num_samples`` samples spread evenly over the occupied part of each ray: a fixed-shape,
    padded batch, so compiled code never sees a new shape.

    ``num_candidates`` evenly spaced candidates are tested against the occupancy grid.  A ray
    with at most ``num_samples`` occupied candidates keeps all of them; a ray with ``c`` more
    keeps every ``c / num_samples``-th one, each standing for that many candidate intervals, so
    the whole occupied length is still covered (never just its front).

    Args:
        rays_o, rays_d: (N, 3); near, far: (N,); occupied_fn: (M, 3) points -> (M,) bool.
    Returns:
        z (N, K) depths (increasing over the valid entries; invalid ones repeat the last valid
        depth at the last candidate), deltas (N, K) interval lengths (zero where invalid), valid (N, K) bool.
    """
    z = stratified_samples(near, far, num_candidates, perturb)
    step = (far - near) / max(num_candidates - 1, 1)  # spacing of the candidates
    points = rays_o[:, None] + rays_d[:, None] * z[..., None]
    occupied = occupied_fn(points.reshape(-1, 3)).reshape(z.shape)
    rank = occupied.to(torch.int32).cumsum(1)  # (N, C): how many occupied candidates up to here
    count = rank[:, -1:]  # (N, 1)
    k = torch.arange(num_samples, device=z.device, dtype=torch.int32)[None]
    stride = torch.clamp(count, min=num_samples).float() / num_samples  # candidates per sample, >= 1
    wanted = (k.float() * stride).floor().to(torch.int32) + 1  # (N, K) ranks to keep, 1-based
    index = torch.searchsorted(rank, wanted.contiguous()).clamp_max(num_candidates - 1)
    valid = k < count
    deltas = torch.where(valid, (step[:, None] * stride).expand_as(valid), torch.zeros_like(valid, dtype=z.dtype))
    return z.gather(1, index.long()), deltas, valid


def ellipsoid_radius_crossing(o: torch.Tensor, d: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    """Distance where rays (inside the unit sphere) reach norm ``radius`` >= 1.

    Args:
        o, d: (N, 3) in ellipsoid-normalised space (d need not be unit); radius: (N, S).
    Returns:
        (N, S) distances (larger root of ``|o + t d| = radius``).
    """
    a = (d * d).sum(-1, keepdim=True)
    b = (o * d).sum(-1, keepdim=True)
    c = (o * o).sum(-1, keepdim=True) - radius ** 2
    return (-b + (b * b - a * c).clamp_min(0).sqrt()) / a
