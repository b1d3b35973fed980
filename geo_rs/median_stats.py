"""Order-statistic indices behind :class:`geo_rs.MedianSmooth` (percentile smoothing, Chiang et al. 2020).

For n i.i.d. samples with distribution function F and the level-p lower quantile q_p = inf{y : F(y) ≥ p},
the k-th order statistic Y_(k) exceeds q_p only if fewer than k samples are ≤ q_p, an event of
probability P[Bin(n, F(q_p)) ≤ k − 1] ≤ P[Bin(n, p) ≤ k − 1] (F(q_p) ≥ p by right-continuity). So
Y_(k) ≤ q_p with probability ≥ 1 − a for the **largest** k with P[Bin(n, p) ≤ k − 1] ≤ a; if even k = 1
fails ((1 − p)ⁿ > a) no order statistic is a bound and the answer is −∞. By symmetry Y_(n+1−k) bounds
the upper quantile from above with the same k (or +∞).

* :func:`order_statistic_index` — that k (0 when none), from ``scipy.stats.binom``, with the level
  shrunk by a relative 10⁻⁹ so that the last-bit error of the binomial CDF can only make it smaller.
* :func:`order_statistic_index_naive` — the same rule by summing the binomial probabilities exactly in
  rational arithmetic (``fractions``), term by term: the slow obvious reference.
* :func:`certified_quantile_levels` — p± = Φ(Φ⁻¹(½) ± ε/σ) = Φ(±ε/σ), the quantiles at x that bound
  the median at any x' with ‖x' − x‖₂ ≤ ε.
"""

from __future__ import annotations

import math
from fractions import Fraction

from .errors import UserError

__all__ = [
    "LEVEL_SHRINK",
    "certified_quantile_levels",
    "max_certifiable_eps",
    "order_statistic_index",
    "order_statistic_index_naive",
    "side_level",
]

LEVEL_SHRINK = 1e-9
"""Relative amount by which a side's failure probability is shrunk before choosing k (see module doc)."""


def side_level(alpha: float, num_outputs: int, joint: bool) -> float:
    """Failure probability allowed to one side (lower or upper) of one output coordinate.

    Each coordinate's two-sided statement gets α (α/2 a side); with ``joint`` the m coordinates share α
    by a union bound (α/(2m) a side), so all of an input's m intervals hold together with prob ≥ 1 − α.
    """
    return alpha / (2 * num_outputs if joint else 2)


def certified_quantile_levels(eps: float, sigma: float) -> float:
    """p₋ = Φ(−ε/σ): the median at any x' in the ε-ball lies between the p₋ and 1 − p₋ quantiles at x."""
    from scipy.stats import norm

    return float(norm.cdf(-eps / sigma))


def order_statistic_index(n: int, p: float, level: float) -> int:
    """Largest k in 1..n with P[Bin(n, p) ≤ k − 1] ≤ level·(1 − 10⁻⁹), or 0 if there is none.

    Y_(k) is then a lower confidence bound (at 1 − level) on the lower p-quantile, and Y_(n+1−k) an upper
    one on the upper (1 − p)-quantile. Vectorised search: ``binom.ppf`` proposes, the CDF confirms.
    """
    from scipy.stats import binom

    if p == 0.0:  # Φ(−ε/σ) underflows for ε ≫ σ: the 0-quantile has no finite order-statistic bound
        return 0
    if not 0.0 < p < 1.0:
        raise UserError(f"quantile level p must lie in [0, 1), got {p!r}")
    threshold = level * (1.0 - LEVEL_SHRINK)
    j = int(binom.ppf(threshold, n, p))  # smallest j with cdf(j) >= threshold (approximately)
    j = min(max(j, -1), n)
    while j >= 0 and binom.cdf(j, n, p) > threshold:  # the CDF at j = k − 1 must not exceed the level
        j -= 1
    while j + 1 <= n - 1 and binom.cdf(j + 1, n, p) <= threshold:
        j += 1
    return j + 1


def order_statistic_index_naive(n: int, p: float, level: float) -> int:
    """Reference for :func:`order_statistic_index`: exact rational binomial sums, one term at a time."""
    if p == 0.0:  # Φ(−ε/σ) underflows for ε ≫ σ: the 0-quantile has no finite order-statistic bound
        return 0
    if not 0.0 < p < 1.0:
        raise UserError(f"quantile level p must lie in [0, 1), got {p!r}")
    threshold = Fraction(level * (1.0 - LEVEL_SHRINK))
    prob, q = Fraction(p), 1 - Fraction(p)
    term = q**n  # P[Bin = 0]
    cdf = Fraction(0)
    k = 0
    for j in range(n):  # k = j + 1 is allowed while cdf(j) <= threshold
        cdf += term
        if cdf > threshold:
            break
        k = j + 1
        term = term * (n - j) / (j + 1) * prob / q
    return k


def max_certifiable_eps(
    n: int, alpha: float, sigma: float, num_outputs: int = 1, joint: bool = False
) -> float:
    """Largest ε at which any coordinate can get finite bounds: (1 − p₋)ⁿ ≤ level ⇔ ε ≤ σ·Φ⁻¹(level^(1/n)).

    Beyond it :meth:`geo_rs.MedianSmooth.certify` returns ±∞ whatever the model does.
    """
    from scipy.stats import norm

    level = side_level(alpha, num_outputs, joint) * (1.0 - LEVEL_SHRINK)
    return float(sigma * norm.ppf(math.exp(math.log(level) / n)))
