"""A cell's training rays, shuffled once and written compactly to disk, then streamed.

On-disk row (little-endian, no padding)::

    r, g, b (3 x uint8) | global pixel id (``id_bytes`` bytes, unsigned)

The global pixel id is ``image_offset[image] + row * W + column`` over every image at the
training scale; the ray is rebuilt on the fly from that image's pose and intrinsics.  With
``id_bytes = ceil(log2(total pixels) / 8)`` a row takes 6 bytes for up to 16.7 M pixels and 8
bytes up to 1.1 T pixels (Mega-NeRF: 9 bytes, plus one directory of parquet files per cell).

Shuffling is an external two-pass shuffle so RAM is bounded by ``disk_flush_size`` rows, never
by the data: pass 1 scatters every kept pixel into a uniformly random bucket file, pass 2 loads
one bucket at a time, permutes it and writes it as a chunk.  A chunk folder is complete when its
``metadata.json`` exists (written last, atomically); anything else is an interrupted write that
is cleaned and redone.
"""
from __future__ import annotations

import json
import math
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from queue import Queue
from typing import Callable, Iterator, List, Optional, Sequence

import numpy as np
import torch
from tqdm import tqdm

from mega_nerf.data.format import ImageMetadata
from mega_nerf.errors import UserError, require
from mega_nerf.io_utils import atomic_write_json

FORMAT = "mega_nerf.chunks/1"
PARTIAL = ".partial"


def id_bytes_for(total_pixels: int) -> int:
    """Bytes needed to store any global pixel id below ``total_pixels``."""
    return max(1, math.ceil(max(1, (total_pixels - 1).bit_length()) / 8))


def encode_rows(rgb: np.ndarray, global_ids: np.ndarray, id_bytes: int) -> np.ndarray:
    """Pack rows.

    Args:
        rgb: (N, 3) uint8; global_ids: (N,) uint64.
    Returns:
        (N, 3 + id_bytes) uint8.
    """
    ids = global_ids.astype("<u8").view(np.uint8).reshape(-1, 8)[:, :id_bytes]
    return np.concatenate([rgb.astype(np.uint8), ids], axis=1)


def decode_rows(rows: np.ndarray, id_bytes: int) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`encode_rows`: ``(rgb (N, 3) uint8, global ids (N,) int64)``."""
    padded = np.zeros((rows.shape[0], 8), dtype=np.uint8)
    padded[:, :id_bytes] = rows[:, 3:3 + id_bytes]
    return rows[:, :3], padded.view("<u8").reshape(-1).astype(np.int64)


@dataclass
class ChunkSet:
    """A complete set of chunk files for one cell."""

    files: List[Path]
    counts: List[int]
    metadata: dict

    @property
    def num_rays(self) -> int:
        return int(sum(self.counts))

    @property
    def row_bytes(self) -> int:
        return 3 + int(self.metadata["id_bytes"])

    @property
    def bytes_on_disk(self) -> int:
        return int(sum(f.stat().st_size for f in self.files))


def _read_metadata(path: Path) -> Optional[dict]:
    meta = path / "metadata.json"
    if not meta.exists():
        return None
    try:
        return json.loads(meta.read_text())
    except Exception:
        raise UserError(f"{meta}: corrupt chunk metadata; delete {path} to rewrite the chunks") from None


def open_chunks(chunk_paths: Sequence[Path], expected: dict) -> Optional[ChunkSet]:
    """The complete chunk set in ``chunk_paths`` if it was written with ``expected`` settings.

    Returns None when no complete set exists yet (so it must be written).  Raises when a
    complete set exists but was made for other data (wrong cell, scale, protocol).
    """
    metas = [_read_metadata(Path(p)) for p in chunk_paths]
    if any(m is None for m in metas):
        return None
    files, counts = [], []
    for path, meta in zip(chunk_paths, metas):
        for key, value in expected.items():
            if meta.get(key) != value:
                raise UserError(f"{path}: chunks were written for {key}={meta.get(key)!r}, this run needs "
                                f"{value!r}; use another --chunk_paths or delete {path}")
        for name, count in zip(meta["files"], meta["counts"]):
            f = Path(path) / name
            require(f.exists() and f.stat().st_size == count * (3 + meta["id_bytes"]),
                    f"{f}: chunk file is missing or truncated; delete {path} to rewrite the chunks")
            files.append(f)
            counts.append(count)
    return ChunkSet(files, counts, metas[0])


def _is_ours(name: str) -> bool:
    return name in (PARTIAL, "metadata.json") or (name.startswith("chunk_") and name.endswith(".bin"))


def _prepare_dirs(chunk_paths: Sequence[Path]) -> None:
    """Make every folder ready for a fresh write.

    Only called when the set is incomplete, so our own files there (a partial write, or folders
    finalised before a crash hit the others) are stale and removed; anything else is refused.
    """
    for path in chunk_paths:
        path = Path(path)
        if path.exists():
            extra = [p.name for p in path.iterdir() if not _is_ours(p.name)]
            require(not extra, f"{path}: folder holds files that are not an interrupted chunk write "
                               f"({extra[:3]}); choose an empty --chunk_paths")
            shutil.rmtree(path / PARTIAL, ignore_errors=True)
            (path / "metadata.json").unlink(missing_ok=True)  # first: the folder is incomplete from here on
            for stale in path.glob("chunk_*.bin"):
                stale.unlink()
        (path / PARTIAL).mkdir(parents=True, exist_ok=True)


def write_chunks(chunk_paths: Sequence[Path], items: Sequence[ImageMetadata],
                 pixel_selector: Callable[[ImageMetadata], Optional[torch.Tensor]], num_chunks: int,
                 disk_flush_size: int, seed: int, extra_metadata: dict) -> ChunkSet:
    """Write every selected pixel of ``items`` as shuffled chunks.

    Args:
        items: images at the training scale, in appearance-index order.
        pixel_selector: image -> flat bool (H*W,) of pixels to keep, or None for none.
        extra_metadata: settings recorded in ``metadata.json`` and checked by :func:`open_chunks`.
    """
    chunk_paths = [Path(p) for p in chunk_paths]
    _prepare_dirs(chunk_paths)
    offsets = np.cumsum([0] + [m.W * m.H for m in items])
    id_bytes = id_bytes_for(int(offsets[-1]))
    row_bytes = 3 + id_bytes
    # Chunk c lives in chunk_paths[c % len(paths)]; files are spread evenly over the folders.
    homes = [chunk_paths[c % len(chunk_paths)] for c in range(num_chunks)]
    buckets = [home / PARTIAL / f"bucket_{c:05d}.bin" for c, home in enumerate(homes)]
    rng = np.random.default_rng(seed)

    pending: List[np.ndarray] = []
    pending_rows = 0

    def flush() -> None:
        nonlocal pending, pending_rows
        if not pending:
            return
        rows = np.concatenate(pending)
        target = rng.integers(0, num_chunks, len(rows))
        order = np.argsort(target, kind="stable")
        bounds = np.searchsorted(target[order], np.arange(num_chunks + 1))
        for c in range(num_chunks):
            part = rows[order[bounds[c]:bounds[c + 1]]]
            if len(part):
                with open(buckets[c], "ab") as f:
                    f.write(part.tobytes())
        pending, pending_rows = [], 0

    for item, offset in zip(tqdm(items, desc="chunks: selecting rays", leave=False), offsets[:-1]):
        keep = pixel_selector(item)
        if keep is None or not bool(keep.any()):
            continue
        pixels = torch.nonzero(keep).reshape(-1).numpy()
        rgb = item.load_image().reshape(-1, 3).numpy()[pixels]
        pending.append(encode_rows(rgb, pixels.astype(np.uint64) + np.uint64(offset), id_bytes))
        pending_rows += len(pixels)
        if pending_rows >= disk_flush_size:
            flush()
    flush()

    per_home: dict = {p: ([], []) for p in chunk_paths}
    for c, (home, bucket) in enumerate(zip(tqdm(homes, desc="chunks: shuffling", leave=False), buckets)):
        if not bucket.exists():
            continue
        rows = np.fromfile(bucket, dtype=np.uint8).reshape(-1, row_bytes)
        rows = rows[rng.permutation(len(rows))]
        name = f"chunk_{c:05d}.bin"
        rows.tofile(home / PARTIAL / name)
        bucket.unlink()
        per_home[home][0].append(name)
        per_home[home][1].append(len(rows))
    total = sum(sum(c) for _, c in per_home.values())
    if total == 0:
        for p in chunk_paths:
            shutil.rmtree(p)
        raise UserError("no training ray selected: the cell mask keeps no pixel of any image; skip this cell")
    for home, (names, counts) in per_home.items():
        for name in names:
            (home / PARTIAL / name).replace(home / name)
        (home / PARTIAL).rmdir()
        atomic_write_json({"format": FORMAT, "id_bytes": id_bytes, "files": names, "counts": counts,
                           "num_rays_total": total, **extra_metadata}, home / "metadata.json")
    chunk_set = open_chunks(chunk_paths, extra_metadata)
    assert chunk_set is not None
    return chunk_set


class ChunkStream:
    """Endless stream of shuffled ray batches from a chunk set, one chunk in RAM plus one prefetched.

    Every epoch visits the chunks in a new random order and permutes each chunk's rows; both
    orders derive from ``(seed, epoch)`` so a stream resumes exactly from :attr:`state`.

    Yields:
        rgb (B, 3) uint8, global pixel ids (B,) int64.
    """

    def __init__(self, chunks: ChunkSet, batch_size: int, seed: int, state: Optional[dict] = None):
        self.chunks = chunks
        self.batch_size = batch_size
        self.seed = seed
        self.state = dict(state) if state else {"epoch": 0, "position": 0, "row": 0}

    def _order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.chunks.files))

    def _load(self, epoch: int, position: int) -> tuple[np.ndarray, np.ndarray]:
        index = self._order(epoch)[position]
        rows = np.fromfile(self.chunks.files[index], dtype=np.uint8).reshape(-1, self.chunks.row_bytes)
        rows = rows[np.random.default_rng([self.seed, epoch, int(index)]).permutation(len(rows))]
        return decode_rows(rows, int(self.chunks.metadata["id_bytes"]))

    def _loads(self) -> Iterator[tuple[int, int, tuple[np.ndarray, np.ndarray]]]:
        """Chunks in stream order, each loaded by a background thread ahead of use."""
        queue: Queue = Queue(maxsize=1)
        epoch, position = self.state["epoch"], self.state["position"]
        stop = threading.Event()

        def producer(epoch: int, position: int) -> None:
            while not stop.is_set():
                try:
                    loaded = self._load(epoch, position)
                except BaseException as e:  # hand the error to the consumer instead of hanging it
                    queue.put(e)
                    return
                queue.put((epoch, position, loaded))
                position += 1
                if position == len(self.chunks.files):
                    epoch, position = epoch + 1, 0

        thread = threading.Thread(target=producer, args=(epoch, position), daemon=True)
        thread.start()
        try:
            while True:
                item = queue.get()
                if isinstance(item, BaseException):
                    raise UserError(f"cannot read ray chunk ({type(item).__name__}: {item}); delete the chunk "
                                    f"folders to rewrite them") from item
                yield item
        finally:
            stop.set()

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        carry_rgb, carry_ids = np.zeros((0, 3), np.uint8), np.zeros(0, np.int64)
        first = True
        for epoch, position, (rgb, ids) in self._loads():
            row = self.state["row"] if first else 0
            first = False
            while row < len(ids):
                take = self.batch_size - len(carry_ids)
                carry_rgb = np.concatenate([carry_rgb, rgb[row:row + take]])
                carry_ids = np.concatenate([carry_ids, ids[row:row + take]])
                row += take
                if len(carry_ids) == self.batch_size:
                    if row >= len(ids):
                        next_pos = position + 1
                        self.state = ({"epoch": epoch, "position": next_pos, "row": 0}
                                      if next_pos < len(self.chunks.files)
                                      else {"epoch": epoch + 1, "position": 0, "row": 0})
                    else:
                        self.state = {"epoch": epoch, "position": position, "row": row}
                    yield torch.from_numpy(carry_rgb), torch.from_numpy(carry_ids)
                    carry_rgb, carry_ids = np.zeros((0, 3), np.uint8), np.zeros(0, np.int64)
