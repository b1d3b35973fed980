"""Realising a MILP assignment on the real network: PGD toward a target pixel per keypoint, then random
restarts; every point visited is checked for a *real* spec violation by a forward pass.

The search runs on the set's own parametrisation ``x' = clamp(x + Σ θ_k A_k + δ, 0, 1)`` (θ in its box,
|δ| <= η), so every input it returns lies in the set. Loss toward targets ``T_k``:
``Σ_k relu(max_{j≠T_k} f_kj − f_kT_k + κ)`` (zero once each target is the strict argmax). A violation
counts only if the network's own argmax keypoints (``torch.argmax``: the first maximiser) violate the
spec — a confirmed counterexample, whatever tie-breaking the spec's "any maximiser" reading allows.

Example::

    >>> hit = attack_assignment(net, x, Brightness(0.01), spec, clean_uv, targets)  # doctest: +SKIP
    >>> hit.image if hit else None  # (1, C, H, W) violating input, or None  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from .spec import KeypointSpec


@dataclass
class Hit:
    """A confirmed violation: ``image (1, C, H, W)`` in the set, its argmax keypoints ``(K, 2)`` heatmap
    pixels and the spec margin (> 0)."""

    image: Tensor
    keypoints: np.ndarray
    margin: float
    how: str


def argmax_uv(heatmaps: Tensor) -> np.ndarray:
    """``(B, K, h, w)`` → ``(B, K, 2)`` argmax pixels (u = column, v = row), first maximiser."""
    b, k, h, w = heatmaps.shape
    idx = heatmaps.reshape(b, k, -1).argmax(-1)
    return torch.stack([idx % w, idx // w], -1).cpu().numpy()


@torch.no_grad()
def check_inputs(
    model: nn.Module, images: Tensor, spec: KeypointSpec, clean_uv: np.ndarray, scale: float, how: str
) -> Hit | None:
    """The first of ``images (B, C, H, W)`` whose argmax keypoints violate ``spec`` (or None)."""
    uv = argmax_uv(model(images))
    for b in range(len(uv)):
        m = spec.margin(clean_uv, uv[b], scale)
        if m > 0:
            return Hit(images[b : b + 1].detach().clone(), uv[b], m, how)
    return None


def _target_loss(
    heatmaps: Tensor, targets: np.ndarray, kappa: float, active: np.ndarray | None = None
) -> Tensor:
    b, k, h, w = heatmaps.shape
    flat = heatmaps.reshape(b, k, h * w)
    idx = torch.as_tensor(targets[:, 1] * w + targets[:, 0], device=flat.device).reshape(1, k, 1)
    tgt = flat.gather(2, idx.expand(b, k, 1))[..., 0]
    others = flat.scatter(2, idx.expand(b, k, 1), float("-inf")).amax(2)
    gap = torch.relu(others - tgt + kappa)
    if active is not None:
        gap = gap[:, torch.as_tensor(active, dtype=torch.bool, device=gap.device)]
    return gap.sum()


def pgd_toward(
    model: nn.Module,
    x: Tensor,
    perturbation,
    targets: np.ndarray,
    spec: KeypointSpec,
    clean_uv: np.ndarray,
    scale: float,
    theta0: Tensor | None = None,
    delta0: Tensor | None = None,
    steps: int = 40,
    kappa: float = 1e-3,
    how: str = "pgd",
    active: np.ndarray | None = None,
) -> Hit | None:
    """Signed-gradient descent on (θ, δ) toward the target pixels ``targets (K, 2)`` (of the ``active``
    keypoints only, if given), projected on the set."""
    fam = perturbation.family(x)
    k, eta = fam.n_params, fam.noise
    lo, hi = fam.theta_lo.to(x), fam.theta_hi.to(x)
    theta = (theta0 if theta0 is not None else (lo + hi).reshape(1, k) / 2).clone().to(x) if k else None
    delta = (delta0 if delta0 is not None else torch.zeros_like(x)).clone().to(x) if eta > 0 else None
    params = [p.requires_grad_(True) for p in (theta, delta) if p is not None]
    for step in range(steps + 1):
        img = perturbation.apply(x, theta, delta)
        hm = model(img)
        hit = check_inputs(model, img.detach(), spec, clean_uv, scale, how)
        if hit is not None or step == steps or not params:
            return hit
        loss = _target_loss(hm, targets, kappa, active)
        if float(loss.detach()) == 0.0:  # every target is the argmax, yet no violation: nothing to gain
            return None
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        rate = 0.25 * (1 - step / steps) + 0.02  # fraction of the set's radius, decaying
        with torch.no_grad():
            for p, g in zip(params, grads):
                if g is None:
                    continue
                if p is theta:
                    p -= rate * (hi - lo) / 2 * g.sign()
                    p.copy_(torch.maximum(torch.minimum(p, hi), lo))
                else:
                    p -= rate * eta * g.sign()
                    p.clamp_(-eta, eta)
    return None


def random_point(perturbation, x: Tensor, gen: torch.Generator) -> tuple[Tensor | None, Tensor | None]:
    fam = perturbation.family(x)
    theta = delta = None
    if fam.n_params:
        u = torch.rand(1, fam.n_params, generator=gen).to(x)
        theta = fam.theta_lo.to(x) + u * (fam.theta_hi - fam.theta_lo).to(x)
    if fam.noise > 0:
        delta = ((torch.rand(x.shape, generator=gen) * 2 - 1) * fam.noise).to(x)
    return theta, delta


def attack_assignment(
    model: nn.Module,
    x: Tensor,
    perturbation,
    spec: KeypointSpec,
    clean_uv: np.ndarray,
    targets: np.ndarray | None,
    scale: float = 1.0,
    start: tuple | None = None,
    steps: int = 40,
    restarts: int = 4,
    n_random: int = 64,
    seed: int = 0,
) -> Hit | None:
    """Find a confirmed violation: PGD toward ``targets`` from ``start`` ``(θ, δ)`` (the MILP's point), then
    toward each moved keypoint's target alone, then ``restarts`` PGD runs from random points, then
    ``n_random`` random samples (batched)."""
    model.eval()
    gen = torch.Generator().manual_seed(seed)

    def pgd(theta0, delta0, how: str, active: np.ndarray | None = None) -> Hit | None:
        return pgd_toward(
            model,
            x,
            perturbation,
            targets,
            spec,
            clean_uv,
            scale,
            theta0,
            delta0,
            steps,
            how=how,
            active=active,
        )

    if targets is not None:
        theta0, delta0 = start if start is not None else (None, None)
        hit = pgd(theta0, delta0, "pgd")
        if hit is not None:
            return hit
        moved = np.flatnonzero((targets != clean_uv).any(1))
        if len(moved) > 1:  # a violation may need only some keypoints to move: each alone
            for k in moved:
                hit = pgd(theta0, delta0, f"pgd-keypoint{k}", active=np.arange(len(targets)) == k)
                if hit is not None:
                    return hit
        for r in range(restarts):
            hit = pgd(*random_point(perturbation, x, gen), f"pgd-restart{r}")
            if hit is not None:
                return hit
    for s in range(0, n_random, 64):
        m = min(64, n_random - s)
        imgs = perturbation.sample(x, m, generator=gen)
        if imgs.dim() == x.dim():
            imgs = imgs.unsqueeze(0).expand(m, *x.shape)
        hit = check_inputs(model, imgs[:, 0], spec, clean_uv, scale, "random")
        if hit is not None:
            return hit
    return None
