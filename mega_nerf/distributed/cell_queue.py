"""A queue of cells shared by every rank of a launch through the torch.distributed store.

Each worker (a rank, or the leader of a data-parallel group of ranks) takes the next cell nobody
holds, so cells of unequal size balance across GPUs and ranks on several nodes share one queue.
The store only coordinates one launch; what is trained is known from the filesystem (a cell's
final checkpoint), which the caller checks after every claim.

Store keys, under the prefix of one launch generation (:func:`launch_store`) and a queue name::

    next                 counter: index of the next never-claimed cell (``store.add`` claims it)
    claims               counter: serial numbers that make owner tokens unique
    resolved             counter: cells done or failed
    cell/<k>/owner       token of the worker holding cell k; '' once released (free to claim)
    cell/<k>/hb          heartbeat counter, bumped by the owner's thread every ``interval`` s
    cell/<k>/progress    fraction of the cell trained (published with the heartbeat)
    cell/<k>/done        JSON record, set once when the cell is resolved (done, failed)
    summary              counter: the first worker that sees every cell resolved writes the summary

Claiming: ``store.add(next, 1)`` hands out every cell once, in order; the claimer then sets the
owner with ``compare_set('', token)``.  When ``next`` runs past the end, workers sweep: a cell with
no record is claimed by ``compare_set`` when its owner is '' (released or never set), or taken over
when its heartbeat has not moved for ``timeout`` seconds of the observer's own clock (no clock
is compared across hosts).  ``compare_set`` makes each claim and takeover exclusive.
"""
from __future__ import annotations

import datetime
import json
import os
import threading
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch.distributed as dist

#: :meth:`CellQueue.claim` found nothing to take now, but cells are still held by others.
WAIT = "wait"


class QueueLost(Exception):
    """The store cannot be reached any more (its host died); the filesystem still tells what is done."""


@dataclass
class Claim:
    cell: int
    token: str
    takeover_from: Optional[str] = None  # the stale owner's token when this is a takeover


def launch_store(prefix: str = "mega_nerf/train_cells") -> Tuple[dist.Store, int]:
    """``(store, generation)``: the launch's store (torchrun's, at MASTER_ADDR:MASTER_PORT) under a
    prefix unique to this start of the workers, or an in-process store when there is no process group.

    The queue gets its own client connection, so its threads never share one with the process
    group's internals.  torchrun's store can outlive an elastic restart, so each start of the workers
    draws a new generation number (rank 0, ``store.add``) and broadcasts it: keys of an earlier
    generation are never seen again.  Called by every rank at start-up (a collective).
    """
    if not dist.is_initialized():
        return dist.HashStore(), 1
    addr, port = os.environ.get("MASTER_ADDR"), os.environ.get("MASTER_PORT")
    if addr and port:
        base = dist.TCPStore(addr, int(port), is_master=False, timeout=datetime.timedelta(seconds=60))
    else:
        base = dist.distributed_c10d._get_default_store()
    box = [base.add(f"{prefix}/generation", 1) if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(box, src=0)
    generation = int(box[0])
    return dist.PrefixStore(f"{prefix}/{generation}/", base), generation


class CellQueue:
    """One queue of ``cells`` (cell indices) in ``store``; ``worker`` names this worker in tokens.

    All store calls of this process go through one lock, so the heartbeat and progress threads
    share the store client safely with the main thread.  ``clock`` is injectable for tests.
    """

    def __init__(self, store: dist.Store, cells: Sequence[int], worker: str, timeout: float,
                 name: str = "train", clock: Callable[[], float] = time.monotonic):
        self.store = dist.PrefixStore(f"{name}/", store)
        self.cells = list(cells)
        self.worker = worker
        self.timeout = timeout
        self.clock = clock
        self.lock = threading.Lock()
        self._seen: Dict[int, Tuple[str, int, float]] = {}  # cell -> (owner, heartbeat, first seen)
        self._skip_until: Dict[int, float] = {}

    # ------------------------------------------------------------ store access
    def call(self, fn: Callable, *args):
        """``fn(*args)`` on the store under this process's store lock; a lost store raises QueueLost."""
        with self.lock:
            try:
                return fn(*args)
            except (RuntimeError, dist.DistError) as e:  # DistStoreError, connection reset, ...
                raise QueueLost(f"the torch.distributed store is unreachable ({type(e).__name__}: {e})") from e

    def _get(self, key: str) -> Optional[str]:
        def get():
            return self.store.get(key).decode() if self.store.check([key]) else None
        return self.call(get)

    def _cas(self, key: str, expected: str, desired: str) -> bool:
        return self.call(self.store.compare_set, key, expected, desired).decode() == desired

    def _key(self, cell: int, what: str) -> str:
        return f"cell/{cell}/{what}"

    # ----------------------------------------------------------------- claims
    def _token(self) -> str:
        return f"{self.worker}#{self.call(self.store.add, 'claims', 1)}"

    def record(self, cell: int) -> Optional[dict]:
        value = self._get(self._key(cell, "done"))
        return None if value is None else json.loads(value)

    def resolved_count(self) -> int:
        return int(self.call(self.store.add, "resolved", 0))

    def claim(self):
        """The next cell for this worker (a :class:`Claim`), :data:`WAIT`, or None when every cell
        is resolved."""
        while True:
            index = int(self.call(self.store.add, "next", 1)) - 1
            if index >= len(self.cells):
                break
            cell = self.cells[index]
            token = self._token()
            if self._cas(self._key(cell, "owner"), "", token):
                return Claim(cell, token)
        return self._sweep()

    def _sweep(self):
        if self.resolved_count() >= len(self.cells):
            return None
        now = self.clock()
        open_cells = 0
        for cell in self.cells:
            if self.record(cell) is not None:
                continue
            open_cells += 1
            if self._skip_until.get(cell, 0.0) > now:
                continue
            owner = self._get(self._key(cell, "owner")) or ""
            if owner == "":
                token = self._token()
                if self._cas(self._key(cell, "owner"), "", token):
                    return Claim(cell, token)
                continue
            if self.stale(cell, owner):
                token = self._token()
                if self._cas(self._key(cell, "owner"), owner, token):
                    self._seen.pop(cell, None)
                    return Claim(cell, token, takeover_from=owner)
        return WAIT if open_cells else None

    def stale(self, cell: int, owner: str) -> bool:
        """Whether ``owner``'s heartbeat on ``cell`` has not moved for ``timeout`` seconds, as seen
        by this worker (the first look starts the watch)."""
        beat = int(self._get(self._key(cell, "hb")) or -1)
        now = self.clock()
        seen = self._seen.get(cell)
        if seen is None or seen[0] != owner or seen[1] != beat:
            self._seen[cell] = (owner, beat, now)
            return False
        return now - seen[2] > self.timeout

    def owns(self, claim: Claim) -> bool:
        return self._get(self._key(claim.cell, "owner")) == claim.token

    def release(self, claim: Claim, retry_after: float = 0.0) -> None:
        """Give the cell back unresolved (another launch holds its lock): any worker may take it;
        this one waits ``retry_after`` seconds before it looks at it again."""
        self._skip_until[claim.cell] = self.clock() + retry_after
        self._cas(self._key(claim.cell, "owner"), claim.token, "")

    def resolve(self, cell: int, record: dict) -> None:
        """Mark the cell done or failed (``record['status']``); counted once."""
        if self._cas(self._key(cell, "done"), "", json.dumps(record)):
            self.call(self.store.add, "resolved", 1)

    def first_to_finish(self) -> bool:
        """True for exactly one caller: the worker that writes the summary."""
        return int(self.call(self.store.add, "summary", 1)) == 1

    # -------------------------------------------------------------- heartbeat
    def beat(self, cell: int, progress: float) -> None:
        self.call(self.store.set, self._key(cell, "progress"), f"{progress:.6f}")
        self.call(self.store.add, self._key(cell, "hb"), 1)

    def heartbeat(self, cell: int, progress: Callable[[], float], interval: float) -> "Heartbeat":
        return Heartbeat(self, cell, progress, interval)

    # --------------------------------------------------------------- progress
    def snapshot(self) -> List[dict]:
        """Per cell: owner, progress (0..1) and the record once resolved (for the progress display)."""
        out = []
        for cell in self.cells:
            record = self.record(cell)
            owner = None if record is not None else self._get(self._key(cell, "owner"))
            progress = 1.0 if record is not None else float(self._get(self._key(cell, "progress")) or 0.0)
            out.append({"cell": cell, "owner": owner or None, "progress": progress, "record": record})
        return out


class Heartbeat:
    """Context manager: a thread that bumps the cell's heartbeat every ``interval`` seconds while
    the cell trains (chunk writing and validation included).  It dies with its process, which is
    how a dead rank is noticed."""

    def __init__(self, queue: CellQueue, cell: int, progress: Callable[[], float], interval: float):
        self.queue, self.cell, self.progress, self.interval = queue, cell, progress, interval
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name=f"heartbeat-cell-{cell}")

    def _run(self) -> None:
        while True:
            try:
                self.queue.beat(self.cell, self.progress())
            except QueueLost:
                return  # the owner keeps training; the filesystem records the result
            if self.stop.wait(self.interval):
                return

    def __enter__(self) -> "Heartbeat":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()
