"""Model-predictive control: a batched policy that replans in a world model's latent space.

``MPCPolicy.act`` returns one raw environment action per environment per call. It plans
in units of *action blocks* (``frameskip`` raw actions, flattened to
``frameskip * action_dim`` values, the unit the model was trained on), executes the first
``receding_horizon`` blocks of each plan, then replans from the new observation,
warm-starting from the previous plan's unexecuted tail.

Timeline for frameskip f and receding_horizon r (t counts act() calls since reset)::

    t = 0, f, 2f, ...   block boundary: encode obs, push it (and the block just executed)
                        onto the context history (at most ``context`` embeddings)
    t = 0, rf, 2rf, ... queue empty: plan all B envs in one planner call, queue r*f actions
"""

from __future__ import annotations

import contextlib
import inspect
import time
from collections import deque
from collections.abc import Sequence

import numpy as np
import torch

from planners.base import CostFn, Planner, PlanResult, WorldModel
from planners.objectives import Objective, get_objective

__all__ = ["MPCPolicy"]


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def _accepts_past_actions(model: WorldModel) -> bool:
    """Whether ``model.rollout`` takes a ``past_actions`` argument (or **kwargs)."""
    try:
        params = inspect.signature(model.rollout).parameters.values()
    except (TypeError, ValueError):
        return True
    return any(p.name == "past_actions" or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def _accepts_goal_state(objective: object) -> bool:
    """Whether an objective factory takes a ``goal_state`` argument (or **kwargs)."""
    try:
        params = inspect.signature(objective).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "goal_state" or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def _active_rows_cost(objective: Objective, model: WorldModel, active: torch.Tensor, context_emb: torch.Tensor,
                      goal_emb: torch.Tensor, past: torch.Tensor | None, known: dict) -> CostFn:
    """A cost over all B envs that rolls the model out for the ``active`` (B,) rows only.

    The returned CostFn maps (B, S, H, A) -> (B, S): the objective's costs on active rows,
    0 on the others (differentiable: gradient solvers see no gradient there).
    """
    rows = active.nonzero().squeeze(1)  # (B',)
    if len(rows) == 0:
        return lambda actions: actions.new_zeros(actions.shape[:2])  # noqa: E731
    sub_known = {k: v[rows] for k, v in known.items()}
    sub_past = None if past is None else past[rows]
    sub_cost = objective(model, context_emb[rows], goal_emb[rows], sub_past, **sub_known)

    def cost_fn(actions: torch.Tensor) -> torch.Tensor:
        sub = sub_cost(actions[rows])  # (B', S)
        return actions.new_zeros(actions.shape[:2], dtype=sub.dtype).index_copy(0, rows, sub)

    return cost_fn


class MPCPolicy:
    """Batched receding-horizon MPC over a latent world model.

    Args:
        model: a ``WorldModel`` (``encode``, ``rollout``, ``config.frameskip/action_dim/context``).
            The constructor calls ``model.eval()`` once (if the model has it) and leaves it so.
        planner: a ``Planner`` whose ``action_dim`` equals the block size
            ``frameskip * action_dim`` and whose ``horizon`` is >= ``receding_horizon``.
            Tensors are put on ``planner.device`` (default CPU); the model must live there too.
            Optional planner members: ``reset()`` (called by ``reset``), ``shift(r)`` (called
            before each warm-started plan: r blocks of the last plan were executed) and
            ``requires_grad`` (True: ``plan`` runs with autograd enabled, e.g. ``gd``).
        objective: an objective spec (``"terminal_l2"``, ``"terminal_l2=1,effort=0.01"``:
            ``planners.objectives.get_objective``) or an objective factory
            ``(model, context_emb (B,T0,D), goal_emb (B,D), past_actions[, goal_state]) -> CostFn``;
            ``goal_state`` (B, G) from ``act`` is passed only to factories that take it.
        receding_horizon: r, action blocks executed from each plan before replanning.
        action_low, action_high: raw action bounds, floats or (action_dim,) sequences;
            returned actions are clipped to them.
        hold_actions: plan one raw action per block and hold it for the block's
            ``frameskip`` steps. The planner then searches ``action_dim`` (not
            ``frameskip * action_dim``) numbers per block: a smaller space whose random
            samples reach further, since held actions do not average out.

    Attributes:
        last_plan_seconds: wall time of the last act() call that replanned (encoding,
            planning and the copy to host included), for the whole batch.
        plan_seconds: sum of those times since the last ``reset``.
        num_plans: planner calls since the last ``reset``.
        last_result: the last ``PlanResult`` (actions (B, H, frameskip*action_dim)).

    If ``model.rollout`` has no ``past_actions`` argument, the context embeddings are
    passed without the executed blocks between them.
    """

    def __init__(
        self,
        model: WorldModel,
        planner: Planner,
        objective: str | Objective = "terminal_l2",
        receding_horizon: int = 1,
        action_low: float | Sequence[float] = -1.0,
        action_high: float | Sequence[float] = 1.0,
        hold_actions: bool = False,
    ) -> None:
        config = model.config
        self.frameskip = _positive_int("model.config.frameskip", config.frameskip)
        self.action_dim = _positive_int("model.config.action_dim", config.action_dim)
        self.context = _positive_int("model.config.context", config.context)
        self.block_dim = self.frameskip * self.action_dim
        self.hold_actions = bool(hold_actions)
        planned_dim = self.action_dim if self.hold_actions else self.block_dim
        if planner.action_dim != planned_dim:
            what = (
                "action_dim (hold_actions=True)"
                if self.hold_actions
                else f"the model's action block size frameskip * action_dim = {self.frameskip} * {self.action_dim}"
            )
            raise ValueError(f"planner.action_dim={planner.action_dim} must equal {what} = {planned_dim}")
        self.receding_horizon = _positive_int("receding_horizon", receding_horizon)
        if self.receding_horizon > planner.horizon:
            raise ValueError(f"receding_horizon={receding_horizon} must be <= planner.horizon={planner.horizon}")
        self.objective = get_objective(objective) if isinstance(objective, str) else objective
        if not callable(self.objective):
            raise ValueError(f"objective must be a name or a callable, got {objective!r}")
        self.action_low = self._raw_bound("action_low", action_low)  # (action_dim,)
        self.action_high = self._raw_bound("action_high", action_high)  # (action_dim,)
        if not (self.action_low < self.action_high).all():
            raise ValueError(f"action_low must be < action_high, got {self.action_low.tolist()} and {self.action_high.tolist()}")

        self.model = model
        self.planner = planner
        self.device = torch.device(getattr(planner, "device", "cpu"))
        self._pass_past_actions = _accepts_past_actions(model)
        self._pass_goal_state = _accepts_goal_state(self.objective)
        if hasattr(model, "eval"):
            model.eval()
        self.batch_size: int | None = None
        self.reset(None)

    def _raw_bound(self, name: str, value: float | Sequence[float]) -> np.ndarray:
        b = np.asarray(value, dtype=np.float32)
        if b.ndim == 0:
            b = np.full(self.action_dim, b, dtype=np.float32)
        if b.shape != (self.action_dim,) or not np.isfinite(b).all():
            raise ValueError(f"{name} must be a finite float or have shape ({self.action_dim},), got {value!r}")
        return b

    def reset(self, batch_size: int | None) -> None:
        """Forget queue, context history, goal cache, warm start and timings.

        Args:
            batch_size: B, number of environments of the next episode batch; None lets the
                first ``act`` call set it from its inputs.
        """
        self.batch_size = None if batch_size is None else _positive_int("batch_size", batch_size)
        self._t = 0  # raw actions returned since reset
        self._queue = np.zeros((0, 0, self.action_dim), dtype=np.float32)  # (B, r*f, action_dim)
        self._queue_pos = 0
        self._emb_history: deque[torch.Tensor] = deque(maxlen=self.context)  # each (B, D)
        self._block_history: deque[torch.Tensor] = deque(maxlen=self.context - 1)  # each (B, block_dim)
        self._prev_plan: torch.Tensor | None = None  # (B, H, block_dim)
        self._goal_pixels: np.ndarray | None = None
        self._goal_emb: torch.Tensor | None = None  # (B, D)
        self._goal_state: torch.Tensor | None = None  # (B, G), the env's goal layout when act() is given it
        self._active: torch.Tensor | None = None  # (B,) bool from act(): envs still running (None: all)
        self.last_result: PlanResult | None = None
        self._last_inputs: tuple | None = None  # (context_emb, goal_emb, past, known) of the last plan, for score()
        self.last_plan_seconds = 0.0
        self.plan_seconds = 0.0
        self.num_plans = 0
        if hasattr(self.planner, "reset"):  # a solver's memory across plans (iCEM's elites)
            self.planner.reset()

    @staticmethod
    def _check_pixels(name: str, pixels: np.ndarray) -> np.ndarray:
        pixels = np.asarray(pixels)
        if pixels.dtype != np.uint8 or pixels.ndim != 4 or pixels.shape[-1] != 3:
            raise ValueError(f"{name} must be uint8 (B, H, W, 3), got {pixels.dtype} {pixels.shape}")
        return pixels

    def _encode(self, pixels: np.ndarray) -> torch.Tensor:
        """pixels uint8 (B, H, W, 3) -> embeddings (B, D)."""
        x = torch.from_numpy(np.ascontiguousarray(pixels)).to(self.device)
        emb = self.model.encode(x.permute(0, 3, 1, 2).unsqueeze(1))  # (B, 1, 3, H, W) -> (B, 1, D)
        if emb.ndim != 3 or emb.shape[:2] != (pixels.shape[0], 1):
            raise ValueError(f"model.encode must return (B, T, D) = ({pixels.shape[0]}, 1, D), got {tuple(emb.shape)}")
        return emb[:, 0]

    def _goal_embedding(self, goal: np.ndarray) -> torch.Tensor:
        """goal uint8 (B, H, W, 3) -> (B, D), re-encoded only when the goal pixels change."""
        if self._goal_pixels is None or not np.array_equal(goal, self._goal_pixels):
            self._goal_emb = self._encode(goal)
            self._goal_pixels = goal.copy()
        return self._goal_emb

    def _warm_start(self) -> torch.Tensor | None:
        """Previous plan shifted by r blocks, zero-padded at the end -> (B, H, block_dim)."""
        if self._prev_plan is None:
            return None
        r = self.receding_horizon
        if hasattr(self.planner, "shift"):  # the solver's memory moves on by the r executed blocks
            self.planner.shift(r)
        tail = self._prev_plan[:, r:]
        return torch.cat([tail, torch.zeros_like(self._prev_plan[:, :r])], dim=1)

    def _replan(self, goal: np.ndarray) -> None:
        """Plan all B envs in one planner call and queue r*f clipped raw actions per env."""
        B = self.batch_size
        goal_emb = self._goal_embedding(goal)
        context_emb = torch.stack(list(self._emb_history), dim=1)  # (B, T0, D)
        past = None
        if self._block_history and self._pass_past_actions:
            past = torch.stack(list(self._block_history), dim=1)  # (B, T0 - 1, block_dim)
        known = {"goal_state": self._goal_state} if self._goal_state is not None and self._pass_goal_state else {}
        self._last_inputs = (context_emb, goal_emb, past, known)
        active = self._active
        if active is None or active.all():
            cost_fn = self.objective(self.model, context_emb, goal_emb, past, **known)
        else:  # envs whose episode ended: the solver still runs for all B, the model only for the others
            cost_fn = _active_rows_cost(self.objective, self.model, active, context_emb, goal_emb, past, known)
        if self.hold_actions:
            block_cost, f = cost_fn, self.frameskip
            # (B, S, H, A) -> (B, S, H, f*A): the block is the raw action repeated f times.
            cost_fn = lambda actions: block_cost(actions.repeat(1, 1, 1, f))  # noqa: E731
        # act() runs without autograd; a gradient solver (requires_grad) gets it back for its plan.
        grad = torch.enable_grad() if getattr(self.planner, "requires_grad", False) else contextlib.nullcontext()
        with grad:
            result = self.planner.plan(cost_fn, B, init=self._warm_start())
        self._prev_plan = result.actions
        plan = result.actions.repeat(1, 1, self.frameskip) if self.hold_actions else result.actions
        blocks = plan[:, : self.receding_horizon].detach().cpu().numpy()  # syncs the device
        raw = blocks.reshape(B, self.receding_horizon * self.frameskip, self.action_dim)
        self._queue = np.clip(raw, self.action_low, self.action_high).astype(np.float32)
        self._queue_pos = 0
        self.last_result = result
        self.num_plans += 1

    @torch.no_grad()
    def score(self, blocks: torch.Tensor) -> torch.Tensor:
        """The objective's cost of given action sequences, as the last plan's solver scored its candidates.

        Rolls the model out from the context embeddings, executed blocks and goal of the last
        `act` call that replanned (``last_result``), for every env of the batch.

        Args:
            blocks: float (B, N, H, frameskip * action_dim): N sequences of H full action
                blocks per env (raw actions; with ``hold_actions`` a planned action is its
                block's action repeated ``frameskip`` times, as ``last_result.actions`` are
                expanded). H is the planner's horizon, or any length for objectives
                without per-step weights.

        Returns:
            float (B, N) costs (lower is better).

        Raises:
            RuntimeError: no plan has been made since the last ``reset``.
            ValueError: ``blocks`` has another shape.
        """
        if self._last_inputs is None:
            raise RuntimeError("MPCPolicy.score: no plan yet since reset(); call act() first")
        context_emb, goal_emb, past, known = self._last_inputs
        B = context_emb.shape[0]
        if blocks.ndim != 4 or blocks.shape[0] != B or blocks.shape[3] != self.block_dim:
            raise ValueError(f"blocks must be (B, N, H, frameskip * action_dim) = ({B}, N, H, {self.block_dim}), "
                             f"got {tuple(blocks.shape)}")
        cost_fn = self.objective(self.model, context_emb, goal_emb, past, **known)
        return cost_fn(blocks.to(device=self.device, dtype=torch.float32))

    # no_grad, not inference_mode: a gradient solver's plan turns autograd back on in _replan,
    # which inference mode (and its inference tensors) would forbid.
    @torch.no_grad()
    def act(self, obs: np.ndarray, goal: np.ndarray, goal_state: np.ndarray | None = None,
            active: np.ndarray | None = None) -> np.ndarray:
        """One raw action per environment.

        Args:
            obs: uint8 (B, H, W, 3) current observation of each environment.
            goal: uint8 (B, H, W, 3) goal image of each environment.
            goal_state: optional float (B, G) goal layout of each environment (the env's
                ``goal_state``), for objectives with a ``goal_state`` argument (``state``).
            active: optional bool (B,), False for envs whose episode has ended: the model is
                not rolled out for them (their actions are returned but meaningless). The
                solver still runs for all B, so its memory and random draws, hence the
                plans of the active envs, are those of planning every env.

        Returns:
            float32 (B, action_dim) actions within [action_low, action_high]. The caller is
            expected to execute each returned action (the policy records them as history).
        """
        start = time.perf_counter()
        obs = self._check_pixels("obs", obs)
        goal = self._check_pixels("goal", goal)
        if goal.shape != obs.shape:
            raise ValueError(f"goal shape {goal.shape} must equal obs shape {obs.shape}")
        if self.batch_size is None:
            self.batch_size = obs.shape[0]
        if goal_state is not None:
            gs = np.asarray(goal_state, dtype=np.float32)
            if gs.ndim != 2 or gs.shape[0] != obs.shape[0] or not np.isfinite(gs).all():
                raise ValueError(f"goal_state must be finite float (B, G) with B={obs.shape[0]}, got shape {gs.shape}")
            self._goal_state = torch.from_numpy(gs).to(self.device)
        if obs.shape[0] != self.batch_size:
            raise ValueError(f"obs holds {obs.shape[0]} envs but the policy was reset for {self.batch_size}; call reset({obs.shape[0]})")
        if active is not None:
            active = np.asarray(active)
            if active.dtype != np.bool_ or active.shape != (self.batch_size,):
                raise ValueError(f"active must be a bool array of shape ({self.batch_size},), got {active.dtype} {active.shape}")
            active = torch.from_numpy(active.copy()).to(self.device)
        self._active = active

        f = self.frameskip
        if self._t % f == 0:  # block boundary
            if self._t > 0:
                executed = self._queue[:, self._queue_pos - f : self._queue_pos].reshape(self.batch_size, self.block_dim)
                self._block_history.append(torch.from_numpy(executed.copy()).to(self.device))
            self._emb_history.append(self._encode(obs))
        if self._queue_pos == self._queue.shape[1]:
            self._replan(goal)
            self.last_plan_seconds = time.perf_counter() - start
            self.plan_seconds += self.last_plan_seconds

        action = self._queue[:, self._queue_pos].copy()
        self._queue_pos += 1
        self._t += 1
        return action
