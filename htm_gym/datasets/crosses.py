"""Crosses: images of 1-3 crosses, each two length-10 segments through a common centre."""

from __future__ import annotations

import numpy as np

from htm_gym.datasets.base import TokenBatch, TokenGenerator


class CrossesGenerator(TokenGenerator):
    """The original work's crosses generator (see ``shared/reference-data/README.md``).

    Per image, ``n`` crosses with ``n`` uniform in ``num_crosses``; each cross has a centre
    uniform in ``[0, image_size)^2``, a first angle that is a uniform integer degree in
    [0, 359] and a second angle offset from it by a uniform integer degree in ``separation``
    (inclusive). A token is one segment ``(x1, y1, x2, y2) = centre -/+ length/2 (cos, sin)``,
    rounded to ``decimals``; the segments of cross k are tokens 2k and 2k+1.

    Arguments:
        num_crosses: inclusive (min, max) number of crosses per image.
        separation: inclusive (min, max) angle between the two segments, in integer degrees.
        length: segment length in pixels.
        image_size: side of the square image in pixels.
        decimals: rounding of the coordinates (None: no rounding).
    """

    name = "crosses"
    token_dim = 4

    def __init__(
        self,
        num_crosses: tuple[int, int] = (1, 3),
        separation: tuple[int, int] = (20, 160),
        length: float = 10.0,
        image_size: float = 128.0,
        decimals: int | None = 4,
    ) -> None:
        lo, hi = num_crosses
        if not 1 <= lo <= hi:
            raise ValueError(f"num_crosses must satisfy 1 <= min <= max, got {num_crosses}")
        if not 0 < separation[0] <= separation[1] < 180:
            raise ValueError(f"separation must satisfy 0 < min <= max < 180, got {separation}")
        if length <= 0 or image_size <= 0:
            raise ValueError(f"length and image_size must be positive, got {length}, {image_size}")
        self.num_crosses = (int(lo), int(hi))
        self.separation = (int(separation[0]), int(separation[1]))
        self.length = float(length)
        self.image_size = float(image_size)
        self.decimals = decimals
        self.max_tokens = 2 * hi
        self.min_tokens = 2 * lo
        self.draw_size = 1 + 4 * hi
        self.token_loc = self.image_size / 2
        self.token_scale = self.image_size / 2

    def build(self, draws: np.ndarray) -> TokenBatch:
        n, k = len(draws), self.num_crosses[1]
        lo, hi = self.num_crosses
        count = lo + np.floor(draws[:, 0] * (hi - lo + 1)).astype(np.int64)  # (n,)
        cross = draws[:, 1:].reshape(n, k, 4)
        centre = cross[..., :2] * self.image_size  # (n, k, 2)
        theta1 = np.floor(cross[..., 2] * 360.0)
        s_lo, s_hi = self.separation
        theta2 = theta1 + s_lo + np.floor(cross[..., 3] * (s_hi - s_lo + 1))
        theta = np.radians(np.stack([theta1, theta2], axis=2))  # (n, k, 2)
        half = 0.5 * self.length * np.stack([np.cos(theta), np.sin(theta)], axis=-1)
        c = centre[:, :, None, :]  # (n, k, 1, 2)
        seg = np.concatenate([c - half, c + half], axis=-1).reshape(n, 2 * k, 4)
        if self.decimals is not None:
            seg = np.round(seg, self.decimals)
        tokens = seg.astype(np.float32)
        tokens[np.arange(2 * k) >= 2 * count[:, None]] = np.nan
        return TokenBatch(tokens, 2 * count)

    def is_valid(self, tokens: np.ndarray) -> bool:
        """The segments pair up into crosses: in every pair both lengths are ``length``
        +/- 1.5, the midpoints within 1.5 px and the acute angle at least 15 degrees."""
        return valid_crosses(tokens, self.length)

    def constituents(self, num_tokens: int) -> list[tuple[int, ...]]:
        pairs = [(2 * c, 2 * c + 1) for c in range(num_tokens // 2)]
        whole = tuple(range(num_tokens))
        return pairs if num_tokens == 2 else [*pairs, whole]


def valid_crosses(
    tokens: np.ndarray,
    length: float = 10.0,
    length_tol: float = 1.5,
    midpoint_tol: float = 1.5,
    min_angle: float = 15.0,
) -> bool:
    """Whether the segments (P, 4) can be perfectly matched into valid crosses."""
    seg = np.asarray(tokens, dtype=np.float64).reshape(-1, 4)
    p = len(seg)
    if p == 0 or p % 2 or not np.isfinite(seg).all():
        return False
    vec = seg[:, 2:] - seg[:, :2]  # (P, 2)
    ok_len = np.abs(np.linalg.norm(vec, axis=1) - length) <= length_tol
    mid = 0.5 * (seg[:, :2] + seg[:, 2:])
    close = np.linalg.norm(mid[:, None] - mid[None], axis=-1) <= midpoint_tol  # (P, P)
    line = np.arctan2(vec[:, 1], vec[:, 0])
    diff = np.degrees(np.abs(line[:, None] - line[None])) % 180.0
    acute = np.minimum(diff, 180.0 - diff) >= min_angle
    compatible = close & acute & ok_len[:, None] & ok_len[None, :]
    return _perfect_matching(compatible, list(range(p)))


def _perfect_matching(compatible: np.ndarray, left: list[int]) -> bool:
    """Backtracking search; P is small (generated samples are bounded by a step limit)."""
    if not left:
        return True
    first, rest = left[0], left[1:]
    for k, other in enumerate(rest):
        if compatible[first, other] and _perfect_matching(compatible, rest[:k] + rest[k + 1 :]):
            return True
    return False
