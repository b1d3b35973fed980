"""Codec round trips (encode → decode) with stated pixel bounds, multi-instance decoding, errors."""
import pytest
import torch

from geo_rs.errors import UserError
from keypoint.codecs import (
    AnchorCodec,
    HeatmapCodec,
    HeatmapOffsetCodec,
    OffsetCodec,
    RegressionCodec,
    codec_from_dict,
    encode_batch,
)

# Interior keypoints (≥ 2 map cells from the border) so the 3-cell parabola fit sees the peak.
KP = torch.tensor([[[9.3, 11.7], [31.0, 40.2], [52.75, 20.1], [17.4, 50.9]]])
VIS = torch.ones(1, 4)


def test_heatmap_round_trip_subpixel_bound():
    codec = HeatmapCodec(input_size=64, heatmap_size=16, sigma=2.0)  # stride 4
    t = codec.encode(KP, VIS)
    assert t["heatmaps"].shape == (4, 16, 16) and t["heatmap_weights"].tolist() == [1, 1, 1, 1]
    kp, score = codec.decode(t["heatmaps"][None])
    # Bound: 0.01 input px (log-parabola is exact for a Gaussian; float32 rounding only).
    assert (kp[0] - KP[0]).abs().max() < 0.01
    assert (score > 0.9).all()
    # Plain argmax would be off by up to half a cell = 2 px: sub-pixel decoding matters.
    flat = t["heatmaps"].reshape(4, -1).argmax(-1)
    coarse = torch.stack([flat % 16, flat // 16], -1).float() * 4 + 1.5
    assert (coarse - KP[0]).abs().max() > 0.5


def test_heatmap_offset_and_anchor_round_trip():
    c = HeatmapOffsetCodec(64, 16, sigma=2.0, radius=2.0)
    t = c.encode(KP, VIS)
    kp, _ = c.decode({"heatmaps": t["heatmaps"][None], "offsets": t["offsets"][None]})
    assert (kp[0] - KP[0]).abs().max() < 1e-4
    a = AnchorCodec(64, 16, local_radius=2.0)
    t = a.encode(KP, VIS)
    pts = t["points"][0]  # (K, 2) map cells
    ys, xs = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    # Anchor offsets all point 1.5 cells *past* the target; the local map corrects the rest.
    anchor_off = torch.stack([pts[:, 0, None, None] - xs + 1.5, pts[:, 1, None, None] - ys], 1)
    conf = -((xs - pts[:, 0, None, None]) ** 2 + (ys - pts[:, 1, None, None]) ** 2)
    local = torch.zeros(4, 2, 16, 16)
    local[:, 0] = -1.5
    out = {"confidence": conf[None], "anchor_offsets": anchor_off[None], "local_offsets": local[None]}
    kp, score = a.decode(out)
    assert (kp[0] - KP[0]).abs().max() < 1e-4
    assert torch.allclose(score[0], torch.sigmoid(conf.reshape(4, -1).max(-1).values))


def test_regression_round_trip_exact_and_no_scores():
    c = RegressionCodec(64)
    t = c.encode(KP, VIS)
    assert t["coords"].abs().max() <= 0.5
    kp, score = c.decode({"coords": t["coords"][None]})
    assert (kp[0] - KP[0]).abs().max() < 1e-5 and not c.has_scores
    with pytest.raises(UserError, match="one instance"):
        c.encode(torch.zeros(2, 4, 2), torch.ones(2, 4))


def test_offset_codec_nearest_instance_and_weights():
    c = OffsetCodec(32, 8, radius=1.5)
    kp = torch.tensor([[[6.0, 6.0]], [[22.0, 22.0]]])
    t = c.encode(kp, torch.ones(2, 1))
    assert t["offsets"].shape == (1, 2, 8, 8)
    anchors = torch.tensor([[[1.0, 1.0]], [[5.0, 5.0]]])  # cells near instance 1 and 2
    out = {"offsets": t["offsets"].expand(2, 1, 2, 8, 8)}
    dec, _ = c.decode(out, anchors[:, :, :].reshape(2, 1, 2))
    assert torch.allclose(dec[0, 0], kp[0, 0], atol=1e-4) and torch.allclose(dec[1, 0], kp[1, 0], atol=1e-4)
    # Unlabelled keypoints produce no weight.
    t0 = c.encode(kp, torch.zeros(2, 1))
    assert t0["offset_weights"].sum() == 0


def test_multi_instance_heatmap_and_anchor_decoding():
    kp = torch.tensor([[[10.0, 12.0]], [[44.0, 50.0]], [[50.0, 10.0]]])
    hc = HeatmapCodec(64, 16, 1.5)
    peaks = hc.decode_multi(hc.encode(kp, torch.ones(3, 1))["heatmaps"], threshold=0.5)
    pts = peaks[0][0]
    assert len(pts) == 3
    for p in kp[:, 0]:
        assert (pts - p).norm(dim=1).min() < 0.05
    # Unlabelled instances leave no peak.
    vis = torch.tensor([[1.0], [0.0], [1.0]])
    assert len(hc.decode_multi(hc.encode(kp, vis)["heatmaps"], threshold=0.5)[0][0]) == 2


def test_encode_batch_and_serialisation():
    c = HeatmapOffsetCodec(64, 16, 2.0, 2.0)
    t = encode_batch(c, KP[None].expand(3, 1, 4, 2), VIS[None].expand(3, 1, 4))
    assert t["heatmaps"].shape == (3, 4, 16, 16)
    for codec in (c, HeatmapCodec(48, 12, 1.0), RegressionCodec((64, 32)), AnchorCodec(64, 16, 0.0)):
        assert codec_from_dict(codec.to_dict()) == codec
    assert HeatmapCodec(64, 16, 2.0) != HeatmapCodec(64, 16, 3.0)
    with pytest.raises(UserError, match="unknown codec type"):
        codec_from_dict({"type": "nope"})


def test_bad_shapes_are_named():
    c = HeatmapCodec(64, 16)
    with pytest.raises(UserError, match=r"\(N, K, 2\)"):
        c.encode(torch.zeros(4, 2), torch.ones(4))
    with pytest.raises(UserError, match="visible must have shape"):
        c.encode(torch.zeros(1, 4, 2), torch.ones(1, 3))
    with pytest.raises(UserError, match="sigma"):
        HeatmapCodec(64, 16, sigma=0)


def test_anchor_decode_multi_thresholds_and_merges_duplicate_anchors():
    a = AnchorCodec(64, 16, local_radius=0.0)
    targets = torch.tensor([[3.2, 4.1], [11.6, 12.3]])  # map cells
    ys, xs = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    d = torch.stack([((xs - t[0]) ** 2 + (ys - t[1]) ** 2) for t in targets])  # (2, h, w)
    owner = d.argmin(0)
    # Every cell points exactly at its nearest target; confidence high within 2 cells of a target.
    off = torch.stack([targets[owner][..., 0] - xs, targets[owner][..., 1] - ys])
    conf = torch.where(d.min(0).values <= 4, 3.0, -6.0)
    out = {"confidence": conf[None, None], "anchor_offsets": off[None, None]}
    found = a.decode_multi(out, threshold=0.5, merge_radius=1.0)
    pts, scores = found[0]
    assert len(pts) == 2 and (scores >= 0.5).all()  # ~26 candidate anchors, merged to 2 detections
    expected = (targets + 0.5) * 4 - 0.5
    for e in expected:
        assert (pts - e).norm(dim=1).min() < 1e-4
    assert len(a.decode_multi(out, threshold=0.99)[0][0]) == 0
