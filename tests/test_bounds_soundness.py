"""Soundness of output_bounds: for every small net x perturbation x method, the clean output, >= 10^4
sampled inputs per image and a PGD attack on every output (both directions) stay inside the bounds."""

from __future__ import annotations

import pytest
import torch
from test_bounds_nets import random_bn_cnn, sample_images, trained_cnn, wrapped_mlp

from geo_rs import Brightness, Contrast, WhiteNoise, layer_bounds

pytestmark = pytest.mark.usefixtures("one_thread")

METHODS = ["IBP", "CROWN-IBP", "CROWN", "alpha-CROWN"]
PERTURBATIONS = {
    "noise": WhiteNoise(0.02),
    "brightness": Brightness(0.03),
    "contrast": Contrast(0.1),
    "all": Contrast(0.05) + Brightness(0.02) + WhiteNoise(0.005),
}
NETS = {"trained_cnn": trained_cnn, "random_bn_cnn": random_bn_cnn, "wrapped_mlp": wrapped_mlp}
N_SAMPLES = 10_000
TOL = 1e-5


def pgd_extremes(net, x, pert, steps: int = 25, restarts: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image and output, the smallest / largest value PGD finds: ``(B, n_out)`` each."""
    fam = pert.family(x)
    b = x.shape[0]
    n_out = net(x).shape[1]
    lows, highs = [], []
    for sign in (-1.0, 1.0):
        best = torch.full((b, n_out), -float("inf"))
        for o in range(n_out):
            theta = fam.theta_lo + torch.rand(restarts, b, fam.n_params) * (fam.theta_hi - fam.theta_lo)
            delta = (torch.rand(restarts, *x.shape) * 2 - 1) * fam.noise
            theta.requires_grad_(True)
            delta.requires_grad_(True)
            for _ in range(steps):
                out = net(pert.apply(x, theta, delta).flatten(0, 1)).reshape(restarts, b, -1)[..., o]
                g_t, g_d = torch.autograd.grad(
                    (sign * out).sum(), [theta, delta], allow_unused=True, materialize_grads=True
                )
                with torch.no_grad():
                    theta += (fam.theta_hi - fam.theta_lo) / 10 * g_t.sign()
                    theta.copy_(torch.maximum(torch.minimum(theta, fam.theta_hi), fam.theta_lo))
                    delta += fam.noise / 5 * g_d.sign()
                    delta.clamp_(-fam.noise, fam.noise)
            with torch.no_grad():
                out = net(pert.apply(x, theta, delta).flatten(0, 1)).reshape(restarts, b, -1)[..., o]
                best[:, o] = (sign * out).amax(0)
        (highs if sign > 0 else lows).append(best * sign)
    return lows[0], highs[0]


@pytest.mark.parametrize("pert_name", sorted(PERTURBATIONS))
@pytest.mark.parametrize("net_name", sorted(NETS))
def test_bounds_contain_samples_and_pgd(net_name, pert_name):
    net, pert = NETS[net_name](), PERTURBATIONS[pert_name]
    x = sample_images(2)
    gen = torch.Generator().manual_seed(11)
    with torch.no_grad():
        clean = net(x)
        samples = net(pert.sample(x, N_SAMPLES, generator=gen).flatten(0, 1)).reshape(N_SAMPLES, *clean.shape)
    pgd_lo, pgd_hi = pgd_extremes(net, x, pert)
    widths = {}
    for method in METHODS:
        # alpha-CROWN is sound after any number of steps; 3 keep the test fast. (MaxPool / AvgPool nets
        # used to fail with alpha-CROWN: the fallback strategies of lirpa_run now bound them.)
        res = layer_bounds(net, x, pert, method, alpha_iterations=3)
        lo, hi = res.output.lower, res.output.upper
        assert lo.shape == clean.shape and hi.shape == clean.shape
        assert bool((lo <= clean + TOL).all() and (clean <= hi + TOL).all()), method
        assert bool((samples >= lo - TOL).all() and (samples <= hi + TOL).all()), method
        assert bool((pgd_lo >= lo - TOL).all() and (pgd_hi <= hi + TOL).all()), method
        widths[method] = float((hi - lo).mean())
    # The bounds are not vacuous: CROWN is within a modest factor of the empirical spread.
    spread = float((torch.maximum(samples.amax(0), pgd_hi) - torch.minimum(samples.amin(0), pgd_lo)).mean())
    assert widths["CROWN"] >= spread - TOL
    assert widths["CROWN"] <= 50 * spread + 1e-3, (widths, spread)


@pytest.mark.parametrize("pert_name", ["noise", "brightness", "all"])
def test_pre_activation_bounds_contain_sampled_pre_activations(pert_name):
    net, pert = trained_cnn(), PERTURBATIONS[pert_name]
    x = sample_images(2)
    relus = [m for m in net if isinstance(m, torch.nn.ReLU)]
    seen: list[list[torch.Tensor]] = [[] for _ in relus]
    hooks = [
        r.register_forward_hook(lambda m, i, o, k=k: seen[k].append(i[0].detach()))
        for k, r in enumerate(relus)
    ]
    try:
        with torch.no_grad():
            xs = pert.sample(x, 2000, generator=torch.Generator().manual_seed(3))
            net(xs.flatten(0, 1))
    finally:
        for h in hooks:
            h.remove()
    for method in ["IBP", "CROWN"]:
        res = layer_bounds(net, x, pert, method)
        assert len(res.pre_activations) == len(relus)
        for k, iv in enumerate(res.pre_activations):
            vals = seen[k][0].reshape(2000, *iv.shape)
            assert bool((vals >= iv.lower - TOL).all() and (vals <= iv.upper + TOL).all()), (method, k)
