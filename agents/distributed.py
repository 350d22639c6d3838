"""Data-parallel training over torch.distributed: N ranks that are one run, not N runs.

Each rank plays its share of the episodes; the learner then makes every quantity that the
update normalises by global (loss means over a varying number of items, the entropy that the
entropy target compares, the running reward baseline and its pushes, the decision to skip)
and averages the gradients with one flattened all-reduce, so that every rank takes the same
optimiser step as one process playing the union of their rows. Launch with ``torchrun``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn


@dataclass(frozen=True)
class Ranks:
    """This process's place in the run. ``grouped``: a process group joins the ranks (set by
    torchrun, even with one rank, so that a one-rank launch runs the collectives too)."""

    rank: int = 0
    world: int = 1
    grouped: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1 or self.grouped

    # --- collectives (each a no-op for a single process) ----------------------------------
    def sum(self, x: Tensor) -> Tensor:
        if not self.distributed:
            return x
        x = x.detach().clone()
        dist.all_reduce(x)
        return x

    def gather_rows(self, x: Tensor) -> Tensor:
        """Every rank's ``x`` (n, ...) stacked in rank order: (world * n, ...)."""
        if not self.distributed:
            return x
        parts = [torch.empty_like(x) for _ in range(self.world)]
        dist.all_gather(parts, x.detach().contiguous())
        return torch.cat(parts)

    def all_agree(self, flag: bool, device: torch.device) -> bool:
        """True only if ``flag`` holds on every rank."""
        if not self.distributed:
            return flag
        t = torch.tensor([0.0 if flag else 1.0], device=device)
        dist.all_reduce(t)
        return bool(t.item() == 0)

    def global_mean(self, local_mean: Tensor, local_count: Tensor | int) -> Tensor:
        """A mean over items spread over the ranks in unequal numbers. The value is the
        global mean; the gradient, once averaged over the ranks, is the global mean's."""
        if not self.distributed:
            return local_mean
        count = torch.as_tensor(local_count, dtype=local_mean.dtype, device=local_mean.device)
        total, summed = self.sum(torch.stack([count, local_mean.detach() * count]))  # one call
        surrogate = local_mean * count * self.world / total.clamp(min=1)
        value = summed / total.clamp(min=1)
        return surrogate + (value - surrogate).detach()

    def average_gradients(self, params: list[nn.Parameter]) -> None:
        """One flattened all-reduce of every gradient (zeros where a rank has none: which
        parameters get gradients depends on the merges each rank's episodes made)."""
        if not self.distributed:
            return
        flat = torch.cat(
            [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params]
        )
        dist.all_reduce(flat)
        flat /= self.world
        offset = 0
        for p in params:
            n = p.numel()
            p.grad = flat[offset : offset + n].view_as(p).clone()
            offset += n


def ranks_from_env(device_type: str) -> Ranks:
    """Join the process group torchrun describes (``WORLD_SIZE``, ``RANK``, ``MASTER_*``):
    NCCL on CUDA, gloo on the CPU, also for ``--nproc_per_node 1``; a plain ``python`` run
    is one rank without a group."""
    launched = "RANK" in os.environ and "MASTER_ADDR" in os.environ
    if int(os.environ.get("WORLD_SIZE", "1")) == 1 and not launched:
        return Ranks()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    return Ranks(dist.get_rank(), dist.get_world_size(), grouped=True)
