"""Attacks on box stability: find inputs of a perturbation set that drive the detector's IoU down.

Used to test soundness of the verifier (no attack may find an IoU below a certified lower bound) and to
show how far the certified bound is from the empirical worst case. Two searches on the set's
parametrisation ``clamp(x + Σ θ_k A_k(x) + δ, 0, 1)`` (see ``geo_rs.bounds.perturbations``):

* random: points drawn by ``perturbation.sample`` (a quarter of them at corners of the parameter box);
* PGD: signed-gradient descent on the IoU w.r.t. (θ, δ), projected onto the parameter box, from random
  starts. IoU is flat (gradient 0) when the box does not overlap the gt; PGD then simply stops moving.

Example::

    >>> from geo_rs import Brightness
    >>> worst = attack_min_iou(model, image, gt, Brightness(0.002))  # doctest: +SKIP
    >>> worst.iou  # the smallest IoU found  # doctest: +SKIP
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from geo_rs import box_iou


@dataclass
class AttackResult:
    iou: float  # smallest IoU found
    image: Tensor  # (C, H, W) input attaining it (inside the perturbation set)
    box: Tensor  # (4,) the detector's box on that input
    n_evaluated: int


def _device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


@torch.no_grad()
def _random_search(model, x, gt, perturbation, n, batch, generator):
    best = (float("inf"), None, None)
    for s in range(0, n, batch):
        m = min(batch, n - s)
        imgs = perturbation.sample(x, m, generator=generator)
        if imgs.dim() == x.dim():  # a set without parameters (e.g. eps = 0) may come back unsampled
            imgs = imgs.unsqueeze(0).expand(m, *x.shape)
        imgs = imgs[:, 0]  # (m, C, H, W)
        boxes = model(imgs)
        ious = box_iou(boxes.double(), gt.double())
        k = int(ious.argmin())
        if float(ious[k]) < best[0]:
            best = (float(ious[k]), imgs[k].clone(), boxes[k].clone())
    return best


def _pgd(model, x, gt, perturbation, steps, restarts, generator):
    fam = perturbation.family(x)
    k, eta = fam.n_params, fam.noise
    lo, hi = fam.theta_lo, fam.theta_hi
    best = (float("inf"), None, None)
    for _ in range(restarts):
        u = torch.rand(k, generator=generator, dtype=x.dtype).to(x.device)
        theta = (lo + u * (hi - lo)).reshape(1, k)
        delta = (torch.rand(x.shape, generator=generator, dtype=x.dtype).to(x.device) * 2 - 1) * eta
        theta.requires_grad_(k > 0)
        delta.requires_grad_(eta > 0)
        for step in range(steps):
            img = perturbation.apply(x, theta if k else None, delta if eta > 0 else None)
            box = model(img)
            iou = box_iou(box, gt)[0]
            if float(iou.detach()) < best[0]:
                best = (float(iou.detach()), img[0].detach().clone(), box[0].detach().clone())
            params = [p for p in (theta, delta) if p.requires_grad]
            if not params:
                break
            grads = torch.autograd.grad(iou, params, allow_unused=True)
            rate = 0.5 * (1 - step / steps) + 0.05  # decaying step, as a fraction of the set's radius
            with torch.no_grad():
                for p, g in zip(params, grads):
                    if g is None:
                        continue
                    if p is theta:
                        theta -= rate * (hi - lo) / 2 * g.sign()
                        theta.copy_(torch.maximum(torch.minimum(theta, hi), lo))
                    else:
                        delta -= rate * eta * g.sign()
                        delta.clamp_(-eta, eta)
    return best


def attack_min_iou(
    model: nn.Module,
    image: Tensor,
    gt: Tensor,
    perturbation,
    *,
    n_random: int = 256,
    pgd_steps: int = 30,
    pgd_restarts: int = 3,
    batch: int = 64,
    seed: int = 0,
) -> AttackResult:
    """Smallest IoU(model(x'), gt) found over ``x'`` in ``perturbation`` around ``image (C, H, W)``."""
    model = model.eval()
    device = _device(model)
    x = image[None].to(device)
    gt = torch.as_tensor(gt, dtype=x.dtype, device=device).reshape(4)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        clean_box = model(x)[0]
    best = (float(box_iou(clean_box.double(), gt.double())), x[0].clone(), clean_box.clone())
    candidates = [best]
    if n_random:
        candidates.append(_random_search(model, x, gt, perturbation, n_random, batch, generator))
    if pgd_steps and pgd_restarts:
        candidates.append(_pgd(model, x, gt, perturbation, pgd_steps, pgd_restarts, generator))
    iou, img, box = min((c for c in candidates if c[1] is not None), key=lambda c: c[0])
    n_eval = 1 + n_random + pgd_steps * pgd_restarts
    return AttackResult(iou=iou, image=img.cpu(), box=box.cpu(), n_evaluated=n_eval)
