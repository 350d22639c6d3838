"""SB3 agents, the SB3 VecEnv adapter over the native vector env, and train/sb3.py."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import load_script
from sb3_contrib import MaskablePPO
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnvWrapper

import htm_gym
from agents.sb3 import make_algo, make_vec_env
from agents.sb3_vec_env import HTMSB3VecEnv
from htm_gym.envs.env import HTMEnv
from htm_gym.envs.vector_env import HTMVectorEnv

sb3_script = load_script("sb3")


def _native(n=6, **kw):
    return HTMSB3VecEnv(HTMVectorEnv(n, autoreset_mode="disabled", array_type="numpy", **kw))


def _legal_random(masks, rng):
    return np.array([rng.choice(np.flatnonzero(m)) for m in masks])


def test_adapter_follows_the_sb3_vecenv_api():
    venv = _native(6)
    venv.seed(3)
    obs = venv.reset()
    assert isinstance(obs, dict) and set(obs) == {"nodes", "active"}
    assert obs["nodes"].shape == (6, *venv.observation_space["nodes"].shape)
    rng = np.random.default_rng(0)
    saw_done = False
    for _ in range(12):
        masks = np.stack(venv.env_method("action_masks"))
        assert masks.shape == (6, venv.action_space.n) and masks.dtype == bool
        obs, rew, done, infos = venv.step(_legal_random(masks, rng))
        assert isinstance(rew, np.ndarray) and rew.dtype == np.float32 and rew.shape == (6,)
        assert done.dtype == bool and len(infos) == 6
        for i in np.flatnonzero(done):
            saw_done = True
            term = infos[i]["terminal_observation"]
            assert term["active"].sum() == 1, "the final observation is the root"
            assert obs["active"][i].sum() >= 2, "the returned observation is the reset one"
            assert infos[i]["TimeLimit.truncated"] is False
    assert saw_done
    assert venv.has_attr("action_masks")
    with pytest.raises(ValueError, match="disabled"):
        HTMSB3VecEnv(HTMVectorEnv(2))


def test_adapter_equals_dummy_vec_env():
    native = _native(5)
    dummy = DummyVecEnv([lambda: HTMEnv() for _ in range(5)])
    native.seed(11)
    dummy.seed(11)
    a, b = native.reset(), dummy.reset()
    np.testing.assert_allclose(a["nodes"], b["nodes"], atol=1e-5)
    rng = np.random.default_rng(1)
    for _ in range(15):
        masks = np.stack(native.env_method("action_masks"))
        np.testing.assert_array_equal(masks, np.stack(dummy.env_method("action_masks")))
        act = _legal_random(masks, rng)
        (oa, ra, da, ia), (ob, rb, db, ib) = native.step(act), dummy.step(act)
        np.testing.assert_array_equal(da, db)
        np.testing.assert_allclose(ra, rb, rtol=1e-5, atol=1e-5)  # float32, batch of N vs 1
        np.testing.assert_allclose(oa["nodes"], ob["nodes"], atol=1e-5)
        np.testing.assert_array_equal(oa["active"], ob["active"])
        for i in np.flatnonzero(da):
            np.testing.assert_allclose(
                ia[i]["terminal_observation"]["nodes"],
                ib[i]["terminal_observation"]["nodes"],
                atol=1e-5,
            )


class MaskChecker(VecEnvWrapper):
    """Records whether any action sent to the env was illegal under its current mask."""

    def __init__(self, venv):
        super().__init__(venv)
        self.illegal = 0
        self.steps = 0

    def reset(self):
        return self.venv.reset()

    def step_async(self, actions):
        masks = np.stack(self.venv.env_method("action_masks"))
        self.illegal += int((~masks[np.arange(len(actions)), actions]).sum())
        self.steps += len(actions)
        self.venv.step_async(actions)

    def step_wait(self):
        return self.venv.step_wait()


def test_maskable_ppo_never_takes_a_masked_action():
    venv = MaskChecker(make_vec_env("HTM-Crosses-v0", 16, seed=0, hidden_dim=16))
    model = MaskablePPO("MultiInputPolicy", venv, n_steps=16, batch_size=64, seed=0)
    model.learn(512)
    assert venv.steps >= 512 and venv.illegal == 0


@pytest.mark.parametrize("env_id", sorted(htm_gym.ENV_IDS))
@pytest.mark.parametrize("algo", ["ppo", "a2c", "dqn", "maskable_ppo"])
def test_every_algo_trains_on_every_env(tmp_path, env_id, algo, tokens_file):
    tokens = str(tokens_file) if env_id == "HTM-Tokens-v0" else None
    res = sb3_script.main(
        sb3_script.Args(
            algo=algo,
            env_id=env_id,
            tokens=tokens,
            total_timesteps=300,
            num_envs=16,
            eval_instances=16,
            runs_dir=str(tmp_path),
            run_name="r",
        )
    )
    assert res["env_steps"] >= 300
    assert 0 <= res["recovered"] <= 1 and np.isfinite(res["mean_return"])
    assert (tmp_path / "r" / "model.zip").is_file()
    assert any((tmp_path / "r").glob("events.out.tfevents.*"))


def test_dummy_route_and_errors(tmp_path):
    venv = make_vec_env("HTM-Trees-v0", 4, seed=0, vec="dummy")
    make_algo("ppo", venv, seed=0, n_steps=8, batch_size=32).learn(64)
    with pytest.raises(ValueError, match="algo"):
        make_algo("sac", venv, seed=0)
    with pytest.raises(SystemExit, match="unknown env id"):
        sb3_script.main(sb3_script.Args(env_id="Nope-v0", runs_dir=str(tmp_path)))


def test_compare_smoke(tmp_path, reference_dir):
    from htm_gym.datasets import load_token_file

    compare = load_script("compare")
    ref = load_token_file(str(reference_dir / "crosses_test_20000.npz"))
    small = tmp_path / "crosses_small.npz"
    np.savez(small, tokens=ref.tokens[:64], num_tokens=ref.num_tokens[:64])
    rows = compare.main(
        compare.Args(
            seeds=(1, 2),
            learners=("random", "maskable_ppo"),
            env_ids=("HTM-Crosses-v0",),
            budget=0.002,
            sb3_timesteps=256,
            num_envs=16,
            jobs=1,
            crosses_tokens=str(small),
            runs_dir=str(tmp_path / "cmp"),
            run_name="t",
        )
    )
    assert {(r["learner"], r["seed"]) for r in rows} == {
        ("random", 1),
        ("random", 2),
        ("maskable_ppo", 1),
        ("maskable_ppo", 2),
    }
    md = (tmp_path / "cmp" / "t" / "table.md").read_text()
    assert "| maskable_ppo |" in md and "| random |" in md
    with pytest.raises(SystemExit, match="unknown learner"):
        compare.main(compare.Args(learners=("sac",), runs_dir=str(tmp_path)))


def test_bench_sb3_smoke():
    bench = load_script("bench_sb3")
    out = bench.main(bench.Args(algos=("maskable_ppo",), num_envs=8, total_timesteps=256))
    assert out["maskable_ppo"]["native"] > 0 and out["maskable_ppo"]["dummy"] > 0
