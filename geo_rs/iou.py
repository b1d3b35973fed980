"""IoU interval extensions: bound IoU(b, gt) over every box b of an axis-aligned box domain.

A *box domain* is given per box by element-wise bounds ``box_lower <= b <= box_upper`` on the four
coordinates ``(x1, y1, x2, y2)`` (what a bound-propagation engine returns for a box regressor). Two
extensions (IBP-IoU paper, §3):

* ``"vanilla"``: interval arithmetic on the IoU's primitive operations (:class:`geo_rs.Interval`);
  sound but loose (dependency problem: the box area and the intersection share variables).
* ``"optimal"``: the exact range ``[min IoU, max IoU]`` over the domain (paper Theorem 2), together
  with boxes of the domain that attain both ends.

Conventions. ``x2 - x1`` and ``y2 - y1`` are clamped at 0 before taking areas, so a *collapsed* box
(``x2 <= x1`` or ``y2 <= y1``, possible inside a domain whose coordinate intervals overlap) has area 0,
intersection 0 and IoU exactly 0. The ground truth must have positive width and height.

Why the optimal extension is exact: for fixed other coordinates, IoU is non-decreasing in each
coordinate up to the ground-truth value of that coordinate and non-increasing after it (also through
the collapsed region, where it is 0). Hence (i) clamping the ground truth into the domain maximises
IoU, and (ii) along every coordinate the minimum is at an interval end, so the minimum over the
domain is attained at one of its 16 corners. The vectorised kernel does not evaluate 16 full IoUs:
with W, H the box width/height and w, h the intersection width/height,
``1/IoU + 1 = (W*H + A_gt) / (w*h)``; the x-part ``(W_i, w_i)`` of the 4 x-corners and the y-part
``(H_j, h_j)`` of the 4 y-corners are computed once, and the 16 combinations cost 2 products and a sum
each (no division). A domain whose smallest possible intersection width or height is 0 has lower
bound 0 directly (the (x1 = upper, x2 = lower) corner has the smallest intersection width).

Example::

    >>> import torch
    >>> from geo_rs import iou_bounds
    >>> gt = torch.tensor([10.0, 10.0, 38.0, 38.0])
    >>> lo = torch.tensor([[9.0, 9.5, 37.0, 37.0]]); hi = lo + 2.0
    >>> res = iou_bounds(lo, hi, gt, "optimal")
    >>> round(float(res.upper[0]), 6), bool(res.lower[0] <= res.upper[0])
    (1.0, True)
"""
from __future__ import annotations

import itertools
from typing import NamedTuple

import torch
from torch import Tensor

from .bounds.interval import Interval
from .errors import UserError

METHODS = ("vanilla", "optimal")


class IoUBounds(NamedTuple):
    """Result of :func:`iou_bounds`.

    lower, upper: ``(N,)`` bounds on IoU over each box domain.
    lower_box, upper_box: ``(N, 4)`` boxes of the domain with IoU equal to ``lower`` / ``upper``
    ("optimal" only; ``None`` for "vanilla").
    """

    lower: Tensor
    upper: Tensor
    lower_box: Tensor | None
    upper_box: Tensor | None


# --------------------------------------------------------------------------- point IoU
def box_iou(boxes: Tensor, gt: Tensor) -> Tensor:
    """IoU of boxes ``(..., 4)`` with ground truths ``(..., 4)`` (broadcast), collapsed boxes -> 0.

    Returns a tensor of the broadcast batch shape. Widths/heights are clamped at 0, so a box with
    ``x2 <= x1`` or ``y2 <= y1`` has IoU 0 (ground truths are assumed valid: positive area).
    """
    x1, y1, x2, y2 = boxes.unbind(-1)
    gx1, gy1, gx2, gy2 = gt.unbind(-1)
    w = (torch.minimum(x2, gx2) - torch.maximum(x1, gx1)).clamp(min=0)
    h = (torch.minimum(y2, gy2) - torch.maximum(y1, gy1)).clamp(min=0)
    inter = w * h
    area = (x2 - x1).clamp(min=0) * (y2 - y1).clamp(min=0)
    return inter / (area + (gx2 - gx1) * (gy2 - gy1) - inter)


# --------------------------------------------------------------------------- validation
def _prepare(box_lower: Tensor, box_upper: Tensor, gt: Tensor, check: bool) -> tuple[Tensor, Tensor, Tensor]:
    box_lower = torch.as_tensor(box_lower)
    box_upper = torch.as_tensor(box_upper, device=box_lower.device)
    gt = torch.as_tensor(gt, device=box_lower.device)
    dtype = torch.promote_types(torch.promote_types(box_lower.dtype, box_upper.dtype), gt.dtype)
    if not dtype.is_floating_point:
        dtype = torch.get_default_dtype()
    box_lower, box_upper, gt = box_lower.to(dtype), box_upper.to(dtype), gt.to(dtype)
    for name, t in (("box_lower", box_lower), ("box_upper", box_upper), ("gt", gt)):
        if t.ndim == 0 or t.shape[-1] != 4:
            raise UserError(
                f"iou_bounds: {name} must have shape (..., 4) as (x1, y1, x2, y2), got {tuple(t.shape)}"
            )
    if box_lower.shape != box_upper.shape:
        raise UserError(
            f"iou_bounds: box_lower {tuple(box_lower.shape)} and box_upper {tuple(box_upper.shape)} "
            "differ in shape"
        )
    if box_lower.ndim == 1:
        box_lower, box_upper = box_lower[None], box_upper[None]
    box_lower, box_upper = box_lower.reshape(-1, 4), box_upper.reshape(-1, 4)
    gt = gt.reshape(-1, 4)
    if gt.shape[0] not in (1, box_lower.shape[0]):
        raise UserError(f"iou_bounds: gt has {gt.shape[0]} boxes, expected 1 or {box_lower.shape[0]}")
    if check:
        bad = torch.isnan(box_lower) | torch.isnan(box_upper) | (box_lower > box_upper)
        bad = bad.any(-1)
        if bool(bad.any()):
            i = int(bad.nonzero()[0, 0])
            raise UserError(
                f"iou_bounds: {int(bad.sum())} box domains have box_lower > box_upper or NaN "
                f"(first: index {i}, lower {box_lower[i].tolist()}, upper {box_upper[i].tolist()})"
            )
        bad_gt = ~((gt[:, 2] > gt[:, 0]) & (gt[:, 3] > gt[:, 1]) & torch.isfinite(gt).all(-1))
        if bool(bad_gt.any()):
            i = int(bad_gt.nonzero()[0, 0])
            raise UserError(
                f"iou_bounds: ground-truth box {i} {gt[i].tolist()} must have x2 > x1 and y2 > y1 (finite)"
            )
    return box_lower, box_upper, gt


# --------------------------------------------------------------------------- optimal extension
def _axis_parts(c1_lo: Tensor, c1_hi: Tensor, c2_lo: Tensor, c2_hi: Tensor, g1: Tensor, g2: Tensor):
    """Per-axis corner terms for the lower bound, as lists of 4 tensors ``(n,)``.

    Corner ``k = 2*a + b`` takes the first coordinate at end ``a`` and the second at end ``b``
    (0: lower end, 1: upper end). Returns ``(inter, ratio, inv_inter)`` with ``inter`` the
    intersection extent, ``ratio`` = box extent / intersection extent and ``inv_inter`` = 1 / inter.
    Corner 2 (first at its upper end, second at its lower end) has the smallest intersection extent;
    where that is <= 0 the values are meaningless (the caller masks those rows: lower bound 0). Elsewhere
    every box extent >= intersection extent > 0, so no clamping is needed.
    """
    first, second = (c1_lo, c1_hi), (c2_lo, c2_hi)
    start = (torch.maximum(c1_lo, g1), torch.maximum(c1_hi, g1))
    stop = (torch.minimum(c2_lo, g2), torch.minimum(c2_hi, g2))
    inter = [stop[b] - start[a] for a in (0, 1) for b in (0, 1)]
    inv_inter = [t.reciprocal() for t in inter]
    ratio = [(second[b] - first[a]).mul_(inv_inter[2 * a + b]) for a in (0, 1) for b in (0, 1)]
    return inter, ratio, inv_inter


def _corner_box(lo: Tensor, hi: Tensor, ix: Tensor, iy: Tensor) -> Tensor:
    """Box ``(n, 4)`` at x-corner ``ix`` and y-corner ``iy`` (corner numbering of :func:`_axis_parts`)."""
    x1 = torch.where(ix >= 2, hi[:, 0], lo[:, 0])
    x2 = torch.where(ix % 2 == 1, hi[:, 2], lo[:, 2])
    y1 = torch.where(iy >= 2, hi[:, 1], lo[:, 1])
    y2 = torch.where(iy % 2 == 1, hi[:, 3], lo[:, 3])
    return torch.stack([x1, y1, x2, y2], -1)


def _optimal_lower_chunk(lo: Tensor, hi: Tensor, gt: Tensor) -> tuple[Tensor, Tensor]:
    """Exact minimum of IoU over the domains of one chunk and the corner attaining it.

    lo, hi ``(n, 4)``; gt ``(n, 4)`` or ``(1, 4)``. Returns ``lower (n,)``, ``lower_box (n, 4)``.
    """
    gx1, gy1, gx2, gy2 = gt.unbind(-1)
    w, a, inv_w = _axis_parts(lo[:, 0], hi[:, 0], lo[:, 2], hi[:, 2], gx1, gx2)
    h, c, d = _axis_parts(lo[:, 1], hi[:, 1], lo[:, 3], hi[:, 3], gy1, gy2)
    area_gt = (gx2 - gx1) * (gy2 - gy1)
    b = [t.mul_(area_gt) for t in inv_w]
    # 1/IoU + 1 = (W*H + A_gt)/(w*h) = (W/w)(H/h) + (A_gt/w)(1/h) = a_i c_j + b_i d_j: running maximum
    # over the 16 corner pairs with in-place ops on (n,) vectors (cache-resident chunks, no (n,16) temps).
    best = a[0] * c[0]
    best.addcmul_(b[0], d[0])
    arg = torch.zeros(best.shape, dtype=torch.uint8, device=best.device)
    score = torch.empty_like(best)
    for k in range(1, 16):
        i, j = divmod(k, 4)
        torch.mul(a[i], c[j], out=score).addcmul_(b[i], d[j])
        arg.masked_fill_(score > best, k)
        torch.maximum(best, score, out=best)
    zero_x, zero_y = w[2] <= 0, h[2] <= 0
    lower = (best - 1).reciprocal_().masked_fill_(zero_x | zero_y, 0)
    arg = arg.long()
    # A domain with a no-overlap corner on one axis: that corner (with any corner of the other axis)
    # is a box of IoU 0.
    ix = torch.where(zero_x, 2, arg // 4)
    iy = torch.where(zero_y, 2, arg % 4)
    return lower, _corner_box(lo, hi, ix, iy)


def _vanilla(lo: Tensor, hi: Tensor, gt: Tensor) -> tuple[Tensor, Tensor]:
    """Interval arithmetic on IoU = I / (A + A_gt - I) (paper §3.2), intersected with [0, 1]."""
    x1, y1, x2, y2 = (Interval(lo[:, k], hi[:, k], check=False) for k in range(4))
    gx1, gy1, gx2, gy2 = gt.unbind(-1)
    area = (x2 - x1).clamp(min=0) * (y2 - y1).clamp(min=0)
    w = (x2.minimum(gx2) - x1.maximum(gx1)).clamp(min=0)
    h = (y2.minimum(gy2) - y1.maximum(gy1)).clamp(min=0)
    inter = w * h
    union = area + (gx2 - gx1) * (gy2 - gy1) - inter
    # The union's interval can reach 0 (dependency loss); the true union is >= A_gt > 0, so dividing by
    # [max(lower, tiny), upper] stays sound; IoU <= 1 then caps the result.
    tiny = torch.finfo(union.dtype).tiny
    union = Interval(union.lower.clamp(min=tiny), union.upper, check=False)
    iou = inter / union
    return iou.lower.clamp(0, 1), iou.upper.clamp(0, 1)


def iou_bounds(
    box_lower: Tensor,
    box_upper: Tensor,
    gt: Tensor,
    method: str = "optimal",
    *,
    check: bool = True,
    chunk_size: int = 1 << 16,
) -> IoUBounds:
    """Bounds on IoU(b, gt) over the box domains ``box_lower <= b <= box_upper``.

    Args:
        box_lower, box_upper: ``(N, 4)`` (or ``(4,)``) coordinate bounds (x1, y1, x2, y2). Domains may
            contain collapsed boxes (``x1 > x2``): their IoU is 0 and the bounds account for it exactly.
        gt: ``(4,)`` or ``(N, 4)`` ground-truth boxes with positive width and height.
        method: ``"optimal"`` (exact range, with attaining boxes) or ``"vanilla"`` (interval arithmetic).
        check: validate inputs (``lower <= upper``, no NaN, valid gt); raises :class:`UserError`.
        chunk_size: rows processed at once by the optimal kernel (keeps temporaries in cache).

    Returns:
        :class:`IoUBounds` ``(lower (N,), upper (N,), lower_box (N, 4) | None, upper_box (N, 4) | None)``
        in the promoted floating dtype of the inputs.
    """
    if method not in METHODS:
        raise UserError(f"iou_bounds: unknown method {method!r}; choose one of {', '.join(METHODS)}")
    lo, hi, gt = _prepare(box_lower, box_upper, gt, check)
    if method == "vanilla":
        lower, upper = _vanilla(lo, hi, gt)
        return IoUBounds(lower, upper, None, None)
    # Upper bound: the ground truth clamped into the domain maximises IoU (coordinate-wise unimodal).
    upper_box = torch.maximum(torch.minimum(gt, hi), lo)
    upper = box_iou(upper_box, gt)
    n = lo.shape[0]
    parts = []
    for s in range(0, n, chunk_size):
        g = gt if gt.shape[0] == 1 else gt[s:s + chunk_size]
        parts.append(_optimal_lower_chunk(lo[s:s + chunk_size], hi[s:s + chunk_size], g))
    if n == 0:
        lower, lower_box = upper.clone(), upper_box.clone()
    elif len(parts) == 1:
        lower, lower_box = parts[0]
    else:
        lower, lower_box = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
    # Rounding can differ between the corner formula and the clamped-gt evaluation on point domains.
    return IoUBounds(torch.minimum(lower, upper), upper, lower_box, upper_box)


# --------------------------------------------------------------------------- naive reference
def _iou_scalar(b: tuple[float, float, float, float], g: tuple[float, float, float, float]) -> float:
    w = max(0.0, min(b[2], g[2]) - max(b[0], g[0]))
    h = max(0.0, min(b[3], g[3]) - max(b[1], g[1]))
    inter = w * h
    area = max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1])
    return inter / (area + (g[2] - g[0]) * (g[3] - g[1]) - inter)


def iou_bounds_naive(box_lower, box_upper, gt) -> tuple[list[float], list[float]]:
    """Slow per-box Python reference of the optimal extension (float64 arithmetic, no torch kernels).

    Lower bound: minimum over the 16 corners of each domain. Upper bound: maximum over the 3^4 grid of
    per-coordinate candidates {lower end, upper end, gt clamped into the interval} -- it contains the
    clamped ground truth, so it checks that this point is the maximiser without assuming it.
    """
    lows = torch.as_tensor(box_lower, dtype=torch.float64).reshape(-1, 4).tolist()
    highs = torch.as_tensor(box_upper, dtype=torch.float64).reshape(-1, 4).tolist()
    gts = torch.as_tensor(gt, dtype=torch.float64).reshape(-1, 4).tolist()
    out_lo, out_hi = [], []
    for i, (lo, hi) in enumerate(zip(lows, highs)):
        g = gts[0] if len(gts) == 1 else gts[i]
        corners = itertools.product(*[(lo[k], hi[k]) for k in range(4)])
        out_lo.append(min(_iou_scalar(c, g) for c in corners))
        grid = [(lo[k], hi[k], min(max(g[k], lo[k]), hi[k])) for k in range(4)]
        out_hi.append(max(_iou_scalar(c, g) for c in itertools.product(*grid)))
    return out_lo, out_hi
