"""Distillation (agents.teacher): the student's env merges exactly the teacher's pairs on
the teacher's token sets, and imitation trains the policy toward the merges made."""

from __future__ import annotations

import pytest
import torch
from conftest import small_model

from agents.base import EpisodeBatch
from agents.collector import EpisodeCollector
from agents.reinforce import ReinforceConfig, ReinforceLearner
from agents.schedules import Schedule, Stage
from agents.teacher import Teacher, follow
from htm_gym import core, env_generator
from htm_gym.envs.vector_env import HTMVectorEnv
from htm_gym.nets import HTMConfig, make_model

LEARNED = {"args": {"policy": "learned"}}


def _trees_model(embed_dim: int, seed: int):
    cfg = HTMConfig(token_dim=2, embed_dim=embed_dim, hidden_dim=16, policy_hidden_dim=8)
    return make_model(cfg, seed=seed)


def _student(n: int):
    gen = env_generator("HTM-Trees-v0")
    venv = HTMVectorEnv(n, dataset=gen, model=_trees_model(16, 2), array_type="torch")
    return gen, EpisodeCollector(venv)


@pytest.mark.parametrize("max_merges", [None, 2])
def test_the_student_merges_the_teachers_pairs_on_its_token_sets(max_merges):
    gen, collector = _student(16)
    teacher = Teacher(_trees_model(7, 1), LEARNED, gen, 16)  # another embedding width
    taught = teacher.play(seed=3, max_merges=max_merges)
    collector.venv.set_max_merges(max_merges)
    got = follow(collector, taught, seed=3)
    assert torch.equal(got.tokens, taught.tokens) and torch.equal(got.pairs, taught.pairs)
    assert int(got.lengths.max()) == (max_merges or gen.max_tokens - 1)
    again = teacher.play(seed=4, max_merges=max_merges)  # a new round, new sets
    assert not torch.equal(again.tokens, taught.tokens)
    assert torch.equal(follow(collector, again, seed=4).pairs, again.pairs)


def test_follow_refuses_a_round_the_student_could_not_replay():
    gen, collector = _student(8)
    taught = Teacher(_trees_model(7, 1), LEARNED, gen, 8).play(seed=3, max_merges=None)
    cut = EpisodeBatch(**{**taught.__dict__, "lengths": taught.lengths - 1})
    with pytest.raises(RuntimeError, match="did not merge the teacher's pairs"):
        follow(collector, cut, seed=3)


def _batch(n=64):
    """P = 2 episodes that all merge slot pair (1, 0) although (0, 1) pays more."""
    model = small_model(seed=4)
    tokens = torch.tensor([[1.0, 1.0], [-1.0, -1.0]]) + 0.1 * torch.randn(n, 2, 2)
    return model, EpisodeBatch(
        tokens=tokens,
        num_tokens=torch.full((n,), 2),
        noise=torch.zeros(n, 3, model.embed_dim),
        pairs=torch.tensor([1, 0]).expand(n, 1, 2).clone(),
        rewards=torch.full((n, 1), -1.0),
        lengths=torch.ones(n, dtype=torch.long),
        terminated=torch.ones(n, dtype=torch.bool),
    )


def _p_taught(model, batch) -> float:  # mean probability of slot pair (1, 0), action 2
    with torch.no_grad():
        st = core.lift(model, batch.tokens, batch.num_tokens, batch.noise)
        logits = model.policy.all_pairs(core.nodes(st)).flatten(1)
        legal = core.legal_pairs(st.active).flatten(1)
        return float(torch.softmax(logits.masked_fill(~legal, -torch.inf), 1)[:, 2].mean())


def test_imitation_raises_the_probability_of_the_merges_made_whatever_they_paid():
    torch.manual_seed(0)
    model, batch = _batch()
    sched = Schedule((Stage(merges=None, steps=50),))
    learner = ReinforceLearner(model, sched, ReinforceConfig(imitation=True, policy_lr=1e-2))
    before = _p_taught(model, batch)
    for _ in range(20):
        metrics = learner.update(batch)
    assert _p_taught(model, batch) > max(0.9, before + 0.3)
    assert metrics["loss/imitation"] == pytest.approx(-metrics["policy/imitation_log_prob"])
    with pytest.raises(ValueError, match="imitation trains the learned policy"):
        ReinforceConfig(imitation=True, policy="random")


class _FirstLegal:
    """A stand-in learner that plays every other row itself, always its first legal pair."""

    def own_rows(self, n: int) -> torch.Tensor:
        return torch.arange(n) % 2 == 0

    def act(self, obs, action_mask, greedy=False):
        return action_mask.to(torch.int64).argmax(1)


def test_own_rows_are_played_by_the_learner_and_the_rest_by_the_teacher():
    gen, collector = _student(8)
    taught = Teacher(_trees_model(7, 1), LEARNED, gen, 8).play(seed=5, max_merges=None)
    got = follow(collector, taught, seed=5, learner=_FirstLegal())
    own = torch.arange(8) % 2 == 0
    assert torch.equal(got.pairs[~own], taught.pairs[~own])
    assert bool((got.pairs[own, 0] == torch.tensor([0, 1])).all())  # the first legal pair


def test_imitation_skips_the_rows_the_learner_played_itself():
    torch.manual_seed(1)
    model, batch = _batch()
    own = torch.arange(len(batch)) % 2 == 0  # own_share 0.5: the even rows
    pairs = torch.where(own[:, None, None], torch.tensor([0, 1]), batch.pairs)
    batch = EpisodeBatch(**{**batch.__dict__, "pairs": pairs})
    sched = Schedule((Stage(merges=None, steps=50),))
    config = ReinforceConfig(imitation=True, own_share=0.5, policy_lr=1e-2)
    learner = ReinforceLearner(model, sched, config)
    assert torch.equal(learner.own_rows(len(batch)), own)
    for _ in range(20):
        learner.update(batch)
    assert _p_taught(model, batch) > 0.9  # the teacher's (1, 0), not the own rows' (0, 1)
    with pytest.raises(ValueError, match="own_share must be in"):
        ReinforceConfig(own_share=0.5)
