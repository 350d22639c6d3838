"""The env's arguments, validated once for both faces: :class:`EnvConfig` (the fields of
``HTMEnv`` and ``HTMVectorEnv``), the dataset's defaults for embedding width and token
scale, and the checks that turn bad arguments into one-line errors before anything is built.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch

from htm_gym.datasets import TokenGenerator, make_generator
from htm_gym.nets import HTMConfig, HTMModel, load_model, make_model, resolve_device

ILLEGAL_MODES = ("penalize", "raise")
# one_step: minus the merge's own unmerging error in embedding space (report 3.3.1).
# skip_path: the change in the error of every token decoded from the current forest
# (the skip-generative path of the hierarchical-VAE-with-RL paper, section 3): a merge that
# destroys information about any token pays for it at once, in token space.
REWARDS = ("one_step", "skip_path")
# Crosses: the report's 18 (three crosses of 6 numbers) left a 6-cross root too little room
# beside the node noise; 32 cut the noise-free reconstruction error of P = 6 by 3-4x, 48 by
# another 3x (docs/crosses.md, runs m_*). Trees: the report's 7 (3 positions plus a level flag) gave
# 12.7 px^2 on the reference set, 16 gave 2.05 and 32 gave 0.94 at the same budget
# (docs/trees.md). Both are about twice the numbers in their largest token set.
DEFAULT_EMBED_DIM = {"crosses": 48, "trees": 32}
# Tokens are divided by this inside the model (default: the dataset's unit-range scale).
# The node noise is fixed (sigma = 0.01), so a smaller scale makes embeddings larger
# against it: for crosses 8 px rather than 64 halved the reconstruction error with noise
# on, while the noise still shapes the policy's reward (docs/crosses.md, tuning runs m_*).
# Crosses: 4 px with the learning rate at 4e-3 reached a lower pooled MSE in fewer updates
# than 8 px (runs c8_ts*, c10_r65_s*). Trees: 8 px rather than 128 cut the reference MSE
# from 50.5 to 44.8 px^2 (docs/trees.md).
DEFAULT_TOKEN_SCALE = {"crosses": 4.0, "trees": 8.0}


def default_embed_dim(generator: TokenGenerator) -> int:
    if generator.name == "tokens":  # a user's file: room for twice its largest set's numbers
        return min(2 * generator.max_tokens * generator.token_dim, 128)
    return DEFAULT_EMBED_DIM.get(generator.name, 16)


def default_token_scale(generator: TokenGenerator) -> float:
    return DEFAULT_TOKEN_SCALE.get(generator.name, generator.token_scale)


@dataclass(frozen=True)
class EnvOptions:
    """Validated env arguments shared by the single and the vector env."""

    max_merges: int | None
    illegal_action: str
    illegal_penalty: float
    step_limit: int
    reward: str = "one_step"
    rate_weight: float = 0.0


def check_options(
    max_tokens: int,
    max_merges: int | None,
    illegal_action: str,
    illegal_penalty: float,
    step_limit: int | None,
    reward: str = "one_step",
    rate_weight: float = 0.0,
) -> EnvOptions:
    if reward not in REWARDS:
        raise ValueError(f"reward must be one of {REWARDS}, got {reward!r}")
    if isinstance(rate_weight, bool) or not np.isfinite(rate_weight) or rate_weight < 0:
        raise ValueError(f"rate_weight must be finite and >= 0, got {rate_weight!r}")
    if rate_weight and reward != "skip_path":
        raise ValueError(
            f"rate_weight={rate_weight!r} prices the forest of the skip-path reward; "
            "pass reward='skip_path' or rate_weight=0"
        )
    if max_merges is not None and (
        isinstance(max_merges, bool) or not isinstance(max_merges, int) or max_merges < 1
    ):
        raise ValueError(
            f"max_merges must be None (merge to the root) or an integer >= 1, got {max_merges!r}"
        )
    if illegal_action not in ILLEGAL_MODES:
        raise ValueError(f"illegal_action must be one of {ILLEGAL_MODES}, got {illegal_action!r}")
    if not np.isfinite(illegal_penalty) or illegal_penalty < 0:
        raise ValueError(f"illegal_penalty must be finite and >= 0, got {illegal_penalty!r}")
    if step_limit is None:
        step_limit = 4 * max_tokens
    if (
        isinstance(step_limit, bool)
        or not isinstance(step_limit, int)
        or step_limit < max_tokens - 1
    ):
        raise ValueError(
            f"step_limit must be an integer >= max_tokens - 1 = {max_tokens - 1} "
            f"(else no episode can reach the root), got {step_limit!r}"
        )
    return EnvOptions(
        max_merges, illegal_action, float(illegal_penalty), step_limit, reward, float(rate_weight)
    )


def build_generator(dataset: str | TokenGenerator, dataset_kwargs: dict | None) -> TokenGenerator:
    if isinstance(dataset, TokenGenerator):
        if dataset_kwargs:
            raise ValueError("dataset_kwargs only apply when dataset is given by name")
        return dataset
    return make_generator(dataset, **(dataset_kwargs or {}))


def build_model(
    generator: TokenGenerator,
    model: HTMModel | None,
    checkpoint: str | Path | None,
    embed_dim: int | None,
    hidden_dim: int,
    model_seed: int | None,
    device: str | torch.device | None,
) -> HTMModel:
    """The env's merger/unmerger: the given module, a checkpoint, or a fresh seeded model."""
    device = check_device(device)
    if model is not None and checkpoint is not None:
        raise ValueError("pass either model or checkpoint, not both")
    if checkpoint is not None:
        model = load_model(checkpoint, map_location=device)
    if model is None:
        config = HTMConfig(
            token_dim=generator.token_dim,
            embed_dim=default_embed_dim(generator) if embed_dim is None else embed_dim,
            hidden_dim=hidden_dim,
            token_loc=generator.token_loc,
            token_scale=default_token_scale(generator),
        )
        return make_model(config, seed=model_seed, device=device)
    if not isinstance(model, HTMModel):
        raise TypeError(f"model must be an htm_gym.nets.HTMModel, got {type(model).__name__}")
    if model.config.token_dim != generator.token_dim:
        raise ValueError(
            f"model expects {model.config.token_dim}-d tokens, dataset {generator.name!r} has "
            f"{generator.token_dim}-d tokens"
        )
    return model


@dataclass(frozen=True)
class EnvConfig:
    """The arguments of both env faces, ``HTMEnv`` and ``HTMVectorEnv`` (documented in
    ``HTMEnv``'s docstring); validated when the dynamics are built (:func:`make_sim`)."""

    dataset: str | TokenGenerator = "crosses"
    dataset_kwargs: dict | None = None
    model: HTMModel | None = None
    checkpoint: str | Path | None = None
    embed_dim: int | None = None
    hidden_dim: int = 256
    noise_std: float | None = None
    model_seed: int | None = 0
    max_merges: int | None = None
    illegal_action: str = "penalize"
    illegal_penalty: float = 1.0
    step_limit: int | None = None
    device: str | torch.device | None = None
    reward: str = "one_step"
    rate_weight: float = 0.0
    max_tokens: int | None = None

    @classmethod
    def of(cls, face: str, kwargs: dict) -> EnvConfig:
        """The config of an env's keyword arguments; unknown names are a TypeError."""
        unknown = sorted(set(kwargs) - {f.name for f in fields(cls)})
        if unknown:
            names = ", ".join(f.name for f in fields(cls))
            raise TypeError(f"{face} got unknown argument(s) {unknown}; it takes {names}")
        return cls(**kwargs)


def check_device(device: str | torch.device | None) -> torch.device:
    """A torch device that exists here (None: torch's default device), or a ValueError
    saying which to use."""
    try:
        dev = resolve_device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"device {device!r} is not a torch device: use 'cpu' or 'cuda'") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r}: no CUDA device here, use device='cpu'")
    return dev


def check_slots(max_tokens: int | None, generator: TokenGenerator) -> int:
    """The env's slot count S: ``max_tokens``, or the dataset's largest P when None."""
    if max_tokens is None:
        return generator.max_tokens
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, (int, np.integer)):
        raise ValueError(f"max_tokens must be an integer or None, got {max_tokens!r}")
    if max_tokens < generator.max_tokens:
        raise ValueError(
            f"max_tokens={max_tokens} is below the {generator.name!r} dataset's largest token "
            f"count {generator.max_tokens}; pass max_tokens >= {generator.max_tokens} or None"
        )
    return int(max_tokens)
