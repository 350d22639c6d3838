"""Token-set generators: the shared interface and the padded batch format.

A generator splits sampling into two halves so that a batch of environments can each keep
their own seeded random stream and still be built in one vectorised call:

* ``draw(rng)`` consumes a fixed amount of randomness from one ``np.random.Generator`` and
  returns it as a flat float64 vector (cheap: one or two NumPy calls per instance);
* ``build(draws)`` turns a ``(n, draw_size)`` array of such vectors into token sets, with
  no randomness of its own.

So ``build(stack([draw(rng_i) for i]))`` gives row ``i`` exactly what a single environment
seeded like ``rng_i`` would get, which is what makes the native vector env equal to
``SyncVectorEnv`` over the single env.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class TokenBatch:
    """Token sets of varying size P, padded to ``max_tokens`` with NaN rows.

    This is the layout of the reference ``.npz`` files: ``tokens`` (n, S, T) float32 and
    ``num_tokens`` (n,) int64, with rows ``P..S-1`` of instance i all NaN.
    """

    tokens: np.ndarray  # (n, S, T) float32, NaN-padded
    num_tokens: np.ndarray  # (n,) int64

    def __len__(self) -> int:
        return len(self.num_tokens)

    def __getitem__(self, i: int) -> np.ndarray:
        """Instance ``i`` without padding, shape (P, T)."""
        return self.tokens[i, : self.num_tokens[i]]


class TokenGenerator(ABC):
    """Samples token sets and knows their ground-truth hierarchy.

    Subclasses set ``name``, ``token_dim``, ``max_tokens``, ``draw_size`` and the fixed
    affine map ``(token_loc, token_scale)`` that takes tokens to roughly unit range for the
    networks (losses are computed there; metrics are reported in token units).
    """

    name: str
    token_dim: int
    max_tokens: int
    min_tokens: int = 2
    draw_size: int
    image_size: float
    token_loc: float
    token_scale: float

    @abstractmethod
    def build(self, draws: np.ndarray) -> TokenBatch:
        """Deterministically turn (n, draw_size) uniform draws into n token sets."""

    @abstractmethod
    def constituents(self, num_tokens: int) -> list[tuple[int, ...]]:
        """Ground-truth constituents (sets of token indices) of an instance with P tokens.

        Both built-in datasets fix the token order, so the hierarchy depends only on P.
        Every constituent has at least two tokens; the whole set is always included.
        """

    def draw(self, rng: np.random.Generator) -> np.ndarray:
        return rng.random(self.draw_size)

    def is_valid(self, tokens: np.ndarray) -> bool:
        """Whether one token set (P, T), in any order, is a structurally valid image of this
        dataset (how generated samples are scored). Datasets without a checker raise."""
        raise NotImplementedError(f"{type(self).__name__} has no structural validity checker")

    def sample(self, rng: np.random.Generator, n: int) -> TokenBatch:
        """``n`` instances, equal to ``n`` sequential single draws from ``rng``."""
        draws = np.stack([self.draw(rng) for _ in range(n)]) if n else np.zeros((0, self.draw_size))
        return self.build(draws)


# Beyond this, squared errors of the lifted tokens overflow float32 in the merger's losses.
MAX_TOKEN_ABS = 1e8


def validate_tokens(tokens: object, token_dim: int, max_tokens: int) -> np.ndarray:
    """Check a user-supplied token set and return it as float32 (P, T).

    Raises ``ValueError`` naming the problem: a non-real dtype (bool, complex, text), wrong
    rank, wrong token width, fewer than two or more than ``max_tokens`` tokens, non-finite
    values, or magnitudes above ``MAX_TOKEN_ABS`` (the model's float32 losses would overflow).
    """
    raw = np.asarray(tokens)
    if raw.dtype == np.bool_ or not np.issubdtype(raw.dtype, np.number) or np.iscomplexobj(raw):
        raise ValueError(f"tokens must be real numbers, got dtype {raw.dtype}")
    arr = raw.astype(np.float32)
    if arr.ndim != 2:
        raise ValueError(
            f"tokens must have shape (P, {token_dim}) (one row per token), got rank {arr.ndim} "
            f"shape {arr.shape}"
        )
    if arr.shape[1] != token_dim:
        raise ValueError(f"tokens must have {token_dim} values per token, got shape {arr.shape}")
    if not 2 <= arr.shape[0] <= max_tokens:
        raise ValueError(
            f"tokens must hold between 2 and {max_tokens} tokens for this env, got P={arr.shape[0]}"
        )
    if not np.isfinite(arr).all():
        bad = np.argwhere(~np.isfinite(arr))[0]
        raise ValueError(f"tokens must be finite, found {arr[tuple(bad)]} at index {tuple(bad)}")
    if np.abs(arr).max() > MAX_TOKEN_ABS:
        raise ValueError(
            f"tokens must lie within +-{MAX_TOKEN_ABS:g} token units, got {np.abs(arr).max():g} "
            "(rescale the data, e.g. to pixels)"
        )
    return arr


def load_token_file(path: str, token_dim: int | None = None) -> TokenBatch:
    """Load token sets from an ``.npz`` with ``tokens`` (n, S, T) and ``num_tokens`` (n,),
    with T checked against ``token_dim`` when given.

    This is the layout of the reference test sets; padding rows may be NaN or anything.
    """
    data = token_batch(read_arrays(path), str(path))
    if token_dim is not None and data.tokens.shape[2] != token_dim:
        raise ValueError(
            f"{path}: tokens have {data.tokens.shape[2]} values each, the run's have "
            f"{token_dim} (both need the same token width)"
        )
    return data


def read_arrays(path: str | Path) -> dict[str, np.ndarray]:
    """Every array of an ``.npz``, or one ValueError naming the file."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: np.asarray(data[k]) for k in data.files}
    except (OSError, EOFError, ValueError) as e:  # missing, truncated, not npz, pickled
        raise ValueError(f"{path}: not a readable .npz token file ({e})") from e


def token_batch(arrays: dict[str, np.ndarray], path: str) -> TokenBatch:
    """Check ``tokens`` and ``num_tokens`` arrays (named ``path`` in errors) and return them
    as a NaN-padded batch."""
    missing = {"tokens", "num_tokens"} - set(arrays)
    if missing:
        raise ValueError(
            f"{path}: token file lacks array(s) {sorted(missing)}; has {sorted(arrays)}"
        )
    raw = np.asarray(arrays["tokens"])
    if raw.dtype == np.bool_ or np.iscomplexobj(raw) or not np.issubdtype(raw.dtype, np.number):
        raise ValueError(
            f"{path}: tokens must be numbers, got {np.asarray(arrays['tokens']).dtype}"
        )
    tokens = np.asarray(arrays["tokens"]).astype(np.float32)
    num = np.asarray(arrays["num_tokens"])
    whole = np.issubdtype(num.dtype, np.integer) or np.all(np.isfinite(num) & (num == num // 1))
    if not whole:
        raise ValueError(f"{path}: num_tokens must be whole numbers, got {num.dtype} values")
    num = num.astype(np.int64)
    if tokens.ndim != 3 or num.shape != tokens.shape[:1]:
        raise ValueError(
            f"{path}: expected tokens (n, S, T) and num_tokens (n,), got {tokens.shape} and "
            f"{num.shape}"
        )
    if len(num) == 0:
        raise ValueError(f"{path}: holds no token sets (n = 0)")
    if (num < 2).any() or (num > tokens.shape[1]).any():
        raise ValueError(f"{path}: num_tokens must lie in [2, {tokens.shape[1]}]")
    real = np.arange(tokens.shape[1]) < num[:, None]  # (n, S)
    bad = ~np.isfinite(tokens).all(-1) & real
    if bad.any():
        i = int(np.argwhere(bad)[0, 0])
        raise ValueError(f"{path}: instance {i} has non-finite values among its {num[i]} tokens")
    tokens[~real] = np.nan
    return TokenBatch(tokens, num)


def validate_token_sets(
    tokens: object, num_tokens: np.ndarray, token_dim: int, max_tokens: int
) -> list[np.ndarray]:
    """:func:`validate_tokens` of every set of a padded batch (N, S, T) with counts (N,),
    checked at once; returns the sets (P_i, T) as float32. The first bad set raises the
    error :func:`validate_tokens` gives for it."""
    raw = np.asarray(tokens)
    num = np.minimum(np.asarray(num_tokens).astype(np.int64), raw.shape[1] if raw.ndim > 1 else 0)
    if raw.dtype == np.bool_ or not np.issubdtype(raw.dtype, np.number) or raw.ndim != 3:
        return [validate_tokens(raw[i, : num[i]], token_dim, max_tokens) for i in range(len(raw))]
    arr = raw.astype(np.float32)
    real = (np.arange(arr.shape[1])[None, :] < num[:, None])[..., None]
    values = np.where(real, arr, 0.0)
    bad = (num < 2) | (num > max_tokens) | (arr.shape[2] != token_dim)
    bad |= ~np.isfinite(values).all((1, 2)) | (
        np.abs(values).max((1, 2), initial=0) > MAX_TOKEN_ABS
    )
    for i in np.flatnonzero(bad)[:1]:
        validate_tokens(raw[i, : num[i]], token_dim, max_tokens)  # raises, naming it
    return [arr[i, : num[i]] for i in range(len(arr))]
