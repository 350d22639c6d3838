"""Cost growth with the token count P: incremental vs naive pair scoring, and training steps.

    python train/bench_scaling.py                 # P = 8..256, B = 64, on the CPU

For each P, in a fresh process each (so peak memory is that measurement's own):
- rollout: one to-root episode of B rows through ``HTMVectorEnv`` with the learned policy
  (greedy), scored incrementally (``IncrementalActor``; MLP and bilinear scorers) or
  naively (MLP, full rescoring per step);
- one pair-scoring step alone: the incremental row+column update vs a full (S, S) rescoring;
- training: one ``ReinforceLearner.update`` (replay with gradients, HTM loss, REINFORCE)
  on B to-root episodes, bilinear policy with checkpointed pair logits.
Naive episodes whose first steps predict more than ``--naive-max-seconds`` are extrapolated
from those steps and marked so. Prints a table, the log-log slopes, and writes JSON.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import tyro

from agents.scaling import ScalingConfig, measure
from htm_gym.cli import main_or_exit
from htm_gym.runs import fresh_path


@dataclass(frozen=True)
class Args(ScalingConfig):
    sizes: tuple[int, ...] = (8, 32, 64, 128, 256)
    output: str = "bench_scaling.json"
    isolate: bool = True
    """each measurement in a fresh process (own peak memory); off: faster, shared memory"""


def slope(ps: list[int], ts: list[float]) -> float:
    return float(np.polyfit(np.log(ps), np.log(ts), 1)[0])


def main(args: Args) -> dict:
    # the spawned measurements get the plain config (this script's classes do not unpickle there)
    config = ScalingConfig(**{f.name: getattr(args, f.name) for f in fields(ScalingConfig)})
    rows = []
    for p in args.sizes:
        row = {
            "P": p,
            "incremental": measure("rollout", config, p, "incremental", isolate=args.isolate),
            "incremental_bilinear": measure(
                "rollout", config, p, "incremental", "bilinear", isolate=args.isolate
            ),
            "naive": measure("rollout", config, p, "naive", isolate=args.isolate),
            "scoring_step": measure("scoring_step", config, p, isolate=args.isolate),
            "train_step": measure("train_step", config, p, isolate=args.isolate),
        }
        rows.append(row)
        inc, bil, nai, sc, tr = (
            row[k]
            for k in ("incremental", "incremental_bilinear", "naive", "scoring_step", "train_step")
        )
        print(
            f"P={p:>4}  rollout: incremental {inc['seconds']:7.3f}s ({inc['peak_rss_mb']:6.0f} MB)"
            f"  bilinear {bil['seconds']:7.3f}s"
            f"  naive {nai['seconds']:8.2f}s{'*' if nai['extrapolated'] else ' '}"
            f" ({nai['peak_rss_mb']:6.0f} MB)  step: incremental {1e3 * sc['incremental']:7.2f}ms"
            f" full {1e3 * sc['full']:8.2f}ms  train step {tr['seconds']:6.2f}s"
            f" ({tr['peak_rss_mb']:6.0f} MB)",
            flush=True,
        )
    ps = [r["P"] for r in rows]
    slopes = {
        "incremental_step": slope(ps, [r["scoring_step"]["incremental"] for r in rows]),
        "full_step": slope(ps, [r["scoring_step"]["full"] for r in rows]),
        "incremental_episode": slope(ps, [r["incremental"]["seconds"] for r in rows]),
        "incremental_bilinear_episode": slope(
            ps, [r["incremental_bilinear"]["seconds"] for r in rows]
        ),
        "naive_episode": slope(ps, [r["naive"]["seconds"] for r in rows]),
        "train_step": slope(ps, [r["train_step"]["seconds"] for r in rows]),
    }
    big = [r for r in rows if r["P"] >= 32]
    if len(big) >= 2:
        slopes["incremental_step_P>=32"] = slope(
            [r["P"] for r in big], [r["scoring_step"]["incremental"] for r in big]
        )
    print("log-log slopes of time against P:", {k: round(v, 2) for k, v in slopes.items()})
    if any(r["naive"]["extrapolated"] for r in rows):
        print("* naive episode extrapolated from its first 3 steps")
    result = {"args": asdict(args), "device": args.device, "rows": rows, "slopes": slopes}
    out = fresh_path(Path(args.output))
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main_or_exit(main, tyro.cli(Args))
