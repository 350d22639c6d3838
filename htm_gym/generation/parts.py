"""A root sampler that composes roots from parts of encoded trees with the model's own merger.

A full-covariance Gaussian mixture over roots (the report's 3.8.1) puts most of its mass off
the thin, curved set of roots the encoder makes, and those roots decode to invalid token sets
(crosses: validity about 0.02). ``PartsSampler`` needs a density only over *parts*: the
cherries of the encoded training trees (internal nodes whose two children are leaves: for
crosses, one cross each) and the leaves outside any cherry. A sample draws the part counts of
a training tree, draws that many parts, and lets the learned pair scorer merge them
greedily to a root with the merger, as the encoder does above the cherries. The decoder then
unmerges that root as usual. A drawn part is a stored part, moved a uniform fraction of the
way toward one of its ``neighbours`` nearest stored parts (0: not moved), plus Gaussian
jitter of width ``bandwidth``. Jitter alone leaves the thin set of parts before it makes a
new one (crosses: every part within 2 px of a training cross at the widths that stay
valid); a chord between near neighbours stays close to that set.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from sklearn.neighbors import NearestNeighbors

from htm_gym.nets import HTMModel


def tree_parts(
    children: np.ndarray, tree: np.ndarray, num_tokens: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cherries and lone leaves of merge trees built to the root.

    children: (N, S-1, 2) tree ids of each merge (leaves 0..P-1, merge k makes P+k);
    tree: (N, 2S-1, E) node embeddings; num_tokens: (N,).
    Returns cherries (C, E), lone leaves (L, E) and per-tree counts (N, 2) of each.
    """
    n, m = children.shape[:2]
    p = num_tokens[:, None]  # (N, 1)
    k = np.arange(m)[None, :]  # (1, S-1)
    made = k < p - 1  # (N, S-1) merges that happened
    cherry = made & (children[..., 0] < p) & (children[..., 1] < p)
    rows, merge = np.nonzero(cherry)
    cherries = tree[rows, num_tokens[rows] + merge]
    in_cherry = np.zeros((n, tree.shape[1]), dtype=bool)
    for side in (0, 1):
        in_cherry[rows, children[rows, merge, side]] = True
    lone = (np.arange(tree.shape[1])[None, :] < p) & ~in_cherry  # (N, 2S-1)
    counts = np.stack([cherry.sum(1), lone.sum(1)], axis=1)
    return cherries, tree[lone], counts


@torch.no_grad()
def compose_roots(model: HTMModel, parts: torch.Tensor) -> torch.Tensor:
    """Merge parts (B, k, E) to roots (B, E): at each step the ordered pair the model's pair
    scorer rates highest is merged by the merger (the greedy learned policy's choice)."""
    nodes = parts
    while nodes.shape[1] > 1:
        b, k, e = nodes.shape
        eye = torch.eye(k, dtype=torch.bool, device=nodes.device)
        logits = model.policy.all_pairs(nodes).masked_fill(eye, float("-inf"))  # (B, k, k)
        flat = logits.reshape(b, k * k).argmax(1)
        i, j = flat // k, flat % k
        rows = torch.arange(b, device=nodes.device)
        merged = model.merge(nodes[rows, i], nodes[rows, j])  # (B, E)
        keep = torch.ones(b, k, dtype=torch.bool, device=nodes.device)
        keep[rows, i] = False
        keep[rows, j] = False
        nodes = torch.cat([nodes[keep].reshape(b, k - 2, e), merged[:, None]], dim=1)
    return nodes[:, 0]


def nearest_parts(pool: np.ndarray, k: int) -> np.ndarray:
    """Indices (n, k') of each part's k nearest other parts, k' = min(k, n - 1)."""
    k = min(k, len(pool) - 1)
    if k <= 0:
        return np.zeros((len(pool), 0), dtype=np.int64)
    _, idx = NearestNeighbors(n_neighbors=k + 1).fit(pool).kneighbors(pool)
    return idx[:, 1:].astype(np.int64)  # column 0 is the part itself


@dataclass
class PartsSampler:
    """Roots composed from jittered cherries and lone leaves of encoded training trees.

    ``sample`` needs the model whose merger and pair scorer compose the parts: ``bind`` it
    first (``generation.generate`` does).
    """

    cherries: np.ndarray  # (C, E)
    leaves: np.ndarray  # (L, E)
    counts: np.ndarray  # (N, 2) cherries and lone leaves per training tree
    bandwidth: float
    cherry_neighbours: np.ndarray  # (C, k) indices into cherries
    leaf_neighbours: np.ndarray  # (L, k) indices into leaves
    kind: ClassVar[str] = "parts"
    model: HTMModel | None = None

    @classmethod
    def fit(
        cls,
        children: np.ndarray,
        tree: np.ndarray,
        num_tokens: np.ndarray,
        bandwidth: float = 0.01,
        neighbours: int = 0,
    ) -> PartsSampler:
        if not (np.isfinite(bandwidth) and bandwidth >= 0):
            raise ValueError(f"bandwidth must be finite and >= 0, got {bandwidth}")
        if neighbours < 0:
            raise ValueError(f"neighbours must be >= 0, got {neighbours}")
        if not np.isfinite(tree).all():
            raise ValueError("tree embeddings must be finite")
        cherries, leaves, counts = tree_parts(children, tree, num_tokens)
        if not len(counts) or (counts.sum(1) == 0).any():
            raise ValueError("every tree needs at least one part; pass trees built to the root")
        cherries, leaves = cherries.astype(np.float32), leaves.astype(np.float32)
        return cls(
            cherries,
            leaves,
            counts,
            bandwidth,
            nearest_parts(cherries, neighbours),
            nearest_parts(leaves, neighbours),
        )

    def bind(self, model: HTMModel) -> PartsSampler:
        if model.embed_dim != self.cherries.shape[1]:
            raise ValueError(
                f"parts are {self.cherries.shape[1]}-d, the model embeds in {model.embed_dim}"
            )
        self.model = model
        return self

    def _draw(
        self, pool: np.ndarray, near: np.ndarray, n: int, rng: np.random.Generator
    ) -> np.ndarray:
        if n and not len(pool):
            raise ValueError("a part count asks for parts of a kind the trees never had")
        if not n:
            return pool[:0]
        pick = rng.integers(len(pool), size=n)
        part = pool[pick].astype(np.float64)  # (n, E)
        if near.shape[1]:
            other = near[pick, rng.integers(near.shape[1], size=n)]
            part += rng.random((n, 1)) * (pool[other] - part)
        noise = rng.standard_normal((n, pool.shape[1]))
        return (part + self.bandwidth * noise).astype(np.float32)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        if self.model is None:
            raise RuntimeError("PartsSampler.sample needs bind(model) first")
        counts = self.counts[rng.integers(len(self.counts), size=n)]  # (n, 2)
        e = self.cherries.shape[1]
        roots = np.zeros((n, e), dtype=np.float32)
        dev = next(self.model.parameters()).device
        for c, leaf in np.unique(counts, axis=0):  # one batch per part-count pattern
            rows = np.flatnonzero((counts == (c, leaf)).all(1))
            cherries = self._draw(self.cherries, self.cherry_neighbours, len(rows) * c, rng)
            leaves = self._draw(self.leaves, self.leaf_neighbours, len(rows) * leaf, rng)
            parts = np.concatenate(
                [cherries.reshape(len(rows), c, e), leaves.reshape(len(rows), leaf, e)], axis=1
            )
            composed = compose_roots(self.model, torch.as_tensor(parts, device=dev))
            roots[rows] = composed.float().cpu().numpy()
        return roots

    def state_dict(self) -> dict[str, np.ndarray]:
        return {
            "cherries": self.cherries,
            "leaves": self.leaves,
            "counts": self.counts,
            "bandwidth": np.asarray(self.bandwidth),
            "cherry_neighbours": self.cherry_neighbours,
            "leaf_neighbours": self.leaf_neighbours,
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, np.ndarray]) -> PartsSampler:
        cherries = np.asarray(state["cherries"], dtype=np.float32)
        leaves = np.asarray(state["leaves"], dtype=np.float32)
        return cls(
            cherries,
            leaves,
            np.asarray(state["counts"], dtype=np.int64),
            float(state["bandwidth"]),
            np.asarray(state["cherry_neighbours"], dtype=np.int64),
            np.asarray(state["leaf_neighbours"], dtype=np.int64),
        )
