"""Trees: one complete binary tree per image, tokens are node coordinates."""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

from htm_gym.datasets.base import TokenBatch, TokenGenerator

VARIANTS: dict[str, dict[str, float]] = {
    "narrow": {"separation": 25.0, "deviation": -12.5, "factor": 0.15},
    "wide": {"separation": 45.0, "deviation": 20.0, "factor": 0.5},
    # Narrow trees whose every branch has its own length and angle: a subtree is no longer a
    # function of the root's position and direction, so which nodes a merge tree groups
    # decides what a bottleneck of fixed width can keep.
    "jittered": {
        "separation": 25.0,
        "deviation": -12.5,
        "factor": 0.15,
        "length_jitter": 0.25,
        "angle_jitter": 6.0,
    },
}


class TreesGenerator(TokenGenerator):
    """The original work's trees generator (report section 4.4, reference-data README).

    The root lies uniformly in the central square ``root_box``^2 and points along a uniform
    integer degree ``a``. A node whose subtree points along ``a`` has its left child at angle
    ``a + separation/2`` and its right child at ``a - separation/2``, both at distance ``d``;
    the children's subtrees point along their own angle ``+ deviation`` (left) and
    ``- deviation`` (right), and ``d`` shrinks by ``factor`` per level from ``distance``.
    ``deviation = -separation/2`` makes all subtrees parallel (the narrow set).
    With jitter, each branch's length is scaled by a uniform factor in
    ``1 +/- length_jitter`` and its angle turned by a uniform ``+/- angle_jitter`` degrees
    (its subtree follows the turned branch).
    Token order is recursive: ``[node] + [left subtree] + [right subtree]``.

    Arguments:
        variant: "narrow" (sep 25, dev -12.5, factor 0.15), "wide" (sep 45, dev 20,
            factor 0.5) or "jittered" (narrow, length jitter 0.25, angle jitter 6 degrees);
            the explicit arguments below override it.
        length_jitter, angle_jitter: per-branch jitter (0: the deterministic template).
        height: levels in the tree; P = 2**height - 1.
        distance: parent-child distance at the first level, in pixels.
        image_size: side of the square image in pixels.
        root_box: inclusive-exclusive range of each root coordinate.
    """

    name = "trees"
    token_dim = 2

    def __init__(
        self,
        variant: str = "narrow",
        separation: float | None = None,
        deviation: float | None = None,
        factor: float | None = None,
        length_jitter: float | None = None,
        angle_jitter: float | None = None,
        height: int = 3,
        distance: float = 90.0,
        image_size: float = 256.0,
        root_box: tuple[float, float] = (96.0, 160.0),
    ) -> None:
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {sorted(VARIANTS)}, got {variant!r}")
        if not 2 <= height <= 8:
            raise ValueError(f"height must be in [2, 8], got {height}")
        if distance <= 0 or image_size <= 0 or not root_box[0] < root_box[1]:
            raise ValueError("distance and image_size must be positive and root_box increasing")
        v = VARIANTS[variant]
        self.variant = variant
        self.separation = v["separation"] if separation is None else float(separation)
        self.deviation = v["deviation"] if deviation is None else float(deviation)
        self.factor = v["factor"] if factor is None else float(factor)
        if not 0 < self.factor < 1:
            raise ValueError(f"factor must be in (0, 1), got {self.factor}")
        self.length_jitter = float(
            v.get("length_jitter", 0.0) if length_jitter is None else length_jitter
        )
        self.angle_jitter = float(
            v.get("angle_jitter", 0.0) if angle_jitter is None else angle_jitter
        )
        if not (0 <= self.length_jitter < 1 and 0 <= self.angle_jitter < 90):
            raise ValueError(
                "length_jitter must be in [0, 1) and angle_jitter in [0, 90) degrees, got "
                f"{self.length_jitter}, {self.angle_jitter}"
            )
        self.height = int(height)
        self.distance = float(distance)
        self.image_size = float(image_size)
        self.root_box = (float(root_box[0]), float(root_box[1]))
        self.max_tokens = self.min_tokens = 2**self.height - 1
        # Root position and direction, then two uniforms per branch when jittered (the
        # deterministic variants keep the 3-number draws of the reference sets).
        self.jittered = self.length_jitter > 0 or self.angle_jitter > 0
        self.draw_size = 3 + (2 * (self.max_tokens - 1) if self.jittered else 0)
        self.token_loc = self.image_size / 2
        self.token_scale = self.image_size / 2

    def build(self, draws: np.ndarray) -> TokenBatch:
        lo, hi = self.root_box
        root = lo + draws[:, :2] * (hi - lo)  # (n, 2)
        angle = np.floor(draws[:, 2] * 360.0)  # (n,) degrees
        jitter = draws[:, 3:].reshape(len(draws), -1, 2) * 2 - 1 if self.jittered else None
        nodes: list[np.ndarray] = []
        self._subtree(root, angle, self.distance, self.height, nodes, jitter)
        tokens = np.stack(nodes, axis=1).astype(np.float32)  # (n, P, 2)
        return TokenBatch(tokens, np.full(len(draws), self.max_tokens, dtype=np.int64))

    def _subtree(
        self,
        pos: np.ndarray,
        angle: np.ndarray,
        dist: float,
        levels: int,
        out: list[np.ndarray],
        jitter: np.ndarray | None = None,
    ) -> None:
        """Append the subtree's nodes in token order; ``jitter`` (n, P-1, 2) in [-1, 1]
        holds (length, angle) draws per branch, indexed by the child's token index - 1."""
        out.append(pos)
        if levels == 1:
            return
        for sign in (1.0, -1.0):  # left, then right
            child_angle = angle + sign * self.separation / 2
            length = dist
            if jitter is not None:
                u = jitter[:, len(out) - 1]  # this branch's draws (n, 2)
                child_angle = child_angle + self.angle_jitter * u[:, 1]
                length = dist * (1 + self.length_jitter * u[:, :1])
            rad = np.radians(child_angle)
            child = pos + length * np.stack([np.cos(rad), np.sin(rad)], axis=-1)
            self._subtree(
                child,
                child_angle + sign * self.deviation,
                dist * self.factor,
                levels - 1,
                out,
                jitter,
            )

    def is_valid(self, tokens: np.ndarray, tolerance: float = 3.0) -> bool:
        """A tree of this generator's geometry: exactly ``max_tokens`` points that match the
        template of some root point and direction, after the best translation, with every
        matched point within ``tolerance`` px. The direction is taken from the mean offset of
        the other points from the root candidate (the template is symmetric about it).
        Jittered trees have no fixed template, so no checker."""
        if self.jittered:
            raise NotImplementedError("jittered trees have no structural validity checker")
        pts = np.asarray(tokens, dtype=np.float64).reshape(-1, 2)
        if len(pts) != self.max_tokens or not np.isfinite(pts).all():
            return False
        best = np.inf
        for r in range(len(pts)):
            offset = (pts - pts[r]).sum(0)
            angle = np.degrees(np.arctan2(offset[1], offset[0]))[None]
            template: list[np.ndarray] = []
            self._subtree(np.zeros((1, 2)), angle, self.distance, self.height, template)
            tpl = np.concatenate(template)  # (P, 2)
            tpl += pts.mean(0) - tpl.mean(0)
            cost = np.linalg.norm(pts[:, None] - tpl[None], axis=-1)
            rows, cols = linear_sum_assignment(cost)
            best = min(best, float(cost[rows, cols].max()))
        return best <= tolerance

    def constituents(self, num_tokens: int) -> list[tuple[int, ...]]:
        if num_tokens != self.max_tokens:
            raise ValueError(f"trees of height {self.height} have {self.max_tokens} tokens")
        out: list[tuple[int, ...]] = []

        def visit(start: int, size: int) -> None:
            if size == 1:
                return
            out.append(tuple(range(start, start + size)))
            half = (size - 1) // 2
            visit(start + 1, half)
            visit(start + 1 + half, half)

        visit(0, num_tokens)
        return out
