"""Every learner on a fixed budget and seed set: the comparison table of docs/learners.md.

    python train/compare.py                       # 3 seeds, both envs, 2 worker processes

Co-trained learners (REINFORCE with the learned policy, the heuristic and random policies,
the set-attention plug-in) run ``train/reinforce.py`` on ``--budget`` times the default
curriculum. The SB3 learners (PPO, A2C, DQN, MaskablePPO) then learn merge policies on the
REINFORCE run of the same env and seed, frozen, for ``--sb3-timesteps`` env steps. Every
policy is evaluated greedily on the reference test sets. Writes ``results.json`` and
``table.md`` to a fresh ``runs/compare/<name>`` and prints the table.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import tyro

import htm_gym
from agents import trained
from agents.sb3 import SB3Actor, env_kwargs, frozen_model, make_algo, make_vec_env
from agents.schedules import DEFAULT_STAGE_STEPS
from htm_gym import runs
from htm_gym.cli import main_or_exit
from htm_gym.datasets import load_token_file
from htm_gym.evaluation.rollout import evaluate

HERE = Path(__file__).resolve().parent
REFERENCE = HERE.parents[1] / "shared" / "reference-data"
COTRAINED = {
    "reinforce": {"policy": "learned"},
    "heuristic": {"policy": "heuristic"},
    "random": {"policy": "random"},
    "attention": {"agent": "agents.attention:AttentionLearner"},
}
SB3_ALGOS = ("ppo", "a2c", "dqn", "maskable_ppo")


@dataclass
class Args:
    seeds: tuple[int, ...] = (1, 2, 3)
    learners: tuple[str, ...] = (*COTRAINED, *SB3_ALGOS)
    env_ids: tuple[str, ...] = ("HTM-Crosses-v0", "HTM-Trees-v0")
    budget: float = 0.125
    """fraction of each dataset's default curriculum (updates) for co-trained learners"""
    sb3_timesteps: int = 200_000
    num_envs: int = 256
    jobs: int = 2
    """worker processes (one torch thread each)"""
    crosses_tokens: str = str(REFERENCE / "crosses_test_20000.npz")
    trees_tokens: str = str(REFERENCE / "trees_narrow_test_20000.npz")
    runs_dir: str = "runs/compare"
    run_name: str | None = None


def _load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"htm_train_{name}", HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while defining
    spec.loader.exec_module(module)
    return module


def _row(learner, env_id, seed, result, env_steps, seconds) -> dict:
    return {
        "learner": learner,
        "env_id": env_id,
        "seed": seed,
        "recovered": result["recovered"],
        "bracket_f1": result["bracket_f1"],
        "mean_return": result["mean_return"],
        "env_steps": int(env_steps),
        "train_seconds": seconds,
    }


def run_task(args: Args, env_id: str, seed: int, out_dir: Path) -> list[dict]:
    """All requested learners on one env and seed (one worker, one thread)."""
    torch.set_num_threads(1)
    reinforce = _load_script("reinforce")
    tokens = args.crosses_tokens if "Crosses" in env_id else args.trees_tokens
    data = load_token_file(tokens)
    generator = htm_gym.env_generator(env_id)
    rows = []
    cotrained = [k for k in COTRAINED if k in args.learners]
    if set(SB3_ALGOS) & set(args.learners) and "reinforce" not in cotrained:
        cotrained.insert(0, "reinforce")  # the SB3 learners' frozen model
    steps = tuple(max(1, round(s * args.budget)) for s in DEFAULT_STAGE_STEPS[generator.name])
    ref_run = None
    for name in cotrained:
        run = reinforce.main(
            reinforce.Args(
                env_id=env_id,
                seed=seed,
                stage_steps=steps,
                num_envs=args.num_envs,
                runs_dir=str(out_dir),
                run_name=f"{env_id}__{name}__{seed}",
                progress=False,
                image_every=0,
                eval_every=0,
                distill=False,  # learners at one budget, not the trees default's two phases
                **COTRAINED[name],
            )
        )
        ref_run = run if name == "reinforce" else ref_run
        model, ckpt = runs.load_trained(run)
        result = evaluate(model, generator, data, trained.checkpoint_actor(model, ckpt, True))
        if name in args.learners:
            rows.append(_row(name, env_id, seed, result, ckpt["env_steps"], ckpt["wall_time_s"]))
    for algo in (a for a in SB3_ALGOS if a in args.learners):
        venv = make_vec_env(env_id, args.num_envs, seed, **env_kwargs(env_id, ref_run))
        agent = make_algo(algo, venv, seed)
        start = time.perf_counter()
        agent.learn(args.sb3_timesteps)
        seconds = time.perf_counter() - start
        model = frozen_model(venv)
        result = evaluate(model, generator, data, SB3Actor(agent))
        rows.append(_row(algo, env_id, seed, result, agent.num_timesteps, seconds))
        venv.close()
    return rows


def _cell(values: list[float], fmt: str) -> str:
    if not values:
        return "-"
    return f"{np.mean(values):{fmt}} ± {np.std(values):{fmt}}"


def table(rows: list[dict], learners: tuple[str, ...]) -> str:
    def pick(learner, env, key):
        return [r[key] for r in rows if r["learner"] == learner and env in r["env_id"]]

    head = (
        "| learner | crosses exact pairing | crosses bracket F1 | trees subtree recovery | "
        "trees bracket F1 | crosses mean return | env steps (crosses) | train s (crosses) |\n"
        "|---|---|---|---|---|---|---|---|\n"
    )
    body = ""
    for name in learners:
        body += (
            f"| {name} | {_cell(pick(name, 'Crosses', 'recovered'), '.4f')} | "
            f"{_cell(pick(name, 'Crosses', 'bracket_f1'), '.4f')} | "
            f"{_cell(pick(name, 'Trees', 'recovered'), '.4f')} | "
            f"{_cell(pick(name, 'Trees', 'bracket_f1'), '.4f')} | "
            f"{_cell(pick(name, 'Crosses', 'mean_return'), '.4g')} | "
            f"{_cell(pick(name, 'Crosses', 'env_steps'), '.3g')} | "
            f"{_cell(pick(name, 'Crosses', 'train_seconds'), '.0f')} |\n"
        )
    return head + body


def main(args: Args) -> list[dict]:
    unknown = set(args.learners) - set(COTRAINED) - set(SB3_ALGOS)
    if unknown:
        raise SystemExit(
            f"unknown learner(s) {sorted(unknown)}; choose from {[*COTRAINED, *SB3_ALGOS]}"
        )
    if not 0 < args.budget <= 1 or args.jobs < 1 or not args.seeds:
        raise SystemExit("need 0 < --budget <= 1, --jobs >= 1 and at least one seed")
    out_dir = runs.new_run_dir(args.runs_dir, args.run_name, "compare")
    (out_dir / "args.json").write_text(json.dumps(asdict(args), indent=2))
    tasks = [(env_id, seed) for seed in args.seeds for env_id in args.env_ids]
    start = time.perf_counter()
    if args.jobs == 1:
        parts = [run_task(args, e, s, out_dir) for e, s in tasks]
    else:
        with ProcessPoolExecutor(args.jobs) as pool:
            futures = [pool.submit(run_task, args, e, s, out_dir) for e, s in tasks]
            parts = [f.result() for f in futures]
    rows = [r for part in parts for r in part]
    (out_dir / "results.json").write_text(json.dumps(rows, indent=2))
    md = table(rows, args.learners)
    note = (
        f"\n{len(args.seeds)} seeds {list(args.seeds)}, budget {args.budget} of the default "
        f"curriculum, SB3 {args.sb3_timesteps} env steps; {args.jobs} worker processes, "
        f"{time.perf_counter() - start:.0f}s in all.\n"
    )
    (out_dir / "table.md").write_text(md + note)
    print(md + note + f"-> {out_dir}")
    return rows


if __name__ == "__main__":
    main_or_exit(main, tyro.cli(Args))
