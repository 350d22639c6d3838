"""Token sets from a user's file: train on your own data in the reference ``.npz`` layout."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np

from htm_gym.datasets.base import TokenBatch, TokenGenerator, read_arrays, token_batch

SPLITS = ("train", "test", "all")


class TokenFileGenerator(TokenGenerator):
    """Draws token sets uniformly from a file (or arrays) in the reference ``.npz`` layout.

    The file holds ``tokens`` (N, P_max, T), NaN- or zero-padded past each set's
    ``num_tokens`` (N,), and optionally ``groups`` (P_max,) integers: token positions with
    the same label form a ground-truth constituent (e.g. the points of one cluster), as the
    built-in datasets fix their token order. Sets are split by a fixed permutation (seed 0)
    into ``train`` and ``test`` (``test_fraction`` held out), or ``all`` for a file that is
    already a split. The token normalisation comes from the data: ``token_loc`` is the mean
    of every real coordinate, ``token_scale`` their standard deviation. Pictures show
    ``[0, image_size]^2`` of the first two coordinates, ``image_size`` the largest of them.

    Arguments:
        path: an ``.npz`` file; or ``tokens`` and ``num_tokens`` arrays.
        split: "train", "test" or "all".
        test_fraction: share of the sets held out for "test".
    """

    name = "tokens"
    draw_size = 1

    def __init__(
        self,
        path: str | Path | None = None,
        tokens: np.ndarray | None = None,
        num_tokens: np.ndarray | None = None,
        groups: np.ndarray | None = None,
        split: str = "all",
        test_fraction: float = 0.1,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if not 0 < test_fraction < 1:
            raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
        if (path is None) == (tokens is None):
            raise ValueError(
                "the tokens dataset needs a file: dataset_kwargs={'path': 'sets.npz'} (or "
                "tokens= and num_tokens= arrays, not both)"
            )
        if path is not None:
            arrays = read_arrays(path)
            groups = arrays.get("groups", groups)
        elif num_tokens is None:
            raise ValueError("tokens need num_tokens (N,) beside them")
        else:
            arrays = {"tokens": tokens, "num_tokens": num_tokens}
        data = token_batch(arrays, str(path or "tokens"))
        self.path = None if path is None else str(path)
        self.split, self.test_fraction = split, test_fraction
        self.data = data
        self.groups = None if groups is None else np.asarray(groups).astype(np.int64)
        _, s, t = data.tokens.shape
        if self.groups is not None and self.groups.shape != (s,):
            raise ValueError(f"groups must have shape ({s},) (one label per token position)")
        self.indices = self._split_indices(split)
        self.token_dim = t
        self.max_tokens = int(data.num_tokens.max())
        self.min_tokens = int(data.num_tokens.min())
        real = data.tokens[np.arange(s)[None, :] < data.num_tokens[:, None]]  # (K, T)
        self.token_loc = float(real.mean())
        self.token_scale = float(max(real.std(), 1e-6))
        self.image_size = float(max(np.abs(real[:, :2]).max(), 1e-6))

    def _split_indices(self, split: str) -> np.ndarray:
        """Sorted indices of ``split`` under the fixed permutation (seed 0)."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        n = len(self.data)
        order = np.random.default_rng(0).permutation(n)
        if split == "all":
            return np.sort(order)
        n_test = max(1, round(self.test_fraction * n))
        if n - n_test < 1:
            raise ValueError(f"{n} token sets are too few to hold out {self.test_fraction:.0%}")
        return np.sort(order[:n_test] if split == "test" else order[n_test:])

    def with_split(self, split: str) -> TokenFileGenerator:
        """The same sets and normalisation, drawing from another split."""
        other = copy.copy(self)  # shares the checked arrays; only the indices differ
        other.split, other.indices = split, self._split_indices(split)
        return other

    def subset(self) -> TokenBatch:
        """Every set of this split, in file order (the held-out set of an evaluation)."""
        pick = self.indices
        return TokenBatch(
            self.data.tokens[pick, : self.max_tokens].copy(), self.data.num_tokens[pick].copy()
        )

    def build(self, draws: np.ndarray) -> TokenBatch:
        k = np.minimum((draws[:, 0] * len(self.indices)).astype(int), len(self.indices) - 1)
        pick = self.indices[k]
        return TokenBatch(
            self.data.tokens[pick, : self.max_tokens].copy(), self.data.num_tokens[pick].copy()
        )

    def constituents(self, num_tokens: int) -> list[tuple[int, ...]]:
        whole = tuple(range(num_tokens))
        if self.groups is None:
            return [whole]
        labels = self.groups[:num_tokens]
        out = [tuple(np.flatnonzero(labels == g).tolist()) for g in np.unique(labels)]
        return [c for c in out if 1 < len(c) < num_tokens] + [whole]
