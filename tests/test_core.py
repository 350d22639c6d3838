"""Invariants of the batched merge tree and of the networks it runs."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from htm_gym import core
from htm_gym.datasets import CrossesGenerator
from htm_gym.nets import (
    HTMConfig,
    PairScorer,
    load_model,
    make_model,
    resolve_device,
    save_model,
)


def _model(embed_dim=6, seed=0):
    cfg = HTMConfig(token_dim=4, embed_dim=embed_dim, hidden_dim=16, token_loc=64, token_scale=64)
    return make_model(cfg, seed=seed)


def _batch(n=8, seed=0):
    b = CrossesGenerator().sample(np.random.default_rng(seed), n)
    tokens = torch.as_tensor(np.nan_to_num(b.tokens))
    return tokens, torch.as_tensor(b.num_tokens)


def _random_rollout(model, tokens, num, seed=0, grad=False):
    gen = torch.Generator().manual_seed(seed)
    s = tokens.shape[1]
    # drawn on the CPU (the generator's device) whatever the suite's --device
    noise = 0.01 * torch.randn(
        tokens.shape[0], 2 * s - 1, model.embed_dim, generator=gen, device="cpu"
    )
    noise = noise.to(tokens.device)
    state = core.lift(model, tokens, num, noise)
    losses = []
    for _ in range(s - 1):
        legal = core.legal_pairs(state.active).flatten(1)  # (B, S*S)
        apply = legal.any(1)
        scores = torch.rand(legal.shape, generator=gen, device="cpu").to(legal.device)
        scores = scores.masked_fill(~legal, -1)
        a = scores.argmax(1)
        before = state.active.sum(1)
        state, loss = core.merge(model, state, a // s, a % s, apply)
        assert torch.equal(state.active.sum(1), before - apply.long()), "one token per merge"
        losses.append(loss)
    return state, torch.stack(losses, 1)


def test_merge_invariants_and_root():
    model = _model()
    tokens, num = _batch(16)
    with torch.no_grad():
        state, losses = _random_rollout(model, tokens, num)
    assert torch.equal(state.merges, num - 1), "root after P-1 merges"
    assert (state.active.sum(1) == 1).all()
    root_ids = state.slot_node[state.active]
    assert torch.equal(root_ids, 2 * num - 2), "the root is the last node created"
    # each child is used once, every node but the root is a child
    for b in range(len(num)):
        kids = state.children[b, : num[b] - 1].flatten().tolist()
        assert sorted(kids) == list(range(2 * int(num[b]) - 2))
    assert (losses >= 0).all() and torch.isfinite(losses).all()
    assert (losses[torch.arange(losses.shape[1]) >= (num - 1)[:, None]] == 0).all()


def test_reconstruct_shape_and_gradients():
    model = _model()
    tokens, num = _batch(8)
    state, losses = _random_rollout(model, tokens, num)
    rec = core.reconstruct(model, state)
    assert rec.shape == tokens.shape
    loss = (rec - tokens).pow(2)[core.token_mask(state)].mean() + losses.sum()
    loss.backward()
    for name in ("lifter", "merger", "unmerger", "unlifter"):
        grads = [p.grad for p in getattr(model, name).parameters()]
        assert all(g is not None and g.abs().sum() > 0 for g in grads), name


def test_mixed_batch_rows_are_independent():
    """A padded batch of mixed P gives each row what it gets alone."""
    model = _model()
    tokens, num = _batch(6, seed=4)
    with torch.no_grad():
        state, losses = _random_rollout(model, tokens, num, seed=1)
        rec = core.reconstruct(model, state)
        for b in range(len(num)):
            p = int(num[b])
            alone = core.lift(
                model, tokens[b : b + 1, :p], num[b : b + 1], state.noise[b : b + 1, : 2 * p - 1]
            )
            for t in range(p - 1):
                i, j = state.actions[b, t]
                alone, loss = core.merge(
                    model, alone, i[None], j[None], torch.ones(1, dtype=torch.bool)
                )
                assert torch.allclose(loss[0], losses[b, t], atol=1e-6)
            assert torch.allclose(core.reconstruct(model, alone)[0], rec[b, :p], atol=1e-4)


def test_teacher_forced_unmerge_uses_recorded_children():
    """With a perfect decoder stand-in, unmerging returns the up tree exactly."""
    model = _model()
    tokens, num = _batch(4)
    with torch.no_grad():
        state, _ = _random_rollout(model, tokens, num)
        down = core.unmerge(model, state, teacher_mix=1.0)
        # with tau = 1 every decoder input is the up-tree node: children come from it
        for b in range(len(num)):
            for t in range(int(num[b]) - 1):
                parent = state.tree[b, num[b] + t]
                left, right = model.unmerge(parent[None])
                l_id, r_id = state.children[b, t]
                assert torch.allclose(down[b, l_id], left[0], atol=1e-5)
                assert torch.allclose(down[b, r_id], right[0], atol=1e-5)


def test_one_step_loss_by_hand():
    model = _model(embed_dim=2)
    pair = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    merged = model.merger(pair)
    expected = ((model.unmerger(merged) - pair) ** 2).sum() / 4
    assert torch.allclose(core.one_step_loss(model, pair, merged)[0], expected)


def test_pair_scorer_factorised_equals_concatenated():
    scorer = PairScorer(5, 32)
    nodes = torch.randn(3, 4, 5)
    table = scorer.all_pairs(nodes)
    direct = scorer(
        torch.cat(
            [nodes[:, :, None].expand(-1, -1, 4, -1), nodes[:, None].expand(-1, 4, -1, -1)], -1
        )
    ).squeeze(-1)
    assert torch.allclose(table, direct, atol=1e-5)


def test_save_load_round_trip(tmp_path):
    model = _model(seed=3)
    path = tmp_path / "m.pt"
    save_model(model, path)
    loaded = load_model(path)
    assert loaded.config == model.config
    for a, b in zip(model.state_dict().values(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(ValueError, match="not a readable"):
        load_model(tmp_path / "junk.pt")
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "missing.pt")
    torch.save({"weights": 1}, tmp_path / "foreign.pt")
    with pytest.raises(ValueError, match="not an htm-gym checkpoint"):
        load_model(tmp_path / "foreign.pt")


def test_seeded_models_identical_and_config_checked():
    assert all(
        torch.equal(a, b)
        for a, b in zip(_model(seed=5).parameters(), _model(seed=5).parameters(), strict=True)
    )
    with pytest.raises(ValueError, match="token_scale"):
        HTMConfig(token_dim=4, token_scale=0)


def test_devices_default_to_torchs_and_seeded_weights_do_not_depend_on_it():
    """Models and checkpoints that name no device follow torch's default device (so the test
    suite's --device moves everything); seeded weights are drawn on the CPU, so a seed gives
    the same weights whatever that default is (they differed between CPU and CUDA draws)."""
    cfg = _model(seed=0).config
    with torch.device("meta"):
        assert next(make_model(cfg).parameters()).is_meta
        assert resolve_device(None).type == "meta"  # where load_model maps a checkpoint
        on_cpu = make_model(cfg, seed=7, device="cpu")
    again = make_model(cfg, seed=7, device="cpu")
    for a, b in zip(on_cpu.parameters(), again.parameters(), strict=True):
        assert a.device.type == "cpu" and torch.equal(a, b)


def test_linear_skip_round_trip_and_old_checkpoints(tmp_path):
    cfg = HTMConfig(token_dim=4, embed_dim=6, hidden_dim=16, linear_skip=True)
    model = make_model(cfg, seed=1)
    with torch.no_grad():  # with the MLP's output layer zeroed, only the shortcut is left
        model.merger.fc3.weight.zero_()
        model.merger.fc3.bias.zero_()
    a, b = torch.randn(5, 6), torch.randn(5, 6)
    linear = torch.cat([a, b], -1) @ model.merger.skip.weight.T
    assert torch.allclose(model.merge(a, b), linear, atol=1e-6)
    save_model(model, tmp_path / "skip.pt")
    loaded = load_model(tmp_path / "skip.pt")
    assert loaded.config.linear_skip
    assert torch.equal(loaded.merge(a, b), model.merge(a, b))
    # checkpoints written before the option existed hold the plain MLPs
    plain = make_model(HTMConfig(token_dim=4, embed_dim=6, hidden_dim=16, linear_skip=False), 2)
    ckpt = {"config": {k: v for k, v in vars(plain.config).items() if k != "linear_skip"}}
    torch.save({**ckpt, "model": plain.state_dict()}, tmp_path / "old.pt")
    assert load_model(tmp_path / "old.pt").merger.skip is None


def test_node_bound_keeps_every_noise_free_node_inside_the_bound():
    cfg = HTMConfig(token_dim=4, embed_dim=6, hidden_dim=16, node_bound=0.5)
    model = make_model(cfg, seed=0)
    with torch.no_grad():  # weights large enough that an unbounded node would pass 0.5
        for p in model.parameters():
            p.mul_(20)
    tokens, num = _batch(16)
    with torch.no_grad():
        state, _ = _random_rollout(model, tokens, num)
        free = make_model(HTMConfig(token_dim=4, embed_dim=6, hidden_dim=16), seed=0)
        free.load_state_dict(model.state_dict())
        unbounded, _ = _random_rollout(free, tokens, num)
    made = core.node_mask(state)  # the rollout's noise comes on top of the bound
    assert (state.tree - state.noise)[made].abs().max() <= 0.5
    assert (unbounded.tree - unbounded.noise)[made].abs().max() > 0.5, "the bound holds them"
    x = torch.linspace(-3, 3, 7)
    torch.testing.assert_close(model.bound(x), 0.5 * torch.tanh(x / 0.5))
    assert model.merge_pair(torch.zeros(2, 12)).shape == (2, 6)
    with pytest.raises(ValueError, match="node_bound"):
        HTMConfig(token_dim=4, node_bound=-1.0)


def test_node_widths_narrow_merged_nodes_and_their_decodings():
    widths = (3, 4)  # nodes over 2 and 3 tokens; larger ones keep all 12
    cfg = HTMConfig(token_dim=4, embed_dim=12, hidden_dim=16, node_widths=widths)
    model = make_model(cfg, seed=0)
    tokens, num = _batch(16)
    with torch.no_grad():
        state, _ = _random_rollout(model, tokens, num)
        down = core.unmerge(model, state)
    coords = torch.arange(12)
    for b in range(len(num)):
        p = int(num[b])
        for t in range(p - 1):  # merge t made node p + t
            left, right = state.children[b, t].tolist()
            size = int(state.sizes[b, left] + state.sizes[b, right])
            assert int(state.sizes[b, p + t]) == size
            width = widths[size - 2] if size - 2 < len(widths) else 12
            for tree in (state.tree, down):  # the decoded node is as narrow as the encoded
                assert (tree[b, p + t, coords >= width] == 0).all()
                assert (tree[b, p + t, :width] != 0).any()
        assert int(state.sizes[b, 2 * p - 2]) == p, "the root holds every token"
        assert (down[b, :p, -1] != 0).all(), "leaves keep their full width"
    full = make_model(HTMConfig(token_dim=4, embed_dim=12, hidden_dim=16), seed=0)
    with torch.no_grad():
        wide, _ = _random_rollout(full, tokens, num)
    internal = core.node_mask(wide) & (core.internal_labels(wide)[1] == 1)
    assert (wide.tree[internal][:, -1] != 0).all(), "() (the default) narrows nothing"
    with pytest.raises(ValueError, match="node_widths"):
        HTMConfig(token_dim=4, embed_dim=6, node_widths=(7,))


def test_node_widths_can_cut_the_encoder_alone():
    cfg = HTMConfig(token_dim=4, embed_dim=12, hidden_dim=16, node_widths=(2,) * 5)
    loose = make_model(replace(cfg, narrow_decoder=False), seed=0)
    tokens, num = _batch(16)
    with torch.no_grad():
        state, _ = _random_rollout(loose, tokens, num)
        down = core.unmerge(loose, state)
    internal = core.node_mask(state) & (core.internal_labels(state)[1] == 1)
    below_root = internal & (state.sizes < num[:, None])
    assert (state.tree[below_root][:, 2:] == 0).all(), "the encoder's nodes are cut"
    assert (down[below_root][:, 2:] != 0).any(1).all(), "the decoder's are not"
