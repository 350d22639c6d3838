"""The parts sampler: cherries and lone leaves of merge trees, composed by the merger."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from htm_gym.generation.parts import PartsSampler, compose_roots, tree_parts
from htm_gym.generation.roots import generate, load_sampler, save_sampler
from htm_gym.nets import HTMConfig, make_model


def _model(embed_dim: int = 5):
    return make_model(HTMConfig(token_dim=4, embed_dim=embed_dim, hidden_dim=16), seed=0)


def _trees():
    """Three trees over S = 4 slots (ids: leaves 0..P-1, merge k makes P + k), E = 2 with
    node i of tree n embedded as (n, i), so every part names where it came from."""
    pad = (-1, -1)
    children = np.array(
        [
            [(0, 1), (2, 3), (4, 5)],  # P = 4, two cherries
            [(0, 1), (3, 2), pad],  # P = 3, one cherry, leaf 2 alone
            [pad, pad, pad],  # P = 1, the leaf is the root
        ]
    )
    num_tokens = np.array([4, 3, 1])
    tree = np.stack([np.stack([np.full(7, n), np.arange(7)], 1) for n in range(3)]).astype(
        np.float32
    )
    return children, tree, num_tokens


def test_tree_parts_finds_cherries_and_lone_leaves():
    cherries, leaves, counts = tree_parts(*_trees())
    assert cherries.tolist() == [[0, 4], [0, 5], [1, 3]]
    assert leaves.tolist() == [[1, 2], [2, 0]]
    assert counts.tolist() == [[2, 0], [1, 1], [0, 1]]


def test_compose_roots_merges_the_top_scored_pair():
    model = _model()
    parts = torch.randn(6, 2, 5)
    with torch.no_grad():
        logits = model.policy.all_pairs(parts)  # (6, 2, 2): pick (0, 1) or (1, 0)
        first = logits[:, 0, 1] >= logits[:, 1, 0]
        left = torch.where(first[:, None], parts[:, 0], parts[:, 1])
        right = torch.where(first[:, None], parts[:, 1], parts[:, 0])
        want = model.merge(left, right)
    torch.testing.assert_close(compose_roots(model, parts), want)
    torch.testing.assert_close(compose_roots(model, parts[:, :1]), parts[:, 0])
    assert compose_roots(model, torch.randn(4, 3, 5)).shape == (4, 5)


def test_parts_sampler_at_bandwidth_zero_reuses_stored_parts(tmp_path):
    model = _model(embed_dim=2)
    sampler = PartsSampler.fit(*_trees(), bandwidth=0.0).bind(model)
    roots = sampler.sample(60, np.random.default_rng(0))
    stored = np.concatenate([sampler.cherries, sampler.leaves])
    single = (np.abs(roots[:, None] - stored[None]).max(-1) == 0).any(1)
    assert single.any(), "one-part trees (P = 1, 1 of 3) are a stored part itself"
    save_sampler(sampler, tmp_path / "p.pt")
    loaded = load_sampler(tmp_path / "p.pt")
    np.testing.assert_array_equal(
        loaded.bind(model).sample(9, np.random.default_rng(3)),
        sampler.sample(9, np.random.default_rng(3)),
    )


def test_parts_sampler_generates_reproducibly_and_reports_bad_use():
    children, tree, num = _trees()
    sampler = PartsSampler.fit(children, tree, num, bandwidth=0.1)
    with pytest.raises(RuntimeError, match="bind"):
        sampler.sample(3, np.random.default_rng(0))
    with pytest.raises(ValueError, match="embeds in 5"):
        sampler.bind(_model(embed_dim=5))
    with pytest.raises(ValueError, match="bandwidth"):
        PartsSampler.fit(children, tree, num, bandwidth=-1.0)
    with pytest.raises(ValueError, match="at least one part"):
        PartsSampler.fit(children, tree, np.array([4, 3, 0]))
    model = _model(embed_dim=2)
    a = generate(model, sampler, 20, seed=4, max_steps=11)
    b = generate(model, sampler, 20, seed=4, max_steps=11)
    np.testing.assert_array_equal(a.batch.tokens, b.batch.tokens)


def test_parts_move_toward_a_near_neighbour(tmp_path):
    rng = np.random.default_rng(0)
    n = 40
    children = np.zeros((n, 1, 2), dtype=np.int64)
    children[:, 0] = (0, 1)  # every tree one cherry (P = 2): its root is the drawn part
    tree = rng.standard_normal((n, 3, 2)).astype(np.float32)
    sampler = PartsSampler.fit(children, tree, np.full(n, 2), bandwidth=0.0, neighbours=1)
    pool, near = sampler.cherries, sampler.cherry_neighbours[:, 0]
    dist = np.linalg.norm(pool[:, None] - pool[None], axis=-1) + np.eye(n) * 1e9
    assert (near == dist.argmin(1)).all(), "column 0: the nearest other part"
    roots = sampler.bind(_model(embed_dim=2)).sample(200, np.random.default_rng(1))
    # each root lies on the chord from some part to that part's nearest neighbour
    a, b = pool[:, None], pool[near][:, None]  # (n, 1, 2)
    t = np.clip(((roots[None] - a) * (b - a)).sum(-1) / ((b - a) ** 2).sum(-1), 0, 1)
    off = np.linalg.norm(a + t[..., None] * (b - a) - roots[None], axis=-1).min(0)
    assert off.max() < 1e-5
    assert (np.abs(roots[:, None] - pool[None]).max(-1).min(1) > 1e-4).mean() > 0.9, "moved"
    save_sampler(sampler, tmp_path / "n.pt")
    np.testing.assert_array_equal(load_sampler(tmp_path / "n.pt").cherry_neighbours, near[:, None])
    with pytest.raises(ValueError, match="neighbours"):
        PartsSampler.fit(children, tree, np.full(n, 2), neighbours=-1)
