"""Token-set datasets, generated on the fly from a seed, and a loader for token files."""

from __future__ import annotations

from typing import Any

from htm_gym.datasets.base import (
    TokenBatch,
    TokenGenerator,
    load_token_file,
    validate_tokens,
)
from htm_gym.datasets.crosses import CrossesGenerator
from htm_gym.datasets.digits import Digits16Generator, DigitsGenerator
from htm_gym.datasets.tokenfile import TokenFileGenerator
from htm_gym.datasets.trees import TreesGenerator

GENERATORS: dict[str, type[TokenGenerator]] = {
    "crosses": CrossesGenerator,
    "trees": TreesGenerator,
    "digits": DigitsGenerator,
    "digits16": Digits16Generator,
    "tokens": TokenFileGenerator,
}


def make_generator(name: str, **kwargs: Any) -> TokenGenerator:
    """Build a registered generator by name, with its keyword arguments."""
    if name not in GENERATORS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(GENERATORS)}")
    try:
        return GENERATORS[name](**kwargs)
    except TypeError as e:
        raise ValueError(f"bad argument for dataset {name!r}: {e}") from e


__all__ = [
    "GENERATORS",
    "CrossesGenerator",
    "Digits16Generator",
    "DigitsGenerator",
    "TokenBatch",
    "TokenFileGenerator",
    "TokenGenerator",
    "TreesGenerator",
    "load_token_file",
    "make_generator",
    "validate_tokens",
]
