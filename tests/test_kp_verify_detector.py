"""The verification detector's trainer pieces: the training-time interval bounds contain every sampled
output, the robust cross-entropy bounds the clean one from above on the box, the heatmap losses match
their definitions, and a tiny certified-training run (ce + robust, warm-up) writes a loadable detector."""
import math

import pytest
import torch
import torch.nn.functional as F

from keypoint.verify.detector import (
    DetectorConfig,
    build_detector,
    heatmap_loss,
    interval_forward,
    load_detector,
    robust_ce,
    train_detector,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _net(seed=0):
    torch.manual_seed(seed)
    net = build_detector(3, 8, 4, 1, 16, kernel=3)
    for m in net.modules():  # non-trivial BatchNorm statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.1, 0.1)
    return net.eval()


@torch.no_grad()
def test_interval_forward_contains_sampled_outputs():
    net = _net()
    x = torch.rand(1, 3, 16, 16)
    eps = 0.05
    y, c, r = interval_forward(net, x, x, torch.full_like(x, eps))
    assert torch.allclose(y, net(x))
    pts = x + (torch.rand(400, 3, 16, 16) * 2 - 1) * eps
    pts = torch.cat([pts, x + eps * torch.sign(torch.randn(100, 3, 16, 16))])  # corners
    out = net(pts)
    tol = 1e-5 * (1 + out.abs())
    assert ((out >= c - r - tol) & (out <= c + r + tol)).all()


def test_robust_ce_is_hard_ce_without_width_and_bounds_it_on_the_box():
    torch.manual_seed(1)
    z = torch.randn(2, 3, 4, 4)
    targets = torch.rand(2, 3, 4, 4)
    weights = torch.ones(2, 3)
    t = targets.flatten(2).argmax(-1)
    hard = F.cross_entropy(z.flatten(2).transpose(1, 2), t)
    assert torch.allclose(robust_ce(z, z, targets, weights), hard)
    lo, hi = z - 0.3, z + 0.3
    rob = robust_ce(lo, hi, targets, weights)
    for _ in range(50):  # every logit vector in the box has a smaller (or equal) hard CE
        s = lo + torch.rand_like(z) * (hi - lo)
        assert F.cross_entropy(s.flatten(2).transpose(1, 2), t) <= rob + 1e-6


def test_heatmap_losses_match_their_definitions():
    torch.manual_seed(2)
    pred, targets = torch.randn(2, 3, 4, 4), torch.rand(2, 3, 4, 4)
    weights = torch.tensor([[1.0, 0.0, 1.0], [1.0, 1.0, 1.0]])
    mse = ((pred - targets) ** 2).sum((-1, -2))
    assert torch.allclose(heatmap_loss(pred, targets, weights, "mse"), (mse * weights).sum() / 5)
    p = targets.flatten(2) / targets.flatten(2).sum(-1, keepdim=True)
    ce = -(p * torch.log_softmax(pred.flatten(2), -1)).sum(-1)
    assert torch.allclose(heatmap_loss(pred, targets, weights, "ce"), (ce * weights).sum() / 5)
    uniform = heatmap_loss(torch.zeros(1, 1, 4, 4), targets[:1, :1], torch.ones(1, 1), "ce")
    assert math.isclose(float(uniform), math.log(16), rel_tol=1e-6)


def test_a_tiny_certified_training_run_writes_a_loadable_detector(tmp_path):
    torch.manual_seed(3)
    n, size = 24, 16
    kp = torch.rand(n, 2, 2) * (size - 4) + 2

    def crops(m):
        return {"image": torch.rand(m, 3, size, size), "keypoints": kp[:m],
                "visibility": torch.full((m, 2), 2.0), "norm": torch.full((m,), float(size))}

    cfg = DetectorConfig().model_copy(deep=True)
    cfg.data.input_size = size
    cfg.model.width, cfg.model.blocks, cfg.model.kernel = 4, 1, 3
    cfg.train.loss, cfg.train.epochs, cfg.train.batch_size = "ce", 3, 8
    cfg.train.robust_weight, cfg.train.ibp_warmup, cfg.train.ibp_ramp = 0.5, 0.3, 0.3
    summary = train_detector(cfg, tmp_path, 8, quiet=True, crops=(crops(n), crops(8)))
    assert summary["steps"] == 9 and summary["reason"] == "done"
    assert all(0.0 <= v <= 1.0 for v in summary["val"].values())
    net = load_detector(tmp_path / "detector_8.pt")
    assert net(torch.rand(1, 3, size, size)).shape == (1, 2, 8, 8)
