"""Planning-success evaluation: a world model + planner inside the real environment.

``evaluate_planning`` runs the standard protocol (``benchmarks.protocol``) for a
checkpoint and, in the same run and on the same start/goal pairs, a random-action
baseline. It writes one JSON line per episode to ``episodes.jsonl`` and a
``summary.json`` with success rates and 95% Wilson intervals. Pairs from episodes the
checkpoint trained or validated on are refused before any planning (``benchmarks.leaks``);
pairs run in chunks of ``batch_envs`` environments (`run_chunked`), each pair with its own
random streams, and planning time is charged per environment (`run_episodes`).
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from benchmarks.protocol import PlanningProtocol, StartGoalPair, pair_candidates, sample_pairs
from benchmarks.stats import wilson_interval

# An action source for B environments: (obs (B,H,W,3) uint8, goal (B,H,W,3) uint8) -> (B, A) float32.
ActFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass
class PlannerConfig:
    """Solver + MPC settings used by ``wm eval``.

    ``num_samples``, ``iterations``, ``num_elites`` and ``init_std`` are shortcuts for the
    solver options of those names (None: the solver's default); any other option goes in
    ``planner_options`` (``wm eval --planner-opt KEY=VALUE``). Unknown solvers and options
    are refused when the config is built.
    """

    horizon: int = field(default=5, metadata={"help": "planning horizon in action blocks"})
    receding_horizon: int = field(default=1, metadata={"help": "action blocks executed before replanning"})
    planner: str = field(
        default="cem",
        metadata={"help": "solver: cem | icem | mppi | gd | cem_gd | random_shooting; its other options: --planner-opt KEY=VALUE"},
    )
    num_samples: int | None = field(
        default=None, metadata={"help": "candidates (gd: restarts) per environment and iteration; None: the solver's (cem: 300)"}
    )
    iterations: int | None = field(default=None, metadata={"help": "solver iterations per plan; None: the solver's (cem: 30)"})
    num_elites: int | None = field(default=None, metadata={"help": "elites per iteration (cem, icem, mppi, cem_gd); None: the solver's (cem: 30)"})
    init_std: float | None = field(default=None, metadata={"help": "initial sampling std (cem, icem, gd, cem_gd); None: the solver's (1.0)"})
    planner_options: dict[str, Any] = field(
        default_factory=dict, metadata={"help": "other solver options by name (see planners.solver_options(NAME))"}
    )
    objective: str = field(
        default="terminal_l2",
        metadata={"help": "planning objective: a term or a weighted sum of terms, e.g. terminal_l2=1,effort=0.01 "
                          "(terms: terminal_l2, all_steps_l2, min_step_l2, terminal_l1, state, effort, effort_diff; "
                          "planners/objectives.py)"},
    )
    step_weights: str = field(
        default="", metadata={"help": "all_steps_l2's weight of each planned step, comma-separated, one per --horizon step "
                                      "(default: all 1)"}
    )
    hold_actions: bool = field(
        default=True, metadata={"help": "plan one raw action per block, held for frameskip steps"}
    )
    seed: int = field(default=0, metadata={"help": "planner seed"})
    dtype: str = field(
        default="float32",
        metadata={"help": "planning precision of the model rollouts: float32 | bfloat16 (a bf16 copy of the model; "
                          "costs stay float32)"},
    )
    compile: bool = field(
        default=False,
        metadata={"help": "roll the model out through torch.compile (the first plan compiles: minutes on a 2-core CPU)"},
    )

    def __post_init__(self) -> None:
        if self.dtype not in ("float32", "bfloat16"):
            raise ValueError(f"PlannerConfig.dtype must be 'float32' or 'bfloat16', got {self.dtype!r}")
        self.solver_kwargs()  # an unknown solver or option is refused here, before any work
        self.objective_terms()  # so is an unknown objective term, a bad weight or step weight

    def solver_kwargs(self) -> dict[str, Any]:
        """The solver options: the shortcuts that are set, then ``planner_options``.

        Raises:
            UnknownSolverError: unknown ``planner``; ValueError: a shortcut the solver does
            not take, an option given both ways, or an unknown option.
        """
        from planners.registry import check_options, solver_options

        known = solver_options(self.planner)
        kwargs: dict[str, Any] = {}
        for name in ("num_samples", "iterations", "num_elites", "init_std"):
            value = getattr(self, name)
            if value is None:
                continue
            if name not in known:
                raise ValueError(
                    f"--{name.replace('_', '-')}={value} does not apply to solver {self.planner!r} "
                    f"(its options: {', '.join(sorted(known))})"
                )
            kwargs[name] = value
        options = dict(self.planner_options or {})
        for name in options.keys() & kwargs.keys():
            raise ValueError(f"solver option {name!r} given both as --{name.replace('_', '-')} and in the planner options")
        check_options(self.planner, options)
        return {**kwargs, **options}

    def objective_terms(self) -> dict[str, float]:
        """``{term: weight}`` of ``objective``, with ``step_weights`` checked against ``horizon``.

        Raises:
            UnknownObjectiveError (closest term named) / ValueError: a malformed spec, a
            weight that is not a finite number >= 0, no positive weight, step weights that
            are not one finite number >= 0 per planned step.
        """
        from planners.objectives import parse_objective, parse_step_weights

        terms = parse_objective(self.objective)
        steps = parse_step_weights(self.step_weights)
        if steps is not None and len(steps) != self.horizon:
            raise ValueError(f"--step-weights {self.step_weights!r} has {len(steps)} values; expected one per planned "
                             f"step (--horizon {self.horizon})")
        return terms

    def to_dict(self) -> dict:
        """JSON-serialisable copy."""
        return dataclasses.asdict(self)


@dataclass
class EpisodeOutcome:
    """What happened on one start/goal pair under one policy.

    ``plan_seconds``: the time of the action-source calls this env took part in, each
    call's time divided among the envs still running in it (`run_episodes`);
    ``decisions``: the calls that decided its actions (for an MPC policy the planning
    calls, for other action sources every call).
    """

    success: bool
    steps: int
    final_distance: float
    plan_seconds: float
    decisions: int = 0


DEFAULT_BATCH_ENVS = 50
"""Environments ``wm eval`` runs at once (``--batch-envs``): pairs beyond it run in later chunks."""


def pair_seed(seed: int, index: int) -> int:
    """The seed of pair ``index``'s own random stream in a run seeded ``seed`` (64-bit,
    `numpy.random.SeedSequence` of ``[seed, index]``): what makes a pair's random draws
    independent of the pairs planned beside it."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed={seed!r}: expected an integer >= 0")
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1, np.uint64)[0])


def run_episodes(
    envs: list,
    pairs: list[StartGoalPair],
    act: ActFn,
    budget: int,
    record: int | None = None,
    progress: str | None = None,
    plans: Callable[[], int] | None = None,
) -> tuple[list[EpisodeOutcome], list[np.ndarray]]:
    """Run ``act`` on B environments at once, each from its start towards its goal.

    Args:
        envs: B environments of the dataset's env id.
        pairs: B start/goal pairs (factors, start state, goal state, seed).
        act: the action source, called once per env step for all B envs.
        budget: maximum env steps per episode.
        record: index of an env whose frames are returned (side by side with its goal).
        progress: label of a progress bar over the ``budget`` steps on stderr (a tqdm bar
            on a terminal, else a line at least every 15 s, also while one slow ``act``
            call plans); None: silent.
        plans: a counter of the planning calls ``act`` made (``lambda: policy.num_plans``
            for an ``MPCPolicy``): a call is a decision when it grows; None: every call is.

    Returns:
        (outcomes, frames): one outcome per env; frames ``(H, 2W, 3)`` uint8 if ``record``.
        An outcome's ``plan_seconds`` is measured per environment: every ``act`` call is
        timed and its time divided equally among the envs still running in it (the model
        is not rolled out for finished ones), so the outcomes' ``plan_seconds`` add up to the time of
        all ``act`` calls, and an env that finishes early is charged only for the calls it
        took part in. ``decisions`` counts the decisions it took part in.
    """
    with _Heartbeat(budget, progress) as bar:
        return _run_batch(envs, pairs, act, budget, bar, record=record, plans=plans)


def _run_batch(envs: list, pairs: list[StartGoalPair], act: ActFn, budget: int, bar: "_Heartbeat",
               record: int | None = None, plans: Callable[[], int] | None = None,
               before: tuple[int, int] = (0, 0)) -> tuple[list[EpisodeOutcome], list[np.ndarray]]:
    """`run_episodes` on one batch, updating ``bar`` by ``budget`` steps in all; ``before``:
    (successes, pairs) of earlier chunks, for the bar's ``successes`` count."""
    B = len(pairs)
    envs = envs[:B]
    obs, goals = [], []
    for env, pair in zip(envs, pairs):
        o, _ = env.reset(
            seed=pair.seed,
            options={"factors": pair.factors, "state": pair.start_state, "goal_state": pair.goal_state},
        )
        obs.append(o)
        goals.append(env.unwrapped.render_goal())
    obs_b, goal_b = np.stack(obs), np.stack(goals)
    takes_active = _takes_active(act)
    done = np.zeros(B, bool)
    success = np.zeros(B, bool)
    steps = np.zeros(B, np.int64)
    distance = np.full(B, np.nan)
    charged = np.zeros(B)  # (B,) seconds of act calls charged to each env
    decisions = np.zeros(B, np.int64)
    frames: list[np.ndarray] = []
    if record is not None:
        frames.append(np.concatenate([obs_b[record], goal_b[record]], axis=1))
    taken = 0
    for _ in range(budget):
        if done.all():
            break
        running = ~done
        count = plans() if plans is not None else 0
        t0 = time.perf_counter()
        # an ActFn that takes `active` (MPCPolicy.act) does not plan for envs already done
        kw = {"active": running.copy()} if takes_active else {}
        actions = np.asarray(act(obs_b, goal_b, **kw), np.float32)
        charged[running] += (time.perf_counter() - t0) / running.sum()
        if plans is None or plans() > count:
            decisions[running] += 1
        _step_all(envs, actions, obs_b, done, success, steps, distance)
        taken += 1
        bar.update(1, successes=f"{before[0] + int(success.sum())}/{before[1] + B}", running=int((~done).sum()))
        if record is not None:
            frames.append(np.concatenate([obs_b[record], goal_b[record]], axis=1))
    if taken < budget:
        bar.update(budget - taken)  # every episode ended early: the chunk's remaining steps are not needed
    outcomes = [
        EpisodeOutcome(bool(success[i]), int(steps[i]), float(distance[i]), float(charged[i]), int(decisions[i]))
        for i in range(B)
    ]
    return outcomes, frames


class ChunkPolicy:
    """An action source that `run_chunked` starts once per chunk of pairs.

    ``start(indices)`` prepares it for the pairs ``indices`` (a ``range`` of positions in
    the whole pair list, one env each) and returns the ``ActFn`` for them; ``plans()``,
    where given, counts its planning calls (see `run_episodes`).
    """

    def start(self, indices: range) -> ActFn:
        """Prepare for ``pairs[indices]`` and return their action source."""
        raise NotImplementedError

    plans: Callable[[], int] | None = None


class ActChunks(ChunkPolicy):
    """`ChunkPolicy` from a function ``make(indices) -> ActFn`` (tests, simple action sources)."""

    def __init__(self, make: Callable[[range], ActFn]) -> None:
        self.make = make

    def start(self, indices: range) -> ActFn:
        return self.make(indices)


class RandomChunks(ChunkPolicy):
    """The random baseline by chunks: pair i draws from its own stream (`random_policy` with
    ``pair_indices``), so its actions do not depend on the chunking."""

    def __init__(self, action_space, seed: int) -> None:
        self.action_space, self.seed = action_space, seed

    def start(self, indices: range) -> ActFn:
        return random_policy(self.action_space, len(indices), self.seed, pair_indices=indices)


class MPCChunks(ChunkPolicy):
    """An ``MPCPolicy`` run chunk by chunk: before each chunk its solver is reseeded with one
    stream per pair (`pair_seed` of ``seed`` and the pair's index, `planners.Solver.reseed`;
    a solver without ``reseed`` keeps its one stream) and the policy reset for the chunk's envs; ``num_plans`` and ``plan_seconds`` sum its
    planning calls and their times over all chunks.

    Args:
        policy: the ``MPCPolicy`` (a model's, or the oracle's over the env pool).
        seed: the planner seed.
        goal_states: optional (P, G) goal layout of every pair, for a ``state`` objective.
    """

    def __init__(self, policy, seed: int, goal_states: np.ndarray | None = None) -> None:
        self.policy, self.seed, self.goal_states = policy, seed, goal_states
        self._done_plans, self._done_seconds = 0, 0.0
        self.plans = lambda: policy.num_plans

    def start(self, indices: range) -> ActFn:
        policy = self.policy
        self._done_plans += policy.num_plans  # the previous chunk's, before reset() zeroes them
        self._done_seconds += policy.plan_seconds
        reseed = getattr(policy.planner, "reseed", None)
        if reseed is not None:
            reseed([pair_seed(self.seed, i) for i in indices])
        policy.reset(len(indices))
        if self.goal_states is None:
            return policy.act
        goal_states = self.goal_states[indices.start:indices.stop]
        return lambda obs, goal, **kw: policy.act(obs, goal, goal_state=goal_states, **kw)

    @property
    def num_plans(self) -> int:
        """Planning calls over every chunk so far."""
        return self._done_plans + self.policy.num_plans

    @property
    def plan_seconds(self) -> float:
        """Seconds of those planning calls (as ``MPCPolicy.plan_seconds`` measures them)."""
        return self._done_seconds + self.policy.plan_seconds


def run_chunked(
    envs: list,
    pairs: list[StartGoalPair],
    policy: ChunkPolicy,
    budget: int,
    batch_envs: int = DEFAULT_BATCH_ENVS,
    record: int | None = None,
    progress: str | None = None,
) -> tuple[list[EpisodeOutcome], list[np.ndarray]]:
    """`run_episodes` over P pairs in chunks of at most ``batch_envs`` environments.

    Chunk k holds pairs ``k * batch_envs ..`` and runs in ``envs[:len(chunk)]``: the same
    envs serve every chunk (each is reset to its next pair), so no more than
    ``batch_envs`` environments (and renderers) ever exist.

    What the chunking changes: nothing for an action source whose actions for an env
    depend only on that env's pair and observations (the random baseline draws one
    stream per pair; `MPCChunks` gives the solver one stream per pair, so its random
    draws for a pair are those of any chunking). A model's batched rollouts may still
    differ in the last bits with the batch they are computed in (BLAS blocking, device
    kernels), which can change a plan. Time: each chunk's ``act`` calls are charged to
    its envs as `run_episodes` says; the outcomes' ``plan_seconds`` add up to the time of
    every ``act`` call of every chunk.

    Args:
        envs: at least ``min(batch_envs, P)`` environments of the pairs' env id.
        pairs: the P start/goal pairs.
        policy: started once per chunk (`ChunkPolicy`).
        budget: maximum env steps per episode.
        batch_envs: environments per chunk (>= 1).
        record: index of a pair whose frames are returned.
        progress: label of one progress bar over all chunks (``budget`` steps each; a
            chunk whose episodes all end early skips its remaining steps); None: silent.

    Returns:
        (outcomes (P, in pair order), frames of ``record``).
    """
    if isinstance(batch_envs, bool) or not isinstance(batch_envs, (int, np.integer)) or batch_envs < 1:
        raise ValueError(f"batch_envs={batch_envs!r}: expected a positive integer (environments run at once)")
    size = min(int(batch_envs), len(pairs))
    if len(envs) < size:
        raise ValueError(f"{len(envs)} environments for chunks of {size}: expected at least {size}")
    chunks = [range(k, min(k + size, len(pairs))) for k in range(0, len(pairs), size)]
    outcomes: list[EpisodeOutcome] = []
    frames: list[np.ndarray] = []
    with _Heartbeat(budget * len(chunks), progress) as bar:
        for indices in chunks:
            act = policy.start(indices)
            here = record - indices.start if record is not None and record in indices else None
            done, got = _run_batch(envs, [pairs[i] for i in indices], act, budget, bar, record=here,
                                   plans=policy.plans, before=(sum(o.success for o in outcomes), indices.start))
            outcomes += done
            frames = got if here is not None else frames
    return outcomes, frames


def _takes_active(act: ActFn) -> bool:
    """Whether ``act`` accepts an ``active`` keyword ((B,) bool: envs not done), like ``MPCPolicy.act``."""
    try:
        params = inspect.signature(act).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "active" or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def _step_all(envs: list, actions: np.ndarray, obs_b: np.ndarray, done: np.ndarray, success: np.ndarray,
              steps: np.ndarray, distance: np.ndarray) -> None:
    """Step every env not yet done with its action (B, A), updating the (B,) arrays in place."""
    for i, env in enumerate(envs):
        if done[i]:
            continue
        o, _, terminated, truncated, info = env.step(actions[i])
        obs_b[i] = o
        steps[i] += 1
        distance[i] = info["goal_distance"]
        if info["success"]:
            success[i] = True
        done[i] = success[i] or terminated or truncated


class _Heartbeat:
    """A `ProgressBar` (None label: silent) that also prints from a thread while no update
    comes, so a long planning call still shows a line every ``interval`` seconds."""

    def __init__(self, total: int, desc: str | None) -> None:
        from worldmodel.progress import ProgressBar

        self.bar = ProgressBar(total, desc=desc or "", unit="steps", enabled=desc is not None)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = None
        if desc is not None and not self.bar.is_tty:
            self._thread = threading.Thread(target=self._beat, daemon=True)
            self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(min(self.bar.interval / 3, 5.0)):
            with self._lock:
                self.bar.update(0)  # prints only if no line came for `interval` seconds

    def update(self, n: int, **postfix) -> None:
        with self._lock:
            self.bar.update(n, **postfix)

    def __enter__(self) -> "_Heartbeat":
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.bar.close()


def random_policy(action_space, batch_size: int, seed: int, pair_indices: Sequence[int] | None = None) -> ActFn:
    """Uniform random actions (B, A) float32 for ``batch_size`` envs from a seeded generator.

    With ``pair_indices`` (B,), env b draws from its own generator, seeded ``[seed,
    pair_indices[b]]``, one action per call: its actions are then the same whichever
    envs it runs beside (what ``wm eval`` uses, so that ``--batch-envs`` does not change
    the baseline).
    """
    low = np.broadcast_to(action_space.low, action_space.shape)
    high = np.broadcast_to(action_space.high, action_space.shape)
    if pair_indices is None:
        rng = np.random.default_rng(seed)

        def act(obs: np.ndarray, goal: np.ndarray) -> np.ndarray:
            return rng.uniform(low, high, size=(batch_size, *action_space.shape)).astype(np.float32)

        return act
    if len(pair_indices) != batch_size:
        raise ValueError(f"pair_indices has {len(pair_indices)} entries for batch_size={batch_size}: expected one per env")
    rngs = [np.random.default_rng([seed, int(i)]) for i in pair_indices]

    def act_per_pair(obs: np.ndarray, goal: np.ndarray) -> np.ndarray:
        return np.stack([r.uniform(low, high) for r in rngs]).astype(np.float32)

    return act_per_pair


def build_mpc(model, planner_cfg: PlannerConfig, action_space, device: str = "cpu", state_probe: Any = None):
    """A batched ``MPCPolicy`` for ``model`` with the solver ``planner_cfg.planner`` and the env's action bounds;
    ``state_probe`` (a ``planners.StateProbe``) is what the objective's ``state`` term reads."""
    from planners import MPCPolicy, get, get_objective

    block = model.config.action_dim
    if not planner_cfg.hold_actions:
        block *= model.config.frameskip
    low = float(np.min(action_space.low))
    high = float(np.max(action_space.high))
    solver = get(
        planner_cfg.planner,
        horizon=planner_cfg.horizon,
        action_dim=block,
        low=low,
        high=high,
        seed=planner_cfg.seed,
        device=device,
        **planner_cfg.solver_kwargs(),
    )
    from worldmodel.model import planning_model

    return MPCPolicy(
        planning_model(model, planner_cfg.dtype, compile=planner_cfg.compile),
        solver,
        objective=get_objective(planner_cfg.objective, planner_cfg.step_weights or None, state_probe),
        receding_horizon=planner_cfg.receding_horizon,
        action_low=low,
        action_high=high,
        hold_actions=planner_cfg.hold_actions,
    )


def evaluate_planning(
    model,
    dataset,
    out_dir: str | Path,
    protocol: PlanningProtocol | None = None,
    planner_cfg: PlannerConfig | None = None,
    device: str = "cpu",
    video: bool = True,
    log: Callable[[str], None] | None = None,
    trained_on: dict | None = None,
    progress: bool = False,
    oracle: bool = False,
    oracle_frameskip: int | None = None,
    oracle_reduce: str = "final",
    state_probe: Any = None,
    condition: dict | None = None,
    batch_envs: int = DEFAULT_BATCH_ENVS,
    allow_train_episodes: bool = False,
) -> dict:
    """Evaluate planning success of ``model`` on ``dataset``'s episodes, with a random baseline
    and, with ``oracle``, the same solver planning through the true simulator, on the same pairs.

    Pairs run in chunks of ``batch_envs`` environments (`run_chunked`), the same envs
    serving every chunk. Every pair has its own random streams, derived from the seed and
    its index (`pair_seed`): the solver's draws (``MPCChunks``) and the baseline's actions
    (`RandomChunks`), so the chunking changes neither; only a model's batched float
    arithmetic may differ in the last bits with the batch (see `run_chunked`).

    Args:
        model: a world model (``encode``/``rollout``/``config``), in eval mode; None with
            ``oracle`` evaluates the oracle alone (no ``success_rate`` keys).
        dataset: an opened ``data.EpisodeDataset`` whose episodes give start/goal pairs.
        out_dir: folder for ``episodes.jsonl``, ``summary.json`` and ``planned_episode.mp4``.
        protocol: start/goal protocol (defaults: offset 25, budget 50, 50 episodes).
        planner_cfg: CEM/MPC settings.
        device: torch device for planning.
        video: write an MP4 of the first planned episode (agent | goal).
        log: optional callable for progress lines.
        trained_on: what the checkpoint records about its training data (`checkpoint_data`);
            given, a checkpoint of another env is refused by name (`check_trained_on`) and
            pairs from episodes it trained or validated on are refused
            (`benchmarks.leaks.check_train_episodes`; a checkpoint without that record
            gives a note instead).
        progress: progress bars on stderr while the planner and the baseline run (one
            bar over all chunks each).
        oracle: also run the oracle (`planners.oracle`): the same solver settings, scoring
            candidates by the env's own goal distance after rolling them out in the
            simulator. Adds ``oracle_success_rate``, ``oracle_success_ci95``,
            ``oracle_successes``, ``oracle_mean_steps_to_success``,
            ``oracle_seconds_per_decision`` and ``oracle`` (its settings) to the summary and
            ``"policy": "oracle"`` lines to ``episodes.jsonl``.
        oracle_frameskip: raw actions per action block for the oracle (default: the
            model's ``frameskip``, else `ORACLE_FRAMESKIP`).
        oracle_reduce: ``"final"`` (goal distance at the end of a candidate) or ``"min"``.
        state_probe: the ``planners.StateProbe`` of an objective with a ``state`` term
            (`benchmarks.state_probe.load_or_fit_state_probe`); it is given each pair's
            goal state.
        condition: the condition the pairs' episodes were collected for
            (`benchmarks.conditions.EvalCondition.to_dict`), recorded as the summary's
            ``condition``; None (pairs from a given dataset): its episodes' own factors.
        batch_envs: environments run at once (>= 1; ``wm eval --batch-envs``).
        allow_train_episodes: evaluate pairs from episodes the checkpoint has seen anyway
            (``--allow-train-episodes``); the summary's ``allow_train_episodes`` and
            ``train_overlap_pairs`` say so.

    Returns:
        the summary dict (also written to ``summary.json``), with ``distinct_pairs`` (the
        pairs the dataset can give), ``source_episodes`` (the episodes the pairs come from),
        ``notes`` (what could not be checked; pairs from at most half as many episodes), ``batch_envs``,
        ``plan_seconds_total`` (the time of every planner call, which the episodes'
        ``plan_seconds`` add up to), ``allow_train_episodes``, ``train_overlap_pairs`` and
        ``train_overlap_episode_ids`` (None: the checkpoint records no episodes).

    Raises:
        benchmarks.leaks.TrainEpisodesError: pairs come from episodes the checkpoint has
        seen (without ``allow_train_episodes``), found before any planning.
    """
    import envs
    from benchmarks.leaks import check_train_episodes, checkpoint_record

    protocol = protocol or PlanningProtocol()
    planner_cfg = planner_cfg or PlannerConfig()
    if isinstance(batch_envs, bool) or not isinstance(batch_envs, (int, np.integer)) or batch_envs < 1:
        raise ValueError(f"batch_envs={batch_envs!r}: expected a positive integer (environments run at once)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    env_id = dataset.meta["env_id"]
    notes = [] if trained_on is None else check_trained_on(trained_on, dataset)
    seen_record = checkpoint_record(trained_on) if model is not None else None  # a missing/altered record: refused
    if model is None and not oracle:
        raise ValueError("evaluate_planning needs a model, or oracle=True to evaluate the oracle alone")
    if oracle:  # refused before any planning: a gradient solver, an unknown reduction
        from planners.oracle import check_reduce, refuse_gradient_solver
        from planners.registry import solver_class

        refuse_gradient_solver(solver_class(planner_cfg.planner))
        check_reduce(oracle_reduce)
    resolution = int(dataset.meta["image_shape"][0])
    if model is not None and resolution != model.config.image_size:
        raise ValueError(
            f"{dataset.path} has {resolution}x{resolution} frames ({env_id}) but the model expects "
            f"image_size={model.config.image_size}: it was trained on other data (another env or resolution)"
        )
    # a budget above the env's time limit (TwoRoom's 100 steps under a 150-step budget) lifts the limit:
    # the episodes run the whole budget instead of being truncated by the TimeLimit wrapper
    from data.collect import gym_time_limit

    limit = gym_time_limit(env_id)
    make_kwargs: dict[str, Any] = {"resolution": resolution}
    if limit is not None and protocol.budget > limit:
        make_kwargs["max_episode_steps"] = int(protocol.budget)
    probe = envs.make(env_id, **make_kwargs)
    if model is not None and probe.action_space.shape[0] != model.config.action_dim:
        raise ValueError(
            f"{env_id} has action_dim={probe.action_space.shape[0]} but the model "
            f"expects action_dim={model.config.action_dim}: it was trained on another environment's data"
        )
    distinct = sum(n for _, n in pair_candidates(dataset, protocol))
    pairs = sample_pairs(dataset, protocol, probe)
    # before any planning: pairs from episodes the checkpoint trained or validated on are refused
    leak_keys = {"allow_train_episodes": bool(allow_train_episodes), "train_overlap_pairs": None,
                 "train_overlap_episode_ids": None}
    if model is not None and trained_on is not None:
        leak_keys, leak_notes = check_train_episodes(seen_record, dataset, [p.episode_id for p in pairs],
                                                     allow=allow_train_episodes)
        notes += leak_notes
    source_episodes = len({p.episode_id for p in pairs})
    if 2 * source_episodes <= len(pairs):  # e.g. random-action Cube episodes: the few whose cube moved
        notes.append(f"the {len(pairs)} pairs come from only {source_episodes} episodes: pairs of one episode are "
                     f"not independent, so the success interval overstates what is known")
    for note in notes:
        if log:
            log(f"note: {note}")
    n_envs = min(int(batch_envs), len(pairs))
    env_list = [probe] + [envs.make(env_id, **make_kwargs) for _ in range(n_envs - 1)]
    if log:
        chunks = -(-len(pairs) // n_envs)
        log(f"{len(pairs)} start/goal pairs (of {distinct} distinct ones in {dataset.path}), budget {protocol.budget} steps"
            + (f", in {chunks} chunks of up to {n_envs} environments" if chunks > 1 else ""))

    planned, frames, chunked, planner_seconds, act_seconds = [], [], None, 0.0, 0.0
    if model is not None:
        policy = build_mpc(model, planner_cfg, env_list[0].action_space, device, state_probe=state_probe)
        goal_states = None
        if state_probe is not None:  # the state term compares the probe's read-out with each pair's goal state
            goal_states = np.stack([np.asarray(p.goal_state, np.float32).ravel() for p in pairs])
        chunked = MPCChunks(policy, planner_cfg.seed, goal_states)
        t0 = time.perf_counter()
        planned, frames = run_chunked(env_list, pairs, chunked, protocol.budget, n_envs, record=0 if video else None,
                                      progress="eval planner" if progress else None)
        planner_seconds = time.perf_counter() - t0
        act_seconds = sum(o.plan_seconds for o in planned)
        if log:
            log(f"planner: {sum(o.success for o in planned)}/{len(planned)} successes in {planner_seconds:.1f}s")
    oracle_run: dict | None = None
    if oracle:
        frameskip = oracle_frameskip or (model.config.frameskip if model is not None else ORACLE_FRAMESKIP)
        oracle_run = run_oracle(
            env_list, pairs, planner_cfg, protocol.budget, frameskip, device=device, reduce=oracle_reduce,
            record=0 if video and model is None else None, progress="eval oracle" if progress else None,
            batch_envs=n_envs,
        )
        frames = frames or oracle_run["frames"]
        if log:
            done = oracle_run["outcomes"]
            log(f"oracle: {sum(o.success for o in done)}/{len(done)} successes in {oracle_run['seconds']:.1f}s")
    baseline, _ = run_chunked(
        env_list, pairs, RandomChunks(env_list[0].action_space, protocol.seed), protocol.budget, n_envs,
        progress="eval random" if progress else None,
    )
    if log:
        log(f"random baseline: {sum(o.success for o in baseline)}/{len(baseline)} successes")

    overlap = set(leak_keys["train_overlap_episode_ids"] or [])
    with open(out / "episodes.jsonl", "w") as f:
        runs = [(planner_cfg.planner, planned)] if model is not None else []
        runs += [("oracle", oracle_run["outcomes"])] if oracle_run else []
        for name, outcomes in (*runs, ("random", baseline)):
            for pair, o in zip(pairs, outcomes):
                f.write(
                    json.dumps(
                        {
                            "policy": name,
                            "success": o.success,
                            "steps": o.steps,
                            "final_distance": o.final_distance,
                            "plan_seconds": o.plan_seconds,
                            "decisions": o.decisions,
                            "episode_id": pair.episode_id,
                            "start_step": pair.start_step,
                            "start_state": pair.start_state.tolist(),
                            "goal_state": pair.goal_state.tolist(),
                            "factors": pair.factors,
                            "env_seed": pair.seed,
                            "protocol_seed": protocol.seed,
                            "seen_in_training": (pair.episode_id in overlap
                                                 if leak_keys["train_overlap_pairs"] is not None else None),
                        }
                    )
                    + "\n"
                )
    if video and frames:
        from benchmarks.video import write_mp4

        write_mp4(out / "planned_episode.mp4", frames, fps=10)

    num_plans = chunked.num_plans if chunked else 0
    summary = {
        "env_id": env_id,
        "episodes": len(pairs),
        "distinct_pairs": distinct,
        "source_episodes": source_episodes,
        **(_rates("", planned) if model is not None else {}),
        **_rates("baseline_", baseline),
        "planner_seconds_total": planner_seconds,
        # the planner calls' time, each call's time divided among the envs running in it (run_episodes)
        "plan_seconds_total": act_seconds,
        "plan_seconds_per_episode": act_seconds / len(planned) if planned else 0.0,
        # one decision = one solver call planning every environment of a chunk at once
        "decisions": num_plans if chunked else None,
        "seconds_per_decision": chunked.plan_seconds / num_plans if chunked and num_plans else None,
        "batch_envs": int(batch_envs),  # as asked; min(batch_envs, episodes) ran at once
        "protocol": protocol.to_dict(),
        "planner": planner_cfg.to_dict(),
        # the solver as built: its name and every setting, defaults included
        "solver": {"name": planner_cfg.planner,
                   "settings": (chunked.policy if chunked else oracle_run["policy"]).planner.settings()},
        "dataset": str(dataset.path),
        "condition": condition,
        "trained_on": trained_on,
        **leak_keys,
        "notes": notes,
    }
    if model is None:  # the oracle alone: no model keys
        for key in ("planner_seconds_total", "plan_seconds_total", "plan_seconds_per_episode", "decisions",
                    "seconds_per_decision"):
            summary.pop(key)
    if oracle_run:
        summary.update(_oracle_summary(oracle_run))
    summary["success_ratio_vs_baseline"] = (
        summary["success_rate"] / summary["baseline_success_rate"]
        if model is not None and summary["baseline_success_rate"] > 0
        else None
    )
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


ORACLE_FRAMESKIP = 5
"""The oracle's action block without a model to take it from: ``ModelConfig``'s default frameskip."""


def build_oracle(envs: list, planner_cfg: PlannerConfig, frameskip: int, device: str = "cpu", reduce: str = "final"):
    """The solver ``planner_cfg`` describes (built as `build_mpc` builds it), planning through the
    simulator of `envs` (`planners.oracle.oracle_policy`) with action blocks of `frameskip` raw actions."""
    from planners.oracle import SimulatorModel, oracle_policy

    space = envs[0].action_space
    # the objective is the simulator's goal distance: the model-side settings (objective, precision) are not used
    model_side = ("objective", "step_weights", "dtype", "compile")
    latent = {f.name: f.default for f in dataclasses.fields(PlannerConfig) if f.name in model_side}
    solver_cfg = dataclasses.replace(planner_cfg, **latent)
    solver = build_mpc(SimulatorModel(frameskip, int(space.shape[0])), solver_cfg, space, device).planner
    return oracle_policy(
        envs, solver, frameskip, receding_horizon=planner_cfg.receding_horizon, hold_actions=planner_cfg.hold_actions,
        reduce=reduce,
    )


def run_oracle(
    envs: list,
    pairs: list[StartGoalPair],
    planner_cfg: PlannerConfig,
    budget: int,
    frameskip: int,
    device: str = "cpu",
    reduce: str = "final",
    record: int | None = None,
    progress: str | None = None,
    batch_envs: int | None = None,
) -> dict:
    """The oracle (`build_oracle`) on P pairs, as `run_chunked` runs a model's policy.

    One oracle policy is built over ``envs`` and runs every chunk in ``envs[:len(chunk)]``,
    its solver reseeded per pair (`MPCChunks`).

    Args:
        envs: at least ``min(batch_envs, P)`` environments.
        batch_envs: environments per chunk (None: ``len(envs)``).

    Returns:
        ``{"outcomes": [EpisodeOutcome] (P), "frames": [...], "seconds": float, "policy":
        the MPCPolicy, "decisions": planning calls over all chunks, "plan_seconds": their
        time, "frameskip": int, "reduce": str}``.
    """
    batch_envs = len(envs) if batch_envs is None else batch_envs
    pool = envs[: min(batch_envs, len(pairs))]
    policy = build_oracle(pool, planner_cfg, frameskip, device, reduce)
    chunked = MPCChunks(policy, planner_cfg.seed)
    t0 = time.perf_counter()
    outcomes, frames = run_chunked(pool, pairs, chunked, budget, batch_envs, record=record, progress=progress)
    return {"outcomes": outcomes, "frames": frames, "seconds": time.perf_counter() - t0, "policy": policy,
            "decisions": chunked.num_plans, "plan_seconds": chunked.plan_seconds, "frameskip": frameskip,
            "reduce": reduce}


def _oracle_summary(run: dict) -> dict:
    """The oracle's keys of a summary: ``oracle_`` rates, time per decision, its settings."""
    cost, decisions = run["policy"].oracle_cost, run["decisions"]
    return {
        **_rates("oracle_", run["outcomes"]),
        "oracle_seconds_total": run["seconds"],
        "oracle_plan_seconds_total": sum(o.plan_seconds for o in run["outcomes"]),
        # one decision = one solver call planning every environment of a chunk at once
        "oracle_decisions": decisions,
        "oracle_seconds_per_decision": run["plan_seconds"] / decisions if decisions else None,
        "oracle": {
            "frameskip": run["frameskip"],
            "reduce": run["reduce"],
            "simulated_steps": cost.simulated_steps,
            "simulation_seconds": cost.seconds,
        },
    }


def checkpoint_data(ckpt_dir: str | Path) -> dict:
    """What a checkpoint says about its training data: its recorded ``dataset`` identity
    (`worldmodel.checkpoint.dataset_identity`), else (older checkpoints) the identity of the
    dataset its ``train_config.data`` names, when still readable, marked ``"source":
    "train_config"``; ``{}`` when neither is known. With a known identity come
    ``"checkpoint"`` (the folder) and, when training recorded its episodes,
    ``"episodes"`` (``{"file", "sha256", "train", "val"}``: where, and how many trained
    and validated on), which `benchmarks.leaks.checkpoint_record` reads."""
    from worldmodel.checkpoint import dataset_identity, load_extra

    extra = load_extra(ckpt_dir)
    seen = {"checkpoint": str(ckpt_dir), **({"episodes": extra["episodes"]} if isinstance(extra.get("episodes"), dict) else {})}
    if isinstance(extra.get("dataset"), dict) and extra["dataset"].get("env_id"):
        return {**extra["dataset"], "source": "checkpoint", **seen}
    path = (extra.get("train_config") or {}).get("data")
    found = dataset_identity(path)
    return {**found, "source": "train_config", **seen} if found and found.get("env_id") else {}


def check_trained_on(trained_on: dict, dataset) -> list[str]:
    """Refuse a checkpoint trained on another env's data, by name; notes on what could not be compared.

    Args:
        trained_on: `checkpoint_data` of the checkpoint (``{}``: unknown).
        dataset: the opened evaluation dataset.

    Raises:
        ValueError: the training data's env id differs from the dataset's.
    """
    env_id = dataset.meta.get("env_id")
    trained_env = trained_on.get("env_id")
    if not trained_env:
        return [
            "the checkpoint does not record the env it was trained on (an older checkpoint) and its training "
            f"dataset is not readable: only frame size and action size were compared with {env_id}'s"
        ]
    if trained_env != env_id:
        raise ValueError(
            f"the checkpoint was trained on {trained_env} data ({trained_on.get('path')}) but {dataset.path} holds "
            f"{env_id} episodes: evaluate it on held-out {trained_env} data"
        )
    if trained_on.get("source") == "train_config":
        return [f"the checkpoint does not record its env; {trained_env} was read from its training dataset {trained_on.get('path')}"]
    return []


def _rates(prefix: str, outcomes: list[EpisodeOutcome]) -> dict:
    """Success rate, 95% interval and mean steps-to-success under a key prefix."""
    n = len(outcomes)
    k = sum(o.success for o in outcomes)
    low, high = wilson_interval(k, n)
    steps = [o.steps for o in outcomes if o.success]
    return {
        f"{prefix}success_rate": k / n if n else 0.0,
        f"{prefix}success_ci95": [low, high],
        f"{prefix}successes": k,
        f"{prefix}mean_steps_to_success": float(np.mean(steps)) if steps else None,
    }
