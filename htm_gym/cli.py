"""How the scripts end: a bad input or a failed read/write is one line on stderr and a
non-zero exit, not a traceback; ``HTM_GYM_DEBUG=1`` shows the traceback."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import TypeVar

A = TypeVar("A")
DEBUG_ENV = "HTM_GYM_DEBUG"
# What the library raises for bad input and failed file access (its own error types).
USER_ERRORS = (ValueError, TypeError, OSError, RuntimeError)


def flag(name: str) -> str:
    """The command-line flag of an ``Args`` field: ``num_envs`` -> ``--num-envs``."""
    return "--" + name.replace("_", "-")


def below(args: object, names: tuple[str, ...], minimum: int) -> list[str]:
    """``--flag value`` for each of ``names`` whose value in ``args`` is below ``minimum``."""
    return [f"{flag(k)} {getattr(args, k)}" for k in names if getattr(args, k) < minimum]


def main_or_exit(main: Callable[[A], object], args: A) -> None:
    """Run ``main(args)``; print ``error: <what> (<how to fix>)`` and exit 2 on a user error."""
    try:
        main(args)
    except SystemExit as e:
        if isinstance(e.code, str) and not os.environ.get(DEBUG_ENV):
            _fail(e.code)
        raise
    except USER_ERRORS as e:
        if os.environ.get(DEBUG_ENV):
            raise
        _fail(str(e) or type(e).__name__)


def _fail(message: str) -> None:
    print(f"error: {message}  (traceback: {DEBUG_ENV}=1)", file=sys.stderr)
    raise SystemExit(2)
