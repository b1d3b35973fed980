"""MILP gadgets for ``max`` / ``argmax`` over candidates with bounds (MIPVerify's ``maximum``).

Given candidate values ``x_i`` (pulp variables or affine expressions) with sound bounds
``l_i <= x_i <= u_i``:

* pruning: a candidate with ``u_i < max_j l_j`` can never be the maximum and is dropped (ties, ``u_i ==
  max_j l_j``, are kept: either candidate may be selected);
* one binary ``a_i`` per surviving candidate, ``Σ a_i = 1``;
* ``m >= x_i`` for every survivor and ``m <= x_i + (1 - a_i)(max_{j≠i} u_j - l_i)``.

Hence ``a_i = 1`` forces ``m = x_i >= x_j`` for all j: the selected candidate is *a* maximiser, and every
maximiser (ties included) is selectable — the sound reading of argmax for a verifier (a certificate must
hold whichever tied candidate the network would pick). A single survivor needs no binary: its
selection is the constant 1.

The keypoint verifier uses :func:`add_argmax` on heatmap pixels and then ``Σ a_i · (u_i, v_i)`` as the
(linear) keypoint location. Candidates with *linear* bounds (e.g. CROWN's linear bounds in the
perturbation parameters) can be created with :func:`add_bounded_variables`.

Example::

    >>> import pulp
    >>> from geo_rs.bounds import add_argmax, add_bounded_variables, solve_milp
    >>> prob = pulp.LpProblem("demo", pulp.LpMaximize)
    >>> xs = add_bounded_variables(prob, [0, 0.5, -3], [1, 2, 0.2], name="x")
    >>> g = add_argmax(prob, xs, [0, 0.5, -3], [1, 2, 0.2], name="am")
    >>> g.survivors   # x2 can never be the max (0.2 < 0.5)
    [0, 1]
    >>> prob += g.binaries[0]          # can candidate 0 be the argmax?
    >>> r = solve_milp(prob)
    >>> r.verdict.name, g.selected()
    ('COUNTEREXAMPLE', 0)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulp

from ..errors import UserError

Value = pulp.LpVariable | pulp.LpAffineExpression | float | int


def new_variable(
    prob: pulp.LpProblem,
    name: str,
    lo: float | None = None,
    hi: float | None = None,
    cat: str = pulp.LpContinuous,
) -> pulp.LpVariable:
    """A variable attached to ``prob`` (``prob.add_variable`` on PuLP >= 3.3, which deprecates the
    free-standing ``LpVariable(...)`` constructor)."""
    if hasattr(prob, "add_variable"):
        return prob.add_variable(name, lowBound=lo, upBound=hi, cat=cat)
    return pulp.LpVariable(name, lowBound=lo, upBound=hi, cat=cat)


@dataclass
class ArgmaxGadget:
    """What :func:`add_argmax` added.

    Attributes:
        survivors: indices (into the candidate list) that may be the maximum.
        binaries: ``{index: a_i}`` for survivors; ``a_i`` is a pulp binary, or the int 1 for a lone survivor.
        maximum: pulp expression equal to ``max_i x_i`` in every feasible assignment.
        n_binaries: number of binaries added.
    """

    survivors: list[int]
    binaries: dict[int, pulp.LpVariable | int]
    maximum: pulp.LpAffineExpression | pulp.LpVariable
    n_binaries: int

    def selected(self) -> int | None:
        """Index of the selected candidate in the last solved assignment (None before solving)."""
        for i, a in self.binaries.items():
            val = a if isinstance(a, int) else a.varValue
            if val is not None and val > 0.5:
                return i
        return None

    def selection_expr(self, weights: Sequence[float]) -> pulp.LpAffineExpression:
        """``Σ_i a_i · weights[i]`` (e.g. the selected pixel's u coordinate): linear in the binaries."""
        return pulp.lpSum(float(weights[i]) * a for i, a in self.binaries.items())


def prune_candidates(lower: Sequence[float], upper: Sequence[float]) -> list[int]:
    """Indices ``i`` with ``upper[i] >= max_j lower[j]`` (the candidates that can be a maximum)."""
    if len(lower) != len(upper) or not len(lower):
        raise UserError(
            f"argmax needs as many lower as upper bounds (>= 1); got {len(lower)} and {len(upper)}"
        )
    lo = [float(v) for v in lower]
    hi = [float(v) for v in upper]
    bad = [i for i in range(len(lo)) if not lo[i] <= hi[i]]
    if bad:
        raise UserError(f"argmax candidate bounds need lower <= upper; violated at indices {bad[:5]}")
    best_lower = max(lo)
    return [i for i in range(len(lo)) if hi[i] >= best_lower]


def add_argmax(
    prob: pulp.LpProblem,
    values: Sequence[Value],
    lower: Sequence[float],
    upper: Sequence[float],
    name: str = "argmax",
) -> ArgmaxGadget:
    """Add the argmax gadget for ``values`` (with sound bounds) to ``prob``; see the module docstring.

    Args:
        prob: the problem to extend. values: ``n`` pulp variables / affine expressions / numbers.
        lower, upper: ``n`` floats, sound bounds of each value on the set the MILP ranges over.
        name: prefix of the added variables and constraints (must be unique within ``prob``).

    Returns:
        :class:`ArgmaxGadget` with the selection binaries and the maximum expression.
    """
    if len(values) != len(lower):
        raise UserError(f"argmax: {len(values)} values but {len(lower)} bounds")
    survivors = prune_candidates(lower, upper)
    lo = [float(lower[i]) for i in survivors]
    hi = [float(upper[i]) for i in survivors]
    if len(survivors) == 1:
        i = survivors[0]
        expr = (
            values[i]
            if not isinstance(values[i], (int, float))
            else pulp.LpAffineExpression(constant=values[i])
        )
        return ArgmaxGadget(survivors, {i: 1}, expr, 0)
    m = new_variable(prob, f"{name}_max", max(lo), max(hi))
    binaries = {i: new_variable(prob, f"{name}_a{i}", cat=pulp.LpBinary) for i in survivors}
    prob += pulp.lpSum(binaries.values()) == 1, f"{name}_one"
    for pos, i in enumerate(survivors):
        others = hi[:pos] + hi[pos + 1 :]
        big_m = max(max(others) - lo[pos], 0.0)
        prob += m >= values[i], f"{name}_ge{i}"
        prob += m <= values[i] + big_m * (1 - binaries[i]), f"{name}_le{i}"
    return ArgmaxGadget(survivors, binaries, m, len(binaries))


def add_max(
    prob: pulp.LpProblem,
    values: Sequence[Value],
    lower: Sequence[float],
    upper: Sequence[float],
    name: str = "max",
) -> tuple[pulp.LpAffineExpression | pulp.LpVariable, ArgmaxGadget]:
    """``max_i values[i]`` as a pulp expression (exact), plus the gadget that encodes it."""
    g = add_argmax(prob, values, lower, upper, name)
    return g.maximum, g


def add_bounded_variables(
    prob: pulp.LpProblem,
    lower: Sequence[float],
    upper: Sequence[float],
    lower_exprs: Sequence[pulp.LpAffineExpression] | None = None,
    upper_exprs: Sequence[pulp.LpAffineExpression] | None = None,
    name: str = "v",
) -> list[pulp.LpVariable]:
    """Continuous variables ``v_i ∈ [lower_i, upper_i]``, optionally also between linear bounds
    ``lower_exprs[i] <= v_i <= upper_exprs[i]`` (expressions of other variables, e.g. perturbation
    parameters). Useful as argmax candidates described only by their bounds."""
    out = []
    for i, (lo, hi) in enumerate(zip(lower, upper)):
        if not float(lo) <= float(hi):
            raise UserError(f"{name}[{i}]: lower {lo} > upper {hi}")
        v = new_variable(prob, f"{name}_{i}", float(lo), float(hi))
        if lower_exprs is not None:
            prob += v >= lower_exprs[i], f"{name}_lin_lo{i}"
        if upper_exprs is not None:
            prob += v <= upper_exprs[i], f"{name}_lin_hi{i}"
        out.append(v)
    return out
