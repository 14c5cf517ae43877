"""Train every cell of a grid on every rank of a torch.distributed launch (``mega_nerf.train_cells``).

Each worker (a rank, or with ``--gpus_per_cell K`` the leader of a group of K ranks) loops: claim
the next cell from the shared :class:`~mega_nerf.distributed.cell_queue.CellQueue`, check the
filesystem (a finished cell is never trained again, whichever launch or tool trained it), take
the cell's lock file (no other process, sharing our store or not, trains it meanwhile), train it
with the library's :class:`~mega_nerf.training.trainer.Trainer` (which resumes from the cell's
newest checkpoint) while a thread keeps its heartbeat, and record it.

Failures:

- a rank that dies stops its heartbeat and drops its lock; once the heartbeat is ``--cell_heartbeat_timeout``
  seconds old another worker takes the cell over and resumes it from its last checkpoint;
- under ``torch.distributed.run --max_restarts N`` a crashed rank makes the agent restart the
  workers: the new generation of the store starts empty, the filesystem tells what is done, and
  unfinished cells resume from their checkpoints;
- a cell that fails with a user error (no ray, divergence) is recorded as failed; the others go on.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Optional

import torch

from mega_nerf import distributed
from mega_nerf.distributed.cell_queue import WAIT, Claim, CellQueue, QueueLost, launch_store
from mega_nerf.distributed.data_parallel import make_groups
from mega_nerf.errors import UserError, require
from mega_nerf.training import cell_lock
from mega_nerf.training.cells import (cell_args, cell_finished, chunks_written, grid_cells, largest_first,
                                      log_run_event, write_run_record)
from mega_nerf.training.grid_report import GridProgress, grid_summary, read_grid_summary, write_grid_summary

#: Test hook: ``RANK:CODE`` makes that rank leave with os._exit(CODE) right after the first checkpoint
#: of its first cell (only in the first start of the workers, not after an elastic restart).
EXIT_AFTER_CHECKPOINT = "MEGA_NERF_TEST_EXIT_AFTER_CHECKPOINT"
POLL_SECONDS = 0.2
BUSY_RETRY_SECONDS = 10.0


def _say(line: str) -> None:
    print(line, flush=True)


def check_args(args: argparse.Namespace) -> None:
    require(args.ckpt_path is None, "--ckpt_path is not for train_cells: each cell resumes from its own newest "
                                    "checkpoint in EXP_NAME-<cell>/models")
    require(args.gpus_per_cell >= 1, f"--gpus_per_cell must be >= 1, got {args.gpus_per_cell}")
    require(args.gpus_per_cell == 1 or args.train_seconds is None,
            "--train_seconds is not supported with --gpus_per_cell > 1; train for --train_iterations")
    require(args.cell_heartbeat_timeout > 0, "--cell_heartbeat_timeout must be > 0")
    require(args.batch_size % args.gpus_per_cell == 0,
            f"--batch_size {args.batch_size} must be a multiple of --gpus_per_cell {args.gpus_per_cell}")


def _device(requested: Optional[str], info: distributed.ProcessInfo) -> torch.device:
    """``cuda:LOCAL_RANK`` when CUDA is present (or asked for without an index), else the CPU."""
    device = distributed.default_device(requested, info)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", info.local_rank % torch.cuda.device_count())
    return device


class GridRun:
    """One rank's part of a ``train_cells`` launch."""

    def __init__(self, args: argparse.Namespace):
        check_args(args)
        self.args = args
        self.info = distributed.init_from_env(args.device)
        self.device = _device(args.device, self.info)
        self.host = socket.gethostname()
        self.cells, self.empty = grid_cells(Path(args.cluster_mask_path), args.cells)
        require(self.cells, f"{args.cluster_mask_path}: no cell to train (every selected cell is reached by no ray)")
        if self.info.distributed:
            local = int(os.environ.get("LOCAL_WORLD_SIZE", self.info.world_size))
            require(local % args.gpus_per_cell == 0,
                    f"--gpus_per_cell {args.gpus_per_cell} must divide the processes per node ({local}): a "
                    f"cell's group stays on one node")
            self.group = make_groups(args.gpus_per_cell, args.data_parallel_timeout)
        else:
            require(args.gpus_per_cell == 1, "--gpus_per_cell > 1 needs several processes: launch with "
                                             "python -m torch.distributed.run --nproc_per_node N")
            self.group = None
        self.store, self.generation = launch_store()
        self.leader = self.group is None or self.group.is_leader
        self.group_id = self.info.rank // args.gpus_per_cell
        ranks = f"ranks {self.group.ranks[0]}-{self.group.ranks[-1]}" if self.group else f"rank{self.info.rank}"
        self.worker = f"{ranks}@{self.host}/{self.device}"
        kind = "chunks" if args.chunks_only else "train"
        order = largest_first(Path(args.cluster_mask_path), self.cells)
        self.queue = CellQueue(self.store, order, self.worker, args.cell_heartbeat_timeout, name=kind)
        self.started = time.time()
        if self.info.rank == 0:
            self.store.set("started", repr(self.started))
        self.exit_hook = self._exit_hook()

    # ------------------------------------------------------------- helpers
    def _exit_hook(self) -> Optional[int]:
        spec = os.environ.get(EXIT_AFTER_CHECKPOINT)
        if not spec or os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") != "0":
            return None
        rank, code = spec.split(":")
        return int(code) if int(rank) == self.info.rank else None

    def _finished(self, cargs: argparse.Namespace) -> bool:
        return chunks_written(cargs) if self.args.chunks_only else cell_finished(cargs)

    def _publish(self, seq: int, task: dict) -> None:
        if self.group is not None:
            self.queue.call(self.store.set, f"group/{self.group_id}/task/{seq}", json.dumps(task))

    # ---------------------------------------------------------------- main
    def run(self) -> int:
        try:
            if self.leader:
                return self._lead()
            return self._follow()
        except QueueLost as e:
            left = [k for k in self.cells if not self._finished(cell_args(self.args, k))]
            if not left:
                return 0
            _say(f"rank {self.info.rank}: {e}; stopping. Cells {left} are not finished: launch again (or use "
                 f"--max_restarts) and they resume from their checkpoints")
            return 1
        finally:
            distributed.shutdown()

    def _lead(self) -> int:
        args, seq = self.args, 0
        if all(self._finished(cell_args(args, k)) for k in self.cells):
            self._publish(0, {"stop": True})
            if self.info.rank == 0:
                what = "have their chunks" if args.chunks_only else "are trained"
                _say(f"nothing to do: all {len(self.cells)} cells of {args.exp_name} {what}")
                if not args.chunks_only:
                    self._write_summary({}, refresh=True)
            return 0
        progress = GridProgress(self.queue, args.progress_interval,
                                "chunks" if args.chunks_only else "cells") if self.info.rank == 0 else None
        if progress is not None:
            progress.__enter__()
        try:
            while True:
                claim = self.queue.claim()
                if claim is None:
                    break
                if claim == WAIT:  # the cells left are held by others: watch their heartbeats
                    time.sleep(min(2.0, max(POLL_SECONDS / 4, args.cell_heartbeat_timeout / 10)))
                    continue
                if self._run_claim(claim, seq):
                    seq += 1
        finally:
            self._publish(seq, {"stop": True})
            if progress is not None:
                progress.__exit__(None, None, None)
        records = {k: self.queue.record(k) for k in self.cells}
        failed = [k for k, r in records.items() if r and r["status"] == "failed"]
        if self.queue.first_to_finish() and not args.chunks_only:
            path = self._write_summary(records)
            _say(f"all {len(self.cells)} cells resolved in {time.time() - self._launch_started():.0f} s"
                 + (f"; FAILED: {failed}" if failed else "") + f"; summary: {path}")
        return 1 if failed else 0

    def _launch_started(self) -> float:
        value = self.queue.call(lambda: self.store.get("started") if self.store.check(["started"]) else None)
        return float(value.decode()) if value else self.started

    def _write_summary(self, records: dict, refresh: bool = False) -> Path:
        """``EXP_NAME/cells_summary.json``; ``refresh`` (nothing was trained): an existing summary keeps
        the figures of the launch that trained, with each cell's entry read again from its folder."""
        launch = {"started": self._launch_started(), "finished": time.time(), "world_size": self.info.world_size,
                  "generation": self.generation}
        summary = grid_summary(self.args, self.cells, self.empty, records, launch)
        previous = read_grid_summary(self.args)
        if refresh and previous is not None:
            for cell, entry in summary["cells"].items():
                entry["trained_this_launch"] = previous.get("cells", {}).get(cell, {}).get("trained_this_launch", False)
            summary = {**previous, "cells": summary["cells"], "cells_done": summary["cells_done"],
                       "cells_failed": summary["cells_failed"]}
        return write_grid_summary(self.args, summary)

    def _run_claim(self, claim: Claim, seq: int) -> bool:
        """Train (or write the chunks of) a claimed cell; True when the group was given the task."""
        args, cell = self.args, claim.cell
        cargs = cell_args(args, cell)
        cargs.device = str(self.device)  # this rank's GPU, never the first GPU of the machine
        exp = Path(cargs.exp_name)
        if self._finished(cargs):
            self.queue.resolve(cell, {"status": "done", "trained": False, "worker": self.worker,
                                      "note": "has its chunks" if args.chunks_only else "trained"})
            return False
        try:
            cell_lock.acquire(exp)
        except cell_lock.CellBusy as e:
            _say(f"{self.worker}: {e}; looking again in {BUSY_RETRY_SECONDS:.0f} s")
            self.queue.release(claim, retry_after=BUSY_RETRY_SECONDS)
            return False
        try:
            if self._finished(cargs):  # finished by another launch between the check and the lock
                self.queue.resolve(cell, {"status": "done", "trained": False, "worker": self.worker,
                                          "note": "trained"})
                return False
            self._publish(seq, {"cell": cell})
            self._train_cell(claim, cargs)
            return True
        finally:
            cell_lock.release(exp)

    def _train_cell(self, claim: Claim, cargs: argparse.Namespace) -> None:
        from mega_nerf.training.trainer import Trainer, checkpoints

        cell, exp = claim.cell, Path(cargs.exp_name)
        resumed = [i for i, _ in checkpoints(exp)]
        event = {"event": "start", "kind": "chunks" if self.args.chunks_only else "train", "cell": cell,
                 "rank": self.info.rank, "ranks": self.group.ranks if self.group else [self.info.rank],
                 "host": self.host, "device": str(self.device), "generation": self.generation,
                 "from_iteration": resumed[-1] if resumed else 0, "takeover_from": claim.takeover_from,
                 "time": time.time()}
        log_run_event(exp, event)
        holder: dict = {}

        def progress() -> float:
            trainer = holder.get("trainer")
            if trainer is None or self.args.chunks_only:
                return 0.0
            return min(1.0, trainer.iteration / max(self.args.train_iterations, 1))

        started = time.time()
        record = {"worker": self.worker, "cell": cell}
        with self.queue.heartbeat(cell, progress, max(self.args.cell_heartbeat_timeout / 4, 0.05)):
            try:
                trainer = Trainer(cargs, self.group)
                holder["trainer"] = trainer
                trainer.show_progress = False
                if self.args.chunks_only:
                    trainer.prepare_group_chunks()
                    summary = {}
                else:
                    self._install_exit_hook(trainer)
                    summary = trainer.train()
                record.update({"status": "done", "trained": True})
            except UserError as e:
                _say(f"{self.worker}: cell {cell} failed: {e}")
                record.update({"status": "failed", "trained": False, "error": str(e)})
                summary = {}
        wall = time.time() - started
        record.update({"takeover_from": claim.takeover_from, "resumed_from": summary.get("start_iteration"),
                       "iterations": summary.get("iterations"), "seconds": summary.get("seconds", wall),
                       "rays_per_second": summary.get("rays_per_second"),
                       "val_psnr": summary.get("val_psnr_first_image"), "wall_seconds": wall})
        run = {**{k: event[k] for k in ("rank", "ranks", "host", "device", "generation", "from_iteration",
                                         "takeover_from", "kind")},
               "status": record["status"], "error": record.get("error"), "wall_seconds": wall}
        if not self.args.chunks_only and record["status"] == "done":
            write_run_record(exp, run)
        log_run_event(exp, {"event": "end", "cell": cell, "rank": self.info.rank, "status": record["status"],
                            "iterations": summary.get("iterations"), "time": time.time()})
        self.queue.resolve(cell, record)

    def _install_exit_hook(self, trainer) -> None:
        if self.exit_hook is None:
            return
        code, original = self.exit_hook, trainer.save_checkpoint

        def save_then_exit():
            path = original()
            _say(f"rank {self.info.rank}: test hook: exiting with {code} after {path}")
            sys.stdout.flush()
            os._exit(code)

        trainer.save_checkpoint = save_then_exit

    # -------------------------------------------------------- group members
    def _follow(self) -> int:
        """A data-parallel group member: train whatever cell the leader publishes until it says stop."""
        from mega_nerf.training.trainer import Trainer

        seq = 0
        while True:
            key = f"group/{self.group_id}/task/{seq}"
            while not self.queue.call(self.store.check, [key]):
                time.sleep(POLL_SECONDS)
            task = json.loads(self.queue.call(self.store.get, key).decode())
            seq += 1
            if task.get("stop"):
                return 0
            trainer = Trainer(cell_args(self.args, task["cell"]), self.group)
            try:
                if self.args.chunks_only:
                    trainer.prepare_group_chunks()
                else:
                    trainer.train()
            except UserError:
                pass  # the leader records the failure


def train_cells(args: argparse.Namespace) -> int:
    return GridRun(args).run()
