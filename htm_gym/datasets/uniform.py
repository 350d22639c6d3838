"""Uniform tokens: fixed-size populations of P random points, for timing at any P."""

from __future__ import annotations

import numpy as np

from htm_gym.datasets.base import TokenBatch, TokenGenerator


class UniformTokens(TokenGenerator):
    """P tokens (x, y, v) uniform in [0, 16)^3: fixed-size populations for timing."""

    name = "uniform"
    token_dim = 3
    image_size = 16.0
    token_loc = token_scale = 8.0

    def __init__(self, p: int) -> None:
        self.max_tokens = self.min_tokens = p
        self.draw_size = 3 * p

    def build(self, draws: np.ndarray) -> TokenBatch:
        tokens = (16 * draws.reshape(len(draws), self.max_tokens, 3)).astype(np.float32)
        return TokenBatch(tokens, np.full(len(draws), self.max_tokens))

    def constituents(self, num_tokens: int) -> list[tuple[int, ...]]:
        return [tuple(range(num_tokens))]
