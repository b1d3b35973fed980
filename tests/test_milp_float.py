"""The MILP against the model as it really computes (float32): exact float64 weights, and a rigorous
margin for the float32 rounding, on networks whose large activations cancel (issue 9)."""

from __future__ import annotations

import pytest
import torch
from test_bounds_soundness import pgd_extremes
from torch import nn

from geo_rs import Brightness, Contrast, Verdict, WhiteNoise, encode_network, output_extremum, verify_linear
from geo_rs.bounds.float_error import affine_ops, block_errors, input_rounding
from geo_rs.bounds.milp_relu import dense_affine

pytestmark = pytest.mark.usefixtures("one_thread")

X = torch.tensor([[[[0.2, 0.7], [0.4, 0.9]]]])


def cancelled_mlp(seed: int, big: float = 300.0, hidden: int = 3) -> nn.Sequential:
    """The issue's recipe: hidden activations near ``big``, cancelled by the last bias."""
    g = torch.Generator().manual_seed(seed)
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, hidden), nn.ReLU(), nn.Linear(hidden, 1))
    with torch.no_grad():
        net[1].weight.copy_(torch.randn(hidden, 4, generator=g) * 0.5)
        net[1].bias.copy_(big + torch.randn(hidden, generator=g))
        net[3].weight.copy_(torch.randn(1, hidden, generator=g))
        net[3].bias.copy_(-big * net[3].weight.sum())
    return net.eval()


def cancelled_conv_bn(seed: int, big: float = 300.0) -> nn.Sequential:
    """Conv (bias ~ big) - BatchNorm (running mean ~ big) - ReLU - MaxPool - Linear (bias cancels)."""
    g = torch.Generator().manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(1, 3, 2), nn.BatchNorm2d(3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(3, 2)
    )
    with torch.no_grad():
        net[0].weight.copy_(torch.randn(3, 1, 2, 2, generator=g) * 0.5)
        net[0].bias.copy_(big + torch.randn(3, generator=g))
        net[1].running_mean.copy_(big / 2 + torch.randn(3, generator=g))
        net[1].running_var.uniform_(0.5, 2.0, generator=g)
        net[1].weight.uniform_(0.5, 1.5, generator=g)
        net[1].bias.copy_(big / 2 + torch.randn(3, generator=g))
        net[5].weight.copy_(torch.randn(2, 3, generator=g))
        net[5].bias.copy_(-big * net[5].weight.sum(1))
    return net.eval()


def reachable(net: nn.Module, x: torch.Tensor, pert, out: int, n: int = 3000) -> tuple[float, float]:
    """Smallest / largest float32 value of output ``out`` found on a grid (1-parameter sets), samples
    and PGD."""
    fam = pert.family(x)
    vals = []
    with torch.no_grad():
        if fam.n_params == 1 and fam.noise == 0:
            theta = torch.linspace(float(fam.theta_lo[0]), float(fam.theta_hi[0]), n).reshape(n, 1, 1)
            vals.append(net(pert.apply(x, theta).flatten(0, 1))[:, out])
        vals.append(net(pert.sample(x, n, generator=torch.Generator().manual_seed(0)).flatten(0, 1))[:, out])
    lo, hi = pgd_extremes(net, x, pert, steps=15, restarts=4)
    v = torch.cat(vals)
    return min(float(v.min()), float(lo[0, out])), max(float(v.max()), float(hi[0, out]))


def test_issue_example_is_no_longer_certified():
    """Issue 9: the old MILP's "exact" maximum 1.371538 was below what b = +0.2 reaches (1.374954) and
    verify_linear(-f > -1.373252) came back CERTIFIED."""
    net, pert = cancelled_mlp(2), Brightness(0.2)
    with torch.no_grad():
        reached = float(net(pert.apply(X, torch.tensor([[0.2]])))[0, 0])
    assert abs(reached - 1.374954) < 1e-5
    r = output_extremum(net, X, pert, output=0, sense="max")
    assert r.exact and r.value >= reached
    assert r.value - r.model_value <= 2 * r.float_margin + 1e-6 and r.float_margin < 1e-3
    res = verify_linear(net, X, pert, torch.tensor([-1.0]), -1.373252)
    assert res.verdict is Verdict.COUNTEREXAMPLE and res.confirmed


def test_dense_weights_are_the_layers_exact_values():
    lin = cancelled_mlp(2)[1]
    W, b, _ = dense_affine([lin], (4,))
    assert torch.equal(W, lin.weight.double()) and torch.equal(b, lin.bias.double())
    conv = nn.Conv2d(2, 3, 3, padding=1)
    with torch.no_grad():
        conv.bias.fill_(300.0)
    W, b, _ = dense_affine([conv], (2, 4, 4))
    assert set(W.flatten().tolist()) - {0.0} <= set(conv.weight.double().flatten().tolist())
    assert torch.equal(b, torch.full((48,), 300.0, dtype=torch.float64))


@pytest.mark.parametrize(
    "make,shape",
    [(cancelled_mlp, (1, 2, 2)), (cancelled_conv_bn, (1, 3, 3))],
    ids=["mlp", "conv_bn_maxpool"],
)
def test_milp_optima_are_never_beaten_by_the_float32_model(make, shape):
    """Many networks with large cancelled activations: the MILP maximum (minimum) is never below (above)
    a value the float32 model reaches (grid, sampling, PGD, and the MILP's own witness input)."""
    perts = [Brightness(0.2), Contrast(0.3) + WhiteNoise(0.02)]
    for seed in range(6):
        net = make(seed)
        x = torch.rand(1, *shape, generator=torch.Generator().manual_seed(seed))
        n_out = net(x).shape[1]
        for pert in perts:
            for out in range(n_out):
                lo, hi = reachable(net, x, pert, out)
                top = output_extremum(net, x, pert, output=out, sense="max")
                bottom = output_extremum(net, x, pert, output=out, sense="min")
                assert top.exact and bottom.exact
                assert top.value >= hi and top.value >= top.model_value, (seed, pert, top.value, hi)
                assert bottom.value <= lo and bottom.value <= bottom.model_value, (
                    seed,
                    pert,
                    bottom.value,
                    lo,
                )
                # ... and tight: within twice the rigorous float margin of an attained value
                assert top.value - top.model_value <= 2 * top.float_margin + 1e-6
                assert bottom.model_value - bottom.value <= 2 * bottom.float_margin + 1e-6


def test_every_float_evaluation_is_feasible_with_theta_fixed():
    """Fixing θ (ends included) in the encoding of a cancelled network: the MILP's max and min of the
    output bracket the float32 model's value there."""
    net, pert = cancelled_conv_bn(1), Brightness(0.2)
    x = torch.rand(1, 1, 3, 3, generator=torch.Generator().manual_seed(1))
    import pulp

    from geo_rs import solve_milp

    for theta in [-0.2, -0.05, 0.0, 0.13, 0.2]:
        with torch.no_grad():
            real = float(net(pert.apply(x, torch.tensor([[theta]])))[0, 1])
        for sense in (pulp.LpMaximize, pulp.LpMinimize):
            prob = pulp.LpProblem("fix", sense)
            enc = encode_network(net, x, pert, "CROWN", prob=prob)
            prob += enc.outputs[1]
            prob += enc.theta[0] == theta
            r = solve_milp(prob)
            assert r.optimal
            assert (r.objective >= real) if sense == pulp.LpMaximize else (r.objective <= real)
            assert abs(r.objective - real) <= 2 * enc.float_margin[1] + 1e-6


def _layers_with_large_terms() -> list[tuple[nn.Module, tuple[int, ...]]]:
    torch.manual_seed(0)
    lin = nn.Linear(6, 4)
    conv = nn.Conv2d(2, 3, 3, padding=1)
    tconv = nn.ConvTranspose2d(2, 2, 2, stride=2)
    bn = nn.BatchNorm2d(2).eval()
    with torch.no_grad():
        for m in (lin, conv, tconv):
            m.bias.add_(300.0)
        bn.running_mean.fill_(250.0)
        bn.running_var.fill_(0.3)
        bn.bias.fill_(400.0)
    return [
        (lin, (6,)),
        (conv, (2, 5, 5)),
        (tconv, (2, 3, 3)),
        (bn, (2, 4, 4)),
        (nn.AvgPool2d(2), (2, 4, 4)),
        (nn.Upsample(scale_factor=1.5, mode="bilinear"), (2, 4, 4)),
    ]


@pytest.mark.parametrize(
    "idx", range(6), ids=["linear", "conv", "conv_t", "batchnorm", "avgpool", "bilinear"]
)
def test_float_error_bound_holds_and_is_not_vacuous(idx):
    """|float32 layer(h) - real layer(h)| <= the bound, on random inputs of the box (with values near
    250-300 where the bias cancels); and the bound is within a modest factor of what is observed."""
    layer, shape = _layers_with_large_terms()[idx]
    lo = torch.full((1, *shape), 240.0, dtype=torch.float64)
    hi = torch.full((1, *shape), 310.0, dtype=torch.float64)
    ops = affine_ops(layer)
    local, total, mag = block_errors(ops, lo, hi, 0.0, 0.0)
    assert torch.equal(local, total)
    h = (240 + 70 * torch.rand(4000, *shape, generator=torch.Generator().manual_seed(idx))).float()
    with torch.no_grad():
        y32 = layer(h).double()
    y64 = h.double()
    for op in ops:
        y64 = op.apply(y64)
    err = (y32 - y64).abs()
    assert bool((err <= local).all()), float((err - local).max())
    assert bool((y32.abs() <= mag).all())
    # worst-case analysis: pessimistic, but not by orders of magnitude (bilinear weights: coarser)
    factor = 1000 if idx == 5 else 100
    assert 0 < float(err.max()) and float(local.max()) <= factor * float(err.max()), (local.max(), err.max())


def test_input_rounding_bounds_perturbation_apply():
    x = torch.rand(3, 1, 5, 5, generator=torch.Generator().manual_seed(0))
    pert = Contrast(0.3) + Brightness(0.1) + WhiteNoise(0.05)
    fam = pert.family(x)
    bound = input_rounding(fam, x[:1])
    g = torch.Generator().manual_seed(1)
    theta = fam.theta_lo + torch.rand(200, 1, 2, generator=g) * (fam.theta_hi - fam.theta_lo)
    delta = (torch.rand(200, 1, 1, 5, 5, generator=g) * 2 - 1) * 0.05
    px32 = pert.apply(x[:1], theta, delta).double()
    px64 = pert.apply(x[:1].double(), theta.double(), delta.double())
    assert bool(((px32 - px64).abs() <= bound).all())
