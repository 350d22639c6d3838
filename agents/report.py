"""The evaluation report (``train/evaluate.py --report``): every figure of the report's
results section as PNG + JSON in one directory and as TensorBoard figures and scalars."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.decomposition import PCA
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.tensorboard import SummaryWriter

from agents import checkpoint
from agents.evaluation import pooled_mse, rollout_tokens, squared_errors
from agents.generative import run_sampler
from htm_gym import figures, metrics
from htm_gym.datasets import TokenBatch, TokenGenerator
from htm_gym.generation import generate
from htm_gym.nets import HTMModel
from htm_gym.render import policy_diagram, reconstruction_figure
from htm_gym.validity import generation_report

LOSS_TAGS = ("loss/recon", "loss/step", "loss/transport", "loss/classifier", "loss/htm")


class ReportWriter:
    """One figure or table per name: ``<dir>/<name>.png``/``.json`` and TensorBoard."""

    def __init__(self, out_dir: Path) -> None:
        self.dir = out_dir
        out_dir.mkdir(parents=True)
        self.tb = SummaryWriter(str(out_dir))
        self.summary: dict[str, Any] = {}

    def figure(self, name: str, fig) -> None:
        fig.savefig(self.dir / f"{name}.png", dpi=100)
        self.tb.add_figure(f"report/{name}", fig, 0)

    def table(self, name: str, data: dict[str, Any]) -> None:
        self.summary[name] = data
        (self.dir / f"{name}.json").write_text(json.dumps(data, indent=2))
        for key, value in _flatten(data).items():
            self.tb.add_scalar(f"report/{name}/{key}", value, 0)

    def close(self) -> None:
        (self.dir / "report.json").write_text(json.dumps(self.summary, indent=2))
        self.tb.close()


def _flatten(data: dict, prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in data.items():
        if isinstance(v, dict):
            out |= _flatten(v, f"{prefix}{k}/")
        elif isinstance(v, int | float) and not isinstance(v, bool):
            out[f"{prefix}{k}"] = float(v)
    return out


def node_levels(children: np.ndarray, lengths: np.ndarray, num_tokens: np.ndarray) -> np.ndarray:
    """Height of every tree node (leaves 0, a merge 1 + its higher child), -1 if absent."""
    n, m = children.shape[:2]
    levels = np.full((n, 2 * m + 1), -1)
    rows = np.arange(n)
    levels[np.arange(2 * m + 1)[None, :] < num_tokens[:, None]] = 0
    for t in range(m):
        act = rows[lengths > t]
        a, b = children[act, t, 0], children[act, t, 1]
        levels[act, num_tokens[act] + t] = 1 + np.maximum(levels[act, a], levels[act, b])
    return levels


def read_losses(run_dir: Path) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], list[int]]:
    """Training loss curves and curriculum stage starts from a run's TensorBoard logs."""
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0}).Reload()
    tags = set(acc.Tags().get("scalars", []))
    curves = {}
    for tag in LOSS_TAGS:
        if tag in tags:
            ev = acc.Scalars(tag)
            curves[tag] = (np.array([e.step for e in ev]), np.array([e.value for e in ev]))
    starts: list[int] = []
    if "train/stage" in tags:
        ev = acc.Scalars("train/stage")
        starts = [e.step for prev, e in itertools.pairwise(ev) if e.value != prev.value]
    return curves, starts


def write_report(
    out_dir: Path,
    run_dir: Path,
    model: HTMModel,
    ckpt: dict,
    generator: TokenGenerator,
    test: TokenBatch,
    train: TokenBatch,
    num_samples: int = 1000,
    seed: int = 0,
    num_roots: int = 20000,
    max_merges: int | None = None,
    sampler_path: str | None = None,
) -> dict[str, Any]:
    """All report figures for one checkpoint; ``test`` is held out, ``train`` comes from the
    training distribution (the training stream itself is never stored). Samples come from
    the root sampler at ``sampler_path``, else the run's GMM (fitted if missing)."""
    rep = ReportWriter(out_dir)
    greedy = checkpoint.checkpoint_actor(model, ckpt, greedy=True)
    r_test = rollout_tokens(model, generator, test, greedy, seed=seed, max_merges=max_merges)
    r_train = rollout_tokens(model, generator, train, greedy, seed=seed, max_merges=max_merges)

    table = metrics.classifier_report(r_test["prob"], r_test["label"])
    fig, areas = figures.classifier_curves(r_test["prob"], r_test["label"])
    rep.table("classifier", table | areas)
    rep.figure("classifier_curves", fig)

    groups, mse_table = {}, {}
    for name, data, r in (("train", train, r_train), ("test", test, r_test)):
        sse, count = squared_errors(r["rec"], data)
        mse = sse / count
        for p in np.unique(data.num_tokens):
            groups[f"{name} P={p}"] = mse[data.num_tokens == p]
        mse_table[name] = {
            "pooled": pooled_mse(sse, count),
            "mean": float(mse.mean()),
            "median": float(np.median(mse)),
        }
    rep.table("reconstruction_mse_px", mse_table)
    rep.figure("reconstruction_violin", figures.mse_violin(groups))
    shown = list(range(min(8, len(test))))
    rep.figure(
        "reconstructions",
        reconstruction_figure(
            [test[i] for i in shown],
            [r_test["rec"][i, : test.num_tokens[i]] for i in shown],
            generator.image_size,
        ),
    )

    if hasattr(generator, "to_image"):  # pixel datasets: show the images themselves
        rep.figure(
            "reconstruction_images",
            figures.image_pairs(
                [generator.to_image(test[i]) for i in shown],
                [generator.to_image(r_test["rec"][i, : test.num_tokens[i]]) for i in shown],
            ),
        )
    sampled = checkpoint.checkpoint_actor(
        model, ckpt, greedy=False, generator=torch.Generator().manual_seed(seed)
    )
    subset = TokenBatch(test.tokens[shown], test.num_tokens[shown])
    r_pol = rollout_tokens(model, generator, subset, sampled, seed=seed, max_merges=max_merges)
    children = [r_pol["children"][i, : r_pol["lengths"][i]] for i in range(len(subset))]
    rep.figure("policy_diagram", policy_diagram(children, list(subset.num_tokens)))

    curves, starts = read_losses(run_dir)
    if curves:
        rep.figure("loss_curves", figures.loss_curves(curves, starts))

    levels = node_levels(r_test["children"], r_test["lengths"], test.num_tokens)
    internal = levels > 0
    emb = r_test["tree"][internal]  # (K, E) every merged node, the roots included
    points = PCA(n_components=2, random_state=seed).fit_transform(emb)
    num_p = np.broadcast_to(test.num_tokens[:, None], levels.shape)[internal]
    rep.figure(
        "embeddings_pca",
        figures.embedding_projection(
            points, {"P": num_p, "level": levels[internal]}, "merged nodes"
        ),
    )

    if max_merges is not None:  # roots exist only for runs trained to the root
        rep.table("generation", {"skipped": "the run does not merge to the root"})
        rep.close()
        return rep.summary
    sampler, used, _ = run_sampler(
        run_dir, model, generator, greedy, path=sampler_path, seed=seed, num_roots=num_roots
    )
    if hasattr(sampler, "bic"):
        rep.figure(
            "gmm_information_criteria",
            figures.information_criteria(sampler.candidates, sampler.bic, sampler.aic),
        )
    max_steps = 2 * (2 * generator.max_tokens - 1)
    samples = generate(model, sampler, num_samples, seed, max_steps)
    gen = generation_report(generator, samples.batch, train, samples.truncated)
    rep.table("generation", gen | {"sampler": str(used), "sampler_kind": sampler.kind})
    grid = [samples.batch[i] for i in range(min(15, num_samples))]
    rep.figure("samples", figures.sample_grid(grid, generator.image_size))
    rep.close()
    return rep.summary
