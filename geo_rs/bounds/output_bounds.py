"""Bounds of a network's outputs (or of ``C · f(x)``) over a perturbation set, via auto_LiRPA.

``output_bounds(model, x, perturbation, method)`` is the one entry point; auto_LiRPA's option dicts,
``BoundedTensor``/``PerturbationLpNorm`` plumbing and its torch-2.13 patches stay in this module and
``lirpa_compat``.

How brightness / contrast stay tight (even with IBP): the set is cut into affine pieces
(:func:`geo_rs.bounds.perturbations.affine_pieces`); on each piece the input is
``base + Σ_k θ_k G_k + s`` with a few scalars θ. The first layer ``W·+b`` of the model (Conv2d or Linear,
possibly after Flatten) is *fused* with that map: the bounded network takes θ as input and computes
``W·base + b + Σ_k θ_k (W G_k) + W s`` — an exact linear function of θ, so even IBP bounds the first
layer exactly instead of treating every pixel as independent. Bounds of all pieces are joined (hull).
If the first layer cannot be found (a model that is not an ``nn.Sequential`` or a module wrapping one),
the map is not fused; bounds stay sound but IBP is then as loose as white noise (``fused=False``).

Layers known to work (tested with IBP and CROWN; all four methods unless noted): Conv2d, Linear, ReLU,
BatchNorm1d/2d (eval), AvgPool2d, MaxPool2d (not alpha-CROWN), Flatten, ConvTranspose2d (groups=1, no
padding; the model is then bounded in auto_LiRPA's dense "matrix" mode), Sigmoid/Tanh (no MILP for
those), nn.Upsample(nearest, integer scale) — rewritten here to an equivalent ConvTranspose2d.
auto_LiRPA 0.3 limits: alpha-CROWN fails on MaxPool2d and on AvgPool2d followed by a conv; those raise
:class:`UnsupportedModelError` naming the layer (use "CROWN"); bilinear Upsample and other unknown ops
raise it at build time with the operation and the layer type named.

Example::

    >>> import torch
    >>> from torch import nn
    >>> from geo_rs import Brightness, output_bounds
    >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)).eval()
    >>> lo, hi = output_bounds(net, torch.rand(2, 1, 8, 8), Brightness(0.01), "CROWN")
    >>> lo.shape
    torch.Size([2, 3])
"""

from __future__ import annotations

import copy
import logging
import weakref
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from ..errors import UserError
from .interval import Interval
from .lirpa_compat import auto_lirpa
from .perturbations import AffinePieces, Perturbation, affine_pieces, check_image

METHODS = {"IBP": "IBP", "CROWN-IBP": "IBP+backward", "CROWN": "backward", "ALPHA-CROWN": "CROWN-Optimized"}

SUPPORTED_LAYERS = (
    nn.Conv2d,
    nn.Linear,
    nn.ReLU,
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.AvgPool2d,
    nn.MaxPool2d,
    nn.Flatten,
    nn.ConvTranspose2d,
    nn.Identity,
    nn.Dropout,
    nn.Sigmoid,
    nn.Tanh,
    nn.Upsample,
    nn.Sequential,
)

_ONNX_TO_TORCH = {
    "onnx::Resize": "nn.Upsample / F.interpolate (only nearest with an integer scale is supported)",
    "onnx::Upsample": "nn.Upsample",
    "onnx::GlobalAveragePool": "nn.AdaptiveAvgPool2d",
    "onnx::LeakyRelu": "nn.LeakyReLU",
    "onnx::Elu": "nn.ELU",
}


class UnsupportedModelError(UserError):
    """auto_LiRPA cannot bound this model (the message names the layer / operation)."""


def normalize_method(method: str) -> str:
    """Canonical public method name (``"IBP"``, ``"CROWN-IBP"``, ``"CROWN"``, ``"alpha-CROWN"``)."""
    key = str(method).strip().upper().replace("_", "-").replace("Α", "ALPHA")
    if key in ("ALPHACROWN", "CROWN-OPTIMIZED"):
        key = "ALPHA-CROWN"
    if key not in METHODS:
        raise UserError(f"unknown bound method {method!r}; choose one of IBP, CROWN-IBP, CROWN, alpha-CROWN")
    return "alpha-CROWN" if key == "ALPHA-CROWN" else key


# ------------------------------------------------------------------------------------------------
# Model preparation: find the first affine layer, rewrite nearest Upsample.
# ------------------------------------------------------------------------------------------------


class _NearestUpsample(nn.Module):
    """``nn.Upsample(scale_factor=s, mode='nearest')`` as a ConvTranspose2d (stride = kernel = s) whose
    kernel copies channel c to channel c (auto_LiRPA 0.3 supports only groups=1 transposed convs)."""

    def __init__(self, channels: int, scale: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(channels, channels, scale, stride=scale, bias=False)
        with torch.no_grad():
            self.up.weight.zero_()
            for c in range(channels):
                self.up.weight[c, c] = 1.0
        self.up.weight.requires_grad_(False)

    def forward(self, x: Tensor) -> Tensor:
        return self.up(x)


def _integer_scale(up: nn.Upsample) -> int | None:
    if up.mode != "nearest" or up.size is not None or up.scale_factor is None:
        return None
    sf = up.scale_factor if isinstance(up.scale_factor, (tuple, list)) else (up.scale_factor,)
    if len(set(float(s) for s in sf)) != 1 or float(sf[0]) != int(sf[0]) or int(sf[0]) < 1:
        return None
    return int(sf[0])


def _rewrite_upsample(model: nn.Module, example: Tensor) -> nn.Module:
    """Copy of ``model`` with nearest integer ``nn.Upsample`` replaced by an exact ConvTranspose2d."""
    ups = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Upsample) and _integer_scale(m)]
    if not ups:
        return model
    channels: dict[str, int] = {}
    hooks = [
        m.register_forward_hook(lambda mod, inp, out, n=n: channels.__setitem__(n, inp[0].shape[1]))
        for n, m in ups
    ]
    with torch.no_grad():
        model(example)
    for h in hooks:
        h.remove()
    model = copy.deepcopy(model)
    for name, m in ups:
        parent = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
        dev = example.device
        setattr(parent, name.rsplit(".", 1)[-1], _NearestUpsample(channels[name], _integer_scale(m)).to(dev))
    return model


def _split_first_layer(model: nn.Module, example: Tensor) -> tuple[nn.Module, nn.Module, bool] | None:
    """``(first, rest, flatten_first)`` with ``model(x) == rest(first(x))`` and ``first`` affine
    (Conv2d / Linear), or None. Handles ``nn.Sequential`` and a module whose only child is one (checked
    numerically, since its forward could do more)."""
    seq, wrapped = model, False
    if not isinstance(seq, nn.Sequential):
        children = list(model.children())
        if len(children) != 1 or not isinstance(children[0], nn.Sequential):
            return None
        seq, wrapped = children[0], True
    layers = list(seq)
    while layers and isinstance(layers[0], nn.Sequential):  # nested Sequential at the front
        layers = list(layers[0]) + layers[1:]
    flatten_first = False
    if layers and isinstance(layers[0], nn.Flatten):
        if layers[0].start_dim != 1 or layers[0].end_dim != -1:
            return None
        layers, flatten_first = layers[1:], True
    if not layers or not isinstance(layers[0], (nn.Conv2d, nn.Linear)):
        return None
    first, rest = layers[0], nn.Sequential(*layers[1:])
    if wrapped:
        with torch.no_grad():
            # a private generator: probing must not disturb the caller's random stream
            gen = torch.Generator(device=example.device).manual_seed(0)
            noise = torch.rand(example.shape, generator=gen, device=example.device, dtype=example.dtype)
            probe = torch.cat([example, noise])
            inp = probe.flatten(1) if flatten_first else probe
            if not torch.allclose(model(probe), rest(first(inp)), rtol=1e-4, atol=1e-5):
                return None
    return first, rest, flatten_first


class _FusedFamilyNet(nn.Module):
    """``rest(first_nobias-fused input)``: inputs θ ``(N, k)``, ``base1`` (first layer applied to the
    base image, bias included), ``G_1..G_k`` (first layer without bias applied to each direction,
    flattened) and optionally the slack ``s`` (an image), each per piece."""

    def __init__(
        self,
        k: int,
        first_out: tuple[int, ...],
        first_nobias: nn.Module,
        rest: nn.Module,
        with_slack: bool,
        flatten_slack: bool,
    ) -> None:
        super().__init__()
        self.k, self.first_out, self.with_slack, self.flatten_slack = k, first_out, with_slack, flatten_slack
        n = 1
        for d in first_out:
            n *= d
        # θ_k replicated onto every first-layer output: a fixed linear map, so the product with the
        # (constant, per-image) G_k is an exact linear function of θ for every method.
        self.replicate = nn.ModuleList()
        for j in range(k):
            lin = nn.Linear(k, n, bias=False)
            with torch.no_grad():
                lin.weight.zero_()
                lin.weight[:, j] = 1.0
            lin.weight.requires_grad_(False)
            self.replicate.append(lin)
        self.first_nobias = first_nobias
        self.rest = rest

    def forward(self, theta: Tensor, base1: Tensor, *rest_inputs: Tensor) -> Tensor:
        gs = rest_inputs[: self.k]
        z = base1
        for j in range(self.k):
            z = z + self.replicate[j](theta) * gs[j]
        if self.with_slack:
            s = rest_inputs[self.k]
            z = z + self.first_nobias(s.flatten(1) if self.flatten_slack else s).flatten(1)
        # -1, not z.shape[0]: the traced graph must not freeze the batch size of the example.
        return self.rest(z.reshape(-1, *self.first_out))


def _no_bias_copy(first: nn.Module) -> nn.Module:
    c = copy.deepcopy(first)
    c.bias = None
    for p in c.parameters():
        p.requires_grad_(False)
    return c


# ------------------------------------------------------------------------------------------------
# BoundedModule construction and caching.
# ------------------------------------------------------------------------------------------------


class _LogCapture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _unsupported_message(model: nn.Module, messages: list[str], exc: Exception) -> str:
    ops = sorted({m.split("Name: ")[1].split(",")[0] for m in messages if m.startswith("Name: ")})
    named = [f"{op} ({_ONNX_TO_TORCH[op]})" if op in _ONNX_TO_TORCH else op for op in ops]
    odd = sorted(
        {
            f"{n or '<model>'}: {type(m).__name__}"
            for n, m in model.named_modules()
            if not list(m.children()) and not isinstance(m, SUPPORTED_LAYERS)
        }
    )
    parts = [f"auto_LiRPA cannot bound this model: {type(exc).__name__}: {str(exc)[:200]}"]
    if named:
        parts.append("unsupported operation(s): " + ", ".join(named))
    if odd:
        parts.append("layers outside the supported list: " + ", ".join(odd))
    return "; ".join(parts)


def _build(module: nn.Module, example: tuple[Tensor, ...], original: nn.Module):
    lirpa = auto_lirpa()
    capture = _LogCapture()
    logger = logging.getLogger("auto_LiRPA")
    logger.addHandler(capture)
    logger.propagate = False
    # auto_LiRPA 0.3's "patches" mode breaks on a transposed conv followed by a conv (CROWN backward):
    # the dense "matrix" mode handles it (slower, fine for the small decoders verification targets).
    opts = (
        {"conv_mode": "matrix"} if any(isinstance(m, nn.ConvTranspose2d) for m in module.modules()) else None
    )
    try:
        return lirpa.BoundedModule(module, example, device=example[0].device, bound_opts=opts)
    except (NotImplementedError, KeyError, RuntimeError, TypeError, AttributeError, AssertionError) as exc:
        raise UnsupportedModelError(_unsupported_message(original, capture.messages, exc)) from exc
    finally:
        logger.removeHandler(capture)
        logger.propagate = True


def _fingerprint(model: nn.Module) -> tuple:
    """Content fingerprint of the weights: the fused first layer is a *copy*, so any weight update must
    force a rebuild. (Tensor._version is no use: building a BoundedModule itself bumps it.)"""
    out = []
    with torch.no_grad():
        for t in list(model.parameters()) + list(model.buffers()):
            f = t.detach().flatten().double()
            ramp = torch.arange(1, f.numel() + 1, dtype=f.dtype, device=f.device)
            out.append((id(t), tuple(t.shape), float(f.sum()), float((f * f).sum()), float((f * ramp).sum())))
    return tuple(out)


@dataclass
class _Entry:
    fingerprint: tuple
    bounded: object
    relu_names: list[str] = field(default_factory=list)


_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _cached(model: nn.Module, key: tuple, make) -> _Entry:
    per_model = _CACHE.setdefault(model, {})
    fp = _fingerprint(model)
    entry = per_model.get(key)
    if entry is None or entry.fingerprint != fp:
        bounded = make()
        entry = _Entry(fp, bounded, [n.name for n in bounded.relus])
        per_model[key] = entry
    return entry


def clear_bounds_cache(model: nn.Module | None = None) -> None:
    """Drop cached BoundedModules (of one model, or all)."""
    if model is None:
        _CACHE.clear()
    else:
        _CACHE.pop(model, None)


# ------------------------------------------------------------------------------------------------
# Public API
# ------------------------------------------------------------------------------------------------


@dataclass
class LayerBounds:
    """Result of :func:`layer_bounds`.

    Attributes:
        output: bounds of the outputs ``(B, n_out)`` (or of ``C·f`` ``(B, n_spec)``).
        pre_activations: one :class:`Interval` per ReLU of the model, in execution order, each
            ``(B, *shape of the ReLU input)`` (hull over pieces). Fused models have no bounds for the
            pixels themselves; those come from ``perturbation.input_box``.
        method: the method used; fused: whether the perturbation map was fused with the first layer.
        n_pieces: affine pieces the set was split into.
    """

    output: Interval
    pre_activations: list[Interval]
    method: str
    fused: bool
    n_pieces: int


def _check_model(model: nn.Module) -> None:
    if not isinstance(model, nn.Module):
        raise UserError(f"model must be a torch.nn.Module, got {type(model).__name__}")


def _check_spec(C: Tensor | None, b: int, n_out: int) -> Tensor | None:
    if C is None:
        return None
    if C.dim() == 2:
        C = C.unsqueeze(0).expand(b, -1, -1)
    if C.dim() != 3 or C.shape[0] != b or C.shape[2] != n_out:
        raise UserError(
            f"specification C must have shape (n_spec, {n_out}) or ({b}, n_spec, {n_out}); "
            f"got {tuple(C.shape)}"
        )
    return C


def _compute(
    bounded, inputs, method: str, C: Tensor | None, alpha_iterations: int, interm: dict | None = None
):
    lirpa_method = METHODS[method.upper()]
    if method == "alpha-CROWN":
        bounded.set_bound_opts({"optimize_bound_args": {"iteration": int(alpha_iterations)}})
    try:
        with torch.no_grad() if method != "alpha-CROWN" else torch.enable_grad():
            lb, ub = bounded.compute_bounds(
                x=inputs, method=lirpa_method, C=C, intermediate_layer_bounds=interm
            )
    except (AssertionError, RuntimeError, TypeError, ValueError, MemoryError) as exc:
        if isinstance(exc, MemoryError) or "allocate" in str(exc):
            raise UserError(
                f"out of memory computing {method} bounds ({str(exc)[:120]}); use fewer images per call or "
                "a cheaper method (CROWN-IBP / IBP)"
            ) from exc
        kinds = sorted({type(m).__name__ for m in bounded.modules() if type(m).__name__.startswith("Bound")})
        pools = [k for k in kinds if "Pool" in k] if method == "alpha-CROWN" else []
        hint = (
            f" (likely culprit: {', '.join(pools)}; auto_LiRPA 0.3 {method} fails on pooling layers — "
            "use method='CROWN')"
            if pools
            else ""
        )
        raise UnsupportedModelError(
            f"auto_LiRPA {method} failed on this model: {type(exc).__name__}: {str(exc)[:200]}{hint}"
        ) from exc
    return lb.detach(), ub.detach()


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


def layer_bounds(
    model: nn.Module,
    x: Tensor,
    perturbation: Perturbation,
    method: str = "CROWN",
    C: Tensor | None = None,
    *,
    max_pieces: int = 8,
    alpha_iterations: int = 20,
    fuse: bool = True,
) -> LayerBounds:
    """Output bounds plus pre-activation bounds of every ReLU (for MILP encodings).

    Args: see :func:`output_bounds`. ``fuse=False`` disables the first-layer fusion (for comparisons).
    """
    _check_model(model)
    method = normalize_method(method)
    if not isinstance(perturbation, Perturbation):
        raise UserError(f"perturbation must be a geo_rs Perturbation, got {type(perturbation).__name__}")
    check_image(x)
    try:
        device = next(model.parameters()).device
    except StopIteration:
        device = x.device
    x = x.to(device)
    was_training = model.training
    model.eval()
    try:
        return _layer_bounds(model, x, perturbation, method, C, max_pieces, alpha_iterations, fuse)
    finally:
        model.train(was_training)


def _layer_bounds(model, x, perturbation, method, C, max_pieces, alpha_iterations, fuse) -> LayerBounds:
    lirpa = auto_lirpa()
    b = x.shape[0]
    with torch.no_grad():
        n_out = model(x[:1]).flatten(1).shape[1]
    C = _check_spec(C, b, n_out)
    fam = perturbation.family(x)
    inf = float("inf")

    if fam.n_params == 0:
        # White noise: the input box is exactly the set; nothing to fuse.
        lo, hi = perturbation.input_box(x)
        key = ("plain", tuple(x.shape[1:]), x.dtype, str(x.device))
        net = _rewrite_upsample(model, x[:1])
        entry = _cached(model, key, lambda: _build(net, (torch.zeros_like(x[:1]),), model))
        ptb = lirpa.PerturbationLpNorm(norm=inf, eps=fam.noise, x_L=lo, x_U=hi)
        lb, ub = _compute(entry.bounded, (lirpa.BoundedTensor(x, ptb),), method, C, alpha_iterations)
        pre = _relu_input_bounds(entry.bounded, b, 1)
        return LayerBounds(Interval(lb.flatten(1), ub.flatten(1)), pre, method, fused=True, n_pieces=1)

    pieces = affine_pieces(perturbation, x, max_pieces=max_pieces)
    net = _rewrite_upsample(model, x[:1])
    split = _split_first_layer(net, x[:1]) if fuse else None
    fused = split is not None
    if split is None:
        first, rest, flatten_first = nn.Identity(), net, False
    else:
        first, rest, flatten_first = split
    inputs, example, first_out = _family_inputs(pieces, first, flatten_first)
    k = fam.n_params
    with_slack = pieces.has_slack
    key = ("family", k, with_slack, fused, tuple(x.shape[1:]), x.dtype, str(x.device))

    def make():
        wrapper = (
            _FusedFamilyNet(
                k, first_out, _no_bias_copy(first) if fused else first, rest, with_slack, flatten_first
            )
            .to(x.device)
            .eval()
        )
        return _build(wrapper, example, model)

    entry = _cached(model, key, make)
    n_p = pieces.n_pieces
    theta = (
        pieces.theta_lo.new_zeros(b * n_p, k) + (pieces.theta_lo + pieces.theta_hi).reshape(b * n_p, k) / 2
    )
    ptb = lirpa.PerturbationLpNorm(
        norm=inf, eps=0.0, x_L=pieces.theta_lo.reshape(b * n_p, k), x_U=pieces.theta_hi.reshape(b * n_p, k)
    )
    args = [lirpa.BoundedTensor(theta, ptb), *inputs[:-1]]
    if with_slack:
        s_lo, s_hi = inputs[-1]
        s_ptb = lirpa.PerturbationLpNorm(norm=inf, eps=0.0, x_L=s_lo, x_U=s_hi)
        args.append(lirpa.BoundedTensor((s_lo + s_hi) / 2, s_ptb))
    Cp = None if C is None else C.repeat_interleave(n_p, dim=0)
    interm = None
    if method != "IBP" and fused:
        interm = _fused_crown_setup(entry.bounded, tuple(args), first_out, b * n_p)
    lb, ub = _compute(entry.bounded, tuple(args), method, Cp, alpha_iterations, interm)
    lb = lb.reshape(b, n_p, -1).amin(1)
    ub = ub.reshape(b, n_p, -1).amax(1)
    pre = _relu_input_bounds(entry.bounded, b, n_p)
    return LayerBounds(Interval(lb, ub), pre, method, fused=fused, n_pieces=n_p)


def _family_inputs(pieces: AffinePieces, first: nn.Module, flatten_first: bool):
    """Constant per-piece inputs of the fused net: base1, G_1..G_k, and the slack box."""
    b, n_p = pieces.base.shape[:2]
    img = pieces.base.shape[2:]
    k = pieces.directions.shape[2]

    def flat(t: Tensor) -> Tensor:
        return t.reshape(-1, *img)

    def apply_first(t: Tensor, bias: bool) -> Tensor:
        t = t.flatten(1) if flatten_first else t
        if isinstance(first, nn.Identity):
            return t
        with torch.no_grad():
            out = first(t)
            if not bias and first.bias is not None:
                out = out - first.bias.reshape((1, -1) + (1,) * (out.dim() - 2))
        return out

    base1 = apply_first(flat(pieces.base), bias=True)
    first_out = tuple(base1.shape[1:])
    base1 = base1.flatten(1)
    gs = [apply_first(flat(pieces.directions[:, :, j]), bias=False).flatten(1) for j in range(k)]
    s_lo, s_hi = flat(pieces.s_lo), flat(pieces.s_hi)
    inputs = [base1, *gs, (s_lo, s_hi)]
    example = (torch.zeros(1, k, dtype=base1.dtype, device=base1.device), base1[:1], *[g[:1] for g in gs])
    if pieces.has_slack:
        example = example + (s_lo[:1],)
    return inputs, example, first_out


def _relu_input_bounds(bounded, b: int, n_p: int) -> list[Interval]:
    out = []
    for relu in bounded.relus:
        node = relu.inputs[0]
        lo, hi = getattr(node, "lower", None), getattr(node, "upper", None)
        if lo is None or hi is None:
            continue
        lo = lo.detach().reshape(b, n_p, *lo.shape[1:]).amin(1)
        hi = hi.detach().reshape(b, n_p, *hi.shape[1:]).amax(1)
        out.append(Interval(lo, hi, check=False))
    return out


def output_bounds(
    model: nn.Module,
    x: Tensor,
    perturbation: Perturbation,
    method: str = "CROWN",
    C: Tensor | None = None,
    *,
    max_pieces: int = 8,
    alpha_iterations: int = 20,
) -> tuple[Tensor, Tensor]:
    """Sound lower/upper bounds of ``model(x')`` (or ``C · model(x')``) over all ``x'`` in the set.

    Args:
        model: an ``nn.Module`` mapping ``(B, *image)`` to ``(B, n_out)``; evaluated in eval mode.
        x: ``(B, *image)`` images with pixels in [0, 1].
        perturbation: ``WhiteNoise(eps)``, ``Brightness(eps)``, ``Contrast(eps)`` or a sum of them.
        method: "IBP", "CROWN-IBP", "CROWN" or "alpha-CROWN" (tightness and cost increase in that order).
        C: optional specification ``(n_spec, n_out)`` or ``(B, n_spec, n_out)``: bound ``C · f``.
        max_pieces: cap on the affine pieces of brightness/contrast sets (more = tighter near clipping).
        alpha_iterations: optimisation steps of alpha-CROWN.

    Returns:
        ``(lower, upper)``, each ``(B, n_out)`` (outputs flattened) or ``(B, n_spec)``.

    Raises:
        UnsupportedModelError: auto_LiRPA cannot handle a layer (named in the message).
        UserError: bad method, image range, or C shape.
    """
    res = layer_bounds(
        model, x, perturbation, method, C, max_pieces=max_pieces, alpha_iterations=alpha_iterations
    )
    return res.output.lower, res.output.upper
