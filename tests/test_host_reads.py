"""The update reads the device a fixed few times, whatever the episodes' length (issue 18).

Every read of a device tensor's values on the host (``.item()``, ``bool()``, ``.tolist()``,
an op whose output shape depends on the data, such as ``nonzero`` or boolean indexing)
waits for the device to finish its queue; on a GPU that stalls the kernel launches. The
counter below sees those reads on any device, so the CPU suite guards what a GPU would pay.
"""

from __future__ import annotations

import traceback
from collections import Counter

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from agents.base import EpisodeBatch
from agents.collector import EpisodeCollector
from agents.reinforce import ReinforceConfig, ReinforceLearner
from agents.schedules import Schedule, Stage
from htm_gym import core
from htm_gym.envs.vector_env import HTMVectorEnv

# aten ops that read values to the host or whose output shape depends on the values
READS = {"_local_scalar_dense", "nonzero", "_unique2", "unique_dim", "unique_consecutive",
         "masked_select", "bincount"}  # fmt: skip
# read inside the kernel, invisible to a dispatch mode: counted by their inputs instead
MASK_INDEXING = {"index", "index_put", "index_put_", "_index_put_impl_"}
METHOD_READS = {torch.Tensor.tolist, torch.Tensor.numpy}


def _has_mask(indices) -> bool:
    return any(i is not None and i.dtype in (torch.bool, torch.uint8) for i in indices)


class HostReads(TorchDispatchMode):
    """Counts host reads of tensor values by the project's source line. Reads made inside
    ``torch.optim`` are left out: Adam keeps its step counts on the CPU (never on the
    device), so its reads wait for nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: Counter[str] = Counter()
        self.methods = _MethodReads(self)

    def __enter__(self):
        self.methods.__enter__()
        return super().__enter__()

    def __exit__(self, *exc):
        super().__exit__(*exc)
        self.methods.__exit__(*exc)

    def note(self, what: str) -> None:
        frames = traceback.extract_stack()
        if any("torch/optim/" in f.filename.replace("\\", "/") for f in frames):
            return
        ours = [f for f in frames if "site-packages" not in f.filename]
        ours = [f for f in ours if "test_" not in f.filename] or [None]
        last = ours[-1]
        where = "/".join(last.filename.split("/")[-2:]) + f":{last.lineno}" if last else "?"
        self.lines[f"{where} {what}"] += 1

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func._schema.name.split("::")[-1]
        if name in READS:
            self.note(name)
        elif name in MASK_INDEXING and _has_mask(args[1]):
            self.note(f"{name} by a mask")  # the kernel finds the mask's true entries first
        elif name == "repeat_interleave" and (kwargs or {}).get("output_size") is None:
            self.note(name)  # sizes its output from the repeats' sum
        return func(*args, **(kwargs or {}))

    @property
    def total(self) -> int:
        return sum(self.lines.values())


class _MethodReads(TorchFunctionMode):
    """``tolist`` and ``numpy`` read without dispatching an aten op."""

    def __init__(self, owner: HostReads) -> None:
        super().__init__()
        self.owner = owner

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in METHOD_READS:
            self.owner.note(func.__name__)
        return func(*args, **(kwargs or {}))


def _learner_and_rounds(merges: tuple[int | None, ...], n: int = 64):
    """A crosses learner and one collected round per merge limit (None: to the root)."""
    venv = HTMVectorEnv(n, array_type="torch", hidden_dim=32)
    schedule = Schedule((Stage(merges=None, steps=100),))
    learner = ReinforceLearner(venv.model, schedule, ReinforceConfig())
    collector = EpisodeCollector(venv)
    rounds = []
    for i, m in enumerate(merges):
        venv.set_max_merges(m)
        rounds.append(collector.collect_round(learner, seed=i))
    return learner, rounds


def test_an_update_reads_the_device_a_fixed_few_times_whatever_the_episode_length():
    learner, (short, full) = _learner_and_rounds((1, None))
    learner.update(full)  # the first update sizes the running baseline
    counts = []
    for episodes in (short, full):
        with HostReads() as reads:
            learner.update(episodes)
        groups = len(episodes.split_by_tokens())
        # the split by P; per P the episodes' extreme lengths and the classifier's nodes; is
        # any merge valid, is the loss finite, are the gradients finite, the baseline's
        # counts per depth, all metrics at once
        assert reads.total == 1 + 2 * groups + 5, reads.lines
        counts.append(reads.total)
    assert counts[0] == counts[1]  # five merges cost no more reads than one


def test_the_replays_compaction_width_is_known_without_reading_the_device():
    """The update cuts its pair tables to P - min(t, shortest episode) slots before merge t
    (it passes that width instead of reading it from the device): check it on the states."""
    learner, rounds = _learner_and_rounds((1, 2, None), n=48)
    groups = EpisodeBatch.cat(rounds).split_by_tokens()
    assert any(len(g.lengths.unique()) > 1 for g in groups)  # mixed lengths within a P
    with torch.no_grad():
        for g in groups:
            p, shortest = g.tokens.shape[1], int(g.lengths.min())
            rep = core.replay(learner.model, g.tokens, g.num_tokens, g.noise, g.pairs, g.lengths)
            for t, before in enumerate(rep.before):
                assert int(before.active.sum(1).max()) == p - min(t, shortest)


def test_the_counter_sees_each_kind_of_read():
    x, mask = torch.arange(6.0), torch.tensor([True, False] * 3)
    idx = torch.tensor([0, 2])
    reads = HostReads()
    with reads:
        x[idx], x.sum() * 2, torch.argsort(x)  # none of these reads
    assert reads.total == 0, reads.lines
    with reads:
        float(x.sum())
        x.tolist()
        x[mask]
        x[mask] = 0.0
        mask.nonzero()
        torch.unique(x)
        x.repeat_interleave(idx.new_tensor([1, 2, 0, 1, 1, 1]))
    assert reads.total == 7, reads.lines
