"""Progress of a whole grid's training (rank 0) and the grid's summary (``EXP_NAME/cells_summary.json``)."""
from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from tqdm import tqdm

from mega_nerf.distributed.cell_queue import CellQueue, QueueLost
from mega_nerf.io_utils import atomic_write_json
from mega_nerf.training.cells import cell_exp_dir, run_record, train_summary

SUMMARY_FILE = "cells_summary.json"


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def owner_name(token: Optional[str]) -> str:
    """``rank3@host/cuda:3#17`` -> ``rank3@host/cuda:3`` (the claim's serial number dropped)."""
    return (token or "").split("#")[0]


class GridProgress:
    """Rank 0's view of the grid, refreshed every ``interval`` seconds by a thread: a line per cell
    started or finished anywhere (which rank, which device), and a bar with cells done / total,
    elapsed time and an estimate of the time left (from the training progress every owner publishes
    with its heartbeat: fractions of cells trained per second over the whole grid)."""

    def __init__(self, queue: CellQueue, interval: float, label: str = "cells"):
        self.queue, self.interval = queue, interval
        self.started = time.time()
        self.stop = threading.Event()
        self.owners: Dict[int, str] = {}
        self.first_progress: Dict[int, float] = {}
        self.reported: set = set()
        self.label = label
        self.bar = tqdm(total=len(queue.cells), desc=label, file=sys.stdout, dynamic_ncols=True, mininterval=0,
                        bar_format="{desc}")
        self.thread = threading.Thread(target=self._run, daemon=True, name="grid-progress")

    def _log(self, line: str) -> None:
        self.bar.write(f"[{_duration(time.time() - self.started)}] {line}", file=sys.stdout)

    def refresh(self) -> None:
        snapshot = self.queue.snapshot()
        remaining = gained = 0.0
        for entry in snapshot:
            cell, record, owner = entry["cell"], entry["record"], entry["owner"]
            if record is not None:
                if cell not in self.reported:
                    self.reported.add(cell)
                    where = record.get("worker", "?")
                    if record["status"] == "done" and record.get("trained"):
                        speed = record.get("rays_per_second")
                        self._log(f"cell {cell} done on {where}: {record.get('iterations')} iterations in "
                                  f"{record.get('seconds') or 0:.0f} s"
                                  + (f", {speed:,.0f} rays/s" if speed else "")
                                  + (f", val PSNR {record['val_psnr']:.2f}" if record.get("val_psnr") else "")
                                  + (f", resumed from iteration {record['resumed_from']}"
                                     if record.get("resumed_from") else "")
                                  + (f", taken over from {owner_name(record['takeover_from'])}"
                                     if record.get("takeover_from") else ""))
                    elif record["status"] == "done":
                        self._log(f"cell {cell} already {record.get('note', 'trained')}")
                    else:
                        self._log(f"cell {cell} FAILED on {where}: {record.get('error')}")
                if record.get("trained"):
                    gained += 1.0 - self.first_progress.get(cell, 0.0)
                continue
            progress = entry["progress"]
            if owner and self.owners.get(cell) != owner:
                previous = self.owners.get(cell)
                self.owners[cell] = owner
                note = f" (taken over from {owner_name(previous)})" if previous else ""
                self._log(f"cell {cell} -> {owner_name(owner)}{note}")
            if owner:
                self.first_progress.setdefault(cell, progress)
            gained += progress - self.first_progress.get(cell, progress)
            remaining += 1.0 - progress
        elapsed = time.time() - self.started
        running = [f"{e['cell']}:{100 * e['progress']:.0f}%" for e in snapshot if e["record"] is None and e["owner"]]
        if len(running) > 12:
            running = running[:12] + [f"+{len(running) - 12} more"]
        eta = "?" if gained <= 0 else _duration(remaining * elapsed / gained)
        self.bar.n = len(self.reported)
        self.bar.set_description_str(f"{self.label}: {len(self.reported)}/{len(snapshot)} done, elapsed "
                                     f"{_duration(elapsed)}, ETA {eta}, running {' '.join(running) or '-'}")

    def _run(self) -> None:
        while not self.stop.wait(self.interval):
            try:
                self.refresh()
            except QueueLost:
                return

    def __enter__(self) -> "GridProgress":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()
        try:
            self.refresh()
        except QueueLost:
            pass
        self.bar.close()


def grid_summary(args: argparse.Namespace, cells: Sequence[int], empty: Sequence[int],
                 records: Dict[int, Optional[dict]], launch: dict) -> dict:
    """The grid's summary from the filesystem (each cell's train_summary.json and cell_run.json)
    and this launch's queue records: per cell where and how it trained, and totals."""
    per_cell: Dict[str, dict] = {}
    trained_here: List[int] = []
    rays = 0.0
    for cell in cells:
        exp = cell_exp_dir(args.exp_name, cell)
        summary = train_summary(exp) or {}
        run = run_record(exp) or {}
        record = records.get(cell) or {}
        if record.get("trained"):
            trained_here.append(cell)
            rays += (summary.get("iterations", 0) - summary.get("start_iteration", 0)) * summary.get("batch_size", 0)
        per_cell[str(cell)] = {
            "status": record.get("status", "done" if summary else "not trained"),
            "trained_this_launch": bool(record.get("trained")),
            "error": record.get("error"),
            "rank": run.get("rank"), "ranks": run.get("ranks"), "host": run.get("host"), "device": run.get("device"),
            "seconds": summary.get("seconds"), "wall_seconds": run.get("wall_seconds"),
            "iterations": summary.get("iterations"), "resumed_from": summary.get("start_iteration"),
            "rays_per_second": summary.get("rays_per_second"), "val_psnr": summary.get("val_psnr_first_image"),
            "final_train_psnr": summary.get("final_train_psnr"), "training_rays": summary.get("training_rays"),
            "chunk_seconds": summary.get("chunk_seconds"), "exp_dir": str(exp),
        }
    wall = launch["finished"] - launch["started"]
    return {
        "exp_name": args.exp_name, "cluster_mask_path": args.cluster_mask_path,
        "cells_total": len(cells), "cells_trained_this_launch": trained_here,
        "cells_done": [c for c in cells if per_cell[str(c)]["status"] == "done"],
        "cells_failed": [c for c in cells if per_cell[str(c)]["status"] == "failed"],
        "cells_skipped_no_rays": list(empty),
        "world_size": launch["world_size"], "gpus_per_cell": args.gpus_per_cell, "generation": launch["generation"],
        "train_iterations": args.train_iterations if args.train_seconds is None else None,
        "train_seconds": args.train_seconds, "batch_size": args.batch_size,
        "wall_seconds": wall,
        "aggregate_rays_per_second": rays / wall if wall > 0 else None,
        "cells": per_cell,
    }


def read_grid_summary(args: argparse.Namespace) -> Optional[dict]:
    try:
        return json.loads((Path(args.exp_name) / SUMMARY_FILE).read_text())
    except (OSError, ValueError):
        return None


def write_grid_summary(args: argparse.Namespace, summary: dict) -> Path:
    path = Path(args.exp_name) / SUMMARY_FILE
    atomic_write_json(summary, path)
    return path
