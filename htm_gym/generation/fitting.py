"""Fitting a trained model's root density and finding the one a run already has."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from htm_gym.datasets import TokenBatch, TokenGenerator
from htm_gym.evaluation.rollout import Policy, collect_roots, rollout_to_root
from htm_gym.generation.parts import PartsSampler
from htm_gym.generation.roots import (
    GaussianMixtureRoots,
    KernelDensityRoots,
    RootSampler,
    load_sampler,
    save_sampler,
)
from htm_gym.nets import HTMModel
from htm_gym.runs import fresh_path

SAMPLER_FILE = "root_sampler.pt"


def fitting_instances(generator: TokenGenerator, num_roots: int, seed: int) -> TokenBatch:
    """The training instances whose roots ``fit_root_sampler`` fits (a fixed draw per seed)."""
    return generator.sample(np.random.default_rng([seed, 31337]), num_roots)


def fit_root_sampler(
    model: HTMModel,
    generator: TokenGenerator,
    policy: Policy,
    num_roots: int = 20000,
    seed: int = 0,
    components: range | list[int] = range(1, 11),
    kind: str = "gmm",
    bandwidth: float = 0.01,
    neighbours: int = 0,
) -> RootSampler:
    """Merge ``num_roots`` fresh training-distribution instances to the root with
    ``policy`` and fit a root density to their roots: the BIC-selected Gaussian mixture
    (``kind="gmm"``) or a kernel density of width ``bandwidth`` (``kind="kde"``); or, with
    ``kind="parts"``, keep their trees' cherries and lone leaves, moved toward one of their
    ``neighbours`` nearest, jittered by ``bandwidth`` and composed by the model's pair
    scorer and merger (``composition.PartsSampler``)."""
    if kind not in ("gmm", "kde", "parts"):
        raise ValueError(f"root sampler kind must be 'gmm', 'kde' or 'parts', got {kind!r}")
    data = fitting_instances(generator, num_roots, seed)
    if kind == "parts":
        r = rollout_to_root(model, generator, data, policy, seed=seed)
        return PartsSampler.fit(r["children"], r["tree"], data.num_tokens, bandwidth, neighbours)
    roots = collect_roots(model, generator, data, policy, seed=seed)
    if kind == "kde":
        return KernelDensityRoots.fit(roots, bandwidth)
    return GaussianMixtureRoots.fit(roots, components, seed)


def run_sampler(
    run_dir: Path,
    model: HTMModel,
    generator: TokenGenerator,
    policy: Policy,
    path: str | None = None,
    refit: bool = False,
    **fit_kwargs,
) -> tuple[RootSampler, Path, bool]:
    """The root sampler at ``path``, else the run's ``root_sampler.pt``; fitted and saved
    there (or beside it under a fresh name when ``refit``) if absent. Returns the sampler,
    its file and whether it was fitted now. A kernel density or parts sampler is cheap to
    fit and depends on its bandwidth, so it is always fitted, and saved under a fresh name."""
    if path is not None:
        return load_sampler(path), Path(path), False
    kind = fit_kwargs.get("kind", "gmm")
    default = run_dir / (SAMPLER_FILE if kind == "gmm" else f"root_sampler_{kind}.pt")
    if default.exists() and not refit and kind == "gmm":
        return load_sampler(default), default, False
    sampler = fit_root_sampler(model, generator, policy, **fit_kwargs)
    out = fresh_path(default)
    save_sampler(sampler, out)
    return sampler, out, True
