"""Scores of generated token sets: structural validity, mode coverage and novelty.

FID would need Inception weights and, as the report notes, says little about sparse line
drawings; these checks use each dataset's own geometry instead (``TokenGenerator.is_valid``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from htm_gym.datasets import TokenBatch, TokenGenerator


def sample_validity(generator: TokenGenerator, samples: TokenBatch) -> np.ndarray:
    """(n,) bool: ``generator.is_valid`` of every sample."""
    return np.array([generator.is_valid(samples[i]) for i in range(len(samples))], dtype=bool)


def _token_distances(x: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Distances (N, P, P) between the tokens of x (P, T) and of each ys[n] (N, P, T).
    A 4-d token is a segment, so its two endpoint orders are the same token."""
    d = np.linalg.norm(x[None, :, None] - ys[:, None], axis=-1)
    if x.shape[-1] == 4:
        flipped = np.concatenate([ys[..., 2:], ys[..., :2]], axis=-1)
        d = np.minimum(d, np.linalg.norm(x[None, :, None] - flipped[:, None], axis=-1))
    return d


def novelty(samples: TokenBatch, train: TokenBatch, radius: float) -> np.ndarray:
    """(n,) bool: no training instance with the same token count lies within ``radius``
    (symmetric Hausdorff distance between the token sets, in token units)."""
    out = np.ones(len(samples), dtype=bool)
    by_p = {int(p): train.tokens[train.num_tokens == p, :p] for p in np.unique(train.num_tokens)}
    for i in range(len(samples)):
        ys = by_p.get(int(samples.num_tokens[i]))
        if ys is None or not len(ys):
            continue
        d = _token_distances(samples[i].astype(np.float64), ys)
        hausdorff = np.maximum(d.min(2).max(1), d.min(1).max(1))  # (N,)
        out[i] = bool(hausdorff.min() > radius)
    return out


def count_distribution(num_tokens: np.ndarray, values: np.ndarray) -> dict[int, float]:
    n = max(len(num_tokens), 1)
    return {int(p): float((num_tokens == p).sum() / n) for p in values}


def generation_report(
    generator: TokenGenerator,
    samples: TokenBatch,
    train: TokenBatch,
    truncated: np.ndarray | None = None,
    novelty_radius: float = 2.0,
) -> dict[str, Any]:
    """Validity, the token-count distribution of valid samples against the data's, and the
    novelty of valid samples against ``train`` (instances the model was trained on)."""
    try:
        valid = sample_validity(generator, samples)
    except NotImplementedError as e:  # a dataset without a structural checker
        return {"samples": len(samples), "validity": None, "note": str(e)}
    counts = np.unique(np.concatenate([train.num_tokens, samples.num_tokens]))
    data_dist = count_distribution(train.num_tokens, np.unique(train.num_tokens))
    valid_dist = count_distribution(samples.num_tokens[valid], np.unique(train.num_tokens))
    good = TokenBatch(samples.tokens[valid], samples.num_tokens[valid])
    novel = novelty(good, train, novelty_radius) if len(good) else np.zeros(0, bool)
    return {
        "samples": len(samples),
        "validity": float(valid.mean()) if len(valid) else 0.0,
        "valid_count_distribution": valid_dist,
        "data_count_distribution": data_dist,
        "max_count_deviation": max(abs(valid_dist[p] - data_dist[p]) for p in data_dist),
        "all_sample_count_distribution": count_distribution(samples.num_tokens, counts),
        "novel_fraction_of_valid": float(novel.mean()) if len(novel) else 0.0,
        "novelty_radius": novelty_radius,
        "truncated": float(np.mean(truncated)) if truncated is not None else None,
    }
