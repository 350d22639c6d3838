"""The merge-environment dynamics, batched: written once, used with B=1 and B=num_envs.

:class:`MergeSim` owns a :class:`~htm_gym.core.MergeState` of B rows and applies env
actions to it: decodes flat actions into slot pairs, handles illegal ones, computes rewards,
termination and truncation. Sampling of new episodes (per-row seeded NumPy streams) is
split out into :func:`draw_episode` so the single env and the vector env draw identically.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor

from htm_gym import core
from htm_gym.core import MergeState
from htm_gym.datasets import TokenGenerator, validate_tokens
from htm_gym.envs.config import (
    EnvConfig,
    EnvOptions,
    build_generator,
    build_model,
    check_options,
    check_slots,
)
from htm_gym.envs.render import render_tokens
from htm_gym.nets import HTMModel


@dataclass(frozen=True)
class EpisodeRecord:
    """The episodes of a batch of rows as they stand: everything needed to replay them
    exactly (``core.replay(model, state.tokens, state.num_tokens, state.noise, state.actions,
    state.merges)``) and the merge trees they built, with the rewards the env paid."""

    state: MergeState  # tokens, noise, slot pairs (actions), children, tree, merges
    rewards: Tensor  # (B, S-1) float, the reward of merge t; 0 after the last merge
    terminated: Tensor  # (B,) bool, merged to the root

    def where(self, rows: Tensor, other: EpisodeRecord) -> EpisodeRecord:
        """Rows where ``rows`` (B,) bool holds from ``other``, the rest from self."""
        return EpisodeRecord(
            self.state.where(rows, other.state),
            torch.where(rows[:, None], other.rewards, self.rewards),
            torch.where(rows, other.terminated, self.terminated),
        )


# (generator draw or None, given tokens (P, T), unit noise (2S-1, E), slot-order keys (S,))
Episode = tuple[np.ndarray | None, np.ndarray, np.ndarray, np.ndarray | None]


def draw_episode(
    generator: TokenGenerator,
    rng: np.random.Generator,
    embed_dim: int,
    tokens: object | None = None,
    num_slots: int | None = None,
    checked: bool = False,
) -> Episode:
    """One episode's randomness from one stream: (generator draw or None, tokens, noise,
    order keys).

    With ``tokens`` given, the generator is skipped and only the noise is drawn.
    Returns the draw (for batched building), the validated tokens (P, T) when given,
    unit Gaussian noise (2S-1, E) for every node the episode can create, and for a draw,
    random keys whose order shuffles the drawn tokens over the slots: the generators emit
    tokens in hierarchy order (a cross's two segments side by side), which a policy that
    sees slot positions would otherwise learn instead of the tokens' content.
    ``num_slots`` is the env's slot count S (default: the dataset's largest P); node i's
    noise is the same draw for any S, so a given token set plays the same episode in an
    env of more slots. ``checked``: ``tokens`` already passed :func:`validate_tokens`.
    """
    s = num_slots or generator.max_tokens
    draw = None if tokens is not None else generator.draw(rng)
    given = (
        np.zeros((0, generator.token_dim), np.float32)
        if tokens is None
        else np.asarray(tokens)
        if checked
        else validate_tokens(tokens, generator.token_dim, s)
    )
    noise = rng.standard_normal((2 * s - 1, embed_dim), dtype=np.float32)
    keys = None if draw is None else rng.random(s)
    return draw, given, noise, keys


def shuffle_slots(
    tokens: np.ndarray, num_tokens: np.ndarray, keys: list[np.ndarray | None]
) -> np.ndarray:
    """Rows with keys get their P tokens in the order of their first P keys; padding stays
    last. (n, S, T) -> a copy."""
    s = tokens.shape[1]
    k = np.stack([np.arange(s, dtype=float) if key is None else key for key in keys])
    k = np.where(np.arange(s)[None, :] < num_tokens[:, None], k, np.inf)
    order = np.argsort(k, axis=1, kind="stable")
    return np.take_along_axis(tokens, order[..., None], axis=1)


class MergeSim:
    """B merge episodes stepped together on one device.

    Actions are flat indices ``a = i * S + j`` for the ordered slot pair (i, j).
    """

    def __init__(
        self,
        model: HTMModel,
        generator: TokenGenerator,
        num_envs: int,
        options: EnvOptions,
        noise_std: float | None = None,
        num_slots: int | None = None,
    ) -> None:
        self.model = model
        self.set_noise_std(noise_std)
        self.generator = generator
        self.options = options
        self.num_envs = num_envs
        self.S = num_slots or generator.max_tokens
        self.E = model.embed_dim
        self.device = next(model.parameters()).device
        self.episode_steps = torch.zeros(num_envs, dtype=torch.long, device=self.device)
        empty = torch.zeros(num_envs, self.S, generator.token_dim, device=self.device)
        two = torch.full((num_envs,), 2, dtype=torch.long, device=self.device)
        with torch.no_grad():
            self.state = core.lift(
                model,
                empty,
                two,
                self._noise(np.zeros((num_envs, 2 * self.S - 1, self.E), np.float32)),
            )
        # Skip-path reward: each row's forest loss before its next merge.
        self.forest_loss = torch.zeros(num_envs, device=self.device)
        self.rewards = torch.zeros(num_envs, self.S - 1, device=self.device)  # paid per merge

    def _noise(self, unit: np.ndarray) -> Tensor:
        return torch.as_tensor(unit, device=self.device) * self.noise_std

    # --- spaces ------------------------------------------------------------------------
    def observation_space(self) -> spaces.Dict:
        return spaces.Dict(
            {
                "nodes": spaces.Box(-np.inf, np.inf, (self.S, self.E), np.float32),
                "active": spaces.MultiBinary(self.S),
            }
        )

    def action_space(self) -> spaces.Discrete:
        return spaces.Discrete(self.S * self.S)

    # --- dynamics ----------------------------------------------------------------------
    @torch.no_grad()
    def reset_rows(self, rows: np.ndarray, episodes: list[Episode]) -> None:
        """Start the episodes drawn by :func:`draw_episode` in ``rows`` (long indices)."""
        n = len(rows)
        zero = np.zeros(self.generator.draw_size)
        draws = np.stack([zero if e[0] is None else e[0] for e in episodes])
        tokens = self.generator.build(draws)
        tok = np.full((n, self.S, self.generator.token_dim), np.nan, np.float32)
        tok[:, : tokens.tokens.shape[1]] = tokens.tokens  # the dataset's P fills the first slots
        tok = shuffle_slots(tok, tokens.num_tokens, [e[3] for e in episodes])
        num = tokens.num_tokens.copy()
        for k, (_, given, _, _) in enumerate(episodes):
            if len(given):
                tok[k] = np.nan
                tok[k, : len(given)] = given
                num[k] = len(given)
        noise = np.stack([e[2] for e in episodes])
        t = torch.as_tensor(np.nan_to_num(tok), device=self.device)
        p = torch.as_tensor(num, device=self.device)
        fresh = core.lift(self.model, t, p, self._noise(noise))
        idx = torch.as_tensor(rows, dtype=torch.long, device=self.device)
        self.state = self.state.with_rows(idx, fresh)
        if self.options.reward == "skip_path":
            self.forest_loss[idx] = self._forest_objective(fresh)
        self.episode_steps[idx] = torch.zeros(n, dtype=torch.long, device=self.device)
        # not in place: a record handed out earlier keeps its rewards
        self.rewards = self.rewards.index_fill(0, idx, 0.0)

    def _forest_objective(self, state: core.MergeState) -> Tensor:  # (B,)
        loss = core.forest_loss(self.model, state)
        w = self.options.rate_weight
        return loss + w * core.forest_rate(state) if w else loss

    def set_noise_std(self, noise_std: float | None) -> None:
        """Std of the node noise of episodes reset from now on (None: the model's own)."""
        std = self.model.config.noise_std if noise_std is None else float(noise_std)
        if not std >= 0:
            raise ValueError(f"noise_std must be >= 0, got {noise_std!r}")
        self.noise_std = std

    def set_max_merges(self, max_merges: int | None) -> None:
        """A new merge budget, applied from the next step (see ``check_options``)."""
        self.options = check_options(self.S, **{**asdict(self.options), "max_merges": max_merges})

    def record(self, terminated: Tensor | None = None) -> EpisodeRecord:
        """The rows' episodes so far (``terminated`` (B,) bool; default: at the root)."""
        if terminated is None:
            terminated = self.state.merges >= self.state.num_tokens - 1
        return EpisodeRecord(self.state, self.rewards, terminated)

    def merge_budget(self) -> Tensor:  # (B,) merges this episode may make
        full = self.state.num_tokens - 1
        if self.options.max_merges is None:
            return full
        return full.clamp(max=self.options.max_merges)

    def legal(self, actions: Tensor) -> Tensor:  # (B,) long -> (B,) bool
        i, j = core.slot_pairs(actions, self.S).unbind(-1)
        rows = torch.arange(self.num_envs, device=self.device)
        return self.state.active[rows, i] & self.state.active[rows, j] & (i != j)

    @torch.no_grad()
    def step(
        self, actions: Tensor, apply: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Apply flat actions (B,) in rows where ``apply`` (default: all).

        Returns reward (B,) float32, terminated (B,), truncated (B,), illegal (B,) bools.
        Illegal actions leave the state unchanged and cost ``illegal_penalty``.
        """
        apply = torch.ones_like(actions, dtype=torch.bool) if apply is None else apply
        legal = self.legal(actions) & apply
        if self.options.illegal_action == "raise" and bool((apply & ~legal).any()):
            bad = int(torch.nonzero(apply & ~legal)[0, 0])
            a = int(actions[bad])
            i, j = divmod(a, self.S)
            raise ValueError(
                f"illegal action {a} = slot pair ({i}, {j}) in env {bad}: "
                "both slots must be active and distinct (see info['action_mask'])"
            )
        pairs = core.slot_pairs(actions, self.S)
        self.state, loss = core.merge(self.model, self.state, pairs[:, 0], pairs[:, 1], legal)
        illegal = apply & ~legal
        if self.options.reward == "skip_path":
            after = self._forest_objective(self.state)
            loss = torch.where(legal, after - self.forest_loss, 0.0)
            self.forest_loss = torch.where(legal, after, self.forest_loss)
        reward = torch.where(illegal, -self.options.illegal_penalty, -loss)
        step = core.one_hot((self.state.merges - 1).clamp(0, self.S - 2), self.S - 1)
        self.rewards = torch.where(step & legal[:, None], reward[:, None], self.rewards)
        self.episode_steps += apply.long()
        terminated = apply & (self.state.merges >= self.state.num_tokens - 1)
        out_of_budget = self.state.merges >= self.merge_budget()
        out_of_time = self.episode_steps >= self.options.step_limit
        truncated = apply & ~terminated & (out_of_budget | out_of_time)
        return reward.float(), terminated, truncated, illegal

    # --- views -------------------------------------------------------------------------
    def observation(self) -> dict[str, Tensor]:
        return {"nodes": core.nodes(self.state), "active": self.state.active.to(torch.int8)}

    def action_mask(self) -> Tensor:  # (B, S*S) int8
        return core.legal_pairs(self.state.active).reshape(self.num_envs, -1).to(torch.int8)

    def picture(self, row: int, tree: bool, colour_clusters: bool) -> np.ndarray:
        """RGB picture of row ``row``: its tokens, optionally coloured by the active node
        each has been merged into, and the merges so far as dashed lines when ``tree``."""
        st = self.state
        p, m = int(st.num_tokens[row]), int(st.merges[row])
        children = st.children[row, :m].cpu().numpy()
        clusters = self._clusters(row, p, children) if colour_clusters else None
        tokens = st.tokens[row, :p].cpu().numpy()
        return render_tokens(
            tokens, self.generator.image_size, clusters, children if tree else None
        )

    def _clusters(self, row: int, p: int, children: np.ndarray) -> np.ndarray:
        """For each token, the slot of the active node it has been merged into."""
        owner = np.arange(2 * self.S - 1)
        for t, (a, b) in enumerate(children):
            owner[(owner == a) | (owner == b)] = p + t
        ids = self.state.slot_node[row].cpu().numpy()
        active = self.state.active[row].cpu().numpy()
        slot_of = {int(ids[s]): s for s in range(self.S) if active[s]}
        return np.array([slot_of.get(int(owner[i]), 0) for i in range(p)])


def make_sim(num_envs: int, c: EnvConfig) -> MergeSim:
    """The validated dynamics behind both env faces."""
    generator = build_generator(c.dataset, c.dataset_kwargs)
    slots = check_slots(c.max_tokens, generator)
    model = build_model(
        generator, c.model, c.checkpoint, c.embed_dim, c.hidden_dim, c.model_seed, c.device
    )
    options = check_options(
        slots,
        c.max_merges,
        c.illegal_action,
        c.illegal_penalty,
        c.step_limit,
        c.reward,
        c.rate_weight,
    )
    return MergeSim(model, generator, num_envs, options, c.noise_std, slots)
