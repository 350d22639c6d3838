"""Run directories and resumable checkpoints for the training scripts."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from htm_gym.nets import load_checkpoint


def new_run_dir(runs_dir: str | Path, run_name: str | None, prefix: str) -> Path:
    """A fresh ``runs/<run_name>``; never an existing one (nothing saved is overwritten)."""
    name = run_name or f"{prefix}__{time.strftime('%Y%m%d-%H%M%S')}"
    path = Path(runs_dir) / name
    if path.exists():
        raise FileExistsError(
            f"run directory {path} already exists: pick another --run-name or --resume it"
        )
    path.mkdir(parents=True)
    return path


def rng_state() -> dict[str, Any]:
    """Global torch RNG state. Our own randomness comes from explicit generators (per-row
    env streams reseeded every update, the learner's torch.Generator in its state_dict);
    this covers plug-in learners that draw from torch's global generator."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(path: Path, payload: dict[str, Any]) -> None:
    """Atomic write: a crash mid-save leaves the previous checkpoint intact."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """A training checkpoint (a run directory or its ``checkpoint.pt``), validated."""
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint.pt"
    ckpt = load_checkpoint(path, map_location)  # clear errors for missing/foreign files
    for key in ("learner", "args", "rng"):
        if key not in ckpt:
            raise ValueError(f"{path}: a model checkpoint without '{key}': cannot resume training")
    return ckpt
