"""The HTM loss (report 3.3), the classifier loss and the policy's entropy, as functions of a
replayed merge state. Per-instance terms are returned so that tests can check them by hand.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from htm_gym import core
from htm_gym.nets import HTMModel

MASK_VALUE = -1e9  # finite, so p * log p stays 0 (not NaN) at masked entries, gradients too


@dataclass(frozen=True)
class Weights:
    """lambda_s, lambda_t, lambda_l, lambda_e of the HTM loss, and the bias factor's inputs.

    ``recon`` weighs L_r (1 in the report); with the model's token normalisation it sets
    how L_r in normalised units balances the embedding-space terms.
    """

    step: float = 0.2
    transport: float = 0.2
    lifter: float = 0.01
    encoder: float = 0.001
    depth: float = 1.0  # d_c
    loss_power: float = 0.01  # l_p
    recon: float = 1.0
    forest: float = 0.0  # the skip-path loss of every intermediate forest (0: not computed)
    # L_r pooled over tokens (each instance weighted by P / mean P) rather than averaged per
    # instance: the same weighting as the pooled reconstruction MSE that is reported.
    pooled_recon: bool = False


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean over all but the batch dim of ``x`` (B, N, ...) where ``mask`` (B, N): (B,)."""
    m = mask.reshape(*mask.shape, *[1] * (x.dim() - mask.dim())).to(x.dtype)
    count = (m.expand_as(x)).flatten(1).sum(1)
    return (x * m).flatten(1).sum(1) / count.clamp(min=1)


def htm_terms(
    model: HTMModel, state: core.MergeState, step_losses: Tensor, tau: float
) -> dict[str, Tensor]:
    """Per-instance terms (B,) of the HTM loss after teacher-forced unmerging, plus the
    down tree (for the classifier) under key ``down``. ``recon`` is in the model's
    normalised token units (token units / token_scale), the others in embedding units."""
    s = state.num_slots
    up = state.tree  # (B, 2S-1, E)
    down = core.unmerge(model, state, teacher_mix=tau)  # (B, 2S-1, E)
    real = core.token_mask(state)  # (B, S)
    target = model.normalize(state.tokens)  # (B, S, T)
    recon = model.unlifter(down[:, :s])  # (B, S, T) normalised units
    exists = core.node_mask(state)  # (B, 2S-1)
    is_root = core.root_mask(state)
    ids = torch.arange(2 * s - 1, device=up.device)[None, :]
    internal = exists & (ids >= state.num_tokens[:, None])
    merges = state.merges.clamp(min=1).to(step_losses.dtype)
    return {
        "recon": masked_mean((recon - target).pow(2), real),
        "step": step_losses.sum(1) / merges,
        "transport": masked_mean(((1 - tau) * (down - up.detach())).pow(2), exists & ~is_root),
        "lifter": masked_mean(up[:, :s].pow(2), real),
        "encoder": masked_mean(up.pow(2), internal),
        "down": down,
    }


def bias_factor(num_tokens: Tensor, depth: float, loss_power: float) -> Tensor:
    """f_b = min(1, (P - 1) / d_c) ** l_p per instance (report 3.3.3)."""
    return ((num_tokens - 1).float() / depth).clamp(max=1.0).pow(loss_power)


def htm_loss(terms: dict[str, Tensor], num_tokens: Tensor, w: Weights) -> Tensor:
    recon = terms["recon"]
    if w.pooled_recon:
        p = num_tokens.to(recon.dtype)
        recon = recon * p / p.mean()
    per_instance = (
        w.recon * recon
        + w.step * terms["step"]
        + w.transport * terms["transport"]
        + w.lifter * terms["lifter"]
        + w.encoder * terms["encoder"]
    )
    if w.forest:
        per_instance = per_instance + w.forest * terms["forest"]
    return (bias_factor(num_tokens, w.depth, w.loss_power) * per_instance).mean()


def masked_log_probs(logits: Tensor, legal: Tensor, temperature: Tensor | float = 1.0) -> Tensor:
    """log pi over the flattened legal pairs: logits (B, A), legal (B, A) bool -> (B, A)."""
    return torch.log_softmax((logits / temperature).masked_fill(~legal, MASK_VALUE), dim=-1)


def normalized_entropy(log_probs: Tensor, legal: Tensor) -> Tensor:
    """Entropy over legal actions divided by log(#legal), in [0, 1]: (B,)."""
    n = legal.sum(-1)
    h = -(log_probs.exp() * log_probs * legal).sum(-1)
    return torch.where(n > 1, h / n.clamp(min=2).float().log(), torch.zeros_like(h))
