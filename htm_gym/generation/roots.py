"""Generation (report 3.8): a density over root embeddings, and classifier-guided unmerging.

A *root sampler* is anything with ``sample(n, rng) -> (n, E)`` plus ``state_dict()`` of
plain arrays and a ``from_state_dict`` classmethod (see ``RootSampler``); register a new
kind in ``SAMPLERS`` and ``save_sampler``/``load_sampler`` handle it. The default is a
Gaussian mixture whose component count is picked by BIC; ``KernelDensityRoots`` resamples
the encoded roots themselves, jittered, which at bandwidth 0 measures what the decoder
alone allows (every sample a training instance's root). ``composition.PartsSampler`` builds
roots from encoded parts with the model's merger; a sampler like it, which needs the model,
defines ``bind(model)``, and ``generate`` calls it before sampling.

``unmerge_samples`` decodes many roots at once with the original's queue semantics: node k
of a sample's down tree (in the order nodes are appended, i.e. level order) is examined iff
k < ``max_steps``; a node the classifier calls internal is unmerged and its two children are
appended; a node called a leaf becomes an output token. One batched step per queue position.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Protocol

import numpy as np
import torch
from sklearn.mixture import GaussianMixture
from torch import Tensor

from htm_gym.datasets import TokenBatch
from htm_gym.files import atomic_save
from htm_gym.generation.parts import PartsSampler
from htm_gym.nets import HTMModel


class RootSampler(Protocol):
    kind: ClassVar[str]

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` root embeddings (n, E), float32, drawn only from ``rng``."""
        ...

    def state_dict(self) -> dict[str, np.ndarray]: ...

    @classmethod
    def from_state_dict(cls, state: dict[str, np.ndarray]) -> RootSampler: ...


@dataclass
class GaussianMixtureRoots:
    """A full-covariance Gaussian mixture over roots, stored as its arrays.

    ``fit`` tries every component count in ``components`` and keeps the lowest BIC; the BIC
    and AIC of every candidate are kept for the report's Fig. 7/13.
    """

    weights: np.ndarray  # (K,)
    means: np.ndarray  # (K, E)
    covariances: np.ndarray  # (K, E, E)
    candidates: np.ndarray  # (C,) component counts tried
    bic: np.ndarray  # (C,)
    aic: np.ndarray  # (C,)
    kind: ClassVar[str] = "gmm"

    @classmethod
    def fit(
        cls, roots: np.ndarray, components: range | list[int] = range(1, 11), seed: int = 0
    ) -> GaussianMixtureRoots:
        roots = np.asarray(roots, dtype=np.float64)
        if roots.ndim != 2 or not np.isfinite(roots).all():
            raise ValueError(f"roots must be a finite (n, E) array, got shape {roots.shape}")
        counts = [k for k in components if k <= len(roots)]
        if not counts:
            raise ValueError(f"need at least {min(components)} roots to fit, got {len(roots)}")
        fits = [
            GaussianMixture(k, covariance_type="full", random_state=seed, reg_covar=1e-6).fit(roots)
            for k in counts
        ]
        bic = np.array([g.bic(roots) for g in fits])
        best = fits[int(bic.argmin())]
        return cls(
            best.weights_,
            best.means_,
            best.covariances_,
            np.array(counts),
            bic,
            np.array([g.aic(roots) for g in fits]),
        )

    @property
    def num_components(self) -> int:
        return len(self.weights)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        comp = rng.choice(len(self.weights), size=n, p=self.weights / self.weights.sum())
        z = rng.standard_normal((n, self.means.shape[1]))
        chol = np.linalg.cholesky(self.covariances)  # (K, E, E)
        return (self.means[comp] + np.einsum("nij,nj->ni", chol[comp], z)).astype(np.float32)

    def state_dict(self) -> dict[str, np.ndarray]:
        names = ("weights", "means", "covariances", "candidates", "bic", "aic")
        return {k: np.asarray(getattr(self, k)) for k in names}

    @classmethod
    def from_state_dict(cls, state: dict[str, np.ndarray]) -> GaussianMixtureRoots:
        return cls(**{k: np.asarray(v) for k, v in state.items()})


@dataclass
class KernelDensityRoots:
    """A Gaussian kernel density over encoded roots: a stored root plus N(0, bandwidth^2 I).

    Small bandwidths stay on the roots the encoder makes and so mostly copy training
    instances (the generation report's novelty shows how much); bandwidth 0 decodes the
    training roots exactly, the decoder's ceiling for any root density.
    """

    roots: np.ndarray  # (N, E)
    bandwidth: float
    kind: ClassVar[str] = "kde"

    @classmethod
    def fit(cls, roots: np.ndarray, bandwidth: float = 0.01) -> KernelDensityRoots:
        roots = np.asarray(roots, dtype=np.float32)
        if roots.ndim != 2 or len(roots) == 0 or not np.isfinite(roots).all():
            raise ValueError(f"roots must be a finite non-empty (n, E) array, got {roots.shape}")
        if not (np.isfinite(bandwidth) and bandwidth >= 0):
            raise ValueError(f"bandwidth must be finite and >= 0, got {bandwidth}")
        return cls(roots, float(bandwidth))

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        pick = rng.integers(len(self.roots), size=n)
        z = rng.standard_normal((n, self.roots.shape[1]))
        return (self.roots[pick] + self.bandwidth * z).astype(np.float32)

    def state_dict(self) -> dict[str, np.ndarray]:
        return {"roots": self.roots, "bandwidth": np.asarray(self.bandwidth)}

    @classmethod
    def from_state_dict(cls, state: dict[str, np.ndarray]) -> KernelDensityRoots:
        return cls(np.asarray(state["roots"]), float(state["bandwidth"]))


SAMPLERS: dict[str, type] = {
    "gmm": GaussianMixtureRoots,
    "kde": KernelDensityRoots,
    "parts": PartsSampler,
}


def save_sampler(sampler: RootSampler, path: str | Path) -> None:
    """Write ``{"kind", "state"}`` of plain tensors (loadable with ``weights_only=True``)."""
    state = {k: torch.as_tensor(np.asarray(v)) for k, v in sampler.state_dict().items()}
    atomic_save({"kind": sampler.kind, "state": state}, path)


def load_sampler(path: str | Path) -> RootSampler:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"root sampler not found: {path}")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        cls = SAMPLERS[blob["kind"]]
        return cls.from_state_dict({k: v.numpy() for k, v in blob["state"].items()})
    except Exception as e:  # corrupt file, foreign pickle, unknown kind, missing arrays
        raise ValueError(f"{path}: not a readable root sampler ({type(e).__name__}: {e})") from e


@dataclass(frozen=True)
class Samples:
    batch: TokenBatch  # generated token sets, NaN-padded, num_tokens may be 0 or 1
    truncated: np.ndarray  # (n,) bool, the step limit stopped the unmerging


@torch.no_grad()
def unmerge_samples(
    model: HTMModel, roots: Tensor, max_steps: int, threshold: float = 0.5
) -> Samples:
    """Classifier-guided level-order unmerging of roots (n, E), then unlifting."""
    if max_steps < 1:
        raise ValueError(f"max_steps must be >= 1, got {max_steps}")
    n, e = roots.shape
    dev = roots.device
    rows = torch.arange(n, device=dev)
    table = roots.new_zeros(n, 2 * max_steps + 1, e)  # (n, L, E) the down tree, queue order
    table[:, 0] = roots
    size = torch.ones(n, dtype=torch.long, device=dev)  # nodes appended so far
    is_leaf = torch.zeros(n, 2 * max_steps + 1, dtype=torch.bool, device=dev)
    for k in range(max_steps):
        live = size > k  # (n,) sample still has node k in its queue
        if not bool(live.any()):
            break
        node = table[:, k]  # (n, E)
        internal = torch.softmax(model.classifier(node), -1)[:, 1] >= threshold
        is_leaf[:, k] = live & ~internal
        grow = live & internal
        left, right = model.unmerge(node)
        for child, offset in ((left, 0), (right, 1)):
            slot = torch.where(grow, size + offset, torch.zeros_like(size))
            table[rows[grow], slot[grow]] = child[grow]
        size = size + 2 * grow.long()
    truncated = size > max_steps  # queued nodes left unexamined
    counts = is_leaf.sum(1)  # (n,)
    order = torch.argsort((~is_leaf).to(torch.int8), dim=1, stable=True)  # leaves first
    leaves = table.gather(1, order[..., None].expand(-1, -1, e))[:, : max(int(counts.max()), 1)]
    tokens = model.unlift(leaves)  # (n, Lmax, T)
    pad = torch.arange(tokens.shape[1], device=dev)[None, :] >= counts[:, None]
    tokens = tokens.masked_fill(pad[..., None], float("nan"))
    batch = TokenBatch(tokens.float().cpu().numpy(), counts.cpu().numpy().astype(np.int64))
    return Samples(batch, truncated.cpu().numpy())


def generate(
    model: HTMModel,
    sampler: RootSampler,
    n: int,
    seed: int,
    max_steps: int,
    threshold: float = 0.5,
    batch_size: int = 8192,
) -> Samples:
    """``n`` samples, reproducible from ``seed`` (roots drawn on the CPU with NumPy)."""
    if n < 1 or max_steps < 1 or not 0 < threshold < 1:
        raise ValueError(
            f"need n >= 1, max_steps >= 1 and 0 < threshold < 1; got {n}, {max_steps}, {threshold}"
        )
    rng = np.random.default_rng(seed)
    if hasattr(sampler, "bind"):  # a sampler that composes roots with the model's networks
        sampler.bind(model)
    roots = sampler.sample(n, rng)
    if roots.shape[1] != model.embed_dim:
        raise ValueError(
            f"the root sampler draws {roots.shape[1]}-d roots, the model embeds in "
            f"{model.embed_dim} dimensions: use a sampler fitted to this run"
        )
    dev = next(model.parameters()).device
    parts = [
        unmerge_samples(
            model, torch.as_tensor(roots[i : i + batch_size], device=dev), max_steps, threshold
        )
        for i in range(0, n, batch_size)
    ]
    width = max(p.batch.tokens.shape[1] for p in parts)
    tokens = np.concatenate(
        [
            np.pad(
                p.batch.tokens,
                ((0, 0), (0, width - p.batch.tokens.shape[1]), (0, 0)),
                constant_values=np.nan,
            )
            for p in parts
        ]
    )
    num = np.concatenate([p.batch.num_tokens for p in parts])
    return Samples(TokenBatch(tokens, num), np.concatenate([p.truncated for p in parts]))
