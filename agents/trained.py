"""The merge policy of a trained run, rebuilt from its checkpoint."""

from __future__ import annotations

import torch

from agents.base import Learner
from agents.plugins import Greedy, make_learner
from agents.policies import Actor, IncrementalActor
from agents.schedules import Schedule
from htm_gym.nets import HTMModel


def has_learned_scorer(ckpt: dict) -> bool:
    """Whether the checkpoint's model.policy was trained (the built-in learned policy)."""
    return not ckpt["args"].get("agent") and ckpt["args"]["policy"] == "learned"


def checkpoint_actor(
    model: HTMModel, ckpt: dict, greedy: bool, generator: torch.Generator | None = None
) -> Learner | Actor | IncrementalActor:
    """The trained merge policy of a checkpoint: the built-in policy (the heuristic at its
    tuned temperature), or the plug-in learner rebuilt from its state."""
    agent = ckpt["args"].get("agent")
    if agent:
        if "schedule" not in ckpt:
            raise ValueError("a plug-in learner's checkpoint needs its 'schedule'")
        learner = make_learner(
            agent, model, Schedule.from_dict(ckpt["schedule"]), int(ckpt["args"]["seed"])
        )
        learner.load_state_dict(ckpt["learner"])
        return Greedy(learner) if greedy else learner
    policy = ckpt["args"]["policy"]
    if policy == "learned":  # the same actions, rescoring only the merged slot per step
        return IncrementalActor(model, greedy=greedy, generator=generator)
    temperature = 1.0
    if policy == "heuristic":
        temperature = float(torch.exp(ckpt["learner"]["log_temperature"]))
    return Actor(model, policy, temperature, greedy=greedy, generator=generator)
