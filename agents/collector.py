"""Collecting finished episodes from the native vector env for a learner's updates."""

from __future__ import annotations

import torch

from agents.base import EpisodeBatch, Learner
from htm_gym.envs.vector_env import HTMVectorEnv, play_round


class EpisodeCollector:
    """Plays an ``HTMVectorEnv`` (``array_type="torch"``, NEXT_STEP autoreset) with a
    learner and hands back finished episodes as :class:`EpisodeBatch`, read from the env's
    documented ``info["episode_record"]``: nothing here copies the env's randomness."""

    def __init__(self, venv: HTMVectorEnv, seed: int | None = None) -> None:
        """``seed`` seeds the first reset of :meth:`collect`; the round methods reset with
        their own seed, so constructing a collector does no env work."""
        if venv.array_type != "torch":
            raise ValueError("EpisodeCollector needs HTMVectorEnv(array_type='torch')")
        if venv.autoreset_mode.name != "NEXT_STEP":
            raise ValueError("EpisodeCollector needs autoreset_mode NEXT_STEP")
        self.venv = venv
        self.seed = seed
        self.obs: dict[str, torch.Tensor] | None = None
        self.env_steps = 0

    @torch.no_grad()
    def collect(self, learner: Learner, min_episodes: int) -> EpisodeBatch:
        """Step until at least ``min_episodes`` episodes have ended; return them all.
        Episodes still running carry over into the next call, so no env step is wasted."""
        if self.obs is None:
            self.obs, self.info = self.venv.reset(seed=self.seed)
            self.resetting = torch.zeros(
                self.venv.num_envs, dtype=torch.bool, device=self.venv.device
            )
        done: list[EpisodeBatch] = []
        count = 0
        while count < min_episodes:
            actions = learner.act(self.obs, self.info["action_mask"])
            self.obs, _, _, _, self.info = self.venv.step(actions)
            self.env_steps += int((~self.resetting).sum())  # a reset step is no env step
            self.resetting = self.info["_episode_record"]
            ended = self.resetting.nonzero().squeeze(1)
            if len(ended):
                record = EpisodeBatch.from_record(self.info["episode_record"])
                done.append(record.select(ended))
                count += len(ended)
        return EpisodeBatch.cat(done)

    def collect_round(
        self, learner: Learner, seed: int | None = None, options: dict | None = None
    ) -> EpisodeBatch:
        """Reset every row (``seed``/``options`` as in ``reset``) and play until each row
        has ended one episode; return exactly those ``num_envs`` episodes, in row order.

        Unlike :meth:`collect`, the batch keeps the dataset's distribution of P (short
        episodes are not over-represented) and depends only on ``seed`` and the learner,
        which makes training resumable step for step.
        """
        record, steps = play_round(self.venv, learner.act, seed, options)
        self.env_steps += steps
        return EpisodeBatch.from_record(record)

    def collect_group_round(self, learner: Learner, seed: int, group_size: int) -> EpisodeBatch:
        """:meth:`collect_round` where groups of ``group_size`` consecutive rows play one
        token set each (own noise and actions): what a leave-one-out baseline compares."""
        return self.collect_round(learner, seed=seed, options={"group_size": group_size})

    def reset_round(self, seed: int | None = None, options: dict | None = None) -> EpisodeBatch:
        """Fresh episodes with no merge made (curriculum stage 0 trains the lifters only)."""
        self.venv.reset(seed=seed, options=options)
        return EpisodeBatch.from_record(self.venv.episode_record())
