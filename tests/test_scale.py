"""Large populations: digits tokens, factorised/incremental pair scoring, checkpointed replay."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import htm_gym.nets as nets
from agents.base import EpisodeBatch
from agents.collector import EpisodeCollector
from agents.policies import Actor, IncrementalActor
from agents.reinforce import ReinforceConfig, ReinforceLearner
from agents.schedules import Schedule, Stage
from agents.scoring import IncrementalPairLogits
from htm_gym import core
from htm_gym.datasets import Digits16Generator, DigitsGenerator
from htm_gym.datasets.digits import _images
from htm_gym.envs.vector_env import HTMVectorEnv
from htm_gym.nets import HTMConfig, make_model


def test_digits_tokens_split_and_image_round_trip():
    train, test = DigitsGenerator(split="train"), DigitsGenerator(split="test")
    assert not set(train.indices) & set(test.indices)
    np.testing.assert_array_equal(train.with_split("test").indices, test.indices)
    assert len(train.indices) + len(test.indices) == 1797
    assert train.max_tokens == test.max_tokens  # same spaces for both splits
    batch = train.sample(np.random.default_rng(0), 50)
    assert batch.num_tokens.min() >= 2 and batch.num_tokens.max() <= train.max_tokens
    images = _images(8)[train.indices[:20]]
    tok = train.tokenize(images)
    for i in range(20):
        kept = np.where(images[i] > train.threshold, images[i], 0.0)
        np.testing.assert_allclose(train.to_image(tok[i]), kept, atol=1e-4)
        np.testing.assert_allclose(train.to_image(tok[i][::-1]), kept, atol=1e-4)  # any order
    big = Digits16Generator()
    assert big.min_tokens >= 50 and big.max_tokens <= 200
    with pytest.raises(ValueError, match="split"):
        DigitsGenerator(split="validation")


@pytest.mark.parametrize("grad", [True, False])
@pytest.mark.parametrize("chunk", [1 << 22, 7 * 7 * 8 * 2, 64])
def test_factorised_scorer_equals_concatenated_form(monkeypatch, chunk, grad):
    # 784: two batch rows per chunk without gradients; 64: one table row per chunk
    monkeypatch.setattr(nets, "PAIR_CHUNK", chunk)
    monkeypatch.setattr(nets, "GRAD_PAIR_CHUNK", chunk)
    torch.manual_seed(0)
    scorer = nets.PairScorer(5, 8)
    nodes = torch.randn(3, 7, 5)
    pairs = torch.cat([nodes[:, :, None].expand(3, 7, 7, 5), nodes[:, None].expand(3, 7, 7, 5)], -1)
    with torch.set_grad_enabled(grad):
        torch.testing.assert_close(scorer.all_pairs(nodes), scorer(pairs).squeeze(-1))
        row = scorer.score_block(nodes[:, 2:3], nodes)  # as the incremental table rescores
        torch.testing.assert_close(row, scorer(pairs[:, 2:3]).squeeze(-1))


def _model(kind: str, token_dim: int = 3):
    return make_model(
        HTMConfig(token_dim=token_dim, embed_dim=6, hidden_dim=16, policy_kind=kind), seed=0
    )


@pytest.mark.parametrize("kind", ["mlp", "bilinear"])
def test_incremental_table_equals_full_rescoring(kind):
    model = _model(kind)
    venv = HTMVectorEnv(
        8, dataset="digits", model=model, array_type="torch", autoreset_mode="disabled"
    )
    obs, info = venv.reset(seed=0)
    cache = IncrementalPairLogits(model.policy)
    cache.reset(obs["nodes"])
    gen = torch.Generator().manual_seed(0)
    s = venv.sim.S
    for _ in range(10):
        mask = info["action_mask"]
        a = torch.multinomial(mask.float().cpu(), 1, generator=gen)[:, 0].to(mask.device)
        obs, _, _, _, info = venv.step(a)
        table = cache.update(obs["nodes"], a // s)
        legal = info["action_mask"].bool().reshape(-1, s, s)
        full = model.policy.all_pairs(obs["nodes"])
        torch.testing.assert_close(table[legal], full[legal], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", ["mlp", "bilinear"])
def test_incremental_actor_matches_full_actor_over_episodes(kind):
    model = _model(kind)
    episodes = {}
    for name, actor in (
        ("full", Actor(model, "learned", greedy=True)),
        ("incremental", IncrementalActor(model, greedy=True)),
    ):
        venv = HTMVectorEnv(6, dataset="digits", model=model, array_type="torch", noise_std=0.0)
        episodes[name] = EpisodeCollector(venv, seed=3).collect(actor, min_episodes=12)
    a, b = episodes["full"], episodes["incremental"]
    assert torch.equal(a.pairs, b.pairs) and torch.equal(a.lengths, b.lengths)


def test_incremental_actor_rescores_a_new_episode_with_the_expected_active_set():
    """A truncated episode can end with exactly the active slots a new episode starts
    with; its cached logits must not be reused for the new tokens (bug found in review)."""
    model = _model("mlp")
    s, e = 6, model.embed_dim
    actor, full = IncrementalActor(model, greedy=True), Actor(model, "learned", greedy=True)
    active = torch.tensor([[True] * 5 + [False]])
    mask = core.legal_pairs(active).flatten(1)
    nodes = torch.randn(1, s, e) * active[..., None]
    a = actor.act({"nodes": nodes, "active": active}, mask)
    left, right = int(a) // s, int(a) % s
    ended = active.clone()
    ended[0, right] = False  # the episode stops here (truncated), 4 slots still active
    fresh = torch.zeros(1, s, dtype=torch.bool)
    fresh[0, ended[0].nonzero().squeeze(1)] = True  # a new episode, the same active slots
    new = torch.randn(1, s, e) * fresh[..., None]
    new[0, left] = nodes[0, left] + 1.0  # as if the merge had written it
    obs, mask = {"nodes": new, "active": fresh}, core.legal_pairs(fresh).flatten(1)
    assert torch.equal(actor.act(obs, mask), full.act(obs, mask))
    table = actor.cache.table[0][fresh[0]][:, fresh[0]]
    expected = model.policy.all_pairs(new)[0][fresh[0]][:, fresh[0]]
    torch.testing.assert_close(table, expected)


def test_checkpointed_policy_replay_gives_the_same_gradients():
    grads = []
    for ckpt in (False, True):
        model = _model("bilinear", token_dim=4)
        sched = Schedule((Stage(merges=None, steps=5),))
        learner = ReinforceLearner(model, sched, ReinforceConfig(checkpoint_policy=ckpt), seed=0)
        venv = HTMVectorEnv(8, model=model, array_type="torch")
        eps: EpisodeBatch = EpisodeCollector(venv).collect_round(learner, seed=1)
        learner.update(eps)
        grads.append([p.detach().clone() for p in model.policy.parameters()])
    for g0, g1 in zip(*grads, strict=True):
        torch.testing.assert_close(g0, g1)


def test_bench_scaling_smoke(tmp_path):
    from conftest import load_script

    bench = load_script("bench_scaling")
    res = bench.main(
        bench.Args(
            sizes=(4, 8), batch=4, hidden_dim=16, output=str(tmp_path / "b.json"), isolate=False
        )
    )
    assert [r["P"] for r in res["rows"]] == [4, 8]
    assert res["rows"][1]["train_step"]["skipped"] == 0.0
    assert all(np.isfinite(v) for v in res["slopes"].values())
    assert (tmp_path / "b.json").is_file()


@pytest.mark.parametrize("kind", ["mlp", "bilinear"])
def test_replay_scores_on_active_slots_equal_the_full_table(kind):
    from agents import losses
    from htm_gym import core

    model = _model(kind, token_dim=4)
    sched = Schedule((Stage(merges=None, steps=5),))
    learner = ReinforceLearner(model, sched, seed=0)
    venv = HTMVectorEnv(16, model=model, array_type="torch")
    eps = EpisodeCollector(venv).collect_round(learner, seed=2)
    s = eps.tokens.shape[1]
    for g in eps.split_by_tokens():
        out = learner._replay(g, 0.0, s)
        want_lp, want_ent = [], []
        scale = 0.0  # the largest |logit|: float32 rounding of the two orders grows with it
        rep = core.replay(model, g.tokens, g.num_tokens, g.noise, g.pairs, g.lengths)
        for t, state in enumerate(rep.before):
            legal = core.legal_pairs(state.active).flatten(1)
            logits = model.policy.all_pairs(core.nodes(state))
            scale = max(scale, float(logits.detach().abs().max()))
            logp = losses.masked_log_probs(logits.flatten(1), legal)
            action = core.flat_actions(g.pairs[:, t].clamp(min=0), g.tokens.shape[1])
            want_lp.append(logp.gather(1, action[:, None]).squeeze(1))
            want_ent.append(losses.normalized_entropy(logp, legal))
        p = g.tokens.shape[1]
        # unnormalised tokens give logits in the thousands here; the tolerance is a few
        # float32 ulps of the largest (on some CPUs the default 1e-5 failed by 1.6e-4 at 3,700)
        tol = dict(rtol=1.3e-6, atol=max(1e-5, 8 * torch.finfo(torch.float32).eps * scale))
        torch.testing.assert_close(out["logp"][:, : p - 1], torch.stack(want_lp, 1), **tol)
        torch.testing.assert_close(out["entropy"][:, : p - 1], torch.stack(want_ent, 1), **tol)
