"""Planning in a world model's latent space: objectives, solvers (``planners.get(NAME)``:
cem, icem, mppi, gd, cem_gd, random_shooting) and batched MPC.

``planners`` sees a world model only through the ``WorldModel`` protocol (``encode``,
``rollout``, ``config.frameskip/action_dim/context``) and never reads files or datasets.
"""

from planners.base import CostFn, ModelConfigLike, Planner, PlanResult, WorldModel
from planners.cem import CEM
from planners.cem_gd import CEMGD
from planners.gd import GD
from planners.icem import ICEM
from planners.mpc import MPCPolicy
from planners.mppi import MPPI
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
from planners.random_shooting import RandomShooting
from planners.registry import (
    SOLVERS,
    UnknownSolverError,
    available,
    get,
    parse_options,
    solver_class,
    solver_options,
)
from planners.solver import NonDifferentiableCostError, Solver

__all__ = [
    "CEM",
    "CEMGD",
    "GD",
    "ICEM",
    "MPPI",
    "NonDifferentiableCostError",
    "RandomShooting",
    "SOLVERS",
    "Solver",
    "UnknownSolverError",
    "available",
    "get",
    "parse_options",
    "solver_class",
    "solver_options",
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
