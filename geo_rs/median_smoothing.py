"""Median (percentile) smoothing of regression outputs (Chiang et al. 2020): certified output intervals.

For a model f: (B, ...) → (B, m) (keypoint coordinates, box corners, any regression output) and noise
δ ~ N(0, σ²I), the smoothed median of coordinate j at x is the median of f_j(x + δ). For every x' with
‖x' − x‖₂ ≤ ε, every median of f_j(x' + δ) lies between the Φ(−ε/σ) and Φ(ε/σ) quantiles of f_j(x + δ)
(for each level y, x ↦ Φ⁻¹(P[f_j(x + δ) ≤ y]) is 1/σ-Lipschitz, Salman et al. 2019). :class:`MedianSmooth`
estimates those quantiles from n samples by order statistics (:mod:`geo_rs.median_stats`):

* ``certify(x, eps, n, alpha)`` → :class:`MedianCertificate`: ``lower = Y_(k)``, ``upper = Y_(n+1−k)`` per
  coordinate, k the largest index with P[Bin(n, Φ(−ε/σ)) ≤ k − 1] ≤ α/2. With probability ≥ 1 − α over
  the noise, **every** median of f_j(x' + δ) for **every** x' in the ε-ball lies in ``[lower_j, upper_j]``.
  Statements are **per output coordinate**: α is spent on each coordinate separately. ``joint=True``
  splits α over the m coordinates (union bound: α/(2m) a side), so that all m intervals of an input hold
  together with probability ≥ 1 − α.
* ``predict(x, n, alpha)`` → :class:`MedianPrediction`: the sample median and the same interval at ε = 0,
  a (1 − α) confidence interval of the smoothed median at x.

Abstention: a coordinate whose bound needs an order statistic outside 1…n gets ``lower = -inf`` /
``upper = +inf`` (``certified`` is False there), never a made-up finite number. This happens for every
coordinate once ε > ``max_certifiable_eps(n, alpha, sigma)`` = σ·Φ⁻¹((α/2)^(1/n)) (e.g. 2.43σ at n = 1,000,
α = 0.001); increase n to certify larger balls. The point estimate ``median`` is never withheld: a median
always exists.

Example:
    >>> import torch
    >>> from geo_rs import MedianSmooth
    >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 4)).eval()
    >>> smooth = MedianSmooth(model, sigma=0.25)
    >>> x = torch.rand(5, 3, 8, 8)
    >>> cert = smooth.certify(x, eps=0.1, n=1000, alpha=0.001, generator=0, progress=False)
    >>> cert.lower.shape, cert.upper.shape, bool((cert.lower <= cert.upper).all())
    (torch.Size([5, 4]), torch.Size([5, 4]), True)

Noise streams, batching and reproducibility are those of :class:`geo_rs.Smooth` (one stream per input,
blocks of ``min(batch_size, remaining)`` samples; :meth:`MedianSmooth.certify_naive` draws the same streams
one input at a time and returns bitwise the same result). Pass ``input_ids`` (e.g. dataset indices) with
an int seed to make each input's noise independent of its position in the batch, so a dataset gives the
same certificates whatever its partition into calls. All samples of a call are kept on the model's device
((B, n, m) values; the call refuses sizes beyond 80 % of this machine's memory): split large datasets.

Caveat (as for :class:`geo_rs.Smooth`): the guarantee assumes exact Gaussian sampling; floating-point
sampling can make it fail in contrived cases (Voráček & Hein 2023).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from . import checks
from .errors import UserError
from .median_stats import (
    certified_quantile_levels,
    max_certifiable_eps,
    order_statistic_index,
    order_statistic_index_naive,
    side_level,
)
from .smoothing_regression_sampler import regression_stream_seeds, sample_outputs, sample_outputs_naive
from .smoothing_stats import SeedLike, check_alpha, check_count, check_sigma

__all__ = ["MedianCertificate", "MedianPrediction", "MedianSmooth", "max_certifiable_eps"]


@dataclass(frozen=True, eq=False)
class MedianCertificate:
    """Result of :meth:`MedianSmooth.certify` for B inputs and m outputs (host float64 tensors).

    Attributes:
        lower, upper: (B, m) certified bounds on every median of f_j(x' + δ), for all ‖x' − x‖₂ ≤ eps;
            ``-inf`` / ``+inf`` where no order statistic is a valid bound.
        median: (B, m) sample median at x (order statistic ⌊(n+1)/2⌋; an estimate, not certified).
        eps, sigma, n, alpha: the call's settings; ``joint``: whether α was split over the m outputs.
        index_lower, index_upper: 1-based order statistics used (0 and n + 1 mean "none": ±inf).
        quantile: p₋ = Φ(−ε/σ); ``lower`` bounds the p₋ quantile at x, ``upper`` the 1 − p₋ quantile.
    """

    lower: torch.Tensor
    upper: torch.Tensor
    median: torch.Tensor
    eps: float
    sigma: float
    n: int
    alpha: float
    joint: bool
    index_lower: int
    index_upper: int
    quantile: float

    @property
    def certified(self) -> torch.Tensor:
        """(B, m) bool: both bounds finite."""
        return torch.isfinite(self.lower) & torch.isfinite(self.upper)

    @property
    def width(self) -> torch.Tensor:
        """(B, m) ``upper − lower`` (inf where not certified)."""
        return self.upper - self.lower


@dataclass(frozen=True, eq=False)
class MedianPrediction:
    """Result of :meth:`MedianSmooth.predict` (host float64 tensors, shape (B, m)).

    Attributes:
        median: sample median (order statistic ⌊(n+1)/2⌋).
        lower, upper: (1 − α) confidence interval of the smoothed median at x (±inf if n is too small).
        n, alpha, joint, index_lower, index_upper: as in :class:`MedianCertificate`.
    """

    median: torch.Tensor
    lower: torch.Tensor
    upper: torch.Tensor
    n: int
    alpha: float
    joint: bool
    index_lower: int
    index_upper: int


# ---------------------------------------------------------------------------------- statistics
def median_index(n: int) -> int:
    """1-based index of the sample median used as point estimate (the lower middle for even n)."""
    return (n + 1) // 2


def _bounds_from_sorted(sorted_samples: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(Y_(k), Y_(n+1−k))`` per input and coordinate, ±inf when k = 0; host float64 (B, m)."""
    num_inputs, n, m = sorted_samples.shape
    if k == 0:
        inf = torch.full((num_inputs, m), math.inf, dtype=torch.float64)
        return -inf, inf.clone()
    both = sorted_samples[:, [k - 1, n - k], :].to("cpu", torch.float64)  # one gather, one copy
    return both[:, 0], both[:, 1]


def certify_from_samples(
    samples: torch.Tensor, eps: float, sigma: float, alpha: float, joint: bool = False, naive: bool = False
) -> MedianCertificate:
    """The certificate from the outputs (B, n, m) of ``f(x_i + δ_ij)`` (any order).

    ``naive`` uses :func:`order_statistic_index_naive` and a per-coordinate numpy sort (reference).
    Several ε may be certified from the same samples; each certificate holds with prob ≥ 1 − α on its own.
    """
    num_inputs, n, m = samples.shape
    p_low = certified_quantile_levels(eps, sigma)
    level = side_level(alpha, max(m, 1), joint)
    if naive:
        k = order_statistic_index_naive(n, p_low, level)
        lower, upper, median = _naive_order_statistics(samples, k)
    else:
        k = order_statistic_index(n, p_low, level)
        ordered = torch.sort(samples, dim=1).values
        lower, upper = _bounds_from_sorted(ordered, k)
        median = ordered[:, median_index(n) - 1, :].to("cpu", torch.float64)
    return MedianCertificate(
        lower=lower,
        upper=upper,
        median=median,
        eps=float(eps),
        sigma=float(sigma),
        n=n,
        alpha=float(alpha),
        joint=bool(joint),
        index_lower=k,
        index_upper=n + 1 - k if k else n + 1,
        quantile=p_low,
    )


def _naive_order_statistics(samples: torch.Tensor, k: int) -> tuple[torch.Tensor, ...]:
    num_inputs, n, m = samples.shape
    lower = np.full((num_inputs, m), -math.inf)
    upper = np.full((num_inputs, m), math.inf)
    median = np.zeros((num_inputs, m))
    values = samples.cpu().numpy()
    for i in range(num_inputs):
        for j in range(m):
            column = sorted(values[i, :, j].tolist())
            median[i, j] = column[median_index(n) - 1]
            if k:
                lower[i, j], upper[i, j] = column[k - 1], column[n - k]
    return torch.from_numpy(lower), torch.from_numpy(upper), torch.from_numpy(median)


def predict_from_samples(
    samples: torch.Tensor, alpha: float, joint: bool = False, naive: bool = False
) -> MedianPrediction:
    """Median and (1 − α) confidence interval at x from the outputs (B, n, m) (ε = 0 certificate)."""
    cert = certify_from_samples(samples, 0.0, 1.0, alpha, joint, naive)
    return MedianPrediction(
        median=cert.median,
        lower=cert.lower,
        upper=cert.upper,
        n=cert.n,
        alpha=cert.alpha,
        joint=cert.joint,
        index_lower=cert.index_lower,
        index_upper=cert.index_upper,
    )


# ---------------------------------------------------------------------------------- the wrapper
class MedianSmooth:
    """Median smoothing of a regression model.

    Args:
        model: maps a batch (k, ...) to outputs (k, m); put it in eval mode. Its device (from its first
            floating parameter, else the input's) is where noise is drawn and outputs are kept.
        sigma: standard deviation of the Gaussian noise, in input units (> 0).
    """

    def __init__(self, model: Callable[[torch.Tensor], torch.Tensor], sigma: float) -> None:
        if not callable(model):
            raise UserError(f"model must be callable (an nn.Module), got {type(model).__name__}")
        self.model = model
        self.sigma = check_sigma(sigma)

    def __repr__(self) -> str:
        return f"MedianSmooth({type(self.model).__name__}, sigma={self.sigma})"

    def sample(
        self,
        x: torch.Tensor,
        n: int,
        batch_size: int = 1000,
        generator: SeedLike = None,
        progress: bool | None = None,
        input_ids: Sequence[int] | None = None,
        naive: bool = False,
    ) -> torch.Tensor:
        """The model's outputs (B, n, m) on n noisy copies of every input (on the model's device).

        Feed them to :func:`certify_from_samples` to certify several ε from one set of samples.
        ``naive`` uses the one-input-at-a-time reference sampler (same values).
        """
        n, batch_size = check_count("n", n), check_count("batch_size", batch_size)
        x = self._check_input(x)
        seeds = regression_stream_seeds(generator, len(x), input_ids)
        if naive:
            samples = sample_outputs_naive(self.model, x, n, self.sigma, batch_size, seeds)
        else:
            samples = sample_outputs(
                self.model, x, n, self.sigma, batch_size, seeds, progress, "median smoothing"
            )
        if samples.numel() and bool(torch.isnan(samples).any()):  # one sync per call
            raise UserError("model returned NaN on some noisy inputs: order statistics would be meaningless")
        return samples

    def certify(
        self,
        x: torch.Tensor,
        eps: float,
        n: int,
        alpha: float,
        batch_size: int = 1000,
        generator: SeedLike = None,
        progress: bool | None = None,
        joint: bool = False,
        input_ids: Sequence[int] | None = None,
    ) -> MedianCertificate:
        """Certified bounds (B, m) on the smoothed median at every x' with ‖x' − x‖₂ ≤ ``eps``.

        Args:
            x: (B, ...) float inputs.
            eps: L2 radius in input units (≥ 0).
            n: noisy samples per input (all used for the bounds; no selection phase is needed).
            alpha: failure probability per output coordinate (per input with ``joint``).
            batch_size: forward-batch size (also fixes the noise draw, as in :class:`geo_rs.Smooth`).
            generator: int seed, ``torch.Generator`` or None (torch's global RNG).
            progress: tqdm bar; None shows it for runs of ≥ 20 batches when stderr is a terminal.
            joint: split α over the m coordinates (union bound) for a joint statement per input.
            input_ids: (B,) ids making each input's noise independent of the batch it is in.
        """
        eps = checks.non_negative_finite("eps", eps, "input units")
        alpha = check_alpha(alpha)
        samples = self.sample(x, n, batch_size, generator, progress, input_ids)
        return certify_from_samples(samples, eps, self.sigma, alpha, joint)

    def predict(
        self,
        x: torch.Tensor,
        n: int,
        alpha: float,
        batch_size: int = 1000,
        generator: SeedLike = None,
        progress: bool | None = None,
        joint: bool = False,
        input_ids: Sequence[int] | None = None,
    ) -> MedianPrediction:
        """Smoothed median (B, m) at x with its (1 − α) confidence interval (arguments: :meth:`certify`)."""
        alpha = check_alpha(alpha)
        samples = self.sample(x, n, batch_size, generator, progress, input_ids)
        return predict_from_samples(samples, alpha, joint)

    def certify_naive(
        self,
        x: torch.Tensor,
        eps: float,
        n: int,
        alpha: float,
        batch_size: int = 1000,
        generator: SeedLike = None,
        joint: bool = False,
        input_ids: Sequence[int] | None = None,
    ) -> MedianCertificate:
        """Reference :meth:`certify`: one input at a time, exact rational binomial sums, Python sorts."""
        eps = checks.non_negative_finite("eps", eps, "input units")
        alpha = check_alpha(alpha)
        samples = self.sample(x, n, batch_size, generator, input_ids=input_ids, naive=True)
        return certify_from_samples(samples, eps, self.sigma, alpha, joint, naive=True)

    def predict_naive(
        self,
        x: torch.Tensor,
        n: int,
        alpha: float,
        batch_size: int = 1000,
        generator: SeedLike = None,
        joint: bool = False,
        input_ids: Sequence[int] | None = None,
    ) -> MedianPrediction:
        """Reference :meth:`predict` (same streams, same result)."""
        alpha = check_alpha(alpha)
        samples = self.sample(x, n, batch_size, generator, input_ids=input_ids, naive=True)
        return predict_from_samples(samples, alpha, joint, naive=True)

    def _check_input(self, x: torch.Tensor) -> torch.Tensor:
        x = checks.float_batch("x", x)
        if isinstance(self.model, nn.Module) and any(m.training for m in self.model.modules()):
            warnings.warn(
                "model is in training mode (dropout / batch-norm make outputs depend on the batch); "
                "call .eval() before certifying",
                stacklevel=3,
            )
        return x
