"""HTMVectorEnv: num_envs merge episodes in one batched core (Gymnasium ``VectorEnv``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from htm_gym.datasets.base import validate_token_sets, validate_tokens
from htm_gym.envs.config import EnvConfig
from htm_gym.envs.env import HTMEnv
from htm_gym.envs.sim import EpisodeRecord, draw_episode, make_sim
from htm_gym.nets import HTMModel

ARRAY_TYPES = ("numpy", "torch")


class HTMVectorEnv(VectorEnv):
    """``num_envs`` copies of :class:`~htm_gym.envs.env.HTMEnv` stepped as one batch.

    Same spaces, rewards and episode ends as ``HTMEnv`` (see its docstring), computed by
    the same :class:`~htm_gym.envs.sim.MergeSim` with B = ``num_envs`` on ``device``. Row i
    keeps its own NumPy stream seeded like Gymnasium's ``SyncVectorEnv`` seeds sub-env i
    (``seed + i``), so the same seeds give the same episodes as ``SyncVectorEnv`` over
    ``HTMEnv`` (up to float rounding of batched matrix products).

    Arguments (beyond ``HTMEnv``'s):
    - ``autoreset_mode``: ``NEXT_STEP`` (default; the step after an episode ends resets
      that row, ignores its action and returns reward 0) or ``DISABLED`` (rows that ended
      must be reset with ``reset(options={"reset_mask": mask})``; for learners that run
      episodes in lockstep).
    - ``array_type``: "numpy" (default) or "torch": observations, rewards, flags and
      ``info["action_mask"]`` as tensors on ``device``, with no host copies.

    Reset options: ``reset_mask`` (bool (num_envs,)); ``tokens``: a sequence of
    ``num_envs`` token arrays (P_i, T), or one (num_envs, S, T) array with ``num_tokens``;
    ``group_size`` k: rows in groups of k consecutive rows play the token set that the
    group's first row draws (each row with its own noise), for per-set baselines.

    Episode records (``array_type="torch"``): every ``step`` info holds
    ``info["episode_record"]``, an :class:`~htm_gym.envs.sim.EpisodeRecord` of all rows after
    the step (tokens, noise, the slot pairs merged, the rewards paid, the merge tree), and
    ``info["_episode_record"]``, the rows whose episode ended at this step: for those rows
    the record is the whole episode, enough to replay it exactly through ``htm_gym.core``.
    :meth:`episode_record` gives the same for the episodes in play now (e.g. after reset).
    """

    metadata = {"render_modes": ["rgb_array"], "autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(
        self,
        num_envs: int,
        *,
        render_mode: str | None = None,
        render_tree: bool = True,
        autoreset_mode: str | AutoresetMode = AutoresetMode.NEXT_STEP,
        array_type: str = "numpy",
        **kwargs: Any,
    ) -> None:
        if not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive integer, got {num_envs!r}")
        mode = _autoreset_mode(autoreset_mode)
        if mode not in (AutoresetMode.NEXT_STEP, AutoresetMode.DISABLED):
            raise ValueError(f"autoreset_mode must be NEXT_STEP or DISABLED, got {mode}")
        if array_type not in ARRAY_TYPES:
            raise ValueError(f"array_type must be one of {ARRAY_TYPES}, got {array_type!r}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.sim = make_sim(num_envs, EnvConfig.of("HTMVectorEnv", kwargs))
        self.generator = self.sim.generator
        self.num_envs = num_envs
        self.metadata = {**self.metadata, "autoreset_mode": mode}
        self.autoreset_mode = mode
        self.array_type = array_type
        self.render_mode = render_mode
        self.render_tree = render_tree
        self.single_observation_space = self.sim.observation_space()
        self.single_action_space = self.sim.action_space()
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._rngs: list[np.random.Generator] = []
        self._needs_reset = np.ones(num_envs, dtype=bool)  # ended, awaiting (auto)reset

    @property
    def model(self) -> HTMModel:
        return self.sim.model

    @property
    def device(self) -> torch.device:
        return self.sim.device

    def reset(
        self, *, seed: int | list[int | None] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        options = dict(options or {})
        mask = self._reset_mask(options.pop("reset_mask", None))
        given = self._given_tokens(options.pop("tokens", None), options.pop("num_tokens", None))
        group = self._group_size(options.pop("group_size", 1), given, mask)
        if options:
            raise ValueError(f"unknown reset option(s) {sorted(options)}")
        self._seed(seed)
        rows = np.flatnonzero(mask)
        episodes = [
            draw_episode(
                self.generator,
                self._rngs[i],
                self.sim.E,
                None if given is None else given[i],
                self.sim.S,
                checked=True,
            )
            for i in rows
        ]
        if group > 1:  # each row keeps its noise; the token draw and slot order are shared
            first = {i: k for k, i in enumerate(rows) if i % group == 0}
            episodes = [
                (episodes[first[i - i % group]][0], e[1], e[2], episodes[first[i - i % group]][3])
                for i, e in zip(rows, episodes, strict=True)
            ]
        self.sim.reset_rows(rows, episodes)
        self._needs_reset[rows] = False
        illegal = torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)
        return self._obs(), self._infos(illegal, mask)

    def step(self, actions: Any) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        return self._step(actions, hold=False)

    def _step(self, actions: Any, hold: bool) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        """``step``; with ``hold``, rows that have ended stay ended (no autoreset, no merge)
        instead of starting a new episode, for :func:`play_round`, which would discard it."""
        acts = self._check_actions(actions)
        ended = self._needs_reset.copy()
        resetting = ended & (not hold)
        if self.autoreset_mode == AutoresetMode.DISABLED and resetting.any():
            raise RuntimeError(
                f"envs {np.flatnonzero(resetting).tolist()} have ended; with autoreset DISABLED "
                "reset them first with reset(options={'reset_mask': mask})"
            )
        apply = torch.as_tensor(~ended, device=self.device)
        reward, term, trunc, illegal = self.sim.step(acts, apply)
        rows = np.flatnonzero(resetting)
        if len(rows):
            eps = [
                draw_episode(self.generator, self._rngs[i], self.sim.E, num_slots=self.sim.S)
                for i in rows
            ]
            self.sim.reset_rows(rows, eps)
        self._needs_reset = (term | trunc).cpu().numpy() | (ended & ~resetting)
        everyone = np.ones(self.num_envs, dtype=bool)
        if self.array_type == "torch":
            info = self._infos(illegal, everyone)
            info["episode_record"] = self.sim.record(term)
            info["_episode_record"] = term | trunc
            return self._obs(), reward, term, trunc, info
        return (
            self._obs(),
            reward.double().cpu().numpy(),
            term.cpu().numpy(),
            trunc.cpu().numpy(),
            self._infos(illegal, everyone),
        )

    def episode_record(self) -> EpisodeRecord:
        """The episodes in play now: their tokens, noise, merges so far and rewards."""
        return self.sim.record()

    def set_max_merges(self, max_merges: int | None) -> None:
        """Change the merge budget (a curriculum stage) without rebuilding the env; it
        applies from the next step, so call it between episodes (e.g. before a reset)."""
        self.sim.set_max_merges(max_merges)

    def set_noise_std(self, noise_std: float | None) -> None:
        """Std of the node noise of episodes reset from now on (None: the model's own)."""
        self.sim.set_noise_std(noise_std)

    def action_masks(self) -> np.ndarray:
        """Legal actions, bool (num_envs, S*S) (sb3-contrib's convention)."""
        self._check_started()
        return self.sim.action_mask().cpu().numpy().astype(bool)

    def render(self) -> tuple[np.ndarray, ...] | None:
        if self.render_mode is None:
            return None
        return tuple(
            self.sim.picture(i, tree=self.render_tree, colour_clusters=False)
            for i in range(self.num_envs)
        )

    # --- helpers -----------------------------------------------------------------------
    def _seed(self, seed: int | list[int | None] | None) -> None:
        if seed is None:
            seeds: list[int | None] = [None] * self.num_envs
        elif isinstance(seed, (int, np.integer)):
            seeds = [int(seed) + i for i in range(self.num_envs)]
        else:
            seeds = list(seed)
            if len(seeds) != self.num_envs:
                raise ValueError(
                    f"seed list must have num_envs={self.num_envs} entries, got {len(seeds)}"
                )
        if not self._rngs:
            self._rngs = [seeding.np_random(s)[0] for s in seeds]
            return
        for i, s in enumerate(seeds):
            if s is not None:
                self._rngs[i] = seeding.np_random(s)[0]

    def _reset_mask(self, mask: Any) -> np.ndarray:
        if mask is None:
            return np.ones(self.num_envs, dtype=bool)
        if (
            not isinstance(mask, np.ndarray)
            or mask.dtype != np.bool_
            or mask.shape != (self.num_envs,)
        ):
            raise ValueError(
                f"options['reset_mask'] must be a bool numpy array of shape ({self.num_envs},)"
            )
        if not mask.any():
            raise ValueError("options['reset_mask'] must select at least one env")
        return mask

    def _group_size(self, group: Any, given: list[np.ndarray] | None, mask: np.ndarray) -> int:
        if isinstance(group, bool) or not isinstance(group, (int, np.integer)) or group < 1:
            raise ValueError(f"options['group_size'] must be a positive integer, got {group!r}")
        if self.num_envs % group or (group > 1 and (given is not None or not mask.all())):
            raise ValueError(
                f"options['group_size'] must divide num_envs={self.num_envs} and cannot be "
                f"combined with 'tokens' or 'reset_mask' (repeat the sets yourself); got {group}"
            )
        return int(group)

    def _given_tokens(self, tokens: Any, num_tokens: Any) -> list[np.ndarray] | None:
        if tokens is None:
            return None
        if num_tokens is not None:
            arr = np.asarray(tokens)
            num = np.asarray(num_tokens)
            if arr.ndim != 3 or num.shape != (len(arr),):
                raise ValueError(
                    "options 'tokens' with 'num_tokens' must be (num_envs, S, T) and (num_envs,)"
                )
            if num.dtype == np.bool_ or not np.all(np.mod(num, 1) == 0):
                raise ValueError(f"options['num_tokens'] must be whole numbers, got {num!r}")
        if len(tokens) != self.num_envs:
            raise ValueError(
                f"options['tokens'] must hold {self.num_envs} token sets (one per env), "
                f"got {len(tokens)}"
            )
        t, s = self.generator.token_dim, self.sim.S
        if num_tokens is not None:
            return validate_token_sets(arr, num, t, s)
        return [validate_tokens(x, t, s) for x in tokens]

    def _check_started(self) -> None:
        if not self._rngs:
            raise RuntimeError("the vector env has not been reset: call reset() first")

    def _check_actions(self, actions: Any) -> torch.Tensor:
        self._check_started()
        n = self.single_action_space.n
        if isinstance(actions, torch.Tensor):
            if actions.dtype == torch.bool:
                raise ValueError("actions must be integers, got a bool tensor")
            acts = actions.to(self.device)
        else:
            arr = np.asarray(actions)
            if not np.issubdtype(arr.dtype, np.integer):
                raise ValueError(f"actions must be integers, got dtype {arr.dtype}")
            acts = torch.as_tensor(arr, device=self.device)
        if acts.shape != (self.num_envs,) or acts.dtype.is_floating_point:
            raise ValueError(
                f"actions must be {self.num_envs} integers, got shape {tuple(acts.shape)}"
            )
        acts = acts.long()
        bad = (acts < 0) | (acts >= n)
        if bool(bad.any()):
            i = int(torch.nonzero(bad)[0, 0])
            raise ValueError(
                f"action {int(acts[i])} of env {i} is outside the action space Discrete({n})"
            )
        return acts

    def _obs(self) -> dict[str, Any]:
        obs = self.sim.observation()
        if self.array_type == "torch":
            return obs
        return {k: v.cpu().numpy() for k, v in obs.items()}

    def _infos(self, illegal: torch.Tensor, present: np.ndarray) -> dict[str, Any]:
        """Infos shaped as SyncVectorEnv would aggregate HTMEnv's (values + ``_key`` masks)."""
        state = self.sim.state
        values = {
            "action_mask": self.sim.action_mask(),
            "num_tokens": state.num_tokens,
            "merges": state.merges,
            "illegal_action": illegal,
        }
        infos: dict[str, Any] = {}
        for key, value in values.items():
            if self.array_type == "numpy":
                value = value.cpu().numpy()
                if not present.all():  # SyncVectorEnv leaves absent rows at zero
                    value = np.where(present.reshape(-1, *[1] * (value.ndim - 1)), value, 0).astype(
                        value.dtype
                    )
            infos[key] = value
            infos[f"_{key}"] = present.copy()
        return infos


Act = Callable[[dict[str, torch.Tensor], torch.Tensor], torch.Tensor]


@torch.no_grad()
def play_round(
    venv: HTMVectorEnv, act: Act, seed: int | None = None, options: dict | None = None
) -> tuple[EpisodeRecord, int]:
    """Reset every row (``seed``/``options`` as in ``reset``) and play until each row has
    ended one episode; ``act(obs, action_mask)`` gives the flat actions (B,).

    Returns the record of each row's episode, in row order, and the env steps taken by
    rows still in their episode (illegal actions included). Needs ``array_type="torch"``
    and the ``NEXT_STEP`` autoreset. Rows that end early idle at their end (no new episode
    is drawn for them) and autoreset on the first ``step`` after the round.
    """
    if venv.array_type != "torch" or venv.autoreset_mode != AutoresetMode.NEXT_STEP:
        raise ValueError("play_round needs HTMVectorEnv(array_type='torch') with NEXT_STEP")
    obs, info = venv.reset(seed=seed, options=options)
    record = venv.episode_record()
    finished = torch.zeros(venv.num_envs, dtype=torch.bool, device=venv.device)
    steps = torch.zeros((), dtype=torch.long, device=venv.device)
    while not bool(finished.all()):
        steps += (~finished).sum()
        obs, _, _, _, info = venv._step(act(obs, info["action_mask"]), hold=True)
        ended = info["_episode_record"] & ~finished
        record = record.where(ended, info["episode_record"])
        finished |= ended
    return record, int(steps)


def _autoreset_mode(mode: str | AutoresetMode) -> AutoresetMode:
    """Accept the enum, its value ("NextStep") or its name in any case ("disabled")."""
    if isinstance(mode, AutoresetMode):
        return mode
    for m in AutoresetMode:
        if str(mode).lower() in (m.value.lower(), m.name.lower()):
            return m
    raise ValueError(f"autoreset_mode must be NEXT_STEP or DISABLED, got {mode!r}")


def make_sync_reference(num_envs: int, **kwargs: Any):
    """``SyncVectorEnv`` over ``HTMEnv`` with the same arguments (tests and benchmarks)."""
    from gymnasium.vector import SyncVectorEnv

    mode = _autoreset_mode(kwargs.pop("autoreset_mode", AutoresetMode.NEXT_STEP))
    return SyncVectorEnv([lambda: HTMEnv(**kwargs) for _ in range(num_envs)], autoreset_mode=mode)
