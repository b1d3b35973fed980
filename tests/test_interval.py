"""Containment property of every Interval operation: the interval result holds every point result."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from geo_rs import Interval
from geo_rs.bounds import interval_max, interval_min

pytestmark = pytest.mark.usefixtures("one_thread")

N = 6
finite = st.floats(min_value=-1e3, max_value=1e3, allow_nan=False, allow_infinity=False, width=32)
frac = st.floats(min_value=0.0, max_value=1.0, width=32)
DTYPES = [torch.float32, torch.float64]


@st.composite
def interval_with_points(draw, positive: bool = False, n: int = N):
    """An interval of shape (n,) and 3 points inside it (including its end points sometimes)."""
    a = torch.tensor(draw(st.lists(finite, min_size=n, max_size=n)), dtype=torch.float64)
    b = torch.tensor(draw(st.lists(finite, min_size=n, max_size=n)), dtype=torch.float64)
    lo, hi = torch.minimum(a, b), torch.maximum(a, b)
    if positive:
        lo, hi = lo.abs() + 1e-3, hi.abs() + 1e-3
        lo, hi = torch.minimum(lo, hi), torch.maximum(lo, hi)
    pts = []
    for _ in range(3):
        t = torch.tensor(draw(st.lists(frac, min_size=n, max_size=n)), dtype=torch.float64)
        pts.append(torch.clamp(lo + t * (hi - lo), lo, hi))
    pts[0] = torch.where(torch.arange(n) % 2 == 0, lo, hi)  # corners are where bugs live
    return lo, hi, pts


def _make(lo, hi, pts, dtype):
    lo, hi = lo.to(dtype), hi.to(dtype)
    # Casting may break lo <= p <= hi by rounding only when float64 points are cast; clamp after the cast.
    return Interval(lo, hi), [torch.clamp(p.to(dtype), lo, hi) for p in pts]


BINARY = {
    "add": (lambda a, b: a + b, lambda x, y: x + y),
    "sub": (lambda a, b: a - b, lambda x, y: x - y),
    "mul": (lambda a, b: a * b, lambda x, y: x * y),
    "min": (lambda a, b: a.minimum(b), torch.minimum),
    "max": (lambda a, b: a.maximum(b), torch.maximum),
    "fmin": (interval_min, torch.minimum),
    "fmax": (interval_max, torch.maximum),
    "clamp": (
        lambda a, b: a.clamp(min=b, max=b + 5.0),
        lambda x, y: torch.minimum(torch.maximum(x, y), y + 5.0),
    ),
}
UNARY = {
    "neg": (lambda a: -a, lambda x: -x),
    "square": (lambda a: a.square(), lambda x: x * x),
    "abs": (lambda a: a.abs(), torch.abs),
    "relu": (lambda a: a.relu(), torch.relu),
    "clamp01": (lambda a: a.clamp(0.0, 1.0), lambda x: x.clamp(0.0, 1.0)),
    "sum": (lambda a: a.sum(), lambda x: x.sum()),
    "amax": (lambda a: a.amax(0), lambda x: x.amax(0)),
    "amin": (lambda a: a.amin(0), lambda x: x.amin(0)),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", sorted(BINARY))
@settings(max_examples=25, deadline=None)
@given(a=interval_with_points(), b=interval_with_points())
def test_binary_contains_points(op, dtype, a, b):
    f_int, f_pt = BINARY[op]
    ia, pa = _make(*a, dtype)
    ib, pb = _make(*b, dtype)
    out = f_int(ia, ib)
    assert bool((out.lower <= out.upper).all())
    for x in pa:
        for y in pb:
            assert bool(out.contains(f_pt(x, y)).all()), (op, x, y, out)


@pytest.mark.parametrize("dtype", DTYPES)
@settings(max_examples=40, deadline=None)
@given(a=interval_with_points(), b=interval_with_points(positive=True))
def test_division_by_positive_interval_contains_points(dtype, a, b):
    ia, pa = _make(*a, dtype)
    ib, pb = _make(*b, dtype)
    out = ia / ib
    for x in pa:
        for y in pb:
            assert bool(out.contains(x / y).all())
    # scalar / interval as used for 1 / union
    inv = 1.0 / ib
    for y in pb:
        assert bool(inv.contains(1.0 / y).all())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", sorted(UNARY))
@settings(max_examples=25, deadline=None)
@given(a=interval_with_points())
def test_unary_contains_points(op, dtype, a):
    f_int, f_pt = UNARY[op]
    ia, pa = _make(*a, dtype)
    out = f_int(ia)
    for x in pa:
        assert bool(out.contains(f_pt(x)).all()), (op, x, out)


@settings(max_examples=25, deadline=None)
@given(a=interval_with_points(positive=True))
def test_sqrt_contains_points(a):
    ia, pa = _make(*a, torch.float64)
    for x in pa:
        assert bool(ia.sqrt().contains(x.sqrt()).all())


@settings(max_examples=25, deadline=None)
@given(a=interval_with_points(), s=finite)
def test_scalar_and_tensor_operands_on_both_sides(a, s):
    ia, pa = _make(*a, torch.float32)
    t = torch.full((N,), s)
    for x in pa:
        for out, val in [
            (ia + s, x + s),
            (s + ia, s + x),
            (ia - s, x - s),
            (s - ia, s - x),
            (ia * s, x * s),
            (s * ia, s * x),
            (t + ia, t + x),
            (t - ia, t - x),
            (t * ia, t * x),
            (ia * t, x * t),
            (ia / 2.5, x / 2.5),
        ]:
            assert bool(out.contains(val).all())


def test_exact_results_on_known_cases():
    a = Interval(torch.tensor([-1.0, 2.0, -3.0]), torch.tensor([2.0, 3.0, -1.0]))
    torch.testing.assert_close(a.square().lower, torch.tensor([0.0, 4.0, 1.0]))
    torch.testing.assert_close(a.square().upper, torch.tensor([4.0, 9.0, 9.0]))
    p = a * a  # the naive product of an interval with itself is wider than square()
    assert float(p.lower[0]) == -2.0
    torch.testing.assert_close((-a).lower, torch.tensor([-2.0, -3.0, 1.0]))
    d = Interval(torch.tensor([1.0]), torch.tensor([2.0])) / Interval(torch.tensor([4.0]), torch.tensor(8.0))
    torch.testing.assert_close(d.lower, torch.tensor([0.125]))
    torch.testing.assert_close(d.upper, torch.tensor([0.5]))


def test_broadcasting():
    a = Interval(torch.zeros(3, 1), torch.ones(3, 1))
    b = Interval(torch.zeros(1, 4), 2 * torch.ones(1, 4))
    out = a * b + a.minimum(b)
    assert out.shape == (3, 4)
    torch.testing.assert_close(out.upper, torch.full((3, 4), 3.0))
    assert Interval(torch.zeros(2, 3), torch.tensor(1.0)).shape == (2, 3)


def test_invalid_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="lower <= upper"):
        Interval(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="NaN"):
        Interval(torch.tensor([float("nan")]), torch.tensor([1.0]))
    with pytest.raises(ValueError, match="strictly positive"):
        Interval(torch.tensor([1.0]), torch.tensor([2.0])) / Interval(torch.tensor([0.0]), torch.tensor(1.0))
    with pytest.raises(ValueError, match="lower >= 0"):
        Interval(torch.tensor([-1.0]), torch.tensor([2.0])).sqrt()
    with pytest.raises(ValueError, match="non-negative"):
        Interval.from_center_radius(torch.zeros(2), -1.0)


def test_outward_widens_and_helpers():
    a = Interval(torch.tensor([0.0, 1.0]), torch.tensor([1.0, 3.0]))
    w = a.outward(2)
    assert bool((w.lower < a.lower).all()) and bool((w.upper > a.upper).all())
    assert bool(w.contains(a).all())
    torch.testing.assert_close(a.center, torch.tensor([0.5, 2.0]))
    torch.testing.assert_close(a.width, torch.tensor([1.0, 2.0]))
    s = Interval.stack([a, a], dim=1)
    assert s.shape == (2, 2) and s[0].shape == (2,)
    assert Interval.cat([a, a]).shape == (4,)
    h = a.hull(Interval.point(torch.tensor([-1.0, 5.0])))
    torch.testing.assert_close(h.lower, torch.tensor([-1.0, 1.0]))
    torch.testing.assert_close(h.upper, torch.tensor([1.0, 5.0]))
    assert Interval.point(torch.tensor([1, 2])).dtype == torch.get_default_dtype()
