"""Seam metrics: how well a merged container renders the pixels that look at a border between cells.

Which pixels are seam pixels
----------------------------
Each pixel's *visible point* is its expected-depth point ``o + depth * d`` of the rendered image;
the cells that answer there are those :func:`~mega_nerf.partition.centroids.routing_weights`
gives a non-zero weight (with the container's own ``boundary_margin``).  A pixel is a **seam
pixel** when that set of cells differs from the set at a neighbouring pixel's visible point (both
inside the foreground), dilated by ``radius`` pixels: the image crosses a place where the
container switches from one set of cells to another.  The other foreground pixels are **blend**
pixels (two or more cells answer, the same ones all around) or **interior** pixels (one cell).
Pixels whose visible point is outside the foreground (sky, background model) are in no group.
Seam pixels are split in two: **seam_edge** pixels, where the change of cells comes with a jump in
depth (an occlusion edge whose two sides lie in different cells: a roof against the street behind
it), and **seam_surface** pixels, where one surface crosses from cell to cell.  Occlusion edges
are hard pixels whatever the cells do, so a low seam PSNR is only the cells' fault where
seam_surface pixels are worse than interior ones.

Why this definition: a pixel's colour comes almost entirely from the samples around its expected
depth, so the cells that answer there are the cells that make the pixel.  Where that set changes
between neighbouring pixels the rendering switches models, and any disagreement between the cells
(density placed differently, colour or appearance differing) is a visible discontinuity: at the
border itself under hard routing (``boundary_margin`` 1), and at the edges of the blend band
otherwise (Mega-NeRF's inverse-distance weights jump from about 1/2 to 0 there).  Inside the band
the blend is smooth but mixes the cells, so disagreement there blurs; the blend group and
``cell_color_gap`` measure that.  A ray that crosses a border in empty air is not a seam pixel:
nothing there reaches the pixel.  Only the rendered depth is needed, which every evaluation has.

What is measured
----------------
For each group (of the part of the image the protocol scores): PSNR and mean absolute colour
error against the ground truth (in [0, 1], averaged over channels), pooled over all images (sums of
errors, not means of per-image values, so images with few seam pixels weigh little); ``rest``
pools blend and interior pixels (every foreground pixel that is not a seam pixel).  Plus
``cell_color_gap``: at the visible points where two or more cells answer, the blend-weighted mean
absolute difference between each cell's own colour and the blended colour -- zero when the cells
agree, whatever the ground truth.
"""
from __future__ import annotations

import math

import torch

from mega_nerf.evaluation.metrics import split_for_protocol
from mega_nerf.geometry.bounds import SceneBounds, inside_foreground
from mega_nerf.geometry.rays import image_rays
from mega_nerf.partition.centroids import routing_weights

GROUPS = ("seam", "seam_surface", "seam_edge", "blend", "interior", "rest")
#: Pixels around a change of the answering cells that count as seam pixels.
SEAM_RADIUS = 1
#: Neighbouring pixels whose rendered depths differ by more than this fraction look at different
#: surfaces (an occlusion edge), not across one surface.
DEPTH_JUMP = 0.05


def answering_cells(points: torch.Tensor, centroids: torch.Tensor, margin: float, cluster_2d: bool) -> torch.Tensor:
    """(N, 3) points -> (N, K) bool: the cells the container blends at each point."""
    return routing_weights(points, centroids.to(points.device), margin, cluster_2d) > 0


def neighbour_pairs(values: torch.Tensor, relation) -> torch.Tensor:
    """(H, W, ...) per-pixel values -> (2, H, W) bool: ``relation(a, b)`` of each pixel ``a`` and the
    one below it ([0]) or right of it ([1]) (False on the last row / column)."""
    h, w = values.shape[:2]
    out = torch.zeros((2, h, w), dtype=torch.bool, device=values.device)
    for dim in (0, 1):
        n = values.shape[dim]
        out[dim].narrow(dim, 0, n - 1).copy_(relation(values.narrow(dim, 0, n - 1), values.narrow(dim, 1, n - 1)))
    return out


def cell_changes(cells: torch.Tensor, inside: torch.Tensor) -> torch.Tensor:
    """(H, W, K) answering cells, (H, W) foreground -> (2, H, W) bool: whether each pixel and its
    neighbour (:func:`neighbour_pairs`) are both in the foreground and answered by different cells."""
    return neighbour_pairs(cells, lambda a, b: (a != b).any(-1)) & neighbour_pairs(inside, torch.logical_and)


def pixels_of_pairs(pairs: torch.Tensor, inside: torch.Tensor, radius: int = SEAM_RADIUS) -> torch.Tensor:
    """(2, H, W) marked pixel pairs (:func:`cell_changes`) -> (H, W) bool: both pixels of every marked
    pair, dilated by ``radius`` pixels, within ``inside``."""
    marked = torch.zeros_like(inside)
    for dim in (0, 1):
        n = inside.shape[dim]
        pair = pairs[dim].narrow(dim, 0, n - 1)
        marked.narrow(dim, 0, n - 1).logical_or_(pair)
        marked.narrow(dim, 1, n - 1).logical_or_(pair)
    if radius > 0:
        marked = torch.nn.functional.max_pool2d(marked[None, None].float(), 2 * radius + 1, stride=1,
                                                padding=radius)[0, 0] > 0
    return marked & inside


def depth_jumps(depth: torch.Tensor, threshold: float = DEPTH_JUMP) -> torch.Tensor:
    """(H, W) depth -> (2, H, W) bool: whether each pixel and its neighbour (:func:`neighbour_pairs`)
    differ in depth by more than ``threshold`` of the nearer one."""
    return neighbour_pairs(depth, lambda a, b: (a - b).abs() > threshold * torch.minimum(a, b).abs())


def image_pixel_groups(W: int, H: int, intrinsics: torch.Tensor, c2w: torch.Tensor, depth: torch.Tensor,
                       bounds: SceneBounds, centroids: torch.Tensor, margin: float, cluster_2d: bool,
                       radius: int = SEAM_RADIUS
                       ) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor, torch.Tensor]:
    """Seam, blend and interior pixels of one rendered image (see the module docstring).

    Args:
        depth: (H, W) rendered depth (normalised ray distance, as :func:`render_image` returns it).
        margin: the container's ``boundary_margin``.
    Returns:
        groups {"seam", "seam_surface", "seam_edge", "blend", "interior", "rest"} -> (H, W) bool,
        visible points (H * W, 3), ray directions (H * W, 3), and (H, W) bool: two or more cells
        answer at the pixel's visible point.  ``seam_edge``: seam pixels at a change
        of the answering cells where the depth jumps too (:data:`DEPTH_JUMP`: an occlusion edge whose
        two sides lie in different cells, hard pixels whatever the cells do); ``seam_surface``:
        the other seam pixels, where one surface crosses from cell to cell.
    """
    rays_o, rays_d = image_rays(W, H, intrinsics, c2w, bounds.center_pixels)
    points = rays_o + rays_d * depth.reshape(-1, 1).to(rays_o)
    inside = inside_foreground(points, bounds).reshape(H, W)
    cells = answering_cells(points, centroids, margin, cluster_2d).reshape(H, W, -1)
    changes = cell_changes(cells, inside)
    seam = pixels_of_pairs(changes, inside, radius)
    edge = pixels_of_pairs(changes & depth_jumps(depth.to(rays_o)), inside, radius)
    several = cells.sum(-1) >= 2
    groups = {"seam": seam, "seam_surface": seam & ~edge, "seam_edge": edge,
              "blend": inside & several & ~seam, "interior": inside & ~several & ~seam, "rest": inside & ~seam}
    return groups, points, rays_d, several


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
def cell_color_gap(container, points: torch.Tensor, dirs: torch.Tensor, appearance: int) -> torch.Tensor:
    """At each point, the blend-weighted mean absolute difference between each cell's own colour and
    the blended colour (0 where one cell answers, or where the cells agree).

    Args:
        container: a :class:`~mega_nerf.container.Container`; points, dirs: (N, 3).
    Returns:
        (N,) gaps in [0, 1] (mean over channels).
    """
    weights = container.routing(points)
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
                       protocol: str, radius: int = SEAM_RADIUS) -> dict | None:
    """Seam numbers of one rendered validation image, or None for a model without cells.

    Args:
        model: a container (anything with ``centroids``, ``boundary_margin``, ``cluster_2d``).
        rgb, gt: (H, W, 3) in [0, 1]; depth: (H, W), as :func:`render_image` returns them.
        protocol: the scored part of the image (:func:`split_for_protocol`).
    Returns:
        {"sums": group -> pooled sums, group -> scores, "cell_color_gap_sum", "gap_pixels"} over the
        scored part.
    """
    if not hasattr(model, "centroids"):
        return None
    device = model.centroids.device
    groups, points, dirs, several = image_pixel_groups(W, H, intrinsics.to(device), c2w.to(device), depth.to(device),
                                                       bounds, model.centroids, model.boundary_margin,
                                                       model.cluster_2d, radius)
    masks = {name: split_for_protocol(mask[..., None].cpu(), protocol)[..., 0] for name, mask in groups.items()}
    sums = error_sums(split_for_protocol(rgb, protocol), split_for_protocol(gt, protocol), masks)
    scored = split_for_protocol(torch.arange(H * W, device=device).reshape(H, W, 1), protocol).reshape(-1)
    overlap = ((groups["seam"] | groups["blend"]) & several).reshape(-1)
    index = scored[overlap[scored]]  # scored pixels whose visible point two or more cells answer
    gap = 0.0
    if hasattr(model, "sub_modules") and index.numel():
        gap = float(cell_color_gap(model, points[index], dirs[index], appearance).sum())
    return {"sums": sums, "cell_color_gap_sum": gap, "gap_pixels": int(index.numel()), "radius": radius,
            **{name: scores(sums[name]) for name in GROUPS}}


def summarize_seams(per_image: list[dict | None]) -> dict | None:
    """Pool :func:`image_seam_metrics` over images: PSNR and mean absolute error per group, the
    seam pixels' share of the scored foreground pixels, and the mean cell colour gap."""
    found = [r for r in per_image if r]
    if not found:
        return None
    keys = ("pixels", "squared_error", "absolute_error")
    pooled = {name: {key: sum(r["sums"][name][key] for r in found) for key in keys} for name in GROUPS}
    out = {name: scores(pooled[name]) for name in GROUPS}
    seam, rest = pooled["seam"]["pixels"], pooled["rest"]["pixels"]
    gap_pixels = sum(r["gap_pixels"] for r in found)
    out["seam_fraction"] = seam / max(seam + rest, 1)
    out["cell_color_gap"] = sum(r["cell_color_gap_sum"] for r in found) / gap_pixels if gap_pixels else None
    out["images"] = len(found)
    out["definition"] = ("seam: the cells answering at the pixel's expected-depth point differ from those at a "
                         f"neighbouring pixel's (dilated by {found[0]['radius']} px), split into seam_edge (where "
                         f"the depth jumps by more than {DEPTH_JUMP:.0%} too: an occlusion edge) and seam_surface "
                         "(one surface crossing cells); blend: two or more cells, no change; interior: one cell; "
                         "rest: blend + interior (foreground pixels only)")
    return out
