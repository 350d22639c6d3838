"""Train a Stable-Baselines3 agent to choose merges, with the HTM networks frozen.

    python train/sb3.py --algo maskable_ppo --env-id HTM-Crosses-v0 \
        --model-checkpoint runs/<run>/checkpoint.pt

The envs run as one batched core behind an SB3 ``VecEnv`` (``--vec native``; ``--vec dummy``
is SB3's ``DummyVecEnv`` for comparison). Logs go to ``runs/<run_name>`` (TensorBoard), the
trained agent to ``model.zip`` and the evaluation (same evaluator as REINFORCE: exact
pairing or subtree recovery, bracket F1, return, reconstruction) to ``eval.json``.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import tyro
from stable_baselines3.common.logger import configure

import htm_gym
from agents.sb3 import SB3Actor, env_kwargs, frozen_model, make_algo, make_vec_env
from htm_gym import runs
from htm_gym.cli import main_or_exit
from htm_gym.datasets import load_token_file
from htm_gym.evaluation.rollout import evaluate


@dataclass
class Args:
    algo: Literal["ppo", "a2c", "dqn", "maskable_ppo"] = "maskable_ppo"
    env_id: str = "HTM-Crosses-v0"
    tokens: str | None = None
    """your own token sets (.npz in the reference layout): the env is HTM-Tokens-v0"""
    model_checkpoint: str | None = None
    """run directory or checkpoint whose HTM networks make the rewards (frozen); default: a
    fresh seeded model"""
    total_timesteps: int = 200_000
    """env steps (summed over all envs)"""
    num_envs: int = 256
    vec: Literal["native", "dummy"] = "native"
    """native: one batched core behind an SB3 VecEnv; dummy: SB3's DummyVecEnv"""
    seed: int = 0
    device: str = "cpu"
    threads: int = 0
    """torch CPU threads (0: torch's default)"""
    step_limit: int | None = None
    """steps (illegal ones included) before an episode is truncated (default: 4 S)"""
    eval_tokens: str | None = None
    """an .npz token file to evaluate on (default: a generated test set)"""
    eval_instances: int = 2000
    eval_seed: int = 12345
    runs_dir: str = "runs"
    run_name: str | None = None


def main(args: Args) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.total_timesteps < 1 or args.num_envs < 1:
        raise SystemExit("--total-timesteps and --num-envs must be positive")
    if args.tokens:
        args = replace(args, env_id=runs.TOKENS_ENV_ID)
    dataset_kwargs = {"path": args.tokens} if args.tokens else None
    try:
        kw = env_kwargs(args.env_id, args.model_checkpoint, args.step_limit, dataset_kwargs)
        generator = htm_gym.env_generator(args.env_id, dataset_kwargs)
        # Loaded before training, so a bad file fails in a second, not after the run.
        data = load_token_file(args.eval_tokens, generator.token_dim) if args.eval_tokens else None
    except ValueError as e:
        raise SystemExit(str(e)) from e
    if args.eval_instances < 1:
        raise SystemExit(f"--eval-instances must be >= 1, got {args.eval_instances}")
    # Built before the run folder: a bad checkpoint, device or run name leaves nothing behind.
    venv = make_vec_env(args.env_id, args.num_envs, args.seed, args.vec, **kw)
    agent = make_algo(args.algo, venv, args.seed, args.device)
    try:
        prefix = f"{args.env_id}__{args.algo}__{args.seed}"
        run_dir = runs.new_run_dir(args.runs_dir, args.run_name, prefix)
    except (FileExistsError, ValueError) as e:
        raise SystemExit(str(e)) from e
    (run_dir / "args.json").write_text(json.dumps(asdict(args), indent=2))
    agent.set_logger(configure(str(run_dir), ["tensorboard", "csv"]))
    start = time.perf_counter()
    agent.learn(total_timesteps=args.total_timesteps)
    seconds = time.perf_counter() - start
    agent.save(run_dir / "model.zip")

    if data is None:
        data = generator.sample(np.random.default_rng(args.eval_seed), args.eval_instances)
    result = evaluate(frozen_model(venv), generator, data, SB3Actor(agent), seed=args.eval_seed)
    result |= {
        "algo": args.algo,
        "env_id": args.env_id,
        "env_steps": int(agent.num_timesteps),
        "train_seconds": seconds,
        "env_steps_per_s": agent.num_timesteps / seconds,
        "data": Path(args.eval_tokens).stem if args.eval_tokens else "generated",
    }
    (run_dir / "eval.json").write_text(json.dumps(result, indent=2))
    print(
        f"{args.algo} on {args.env_id}: {agent.num_timesteps} env steps in {seconds:.1f}s "
        f"({result['env_steps_per_s']:.0f}/s); structure recovered {result['recovered']:.4f}, "
        f"bracket F1 {result['bracket_f1']:.4f}, mean return {result['mean_return']:.4g}"
        f"  -> {run_dir}"
    )
    venv.close()
    return result


if __name__ == "__main__":
    main_or_exit(main, tyro.cli(Args))
