"""Run folders and checkpoint files: fresh names, atomic saves, validated loads, and the
env a run was trained on."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import torch

import htm_gym
from htm_gym.datasets import TokenGenerator
from htm_gym.files import atomic_save
from htm_gym.nets import HTMModel, load_checkpoint, model_from_checkpoint


def new_run_dir(
    runs_dir: str | Path, run_name: str | None, prefix: str, resumable: bool = False
) -> Path:
    """A fresh ``runs/<run_name>``; never an existing one (nothing saved is overwritten)."""
    if run_name is not None and not is_plain_name(run_name):
        raise ValueError(f"run name {run_name!r}: a plain folder name, no path parts")
    name = run_name or f"{prefix}__{time.strftime('%Y%m%d-%H%M%S')}"
    path = Path(runs_dir) / name
    if path.exists():
        raise FileExistsError(
            f"run directory {path} already exists: pick another --run-name"
            + (" or --resume it" if resumable else "")
        )
    path.mkdir(parents=True)
    return path


def is_plain_name(name: str) -> bool:
    """A folder name that stays inside the runs folder (no separators, not . or ..)."""
    return bool(name) and name not in (".", "..") and Path(name).name == name and "\\" not in name


def check_writable_folder(folder: Path, flag: str) -> None:
    """Refuse, before any work, an output folder that is missing or not writable."""
    if not folder.is_dir():
        raise SystemExit(f"{flag}: folder {folder} does not exist (create it or pick another)")
    if not os.access(folder, os.W_OK):
        raise SystemExit(f"{flag}: folder {folder} is not writable (pick another)")


def check_args_file(run_dir: Path, stored: dict[str, Any], ignore: tuple[str, ...] = ()) -> None:
    """Refuse a run folder whose ``args.json`` disagrees with its checkpoint's arguments
    (a checkpoint copied into another run's folder); ``ignore``: arguments a resume may
    change."""
    path = run_dir / "args.json"
    if not path.is_file():
        return
    try:
        written = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise SystemExit(f"{path}: unreadable ({e}); restore it or delete it to resume") from e
    stored = json.loads(json.dumps(stored))  # tuples as JSON lists, like args.json
    same = (set(written) & set(stored)) - set(ignore)
    # None in either: a dataset default that older runs resolved only later
    differ = sorted(
        k for k in same if None not in (written[k], stored[k]) and written[k] != stored[k]
    )
    if differ:
        raise SystemExit(
            f"{run_dir}: args.json and checkpoint.pt disagree on {differ}; "
            "they come from different runs"
        )


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
    atomic_save(payload, path)


def load(path: str | Path, map_location: str | torch.device | None = None) -> dict[str, Any]:
    """A training checkpoint (a run directory or its ``checkpoint.pt``), validated."""
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


def load_trained(
    path: str | Path, device: str | torch.device | None = None
) -> tuple[HTMModel, dict]:
    """The model of a training checkpoint (run directory or file), in eval mode."""
    ckpt = load(path, map_location=device)
    return model_from_checkpoint(ckpt, path, device).eval(), ckpt


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
