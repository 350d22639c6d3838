"""Gymnasium/SB3 conformance, determinism and the vector env's equality with SyncVectorEnv."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import htm_gym
from htm_gym import HTMEnv, HTMVectorEnv
from htm_gym.envs.vector_env import make_sync_reference

IDS = list(htm_gym.ENV_IDS)
SMALL = {"hidden_dim": 32}


@pytest.fixture
def small(tokens_file):
    """Small-model env kwargs per id; the token-file env reads the session's token file."""

    def kwargs(env_id: str) -> dict:
        if env_id == "HTM-Tokens-v0":
            return {**SMALL, "dataset_kwargs": {"path": str(tokens_file)}}
        return SMALL

    return kwargs


def _legal(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random legal action per row (0 where a row has none: it is being autoreset)."""
    mask = np.atleast_2d(mask)
    out = np.zeros(len(mask), dtype=np.int64)
    for i, m in enumerate(mask):
        legal = np.flatnonzero(m)
        if len(legal):
            out[i] = rng.choice(legal)
    return out


@pytest.mark.parametrize("env_id", IDS)
def test_gymnasium_and_sb3_checkers(env_id, small):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # unbounded Box / 2-D obs recommendations
        check_env(gym.make(env_id, **small(env_id)).unwrapped, skip_render_check=False)
        sb3_check_env(gym.make(env_id, **small(env_id)))


@pytest.mark.parametrize("env_id", IDS)
def test_episode_reaches_root(env_id, small):
    env = gym.make(env_id, **small(env_id))
    obs, info = env.reset(seed=0)
    p = info["num_tokens"]
    assert obs["active"].sum() == p
    rng = np.random.default_rng(0)
    for k in range(p - 1):
        obs, reward, term, trunc, info = env.step(_legal(info["action_mask"], rng)[0])
        assert np.isfinite(reward) and reward <= 0
        assert obs["active"].sum() == p - k - 1
        assert np.array_equal(info["action_mask"].astype(bool), env.unwrapped.action_masks())
    assert term and not trunc and info["merges"] == p - 1
    assert info["action_mask"].sum() == 0
    with pytest.raises(RuntimeError, match="reset"):
        env.unwrapped.step(0)


@pytest.mark.parametrize("env_id", IDS)
def test_seeded_determinism(env_id, small):
    def run(seed):
        env = gym.make(env_id, **small(env_id))
        obs, info = env.reset(seed=seed)
        rng = np.random.default_rng(seed)
        trace = [obs["nodes"].copy()]
        for _ in range(20):
            obs, r, term, trunc, info = env.step(_legal(info["action_mask"], rng)[0])
            trace += [obs["nodes"].copy(), r]
            if term or trunc:
                obs, info = env.reset()
                trace.append(obs["nodes"].copy())
        return trace

    a, b, c = run(1), run(1), run(2)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[0], c[0])


def _compare(venv, sync, steps, seed):
    obs_v, info_v = venv.reset(seed=seed)
    obs_s, info_s = sync.reset(seed=seed)
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        for k in obs_v:
            np.testing.assert_allclose(obs_v[k], obs_s[k], atol=1e-5)
        for k in info_s:
            np.testing.assert_array_equal(info_v[k], info_s[k], err_msg=k)
        actions = _legal(info_v["action_mask"], rng)
        obs_v, r_v, te_v, tr_v, info_v = venv.step(actions)
        obs_s, r_s, te_s, tr_s, info_s = sync.step(actions)
        # batched and single matrix products round differently: float32 relative error
        np.testing.assert_allclose(r_v, r_s, rtol=1e-6, atol=1e-5)
        np.testing.assert_array_equal(te_v, te_s)
        np.testing.assert_array_equal(tr_v, tr_s)
        assert r_v.dtype == r_s.dtype and te_v.dtype == te_s.dtype


@pytest.mark.parametrize("env_id", IDS)
def test_vector_env_equals_sync_vector_env(env_id, small):
    kwargs = {**htm_gym.ENV_IDS[env_id], **small(env_id)}
    venv = gym.make_vec(
        env_id, num_envs=5, vectorization_mode="vector_entry_point", **small(env_id)
    )
    assert isinstance(venv.unwrapped, HTMVectorEnv)
    sync = make_sync_reference(5, **kwargs)
    assert venv.observation_space == sync.observation_space
    assert venv.action_space == sync.action_space
    _compare(venv, sync, steps=25, seed=7)  # spans several autoresets


def test_vector_env_with_budget_and_disabled_autoreset():
    kwargs = {"dataset": "crosses", "max_merges": 2, **SMALL}
    venv = HTMVectorEnv(4, autoreset_mode="disabled", **kwargs)
    sync = make_sync_reference(4, autoreset_mode="disabled", **kwargs)
    rng = np.random.default_rng(0)
    obs_v, info_v = venv.reset(seed=3)
    obs_s, _ = sync.reset(seed=3)
    for _ in range(12):
        a = _legal(info_v["action_mask"], rng)
        obs_v, r_v, te_v, tr_v, info_v = venv.step(a)
        obs_s, r_s, te_s, tr_s, _ = sync.step(a)
        np.testing.assert_allclose(obs_v["nodes"], obs_s["nodes"], atol=1e-5)
        # batched and single matrix products round differently: float32 relative error
        np.testing.assert_allclose(r_v, r_s, rtol=1e-6, atol=1e-5)
        np.testing.assert_array_equal(te_v, te_s)
        np.testing.assert_array_equal(tr_v, tr_s)
        assert (info_v["merges"] <= 2).all(), "budget of 2 merges"
        assert (tr_v == (info_v["merges"] == 2) & (info_v["num_tokens"] > 3)).all()
        done = te_v | tr_v
        if done.any():
            with pytest.raises(RuntimeError, match="DISABLED"):
                venv.step(a)
            obs_v, info_v = venv.reset(options={"reset_mask": done})
            obs_s, _ = sync.reset(options={"reset_mask": done})
            np.testing.assert_allclose(obs_v["nodes"], obs_s["nodes"], atol=1e-5)


def test_truncation_by_merge_budget():
    env = HTMEnv(dataset="trees", max_merges=3, **SMALL)
    _, info = env.reset(seed=0)
    rng = np.random.default_rng(0)
    for _k in range(3):
        _, _, term, trunc, info = env.step(_legal(info["action_mask"], rng)[0])
    assert not term and trunc and info["merges"] == 3


def test_illegal_actions():
    env = HTMEnv(**SMALL, step_limit=8)
    obs, info = env.reset(seed=0, options={"tokens": np.array([[0, 0, 10, 10], [0, 10, 10, 0.0]])})
    assert info["num_tokens"] == 2
    before = obs["nodes"].copy()
    obs, r, term, trunc, info = env.step(0)  # (0, 0): i == j
    assert info["illegal_action"] and r == -1.0 and not term
    np.testing.assert_array_equal(obs["nodes"], before)
    obs, r, *_ = env.step(5 * 6 + 4)  # inactive slots
    assert r == -1.0
    for _ in range(6):
        *_, term, trunc, info = env.step(0)
    assert trunc and not term, "step_limit bounds an unmasked agent"
    strict = HTMEnv(illegal_action="raise", **SMALL)
    strict.reset(seed=0)
    with pytest.raises(ValueError, match="illegal action 0"):
        strict.step(0)


@pytest.mark.parametrize("action", [-1, 36, 2.5, np.array([1, 2]), "3"])
def test_action_outside_space_raises(action):
    env = HTMEnv(**SMALL)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="action"):
        env.step(action)


def test_vector_action_errors():
    venv = HTMVectorEnv(3, **SMALL)
    venv.reset(seed=0)
    with pytest.raises(ValueError, match="outside the action space"):
        venv.step(np.array([1, 2, 99]))
    with pytest.raises(ValueError, match="3 integers"):
        venv.step(np.array([1, 2]))
    with pytest.raises(ValueError, match="integers"):
        venv.step(np.array([1.0, 2.0, 3.0]))


@pytest.mark.parametrize(
    ("tokens", "message"),
    [
        (np.zeros((2, 2, 4)), "rank 3"),
        (np.array([[1.0, 2, 3, np.nan], [1, 2, 3, 4]]), "finite"),
        (np.zeros((1, 4)), "P=1"),
        (np.zeros((3, 2)), "4 values"),
    ],
)
def test_bad_reset_tokens(tokens, message):
    env = HTMEnv(**SMALL)
    with pytest.raises(ValueError, match=message):
        env.reset(options={"tokens": tokens})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dataset": "mnist"}, "unknown dataset"),
        ({"max_merges": 0}, "max_merges"),
        ({"illegal_action": "ignore"}, "illegal_action"),
        ({"step_limit": 2}, "step_limit"),
        ({"render_mode": "ansi"}, "render_mode"),
        ({"dataset_kwargs": {"height": 1}, "dataset": "trees"}, "height"),
        ({"embed_dim": 0}, "embed_dim"),
    ],
)
def test_bad_env_kwargs(kwargs, message):
    with pytest.raises(ValueError, match=message):
        gym.make("HTM-Crosses-v0", **kwargs)
    with pytest.raises(TypeError):
        gym.make("HTM-Crosses-v0", colour="red")


def test_reset_option_errors():
    env = HTMEnv(**SMALL)
    with pytest.raises(ValueError, match="unknown reset option"):
        env.reset(options={"token": np.zeros((2, 4))})
    venv = HTMVectorEnv(2, **SMALL)
    with pytest.raises(ValueError, match="reset_mask"):
        venv.reset(options={"reset_mask": np.array([1, 0])})
    with pytest.raises(ValueError, match="2 token sets"):
        venv.reset(options={"tokens": [np.zeros((2, 4))]})


def test_shared_model_and_checkpoint(tmp_path):
    env = HTMEnv(**SMALL)
    model = env.model
    shared = HTMVectorEnv(4, model=model)
    assert shared.model is model, "the caller's module is used, not copied"
    htm_gym.save_model(model, tmp_path / "ckpt.pt")
    loaded = HTMEnv(checkpoint=tmp_path / "ckpt.pt")
    tokens = np.array([[0, 0, 10, 10], [0, 10, 10, 0], [5, 5, 6, 6.0]])
    o1, _ = env.reset(seed=3, options={"tokens": tokens})
    o2, _ = loaded.reset(seed=3, options={"tokens": tokens})
    np.testing.assert_array_equal(o1["nodes"], o2["nodes"])
    with pytest.raises(ValueError, match="not a readable"):
        (tmp_path / "bad.pt").write_text("x")
        HTMEnv(checkpoint=tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="token"):
        HTMEnv(dataset="trees", model=model)


def test_vector_reset_with_token_batch_and_torch_arrays():
    venv = HTMVectorEnv(2, array_type="torch", **SMALL)
    tokens = np.full((2, 6, 4), np.nan, np.float32)
    tokens[0, :2] = [[0, 0, 1, 1], [1, 0, 0, 1]]
    tokens[1, :4] = np.arange(16).reshape(4, 4)
    obs, _ = venv.reset(seed=0, options={"tokens": tokens, "num_tokens": np.array([2, 4])})
    assert isinstance(obs["nodes"], torch.Tensor)
    assert obs["active"].sum(1).tolist() == [2, 4]
    obs, r, te, _tr, _info = venv.step(torch.tensor([1, 1]))
    assert te.tolist() == [True, False] and r.shape == (2,)


def test_render_rgb_array():
    env = gym.make("HTM-Trees-v0", render_mode="rgb_array", **SMALL)
    _, info = env.reset(seed=0)
    env.step(int(np.flatnonzero(info["action_mask"])[0]))
    frame = env.render()
    assert frame.shape == (256, 256, 3) and frame.dtype == np.uint8
    assert frame.min() < 255, "something was drawn"


def test_drawn_tokens_come_in_random_slot_order():
    """The generators emit a cross's segments side by side; the env must not pass that on
    (a policy that sees slots would learn 'merge slots 0 and 1'). Given tokens keep order."""
    venv = HTMVectorEnv(512, array_type="torch", hidden_dim=16)
    venv.reset(seed=0)
    st = venv.sim.state
    tok, num = st.tokens.cpu().numpy(), st.num_tokens.cpu().numpy()
    mid = (tok[..., :2] + tok[..., 2:]) / 2
    many = num >= 4
    same_cross = np.abs(mid[:, 0] - mid[:, 1]).max(-1) < 1e-3
    assert 0.1 < same_cross[many].mean() < 0.5  # chance is 1/3 (P = 4) or 1/5 (P = 6)
    data = venv.generator.sample(np.random.default_rng(1), 512)
    venv.reset(seed=0, options={"tokens": data.tokens, "num_tokens": data.num_tokens})
    kept = venv.sim.state.tokens.cpu().numpy()
    assert np.allclose(kept, np.nan_to_num(data.tokens), atol=1e-6)


def test_a_misspelt_argument_is_named():
    with pytest.raises(TypeError, match=r"unknown argument\(s\) \['datset'\]"):
        HTMEnv(datset="trees")
    with pytest.raises(TypeError, match="unknown argument"):
        HTMVectorEnv(2, max_merge=1)
