"""The learner interface: what a policy learner implements to act in HTM envs and be trained
by our scripts (``train/reinforce.py --agent module:Class``)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from htm_gym.envs.sim import EpisodeRecord


@dataclass(frozen=True)
class EpisodeBatch:
    """N finished merge episodes, enough to replay them exactly through ``htm_gym.core``.

    Replaying means ``core.replay(model, tokens, num_tokens, noise, pairs, lengths)``: lift,
    then merge slot pair ``pairs[:, t]`` in rows where ``t < lengths``. With the same model
    this reproduces the env's states and rewards; with gradients enabled it is how a learner
    co-trains the merger/unmerger from the episodes it acted in. Built from the env's
    :class:`~htm_gym.envs.sim.EpisodeRecord` by :meth:`from_record`.
    """

    tokens: Tensor  # (N, S, T) token units, zeros in padding
    num_tokens: Tensor  # (N,) long
    noise: Tensor  # (N, 2S-1, E) the noise the env added to each node
    pairs: Tensor  # (N, S-1, 2) long slot pairs (i, j) merged at step t, -1 after the end
    rewards: Tensor  # (N, S-1) float, the env's rewards for those merges, 0 after the end
    lengths: Tensor  # (N,) long, merges made
    terminated: Tensor  # (N,) bool, reached the root (else truncated by a budget)

    def __len__(self) -> int:
        return len(self.lengths)

    @staticmethod
    def from_record(record: EpisodeRecord) -> EpisodeBatch:
        st = record.state
        return EpisodeBatch(
            st.tokens, st.num_tokens, st.noise, st.actions, record.rewards, st.merges,
            record.terminated,
        )  # fmt: skip

    def _map(self, fn) -> EpisodeBatch:
        return EpisodeBatch(**{f.name: fn(getattr(self, f.name)) for f in fields(self)})

    def select(self, rows: Tensor) -> EpisodeBatch:
        """Rows ``rows`` (long indices)."""
        return self._map(lambda x: x[rows])

    @staticmethod
    def cat(batches: list[EpisodeBatch]) -> EpisodeBatch:
        return EpisodeBatch(
            **{
                f.name: torch.cat([getattr(b, f.name) for b in batches])
                for f in fields(EpisodeBatch)
            }
        )

    def split_by_tokens(self) -> list[EpisodeBatch]:
        """One batch per token count P, each cut to P slots (tokens fill slots 0..P-1, so
        the slot pairs stay valid)."""
        # One host read for the whole split (the group sizes), not two per group: each read
        # waits for the device to finish its queue.
        order = torch.argsort(self.num_tokens, stable=True)  # row order kept within a P
        # not bincount: on a GPU it reads the largest P first to size its output
        sizes = torch.zeros(self.tokens.shape[1] + 1, dtype=torch.long, device=order.device)
        sizes = sizes.index_add_(0, self.num_tokens, torch.ones_like(self.num_tokens)).tolist()
        out, start = [], 0
        for p, size in enumerate(sizes):
            if not size:
                continue
            idx, start = order[start : start + size], start + size
            out.append(
                EpisodeBatch(
                    tokens=self.tokens[idx, :p],
                    num_tokens=self.num_tokens[idx],
                    noise=self.noise[idx, : 2 * p - 1],
                    pairs=self.pairs[idx, : p - 1],
                    rewards=self.rewards[idx, : p - 1],
                    lengths=self.lengths[idx],
                    terminated=self.terminated[idx],
                )
            )
        return out

    def returns(self) -> Tensor:  # (N,)
        return self.rewards.sum(1)


@runtime_checkable
class Learner(Protocol):
    """A policy learner for HTM envs.

    ``act`` sees batched observations as torch tensors (the native vector env with
    ``array_type="torch"``: ``obs["nodes"]`` (B, S, E), ``obs["active"]`` (B, S)) and the
    legal-action mask (B, S*S); it returns one flat action ``i * S + j`` per row, legal
    wherever the row's mask has a legal entry (rows without one are being reset; their
    action is ignored). ``greedy=True`` asks for the learner's best action (evaluation).
    ``update`` learns from finished episodes and returns scalars to log (TensorBoard tags;
    a name without "/" is logged under ``learner/``). ``state_dict``/``load_state_dict``
    make checkpoints and resuming work.

    ``train/reinforce.py --agent module:Class`` constructs ``Class(model=..., schedule=...,
    seed=...)`` with the run's :class:`~htm_gym.nets.HTMModel` (the learner may train it
    from the episodes) and :class:`~agents.schedules.Schedule`, and calls ``update`` once per
    round of ``--num-envs`` episodes until ``schedule.total_steps`` updates are done.
    """

    def act(self, obs: dict[str, Tensor], action_mask: Tensor, greedy: bool = False) -> Tensor: ...

    def update(self, episodes: EpisodeBatch) -> dict[str, float]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...
