"""Running auto_LiRPA on a :class:`~geo_rs.bounds.lirpa_model.BoundProblem`: fresh bounded modules,
fallback strategies for auto_LiRPA 0.3's shape bugs, and one error type for what still fails.

auto_LiRPA 0.3 fails on some layer / method / batch combinations that are perfectly boundable
(alpha-CROWN's slope shapes on MaxPool and on Sigmoid/Tanh after a conv, sparse intermediate bounds in
patches mode, ...). Each call tries a short list of strategies, each on a *freshly built* bounded module
(a failed attempt leaves nothing behind), and returns the first that succeeds; every strategy computes
sound bounds, they differ only in tightness and cost:

1. batched, auto_LiRPA's defaults;
2. (alpha-CROWN) optimise only the ReLU slopes — MaxPool / Sigmoid / Tanh keep CROWN's relaxation —
   then also with dense intermediate bounds (slower);
3. the conv layers in dense "matrix" mode instead of "patches";
4. one row (image x affine piece) at a time, with 2–3.

When all fail, :class:`UnsupportedModelError` names the method, the layer where auto_LiRPA failed (from
the traceback's bound node) and what was tried. Out-of-memory errors are never retried in matrix mode.
"""

from __future__ import annotations

import contextlib
import logging
import traceback
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .lirpa_compat import auto_lirpa
from .lirpa_model import SUPPORTED_LAYERS, BoundProblem, UnsupportedModelError

METHODS = {"IBP": "IBP", "CROWN-IBP": "IBP+backward", "CROWN": "backward", "ALPHA-CROWN": "CROWN-Optimized"}

_ONNX_TO_TORCH = {
    "onnx::Resize": "nn.Upsample / F.interpolate (only nearest with an integer scale is supported)",
    "onnx::Upsample": "nn.Upsample",
    "onnx::GlobalAveragePool": "nn.AdaptiveAvgPool2d",
    "onnx::LeakyRelu": "nn.LeakyReLU",
    "onnx::Elu": "nn.ELU",
}

# auto_LiRPA node type -> the torch layer type it comes from (for naming the failing layer).
_NODE_TO_LAYER: dict[str, tuple[type[nn.Module], ...]] = {
    "BoundConv": (nn.Conv2d,),
    "BoundConvTranspose": (nn.ConvTranspose2d,),
    "BoundLinear": (nn.Linear,),
    "BoundMatMul": (nn.Linear,),
    "BoundRelu": (nn.ReLU,),
    "BoundMaxPool": (nn.MaxPool2d,),
    "BoundAveragePool": (nn.AvgPool2d,),
    "BoundSigmoid": (nn.Sigmoid,),
    "BoundTanh": (nn.Tanh,),
    "BoundBatchNormalization": (nn.BatchNorm1d, nn.BatchNorm2d),
    "BoundFlatten": (nn.Flatten,),
}


@dataclass(frozen=True)
class Attempt:
    """One strategy: conv mode, alpha-CROWN on ReLU slopes only, dense intermediate bounds, per row."""

    matrix: bool = False
    relu_only_alpha: bool = False
    dense_intermediate: bool = False
    per_row: bool = False

    def describe(self) -> str:
        parts = ["one row at a time" if self.per_row else "batched"]
        if self.relu_only_alpha:
            parts.append("alpha on ReLU slopes only")
        if self.dense_intermediate:
            parts.append("dense intermediate bounds")
        if self.matrix:
            parts.append("conv matrix mode")
        return ", ".join(parts)


def attempts(method: str, needs_matrix: bool) -> list[Attempt]:
    """The strategies tried for ``method``, in order (see the module docstring)."""
    alpha = method == "alpha-CROWN"
    fix = Attempt(relu_only_alpha=alpha, dense_intermediate=alpha)
    plan = [Attempt()]
    if alpha:
        plan += [Attempt(relu_only_alpha=True), fix]
    if method != "IBP":
        plan.append(Attempt(True, fix.relu_only_alpha, fix.dense_intermediate))
    plan += [Attempt(False, fix.relu_only_alpha, fix.dense_intermediate, per_row=True)]
    if method != "IBP":
        plan.append(Attempt(True, fix.relu_only_alpha, fix.dense_intermediate, per_row=True))
    if needs_matrix:  # auto_LiRPA 0.3 patches mode breaks on a transposed conv followed by a conv
        plan = [Attempt(True, a.relu_only_alpha, a.dense_intermediate, a.per_row) for a in plan]
    out: list[Attempt] = []
    for a in plan:
        if a not in out:
            out.append(a)
    return out


@dataclass
class RawBounds:
    """Bounds of every row: output ``(rows, n)`` and the input bounds of each ReLU ``(rows, ...)``."""

    lower: Tensor
    upper: Tensor
    relu_inputs: list[tuple[Tensor, Tensor]]
    strategy: str


def compute(problem: BoundProblem, method: str, alpha_iterations: int) -> RawBounds:
    """Bounds of ``problem`` by ``method``; the first strategy that works (see module docstring)."""
    needs_matrix = any(isinstance(m, nn.ConvTranspose2d) for m in problem.module.modules())
    failures: list[tuple[Attempt, BaseException]] = []
    out_of_memory = False
    for att in attempts(method, needs_matrix):
        if att.matrix and out_of_memory:
            continue
        try:
            if not att.per_row:
                return _run(problem, method, att, alpha_iterations)
            parts = [_run(problem.take(r, r + 1), method, att, alpha_iterations) for r in range(problem.rows)]
            return _concat(parts, att.describe())
        except UnsupportedModelError:
            raise  # an operation auto_LiRPA cannot parse: no strategy helps
        except Exception as exc:  # auto_LiRPA's failures are raw IndexError/AssertionError/RuntimeError...
            failures.append((att, exc))
            out_of_memory = out_of_memory or _is_oom(exc)
    raise UnsupportedModelError(_failure_message(problem, method, failures)) from failures[-1][1]


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, MemoryError) or "out of memory" in str(exc) or "allocate" in str(exc)


def _concat(parts: list[RawBounds], strategy: str) -> RawBounds:
    relus = [
        (torch.cat([p.relu_inputs[i][0] for p in parts]), torch.cat([p.relu_inputs[i][1] for p in parts]))
        for i in range(len(parts[0].relu_inputs))
    ]
    return RawBounds(
        torch.cat([p.lower for p in parts]), torch.cat([p.upper for p in parts]), relus, strategy
    )


# ------------------------------------------------------------------------------------------------
# One attempt: build a fresh bounded module, compute.
# ------------------------------------------------------------------------------------------------


class _LogCapture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def build(problem: BoundProblem, att: Attempt):
    """A fresh ``BoundedModule`` of ``problem.module`` for the strategy ``att``."""
    lirpa = auto_lirpa()
    capture = _LogCapture()
    logger = logging.getLogger("auto_LiRPA")
    logger.addHandler(capture)
    logger.propagate = False
    opts: dict = {}
    if att.matrix:
        opts["conv_mode"] = "matrix"
    if att.dense_intermediate:  # no sparse bookkeeping (its alpha shapes are what breaks)
        opts.update(sparse_intermediate_bounds=False, sparse_features_alpha=False, sparse_spec_alpha=False)
    example = problem.example()
    try:
        bounded = lirpa.BoundedModule(
            problem.module, example, device=example[0].device, bound_opts=opts or None
        )
    except (NotImplementedError, KeyError, RuntimeError, TypeError, AttributeError, AssertionError) as exc:
        raise UnsupportedModelError(_build_failure_message(problem, capture.messages, exc)) from exc
    finally:
        logger.removeHandler(capture)
        logger.propagate = True
    bounded.eval()  # auto_LiRPA may trace in train mode (it does with Dropout); bounds are eval semantics
    if att.relu_only_alpha:
        bounded.optimizable_activations = [
            n for n in bounded.optimizable_activations if type(n).__name__ == "BoundRelu"
        ]
    return bounded


def _run(problem: BoundProblem, method: str, att: Attempt, alpha_iterations: int) -> RawBounds:
    lirpa = auto_lirpa()
    bounded = build(problem, att)
    args = []
    for inp in problem.inputs:
        if inp.lower is None:
            args.append(inp.value)
        else:
            ptb = lirpa.PerturbationLpNorm(norm=float("inf"), eps=0.0, x_L=inp.lower, x_U=inp.upper)
            args.append(lirpa.BoundedTensor(inp.value, ptb))
    args = tuple(args)
    lirpa_method = METHODS[method.upper()]
    if method == "alpha-CROWN" and not bounded.optimizable_activations:
        lirpa_method = "backward"  # no slope left to optimise (ReLU-free net, ReLU-only strategy): CROWN
    elif method == "alpha-CROWN":
        bounded.set_bound_opts({"optimize_bound_args": {"iteration": int(alpha_iterations)}})
    interm = None
    if method != "IBP" and problem.first_out is not None:
        try:
            interm = _fused_crown_setup(bounded, args, problem.first_out, problem.rows)
        except Exception as exc:
            exc._geo_rs_bounded = bounded  # type: ignore[attr-defined]
            raise
    grad = torch.enable_grad() if lirpa_method == "CROWN-Optimized" else torch.no_grad()
    try:
        with grad:
            lb, ub = bounded.compute_bounds(
                x=args, method=lirpa_method, C=problem.C, intermediate_layer_bounds=interm
            )
    except Exception as exc:
        exc._geo_rs_bounded = bounded  # type: ignore[attr-defined]  # to name the failing layer
        raise
    relus = []
    for relu in bounded.relus:
        node = relu.inputs[0]
        lo, hi = getattr(node, "lower", None), getattr(node, "upper", None)
        if lo is not None and hi is not None:
            relus.append((lo.detach(), hi.detach()))
    return RawBounds(lb.detach(), ub.detach(), relus, att.describe())


def _fused_crown_setup(bounded, args, first_out: tuple[int, ...], n_rows: int) -> dict | None:
    """Keep CROWN through the fused θ-map affordable on large first layers.

    Backward rows reaching the θ replication are dense over all first-layer outputs, so (1) the
    intermediate-neuron batch is capped at ~256 MB of such rows and (2) the bounds of the first layer's
    output — exact by IBP, since it is linear in θ and the independent slack — are handed to auto_LiRPA
    instead of being recomputed by CROWN (which would need an n_first x n_first matrix)."""
    n_first = 1
    for d in first_out:
        n_first *= d
    bounded.set_bound_opts({"crown_batch_size": max(16, int(2**26 / max(1, n_rows * n_first)))})
    target = None
    for node in bounded._modules.values():
        if (
            type(node).__name__ == "BoundReshape"
            and tuple(getattr(node, "output_shape", ())[1:]) == first_out
        ):
            target = node
            break
    if target is None:
        return None
    with torch.no_grad():
        bounded.compute_bounds(x=args, method="IBP")
    lo, hi = getattr(target, "lower", None), getattr(target, "upper", None)
    if lo is None or hi is None:
        return None
    return {target.name: (lo.detach().clone(), hi.detach().clone())}


# ------------------------------------------------------------------------------------------------
# Error messages that name the layer.
# ------------------------------------------------------------------------------------------------


def _failing_node(exc: BaseException):
    """The innermost auto_LiRPA bound node on the traceback (``self`` or ``node`` of a frame)."""
    from auto_LiRPA.operators.base import Bound

    found = None
    for frame, _ in traceback.walk_tb(exc.__traceback__):
        for key in ("self", "node", "l"):
            obj = frame.f_locals.get(key)
            if isinstance(obj, Bound):
                found = obj
                break
    return found


def _node_layer(bounded, node, problem: BoundProblem) -> str:
    """Name (in the caller's model) and type of the layer an auto_LiRPA node comes from."""
    kind = type(node).__name__
    names = problem.layer_names
    module = problem.module
    for inp in getattr(node, "inputs", []):  # a parameter input names its layer: "rest.2.weight"
        ori = getattr(inp, "ori_name", None)
        if type(inp).__name__ == "BoundParams" and ori and "." in ori:
            with contextlib.suppress(AttributeError):
                layer = module.get_submodule(ori.rsplit(".", 1)[0])
                return f"{names.get(id(layer), ori.rsplit('.', 1)[0])} ({type(layer).__name__})"
    types = _NODE_TO_LAYER.get(kind)
    if types is None:
        return f"an internal {kind} node"
    layers = [m for m in module.modules() if isinstance(m, types)]
    same = [n for n in bounded._modules.values() if type(n).__name__ == kind] if bounded is not None else []
    if node in same and len(same) == len(layers):
        layer = layers[same.index(node)]
        return f"{names.get(id(layer), type(layer).__name__)} ({type(layer).__name__})"
    listed = ", ".join(names.get(id(m), type(m).__name__) for m in layers) or "?"
    return f"a {types[0].__name__} layer ({listed})"


def _failure_message(
    problem: BoundProblem, method: str, failures: list[tuple[Attempt, BaseException]]
) -> str:
    att, exc = failures[0]
    node = _failing_node(exc)
    where = "an unidentified layer"
    if node is not None:
        with contextlib.suppress(Exception):
            where = _node_layer(getattr(exc, "_geo_rs_bounded", None), node, problem)
    tried = "; ".join(a.describe() for a, _ in failures)
    alt = "CROWN" if method == "alpha-CROWN" else "IBP"
    if _is_oom(failures[-1][1]):
        return (
            f"out of memory computing {method} bounds at {where} ({str(failures[-1][1])[:120]}); "
            f"bound fewer images per call or use a cheaper method (tried: {tried})"
        )
    return (
        f"auto_LiRPA 0.3 cannot compute {method} bounds for this model: it fails at {where} with "
        f"{type(exc).__name__}: {str(exc)[:160] or '(no message)'} (tried: {tried}); use method='{alt}'"
    )


def _build_failure_message(problem: BoundProblem, messages: list[str], exc: Exception) -> str:
    ops = sorted({m.split("Name: ")[1].split(",")[0] for m in messages if m.startswith("Name: ")})
    named = [f"{op} ({_ONNX_TO_TORCH[op]})" if op in _ONNX_TO_TORCH else op for op in ops]
    odd = sorted(
        {
            f"{problem.layer_names.get(id(m), '<model>')}: {type(m).__name__}"
            for m in problem.module.modules()
            if not list(m.children()) and not isinstance(m, SUPPORTED_LAYERS)
        }
    )
    parts = [f"auto_LiRPA cannot bound this model: {type(exc).__name__}: {str(exc)[:200]}"]
    if named:
        parts.append("unsupported operation(s): " + ", ".join(named))
    if odd:
        parts.append("layers outside the supported list: " + ", ".join(odd))
    return "; ".join(parts)
