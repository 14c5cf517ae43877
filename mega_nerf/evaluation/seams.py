"""Seam metrics: how well a merged container renders the pixels that look at a border between cells.

Which pixels are seam pixels
----------------------------
A pixel is a *seam pixel* when the point its ray makes visible -- the expected-depth point
``o + depth * d`` of the rendered image -- lies inside the foreground and in the band where the
container blends cells, i.e. where :func:`~mega_nerf.partition.centroids.routing_weights` gives two
or more cells a non-zero weight (with the container's ``boundary_margin``; a container routed
hard, ``boundary_margin == 1``, has no band, so :data:`HARD_ROUTING_SEAM_MARGIN` is used instead:
the points near a border).  The other foreground pixels are *interior* pixels; pixels whose
expected-depth point is outside the foreground (sky, background model) are in neither group.

Why this definition: a pixel's colour comes almost entirely from the samples around its expected
depth (where the compositing weights are).  If those samples are answered by two blended cells,
any disagreement between the cells (density placed differently, colour or appearance differing)
shows up in that pixel as a visible seam.  A ray that crosses a border in empty air above the
ground, by contrast, gets nothing from the samples there, so "the ray crosses a border somewhere"
would flag many pixels a seam cannot affect.  It needs only the rendered depth, which every
evaluation already has, not the per-sample weights.

What is measured
----------------
Over seam and interior pixels (of the part of the image the protocol scores): PSNR and mean
absolute colour error against the ground truth (in [0, 1], averaged over channels), pooled over
all images (sums of errors, not means of per-image values, so images with few seam pixels weigh
little), plus ``cell_color_gap``: at each seam pixel's expected-depth point, the blend-weighted
mean absolute difference between each participating cell's own colour and the blended colour --
zero when the cells agree, whatever the ground truth.
"""
from __future__ import annotations

import math

import torch

from mega_nerf.evaluation.metrics import split_for_protocol
from mega_nerf.geometry.bounds import SceneBounds
from mega_nerf.geometry.rays import image_rays
from mega_nerf.partition.centroids import routing_weights

#: The seam band of a container routed hard (``boundary_margin`` 1): Mega-NeRF's default margin.
HARD_ROUTING_SEAM_MARGIN = 1.15
GROUPS = ("seam", "interior")


def seam_margin(boundary_margin: float) -> float:
    """The routing margin whose blend band defines seam pixels (see the module docstring)."""
    return boundary_margin if boundary_margin > 1 else HARD_ROUTING_SEAM_MARGIN


def inside_foreground(points: torch.Tensor, bounds: SceneBounds) -> torch.Tensor:
    """(N, 3) normalised points -> (N,) bool: inside the foreground ellipsoid (or box)."""
    center, radius = bounds.ellipsoid(points.device)
    scaled = (points - center) / radius
    if bounds.box:
        return (scaled.abs() <= 1).all(-1)
    return scaled.norm(dim=-1) < 1


def seam_pixel_mask(points: torch.Tensor, centroids: torch.Tensor, margin: float, cluster_2d: bool,
                    inside: torch.Tensor | None = None) -> torch.Tensor:
    """Which points lie where two or more cells blend.

    Args:
        points: (N, 3) expected-depth points; centroids: (K, 3).
        margin: the routing margin (> 1; :func:`seam_margin`).
        inside: (N,) bool, points that count at all (e.g. :func:`inside_foreground`).
    Returns:
        (N,) bool.
    """
    weights = routing_weights(points, centroids.to(points.device), margin, cluster_2d)
    seam = (weights > 0).sum(1) >= 2
    return seam if inside is None else seam & inside


def image_pixel_groups(W: int, H: int, intrinsics: torch.Tensor, c2w: torch.Tensor, depth: torch.Tensor,
                       bounds: SceneBounds, centroids: torch.Tensor, margin: float,
                       cluster_2d: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Seam and interior pixels of one rendered image.

    Args:
        depth: (H, W) rendered depth (normalised ray distance, as :func:`render_image` returns it).
    Returns:
        seam (H, W) bool, interior (H, W) bool, points (H * W, 3), ray directions (H * W, 3).
    """
    rays_o, rays_d = image_rays(W, H, intrinsics, c2w, bounds.center_pixels)
    points = rays_o + rays_d * depth.reshape(-1, 1).to(rays_o)
    inside = inside_foreground(points, bounds)
    seam = seam_pixel_mask(points, centroids, margin, cluster_2d, inside)
    return seam.reshape(H, W), (inside & ~seam).reshape(H, W), points, rays_d


def error_sums(pred: torch.Tensor, gt: torch.Tensor, masks: dict[str, torch.Tensor]) -> dict:
    """Pooled error sums per pixel group.

    Args:
        pred, gt: (H, W, 3) in [0, 1]; masks: group name -> (H, W) bool.
    Returns:
        group -> {"pixels", "squared_error", "absolute_error"} (sums over pixels and channels).
    """
    diff = pred.double() - gt.double()
    out = {}
    for name, mask in masks.items():
        d = diff[mask]
        out[name] = {"pixels": int(mask.sum()), "squared_error": float(d.square().sum()),
                     "absolute_error": float(d.abs().sum())}
    return out


def scores(sums: dict) -> dict:
    """PSNR and mean absolute colour error (per channel, [0, 1]) of one group's pooled sums."""
    values = sums["pixels"] * 3
    if values == 0:
        return {"pixels": 0, "psnr": None, "mean_abs_error": None}
    mse = sums["squared_error"] / values
    return {"pixels": sums["pixels"], "psnr": math.inf if mse == 0 else -10 * math.log10(mse),
            "mean_abs_error": sums["absolute_error"] / values}


@torch.no_grad()
def cell_color_gap(container, points: torch.Tensor, dirs: torch.Tensor, appearance: int, margin: float) -> torch.Tensor:
    """At each point, the blend-weighted mean absolute difference between each cell's own colour and
    the blended colour (0 where one cell answers, or where the cells agree).

    Args:
        container: a :class:`~mega_nerf.container.Container`; points, dirs: (N, 3).
    Returns:
        (N,) gaps in [0, 1] (mean over channels).
    """
    weights = routing_weights(points, container.centroids, margin, container.cluster_2d)
    app = torch.full((points.shape[0],), appearance, dtype=torch.long, device=points.device)
    colors = torch.zeros(len(container.sub_modules), points.shape[0], 3, device=points.device)
    for k, module in enumerate(container.sub_modules):
        index = torch.nonzero(weights[:, k] > 0).reshape(-1)
        if index.numel():
            colors[k, index] = module(points[index], dirs[index], app[index])[1].float()
    w = weights.t()[..., None]  # (K, N, 1)
    blended = (w * colors).sum(0)
    return (w * (colors - blended).abs()).sum(0).mean(-1)


def image_seam_metrics(model, bounds: SceneBounds, W: int, H: int, intrinsics: torch.Tensor, c2w: torch.Tensor,
                       appearance: int, rgb: torch.Tensor, depth: torch.Tensor, gt: torch.Tensor,
                       protocol: str) -> dict | None:
    """Seam numbers of one rendered validation image, or None for a model without cells.

    Args:
        model: a container (anything with ``centroids``, ``boundary_margin``, ``cluster_2d``).
        rgb, gt: (H, W, 3) in [0, 1]; depth: (H, W), as :func:`render_image` returns them.
        protocol: the scored part of the image (:func:`split_for_protocol`).
    Returns:
        {"sums": group -> pooled sums, "seam": scores, "interior": scores, "cell_color_gap_sum",
        "margin"} over the scored part.
    """
    if not hasattr(model, "centroids"):
        return None
    device = model.centroids.device
    margin = seam_margin(model.boundary_margin)
    seam, interior, points, dirs = image_pixel_groups(W, H, intrinsics.to(device), c2w.to(device), depth.to(device),
                                                      bounds, model.centroids, margin, model.cluster_2d)
    masks = {"seam": split_for_protocol(seam[..., None].cpu(), protocol)[..., 0],
             "interior": split_for_protocol(interior[..., None].cpu(), protocol)[..., 0]}
    sums = error_sums(split_for_protocol(rgb, protocol), split_for_protocol(gt, protocol), masks)
    scored = split_for_protocol(torch.arange(H * W, device=device).reshape(H, W, 1), protocol).reshape(-1)
    seam_index = scored[seam.reshape(-1)[scored]]  # flat indices of the scored seam pixels
    gap = 0.0
    if hasattr(model, "sub_modules") and seam_index.numel():
        gap = float(cell_color_gap(model, points[seam_index], dirs[seam_index], appearance, margin).sum())
    return {"sums": sums, "margin": margin, "cell_color_gap_sum": gap,
            **{name: scores(sums[name]) for name in GROUPS}}


def summarize_seams(per_image: list[dict | None]) -> dict | None:
    """Pool :func:`image_seam_metrics` over images: PSNR and mean absolute error of seam and
    interior pixels, the seam pixels' share of the foreground, and the mean cell colour gap."""
    found = [r for r in per_image if r]
    if not found:
        return None
    pooled = {name: {key: sum(r["sums"][name][key] for r in found) for key in ("pixels", "squared_error",
                                                                                "absolute_error")}
              for name in GROUPS}
    seam_pixels, interior_pixels = pooled["seam"]["pixels"], pooled["interior"]["pixels"]
    out = {name: scores(pooled[name]) for name in GROUPS}
    out["seam_fraction"] = seam_pixels / max(seam_pixels + interior_pixels, 1)
    out["cell_color_gap"] = (sum(r["cell_color_gap_sum"] for r in found) / seam_pixels) if seam_pixels else None
    out["margin"] = found[0]["margin"]
    out["images"] = len(found)
    out["definition"] = ("seam pixels: the expected-depth point is inside the foreground where two or more cells "
                         "blend (routing margin 'margin'); interior: the other foreground pixels")
    return out
