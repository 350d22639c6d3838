"""Data-parallel training (gloo on the CPU): N ranks are one run."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from conftest import ROOT

from agents.collector import EpisodeCollector
from agents.distributed import Ranks
from agents.random_learner import RandomLearner
from agents.reinforce import ReinforceConfig, ReinforceLearner
from agents.schedules import Schedule, Stage
from htm_gym import HTMVectorEnv
from htm_gym.nets import HTMConfig, make_model

ROWS, UPDATES = 8, 3


def _setup(policy: str, share: float = ReinforceConfig.classifier_share):
    model = make_model(HTMConfig(token_dim=4, embed_dim=8, hidden_dim=16, token_scale=8.0), 0)
    venv = HTMVectorEnv(ROWS, model=model, array_type="torch")
    episodes = EpisodeCollector(venv).collect_round(RandomLearner(seed=1), seed=2)
    sched = Schedule((Stage(merges=None, steps=10),), explore_end=0.0, working_start=0.0)
    return model, sched, episodes, ReinforceConfig(policy=policy, classifier_share=share)


def _train(model, sched, episodes, config, ranks: Ranks) -> dict[str, list[torch.Tensor]]:
    learner = ReinforceLearner(model, sched, config, seed=0, ranks=ranks)
    n = len(episodes) // ranks.world
    mine = episodes.select(torch.arange(ranks.rank * n, (ranks.rank + 1) * n))
    out = {}
    for k in range(UPDATES):
        learner.update(mine)
        if k == 0:  # the first update's averaged, clipped gradients
            params = [p for group in learner._groups() for p in group]
            out["grads"] = [torch.zeros_like(p) if p.grad is None else p.grad for p in params]
    out["params"] = [p.detach().clone() for p in model.parameters()]
    out["baseline"] = [learner.baseline.values.clone(), learner.baseline.count.clone()]
    # on the CPU: spawned ranks run there whatever the suite's --device
    return {k: [t.cpu() for t in ts] for k, ts in out.items()}


def _worker(rank: int, world: int, init: str, policy: str, share: float, out: str) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    torch.set_num_threads(1)
    result = _train(*_setup(policy, share), Ranks(rank, world))
    if rank == 0:
        torch.save(result, out)
    dist.destroy_process_group()


# share 0.1 of 8 rows: the classifier trains on row 0 alone, so rank 1 holds none of its rows
@pytest.mark.parametrize(
    ("policy", "share"), [("learned", 0.25), ("heuristic", 0.25), ("learned", 0.1)]
)
def test_two_ranks_are_one_process_playing_their_rows(tmp_path, policy, share):
    out = tmp_path / "result.pt"
    init = f"file://{tmp_path / 'rendezvous'}"
    mp.spawn(_worker, args=(2, init, policy, share, str(out)), nprocs=2, join=True)
    torch.set_num_threads(1)
    single, ranked = _train(*_setup(policy, share), Ranks()), torch.load(out)
    # Gradients are where a wrong normalisation would show (Adam's steps hide scale).
    # Tolerance relative to each tensor's scale: unclipped gradients ("report") are larger,
    # and so is the rounding of a different reduction order.
    for a, b in zip(ranked["grads"], single["grads"], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7 + 1e-4 * float(b.abs().max()))
    # The running baseline saw the same rewards in the same order.
    for a, b in zip(ranked["baseline"], single["baseline"], strict=True):
        torch.testing.assert_close(a, b)
    # Parameters after a few Adam steps: directions whose true gradient is 0 (the softmax
    # ignores a constant added to every pair's logit) carry rounding noise that Adam scales
    # up to +-lr, so they agree to a few learning rates.
    for a, b in zip(ranked["params"], single["params"], strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=2e-3)


def test_global_mean_of_a_single_process_is_the_local_mean():
    x = torch.tensor(2.5, requires_grad=True)
    assert Ranks().global_mean(x, 3) is x


def test_a_run_trained_on_two_ranks_resumes_on_one(tmp_path):
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
        "29517", str(ROOT / "train" / "reinforce.py"), "--stage-steps", "1", "1", "1", "1", "1",
        "3", "--num-envs", "8", "--hidden-dim", "16", "--policy-hidden-dim", "8",
        "--eval-every", "4", "--eval-instances", "16", "--image-every", "0", "--threads", "1",
        "--runs-dir", str(tmp_path), "--run-name", "ddp", "--no-progress", "--max-updates", "5",
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    saved = torch.load(tmp_path / "ddp" / "checkpoint.pt", weights_only=False)
    assert saved["update"] == 5 and saved["args"]["num_envs"] == 8
    reinforce = __import__("conftest").load_script("reinforce")
    run = reinforce.main(reinforce.Args(resume=str(tmp_path / "ddp"), progress=False))
    assert torch.load(run / "checkpoint.pt", weights_only=False)["update"] == 8


def test_a_one_rank_torchrun_launch_joins_a_process_group(monkeypatch):
    """torchrun --nproc_per_node 1 runs the collectives too (NCCL on a GPU), so a one-GPU
    machine checks the distributed path; a plain run has no group."""
    from agents.distributed import ranks_from_env

    assert not ranks_from_env("cpu").distributed
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1"}
    for k, v in (env | {"MASTER_PORT": str(port)}).items():
        monkeypatch.setenv(k, v)
    ranks = ranks_from_env("cpu")
    try:
        assert ranks.distributed and ranks.is_main and dist.get_backend() == "gloo"
        x = torch.tensor([1.5, -2.0], device="cpu")
        torch.testing.assert_close(ranks.sum(x), x)
    finally:
        dist.destroy_process_group()
