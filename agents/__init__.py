"""Policy learners for HTM environments and the interface they share."""

from agents.base import EpisodeBatch, Learner
from agents.collector import EpisodeCollector
from agents.policies import Actor, HeuristicAgent
from agents.random_agent import RandomAgent

__all__ = ["Actor", "EpisodeBatch", "EpisodeCollector", "HeuristicAgent", "Learner", "RandomAgent"]
