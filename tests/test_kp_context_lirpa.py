"""The heatmap detector's context path (``Backbone(context_levels >= 1)``) is bounded by the verifier:
its nearest ×2 upsampling is an ``nn.Upsample`` (rewritten exactly by the bound engine), bit-identical
to the former ``F.interpolate(size=…)`` and without state_dict entries (checkpoints load unchanged)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from keypoint.models.backbone import Backbone

pytestmark = pytest.mark.usefixtures("one_thread")


def _forward_interpolate_size(net: Backbone, x: torch.Tensor) -> torch.Tensor:
    """The backbone's forward as it was: ``F.interpolate(y, size=…, mode="nearest")``."""
    feats = [net.stem(x)]
    for stage in net.down:
        feats.append(stage(feats[-1]))
    y = net.lateral[-1](feats[-1])
    for lv in range(net.levels - 1, net.out_level - 1, -1):
        up = F.interpolate(y, size=feats[lv].shape[-2:], mode="nearest")
        y = up + net.lateral[lv - net.out_level](feats[lv])
    return net.head(y)


@pytest.mark.parametrize("stride,context", [(4, 2), (2, 1), (4, 0), (1, 3)])
def test_upsample_is_bit_identical_to_interpolate_size_and_adds_no_state(stride, context):
    net = Backbone(width=4, stride=stride, context_levels=context).eval()
    for m in net.modules():  # non-trivial BN statistics, so the comparison is not of zeros
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    div = net.divisor
    for dtype in (torch.float32, torch.float64):
        net = net.to(dtype)
        for h, w in ((div, div), (2 * div, 3 * div), (64, 64)):
            if h % div or w % div:
                continue
            x = torch.rand(2, 3, h, w, dtype=dtype)
            with torch.no_grad():
                assert torch.equal(net(x), _forward_interpolate_size(net, x))
    assert len(net.upsample) == context
    assert not any("upsample" in k for k in net.state_dict())
    # a state_dict saved by the former layout (same keys) loads strictly into the new one
    fresh = Backbone(width=4, stride=stride, context_levels=context).to(torch.float64)
    fresh.load_state_dict(net.state_dict(), strict=True)


def test_verifier_bounds_a_detector_with_context_levels():
    """IBP and CROWN reachable heatmaps of a tiny context_levels=1 heatmap detector (no fallback note):
    the clean argmax stays a candidate, and no sampled point of the noise set moves it outside the set."""
    from geo_rs import WhiteNoise
    from keypoint.models.registry import build_model
    from keypoint.verify.api import prepare, reachable_heatmaps

    torch.manual_seed(0)
    model = build_model({"type": "heatmap", "width": 4, "stride": 4, "context_levels": 1},
                        num_keypoints=2, input_size=32).eval()
    assert len(model.backbone.upsample) == 1
    image = torch.rand(3, 32, 32)
    eps = 1e-4
    inst = prepare(model, image, WhiteNoise(eps))
    for method in ("IBP", "CROWN"):
        reach = reachable_heatmaps(inst, "interval", method)
        assert reach.method == method and not any("failed" in n for n in reach.notes), reach.notes
        _, h, w = reach.shape
        sets = [set(int(i) for i in kp.survivors) for kp in reach.keypoints]
        assert all(kp.survivors[0] == kp.clean for kp in reach.keypoints)
        with torch.no_grad():
            xs = image[None] + eps * (2 * torch.rand(64, 3, 32, 32) - 1)
            idx = model(xs)["heatmaps"].flatten(2).argmax(-1).numpy()  # (64, K)
        for k, s in enumerate(sets):
            assert set(np.unique(idx[:, k]).tolist()) <= s
