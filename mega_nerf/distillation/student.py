"""The student: one field of any backend over the teacher's foreground box, kept and saved as a
one-cell :class:`~mega_nerf.container.Container`.

A one-cell container is what ``eval.py --container_path`` already loads and what this package
distils from, so a student is evaluated and distilled again like any merged model.  How it was
made (teacher, cells done, settings) goes under the file's ``'extra'`` key.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from mega_nerf.container.container import Container, save_container
from mega_nerf.distillation.cameras import Views, view_rays
from mega_nerf.fields.model import BACKEND_KEYS, COMMON_KEYS
from mega_nerf.render.occupancy import OccupancyGrid
from mega_nerf.render.renderer import SamplingConfig, render_rays


def student_config(args: argparse.Namespace, teacher: Container) -> dict:
    """The student's model config: sizes from the backend flags, the rest from the teacher.

    The box is the union of the teacher cells' boxes; appearance count, background model and
    white-background compositing follow the teacher (the student must render the same images).
    """
    cfg = {key: getattr(args, key) for key in COMMON_KEYS + BACKEND_KEYS[args.model_type]}
    first = teacher.model_configs[0]
    boxes = torch.tensor([c["aabb"] for c in teacher.model_configs])  # (K, 2, 3)
    cfg["aabb"] = torch.stack([boxes[:, 0].min(0).values, boxes[:, 1].max(0).values]).tolist()
    cfg["appearance_count"] = first["appearance_count"]
    cfg["bg_nerf"] = bool(first["bg_nerf"])
    cfg["white_background"] = bool(first.get("white_background", False))
    return cfg


def build_student(cfg: dict, teacher: Container) -> Container:
    """A one-cell container with the teacher's bounds and routing settings."""
    centroid = teacher.centroids.detach().float().cpu().mean(0, keepdim=True)
    return Container(cfg, teacher.bounds, centroid, [0], teacher.boundary_margin, teacher.cluster_2d)


def _copy_matching(source: torch.nn.Module, target: torch.nn.Module, prefix: str = "") -> list[str]:
    """Copy every parameter and buffer of ``source`` whose name and shape ``target`` shares."""
    src = source.state_dict()
    copied = []
    with torch.no_grad():
        for name, value in target.state_dict().items():
            if name.startswith(prefix) and name in src and src[name].shape == value.shape and name != "aabb":
                value.copy_(src[name].to(value.device, value.dtype))
                copied.append(name)
    return copied


def init_from_teacher(student: Container, teacher: Container, occupancy: OccupancyGrid | None) -> list[str]:
    """Start the student from what the teacher can give.

    * A one-cell teacher (e.g. a student distilled again): every weight with the same name and
      shape (PVD's ``strict=False`` load: same-backend students start as the teacher, others get
      its colour decoder and appearance embeddings).
    * A multi-cell teacher: the first cell's appearance embeddings (the colour decoder is
      learned; each cell decodes its own feature space).
    * The background model from the first cell when the shapes allow (it is then distilled on
      the rays that leave the foreground).
    * The occupancy grid from the teacher's occupied space.

    Returns:
        the names of the copied tensors.
    """
    fg_s, fg_t = student.sub_modules[0], teacher.sub_modules[0]
    if len(teacher.sub_modules) == 1:
        copied = ["fg." + n for n in _copy_matching(fg_t, fg_s)]
    else:
        copied = ["fg." + n for n in _copy_matching(fg_t, fg_s, "embedding_a")]
    if student.bg_sub_modules is not None and teacher.bg_sub_modules is not None:
        copied += ["bg." + n for n in _copy_matching(teacher.bg_sub_modules[0], student.bg_sub_modules[0])]
    if occupancy is not None and student.occupancy_grids is not None:
        copy_occupancy(occupancy, student.occupancy_grids[0])
        copied.append("occupancy")
    return copied


@torch.no_grad()
def copy_occupancy(source: OccupancyGrid, target: OccupancyGrid) -> None:
    """Same resolution and box (the teacher's grid is measured on the student's)."""
    assert source.resolution == target.resolution
    target.density.copy_(source.density)
    target.occupied.copy_(source.occupied)


@torch.no_grad()
def prune_occupancy(grid: OccupancyGrid, density_fn, threshold: float, passes: int = 2, seed: int = 0) -> float:
    """Keep occupied only the cells where the student also has density (grown by one cell, as in
    training).  Never adds cells: outside the teacher's occupied space the student was never
    taught, and what it holds there would be floaters.  Returns the occupied fraction."""
    r = grid.resolution
    cells = torch.arange(r ** 3, device=grid.density.device)
    dense = torch.zeros(r ** 3, dtype=torch.bool, device=grid.density.device)
    device = grid.density.device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for _ in range(passes):
            for start in range(0, len(cells), 2 ** 18):
                part = cells[start:start + 2 ** 18]
                dense[part] |= density_fn(grid.cell_points(part)).float() > threshold
    grid.occupied &= grid.grown_by_one_cell(dense)
    return grid.occupied_fraction()


@torch.no_grad()
def visibility_prune(grid: OccupancyGrid, model, views: Views, bounds, sampling: SamplingConfig, rays_per_view: int,
                     weight_threshold: float, device, seed: int = 0, batch: int = 2 ** 15) -> float:
    """Keep occupied only the cells that some view sees: where a ray of a view gives one of its
    samples at least ``weight_threshold`` of its colour (grown by one cell).

    Density the views never see, such as haze below the ground or inside solid matter, still
    costs samples; without it a ray's occupied candidates are the thin band around the surfaces it
    can reach, so fewer candidates (``--occupancy_candidates``) still place its samples densely
    there (bench/render_profile.py).  Returns the occupied fraction.

    Args:
        grid: the model's occupancy grid (updated in place); model: renders with it.
        views: the cameras to see with (training and virtual ones); rays_per_view: random pixels
            of each.
    """
    seen = torch.zeros_like(grid.density)
    generator = torch.Generator().manual_seed(seed)
    for v in range(len(views)):
        rays_o, rays_d, _ = view_rays(views, v, rays_per_view, generator, bounds.center_pixels)
        rays_o, rays_d = rays_o.to(device), rays_d.to(device)
        appearance = torch.full((rays_per_view,), int(views.appearance[v]), dtype=torch.long, device=device)
        for start in range(0, rays_per_view, batch):
            o, d = rays_o[start:start + batch], rays_d[start:start + batch]
            out = render_rays(model, o, d, appearance[start:start + batch], bounds, sampling, train=False,
                              with_samples=True)
            points = o[:, None] + d[:, None] * out["z"][..., None]
            cell, inside = grid.cell_index(points.reshape(-1, 3))
            seen.scatter_reduce_(0, cell, out["weights"].reshape(-1).float() * inside, "amax")
    grid.occupied &= grid.grown_by_one_cell(seen >= weight_threshold)
    return grid.occupied_fraction()


def save_student(student: Container, path: Path, info: dict) -> None:
    """Atomically, in the container format (``info`` under ``extra['distillation']``)."""
    save_container(student, path, extra={"distillation": info})


def load_student_info(path: Path) -> dict:
    data = torch.load(path, map_location="cpu", weights_only=False)
    return (data.get("extra") or {}).get("distillation", {})
