"""output_bounds: tightness of the fused brightness/contrast encoding, specifications, layer support
and error messages (state between calls: tests/test_bounds_adversarial.py)."""

from __future__ import annotations

import pytest
import torch
from test_bounds_nets import random_bn_cnn, sample_images, trained_cnn, wrapped_mlp
from torch import nn

from geo_rs import (
    Brightness,
    Contrast,
    UnsupportedModelError,
    UserError,
    WhiteNoise,
    layer_bounds,
    output_bounds,
)
from geo_rs.bounds import affine_pieces

pytestmark = pytest.mark.usefixtures("one_thread")

TOL = 1e-5


def _width(net, x, pert, method, **kw) -> float:
    lo, hi = output_bounds(net, x, pert, method, **kw)
    return float((hi - lo).mean())


def test_ibp_brightness_strictly_tighter_than_white_noise_and_crown_tighter_still():
    net, x = trained_cnn(), sample_images(4)
    eps = 0.02
    ibp_noise = _width(net, x, WhiteNoise(eps), "IBP")
    ibp_bright = _width(net, x, Brightness(eps), "IBP")
    crown_bright = _width(net, x, Brightness(eps), "CROWN")
    assert ibp_bright < 0.8 * ibp_noise, (ibp_bright, ibp_noise)
    assert crown_bright < ibp_bright, (crown_bright, ibp_bright)
    # The fusion with the first layer is what makes IBP tight: without it IBP is as loose as the box.
    unfused = layer_bounds(net, x, Brightness(eps), "IBP", fuse=False)
    assert not unfused.fused
    assert ibp_bright < float(unfused.output.width.mean())
    # Same story for contrast on a wrapped (non-Sequential) model with Flatten first.
    mlp = wrapped_mlp()
    assert layer_bounds(mlp, x, Contrast(0.1), "IBP").fused
    assert _width(mlp, x, Contrast(0.1), "IBP") < float(
        layer_bounds(mlp, x, Contrast(0.1), "IBP", fuse=False).output.width.mean()
    )


def test_zero_eps_gives_the_clean_output():
    net, x = random_bn_cnn(), sample_images(2)
    with torch.no_grad():
        clean = net(x)
    for pert in [WhiteNoise(0.0), Brightness(0.0), Contrast(0.0)]:
        for method in ["IBP", "CROWN"]:
            lo, hi = output_bounds(net, x, pert, method)
            torch.testing.assert_close(lo, clean, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(hi, clean, atol=1e-5, rtol=1e-5)


def test_specification_matrix_bounds_margins_soundly_and_tighter():
    net, x = trained_cnn(), sample_images(2)
    pert = Brightness(0.03) + WhiteNoise(0.005)
    C = torch.tensor([[1.0, 0.0, -1.0, 0.0], [0.0, 1.0, 0.0, -1.0]])  # x1 - x2, y1 - y2
    lo, hi = output_bounds(net, x, pert, "CROWN", C=C)
    assert lo.shape == (2, 2)
    with torch.no_grad():
        ys = net(pert.sample(x, 5000, generator=torch.Generator().manual_seed(1)).flatten(0, 1))
    margins = (ys @ C.T).reshape(5000, 2, 2)
    assert bool((margins >= lo - TOL).all() and (margins <= hi + TOL).all())
    olo, ohi = output_bounds(net, x, pert, "CROWN")
    naive_lo = olo[:, [0, 1]] - ohi[:, [2, 3]]
    assert bool((lo >= naive_lo - TOL).all()) and float((lo - naive_lo).mean()) > 0
    # per-image C (B, n_spec, n_out) works too
    lo2, _ = output_bounds(net, x, pert, "CROWN", C=C.expand(2, -1, -1))
    torch.testing.assert_close(lo2, lo)


def test_pieces_cover_the_set_exactly():
    x = sample_images(2)
    for pert in [Brightness(0.05), Contrast(0.2), Brightness(0.02) + Contrast(0.1) + WhiteNoise(0.01)]:
        pieces = affine_pieces(pert, x, max_pieces=4)
        fam = pert.family(x)
        gen = torch.Generator().manual_seed(0)
        # every point of the set is base + Σθ G + s on some piece
        for _ in range(200):
            theta = fam.theta_lo + torch.rand(fam.n_params, generator=gen) * (fam.theta_hi - fam.theta_lo)
            delta = (torch.rand(x.shape, generator=gen) * 2 - 1) * fam.noise
            pt = pert.apply(x, theta.expand(2, -1), delta)
            inside = (pieces.theta_lo <= theta + 1e-12) & (theta <= pieces.theta_hi + 1e-12)
            for b in range(2):
                p = int(torch.nonzero(inside[b].all(-1))[0])
                aff = pieces.base[b, p] + (theta.reshape(-1, 1, 1, 1) * pieces.directions[b, p]).sum(0)
                s = pt[b] - aff
                assert bool((s >= pieces.s_lo[b, p] - 1e-6).all() and (s <= pieces.s_hi[b, p] + 1e-6).all())


LAYER_ZOO = {
    "upsample_nearest": lambda: nn.Sequential(
        nn.Conv2d(1, 2, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Upsample(scale_factor=2),
        nn.Conv2d(2, 2, 3),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(2 * 10 * 10, 3),
    ),
    "conv_transpose": lambda: nn.Sequential(
        nn.Conv2d(1, 2, 2, stride=2),
        nn.ReLU(),
        nn.ConvTranspose2d(2, 1, 2, 2),
        nn.Flatten(),
        nn.Linear(144, 2),
    ),
    "batchnorm1d_sigmoid": lambda: nn.Sequential(
        nn.Flatten(), nn.Linear(144, 8), nn.BatchNorm1d(8), nn.Sigmoid(), nn.Linear(8, 2)
    ),
}


@pytest.mark.parametrize("name", sorted(LAYER_ZOO))
def test_supported_layer_zoo_is_sound(name):
    torch.manual_seed(0)
    net = LAYER_ZOO[name]().eval()
    x = sample_images(2)
    pert = Brightness(0.05)
    with torch.no_grad():
        ys = net(pert.sample(x, 3000).flatten(0, 1)).reshape(3000, 2, -1)
    for method in ["IBP", "CROWN"]:
        lo, hi = output_bounds(net, x, pert, method)
        assert bool((ys >= lo - TOL).all() and (ys <= hi + TOL).all()), (name, method)


def test_unsupported_layer_is_named():
    net = nn.Sequential(
        nn.Conv2d(1, 2, 3),
        nn.ReLU(),
        nn.Upsample(scale_factor=1.5, mode="bilinear"),
        nn.Flatten(),
        nn.Linear(2 * 15 * 15, 2),
    ).eval()
    with pytest.raises(UnsupportedModelError, match="Upsample"):
        output_bounds(net, sample_images(1), WhiteNoise(0.01), "IBP")


def test_bad_inputs_give_clear_errors():
    net, x = trained_cnn(), sample_images(1)
    with pytest.raises(UserError, match="method"):
        output_bounds(net, x, WhiteNoise(0.1), "DeepPoly")
    with pytest.raises(UserError, match=r"\[0, 1\]"):
        output_bounds(net, x * 3, WhiteNoise(0.1), "IBP")
    with pytest.raises(UserError, match="specification C"):
        output_bounds(net, x, WhiteNoise(0.1), "IBP", C=torch.ones(2, 3))
    with pytest.raises(UserError, match="eps"):
        Brightness(-0.1)
    with pytest.raises(UserError, match="Perturbation"):
        output_bounds(net, x, 0.1, "IBP")


def test_training_mode_is_restored_and_bounds_use_eval_semantics():
    net = random_bn_cnn()
    net.train()
    try:
        lo, hi = output_bounds(net, sample_images(2), WhiteNoise(0.0), "IBP")
        assert net.training
        net.eval()
        with torch.no_grad():
            torch.testing.assert_close(lo, net(sample_images(2)), atol=1e-5, rtol=1e-5)
    finally:
        net.eval()
