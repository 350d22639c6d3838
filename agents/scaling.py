"""Measurements behind ``train/bench_scaling.py``, importable so each runs in a fresh
process (peak memory is then that measurement's own)."""

from __future__ import annotations

import multiprocessing as mp
import resource
import time
from dataclasses import dataclass

import numpy as np
import torch

from agents.collector import EpisodeCollector
from agents.policies import Actor, IncrementalActor
from agents.reinforce import ReinforceConfig, ReinforceLearner
from agents.schedules import Schedule, Stage
from agents.scoring import IncrementalPairLogits
from htm_gym.datasets.uniform import UniformTokens
from htm_gym.envs.vector_env import HTMVectorEnv
from htm_gym.nets import HTMConfig, make_model


@dataclass(frozen=True)
class ScalingConfig:
    batch: int = 64
    embed_dim: int = 16
    hidden_dim: int = 256
    policy_hidden_dim: int = 64
    naive_max_seconds: float = 60.0
    threads: int = 0
    device: str = "cpu"


def _setup(args: ScalingConfig, p: int, kind: str = "mlp", autoreset: str = "disabled"):
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
        autoreset_mode=autoreset,
        device=args.device,
    )
    return model, venv


def _sync(args: ScalingConfig) -> None:
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()


@torch.no_grad()
def rollout(args: ScalingConfig, p: int, mode: str, kind: str = "mlp") -> dict:
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
def scoring_step(args: ScalingConfig, p: int) -> dict:
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


def train_step(args: ScalingConfig, p: int) -> dict:
    model, venv = _setup(args, p, kind="bilinear", autoreset="next_step")  # the collector's mode
    sched = Schedule((Stage(merges=None, steps=10),))
    learner = ReinforceLearner(model, sched, ReinforceConfig(checkpoint_policy=True), seed=0)
    episodes = EpisodeCollector(venv).collect_round(learner, seed=0)
    start = time.perf_counter()
    metrics = learner.update(episodes)
    _sync(args)
    return {"seconds": time.perf_counter() - start, "skipped": metrics["train/skipped"]}


def _measure(fn_name: str, args: ScalingConfig, *rest) -> dict:
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = globals()[fn_name](args, *rest)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result | {"peak_rss_mb": peak, "baseline_rss_mb": base}


def measure(fn_name: str, args: ScalingConfig, *rest, isolate: bool = True) -> dict:
    """One measurement, in a fresh spawned process unless ``isolate`` is False (then its
    peak memory is the whole process's so far)."""
    if not isolate:
        return _measure(fn_name, args, *rest)
    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(_measure, (fn_name, args, *rest))
