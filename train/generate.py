"""Generate token sets from a trained HTM checkpoint (report 3.8).

    python train/generate.py --checkpoint runs/<run>/checkpoint.pt --num-samples 1000

Roots come from the run's root sampler (``<run>/root_sampler.pt``; fitted and saved there on
first use: a Gaussian mixture over the roots of fresh training instances, components chosen
by BIC; ``--sampler-kind kde`` jitters the encoded roots instead), are decoded by
classifier-guided unmerging and unlifted. Writes the samples
(``.npz`` in the reference layout), a grid of the first ones (``.png``) and validity scores
(``.json``) under ``<run>/samples/``; nothing existing is overwritten.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import tyro

from agents import trained
from htm_gym import runs
from htm_gym.cli import below, main_or_exit
from htm_gym.datasets import TokenBatch
from htm_gym.evaluation.figures import sample_grid
from htm_gym.files import run_dir_of
from htm_gym.generation.fitting import fitting_instances, run_sampler
from htm_gym.generation.roots import generate
from htm_gym.generation.validity import generation_report


@dataclass
class Args:
    checkpoint: str
    """a run directory or checkpoint file written by train/reinforce.py"""
    num_samples: int = 1000
    seed: int = 0
    max_steps: int | None = None
    """classifier calls per sample before unmerging stops (default: twice a full tree's nodes)"""
    threshold: float = 0.5
    """internal-node probability at which a node is unmerged further"""
    sampler: str | None = None
    """a root sampler file (default: the run's root_sampler.pt, fitted if missing)"""
    refit: bool = False
    """fit a new root sampler even if the run has one (saved under a fresh name)"""
    num_roots: int = 20000
    """training instances whose roots the sampler is fitted to"""
    max_components: int = 10
    """largest Gaussian mixture tried (1..max, lowest BIC kept)"""
    sampler_kind: Literal["gmm", "kde", "parts"] = "gmm"
    """root density: BIC-selected Gaussian mixture; a kernel density over the encoded roots
    (bandwidth 0 decodes training roots, the decoder's ceiling); or roots composed from the
    encoded trees' cherries and lone leaves by the learned pair scorer and merger (new
    combinations of training parts). kde and parts are always fitted anew"""
    bandwidth: float = 0.01
    """kernel width of --sampler-kind kde (on roots) or parts (on parts), embedding units"""
    neighbours: int = 32
    """--sampler-kind parts: move each drawn part a uniform fraction of the way toward one
    of its K nearest stored parts (0: stored parts, jittered only, which copies training
    parts); crosses, default_v8: validity 0.961 at 32 against 0.998 at 0, with 12% of
    decoded parts new against none"""
    score: bool = True
    """score validity, token-count coverage and novelty"""
    num_train_reference: int = 20000
    """fresh training instances the novelty check compares against, besides the instances
    the root sampler was fitted to (with this --seed and --num-roots)"""
    grid: int = 15
    """samples drawn in the PNG grid"""
    device: str = "cpu"
    output_dir: str | None = None
    """default: <run>/samples"""


def check_args(args: Args) -> None:
    """Ranges and the output folder, before the checkpoint is read."""
    positive = ("num_samples", "max_components", "num_roots", "num_train_reference")
    bad = [f"{b} (>= 1)" for b in below(args, positive, 1)]
    if args.max_steps is not None and args.max_steps < 1:
        bad.append(f"--max-steps {args.max_steps} (>= 1)")
    if not 0 < args.threshold < 1:
        bad.append(f"--threshold {args.threshold} (in (0, 1))")
    if not args.bandwidth >= 0 or args.neighbours < 0 or args.grid < 0:
        bad.append("--bandwidth, --neighbours and --grid (>= 0)")
    if bad:
        raise SystemExit(f"out of range: {', '.join(bad)}")
    if args.output_dir is not None:
        runs.check_writable_folder(Path(args.output_dir).parent, "--output-dir")


def load_run(args: Args):
    """The run's model, generator, greedy actor and root sampler (fitted if needed)."""
    model, ckpt = runs.load_trained(args.checkpoint, args.device)
    env_id, generator = runs.checkpoint_env(ckpt)
    if ckpt["args"].get("final_merges") is not None:
        raise SystemExit(
            f"{args.checkpoint} was trained to {ckpt['args']['final_merges']} merges, not to "
            "the root: generation samples roots, so it needs a to-root run"
        )
    actor = trained.checkpoint_actor(model, ckpt, greedy=True)
    learned = trained.has_learned_scorer(ckpt)
    no_scorer = f"parts are composed by the learned pair scorer, and {args.checkpoint} has none"
    if args.sampler is None and args.sampler_kind == "parts" and not learned:
        raise SystemExit(f"--sampler-kind parts: {no_scorer}")
    sampler, sampler_path, fitted = run_sampler(
        run_dir_of(args.checkpoint),
        model,
        generator,
        actor,
        path=args.sampler,
        refit=args.refit,
        num_roots=args.num_roots,
        seed=args.seed,
        components=range(1, args.max_components + 1),
        kind=args.sampler_kind,
        bandwidth=args.bandwidth,
        neighbours=args.neighbours,
    )
    print(f"root sampler: {sampler_path} ({'fitted now' if fitted else 'loaded'})")
    if sampler.kind == "parts" and not learned:
        raise SystemExit(f"{sampler_path} is a parts sampler: {no_scorer}")
    return model, env_id, generator, sampler, sampler_path


def reference_sets(args: Args, generator) -> TokenBatch:
    """What novelty is judged against: fresh training instances and the fitted ones (a
    kernel density copies exactly those)."""
    fresh = generator.sample(np.random.default_rng([args.seed, 27182]), args.num_train_reference)
    fitted_on = fitting_instances(generator, args.num_roots, args.seed)
    return TokenBatch(
        np.concatenate([fresh.tokens, fitted_on.tokens]),
        np.concatenate([fresh.num_tokens, fitted_on.num_tokens]),
    )


def write_samples(args: Args, samples, generator, result: dict) -> Path:
    out_dir = Path(args.output_dir) if args.output_dir else run_dir_of(args.checkpoint) / "samples"
    out_dir.mkdir(parents=True, exist_ok=True)
    name = f"samples_{args.num_samples}_seed{args.seed}.npz"
    stem = runs.fresh_path(out_dir / name, (".png", ".json"))
    batch = samples.batch
    np.savez_compressed(
        stem, tokens=batch.tokens, num_tokens=batch.num_tokens, truncated=samples.truncated
    )
    shown = [batch[i] for i in range(min(args.grid, len(batch)))]
    sample_grid(shown, generator.image_size).savefig(stem.with_suffix(".png"), dpi=100)
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2))
    return stem


def main(args: Args) -> dict:
    check_args(args)
    model, env_id, generator, sampler, sampler_path = load_run(args)
    max_steps = args.max_steps or 2 * (2 * generator.max_tokens - 1)
    start = time.perf_counter()
    try:
        samples = generate(model, sampler, args.num_samples, args.seed, max_steps, args.threshold)
    except ValueError as e:  # e.g. a sampler file fitted to a model of another width
        raise SystemExit(f"{sampler_path}: {e}") from e
    seconds = time.perf_counter() - start
    result: dict = {
        "env_id": env_id,
        "checkpoint": str(args.checkpoint),
        "sampler": str(sampler_path),
        "sampler_kind": sampler.kind,
        "num_samples": args.num_samples,
        "seed": args.seed,
        "max_steps": max_steps,
        "seconds": seconds,
    }
    if args.score:
        train = reference_sets(args, generator)
        result |= generation_report(generator, samples.batch, train, samples.truncated)
    stem = write_samples(args, samples, generator, result)
    print(f"{args.num_samples} samples in {seconds:.2f}s -> {stem}")
    if args.score and result["validity"] is not None:
        print(
            f"validity {result['validity']:.4f}  valid token counts "
            f"{result['valid_count_distribution']}  novel {result['novel_fraction_of_valid']:.3f}"
        )
    return result


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main_or_exit(main, tyro.cli(Args))
