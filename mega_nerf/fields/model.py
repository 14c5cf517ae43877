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
from mega_nerf.fields.hash_field import BackgroundField, HashField
from mega_nerf.geometry.bounds import SceneBounds


def model_config_from_args(args: argparse.Namespace, bounds: SceneBounds, appearance_count: int) -> dict:
    center = torch.tensor(bounds.center)
    radius = torch.tensor(bounds.radius)
    return {
        "model_type": args.model_type, "appearance_count": appearance_count,
        "appearance_dim": args.appearance_dim, "bg_nerf": args.bg_nerf,
        "aabb": torch.stack([center - radius, center + radius]).tolist(),
        "hash_levels": args.hash_levels, "hash_features": args.hash_features,
        "hash_log2_size": args.hash_log2_size, "hash_base_resolution": args.hash_base_resolution,
        "hash_max_resolution": args.hash_max_resolution, "layer_dim": args.layer_dim,
        "bg_layer_dim": args.bg_layer_dim, "geo_feat_dim": args.geo_feat_dim, "pos_dir_dim": args.pos_dir_dim,
    }


def build_foreground(cfg: dict) -> nn.Module:
    if cfg["model_type"] != "hash":
        raise UserError(f"--model_type {cfg['model_type']}: only 'hash' is available in this version")
    return HashField(torch.tensor(cfg["aabb"]), cfg["appearance_count"], cfg["appearance_dim"],
                     cfg["hash_levels"], cfg["hash_features"], cfg["hash_log2_size"],
                     cfg["hash_base_resolution"], cfg["hash_max_resolution"], cfg["layer_dim"],
                     cfg["geo_feat_dim"], cfg["pos_dir_dim"])


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

    @property
    def has_background(self) -> bool:
        return self.bg is not None

    def density(self, x: torch.Tensor) -> torch.Tensor:
        return self.fg.density(x)

    def foreground(self, x, d, appearance):
        return self.fg(x, d, appearance)

    def background(self, unit_dir, inv_radius, d, appearance, route_points):
        return self.bg(unit_dir, inv_radius, d, appearance)

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())
