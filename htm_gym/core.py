"""The batched merge tree: lift, legal pairs, merge with one-step loss, teacher-forced unmerge.

Everything here is a function of batch-first tensors on any device and is differentiable, so
the environments (under ``torch.no_grad``) and the learners (replaying recorded merges with
gradients) run the very same dynamics.

Layout. Each row holds one token set of P <= S tokens. Nodes live in *slots* (S of them):
leaf p starts in slot p, padding slots start inactive. Merging the ordered slot pair (i, j)
writes the merged node into slot i and deactivates slot j. Every node also has a *tree id*,
the report's merging-tree index: leaves 0..P-1, and the node created by merge t is P + t.
``tree`` stores every node ever created by its tree id, which is what the losses, the
unmerging and the classifier need.

Updates use masks and ``torch.where`` rather than per-row indexing so that rows with
different P, rows already done and rows whose action is not applied share one kernel launch
per operation, with no host synchronisation.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch
from torch import Tensor

from htm_gym.nets import HTMModel


@dataclass(frozen=True)
class MergeState:
    tokens: Tensor  # (B, S, T) token units, zeros in padding
    num_tokens: Tensor  # (B,) long, P per row
    tree: Tensor  # (B, 2S-1, E) up-tree embeddings by tree id (noise included)
    slot_node: Tensor  # (B, S) long, tree id held by each slot
    active: Tensor  # (B, S) bool
    merges: Tensor  # (B,) long, merges done
    actions: Tensor  # (B, S-1, 2) long, slot pair (i, j) of merge t, -1 if not done
    children: Tensor  # (B, S-1, 2) long, tree ids (left, right) of merge t, -1 if not done
    noise: Tensor  # (B, 2S-1, E) noise added to each node when it is created
    sizes: Tensor  # (B, 2S-1) long, tokens under each node by tree id (0: not created)

    @property
    def num_slots(self) -> int:
        return self.slot_node.shape[1]

    def where(self, rows: Tensor, other: MergeState) -> MergeState:
        """Rows where ``rows`` (B,) bool holds from ``other``, the rest from self."""
        return MergeState(
            **{
                f.name: _where_rows(rows, getattr(other, f.name), getattr(self, f.name))
                for f in fields(self)
            }
        )

    def with_rows(self, rows: Tensor, other: MergeState) -> MergeState:
        """Copy of self with rows ``rows`` (long indices) replaced by ``other``'s rows."""
        return MergeState(
            **{
                f.name: getattr(self, f.name).index_copy(0, rows, getattr(other, f.name))
                for f in fields(self)
            }
        )


def _where_rows(rows: Tensor, a: Tensor, b: Tensor) -> Tensor:
    return torch.where(rows.view(-1, *[1] * (a.dim() - 1)), a, b)


# The action codec: env actions are flat indices a = i * S + j of ordered slot pairs (i, j).
def slot_pairs(actions: Tensor, num_slots: int) -> Tensor:  # (...) long -> (..., 2)
    return torch.stack([actions // num_slots, actions % num_slots], -1)


def flat_actions(pairs: Tensor, num_slots: int) -> Tensor:  # (..., 2) long -> (...)
    return pairs[..., 0] * num_slots + pairs[..., 1]


def one_hot(index: Tensor, n: int) -> Tensor:  # (...) long -> (..., n) bool
    """``F.one_hot(index, n).bool()`` without its range check, which costs a min/max
    reduction and a host synchronisation per call (indices outside 0..n-1 give no hit)."""
    return index[..., None] == torch.arange(n, device=index.device)


def lift(model: HTMModel, tokens: Tensor, num_tokens: Tensor, noise: Tensor) -> MergeState:
    """Embed token sets and start their merge trees.

    tokens: (B, S, T) in token units (padding rows may hold anything finite or NaN);
    num_tokens: (B,); noise: (B, 2S-1, E), already scaled.
    """
    b, s, _ = tokens.shape
    dev = tokens.device
    slots = torch.arange(s, device=dev)
    active = slots[None, :] < num_tokens[:, None]  # (B, S)
    tokens = torch.where(active[..., None], tokens, torch.zeros((), device=dev))
    leaves = model.lift(tokens) + noise[:, :s]  # (B, S, E)
    tree = torch.cat([leaves, torch.zeros_like(noise[:, s:])], dim=1)  # (B, 2S-1, E)
    tree = tree * _valid_ids(num_tokens, 2 * s - 1, leaves_only=True)[..., None]
    none = torch.full((b, s - 1, 2), -1, dtype=torch.long, device=dev)
    return MergeState(
        tokens=tokens,
        num_tokens=num_tokens,
        tree=tree,
        slot_node=slots.expand(b, s).clone(),
        active=active,
        merges=torch.zeros(b, dtype=torch.long, device=dev),
        actions=none,
        children=none.clone(),
        noise=noise,
        sizes=_valid_ids(num_tokens, 2 * s - 1, leaves_only=True).long(),
    )


def _valid_ids(num_tokens: Tensor, size: int, leaves_only: bool = False) -> Tensor:
    ids = torch.arange(size, device=num_tokens.device)[None, :]
    limit = num_tokens if leaves_only else 2 * num_tokens - 1
    return ids < limit[:, None]  # (B, size)


def legal_pairs(active: Tensor) -> Tensor:  # (B, S) bool -> (B, S, S) bool
    """Ordered pairs (i, j) of distinct active slots."""
    s = active.shape[1]
    eye = torch.eye(s, dtype=torch.bool, device=active.device)
    return active[:, :, None] & active[:, None, :] & ~eye


def active_first(active: Tensor, k: int | None = None) -> tuple[Tensor, Tensor]:
    """Compaction of slots to the active ones (pair tables then cost K^2, not S^2).

    Returns the slot ids of each row, active first in slot order, cut to K = the largest
    active count (B, K), and each slot's position among its row's active slots (B, S),
    -1 where inactive. A caller that knows K passes it: reading it here waits for the device.
    """
    k = max(int(active.sum(1).max()) if k is None else k, 1)
    order = torch.argsort((~active).to(torch.uint8), dim=1, stable=True)[:, :k]
    rank = torch.where(active, active.long().cumsum(1) - 1, -1)
    return order, rank


def nodes(state: MergeState) -> Tensor:  # -> (B, S, E), zeros in inactive slots
    """Embedding held by each slot: the observation of the merge state."""
    e = state.tree.shape[-1]
    table = state.tree.gather(1, state.slot_node[..., None].expand(-1, -1, e))
    return table * state.active[..., None]


def one_step_loss(model: HTMModel, pair: Tensor, merged: Tensor) -> Tensor:
    """Report 3.3.1: mean squared error of unmerging ``merged`` back to the stopped ``pair``.

    pair: (..., 2E) inputs of the merge; merged: (..., E) the (noisy) merged node.
    Returns (...,). Gradients reach the merger and unmerger, not the target.
    """
    return (model.unmerger(merged) - pair.detach()).pow(2).mean(-1)


def merge(
    model: HTMModel, state: MergeState, left: Tensor, right: Tensor, apply: Tensor
) -> tuple[MergeState, Tensor]:
    """Merge slot ``left`` with slot ``right`` (ordered) in every row where ``apply``.

    left, right: (B,) long slot indices; apply: (B,) bool. The caller guarantees the pair is
    legal wherever ``apply`` holds. Rows where it does not are returned unchanged.
    Returns the new state and the one-step loss (B,) (0 where not applied).
    """
    new_state, pair, merged = merge_nodes(model, state, left, right, apply)
    return new_state, one_step_loss(model, pair, merged) * apply


def merge_nodes(
    model: HTMModel, state: MergeState, left: Tensor, right: Tensor, apply: Tensor
) -> tuple[MergeState, Tensor, Tensor]:
    """:func:`merge` without its one-step loss: the new state, the merge's inputs (B, 2E)
    and the merged node (B, E), so that a replay can score every step's loss at once."""
    b, s = state.slot_node.shape
    rows = torch.arange(b, device=left.device)
    ids_l = state.slot_node[rows, left]  # (B,) tree ids of the two slots
    ids_r = state.slot_node[rows, right]
    pair = torch.cat([state.tree[rows, ids_l], state.tree[rows, ids_r]], dim=-1)  # (B, 2E)
    new_id = (state.num_tokens + state.merges).clamp(max=2 * s - 2)  # (B,)
    size = state.sizes[rows, ids_l] + state.sizes[rows, ids_r]  # (B,)
    merged = model.narrow(model.merge_pair(pair) + state.noise[rows, new_id], size)  # (B, E)

    new_oh = one_hot(new_id, 2 * s - 1) & apply[:, None]  # (B, 2S-1)
    left_oh = one_hot(left, s) & apply[:, None]  # (B, S)
    right_oh = one_hot(right, s) & apply[:, None]
    step_oh = one_hot(state.merges.clamp(max=s - 2), s - 1) & apply[:, None]
    new_state = replace(
        state,
        tree=torch.where(new_oh[..., None], merged[:, None, :], state.tree),
        sizes=torch.where(new_oh, size[:, None], state.sizes),
        slot_node=torch.where(left_oh, new_id[:, None], state.slot_node),
        active=state.active & ~right_oh,
        merges=state.merges + apply.long(),
        actions=torch.where(
            step_oh[..., None], torch.stack([left, right], -1)[:, None], state.actions
        ),
        children=torch.where(
            step_oh[..., None], torch.stack([ids_l, ids_r], -1)[:, None], state.children
        ),
    )
    return new_state, pair, merged


def unmerge(model: HTMModel, state: MergeState, teacher_mix: float = 0.0) -> Tensor:
    """Teacher-forced unmerging of the recorded merge tree (report 3.2.4).

    Starts from the nodes still active at the end of merging (the roots) and replays the
    recorded merges in reverse, each parent decoded into its two children.
    ``teacher_mix`` = tau blends the decoder's input toward the (stopped) up-tree node:
    ``(1 - tau) * down + tau * up``; 0 decodes purely from the decoder's own outputs.
    Returns the down tree (B, 2S-1, E) indexed like ``state.tree``; leaves are ids 0..P-1.
    """
    b, s = state.slot_node.shape
    dev = state.tree.device
    rows = torch.arange(b, device=dev)
    down = state.tree * root_mask(state)[..., None]
    up = state.tree.detach()
    for t in range(s - 2, -1, -1):
        apply = state.merges > t  # (B,)
        parent_id = (state.num_tokens + t).clamp(max=2 * s - 2)
        parent = down[rows, parent_id]
        if teacher_mix:
            parent = (1 - teacher_mix) * parent + teacher_mix * up[rows, parent_id]
        left, right = model.unmerge(parent)  # (B, E) each
        ids = state.children[:, t].clamp(min=0)  # (B, 2)
        if model.config.node_widths and model.config.narrow_decoder:  # as its up-tree node
            left = model.narrow(left, state.sizes[rows, ids[:, 0]])
            right = model.narrow(right, state.sizes[rows, ids[:, 1]])
        mask = one_hot(ids, 2 * s - 1) & apply[:, None, None]  # (B, 2, 2S-1)
        down = torch.where(mask[:, 0, :, None], left[:, None], down)
        down = torch.where(mask[:, 1, :, None], right[:, None], down)
    return down


def reconstruct(model: HTMModel, state: MergeState, teacher_mix: float = 0.0) -> Tensor:
    """Tokens rebuilt from the roots by teacher-forced unmerging: (B, S, T) in token units."""
    down = unmerge(model, state, teacher_mix)
    return model.unlift(down[:, : state.num_slots])


def forest_loss(model: HTMModel, state: MergeState) -> Tensor:
    """Skip-path loss: MSE of every real token decoded from the current forest of active
    nodes (each unmerged through its recorded subtree, no teacher forcing), in the model's
    normalised token units: (B,). Before any merge it is the lifter/unlifter round trip."""
    down = unmerge(model, state)
    recon = model.unlifter(down[:, : state.num_slots])  # (B, S, T) normalised units
    err = (recon - model.normalize(state.tokens)).pow(2).mean(-1)  # (B, S)
    real = token_mask(state)
    return (err * real).sum(1) / real.sum(1).clamp(min=1)


def forest_rate(state: MergeState) -> Tensor:
    """Rate of the current forest: the mean square of every active node's noise-free
    embedding, summed over the active nodes and divided by the row's token count: (B,).

    Under the fixed node noise, a node's mean square is what a Gaussian prior charges for it
    (its KL divergence up to constants), and the lifter and encoder L2 terms of the HTM loss
    already train each node to spend no more of it than its decoding needs; a merge that
    leaves the forest smaller keeps less information (the KL part of the reward of
    seed 001's skip-generative path, eq. 24)."""
    mean_sq = (state.tree - state.noise).pow(2).mean(-1)  # (B, 2S-1)
    return (mean_sq * root_mask(state)).sum(1) / state.num_tokens


def token_mask(state: MergeState) -> Tensor:  # (B, S) bool, real (non-padding) tokens
    return _valid_ids(state.num_tokens, state.num_slots, leaves_only=True)


def root_mask(state: MergeState) -> Tensor:  # (B, 2S-1) bool, nodes still active
    # Inactive padding slots can hold the same id as an active slot, so reduce with max
    # rather than assign (duplicate writes are unordered).
    zeros = torch.zeros(state.tree.shape[:2], device=state.tree.device)
    return zeros.scatter_reduce(1, state.slot_node, state.active.float(), reduce="amax") > 0


def internal_labels(state: MergeState) -> tuple[Tensor, Tensor]:
    """Nodes created so far (B, 2S-1) bool, and per node 1 if internal (merged), 0 if leaf."""
    exists = node_mask(state)
    ids = torch.arange(exists.shape[1], device=exists.device)[None, :]
    return exists, (ids >= state.num_tokens[:, None]).long()


def classifier_inputs(
    model: HTMModel, state: MergeState, down: Tensor, rows: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Classifier logits (K, 2) and leaf (0) / internal (1) labels (K,) of every down-tree
    node of the rows where ``rows`` (B,) bool holds (None: all). The classifier reads stopped
    embeddings: it must not reshape the embedding space.
    """
    exists, labels = internal_labels(state)
    if rows is not None:
        exists = exists & rows[:, None]
    nodes = exists.flatten().nonzero().squeeze(1)  # one host read for both selections
    return model.classifier(down.detach().flatten(0, 1)[nodes]), labels.flatten()[nodes]


def node_mask(state: MergeState) -> Tensor:  # (B, 2S-1) bool, tree ids created so far
    ids = torch.arange(state.tree.shape[1], device=state.tree.device)[None, :]
    return ids < (state.num_tokens + state.merges)[:, None]


@dataclass(frozen=True)
class Replay:
    """Recorded episodes re-run through the model (with gradients if enabled)."""

    state: MergeState  # after the last merge
    step_losses: Tensor  # (B, S-1) one-step losses, 0 past each episode's end
    before: list[MergeState]  # before[t]: the state merge t was chosen in


def replay(
    model: HTMModel,
    tokens: Tensor,
    num_tokens: Tensor,
    noise: Tensor,
    pairs: Tensor,
    lengths: Tensor,
    steps: int | None = None,
) -> Replay:
    """Re-run recorded episodes: lift, then merge slot pair ``pairs[:, t]`` (B, S-1, 2)
    where ``t < lengths``. With the same model and noise this reproduces the env's states
    (``MergeState.actions`` are such pairs); a learner scores the actions it took on
    ``before``. Steps past the longest episode are not run; a caller that knows how many
    that is passes ``steps`` (else it is read from ``lengths``, which waits for the device)."""
    state = lift(model, tokens, num_tokens, noise)
    b, s = state.slot_node.shape
    inputs, merged, before = [], [], []
    if steps is None:  # one host read, not one per merge
        steps = int(lengths.max()) if len(lengths) else 0
    for t in range(min(steps, s - 1)):
        apply = lengths > t
        before.append(state)
        pair = pairs[:, t].clamp(min=0)
        state, pair_in, node = merge_nodes(model, state, pair[:, 0], pair[:, 1], apply)
        inputs.append(pair_in)
        merged.append(node)
    pad = tokens.new_zeros(b, s - 1 - len(merged))
    if not merged:
        return Replay(state, pad, before)
    # Every step's one-step loss in one unmerger call: (steps * B) rows, step-major.
    loss = one_step_loss(model, torch.cat(inputs), torch.cat(merged)).view(len(merged), b).T
    loss = loss * (lengths[:, None] > torch.arange(len(merged), device=lengths.device))
    return Replay(state, torch.cat([loss, pad], 1), before)
