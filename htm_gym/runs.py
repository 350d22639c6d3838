"""Run folders and checkpoint files: fresh names, atomic saves, validated loads, and the
env a run was trained on."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

import htm_gym
from htm_gym.datasets import TokenGenerator
from htm_gym.nets import HTMConfig, HTMModel, load_checkpoint


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


def fresh_path(path: str | Path, siblings: tuple[str, ...] = ()) -> Path:
    """``path`` if free, else ``stem.1.ext``, ``stem.2.ext``, ...: outputs never overwrite.
    ``siblings``: other suffixes written beside it (``.png``), which must be free too."""
    path = Path(path)
    stem, ext = path.stem, path.suffix
    k = 0
    # Names are built from the stem, not with with_suffix: "report.1".with_suffix("") is
    # "report" again, and a directory like "report" would be probed forever.
    while True:
        name = stem if k == 0 else f"{stem}.{k}"
        if not any(path.with_name(name + x).exists() for x in (ext, *siblings)):
            return path.with_name(name + ext)
        k += 1


def load_trained(path: str | Path, device: str | torch.device = "cpu") -> tuple[HTMModel, dict]:
    """The model of a training checkpoint (run directory or file), in eval mode."""
    ckpt = load(path, map_location=device)
    model = HTMModel(HTMConfig(**ckpt["config"])).to(device)
    model.load_state_dict(ckpt["model"])
    return model.eval(), ckpt


def checkpoint_env(ckpt: dict) -> tuple[str, TokenGenerator]:
    """The env id a checkpoint was trained on and that env's token generator."""
    env_id = ckpt.get("env_id", ckpt["args"]["env_id"])
    return env_id, run_generator(env_id, ckpt["args"])


TOKENS_ENV_ID = "HTM-Tokens-v0"


def run_generator(env_id: str, args: dict) -> TokenGenerator:
    """The token generator of a training run's arguments: the env id's, or the run's token
    file (``tokens``), split into train and held-out sets unless a ``test_tokens`` file
    holds the test sets."""
    if not args.get("tokens"):
        return htm_gym.env_generator(env_id)
    split = "all" if args.get("test_tokens") else "train"
    return htm_gym.env_generator(TOKENS_ENV_ID, {"path": args["tokens"], "split": split})
