"""One submodule: a foreground field plus an optional background field, built from a config.

``model_config`` (a plain dict stored in checkpoints and containers) is everything needed to
rebuild the modules without the training arguments.
"""
from __future__ import annotations

import argparse
from typing import Optional

import torch
from torch import nn

from mega_nerf.errors import UserError
from mega_nerf.fields.background import BackgroundField
from mega_nerf.fields.base import RadianceField
from mega_nerf.fields.grid_field import GridField
from mega_nerf.fields.hash_field import HashField
from mega_nerf.fields.mlp_field import MLPField
from mega_nerf.fields.vm_field import VMField
from mega_nerf.geometry.bounds import SceneBounds
from mega_nerf.render.occupancy import OccupancyGrid

#: Keys of ``model_config`` each backend reads besides the common ones.
BACKEND_KEYS = {
    "hash": ("hash_levels", "hash_features", "hash_log2_size", "hash_base_resolution", "hash_max_resolution"),
    "mlp": ("pos_xyz_dim", "mlp_layers", "mlp_width", "mlp_skip"),
    "vm": ("vm_resolution", "vm_density_rank", "vm_appearance_rank"),
    "grid": ("grid_resolution", "grid_color"),
}
COMMON_KEYS = ("model_type", "appearance_dim", "bg_nerf", "layer_dim", "bg_layer_dim", "geo_feat_dim", "pos_dir_dim",
               "occupancy_resolution")


def model_config_from_args(args: argparse.Namespace, bounds: SceneBounds, appearance_count: int) -> dict:
    """The options that define a submodule, as a plain dict (only the chosen backend's sizes)."""
    cfg = {key: getattr(args, key) for key in COMMON_KEYS + BACKEND_KEYS[args.model_type]}
    cfg["appearance_count"] = appearance_count
    cfg["aabb"] = bounds.fields_aabb().tolist()
    cfg["white_background"] = bool(getattr(args, "white_background", False))
    return cfg


def build_foreground(cfg: dict) -> RadianceField:
    common = dict(aabb=torch.tensor(cfg["aabb"]), appearance_count=cfg["appearance_count"],
                  appearance_dim=cfg["appearance_dim"], hidden_dim=cfg["layer_dim"],
                  geo_feat_dim=cfg["geo_feat_dim"], dir_frequencies=cfg["pos_dir_dim"])
    kind = cfg["model_type"]
    if kind == "hash":
        return HashField(levels=cfg["hash_levels"], features_per_level=cfg["hash_features"],
                         log2_table_size=cfg["hash_log2_size"], base_resolution=cfg["hash_base_resolution"],
                         max_resolution=cfg["hash_max_resolution"], **common)
    if kind == "mlp":
        return MLPField(xyz_frequencies=cfg["pos_xyz_dim"], layers=cfg["mlp_layers"], width=cfg["mlp_width"],
                        skip=cfg["mlp_skip"], **common)
    if kind == "vm":
        return VMField(resolution=cfg["vm_resolution"], density_rank=cfg["vm_density_rank"],
                       appearance_rank=cfg["vm_appearance_rank"], **common)
    if kind == "grid":
        return GridField(resolution=cfg["grid_resolution"], color_mode=cfg["grid_color"], **common)
    raise UserError(f"model_type {kind!r} is unknown; choose hash, vm, grid or mlp")


def build_occupancy(cfg: dict) -> Optional[OccupancyGrid]:
    resolution = cfg.get("occupancy_resolution", 0)
    return OccupancyGrid(torch.tensor(cfg["aabb"]), resolution) if resolution > 0 else None


def build_background(cfg: dict) -> Optional[nn.Module]:
    if not cfg["bg_nerf"]:
        return None
    return BackgroundField(cfg["appearance_count"], cfg["appearance_dim"], cfg["bg_layer_dim"],
                           dir_frequencies=cfg["pos_dir_dim"])


class SceneModel(nn.Module):
    """A single submodule as the renderer sees it (see :mod:`mega_nerf.render.renderer`)."""

    def __init__(self, cfg: dict):
        super().__init__()
        self.config = cfg
        self.fg = build_foreground(cfg)
        self.bg = build_background(cfg)
        self.occupancy = build_occupancy(cfg)

    @property
    def has_background(self) -> bool:
        return self.bg is not None

    @property
    def has_occupancy(self) -> bool:
        return self.occupancy is not None

    @property
    def white_background(self) -> bool:
        """Light left after the foreground composites onto white (see the renderer)."""
        return bool(self.config.get("white_background", False))

    def occupied(self, x: torch.Tensor) -> torch.Tensor:
        return self.occupancy.occupied_at(x)

    def density(self, x: torch.Tensor) -> torch.Tensor:
        return self.fg.density(x)

    def density_with_features(self, x):
        return self.fg.density_with_features(x)

    def color_from_features(self, features, d, appearance):
        return self.fg.color(features, d, appearance)

    def foreground(self, x, d, appearance):
        return self.fg(x, d, appearance)

    def background(self, unit_dir, inv_radius, d, appearance, route_points):
        return self.bg(unit_dir, inv_radius, d, appearance)

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())
