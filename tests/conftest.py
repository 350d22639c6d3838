from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT.parent / "shared" / "reference-data"


def pytest_addoption(parser):
    parser.addoption(
        "--device",
        default=os.environ.get("HTM_TEST_DEVICE", "cpu"),
        help="torch device the suite runs on (cpu, cuda, cuda:N); default $HTM_TEST_DEVICE or cpu",
    )


def pytest_configure(config):
    """Models, envs and tensors that name no device go to --device: the library's device
    defaults follow torch's default device, so the whole suite moves with one switch."""
    import torch

    device = torch.device(config.getoption("--device"))
    if device.type == "cuda" and not torch.cuda.is_available():
        pytest.exit(f"--device {device}: no CUDA device here (use --device cpu)", returncode=4)
    torch.set_default_device(device)


def load_script(name: str):
    """A script of ``train/`` as a module (tests call its ``main`` with typed ``Args``)."""
    spec = importlib.util.spec_from_file_location(f"script_{name}", ROOT / "train" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # tyro and dataclasses resolve types through it
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """The original work's held-out test sets (evaluation only, never training data)."""
    if not (REFERENCE / "crosses_test_20000.npz").is_file():
        pytest.skip(f"reference data not found at {REFERENCE}")
    return REFERENCE


@pytest.fixture(scope="session", autouse=True)
def sb3_logdir(tmp_path_factory):
    """SB3 makes a fresh ``$TMPDIR/SB3-<time>`` folder for every model built without a log
    folder; SB3_LOGDIR keeps those inside pytest's own temporary tree."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SB3_LOGDIR", str(tmp_path_factory.mktemp("sb3")))
        yield


@pytest.fixture(scope="session")
def tokens_file(tmp_path_factory) -> Path:
    """A small user token file: 40 sets of 3 clusters of 2-4 points (P = 6..12, zero-padded),
    with the cluster of each token position as ``groups``."""
    import numpy as np

    rng = np.random.default_rng(0)
    n, s = 40, 12
    tokens = np.zeros((n, s, 2), np.float32)
    num = rng.integers(6, s + 1, n)
    for i in range(n):
        centres = rng.uniform(0, 100, (3, 2))
        tokens[i, : num[i]] = centres[np.arange(num[i]) // 4] + rng.normal(0, 1, (num[i], 2))
    path = tmp_path_factory.mktemp("tokens") / "sets.npz"
    np.savez(path, tokens=tokens, num_tokens=num, groups=np.arange(s) // 4)
    return path


def small_model(e=3, seed=0):
    """A tiny HTM model over 2-d tokens (token scale 2), for hand computations."""
    from htm_gym.nets import HTMConfig, make_model

    cfg = HTMConfig(token_dim=2, embed_dim=e, hidden_dim=8, policy_hidden_dim=8, token_scale=2.0)
    return make_model(cfg, seed=seed)


def fixed_tree(model):
    """P = 3 tokens, merges (0, 1) -> 3 then (slot 0, slot 2) -> 4, no noise: the final
    state and the step losses."""
    import torch

    from htm_gym import core

    tokens = torch.tensor([[[1.0, 2.0], [3.0, -1.0], [0.5, 0.5]]])
    num = torch.tensor([3])
    noise = torch.zeros(1, 5, model.embed_dim)
    pairs = torch.tensor([[[0, 1], [0, 2]]])
    rep = core.replay(model, tokens, num, noise, pairs, torch.tensor([2]))
    return rep.state, rep.step_losses
