"""Direct tests of the pictures (htm_gym.envs.render) and the report figures
(htm_gym.evaluation.figures): shapes, contents that must show, no pyplot state."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from htm_gym.envs.render import (
    _node_centroids,
    policy_diagram,
    reconstruction_figure,
    render_tokens,
)
from htm_gym.evaluation import figures

SEGMENTS = np.array([[10, 10, 20, 20], [10, 20, 20, 10], [40, 40, 50, 50]], np.float32)


def test_render_tokens_draws_on_a_white_canvas():
    blank = render_tokens(np.zeros((0, 4)), 64.0)
    img = render_tokens(SEGMENTS, 64.0, cluster=np.array([0, 0, 1]), size_px=128)
    assert img.shape == (128, 128, 3) and img.dtype == np.uint8
    assert (blank == 255).all(), "no tokens: nothing drawn"
    assert (img < 250).any(axis=-1).sum() > 50, "the segments are drawn"
    tree = render_tokens(SEGMENTS, 64.0, children=np.array([[0, 1], [3, 2]]), size_px=128)
    assert (tree != img).any(), "the merges add dashed lines"


def test_node_centroids_average_the_leaves_under_each_node():
    points = np.array([[0.0, 0.0], [2.0, 0.0], [4.0, 4.0]])
    c = _node_centroids(points, np.array([[0, 1], [3, 2]]), 3)
    np.testing.assert_allclose(c[3], [1.0, 0.0])
    np.testing.assert_allclose(c[4], [2.0, 4 / 3])


def test_training_images_are_figures():
    truth = [SEGMENTS, SEGMENTS[:2]]
    fig = reconstruction_figure(truth, [t + 1 for t in truth], 64.0)
    assert isinstance(fig, Figure) and len(fig.axes) >= 2
    diagram = policy_diagram([np.array([[0, 1], [3, 2]]), np.array([[1, 0]])], [3, 2])
    assert isinstance(diagram, Figure)


def test_report_figures():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    fig, areas = figures.classifier_curves(np.clip(labels + rng.normal(0, 0.3, 200), 0, 1), labels)
    assert isinstance(fig, Figure) and 0.5 < areas["roc_auc"] <= 1.0
    made = [
        figures.mse_violin({"P=2": rng.random(20), "P=4": rng.random(20)}),
        figures.information_criteria(np.arange(1, 4), np.array([3.0, 2, 1]), np.array([3.0, 1, 2])),
        figures.loss_curves({"loss/recon": (np.arange(10), rng.random(10))}, [5]),
        figures.embedding_projection(rng.random((30, 2)), {"P": rng.integers(2, 4, 30)}),
        figures.sample_grid([SEGMENTS] * 7, 64.0, cols=3),
        figures.image_pairs([rng.random((8, 8))] * 2, [rng.random((8, 8))] * 2),
    ]
    assert all(isinstance(f, Figure) for f in made)
    assert len(made[4].axes) >= 7
