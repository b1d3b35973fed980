"""Statistics, validation and noise streams behind :class:`geo_rs.Smooth` (randomized smoothing).

Everything here runs on the host and is shared by the fast batched sampler and the one-input-at-a-time
reference in :mod:`geo_rs.smoothing`, so the two can only differ in how they draw and count samples.

* :func:`certify_from_counts` — Cohen et al.'s CERTIFY decision: the top class of the selection
  counts, a one-sided Clopper–Pearson lower bound on its probability from the estimation counts,
  abstain below ½, else radius σ·Φ⁻¹(p_A lower) (clamped finite by :func:`geo_rs.certified_radius`).
* :func:`predict_from_counts` — PREDICT: two-sided binomial test (``scipy.stats.binomtest``) of the
  top-2 counts against ½; abstain when the p-value exceeds α.
* :func:`stream_seeds` — the seeds of the independent noise streams (one per input and phase).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .checks import count, in_open_unit, positive_finite
from .errors import UserError
from .radius import certified_radius

__all__ = [
    "ABSTAIN",
    "Certificate",
    "Prediction",
    "certify_from_counts",
    "predict_from_counts",
    "stream_seeds",
]

ABSTAIN = -1
"""Prediction value of an input on which the smoothed classifier abstains (its radius is 0)."""

SeedLike = int | torch.Generator | None


@dataclass(frozen=True, eq=False)
class Certificate:
    """Result of :meth:`Smooth.certify` for a batch of B inputs (host tensors).

    Attributes:
        prediction: (B,) int64, the certified class or ``ABSTAIN`` (-1).
        radius: (B,) float64, certified L2 radius in input units, 0 where abstaining.
        pa_lower: (B,) float64, one-sided (1 − α) Clopper–Pearson lower bound on p_A.
        count: (B,) int64, how many of the n estimation samples voted for the selected class.

    Unpacks as ``prediction, radius = smooth.certify(...)`` (like Cohen et al.'s code).
    """

    prediction: torch.Tensor
    radius: torch.Tensor
    pa_lower: torch.Tensor
    count: torch.Tensor

    def __iter__(self):
        return iter((self.prediction, self.radius))


@dataclass(frozen=True, eq=False)
class Prediction:
    """Result of :meth:`Smooth.predict` for a batch of B inputs (host tensors).

    Attributes:
        prediction: (B,) int64, the predicted class or ``ABSTAIN`` (-1).
        p_value: (B,) float64, two-sided binomial-test p-value of the top-2 counts against ½.

    Unpacks as ``prediction, p_value = smooth.predict(...)``.
    """

    prediction: torch.Tensor
    p_value: torch.Tensor

    def __iter__(self):
        return iter((self.prediction, self.p_value))


# Thin aliases of the shared checks (geo_rs.checks), kept for the callers in geo_rs.smoothing.
def check_count(name: str, value: object, minimum: int = 1) -> int:
    """``value`` as an int ≥ ``minimum`` (:func:`geo_rs.checks.count`)."""
    return count(name, value, minimum)


def check_alpha(alpha: object) -> float:
    """``alpha`` as a float strictly inside (0, 1) (:func:`geo_rs.checks.in_open_unit`)."""
    return in_open_unit("alpha", alpha)


def check_sigma(sigma: object) -> float:
    """``sigma`` as a finite float > 0 (:func:`geo_rs.checks.positive_finite`)."""
    return positive_finite("sigma", sigma)


def stream_seeds(generator: SeedLike, num_streams: int) -> list[int]:
    """Seeds of ``num_streams`` independent noise streams, drawn from ``generator``.

    Args:
        generator: an int seed, a ``torch.Generator`` (advanced by this call; seeds are drawn on its
            device) or None for torch's global RNG (so ``torch.manual_seed`` makes runs repeatable).
        num_streams: how many seeds.

    Returns:
        A list of ``num_streams`` non-negative ints < 2⁶², usable with ``Generator.manual_seed``.
    """
    if generator is None:
        seeds = torch.randint(0, 2**62, (num_streams,), dtype=torch.int64)
    elif isinstance(generator, torch.Generator):
        seeds = torch.randint(0, 2**62, (num_streams,), generator=generator, device=generator.device)
    elif isinstance(generator, int | np.integer) and not isinstance(generator, bool):
        seed = int(generator)
        if not -(2**63) <= seed < 2**64:
            raise UserError(f"seed must fit in 64 bits, got {seed}")
        base = torch.Generator().manual_seed(seed)
        seeds = torch.randint(0, 2**62, (num_streams,), generator=base)
    else:
        kind = type(generator).__name__
        raise UserError(f"generator must be an int seed, a torch.Generator or None, got {kind}")
    return [int(s) for s in seeds.tolist()]


def _top_class(counts: np.ndarray) -> np.ndarray:
    # np.argmax returns the first maximum: ties go to the smallest class index (deterministic).
    return counts.argmax(axis=-1)


def certify_from_counts(
    selection_counts: np.ndarray, estimation_counts: np.ndarray, n: int, alpha: float, sigma: float
) -> Certificate:
    """Cohen et al.'s CERTIFY decision from class counts.

    Args:
        selection_counts: (B, C) int counts of the n0 selection samples (only their argmax is used).
        estimation_counts: (B, C) int counts of the n independent estimation samples.
        n: number of estimation samples per input (each row of ``estimation_counts`` sums to n).
        alpha: failure probability; the lower bound is the two-sided level-2α Clopper–Pearson
            interval's lower end, i.e. a one-sided (1 − α) bound.
        sigma: noise standard deviation.

    Returns:
        :class:`Certificate` (host tensors, shape (B,)).
    """
    selection_counts = np.asarray(selection_counts)
    estimation_counts = np.asarray(estimation_counts)
    top = _top_class(selection_counts)
    count_a = np.take_along_axis(estimation_counts, top[:, None], axis=1)[:, 0]
    if count_a.size:
        # Imported here: statsmodels + scipy.stats cost ~1.5 s, too much for `import geo_rs`.
        from statsmodels.stats.proportion import proportion_confint

        lower, _ = proportion_confint(count_a, n, alpha=2 * alpha, method="beta")
        pa_lower = np.asarray(lower, dtype=np.float64)
        # statsmodels returns NaN for the lower end at count 0; the bound there is exactly 0.
        pa_lower = np.where(count_a == 0, 0.0, pa_lower)
    else:
        pa_lower = np.zeros(0, dtype=np.float64)
    certified = pa_lower >= 0.5  # Cohen et al.: abstain iff pA_lower < 1/2
    prediction = np.where(certified, top, ABSTAIN).astype(np.int64)
    radius = certified_radius(torch.from_numpy(pa_lower), sigma)
    radius = torch.where(torch.from_numpy(certified), radius, torch.zeros_like(radius))
    return Certificate(
        prediction=torch.from_numpy(prediction),
        radius=radius,
        pa_lower=torch.from_numpy(pa_lower),
        count=torch.from_numpy(count_a.astype(np.int64)),
    )


def predict_from_counts(counts: np.ndarray, alpha: float) -> Prediction:
    """Cohen et al.'s PREDICT decision from class counts.

    Args:
        counts: (B, C) int counts of n noisy samples per input, C ≥ 2.
        alpha: test level: the top class is returned only if the two-sided binomial test of the
            top-2 counts against ½ has p-value ≤ α, else ``ABSTAIN``.

    Returns:
        :class:`Prediction` (host tensors, shape (B,)).
    """
    from scipy.stats import binomtest  # lazy, as above

    counts = np.asarray(counts)
    top1 = _top_class(counts)
    rest = counts.copy()
    np.put_along_axis(rest, top1[:, None], -1, axis=1)
    top2 = _top_class(rest)
    prediction = np.empty(len(counts), dtype=np.int64)
    p_value = np.empty(len(counts), dtype=np.float64)
    for i in range(len(counts)):
        c1, c2 = int(counts[i, top1[i]]), int(counts[i, top2[i]])
        p_value[i] = binomtest(c1, c1 + c2, p=0.5).pvalue
        prediction[i] = ABSTAIN if p_value[i] > alpha else top1[i]
    return Prediction(prediction=torch.from_numpy(prediction), p_value=torch.from_numpy(p_value))
