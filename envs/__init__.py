"""Gymnasium environments of the platform, registered under the ``wm/`` namespace.

``import envs`` registers every environment (``wm/TwoRoom-v0``, ...) with gymnasium;
the environment modules themselves (and OpenCV) load only when an env is made.
``gymnasium.make("envs:wm/TwoRoom-v0")`` works without a prior import.

    >>> import envs
    >>> env = envs.make("wm/TwoRoom-v0", resolution=64)
    >>> obs, info = env.reset(seed=0, options={"split": "train"})
"""

from __future__ import annotations

import difflib
import importlib
import re
from typing import Any

import gymnasium as gym

__all__ = [
    "Factor",
    "FactorOutOfRange",
    "env_class",
    "factor_space",
    "FactorSpace",
    "UnknownEnvError",
    "UnknownFactorError",
    "UnknownSplitError",
    "list_envs",
    "make",
    "make_policy",
]

NAMESPACE = "wm"

# id -> (entry point, max_episode_steps)
_ENVS: dict[str, tuple[str, int]] = {
    "wm/TwoRoom-v0": ("envs.two_room:TwoRoomEnv", 100),
    "wm/PushT-v0": ("envs.push_t:PushTEnv", 300),
    "wm/PointMaze-v0": ("envs.point_maze:PointMazeEnv", 300),
    "wm/Reacher-v0": ("envs.reacher:ReacherEnv", 100),
    "wm/Cube-v0": ("envs.cube:CubeEnv", 200),
}


def _register_all() -> None:
    for env_id, (entry_point, max_steps) in _ENVS.items():
        if env_id not in gym.registry:  # guard against re-import / reload
            gym.register(id=env_id, entry_point=entry_point, max_episode_steps=max_steps)


_register_all()


class UnknownEnvError(ValueError):
    """An environment id that is not registered; the message suggests the closest ids."""


def list_envs() -> list[str]:
    """Sorted ids of every registered ``wm/`` environment."""
    return sorted(k for k in gym.registry if k.startswith(NAMESPACE + "/"))


def _core(env_id: str) -> str:
    """``'wm/TwoRoom-v0'`` -> ``'tworoom'``: the part of an id that tells environments apart."""
    name = env_id.rsplit("/", 1)[-1]
    return re.sub(r"-v\d+$", "", name).lower()


def _suggest(bare: str) -> str:
    """A hint naming the registered ids closest to `bare` (compared without namespace or version)."""
    known = list_envs()
    by_core: dict[str, list[str]] = {}
    for k in known:
        by_core.setdefault(_core(k), []).append(k)
    close = difflib.get_close_matches(_core(bare), list(by_core), n=3, cutoff=0.6)
    ids = [k for c in close for k in by_core[c]]
    if ids:
        return "did you mean " + " or ".join(repr(k) for k in ids) + "?"
    return f"registered ids: {known}"


def make(env_id: str, **kwargs: Any) -> gym.Env:
    """`gymnasium.make` for ``wm/`` ids; an unknown id raises `UnknownEnvError` with suggestions.

    Keyword arguments (e.g. ``resolution=224``, ``render_mode="rgb_array"``) go to the
    environment's constructor or to `gymnasium.make` (``max_episode_steps``, ...).
    """
    if not isinstance(env_id, str):
        raise UnknownEnvError(f"env id must be a string, got {env_id!r}")
    bare = env_id.split(":", 1)[1] if ":" in env_id else env_id
    if bare not in gym.registry:
        raise UnknownEnvError(f"unknown environment id {env_id!r}; {_suggest(bare)}")
    return gym.make(env_id, **kwargs)


def env_class(env_id: str) -> type:
    """The environment class registered as `env_id`, without instantiating it (no renderer, no GL)."""
    bare = env_id.split(":", 1)[1] if isinstance(env_id, str) and ":" in env_id else env_id
    if not isinstance(bare, str) or bare not in gym.registry or not bare.startswith(NAMESPACE + "/"):
        raise UnknownEnvError(f"unknown environment id {env_id!r}; {_suggest(str(bare))}")
    entry = gym.registry[bare].entry_point
    if not isinstance(entry, str):
        return entry  # type: ignore[return-value]
    module, _, attr = entry.partition(":")
    return getattr(importlib.import_module(module), attr)


def factor_space(env_id: str) -> Any:
    """The `FactorSpace` of a registered environment (read from its class)."""
    return env_class(env_id).factor_space


_LAZY = {
    "Factor": "envs.factors",
    "FactorSpace": "envs.factors",
    "FactorOutOfRange": "envs.factors",
    "UnknownFactorError": "envs.factors",
    "UnknownSplitError": "envs.factors",
    "make_policy": "envs.policies",
}


def __getattr__(name: str) -> Any:
    """Load re-exported names on first use, so ``import envs`` stays fast."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'envs' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
