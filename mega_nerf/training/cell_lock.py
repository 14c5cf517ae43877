"""One process at a time trains a cell: an exclusive lock file in the cell's experiment folder.

``train.py`` (and so parscript) and ``train_cells`` take it, so two launches that share no
torch.distributed store (parscript next to a ``train_cells`` job, two separate ``train_cells``
jobs) never train or write the chunks of the same cell at once.  The lock is ``flock`` on
``EXP/train.lock`` (portalocker): the operating system drops it when its process dies, so a crashed
run never leaves a stale lock behind.  It is re-entrant within a process.
"""
from __future__ import annotations

import contextlib
import os
import socket
import threading
from pathlib import Path
from typing import IO, Dict, Iterator, Tuple

import portalocker

LOCK_FILE = "train.lock"

_held: Dict[str, Tuple[IO, int]] = {}
_guard = threading.Lock()


class CellBusy(Exception):
    """Another process holds the cell's lock; the message says which (host and pid)."""


def lock_path(exp_dir: Path) -> Path:
    return Path(exp_dir) / LOCK_FILE


def holder(exp_dir: Path) -> str:
    """Who holds (or last held) the lock: 'host pid', or '' when unknown."""
    try:
        return lock_path(exp_dir).read_text().strip()
    except OSError:
        return ""


def _key(path: Path) -> str:
    return str(path.parent.resolve() / path.name)


def acquire(exp_dir: Path) -> None:
    """Take the lock without waiting; raises :class:`CellBusy` when another process holds it."""
    path = lock_path(exp_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    key = _key(path)
    with _guard:
        if key in _held:
            f, count = _held[key]
            _held[key] = (f, count + 1)
            return
        f = open(path, "a+")
        try:
            portalocker.lock(f, portalocker.LOCK_EX | portalocker.LOCK_NB)
        except portalocker.exceptions.LockException:
            f.close()
            raise CellBusy(f"{exp_dir}: another process is training this cell ({holder(exp_dir) or 'unknown'})") \
                from None
        f.seek(0)
        f.truncate()
        f.write(f"{socket.gethostname()} pid {os.getpid()}\n")
        f.flush()
        _held[key] = (f, 1)


def release(exp_dir: Path) -> None:
    key = _key(lock_path(exp_dir))
    with _guard:
        if key not in _held:
            return
        f, count = _held[key]
        if count > 1:
            _held[key] = (f, count - 1)
            return
        del _held[key]
        try:
            portalocker.unlock(f)
        finally:
            f.close()


@contextlib.contextmanager
def cell_lock(exp_dir: Path) -> Iterator[None]:
    acquire(exp_dir)
    try:
        yield
    finally:
        release(exp_dir)
