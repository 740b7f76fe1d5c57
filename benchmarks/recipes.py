"""Versioned benchmark recipes: everything a planning result depends on, one per environment.

A `Recipe` names the data (episodes, policy mix, resolution, codec, seeds), the model
configuration, the training budget, the solver with its settings and the protocol. Its
`Recipe.hash` (a digest of every field) goes into every result file ``wm bench planning``
writes, so a number can always be traced to the exact recipe that produced it; changing
any field changes the hash. Recipes round-trip through JSON (`Recipe.to_dict` /
`Recipe.from_dict`, `Recipe.save` / `load_recipe`).

Held-out episodes use seeds from 1,500,000: disjoint from the training seeds (0..) and
from the demo's held-out seeds (1,000,000..), on whose pairs the solvers were compared
(RESULTS.md), so no recipe setting was chosen on the pairs a recipe is evaluated on.

The recipes' budgets are sized for a 2-core CPU: training <= 45 minutes per env
(``TrainRecipe.steps`` at ``batch_size``, measured rates in RESULTS.md).
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: first seed of a recipe's held-out episodes (see the module docstring)
HELDOUT_SEED = 1_500_000


@dataclass
class DataRecipe:
    """Training and held-out data of a recipe."""

    expert_episodes: int = 300  # noisy-expert episodes: how to reach goals
    random_episodes: int = 200  # random-action episodes: what the dynamics do off the expert's path
    heldout_episodes: int = 60  # expert episodes that give the evaluation's start/goal pairs
    resolution: int = 64
    codec: str | None = None  # None: the store's default (raw up to 64x64)
    split: str | None = None  # None: default factors; "train": factor-randomised over the train ranges
    factors: dict[str, Any] = field(default_factory=dict)  # factors fixed in every episode, over the split's draw
    stop_on_success: bool = True  # training episodes end at their first success (the demo's recipe)
    noise: float | None = None  # expert action noise (None: the policy's default)
    seed: int = 0
    heldout_seed: int = HELDOUT_SEED


@dataclass
class TrainRecipe:
    """Model and training budget of a recipe."""

    steps: int = 3000
    batch_size: int = 32
    lr: float = 1e-3
    seed: int = 0
    preset: str | None = None  # a model preset of any family (worldmodel/config.py), then `model` overrides it
    model: dict[str, Any] = field(default_factory=lambda: {"pred_steps": 3})  # config fields; "family" picks the family


@dataclass
class EvalRecipe:
    """Solver, protocol and oracle of a recipe."""

    planner: dict[str, Any] = field(default_factory=lambda: {"planner": "icem"})  # PlannerConfig fields
    protocol: dict[str, Any] = field(default_factory=lambda: {"offset": 25, "budget": 50, "episodes": 50})
    oracle: bool = True
    oracle_planner: dict[str, Any] = field(default_factory=dict)  # PlannerConfig fields of the oracle (default: planner)


@dataclass
class Recipe:
    """A versioned benchmark recipe (see the module docstring)."""

    name: str
    env_id: str
    version: int = 1
    data: DataRecipe = field(default_factory=DataRecipe)
    train: TrainRecipe = field(default_factory=TrainRecipe)
    eval: EvalRecipe = field(default_factory=EvalRecipe)
    notes: str = ""

    def to_dict(self) -> dict:
        """JSON-serialisable form, every field."""
        return dataclasses.asdict(self)

    def _digest_dict(self) -> dict:
        """`to_dict` without the fields added after recipes were published while they hold
        their default (`ADDED_FIELDS`): a recipe that does not use them keeps its hash."""
        d = self.to_dict()
        for (section, key), default in ADDED_FIELDS.items():
            if d[section].get(key) == default:
                del d[section][key]
        return d

    @classmethod
    def from_dict(cls, values: dict) -> "Recipe":
        """The recipe of `to_dict`'s output; unknown or missing sections and keys are refused by name."""
        if not isinstance(values, dict):
            raise ValueError(f"a recipe must be a JSON object, got {type(values).__name__}")
        sections = {"data": DataRecipe, "train": TrainRecipe, "eval": EvalRecipe}
        top = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - top)
        if unknown:
            raise ValueError(f"unknown recipe keys {unknown}; valid keys are {sorted(top)}")
        kwargs: dict[str, Any] = {}
        for key, value in values.items():
            if key in sections:
                sub = sections[key]
                names = {f.name for f in dataclasses.fields(sub)}
                if not isinstance(value, dict):
                    raise ValueError(f"recipe section {key!r} must be an object, got {value!r}")
                bad = sorted(set(value) - names)
                if bad:
                    raise ValueError(f"unknown keys {bad} in recipe section {key!r}; valid keys are {sorted(names)}")
                kwargs[key] = sub(**value)
            else:
                kwargs[key] = value
        recipe = cls(**kwargs)
        recipe.check()
        return recipe

    def check(self) -> "Recipe":
        """Validate the parts other modules own (env id, split, solver, protocol, model keys); return self."""
        import envs
        from benchmarks.planning import PlannerConfig
        from benchmarks.protocol import PlanningProtocol
        from envs.factors import SPLITS

        envs.env_class(self.env_id)
        if self.data.split is not None and self.data.split not in SPLITS:
            raise ValueError(f"recipe {self.name}: data.split={self.data.split!r}, expected None or one of {SPLITS}")
        if not isinstance(self.data.factors, dict):
            raise ValueError(f"recipe {self.name}: data.factors={self.data.factors!r}, expected an object of name: value")
        try:
            envs.factor_space(self.env_id).validate(self.data.factors)
        except (KeyError, ValueError) as e:  # an unknown name (the closest suggested), an out-of-range value
            raise ValueError(f"recipe {self.name}: data.factors: {e}") from None
        for name in ("expert_episodes", "random_episodes", "heldout_episodes", "resolution"):
            value = getattr(self.data, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < (1 if name != "random_episodes" else 0):
                raise ValueError(f"recipe {self.name}: data.{name}={value!r}, expected a positive integer")
        PlannerConfig(**self.eval.planner)
        PlannerConfig(**{**self.eval.planner, **self.eval.oracle_planner})
        PlanningProtocol(**self.eval.protocol)
        self.model_config(image_size=self.data.resolution, action_dim=2)
        return self

    @property
    def family(self) -> str:
        """The model family trained: ``train.model["family"]``, else the preset's, else ``"lewm"``."""
        from worldmodel.trainargs import resolve_family

        return resolve_family(None, self.train.preset, self.train.model.get("family"))

    def model_config(self, **known: Any) -> Any:
        """The model config of the recipe's `family`: the preset (if any), then ``train.model``, then
        `known` (sizes from the data)."""
        cls = family_config_class(self.family)
        if self.train.preset:
            return cls.preset(self.train.preset, **{**self.train.model, **known})
        return cls.from_dict({**self.train.model, **known})

    def hash(self) -> str:
        """A 12-hex-digit digest of every field (canonical JSON; see `_digest_dict`)."""
        blob = json.dumps(self._digest_dict(), sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def section_hash(self, *sections: str) -> str:
        """Digest of the named sections plus the env id (which stage outputs can be reused)."""
        d = self._digest_dict()
        blob = json.dumps({"env_id": self.env_id, **{s: d[s] for s in sections}}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def save(self, path: str | os.PathLike) -> Path:
        """Write the recipe as JSON to `path`."""
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path


#: fields added to the recipe sections after recipes were published, with their default: left out of
#: the digests at that default (`Recipe._digest_dict`), so the published recipes keep their hashes
ADDED_FIELDS: dict[tuple[str, str], Any] = {("data", "factors"): {}}


def family_config_class(family: str) -> type:
    """The config class of model family `family` (``worldmodel.families``).

    Raises:
        ValueError: an unknown family (the closest named).
    """
    from worldmodel.families import get_family

    return get_family(family).config_cls


def load_recipe(path: str | os.PathLike) -> Recipe:
    """A recipe from a JSON file (`Recipe.save`), with clear errors for a missing or malformed file."""
    path = Path(path)
    try:
        values = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"recipe file {path} does not exist") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"recipe file {path} is not valid JSON: {e}") from None
    return Recipe.from_dict(values)


_COMMON_NOTE = ("The demo's data and model recipe (300 noisy-expert + 200 random episodes at 64x64, default factors, "
                "CNN encoder, 3 predicted steps, batch 32), planned with iCEM (300 x 30, its published defaults).")


def _recipe(name: str, env_id: str, notes: str = _COMMON_NOTE, **sections: Any) -> Recipe:
    return Recipe(name=name, env_id=env_id, notes=notes, **sections)


#: the registered recipes, by env id
RECIPES: dict[str, Recipe] = {
    "wm/TwoRoom-v0": _recipe("tworoom-cpu", "wm/TwoRoom-v0"),
    "wm/PushT-v0": _recipe("pusht-cpu", "wm/PushT-v0"),
    "wm/PointMaze-v0": _recipe("pointmaze-cpu", "wm/PointMaze-v0", eval=EvalRecipe(
        oracle_planner={"num_samples": 100, "iterations": 10, "num_elites": 10})),
    "wm/Reacher-v0": _recipe("reacher-cpu", "wm/Reacher-v0", eval=EvalRecipe(
        oracle_planner={"num_samples": 100, "iterations": 10, "num_elites": 10})),
    "wm/Cube-v0": _recipe("cube-cpu", "wm/Cube-v0", eval=EvalRecipe(
        oracle_planner={"num_samples": 64, "iterations": 8, "num_elites": 6})),
}


def get_recipe(env_id: str, split: str | None = None) -> Recipe:
    """The registered recipe of `env_id` (a copy); with ``split="train"`` its factor-randomised
    variant (data drawn over the train ranges, name suffixed ``-randomised``).

    Raises:
        ValueError: no recipe for `env_id` (the closest id named).
    """
    if env_id not in RECIPES:
        close = difflib.get_close_matches(env_id, list(RECIPES), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"no recipe for env {env_id!r}; recipes exist for {', '.join(RECIPES)}{hint}")
    recipe = Recipe.from_dict(RECIPES[env_id].to_dict())
    if split is not None:
        recipe.data.split = split
        recipe.name += "-randomised" if split == "train" else f"-{split}"
        recipe.check()
    return recipe
