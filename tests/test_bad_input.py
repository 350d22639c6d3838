"""Every bad input named by issue 17, refused with an error that names it (table-driven),
and the env's invariants under random token sets and action sequences (property-based)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import ROOT, load_script
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from htm_gym import HTMEnv, HTMVectorEnv, core

SMALL = dict(hidden_dim=16, embed_dim=8)


def _reset_then(env, **options):
    env.reset(seed=0, options=options)


def _vector_step_before_reset():
    HTMVectorEnv(2, **SMALL).step(np.zeros(2, dtype=np.int64))


def _bool_torch_actions():
    venv = HTMVectorEnv(2, array_type="torch", **SMALL)
    venv.reset(seed=0)
    venv.step(torch.tensor([True, False]))


def _vector_tokens(tokens, num_tokens):
    HTMVectorEnv(3, **SMALL).reset(options={"tokens": tokens, "num_tokens": num_tokens})


def _with(value, row=1, slot=1):
    tokens = np.ones((3, 6, 4))
    tokens[row, slot] = value
    return tokens


CASES = [
    # a padded batch is checked at once; the first bad set gets the single set's message
    ("NaN in a set", lambda: _vector_tokens(_with(np.nan), [4, 4, 2]), ValueError, "finite"),
    ("huge in a set", lambda: _vector_tokens(_with(1e20), [4, 4, 2]), ValueError, "within"),
    ("one-token set", lambda: _vector_tokens(np.ones((3, 6, 4)), [4, 1, 2]), ValueError, "P=1"),
    ("text tokens", lambda: _vector_tokens(np.full((3, 6, 4), "a"), [2, 2, 2]), ValueError, "real"),
    (
        "narrow tokens",
        lambda: _vector_tokens(np.ones((3, 6, 3)), [2, 2, 2]),
        ValueError,
        "4 values",
    ),
    ("max_merges=True", lambda: HTMEnv(max_merges=True), ValueError, "max_merges"),
    ("step_limit=True", lambda: HTMEnv(step_limit=True), ValueError, "step_limit"),
    (
        "float num_tokens",
        lambda: HTMVectorEnv(2, **SMALL).reset(
            options={"tokens": np.ones((2, 6, 4)), "num_tokens": np.array([4.5, 2.0])}
        ),
        ValueError,
        "whole numbers",
    ),
    (
        "bool tokens",
        lambda: _reset_then(HTMEnv(**SMALL), tokens=np.ones((3, 4), bool)),
        ValueError,
        "real numbers",
    ),
    (
        "complex tokens",
        lambda: _reset_then(HTMEnv(**SMALL), tokens=np.ones((3, 4), complex)),
        ValueError,
        "real numbers",
    ),
    (
        "huge tokens",
        lambda: _reset_then(HTMEnv(**SMALL), tokens=np.full((2, 4), 1e20)),
        ValueError,
        "within",
    ),
    ("action_masks before reset", lambda: HTMEnv(**SMALL).action_masks(), RuntimeError, "reset"),
    (
        "vector action_masks before reset",
        lambda: HTMVectorEnv(2, **SMALL).action_masks(),
        RuntimeError,
        "reset",
    ),
    ("vector step before reset", _vector_step_before_reset, RuntimeError, "reset"),
    ("torch bool actions", _bool_torch_actions, ValueError, "bool"),
    ("device='gpu'", lambda: HTMEnv(device="gpu"), ValueError, "not a torch device"),
    ("misspelt argument", lambda: HTMEnv(max_merge=1), TypeError, "unknown argument"),
]


@pytest.mark.parametrize(("name", "call", "error", "match"), CASES, ids=[c[0] for c in CASES])
def test_bad_env_input_is_named(name, call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_padding_past_a_sets_count_may_hold_anything():
    _vector_tokens(_with(np.nan, slot=5), [4, 4, 2])
    _vector_tokens(_with(1e30, row=2, slot=2), [4, 4, 2])


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_cuda_on_a_cpu_machine_is_named():
    with pytest.raises(ValueError, match="no CUDA device"):
        HTMEnv(device="cuda")


def test_large_but_representable_tokens_give_finite_rewards():
    env = HTMEnv(**SMALL)
    env.reset(seed=0, options={"tokens": np.full((2, 4), 1e7)})
    _, reward, *_ = env.step(1)
    assert np.isfinite(reward)


evaluate = load_script("evaluate")
generate = load_script("generate")


@pytest.mark.parametrize(
    ("script", "kwargs", "match"),
    [
        ("evaluate", {"output": "/no/such/dir/x.json"}, "does not exist"),
        ("evaluate", {"num_instances": 0}, "--num-instances 0"),
        ("generate", {"threshold": 2.0}, "--threshold 2.0"),
        ("generate", {"max_steps": 0}, "--max-steps 0"),
        ("generate", {"output_dir": "/no/such/dir/out"}, "does not exist"),
    ],
)
def test_script_ranges_are_checked_before_the_checkpoint_is_read(tmp_path, script, kwargs, match):
    module = {"evaluate": evaluate, "generate": generate}[script]
    with pytest.raises(SystemExit, match=match):
        module.main(module.Args(checkpoint=str(tmp_path / "missing"), **kwargs))


def test_sb3_refuses_a_missing_checkpoint_without_a_run_folder(tmp_path):
    sb3 = load_script("sb3")
    with pytest.raises((SystemExit, FileNotFoundError)):
        sb3.main(
            sb3.Args(
                model_checkpoint=str(tmp_path / "nope"), runs_dir=str(tmp_path / "runs"),
                total_timesteps=8, num_envs=2,
            )
        )  # fmt: skip
    assert not (tmp_path / "runs").exists()


def test_scripts_print_one_line_errors():
    cmd = [sys.executable, str(ROOT / "train" / "evaluate.py"), "--checkpoint", "/no/such/run"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert out.stderr.strip().startswith("error: checkpoint not found")
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1


# --- properties ----------------------------------------------------------------------------
token_sets = st.integers(2, 6).flatmap(
    lambda p: st.lists(
        st.lists(st.floats(-100, 100, allow_nan=False, width=32), min_size=4, max_size=4),
        min_size=p,
        max_size=p,
    )
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tokens=token_sets, actions=st.lists(st.integers(0, 35), min_size=1, max_size=30))
def test_env_invariants_under_random_actions(tokens, actions):
    env = HTMEnv(**SMALL, noise_std=0.0, step_limit=40)
    tokens = np.array(tokens, np.float32)
    p = len(tokens)
    obs, info = env.reset(seed=0, options={"tokens": tokens})
    rewards, legal_merges = [], 0
    for a in actions:
        legal = bool(info["action_mask"][a])
        before = int(obs["active"].sum())
        obs, reward, terminated, truncated, info = env.step(a)
        assert np.isfinite(reward)
        assert info["illegal_action"] == (not legal)
        assert int(obs["active"].sum()) == before - legal
        if legal:
            legal_merges += 1
            rewards.append(reward)
        mask = info["action_mask"].reshape(6, 6).astype(bool)
        active = obs["active"].astype(bool)
        assert (mask == (active[:, None] & active[None, :] & ~np.eye(6, dtype=bool))).all()
        assert terminated == (legal_merges == p - 1)
        if terminated or truncated:
            break
    state = env.sim.state  # the recorded slot pairs replay to the same rewards
    with torch.no_grad():
        rep = core.replay(
            env.model, state.tokens, state.num_tokens, state.noise, state.actions, state.merges
        )
    np.testing.assert_allclose(
        -rep.step_losses[0, :legal_merges].cpu().numpy(), rewards, rtol=1e-4, atol=1e-6
    )
