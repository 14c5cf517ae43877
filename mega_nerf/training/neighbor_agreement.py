"""The trainer's side of ``--neighbor_agreement``: which neighbours are trained, where their
checkpoints are, which samples of a batch lie in an overlap band, and the agreement terms.

Cell ``k`` of a grid trains in ``PREFIX<k>`` (``train_cells``: ``EXP-k``, i.e. the prefix
``EXP-``, the same one ``merge_submodules.py --ckpt_prefix`` takes).  A neighbour ``j`` is used
when, at the start of this cell's run, its ``train_summary.json`` (written last) exists and names
the iteration of its newest checkpoint: a finished cell.  Cells trained at the same time as this
one are simply not used.  Neighbours are loaded on first need (the first batch with samples in
their band), frozen and evaluated without gradients.

The band is where the container blends: samples whose routing weights
(:func:`~mega_nerf.partition.centroids.routing_weights` with the container's ``boundary_margin``,
or ``--agreement_margin``) are non-zero for this cell and for neighbour ``j``; the neighbour's
term is weighted by its routing weight ``w_j`` there.  Background samples are routed, as in the
container, by the point where their ray leaves the foreground.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import torch

from mega_nerf.errors import require
from mega_nerf.fields.model import SceneModel
from mega_nerf.partition.centroids import routing_weights
from mega_nerf.training.agreement import (
    agreement_loss,
    appearance_alignment_loss,
    appearance_targets,
)
from mega_nerf.training.cells import train_summary


def neighbor_prefix(exp_dir: Path, cell: int, prefix: str | None) -> str:
    """Where cell ``j``'s experiment is: ``PREFIX<j>``.  Default: this run's ``--exp_name`` less its
    trailing cell index (``EXP-3`` -> ``EXP-``)."""
    if prefix:
        return str(prefix)
    name = str(exp_dir)
    require(name.endswith(str(cell)),
            f"--neighbor_agreement: --exp_name {name} does not end with the cell index {cell}, so the "
            f"neighbours' folders are unknown; pass --agreement_prefix (cell j trains in PREFIX<j>)")
    return name[: len(name) - len(str(cell))]


def finished_checkpoint(exp_dir: Path) -> Path | None:
    """The final checkpoint of a finished cell (its summary names its newest checkpoint), else None."""
    from mega_nerf.training.trainer import checkpoints  # the trainer imports this module

    summary = train_summary(Path(exp_dir))
    if summary is None:
        return None
    found = checkpoints(Path(exp_dir))
    if not found or summary.get("iterations") != found[-1][0]:
        return None
    return found[-1][1]


class RecordingModel:
    """Passes every call through to ``model`` and keeps the foreground and background calls of one
    render (inputs and outputs, with their graphs), so the agreement terms reuse the very samples
    and predictions of the photometric loss."""

    def __init__(self, model):
        self.model = model
        self.fg_calls: list[tuple] = []
        self.bg_calls: list[tuple] = []

    def __getattr__(self, name):  # has_background, has_occupancy, white_background, occupied, density
        return getattr(self.model, name)

    def foreground(self, x, d, appearance):
        sigma, rgb = self.model.foreground(x, d, appearance)
        self.fg_calls.append((x, d, appearance, sigma, rgb))
        return sigma, rgb

    def background(self, unit_dir, inv_radius, d, appearance, route_points):
        sigma, rgb = self.model.background(unit_dir, inv_radius, d, appearance, route_points)
        self.bg_calls.append((unit_dir, inv_radius, d, appearance, route_points, sigma, rgb))
        return sigma, rgb


class BlendingModel:
    """``--agreement_blend``: ``model`` as the container will show it, blended with the trained
    neighbours wherever their routing weights are non-zero (:meth:`NeighborAgreement.blend`).

    Its occupancy is the union of the cell's own grid and the neighbours' grids where they are
    routed to, as in the container, so samples still land on a neighbour's surfaces that this
    cell's grid calls empty."""

    def __init__(self, model, agreement: "NeighborAgreement"):
        self.model = model
        self.agreement = agreement

    def __getattr__(self, name):  # has_background, has_occupancy, white_background, density
        return getattr(self.model, name)

    def occupied(self, x):
        result = self.model.occupied(x)
        for j, w in self.agreement.routed_neighbors(self.agreement.routing(x)):
            model = self.agreement.neighbor(j)
            if getattr(model, "has_occupancy", False):
                result = result | ((w > 0) & model.occupied(x))
        return result

    def foreground(self, x, d, appearance):
        sigma, rgb = self.model.foreground(x, d, appearance)
        return self.agreement.blend(x, sigma, rgb, lambda m, i: m.foreground(x[i], d[i], appearance[i]))

    def background(self, unit_dir, inv_radius, d, appearance, route_points):
        sigma, rgb = self.model.background(unit_dir, inv_radius, d, appearance, route_points)
        return self.agreement.blend(route_points, sigma, rgb, lambda m, i: None if m.bg is None else m.bg(
            unit_dir[i], inv_radius[i], d[i], appearance[i]))


class NeighborAgreement:
    """Agreement of one cell with its trained neighbours.

    Args:
        cell: this cell's index; centroids: (K, 3) every cell's centroid (``params.pt``).
        prefix: neighbours' experiment prefix (:func:`neighbor_prefix`).
        margin: routing margin of the band (the container's ``boundary_margin``).
        weight, appearance_weight: the loss weights; density_floor: see :mod:`.agreement`.
        skip: cells not to consider (no rays, not trained by the grid).
        blend: ``--agreement_blend`` (:class:`BlendingModel`).
    """

    def __init__(self, cell: int, centroids: torch.Tensor, prefix: str, margin: float, cluster_2d: bool,
                 weight: float, appearance_weight: float, density_floor: float, bounds_dict: dict,
                 device: torch.device, skip: tuple = (), blend: bool = False, tapered: bool = False):
        self.cell = cell
        self.blends_rays = blend
        self.centroids = centroids.float().reshape(-1, 3).to(device)
        self.prefix = prefix
        self.margin = margin
        self.tapered = tapered
        self.cluster_2d = cluster_2d
        self.weight = weight
        self.appearance_weight = appearance_weight
        self.density_floor = density_floor
        self.bounds_dict = bounds_dict
        self.device = device
        self.paths: dict[int, Path] = {}
        for j in range(len(self.centroids)):
            if j == cell or j in skip:
                continue
            path = finished_checkpoint(Path(f"{prefix}{j}"))
            if path is not None:
                self.paths[j] = path
        self.models: dict[int, SceneModel | None] = {}  # loaded on first need; None = unusable
        self.used: set[int] = set()  # neighbours some band sample was compared with
        self.appearance_from: list[int] = []
        self.appearance: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # "fg"/"bg" -> (target, rows)
        self.earlier: dict = {}  # the record of the runs before a resume

    @property
    def active(self) -> bool:
        """Whether any trained neighbour exists: without one, training is exactly as without the option."""
        return bool(self.paths)

    # ------------------------------------------------------------ neighbours
    def _load_state(self, j: int) -> dict | None:
        path = self.paths[j]
        state = torch.load(path, map_location="cpu", weights_only=False)
        if state.get("cell") != j or state.get("bounds") != self.bounds_dict:
            warnings.warn(f"{path}: not cell {j} of this scene (other cell or bounds); not agreeing with it")
            return None
        return state

    def neighbor(self, j: int) -> SceneModel | None:
        if j not in self.models:
            state = self._load_state(j)
            model = None
            if state is not None:
                model = SceneModel(state["model_config"])
                model.load_state_dict(state["model_state_dict"])
                model = model.to(self.device).eval().requires_grad_(False)
            self.models[j] = model
        return self.models[j]

    def init_appearance(self, model: SceneModel) -> None:
        """Copy the neighbours' learned appearance rows (averaged over those that learned a row) into
        ``model`` (a fresh run only) and keep them as the alignment targets.  Skipped, with a
        warning, where the tables' shapes differ, and altogether at ``appearance_weight`` 0: the
        embeddings are then this cell's own from zero, as without the option."""
        if not self.paths or self.appearance_weight <= 0:
            return
        tables: dict[str, list[torch.Tensor]] = {"fg": [], "bg": []}
        for j in sorted(self.paths):
            state = self._load_state(j)
            if state is None:
                continue
            used = False
            for part in ("fg", "bg"):
                own = getattr(model, part, None)
                key = f"{part}.embedding_a.weight"
                if own is None or own.embedding_a is None or key not in state["model_state_dict"]:
                    continue
                table = state["model_state_dict"][key]
                if tuple(table.shape) != tuple(own.embedding_a.weight.shape):
                    warnings.warn(f"{self.paths[j]}: appearance table {tuple(table.shape)} differs from this "
                                  f"cell's; its embeddings are not aligned")
                    continue
                tables[part].append(table)
                used = True
            if used:
                self.appearance_from.append(j)
        for part, found in tables.items():
            if found:
                target, rows = appearance_targets(found)
                self.appearance[part] = (target.to(self.device), rows.to(self.device))

    def copy_appearance(self, model: SceneModel) -> None:
        with torch.no_grad():
            for part, (target, rows) in self.appearance.items():
                weight = getattr(model, part).embedding_a.weight
                weight[rows] = target[rows].to(weight.dtype)

    # ---------------------------------------------------------------- blend
    def routing(self, points: torch.Tensor) -> torch.Tensor:
        """(N, 3) points -> (N, K) the container's routing weights (with this option's margin)."""
        return routing_weights(points.detach(), self.centroids, self.margin, self.cluster_2d, self.tapered)

    def routed_neighbors(self, weights: torch.Tensor) -> list[tuple[int, torch.Tensor]]:
        """(N, K) routing weights -> (j, (N,) weights of j) for the trained neighbours some point is
        routed to."""
        return [(j, weights[:, j]) for j in sorted(self.paths)
                if bool((weights[:, j] > 0).any()) and self.neighbor(j) is not None]

    def blend(self, points: torch.Tensor, sigma: torch.Tensor, rgb: torch.Tensor, evaluate) -> tuple:
        """This cell's predictions blended with the trained neighbours' as the container blends
        cells, renormalised over the cells trained so far:

            sigma' = (w_k sigma_k + sum_j w_j sigma_j) / (w_k + sum_j w_j)   (rgb likewise)

        over the trained neighbours ``j`` routed to the point (``w`` are the routing weights).  Points
        no trained neighbour is routed to keep the cell's own values; where the cell's own weight is
        0 the neighbours answer alone (no gradient), as in the merged model.

        Args:
            points: (N, 3) routing points; sigma: (N,), rgb: (N, 3) the cell's predictions;
            evaluate: (model, index) -> (sigma, rgb) of a neighbour at points[index], or None.
        Returns:
            sigma (N,), rgb (N, 3) (float32).
        """
        weights = self.routing(points)
        routed = self.routed_neighbors(weights)
        if not routed:
            return sigma, rgb
        mine = weights[:, self.cell]
        total, num_sigma, num_rgb = mine, mine * sigma.float(), mine[:, None] * rgb.float()
        for j, w in routed:
            index = torch.nonzero(w > 0).reshape(-1)
            with torch.no_grad():
                out = evaluate(self.neighbor(j), index)
            if out is None:  # a neighbour without a background model
                continue
            self.used.add(j)
            w = w[index]
            total = total.index_add(0, index, w)
            num_sigma = num_sigma.index_add(0, index, w * out[0].float())
            num_rgb = num_rgb.index_add(0, index, w[:, None] * out[1].float())
        blended = total > mine
        scale = total.clamp_min(1e-12)
        return (torch.where(blended, num_sigma / scale, sigma.float()),
                torch.where(blended[:, None], num_rgb / scale[:, None], rgb.float()))

    # ----------------------------------------------------------------- loss
    def _band_terms(self, route: torch.Tensor, evaluate) -> list[tuple]:
        """Per neighbour with samples in the band: (index, blend weight, neighbour sigma, rgb)."""
        weights = self.routing(route)
        mine = weights[:, self.cell] > 0
        terms = []
        for j in sorted(self.paths):
            index = torch.nonzero(mine & (weights[:, j] > 0)).reshape(-1)
            if index.numel() == 0:
                continue
            model = self.neighbor(j)
            if model is None:
                continue
            with torch.no_grad():
                out = evaluate(model, index)
            if out is None:  # a neighbour without a background model
                continue
            sigma, rgb = out
            terms.append((index, weights[index, j], sigma, rgb))
            self.used.add(j)
        return terms

    def field_loss(self, recorder: RecordingModel) -> torch.Tensor | None:
        """The weighted agreement of every recorded foreground and background sample in a band,
        averaged over all the recorded samples (samples outside every band count as agreeing)."""
        total, count = None, 0
        for x, d, app, sigma, rgb in recorder.fg_calls:
            count += x.shape[0]
            for index, w, t_sigma, t_rgb in self._band_terms(
                    x, lambda m, i, x=x, d=d, app=app: m.foreground(x[i], d[i], app[i])):
                term = agreement_loss(sigma[index], rgb[index], t_sigma, t_rgb, w, self.density_floor,
                                      normalizer=1.0)
                total = term if total is None else total + term
        for unit_dir, inv_radius, d, app, route, sigma, rgb in recorder.bg_calls:
            count += unit_dir.shape[0]
            def background(m, i, u=unit_dir, s=inv_radius, d=d, app=app):
                return None if m.bg is None else m.bg(u[i], s[i], d[i], app[i])

            for index, w, t_sigma, t_rgb in self._band_terms(route, background):
                term = agreement_loss(sigma[index], rgb[index], t_sigma, t_rgb, w, self.density_floor,
                                      normalizer=1.0)
                total = term if total is None else total + term
        if total is None:
            return None
        return total / max(count, 1)

    def appearance_loss(self, model: SceneModel) -> torch.Tensor | None:
        total = None
        for part, (target, rows) in self.appearance.items():
            term = appearance_alignment_loss(getattr(model, part).embedding_a.weight, target, rows)
            total = term if total is None else total + term
        return total

    def loss(self, recorder: RecordingModel, model: SceneModel) -> tuple[torch.Tensor | None, dict]:
        """``weight * field_loss + appearance_weight * appearance_loss`` and its parts (floats)."""
        parts, total = {}, None
        field = self.field_loss(recorder) if recorder is not None and self.weight > 0 else None
        if field is not None:
            parts["field"] = field.detach()
            total = self.weight * field
        appearance = self.appearance_loss(model) if self.appearance_weight > 0 else None
        if appearance is not None:
            parts["appearance"] = appearance.detach()
            total = self.appearance_weight * appearance if total is None else total + self.appearance_weight * appearance
        return total, parts

    # --------------------------------------------------------------- record
    def record(self) -> dict:
        """What goes into checkpoints and ``train_summary.json``: which neighbours this cell agreed with."""
        earlier = self.earlier.get("neighbors", {})
        neighbors = {str(j): {"checkpoint": str(p), "used": j in self.used} for j, p in sorted(self.paths.items())}
        for j, entry in earlier.items():  # a neighbour of an earlier run of this cell (before a resume)
            if j not in neighbors:
                neighbors[j] = entry
            elif entry.get("used"):
                neighbors[j]["used"] = True
        return {"weight": self.weight, "blend": self.blends_rays, "appearance_weight": self.appearance_weight,
                "margin": self.margin, "tapered": self.tapered,
                "density_floor": self.density_floor, "prefix": self.prefix, "neighbors": neighbors,
                "agreed_with": sorted(int(j) for j, e in neighbors.items() if e.get("used")),
                "appearance_from": sorted(set(self.appearance_from) | set(self.earlier.get("appearance_from", [])))}
