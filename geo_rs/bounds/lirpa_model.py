"""What auto_LiRPA is asked to bound: a private snapshot of the model, the fused perturbation map, and
the per-row inputs (one row per image and affine piece).

Every call of :func:`geo_rs.output_bounds` works on a fresh :func:`snapshot` (a deep copy in eval mode,
without gradients) and builds a fresh bounded module from it: nothing is cached between calls, so a
bound always describes the model as it is at the call (module swaps, buffers such as BatchNorm
statistics and ``eps``, train/eval flags, hooks — all are part of the copy), never an older one, and
auto_LiRPA state left by an earlier (possibly failed) call cannot leak into a later one. The copy also
keeps auto_LiRPA's side effects (alpha-CROWN's backward pass accumulates ``.grad`` on the parameters it
bounds) away from the caller's model.

How brightness / contrast stay tight (even with IBP): the set is cut into affine pieces
(:func:`geo_rs.bounds.perturbations.affine_pieces`); on each piece the input is
``base + Σ_k θ_k G_k + s`` with a few scalars θ. The first layer ``W·+b`` of the model (Conv2d or Linear,
possibly after Flatten) is *fused* with that map: the bounded network takes θ as input and computes
``W·base + b + Σ_k θ_k (W G_k) + W s`` — an exact linear function of θ, so even IBP bounds the first layer
exactly instead of treating every pixel as independent.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor, nn

from ..errors import UserError
from .perturbations import AffinePieces, Perturbation, affine_pieces

# Layers known to work with every method (tested; see the README's table).
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


class UnsupportedModelError(UserError):
    """auto_LiRPA cannot bound this model with this method (the message names the layer and method)."""


def snapshot(model: nn.Module, device: torch.device, dtype: torch.dtype | None = None) -> nn.Module:
    """A private deep copy of ``model`` in eval mode, parameters frozen, optionally converted to ``dtype``."""
    try:
        snap = copy.deepcopy(model)
    except Exception as exc:  # a module holding something uncopyable (a lock, an open file, ...)
        raise UnsupportedModelError(
            f"cannot bound this model: copying it failed ({type(exc).__name__}: {str(exc)[:160]})"
        ) from exc
    snap.eval()
    for p in snap.parameters():
        p.requires_grad_(False)
        p.grad = None
    # Dropout in eval is the identity; auto_LiRPA would trace it (and everything else) in train mode.
    for name, m in list(snap.named_modules()):
        if isinstance(m, nn.modules.dropout._DropoutNd) and name:
            parent = snap.get_submodule(name.rsplit(".", 1)[0]) if "." in name else snap
            setattr(parent, name.rsplit(".", 1)[-1], nn.Identity())
    return snap.to(device=device, dtype=dtype) if dtype is not None else snap.to(device)


def _pair(v) -> tuple[int, int]:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def _unsound_reason(m: nn.Module, method: str) -> str | None:
    """Why auto_LiRPA 0.3 would bound layer ``m`` *wrongly* with ``method`` (None if it does not).

    Each case was found by sampling (bounds that real outputs exceed by 2e-4 to 2e-2) and is kept out by
    a test: the pooling backward passes assume kernel == stride and no padding, and ignore dilation,
    ``count_include_pad=False`` and ``divisor_override``; grouped convolutions come out wrong in CROWN.
    """
    backward = method != "IBP"
    if isinstance(m, nn.AvgPool2d):
        k, st, pad = _pair(m.kernel_size), _pair(m.stride or m.kernel_size), _pair(m.padding)
        if m.divisor_override is not None:
            return "divisor_override"
        if m.ceil_mode:
            return "ceil_mode=True"
        if not m.count_include_pad and pad != (0, 0):
            return "count_include_pad=False with padding"
        if backward and (k != st or pad != (0, 0)):
            return "stride != kernel_size or padding (use IBP)"
    if isinstance(m, nn.MaxPool2d):
        if _pair(m.dilation) != (1, 1):
            return "dilation"
        if m.ceil_mode:
            return "ceil_mode=True"
    if isinstance(m, nn.Conv2d) and m.groups != 1 and backward:
        return "groups > 1 (use IBP)"
    return None


def refuse_known_unsound(snap: nn.Module, method: str) -> None:
    """Raise :class:`UnsupportedModelError` for layers auto_LiRPA 0.3 bounds wrongly with ``method``."""
    for name, m in snap.named_modules():
        reason = _unsound_reason(m, method)
        if reason:
            raise UnsupportedModelError(
                f"{method} bounds are not supported for layer {name or '<model>'} ({type(m).__name__} with "
                f"{reason}): auto_LiRPA 0.3 computes wrong bounds for it"
            )


# ------------------------------------------------------------------------------------------------
# Model preparation: rewrite nearest Upsample, find the first affine layer, fuse the perturbation.
# ------------------------------------------------------------------------------------------------


class NearestUpsample(nn.Module):
    """``nn.Upsample(scale_factor=s, mode='nearest')`` as a ConvTranspose2d (stride = kernel = s) whose
    kernel copies channel c to channel c (auto_LiRPA 0.3 supports only groups=1 transposed convs)."""

    def __init__(self, channels: int, scale: int, source_name: str = "") -> None:
        super().__init__()
        self.source_name = source_name  # the replaced layer's name in the caller's model
        self.up = nn.ConvTranspose2d(channels, channels, scale, stride=scale, bias=False)
        with torch.no_grad():
            self.up.weight.zero_()
            for c in range(channels):
                self.up.weight[c, c] = 1.0
        self.up.weight.requires_grad_(False)

    def forward(self, x: Tensor) -> Tensor:
        return self.up(x)


def integer_scale(up: nn.Upsample) -> int | None:
    """The integer scale of a nearest ``nn.Upsample`` (None for other modes / sizes)."""
    if up.mode != "nearest" or up.size is not None or up.scale_factor is None:
        return None
    sf = up.scale_factor if isinstance(up.scale_factor, (tuple, list)) else (up.scale_factor,)
    if len(set(float(s) for s in sf)) != 1 or float(sf[0]) != int(sf[0]) or int(sf[0]) < 1:
        return None
    return int(sf[0])


def rewrite_upsample(model: nn.Module, example: Tensor) -> nn.Module:
    """``model`` (a private snapshot, changed in place) with nearest integer ``nn.Upsample`` replaced by
    an exact ConvTranspose2d."""
    ups = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Upsample) and integer_scale(m)]
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
    for name, m in ups:
        parent = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
        new = NearestUpsample(channels[name], integer_scale(m), name).to(
            device=example.device, dtype=example.dtype
        )
        setattr(parent, name.rsplit(".", 1)[-1], new)
    return model


def split_first_layer(model: nn.Module, example: Tensor) -> tuple[nn.Module, nn.Module, bool] | None:
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
            whole, split = model(probe), rest(first(inp))
            # a wrapper that reshapes (or otherwise changes) its Sequential's output is not the Sequential
            if whole.shape != split.shape or not torch.allclose(whole, split, rtol=1e-4, atol=1e-5):
                return None
    return first, rest, flatten_first


class FusedFamilyNet(nn.Module):
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


def no_bias_copy(first: nn.Module) -> nn.Module:
    c = copy.deepcopy(first)
    c.bias = None
    for p in c.parameters():
        p.requires_grad_(False)
    return c


# ------------------------------------------------------------------------------------------------
# The bounding problem: module + per-row inputs.
# ------------------------------------------------------------------------------------------------


@dataclass
class BoundInput:
    """One input of the bounded module, rows first: a point ``value`` and, when perturbed, its box."""

    value: Tensor
    lower: Tensor | None = None
    upper: Tensor | None = None

    def take(self, r0: int, r1: int) -> BoundInput:
        pick = lambda t: None if t is None else t[r0:r1]  # noqa: E731
        return BoundInput(self.value[r0:r1], pick(self.lower), pick(self.upper))


@dataclass
class BoundProblem:
    """What auto_LiRPA bounds: ``module(*inputs)`` row by row (row = one image and affine piece).

    Attributes:
        module: the model snapshot (white noise) or the fused wrapper (brightness / contrast).
        inputs: the module's inputs, each ``(rows, ...)``.
        C: specification ``(rows, n_spec, n_out)`` or None.
        n_images, n_pieces: rows = n_images · n_pieces (image-major).
        fused: whether the perturbation map is fused with the first layer; first_out: that layer's
            output shape (None when not fused).
        layer_names: ``id(module) -> name in the caller's model`` (for error messages).
    """

    module: nn.Module
    inputs: list[BoundInput]
    C: Tensor | None
    n_images: int
    n_pieces: int
    fused: bool
    first_out: tuple[int, ...] | None
    layer_names: dict[int, str] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return self.inputs[0].value.shape[0]

    def take(self, r0: int, r1: int) -> BoundProblem:
        """The same problem restricted to rows ``r0:r1``."""
        C = None if self.C is None else self.C[r0:r1]
        return replace(self, inputs=[i.take(r0, r1) for i in self.inputs], C=C)

    def example(self) -> tuple[Tensor, ...]:
        """One row of every input: the example auto_LiRPA traces the module with."""
        return tuple(i.value[:1] for i in self.inputs)


def _prepared(snap: nn.Module, x: Tensor) -> tuple[nn.Module, dict[int, str]]:
    """The snapshot with nearest Upsample rewritten, and ``id(module) -> name in the caller's model``."""
    names = {id(m): (n or type(m).__name__) for n, m in snap.named_modules()}
    net = rewrite_upsample(snap, x[:1])
    for m in net.modules():
        if isinstance(m, NearestUpsample):
            names[id(m)] = names[id(m.up)] = m.source_name
    return net, names


def noise_problem(snap: nn.Module, x: Tensor, lo: Tensor, hi: Tensor, C: Tensor | None) -> BoundProblem:
    """White noise: the input box is exactly the set; nothing to fuse."""
    net, names = _prepared(snap, x)
    return BoundProblem(
        net, [BoundInput(x, lo, hi)], C, x.shape[0], 1, fused=True, first_out=None, layer_names=names
    )


def family_problem(
    snap: nn.Module, x: Tensor, perturbation: Perturbation, C: Tensor | None, max_pieces: int, fuse: bool
) -> BoundProblem:
    """Brightness / contrast (with or without noise): pieces, fused with the first affine layer."""
    pieces = affine_pieces(perturbation, x, max_pieces=max_pieces)
    net, names = _prepared(snap, x)
    split = split_first_layer(net, x[:1]) if fuse else None
    if split is None:
        first, rest, flatten_first = nn.Identity(), net, False
    else:
        first, rest, flatten_first = split
    first_nobias = no_bias_copy(first) if split is not None else first
    consts, (s_lo, s_hi), first_out = family_inputs(pieces, first, first_nobias, flatten_first)
    k = pieces.directions.shape[2]
    names[id(first_nobias)] = names.get(id(first), "first layer")
    module = FusedFamilyNet(k, first_out, first_nobias, rest, pieces.has_slack, flatten_first)
    module = module.to(device=x.device, dtype=x.dtype).eval()
    b, n_p = pieces.base.shape[:2]
    t_lo, t_hi = pieces.theta_lo.reshape(b * n_p, k), pieces.theta_hi.reshape(b * n_p, k)
    inputs = [BoundInput((t_lo + t_hi) / 2, t_lo, t_hi)] + [BoundInput(c) for c in consts]
    if pieces.has_slack:
        inputs.append(BoundInput((s_lo + s_hi) / 2, s_lo, s_hi))
    Cp = None if C is None else C.repeat_interleave(n_p, dim=0)
    return BoundProblem(module, inputs, Cp, b, n_p, split is not None, first_out if split else None, names)


def family_inputs(pieces: AffinePieces, first: nn.Module, first_nobias: nn.Module, flatten_first: bool):
    """Constant per-piece inputs of the fused net (base1, G_1..G_k), the slack box and the first
    layer's output shape. ``G_k`` comes from the bias-free copy of the first layer (not ``first(d) - b``,
    which loses the low bits of ``W d`` next to a large bias)."""
    img = pieces.base.shape[2:]
    k = pieces.directions.shape[2]

    def flat(t: Tensor) -> Tensor:
        return t.reshape(-1, *img)

    def apply_first(t: Tensor, bias: bool) -> Tensor:
        t = t.flatten(1) if flatten_first else t
        with torch.no_grad():
            return (first if bias else first_nobias)(t)

    base1 = apply_first(flat(pieces.base), bias=True)
    first_out = tuple(base1.shape[1:])
    gs = [apply_first(flat(pieces.directions[:, :, j]), bias=False).flatten(1) for j in range(k)]
    return [base1.flatten(1), *gs], (flat(pieces.s_lo), flat(pieces.s_hi)), first_out
