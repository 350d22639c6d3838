"""The env's reward choices against hand computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from htm_gym import HTMEnv, HTMVectorEnv


def test_skip_path_reward_on_a_three_token_tree():
    env = HTMEnv(dataset="trees", dataset_kwargs={"height": 2}, noise_std=0.0, reward="skip_path")
    x = np.array([[100.0, 100.0], [150.0, 120.0], [90.0, 160.0]], np.float32)
    env.reset(options={"tokens": x})
    m = env.model
    with torch.no_grad():
        xn = m.normalize(torch.as_tensor(x))
        e = m.lifter(xn)  # (3, E) leaves, noise off

        def loss(decoded):  # MSE of the three decoded tokens, normalised units
            return float((m.unlifter(torch.stack(decoded)) - xn).pow(2).mean())

        l0 = loss([e[0], e[1], e[2]])
        node = m.merge(e[0:1], e[1:2])  # merge slots 0 and 1 (tree id 3, slot 0)
        a, b = m.unmerge(node)
        l1 = loss([a[0], b[0], e[2]])
        root = m.merge(node, e[2:3])  # then the node in slot 0 with slot 2
        left, right = m.unmerge(root)
        a2, b2 = m.unmerge(left)
        l2 = loss([a2[0], b2[0], right[0]])
    _, r1, *_ = env.step(0 * 3 + 1)
    _, r2, term, *_ = env.step(0 * 3 + 2)
    assert term
    assert r1 == pytest.approx(l0 - l1, rel=1e-5, abs=1e-8)
    assert r2 == pytest.approx(l1 - l2, rel=1e-5, abs=1e-8)


def test_skip_path_vector_env_matches_single_env():
    kw = {"dataset": "crosses", "reward": "skip_path"}
    venv = HTMVectorEnv(3, **kw)
    envs = [HTMEnv(**kw) for _ in range(3)]
    _, info = venv.reset(seed=5)
    for i, env in enumerate(envs):
        env.reset(seed=5 + i)
    rng = np.random.default_rng(0)
    for _ in range(3):
        acts = np.array([rng.choice(np.flatnonzero(m)) for m in info["action_mask"]])
        _, rew, _, _, info = venv.step(acts)
        single = [env.step(int(a))[1] for env, a in zip(envs, acts, strict=True)]
        assert np.allclose(rew, single, rtol=1e-4, atol=1e-7)


def test_unknown_reward_is_refused():
    with pytest.raises(ValueError, match="reward must be one of"):
        HTMEnv(reward="two_step")


def test_rate_weight_adds_the_forests_mean_square_to_the_skip_path_loss():
    w = 0.5
    kw = {"dataset": "trees", "dataset_kwargs": {"height": 2}, "reward": "skip_path"}
    plain, priced = HTMEnv(noise_std=0.3, **kw), HTMEnv(noise_std=0.3, rate_weight=w, **kw)
    x = np.array([[100.0, 100.0], [150.0, 120.0], [90.0, 160.0]], np.float32)
    plain.reset(seed=3, options={"tokens": x})
    priced.reset(seed=3, options={"tokens": x})
    m = priced.model
    with torch.no_grad():
        e = m.lifter(m.normalize(torch.as_tensor(x)))  # (3, E) noise-free leaves
        node = m.merge(e[0:1] + priced.sim.state.noise[0, 0], e[1:2] + priced.sim.state.noise[0, 1])

        def rate(nodes):  # per token, summed over active nodes: the mean square of each
            return float(sum(n.pow(2).mean() for n in nodes)) / 3

        r0, r1 = rate([e[0], e[1], e[2]]), rate([node[0], e[2]])
    _, plain_r, *_ = plain.step(0 * 3 + 1)
    _, priced_r, *_ = priced.step(0 * 3 + 1)
    assert priced_r == pytest.approx(plain_r + w * (r0 - r1), rel=1e-4, abs=1e-7)


def test_rate_weight_needs_the_skip_path_reward_and_a_finite_weight():
    with pytest.raises(ValueError, match="pass reward='skip_path'"):
        HTMEnv(rate_weight=0.1)
    with pytest.raises(ValueError, match="rate_weight must be finite"):
        HTMEnv(reward="skip_path", rate_weight=-1.0)
