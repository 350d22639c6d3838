"""Stable-Baselines3 learners on HTM envs: PPO, A2C, DQN and sb3-contrib's MaskablePPO.

The merger/unmerger that produce the rewards are frozen (from a checkpoint, or a fresh
seeded model) so the rewards are stationary, as SB3's algorithms assume. Unmasked
algorithms meet the env's documented illegal-action handling: an illegal pair is a no-op
with reward ``-illegal_penalty``, and ``step_limit`` truncates an episode that never
merges. Evaluation masks illegal pairs (argmax over legal actions) and runs through the
same evaluator as REINFORCE.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import torch
from sb3_contrib import MaskablePPO
from stable_baselines3 import A2C, DQN, PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecMonitor
from torch import Tensor

import htm_gym
from agents.sb3_vec_env import HTMSB3VecEnv
from htm_gym.envs.vector_env import HTMVectorEnv

ALGOS: dict[str, type[BaseAlgorithm]] = {
    "ppo": PPO,
    "a2c": A2C,
    "dqn": DQN,
    "maskable_ppo": MaskablePPO,
}
MASKED = {"maskable_ppo"}


def env_kwargs(
    env_id: str,
    checkpoint: str | Path | None,
    step_limit: int | None = None,
    dataset_kwargs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Keyword arguments of the registered env, with the frozen model's checkpoint and
    ``dataset_kwargs`` over the registered ones (``HTM-Tokens-v0``: ``{"path": ...}``)."""
    kw: dict[str, Any] = htm_gym.env_spec(env_id, dataset_kwargs)
    if checkpoint is not None:
        kw["checkpoint"] = str(checkpoint)  # a file or a run folder
    if step_limit is not None:
        kw["step_limit"] = step_limit
    return kw


def make_vec_env(env_id: str, num_envs: int, seed: int, vec: str = "native", **kw: Any) -> VecEnv:
    """``num_envs`` envs as an SB3 ``VecEnv`` (with ``VecMonitor`` episode statistics):
    ``vec="native"`` is one batched core through :class:`HTMSB3VecEnv`, ``"dummy"`` is
    SB3's ``DummyVecEnv`` over ``gym.make(env_id)`` (the usual SB3 route, for comparison)."""
    kwargs = {**env_kwargs(env_id, kw.pop("checkpoint", None)), **kw}
    if vec == "native":
        venv: VecEnv = HTMSB3VecEnv(
            HTMVectorEnv(num_envs, autoreset_mode="disabled", array_type="numpy", **kwargs)
        )
    elif vec == "dummy":
        extra = {k: v for k, v in kwargs.items() if k not in htm_gym.ENV_IDS[env_id]}
        venv = DummyVecEnv([lambda: gym.make(env_id, **extra) for _ in range(num_envs)])
    else:
        raise ValueError(f"vec must be 'native' or 'dummy', got {vec!r}")
    venv.seed(seed)
    return VecMonitor(venv)


def default_hyperparameters(algo: str, num_envs: int) -> dict[str, Any]:
    """Settings that work on HTM's short episodes (<= S-1 merges, undiscounted returns)."""
    if algo in ("ppo", "maskable_ppo"):
        n_steps = 16
        return dict(
            n_steps=n_steps,
            batch_size=min(1024, n_steps * num_envs),
            n_epochs=4,
            gamma=1.0,
            gae_lambda=0.95,
            learning_rate=3e-4,
            ent_coef=0.0,
        )
    if algo == "a2c":
        return dict(n_steps=5, gamma=1.0, learning_rate=7e-4)
    if algo == "dqn":
        return dict(
            buffer_size=200_000,
            learning_starts=2_000,
            batch_size=256,
            gamma=1.0,
            train_freq=1,
            gradient_steps=max(1, num_envs // 16),
            target_update_interval=2_000,
            exploration_fraction=0.3,
            learning_rate=3e-4,
        )
    raise ValueError(f"algo must be one of {sorted(ALGOS)}, got {algo!r}")


def make_algo(
    algo: str, venv: VecEnv, seed: int, device: str = "cpu", **overrides: Any
) -> BaseAlgorithm:
    if algo not in ALGOS:
        raise ValueError(f"algo must be one of {sorted(ALGOS)}, got {algo!r}")
    hp = default_hyperparameters(algo, venv.num_envs) | overrides
    return ALGOS[algo]("MultiInputPolicy", venv, seed=seed, device=device, verbose=0, **hp)


class SB3Actor:
    """An SB3 policy as a :class:`~agents.base.Learner`-style actor for the evaluator:
    scores every action (policy logits, or Q-values for DQN) and takes the best legal one
    (or samples the legal ones, ``greedy=False``, for policy-gradient algorithms)."""

    def __init__(self, model: BaseAlgorithm, greedy: bool = True, seed: int = 0) -> None:
        self.model, self.greedy = model, greedy
        self.generator = torch.Generator().manual_seed(seed)

    @torch.no_grad()
    def scores(self, obs: dict[str, Tensor]) -> Tensor:
        policy = self.model.policy
        np_obs = {k: v.cpu().numpy() for k, v in obs.items()}
        obs_t, _ = policy.obs_to_tensor(np_obs)
        if isinstance(self.model, DQN):
            return policy.q_net(obs_t)
        return policy.get_distribution(obs_t).distribution.logits

    def act(
        self, obs: dict[str, Tensor], action_mask: Tensor, greedy: bool | None = None
    ) -> Tensor:
        scores = self.scores(obs).cpu().float()
        mask = action_mask.bool().cpu()
        scores = scores.masked_fill(~mask, -torch.inf)
        scores[~mask.any(1)] = 0.0  # rows being reset: any action
        if (self.greedy if greedy is None else greedy) or isinstance(self.model, DQN):
            acts = scores.argmax(1)
        else:
            acts = torch.multinomial(torch.softmax(scores, 1), 1, generator=self.generator)[:, 0]
        return acts.to(action_mask.device)


def frozen_model(venv: VecEnv) -> htm_gym.HTMModel:
    """The HTM model behind an env built by :func:`make_vec_env` (for evaluation)."""
    inner = venv.venv if isinstance(venv, VecMonitor) else venv
    if isinstance(inner, HTMSB3VecEnv):
        return inner.venv.model
    return inner.envs[0].unwrapped.sim.model
