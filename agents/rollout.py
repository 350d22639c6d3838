"""Collecting finished episodes from the native vector env, with no per-row Python loops."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from agents.base import EpisodeBatch, Learner
from htm_gym.sim import shuffle_slots
from htm_gym.vector_env import HTMVectorEnv


class EpisodeCollector:
    """Steps an ``HTMVectorEnv`` (NEXT_STEP autoreset, ``array_type="torch"``) with a learner
    and returns the episodes that finished. Episodes still running when ``collect`` returns
    carry over into the next call, so no env step is wasted."""

    def __init__(self, venv: HTMVectorEnv, seed: int | None = None) -> None:
        """``seed`` seeds the first reset of :meth:`collect`; the round methods reset with
        their own seed, so constructing a collector does no env work."""
        if venv.array_type != "torch":
            raise ValueError("EpisodeCollector needs HTMVectorEnv(array_type='torch')")
        if venv.autoreset_mode.name != "NEXT_STEP":
            raise ValueError("EpisodeCollector needs autoreset_mode NEXT_STEP")
        self.venv = venv
        self.seed = seed
        self.obs: dict[str, Tensor] | None = None
        b, s, dev = venv.num_envs, venv.sim.S, venv.device
        self.actions = torch.full((b, s - 1), -1, dtype=torch.long, device=dev)
        self.rewards = torch.zeros(b, s - 1, device=dev)
        self.lengths = torch.zeros(b, dtype=torch.long, device=dev)
        self.env_steps = 0

    def _reset(self, seed: int | None, options: dict | None = None) -> None:
        self.obs, self.info = self.venv.reset(seed=seed, options=options)
        st = self.venv.sim.state
        self.tokens, self.num_tokens, self.noise = st.tokens, st.num_tokens, st.noise

    def _snapshot(self, rows: Tensor) -> None:
        """Remember the start of the episodes now beginning in ``rows`` (B,) bool."""
        st = self.venv.sim.state
        r = rows[:, None]
        self.tokens = torch.where(r[..., None], st.tokens, self.tokens)
        self.num_tokens = torch.where(rows, st.num_tokens, self.num_tokens)
        self.noise = torch.where(r[..., None], st.noise, self.noise)

    @torch.no_grad()
    def collect(self, learner: Learner, min_episodes: int) -> EpisodeBatch:
        """Step until at least ``min_episodes`` episodes have finished; return them all."""
        if self.obs is None:
            self._reset(self.seed)
        done: list[EpisodeBatch] = []
        count = 0
        while count < min_episodes:
            acting = self.info["action_mask"].any(1)  # rows not being autoreset this step
            term, trunc = self._step(learner, acting)
            ended = term | trunc
            if bool(ended.any()):
                idx = ended.nonzero().squeeze(1)
                done.append(self._take(idx, term[idx]))
                count += len(idx)
            restarted = ~acting  # rows reset by this step start a new episode
            if bool(restarted.any()):
                self._snapshot(restarted)
                self.actions[restarted] = -1
                self.rewards[restarted] = 0.0
                self.lengths[restarted] = 0
        return EpisodeBatch.cat(done)

    @torch.no_grad()
    def collect_round(
        self, learner: Learner, seed: int | None = None, options: dict | None = None
    ) -> EpisodeBatch:
        """Reset every row (``seed``/``options`` as in ``reset``) and play until each row
        has finished one episode; return exactly those ``num_envs`` episodes, in row order.

        Unlike :meth:`collect`, the batch keeps the dataset's distribution of P (short
        episodes are not over-represented) and depends only on ``seed`` and the learner,
        which makes training resumable step for step.
        """
        final = self.reset_round(seed, options)
        self.actions.fill_(-1)
        self.rewards.zero_()
        self.lengths.zero_()
        b = self.venv.num_envs
        finished = torch.zeros(b, dtype=torch.bool, device=self.venv.device)
        while not bool(finished.all()):
            acting = ~finished
            term, trunc = self._step(learner, acting)
            ended = (term | trunc) & acting
            finished |= ended
            final = EpisodeBatch(
                tokens=final.tokens,
                num_tokens=final.num_tokens,
                noise=final.noise,
                actions=torch.where(ended[:, None], self.actions, final.actions),
                rewards=torch.where(ended[:, None], self.rewards, final.rewards),
                lengths=torch.where(ended, self.lengths, final.lengths),
                terminated=torch.where(ended, term, final.terminated),
            )
        return final

    @torch.no_grad()
    def collect_group_round(self, learner: Learner, seed: int, group_size: int) -> EpisodeBatch:
        """:meth:`collect_round` on ``num_envs / group_size`` token sets drawn from the env's
        generator with ``seed``, each played by ``group_size`` consecutive rows (own noise
        and actions): the episodes a per-instance (leave-one-out) baseline compares."""
        b = self.venv.num_envs
        if group_size < 1 or b % group_size:
            raise ValueError(
                f"group_size must be a positive divisor of num_envs={b}, got {group_size}"
            )
        rng = np.random.default_rng(seed)
        sets = self.venv.generator.sample(rng, b // group_size)
        keys = list(rng.random(sets.tokens.shape[:2]))  # as the env's own draws: no slot order
        tokens = shuffle_slots(sets.tokens, sets.num_tokens, keys)
        options = {
            "tokens": np.repeat(tokens, group_size, axis=0),
            "num_tokens": np.repeat(sets.num_tokens, group_size),
        }
        return self.collect_round(learner, seed=seed, options=options)

    def reset_round(self, seed: int | None = None, options: dict | None = None) -> EpisodeBatch:
        """Fresh episodes with no merge made (curriculum stage 0 trains the lifters only)."""
        self._reset(seed, options)
        b, s = self.venv.num_envs, self.venv.sim.S
        dev = self.venv.device
        return EpisodeBatch(
            tokens=self.tokens,
            num_tokens=self.num_tokens,
            noise=self.noise,
            actions=torch.full((b, s - 1), -1, dtype=torch.long, device=dev),
            rewards=torch.zeros(b, s - 1, device=dev),
            lengths=torch.zeros(b, dtype=torch.long, device=dev),
            terminated=torch.zeros(b, dtype=torch.bool, device=dev),
        )

    def _step(self, learner: Learner, acting: Tensor) -> tuple[Tensor, Tensor]:
        """One env step; records the merge made by each ``acting`` row. -> (term, trunc)"""
        s = self.venv.sim.S
        actions = learner.act(self.obs, self.info["action_mask"])
        self.obs, reward, term, trunc, self.info = self.venv.step(actions)
        self.env_steps += int(acting.sum())
        merged = acting & ~self.info["illegal_action"]
        step_oh = torch.nn.functional.one_hot(self.lengths.clamp(max=s - 2), s - 1).bool()
        step_oh &= merged[:, None]
        self.actions = torch.where(step_oh, actions[:, None], self.actions)
        self.rewards = torch.where(step_oh, reward[:, None], self.rewards)
        self.lengths += merged.long()
        return term, trunc

    def _take(self, idx: Tensor, terminated: Tensor) -> EpisodeBatch:
        return EpisodeBatch(
            tokens=self.tokens[idx],
            num_tokens=self.num_tokens[idx],
            noise=self.noise[idx],
            actions=self.actions[idx],
            rewards=self.rewards[idx],
            lengths=self.lengths[idx],
            terminated=terminated,
        )
