"""Planning in a world model's latent space: objectives, the CEM solver and batched MPC.

``planners`` sees a world model only through the ``WorldModel`` protocol (``encode``,
``rollout``, ``config.frameskip/action_dim/context``) and never reads files or datasets.
"""

from planners.base import CostFn, ModelConfigLike, Planner, PlanResult, WorldModel
from planners.cem import CEM
from planners.mpc import MPCPolicy
from planners.objectives import (
    OBJECTIVES,
    TERMS,
    CompositeObjective,
    Objective,
    StateProbe,
    parse_objective,
    parse_step_weights,
    UnknownObjectiveError,
    all_steps_l2,
    get_objective,
    terminal_l2,
)

__all__ = [
    "CEM",
    "CostFn",
    "MPCPolicy",
    "ModelConfigLike",
    "OBJECTIVES",
    "TERMS",
    "CompositeObjective",
    "StateProbe",
    "parse_objective",
    "parse_step_weights",
    "Objective",
    "PlanResult",
    "Planner",
    "UnknownObjectiveError",
    "WorldModel",
    "all_steps_l2",
    "get_objective",
    "terminal_l2",
]
