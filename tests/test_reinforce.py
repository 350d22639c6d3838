"""The REINFORCE learner: the gradient's sign, baselines, credit, skips, per-stage knobs."""

from __future__ import annotations

import pytest
import torch
from conftest import fixed_tree as _fixed_tree
from conftest import small_model as _model

from agents import losses
from agents.advantages import (
    RunningBaseline,
    area_returns,
    discounted_returns,
    leave_one_out,
)
from agents.base import EpisodeBatch
from agents.reinforce import ReinforceConfig, ReinforceLearner
from agents.schedules import Schedule, Stage
from htm_gym import core


def _toy_batch(model, good_first: bool, n=64):
    """P = 2 episodes: action 1 = (0, 1) and 2 = (1, 0); rewards favour action 1.

    Token 0 lies near (1, 1) and token 1 near (-1, -1), so the ordered pairs differ in
    content (a policy sees embeddings, not slot numbers)."""
    centres = torch.tensor([[1.0, 1.0], [-1.0, -1.0]])
    tokens = centres + 0.1 * torch.randn(n, 2, 2)
    first = (torch.arange(n) % 2 == 0)[:, None]  # slot pair (0, 1), else (1, 0)
    pairs = torch.where(first[..., None], torch.tensor([0, 1]), torch.tensor([1, 0]))
    rewards = torch.where(first, -0.1, -1.0).float()
    return EpisodeBatch(
        tokens=tokens,
        num_tokens=torch.full((n,), 2),
        noise=torch.zeros(n, 3, model.embed_dim),
        pairs=pairs,
        rewards=rewards,
        lengths=torch.ones(n, dtype=torch.long),
        terminated=torch.ones(n, dtype=torch.bool),
    )


def _p_first_pair(model, batch):
    """Mean probability of action 1 = slot pair (0, 1) over the batch's first states."""
    with torch.no_grad():
        st = core.lift(model, batch.tokens, batch.num_tokens, batch.noise)
        logits = model.policy.all_pairs(core.nodes(st)).flatten(1)
        logp = losses.masked_log_probs(logits, core.legal_pairs(st.active).flatten(1))
    return logp[:, 1].exp().mean()


@pytest.mark.parametrize("group_size", [1, 4])
def test_reinforce_raises_the_better_pair_probability(group_size):
    model = _model(seed=1)
    sched = Schedule(
        (Stage(merges=None, steps=100),), working_entropy=0.5, explore_end=0.0, working_start=0.0
    )
    cfg = ReinforceConfig(lambda_entropy=0.0, policy_lr=1e-2, group_size=group_size)
    learner = ReinforceLearner(model, sched, cfg)
    batch = _toy_batch(model, True)
    # groups of rows share a token set; actions alternate, so each group tries both pairs
    tokens = batch.tokens[::group_size].repeat_interleave(group_size, 0)
    batch = EpisodeBatch(**{**batch.__dict__, "tokens": tokens})
    before = _p_first_pair(model, batch)
    for _ in range(30):
        learner.update(batch)
    assert _p_first_pair(model, batch) > before + 0.05


def test_heuristic_temperature_tracks_target_and_random_policy_has_no_policy_step():
    model = _model(seed=2)
    sched = Schedule(
        (Stage(merges=None, steps=50),), explore_end=0.0, working_start=0.0, working_entropy=0.2
    )
    learner = ReinforceLearner(model, sched, ReinforceConfig(policy="heuristic"))
    batch = _toy_batch(model, True)
    t0 = float(learner.temperature().detach())
    m = learner.update(batch)
    assert "policy/temperature" in m and m["policy/temperature"] != t0
    rnd = ReinforceLearner(_model(seed=3), sched, ReinforceConfig(policy="random"))
    before = [p.clone() for p in rnd.model.policy.parameters()]
    rnd.update(batch)
    assert all(
        torch.equal(a, b) for a, b in zip(before, rnd.model.policy.parameters(), strict=True)
    )


def test_non_finite_update_is_skipped():
    model = _model()
    learner = ReinforceLearner(model, Schedule((Stage(merges=None, steps=10),)))
    batch = _toy_batch(model, True)
    bad = EpisodeBatch(**{**batch.__dict__, "tokens": batch.tokens * float("nan")})
    before = [p.clone() for p in model.parameters()]
    m = learner.update(bad)
    assert m["train/skipped"] == 1.0 and learner.step == 0
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_baseline_normalises_per_depth():
    b = RunningBaseline(depths=2, size=100)
    r = torch.tensor([[-1.0, -10.0], [-3.0, -30.0]])
    valid = torch.ones_like(r, dtype=torch.bool)
    b.push(r, valid)
    adv = b.advantages(r, valid)
    assert torch.allclose(adv[:, 0], adv[:, 1], atol=1e-5) and torch.allclose(
        adv.sum(0), torch.zeros(2)
    )


def test_pooled_baseline_normalises_over_all_depths_with_the_batch_by_hand():
    b = RunningBaseline(depths=3, size=4, kind="pooled")
    valid = torch.tensor([[True, True, False], [True, True, False]])
    b.push(torch.tensor([[1.0, 2.0, 99.0], [3.0, 4.0, 99.0]]), valid)  # 99: not valid
    # window of 4: the buffer's 2 most recent (3, 4) and this batch's 5, 6
    r, v = torch.tensor([[5.0, 6.0]]), torch.ones(1, 2, dtype=torch.bool)
    std = torch.tensor([3.0, 4.0, 5.0, 6.0]).std()
    assert torch.allclose(b.advantages(r, v), torch.tensor([[0.5, 1.5]]) / std)
    b.push(r, v)  # wraps the ring: the last 4 are now 3, 4, 5, 6
    lone = b.advantages(torch.tensor([[4.5, 0.0]]), torch.tensor([[True, False]]))
    pool = torch.tensor([4.0, 5.0, 6.0, 4.5])  # 3 dropped for the batch's one reward
    assert torch.allclose(lone, torch.tensor([[(4.5 - pool.mean()) / pool.std(), 0.0]]))
    with pytest.raises(ValueError, match="baseline"):
        ReinforceConfig(baseline="median")


def test_grad_clip_0_does_not_clip_and_the_logged_norms_are_before_the_clip():
    def one_update(clip):
        model = _model(seed=4)
        cfg = ReinforceConfig(grad_clip=clip, policy_lr=1e-2)
        torch.manual_seed(0)
        m = ReinforceLearner(model, Schedule((Stage(merges=None, steps=10),)), cfg).update(
            _toy_batch(model, True)
        )
        return torch.cat([p.detach().flatten() for p in model.parameters()]), m

    (off, m_off), (huge, _), (tiny, m_tiny) = (one_update(c) for c in (0.0, 1e12, 1e-9))
    assert torch.equal(off, huge) and not torch.allclose(off, tiny)
    for k in ("grad/htm", "grad/classifier", "grad/policy"):
        assert m_tiny[k] == pytest.approx(m_off[k]) and m_off[k] > 1e-6


def test_episode_entropy_loss_is_the_mean_of_each_episodes_gap():
    batch = _toy_batch(_model(seed=5), True, n=256)
    with torch.no_grad():  # each episode's normalised entropy at its one state
        model = _model(seed=5)
        st = core.lift(model, batch.tokens, batch.num_tokens, batch.noise)
        legal = core.legal_pairs(st.active).flatten(1)
        logits = model.policy.all_pairs(core.nodes(st)).flatten(1)
        h = losses.normalized_entropy(losses.masked_log_probs(logits, legal), legal)
    target = float(h.median())  # the episodes straddle it

    def policy_loss(kind):
        sched = Schedule(
            (Stage(merges=None, steps=10),), working_entropy=target, explore_end=0, working_start=0
        )
        cfg = ReinforceConfig(entropy_loss=kind, lambda_entropy=1.0, policy_l2=0.0)
        learner = ReinforceLearner(_model(seed=5), sched, cfg)
        learner.step = 5  # past the start, where the target is 1 whatever the schedule
        return learner.update(batch)["loss/policy"]

    by_hand = (h - target).abs().mean() - (h.mean() - target).abs()
    assert by_hand > 1e-4
    assert policy_loss("episode") - policy_loss("batch") == pytest.approx(float(by_hand), rel=1e-3)


def test_leave_one_out_by_hand():
    r = torch.tensor([[-1.0, -4.0], [-3.0, 0.0], [-2.0, -6.0], [-5.0, -1.0], [-9.0, -9.0]])
    valid = torch.tensor([[1, 1], [1, 0], [1, 1], [1, 1], [0, 0]], dtype=torch.bool)
    r = torch.cat([r, torch.tensor([[-7.0, -7.0]])])
    valid = torch.cat([valid, torch.tensor([[1, 0]], dtype=torch.bool)])
    res = leave_one_out(r, valid, k=3)
    # group 1 rows 0-2: depth 0 others' means -2.5, -1.5, -2; depth 1: row 1 invalid
    assert torch.allclose(res[:3, 0], torch.tensor([1.5, -1.5, 0.0]))
    assert torch.allclose(res[:3, 1], torch.tensor([2.0, 0.0, -2.0]))
    # group 2 rows 3-5: row 4 invalid, so rows 3 and 5 compare with each other only;
    # row 3 is alone at depth 1 and gets no signal
    assert torch.allclose(res[3:], torch.tensor([[2.0, 0.0], [0.0, 0.0], [-2.0, 0.0]]))
    with pytest.raises(ValueError, match="group_size"):
        ReinforceConfig(group_size=0)


def test_discounted_returns_by_hand():
    r = torch.tensor([[-1.0, -2.0, -4.0], [-3.0, 0.0, 0.0]])  # row 1 ended after one merge
    assert torch.equal(discounted_returns(r, 0.0), r)
    assert torch.allclose(
        discounted_returns(r, 0.5), torch.tensor([[-3.0, -4.0, -4.0], [-3.0, 0, 0]])
    )
    assert torch.allclose(discounted_returns(r, 1.0)[0], torch.tensor([-7.0, -6.0, -4.0]))
    with pytest.raises(ValueError, match="gamma"):
        ReinforceConfig(gamma=1.5)


def test_area_returns_by_hand():
    """Forest losses L_t = L_0 - (r_0 + ... + r_{t-1}); merge t answers for L_{t+1} + ... + L_n
    up to terms it cannot change: row 0 (3 merges), r = (-1, -2, -4): forests after merges
    0, 1, 2 cost 1, 3, 7 (L_0 = 0), area 11; merge 1's share (3 + 7, less merge 0's part 1 + 1)
    is 2 * 2 + 1 * 4 = 8, merge 2's is 4."""
    r = torch.tensor([[-1.0, -2.0, -4.0], [-3.0, 0.0, 0.0]])  # row 1 ended after one merge
    valid = torch.tensor([[True, True, True], [True, False, False]])
    out = area_returns(r, valid)
    assert torch.allclose(out, torch.tensor([[-11.0, -8.0, -4.0], [-3.0, 0.0, 0.0]]))
    assert -out[0, 0] == sum(-r[0, : t + 1].sum() for t in range(3))  # the whole area
    with pytest.raises(ValueError, match="'area' takes no gamma"):
        ReinforceConfig(credit="area", gamma=0.5)
    with pytest.raises(ValueError, match="credit must be one of"):
        ReinforceConfig(credit="lambda")


def test_group_baseline_checks_its_groups():
    model = _model(seed=1)
    learner = ReinforceLearner(
        model, Schedule((Stage(merges=None, steps=10),)), ReinforceConfig(group_size=4)
    )
    with pytest.raises(ValueError, match="groups of 4"):
        learner.update(_toy_batch(model, True))  # every row a different token set


def test_forest_loss_term_is_the_intermediate_skip_path_loss():
    model = _model(seed=4)
    state, _ = _fixed_tree(model)
    # The one intermediate forest of a 3-token episode: after merge (0, 1), slots 0 and 2.
    first = core.replay(
        model, state.tokens, state.num_tokens, torch.zeros(1, 5, 3), state.actions,
        torch.tensor([1]),
    ).state  # fmt: skip
    with torch.no_grad():
        expected = float(core.forest_loss(model, first)[0])
    batch = EpisodeBatch(
        tokens=state.tokens,
        num_tokens=state.num_tokens,
        noise=torch.zeros(1, 5, 3),
        pairs=state.actions,
        rewards=torch.zeros(1, 2),
        lengths=torch.tensor([2]),
        terminated=torch.tensor([True]),
    )
    sched = Schedule((Stage(merges=None, steps=5, lambda_forest=1.0),))
    m = ReinforceLearner(model, sched).update(batch)
    assert m["loss/forest"] == pytest.approx(expected, rel=1e-5)
    off = ReinforceLearner(_model(seed=4), Schedule((Stage(merges=None, steps=5),)))
    assert off.update(batch)["loss/forest"] == 0.0  # not computed when its weight is 0


def test_a_stage_with_policy_lr_scale_0_freezes_the_policy_only():
    model = _model(seed=4)
    sched = Schedule((Stage(merges=None, steps=10, policy_lr_scale=0.0),))
    learner = ReinforceLearner(model, sched, ReinforceConfig(policy_lr=1e-2))
    policy = [p.clone() for p in model.policy.parameters()]
    merger = [p.clone() for p in model.merger.parameters()]
    learner.update(_toy_batch(model, True))
    assert all(torch.equal(a, b) for a, b in zip(policy, model.policy.parameters(), strict=True))
    assert not all(
        torch.equal(a, b) for a, b in zip(merger, model.merger.parameters(), strict=True)
    )
    with pytest.raises(ValueError, match="policy_lr_scale"):
        Stage(merges=None, steps=10, policy_lr_scale=-1.0)


@pytest.mark.parametrize("share", [0.25, 1.0])
def test_the_classifier_trains_on_its_share_of_each_token_counts_rows(share):
    torch.manual_seed(0)
    model = _model(seed=5)
    batch = _toy_batch(model, good_first=True, n=10)
    seen = []
    model.classifier.register_forward_hook(lambda m, i, o: seen.append(len(i[0])))
    cfg = ReinforceConfig(classifier_share=share)
    ReinforceLearner(model, Schedule((Stage(merges=None, steps=5),)), cfg).update(batch)
    rows = {0.25: 3, 1.0: 10}[share]  # rows 0, 4, 8 (every fourth) or all of the P = 2 group
    assert seen == [3 * rows]  # each P = 2 episode's down tree: two leaves and the root
    with pytest.raises(ValueError, match="classifier_share"):
        ReinforceConfig(classifier_share=0.0)


def test_replayed_step_losses_equal_each_merges_own():
    model = _model(seed=6)
    state, _ = _fixed_tree(model)
    rep = core.replay(
        model, state.tokens, state.num_tokens, state.noise, state.actions, state.merges
    )
    st, expected = core.lift(model, state.tokens, state.num_tokens, state.noise), []
    for t in range(int(state.merges[0])):
        pair = state.actions[:, t]
        st, loss = core.merge(model, st, pair[:, 0], pair[:, 1], torch.tensor([True]))
        expected.append(loss)
    assert torch.allclose(rep.step_losses, torch.stack(expected, 1))
    short = core.replay(  # an episode that stopped a merge early pays nothing past its end
        model, state.tokens, state.num_tokens, state.noise, state.actions, state.merges - 1
    )
    assert torch.allclose(short.step_losses[:, 0], expected[0]) and short.step_losses[0, 1] == 0


def _half_uniform_learner(seed: int, **stage) -> ReinforceLearner:
    sched = Schedule((Stage(merges=None, steps=10, uniform_share=0.5, **stage),))
    return ReinforceLearner(_model(seed=seed), sched, ReinforceConfig(policy_lr=1e-2))


def test_uniform_rows_train_the_networks_and_the_other_rows_the_policy():
    torch.manual_seed(0)
    batch = _toy_batch(_model(seed=7), True, n=16)
    odd = torch.arange(16) % 2 == 1  # share 0.5: even rows merge uniformly at random
    other_policy_rows = EpisodeBatch(
        **{**batch.__dict__, "tokens": torch.where(odd[:, None, None], -batch.tokens, batch.tokens)}
    )
    other_uniform_rewards = EpisodeBatch(
        **{**batch.__dict__, "rewards": torch.where(odd[:, None], batch.rewards, 5.0)}
    )
    trained = []
    for b in (batch, other_policy_rows, other_uniform_rewards):
        learner = _half_uniform_learner(7)
        learner.update(b)
        trained.append(learner.model)
    nets = ("lifter", "unlifter", "merger", "unmerger", "classifier")

    def same(a, b, names):
        pa = [p for n in names for p in getattr(a, n).parameters()]
        pb = [p for n in names for p in getattr(b, n).parameters()]
        return all(torch.equal(x, y) for x, y in zip(pa, pb, strict=True))

    assert same(trained[0], trained[1], nets)  # the policy's rows do not train the networks
    assert not same(trained[0], trained[1], ("policy",))
    assert same(trained[0], trained[2], ("policy",))  # the uniform rows do not train the policy


def test_uniform_rows_act_at_random_and_greedy_acting_ignores_them():
    model = _model(seed=8)
    n = 400
    tokens = torch.randn(n, 3, 2)
    st = core.lift(model, tokens, torch.full((n,), 3), torch.zeros(n, 5, model.embed_dim))
    obs = {"nodes": core.nodes(st), "active": st.active}
    mask = core.legal_pairs(st.active).flatten(1).to(torch.int8)
    sched = Schedule((Stage(merges=None, steps=10, uniform_share=1.0),))
    learner = ReinforceLearner(model, sched, ReinforceConfig())
    greedy = learner.act(obs, mask, greedy=True)
    assert torch.equal(greedy, ReinforceLearner(model, sched).actor.act(obs, mask, True))
    actions = learner.act(obs, mask)
    assert bool(mask.gather(1, actions[:, None]).all())
    counts = torch.bincount(actions, minlength=9)[mask[0].bool()]  # 6 legal ordered pairs
    assert counts.min() > 40 and counts.max() < 100  # about 400 / 6 each


@pytest.mark.parametrize(
    ("frozen", "still", "trained"),
    [
        ({"train_encoder": False}, {"lifter", "merger"}, {"unlifter", "unmerger"}),
        ({"train_decoder": False}, {"unlifter", "unmerger"}, {"lifter", "merger"}),
    ],
)
def test_a_stage_that_freezes_the_encoder_or_decoder_trains_the_rest(frozen, still, trained):
    learner = _half_uniform_learner(9, **frozen)
    model = learner.model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    learner.update(_toy_batch(model, True))
    after = model.state_dict()
    moved = {k.split(".")[0] for k in before if not torch.equal(before[k], after[k])}
    assert not moved & still and trained <= moved
    with pytest.raises(ValueError, match="uniform_share"):
        Stage(merges=None, steps=10, uniform_share=1.5)


@pytest.mark.parametrize(
    "frozen",
    [
        {"train_encoder": False},
        {"train_decoder": False},
        {"train_encoder": False, "train_decoder": False},
    ],
)
def test_frozen_networks_build_no_graph_and_the_update_is_unchanged(frozen, monkeypatch):
    """Skipping the frozen networks' backward changes no weight: the same update with their
    graph built (the code before the skip) ends at the same parameters."""
    import contextlib

    import agents.reinforce

    batch = _toy_batch(_model(seed=9), True)
    learners = [_half_uniform_learner(9, **frozen) for _ in range(2)]
    seen = []
    learners[0].model.merger.register_forward_hook(lambda m, i, o: seen.append(o.requires_grad))
    learners[0].update(batch)
    assert not any(seen) if not frozen.get("train_encoder", True) else all(seen)
    monkeypatch.setattr(agents.reinforce, "_without_grad", lambda m: contextlib.nullcontext())
    learners[1].update(batch)
    a, b = (dict(x.model.named_parameters()) for x in learners)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert all(p.requires_grad for p in learners[0].model.parameters())  # restored
