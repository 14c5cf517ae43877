"""Atomic file writes: a crash never leaves a half-written file that a later stage would trust."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from mega_nerf.errors import UserError


def temporary_sibling(path: Path) -> str:
    """A new empty file next to ``path`` with the permissions a plain ``open`` would give.

    ``mkstemp`` makes files 0600; renamed into place they would be unreadable by the group.
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    return tmp


def atomic_write_with(path: Path, write: Callable[[str], None]) -> None:
    """Call ``write(temporary_path)`` and move the result over ``path`` only if it succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename over ``path``."""
    atomic_write_with(path, lambda tmp: torch.save(obj, tmp))


def atomic_write_text(text: str, path: Path) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            f.write(text)

    atomic_write_with(path, write)


def atomic_write_json(obj: Any, path: Path) -> None:
    atomic_write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n", path)


def atomic_write_bytes(data: bytes, path: Path) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(data)

    atomic_write_with(path, write)


def check_output_free(output: Path) -> None:
    """Refuse an output path that exists and is a file or a non-empty folder."""
    output = Path(output)
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise UserError(f"{output}: already exists and is not empty; choose a new --output "
                        f"folder (existing data is never overwritten)")


@contextlib.contextmanager
def staged_folder(output: Path) -> Iterator[Path]:
    """Build a folder in an empty sibling ``OUTPUT.tmp-xxxx``, renamed to ``output`` at the end.

    Refuses a non-empty ``output`` before and after; on any error the staging folder is removed,
    so a half-written folder never appears under ``output``'s name.
    """
    output = Path(output)
    check_output_free(output)
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f"{output.name}.tmp-", dir=output.parent))
    except OSError as e:
        raise UserError(f"{output.parent}: cannot create the output folder here ({e.strerror})") from None
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(staging, 0o777 & ~umask)  # mkdtemp makes it 0700
    try:
        yield staging
        check_output_free(output)  # someone may have written there meanwhile
        try:
            os.replace(staging, output)  # an empty folder at `output` is replaced, never a full one
        except OSError as e:
            raise UserError(f"{output}: cannot move the finished folder here ({e.strerror}); "
                            f"choose a new --output folder") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
