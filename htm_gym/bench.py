"""Merges per second: native ``HTMVectorEnv`` vs ``SyncVectorEnv`` over ``HTMEnv``.

    python -m htm_gym.bench                       # crosses and trees, 256 envs, CPU
    python -m htm_gym.bench --num-envs 1024 --device cuda

Both run the same random legal actions (sampled from ``info["action_mask"]`` by one
vectorised draw) with NEXT_STEP autoreset; a merge is a step whose action was applied.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
import tyro

from htm_gym.vector_env import HTMVectorEnv, make_sync_reference


@dataclass
class Args:
    num_envs: int = 256
    """environments stepped together"""
    steps: int = 200
    """vector steps timed for the native env"""
    sync_steps: int = 20
    """vector steps timed for SyncVectorEnv (it is far slower)"""
    datasets: tuple[str, ...] = ("crosses", "trees")
    device: str = "cpu"
    threads: int = 0
    """torch intra-op threads (0: torch's default)"""
    seed: int = 0


def random_legal(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One uniformly random legal action per row (0 for rows with none)."""
    scores = rng.random(mask.shape) * mask
    return scores.argmax(1)


def merges_per_second(venv, steps: int, seed: int) -> float:
    rng = np.random.default_rng(seed)
    _, info = venv.reset(seed=seed)
    for _ in range(3):  # warm-up
        _, _, _, _, info = venv.step(random_legal(info["action_mask"], rng))
    merges = 0
    start = time.perf_counter()
    for _ in range(steps):
        mask = info["action_mask"]
        _, _, _, _, info = venv.step(random_legal(mask, rng))
        merges += int(mask.any(1).sum())
    return merges / (time.perf_counter() - start)


def main(args: Args) -> list[dict]:
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    for dataset in args.datasets:
        kw = {"dataset": dataset, "device": args.device}
        native = merges_per_second(HTMVectorEnv(args.num_envs, **kw), args.steps, args.seed)
        reference = make_sync_reference(args.num_envs, **kw)
        sync = merges_per_second(reference, args.sync_steps, args.seed)
        rows.append({"dataset": dataset, "native": native, "sync": sync, "ratio": native / sync})
    print(f"num_envs={args.num_envs} device={args.device} torch threads={torch.get_num_threads()}")
    print(f"{'dataset':<10}{'native merges/s':>18}{'sync merges/s':>16}{'ratio':>9}")
    for r in rows:
        print(f"{r['dataset']:<10}{r['native']:>18,.0f}{r['sync']:>16,.0f}{r['ratio']:>8.1f}x")
    return rows


if __name__ == "__main__":
    main(tyro.cli(Args))
