"""Scoring merge trees (htm_gym.evaluation): the pooled MSE, structure and classifier
metrics, the proximity baseline."""

from __future__ import annotations

import numpy as np
import pytest

from htm_gym.datasets import TokenBatch
from htm_gym.evaluation.metrics import classifier_report, structure_scores, tree_constituents
from htm_gym.evaluation.report import node_levels
from htm_gym.evaluation.rollout import instance_mse, pooled_mse, squared_errors


def test_pooled_mse_weighs_every_coordinate_once():
    # Two instances, P = 1 and P = 2 real tokens of width 2 (NaN padding never counts).
    tokens = np.array([[[0, 0], [np.nan, np.nan]], [[1, 1], [2, 2]]], dtype=np.float32)
    data = TokenBatch(tokens, np.array([1, 2]))
    rec = np.array([[[1, 0], [9, 9]], [[1, 3], [2, 0]]], dtype=np.float32)
    # Instance 0: errors (1, 0) -> sum 1 over 2 coordinates. Instance 1: (0, 2, 0, -2) -> 8
    # over 4 coordinates.
    sse, count = squared_errors(rec, data)
    assert sse.tolist() == [1.0, 8.0] and count.tolist() == [2, 4]
    assert np.allclose(instance_mse(rec, data), [0.5, 2.0])
    # The original's pooled MSE: (1 + 8) / (2 + 4) = 1.5, not the mean of 0.5 and 2.0.
    assert pooled_mse(sse, count) == 1.5


def test_proximity_baseline_recovers_narrow_subtrees():
    import torch

    from htm_gym.datasets import make_generator
    from htm_gym.evaluation.baselines import ProximityActor
    from htm_gym.evaluation.rollout import evaluate
    from htm_gym.nets import HTMConfig, make_model

    gen = make_generator("trees")
    data = gen.sample(np.random.default_rng(0), 64)
    model = make_model(HTMConfig(token_dim=2, embed_dim=7, hidden_dim=16, policy_hidden_dim=8))
    actor = ProximityActor(torch.as_tensor(data.tokens), torch.as_tensor(data.num_tokens))
    res = evaluate(model, gen, data, actor, batch_size=len(data))
    # Siblings 5.8 px apart, children 13.5 px from their parent, subtrees 39 px apart.
    assert res["recovered"] == 1.0 and res["bracket_f1"] == 2 * 3 / (3 + 6)


def test_structure_and_classifier_metrics():
    # crosses P = 4: (0,1)->4, (2,3)->5, (4,5)->6 recovers both crosses
    good = np.array([[[0, 1], [2, 3], [4, 5]]])
    bad = np.array([[[0, 2], [1, 3], [4, 5]]])
    gold = lambda p: [(0, 1), (2, 3), (0, 1, 2, 3)]  # noqa: E731
    s = structure_scores(np.concatenate([good, bad]), np.array([3, 3]), np.array([4, 4]), gold)
    assert s["recovered"].tolist() == [True, False]
    assert s["f1"][0] == 1.0 and s["f1"][1] == pytest.approx(2 * 1 / 6)
    assert tree_constituents(good[0], 4)[-1] == frozenset(range(4))
    rep = classifier_report(np.array([0.9, 0.2, 0.6, 0.1]), np.array([1, 0, 0, 1]))
    assert rep["accuracy"] == 0.5 and rep["false_positives"] == 1 and rep["false_negatives"] == 1


def test_node_levels():
    # P=4: merge 0+1 -> 4, 2+3 -> 5, 4+5 -> 6
    children = np.array([[[0, 1], [2, 3], [4, 5]]])
    levels = node_levels(children, np.array([3]), np.array([4]))
    assert levels.tolist() == [[0, 0, 0, 0, 1, 1, 2]]


def test_rollout_by_token_count_keeps_each_instance_its_seed_and_order():
    """Batches hold one P each; instance k still plays with seed + k and comes back in
    data order, its classifier nodes with it."""

    from agents.policies import IncrementalActor
    from htm_gym.datasets import CrossesGenerator
    from htm_gym.evaluation.rollout import rollout_tokens
    from htm_gym.nets import HTMConfig, make_model

    gen = CrossesGenerator()
    model = make_model(HTMConfig(token_dim=4, embed_dim=8, hidden_dim=16, token_scale=64))
    data = gen.sample(np.random.default_rng(3), 12)
    assert len(np.unique(data.num_tokens)) > 1, "a mixed batch"
    full = rollout_tokens(model, gen, data, IncrementalActor(model), batch_size=5, seed=7)
    first = np.concatenate([[0], np.cumsum(2 * data.num_tokens - 1)])
    for k in (0, 5, 11):
        one = TokenBatch(data.tokens[k : k + 1], data.num_tokens[k : k + 1])
        alone = rollout_tokens(model, gen, one, IncrementalActor(model), seed=7 + k)
        for key in ("children", "lengths"):
            np.testing.assert_array_equal(full[key][k], alone[key][0])
        for key in ("returns", "rec"):  # batch composition moves float rounding only
            np.testing.assert_allclose(full[key][k], alone[key][0], rtol=1e-5, atol=1e-5)
        nodes = slice(first[k], first[k + 1])
        np.testing.assert_array_equal(full["label"][nodes], alone["label"])
        np.testing.assert_allclose(full["prob"][nodes], alone["prob"], rtol=1e-5, atol=1e-6)
    assert full["tree"].shape[:2] == (len(data), 2 * data.tokens.shape[1] - 1)


def test_proximity_baseline_follows_its_rows_across_batches_of_mixed_p():
    """The baseline reads tokens, not observations: bucketing by P reorders the rows, and
    bind() must hand it the right instances (each cross's two segments merge first)."""
    import torch

    from htm_gym.datasets import CrossesGenerator
    from htm_gym.evaluation.baselines import ProximityActor
    from htm_gym.evaluation.rollout import evaluate
    from htm_gym.nets import HTMConfig, make_model

    gen = CrossesGenerator()
    data = gen.sample(np.random.default_rng(1), 40)
    model = make_model(HTMConfig(token_dim=4, embed_dim=8, hidden_dim=16, token_scale=64))
    actor = ProximityActor(torch.as_tensor(data.tokens), torch.as_tensor(data.num_tokens))
    one_batch = evaluate(model, gen, data, actor, batch_size=len(data))
    actor = ProximityActor(torch.as_tensor(data.tokens), torch.as_tensor(data.num_tokens))
    batched = evaluate(model, gen, data, actor, batch_size=7)
    assert batched["recovered"] == one_batch["recovered"] > 0.9
    assert batched["bracket_f1"] == one_batch["bracket_f1"]
