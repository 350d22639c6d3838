"""Drawing token sets (any count, any order) and merge trees to RGB arrays with matplotlib."""

from __future__ import annotations

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure

_COLORS = np.array(
    [
        [0.12, 0.47, 0.71],
        [1.0, 0.5, 0.05],
        [0.17, 0.63, 0.17],
        [0.84, 0.15, 0.16],
        [0.58, 0.4, 0.74],
        [0.55, 0.34, 0.29],
        [0.89, 0.47, 0.76],
        [0.5, 0.5, 0.5],
    ]
)


def token_points(tokens: np.ndarray) -> np.ndarray:
    """A representative 2-D point per token: segment midpoints for 4-d tokens, else (x, y)."""
    tokens = np.asarray(tokens, dtype=np.float64)
    if tokens.shape[-1] == 4:
        return 0.5 * (tokens[..., :2] + tokens[..., 2:])
    return tokens[..., :2]


def draw_tokens(ax, tokens: np.ndarray, colors: np.ndarray | None = None, **kw) -> None:
    """Segments for 4-d tokens (crosses), dots for anything else (trees: node positions)."""
    tokens = np.asarray(tokens, dtype=np.float64)
    colors = _COLORS[np.zeros(len(tokens), int)] if colors is None else colors
    if tokens.shape[-1] == 4:
        ax.add_collection(
            LineCollection(tokens.reshape(-1, 2, 2), colors=colors, linewidths=2, **kw)
        )
    else:
        ax.scatter(tokens[:, 0], tokens[:, 1], c=colors, s=30, zorder=3, **kw)


def render_tokens(
    tokens: np.ndarray,
    image_size: float,
    cluster: np.ndarray | None = None,
    children: np.ndarray | None = None,
    size_px: int = 256,
) -> np.ndarray:
    """RGB (size_px, size_px, 3) uint8 picture of one token set.

    cluster: (P,) id of the current cluster of each token (colours);
    children: (M, 2) tree ids merged at each step, drawn as lines between the two children's
    centroids (tree id p < P is token p, id P + t is merge t).
    """
    tokens = np.asarray(tokens, dtype=np.float64)
    p = len(tokens)
    fig = Figure(figsize=(size_px / 64, size_px / 64), dpi=64)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, image_size)
    ax.set_ylim(0, image_size)
    ax.set_aspect("equal")
    ax.axis("off")
    colors = None if cluster is None else _COLORS[np.asarray(cluster) % len(_COLORS)]
    draw_tokens(ax, tokens, colors)
    if children is not None and len(children):
        centroids = _node_centroids(token_points(tokens), np.asarray(children), p)
        lines = [centroids[[a, b]] for a, b in children]
        ax.add_collection(LineCollection(lines, colors="k", linewidths=1, linestyles="--"))
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def _node_centroids(points: np.ndarray, children: np.ndarray, p: int) -> np.ndarray:
    """Centroid of the leaves under every tree node: (P + M, 2)."""
    sums = np.concatenate([points, np.zeros((len(children), 2))])
    counts = np.concatenate([np.ones(p), np.zeros(len(children))])
    for t, (a, b) in enumerate(children):
        sums[p + t] = sums[a] + sums[b]
        counts[p + t] = counts[a] + counts[b]
    return sums / counts[:, None]
