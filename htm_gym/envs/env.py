"""HTMEnv: one merge episode at a time, the batched core with B = 1."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch

from htm_gym.envs.config import EnvConfig
from htm_gym.envs.sim import draw_episode, make_sim
from htm_gym.nets import HTMModel

RESET_OPTIONS = ("tokens",)


class HTMEnv(gym.Env):
    """Hierarchical Token Merging: build a binary merge tree over a set of tokens.

    ## Description
    An image is a set of P tokens (crosses: line segments ``(x1, y1, x2, y2)``; trees: node
    coordinates ``(x, y)``). At reset the tokens are embedded by a linear lifter (plus
    Gaussian noise). Each step merges an ordered pair of active nodes into one with the
    merger MLP, until a single root remains after P - 1 merges. The merger/unmerger pair is
    a ``torch.nn.Module`` that a learner may co-train while acting here.

    ## Action Space
    ``Discrete(S * S)`` where S is the slot count ``max_tokens`` (default: the largest
    token count of the dataset, 6 for crosses, 7 for trees). Action ``a`` merges slot
    ``i = a // S`` (left) with slot ``j = a % S`` (right); the merged node takes slot i
    and slot j becomes inactive. The pair is legal when both slots are active and i != j:
    ``info["action_mask"]`` (int8, Gymnasium's Taxi convention) and :meth:`action_masks`
    (sb3-contrib's) mark the legal actions. An illegal action inside the space is, by
    default (``illegal_action="penalize"``), a no-op that costs ``illegal_penalty`` and sets
    ``info["illegal_action"]``; with ``illegal_action="raise"`` it raises ``ValueError``.
    An action outside the space always raises ``ValueError``.

    ## Observation Space
    ``Dict(nodes=Box(-inf, inf, (S, E), float32), active=MultiBinary(S))``: the embedding
    held by each slot (zeros when inactive) and which slots are active. Slots P..S-1 of a
    P-token instance start inactive.

    ## Rewards
    ``reward="one_step"`` (default): minus the one-step reconstruction loss of the merge
    (report 3.3.1): the mean squared error, in the model's normalised embedding space,
    between the pair's embeddings and the unmerger's reconstruction of the merged (noisy)
    node. Always finite and <= 0.

    ``reward="skip_path"``: ``L(t-1) - L(t)``, the drop in the skip-path loss ``L``: the
    mean squared error, in the model's normalised token units, of every token decoded from
    the current forest of active nodes (each unmerged through its recorded subtree and
    unlifted). A merge that destroys information about any of its tokens pays at once, in
    token space; an episode's rewards sum to ``L(0) - L(end)``. Finite; usually < 0, and
    > 0 when a merge happens to decode better than its parts.

    ``rate_weight`` = w > 0 (skip-path only) adds the forest's rate to ``L``: w times the
    mean square of every active node's noise-free embedding, summed over active nodes per
    token (the Gaussian prior's charge under the fixed node noise, as in the KL term of the
    skip-generative-path reward). A merge then also pays for what its node must keep, so of
    two equally decodable merges the one whose tokens share more is paid more. Default 0.

    ## Starting State
    A token set from the dataset generator seeded by ``reset(seed=...)``, placed in the
    slots in a random order drawn from the same seed (the generators emit tokens in
    hierarchy order, e.g. a cross's two segments side by side, which slot positions must
    not reveal); or the tokens passed as ``reset(options={"tokens": array_of_shape_(P, T)})``
    in token units (pixels), in the order given.

    ## Episode End
    ``terminated`` when one active node (the root) remains, after P - 1 merges.
    ``truncated`` when ``max_merges`` < P - 1 merges have been made (curriculum stages), or
    after ``step_limit`` steps counting illegal ones (default 4 S).

    ## Arguments
    All keyword-only (the fields of :class:`~htm_gym.envs.config.EnvConfig`, plus rendering):
    - ``dataset``: "crosses", "trees" or a :class:`~htm_gym.datasets.TokenGenerator`;
      ``dataset_kwargs`` configure a named one (e.g. ``{"num_crosses": (1, 2)}``,
      ``{"variant": "wide"}``).
    - ``model`` (an :class:`~htm_gym.nets.HTMModel`, shared, not copied) or ``checkpoint``
      (a path); otherwise a fresh model from ``model_seed`` with ``embed_dim`` (48 for
      crosses, 32 for trees), ``hidden_dim`` and the dataset's default token scale.
    - ``noise_std``: std of the Gaussian noise added to every node on creation; default
      the model's own (0.01 for a fresh model). ``0`` gives noise-free inference.
    - ``max_merges``, ``illegal_action``, ``illegal_penalty``, ``step_limit``, ``reward``,
      ``rate_weight``: above.
    - ``max_tokens``: slot count S, at least the dataset's largest P; token sets of 2..S
      tokens are accepted from ``reset(options=...)`` (models are P-agnostic, so a model
      trained with fewer slots runs here and plays a given token set as it did there).
    - ``device``: torch device of the model's computation (None: torch's default device,
      CPU unless ``torch.set_default_device`` says otherwise); observations are NumPy.
    - ``render_mode="rgb_array"``: ``render()`` draws the tokens coloured by current
      cluster, with the merge tree's steps as dashed lines when ``render_tree``.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 2}

    def __init__(
        self,
        *,
        render_mode: str | None = None,
        render_tree: bool = True,
        **kwargs: Any,
    ) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.sim = make_sim(1, EnvConfig.of("HTMEnv", kwargs))
        self.generator = self.sim.generator
        self.observation_space = self.sim.observation_space()
        self.action_space = self.sim.action_space()
        self.render_mode = render_mode
        self.render_tree = render_tree
        self._done, self._started = True, False

    @property
    def model(self) -> HTMModel:
        return self.sim.model

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        super().reset(seed=seed)
        options = options or {}
        unknown = set(options) - set(RESET_OPTIONS)
        if unknown:
            raise ValueError(f"unknown reset option(s) {sorted(unknown)}; known: {RESET_OPTIONS}")
        episode = draw_episode(
            self.generator, self.np_random, self.sim.E, options.get("tokens"), self.sim.S
        )
        self.sim.reset_rows(np.zeros(1, dtype=np.int64), [episode])
        self._done, self._started = False, True
        return self._obs(), self._info(illegal=False)

    def step(self, action: Any) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        a = _check_action(action, self.action_space.n)
        if self._done:
            raise RuntimeError("the episode has ended: call reset() before step()")
        act = torch.tensor([a], dtype=torch.long, device=self.sim.device)
        reward, term, trunc, illegal = self.sim.step(act)
        terminated, truncated = bool(term[0]), bool(trunc[0])
        self._done = terminated or truncated
        info = self._info(illegal=bool(illegal[0]))
        return self._obs(), float(reward[0]), terminated, truncated, info

    def action_masks(self) -> np.ndarray:
        """Legal actions as a bool vector (sb3-contrib's MaskablePPO convention)."""
        if not self._started:
            raise RuntimeError("the env has not been reset: call reset() first")
        return self.sim.action_mask()[0].cpu().numpy().astype(bool)

    @property
    def tokens(self) -> np.ndarray:
        """The current episode's tokens, (P, T) in token units."""
        p = int(self.sim.state.num_tokens[0])
        return self.sim.state.tokens[0, :p].cpu().numpy()

    def render(self) -> np.ndarray | None:
        if self.render_mode is None:
            gym.logger.warn("render() called without render_mode; pass render_mode='rgb_array'")
            return None
        return self.sim.picture(0, tree=self.render_tree, colour_clusters=True)

    def _obs(self) -> dict[str, np.ndarray]:
        return {k: v[0].cpu().numpy() for k, v in self.sim.observation().items()}

    def _info(self, illegal: bool) -> dict[str, Any]:
        state = self.sim.state
        return {
            "action_mask": self.sim.action_mask()[0].cpu().numpy(),
            "num_tokens": int(state.num_tokens[0]),
            "merges": int(state.merges[0]),
            "illegal_action": illegal,
        }


def _check_action(action: Any, n: int) -> int:
    """An int in [0, n), or ValueError naming what was wrong."""
    arr = np.asarray(action)
    if arr.shape != () or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"action must be a single integer in [0, {n}), got {action!r}")
    a = int(arr)
    if not 0 <= a < n:
        raise ValueError(f"action {a} is outside the action space Discrete({n})")
    return a
