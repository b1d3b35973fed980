"""MILP encoding of small ReLU networks over a perturbation set (Tjeng et al. big-M), sound for the
network *as it computes in float32*.

:func:`encode_network` turns ``model`` at image ``x`` under a perturbation into a pulp problem whose
feasible points contain every (input parameters, network outputs) pair the model produces on the set:

* inputs: the perturbation parameters θ (brightness/contrast) and per-pixel noise δ are variables; the
  pixel ``clamp(x + Σ θ_k A_k + δ, 0, 1)`` is exact (a clamp is two ReLUs; pixels that never clip are
  plain affine expressions, pixels that always clip are constants);
* consecutive affine layers (Linear, Conv2d, ConvTranspose2d, BatchNorm in eval, AvgPool2d, Flatten,
  Identity, Dropout in eval, Upsample) are merged into one dense affine map built in float64 from the
  layers' exact parameters (no float32 probing: a single layer's weights are copied exactly);
* ReLU: big-M ``y >= z - s, y >= 0, y <= u·a, y <= z + s - l(1 - a)``, with pre-activation bounds
  ``[l, u]`` the intersection of interval arithmetic on the MILP's own variables and CROWN (or IBP)
  bounds from :func:`geo_rs.layer_bounds`; stable neurons get no binary;
* MaxPool2d: the exact max gadget of :mod:`geo_rs.bounds.milp_argmax` per window.

Floating point — what is guaranteed. The MILP's arithmetic is real; the model's is float32. Every affine
block's output ``z`` gets a slack ``s`` with ``|s| <= S``, where ``S`` is Higham's rigorous forward-error
bound of the float evaluation of that block (:mod:`geo_rs.bounds.float_error`: per layer
``γ_{n+1}(|W||h| + |b|) + (n+1)·tiny``, ``γ_m = m·u/(1 - m·u)``, ``u = 2^-24``, propagated through the
block, with the float64 rounding of the MILP's own matrices included), evaluated on bounds of the
block's inputs; the first block also absorbs the rounding of the perturbed pixels. Hence *every float32
evaluation of the model on a point of the set is a feasible point of the MILP*. The CROWN bounds used
for big-M are computed by auto_LiRPA on a float64 copy (the real-arithmetic network) and widened by the
float network's propagated deviation from it plus an allowance for CROWN's float64 rounding
(``2·γ_N(2^-53)`` times a magnitude chain bounding every term of CROWN's sums). Consequences, given an
exact MILP solver: infeasible ⇒ no float32 evaluation violates the property; an optimum bounds every
float32 value and lies within ``2·float_margin`` of one (``float_margin`` = the propagated deviation).
Not covered: the MILP solver's own tolerances (CBC/HiGHS feasibility ~1e-7 to 1e-6 absolute), TF32 or
reduced-precision kernels, Winograd/FFT convolutions (see :mod:`geo_rs.bounds.float_error`).

:func:`output_extremum` maximises / minimises one output (or ``c · f``); :func:`verify_linear`
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
from .float_error import U64, AffineOp, affine_ops, block_errors, gamma, input_rounding
from .lirpa_model import snapshot
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


def _dense(ops: list[AffineOp], in_shape: tuple[int, ...]) -> tuple[Tensor, Tensor, tuple[int, ...]]:
    n = 1
    for d in in_shape:
        n *= d
    with torch.no_grad():
        b = torch.zeros((1, *in_shape), dtype=torch.float64)
        for op in ops:
            b = op.apply(b)
        out_shape = tuple(b.shape[1:])
        m = b[0].numel()
        if n * m > MAX_DENSE:
            raise UserError(f"network too large for the MILP encoder: an affine block maps {n} -> {m} values")
        # The linear parts only (no bias): a single layer's column is then exactly its weights (a probe
        # with one 1 and zeros elsewhere rounds nothing), instead of (W e_j + b) - b.
        cols = torch.eye(n, dtype=torch.float64).reshape(n, *in_shape)
        for op in ops:
            cols = op.linear(cols)
    return cols.reshape(n, m).T.contiguous(), b.reshape(m), out_shape


def dense_affine(
    layers: list[nn.Module], in_shape: tuple[int, ...], dtype=torch.float64, device=None
) -> tuple[Tensor, Tensor, tuple[int, ...]]:
    """``(W (m, n), b (m,), out_shape)`` with ``f(v) = W v + b`` on flattened inputs, in float64 from
    the layers' exact parameters (a single layer's weights exactly; merged layers up to float64
    rounding, which :mod:`~geo_rs.bounds.float_error` accounts for). ``dtype``/``device`` of the result."""
    W, b, out_shape = _dense([op for layer in layers for op in affine_ops(layer)], in_shape)
    return W.to(dtype), b.to(dtype), out_shape


@dataclass
class NetworkEncoding:
    """A network encoded in a pulp problem (see :func:`encode_network`).

    Attributes:
        prob: the problem (no objective yet). outputs: pulp expressions of the ``n_out`` outputs; every
            float evaluation of the model on the set is a feasible assignment of them.
        output_bounds: ``(lo, hi)`` lists of bounds of each output, valid for every float evaluation of
            the model on the set (what the argmax gadget needs).
        theta: parameter variables (brightness/contrast), delta: per-pixel noise variables (or None).
        n_binaries: binaries added for clamps, ReLUs and max-pools. n_unstable: unstable ReLUs.
        float_margin: per output, a rigorous bound on ``|float output - real-arithmetic output|`` over
            the set; the MILP's optimum of an output exceeds the model's true float maximum by at most
            twice this (see the module docstring).
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
    float_margin: list[float] = field(default_factory=list)

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

    def relu(self, z, lo: float, hi: float, tag: str = "r", slack: float = 0.0):
        """``max(ẑ, 0)`` for every ``ẑ`` with ``|ẑ - z| <= slack`` and ``ẑ ∈ [lo, hi]`` (exact when
        ``slack = 0``): big-M ``y >= z - s, y >= 0, y <= hi·a, y <= z + s - lo(1 - a)``."""
        if hi <= 0:
            return 0.0
        p = self.prob
        if lo >= 0:
            if slack == 0:
                return z
            return self.slacked(z, slack, lo, hi, tag)
        self.n_unstable += 1
        self.n_bin += 1
        y = self.fresh(tag, 0.0, hi)
        a = self.fresh(tag + "a", cat=pulp.LpBinary)
        p += y >= z - slack
        p += y <= hi * a
        p += y <= z + slack - lo * (1 - a)
        return y

    def slacked(self, z, slack: float, lo: float, hi: float, tag: str = "s"):
        """A variable ``v ∈ [lo, hi]`` with ``|v - z| <= slack`` (z itself when ``slack = 0``)."""
        if slack == 0:
            return z
        v = self.fresh(tag, lo, hi)
        self.prob += v >= z - slack
        self.prob += v <= z + slack
        return v

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
    """Interval bounds of ``W v + b`` over ``[lo, hi]``, widened by their own float64 rounding."""
    wp, wn = W.clamp(min=0), W.clamp(max=0)
    rounding = gamma(W.shape[1] + 1, 2 * U64) * (W.abs() @ torch.maximum(lo.abs(), hi.abs()) + b.abs())
    return wp @ lo + wn @ hi + b - rounding, wp @ hi + wn @ lo + b + rounding


@dataclass
class _Track:
    """Per-value tensors (flat, float64) carried through the layers while encoding.

    lo, hi: bounds of the float network's values (valid on every float evaluation over the set).
    slack: pending ``|float value - MILP expression|`` bound (after an affine block, until used).
    dev: ``|float value - real-arithmetic network value|`` (for widening the real-arithmetic CROWN bounds).
    mag: magnitude chain with relaxation intercepts (bounds every term of CROWN's computation).
    terms: operations accumulated along the way (for the float64 rounding of CROWN).
    """

    lo: Tensor
    hi: Tensor
    slack: Tensor | None
    dev: Tensor
    mag: Tensor
    terms: int = 0


def encode_network(
    model: nn.Module,
    x: Tensor,
    perturbation: Perturbation,
    bounds_method: str = "CROWN",
    prob: pulp.LpProblem | None = None,
    name: str = "net",
) -> NetworkEncoding:
    """Encode ``model`` on the set ``perturbation`` around one image ``x`` ``(1, *image)`` into ``prob``.

    Every evaluation of the model *in its own floating-point arithmetic* on a point of the set is a
    feasible point of the encoding (see the module docstring), so an infeasible MILP proves a property
    of the model as it really computes.

    ``bounds_method`` ("CROWN", "CROWN-IBP", "IBP", "alpha-CROWN" or None for interval arithmetic only)
    supplies the pre-activation bounds; tighter bounds give fewer unstable ReLUs, i.e. fewer binaries.
    The model is read, never changed (its train/eval mode included): encoded in eval semantics.
    """
    check_image(x)
    if x.shape[0] != 1:
        raise UserError(f"encode_network takes one image (1, ...); got batch {x.shape[0]}")
    snap = snapshot(model, x.device)
    return _encode_network(snap, x, perturbation, bounds_method, prob, name)


def _crown_bounds(model, x, perturbation, bounds_method, n_relu: int) -> tuple[list, str]:
    if bounds_method is None:
        return [], "interval arithmetic"
    try:
        # float64: bounds of the real-arithmetic network, widened below by its float deviation.
        crown = layer_bounds(model, x, perturbation, bounds_method, dtype=torch.float64).pre_activations
    except UnsupportedModelError as exc:  # e.g. bilinear Upsample: still exact, only more binaries
        return [], f"interval arithmetic ({bounds_method} unavailable: {str(exc)[:120]})"
    if len(crown) != n_relu:  # cannot match them to layers: rely on interval arithmetic (still sound)
        return [], "interval arithmetic (pre-activation bounds did not match the ReLU layers)"
    return crown, f"{bounds_method} ∩ interval arithmetic"


def _encode_input(bld: _Builder, fam, x: Tensor, name: str):
    """θ, δ variables and the exactly clamped pixels ``clamp(x + Σ θ_k A_k + δ, 0, 1)``."""
    prob = bld.prob
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
    return theta, delta, values, zlo.clamp(0, 1), zhi.clamp(0, 1)


def _encode_network(model, x, perturbation, bounds_method, prob, name) -> NetworkEncoding:
    blocks = _blocks(model)
    if blocks[0][0] != "affine":  # the input rounding is absorbed by an affine block's slack
        blocks.insert(0, ("affine", [nn.Identity()]))
    prob = prob if prob is not None else pulp.LpProblem(name, pulp.LpMaximize)
    bld = _Builder(prob, name)
    fam = perturbation.family(x)
    n_relu = sum(1 for kind, _ in blocks if kind == "relu")
    crown, bounds_used = _crown_bounds(model, x, perturbation, bounds_method, n_relu)

    theta, delta, values, lo_px, hi_px = _encode_input(bld, fam, x, name)
    n_clamp_bin = bld.n_bin
    bld.n_unstable = 0
    d0 = input_rounding(fam, x).flatten()
    # The float pixels lie within d0 of the MILP's (real) pixels: the first block's slack takes it.
    tr = _Track(lo_px, hi_px, None, d0, hi_px + d0)
    shape = tuple(x.shape[1:])
    relu_idx = 0
    first = True
    for kind, layers in blocks:
        if kind == "affine":
            values, shape = _encode_affine(values, tr, layers, shape, d0 if first else 0.0)
            first = False
        elif kind == "relu":
            if crown:
                _intersect_crown(tr, crown[relu_idx])
            relu_idx += 1
            values = _encode_relu(bld, values, tr)
        else:  # maxpool
            values, shape = _encode_maxpool(bld, values, tr, layers[0], shape, name)
    outputs = _settle(bld, values, tr)
    return NetworkEncoding(
        prob,
        outputs,
        (tr.lo.tolist(), tr.hi.tolist()),
        theta,
        delta,
        x,
        perturbation,
        n_binaries=bld.n_bin,
        n_unstable=bld.n_unstable,
        stats={
            "clamp_binaries": n_clamp_bin,
            "relus": n_relu,
            "bounds": bounds_used,
            "float_margin_max": float(tr.dev.max()) if tr.dev.numel() else 0.0,
        },
        float_margin=tr.dev.tolist(),
    )


def _encode_affine(values, tr: _Track, layers, shape, d0) -> tuple[list, tuple[int, ...]]:
    """A block of affine layers: exact float64 weights, the float rounding as a bounded slack."""
    ops = [op for layer in layers for op in affine_ops(layer)]
    W, b, out_shape = _dense(ops, shape)

    def view(t):
        return t.reshape(1, *shape) if isinstance(t, Tensor) else t

    local, total, _ = block_errors(ops, view(tr.lo), view(tr.hi), view(d0), view(tr.dev))
    slack = local.flatten()
    lo, hi = _ibp(W, b, tr.lo, tr.hi)
    mag = view(tr.mag)
    for op in ops:  # magnitude chain (with biases) for CROWN's rounding allowance
        mag = op.magnitude(mag)
    tr.lo, tr.hi = lo - slack, hi + slack
    tr.slack, tr.dev, tr.mag = slack, total.flatten(), mag.flatten()
    tr.terms += sum(op.n for op in ops) + 1
    return _affine(values, W, b), out_shape


def _intersect_crown(tr: _Track, c) -> None:
    """Intersect with CROWN's (float64, real-arithmetic) pre-activation bounds, widened by the float
    network's deviation from real arithmetic and CROWN's own float64 rounding."""
    allowance = tr.dev + 2 * gamma(tr.terms, U64) * tr.mag
    c_lo = c.lower.reshape(-1).double().cpu()
    c_hi = c.upper.reshape(-1).double().cpu()
    tr.lo = torch.maximum(tr.lo, c_lo - allowance)
    tr.hi = torch.minimum(tr.hi, c_hi + allowance)
    tr.hi = torch.maximum(tr.hi, tr.lo)


def _encode_relu(bld: _Builder, values, tr: _Track) -> list:
    slack = tr.slack if tr.slack is not None else torch.zeros_like(tr.lo)
    out = []
    for j, v in enumerate(values):
        lo, hi, s = float(tr.lo[j]), float(tr.hi[j]), float(slack[j])
        y = bld.relu(v, lo, hi, slack=s)
        out.append(bld.materialize(y, max(lo, 0.0), max(hi, 0.0)))
    intercepts = torch.maximum(tr.lo.abs(), tr.hi.abs())
    tr.mag = tr.mag + intercepts
    tr.lo, tr.hi, tr.slack = tr.lo.clamp(min=0), tr.hi.clamp(min=0), None
    tr.terms += 1
    return out


def _settle(bld: _Builder, values, tr: _Track) -> list:
    """Values that still carry a pending slack become variables within that slack of their expression."""
    if tr.slack is None:
        return values
    out = [bld.slacked(v, float(tr.slack[j]), float(tr.lo[j]), float(tr.hi[j])) for j, v in enumerate(values)]
    tr.slack = None
    return out


def _encode_maxpool(bld: _Builder, values, tr: _Track, pool: nn.MaxPool2d, shape, name):
    values = _settle(bld, values, tr)
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
    new_vals, cols = [], {k: [] for k in ("lo", "hi", "dev", "mag")}
    intercepts = torch.maximum(tr.lo.abs(), tr.hi.abs())
    for ch in range(shape[0]):
        for w in range(win.shape[2]):
            members = [int(v) - 1 for v in win[ch, :, w].tolist() if v > 0]
            ml = [float(tr.lo[j]) for j in members]
            mh = [float(tr.hi[j]) for j in members]
            bld.count += 1
            expr, gadget = add_max(
                bld.prob, [values[j] for j in members], ml, mh, name=f"{name}_mp{bld.count}"
            )
            bld.n_bin += gadget.n_binaries
            new_vals.append(expr)
            cols["lo"].append(max(ml))
            cols["hi"].append(max(mh))
            # max is 1-Lipschitz in the sup norm: deviations pass as the window's largest
            cols["dev"].append(float(tr.dev[members].max()))
            cols["mag"].append(float((tr.mag[members] + intercepts[members]).max()))
    tr.lo, tr.hi, tr.dev, tr.mag = (
        torch.tensor(cols[k], dtype=torch.float64) for k in ("lo", "hi", "dev", "mag")
    )
    tr.terms += 1
    return new_vals, out_shape


@dataclass
class ExtremumResult:
    """Max/min of ``c · f`` over the set (see :func:`output_extremum`).

    Attributes:
        value: when ``exact``, the MILP optimum: a sound bound on ``c · f`` for the model *as it computes
            in float* (for "max": no input of the set gives more), and within ``2 · float_margin`` of
            the true extremum. Without ``exact``: the best value found, or None.
        exact: the solver proved optimality.
        input: concrete input realising the solution ``(1, *image)`` and ``model_value`` its real c·f
            (a forward pass: ``model_value`` is attained, ``value`` bounds it).
        milp: the raw :class:`MilpResult`.
        float_margin: ``Σ |c_i| · margin_i`` (the encoding's per-output ``float_margin``).
    """

    value: float | None
    exact: bool
    input: Tensor | None
    model_value: float | None
    milp: MilpResult
    float_margin: float = 0.0


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
    """``max`` (or ``min``) of ``model(x')[output]`` (or ``c · model(x')``) over the set: a sound bound
    for the float model, within ``2 · float_margin`` of the attained extremum (see
    :class:`ExtremumResult`)."""
    if sense not in ("max", "min"):
        raise UserError(f"sense must be 'max' or 'min', got {sense!r}")
    prob = pulp.LpProblem("extremum", pulp.LpMaximize if sense == "max" else pulp.LpMinimize)
    enc = encode_network(model, x, perturbation, bounds_method, prob=prob)
    vec = _objective_vector(c, len(enc.outputs), output)
    prob += pulp.lpSum(w * o for w, o in zip(vec, enc.outputs) if w != 0.0)
    res = solve_milp(prob, solver, time_limit)
    res.extra.update(n_unstable=enc.n_unstable, **enc.stats)
    res.n_binaries = enc.n_binaries
    margin = sum(abs(w) * m for w, m in zip(vec, enc.float_margin))
    if res.verdict is not Verdict.COUNTEREXAMPLE:
        return ExtremumResult(None, False, None, None, res, margin)
    inp = enc.recover_input()
    real = _model_value(model, inp, vec)
    res.counterexample = inp
    return ExtremumResult(res.objective, res.optimal, inp, real, res, margin)


def _model_value(model: nn.Module, inp: Tensor, vec: list[float]) -> float:
    """``c · model(inp)`` by a forward pass of the caller's model in eval semantics (on a copy)."""
    snap = snapshot(model, inp.device)
    with torch.no_grad():
        out = snap(inp).flatten()
    return float((out.double() * torch.tensor(vec, dtype=torch.float64, device=out.device)).sum())


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
    """Certify ``c · model(x') > threshold`` for every ``x'`` in the set, for the model as it computes
    in float (every float evaluation is feasible in the encoding).

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
    res.extra["float_margin"] = sum(abs(w) * m for w, m in zip(vec, enc.float_margin))
    if res.verdict is Verdict.COUNTEREXAMPLE:
        inp = enc.recover_input()
        real = _model_value(model, inp, vec)
        res.counterexample = inp
        res.confirmed = real <= threshold + tol
        res.extra["model_value"] = real
    return res
