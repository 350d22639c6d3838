"""Plug-in learners: ``train/reinforce.py --agent module:Class`` trains any class that
implements :class:`agents.base.Learner` and is constructed as
``Class(model=HTMModel, schedule=Schedule, seed=int)``."""

from __future__ import annotations

import importlib

from torch import Tensor

from agents.base import Learner
from agents.distributed import Ranks
from agents.reinforce import ReinforceConfig, ReinforceLearner
from agents.schedules import Schedule
from htm_gym.nets import HTMModel


def import_learner(spec: str) -> type:
    """The class named by ``"package.module:Class"``, with errors that say what is wrong."""
    module_name, sep, class_name = spec.partition(":")
    if not sep or not module_name or not class_name:
        raise ValueError(f"--agent must look like 'package.module:Class', got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(f"--agent {spec!r}: cannot import module {module_name!r} ({e})") from e
    cls = getattr(module, class_name, None)
    if not isinstance(cls, type):
        raise ValueError(f"--agent {spec!r}: module {module_name!r} has no class {class_name!r}")
    return cls


def make_learner(
    spec: str | None,
    model: HTMModel,
    schedule: Schedule,
    seed: int,
    config: ReinforceConfig | None = None,
    ranks: Ranks | None = None,
) -> Learner:
    """The built-in REINFORCE learner (``spec`` None, with ``config``) or a plug-in; only the
    built-in learner trains data-parallel (``ranks``)."""
    if spec is None:
        return ReinforceLearner(model, schedule, config, seed=seed, ranks=ranks)
    if ranks is not None and ranks.distributed:
        raise ValueError("--agent plug-ins train in one process; launch without torchrun")
    cls = import_learner(spec)
    missing = [
        m
        for m in ("act", "update", "state_dict", "load_state_dict")
        if not callable(getattr(cls, m, None))
    ]
    if missing:
        raise TypeError(f"--agent {spec!r} does not implement the Learner protocol: {missing}")
    try:
        return cls(model=model, schedule=schedule, seed=seed)
    except TypeError as e:
        raise TypeError(
            f"--agent {spec!r} must be constructible as Class(model=..., schedule=..., seed=...)"
            f": {e}"
        ) from e


class Greedy:
    """A learner's argmax policy, for evaluation (``act(..., greedy=True)``)."""

    def __init__(self, learner: Learner) -> None:
        self.learner = learner

    def act(self, obs: dict[str, Tensor], action_mask: Tensor) -> Tensor:
        return self.learner.act(obs, action_mask, greedy=True)
