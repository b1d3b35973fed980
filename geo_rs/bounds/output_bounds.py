"""Bounds of a network's outputs (or of ``C · f(x)``) over a perturbation set, via auto_LiRPA.

``output_bounds(model, x, perturbation, method)`` is the one entry point; auto_LiRPA's option dicts,
``BoundedTensor``/``PerturbationLpNorm`` plumbing and its torch-2.13 patches stay in this module,
:mod:`~geo_rs.bounds.lirpa_model` (what is bounded), :mod:`~geo_rs.bounds.lirpa_run` (how, with
fallbacks) and :mod:`~geo_rs.bounds.lirpa_compat` (patches).

No cache: every call bounds a fresh private copy of the model (see :mod:`geo_rs.bounds.lirpa_model`),
so the answer describes the model as it is at the call and never depends on earlier calls.

Brightness / contrast are bounded piecewise with the perturbation map fused into the first Conv2d /
Linear (exact at the first layer even for IBP); if the first layer cannot be found (a model that is not
an ``nn.Sequential`` or a module wrapping one) the map is not fused: bounds stay sound but IBP is then as
loose as white noise (``fused=False``).

Layers that work with all four methods (tested on batch sizes 1, 2, 3, 20): Conv2d, Linear, ReLU,
BatchNorm1d/2d (eval), AvgPool2d, MaxPool2d (kernel = stride, no padding: auto_LiRPA's limit),
Flatten, ConvTranspose2d (groups=1, no padding; bounded in auto_LiRPA's dense "matrix" mode),
Sigmoid/Tanh (no MILP for those), nn.Upsample(nearest, integer scale) — rewritten here to an equivalent
ConvTranspose2d. Where auto_LiRPA 0.3 trips (alpha-CROWN on MaxPool / Sigmoid after a conv, ...), the
strategies of :mod:`~geo_rs.bounds.lirpa_run` take over; whatever still fails raises
:class:`UnsupportedModelError` naming the method and layer. Bilinear Upsample and other unknown ops raise
it at build time with the operation and the layer type named.

Floating point: auto_LiRPA computes in the model's dtype with round-to-nearest, so the bounds hold for
the network in *real* arithmetic up to the rounding of that computation, and the float32 network's own
rounding (at most γ_n·|W||x| per layer, see :mod:`geo_rs.bounds.float_error`) is not added. Pass
``dtype=torch.float64`` to bound a float64 copy (what the MILP encoder does before adding its rigorous
float32 margin).

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

import contextlib
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..errors import UserError
from .interval import Interval
from .lirpa_model import (
    SUPPORTED_LAYERS,
    BoundProblem,
    UnsupportedModelError,
    family_problem,
    noise_problem,
    refuse_known_unsound,
    snapshot,
)
from .lirpa_run import METHODS, compute
from .perturbations import Perturbation, check_image

__all__ = [
    "SUPPORTED_LAYERS",
    "LayerBounds",
    "UnsupportedModelError",
    "clear_bounds_cache",
    "layer_bounds",
    "normalize_method",
    "output_bounds",
]


def normalize_method(method: str) -> str:
    """Canonical public method name (``"IBP"``, ``"CROWN-IBP"``, ``"CROWN"``, ``"alpha-CROWN"``)."""
    key = str(method).strip().upper().replace("_", "-").replace("Α", "ALPHA")
    if key in ("ALPHACROWN", "CROWN-OPTIMIZED"):
        key = "ALPHA-CROWN"
    if key not in METHODS:
        raise UserError(f"unknown bound method {method!r}; choose one of IBP, CROWN-IBP, CROWN, alpha-CROWN")
    return "alpha-CROWN" if key == "ALPHA-CROWN" else key


def clear_bounds_cache(model: nn.Module | None = None) -> None:
    """Kept for compatibility: there is no cache any more (every call bounds a fresh copy of the
    model), so there is nothing to clear."""
    del model


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
        strategy: how auto_LiRPA was run ("batched", or the fallback that worked, e.g. "one row at a
            time, conv matrix mode"; see :mod:`geo_rs.bounds.lirpa_run`).
    """

    output: Interval
    pre_activations: list[Interval]
    method: str
    fused: bool
    n_pieces: int
    strategy: str = "batched"


def _check_spec(C: Tensor | None, b: int, n_out: int) -> Tensor | None:
    if C is None:
        return None
    if not isinstance(C, Tensor):
        raise UserError(f"specification C must be a tensor, got {type(C).__name__}")
    if C.dim() == 2:
        C = C.unsqueeze(0).expand(b, -1, -1)
    if C.dim() != 3 or C.shape[0] != b or C.shape[2] != n_out:
        raise UserError(
            f"specification C must have shape (n_spec, {n_out}) or ({b}, n_spec, {n_out}); "
            f"got {tuple(C.shape)}"
        )
    return C


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype):
    """auto_LiRPA 0.3 creates some tensors with the default dtype (MaxPool, Sigmoid tables): bounding
    a float64 copy needs float64 as the default while it runs."""
    old = torch.get_default_dtype()
    if dtype == old or dtype not in (torch.float32, torch.float64):
        yield
        return
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


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
    dtype: torch.dtype | None = None,
) -> LayerBounds:
    """Output bounds plus pre-activation bounds of every ReLU (for MILP encodings).

    Args: see :func:`output_bounds`. ``fuse=False`` disables the first-layer fusion (for comparisons);
    ``dtype`` bounds a copy of the model converted to that dtype (e.g. ``torch.float64``).
    """
    if not isinstance(model, nn.Module):
        raise UserError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    method = normalize_method(method)
    if not isinstance(perturbation, Perturbation):
        raise UserError(f"perturbation must be a geo_rs Perturbation, got {type(perturbation).__name__}")
    check_image(x)
    try:
        device = next(model.parameters()).device
    except StopIteration:
        device = x.device
    snap = snapshot(model, device, dtype)
    refuse_known_unsound(snap, method)
    x = x.to(device=device, dtype=dtype or x.dtype)
    with _default_dtype(x.dtype):
        snap = _flat_output(snap, x)
        problem = _problem(snap, x, perturbation, C, max_pieces, fuse, method)
        raw = compute(problem, method, alpha_iterations)
    b, n_p = problem.n_images, problem.n_pieces
    lo = raw.lower.reshape(b, n_p, -1).amin(1)
    hi = raw.upper.reshape(b, n_p, -1).amax(1)
    pre = [
        Interval(
            r_lo.reshape(b, n_p, *r_lo.shape[1:]).amin(1),
            r_hi.reshape(b, n_p, *r_hi.shape[1:]).amax(1),
            check=False,
        )
        for r_lo, r_hi in raw.relu_inputs
    ]
    return LayerBounds(Interval(lo, hi), pre, method, problem.fused, n_p, raw.strategy)


def _flat_output(snap: nn.Module, x: torch.Tensor) -> nn.Module:
    """``snap`` with a trailing Flatten when its output has more than two dimensions (bounds are returned
    flat anyway): auto_LiRPA's backward pass through nearest Upsample fails on an image-shaped output."""
    try:
        with torch.no_grad():
            dims = snap(x[:1]).dim()
    except Exception:  # reported with its cause by _problem
        return snap
    if dims <= 2:
        return snap
    layers = list(snap) if isinstance(snap, nn.Sequential) else [snap]  # keeps first-layer fusion
    return nn.Sequential(*layers, nn.Flatten())


def _problem(snap, x, perturbation, C, max_pieces, fuse, method) -> BoundProblem:
    """The bounding problem; a model that cannot even run on ``x`` is an UnsupportedModelError too."""
    try:
        with torch.no_grad():
            n_out = snap(x[:1]).flatten(1).shape[1]
        C = _check_spec(C, x.shape[0], n_out)
        if C is not None:
            C = C.to(device=x.device, dtype=x.dtype)
        fam = perturbation.family(x)
        if fam.n_params == 0:
            lo, hi = perturbation.input_box(x)
            return noise_problem(snap, x, lo, hi, C)
        return family_problem(snap, x, perturbation, C, max_pieces, fuse)
    except UserError:
        raise
    except Exception as exc:
        raise UnsupportedModelError(
            f"cannot prepare {method} bounds: the model fails on x of shape {tuple(x.shape)} "
            f"({type(exc).__name__}: {str(exc)[:160]})"
        ) from exc


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
        model: an ``nn.Module`` mapping ``(B, *image)`` to ``(B, n_out)``; bounded in eval semantics on a
            private copy (the caller's model, its mode and its gradients are left untouched).
        x: ``(B, *image)`` images with pixels in [0, 1].
        perturbation: ``WhiteNoise(eps)``, ``Brightness(eps)``, ``Contrast(eps)`` or a sum of them.
        method: "IBP", "CROWN-IBP", "CROWN" or "alpha-CROWN" (tightness and cost increase in that order).
        C: optional specification ``(n_spec, n_out)`` or ``(B, n_spec, n_out)``: bound ``C · f``.
        max_pieces: cap on the affine pieces of brightness/contrast sets (more = tighter near clipping).
        alpha_iterations: optimisation steps of alpha-CROWN.

    Returns:
        ``(lower, upper)``, each ``(B, n_out)`` (outputs flattened) or ``(B, n_spec)``.

    Raises:
        UnsupportedModelError: auto_LiRPA cannot bound the model with this method (layer and method named).
        UserError: bad method, image range, or C shape.
    """
    res = layer_bounds(
        model, x, perturbation, method, C, max_pieces=max_pieces, alpha_iterations=alpha_iterations
    )
    return res.output.lower, res.output.upper
