"""Median smoothing (geo_rs.MedianSmooth): coverage against closed forms, exact indices, fast == naive."""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest
import torch
from scipy.stats import binom, norm
from torch import nn

import geo_rs.median_smoothing
from geo_rs import MedianSmooth, UserError, max_certifiable_eps
from geo_rs.median_smoothing import certify_from_samples
from geo_rs.median_stats import order_statistic_index, order_statistic_index_naive

pytestmark = pytest.mark.usefixtures("one_thread")


class RowLinear(nn.Module):
    """f(x) = W x, computed row by row (elementwise product + sum) so a row's output does not depend on
    how many rows share its forward batch: the fast and naive samplers then agree bit for bit."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("weight", weight)  # (m, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.flatten(1)[:, None, :] * self.weight).sum(-1)


class Staircase(nn.Module):
    """f(x) = floor(u·x / h): a step function whose smoothed distribution is known exactly."""

    def __init__(self, u: torch.Tensor, h: float) -> None:
        super().__init__()
        self.register_buffer("u", u)
        self.h = h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.floor((x.flatten(1) * self.u).sum(1, keepdim=True) / self.h)


def _orthogonal_rows(m: int, d: int, norms: list[float], seed: int) -> torch.Tensor:
    q, _ = torch.linalg.qr(
        torch.randn(d, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    )
    return q[:m] * torch.tensor(norms, dtype=torch.float64)[:, None]


def test_linear_model_coverage_within_binomial_bound():
    """f(x) = Wx: the smoothed median at x' is W x' exactly, so over the ε-ball it ranges over
    W_j x ± ε‖W_j‖. 1,000 independent certificates (orthogonal rows) at α = 0.1: the failures per side
    follow Bin(1000, c) with c = P[Bin(n, Φ(−ε/σ)) ≤ k − 1] ≤ α/2 exactly (the bound is tight here)."""
    sigma, eps, n, alpha = 0.5, 0.4, 200, 0.1
    weight = _orthogonal_rows(4, 8, [1.0, 2.0, 0.5, 3.0], seed=0)
    x = torch.randn(250, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    cert = MedianSmooth(RowLinear(weight).eval(), sigma).certify(
        x, eps, n, alpha, batch_size=4096, generator=2
    )
    centre = (x @ weight.T).numpy()
    reach = eps * weight.norm(dim=1).numpy()
    low_fail = int((cert.lower.numpy() > centre - reach).sum())
    high_fail = int((cert.upper.numpy() < centre + reach).sum())
    k = cert.index_lower
    c = binom.cdf(k - 1, n, norm.cdf(-eps / sigma))
    assert c <= alpha / 2 and cert.certified.all()
    total = centre.size  # 1000 certificates
    for fails in (low_fail, high_fail):
        assert fails <= binom.ppf(1 - 1e-6, total, alpha / 2)  # never worse than the promised α/2
        assert binom.ppf(1e-6, total, c) <= fails <= binom.ppf(1 - 1e-6, total, c)  # and exactly as predicted
    assert low_fail + high_fail <= binom.ppf(1 - 1e-6, total, alpha)


def test_staircase_model_matches_exact_gaussian_probabilities():
    """f = floor(u·x/h): medians over the ball range over floor((s ± ε)/h) (s = u·x); the probability that
    a bound fails is an exact binomial tail of a Gaussian probability, input by input."""
    sigma, eps, n, alpha, h = 0.5, 0.25, 150, 0.1, 0.3
    u = torch.tensor([0.6, 0.0, -0.8, 0.0], dtype=torch.float64)
    s = np.linspace(-2.0, 2.0, 997) + 1e-3  # avoid exact step positions
    x = torch.as_tensor(s)[:, None] * u
    cert = MedianSmooth(Staircase(u, h).eval(), sigma).certify(
        x, eps, n, alpha, batch_size=50_000, generator=4
    )
    k = cert.index_lower
    low_target, high_target = np.floor((s - eps) / h), np.floor((s + eps) / h)
    lower, upper = cert.lower[:, 0].numpy(), cert.upper[:, 0].numpy()
    # P[Y <= t] = P[Z < (t+1)h], Z ~ N(s, σ²); lower fails iff fewer than k samples are <= target
    p_low = binom.cdf(k - 1, n, norm.cdf(((low_target + 1) * h - s) / sigma))
    p_high = binom.cdf(k - 1, n, norm.sf((high_target * h - s) / sigma))
    for fails, p in ((lower > low_target, p_low), (upper < high_target, p_high)):
        mean, sd = p.sum(), math.sqrt((p * (1 - p)).sum())
        assert p.max() <= alpha / 2 + 1e-12  # the theory: each certificate fails w.p. <= α/2
        assert abs(int(fails.sum()) - mean) <= 5 * sd + 1, (int(fails.sum()), mean, sd)
    # certified bounds are attained values of f, never invented ones
    assert np.all(lower == np.round(lower)) and np.all(upper == np.round(upper))


@pytest.mark.parametrize("batch_size", [1, 7, 64, 10_000])
def test_fast_equals_naive_bit_for_bit(batch_size):
    weight = torch.randn(3, 6, generator=torch.Generator().manual_seed(3))
    smooth = MedianSmooth(RowLinear(weight).eval(), sigma=0.7)
    x = torch.randn(5, 6, generator=torch.Generator().manual_seed(4))
    n = 40 if batch_size == 1 else 137
    fast = smooth.certify(x, 0.3, n, 0.05, batch_size=batch_size, generator=11)
    slow = smooth.certify_naive(x, 0.3, n, 0.05, batch_size=batch_size, generator=11)
    for name in ("lower", "upper", "median"):
        assert torch.equal(getattr(fast, name), getattr(slow, name)), name
    assert (fast.index_lower, fast.index_upper) == (slow.index_lower, slow.index_upper)
    p_fast = smooth.predict(x, n, 0.05, batch_size=batch_size, generator=12, joint=True)
    p_slow = smooth.predict_naive(x, n, 0.05, batch_size=batch_size, generator=12, joint=True)
    for name in ("lower", "upper", "median"):
        assert torch.equal(getattr(p_fast, name), getattr(p_slow, name)), name


def test_samples_do_not_depend_on_batching_and_input_ids_on_partition():
    weight = torch.randn(2, 5, generator=torch.Generator().manual_seed(5))
    smooth = MedianSmooth(RowLinear(weight).eval(), sigma=0.4)
    x = torch.randn(6, 5, generator=torch.Generator().manual_seed(6))
    a = smooth.sample(x, 50, batch_size=13, generator=3)
    b = smooth.sample(x, 50, batch_size=13, generator=3)
    assert torch.equal(a, b) and not torch.equal(a, smooth.sample(x, 50, batch_size=13, generator=4))
    ids = [10, 11, 12, 13, 14, 15]
    whole = smooth.sample(x, 50, batch_size=17, generator=3, input_ids=ids)
    parts = [
        smooth.sample(x[i : i + 2], 50, batch_size=17, generator=3, input_ids=ids[i : i + 2])
        for i in (0, 2, 4)
    ]
    assert torch.equal(whole, torch.cat(parts))
    reordered = smooth.sample(x.flip(0), 50, batch_size=17, generator=3, input_ids=ids[::-1])
    assert torch.equal(whole, reordered.flip(0))


def test_index_rule_fast_equals_exact_rational_reference():
    for n in (1, 5, 20, 101, 400):
        for p in (0.01, 0.2, norm.cdf(-0.37), 0.5):
            for level in (1e-6, 0.0005, 0.05, 0.25):
                assert order_statistic_index(n, p, level) == order_statistic_index_naive(n, p, level), (
                    n,
                    p,
                    level,
                )
    k = order_statistic_index(400, 0.3, 0.01)
    assert binom.cdf(k - 1, 400, 0.3) <= 0.01 < binom.cdf(k, 400, 0.3)  # the largest valid k


def test_beyond_max_eps_bounds_are_infinite_never_finite():
    sigma, n, alpha = 0.5, 100, 0.001
    smooth = MedianSmooth(RowLinear(torch.eye(3)).eval(), sigma)
    x = torch.zeros(2, 3)
    eps_max = max_certifiable_eps(n, alpha, sigma)
    assert eps_max == pytest.approx(sigma * norm.ppf((alpha / 2) ** (1 / n)), rel=1e-6)
    inside = smooth.certify(x, eps_max * 0.999, n, alpha, generator=0)
    outside = smooth.certify(x, eps_max * 1.001, n, alpha, generator=0)
    assert inside.certified.all() and inside.index_lower == 1 and inside.index_upper == n
    assert not outside.certified.any() and outside.index_lower == 0 and outside.index_upper == n + 1
    assert torch.isneginf(outside.lower).all() and torch.isposinf(outside.upper).all()
    assert torch.isfinite(outside.median).all()
    # the joint statement spends α/m per coordinate: its intervals are never narrower
    joint = smooth.certify(x, 0.3, n, alpha, generator=0, joint=True)
    single = smooth.certify(x, 0.3, n, alpha, generator=0)
    assert joint.index_lower <= single.index_lower
    assert bool((joint.lower <= single.lower).all() and (joint.upper >= single.upper).all())


def test_several_eps_from_one_sample_set_are_nested():
    smooth = MedianSmooth(
        RowLinear(torch.randn(2, 4, generator=torch.Generator().manual_seed(0))).eval(), 0.5
    )
    samples = smooth.sample(torch.randn(3, 4, generator=torch.Generator().manual_seed(1)), 500, generator=0)
    certs = [certify_from_samples(samples, eps, 0.5, 0.01) for eps in (0.0, 0.1, 0.3, 0.8)]
    for small, large in zip(certs, certs[1:], strict=False):
        assert bool((large.lower <= small.lower).all() and (large.upper >= small.upper).all())
    assert bool((certs[0].lower <= certs[0].median).all() and (certs[0].median <= certs[0].upper).all())


def test_cnn_runs_and_predict_interval_contains_median():
    cnn = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5)).eval()
    pred = MedianSmooth(cnn, 0.2).predict(
        torch.rand(3, 3, 8, 8), n=101, alpha=0.01, batch_size=64, generator=0
    )
    assert pred.median.shape == (3, 5) and pred.median.dtype == torch.float64
    assert bool((pred.lower <= pred.median).all() and (pred.median <= pred.upper).all())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_fast_equals_naive():
    weight = torch.randn(3, 6)
    smooth = MedianSmooth(RowLinear(weight).cuda().eval(), sigma=0.7)
    x = torch.randn(5, 6)
    fast = smooth.certify(x, 0.3, 333, 0.05, batch_size=100, generator=11)
    slow = smooth.certify_naive(x, 0.3, 333, 0.05, batch_size=100, generator=11)
    assert torch.equal(fast.lower, slow.lower) and torch.equal(fast.upper, slow.upper)


def test_bad_input_raises_one_line_user_errors():
    smooth = MedianSmooth(RowLinear(torch.eye(2)).eval(), 0.5)
    x = torch.zeros(2, 2)
    bad_calls = [
        lambda: MedianSmooth(RowLinear(torch.eye(2)), sigma=0.0),
        lambda: MedianSmooth("model", sigma=1.0),
        lambda: smooth.certify(x, -0.1, 10, 0.1),
        lambda: smooth.certify(x, 0.1, 0, 0.1),
        lambda: smooth.certify(x, 0.1, 10, 1.5),
        lambda: smooth.certify(torch.zeros(2), 0.1, 10, 0.1),
        lambda: smooth.certify(x.long(), 0.1, 10, 0.1),
        lambda: smooth.certify(x * float("nan"), 0.1, 10, 0.1),
        lambda: smooth.sample(x, 10, input_ids=[1]),
        lambda: MedianSmooth(lambda z: z.sum(1), 0.5).certify(x, 0.1, 10, 0.1),
        lambda: MedianSmooth(lambda z: z * float("nan"), 0.5).certify(x, 0.1, 10, 0.1),
    ]
    for call in bad_calls:
        with pytest.raises(UserError) as info:
            call()
        assert "\n" not in str(info.value)


def test_module_doctest():
    result = doctest.testmod(geo_rs.median_smoothing, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_float_batch_check():
    from geo_rs.checks import float_batch

    assert float_batch("x", torch.zeros(2, 3)).shape == (2, 3)
    for bad in (
        np.zeros((2, 3)),
        torch.zeros(3),
        torch.zeros(2, 3, dtype=torch.long),
        torch.full((2, 2), math.inf),
    ):
        with pytest.raises(UserError, match="^x "):
            float_batch("x", bad)
