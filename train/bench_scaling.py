"""Cost growth with the token count P: incremental vs naive pair scoring, and training steps.

    python train/bench_scaling.py                 # P = 8..256, B = 64, on the CPU

For each P, in a fresh process each (so peak memory is that measurement's own):
- rollout: one to-root episode of B rows through ``HTMVectorEnv`` with the learned policy
  (greedy), scored incrementally (``IncrementalActor``; MLP and bilinear scorers) or
  naively (MLP, full rescoring per step);
- one pair-scoring step alone: the incremental row+column update vs a full (S, S) rescoring;
- training: one ``ReinforceLearner.update`` (replay with gradients, HTM loss, REINFORCE)
  on B to-root episodes, bilinear policy with checkpointed pair logits.
Naive episodes whose first steps predict more than ``--naive-max-seconds`` are extrapolated
from those steps and marked so. Prints a table, the log-log slopes, and writes JSON.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import resource
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import tyro

from agents.checkpoint import fresh_path
from agents.policies import Actor, IncrementalActor
from agents.reinforce import ReinforceConfig, ReinforceLearner
from agents.rollout import EpisodeCollector
from agents.schedules import Schedule, Stage
from htm_gym.datasets import TokenBatch, TokenGenerator
from htm_gym.nets import HTMConfig, make_model
from htm_gym.scoring import IncrementalPairLogits
from htm_gym.vector_env import HTMVectorEnv


@dataclass
class Args:
    sizes: tuple[int, ...] = (8, 32, 64, 128, 256)
    batch: int = 64
    embed_dim: int = 16
    hidden_dim: int = 256
    policy_hidden_dim: int = 64
    naive_max_seconds: float = 60.0
    threads: int = 0
    device: str = "cpu"
    output: str = "bench_scaling.json"


class UniformTokens(TokenGenerator):
    """P tokens (x, y, v) uniform in [0, 16)^3: fixed-size populations for timing."""

    name = "uniform"
    token_dim = 3
    image_size = 16.0
    token_loc = token_scale = 8.0

    def __init__(self, p: int) -> None:
        self.max_tokens = self.min_tokens = p
        self.draw_size = 3 * p

    def build(self, draws: np.ndarray) -> TokenBatch:
        tokens = (16 * draws.reshape(len(draws), self.max_tokens, 3)).astype(np.float32)
        return TokenBatch(tokens, np.full(len(draws), self.max_tokens))

    def constituents(self, num_tokens: int) -> list[tuple[int, ...]]:
        return [tuple(range(num_tokens))]


def _setup(args: Args, p: int, kind: str = "mlp"):
    torch.set_num_threads(args.threads or torch.get_num_threads())
    config = HTMConfig(
        token_dim=3,
        embed_dim=args.embed_dim,
        hidden_dim=args.hidden_dim,
        policy_hidden_dim=args.policy_hidden_dim,
        policy_kind=kind,
        token_loc=8.0,
        token_scale=8.0,
    )
    model = make_model(config, seed=0, device=args.device)
    venv = HTMVectorEnv(
        args.batch,
        dataset=UniformTokens(p),
        model=model,
        array_type="torch",
        autoreset_mode="disabled",
        device=args.device,
    )
    return model, venv


def _sync(args: Args) -> None:
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()


@torch.no_grad()
def rollout(args: Args, p: int, mode: str, kind: str = "mlp") -> dict:
    model, venv = _setup(args, p, kind)
    actor = IncrementalActor(model) if mode == "incremental" else Actor(model, greedy=True)
    obs, info = venv.reset(seed=0)
    times, extrapolated = [], False
    for t in range(p - 1):
        start = time.perf_counter()
        obs, _, term, _, info = venv.step(actor.act(obs, info["action_mask"]))
        _sync(args)
        times.append(time.perf_counter() - start)
        if mode == "naive" and t == 2 and np.mean(times) * (p - 1) > args.naive_max_seconds:
            extrapolated = True
            break
    seconds = float(np.mean(times) * (p - 1)) if extrapolated else float(np.sum(times))
    if not extrapolated:
        assert bool(term.all()), "every row reached the root"
    return {"seconds": seconds, "extrapolated": extrapolated, "merges": args.batch * (p - 1)}


@torch.no_grad()
def scoring_step(args: Args, p: int) -> dict:
    """Median time of one incremental update vs one full rescoring, mid-episode."""
    model, venv = _setup(args, p)
    obs, _ = venv.reset(seed=0)
    cache = IncrementalPairLogits(model.policy)
    cache.reset(obs["nodes"])
    slots = torch.randint(0, p, (args.batch,), generator=torch.Generator().manual_seed(0))
    slots = slots.to(args.device)
    out = {}
    for name, fn, reps in (
        ("incremental", lambda: cache.update(obs["nodes"], slots), 20),
        ("full", lambda: model.policy.all_pairs(obs["nodes"]), 3),
    ):
        fn()
        ts = []
        for _ in range(reps):
            start = time.perf_counter()
            fn()
            _sync(args)
            ts.append(time.perf_counter() - start)
        out[name] = float(np.median(ts))
    return out


def train_step(args: Args, p: int) -> dict:
    model, venv = _setup(args, p, kind="bilinear")
    sched = Schedule((Stage(merges=None, steps=10),))
    learner = ReinforceLearner(model, sched, ReinforceConfig(checkpoint_policy=True), seed=0)
    episodes = EpisodeCollector(
        venv.__class__(
            args.batch,
            dataset=UniformTokens(p),
            model=model,
            array_type="torch",
            device=args.device,
        )
    ).collect_round(learner, seed=0)
    start = time.perf_counter()
    metrics = learner.update(episodes)
    _sync(args)
    return {"seconds": time.perf_counter() - start, "skipped": metrics["train/skipped"]}


def _measure(fn_name: str, args: Args, *rest) -> dict:
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = globals()[fn_name](args, *rest)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result | {"peak_rss_mb": peak, "baseline_rss_mb": base}


def measure(fn_name: str, args: Args, *rest) -> dict:
    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(_measure, (fn_name, args, *rest))


def slope(ps: list[int], ts: list[float]) -> float:
    return float(np.polyfit(np.log(ps), np.log(ts), 1)[0])


def main(args: Args) -> dict:
    rows = []
    for p in args.sizes:
        row = {
            "P": p,
            "incremental": measure("rollout", args, p, "incremental"),
            "incremental_bilinear": measure("rollout", args, p, "incremental", "bilinear"),
            "naive": measure("rollout", args, p, "naive"),
            "scoring_step": measure("scoring_step", args, p),
            "train_step": measure("train_step", args, p),
        }
        rows.append(row)
        inc, bil, nai, sc, tr = (
            row[k]
            for k in ("incremental", "incremental_bilinear", "naive", "scoring_step", "train_step")
        )
        print(
            f"P={p:>4}  rollout: incremental {inc['seconds']:7.3f}s ({inc['peak_rss_mb']:6.0f} MB)"
            f"  bilinear {bil['seconds']:7.3f}s"
            f"  naive {nai['seconds']:8.2f}s{'*' if nai['extrapolated'] else ' '}"
            f" ({nai['peak_rss_mb']:6.0f} MB)  step: incremental {1e3 * sc['incremental']:7.2f}ms"
            f" full {1e3 * sc['full']:8.2f}ms  train step {tr['seconds']:6.2f}s"
            f" ({tr['peak_rss_mb']:6.0f} MB)",
            flush=True,
        )
    ps = [r["P"] for r in rows]
    slopes = {
        "incremental_step": slope(ps, [r["scoring_step"]["incremental"] for r in rows]),
        "full_step": slope(ps, [r["scoring_step"]["full"] for r in rows]),
        "incremental_episode": slope(ps, [r["incremental"]["seconds"] for r in rows]),
        "incremental_bilinear_episode": slope(
            ps, [r["incremental_bilinear"]["seconds"] for r in rows]
        ),
        "naive_episode": slope(ps, [r["naive"]["seconds"] for r in rows]),
        "train_step": slope(ps, [r["train_step"]["seconds"] for r in rows]),
    }
    big = [r for r in rows if r["P"] >= 32]
    if len(big) >= 2:
        slopes["incremental_step_P>=32"] = slope(
            [r["P"] for r in big], [r["scoring_step"]["incremental"] for r in big]
        )
    print("log-log slopes of time against P:", {k: round(v, 2) for k, v in slopes.items()})
    print("* naive episode extrapolated from its first 3 steps")
    result = {"args": asdict(args), "device": args.device, "rows": rows, "slopes": slopes}
    out = fresh_path(Path(args.output))
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main(tyro.cli(Args))
