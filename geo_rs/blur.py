"""Separable 3D Gaussian blur of voxel grids with zero (empty-space) padding.

Conventions (shared by :func:`gaussian_blur3d`, :func:`gaussian_blur3d_naive` and ``weak_sdf``):

* ``sigma`` is the standard deviation of the Gaussian **in voxels**.
* Truncation radius ``r = int(truncate * sigma + 0.5)`` voxels (scipy's rule; ``truncate = 4`` by
  default): taps at integer offsets ``-r..r``, mass beyond it (< 7e-5 at 4σ) is dropped and the taps
  are renormalised to sum to 1, so a fully occupied interior stays exactly 1.
* Kernel taps, one voxel apart (never 1.5: that mismatch is the bug FIELD-NOTES warns about):

  - ``"integrated"`` (default): ``w_k = Φ((k + ½)/σ) − Φ((k − ½)/σ)``, the Gaussian integrated over
    voxel ``k``. Treating each voxel as a box of constant value, the blur at a voxel centre then
    equals the *continuous* convolution of that box-voxelised field with N(0, σ²I) — exactly the
    smoothed function randomized smoothing certifies (up to truncation and rounding). A unit delta
    blurred this way has variance σ² + 1/12 per axis (Gaussian ⊛ unit box).
  - ``"sampled"``: ``w_k ∝ exp(−k²/2σ²)``, the point-sampled Gaussian (scipy.ndimage's kernel); a
    unit delta then has variance σ² per axis (to < 1e-6 relative for σ ≥ 1).

* Zero padding: everything outside the grid is empty space (occupancy 0).

Speed (CPU), grids of ≥ 65,536 voxels (method "matmul"): each 1-D pass is a product with the
banded (n × n) Gaussian matrix, done block by block so only the band is multiplied
(``W[i0:i1, i0-r:i1+r] @ g[i0-r:i1+r]``): BLAS uses every core, zero padding comes for free (the
matrix simply has no columns outside the grid) and no axis is ever transposed. Smaller grids use
shifted-slice accumulation (method "slices"): tiny BLAS calls cost more in thread start-up than
they compute. ``bench/bench_weak_sdf.py`` measures both against scipy, and 1 against 2 threads.

Threads (CPU): on a shared machine a multi-threaded call can be many times slower than a
single-threaded one (a descheduled OpenMP thread stalls the others at every barrier), so each call
runs on 1 thread or on torch's setting, whichever measured faster for its size class lately
(:mod:`geo_rs.blur_threads`). NaN/inf input is refused (:func:`check_finite`), never spread.

The blur is linear and self-adjoint (each banded matrix is symmetric), so its backward pass is the
same blur applied to the incoming gradient; a custom autograd function uses that instead of
recording hundreds of block products.
"""
from __future__ import annotations

import math
import threading

import numpy as np
import torch

from .blur_threads import ThreadPolicy
from .checks import choice, finite_tensor, positive_finite
from .errors import UserError

__all__ = [
    "GaussianBlur3d",
    "blur_radius",
    "clear_workspace",
    "gaussian_blur3d",
    "gaussian_blur3d_naive",
    "gaussian_kernel1d",
    "kernel_variance",
]

KERNELS = ("integrated", "sampled")


def _check_sigma(sigma: float, truncate: float) -> None:
    positive_finite("sigma", sigma, "voxels")
    positive_finite("truncate", truncate, "sigmas")


def blur_radius(sigma: float, truncate: float = 4.0) -> int:
    """Truncation radius in voxels: ``int(truncate * sigma + 0.5)`` (at least 1)."""
    _check_sigma(sigma, truncate)
    return max(1, int(float(truncate) * float(sigma) + 0.5))


def gaussian_kernel1d(sigma: float, truncate: float = 4.0, kernel: str = "integrated") -> np.ndarray:
    """1-D taps at integer offsets ``-r..r`` (float64, sums to 1). See the module doc for ``kernel``.

    Example:
        >>> w = gaussian_kernel1d(1.0); len(w), round(float(w.sum()), 12)
        (9, 1.0)
    """
    choice("kernel", kernel, KERNELS)
    r = blur_radius(sigma, truncate)
    k = np.arange(-r, r + 1, dtype=np.float64)
    s = float(sigma)
    if kernel == "sampled":
        w = np.exp(-0.5 * (k / s) ** 2)
    else:
        from scipy.special import ndtr  # Φ, accurate in the tails

        # Φ(b) - Φ(a) computed on the side where it does not cancel (symmetric taps).
        a, b = (np.abs(k) - 0.5) / s, (np.abs(k) + 0.5) / s
        w = ndtr(-a) - ndtr(-b)
    return w / w.sum()


def kernel_variance(sigma: float, truncate: float = 4.0, kernel: str = "integrated") -> float:
    """Variance (voxels²) of the 1-D kernel actually applied: σ² + 1/12 for "integrated", σ² for
    "sampled" (both up to truncation; for σ < 1 the sampled kernel's variance drifts from σ²)."""
    w = gaussian_kernel1d(sigma, truncate, kernel)
    r = (len(w) - 1) // 2
    k = np.arange(-r, r + 1, dtype=np.float64)
    return float((w * k**2).sum())


def _band_matrix(n: int, taps: np.ndarray, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(n, n) symmetric banded matrix W with W[i, j] = taps[j - i + r] for |i - j| ≤ r."""
    r = (len(taps) - 1) // 2
    i = np.arange(n)
    d = i[None, :] - i[:, None]
    w = np.where(np.abs(d) <= r, taps[np.clip(d + r, 0, 2 * r)], 0.0)
    return torch.as_tensor(w, dtype=dtype, device=device)


def _blocks(n: int, r: int, block: int):
    """Output rows [i0, i1) and the input rows [lo, hi) they depend on."""
    for i0 in range(0, n, block):
        i1 = min(n, i0 + block)
        yield i0, i1, max(0, i0 - r), min(n, i1 + r)


def _block_size(n: int, r: int, axis: int) -> int:
    # A block of B output rows multiplies a (B, B + 2r) slice of the band: small B wastes fewer flops
    # on zeros, large B keeps BLAS efficient. Measured on 256³ float32, σ ∈ {1, 4}, 2-core EPYC: the
    # outer axis (huge GEMM width 65,536) is fastest with small blocks, the contiguous last axis
    # (output columns are the block) needs wider ones.
    base = (16, 32, 64)[axis]
    return min(n, max(base, (1, 2, 4)[axis] * r))


def _blur_axis(src: torch.Tensor, dst: torch.Tensor, w: torch.Tensor, r: int, axis: int) -> None:
    """dst = blur of src along ``axis`` ∈ {0, 1, 2} of a contiguous (X, Y, Z) tensor."""
    X, Y, Z = src.shape
    n = src.shape[axis]
    block = _block_size(n, r, axis)
    if axis == 0:
        s2, d2 = src.view(X, Y * Z), dst.view(X, Y * Z)
        for i0, i1, lo, hi in _blocks(n, r, block):
            torch.matmul(w[i0:i1, lo:hi], s2[lo:hi], out=d2[i0:i1])
    elif axis == 1:
        for i0, i1, lo, hi in _blocks(n, r, block):
            # (i1-i0, hi-lo) @ (X, hi-lo, Z) broadcasts over X: one batched GEMM, no transposes.
            dst[:, i0:i1] = torch.matmul(w[i0:i1, lo:hi], src[:, lo:hi])
    else:
        s2, d2 = src.view(X * Y, Z), dst.view(X * Y, Z)
        for i0, i1, lo, hi in _blocks(n, r, block):
            torch.matmul(s2[:, lo:hi], w[i0:i1, lo:hi].T, out=d2[:, i0:i1])


def _blur_axis_slices(src: torch.Tensor, dst: torch.Tensor, taps: list[float], axis: int) -> None:
    """dst = blur of src along ``axis`` by shifted-slice accumulation (zero padding: slices just end)."""
    r = (len(taps) - 1) // 2
    n = src.shape[axis]
    torch.mul(src, taps[r], out=dst)
    for d in range(1, min(r, n - 1) + 1):
        dst.narrow(axis, d, n - d).add_(src.narrow(axis, 0, n - d), alpha=taps[r + d])
        dst.narrow(axis, 0, n - d).add_(src.narrow(axis, d, n - d), alpha=taps[r - d])


# Below this many voxels per grid the shifted-slice method is used: tiny BLAS calls pay thread
# start-up costs (tens of ms each on a busy 2-core machine), elementwise ops do not.
SMALL_GRID_VOXELS = 1 << 16
METHODS = ("auto", "matmul", "slices")


_WORKSPACE = threading.local()


def _workspace(like: torch.Tensor) -> torch.Tensor:
    """A scratch grid shaped like ``like``, kept (one per thread) between calls.

    A fresh 64 MB buffer costs ~0.1 s of page faults on every call (the CPU allocator hands large
    blocks back to the OS); the blur's intermediate pass reuses this one instead. Only the most
    recent shape/dtype/device is kept; :func:`clear_workspace` frees it.
    """
    buf = getattr(_WORKSPACE, "buf", None)
    if buf is None or buf.shape != like.shape or buf.dtype != like.dtype or buf.device != like.device:
        _WORKSPACE.buf = buf = None  # drop the old one before allocating the new one
        buf = _WORKSPACE.buf = torch.empty_like(like, memory_format=torch.contiguous_format)
    return buf


def clear_workspace() -> None:
    """Free the blur's cached scratch buffer of the calling thread."""
    _WORKSPACE.buf = None


def _blur_kernel(grid: torch.Tensor, sigma: float, truncate: float, kernel: str,
                 method: str = "auto") -> torch.Tensor:
    choice("method", method, METHODS)
    taps = gaussian_kernel1d(sigma, truncate, kernel)
    r = (len(taps) - 1) // 2
    shape = grid.shape
    X, Y, Z = shape[-3:]
    g = grid.detach().reshape(-1, X, Y, Z).contiguous()
    if method == "auto":
        method = "slices" if X * Y * Z < SMALL_GRID_VOXELS else "matmul"
    out = torch.empty_like(g)
    tmp = _workspace(g[0])
    if method == "slices":
        tl = [float(t) for t in taps]
        for b in range(g.shape[0]):
            _blur_axis_slices(g[b], out[b], tl, 0)
            _blur_axis_slices(out[b], tmp, tl, 1)
            _blur_axis_slices(tmp, out[b], tl, 2)
        return out.reshape(shape)
    mats = {n: _band_matrix(n, taps, g.dtype, g.device) for n in {X, Y, Z}}
    for b in range(g.shape[0]):
        # x pass: g -> out, y pass: out -> tmp, z pass: tmp -> out (two buffers, no allocation).
        _blur_axis(g[b], out[b], mats[X], r, 0)
        _blur_axis(out[b], tmp, mats[Y], r, 1)
        _blur_axis(tmp, out[b], mats[Z], r, 2)
    return out.reshape(shape)


# How many CPU threads each call runs on: measured per size class (geo_rs/blur_threads.py explains
# the rule). ``THREAD_POLICY.enabled = False`` runs every call on torch's thread setting as it is.
THREAD_POLICY = ThreadPolicy()


def _blur_nograd(grid: torch.Tensor, sigma: float, truncate: float, kernel: str,
                 method: str = "auto") -> torch.Tensor:
    if grid.device.type != "cpu":
        return _blur_kernel(grid, sigma, truncate, kernel, method)
    with THREAD_POLICY.threads(grid.numel()):
        return _blur_kernel(grid, sigma, truncate, kernel, method)


class _BlurFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, grid, sigma, truncate, kernel, method):  # noqa: D102
        ctx.params = (sigma, truncate, kernel, method)
        return _blur_nograd(grid, sigma, truncate, kernel, method)

    @staticmethod
    def backward(ctx, grad_out):  # noqa: D102
        # Self-adjoint: the gradient of a symmetric linear map is the same map (apply() keeps it
        # differentiable, so double backward works too).
        return _BlurFn.apply(grad_out, *ctx.params), None, None, None, None


def _prepare(grid: torch.Tensor) -> torch.Tensor:
    if not torch.is_tensor(grid):
        raise UserError(f"grid must be a torch.Tensor, got {type(grid).__name__}")
    if grid.ndim < 3:
        raise UserError(f"grid must have shape (..., X, Y, Z); got shape {tuple(grid.shape)}")
    if not grid.is_floating_point():
        grid = grid.to(torch.get_default_dtype())
    return grid


def check_finite(grid: torch.Tensor, name: str = "grid") -> None:
    """Refuse NaN/inf: a blur spreads one NaN to every voxel within its radius ((2r+1)³ of them),
    silently. One reduction decides (any NaN/inf makes the sum non-finite); only then is the grid
    searched for the count and the first position (:func:`geo_rs.checks.finite_tensor`). A finite
    sum that overflows to inf is a false alarm the search clears."""
    g = grid.detach()
    if g.device.type == "cpu" and g.dtype in (torch.float32, torch.float64):
        # numpy's single-threaded pairwise sum: on a busy machine torch's multi-threaded reduction
        # was 30× slower (a descheduled thread stalls it)
        with np.errstate(over="ignore"):  # an overflow to inf is a false alarm the search clears
            total = float(np.add.reduce(g.numpy(), axis=None))
    else:
        total = float(g.sum())
    if not math.isfinite(total):
        finite_tensor(name, grid)


def gaussian_blur3d(grid: torch.Tensor, sigma: float, truncate: float = 4.0,
                    kernel: str = "integrated", method: str = "auto") -> torch.Tensor:
    """Blur the last three axes of ``grid`` with an isotropic Gaussian of std ``sigma`` voxels.

    Args:
        grid: (..., X, Y, Z) tensor on any device; leading dims are independent grids. Non-float
            input (bool occupancy) is converted to the default float dtype.
        sigma: Gaussian std in voxels (> 0).
        truncate: radius in sigmas; ``r = int(truncate*sigma + 0.5)`` voxels.
        kernel: "integrated" (default, exact for box voxels) or "sampled" (scipy's); module doc.
        method: "matmul" (block-banded BLAS products), "slices" (shifted-slice accumulation) or
            "auto": slices below 65,536 voxels per grid, matmul above. Results agree to rounding.

    Returns:
        Tensor of the same shape, dtype and device; zero padding outside the grid; differentiable.

    Raises:
        UserError: NaN/inf in ``grid`` (with their count and the first position: one NaN would
            silently spread to (2r+1)³ voxels), σ or truncate not finite and > 0, unknown kernel/method.

    On CPU each call runs on 1 thread or on torch's thread count, whichever was faster for grids of
    this size recently (:mod:`geo_rs.blur_threads`; ``THREAD_POLICY.enabled = False`` turns it off).
    The result does not depend on the thread count.

    Example:
        >>> g = torch.zeros(9, 9, 9); g[4, 4, 4] = 1
        >>> round(float(gaussian_blur3d(g, 1.0).sum()), 5)
        1.0
    """
    grid = _prepare(grid)
    _check_sigma(sigma, truncate)
    choice("kernel", kernel, KERNELS)
    choice("method", method, METHODS)
    if grid.numel() == 0:
        return grid.clone()
    check_finite(grid)
    return _BlurFn.apply(grid, float(sigma), float(truncate), kernel, method)


def gaussian_blur3d_naive(grid: torch.Tensor, sigma: float, truncate: float = 4.0,
                          kernel: str = "integrated") -> torch.Tensor:
    """Slow obvious reference: scipy.ndimage.convolve with the full (2r+1)³ outer-product kernel
    and zero padding, in float64 on the CPU. Same contract as :func:`gaussian_blur3d` (no grad)."""
    from scipy import ndimage

    grid = _prepare(grid)
    _check_sigma(sigma, truncate)
    if grid.numel():
        check_finite(grid)
    w = gaussian_kernel1d(sigma, truncate, kernel)
    k3 = w[:, None, None] * w[None, :, None] * w[None, None, :]
    arr = grid.detach().cpu().double().numpy()
    flat = arr.reshape(-1, *arr.shape[-3:])
    out = np.stack([ndimage.convolve(v, k3, mode="constant", cval=0.0) for v in flat])
    return torch.from_numpy(out.reshape(arr.shape)).to(dtype=grid.dtype, device=grid.device)


class GaussianBlur3d(torch.nn.Module):
    """``nn.Module`` wrapper of :func:`gaussian_blur3d` (no parameters)."""

    def __init__(self, sigma: float, truncate: float = 4.0, kernel: str = "integrated",
                 method: str = "auto") -> None:
        super().__init__()
        _check_sigma(sigma, truncate)
        self.sigma, self.truncate, self.kernel, self.method = float(sigma), float(truncate), kernel, method

    def forward(self, grid: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return gaussian_blur3d(grid, self.sigma, self.truncate, self.kernel, self.method)

    def extra_repr(self) -> str:
        return f"sigma={self.sigma}, truncate={self.truncate}, kernel={self.kernel!r}"
