"""Incremental pair scoring: keep every ordered pair's policy logit current under merges.

A merge changes one slot (the merged node replaces the left member) and deactivates another,
so only that slot's row and column of the (S, S) logit table change: 2S pair scores per step
instead of S^2. Over a to-root episode that is O(P^2) pair scores in all (the first full
table plus 2S per merge) instead of the naive O(P^3).
"""

from __future__ import annotations

import torch
from torch import Tensor

from htm_gym import core
from htm_gym.nets import BilinearPairScorer, PairScorer


class IncrementalPairLogits:
    """The (B, S, S) table of ``scorer``'s logits for a batch of node tables.

    ``reset(nodes, rows)`` rescores whole tables (new episodes); ``update(nodes, slots)``
    rescores, per row, the row and column of the slot whose node just changed. The table
    holds logits only, never the O(S^2 x hidden) pair activations.
    """

    def __init__(self, scorer: PairScorer | BilinearPairScorer) -> None:
        self.scorer = scorer
        self.table: Tensor | None = None

    @torch.no_grad()
    def reset(self, nodes: Tensor, rows: Tensor | None = None) -> Tensor:
        """Full rescoring of ``rows`` (long indices; default all). nodes: (B, S, E)."""
        if self.table is None or rows is None or self.table.shape[:2] != nodes.shape[:2]:
            self.table = self.scorer.all_pairs(nodes)
        elif len(rows):
            self.table[rows] = self.scorer.all_pairs(nodes[rows])
        return self.table

    @torch.no_grad()
    def update(
        self,
        nodes: Tensor,
        slots: Tensor,
        rows: Tensor | None = None,
        active: Tensor | None = None,
    ) -> Tensor:
        """Rescore row and column ``slots[r]`` of every row r in ``rows`` (default all).
        With ``active`` (B, S) bool, only pairs of active slots are rescored (the others
        keep stale logits, which a legal-action mask hides)."""
        if self.table is None:
            raise RuntimeError("IncrementalPairLogits.update before reset")
        if rows is None:
            rows = torch.arange(nodes.shape[0], device=nodes.device)
        if not len(rows):
            return self.table
        sub, at = nodes[rows], slots[rows]
        r = torch.arange(len(rows), device=nodes.device)
        new = sub[r, at][:, None]  # (R, 1, E)
        cols = r.new_zeros(0)
        if active is not None:  # the active slots first, cut to the most any row has
            cols, _ = core.active_first(active[rows])  # (R, K)
            sub = sub.gather(1, cols[..., None].expand(-1, -1, sub.shape[-1]))
        row = self.scorer.score_block(new, sub)[:, 0]  # (R, K): new node as left member
        col = self.scorer.score_block(sub, new)[:, :, 0]  # (R, K): as right member
        if active is None:
            self.table[rows, at, :] = row
            self.table[rows, :, at] = col
        else:
            self.table[rows[:, None], at[:, None], cols] = row
            self.table[rows[:, None], cols, at[:, None]] = col
        return self.table
