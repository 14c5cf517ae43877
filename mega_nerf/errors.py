"""User-facing errors: one clear line, a non-zero exit, no traceback."""
from __future__ import annotations

import functools
import sys
from typing import Callable, TypeVar

T = TypeVar("T")

#: Exit status for problems with the user's input (files, flags, data).
EXIT_USER_ERROR = 2


class UserError(Exception):
    """A problem the user can fix: bad input file, impossible flag, occupied output folder.

    The message must say what is wrong and how to fix it, in one line.
    """


def require(condition: bool, message: str) -> None:
    """Raise :class:`UserError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise UserError(message)


def cli_entry(main: Callable[..., T]) -> Callable[..., T]:
    """Wrap a command's ``main`` so a :class:`UserError` prints one line and exits 2."""

    @functools.wraps(main)
    def wrapped(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except UserError as e:
            print(f"error: {e}", file=sys.stderr, flush=True)
            sys.exit(EXIT_USER_ERROR)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr, flush=True)
            sys.exit(130)

    return wrapped
