"""REINFORCE-with-baseline co-training of an HTM model through the native vector env.

python train/reinforce.py                                   # HTM-Crosses-v0, to the root
python train/reinforce.py --env-id HTM-Trees-v0 --device cuda   # teacher recipe, then student
python train/reinforce.py --resume runs/<run_name>
tensorboard --logdir runs
"""

from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.distributed as dist
import tyro
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

import htm_gym
from agents.advantages import BaselineKind
from agents.base import EpisodeBatch, Learner
from agents.collector import EpisodeCollector
from agents.distributed import Ranks, ranks_from_env
from agents.plugins import Greedy, make_learner
from agents.policies import Actor
from agents.reinforce import CreditKind, EntropyLossKind, ReinforceConfig, ReinforceLearner
from agents.schedules import (
    Schedule,
    Stage,
    build_schedule,
    default_lr,
    default_stage_steps,
)
from agents.teacher import (
    STUDENT_OWN_SHARE,
    STUDENT_STAGE_STEPS,
    STUDENT_TAU_START,
    TEACHER_RECIPES,
    Teacher,
    follow,
    load_teacher,
)
from htm_gym import runs
from htm_gym.cli import below, flag, main_or_exit
from htm_gym.datasets import TokenBatch, TokenGenerator, load_token_file
from htm_gym.envs.config import default_embed_dim, default_token_scale
from htm_gym.envs.render import policy_diagram, reconstruction_figure
from htm_gym.envs.vector_env import HTMVectorEnv
from htm_gym.evaluation.rollout import evaluate, rollout_tokens
from htm_gym.files import run_dir_of
from htm_gym.nets import HTMConfig, HTMModel, make_model


@dataclass
class Args:
    env_id: str = "HTM-Crosses-v0"
    """registered HTM env id"""
    tokens: str | None = None
    """train on your own token sets: an .npz in the reference layout (tokens (N, P_max, T)
    NaN- or zero-padded, num_tokens (N,), optional groups (P_max,) ground-truth labels per
    token position); the env is HTM-Tokens-v0 and a tenth of the sets is held out unless
    --test-tokens is given"""
    test_tokens: str | None = None
    """held-out token sets for evaluation, same layout and token width as --tokens"""
    policy: Literal["learned", "heuristic", "random"] = "learned"
    """merge policy: policy network (REINFORCE), minus one-step loss, or uniform"""
    agent: str | None = None
    """a plug-in learner 'package.module:Class' (see agents/base.py Learner), used instead of
    the built-in REINFORCE learner; e.g. agents.attention:AttentionLearner"""
    teacher: str | None = None
    """a trained run (folder or checkpoint) on the same data whose greedy policy chooses
    every merge; this run's policy learns to imitate it and its networks train on its trees:
    distils an order found by a bottlenecked model into a full-width one (docs/trees.md)"""
    distill: bool = True
    """where the dataset has a teacher recipe (agents/teacher.py; trees) and no other option
    chooses the merges (--teacher, --policy, --agent, --uniform-share, --group-size): first
    train that teacher in <run>/teacher, then learn from it as with --teacher"""
    teacher_stage_steps: tuple[int, ...] = ()
    """with --distill: the teacher's updates per stage (() = the recipe's)"""
    own_share: float | None = None
    """with a teacher: share of the rows the student plays with its own sampled policy, so
    its networks also learn the orders it makes itself (its departures from the teacher);
    default 0.25 with a teacher, else 0"""
    seed: int = 1
    init_seed: int | None = None
    """seed of the HTM model's initial weights alone (default: --seed); the data, node noise,
    policy samples and a plug-in learner's own networks keep following --seed (to tell an
    initialisation's effect from the data's: docs/trees.md)"""
    device: str = "auto"
    """auto | cpu | cuda | cuda:N"""
    threads: int = 0
    """torch CPU threads (0: torch's default)"""
    num_envs: int = 256
    """episodes per update (one per vector-env row)"""
    group_size: int = ReinforceConfig.group_size
    """episodes played on each token set per update (a divisor of --num-envs); above 1, each
    reward is compared with its group's other episodes (leave-one-out baseline); 1: the
    report's running baseline alone, with 256 distinct images per update (the default: crosses
    reference MSE 0.088 px^2 in default_v8 against 0.114 with 4 in default_v7)"""
    reward: Literal["one_step", "skip_path"] | None = None
    """the env's reward: minus the merge's one-step unmerging error (report 3.3.1), or the drop
    in the error of every token decoded from the current forest (skip-generative path);
    default: skip_path for trees, else one_step"""
    reward_rate: float = 0.0
    """skip_path only: also charge each forest w * the mean square of its active nodes per
    token (the rate under the fixed node noise, the KL part of the skip-generative-path
    reward), so a merge pays for the information its node keeps; 0: off"""
    gamma: float = ReinforceConfig.gamma
    """a merge's credit is its reward plus gamma^k times the reward k merges later (0: the
    report's one-step credit)"""
    credit: CreditKind = ReinforceConfig.credit
    """discounted: by --gamma; area: a merge answers for the loss of every forest from it to
    the episode's end (the area under its loss curve: an early costly merge weighs more than a
    late one); takes no --gamma"""
    stage_steps: tuple[int, ...] = ()
    """updates per curriculum stage (stage k: k merges; the last, and any from the largest
    set's P - 1 on: to the root); () = dataset default"""
    lr: tuple[float, ...] = ()
    """the networks' learning rate per stage (one value: all stages); () = dataset default
    (4e-3 crosses, else 2e-3)"""
    lr_end: float = 0.05
    """each stage's learning rate decays exponentially to lr * lr_end by its last update"""
    lr_floor: float = Schedule.lr_floor
    embed_dim: int | None = None
    """embedding width (default: 48 crosses, 32 trees; for a token file twice the numbers in
    its largest set, at most 128)"""
    hidden_dim: int = HTMConfig.hidden_dim
    policy_hidden_dim: int = HTMConfig.policy_hidden_dim
    policy_kind: Literal["mlp", "bilinear"] = "mlp"
    """pair scorer: the report's MLP, or a bilinear form (cheaper at large P)"""
    linear_skip: bool = HTMConfig.linear_skip
    """linear shortcut around the merger/unmerger MLPs; --no-linear-skip gives the report's
    plain three-layer MLPs (about 3x the crosses reconstruction MSE in the default budget,
    7x with the noise off)"""
    node_widths: tuple[int, ...] = HTMConfig.node_widths
    """compression by level: a merged node over 2, 3, ... tokens keeps only this many
    embedding coordinates (e.g. --node-widths 2 2); larger nodes keep all (docs/trees.md)"""
    narrow_decoder: bool = HTMConfig.narrow_decoder
    """--node-widths cut the decoder's nodes too; --no-narrow-decoder cuts the encoder's
    alone, so a root that holds everything can pass it all down"""
    node_bound: float = HTMConfig.node_bound
    """every node is b * tanh(x / b) before its noise (0: unbounded), so the noise limits what
    a node can carry (docs/trees.md)"""
    checkpoint_policy: bool = False
    """recompute pair logits in the backward pass (memory O(S) per step; for large P)"""
    final_merges: int | None = None
    """merge budget of the last curriculum stage (default: to the root)"""
    noise_std: float = HTMConfig.noise_std
    """std of the node noise (normalised units), kept in the model for evaluation"""
    stage_noise_std: tuple[float, ...] = ()
    """training noise std per stage (one value: all stages; (): --noise-std throughout)"""
    token_scale: float | None = None
    """token units per normalised unit inside the model (default: 8 crosses, else the dataset's)"""
    lambda_recon: tuple[float, ...] = (Stage.lambda_recon,)
    """weight of L_r per stage, L_r measured in normalised token units"""
    lambda_step: tuple[float, ...] = (Stage.lambda_step,)
    lambda_transport: tuple[float, ...] = (Stage.lambda_transport,)
    lambda_lifter: tuple[float, ...] = (Stage.lambda_lifter,)
    """L2 on lifted tokens (report: 0.01 crosses, 0.0002 trees; the smaller helps here)"""
    lambda_encoder: tuple[float, ...] = (Stage.lambda_encoder,)
    lambda_forest: tuple[float, ...] = (Stage.lambda_forest,)
    """weight per stage of the skip-path loss of every intermediate forest (tokens decoded
    from the active nodes after each merge but the last), in normalised token units like
    L_r; keeps the decoder good at the forests the skip-path reward judges"""
    recon_pooling: Literal["instance", "token"] = "instance"
    """L_r averaged per instance (the report's) or pooled over tokens (each set weighted by
    its P, as the pooled reconstruction MSE weighs it)"""
    lambda_entropy: float = ReinforceConfig.lambda_entropy
    policy_lr: float = ReinforceConfig.policy_lr
    """policy network's learning rate (decays with the stage's learning-rate factor)"""
    policy_lr_scale: tuple[float, ...] = (Stage.policy_lr_scale,)
    """policy learning-rate multiplier per stage (0: the policy is frozen in that stage)"""
    uniform_share: tuple[float, ...] = (Stage.uniform_share,)
    """share of each stage's rows that merge uniformly at random; above 0 they alone train
    the networks and the rest the policy alone, so rewards measure what a merge costs under
    networks that know every order (docs/trees.md)"""
    freeze_encoder_stages: tuple[int, ...] = ()
    """stages (0-based) in which the lifter and merger do not train (with the policy frozen
    there too, the decoder learns fixed merge trees)"""
    freeze_decoder_stages: tuple[int, ...] = ()
    """stages (0-based) in which the unlifter and unmerger do not train (with the encoder
    frozen too, the policy learns fixed rewards)"""
    policy_l2: float = ReinforceConfig.policy_l2
    """L2 on the policy network's weights (sum of squares)"""
    classifier_share: float = ReinforceConfig.classifier_share
    """share of each update's episodes whose nodes train the leaf/internal classifier (1: all)"""
    baseline: BaselineKind = ReinforceConfig.baseline
    """running reward baseline: one buffer per merge depth, or one over all depths holding
    the batch it normalises (the report's learner: pooled, --baseline-size 10000)"""
    baseline_size: int = ReinforceConfig.baseline_size
    """rewards kept per baseline buffer"""
    grad_clip: float = ReinforceConfig.grad_clip
    """gradient-norm clip per optimiser group (0: none, as the report's learner)"""
    entropy_loss: EntropyLossKind = ReinforceConfig.entropy_loss
    """entropy term: |mean entropy - target| over the batch, or the mean of each
    episode's |entropy - target| (the report's L1 loss)"""
    working_entropy: float = Schedule.working_entropy
    entropy_schedule: tuple[float, float, float, float] = (
        Schedule.explore_end,
        Schedule.working_start,
        Schedule.exploit_start,
        Schedule.exploit_end,
    )
    """fractions of training: end of full exploration (target 1), reach the working entropy,
    start of the decay to 0, and the target reaching 0 (default: held to the end)"""
    tau_start: float | None = None
    """the teacher blend tau at the start (default 0.5; a taught student: its dataset's
    STUDENT_TAU_START, trees 0)"""
    tau_end: float = Schedule.tau_end
    """fraction of training at which the teacher blend tau reaches 0"""
    loss_power: float = ReinforceConfig.loss_power
    eval_every: int = 500
    """updates between evaluations on a fixed generated validation set (0: never)"""
    eval_instances: int = 2000
    image_every: int = 1000
    """updates between reconstruction / policy-diagram images (0: never)"""
    checkpoint_every: int = 500
    runs_dir: str = "runs"
    run_name: str | None = None
    resume: str | None = None
    """a run directory or checkpoint to continue (its stored arguments are used)"""
    max_updates: int = 0
    """stop after this many updates in this invocation (0: run to the end)"""
    max_skips: int = 20
    """consecutive non-finite updates tolerated before stopping"""
    progress: bool = True


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise SystemExit(f"--device {name!r}: {e} (use auto, cpu, cuda or cuda:N)") from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {name}: no CUDA device here (use --device cpu or auto)")
    return device


def round_seed(seed: int, update: int, retry: int = 0) -> int:
    """Env seed of one update's episodes: independent streams per (run seed, update); a
    retry after a skipped update draws fresh episodes instead of the same failing ones."""
    return int(np.random.SeedSequence([seed, update, retry]).generate_state(1)[0])


def log_images(writer, model, generator, data, learner, step: int) -> None:
    actor = learner  # a plug-in samples with its own randomness
    if type(learner) is ReinforceLearner:  # a separate stream: images never change training
        actor = Actor(
            model,
            learner.config.policy,
            learner.temperature,
            generator=torch.Generator(learner.device).manual_seed(step),
        )
    r = rollout_tokens(model, generator, data, actor, seed=step)
    truth = [data[i] for i in range(len(data))]
    recs = [r["rec"][i, : len(t)] for i, t in enumerate(truth)]
    writer.add_figure(
        "images/reconstructions", reconstruction_figure(truth, recs, generator.image_size), step
    )
    children = [r["children"][i, : r["lengths"][i]] for i in range(len(data))]
    writer.add_figure(
        "images/policy_diagram", policy_diagram(children, list(data.num_tokens)), step
    )


# What runs saved before an argument existed used: resuming them must not pick up a newer
# default (plain MLPs before the shortcut, the policy's earlier learning rate, no groups,
# one-step credit, the networks' learning rate before it depended on the dataset, a
# classifier trained on every episode's nodes).
LEGACY_DEFAULTS = {
    "lr": (Stage.lr,),
    "linear_skip": False,
    "policy_lr": 1e-3,
    "group_size": 1,
    "gamma": 0.0,
    "reward": "one_step",
    "classifier_share": 1.0,
    "distill": False,
    "own_share": 0.0,
}
# Reward per dataset. Trees: the skip-path reward (every token decoded from the current forest) cut
# the reference MSE from 44.8 to 12.7 px^2 at the same budget; no credit tried recovers the
# narrow subtrees yet (docs/trees.md).
DEFAULT_REWARD = {"trees": "skip_path"}


# What --resume may change: how long this invocation runs and where/how fast it computes.
RESUME_OVERRIDES = ("resume", "max_updates", "progress", "threads", "device")


def with_resume(args: Args) -> tuple[Args, dict | None]:
    """The stored arguments of the run to resume (refusing other flags), and its checkpoint."""
    if not args.resume:
        return args, None
    defaults = asdict(Args())
    given = [
        flag(k) for k, v in asdict(args).items() if k not in RESUME_OVERRIDES and v != defaults[k]
    ]
    if given:
        raise SystemExit(
            f"--resume continues a run with its stored arguments; drop {' '.join(given)} "
            f"(allowed with --resume: {', '.join(flag(k) for k in RESUME_OVERRIDES[1:])})"
        )
    try:
        resume = runs.load(args.resume)
    except (OSError, ValueError) as e:
        raise SystemExit(f"--resume: {e}") from e
    runs.check_args_file(run_dir_of(args.resume), resume["args"], RESUME_OVERRIDES)
    stored = {**LEGACY_DEFAULTS, **resume["args"]}
    for key in ("embed_dim", "token_scale"):  # older runs stored None: "dataset default"
        if stored.get(key) is None:
            stored[key] = resume["config"][key]
    if not stored.get("stage_steps"):  # older runs stored (): the curriculum they ran
        stored["stage_steps"] = tuple(st["steps"] for st in resume["schedule"]["stages"])
    overrides = {k: getattr(args, k) for k in RESUME_OVERRIDES}
    stored_device = stored.get("device", Args.device)
    overrides["device"] = args.device if args.device != Args.device else stored_device
    return replace(Args(**stored), **overrides), resume


def check_args(args: Args) -> None:
    """Ranges and names, checked before anything is built or written."""
    bad = below(args, ("num_envs", "checkpoint_every", "eval_instances", "max_skips"), 1)
    bad += below(args, ("max_updates", "eval_every", "image_every", "threads"), 0)
    if bad:
        raise SystemExit(f"{', '.join(bad)}: must be >= 1 (counts) or >= 0 (0 = off/all)")
    try:
        htm_gym.env_spec(args.env_id)
    except ValueError as e:
        raise SystemExit(f"--env-id: {e}") from e
    if args.group_size < 1 or args.num_envs % args.group_size:
        raise SystemExit(
            f"--group-size must be a positive divisor of --num-envs ({args.num_envs}), "
            f"got {args.group_size}"
        )
    # inf too: the env would refuse it only after the run folder exists
    if not 0 <= args.reward_rate < float("inf"):
        raise SystemExit(f"--reward-rate must be >= 0 and finite, got {args.reward_rate}")
    if not 0 < args.classifier_share <= 1:
        raise SystemExit(
            f"--classifier-share must be in (0, 1] (1: every episode's nodes), "
            f"got {args.classifier_share}"
        )
    if not 0 <= args.grad_clip < float("inf"):
        raise SystemExit(
            f"--grad-clip must be >= 0 and finite (0: no clipping), got {args.grad_clip}"
        )
    if args.baseline_size < 2:
        raise SystemExit(f"--baseline-size must be >= 2, got {args.baseline_size}")
    if not all(0 <= u <= 1 for u in args.uniform_share):
        raise SystemExit(f"--uniform-share takes shares in [0, 1], got {args.uniform_share}")
    if any(args.uniform_share) and args.group_size > 1:
        raise SystemExit(
            "--uniform-share needs --group-size 1 (a group would mix both kinds of row)"
        )
    if args.teacher and (args.policy != "learned" or args.agent or any(args.uniform_share)):
        raise SystemExit(
            "--teacher trains the built-in learned policy by imitation: drop --policy, "
            "--agent and --uniform-share"
        )
    if args.teacher and args.group_size > 1:
        raise SystemExit("--teacher needs --group-size 1 (the teacher plays each row's own set)")
    if args.credit == "area" and args.gamma != 1:
        raise SystemExit(f"--credit area takes no discount: drop --gamma {args.gamma}")
    if args.run_name is not None and not runs.is_plain_name(args.run_name):
        raise SystemExit(f"--run-name {args.run_name!r}: a plain folder name, no path parts")


def training_data(args: Args) -> tuple[TokenGenerator, TokenBatch | None]:
    """The run's generator and, for a token file, its held-out sets (checked before any
    side effect)."""
    if not args.tokens:
        if args.test_tokens:
            raise SystemExit("--test-tokens needs --tokens (the training sets)")
        return htm_gym.env_generator(args.env_id), None
    if args.env_id not in (Args.env_id, runs.TOKENS_ENV_ID):
        raise SystemExit(f"--tokens trains on HTM-Tokens-v0; drop --env-id {args.env_id}")
    try:
        generator = runs.run_generator(runs.TOKENS_ENV_ID, asdict(args))
        if not args.test_tokens:
            return generator, generator.with_split("test").subset()
        return generator, load_token_file(args.test_tokens, generator.token_dim)
    except ValueError as e:
        raise SystemExit(str(e)) from e


def resolve_defaults(args: Args, generator: TokenGenerator) -> Args:
    """Dataset defaults made explicit: stored resolved, so a later change of a default
    cannot alter a resumed run."""
    if args.tokens:
        args = replace(args, env_id=runs.TOKENS_ENV_ID)
    name = generator.name
    chooser = args.teacher or args.policy != "learned" or args.agent or args.group_size > 1
    distill = args.distill and name in TEACHER_RECIPES and not (chooser or any(args.uniform_share))
    taught = bool(args.teacher) or distill
    steps = (
        args.stage_steps
        or (taught and STUDENT_STAGE_STEPS.get(name))
        or default_stage_steps(name, generator.max_tokens - 1, generator.min_tokens)
    )
    # A taught student's rewards train nothing (it imitates; its own rows train the networks
    # alone), so it takes the cheapest: the skip-path reward cost trees students 20% per update.
    reward = args.reward or ("one_step" if taught else DEFAULT_REWARD.get(name, "one_step"))
    own_share = args.own_share if args.own_share is not None else STUDENT_OWN_SHARE * taught
    tau_start = args.tau_start
    if tau_start is None:
        tau_start = (STUDENT_TAU_START if taught else {}).get(name, Schedule.tau_start)
    return replace(
        args,
        distill=distill,
        own_share=own_share,
        tau_start=tau_start,
        stage_steps=tuple(steps),
        lr=tuple(args.lr or default_lr(name)),
        embed_dim=args.embed_dim or default_embed_dim(generator),
        token_scale=args.token_scale or default_token_scale(generator),
        reward=reward,
    )


def check_taught(args: Args, dataset: str) -> None:
    """A student's options, once the defaults are resolved (before any side effect)."""
    if not 0 <= args.own_share < 1 or (args.own_share and not (args.teacher or args.distill)):
        raise SystemExit(
            f"--own-share must be in [0, 1) and needs --teacher or --distill, got {args.own_share}"
        )
    if args.teacher_stage_steps and not args.distill:
        raise SystemExit(
            f"--teacher-stage-steps sets the curriculum of --distill's teacher; the "
            f"{dataset!r} data has no teacher recipe or another option chooses the merges"
        )


def check_reward(args: Args) -> None:
    if args.reward_rate and args.reward != "skip_path":
        raise SystemExit(
            f"--reward-rate {args.reward_rate} prices the forests of the skip-path reward; "
            f"add --reward skip_path (the reward is {args.reward}) or drop --reward-rate"
        )


def model_config(args: Args, generator: TokenGenerator) -> HTMConfig:
    """The networks' sizes from the arguments and the dataset."""
    try:
        return HTMConfig(
            token_dim=generator.token_dim,
            embed_dim=args.embed_dim,
            hidden_dim=args.hidden_dim,
            policy_hidden_dim=args.policy_hidden_dim,
            policy_kind=args.policy_kind,
            linear_skip=args.linear_skip,
            node_widths=tuple(args.node_widths),
            narrow_decoder=args.narrow_decoder,
            node_bound=args.node_bound,
            token_loc=generator.token_loc,
            token_scale=args.token_scale,
            noise_std=args.noise_std,
        )
    except ValueError as e:  # the model's sizes, e.g. --node-widths past --embed-dim
        raise SystemExit(str(e).replace("HTMConfig.", "--").replace("_", "-")) from e


def build(args: Args, generator: TokenGenerator, device: torch.device, ranks: Ranks):
    """The curriculum, the model and its learner (the built-in one or a plug-in)."""
    try:
        schedule = build_schedule(
            args, generator.name, generator.max_tokens - 1, generator.min_tokens
        )
    except ValueError as e:
        raise SystemExit(str(e)) from e
    config = model_config(args, generator)
    torch.manual_seed(args.seed)
    init_seed = args.seed if args.init_seed is None else args.init_seed
    model = make_model(config, seed=init_seed, device=device)
    try:
        reinforce_config = ReinforceConfig(
            policy=args.policy,
            lambda_entropy=args.lambda_entropy,
            policy_lr=args.policy_lr,
            policy_l2=args.policy_l2,
            classifier_share=args.classifier_share,
            baseline=args.baseline,
            baseline_size=args.baseline_size,
            grad_clip=args.grad_clip,
            entropy_loss=args.entropy_loss,
            group_size=args.group_size,
            gamma=args.gamma,
            credit=args.credit,
            loss_power=args.loss_power,
            checkpoint_policy=args.checkpoint_policy,
            pooled_recon=args.recon_pooling == "token",
            imitation=bool(args.teacher) or args.distill,
            own_share=args.own_share,
        )
        learner = make_learner(args.agent, model, schedule, args.seed, reinforce_config, ranks)
    except (ValueError, TypeError) as e:
        raise SystemExit(str(e)) from e
    return schedule, model, learner


@dataclass
class Run:
    """One training run in progress: what it trains and where it writes."""

    args: Args
    generator: TokenGenerator
    schedule: Schedule
    model: HTMModel
    learner: Learner
    run_dir: Path
    ranks: Ranks = field(default_factory=Ranks)
    update: int = 0
    env_steps: int = 0
    started: float = field(default_factory=time.perf_counter)

    def save(self) -> None:
        if not self.ranks.is_main:  # the state is the same on every rank
            return
        runs.save(
            self.run_dir / "checkpoint.pt",
            {
                "config": asdict(self.model.config),
                "model": self.model.state_dict(),
                "learner": self.learner.state_dict(),
                "update": self.update,
                "env_steps": self.env_steps,
                "schedule": self.schedule.to_dict(),
                "args": asdict(self.args),
                "rng": runs.rng_state(),
                "env_id": self.args.env_id,
                "wall_time_s": time.perf_counter() - self.started,
            },
        )


def start_run(
    args: Args, generator, schedule, model, learner, resume: dict | None, ranks: Ranks
) -> Run:
    """A new run folder with its arguments and an update-0 checkpoint (so any run folder can
    be resumed), or the resumed run's state. Only the first rank writes."""
    if resume is None:
        run_dir = Path(args.runs_dir) / (args.run_name or "")
        if ranks.is_main:
            try:
                prefix = f"{args.env_id}__{args.policy}__{args.seed}"
                run_dir = runs.new_run_dir(args.runs_dir, args.run_name, prefix, resumable=True)
            except (FileExistsError, OSError) as e:
                raise SystemExit(str(e)) from e
            (run_dir / "args.json").write_text(json.dumps(asdict(args), indent=2))
        run = Run(args, generator, schedule, model, learner, run_dir, ranks)
        run.save()
        return run
    model.load_state_dict(resume["model"])
    learner.load_state_dict(resume["learner"])
    runs.set_rng_state(resume["rng"])
    update = int(resume.get("update", resume["learner"].get("step", 0)))
    return Run(
        args, generator, schedule, model, learner, run_dir_of(args.resume), ranks, update,
        int(resume.get("env_steps", 0)),
    )  # fmt: skip


def eval_sets(args: Args, generator: TokenGenerator, held_out: TokenBatch | None):
    """Validation sets (a token file's held-out sets, never training ones) and 8 shown sets."""
    if held_out is not None:
        n = args.eval_instances
        val = TokenBatch(held_out.tokens[:n], held_out.num_tokens[:n])
    else:
        val = generator.sample(np.random.default_rng([args.seed, 2**31 - 1]), args.eval_instances)
    return val, generator.sample(np.random.default_rng([args.seed, 2**31 - 2]), 8)


def play(
    run: Run, venv: HTMVectorEnv, collector: EpisodeCollector, skips: int, teacher: Teacher | None
) -> EpisodeBatch:
    """This update's episodes under its curriculum stage: this rank's share of the rows,
    seeded as those rows of one process would be (a teacher, if any, choosing the merges)."""
    i, _ = run.schedule.stage_at(run.update)
    stage = run.schedule.stages[i]
    venv.set_max_merges(stage.merges or None)
    venv.set_noise_std(stage.noise_std)
    seed: int | list[int] = round_seed(run.args.seed, run.update, skips)
    if run.ranks.distributed:
        first = run.ranks.rank * venv.num_envs
        seed = [seed + first + k for k in range(venv.num_envs)]
        # The acting stream of each rank depends on (update, rank) alone, so a run resumes
        # the same under any number of ranks.
        run.learner.generator.manual_seed(round_seed(run.args.seed, run.update, skips) + first)
    before = collector.env_steps
    if stage.merges == 0:
        episodes = collector.reset_round(seed=seed)
    elif teacher is not None:
        episodes = follow(collector, teacher.play(seed, stage.merges or None), seed, run.learner)
    elif run.args.group_size > 1:
        episodes = collector.collect_group_round(run.learner, seed, run.args.group_size)
    else:
        episodes = collector.collect_round(run.learner, seed=seed)
    steps = torch.tensor(float(collector.env_steps - before), device=venv.device)
    run.env_steps += int(run.ranks.sum(steps))
    return episodes


def log_update(writer: SummaryWriter, run: Run, metrics: dict[str, float], step: int, first: int):
    for k, v in metrics.items():
        writer.add_scalar(k if "/" in k else f"learner/{k}", v, step)
    writer.add_scalar("train/stage", run.schedule.stage_at(step)[0], step)
    writer.add_scalar("train/env_steps", run.env_steps, step)
    rate = (run.update - first) / max(time.perf_counter() - run.started, 1e-9)
    writer.add_scalar("train/updates_per_s", rate, step)


def log_eval(writer: SummaryWriter, run: Run, val: TokenBatch, step: int) -> None:
    result = evaluate(run.model, run.generator, val, Greedy(run.learner), seed=run.args.seed)
    writer.add_scalar("eval/recovered", result["recovered"], step)
    writer.add_scalar("eval/bracket_f1", result["bracket_f1"], step)
    writer.add_scalar("eval/recon_mse_px", result["recon_mse_pooled"], step)
    writer.add_scalar("eval/recon_mse_px_per_instance", result["recon_mse"], step)
    writer.add_scalar("eval/classifier_accuracy", result["classifier"]["accuracy"], step)


class StopSignals:
    """SIGINT/SIGTERM during training finish the current update, save and exit: a run never
    loses more than one update to an interrupt."""

    def __init__(self) -> None:
        self.received: int | None = None

    def __enter__(self) -> StopSignals:
        self.previous = {s: signal.signal(s, self._note) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def _note(self, signum: int, frame) -> None:
        self.received = signum

    def __exit__(self, *exc) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)


def train(
    run: Run,
    writer: SummaryWriter,
    val: TokenBatch,
    shown: TokenBatch,
    stop: StopSignals,
    teacher: Teacher | None = None,
    budget: int = 0,
) -> bool:
    """Updates until the curriculum's end, ``budget`` updates (0: no limit) or a signal."""
    args, total = run.args, run.schedule.total_steps
    end = total if not budget else min(total, run.update + budget)
    venv = HTMVectorEnv(
        args.num_envs // run.ranks.world,  # this rank's rows
        dataset=run.generator,
        model=run.model,
        reward=args.reward,
        rate_weight=args.reward_rate,
        array_type="torch",
        device=next(run.model.parameters()).device,
    )
    collector = EpisodeCollector(venv)
    quiet = not (args.progress and run.ranks.is_main)
    bar = tqdm(total=total, initial=run.update, disable=quiet, dynamic_ncols=True)
    first, skips = run.update, 0
    stopping = False
    while run.update < end and not stopping:
        step = run.update
        metrics = run.learner.update(play(run, venv, collector, skips, teacher))
        skips = skips + 1 if metrics.get("train/skipped") else 0
        check_skips(skips, step, args.max_skips)
        run.update += 0 if skips else 1
        log_update(writer, run, metrics, step, first)
        bar.update(0 if skips else 1)
        bar.set_postfix(recon_px=f"{metrics.get('recon/mse_px', float('nan')):.3g}")
        done = run.update == total
        # every rank stops at the same update, whichever received the signal
        stopping = not run.ranks.all_agree(stop.received is None, venv.device)
        if run.update % args.checkpoint_every == 0 or run.update == end or stopping:
            run.save()  # before the evaluation, so a failing evaluation loses nothing
        if not run.ranks.is_main:
            continue
        if args.eval_every and (run.update % args.eval_every == 0 or done):
            log_eval(writer, run, val, step)
        if args.image_every and (run.update % args.image_every == 0 or done):
            log_images(writer, run.model, run.generator, shown, run.learner, step)
    bar.close()
    return stopping


def check_skips(skips: int, step: int, max_skips: int) -> None:
    if skips:
        tqdm.write(f"update {step}: non-finite loss or gradient, update skipped ({skips} in a row)")
    if skips >= max_skips:
        raise SystemExit(
            f"stopping: {skips} consecutive non-finite updates at update {step}; "
            "lower --lr or check the data"
        )


class NoWriter:
    """What ranks other than the first log: nothing."""

    def __getattr__(self, name: str):
        return lambda *args, **kwargs: None


def join_ranks(args: Args, device: torch.device) -> tuple[Ranks, torch.device]:
    """This process's rank under torchrun (one rank otherwise), its device, and the checks
    that the rows split evenly."""
    ranks = ranks_from_env(device.type)
    if device.type == "cuda" and ranks.distributed:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if ranks.distributed and ranks.is_main:
        print(f"torch.distributed: {dist.get_backend()} backend, {ranks.world} rank(s) on {device}")
    rows = args.num_envs // ranks.world
    if args.num_envs % ranks.world or rows % args.group_size:
        raise SystemExit(
            f"--num-envs {args.num_envs} must split into {ranks.world} ranks of whole groups "
            f"of --group-size {args.group_size}"
        )
    return ranks, device


# What --distill's teacher takes from the student's arguments: where and how it computes,
# its seeds and its bookkeeping; the rest is the dataset's recipe.
TEACHER_INHERITS = (
    "env_id", "seed", "init_seed", "device", "threads", "num_envs", "eval_every",
    "eval_instances", "image_every", "checkpoint_every", "max_skips", "progress", "max_updates",
)  # fmt: skip


def teacher_args(args: Args, dataset: str, runs_dir: Path) -> Args:
    """--distill's teacher: the dataset's recipe in ``runs_dir/teacher``, checked (with its
    curriculum) before the student's folder exists."""
    recipe = dict(TEACHER_RECIPES[dataset])
    if args.teacher_stage_steps:
        if len(args.teacher_stage_steps) != len(recipe["stage_steps"]):
            raise SystemExit(
                f"--teacher-stage-steps: the {dataset} teacher recipe has "
                f"{len(recipe['stage_steps'])} stages {recipe['stage_steps']}, got "
                f"{len(args.teacher_stage_steps)} values"
            )
        recipe["stage_steps"] = args.teacher_stage_steps
    inherited = {k: getattr(args, k) for k in TEACHER_INHERITS}
    t = Args(**recipe, **inherited, distill=False, runs_dir=str(runs_dir), run_name="teacher")
    check_args(t)
    try:
        build_schedule(t, dataset, 1)
    except ValueError as e:
        raise SystemExit(f"--teacher-stage-steps: {e}") from e
    return t


def train_teacher(
    args: Args, dataset: str, run: Run, device: torch.device
) -> tuple[Path | None, int, int]:
    """Train, resume or find finished the teacher of a --distill run in <run>/teacher: its
    folder once finished (else None), the updates it made now and the signal that
    interrupted it (0: none)."""
    folder = run.run_dir / "teacher"
    if (folder / "checkpoint.pt").is_file():
        keep = {k: getattr(args, k) for k in RESUME_OVERRIDES if k != "resume"}
        t = Args(resume=str(folder), **keep)
    else:
        t = teacher_args(args, dataset, run.run_dir)
    t, resume = with_resume(t)
    t_run, done, stopped = run_phase(t, resume, run.ranks, device)
    if t_run.update == t_run.schedule.total_steps:
        return folder, done, stopped
    if not stopped and run.ranks.is_main:
        print(f"teacher unfinished; continue: python train/reinforce.py --resume {run.run_dir}")
    return None, done, stopped


def run_phase(
    args: Args, resume: dict | None, ranks: Ranks, device: torch.device
) -> tuple[Run, int, int]:
    """One run from its arguments (after a --distill run's teacher): the run, the updates it
    made in this invocation and the signal that interrupted it (0: none)."""
    generator, held_out = training_data(args)
    args = resolve_defaults(args, generator)
    check_taught(args, generator.name)
    check_reward(args)
    if args.distill and resume is None:
        teacher_args(args, generator.name, Path(args.runs_dir))
    schedule, model, learner = build(args, generator, device, ranks)
    teacher = None
    if args.teacher:
        teacher = checked_teacher(args.teacher, args, generator, ranks, device)
    val, shown = eval_sets(args, generator, held_out)
    run = start_run(args, generator, schedule, model, learner, resume, ranks)
    budget, first = args.max_updates, run.update
    if args.distill:
        path, done, stopped = train_teacher(args, generator.name, run, device)
        if stopped or path is None or (budget and done >= budget):
            return run, 0, stopped
        budget = budget and budget - done
        teacher = checked_teacher(str(path), args, generator, ranks, device)
    writer = NoWriter()
    if ranks.is_main:
        writer = SummaryWriter(str(run.run_dir), purge_step=run.update if resume else None)
    if resume is None:
        table = "\n".join(f"|{k}|{v}|" for k, v in asdict(args).items())
        writer.add_text("hyperparameters", f"|param|value|\n|-|-|\n{table}")
    with StopSignals() as stop:
        stopped = train(run, writer, val, shown, stop, teacher, budget)
    writer.close()
    signum = (stop.received or signal.SIGTERM) if stopped else 0
    seconds = time.perf_counter() - run.started
    if ranks.is_main:
        print(
            f"run directory: {run.run_dir}  ({run.update}/{schedule.total_steps} updates, "
            f"{seconds:.0f}s this invocation)"
        )
    return run, run.update - first, signum


def checked_teacher(
    path: str, args: Args, generator: TokenGenerator, ranks: Ranks, device: torch.device
) -> Teacher:
    try:
        rows = args.num_envs // ranks.world
        return load_teacher(path, args.env_id, args.tokens, generator, rows, device)
    except (OSError, ValueError) as e:
        raise SystemExit(f"--teacher: {e}") from e


def main(args: Args) -> Path:
    args, resume = with_resume(args)
    check_args(args)
    ranks, device = join_ranks(args, resolve_device(args.device))
    if args.threads:
        torch.set_num_threads(args.threads)
    # Tiny gradients and Adam moments go subnormal late in training, and CPU arithmetic on
    # subnormals is slow (a late crosses update: 100 ms vs 59 ms flushed, one thread).
    # Flushing sets values below ~1e-38 to 0, far below what the losses resolve; no-op on CUDA.
    torch.set_flush_denormal(True)
    run, _, stopped = run_phase(args, resume, ranks, device)
    if ranks.distributed:
        dist.destroy_process_group()
    if stopped and ranks.is_main:
        print(f"interrupted and saved; resume: python train/reinforce.py --resume {run.run_dir}")
    if stopped:
        raise SystemExit(128 + stopped)
    return run.run_dir


if __name__ == "__main__":
    main_or_exit(main, tyro.cli(Args))
