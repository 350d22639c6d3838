"""Plug-in learners through ``train/reinforce.py --agent module:Class``."""

from __future__ import annotations

import sys
import types

import pytest
import torch

from agents.attention import AttentionLearner, SetAttentionScorer
from agents.base import EpisodeBatch
from agents.plugins import import_learner
from agents.policies import sample
from tests.test_scripts import _args, evaluate, reinforce


class TinyLearner:
    """A complete minimal learner: pair logits = -w * distance between node embeddings,
    one gradient step on w per update (the HTM model is left untrained)."""

    def __init__(self, model, schedule, seed: int = 0) -> None:
        self.model = model
        self.w = torch.zeros((), requires_grad=True)
        self.opt = torch.optim.SGD([self.w], lr=0.1)
        self.gen = torch.Generator().manual_seed(seed)
        self.updates = 0

    def _logp(self, nodes, mask):
        logits = -self.w * torch.cdist(nodes, nodes).flatten(1)
        return torch.log_softmax(logits.masked_fill(~mask.bool(), -1e9), -1)

    def act(self, obs, action_mask, greedy=False):
        with torch.no_grad():
            return sample(self._logp(obs["nodes"], action_mask), self.gen, greedy)

    def update(self, episodes: EpisodeBatch) -> dict[str, float]:
        self.updates += 1
        ret = episodes.returns()
        loss = (self.w - ret.mean()).pow(2)  # a stand-in objective: w tracks the return
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return {"mean_return": float(ret.mean()), "custom/w": float(self.w.detach())}

    def state_dict(self):
        return {"w": self.w.detach().clone(), "updates": self.updates}

    def load_state_dict(self, state):
        with torch.no_grad():
            self.w.copy_(state["w"])
        self.updates = state["updates"]


@pytest.fixture
def plugin_module():
    mod = types.ModuleType("htm_test_plugin")
    mod.TinyLearner = TinyLearner
    sys.modules[mod.__name__] = mod
    yield mod.__name__
    del sys.modules[mod.__name__]


def test_custom_learner_trains_through_agent_flag(tmp_path, plugin_module):
    spec = f"{plugin_module}:TinyLearner"
    run = reinforce.main(_args(tmp_path, run_name="tiny", agent=spec, stage_steps=(1, 1, 3)))
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    assert ckpt["learner"]["updates"] == 5 and ckpt["update"] == 5
    assert float(ckpt["learner"]["w"]) != 0.0, "the learner's update ran"
    res = evaluate.main(evaluate.Args(checkpoint=str(run), num_instances=12, batch_size=8))
    assert 0 <= res["greedy"]["recovered"] <= 1

    part = reinforce.main(
        _args(tmp_path, run_name="tiny2", agent=spec, stage_steps=(1, 1, 3), max_updates=2)
    )
    reinforce.main(reinforce.Args(resume=str(part), progress=False))
    assert torch.load(part / "checkpoint.pt", weights_only=True)["learner"]["updates"] == 5


@pytest.mark.parametrize(
    "spec, message",
    [
        ("no_colon", "package.module:Class"),
        ("no_such_module_xyz:Foo", "cannot import"),
        ("agents.attention:Nope", "no class"),
        ("agents.base:EpisodeBatch", "Learner protocol"),
    ],
)
def test_bad_agent_specs_fail_clearly(tmp_path, spec, message):
    with pytest.raises((SystemExit, ValueError, TypeError), match=message):
        reinforce.main(_args(tmp_path, run_name="bad", agent=spec))


def test_import_learner():
    assert import_learner("agents.attention:AttentionLearner") is AttentionLearner


def test_attention_scorer_uses_context_and_ignores_padding():
    torch.manual_seed(0)
    scorer = SetAttentionScorer(embed_dim=5, width=16)
    nodes = torch.randn(1, 4, 5)
    active = torch.tensor([[True, True, True, False]])
    base = scorer(nodes, active).reshape(4, 4)
    moved = nodes.clone()
    moved[0, 2] += 3.0  # another active node changes: the (0, 1) logit changes
    assert not torch.allclose(scorer(moved, active).reshape(4, 4)[0, 1], base[0, 1])
    padded = nodes.clone()
    padded[0, 3] += 3.0  # an inactive slot changes: active pairs keep their logits
    torch.testing.assert_close(scorer(padded, active).reshape(4, 4)[:3, :3], base[:3, :3])
    assert torch.isfinite(scorer(nodes, torch.zeros(1, 4, dtype=torch.bool))).all()


def test_attention_learner_trains_through_agent_flag(tmp_path):
    run = reinforce.main(
        _args(tmp_path, run_name="attn", agent="agents.attention:AttentionLearner")
    )
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    assert "scorer" in ckpt["learner"]
    res = evaluate.main(evaluate.Args(checkpoint=str(run), num_instances=12, batch_size=8))
    assert res["greedy"]["instances"] == 12
