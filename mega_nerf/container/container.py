"""Merged container: each 3D sample is answered by the submodules of its nearest centroids.

Routing follows Mega-NeRF: a sample goes to every cell whose centroid is within
``boundary_margin`` times the nearest centroid's distance, and the activated outputs (density
after its activation, colour after the sigmoid) are blended with normalised inverse-distance
weights (or tapered ones that fall continuously to zero at the band's edge: ``blend_weights``).
Background samples are routed by the point where their ray leaves the foreground ellipsoid.  A
container file holds configs and weights only: it loads and renders without the dataset, the
masks or any training state.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import torch
from torch import nn

from mega_nerf.errors import UserError, require
from mega_nerf.fields.base import tensor_bytes
from mega_nerf.fields.model import build_background, build_foreground, build_occupancy
from mega_nerf.geometry.bounds import SceneBounds
from mega_nerf.io_utils import atomic_torch_save
from mega_nerf.partition.centroids import BLEND_WEIGHTS, routing_weights

FORMAT = "mega_nerf.container/2"


class Container(nn.Module):
    """Cells may hold different backends: ``model_config`` is one dict for all cells or a list
    with one dict per cell (they must agree on appearance and background settings)."""

    def __init__(self, model_config: dict | List[dict], bounds: SceneBounds, centroids: torch.Tensor,
                 cell_ids: List[int], boundary_margin: float, cluster_2d: bool,
                 blend_weights: str = "inverse_distance"):
        super().__init__()
        require(blend_weights in BLEND_WEIGHTS, f"blend weights {blend_weights!r}: expected one of {BLEND_WEIGHTS}")
        configs = list(model_config) if isinstance(model_config, (list, tuple)) else [model_config] * len(cell_ids)
        if len(configs) != len(cell_ids):
            raise ValueError(f"{len(configs)} model configs for {len(cell_ids)} cells")
        shared = {(c["bg_nerf"], c["appearance_count"], c["appearance_dim"], c.get("white_background", False))
                  for c in configs}
        if len(shared) > 1:
            raise UserError("cells disagree on bg_nerf, appearance count, appearance_dim or white_background; "
                            "train every cell with the same dataset and those options")
        self.model_configs = configs
        self.render_settings: dict = {}  # render flags this model is best rendered with (see save_container)
        self.bounds = bounds
        self.cell_ids = list(cell_ids)
        self.boundary_margin = boundary_margin
        self.blend_weights = blend_weights
        self.cluster_2d = cluster_2d
        self.register_buffer("centroids", centroids.float().reshape(-1, 3))
        self.sub_modules = nn.ModuleList([build_foreground(c) for c in configs])
        backgrounds = [build_background(c) for c in configs]
        self.bg_sub_modules = nn.ModuleList(backgrounds) if backgrounds and backgrounds[0] is not None else None
        grids = [build_occupancy(c) for c in configs]
        # Empty-space skipping only when every cell has a grid: a cell without one cannot say
        # where its space is empty.
        self.occupancy_grids = nn.ModuleList(grids) if grids and all(g is not None for g in grids) else None

    @property
    def has_background(self) -> bool:
        return self.bg_sub_modules is not None

    @property
    def has_occupancy(self) -> bool:
        return self.occupancy_grids is not None

    @property
    def white_background(self) -> bool:
        return bool(self.model_configs[0].get("white_background", False)) if self.model_configs else False

    def routing(self, points: torch.Tensor) -> torch.Tensor:
        """(N, 3) points -> (N, K) the cells' blending weights (:func:`routing_weights`)."""
        return routing_weights(points, self.centroids, self.boundary_margin, self.cluster_2d,
                               self.blend_weights == "tapered")

    def occupied(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3) -> (N,) bool: occupied in the grid of any cell that answers for the point."""
        if len(self.cell_ids) == 1:
            return self.occupancy_grids[0].occupied_at(x)
        weights = self.routing(x)
        result = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        for k, grid in enumerate(self.occupancy_grids):
            result |= (weights[:, k] > 0) & grid.occupied_at(x)
        return result

    def _blend(self, points: torch.Tensor, evaluate) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Evaluate ``evaluate(k, index, w)`` on each cell's share of points (``w``: their blend
        weights, None for a one-cell model) and blend the outputs."""
        if len(self.cell_ids) == 1:  # a distilled student: no routing, no gather or scatter
            s_0, c_0 = evaluate(0, slice(None), None)
            return s_0.float(), None if c_0 is None else c_0.float()
        weights = self.routing(points)
        sigma = torch.zeros(points.shape[0], device=points.device)
        rgb = None
        for k in range(len(self.cell_ids)):
            index = torch.nonzero(weights[:, k] > 0).reshape(-1)
            if index.numel() == 0:
                continue
            w = weights[index, k]
            s_k, c_k = evaluate(k, index, w)
            sigma = sigma.index_add(0, index, w * s_k.float())
            if c_k is not None:
                if rgb is None:
                    rgb = torch.zeros(points.shape[0], 3, device=points.device)
                rgb = rgb.index_add(0, index, w[:, None] * c_k.float())
        return sigma, rgb

    def density(self, x: torch.Tensor) -> torch.Tensor:
        return self._blend(x, lambda k, i, w: (self.sub_modules[k].density(x[i]), None))[0]

    def density_with_features(self, x: torch.Tensor):
        """(N, 3) -> blended density (N,) and what :meth:`color_from_features` needs to colour any
        subset of the points later without evaluating their geometry again (the renderer's
        two-pass rendering): a one-cell model's (N, F) features, or each cell's share of them
        (:class:`RoutedFeatures`)."""
        if len(self.cell_ids) == 1:
            sigma, features = self.sub_modules[0].density_with_features(x)
            return sigma.float(), features
        shares = []

        def evaluate(k, index, w):
            s_k, f_k = self.sub_modules[k].density_with_features(x[index])
            shares.append((k, index, w, f_k))
            return s_k, None

        return self._blend(x, evaluate)[0], RoutedFeatures(shares, x.shape[0])

    def color_from_features(self, features, d: torch.Tensor, appearance: torch.Tensor) -> torch.Tensor:
        """Features of :meth:`density_with_features` (possibly a subset, ``features[mask]``) and
        (M, 3) directions, (M,) appearance of those points -> (M, 3) blended colour."""
        if not isinstance(features, RoutedFeatures):
            return self.sub_modules[0].color(features, d, appearance).float()
        rgb = torch.zeros(features.count, 3, device=d.device)
        for k, index, w, f_k in features.shares:
            if index.numel():
                c_k = self.sub_modules[k].color(f_k, d[index], appearance[index]).float()
                rgb = rgb.index_add(0, index, w[:, None] * c_k)
        return rgb

    def foreground(self, x, d, appearance):
        return self._blend(x, lambda k, i, w: self.sub_modules[k](x[i], d[i], appearance[i]))

    def background(self, unit_dir, inv_radius, d, appearance, route_points):
        return self._blend(route_points, lambda k, i, w: self.bg_sub_modules[k](
            unit_dir[i], inv_radius[i], d[i], appearance[i]))

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def memory_bytes(self) -> int:
        return tensor_bytes([*self.parameters(), *self.buffers()])


class RoutedFeatures:
    """Each routed cell's geometry features for its share of ``count`` points: a list of
    ``(cell, index (M_k,), blend weight (M_k,), features (M_k, F))``.  ``routed[mask]`` keeps the
    points where the (count,) bool ``mask`` holds, numbered as in the masked batch."""

    def __init__(self, shares: list, count: int):
        self.shares, self.count = shares, count

    def __getitem__(self, mask: torch.Tensor) -> "RoutedFeatures":
        position = torch.cumsum(mask.to(torch.int64), 0) - 1  # each kept point's place in the subset
        shares = []
        for k, index, w, f_k in self.shares:
            sel = mask[index]
            shares.append((k, position[index[sel]], w[sel], f_k[sel]))
        return RoutedFeatures(shares, int(position[-1]) + 1 if self.count else 0)


def save_container(container: Container, path: Path, extra: dict | None = None) -> None:
    """Write ``container`` atomically; ``extra`` (e.g. how a distilled student was made) is kept
    under the key ``'extra'`` and ignored by :func:`load_container`.  ``container.render_settings``
    (render flags the model is best rendered with, e.g. a student's ``occupancy_candidates``) are
    kept under ``'render'``."""
    atomic_torch_save({
        "format": FORMAT, "model_configs": container.model_configs, "bounds": container.bounds.to_dict(),
        "centroids": container.centroids.cpu(), "cell_ids": container.cell_ids,
        "boundary_margin": container.boundary_margin, "blend_weights": container.blend_weights,
        "cluster_2d": container.cluster_2d,
        "state_dict": {k: v.cpu() for k, v in container.state_dict().items()},
        **({"extra": extra} if extra else {}),
        **({"render": dict(container.render_settings)} if container.render_settings else {}),
    }, path)


def load_container(path: Path, device: torch.device | str = "cpu",
                   boundary_margin: Optional[float] = None, blend_weights: Optional[str] = None) -> Container:
    """Load a container written by :func:`save_container` (optionally with another margin or
    blending weights than the ones it was merged with)."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: container file is missing; create it with scripts/merge_submodules.py")
    try:
        data = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise UserError(f"{path}: cannot load container ({type(e).__name__}); it is corrupt, merge again") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise UserError(f"{path}: not a mega_nerf container (expected format {FORMAT})")
    container = Container(data["model_configs"], SceneBounds.from_dict(data["bounds"]), data["centroids"],
                          data["cell_ids"], boundary_margin or data["boundary_margin"], data["cluster_2d"],
                          blend_weights or data.get("blend_weights", "inverse_distance"))
    container.load_state_dict(data["state_dict"])
    container.render_settings = dict(data.get("render") or {})
    return container.to(device).eval()
