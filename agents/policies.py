"""Pair scoring for the three merge policies: learned (policy MLP), heuristic (minus the
one-step loss of every pair, report 3.2.3) and random (all pairs equal)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from agents.losses import masked_log_probs
from agents.scoring import IncrementalPairLogits
from htm_gym import core
from htm_gym.nets import HTMModel

POLICIES = ("learned", "heuristic", "random")


def pair_logits(kind: str, model: HTMModel, nodes: Tensor) -> Tensor:
    """Logits of every ordered slot pair: nodes (B, S, E) -> (B, S*S), a = i*S + j."""
    b, s, _e = nodes.shape
    if kind == "learned":
        return model.policy.all_pairs(nodes).reshape(b, s * s)
    if kind == "heuristic":
        return -all_pair_step_losses(model, nodes).reshape(b, s * s)
    if kind == "random":
        return nodes.new_zeros(b, s * s)
    raise ValueError(f"policy must be one of {POLICIES}, got {kind!r}")


def all_pair_step_losses(model: HTMModel, nodes: Tensor) -> Tensor:
    """One-step loss of merging each ordered pair (noise-free): (B, S, S)."""
    b, s, e = nodes.shape
    pairs = torch.cat(
        [nodes[:, :, None].expand(b, s, s, e), nodes[:, None].expand(b, s, s, e)], dim=-1
    )  # (B, S, S, 2E)
    recon = model.unmerger(model.merge_pair(pairs))
    return (recon - pairs).pow(2).mean(-1)


def sample(log_probs: Tensor, generator: torch.Generator | None, greedy: bool) -> Tensor:
    """One action per row from log-probabilities (B, A), drawn on the generator's device (a
    CPU generator, as the scripts seed, gives the same draws for a model on any device)."""
    if greedy:
        return log_probs.argmax(-1)
    if generator is None or generator.device == log_probs.device:
        return torch.multinomial(log_probs.exp(), 1, generator=generator).squeeze(-1)
    probs = log_probs.exp().to(generator.device)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1).to(log_probs.device)


class Actor:
    """A merge policy that acts (no learning): ``act(obs, mask)`` for the collectors.

    ``temperature`` may be a callable, so a learner's actor follows its tuned temperature;
    ``scorer(nodes, active) -> (B, S*S)`` replaces the built-in pair logits of ``kind``.
    """

    def __init__(
        self,
        model: HTMModel,
        kind: str = "learned",
        temperature=1.0,
        greedy: bool = False,
        generator: torch.Generator | None = None,
        scorer: Callable[[Tensor, Tensor], Tensor] | None = None,
    ) -> None:
        if kind not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}, got {kind!r}")
        self.model, self.kind, self.greedy = model, kind, greedy
        self.temperature = temperature
        self.generator = generator
        self.scorer = scorer

    @torch.no_grad()
    def act(
        self, obs: dict[str, Tensor], action_mask: Tensor, greedy: bool | None = None
    ) -> Tensor:
        temp = self.temperature() if callable(self.temperature) else self.temperature
        if self.scorer is not None:
            logits = self.scorer(obs["nodes"], obs["active"].bool())
        else:
            logits = pair_logits(self.kind, self.model, obs["nodes"])
        logp = masked_log_probs(logits, action_mask.bool(), temp)
        return sample(logp, self.generator, self.greedy if greedy is None else greedy)


class HeuristicActor(Actor):
    """The report's heuristic policy (section 3.2.3): merge probabilities from minus the
    one-step loss of each pair under ``model``, at ``temperature`` (0 < T; greedy=True for
    argmax). It learns nothing itself; ``train/reinforce.py --policy heuristic`` tunes T."""

    def __init__(
        self, model: HTMModel, temperature: float = 1.0, greedy: bool = False, seed: int = 0
    ) -> None:
        device = next(model.parameters()).device
        gen = torch.Generator(device=device).manual_seed(seed)
        super().__init__(model, "heuristic", temperature, greedy, gen)


class IncrementalActor:
    """The learned policy with incremental pair scoring (:mod:`agents.scoring`): after a
    merge only the merged slot's row and column of logits are rescored. Same actions as
    ``Actor(model, "learned")`` (tested), at O(S) pair scores per step instead of O(S^2).

    It tracks its own last action; rows whose active set is not the expected one (a new
    episode, an illegal no-op) or whose untouched nodes changed (a new episode that happens
    to start with the active set the last one ended with) are rescored in full. Call
    :meth:`forget` when the policy's weights change.
    """

    def __init__(
        self, model: HTMModel, greedy: bool = True, generator: torch.Generator | None = None
    ) -> None:
        self.model, self.greedy, self.generator = model, greedy, generator
        self.cache = IncrementalPairLogits(model.policy)
        self.forget()

    def forget(self) -> None:
        """Drop the cached logits: the next call rescores every row."""
        self.expected: Tensor | None = None  # (B, S) active set after our last action
        self.left: Tensor | None = None  # (B,) slot our last merge wrote
        self.seen: Tensor | None = None  # (B, S, E) nodes our last action was chosen on
        self.right: Tensor | None = None  # (B,) slot our last merge emptied

    @torch.no_grad()
    def act(
        self, obs: dict[str, Tensor], action_mask: Tensor, greedy: bool | None = None
    ) -> Tensor:
        nodes, active = obs["nodes"], obs["active"].bool()
        b, s, _ = nodes.shape
        if self.expected is None or self.expected.shape != active.shape:
            self.cache.reset(nodes)
        else:
            stale = (active != self.expected).any(1) | self._moved(nodes)
            self.cache.reset(nodes, stale.nonzero().squeeze(1))
            self.cache.update(nodes, self.left, (~stale).nonzero().squeeze(1), active)
        logits = self.cache.table.reshape(b, s * s)
        if self.greedy if greedy is None else greedy:  # argmax needs no normalisation
            a = logits.masked_fill(~action_mask.bool(), -torch.inf).argmax(1)
        else:
            a = sample(masked_log_probs(logits, action_mask.bool()), self.generator, False)
        self.left, self.right = core.slot_pairs(a, s).unbind(-1)
        self.expected = active & ~core.one_hot(self.right, s)
        self.seen = nodes.clone()
        return a

    def _moved(self, nodes: Tensor) -> Tensor:  # (B,) rows whose untouched nodes changed
        changed = (nodes != self.seen).any(-1)  # (B, S)
        rows = torch.arange(len(nodes), device=nodes.device)
        changed[rows, self.left] = False  # the merge wrote one slot and emptied another
        changed[rows, self.right] = False
        return changed.any(1)
