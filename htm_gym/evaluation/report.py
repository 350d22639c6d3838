"""The evaluation report (``train/evaluate.py --report``): every figure of the report's
results section as PNG + JSON in one directory and as TensorBoard figures and scalars."""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.decomposition import PCA
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.tensorboard import SummaryWriter

from htm_gym.datasets import TokenBatch, TokenGenerator
from htm_gym.envs.render import policy_diagram, reconstruction_figure
from htm_gym.evaluation import figures, metrics
from htm_gym.evaluation.rollout import Policy, pooled_mse, rollout_tokens, squared_errors
from htm_gym.generation.fitting import run_sampler
from htm_gym.generation.roots import generate
from htm_gym.generation.validity import generation_report
from htm_gym.nets import HTMModel

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


@dataclass(frozen=True)
class ReportInputs:
    """What the report reads: one trained run, its policies and the instances it scores.
    ``test`` is held out, ``train`` comes from the training distribution (the training
    stream itself is never stored)."""

    run_dir: Path
    model: HTMModel
    generator: TokenGenerator
    greedy: Policy  # the run's argmax policy
    sampled: Policy  # the run's sampling policy (policy diagram)
    test: TokenBatch
    train: TokenBatch
    num_samples: int = 1000
    seed: int = 0
    num_roots: int = 20000
    max_merges: int | None = None
    sampler_path: str | None = None  # default: the run's GMM (fitted if missing)


@dataclass(frozen=True)
class Rollouts:
    test: dict[str, np.ndarray]
    train: dict[str, np.ndarray]


def write_report(out_dir: Path, inputs: ReportInputs) -> dict[str, Any]:
    """Every report section for one run, as PNG + JSON in ``out_dir`` and TensorBoard."""
    rep = ReportWriter(out_dir)
    x = inputs
    roll = Rollouts(*(_rollout(x, data, x.greedy) for data in (x.test, x.train)))
    for section in (classifier_section, reconstruction_section, policy_section):
        section(rep, x, roll)
    curves, starts = read_losses(x.run_dir)
    if curves:
        rep.figure("loss_curves", figures.loss_curves(curves, starts))
    embedding_section(rep, x, roll)
    generation_section(rep, x)
    rep.close()
    return rep.summary


def _rollout(x: ReportInputs, data: TokenBatch, policy: Policy) -> dict[str, np.ndarray]:
    return rollout_tokens(x.model, x.generator, data, policy, seed=x.seed, max_merges=x.max_merges)


def classifier_section(rep: ReportWriter, x: ReportInputs, roll: Rollouts) -> None:
    table = metrics.classifier_report(roll.test["prob"], roll.test["label"])
    fig, areas = figures.classifier_curves(roll.test["prob"], roll.test["label"])
    rep.table("classifier", table | areas)
    rep.figure("classifier_curves", fig)


def reconstruction_section(rep: ReportWriter, x: ReportInputs, roll: Rollouts) -> None:
    groups, table = {}, {}
    for name, data, r in (("train", x.train, roll.train), ("test", x.test, roll.test)):
        sse, count = squared_errors(r["rec"], data)
        mse = sse / count
        for p in np.unique(data.num_tokens):
            groups[f"{name} P={p}"] = mse[data.num_tokens == p]
        table[name] = {
            "pooled": pooled_mse(sse, count),
            "mean": float(mse.mean()),
            "median": float(np.median(mse)),
        }
    rep.table("reconstruction_mse_px", table)
    rep.figure("reconstruction_violin", figures.mse_violin(groups))
    shown = _shown(x.test)
    truth = [x.test[i] for i in shown]
    recs = [roll.test["rec"][i, : x.test.num_tokens[i]] for i in shown]
    rep.figure("reconstructions", reconstruction_figure(truth, recs, x.generator.image_size))
    if hasattr(x.generator, "to_image"):  # pixel datasets: show the images themselves
        images = [x.generator.to_image(t) for t in truth]
        rep.figure(
            "reconstruction_images",
            figures.image_pairs(images, [x.generator.to_image(r) for r in recs]),
        )


def _shown(test: TokenBatch) -> list[int]:
    return list(range(min(8, len(test))))


def policy_section(rep: ReportWriter, x: ReportInputs, roll: Rollouts) -> None:
    shown = _shown(x.test)
    subset = TokenBatch(x.test.tokens[shown], x.test.num_tokens[shown])
    r = _rollout(x, subset, x.sampled)
    children = [r["children"][i, : r["lengths"][i]] for i in range(len(subset))]
    rep.figure("policy_diagram", policy_diagram(children, list(subset.num_tokens)))


def embedding_section(rep: ReportWriter, x: ReportInputs, roll: Rollouts) -> None:
    levels = node_levels(roll.test["children"], roll.test["lengths"], x.test.num_tokens)
    internal = levels > 0
    emb = roll.test["tree"][internal]  # (K, E) every merged node, the roots included
    points = PCA(n_components=2, random_state=x.seed).fit_transform(emb)
    num_p = np.broadcast_to(x.test.num_tokens[:, None], levels.shape)[internal]
    colours = {"P": num_p, "level": levels[internal]}
    rep.figure("embeddings_pca", figures.embedding_projection(points, colours, "merged nodes"))


def generation_section(rep: ReportWriter, x: ReportInputs) -> None:
    if x.max_merges is not None:  # roots exist only for runs trained to the root
        rep.table("generation", {"skipped": "the run does not merge to the root"})
        return
    sampler, used, _ = run_sampler(
        x.run_dir, x.model, x.generator, x.greedy, path=x.sampler_path, seed=x.seed,
        num_roots=x.num_roots,
    )  # fmt: skip
    if hasattr(sampler, "bic"):
        rep.figure(
            "gmm_information_criteria",
            figures.information_criteria(sampler.candidates, sampler.bic, sampler.aic),
        )
    max_steps = 2 * (2 * x.generator.max_tokens - 1)
    samples = generate(x.model, sampler, x.num_samples, x.seed, max_steps)
    gen = generation_report(x.generator, samples.batch, x.train, samples.truncated)
    rep.table("generation", gen | {"sampler": str(used), "sampler_kind": sampler.kind})
    grid = [samples.batch[i] for i in range(min(15, x.num_samples))]
    rep.figure("samples", figures.sample_grid(grid, x.generator.image_size))
