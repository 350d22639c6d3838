"""Draw a run's greedy merge trees over its held-out instances, one picture per instance.

    python train/draw_trees.py --checkpoint runs/<run> --output trees.png

Each instance is merged to the root (or to the run's final merge budget) by the trained
policy in ``HTMEnv`` and drawn with ``render()``: the tokens, and every merge as a dashed
line between the centroids of the two nodes it joins.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import tyro
from matplotlib.figure import Figure

from agents import trained
from htm_gym import HTMEnv, runs
from htm_gym.cli import main_or_exit


@dataclass
class Args:
    checkpoint: str
    """a run directory or checkpoint file written by train/reinforce.py"""
    output: str = "merge_trees.png"
    """PNG to write (an existing file is never overwritten)"""
    num: int = 6
    """instances drawn"""
    seed: int = 0
    split: str = "test"
    """datasets split by image (digits, token files): which images to draw"""


def main(args: Args) -> Path:
    if args.num < 1:
        raise SystemExit("--num must be at least 1")
    out = runs.fresh_path(args.output)
    model, ckpt = runs.load_trained(args.checkpoint)
    _, generator = runs.checkpoint_env(ckpt)
    if hasattr(generator, "with_split"):
        generator = generator.with_split(args.split)
    data = generator.sample(np.random.default_rng(args.seed), args.num)
    env = HTMEnv(
        dataset=generator,
        model=model,
        max_merges=ckpt["args"].get("final_merges"),
        render_mode="rgb_array",
    )
    actor = trained.checkpoint_actor(model, ckpt, True, torch.Generator().manual_seed(0))
    fig = Figure(figsize=(2.5 * args.num, 2.8))  # no pyplot state, as htm_gym.envs.render
    axes = fig.subplots(1, args.num, squeeze=False)
    for i, ax in enumerate(axes[0]):
        obs, info = env.reset(seed=args.seed + i, options={"tokens": data[i]})
        done = False
        while not done:
            batch = {k: torch.as_tensor(v)[None] for k, v in obs.items()}
            a = int(actor.act(batch, torch.as_tensor(info["action_mask"])[None])[0])
            obs, _, term, trunc, info = env.step(a)
            done = term or trunc
        ax.imshow(env.render())
        ax.set_axis_off()
        ax.set_title(f"P = {len(data[i])}")
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    print(f"wrote {out}")
    return out


if __name__ == "__main__":
    main_or_exit(main, tyro.cli(Args))
