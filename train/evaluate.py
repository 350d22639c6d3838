"""Evaluate a trained HTM checkpoint: structure, reconstruction and classifier metrics.

    python train/evaluate.py --checkpoint runs/<run>/checkpoint.pt
    python train/evaluate.py --checkpoint runs/<run> \
        --tokens ../shared/reference-data/crosses_test_20000.npz

Rolls the checkpoint's policy to the root, greedy (argmax) and sampled, prints a table and
writes JSON (default: ``<run>/eval_<data>.json``; an existing file is never overwritten).
``--proximity`` and ``--heuristic`` add, greedy, a closest-pair baseline and the report's
heuristic policy (minus each pair's one-step loss) on the same networks.
``--report`` adds the report's figures and generation scores under ``<run>/report/``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import tyro

import htm_gym
from agents import trained
from agents.policies import Actor
from htm_gym import runs
from htm_gym.cli import below, main_or_exit
from htm_gym.datasets import (
    TokenBatch,
    TokenFileGenerator,
    TokenGenerator,
    load_token_file,
    make_generator,
)
from htm_gym.evaluation.baselines import ProximityActor
from htm_gym.evaluation.report import ReportInputs, write_report
from htm_gym.evaluation.rollout import Policy, evaluate
from htm_gym.files import run_dir_of
from htm_gym.generation.roots import load_sampler
from htm_gym.nets import HTMModel


@dataclass
class Args:
    checkpoint: str
    """a run directory or checkpoint file written by train/reinforce.py"""
    tokens: str | None = None
    """an .npz token file (tokens, num_tokens); default: a generated test set"""
    num_instances: int = 20000
    """size of the generated test set when --tokens is not given"""
    dataset_kwargs: str | None = None
    """JSON of generator arguments for the generated test set, over the run's own (e.g.
    '{"num_crosses": [4, 4]}' for images of four crosses: more tokens than training)"""
    seed: int = 12345
    device: str = "cpu"
    batch_size: int = 4096
    output: str | None = None
    """JSON path (default: next to the checkpoint)"""
    noise_free: bool = True
    """also evaluate the greedy policy with the node noise switched off"""
    proximity: bool = False
    """also evaluate a baseline that merges the two nodes with the closest token centroids,
    decoded by this checkpoint's networks (evaluation only)"""
    heuristic: bool = False
    """also evaluate the report's heuristic policy on this checkpoint's networks (greedy by
    minus the one-step loss of every pair, report 3.2.3): does the learned policy follow what
    its own networks reward? It scores every pair at every step, in smaller batches"""
    split: str = "test"
    """datasets split by image (digits): which images to evaluate on"""
    report: bool = False
    """also write the report's figures (PNG + JSON + TensorBoard) to <run>/report"""
    report_samples: int = 1000
    """generated samples scored for validity in the report"""
    report_instances: int = 5000
    """test and training-distribution instances used for the report's figures"""
    report_roots: int = 20000
    """training instances whose roots fit the run's root sampler, if it has none yet"""
    report_sampler: str | None = None
    """a root sampler file for the report's samples (e.g. <run>/root_sampler_parts.pt from
    generate.py --sampler-kind parts); default: the run's Gaussian mixture"""


def check_args(args: Args) -> None:
    """Ranges and the output folder, before the checkpoint is read or anything evaluated."""
    counts = ("num_instances", "batch_size", "report_samples", "report_instances", "report_roots")
    small = below(args, counts, 1)
    if small:
        raise SystemExit(f"{', '.join(small)}: must be >= 1")
    if args.output is not None:
        runs.check_writable_folder(Path(args.output).parent, "--output")


def main(args: Args) -> dict:
    check_args(args)
    model, ckpt = runs.load_trained(args.checkpoint, args.device)
    check_report_sampler(args, ckpt)
    env_id, generator = runs.checkpoint_env(ckpt)
    generator, data, name = test_data(args, ckpt, env_id, generator)
    max_merges = ckpt["args"].get("final_merges")  # a run trained short of the root
    results = {
        "env_id": env_id,
        "data": name,
        "policy": ckpt["args"]["policy"],
        "checkpoint": str(args.checkpoint),
    }
    modes = [("greedy", True, None), ("sampled", False, None)]
    if args.noise_free:
        modes.append(("greedy_noise_free", True, 0.0))
    for mode, greedy, noise in modes:
        gen = torch.Generator(args.device).manual_seed(args.seed)
        actor = trained.checkpoint_actor(model, ckpt, greedy, gen)
        start = time.perf_counter()
        results[mode] = evaluate(
            model, generator, data, actor, args.batch_size, args.seed, noise, max_merges
        )
        results[mode]["seconds"] = time.perf_counter() - start
    for key, actor, rows in baselines(args, model, data):
        start = time.perf_counter()
        results[key] = evaluate(model, generator, data, actor, rows, args.seed, None, max_merges)
        results[key]["seconds"] = time.perf_counter() - start
    print_table(results)
    out = runs.fresh_path(args.output or run_dir_of(args.checkpoint) / f"eval_{name}.json")
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")
    if args.report:
        results["report"] = report(args, model, ckpt, generator, data, max_merges)
    return results


def baselines(args: Args, model: HTMModel, data: TokenBatch) -> list[tuple[str, Policy, int]]:
    """The greedy baselines asked for, on the checkpoint's networks: (key, actor, rows per
    batch)."""
    out: list[tuple[str, Policy, int]] = []
    if args.proximity:
        tokens, nums = torch.as_tensor(data.tokens), torch.as_tensor(data.num_tokens)
        out.append(("proximity", ProximityActor(tokens, nums), args.batch_size))
    if args.heuristic:
        rows = heuristic_batch(model, data.tokens.shape[1], args.batch_size)
        out.append(("heuristic", Actor(model, "heuristic", greedy=True), rows))
    return out


def heuristic_batch(model: HTMModel, slots: int, batch_size: int, budget: int = 2**28) -> int:
    """Rows per batch for the heuristic: it merges and unmerges all S^2 pairs of a row at
    once (pairs, two hidden layers and the reconstruction: about S^2 (4E + 4H) floats), kept
    within ``budget`` bytes."""
    c = model.config
    per_row = slots * slots * (4 * c.embed_dim + 4 * c.hidden_dim) * 4
    return max(1, min(batch_size, budget // per_row))


def check_report_sampler(args: Args, ckpt: dict) -> None:
    """A --report-sampler that cannot serve this run fails before the evaluation."""
    if not (args.report and args.report_sampler):
        return
    try:
        kind = load_sampler(args.report_sampler).kind
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"--report-sampler: {e}") from e
    if kind == "parts" and not trained.has_learned_scorer(ckpt):
        raise SystemExit("--report-sampler: a parts sampler needs a learned-policy run")


def report(args: Args, model, ckpt: dict, generator, data: TokenBatch, max_merges) -> dict:
    """The report's figures and tables in a fresh <run>/report folder."""
    run_dir = run_dir_of(args.checkpoint)
    k = min(args.report_instances, len(data))
    inputs = ReportInputs(
        run_dir=run_dir,
        model=model,
        generator=generator,
        greedy=trained.checkpoint_actor(model, ckpt, greedy=True),
        sampled=trained.checkpoint_actor(
            model, ckpt, greedy=False, generator=torch.Generator().manual_seed(args.seed)
        ),
        test=TokenBatch(data.tokens[:k], data.num_tokens[:k]),
        train=generator.sample(np.random.default_rng([args.seed, 1]), args.report_instances),
        num_samples=args.report_samples,
        seed=args.seed,
        num_roots=args.report_roots,
        max_merges=max_merges,
        sampler_path=args.report_sampler,
    )
    report_dir = runs.fresh_path(run_dir / "report")
    summary = write_report(report_dir, inputs)
    gen = summary["generation"]
    if gen.get("validity") is not None:
        print(
            f"report -> {report_dir}: generated validity {gen['validity']:.4f}, valid token "
            f"counts {gen['valid_count_distribution']}, novel {gen['novel_fraction_of_valid']:.3f}"
        )
    else:
        print(f"report -> {report_dir} (generation: {gen})")
    return summary


def test_data(
    args: Args, ckpt: dict, env_id: str, generator: TokenGenerator
) -> tuple[TokenGenerator, TokenBatch, str]:
    """What to evaluate on: --tokens, a token-file run's held-out sets, or a generated set
    (of the run's generator, or with --dataset-kwargs over its arguments)."""
    if args.dataset_kwargs:
        generator = other_generator(env_id, args.dataset_kwargs, bool(args.tokens))
    test_file = args.tokens or ckpt["args"].get("test_tokens")
    if hasattr(generator, "with_split") and not test_file:  # never score training images
        generator = generator.with_split(args.split)
    if test_file:
        try:  # any P: the env takes the file's slots
            data = load_token_file(test_file, generator.token_dim)
        except ValueError as e:
            raise SystemExit(str(e)) from e
        return generator, data, Path(test_file).stem
    if isinstance(generator, TokenFileGenerator):  # the run's held-out sets, each once
        return (
            generator,
            generator.subset(),
            f"{Path(generator.path or 'tokens').stem}_{args.split}",
        )
    data = generator.sample(np.random.default_rng(args.seed), args.num_instances)
    extra = "".join(c for c in args.dataset_kwargs or "" if c.isalnum())
    return (
        generator,
        data,
        f"generated{'_' + extra if extra else ''}_{args.num_instances}_seed{args.seed}",
    )


def other_generator(env_id: str, kwargs_json: str, with_tokens: bool) -> TokenGenerator:
    """The run's generator with some arguments replaced (checked before any work)."""
    if with_tokens:
        raise SystemExit("--dataset-kwargs shapes a generated test set; drop it with --tokens")
    try:
        extra = json.loads(kwargs_json)
        if not isinstance(extra, dict):
            raise ValueError("not a JSON object")
        spec = htm_gym.env_spec(env_id, extra)
        kwargs = {
            k: tuple(v) if isinstance(v, list) else v for k, v in spec["dataset_kwargs"].items()
        }
        return make_generator(spec["dataset"], **kwargs)
    except ValueError as e:
        raise SystemExit(f"--dataset-kwargs {kwargs_json!r}: {e}") from e


def print_table(results: dict) -> None:
    env = results["env_id"]
    structure = (
        "exact cross pairing"
        if "Crosses" in env
        else "subtree recovery"
        if "Trees" in env
        else "constituent recovery"
    )
    print(f"{results['env_id']} on {results['data']} ({results['policy']} policy)")
    print(f"{'metric':<34}{'greedy':>12}{'sampled':>12}{'greedy, no noise':>18}")
    g, s = results["greedy"], results["sampled"]
    q = results.get("greedy_noise_free")
    rows = [
        (structure, "recovered"),
        ("bracket F1", "bracket_f1"),
        ("reconstruction MSE, pooled (px^2)", "recon_mse_pooled"),
        ("  per-instance mean", "recon_mse"),
        ("  per-instance median", "recon_mse_median"),
    ]
    for label, key in rows:
        extra = f"{q[key]:>18.4f}" if q else ""
        print(f"{label:<34}{g[key]:>12.4f}{s[key]:>12.4f}{extra}")
    for key, label in (("proximity", "proximity baseline"), ("heuristic", "heuristic, greedy")):
        if key in results:
            pr = results[key]
            print(
                f"{label:<34}{structure} {pr['recovered']:.4f}, bracket F1 "
                f"{pr['bracket_f1']:.4f}, pooled MSE {pr['recon_mse_pooled']:.4f}"
            )
    for key in ("accuracy", "precision", "recall", "f1"):
        extra = f"{q['classifier'][key]:>18.5f}" if q else ""
        cls = f"{g['classifier'][key]:>12.5f}{s['classifier'][key]:>12.5f}"
        print(f"{'classifier ' + key:<34}{cls}{extra}")
    per_p = list(g["per_p"]) if 1 < len(g["per_p"]) <= 8 else []  # digits: JSON only
    for label, key in ((structure, "recovered"), ("pooled MSE", "recon_mse_pooled")):
        for p in per_p:
            extra = f"{q['per_p'][p][key]:>18.4f}" if q else ""
            print(
                f"{'  P=' + str(p) + ' ' + label:<34}{g['per_p'][p][key]:>12.4f}"
                f"{s['per_p'][p][key]:>12.4f}{extra}"
            )


if __name__ == "__main__":
    main_or_exit(main, tyro.cli(Args))
