"""The HTM loss, the policy's entropy and the recon weighting, by hand (agents.losses)."""

from __future__ import annotations

import pytest
import torch
from conftest import fixed_tree, small_model

from agents import losses
from htm_gym import core


def test_htm_terms_by_hand():
    model = small_model()
    state, step_losses = fixed_tree(model)
    tau = 0.25
    terms = losses.htm_terms(model, state, step_losses, tau)
    # by hand, node by node
    x = torch.tensor([[1.0, 2.0], [3.0, -1.0], [0.5, 0.5]]) / 2.0
    leaves = model.lifter(x)
    n3 = model.merger(torch.cat([leaves[0], leaves[1]]))
    n4 = model.merger(torch.cat([n3, leaves[2]]))
    s1 = ((model.unmerger(n3) - torch.cat([leaves[0], leaves[1]])) ** 2).mean()
    s2 = ((model.unmerger(n4) - torch.cat([n3, leaves[2]])) ** 2).mean()
    d3, d2 = model.unmerger(n4).split(model.embed_dim)
    d0, d1 = model.unmerger((1 - tau) * d3 + tau * n3).split(model.embed_dim)
    recon = model.unlifter(torch.stack([d0, d1, d2]))
    assert torch.allclose(terms["step"][0], (s1 + s2) / 2, atol=1e-6)
    assert torch.allclose(terms["recon"][0], ((recon - x) ** 2).mean(), atol=1e-6)
    down = torch.stack([d0, d1, d2, d3])
    up = torch.stack([leaves[0], leaves[1], leaves[2], n3])
    assert torch.allclose(
        terms["transport"][0], ((1 - tau) ** 2 * (down - up) ** 2).mean(), atol=1e-6
    )
    assert torch.allclose(terms["lifter"][0], (leaves**2).mean(), atol=1e-6)
    assert torch.allclose(terms["encoder"][0], (torch.stack([n3, n4]) ** 2).mean(), atol=1e-6)
    w = losses.Weights(0.2, 0.3, 0.01, 0.001, depth=4.0, loss_power=0.5)
    total = losses.htm_loss(terms, state.num_tokens, w)
    fb = (2 / 4) ** 0.5
    expected = fb * (
        terms["recon"]
        + 0.2 * terms["step"]
        + 0.3 * terms["transport"]
        + 0.01 * terms["lifter"]
        + 0.001 * terms["encoder"]
    )
    assert torch.allclose(total, expected[0], atol=1e-6)
    heavier = losses.htm_loss(
        terms, state.num_tokens, losses.Weights(0.2, 0.3, 0.01, 0.001, 4.0, 0.5, 3.0)
    )
    assert torch.allclose(heavier - total, fb * 2.0 * terms["recon"][0], atol=1e-6)
    logits, labels = core.classifier_inputs(model, state, terms["down"])
    assert labels.tolist() == [0, 0, 0, 1, 1], "3 leaves, 2 merged nodes"
    assert logits.shape == (5, 2)


def test_normalized_entropy_bounds():
    legal = torch.tensor([[True, True, True, False]])
    uniform = losses.masked_log_probs(torch.zeros(1, 4), legal)
    assert torch.allclose(losses.normalized_entropy(uniform, legal), torch.ones(1))
    peaked = losses.masked_log_probs(torch.tensor([[50.0, 0, 0, 99]]), legal)
    assert losses.normalized_entropy(peaked, legal) < 1e-6
    assert uniform[0, 3].exp() == 0 and torch.isfinite(uniform).all()


def test_pooled_recon_weighs_each_set_by_its_token_count():
    terms = {k: torch.zeros(2) for k in ("step", "transport", "lifter", "encoder", "forest")}
    terms["recon"] = torch.tensor([1.0, 4.0])  # per-instance mean squared errors
    num = torch.tensor([2, 6])
    w = losses.Weights(depth=1.0, loss_power=0.0)
    assert float(losses.htm_loss(terms, num, w)) == pytest.approx((1.0 + 4.0) / 2)
    pooled = losses.htm_loss(
        terms, num, losses.Weights(depth=1.0, loss_power=0.0, pooled_recon=True)
    )
    assert float(pooled) == pytest.approx((2 * 1.0 + 6 * 4.0) / (2 + 6))
