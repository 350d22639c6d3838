"""Drawing token sets (any count, any order) and merge trees to RGB arrays with matplotlib."""

from __future__ import annotations

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection, PatchCollection
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

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


def token_colors(n: int) -> np.ndarray:
    """One colour per token, cycling through the palette: (n, 3)."""
    return _COLORS[np.arange(n) % len(_COLORS)]


def token_points(tokens: np.ndarray) -> np.ndarray:
    """A representative 2-D point per token: segment midpoints for 4-d tokens, else (x, y)."""
    tokens = np.asarray(tokens, dtype=np.float64)
    if tokens.shape[-1] == 4:
        return 0.5 * (tokens[..., :2] + tokens[..., 2:])
    return tokens[..., :2]


def draw_tokens(ax, tokens: np.ndarray, colors: np.ndarray | None = None, **kw) -> None:
    """Segments for 4-d tokens (crosses), grey squares shaded by the third coordinate for 3-d
    tokens (digits: x, y, intensity), dots for 2-d ones (trees: node positions)."""
    tokens = np.asarray(tokens, dtype=np.float64)
    if tokens.shape[-1] == 3 and colors is None:  # unit pixels in data coordinates
        shade = np.clip(tokens[:, 2] / max(float(np.nanmax(tokens[:, 2], initial=1.0)), 1e-6), 0, 1)
        squares = [Rectangle((x - 0.5, y - 0.5), 1.0, 1.0) for x, y in tokens[:, :2]]
        grey = np.repeat(1.0 - shade[:, None], 3, axis=1)
        ax.add_collection(PatchCollection(squares, facecolors=grey, edgecolors="none", **kw))
        return
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


def reconstruction_figure(
    truth: list[np.ndarray], recon: list[np.ndarray], image_size: float, cols: int = 4
) -> Figure:
    """Ground truth (green) over reconstruction (magenta), one panel per instance
    (report Fig. 15)."""
    rows = -(-len(truth) // cols)
    fig = Figure(figsize=(2.2 * cols, 2.2 * rows))
    FigureCanvasAgg(fig)
    for k, (t, r) in enumerate(zip(truth, recon, strict=True)):
        ax = fig.add_subplot(rows, cols, k + 1)
        draw_tokens(ax, r, np.tile([[0.85, 0.1, 0.85]], (len(r), 1)), alpha=0.8)
        draw_tokens(ax, t, np.tile([[0.1, 0.6, 0.1]], (len(t), 1)), alpha=0.6)
        ax.set_xlim(0, image_size)
        ax.set_ylim(0, image_size)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig


def policy_diagram(children: list[np.ndarray], num_tokens: list[int]) -> Figure:
    """Merge trajectories top to bottom (report Fig. 6): ``left + right -> new`` per step,
    the new node's id (P + t) in red."""
    cols = len(children)
    depth = max((len(c) for c in children), default=1)
    fig = Figure(figsize=(1.6 * cols, 0.45 * depth + 0.6))
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.axis("off")
    for k, (ch, p) in enumerate(zip(children, num_tokens, strict=True)):
        x = (k + 0.5) / cols
        ax.text(x, 0.97, f"P={p}", ha="center", va="top", fontsize=9, weight="bold")
        for t, (a, b) in enumerate(ch):
            y = 0.9 - 0.85 * (t + 0.5) / depth
            ax.text(x - 0.01, y, f"{a} + {b} \u2192", ha="right", va="center", fontsize=9)
            ax.text(x + 0.01, y, str(p + t), ha="left", va="center", fontsize=9, color="red")
    return fig
