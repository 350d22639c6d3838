from __future__ import annotations

import pytest
import torch

from agents import EpisodeCollector, Learner, RandomLearner
from htm_gym import HTMVectorEnv, core


def test_random_learner_is_a_learner_and_acts_legally():
    agent = RandomLearner(seed=0)
    assert isinstance(agent, Learner)
    mask = torch.tensor([[0, 1, 1, 0], [0, 0, 0, 0]], dtype=torch.int8)
    for _ in range(20):
        a = agent.act({}, mask)
        assert a[0] in (1, 2) and a[1] == 0
    state = agent.state_dict()
    first = agent.act({}, mask)
    agent.load_state_dict(state)
    assert torch.equal(agent.act({}, mask), first)


def test_collected_episodes_replay_to_the_env_rewards():
    venv = HTMVectorEnv(8, array_type="torch", hidden_dim=32)
    collector = EpisodeCollector(venv, seed=0)
    episodes = collector.collect(RandomLearner(seed=1), min_episodes=20)
    assert len(episodes) >= 20
    assert episodes.terminated.all() and torch.equal(episodes.lengths, episodes.num_tokens - 1)
    with torch.no_grad():
        rep = core.replay(
            venv.model,
            episodes.tokens,
            episodes.num_tokens,
            episodes.noise,
            episodes.pairs,
            episodes.lengths,
        )
        state, losses = rep.state, rep.step_losses
    assert torch.allclose(-losses, episodes.rewards, atol=1e-5)
    assert (state.active.sum(1) == 1).all()
    # the next collection continues the running episodes: no env step is lost
    more = collector.collect(RandomLearner(seed=2), min_episodes=5)
    assert len(more) >= 5


def test_split_by_tokens_replays_each_group_exactly():
    venv = HTMVectorEnv(16, array_type="torch", hidden_dim=32)
    episodes = EpisodeCollector(venv, seed=3).collect_round(RandomLearner(seed=4), seed=5)
    groups = episodes.split_by_tokens()
    assert sorted(int(g.num_tokens[0]) for g in groups) == sorted(set(episodes.num_tokens.tolist()))
    assert sum(len(g) for g in groups) == len(episodes)
    with torch.no_grad():
        for g in groups:
            p = int(g.num_tokens[0])
            assert g.tokens.shape[1] == p and (g.num_tokens == p).all()
            rep = core.replay(venv.model, g.tokens, g.num_tokens, g.noise, g.pairs, g.lengths)
            state, losses = rep.state, rep.step_losses
            assert torch.allclose(-losses, g.rewards, atol=1e-5)
            assert (state.active.sum(1) == 1).all()


class _OneInTwoIllegal:
    """Acts illegally (slot pair (0, 0)) every other step, else like RandomLearner."""

    def __init__(self) -> None:
        self.random, self.calls = RandomLearner(seed=3), 0

    def act(self, obs, action_mask, greedy=False):
        self.calls += 1
        a = self.random.act(obs, action_mask)
        return a * 0 if self.calls % 2 else a


@pytest.mark.parametrize("limit", ["max_merges", "step_limit"])
def test_truncated_episodes_do_not_run_into_each_other(limit):
    """Bug: the collector took a truncated row's reset step for a merge (issue 16)."""
    kwargs = {"max_merges": 1} if limit == "max_merges" else {"step_limit": 5}
    venv = HTMVectorEnv(8, array_type="torch", hidden_dim=32, **kwargs)
    agent = RandomLearner(seed=1) if limit == "max_merges" else _OneInTwoIllegal()
    collector = EpisodeCollector(venv, seed=0)
    episodes = collector.collect(agent, min_episodes=40)
    cap = 1 if limit == "max_merges" else 3  # 5 steps, one in two illegal
    assert (episodes.lengths <= cap).all() and (episodes.lengths >= 1).all()
    assert (episodes.lengths == 1).all() if limit == "max_merges" else True
    assert not episodes.terminated[episodes.num_tokens > cap + 1].any()
    with torch.no_grad():
        rep = core.replay(
            venv.model, episodes.tokens, episodes.num_tokens, episodes.noise, episodes.pairs,
            episodes.lengths,
        )  # fmt: skip
    assert torch.allclose(-rep.step_losses, episodes.rewards, atol=1e-5)


def test_heuristic_agent_prefers_the_lowest_one_step_loss():
    from agents import HeuristicActor
    from agents.policies import all_pair_step_losses

    venv = HTMVectorEnv(6, array_type="torch", hidden_dim=32)
    obs, info = venv.reset(seed=0)
    agent = HeuristicActor(venv.model, greedy=True)
    a = agent.act(obs, info["action_mask"])
    losses = all_pair_step_losses(venv.model, obs["nodes"]).flatten(1)
    losses = losses.masked_fill(~info["action_mask"].bool(), float("inf"))
    assert torch.equal(a, losses.argmin(1))
    assert info["action_mask"].gather(1, a[:, None]).all()


def test_group_round_plays_each_token_set_in_consecutive_rows():
    venv = HTMVectorEnv(12, array_type="torch", hidden_dim=32)
    collector = EpisodeCollector(venv, seed=0)
    episodes = collector.collect_group_round(RandomLearner(seed=1), seed=7, group_size=3)
    tokens = episodes.tokens.view(4, 3, *episodes.tokens.shape[1:])
    assert (tokens == tokens[:, :1]).all() and not (tokens == tokens[:1, :1]).all()
    assert episodes.terminated.all() and not torch.equal(episodes.noise[0], episodes.noise[1])
    again = EpisodeCollector(venv, seed=0).collect_group_round(RandomLearner(seed=1), 7, 3)
    assert torch.equal(again.tokens, episodes.tokens) and torch.equal(again.pairs, episodes.pairs)
    with pytest.raises(ValueError, match="divide"):
        collector.collect_group_round(RandomLearner(seed=1), seed=7, group_size=5)


def test_an_episode_record_is_not_changed_by_later_steps():
    venv = HTMVectorEnv(4, array_type="torch", hidden_dim=32, max_merges=1)
    obs, info = venv.reset(seed=0)
    obs, _, _, _, info = venv.step(RandomLearner(seed=0).act(obs, info["action_mask"]))
    record = info["episode_record"]
    rewards, pairs = record.rewards.clone(), record.state.actions.clone()
    assert info["_episode_record"].all() and (rewards[:, 0] != 0).all()
    venv.step(RandomLearner(seed=1).act(obs, info["action_mask"]))  # the autoreset step
    assert torch.equal(record.rewards, rewards) and torch.equal(record.state.actions, pairs)


def test_a_round_draws_no_episode_for_rows_that_end_early():
    # Rows that ended used to autoreset and play a new episode that the round then
    # discarded: a wasted draw per early row (about a sixth of a crosses collection).
    venv = HTMVectorEnv(16, array_type="torch", hidden_dim=32)
    draws = []
    build = venv.generator.build
    venv.generator.build = lambda d: draws.append(len(d)) or build(d)
    episodes = EpisodeCollector(venv).collect_round(RandomLearner(seed=1), seed=3)
    assert len(set(episodes.num_tokens.tolist())) > 1  # some rows ended early
    assert draws == [16]  # the reset's draws only
    state = venv.episode_record().state  # every row still shows the episode it played
    assert torch.equal(state.merges, episodes.lengths)
    venv.step(torch.zeros(16, dtype=torch.long))  # every row ended: actions are ignored
    assert draws == [16, 16] and (venv.episode_record().state.merges == 0).all()  # autoreset


def test_one_hot_matches_torch():
    index = torch.tensor([[0, 3], [2, 1]])
    assert torch.equal(core.one_hot(index, 4), torch.nn.functional.one_hot(index, 4).bool())
