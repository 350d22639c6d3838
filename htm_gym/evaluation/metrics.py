"""Structure and classifier metrics of merge trees against ground-truth hierarchies."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np


def tree_constituents(children: np.ndarray, num_tokens: int) -> list[frozenset[int]]:
    """Leaf sets of every node created by the merges ``children`` (M, 2) of tree ids."""
    leaves: list[frozenset[int]] = [frozenset([i]) for i in range(num_tokens)]
    for a, b in children:
        leaves.append(leaves[int(a)] | leaves[int(b)])
    return leaves[num_tokens:]


def structure_scores(
    children: np.ndarray,
    lengths: np.ndarray,
    num_tokens: np.ndarray,
    gold: Callable[[int], Sequence[Sequence[int]]],
) -> dict[str, np.ndarray]:
    """Per instance: ``recovered`` (every gold constituent is a node of the merge tree: for
    crosses, exact pairing; for trees, subtree recovery) and unlabeled bracket ``f1``.

    children: (N, S-1, 2) tree ids per merge; lengths, num_tokens: (N,).
    """
    n = len(num_tokens)
    recovered = np.zeros(n, dtype=bool)
    f1 = np.zeros(n)
    cache: dict[int, set[frozenset[int]]] = {}
    for i in range(n):
        p = int(num_tokens[i])
        if p not in cache:
            cache[p] = {frozenset(c) for c in gold(p)}
        truth = cache[p]
        pred = set(tree_constituents(children[i, : int(lengths[i])], p))
        hit = len(truth & pred)
        recovered[i] = hit == len(truth)
        f1[i] = 2 * hit / max(len(truth) + len(pred), 1)
    return {"recovered": recovered, "f1": f1}


def classifier_report(
    internal_prob: np.ndarray, is_internal: np.ndarray, threshold: float = 0.5
) -> dict:
    """Report Table 1: leaves are the negative class, internal (merged) nodes the positive."""
    pred = internal_prob >= threshold
    y = is_internal.astype(bool)
    tp, fp = int((pred & y).sum()), int((pred & ~y).sum())
    fn, tn = int((~pred & y).sum()), int((~pred & ~y).sum())
    precision = tp / max(tp + fp, 1)
    recall = tp / max(tp + fn, 1)
    return {
        "accuracy": (tp + tn) / max(len(y), 1),
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / max(precision + recall, 1e-12),
        "false_positives": fp,
        "false_negatives": fn,
        "positives": int(y.sum()),
        "negatives": int((~y).sum()),
    }
