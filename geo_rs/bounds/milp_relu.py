"""Exact MILP encoding of small ReLU networks over a perturbation set (Tjeng et al. big-M).

:func:`encode_network` turns ``model`` at image ``x`` under a perturbation into a pulp problem whose
feasible points are exactly the (input parameters, network outputs) pairs of the set:

* inputs: the perturbation parameters θ (brightness/contrast) and per-pixel noise δ are variables; the
  pixel ``clamp(x + Σ θ_k A_k + δ, 0, 1)`` is exact (a clamp is two ReLUs; pixels that never clip are
  plain affine expressions, pixels that always clip are constants);
* consecutive affine layers (Linear, Conv2d, ConvTranspose2d, BatchNorm in eval, AvgPool2d, Flatten,
  Identity, Dropout in eval) are merged into one dense affine map (probed column by column: for small
  networks only);
* ReLU: big-M ``y >= z, y >= 0, y <= u·a, y <= z - l(1 - a)``, with pre-activation bounds ``[l, u]`` the
  intersection of interval arithmetic on the MILP's own variables and CROWN (or IBP) bounds from
  :func:`geo_rs.layer_bounds`; stable neurons get no binary;
* MaxPool2d: the exact max gadget of :mod:`geo_rs.bounds.milp_argmax` per window.

:func:`output_extremum` maximises / minimises one output (or ``c · f``) exactly; :func:`verify_linear`
certifies ``c · f(x') > threshold`` on the whole set (or returns a counterexample).

Example::

    >>> import torch
    >>> from torch import nn
    >>> from geo_rs import Brightness, output_extremum
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 2)).eval()
    >>> r = output_extremum(net, torch.rand(1, 1, 4, 4), Brightness(0.05), output=0, sense="max")
    >>> r.exact
    True
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pulp
import torch
from torch import Tensor, nn

from ..errors import UserError
from .milp_argmax import add_max, new_variable
from .milp_result import MilpResult, Verdict, solve_milp
from .output_bounds import UnsupportedModelError, layer_bounds
from .perturbations import Perturbation, check_image

AFFINE_LAYERS = (
    nn.Linear,
    nn.Conv2d,
    nn.ConvTranspose2d,
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.AvgPool2d,
    nn.Flatten,
    nn.Identity,
    nn.Dropout,
    nn.Upsample,  # nearest and (bi)linear interpolation are linear maps
)
BOUND_MARGIN = 1e-5  # relative+absolute widening of float32 pre-activation bounds used by the MILP
MAX_DENSE = 20_000_000  # entries of one merged affine map; beyond that the network is too big for a MILP


def _leaf_layers(model: nn.Module) -> list[nn.Module]:
    """Layers of a Sequential (nested ones flattened), or of a module whose only child is one."""
    seq = model
    if not isinstance(seq, nn.Sequential):
        kids = list(model.children())
        if len(kids) == 1 and isinstance(kids[0], nn.Sequential):
            seq = kids[0]
        else:
            raise UserError(
                "MILP encoding needs an nn.Sequential model (or a module wrapping one); "
                f"got {type(model).__name__}"
            )
    out: list[nn.Module] = []
    for layer in seq:
        out.extend(_leaf_layers(layer) if isinstance(layer, nn.Sequential) else [layer])
    return out


def _blocks(model: nn.Module) -> list[tuple[str, list[nn.Module]]]:
    """Group layers into ("affine", [...]) / ("relu", [m]) / ("maxpool", [m]) blocks."""
    blocks: list[tuple[str, list[nn.Module]]] = []
    for layer in _leaf_layers(model):
        if isinstance(layer, AFFINE_LAYERS):
            if blocks and blocks[-1][0] == "affine":
                blocks[-1][1].append(layer)
            else:
                blocks.append(("affine", [layer]))
        elif isinstance(layer, nn.ReLU):
            blocks.append(("relu", [layer]))
        elif isinstance(layer, nn.MaxPool2d):
            blocks.append(("maxpool", [layer]))
        else:
            raise UserError(
                f"MILP encoding does not support layer {type(layer).__name__}; "
                "supported: ReLU, MaxPool2d and "
                "affine layers (Linear, Conv2d, ConvTranspose2d, BatchNorm (eval), AvgPool2d, Flatten)"
            )
    return blocks


def dense_affine(
    layers: list[nn.Module], in_shape: tuple[int, ...], dtype=torch.float64, device=None
) -> tuple[Tensor, Tensor, tuple[int, ...]]:
    """``(W (m, n), b (m,), out_shape)`` with ``f(v) = W v + b`` on flattened inputs, by probing."""
    n = 1
    for d in in_shape:
        n *= d
    seq = nn.Sequential(*layers)
    with torch.no_grad():
        zero = torch.zeros((1, *in_shape), device=device)
        b = seq(zero)
        out_shape = tuple(b.shape[1:])
        m = b[0].numel()
        if n * m > MAX_DENSE:
            raise UserError(f"network too large for the MILP encoder: an affine block maps {n} -> {m} values")
        eye = torch.eye(n, device=device).reshape(n, *in_shape)
        cols = seq(eye).reshape(n, m) - b.reshape(1, m)
    return cols.T.to(dtype).cpu(), b.reshape(m).to(dtype).cpu(), out_shape


@dataclass
class NetworkEncoding:
    """A network encoded in a pulp problem (see :func:`encode_network`).

    Attributes:
        prob: the problem (no objective yet). outputs: pulp expressions of the ``n_out`` outputs.
        output_bounds: ``(lo, hi)`` lists of sound bounds of each output used by the encoding.
        theta: parameter variables (brightness/contrast), delta: per-pixel noise variables (or None).
        n_binaries: binaries added for clamps, ReLUs and max-pools. n_unstable: unstable ReLUs.
    """

    prob: pulp.LpProblem
    outputs: list
    output_bounds: tuple[list[float], list[float]]
    theta: list[pulp.LpVariable]
    delta: list[pulp.LpVariable] | None
    x: Tensor
    perturbation: Perturbation
    n_binaries: int = 0
    n_unstable: int = 0
    stats: dict = field(default_factory=dict)

    def recover_input(self) -> Tensor:
        """The concrete input ``(1, *image)`` realising the last solution's θ, δ (clamped to the box)."""
        fam = self.perturbation.family(self.x)
        theta = None
        if self.theta:
            vals = [v.varValue or 0.0 for v in self.theta]
            theta = torch.tensor(vals, dtype=self.x.dtype).clamp(fam.theta_lo.cpu(), fam.theta_hi.cpu())
            theta = theta.reshape(1, -1).to(self.x.device)
        delta = None
        if self.delta is not None:
            d = torch.tensor([v.varValue or 0.0 for v in self.delta], dtype=self.x.dtype)
            delta = d.clamp(-fam.noise, fam.noise).reshape(self.x.shape).to(self.x.device)
        return self.perturbation.apply(self.x, theta, delta)


class _Builder:
    def __init__(self, prob: pulp.LpProblem, name: str) -> None:
        self.prob, self.name = prob, name
        self.n_bin = 0
        self.n_unstable = 0
        self.count = 0

    def fresh(self, tag: str, lo: float | None = None, hi: float | None = None, cat=pulp.LpContinuous):
        self.count += 1
        return new_variable(self.prob, f"{self.name}_{tag}{self.count}", lo, hi, cat)

    def relu(self, z, lo: float, hi: float, tag: str = "r"):
        """Exact ``max(z, 0)`` of an expression with bounds [lo, hi]."""
        if hi <= 0:
            return 0.0
        if lo >= 0:
            return z
        self.n_unstable += 1
        self.n_bin += 1
        y = self.fresh(tag, 0.0, hi)
        a = self.fresh(tag + "a", cat=pulp.LpBinary)
        p = self.prob
        p += y >= z
        p += y <= hi * a
        p += y <= z - lo * (1 - a)
        return y

    def materialize(self, expr, lo: float, hi: float):
        """A single variable equal to ``expr`` (keeps later sums short)."""
        if isinstance(expr, (int, float)) or isinstance(expr, pulp.LpVariable):
            return expr
        v = self.fresh("v", lo, hi)
        self.prob += v == expr
        return v


def _affine(values: list, W: Tensor, b: Tensor) -> list:
    Wn = W.numpy()
    out = []
    for j in range(Wn.shape[0]):
        # A variable may feed several inputs (shared pixel clamps): sum its coefficients here, since
        # LpAffineExpression([(v, a), (v, b)]) keeps only the last pair.
        coefs: dict = {}
        const = float(b[j])
        for i in Wn[j].nonzero()[0]:
            v = values[i]
            c = float(Wn[j, i])
            if isinstance(v, (int, float)):
                const += c * v
            else:
                coefs[v] = coefs.get(v, 0.0) + c
        terms = [(v, c) for v, c in coefs.items() if c != 0.0]
        out.append(pulp.LpAffineExpression(terms, constant=const) if terms else const)
    return out


def _ibp(W: Tensor, b: Tensor, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor]:
    wp, wn = W.clamp(min=0), W.clamp(max=0)
    return wp @ lo + wn @ hi + b, wp @ hi + wn @ lo + b


def encode_network(
    model: nn.Module,
    x: Tensor,
    perturbation: Perturbation,
    bounds_method: str = "CROWN",
    prob: pulp.LpProblem | None = None,
    name: str = "net",
) -> NetworkEncoding:
    """Encode ``model`` on the set ``perturbation`` around one image ``x`` ``(1, *image)`` into ``prob``.

    ``bounds_method`` ("CROWN", "CROWN-IBP", "IBP", "alpha-CROWN" or None for interval arithmetic only)
    supplies the pre-activation bounds; tighter bounds give fewer unstable ReLUs, i.e. fewer binaries.
    """
    was_training = model.training
    model.eval()
    try:
        return _encode_network(model, x, perturbation, bounds_method, prob, name)
    finally:
        model.train(was_training)


def _encode_network(model, x, perturbation, bounds_method, prob, name) -> NetworkEncoding:
    check_image(x)
    if x.shape[0] != 1:
        raise UserError(f"encode_network takes one image (1, ...); got batch {x.shape[0]}")
    blocks = _blocks(model)
    prob = prob if prob is not None else pulp.LpProblem(name, pulp.LpMaximize)
    bld = _Builder(prob, name)
    device = x.device
    fam = perturbation.family(x)
    crown = []
    bounds_used = "interval arithmetic"
    if bounds_method is not None:
        try:
            crown = layer_bounds(model, x, perturbation, bounds_method).pre_activations
            bounds_used = f"{bounds_method} ∩ interval arithmetic"
        except UnsupportedModelError as exc:  # e.g. bilinear Upsample: still exact, only more binaries
            bounds_used = f"interval arithmetic ({bounds_method} unavailable: {str(exc)[:120]})"
    n_relu = sum(1 for kind, _ in blocks if kind == "relu")
    if crown and len(crown) != n_relu:
        crown = []  # cannot match them to layers: rely on interval arithmetic (still sound)
        bounds_used = "interval arithmetic (pre-activation bounds did not match the ReLU layers)"

    # --- input layer: θ, δ and clamped pixels -------------------------------------------------------
    xf = x[0].flatten().double().cpu()
    n_px = xf.numel()
    theta = [
        new_variable(prob, f"{name}_theta{k}", float(fam.theta_lo[k]), float(fam.theta_hi[k]))
        for k in range(fam.n_params)
    ]
    delta = None
    if fam.noise > 0:
        delta = [new_variable(prob, f"{name}_delta{i}", -fam.noise, fam.noise) for i in range(n_px)]
    dirs = fam.directions[0].reshape(fam.n_params, n_px).double().cpu()
    zlo, zhi = xf - fam.noise, xf + fam.noise
    for k in range(fam.n_params):
        a = dirs[k]
        zlo = zlo + torch.minimum(a * fam.theta_lo[k].item(), a * fam.theta_hi[k].item())
        zhi = zhi + torch.maximum(a * fam.theta_lo[k].item(), a * fam.theta_hi[k].item())
    values: list = []
    # Without per-pixel noise, pixels with the same value and directions are the same function of θ
    # (e.g. every background pixel under brightness is clamp(b)): encode each such clamp once.
    shared: dict[tuple, object] = {}
    for i in range(n_px):
        key = (float(xf[i]), tuple(float(dirs[k, i]) for k in range(fam.n_params)))
        if delta is None and key in shared:
            values.append(shared[key])
            continue
        terms = [(theta[k], float(dirs[k, i])) for k in range(fam.n_params) if float(dirs[k, i]) != 0.0]
        if delta is not None:
            terms.append((delta[i], 1.0))
        z = pulp.LpAffineExpression(terms, constant=float(xf[i])) if terms else float(xf[i])
        lo_i, hi_i = float(zlo[i]), float(zhi[i])
        if hi_i <= 0:
            values.append(0.0)
        elif lo_i >= 1:
            values.append(1.0)
        else:
            # clamp(z, 0, 1) = relu(z) - relu(relu(z) - 1), each ReLU exact with its bounds.
            r = bld.relu(z, lo_i, hi_i, "px")
            r_hi = max(hi_i, 0.0)
            r_lo = max(lo_i, 0.0)
            if r_hi > 1:
                over = bld.relu(r - 1, r_lo - 1, r_hi - 1, "pxc") if not isinstance(r, float) else 0.0
                r = r - over
            values.append(bld.materialize(r, min(max(lo_i, 0.0), 1.0), min(max(hi_i, 0.0), 1.0)))
        shared[key] = values[-1]
    lo_t = zlo.clamp(0, 1)
    hi_t = zhi.clamp(0, 1)
    n_clamp_bin = bld.n_bin
    bld.n_unstable = 0

    # --- layers ---------------------------------------------------------------------------------------
    shape = tuple(x.shape[1:])
    relu_idx = 0
    for kind, layers in blocks:
        if kind == "affine":
            W, b, shape = dense_affine(layers, shape, device=device)
            values = _affine(values, W, b)
            lo_t, hi_t = _ibp(W, b, lo_t, hi_t)
        elif kind == "relu":
            if crown:
                c = crown[relu_idx]
                # auto_LiRPA bounds are float32 and can be ~1e-7 too tight against the float64 MILP
                # arithmetic; a MILP that excludes a real input by a rounding error is unsound, so
                # widen them before intersecting with our own (float64) interval bounds.
                c_lo = c.lower.reshape(-1).double().cpu()
                c_hi = c.upper.reshape(-1).double().cpu()
                lo_t = torch.maximum(lo_t, c_lo - BOUND_MARGIN * (1 + c_lo.abs()))
                hi_t = torch.minimum(hi_t, c_hi + BOUND_MARGIN * (1 + c_hi.abs()))
                hi_t = torch.maximum(hi_t, lo_t)
            relu_idx += 1
            values = [
                bld.materialize(
                    bld.relu(v, float(lo_t[j]), float(hi_t[j])),
                    max(float(lo_t[j]), 0.0),
                    max(float(hi_t[j]), 0.0),
                )
                for j, v in enumerate(values)
            ]
            lo_t, hi_t = lo_t.clamp(min=0), hi_t.clamp(min=0)
        else:  # maxpool
            pool = layers[0]
            idx = torch.arange(1, len(values) + 1, dtype=torch.float64).reshape(1, *shape)
            win = nn.functional.unfold(
                idx.reshape(shape[0], 1, *shape[1:]),
                pool.kernel_size,
                dilation=pool.dilation,
                padding=pool.padding,
                stride=pool.stride,
            )
            with torch.no_grad():
                out_shape = tuple(pool(torch.zeros(1, *shape)).shape[1:])
            new_vals, new_lo, new_hi = [], [], []
            for ch in range(shape[0]):
                for w in range(win.shape[2]):
                    members = [int(v) - 1 for v in win[ch, :, w].tolist() if v > 0]
                    mv = [values[j] for j in members]
                    ml = [float(lo_t[j]) for j in members]
                    mh = [float(hi_t[j]) for j in members]
                    bld.count += 1
                    expr, gadget = add_max(prob, mv, ml, mh, name=f"{name}_mp{bld.count}")
                    bld.n_bin += gadget.n_binaries
                    new_vals.append(expr)
                    new_lo.append(max(ml))
                    new_hi.append(max(mh))
            values, shape = new_vals, out_shape
            lo_t, hi_t = torch.tensor(new_lo, dtype=torch.float64), torch.tensor(new_hi, dtype=torch.float64)
    n_unstable = bld.n_unstable
    return NetworkEncoding(
        prob,
        values,
        (lo_t.tolist(), hi_t.tolist()),
        theta,
        delta,
        x,
        perturbation,
        n_binaries=bld.n_bin,
        n_unstable=n_unstable,
        stats={"clamp_binaries": n_clamp_bin, "relus": n_relu, "bounds": bounds_used},
    )


@dataclass
class ExtremumResult:
    """Exact max/min of ``c · f`` over the set (see :func:`output_extremum`).

    Attributes:
        value: the optimum when ``exact``; else the best value found (attained, so an inner bound) or None.
        exact: the solver proved optimality.
        input: concrete input realising the solution ``(1, *image)`` and ``model_value`` its real c·f.
        milp: the raw :class:`MilpResult`.
    """

    value: float | None
    exact: bool
    input: Tensor | None
    model_value: float | None
    milp: MilpResult


def _objective_vector(c, n_out: int, output: int | None) -> list[float]:
    if output is not None:
        if not 0 <= output < n_out:
            raise UserError(f"output index {output} out of range for {n_out} outputs")
        vec = [0.0] * n_out
        vec[output] = 1.0
        return vec
    if c is None:
        raise UserError("give either output=<index> or c=<vector of length n_out>")
    vec = [float(v) for v in torch.as_tensor(c).flatten().tolist()]
    if len(vec) != n_out:
        raise UserError(f"objective vector c has length {len(vec)}, expected {n_out}")
    return vec


def output_extremum(
    model: nn.Module,
    x: Tensor,
    perturbation: Perturbation,
    output: int | None = None,
    c: Tensor | None = None,
    sense: str = "max",
    bounds_method: str = "CROWN",
    solver: str = "CBC",
    time_limit: float | None = None,
) -> ExtremumResult:
    """Exact ``max`` (or ``min``) of ``model(x')[output]`` (or ``c · model(x')``) over the set."""
    if sense not in ("max", "min"):
        raise UserError(f"sense must be 'max' or 'min', got {sense!r}")
    prob = pulp.LpProblem("extremum", pulp.LpMaximize if sense == "max" else pulp.LpMinimize)
    enc = encode_network(model, x, perturbation, bounds_method, prob=prob)
    vec = _objective_vector(c, len(enc.outputs), output)
    prob += pulp.lpSum(w * o for w, o in zip(vec, enc.outputs) if w != 0.0)
    res = solve_milp(prob, solver, time_limit)
    res.extra.update(n_unstable=enc.n_unstable, **enc.stats)
    res.n_binaries = enc.n_binaries
    if res.verdict is not Verdict.COUNTEREXAMPLE:
        return ExtremumResult(None, False, None, None, res)
    inp = enc.recover_input()
    with torch.no_grad():
        real = float((model(inp).flatten() * torch.tensor(vec, dtype=inp.dtype, device=inp.device)).sum())
    res.counterexample = inp
    return ExtremumResult(res.objective, res.optimal, inp, real, res)


def verify_linear(
    model: nn.Module,
    x: Tensor,
    perturbation: Perturbation,
    c: Tensor,
    threshold: float,
    bounds_method: str = "CROWN",
    solver: str = "CBC",
    time_limit: float | None = None,
    tol: float = 1e-6,
) -> MilpResult:
    """Certify ``c · model(x') > threshold`` for every ``x'`` in the set.

    Falsification MILP ``c · f <= threshold`` (objective: minimise ``c · f``): infeasible ⇒ CERTIFIED;
    feasible ⇒ COUNTEREXAMPLE with the concrete input and ``confirmed`` = whether a forward pass of it
    gives ``c · f(x') <= threshold + tol``; time-out ⇒ UNKNOWN.
    """
    prob = pulp.LpProblem("verify", pulp.LpMinimize)
    enc = encode_network(model, x, perturbation, bounds_method, prob=prob)
    vec = _objective_vector(c, len(enc.outputs), None)
    obj = pulp.lpSum(w * o for w, o in zip(vec, enc.outputs) if w != 0.0)
    prob += obj
    prob += obj <= float(threshold), "violation"
    res = solve_milp(prob, solver, time_limit)
    res.n_binaries = enc.n_binaries
    if res.verdict is Verdict.COUNTEREXAMPLE:
        inp = enc.recover_input()
        with torch.no_grad():
            real = float((model(inp).flatten() * torch.tensor(vec, dtype=inp.dtype, device=inp.device)).sum())
        res.counterexample = inp
        res.confirmed = real <= threshold + tol
        res.extra["model_value"] = real
    return res
