"""Roll a policy out to the root on a token set and score the trees it builds."""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import torch

from htm_gym import core
from htm_gym.datasets import TokenBatch, TokenGenerator
from htm_gym.envs.vector_env import HTMVectorEnv, play_round
from htm_gym.evaluation import metrics
from htm_gym.nets import HTMModel


class Policy(Protocol):
    """What evaluation needs of a policy: flat actions (B,) for batched torch observations
    and the legal-action mask (B, S*S), as :class:`agents.base.Learner` acts. A baseline
    that reads the data instead of the observation may also define ``bind(idx)``: it is
    called with the data indices of each batch's rows before the batch plays."""

    def act(self, obs: dict[str, torch.Tensor], action_mask: torch.Tensor) -> torch.Tensor: ...


@torch.no_grad()
def rollout_tokens(
    model: HTMModel,
    generator: TokenGenerator,
    data: TokenBatch,
    policy: Policy,
    batch_size: int = 4096,
    seed: int = 0,
    noise_std: float | None = None,
    max_merges: int | None = None,
) -> dict[str, np.ndarray]:
    """Merge every instance of ``data`` to the root with ``policy`` in the vector env (with
    as many slots as ``data`` has, or the dataset's largest P if more).

    Instance k plays with env seed ``seed + k`` whatever batch it lands in. Batches hold one
    token count P each, so every row of a batch ends at the same step: no row idles through
    the merges of a longer one (crosses: 3 merges per instance on average instead of 5).

    Returns per-instance arrays in ``data``'s order: reconstructions ``rec`` (token units),
    merge ``children``, ``lengths``, episode ``returns``, up-tree embeddings ``tree``
    (n, 2S-1, E), and per-node classifier probabilities/labels of the down trees (node
    order: instance by instance).
    """
    slots = max(generator.max_tokens, data.tokens.shape[1])
    parts: list[tuple[np.ndarray, dict[str, np.ndarray]]] = []
    order = np.argsort(data.num_tokens, kind="stable")
    bounds = np.flatnonzero(np.diff(data.num_tokens[order])) + 1
    for same_p in np.split(order, bounds):
        for start in range(0, len(same_p), batch_size):
            idx = same_p[start : start + batch_size]
            venv = HTMVectorEnv(
                len(idx),
                dataset=generator,
                model=model,
                array_type="torch",
                noise_std=noise_std,
                max_merges=max_merges,
                max_tokens=slots,
            )
            options = {"tokens": data.tokens[idx], "num_tokens": data.num_tokens[idx]}
            if hasattr(policy, "bind"):
                policy.bind(idx)
            parts.append((idx, _play(model, venv, policy, [seed + int(k) for k in idx], options)))
    return _in_data_order(parts, len(data))


def _play(
    model: HTMModel, venv: HTMVectorEnv, policy: Policy, seeds: list[int], options: dict
) -> dict[str, np.ndarray]:
    record, _ = play_round(venv, policy.act, seed=seeds, options=options)
    state = record.state  # the trees as the env built them: nothing to replay
    down = core.unmerge(model, state)
    logits, labels = core.classifier_inputs(model, state, down)
    return {
        "rec": model.unlift(down[:, : state.num_slots]).cpu().numpy(),
        "children": state.children.cpu().numpy(),
        "lengths": state.merges.cpu().numpy(),
        "prob": torch.softmax(logits, -1)[:, 1].cpu().numpy(),
        "label": labels.cpu().numpy(),
        "tree": state.tree.cpu().numpy(),
        "returns": record.rewards.sum(1).cpu().numpy(),
        "nodes": core.node_mask(state).sum(1).cpu().numpy(),  # classified nodes per row
    }


def _in_data_order(
    parts: list[tuple[np.ndarray, dict[str, np.ndarray]]], n: int
) -> dict[str, np.ndarray]:
    """Per-instance arrays back in data order; per-node arrays regrouped instance by instance."""
    idx = np.concatenate([i for i, _ in parts])
    out: dict[str, np.ndarray] = {}
    for key in ("rec", "children", "lengths", "tree", "returns"):
        rows = np.concatenate([r[key] for _, r in parts])
        out[key] = np.empty_like(rows)
        out[key][idx] = rows
    counts = np.concatenate([r["nodes"] for _, r in parts])
    first = np.cumsum(counts) - counts  # where each played row's nodes start
    played = np.empty(n, dtype=np.int64)
    played[idx] = np.arange(n)  # instance k was played as row played[k]
    size = counts[played]  # nodes of each instance, in data order
    take = np.repeat(first[played] - (np.cumsum(size) - size), size) + np.arange(size.sum())
    for key in ("prob", "label"):
        out[key] = np.concatenate([r[key] for _, r in parts])[take]
    return out


def rollout_to_root(
    model: HTMModel,
    generator: TokenGenerator,
    data: TokenBatch,
    policy: Policy,
    seed: int = 0,
    noise_std: float | None = 0.0,
) -> dict[str, np.ndarray]:
    """:func:`rollout_tokens`, checked to have merged every instance to its root; noise-free
    by default, so a density fitted to the trees models the encoder, not the training noise."""
    r = rollout_tokens(model, generator, data, policy, seed=seed, noise_std=noise_std)
    if (r["lengths"] != data.num_tokens - 1).any():
        raise ValueError("some episodes stopped before the root; roots need to-root merging")
    return r


def collect_roots(
    model: HTMModel,
    generator: TokenGenerator,
    data: TokenBatch,
    policy: Policy,
    seed: int = 0,
    noise_std: float | None = 0.0,
) -> np.ndarray:
    """Root embeddings (n, E) of ``data`` merged to the root by ``policy`` (report 3.8.1)."""
    r = rollout_to_root(model, generator, data, policy, seed, noise_std)
    return r["tree"][np.arange(len(data)), data.num_tokens + r["lengths"] - 1]


def squared_errors(rec: np.ndarray, data: TokenBatch) -> tuple[np.ndarray, np.ndarray]:
    """Per instance: the sum of squared reconstruction errors in token units^2 and the number
    of real coordinates (P * T), padding excluded: (n,) each."""
    real = np.arange(data.tokens.shape[1])[None, :] < data.num_tokens[:, None]
    sq = np.where(real[..., None], (rec - np.nan_to_num(data.tokens)) ** 2, 0.0)
    return sq.sum((1, 2)), real.sum(1) * data.tokens.shape[2]


def instance_mse(rec: np.ndarray, data: TokenBatch) -> np.ndarray:
    """Per-instance reconstruction MSE in token units^2, padding excluded: (n,)."""
    sse, count = squared_errors(rec, data)
    return sse / count


def pooled_mse(sse: np.ndarray, count: np.ndarray) -> float:
    """The original work's MSE: every coordinate of every instance weighs the same, so a
    P = 6 image counts three times a P = 2 one (unlike the mean of per-instance MSEs)."""
    return float(sse.sum() / max(count.sum(), 1))


def evaluate(
    model: HTMModel,
    generator: TokenGenerator,
    data: TokenBatch,
    policy: Policy,
    batch_size: int = 4096,
    seed: int = 0,
    noise_std: float | None = None,
    max_merges: int | None = None,
) -> dict[str, Any]:
    """Structure, reconstruction and classifier metrics of ``policy`` on ``data``
    (merging to the root, or ``max_merges`` merges per instance)."""
    r = rollout_tokens(model, generator, data, policy, batch_size, seed, noise_std, max_merges)
    num = data.num_tokens
    sse, count = squared_errors(r["rec"], data)
    mse = sse / count
    s = metrics.structure_scores(r["children"], r["lengths"], num, generator.constituents)
    result: dict[str, Any] = {
        "instances": len(num),
        "recovered": float(s["recovered"].mean()),
        "bracket_f1": float(s["f1"].mean()),
        "recon_mse_pooled": pooled_mse(sse, count),
        "recon_mse": float(mse.mean()),
        "recon_mse_median": float(np.median(mse)),
        "mean_return": float(r["returns"].mean()),
        "classifier": metrics.classifier_report(r["prob"], r["label"]),
        "per_p": {},
    }
    for p in np.unique(num):
        sel = num == p
        result["per_p"][int(p)] = {
            "count": int(sel.sum()),
            "recovered": float(s["recovered"][sel].mean()),
            "bracket_f1": float(s["f1"][sel].mean()),
            "recon_mse_pooled": pooled_mse(sse[sel], count[sel]),
            "recon_mse": float(mse[sel].mean()),
            "recon_mse_median": float(np.median(mse[sel])),
        }
    return result
