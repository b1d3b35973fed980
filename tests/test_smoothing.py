"""Randomized smoothing (geo_rs.Smooth): soundness against closed forms, theory limits, fast == naive."""
from __future__ import annotations

import doctest
import math
import warnings

import numpy as np
import pytest
import torch
from scipy.stats import beta, binom, norm
from torch import nn

import geo_rs.smoothing
from geo_rs import ABSTAIN, Smooth, UserError
from geo_rs.smoothing_sampler import plan_chunks
from geo_rs.smoothing_stats import certify_from_counts

SIGMA = 0.5
DIM = 6


class LinearBinary(nn.Module):
    """Class 1 iff w·x + b > 0. Row-wise elementwise product + sum, so a row's logits do not depend
    on how many rows share its forward batch (keeps fast == naive exact)."""

    def __init__(self, w: torch.Tensor, b: float) -> None:
        super().__init__()
        self.register_buffer("w", w)
        self.b = b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = (x.flatten(1) * self.w).sum(1) + self.b
        return torch.stack([-s, s], dim=1)


class LinearMulti(nn.Module):
    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("weight", weight)  # (C, D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.flatten(1)[:, None, :] * self.weight).sum(-1)


class Constant(nn.Module):
    def __init__(self, num_classes: int, cls: int = 0) -> None:
        super().__init__()
        self.num_classes, self.cls = num_classes, cls
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = x.new_zeros(len(x), self.num_classes)
        logits[:, self.cls] = 1.0
        return logits


def _linear_setup(signed_distances: np.ndarray) -> tuple[LinearBinary, torch.Tensor]:
    """A linear classifier and inputs whose signed distance to its boundary is given (world units)."""
    gen = torch.Generator().manual_seed(123)
    w = torch.randn(DIM, generator=gen, dtype=torch.float64)
    w_norm = float(w.norm())
    b = 0.3
    base = torch.randn(len(signed_distances), DIM, generator=gen, dtype=torch.float64)
    # project onto the boundary, then move along the unit normal by the wanted signed distance
    on_plane = base - ((base @ w + b) / w_norm**2)[:, None] * w
    x = on_plane + torch.as_tensor(signed_distances, dtype=torch.float64)[:, None] * (w / w_norm)
    return LinearBinary(w, b).eval(), x


def test_radius_never_exceeds_distance_to_boundary_over_many_seeds():
    distances = np.linspace(0.05, 3.0, 50) * SIGMA
    signed = np.concatenate([distances, -distances])  # both classes
    model, x = _linear_setup(signed)
    smooth = Smooth(model, num_classes=2, sigma=SIGMA)
    true_class = torch.as_tensor(signed > 0).long()
    for seed in range(4):  # 400 independent certificates at alpha = 1e-3
        cert = smooth.certify(x, n0=64, n=2000, alpha=1e-3, batch_size=50_000, generator=seed)
        assert bool((cert.radius <= torch.as_tensor(np.abs(signed)) + 1e-12).all())
        certified = cert.prediction != ABSTAIN
        assert bool((cert.prediction[certified] == true_class[certified]).all())
        assert bool((cert.radius[~certified] == 0).all())


def test_lower_bound_coverage_rate_matches_alpha():
    """At alpha = 0.1 about ≤10 % of certificates may overshoot; a point estimate would overshoot ~50 %."""
    alpha = 0.1
    signed = np.linspace(0.2, 2.0, 1000) * SIGMA
    model, x = _linear_setup(signed)
    cert = Smooth(model, 2, SIGMA).certify(x, n0=32, n=200, alpha=alpha, batch_size=100_000, generator=7)
    exceed = int((cert.radius > torch.as_tensor(signed)).sum())
    assert exceed <= binom.ppf(1 - 1e-9, len(signed), alpha)


def test_clopper_pearson_formula():
    n, alpha = 1000, 0.01
    counts = np.array([[0, 1000], [300, 700], [480, 520], [1000, 0]])
    selection = np.array([[0, 5], [0, 5], [0, 5], [0, 5]])  # selection says class 1 everywhere
    cert = certify_from_counts(selection, counts, n, alpha, sigma=2.0)
    for i, k in enumerate(counts[:, 1]):
        expected = 0.0 if k == 0 else beta.ppf(alpha, k, n - k + 1)  # one-sided (1 - alpha) bound
        assert cert.pa_lower[i].item() == pytest.approx(expected, rel=1e-10, abs=1e-15)
    assert cert.prediction.tolist() == [1, 1, ABSTAIN, ABSTAIN]
    assert cert.radius[1].item() == pytest.approx(2.0 * norm.ppf(beta.ppf(alpha, 700, 301)), rel=1e-10)
    assert cert.radius[2:].tolist() == [0.0, 0.0]


def test_radius_close_to_distance_at_n_1e5():
    signed = np.array([0.25, 0.5, 1.0, 1.5, 2.0, 2.5]) * SIGMA
    model, x = _linear_setup(signed)
    n, alpha = 100_000, 1e-3
    cert = Smooth(model, 2, SIGMA).certify(x, n0=100, n=n, alpha=alpha, batch_size=100_000, generator=11)
    assert cert.prediction.tolist() == [1] * len(signed)
    p = norm.cdf(signed / SIGMA)
    # expected gap: the one-sided bound (z_alpha std errors) plus 4 std errors of sampling, in radius units
    std_radius = SIGMA * np.sqrt(p * (1 - p) / n) / norm.pdf(norm.ppf(p))
    tolerance = (norm.ppf(1 - alpha) + 4) * std_radius
    radius = cert.radius.numpy()
    assert np.all(radius <= signed + 1e-12)
    assert np.all(radius >= signed - tolerance), (radius, signed, tolerance)
    assert np.all(tolerance < 0.11 * SIGMA)  # "close" really is close: within 0.11 sigma


@pytest.mark.parametrize(
    "n, expected_sigmas",
    [(9, None), (10, 0.00298), (100, 1.50), (1000, 2.46), (100_000, 3.81)],
)
def test_small_n_abstains_and_radius_ceiling(n, expected_sigmas):
    """Every sample agreeing gives pA_lower = alpha^(1/n): n ≤ 9 abstains at alpha = 1e-3 (FIELD-NOTES)."""
    alpha, sigma = 1e-3, 0.7
    smooth = Smooth(Constant(3, cls=2), 3, sigma)
    cert = smooth.certify(X24, n0=10, n=n, alpha=alpha, batch_size=100_000, generator=0)
    if expected_sigmas is None:
        assert cert.prediction.tolist() == [ABSTAIN, ABSTAIN]
        assert cert.radius.tolist() == [0.0, 0.0]
    else:
        ceiling = sigma * norm.ppf(alpha ** (1 / n))
        assert cert.prediction.tolist() == [2, 2]
        assert cert.radius.numpy() == pytest.approx([ceiling, ceiling], rel=1e-9)
        assert round(ceiling / sigma, 2 if n >= 100 else 5) == expected_sigmas


def _multi_setup(num_inputs: int = 5, num_classes: int = 4) -> tuple[Smooth, torch.Tensor]:
    gen = torch.Generator().manual_seed(5)
    weight = torch.randn(num_classes, DIM, generator=gen)
    x = torch.randn(num_inputs, DIM, generator=gen) * 0.4
    return Smooth(LinearMulti(weight).eval(), num_classes, sigma=0.8), x


@pytest.mark.parametrize("batch_size", [1, 7, 64, 10_000])
def test_certify_fast_equals_naive(batch_size):
    smooth, x = _multi_setup()
    n0, n = (5, 150) if batch_size == 1 else (37, 250)
    fast = smooth.certify(x, n0=n0, n=n, alpha=0.01, batch_size=batch_size, generator=3)
    slow = smooth.certify_naive(x, n0=n0, n=n, alpha=0.01, batch_size=batch_size, generator=3)
    for name in ("prediction", "radius", "pa_lower", "count"):
        assert torch.equal(getattr(fast, name), getattr(slow, name)), name
    assert (fast.prediction != ABSTAIN).any() and (fast.prediction == ABSTAIN).any()  # a meaningful mix


def test_predict_fast_equals_naive_and_cnn():
    smooth, x = _multi_setup(num_inputs=6)
    args = dict(n=300, alpha=0.01, batch_size=128)
    fast = smooth.predict(x, **args, generator=torch.Generator().manual_seed(9))
    slow = smooth.predict_naive(x, **args, generator=torch.Generator().manual_seed(9))
    assert torch.equal(fast.prediction, slow.prediction) and torch.equal(fast.p_value, slow.p_value)
    cnn = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)).eval()
    smooth_cnn = Smooth(cnn, 3, sigma=0.3)
    images = torch.rand(3, 3, 8, 8)
    fast = smooth_cnn.certify(images, n0=20, n=90, alpha=0.05, batch_size=50, generator=1)
    slow = smooth_cnn.certify_naive(images, n0=20, n=90, alpha=0.05, batch_size=50, generator=1)
    assert torch.equal(fast.count, slow.count) and torch.equal(fast.radius, slow.radius)


def test_predict_abstains_on_a_coin_flip():
    model, x = _linear_setup(np.zeros(40))  # on the boundary: pA = 1/2 exactly
    smooth = Smooth(model, 2, SIGMA)
    pred = smooth.predict(x, n=1000, alpha=1e-3, batch_size=20_000, generator=0)
    assert (pred.prediction == ABSTAIN).sum() >= 39  # a false decision has probability <= alpha each
    shifted = x + 2 * SIGMA * model.w / model.w.norm()
    far = smooth.predict(shifted, n=1000, alpha=1e-3, batch_size=5000, generator=0)
    assert far.prediction.tolist() == [1] * 40 and bool((far.p_value < 1e-10).all())


def test_seed_and_generator_are_reproducible():
    smooth, x = _multi_setup()
    args = dict(n0=10, n=200, alpha=0.05, batch_size=64)
    a = smooth.certify(x, **args, generator=42)
    b = smooth.certify(x, **args, generator=42)
    c = smooth.certify(x, **args, generator=torch.Generator().manual_seed(42))
    d = smooth.certify(x, **args, generator=torch.Generator().manual_seed(42))
    other = smooth.certify(x, **args, generator=43)
    assert torch.equal(a.count, b.count) and torch.equal(c.count, d.count)
    assert not torch.equal(a.count, other.count)
    torch.manual_seed(1)
    e = smooth.predict(x, n=100, alpha=0.05, batch_size=30)
    torch.manual_seed(1)
    f = smooth.predict(x, n=100, alpha=0.05, batch_size=30)
    assert torch.equal(e.p_value, f.p_value)
    prediction, radius = a  # unpacks like the reference code
    assert prediction.dtype == torch.int64 and radius.dtype == torch.float64 and radius.shape == (len(x),)


def test_plan_chunks_packs_partial_blocks_and_keeps_every_sample():
    sizes = [100, 2500, 100, 2500, 100, 2500]
    chunks = plan_chunks(sizes, 1000)
    assert all(sum(size for _, size in chunk) <= 1000 for chunk in chunks)
    totals = [0] * len(sizes)
    for chunk in chunks:
        for stream, size in chunk:
            totals[stream] += size
    assert totals == sizes
    assert len(chunks) == math.ceil(sum(sizes) / 1000)  # optimal here: 6 full + (3×100 + 3×500) in 2
    assert any(len({s for s, _ in chunk}) > 1 for chunk in chunks)  # batches mix inputs


def test_empty_batch_and_training_mode_warning():
    smooth, _ = _multi_setup()
    cert = smooth.certify(torch.zeros(0, DIM), n0=5, n=10, alpha=0.1, batch_size=8)
    assert cert.prediction.shape == (0,) and cert.radius.shape == (0,)
    smooth.base_classifier.train()
    with pytest.warns(UserWarning, match="training mode"):
        smooth.predict(torch.zeros(1, DIM), n=5, alpha=0.1, batch_size=8, generator=0)
    smooth.base_classifier.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        smooth.predict(torch.zeros(1, DIM), n=5, alpha=0.1, batch_size=8, generator=0)


def _smooth3(num_classes: int = 3) -> Smooth:
    return Smooth(Constant(3), num_classes, 1.0)


X24 = torch.zeros(2, 4)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: Smooth(Constant(3), 3, sigma=0.0), "sigma"),
        (lambda: Smooth(Constant(3), 3, sigma=float("nan")), "sigma"),
        (lambda: Smooth(Constant(3), 1, sigma=1.0), "num_classes"),
        (lambda: _smooth3().certify(X24, 0, 10, 0.01, 8), "n0"),
        (lambda: _smooth3().certify(X24, 10, 0, 0.01, 8), "n must"),
        (lambda: _smooth3().certify(X24, 10, 2.5, 0.01, 8), "n must"),
        (lambda: _smooth3().certify(X24, 10, 10, 1.0, 8), "alpha"),
        (lambda: _smooth3().certify(X24, 10, 10, 0.0, 8), "alpha"),
        (lambda: _smooth3().certify(X24, 10, 10, 0.1, 0), "batch_size"),
        (lambda: _smooth3().predict(torch.zeros(4), 10, 0.1, 8), "batch"),
        (lambda: _smooth3().predict(torch.zeros(2, 4, dtype=torch.long), 10, 0.1, 8), "floating"),
        (lambda: _smooth3().predict(torch.full((2, 4), float("nan")), 10, 0.1, 8), "NaN"),
        (lambda: _smooth3(4).predict(X24, 10, 0.1, 8), r"\(8, 4\), got \(8, 3\)"),
        (lambda: Smooth(nn.Flatten(0).eval(), 3, 1.0).certify(X24, 10, 10, 0.1, 8), "logits of shape"),
        (lambda: _smooth3().predict(X24, 10, 0.1, 8, generator="x"), "generator"),
    ],
)
def test_bad_input_raises_user_error(make, match):
    with pytest.raises(UserError, match=match):
        make()


def test_module_docstring_example():
    result = doctest.testmod(geo_rs.smoothing, verbose=False)
    assert result.attempted > 0 and result.failed == 0


def test_progress_bar_can_be_shown_and_hidden(capsys):
    smooth, x = _multi_setup(num_inputs=2)
    smooth.certify(x, n0=10, n=100, alpha=0.1, batch_size=16, generator=0, progress=True)
    assert "certify" in capsys.readouterr().err
    smooth.certify(x, n0=10, n=100, alpha=0.1, batch_size=16, generator=0, progress=False)
    assert capsys.readouterr().err == ""


def test_inputs_are_cast_to_the_model_dtype():
    smooth, x = _multi_setup(num_inputs=3)  # float32 model
    args = dict(n0=10, n=100, alpha=0.1, batch_size=32, generator=4)
    as_float64 = smooth.certify(x.double(), **args)
    as_float32 = smooth.certify(x, **args)
    assert torch.equal(as_float64.count, as_float32.count)
    assert repr(smooth).startswith("Smooth(LinearMulti, num_classes=4, sigma=0.8")
