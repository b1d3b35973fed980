"""The rounding margin of keypoint verification (``keypoint.verify.float_margin``): stably inactive ReLUs
have zero deviation, and the margin bounds the measured |float model − more precise model| on sampled,
corner and adversarially chosen points of the set — for float32 (against float64) and for a float64
deployment (against numpy's extended precision) — on small nets and the verification detector."""

import copy

import numpy as np
import pytest
import torch
from torch import nn

from geo_rs import Brightness, Contrast, WhiteNoise
from keypoint import KeypointSpec, verify_keypoints
from keypoint.verify.attack import argmax_uv
from keypoint.verify.detector import build_detector
from keypoint.verify.float_margin import float_deviation, relu_deviation
from keypoint.verify.reachable import engine_pre_activations, flat_model
from keypoint.verify.toy import toy_images, train_toy

pytestmark = pytest.mark.usefixtures("one_thread")


def test_relu_deviation_is_zero_only_when_both_inputs_are_nonpositive():
    hi = torch.tensor([-1.0, -1e-9, 0.0, 0.5], dtype=torch.float64)
    dev = torch.tensor([0.5, 1e-8, 0.0, 0.1], dtype=torch.float64)
    # -1 + 0.5 <= 0: both <= 0; -1e-9 + 1e-8 > 0: both outputs in [0, 9e-9]; 0 + 0: both <= 0; 0.5: dev
    assert relu_deviation(hi, dev).tolist() == [0.0, -1e-9 + 1e-8, 0.0, 0.1]


def test_stably_inactive_relus_give_zero_deviation():
    conv = nn.Conv2d(1, 4, 3, 1, 1)
    with torch.no_grad():
        conv.bias.copy_(torch.tensor([-50.0, -50.0, 50.0, 50.0]))  # 0, 1 stably off; 2, 3 stably on
    net = nn.Sequential(conv, nn.ReLU(), nn.Flatten()).eval()
    x = torch.rand(1, 1, 6, 6, generator=torch.Generator().manual_seed(0))
    fm = float_deviation(net, x, WhiteNoise(0.05))
    dev = fm.dev.reshape(4, 36)
    assert (dev[:2] == 0).all() and (dev[2:] > 0).all()
    # a following layer only adds its own rounding: the off channels contribute no propagated error
    net2 = nn.Sequential(conv, nn.ReLU(), nn.Conv2d(4, 1, 1, bias=False), nn.Flatten()).eval()
    with torch.no_grad():
        net2[2].weight.copy_(torch.tensor([1.0, 1.0, 0.0, 0.0]).reshape(1, 4, 1, 1))
    # the only propagated inputs are exact zeros: nothing but the underflow term n·tiny (~1e-37) is left
    assert (float_deviation(net2, x, WhiteNoise(0.05)).dev < 1e-30).all()


def _max_points(f: nn.Module, x: torch.Tensor, pert, steps: int = 10) -> torch.Tensor:
    """Points of the set: random + corners (pert.sample), then signed-gradient ascent on the parameters
    of ``f(x').sum()`` (projected on the set)."""
    pts = [pert.sample(x, 48, generator=torch.Generator().manual_seed(1))[:, 0]]
    fam = pert.family(x)
    gen = torch.Generator().manual_seed(2)
    theta = fam.theta_lo + torch.rand(16, 1, fam.n_params, generator=gen) * (fam.theta_hi - fam.theta_lo)
    delta = (torch.rand(16, *x.shape, generator=gen) * 2 - 1) * fam.noise
    for _ in range(steps):
        theta.requires_grad_(True)
        delta.requires_grad_(True)
        y = f(pert.apply(x, theta, delta if fam.noise else None)[:, 0])
        gt, gd = torch.autograd.grad(y.sum(), (theta, delta), allow_unused=True)
        with torch.no_grad():
            if gt is not None:
                span = (fam.theta_hi - fam.theta_lo) / 4
                theta = torch.maximum(torch.minimum(theta + span * gt.sign(), fam.theta_hi), fam.theta_lo)
            if gd is not None and fam.noise:
                delta = (delta + fam.noise / 2 * gd.sign()).clamp(-fam.noise, fam.noise)
        pts.append(pert.apply(x, theta, delta if fam.noise else None)[:, 0].detach())
    return torch.cat(pts)


def test_neurons_claimed_stably_off_are_off_for_float32_and_float64():
    """Where the analysis gives a ReLU output zero deviation, the pre-activation is <= 0 in both
    arithmetics on points chosen to push exactly those pre-activations up."""
    checked = 0
    for seed in (0, 1):
        layers = list(_near_threshold_net(seed))
        x = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(seed))
        for i in (1, 3):  # the two ReLUs
            pre = nn.Sequential(*layers[:i], nn.Flatten()).eval()
            pre64 = copy.deepcopy(pre).double()
            cases = ((Brightness(0.05), False), (Brightness(0.05), True), (WhiteNoise(0.02), True))
            for pert, engine in cases:
                upto = nn.Sequential(*layers[: i + 1], nn.Flatten()).eval()
                pre_b = engine_pre_activations(upto, x, pert) if engine else None
                fm = float_deviation(upto, x, pert, pre_b)
                off = torch.as_tensor(fm.dev == 0)
                if not off.any():
                    continue
                pts = _max_points(lambda z: pre(z)[:, off], x, pert)  # noqa: B023
                with torch.no_grad():
                    assert (pre(pts)[:, off] <= 0).all() and (pre64(pts.double())[:, off] <= 0).all()
                checked += int(off.sum())
    assert checked > 0


def test_engine_bounds_tighten_and_mismatched_ones_are_ignored():
    """Brightness: the engine's fused first-layer bounds decide more ReLUs stably off than the interval
    pass (a smaller margin); bounds that do not line up with the ReLUs (count, shape) change nothing."""
    net = nn.Sequential(_near_threshold_net(0), nn.Flatten()).eval()
    x = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    pert = Brightness(0.05)
    pre = engine_pre_activations(net, x, pert)
    plain, tight = float_deviation(net, x, pert), float_deviation(net, x, pert, pre)
    assert len(pre) == 2 and (tight.dev <= plain.dev).all() and tight.dev.sum() < plain.dev.sum()
    for bad in (pre[:1], pre + pre[:1], [pre[1], pre[0]]):
        assert np.array_equal(float_deviation(net, x, pert, bad).dev, plain.dev)


def _near_threshold_net(seed: int) -> nn.Module:
    """Conv/ReLU net whose biases put many pre-activations just around 0 on the set: the stable-zero rule
    is decided there by margins of the order of the deviation itself."""
    gen = torch.Generator().manual_seed(seed)
    layers = [nn.Conv2d(3, 6, 3, 1, 1), nn.ReLU(), nn.Conv2d(6, 6, 3, 2, 1), nn.ReLU()]
    layers.append(nn.Conv2d(6, 2, 3, 1, 1))
    net = nn.Sequential(*layers).eval()
    with torch.no_grad():
        for m in net:
            if isinstance(m, nn.Conv2d):
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * 3)
                m.bias.copy_(-m.weight.sum((1, 2, 3)) * 0.5)  # pre-activations centred near 0
    return net


def _attack_deviation(f32: nn.Module, f64: nn.Module, x: torch.Tensor, pert, steps: int = 10) -> np.ndarray:
    """|f32 − f64| on points of the set chosen to make it large: random + corners, then ascent on the
    outputs' magnitude (rounding grows with it; it also pushes near-zero pre-activations across 0)."""
    pts = _max_points(lambda z: f32(z).abs(), x, pert, steps)
    with torch.no_grad():
        return (f32(pts).double() - f64(pts.double())).abs().flatten(1).numpy()


@pytest.mark.parametrize("seed", [0, 1])
def test_float32_margin_bounds_measured_deviation_small_nets(seed):
    net = nn.Sequential(_near_threshold_net(seed), nn.Flatten()).eval()
    f64 = copy.deepcopy(net).double()
    x = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(seed))
    zeros = 0
    for pert in (Brightness(0.05), Contrast(0.1), WhiteNoise(0.02)):
        fm = float_deviation(net, x, pert, engine_pre_activations(net, x, pert))
        dev64 = float_deviation(f64, x.double(), pert)
        gap = _attack_deviation(net, f64, x, pert)
        # |f32 − real| <= dev32 and |f64 − real| <= dev64: so |f32 − f64| <= dev32 + dev64
        assert (gap <= fm.dev[None] + dev64.dev[None]).all()
        assert gap.max() > 0  # the test measures something
        zeros += int((fm.dev == 0).sum())
    assert zeros == 0  # last layer: no ReLU after it, every output rounds


def test_float32_margin_bounds_measured_deviation_detector():
    torch.manual_seed(0)
    net = build_detector(num_keypoints=2, heatmap_size=8, width=4, blocks=1, input_size=16, kernel=3).eval()
    with torch.no_grad():  # non-trivial BN statistics, some channels stably off
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.bias.uniform_(-3.0, 0.5)
    flat = flat_model(net)
    f64 = copy.deepcopy(flat).double()
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    for pert in (Brightness(0.1), WhiteNoise(0.05)):
        fm = float_deviation(flat, x, pert, engine_pre_activations(flat, x, pert))
        dev64 = float_deviation(f64, x.double(), pert)
        assert fm.rigorous and dev64.rigorous
        gap = _attack_deviation(flat, f64, x, pert, steps=5)
        assert (gap <= fm.dev[None] + dev64.dev[None]).all()
        assert dev64.dev.max() < 1e-9 * max(fm.dev.max(), 1e-30) * 1e3  # float64: ~2^-29 of float32's


def _longdouble_mlp(layers: list[nn.Linear], x: np.ndarray) -> np.ndarray:
    h = x.astype(np.longdouble)
    for i, lin in enumerate(layers):
        w = lin.weight.detach().double().numpy().astype(np.longdouble)
        b = lin.bias.detach().double().numpy().astype(np.longdouble)
        h = h @ w.T + b
        if i < len(layers) - 1:
            h = np.maximum(h, 0)
    return h


@pytest.mark.skipif(np.finfo(np.longdouble).eps >= np.finfo(np.float64).eps, reason="no extended precision")
def test_float64_margin_bounds_float64_against_extended_precision():
    """The float64 deployment's margin is a real bound: float64 outputs stay within ``dev`` of the same
    network evaluated in numpy's extended precision (u = 2^-64 on x86; its own error is accounted)."""
    gen = torch.Generator().manual_seed(0)
    layers = [nn.Linear(48, 32), nn.Linear(32, 32), nn.Linear(32, 4)]
    with torch.no_grad():
        for lin in layers:
            lin.weight.copy_(torch.randn(lin.weight.shape, generator=gen))
            lin.bias.copy_(torch.randn(lin.bias.shape, generator=gen))
    net = nn.Sequential(nn.Flatten(), layers[0], nn.ReLU(), layers[1], nn.ReLU(), layers[2]).double().eval()
    x = torch.rand(1, 3, 4, 4, dtype=torch.float64, generator=gen)
    pert = Brightness(0.1)
    fm = float_deviation(net, x, pert)
    assert fm.rigorous and fm.dev.max() < 1e-9
    pts = pert.sample(x, 256, generator=gen)[:, 0]
    with torch.no_grad():
        y64 = net(pts).numpy()
    ref = _longdouble_mlp([lin.double() for lin in layers], pts.flatten(1).numpy())
    u_ext = float(np.finfo(np.longdouble).eps)
    mag = _longdouble_mlp([_abs(lin) for lin in layers], np.abs(pts.flatten(1).numpy())).astype(np.float64)
    gap = np.abs(y64 - ref.astype(np.float64))
    assert (gap <= fm.dev[None] + 100 * u_ext * mag + 1e-300).all()
    assert gap.max() > 0


def _abs(lin: nn.Linear) -> nn.Linear:
    out = copy.deepcopy(lin).double()
    with torch.no_grad():
        out.weight.abs_()
        out.bias.abs_()
    return out


def test_float64_option_verifies_and_reports_the_float64_model():
    """float32='float64' certifies the model as run in float64 and says so; the float32 and heuristic
    options say theirs. A float64 certificate is not contradicted by sampling the float64 model."""
    net = train_toy(150, 0)
    x, _ = toy_images(2, torch.Generator().manual_seed(1))
    pert, spec = Brightness(0.05), KeypointSpec.l1(2)
    seen = {}
    for opt in ("float64", "rigorous", "heuristic"):
        r = verify_keypoints(net, x[0], pert, spec, reachable="linear", bounds_method="CROWN-IBP",
                             time_limit=10, float32=opt)
        seen[opt] = r
    arith = [seen[o].arithmetic for o in ("float64", "rigorous", "heuristic")]
    assert arith == ["float64", "float32", "real"]
    assert next(net.parameters()).dtype == torch.float32  # the user's model is not converted in place
    r = seen["float64"]
    if r.certified:
        f64 = copy.deepcopy(net).double()
        pts = pert.sample(x[:1].double(), 2000, generator=torch.Generator().manual_seed(3))[:, 0]
        with torch.no_grad():
            uv = argmax_uv(f64(pts))
        assert not any(spec.violated(r.keypoints, u) for u in uv)
    assert r.to_dict()["arithmetic"] == "float64"
