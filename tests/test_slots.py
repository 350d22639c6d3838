"""Envs whose slot count is independent of the training data (issue: any token set)."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

from agents.policies import Actor
from htm_gym import HTMEnv, HTMVectorEnv
from htm_gym.datasets import TokenBatch, make_generator
from htm_gym.evaluation.rollout import evaluate
from htm_gym.nets import HTMConfig, make_model


def _model(seed=0):
    cfg = HTMConfig(token_dim=4, embed_dim=8, hidden_dim=16, policy_hidden_dim=8, token_scale=8.0)
    return make_model(cfg, seed=seed)


def _episode(env, tokens, seed):
    """Greedy episode of the model's learned policy on ``tokens``: actions as slot pairs
    and rewards."""
    obs, info = env.reset(seed=seed, options={"tokens": tokens})
    actor = Actor(env.unwrapped.model, "learned", greedy=True)
    s = env.unwrapped.sim.S
    pairs, rewards, done = [], [], False
    while not done:
        a = int(
            actor.act(
                {k: torch.as_tensor(v)[None] for k, v in obs.items()},
                torch.as_tensor(info["action_mask"])[None],
            )[0]
        )
        pairs.append((a // s, a % s))
        obs, r, term, trunc, info = env.step(a)
        rewards.append(r)
        done = term or trunc
    return pairs, np.array(rewards)


def test_model_trained_with_six_slots_plays_the_same_episode_with_ten():
    model = _model()  # the model is P-agnostic: nothing in it depends on S
    tokens = make_generator("crosses").sample(np.random.default_rng(3), 8)
    p6 = next(tokens[i] for i in range(8) if len(tokens[i]) == 6)
    small = HTMEnv(model=model)
    big = HTMEnv(model=model, max_tokens=10)
    assert small.action_space.n == 36 and big.action_space.n == 100
    assert big.observation_space["nodes"].shape == (10, 8)
    pairs6, rew6 = _episode(small, p6, seed=7)
    pairs10, rew10 = _episode(big, p6, seed=7)
    assert pairs6 == pairs10 and len(pairs6) == 5
    assert np.allclose(rew6, rew10, rtol=1e-5, atol=1e-7)


def test_env_with_more_slots_takes_larger_token_sets_and_other_generators():
    env = HTMEnv(max_tokens=10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # unbounded Box recommendations, as in test_envs
        check_env(env, skip_render_check=True)
    eight = make_generator("crosses", num_crosses=(4, 4)).sample(np.random.default_rng(0), 1)[0]
    _, info = env.reset(options={"tokens": eight})
    assert info["num_tokens"] == 8 and info["action_mask"].sum() == 8 * 7
    five = gym.make("HTM-Crosses-v0", dataset_kwargs={"num_crosses": (4, 5)})
    _, info = five.reset(seed=0)
    assert five.action_space.n == 100 and info["num_tokens"] in (8, 10)
    venv = HTMVectorEnv(3, max_tokens=9)
    _, info = venv.reset(seed=0)
    assert info["action_mask"].shape == (3, 81) and set(info["num_tokens"]) <= {2, 4, 6}
    with pytest.raises(ValueError, match="max_tokens=4 is below"):
        HTMEnv(max_tokens=4)


def test_evaluation_on_more_tokens_than_training():
    model = _model()
    gen = make_generator("crosses")  # trained on 1-3 crosses (S = 6)
    data = make_generator("crosses", num_crosses=(4, 5)).sample(np.random.default_rng(1), 6)
    assert data.tokens.shape[1] == 10
    res = evaluate(model, gen, TokenBatch(data.tokens, data.num_tokens), Actor(model, greedy=True))
    assert set(res["per_p"]) <= {8, 10} and res["recon_mse_pooled"] > 0
