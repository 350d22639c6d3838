"""Distillation: another run's trained merge policy chooses the merges a learner trains on.

A merge order found by one model (say a bottlenecked one whose decoding error singles out
the data's natural subtrees) can be handed to another (full width, reconstructing well):
the teacher plays a round in its own env, and the student's env replays the same token
sets with the same slot pairs. With ``ReinforceConfig(imitation=True)`` the student's
policy learns to reproduce those merges from its own embeddings while its networks train
on the teacher's trees. Both envs are used through their documented interface only:
``play_round`` and ``reset(options={"tokens", "num_tokens"})``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from agents.base import EpisodeBatch
from agents.collector import EpisodeCollector
from agents.trained import checkpoint_actor
from htm_gym import core, runs
from htm_gym.datasets import TokenGenerator
from htm_gym.envs.vector_env import HTMVectorEnv, play_round

# Each dataset's teacher recipe (``train/reinforce.py`` arguments), trained first by
# ``--distill``. Trees: a narrow model (7 numbers per token, 2 per merged node) learns to decode
# random merge orders under strong node noise, so its skip-path rewards price each merge by the
# information it destroys; its policy is then fitted to those rewards with the networks frozen.
# It recovers the generator's subtrees (recovery 1.0000 on the reference set, runs r14_v6_s1,
# r15_fast_t1: docs/trees.md); its own reconstruction is poor, hence the student.
TEACHER_RECIPES: dict[str, dict[str, Any]] = {
    "trees": {
        "reward": "skip_path",
        "gamma": 0.0,
        "token_scale": 128.0,
        "embed_dim": 7,
        "node_widths": (2, 2, 2, 2, 2),
        # The policy stage's learning rate decays to 5% within it, so a shorter one learns
        # less, not just for less time: 1,000 updates left seed 2 at recovery 0.03 (r16_ft_s2).
        "stage_steps": (100, 300, 300, 600, 600, 1200, 1500, 2000),
        "uniform_share": (1.0,) * 7 + (0.0,),
        # The policy starts its stage untrained; at 4x the learning rate it finds the order
        # within 400 updates where 1x took 400-1,400 (seed 2's validation recovery 0.92 at
        # update 4,999 against 0.03, 0.97 at the end against 0.78; docs/trees.md).
        "policy_lr_scale": (1.0,) * 7 + (4.0,),
        "freeze_encoder_stages": (7,),
        "freeze_decoder_stages": (7,),
        "noise_std": 0.0005,
        "stage_noise_std": (0.01,),
        "tau_end": 0.5576,  # the report's teacher blend gone by update 3,680, as in r14_v6_s1
    },
}
# A taught student's curriculum: the order comes from the teacher from the first merges on,
# so the budget goes to reconstruction (trees: recovery 1.0 by update 1,000 in r15_st_s1).
STUDENT_STAGE_STEPS: dict[str, tuple[int, ...]] = {"trees": (100, 300, 300, 300, 300, 300, 3000)}
# Share of a taught student's rows it plays itself: its decoder also meets its own departures
# from the teacher, which were its whole MSE tail on trees (0.93 -> 0.38 px^2, docs/trees.md).
STUDENT_OWN_SHARE = 0.25
# A taught student's starting blend tau of up-tree nodes into its decoding (the report's 0.5,
# decaying to 0 by 80% of training, elsewhere): 0 trains its networks on free-running decoding,
# what is evaluated, from the start. Trees: reference MSE 0.766 -> 0.352 px^2 on seed 3's
# teacher, 0.662 -> 0.329 under another student seed (docs/trees.md).
STUDENT_TAU_START: dict[str, float] = {"trees": 0.0}


class Teacher:
    """A trained run's greedy merge policy playing its own :class:`HTMVectorEnv` over the
    student's dataset (the teacher model's own sizes and node noise)."""

    def __init__(self, model, ckpt: dict, generator: TokenGenerator, num_envs: int) -> None:
        self.model = model
        self.actor = checkpoint_actor(model, ckpt, greedy=True)
        device = next(model.parameters()).device
        self.venv = HTMVectorEnv(
            num_envs, dataset=generator, model=model, array_type="torch", device=device
        )

    def play(self, seed: int | list[int] | None, max_merges: int | None) -> EpisodeBatch:
        """One episode per row, seeded like the student's round would be."""
        self.venv.set_max_merges(max_merges)
        record, _ = play_round(self.venv, self.actor.act, seed)
        return EpisodeBatch.from_record(record)


class Follower:
    """Acts by replaying given slot pairs (N, S-1, 2), one step per call, from a reset: the
    rows of a round all start together, and a row past its end is held (action ignored).
    Rows where ``own`` (N,) bool holds act with ``act`` (a learner's own policy) instead."""

    def __init__(self, pairs: Tensor, own: Tensor | None = None, act=None) -> None:
        self.pairs, self.t = pairs.clamp(min=0), 0
        self.own, self.own_act = own, act

    def act(self, obs: dict[str, Tensor], action_mask: Tensor, greedy: bool = False) -> Tensor:
        t = min(self.t, self.pairs.shape[1] - 1)
        self.t += 1
        taught = core.flat_actions(self.pairs[:, t], obs["active"].shape[1])
        if self.own is None or not bool(self.own.any()):
            return taught
        return torch.where(self.own, self.own_act(obs, action_mask), taught)


def follow(
    collector: EpisodeCollector,
    taught: EpisodeBatch,
    seed: int | list[int] | None,
    learner=None,
) -> EpisodeBatch:
    """The student's round on the teacher's token sets (slot order kept), merging the
    teacher's pairs, except in the rows a ``learner`` with ``own_rows`` plays itself; its own
    node noise from ``seed``. Raises if the envs diverged."""
    options = {"tokens": taught.tokens.cpu().numpy(), "num_tokens": taught.num_tokens.cpu().numpy()}
    own = learner.own_rows(len(taught)) if hasattr(learner, "own_rows") else None
    act = Follower(taught.pairs, own, learner.act if learner is not None else None)
    episodes = collector.collect_round(act, seed=seed, options=options)
    rows = slice(None) if own is None else ~own
    if not (
        torch.equal(episodes.lengths[rows], taught.lengths[rows])
        and torch.equal(episodes.pairs[rows], taught.pairs[rows])
    ):
        raise RuntimeError("the student's env did not merge the teacher's pairs (envs diverged)")
    return episodes


def load_teacher(
    path: str | Path, env_id: str, tokens: str | None, generator: TokenGenerator, num_envs: int,
    device: torch.device,
) -> Teacher:  # fmt: skip
    """The teacher of ``path`` (a run folder or checkpoint) for a student training on
    ``env_id`` / ``tokens``; ValueError naming the problem when it cannot teach."""
    model, ckpt = runs.load_trained(path, device)
    teacher_env, _ = runs.checkpoint_env(ckpt)
    teacher_tokens = ckpt["args"].get("tokens") or None
    if teacher_env != env_id or teacher_tokens != (tokens or None):
        raise ValueError(
            f"{path} was trained on {teacher_env} (token file {teacher_tokens}); a teacher "
            "must share the student's --env-id and --tokens"
        )
    if ckpt["args"].get("policy") == "random" and not ckpt["args"].get("agent"):
        raise ValueError(f"{path}: a random policy has no merge order to teach")
    for p in model.parameters():
        p.requires_grad_(False)
    return Teacher(model, ckpt, generator, num_envs)
