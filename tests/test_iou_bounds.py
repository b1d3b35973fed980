"""IoU interval extensions: soundness by dense sampling, exactness (witness boxes), vanilla ⊇ optimal,
agreement with the per-box reference, degenerate domains, input errors."""
import pytest
import torch

from geo_rs import Interval, UserError, box_iou, iou_bounds, iou_bounds_naive

TOL = 1e-12  # float64 rounding slack between two evaluations of the same real number


def random_domains(n: int, seed: int = 0, dtype=torch.float64):
    """Box domains in several regimes: tight near the gt, wide, collapsing (x1/x2 ranges overlap), far
    from the gt, and with some coordinates fixed (zero-width intervals)."""
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g, dtype=dtype) * 60
    gt = torch.cat([xy, xy + 2 + torch.rand(n, 2, generator=g, dtype=dtype) * 30], 1)
    regime = torch.randint(0, 5, (n, 1), generator=g)
    scale = torch.tensor([2.0, 15.0, 6.0, 3.0, 4.0], dtype=dtype)[regime]
    center = gt + torch.randn(n, 4, generator=g, dtype=dtype) * scale
    # regime 2: pull the second corner onto the first so the domain contains collapsed boxes
    collapse = regime[:, 0] == 2
    jitter = torch.randn(int(collapse.sum()), 2, generator=g, dtype=dtype) * 3
    center[collapse, 2:] = center[collapse, :2] + jitter
    # regime 3: shift the whole box far away (often no overlap)
    far = regime[:, 0] == 3
    center[far] += (torch.rand(int(far.sum()), 1, generator=g, dtype=dtype) - 0.5) * 120
    radius = torch.rand(n, 4, generator=g, dtype=dtype) * scale
    fixed = (regime == 4) & (torch.rand(n, 4, generator=g) < 0.5)
    radius = torch.where(fixed, torch.zeros_like(radius), radius)
    return center - radius, center + radius, gt


def sample_in(lo, hi, k: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    t = torch.rand(lo.shape[0], k, 4, generator=g, dtype=lo.dtype)
    # push a third of the samples onto the faces, where extrema live
    t = torch.where(t < 0.15, torch.zeros_like(t), torch.where(t > 0.85, torch.ones_like(t), t))
    return lo[:, None] + t * (hi - lo)[:, None]


def test_dense_sampling_never_leaves_the_bounds():
    lo, hi, gt = random_domains(10_000)
    for method in ("optimal", "vanilla"):
        res = iou_bounds(lo, hi, gt, method)
        samples = sample_in(lo, hi, 96, seed=1)
        ious = box_iou(samples, gt[:, None])
        assert bool((ious >= res.lower[:, None] - TOL).all()), method
        assert bool((ious <= res.upper[:, None] + TOL).all()), method
        assert bool(((res.lower >= 0) & (res.upper <= 1) & (res.lower <= res.upper)).all())


def test_optimal_bounds_are_attained_by_returned_boxes_inside_the_domain():
    lo, hi, gt = random_domains(10_000, seed=2)
    res = iou_bounds(lo, hi, gt, "optimal")
    for box, value in ((res.lower_box, res.lower), (res.upper_box, res.upper)):
        assert bool(((box >= lo) & (box <= hi)).all())
        assert torch.allclose(box_iou(box, gt), value, atol=1e-6, rtol=0)
    # exactness is not vacuous: the regimes give lower bounds of 0 and positive ones, and gaps
    assert 0.2 < float((res.lower == 0).double().mean()) < 0.8
    assert float((res.upper - res.lower).max()) > 0.5


def test_vanilla_contains_optimal_and_is_looser_somewhere():
    lo, hi, gt = random_domains(10_000, seed=3)
    opt = iou_bounds(lo, hi, gt, "optimal")
    van = iou_bounds(lo, hi, gt, "vanilla")
    assert van.lower_box is None and van.upper_box is None
    assert bool((van.lower <= opt.lower + TOL).all())
    assert bool((van.upper >= opt.upper - TOL).all())
    assert float((van.upper - van.lower - (opt.upper - opt.lower)).max()) > 0.1


def test_vanilla_uses_the_interval_type_primitives():
    # One hand-checked domain: x1 in [0, 2], others fixed, gt [0, 0, 10, 10].
    lo = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    hi = torch.tensor([[2.0, 0.0, 10.0, 10.0]])
    gt = torch.tensor([0.0, 0.0, 10.0, 10.0])
    van = iou_bounds(lo, hi, gt, "vanilla")
    # I in [80, 100], A in [80, 100], U = A + 100 - I in [80, 120] -> IoU in [80/120, 1]
    x1 = Interval(torch.tensor([0.0]), torch.tensor([2.0]))
    inter = (10 - x1.maximum(0.0)) * 10
    union = (10 - x1) * 10 + 100 - inter
    expect = inter / union
    assert torch.allclose(van.lower, expect.lower) and float(van.lower) == pytest.approx(80 / 120)
    opt = iou_bounds(lo, hi, gt, "optimal")
    assert float(opt.lower) == pytest.approx(0.8) and float(opt.upper) == pytest.approx(1.0)


def test_per_box_reference_agrees_with_vectorised_code():
    lo, hi, gt = random_domains(1500, seed=4)
    res = iou_bounds(lo, hi, gt, "optimal")
    ref_lo, ref_hi = iou_bounds_naive(lo, hi, gt)
    assert torch.allclose(res.lower, torch.tensor(ref_lo, dtype=torch.float64), atol=1e-12, rtol=0)
    assert torch.allclose(res.upper, torch.tensor(ref_hi, dtype=torch.float64), atol=1e-12, rtol=0)


def test_float32_chunking_and_broadcast_gt_agree():
    lo, hi, gt = random_domains(3000, seed=5)
    one_gt = gt[0]
    a = iou_bounds(lo.float(), hi.float(), one_gt.float(), chunk_size=257)
    b = iou_bounds(lo, hi, one_gt.expand(3000, 4))
    assert a.lower.dtype == torch.float32
    assert torch.allclose(a.lower.double(), b.lower, atol=2e-6)
    assert torch.allclose(a.upper.double(), b.upper, atol=2e-6)


def test_degenerate_domains_are_exact_not_zero_one():
    gt = torch.tensor([10.0, 10.0, 20.0, 20.0])
    # every box collapsed (x2 < x1 everywhere): IoU is identically 0
    lo = torch.tensor([[15.0, 10.0, 5.0, 20.0]])
    hi = torch.tensor([[16.0, 11.0, 8.0, 21.0]])
    res = iou_bounds(lo, hi, gt)
    assert res.lower.tolist() == [0.0] and res.upper.tolist() == [0.0]
    # some collapsed boxes: lower bound exactly 0 by a collapsed corner, upper bound the true maximum
    lo = torch.tensor([[9.0, 9.0, 12.0, 19.0]])
    hi = torch.tensor([[13.0, 11.0, 21.0, 22.0]])
    res = iou_bounds(lo, hi, gt)
    assert float(res.lower) == 0.0
    assert float(res.upper) == pytest.approx(1.0)  # the gt itself lies in this domain
    lo2 = torch.tensor([[9.0, 9.0, 12.0, 19.0]])
    hi2 = torch.tensor([[13.0, 11.0, 18.0, 19.5]])  # x2 <= 18, y2 <= 19.5: the best box is (10,10,18,19.5)
    res2 = iou_bounds(lo2, hi2, gt)
    assert float(res2.upper) == pytest.approx(8 * 9.5 / 100)
    assert res2.upper_box[0].tolist() == [10.0, 10.0, 18.0, 19.5]


def test_point_domains_give_the_point_iou():
    lo, _, gt = random_domains(500, seed=6)
    res = iou_bounds(lo, lo, gt)
    expect = box_iou(lo, gt)
    assert torch.allclose(res.lower, expect, atol=1e-12) and torch.allclose(res.upper, expect, atol=1e-12)


@pytest.mark.parametrize(
    "lo, hi, gt, method, match",
    [
        ([[0.0, 0, 5, 5]], [[1.0, 1, 4, 6]], [0.0, 0, 5, 5], "optimal", "box_lower > box_upper"),
        ([[0.0, 0, 5, 5]], [[1.0, 1, 6, 6]], [5.0, 0, 0, 5], "optimal", "x2 > x1"),
        ([[0.0, 0, 5, 5]], [[1.0, 1, 6, 6]], [0.0, 0, 5, 5], "exact", "unknown method"),
        ([[0.0, 0, 5]], [[1.0, 1, 6]], [0.0, 0, 5, 5], "optimal", r"shape \(\.\.\., 4\)"),
        ([[0.0, float("nan"), 5, 5]], [[1.0, 1, 6, 6]], [0.0, 0, 5, 5], "vanilla", "NaN"),
    ],
)
def test_bad_input_raises_one_clear_error(lo, hi, gt, method, match):
    with pytest.raises(UserError, match=match):
        iou_bounds(torch.tensor(lo), torch.tensor(hi), torch.tensor(gt), method)
