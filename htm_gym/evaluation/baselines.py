"""Baseline policies for evaluation only: they read the tokens, not the observation."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from htm_gym import core


class ProximityActor:
    """A baseline for evaluation only: merge the two active nodes whose token centroids are
    closest (agglomerative clustering with centroid linkage, in token units).

    It reads the tokens of ``data`` rather than the observation: :func:`rollout_tokens`
    calls ``bind(idx)`` with the instances each batch plays, in row order. A row whose
    active count equals its token count starts over from its tokens.
    """

    def __init__(self, tokens: Tensor, num_tokens: Tensor) -> None:
        self.all_tokens = torch.nan_to_num(tokens.float())  # (N, S, T)
        self.all_num_tokens = num_tokens
        self.bind(torch.arange(len(num_tokens)))

    def bind(self, idx: Tensor | np.ndarray) -> None:
        """Play instances ``idx`` of the data, one per env row."""
        idx = torch.as_tensor(idx, dtype=torch.long)
        self.tokens = self.all_tokens[idx]  # (B, S, T)
        self.num_tokens = self.all_num_tokens[idx]
        self.centroid = self.tokens.clone()  # (B, S, T) centroid of each slot's leaves
        self.size = torch.ones(self.tokens.shape[:2], device=self.tokens.device)  # (B, S)

    @torch.no_grad()
    def act(self, obs: dict[str, Tensor], action_mask: Tensor, greedy: bool = True) -> Tensor:
        active = obs["active"].bool()
        if self.tokens.device != active.device:  # data on the host, env on a GPU
            for name in ("tokens", "num_tokens", "centroid", "size"):
                setattr(self, name, getattr(self, name).to(active.device))
        b, s = active.shape
        fresh = active.sum(1) == self.num_tokens
        self.centroid = torch.where(fresh[:, None, None], self.tokens, self.centroid)
        self.size = torch.where(fresh[:, None], torch.ones_like(self.size), self.size)
        dist = torch.cdist(self.centroid, self.centroid).reshape(b, s * s)
        a = dist.masked_fill(~action_mask.bool(), torch.inf).argmin(1)
        rows = torch.arange(b, device=a.device)
        left, right = core.slot_pairs(a, s).unbind(-1)
        merged = (
            self.centroid[rows, left] * self.size[rows, left, None]
            + self.centroid[rows, right] * self.size[rows, right, None]
        ) / (self.size[rows, left] + self.size[rows, right])[:, None]
        ok = action_mask.bool().any(1)  # rows being reset: their action is ignored
        self.centroid[rows[ok], left[ok]] = merged[ok]
        self.size[rows[ok], left[ok]] += self.size[rows[ok], right[ok]]
        return a
