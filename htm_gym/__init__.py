"""htm-gym: Hierarchical Token Merging as Gymnasium environments.

Importing the package registers the ids of ``ENV_IDS`` (``HTM-Crosses-v0``, ``HTM-Trees-v0``,
... and ``HTM-Tokens-v0`` for a user's token file), each with the single env ``HTMEnv`` and the
native vector env ``HTMVectorEnv`` via ``vector_entry_point``.
"""

from __future__ import annotations

from gymnasium.envs.registration import register, registry

from htm_gym.datasets import TokenGenerator
from htm_gym.envs.config import build_generator
from htm_gym.envs.env import HTMEnv
from htm_gym.envs.vector_env import HTMVectorEnv
from htm_gym.nets import HTMConfig, HTMModel, load_model, make_model, save_model

__version__ = "0.1.0"

ENV_IDS: dict[str, dict] = {
    "HTM-Crosses-v0": {"dataset": "crosses"},
    "HTM-Trees-v0": {"dataset": "trees"},
    "HTM-TreesJittered-v0": {"dataset": "trees", "dataset_kwargs": {"variant": "jittered"}},
    "HTM-Digits-v0": {"dataset": "digits"},
    "HTM-Digits16-v0": {"dataset": "digits16"},
    # Your own token sets: gym.make("HTM-Tokens-v0", dataset_kwargs={"path": "sets.npz"}).
    "HTM-Tokens-v0": {"dataset": "tokens"},
}


def env_spec(env_id: str, dataset_kwargs: dict | None = None) -> dict:
    """The registered keyword arguments of ``env_id`` (a copy), with ``dataset_kwargs`` over
    its own; a ValueError names the registered ids when ``env_id`` is not one."""
    if env_id not in ENV_IDS:
        raise ValueError(f"unknown env id {env_id!r}; registered: {sorted(ENV_IDS)}")
    spec = dict(ENV_IDS[env_id])
    if dataset_kwargs:
        spec["dataset_kwargs"] = {**spec.get("dataset_kwargs", {}), **dataset_kwargs}
    return spec


def env_generator(env_id: str, dataset_kwargs: dict | None = None) -> TokenGenerator:
    """The token generator behind a registered env id (its dataset and dataset kwargs, with
    ``dataset_kwargs`` over them: ``HTM-Tokens-v0`` needs ``{"path": ...}``)."""
    spec = env_spec(env_id, dataset_kwargs)
    return build_generator(spec["dataset"], spec.get("dataset_kwargs"))


for _env_id, _kwargs in ENV_IDS.items():
    if _env_id not in registry:
        register(
            id=_env_id,
            entry_point="htm_gym.envs.env:HTMEnv",
            vector_entry_point="htm_gym.envs.vector_env:HTMVectorEnv",
            kwargs=_kwargs,
        )

__all__ = [
    "ENV_IDS",
    "HTMConfig",
    "HTMEnv",
    "HTMModel",
    "HTMVectorEnv",
    "env_generator",
    "env_spec",
    "load_model",
    "make_model",
    "save_model",
]
