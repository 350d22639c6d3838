"""From per-merge rewards to REINFORCE advantages: returns, group and running baselines."""

from __future__ import annotations

from typing import Literal, get_args

import torch
from torch import Tensor, nn

from agents import losses

BaselineKind = Literal["depth", "pooled"]
BASELINES: tuple[str, ...] = get_args(BaselineKind)


class RunningBaseline(nn.Module):
    """Ring buffers of recent rewards that normalise advantages: (r - mean) / std.

    ``kind="depth"``: one buffer per merge depth t, each normalising its own depth (a late
    merge is compared with late merges). ``kind="pooled"``: one buffer over every depth,
    which also holds the batch being normalised, as the report's learner keeps it (its
    10,000 most recent rewards, flattened over episodes and merges).
    """

    def __init__(self, depths: int, size: int, kind: BaselineKind = "depth") -> None:
        super().__init__()
        if kind not in BASELINES:
            raise ValueError(f"baseline must be one of {BASELINES}, got {kind!r}")
        self.kind = kind
        rows = 1 if kind == "pooled" else depths
        self.register_buffer("values", torch.zeros(rows, size))
        self.register_buffer("count", torch.zeros(rows, dtype=torch.long))

    def push(self, rewards: Tensor, valid: Tensor) -> None:  # (N, D) each
        counts = valid.sum(0).tolist()  # one host read for every depth, not one per depth
        if self.kind == "pooled":  # episode-major, as (N, D).flatten()
            self._push_row(0, _valid_first(rewards.flatten(), valid.flatten(), sum(counts)))
            return
        for t, n in enumerate(counts):
            self._push_row(t, _valid_first(rewards[:, t], valid[:, t], n))

    def _push_row(self, row: int, r: Tensor) -> None:
        size = self.values.shape[1]
        r = r[-size:]
        pos = (self.count[row] + torch.arange(len(r), device=r.device)) % size
        self.values[row, pos] = r
        self.count[row] += len(r)

    def advantages(self, rewards: Tensor, valid: Tensor, eps: float = 1e-8) -> Tensor:
        """Normalised rewards (N, D), D <= depths; 0 where not valid."""
        if self.kind == "pooled":
            mean, std = self._pooled_stats(rewards[valid])
            return (rewards - mean) / (std + eps) * valid
        return self._per_depth(rewards, valid, eps)

    def _pooled_stats(self, current: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and std of the ``size`` most recent rewards, this batch's included."""
        size = self.values.shape[1]
        keep = min(int(self.count[0].clamp(max=size)), max(size - len(current), 0))
        idx = (self.count[0] - keep + torch.arange(keep, device=current.device)) % size
        pool = torch.cat([self.values[0, idx], current[-size:]])
        if len(pool) < 2:
            return pool.sum() * 0, torch.ones((), device=pool.device)
        std, mean = torch.std_mean(pool)
        return mean, std

    def _per_depth(self, rewards: Tensor, valid: Tensor, eps: float) -> Tensor:
        """Depths with fewer than two stored rewards fall back to this batch's statistics."""
        d = rewards.shape[1]
        values = self.values[:d]
        n = self.count[:d].clamp(max=values.shape[1])  # (D,)
        mask = torch.arange(values.shape[1], device=n.device)[None, :] < n[:, None]
        mean = losses.masked_mean(values, mask)
        std = losses.masked_mean((values - mean[:, None]).pow(2), mask).sqrt()
        batch_mean = losses.masked_mean(rewards.T, valid.T)
        batch_std = losses.masked_mean((rewards - batch_mean).pow(2).T, valid.T).sqrt()
        ready = n >= 2
        mean = torch.where(ready, mean, batch_mean)
        std = torch.where(ready, std, batch_std)
        return (rewards - mean) / (std + eps) * valid


def _valid_first(x: Tensor, valid: Tensor, n: int) -> Tensor:
    """``x[valid]`` (1-d, order kept) for a known count ``n``: a mask index would read it."""
    return x[torch.argsort((~valid).to(torch.uint8), stable=True)[:n]]


def discounted_returns(rewards: Tensor, gamma: float) -> Tensor:
    """sum_k gamma^k r_{t+k} per row; (N, D) with zeros after each episode's end."""
    out = rewards.clone()
    for t in range(rewards.shape[1] - 2, -1, -1):
        out[:, t] += gamma * out[:, t + 1]
    return out


def area_returns(rewards: Tensor, valid: Tensor) -> Tensor:
    """sum_{j >= t} (n - j) r_j per row, n the row's merges; (N, D) -> (N, D), 0 after its end.

    With r_j the drop in the forest's loss at merge j (the skip-path reward), this is minus
    the summed losses of the forests that merges t.. leave, up to terms merge t cannot change:
    the area under the episode's loss curve from t on. A merge's cost counts once for every
    forest it persists in, so an early costly merge weighs more than a late one.
    """
    n = valid.sum(1, keepdim=True)  # (N, 1)
    t = torch.arange(rewards.shape[1], device=rewards.device)  # (D,)
    return discounted_returns(rewards * (n - t).clamp(min=0) * valid, 1.0)


def leave_one_out(rewards: Tensor, valid: Tensor, k: int) -> Tensor:
    """Each reward minus the mean of the other valid rewards at its depth in its group of
    ``k`` consecutive rows; (N, D) -> (N, D), 0 where invalid or alone at its depth."""
    n, d = rewards.shape
    v = valid.float().view(n // k, k, d)
    r = (rewards * valid).view(n // k, k, d)
    others = v.sum(1, keepdim=True) - v
    base = (r.sum(1, keepdim=True) - r) / others.clamp(min=1)
    return ((r - base) * (others > 0) * v).view(n, d)
