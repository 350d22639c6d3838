"""SB3 training throughput: the native batched VecEnv adapter vs SB3's DummyVecEnv.

    python train/bench_sb3.py                      # MaskablePPO and PPO, 256 envs, crosses

Times ``model.learn`` (env stepping + SB3's rollout and update work) for the same algorithm,
seed and budget on both VecEnvs and prints env steps per second and their ratio.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import tyro

from agents.sb3 import make_algo, make_vec_env
from htm_gym.cli import main_or_exit


@dataclass
class Args:
    algos: tuple[str, ...] = ("maskable_ppo", "ppo")
    env_id: str = "HTM-Crosses-v0"
    num_envs: int = 256
    total_timesteps: int = 65_536
    seed: int = 0
    threads: int = 0


def throughput(algo: str, env_id: str, vec: str, num_envs: int, steps: int, seed: int) -> float:
    venv = make_vec_env(env_id, num_envs, seed, vec)
    model = make_algo(algo, venv, seed)
    model.learn(num_envs * 16)  # warm-up: first rollout and update
    start = time.perf_counter()
    model.learn(steps, reset_num_timesteps=False)
    seconds = time.perf_counter() - start
    venv.close()
    return steps / seconds


def main(args: Args) -> dict[str, dict[str, float]]:
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"{args.env_id}, {args.num_envs} envs, {args.total_timesteps} env steps per timing")
    print(f"{'algo':<14}{'native steps/s':>16}{'dummy steps/s':>16}{'ratio':>8}")
    out = {}
    for algo in args.algos:
        native = throughput(
            algo, args.env_id, "native", args.num_envs, args.total_timesteps, args.seed
        )
        dummy = throughput(
            algo, args.env_id, "dummy", args.num_envs, args.total_timesteps, args.seed
        )
        out[algo] = {"native": native, "dummy": dummy, "ratio": native / dummy}
        print(f"{algo:<14}{native:>16,.0f}{dummy:>16,.0f}{native / dummy:>7.1f}x")
    return out


if __name__ == "__main__":
    main_or_exit(main, tyro.cli(Args))
