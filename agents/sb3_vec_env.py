"""An SB3 ``VecEnv`` over the native :class:`~htm_gym.envs.vector_env.HTMVectorEnv`.

Stable-Baselines3 does not take Gymnasium's ``VectorEnv``; its own ``DummyVecEnv`` steps
one Python env per row. This adapter keeps the batched core: one ``step`` of the native
env for all rows, then one masked ``reset`` of the rows that ended (SB3 expects the reset
observation straight away, with the final one in ``infos[i]["terminal_observation"]``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode
from stable_baselines3.common.vec_env.base_vec_env import (
    VecEnv,
    VecEnvIndices,
    VecEnvObs,
    VecEnvStepReturn,
)

from htm_gym.envs.vector_env import HTMVectorEnv


class HTMSB3VecEnv(VecEnv):
    """SB3 ``VecEnv`` face of an ``HTMVectorEnv`` built with ``autoreset_mode="disabled"``
    and ``array_type="numpy"``.

    Seeding follows SB3: ``seed(s)`` gives env i the seed ``s + i`` at the next ``reset``,
    which is also how the native env and ``DummyVecEnv`` seed their rows, so the same seed
    gives the same episodes as ``DummyVecEnv`` over ``HTMEnv``.
    ``env_method("action_masks")`` returns one mask per env (sb3-contrib's MaskablePPO).
    """

    def __init__(self, venv: HTMVectorEnv) -> None:
        if venv.autoreset_mode != AutoresetMode.DISABLED or venv.array_type != "numpy":
            raise ValueError(
                "HTMSB3VecEnv needs HTMVectorEnv(autoreset_mode='disabled', array_type='numpy')"
            )
        self.venv = venv
        super().__init__(venv.num_envs, venv.single_observation_space, venv.single_action_space)
        self._actions: np.ndarray | None = None

    def reset(self) -> VecEnvObs:
        if any(self._options):
            raise ValueError("HTMSB3VecEnv does not take per-env reset options")
        seeds = None if all(s is None for s in self._seeds) else list(self._seeds)
        obs, info = self.venv.reset(seed=seeds)
        self.reset_infos = self._split_infos(info)
        self._reset_seeds()
        self._reset_options()
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions).reshape(self.num_envs)

    def step_wait(self) -> VecEnvStepReturn:
        obs, reward, term, trunc, info = self.venv.step(self._actions)
        done = term | trunc
        infos = self._split_infos(info)
        for i, inf in enumerate(infos):
            inf["TimeLimit.truncated"] = bool(trunc[i] and not term[i])
        if done.any():
            for i in np.flatnonzero(done):
                infos[i]["terminal_observation"] = {k: v[i].copy() for k, v in obs.items()}
            obs, _ = self.venv.reset(options={"reset_mask": done})
        return obs, reward.astype(np.float32), done, infos

    def _split_infos(self, info: dict[str, Any]) -> list[dict[str, Any]]:
        """Per-env dicts of the scalar infos (the mask is served by ``action_masks``)."""
        merges, illegal = info["merges"], info["illegal_action"]
        return [
            {"merges": int(merges[i]), "illegal_action": bool(illegal[i])}
            for i in range(self.num_envs)
        ]

    def action_masks(self) -> np.ndarray:
        return self.venv.action_masks()

    def close(self) -> None:
        self.venv.close()

    def get_images(self) -> Sequence[np.ndarray | None]:
        images = self.venv.render()
        return [None] * self.num_envs if images is None else list(images)

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        value = getattr(self.venv, attr_name)  # AttributeError if absent, as SB3 expects
        return [value for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        setattr(self.venv, attr_name, value)  # one shared env: the value applies to all rows

    def env_method(
        self, method_name: str, *method_args, indices: VecEnvIndices = None, **method_kwargs
    ) -> list[Any]:
        rows = list(self._get_indices(indices))
        if method_name == "action_masks":
            masks = self.venv.action_masks()
            return [masks[i] for i in rows]
        if method_name == "render":
            images = self.get_images()
            return [images[i] for i in rows]
        raise AttributeError(f"HTMSB3VecEnv has no per-env method {method_name!r}")

    def env_is_wrapped(
        self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None
    ) -> list[bool]:
        return [False for _ in self._get_indices(indices)]
