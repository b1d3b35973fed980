"""Solving pulp MILPs and reporting the outcome without ever confusing its meaning.

A *falsification* MILP encodes "some input of the set violates the property". Its outcome is:

* ``CERTIFIED``: the solver proved the MILP infeasible — no input violates the property.
* ``COUNTEREXAMPLE``: the solver found a feasible assignment (a candidate counterexample); the concrete
  input is attached when the encoding can recover it, and ``confirmed`` says whether a real forward pass
  of that input violates the property too.
* ``UNKNOWN``: anything else — time-out without a solution, solver error, unbounded, undefined.

PuLP reports an objective value even when nothing was solved, so the status is always checked.

Example::

    >>> import pulp
    >>> from geo_rs.bounds import solve_milp, Verdict
    >>> prob = pulp.LpProblem("p", pulp.LpMinimize)
    >>> v = prob.add_variable("v", 0, 1)
    >>> prob += v
    >>> prob += v >= 2
    >>> solve_milp(prob).verdict is Verdict.CERTIFIED
    True
"""

from __future__ import annotations

import enum
import time
import warnings
from dataclasses import dataclass, field

import pulp
from torch import Tensor

from ..errors import UserError

SOLVERS = ("CBC", "HiGHS")


class Verdict(enum.Enum):
    CERTIFIED = "certified"
    COUNTEREXAMPLE = "counterexample"
    UNKNOWN = "unknown"


@dataclass
class MilpResult:
    """Outcome of one MILP solve.

    Attributes:
        verdict: CERTIFIED (infeasible), COUNTEREXAMPLE (feasible point found) or UNKNOWN.
        optimal: True when the solver proved optimality (only then is ``objective`` the optimum).
        objective: objective value of the returned assignment (None without one).
        assignment: ``{variable name: value}`` of the returned assignment (None without one).
        counterexample: a concrete input realising the assignment (filled by encoders that can).
        confirmed: whether a forward pass of ``counterexample`` really violates the property
            (None: unchecked).
        solver, status, solution_status: solver name and pulp's raw status strings.
        seconds, n_binaries, n_constraints, n_variables: size and cost of the solve.
    """

    verdict: Verdict
    optimal: bool
    objective: float | None
    assignment: dict[str, float] | None
    solver: str
    status: str
    solution_status: str
    seconds: float
    n_binaries: int
    n_constraints: int
    n_variables: int
    counterexample: Tensor | None = None
    confirmed: bool | None = None
    extra: dict = field(default_factory=dict)

    @property
    def certified(self) -> bool:
        return self.verdict is Verdict.CERTIFIED


def make_solver(solver: str = "CBC", time_limit: float | None = None, msg: bool = False, threads: int = 1):
    """A pulp solver: ``"CBC"`` (bundled, default) or ``"HiGHS"`` (highspy). Gaps are set to ~0 so an
    "optimal" status means the optimum (HiGHS defaults to a 1e-4 relative gap)."""
    name = str(solver).strip().lower()
    if time_limit is not None and not time_limit > 0:
        raise UserError(f"MILP time_limit must be > 0 seconds, got {time_limit}")
    if name == "cbc":
        # PULP_CBC_CMD (the bundled CBC binary) warns that PuLP 4 will drop it; it is what ships here.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return pulp.PULP_CBC_CMD(msg=msg, timeLimit=time_limit, gapRel=0.0, gapAbs=1e-9, threads=threads)
    if name == "highs":
        return pulp.HiGHS(msg=msg, timeLimit=time_limit, gapRel=0.0, gapAbs=1e-9, threads=threads)
    raise UserError(f"unknown MILP solver {solver!r}; choose one of {', '.join(SOLVERS)}")


def count_binaries(prob: pulp.LpProblem) -> int:
    return sum(
        1
        for v in prob.variables()
        if v.cat == pulp.LpBinary or (v.cat == pulp.LpInteger and v.lowBound == 0 and v.upBound == 1)
    )


def solve_milp(
    prob: pulp.LpProblem, solver: str = "CBC", time_limit: float | None = None, msg: bool = False
) -> MilpResult:
    """Solve ``prob`` and classify the outcome (see module docstring).

    An infeasibility reported at (or after) the time limit is treated as UNKNOWN: some solver/pulp
    combinations report "infeasible" for "stopped before finding a solution".
    """
    backend = make_solver(solver, time_limit, msg)
    n_bin = count_binaries(prob)
    start = time.perf_counter()
    try:
        prob.solve(backend)
        error = None
    except pulp.PulpSolverError as exc:  # solver crashed / not available
        error = str(exc)
    seconds = time.perf_counter() - start
    status = pulp.LpStatus.get(prob.status, str(prob.status))
    sol_status = pulp.LpSolution.get(prob.sol_status, str(prob.sol_status))
    timed_out = time_limit is not None and seconds >= 0.98 * time_limit
    has_solution = error is None and prob.sol_status in (
        pulp.LpSolutionOptimal,
        pulp.LpSolutionIntegerFeasible,
    )
    if error is None and prob.status == pulp.LpStatusInfeasible and not timed_out:
        verdict = Verdict.CERTIFIED
    elif has_solution and prob.status in (pulp.LpStatusOptimal, pulp.LpStatusNotSolved):
        verdict = Verdict.COUNTEREXAMPLE
    else:
        verdict = Verdict.UNKNOWN
    if verdict is Verdict.COUNTEREXAMPLE:
        # A solver stopped on time may hand back a non-integral point (seen with CBC): not a solution.
        frac = [
            v.name
            for v in prob.variables()
            if v.cat == pulp.LpInteger
            and v.varValue is not None
            and abs(v.varValue - round(v.varValue)) > 1e-5
        ]
        if frac:
            verdict = Verdict.UNKNOWN
            sol_status = f"{sol_status} (rejected: {len(frac)} fractional integer variables)"
    assignment = objective = None
    if verdict is Verdict.COUNTEREXAMPLE:
        assignment = {v.name: v.varValue for v in prob.variables()}
        objective = pulp.value(prob.objective) if prob.objective is not None else None
    return MilpResult(
        verdict=verdict,
        optimal=verdict is Verdict.COUNTEREXAMPLE
        and prob.status == pulp.LpStatusOptimal
        and prob.sol_status == pulp.LpSolutionOptimal,
        objective=None if objective is None else float(objective),
        assignment=assignment,
        solver=solver,
        status=status if error is None else f"error: {error[:200]}",
        solution_status=sol_status,
        seconds=seconds,
        n_binaries=n_bin,
        n_constraints=prob.numConstraints(),
        n_variables=len(prob.variables()),
    )
