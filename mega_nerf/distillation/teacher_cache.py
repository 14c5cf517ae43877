"""Teacher outputs precomputed to disk, so teacher and student never share a GPU.

Layout of a cache folder (one sub-folder per region: ``all`` or ``cell-<id>``)::

    CACHE/manifest.json             format, the container's identity (size + SHA-256), the settings
                                    that define the packs; written first, checked on every open
    CACHE/setup.pt                  the views and the teacher's occupancy grid
    CACHE/<region>/shard-00000.pt   ``shard_size`` consecutive packs (see :mod:`.packs`)

Every file is written atomically (:mod:`mega_nerf.io_utils`), so a shard that exists is whole: an
interrupted build resumes by writing the missing shards.  A cache made from another container
(or other settings) is refused, never trusted.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from mega_nerf.errors import UserError, require
from mega_nerf.io_utils import atomic_torch_save, atomic_write_json

FORMAT = "mega_nerf.teacher_cache/1"


def file_identity(path: Path) -> dict:
    """Size and SHA-256 of a file: a container rewritten in place (merged again, distilled
    again) gets another identity even when its name and size stay."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return {"size": Path(path).stat().st_size, "sha256": digest.hexdigest()}


def _canonical(obj) -> str:
    return json.dumps(obj, sort_keys=True, default=str)


class TeacherCache:
    """A cache folder for one container and one set of pack settings."""

    def __init__(self, root: Path, teacher_identity: dict, settings: dict, shard_size: int = 8):
        self.root = Path(root)
        self.shard_size = shard_size
        self.manifest = {"format": FORMAT, "teacher": teacher_identity, "settings": json.loads(_canonical(settings)),
                         "shard_size": shard_size}

    def open(self) -> TeacherCache:
        """Create the folder and manifest, or check that an existing one is for this teacher."""
        path = self.root / "manifest.json"
        if path.exists():
            try:
                found = json.loads(path.read_text())
            except (OSError, ValueError):
                raise UserError(f"{path}: unreadable teacher cache manifest; delete {self.root}") from None
            require(found.get("format") == FORMAT, f"{self.root}: not a teacher cache ({FORMAT}); choose another "
                                                   f"--teacher_cache folder")
            require(found.get("teacher") == self.manifest["teacher"],
                    f"{self.root}: teacher cache was made from another container (its content differs); delete "
                    f"it or choose another --teacher_cache folder")
            require(_canonical(found.get("settings")) == _canonical(self.manifest["settings"])
                    and found.get("shard_size") == self.shard_size,
                    f"{self.root}: teacher cache was made with other distillation settings (views, rays, samples "
                    f"or seed); delete it or choose another --teacher_cache folder")
            return self
        if self.root.exists() and not self.root.is_dir():
            raise UserError(f"{self.root}: exists and is not a folder; choose another --teacher_cache")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"{self.root}: cannot create the teacher cache here ({e.strerror})") from None
        require(not any(self.root.iterdir()), f"{self.root}: folder is not empty and holds no teacher cache; "
                                               f"choose another --teacher_cache folder")
        atomic_write_json(self.manifest, path)
        return self

    def region_dir(self, region: str) -> Path:
        return self.root / region

    # -- setup: views and the teacher's occupancy grid
    def load_setup(self) -> dict | None:
        path = self.root / "setup.pt"
        return torch.load(path, map_location="cpu", weights_only=False) if path.exists() else None

    def save_setup(self, setup: dict) -> None:
        atomic_torch_save(setup, self.root / "setup.pt")

    # -- shards of packs
    def shard_path(self, region: str, shard: int) -> Path:
        return self.region_dir(region) / f"shard-{shard:05d}.pt"

    def shards(self, packs: int) -> int:
        return (packs + self.shard_size - 1) // self.shard_size

    def missing_shards(self, region: str, packs: int) -> list[int]:
        return [s for s in range(self.shards(packs)) if not self.shard_path(region, s).exists()]

    def write_shard(self, region: str, shard: int, packs: list[dict]) -> None:
        atomic_torch_save({"packs": [{k: v.cpu() for k, v in p.items()} for p in packs]},
                          self.shard_path(region, shard))

    def read_shard(self, region: str, shard: int) -> list[dict]:
        path = self.shard_path(region, shard)
        require(path.exists(), f"{path}: teacher cache shard is missing; build the cache again (--cache_only)")
        try:
            return torch.load(path, map_location="cpu", weights_only=False)["packs"]
        except Exception as e:  # noqa: BLE001 - any unreadable shard is the same user-facing problem
            raise UserError(f"{path}: cannot read teacher cache shard ({type(e).__name__}); delete it and "
                            f"build the cache again") from None
