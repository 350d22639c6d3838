"""The report's figures as matplotlib ``Figure`` objects (no pyplot state, so they render in
scripts, tests and TensorBoard alike). Inputs are plain arrays; callers save or log them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.metrics import auc, precision_recall_curve, roc_curve

from htm_gym.envs.render import draw_tokens, token_colors


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def classifier_curves(internal_prob: np.ndarray, is_internal: np.ndarray) -> tuple[Figure, dict]:
    """ROC and precision-recall curves of the leaf/internal classifier (report Fig. 17);
    internal (merged) nodes are the positive class. Returns the figure and the AUCs."""
    fpr, tpr, _ = roc_curve(is_internal, internal_prob)
    prec, rec, _ = precision_recall_curve(is_internal, internal_prob)
    areas = {"roc_auc": float(auc(fpr, tpr)), "pr_auc": float(auc(rec, prec))}
    fig = _figure(8, 3.6)
    ax1, ax2 = fig.subplots(1, 2)
    ax1.plot(fpr, tpr)
    ax1.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax1.set(xlabel="false positive rate", ylabel="true positive rate")
    ax1.set_title(f"ROC (AUC {areas['roc_auc']:.5f})")
    ax2.plot(rec, prec)
    ax2.set(xlabel="recall", ylabel="precision")
    ax2.set_title(f"precision-recall (AUC {areas['pr_auc']:.5f})")
    fig.tight_layout()
    return fig, areas


def mse_violin(groups: Mapping[str, np.ndarray]) -> Figure:
    """Distributions of per-instance reconstruction MSE, side by side (report Fig. 16)."""
    fig = _figure(1.6 + 1.4 * len(groups), 3.6)
    ax = fig.add_subplot()
    data = [np.log10(np.maximum(np.asarray(v), 1e-8)) for v in groups.values()]
    ax.violinplot(data, showmedians=True, showextrema=False, quantiles=[[0.25, 0.75]] * len(data))
    ax.set_xticks(range(1, len(groups) + 1), list(groups), rotation=20)
    ax.set_ylabel("log10 reconstruction MSE (px^2)")
    fig.tight_layout()
    return fig


def information_criteria(candidates: np.ndarray, bic: np.ndarray, aic: np.ndarray) -> Figure:
    """BIC and AIC of the root density against the number of components (Fig. 7/13)."""
    fig = _figure(4.5, 3.4)
    ax = fig.add_subplot()
    ax.plot(candidates, bic, "o-", label="BIC")
    ax.plot(candidates, aic, "s--", label="AIC")
    ax.axvline(candidates[int(np.argmin(bic))], color="k", lw=0.8, ls=":", label="chosen")
    ax.set(xlabel="Gaussian components", ylabel="criterion (lower is better)")
    ax.legend()
    fig.tight_layout()
    return fig


def loss_curves(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]], boundaries: Sequence[int]
) -> Figure:
    """Training losses against updates, log scale, curriculum stage starts dashed
    (report Fig. 5/11)."""
    fig = _figure(7, 3.8)
    ax = fig.add_subplot()
    for name, (steps, values) in curves.items():
        ax.plot(steps, np.maximum(values, 1e-12), label=name, lw=1)
    for b in boundaries:
        ax.axvline(b, color="grey", ls="--", lw=0.8)
    ax.set_yscale("log")
    ax.set(xlabel="update", ylabel="loss")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def embedding_projection(
    points: np.ndarray, labels: Mapping[str, np.ndarray], title: str = ""
) -> Figure:
    """2-D points (n, 2) once per colouring (e.g. by P, by tree level)."""
    fig = _figure(4.2 * len(labels), 3.8)
    for k, (name, lab) in enumerate(labels.items()):
        ax = fig.add_subplot(1, len(labels), k + 1)
        for value in np.unique(lab):
            sel = lab == value
            ax.scatter(points[sel, 0], points[sel, 1], s=3, alpha=0.5, label=f"{name}={value}")
        ax.legend(fontsize=7, markerscale=3)
        ax.set(xlabel="PC 1", ylabel="PC 2", title=f"{title} by {name}")
    fig.tight_layout()
    return fig


def sample_grid(samples: Sequence[np.ndarray], image_size: float, cols: int = 5) -> Figure:
    """Generated token sets, one panel each (report Fig. 8/14); any count, any order."""
    rows = max(-(-len(samples) // cols), 1)
    fig = _figure(2.0 * cols, 2.0 * rows)
    for k, tokens in enumerate(samples):
        ax = fig.add_subplot(rows, cols, k + 1)
        if len(tokens):
            draw_tokens(ax, tokens, token_colors(len(tokens)))
        ax.set_xlim(0, image_size)
        ax.set_ylim(0, image_size)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"{len(tokens)} tokens", fontsize=8)
    fig.tight_layout()
    return fig


def image_pairs(truth: Sequence[np.ndarray], recon: Sequence[np.ndarray]) -> Figure:
    """Images (H, W) side by side: ground truth on top, reconstruction below."""
    cols = max(len(truth), 1)
    fig = _figure(1.3 * cols, 2.8)
    for k, (t, r) in enumerate(zip(truth, recon, strict=True)):
        for row, (im, label) in enumerate(((t, "data"), (r, "reconstruction"))):
            ax = fig.add_subplot(2, cols, row * cols + k + 1)
            ax.imshow(im, cmap="gray_r", vmin=0, vmax=16)
            ax.set_xticks([])
            ax.set_yticks([])
            if k == 0:
                ax.set_ylabel(label, fontsize=8)
    fig.tight_layout()
    return fig
