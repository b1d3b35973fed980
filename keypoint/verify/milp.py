"""The falsification MILP: argmax per heatmap over its surviving candidates, keypoint coordinates, and
the *violation* of the (joint or per-keypoint) specification as constraints.

Per keypoint k (:class:`~keypoint.verify.reachable.KeypointReach`): values ``w_i`` (the clean argmax
has ``w_c = 0``; others are variables in ``[lower_i, upper_i]``, inside their linear bands
``a_i·t + L_i <= w_i <= a_i·t + U_i`` of the cell ``t`` lies in (one binary per cell, shared by all
keypoints; ``t`` = the perturbation parameters), or exact network expressions), and
:func:`geo_rs.add_argmax` selects a maximiser (``Σ a_i = 1``; ties: any maximiser may be selected —
sound). The selected pixel's deviation enters each spec row as ``Σ_i a_i g_jk(Δ_i)``
(linear). The row set is violated when some row j reaches ``thr_j``
(:func:`~keypoint.verify.spec.violation_threshold`); with several rows one binary per row picks which.

Infeasible ⇒ no input of the set violates the spec (given sound reachable sets). Feasible ⇒ a candidate
assignment (a pixel per keypoint and a parameter vector ``t``) for the attack to realise.

:func:`max_row_values` is the bound-only check (no solver): if no row can reach its threshold even with
every keypoint at its worst candidate, the spec holds. :func:`brute_force_violation` enumerates every
pixel choice — the slow, obvious reference the tests compare the MILP with.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field

import numpy as np
import pulp

from .reachable import ReachableHeatmaps
from .spec import KeypointSpec, violation_threshold


@dataclass
class Rows:
    """Spec rows restricted to some keypoints: ``coefs[j][k]`` ``(n_k,)`` per candidate, ``thr[j]``."""

    coefs: list[dict[int, np.ndarray]]
    thr: list[float]
    keypoints: list[int]


@dataclass
class MilpOutcome:
    """What one MILP said. ``verdict``: a :class:`geo_rs.Verdict`; ``selected``: per keypoint in
    ``keypoints`` the chosen candidate's position (into ``survivors``); ``t``: the parameter values."""

    verdict: object
    keypoints: list[int]
    selected: dict[int, int] | None = None
    t: np.ndarray | None = None
    theta_delta: tuple | None = None
    n_binaries: int = 0
    seconds: float = 0.0
    status: str = ""
    proof: str = ""
    extra: dict = field(default_factory=dict)


def argmax_candidates(reach: ReachableHeatmaps, k: int) -> np.ndarray:
    """Positions (into survivors) that can be a maximiser by the interval bounds alone."""
    from geo_rs import prune_candidates

    r = reach.keypoints[k]
    return np.asarray(prune_candidates(list(r.lower), list(r.upper)), dtype=int)


def spec_rows(
    reach: ReachableHeatmaps,
    spec: KeypointSpec,
    scale: float,
    keypoints: list[int] | None = None,
    budgets: dict[int, float] | None = None,
    row_ids: list[int] | None = None,
) -> Rows:
    """Compile ``spec`` on the candidates of ``keypoints`` (default: all). ``budgets`` replaces
    ``b_j`` (the decoupled share); ``row_ids`` restricts to some rows."""
    K = reach.shape[0]
    g, b = spec.terms(K, scale)
    kps = list(range(K)) if keypoints is None else list(keypoints)
    ids = list(range(len(b))) if row_ids is None else list(row_ids)
    coefs, thr = [], []
    for j in ids:
        per = {}
        for k in kps:
            uv = reach.uv(k).astype(np.float64)
            d = uv - uv[0]
            per[k] = g(j, k, d[:, 0], d[:, 1])
        coefs.append(per)
        bj = float(b[j]) if budgets is None else float(budgets[j])
        thr.append(violation_threshold(list(per.values()), bj))
    return Rows(coefs, thr, kps)


def max_row_values(reach: ReachableHeatmaps, rows: Rows) -> np.ndarray:
    """Per row, the largest value any combination of possible maximisers reaches (interval relaxation)."""
    cand = {k: argmax_candidates(reach, k) for k in rows.keypoints}
    return np.array([sum(float(np.max(per[k][cand[k]])) for k in rows.keypoints) for per in rows.coefs])


def _cell_binaries(prob: pulp.LpProblem, reach: ReachableHeatmaps, t_vars: dict) -> list:
    """One binary per cell of ``t`` (none for a single cell); ``t`` lies in the chosen cell."""
    from geo_rs.bounds.milp_argmax import new_variable

    cells = reach.cells
    if cells is None or len(cells) == 1:
        return [1]  # t variables are created on use (white noise: only the pixels bands mention)
    for m in range(reach.n_params):
        if m not in t_vars:
            t_vars[m] = new_variable(prob, f"t{m}", 0.0, 1.0)
    z = [new_variable(prob, f"cell{c}", cat=pulp.LpBinary) for c in range(len(cells))]
    prob += pulp.lpSum(z) == 1, "one_cell"
    for m in range(reach.n_params):
        prob += (
            t_vars[m] >= pulp.lpSum(float(cells[c, m, 0]) * z[c] for c in range(len(cells))),
            f"cell_lo{m}",
        )
        prob += (
            t_vars[m] <= pulp.lpSum(float(cells[c, m, 1]) * z[c] for c in range(len(cells))),
            f"cell_hi{m}",
        )
    return z


def _band_constraints(prob, v, r, k: int, pos: int, t_vars: dict, z: list) -> None:
    """On cell c (``z_c = 1``): ``a_c·t + L_c <= v <= a_c·t + U_c``; relaxed by big-M elsewhere (the
    big-M is the band's largest excess over ``v``'s own bounds anywhere in ``[0, 1]^P``)."""
    from geo_rs.bounds.milp_argmax import new_variable

    for c in range(len(z)):
        coef = r.band_coef[c, pos]
        nz = np.flatnonzero(coef)
        for m in nz:
            if m not in t_vars:
                t_vars[m] = new_variable(prob, f"t{m}", 0.0, 1.0)
        terms = [(t_vars[m], float(coef[m])) for m in nz]
        lo_e = pulp.LpAffineExpression(terms, constant=float(r.band_lower[c, pos]))
        hi_e = pulp.LpAffineExpression(terms, constant=float(r.band_upper[c, pos]))
        if isinstance(z[c], int):
            prob += v >= lo_e, f"blo{k}_{pos}_{c}"
            prob += v <= hi_e, f"bhi{k}_{pos}_{c}"
            continue
        m_lo = max(float(r.band_lower[c, pos] + np.maximum(coef, 0).sum() - r.lower[pos]), 0.0)
        m_hi = max(float(r.upper[pos] - r.band_upper[c, pos] - np.minimum(coef, 0).sum()), 0.0)
        prob += v >= lo_e - m_lo * (1 - z[c]), f"blo{k}_{pos}_{c}"
        prob += v <= hi_e + m_hi * (1 - z[c]), f"bhi{k}_{pos}_{c}"


def _pixel_values(
    prob: pulp.LpProblem, reach: ReachableHeatmaps, k: int, t_vars: dict, z: list | None, exact: bool
) -> list:
    """The candidates' ``w`` values of keypoint k as pulp variables / expressions."""
    from geo_rs.bounds.milp_argmax import new_variable

    r = reach.keypoints[k]
    vals: list = [0.0]
    for pos in range(1, len(r.survivors)):
        v = new_variable(prob, f"w{k}_{pos}", float(r.lower[pos]), float(r.upper[pos]))
        if exact:
            out = reach.encoding.outputs
            hw = reach.shape[1] * reach.shape[2]
            prob += v == out[k * hw + int(r.survivors[pos])] - out[k * hw + r.clean], f"exact{k}_{pos}"
        elif r.band_coef is not None and z is not None:
            _band_constraints(prob, v, r, k, pos, t_vars, z)
        vals.append(v)
    return vals


def build_milp(
    reach: ReachableHeatmaps, rows: Rows, prob: pulp.LpProblem | None = None, mode: str | None = None
):
    """The falsification MILP for ``rows`` (see module docstring) → ``(prob, gadgets, t_vars)``.

    ``mode`` (default ``reach.level``): "interval" uses the bounds only, "linear" adds the bands,
    "exact" the network encoding (``reach.encoding``, built into ``prob`` beforehand)."""
    from geo_rs import add_argmax
    from geo_rs.bounds.milp_argmax import new_variable

    prob = prob if prob is not None else pulp.LpProblem("keypoint_violation", pulp.LpMaximize)
    t_vars: dict[int, pulp.LpVariable] = {}
    gadgets = {}
    mode = mode or reach.level
    bands = mode == "linear" and reach.n_params > 0 and reach.keypoints[0].band_coef is not None
    z = _cell_binaries(prob, reach, t_vars) if bands else None
    for k in rows.keypoints:
        r = reach.keypoints[k]
        vals = _pixel_values(prob, reach, k, t_vars, z, mode == "exact")
        gadgets[k] = add_argmax(prob, vals, list(r.lower), list(r.upper), name=f"am{k}")
    exprs = [pulp.lpSum(gadgets[k].selection_expr(per[k]) for k in rows.keypoints) for per in rows.coefs]
    if len(exprs) == 1:
        prob += exprs[0] >= rows.thr[0], "violation"
    else:
        pick = [new_variable(prob, f"row{j}", cat=pulp.LpBinary) for j in range(len(exprs))]
        prob += pulp.lpSum(pick) >= 1, "some_row"
        cand = {k: argmax_candidates(reach, k) for k in rows.keypoints}
        for j, (e, thr) in enumerate(zip(exprs, rows.thr)):
            lowest = sum(float(np.min(rows.coefs[j][k][cand[k]])) for k in rows.keypoints)
            big = max(thr - lowest, 0.0)
            prob += e >= thr - big * (1 - pick[j]), f"violation{j}"
    prob += pulp.lpSum([])  # feasibility problem: no objective
    return prob, gadgets, t_vars


def solve_rows(
    reach: ReachableHeatmaps,
    rows: Rows,
    solver: str,
    time_limit: float,
    make_prob=None,
    mode: str | None = None,
) -> MilpOutcome:
    """Bound check, then the MILP in ``mode`` (see :func:`build_milp`). ``make_prob()`` supplies a fresh
    problem holding the network encoding (exact mode)."""
    from geo_rs import Verdict, solve_milp

    t0 = time.perf_counter()
    reachable_max = max_row_values(reach, rows)
    live = [j for j in range(len(rows.thr)) if reachable_max[j] >= rows.thr[j]]
    if not live:
        return MilpOutcome(
            Verdict.CERTIFIED,
            rows.keypoints,
            seconds=time.perf_counter() - t0,
            status="bounds",
            proof="bounds",
        )
    rows = Rows([rows.coefs[j] for j in live], [rows.thr[j] for j in live], rows.keypoints)
    mode = mode or reach.level
    prob = make_prob() if mode == "exact" else None
    prob, gadgets, t_vars = build_milp(reach, rows, prob, mode)
    res = solve_milp(prob, solver=solver, time_limit=time_limit)
    out = MilpOutcome(
        res.verdict,
        rows.keypoints,
        n_binaries=res.n_binaries,
        seconds=time.perf_counter() - t0,
        status=f"{res.status}/{res.solution_status}",
        proof="milp" if res.certified else "",
        extra={
            "solve_seconds": res.seconds,
            "n_constraints": res.n_constraints,
            "n_variables": res.n_variables,
            "solver": res.solver,
            "mode": mode,
        },
    )
    if res.verdict is Verdict.COUNTEREXAMPLE:
        out.selected = {k: int(gadgets[k].selected()) for k in rows.keypoints}
        if reach.n_params and mode == "linear":
            t = np.full(reach.n_params, 0.5)
            for m, var in t_vars.items():
                if var.varValue is not None:
                    t[m] = min(max(float(var.varValue), 0.0), 1.0)
            out.t = t
        if mode == "exact":
            enc = reach.encoding
            theta = [v.varValue or 0.0 for v in enc.theta] if enc.theta else None
            delta = [v.varValue or 0.0 for v in enc.delta] if enc.delta is not None else None
            out.theta_delta = (theta, delta)
    return out


# ------------------------------------------------------------------------------------------ reference
def brute_force_violation(
    lower: list[np.ndarray],
    upper: list[np.ndarray],
    shape: tuple[int, int, int],
    clean: np.ndarray,
    spec: KeypointSpec,
    scale: float = 1.0,
    keypoints: list[int] | None = None,
) -> tuple[bool, tuple | None]:
    """Reference for the interval level: enumerate every choice of one pixel per heatmap.

    ``lower[k], upper[k]`` ``(h·w,)`` are bounds of the differences ``w_i = f_i − f_c`` of *all* pixels of
    heatmap k (``[0, 0]`` at the clean argmax). A choice is realisable iff each chosen pixel can be a
    maximiser (``upper_i >= max_j lower_j``; heatmaps are independent at this level). Returns
    ``(violated, a violating choice of flat indices or None)``."""
    K, h, w = shape
    kps = list(range(K)) if keypoints is None else keypoints
    choices = [np.flatnonzero(upper[k] >= lower[k].max()) for k in kps]
    cuv = np.stack([clean % w, clean // w], 1)
    for combo in itertools.product(*choices):
        new = cuv.copy()
        for k, i in zip(kps, combo):
            new[k] = (i % w, i // w)
        if spec.violated(cuv, new, scale):
            return True, combo
    return False, None
