"""Scores of generated token sets: validity, coverage and novelty
(htm_gym.generation.validity)."""

from __future__ import annotations

import numpy as np

from htm_gym.datasets import CrossesGenerator, TreesGenerator, load_token_file
from htm_gym.generation.validity import generation_report, novelty, sample_validity


def test_crosses_validity_accepts_every_reference_instance(reference_dir):
    data = load_token_file(str(reference_dir / "crosses_test_20000.npz"))
    assert sample_validity(CrossesGenerator(), data).all()


def test_trees_validity_accepts_every_reference_instance(reference_dir):
    data = load_token_file(str(reference_dir / "trees_narrow_test_20000.npz"))
    assert sample_validity(TreesGenerator(), data).all()


def test_crosses_validity_rejects_perturbed_instances():
    gen = CrossesGenerator()
    data = gen.sample(np.random.default_rng(0), 200)
    for i in range(len(data)):
        tokens = data[i].astype(np.float64)
        assert gen.is_valid(tokens)
        assert gen.is_valid(tokens[::-1])  # any order
        moved = tokens.copy()
        moved[0] += [2.0, 0.0, 2.0, 0.0]  # midpoint 2 px away from its partner's
        assert not gen.is_valid(moved)
        longer = tokens.copy()
        mid = 0.5 * (longer[1, :2] + longer[1, 2:])
        longer[1] = np.concatenate([mid, mid]) + 1.2 * (longer[1] - np.concatenate([mid, mid]))
        assert not gen.is_valid(longer)  # length 12 > 10 + 1.5
        assert not gen.is_valid(tokens[:-1])  # odd count
    # two segments of one cross 10 degrees apart: too acute
    rad = np.radians([0.0, 10.0])
    half = 5 * np.stack([np.cos(rad), np.sin(rad)], 1)
    assert not gen.is_valid(np.concatenate([64 - half, 64 + half], 1))


def test_trees_validity_rejects_perturbed_instances():
    gen = TreesGenerator()
    data = gen.sample(np.random.default_rng(1), 50)
    for i in range(len(data)):
        tokens = data[i].astype(np.float64)
        assert gen.is_valid(np.random.default_rng(i).permutation(tokens))
        moved = tokens.copy()
        moved[3] += [5.0, 0.0]
        assert not gen.is_valid(moved)
        assert not gen.is_valid(tokens[:6])


def test_generation_report_counts_and_novelty():
    gen = CrossesGenerator()
    train = gen.sample(np.random.default_rng(0), 300)
    same = novelty(train, train, radius=0.5)
    assert not same.any(), "training instances are not novel"
    fresh = gen.sample(np.random.default_rng(1), 100)
    assert novelty(fresh, train, radius=0.5).mean() > 0.9
    rep = generation_report(gen, fresh, train)
    assert rep["validity"] == 1.0
    assert set(rep["valid_count_distribution"]) == {2, 4, 6}
