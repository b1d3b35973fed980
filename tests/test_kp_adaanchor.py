"""AdaAnchor anchor scoring and selection on constructed maps."""
import math

import pytest
import torch

from geo_rs.errors import UserError
from keypoint.models import build_model
from keypoint.models.adaanchor import anchor_scores, fixed_anchor_scores, select_anchors

H = W = 8


def _grid():
    ys, xs = torch.meshgrid(torch.arange(H, dtype=torch.float32), torch.arange(W, dtype=torch.float32),
                            indexing="ij")
    return xs, ys


def _constructed(target=(6.0, 6.0)):
    """Visible region (x < 3): confident (0.9) and accurate (predicts the target exactly).
    Near the (occluded) target: accurate but unconfident (0.05). Elsewhere: confident-ish (0.6) but
    each cell predicts itself (inaccurate)."""
    xs, ys = _grid()
    conf = torch.full((H, W), 0.6)
    pts = torch.stack([xs, ys]).clone()  # (2, H, W): each cell predicts its own position
    vis = xs < 3
    conf[vis] = 0.9
    pts[:, vis] = torch.tensor(target)[:, None]
    near = ((xs - target[0]) ** 2 + (ys - target[1]) ** 2) <= 2
    conf[near] = 0.05
    pts[:, near] = torch.tensor(target)[:, None]
    gt = torch.tensor(target).view(1, 1, 1, 2)
    return conf[None, None], pts[None, None], gt


def test_mul_selects_confident_accurate_candidates_in_the_visible_region():
    conf, pts, gt = _constructed()
    s = anchor_scores(conf, pts, gt, stride=4, sigma=4.0, fusion="mul")
    assert s.shape == (1, 1, 1, H, W)
    # By hand: visible cells 0.9·1; near-target cells 0.05·1; a cell (x=7, y=0) predicting itself is
    # √(1 + 36) cells = 4√37 px away: 0.6·exp(−16·37/32).
    assert s[0, 0, 0, 0, 0] == pytest.approx(0.9)
    assert s[0, 0, 0, 6, 6] == pytest.approx(0.05)
    assert s[0, 0, 0, 0, 7] == pytest.approx(0.6 * math.exp(-16 * 37 / 32), rel=1e-4)
    idx, pos = select_anchors(s, torch.ones(1, 1, 1), k=20)
    xs, _ = _grid()
    chosen_x = xs.reshape(-1)[idx.reshape(-1)]
    assert (chosen_x < 3).all()  # anchors moved to the visible region
    assert pos.sum() == 20


def test_add_and_mul_fusions_rank_differently():
    # Candidate a: c = 0.5, accurate (r = 0.9). Candidate b: c = 1.0, inaccurate (r = 0.42).
    # mul: 0.45 > 0.42 picks the accurate a; add: 0.70 < 0.71 picks the merely confident b.
    sigma, stride = 4.0, 1.0
    d_a = math.sqrt(-2 * sigma**2 * math.log(0.9))
    d_b = math.sqrt(-2 * sigma**2 * math.log(0.42))
    conf = torch.tensor([0.5, 1.0]).view(1, 1, 1, 2)
    pts = torch.tensor([[d_a, 0.0], [d_b, 0.0]]).T.reshape(1, 1, 2, 1, 2)
    gt = torch.zeros(1, 1, 1, 2)
    mul = anchor_scores(conf, pts, gt, stride, sigma, "mul")
    add = anchor_scores(conf, pts, gt, stride, sigma, "add")
    assert mul.flatten().tolist() == pytest.approx([0.45, 0.42], rel=1e-5)
    assert add.flatten().tolist() == pytest.approx([0.70, 0.71], rel=1e-5)
    assert select_anchors(mul, torch.ones(1, 1, 1), 1)[0].item() == 0
    assert select_anchors(add, torch.ones(1, 1, 1), 1)[0].item() == 1
    with pytest.raises(UserError, match="fusion"):
        anchor_scores(conf, pts, gt, stride, sigma, "max")


def test_fixanchor_picks_nearest_cells_and_unlabelled_targets_pick_nothing():
    gt = torch.tensor([[[[2.2, 5.0]], [[6.0, 1.0]]]])  # (B=1, N=2, K=1, 2)
    s = fixed_anchor_scores(gt, (H, W))
    idx, pos = select_anchors(s, torch.tensor([[[1.0], [0.0]]]), k=1)
    assert idx[0, 0, 0, 0].item() == 5 * W + 2  # nearest cell to (2.2, 5.0)
    assert pos.sum() == 1  # the unlabelled second instance selects nothing
    idx, pos = select_anchors(s, torch.ones(1, 2, 1), k=4)
    assert pos.sum() == 8  # union over both instances (disjoint neighbourhoods)


def test_model_switches_build_the_ablation_variants():
    base = {"type": "adaanchor", "width": 8, "context_levels": 1}
    full = build_model(base, num_keypoints=3, input_size=32)
    assert full.local_head is not None and full.codec.local_radius > 0
    no_local = build_model({**base, "local_refinement": False}, num_keypoints=3, input_size=32)
    out = no_local(torch.zeros(1, 3, 32, 32))
    assert "local_offsets" not in out and no_local.codec.offset is None
    with pytest.raises(UserError, match="fusion"):
        build_model({**base, "fusion": "max"}, num_keypoints=3, input_size=32)
    with pytest.raises(UserError, match="unknown option"):
        build_model({**base, "topk": 3}, num_keypoints=3, input_size=32)
    with pytest.raises(UserError, match="unknown model type"):
        build_model({"type": "nope"}, num_keypoints=3, input_size=32)
