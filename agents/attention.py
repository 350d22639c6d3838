"""A set-attention merge policy (report 5.2, future work): each pair is scored with the
whole active population as context, against the myopia of scoring pairs in isolation.

Plugs into ``train/reinforce.py --agent agents.attention:AttentionLearner``: the same
REINFORCE-with-baseline and HTM co-training as :class:`ReinforceLearner`, with only the pair
scorer swapped.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from agents.reinforce import ReinforceConfig, ReinforceLearner
from agents.schedules import Schedule
from htm_gym.nets import HTMModel, PairScorer


class SetAttentionScorer(nn.Module):
    """Self-attention over the active nodes, then a pair MLP on [node, context] features.

    The attention is permutation-equivariant over slots and masks inactive ones, so a
    pair's logit depends on every other active node; the pair MLP reuses the factorised
    all-pairs form of :class:`PairScorer`.
    """

    def __init__(
        self, embed_dim: int, width: int = 64, heads: int = 4, layers: int = 2, hidden: int = 64
    ) -> None:
        super().__init__()
        self.inp = nn.Linear(embed_dim, width)
        layer = nn.TransformerEncoderLayer(
            width, heads, 2 * width, dropout=0.0, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.pairs = PairScorer(embed_dim + width, hidden)

    def forward(self, nodes: Tensor, active: Tensor) -> Tensor:  # (B,S,E),(B,S) -> (B,S*S)
        b, s, _ = nodes.shape
        # A row with no active slot (being reset) would attend to nothing: NaN. Its logits
        # are masked out anyway, so let it attend everywhere.
        pad = ~active & active.any(1, keepdim=True)  # (B, S)
        ctx = self.encoder(self.inp(nodes), src_key_padding_mask=pad)  # (B, S, W)
        return self.pairs.all_pairs(torch.cat([nodes, ctx], -1)).reshape(b, s * s)


class AttentionLearner(ReinforceLearner):
    """REINFORCE co-training with a :class:`SetAttentionScorer` policy (the learner's own
    module, saved in its state dict; the HTM model's pairwise policy is left unused)."""

    def __init__(
        self,
        model: HTMModel,
        schedule: Schedule,
        config: ReinforceConfig | None = None,
        seed: int = 0,
        width: int = 64,
        layers: int = 2,
    ) -> None:
        device = next(model.parameters()).device
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.scorer = SetAttentionScorer(model.embed_dim, width, layers=layers).to(device)
        super().__init__(model, schedule, config or ReinforceConfig(policy="learned"), seed)
        if self.config.policy != "learned":
            raise ValueError("AttentionLearner learns its policy: config.policy must be 'learned'")

    def pair_logits(self, nodes: Tensor, active: Tensor) -> Tensor:
        return self.scorer(nodes, active)

    def policy_parameters(self) -> list[nn.Parameter]:
        return list(self.scorer.parameters())

    def state_dict(self) -> dict[str, Any]:
        return super().state_dict() | {"scorer": self.scorer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.scorer.load_state_dict(state["scorer"])
