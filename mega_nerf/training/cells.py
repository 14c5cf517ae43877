"""The per-cell layout of a grid's training runs, and what the filesystem says about each cell.

Cell ``k`` of ``--exp_name E --chunk_paths P --cluster_mask_path MASKS`` trains in ``E-k`` with
chunks in ``P-k`` and masks ``MASKS/k``: the layout of the parscript job list
(:mod:`mega_nerf.training.job_list`), so parscript, ``train.py`` and ``train_cells`` resume each
other's cells, and ``merge_submodules.py --ckpt_prefix E-`` merges them.  The filesystem is the
durable truth about what is trained.
"""
from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import torch

from mega_nerf.errors import require
from mega_nerf.io_utils import atomic_write_json

RUN_LOG = "cell_runs.jsonl"   # one line per start and end of a run of train_cells on this cell
RUN_RECORD = "cell_run.json"  # where and how the last train_cells run of this cell went


def load_mask_params(mask_root: Path) -> dict:
    params_path = Path(mask_root) / "params.pt"
    require(params_path.exists(), f"{params_path}: missing; --cluster_mask_path must be the mask folder made by "
                                  f"create_cluster_masks.py (not one cell's MASKS/<k>)")
    return torch.load(params_path, map_location="cpu", weights_only=False)


def unreached_cells(params: dict) -> List[int]:
    """The cells of a ``params.pt`` that no ray reaches (no pixels): no job list line, no training."""
    pixels = params.get("cell_pixel_counts")
    if pixels is None:
        return []
    return [k for k in range(len(params["centroids"])) if int(pixels[k]) == 0]


def grid_cells(mask_root: Path, only: Optional[Sequence[int]] = None) -> Tuple[List[int], List[int]]:
    """``(cells to train, cells no ray reaches)``, as the job list skips them; ``only`` restricts."""
    params = load_mask_params(mask_root)
    count = len(params["centroids"])
    empty = unreached_cells(params)
    cells = [k for k in range(count) if k not in empty]
    if only is not None:
        bad = [k for k in only if not 0 <= k < count]
        require(not bad, f"--cells {' '.join(map(str, bad))}: the grid has cells 0..{count - 1}")
        cells = [k for k in cells if k in set(only)]
        empty = [k for k in empty if k in set(only)]
    return cells, empty


def largest_first(mask_root: Path, cells: Sequence[int]) -> List[int]:
    """The cells in queue order: most pixels first (chunk writing takes longer for larger cells, and
    handing out the longest jobs first balances the ranks best), then by index."""
    pixels = load_mask_params(mask_root).get("cell_pixel_counts")
    if pixels is None:
        return list(cells)
    return sorted(cells, key=lambda k: (-int(pixels[k]), k))


def cell_exp_dir(exp_prefix: str, cell: int) -> Path:
    return Path(f"{exp_prefix}-{cell}")


def cell_args(args: argparse.Namespace, cell: int) -> argparse.Namespace:
    """train.py's arguments for one cell of a ``train_cells`` run."""
    out = copy.copy(args)
    out.exp_name = str(cell_exp_dir(args.exp_name, cell))
    out.chunk_paths = None if not args.chunk_paths else [f"{p}-{cell}" for p in args.chunk_paths]
    out.cluster_mask_path = str(Path(args.cluster_mask_path) / str(cell))
    return out


def _read_json(path: Path) -> Optional[dict]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def train_summary(exp_dir: Path) -> Optional[dict]:
    return _read_json(Path(exp_dir) / "train_summary.json")


HPARAMS = "hparams.txt"  # every option of the run's train.py, one ``name: repr(value)`` per line


def format_hparams(args: argparse.Namespace) -> str:
    return "".join(f"{k}: {v!r}\n" for k, v in sorted(vars(args).items()))


def read_hparams(exp_dir: Path) -> dict:
    """The options a run was trained with (``HPARAMS``; lines that do not parse are left out)."""
    import ast

    path = Path(exp_dir) / HPARAMS
    if not path.exists():
        return {}
    options = {}
    for line in path.read_text().splitlines():
        name, sep, value = line.partition(": ")
        if not sep:
            continue
        try:
            options[name] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            continue
    return options


def run_record(exp_dir: Path) -> Optional[dict]:
    return _read_json(Path(exp_dir) / RUN_RECORD)


def cell_finished(cargs: argparse.Namespace) -> bool:
    """Whether the cell is trained to the end: its ``train_summary.json`` (written last) has the full
    iteration count (``--train_seconds``: the full time) and its final checkpoint exists.  A cell
    killed between its final checkpoint and its summary is not finished: its next run only
    validates it and writes the summary."""
    from mega_nerf.training.trainer import checkpoints

    exp = Path(cargs.exp_name)
    summary = train_summary(exp)
    if summary is None:
        return False
    if cargs.train_seconds is not None:
        return summary.get("elapsed_seconds", 0.0) >= cargs.train_seconds
    found = checkpoints(exp)
    return (summary.get("iterations", 0) >= cargs.train_iterations and bool(found)
            and found[-1][0] >= cargs.train_iterations)


def chunks_written(cargs: argparse.Namespace) -> bool:
    """Whether every chunk folder of the cell is complete (its metadata.json is written last)."""
    paths = cargs.chunk_paths or [str(Path(cargs.exp_name) / "chunks")]
    return all((Path(p) / "metadata.json").exists() for p in paths)


def log_run_event(exp_dir: Path, event: dict) -> None:
    """Append one line to ``EXP-k/cell_runs.jsonl`` (only the holder of the cell's lock writes)."""
    Path(exp_dir).mkdir(parents=True, exist_ok=True)
    with open(Path(exp_dir) / RUN_LOG, "a") as f:
        f.write(json.dumps(event) + "\n")


def run_events(exp_dir: Path) -> List[dict]:
    path = Path(exp_dir) / RUN_LOG
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_run_record(exp_dir: Path, record: dict) -> None:
    atomic_write_json(record, Path(exp_dir) / RUN_RECORD)
