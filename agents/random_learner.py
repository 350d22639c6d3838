"""The uniformly random legal policy: a baseline, and the smallest :class:`Learner`."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from agents.base import EpisodeBatch
from htm_gym.nets import resolve_device


class RandomLearner:
    """Picks a uniformly random legal action per row; learns nothing."""

    def __init__(self, seed: int = 0, device: str | torch.device | None = None) -> None:
        self.generator = torch.Generator(device=resolve_device(device)).manual_seed(seed)

    def act(self, obs: dict[str, Tensor], action_mask: Tensor, greedy: bool = False) -> Tensor:
        scores = torch.rand(action_mask.shape, generator=self.generator, device=action_mask.device)
        return (scores * action_mask).argmax(1)  # rows with no legal action get 0

    def update(self, episodes: EpisodeBatch) -> dict[str, float]:
        return {"mean_return": float(episodes.returns().mean()) if len(episodes) else 0.0}

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
