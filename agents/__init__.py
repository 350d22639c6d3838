"""Policy learners for HTM environments and the interface they share."""

from agents.base import EpisodeBatch, Learner
from agents.collector import EpisodeCollector
from agents.policies import Actor, HeuristicActor
from agents.random_learner import RandomLearner

__all__ = [
    "Actor",
    "EpisodeBatch",
    "EpisodeCollector",
    "HeuristicActor",
    "Learner",
    "RandomLearner",
]
