"""Merges per second: native ``HTMVectorEnv`` vs ``SyncVectorEnv`` over ``HTMEnv``.

    python train/bench_env.py                       # crosses and trees, 256 envs, CPU
    python train/bench_env.py --num-envs 1024 --device cuda
    python train/bench_env.py --datasets --padding-batch 0 --uniform-p 64 --num-envs 16384 \
        --device cuda            # large B at P = 64, everything on the device

Both run the same random legal actions (sampled from ``info["action_mask"]`` by one
vectorised draw) with NEXT_STEP autoreset; a merge is a step whose action was applied.
``--uniform-p`` times ``HTMVectorEnv`` alone over fixed-size uniform token sets
(``array_type="torch"``, actions drawn on the device, episodes to the root in lockstep):
merges/s of the steps alone and with the resets (which draw each row's tokens from its own
NumPy stream on the host) counted in.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
import tyro

from htm_gym import core
from htm_gym.cli import main_or_exit
from htm_gym.datasets import make_generator
from htm_gym.datasets.uniform import UniformTokens
from htm_gym.envs.vector_env import HTMVectorEnv, make_sync_reference
from htm_gym.nets import HTMConfig, make_model


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
    padding_batch: int = 4096
    """instances in the padded-vs-grouped comparison of the core (0: skip it)"""
    uniform_p: tuple[int, ...] = ()
    """token counts P at which to time the native env alone on uniform token sets"""
    episodes: int = 3
    """timed to-root episodes per ``--uniform-p`` size (after one warm-up episode)"""


@torch.no_grad()
def rollout_seconds(model, tokens: torch.Tensor, num: torch.Tensor, repeats: int = 3) -> float:
    """Best-of time of a to-root random-legal rollout of one batch through the core."""
    s, e = tokens.shape[1], model.embed_dim
    gen = torch.Generator(tokens.device).manual_seed(0)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        state = core.lift(
            model, tokens, num, torch.zeros(len(num), 2 * s - 1, e, device=tokens.device)
        )
        for _ in range(int(num.max()) - 1):
            legal = core.legal_pairs(state.active).flatten(1)
            a = (torch.rand(legal.shape, generator=gen, device=tokens.device) * legal).argmax(1)
            pair = core.slot_pairs(a, s)
            state, _ = core.merge(model, state, pair[:, 0], pair[:, 1], legal.any(1))
        best = min(best, time.perf_counter() - start)
    return best


def padding_vs_grouping(n: int, device: str, seed: int) -> dict:
    """Crosses (P in {2, 4, 6}): one padded batch vs one batch per P, merges per second."""
    gen = make_generator("crosses")
    data = gen.sample(np.random.default_rng(seed), n)
    model = make_model(HTMConfig(token_dim=4, token_loc=64, token_scale=64), device=device)
    tokens = torch.as_tensor(np.nan_to_num(data.tokens), device=device)
    num = torch.as_tensor(data.num_tokens, device=device)
    merges = int((num - 1).sum())
    padded = rollout_seconds(model, tokens, num)
    grouped = 0.0
    for p in np.unique(data.num_tokens):
        sel = torch.as_tensor(data.num_tokens == p, device=device)
        grouped += rollout_seconds(model, tokens[sel][:, :p].contiguous(), num[sel])
    return {"padded": merges / padded, "grouped": merges / grouped}


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


def lockstep_merges_per_second(args: Args, p: int) -> tuple[float, float]:
    """(steps alone, steps and resets) merges/s of to-root episodes over P uniform tokens."""
    venv = HTMVectorEnv(
        args.num_envs,
        dataset=UniformTokens(p),
        array_type="torch",
        autoreset_mode="disabled",
        device=args.device,
    )
    gen = torch.Generator(venv.device).manual_seed(args.seed)
    step_s = reset_s = 0.0
    for episode in range(args.episodes + 1):  # episode 0 warms up
        start = time.perf_counter()
        _, info = venv.reset(seed=args.seed + episode)
        _sync(venv.device)
        reset = time.perf_counter()
        for _ in range(p - 1):
            mask = info["action_mask"]
            scores = torch.rand(mask.shape, generator=gen, device=mask.device) * mask
            _, _, _, _, info = venv.step(scores.argmax(1))
        _sync(venv.device)
        if episode:
            step_s += time.perf_counter() - reset
            reset_s += reset - start
    merges = args.episodes * args.num_envs * (p - 1)
    return merges / step_s, merges / (step_s + reset_s)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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
    for p in args.uniform_p:
        steps, with_resets = lockstep_merges_per_second(args, p)
        rows.append({"dataset": f"uniform{p}", "native": steps, "with_resets": with_resets})
        print(
            f"uniform P={p}, {args.num_envs} envs on {args.device}: {steps:,.0f} merges/s "
            f"(steps alone), {with_resets:,.0f} merges/s (resets counted in)"
        )
    if args.padding_batch:
        pg = padding_vs_grouping(args.padding_batch, args.device, args.seed)
        print(f"\nmixed P (crosses, {args.padding_batch} instances, core rollout to the root):")
        print(
            f"  one padded batch: {pg['padded']:,.0f} merges/s;  one batch per P: "
            f"{pg['grouped']:,.0f} merges/s  (padded/grouped = {pg['padded'] / pg['grouped']:.2f})"
        )
    return rows


if __name__ == "__main__":
    main_or_exit(main, tyro.cli(Args))
