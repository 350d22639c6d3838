"""Writing and locating files: one atomic save for models, checkpoints and samplers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch


def atomic_save(payload: Any, path: str | Path) -> None:
    """``torch.save`` through a temporary file beside ``path``: a crash, a full disk or a
    write error leaves the previous file intact and no ``.tmp`` behind, and the error names
    the path and its cause."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        torch.save(payload, tmp)
        tmp.replace(path)
    except (OSError, RuntimeError) as e:
        tmp.unlink(missing_ok=True)
        raise OSError(
            f"could not write {path}: {e} (free disk space or pick another folder)"
        ) from e


def run_dir_of(path: str | Path) -> Path:
    """The run folder of a run directory or of a file inside it."""
    path = Path(path)
    return path if path.is_dir() else path.parent
