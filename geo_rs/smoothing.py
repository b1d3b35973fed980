"""Randomized smoothing (Cohen, Rosenfeld & Kolter 2019): certified L2 robustness for any classifier.

The smoothed classifier g(x) = argmax_c P(f(x + ε) = c), ε ~ N(0, σ²I), is robust within the L2 radius
σ·Φ⁻¹(p_A) around x. :class:`Smooth` estimates it by Monte Carlo with guarantees that hold with
probability ≥ 1 − α per input:

* ``certify`` (CERTIFY): n0 selection samples pick the top class c_A; n fresh samples count it; the
  one-sided Clopper–Pearson bound p_A ≥ pA_lower gives radius σ·Φ⁻¹(pA_lower), or ``ABSTAIN`` (-1,
  radius 0) when pA_lower < ½. With every sample agreeing, pA_lower = α^(1/n): at α = 0.001 the largest
  radius is 1.50σ (n = 100), 2.46σ (n = 1,000), 3.81σ (n = 100,000), and n ≤ 9 can never certify.
* ``predict`` (PREDICT): the top class if a two-sided binomial test of the top-2 counts rejects a tie
  at level α, else ``ABSTAIN``.

Defaults used in the literature (Cohen et al., and most follow-ups): n0 = 100, n = 100,000,
α = 0.001, batch size 400 (CIFAR-10), σ ∈ {0.12, 0.25, 0.5, 1.0} on inputs scaled to [0, 1]; the base
classifier is trained with Gaussian noise of the same σ (a plain classifier mostly abstains).

Example:
    >>> import torch
    >>> from geo_rs import Smooth
    >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 10)).eval()
    >>> smooth = Smooth(model, num_classes=10, sigma=0.25)
    >>> x = torch.rand(4, 3, 8, 8)
    >>> cert = smooth.certify(x, n0=100, n=1000, alpha=0.001, batch_size=500, generator=0, progress=False)
    >>> cert.prediction.shape, cert.radius.shape
    (torch.Size([4]), torch.Size([4]))
    >>> prediction, radius = cert   # also unpacks like the reference code

Performance: noise is drawn on the model's device (CPU or CUDA, whichever holds its parameters, in
their dtype) into
one reused buffer and forwarded in chunks of ``batch_size`` that may mix inputs and phases; votes are
counted on the device and copied to the host once, so a GPU run has no synchronisation per chunk.

Noise streams and reproducibility (details in :mod:`geo_rs.smoothing_sampler`): every input has two
independent noise streams (selection and estimation; PREDICT uses one), each a ``torch.Generator`` on
the model's device whose seed is drawn from ``generator`` — an int seed, a ``torch.Generator`` (used on
its own device and advanced by the call), or None for torch's global RNG (so ``torch.manual_seed``
makes runs repeatable). A stream is drawn in blocks of ``min(batch_size, remaining)`` samples, in
order, exactly as the one-input-at-a-time loop of the reference code (:meth:`Smooth.certify_naive`)
draws it, so both see bitwise the same noisy inputs and return the same result (tested). Results
depend on the seed, ``batch_size``, the device type (CPU and CUDA generators differ) and the
position of an input in the batch; the same call repeated gives the same answer. The base classifier
may see a sample in a differently sized forward batch in the two implementations; a kernel whose
last-bit rounding depends on the batch size could flip a vote lying on a decision boundary to float
precision.

Caveat (Voráček & Hein 2023, "Sound randomized smoothing in floating-point arithmetic"): the
guarantee assumes exact Gaussian noise and exact arithmetic. Floating-point sampling (and a base
classifier that exploits rounding) can make a certificate false in contrived cases; treat radii as
sound up to floating-point effects, and prefer float32/float64 inputs over half precision.
"""
from __future__ import annotations

import warnings

import torch
from torch import nn

from .errors import UserError
from .smoothing_sampler import sample_counts, sample_counts_naive
from .smoothing_stats import (
    ABSTAIN,
    Certificate,
    Prediction,
    SeedLike,
    certify_from_counts,
    check_alpha,
    check_count,
    check_sigma,
    predict_from_counts,
)

__all__ = ["ABSTAIN", "Certificate", "Prediction", "Smooth"]


class Smooth:
    """A randomized-smoothing wrapper around a base classifier.

    Args:
        base_classifier: maps a batch (k, ...) to logits (k, num_classes); put it in eval mode.
        num_classes: number of classes C ≥ 2.
        sigma: standard deviation of the Gaussian noise, in input units (> 0).
    """

    def __init__(self, base_classifier: nn.Module, num_classes: int, sigma: float) -> None:
        if not callable(base_classifier):
            kind = type(base_classifier).__name__
            raise UserError(f"base_classifier must be callable (an nn.Module), got {kind}")
        self.base_classifier = base_classifier
        self.num_classes = check_count("num_classes", num_classes, minimum=2)
        self.sigma = check_sigma(sigma)

    def __repr__(self) -> str:
        name = type(self.base_classifier).__name__
        return f"Smooth({name}, num_classes={self.num_classes}, sigma={self.sigma})"

    # ------------------------------------------------------------------ public API
    def certify(
        self,
        x: torch.Tensor,
        n0: int,
        n: int,
        alpha: float,
        batch_size: int,
        generator: SeedLike = None,
        progress: bool | None = None,
    ) -> Certificate:
        """Certify every input of the batch ``x`` (B, ...) (Cohen et al.'s CERTIFY).

        Args:
            x: (B, ...) float inputs; cast to the device and dtype of the base classifier's parameters.
            n0: selection samples per input (literature: 100).
            n: estimation samples per input (literature: 100,000).
            alpha: failure probability per input (literature: 0.001).
            batch_size: forward-batch size (memory knob; also fixes the noise draw, see module doc).
            generator: int seed, ``torch.Generator`` or None (torch's global RNG).
            progress: tqdm bar; None shows it for runs of ≥ 20 batches when stderr is a terminal.

        Returns:
            :class:`Certificate` with ``prediction`` (B,) int64 (``ABSTAIN`` = -1) and ``radius`` (B,)
            float64 (0 where abstaining), plus ``pa_lower`` and ``count``; host tensors.
        """
        n0, n = check_count("n0", n0), check_count("n", n)
        alpha, batch_size = check_alpha(alpha), check_count("batch_size", batch_size)
        x = self._check_input(x)
        counts = sample_counts(
            self.base_classifier, x, [n0, n], self.sigma, self.num_classes, batch_size, generator, progress,
            desc="certify",
        )
        return certify_from_counts(counts[:, 0], counts[:, 1], n, alpha, self.sigma)

    def predict(
        self,
        x: torch.Tensor,
        n: int,
        alpha: float,
        batch_size: int,
        generator: SeedLike = None,
        progress: bool | None = None,
    ) -> Prediction:
        """Predict every input of the batch ``x`` (B, ...) (Cohen et al.'s PREDICT).

        Args:
            x: (B, ...) inputs.
            n: noisy samples per input.
            alpha: level of the two-sided binomial test; abstain when p-value > alpha.
            batch_size, generator, progress: as in :meth:`certify`.

        Returns:
            :class:`Prediction` with ``prediction`` (B,) int64 (``ABSTAIN`` = -1) and ``p_value`` (B,).
        """
        n, alpha, batch_size = check_count("n", n), check_alpha(alpha), check_count("batch_size", batch_size)
        x = self._check_input(x)
        counts = sample_counts(
            self.base_classifier, x, [n], self.sigma, self.num_classes, batch_size, generator, progress,
            desc="predict",
        )
        return predict_from_counts(counts[:, 0], alpha)

    def certify_naive(
        self, x: torch.Tensor, n0: int, n: int, alpha: float, batch_size: int, generator: SeedLike = None
    ) -> Certificate:
        """Reference CERTIFY: one input at a time, the obvious loop of Cohen et al.'s code.

        Same noise streams as :meth:`certify`, hence the same result; slow (a host sync per batch).
        """
        n0, n = check_count("n0", n0), check_count("n", n)
        alpha, batch_size = check_alpha(alpha), check_count("batch_size", batch_size)
        x = self._check_input(x)
        counts = sample_counts_naive(
            self.base_classifier, x, [n0, n], self.sigma, self.num_classes, batch_size, generator
        )
        return certify_from_counts(counts[:, 0], counts[:, 1], n, alpha, self.sigma)

    def predict_naive(
        self, x: torch.Tensor, n: int, alpha: float, batch_size: int, generator: SeedLike = None
    ) -> Prediction:
        """Reference PREDICT: one input at a time (same noise streams as :meth:`predict`)."""
        n, alpha, batch_size = check_count("n", n), check_alpha(alpha), check_count("batch_size", batch_size)
        x = self._check_input(x)
        counts = sample_counts_naive(
            self.base_classifier, x, [n], self.sigma, self.num_classes, batch_size, generator
        )
        return predict_from_counts(counts[:, 0], alpha)

    # ------------------------------------------------------------------ internals
    def _check_input(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise UserError(f"x must be a torch.Tensor batch (B, ...), got {type(x).__name__}")
        if x.ndim < 2:
            raise UserError(
                f"x must be a batch of shape (B, ...) with at least 2 dims, got shape {tuple(x.shape)}; "
                "for a single input use x.unsqueeze(0)"
            )
        if not x.is_floating_point():
            raise UserError(f"x must be a floating-point tensor, got dtype {x.dtype}")
        if x.numel() and not bool(torch.isfinite(x).all()):
            raise UserError("x contains NaN or infinite values")
        model = self.base_classifier
        if isinstance(model, nn.Module) and any(m.training for m in model.modules()):
            warnings.warn(
                "base_classifier is in training mode (dropout / batch-norm make votes depend on the batch); "
                "call .eval() before certifying",
                stacklevel=3,
            )
        return x
