"""Digits: scikit-learn's bundled 8x8 handwritten digits as pixel-token sets (no download)."""

from __future__ import annotations

from functools import cache

import numpy as np
from scipy.ndimage import zoom
from sklearn.datasets import load_digits

from htm_gym.datasets.base import TokenBatch, TokenGenerator

SPLITS = ("train", "test", "all")


@cache
def _images(grid: int) -> np.ndarray:
    """All 1,797 images at ``grid`` x ``grid``, intensities in [0, 16] (bilinear upsampling)."""
    images = load_digits().images.astype(np.float64)  # (1797, 8, 8)
    if grid != 8:
        images = np.stack([zoom(im, grid / 8, order=1) for im in images])
    return np.clip(images, 0.0, 16.0)


class DigitsGenerator(TokenGenerator):
    """One token per pixel brighter than ``threshold``: ``(x, y, v)`` with ``x, y`` the pixel
    centre (y up, so the image renders upright) and ``v = intensity / 16 * grid``, so all three
    coordinates share one scale. Tokens are in raster order.

    Images are split by image with a fixed permutation (``test_fraction`` held out); each
    episode draws one image of ``split`` uniformly. S (the slot count) is the largest P over
    all 1,797 images, so train and test envs have the same spaces.

    There is no ground-truth hierarchy: ``constituents`` is only the whole image, so the
    structure metrics are trivially 1; reconstruction is the measure here.

    Arguments:
        grid: 8 (the original images; the default) or a larger side (16, 28) by bilinear
            upsampling (Digits16Generator: 16).
        threshold: intensity (0-16 scale) a pixel must exceed to become a token (default 6;
            Digits16Generator: 5).
        split: "train", "test" or "all".
        test_fraction: share of images held out for "test".
    """

    name = "digits"
    token_dim = 3
    draw_size = 1
    default_grid, default_threshold = 8, 6.0

    def __init__(
        self,
        grid: int | None = None,
        threshold: float | None = None,
        split: str = "train",
        test_fraction: float = 0.2,
    ) -> None:
        grid = self.default_grid if grid is None else grid
        threshold = self.default_threshold if threshold is None else threshold
        if not isinstance(grid, int) or grid < 8:
            raise ValueError(f"grid must be an integer >= 8, got {grid!r}")
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if not 0 < test_fraction < 1 or not 0 <= threshold < 16:
            raise ValueError("need 0 < test_fraction < 1 and 0 <= threshold < 16")
        self.grid, self.threshold, self.split = grid, float(threshold), split
        self.test_fraction = test_fraction
        images = _images(grid)
        counts = (images > self.threshold).sum((1, 2))
        if counts.min() < 2:
            raise ValueError(f"threshold {threshold} leaves an image with fewer than 2 tokens")
        order = np.random.default_rng(0).permutation(len(images))
        n_test = round(test_fraction * len(images))
        chosen = {"test": order[:n_test], "train": order[n_test:], "all": order}[split]
        self.indices = np.sort(chosen)
        self.max_tokens = int(counts.max())
        self.min_tokens = int(counts.min())
        self.image_size = float(grid)
        self.token_loc = self.token_scale = grid / 2

    def with_split(self, split: str) -> DigitsGenerator:
        """The same images and tokenisation, drawing from another split."""
        return type(self)(self.grid, self.threshold, split, self.test_fraction)

    def build(self, draws: np.ndarray) -> TokenBatch:
        pick = self.indices[
            np.minimum((draws[:, 0] * len(self.indices)).astype(int), len(self.indices) - 1)
        ]
        return self.tokenize(_images(self.grid)[pick])

    def tokenize(self, images: np.ndarray) -> TokenBatch:
        """(n, grid, grid) intensities in [0, 16] -> padded token sets."""
        n, g = len(images), self.grid
        tokens = np.full((n, self.max_tokens, 3), np.nan, dtype=np.float32)
        num = np.zeros(n, dtype=np.int64)
        for i, im in enumerate(images):
            rows, cols = np.nonzero(im > self.threshold)
            if len(rows) > self.max_tokens:
                raise ValueError(f"image {i} has {len(rows)} tokens > S={self.max_tokens}")
            tok = np.stack([cols + 0.5, g - rows - 0.5, im[rows, cols] / 16.0 * g], 1)
            tokens[i, : len(tok)] = tok
            num[i] = len(tok)
        return TokenBatch(tokens, num)

    def to_image(self, tokens: np.ndarray) -> np.ndarray:
        """Paint token sets (any count, any order) back to a (grid, grid) intensity image."""
        g = self.grid
        image = np.zeros((g, g))
        tok = np.asarray(tokens, dtype=np.float64).reshape(-1, 3)
        tok = tok[np.isfinite(tok).all(1)]
        cols = np.clip(np.floor(tok[:, 0]).astype(int), 0, g - 1)
        rows = np.clip(np.floor(g - tok[:, 1]).astype(int), 0, g - 1)
        np.maximum.at(image, (rows, cols), np.clip(tok[:, 2] / g * 16.0, 0.0, 16.0))
        return image

    def constituents(self, num_tokens: int) -> list[tuple[int, ...]]:
        return [tuple(range(num_tokens))]


class Digits16Generator(DigitsGenerator):
    """Digits upsampled to 16 x 16 (threshold 5): P = 64-152 tokens, MNIST-like sizes."""

    name = "digits16"
    default_grid, default_threshold = 16, 5.0
