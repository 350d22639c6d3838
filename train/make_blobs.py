"""Write token sets of Gaussian point clusters, the worked example of training on your own file.

    python train/make_blobs.py                       # blobs_train.npz, blobs_test.npz
    python train/reinforce.py --tokens blobs_train.npz --test-tokens blobs_test.npz
    python train/evaluate.py --checkpoint runs/<run>

Each set is ``--clusters`` clusters of ``--points`` 2-D points drawn by scikit-learn's
``make_blobs`` (centres uniform in [0, 100]^2). Tokens are stored cluster by cluster, and
``groups`` labels each token position with its cluster, so a cluster is a ground-truth
constituent: evaluation reports how often every cluster is a node of the merge tree.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tyro
from sklearn.datasets import make_blobs

from htm_gym.cli import main_or_exit


@dataclass
class Args:
    train_sets: int = 20000
    test_sets: int = 2000
    clusters: int = 3
    points: int = 3
    """points per cluster"""
    std: float = 1.5
    """cluster standard deviation, in the same units as the centres' [0, 100] box"""
    seed: int = 0
    out_dir: str = "."


def blob_sets(n: int, clusters: int, points: int, std: float, seed: int) -> np.ndarray:
    """(n, clusters * points, 2) float32 points, cluster by cluster."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, clusters * points, 2), np.float32)
    for i in range(n):
        x, y = make_blobs(
            n_samples=[points] * clusters,
            cluster_std=std,
            center_box=(0.0, 100.0),
            random_state=int(rng.integers(2**31)),
        )
        out[i] = x[np.argsort(y, kind="stable")]
    return out


def write(path: Path, tokens: np.ndarray, clusters: int, points: int) -> None:
    groups = np.repeat(np.arange(clusters), points)
    num = np.full(len(tokens), tokens.shape[1])
    np.savez(path, tokens=tokens, num_tokens=num, groups=groups)
    print(f"wrote {path}: tokens {tokens.shape}, groups {groups.tolist()}")


def main(args: Args) -> tuple[Path, Path]:
    if min(args.train_sets, args.test_sets, args.clusters) < 1 or args.points < 2:
        raise SystemExit("need at least one set of each kind, one cluster and two points")
    out = Path(args.out_dir)
    train, test = out / "blobs_train.npz", out / "blobs_test.npz"
    for path in (train, test):  # checked before writing either: never overwrite a user's file
        if path.exists():
            raise SystemExit(f"{path} exists; pass another --out-dir")
    out.mkdir(parents=True, exist_ok=True)
    shape = (args.clusters, args.points, args.std)
    write(train, blob_sets(args.train_sets, *shape, seed=args.seed), args.clusters, args.points)
    write(test, blob_sets(args.test_sets, *shape, seed=args.seed + 1), args.clusters, args.points)
    return train, test


if __name__ == "__main__":
    main_or_exit(main, tyro.cli(Args))
