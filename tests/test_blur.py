"""gaussian_blur3d: agreement with the naive reference and scipy, effective σ, padding, gradients."""
import numpy as np
import pytest
import torch
from scipy import ndimage

from geo_rs import GaussianBlur3d, UserError, gaussian_blur3d, gaussian_blur3d_naive
from geo_rs.blur import blur_radius, gaussian_kernel1d, kernel_variance


@pytest.mark.parametrize("method", ["matmul", "slices"])
@pytest.mark.parametrize("kernel", ["integrated", "sampled"])
@pytest.mark.parametrize("sigma", [0.6, 1.0, 2.5])
def test_matches_naive_reference(kernel, sigma, method):
    g = torch.rand(2, 11, 13, 9, dtype=torch.float64)
    fast = gaussian_blur3d(g, sigma, kernel=kernel, method=method)
    slow = gaussian_blur3d_naive(g, sigma, kernel=kernel)
    assert fast.shape == g.shape and fast.dtype == g.dtype
    torch.testing.assert_close(fast, slow, rtol=0, atol=1e-12)


@pytest.mark.parametrize("shape", [(300, 5, 6), (5, 300, 6), (5, 6, 300)])
def test_block_path_on_long_axes_matches_naive(shape):
    # Axes longer than two blocks take the block-banded path; each axis in turn.
    g = torch.rand(*shape, dtype=torch.float64)
    ref = gaussian_blur3d_naive(g, 1.3)
    for method in ("matmul", "slices"):
        torch.testing.assert_close(gaussian_blur3d(g, 1.3, method=method), ref, rtol=0, atol=1e-12)


def test_float32_auto_path_on_a_large_grid_matches_naive():
    g = torch.rand(270, 17, 16)  # > 65,536 voxels: "auto" takes the matmul path
    torch.testing.assert_close(gaussian_blur3d(g, 2.0), gaussian_blur3d_naive(g, 2.0), rtol=0, atol=2e-6)


@pytest.mark.parametrize("sigma", [0.8, 1.0, 2.0, 3.5])
def test_sampled_kernel_equals_scipy_gaussian_filter(sigma):
    g = np.random.rand(12, 10, 14)
    ours = gaussian_blur3d(torch.from_numpy(g), sigma, kernel="sampled").numpy()
    ref = ndimage.gaussian_filter(g, sigma, mode="constant", cval=0.0, truncate=4.0)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("sigma", [1.0, 1.5, 2.0, 3.0])
def test_effective_sigma_of_a_blurred_delta(sigma):
    # The peer code's bug was a kernel sampled 1.5 voxels apart: its real σ was not the σ in the
    # radius formula. Measure the second moment of a blurred delta along each axis.
    n = 2 * blur_radius(sigma) + 5
    c = n // 2
    delta = torch.zeros(n, n, n, dtype=torch.float64)
    delta[c, c, c] = 1.0
    k = torch.arange(n, dtype=torch.float64) - c
    for kernel, expected in (("sampled", sigma**2), ("integrated", sigma**2 + 1 / 12)):
        out = gaussian_blur3d(delta, sigma, kernel=kernel)
        assert float(out.sum()) == pytest.approx(1.0, abs=1e-12)
        for axis in range(3):
            marginal = out.sum(dim=[a for a in range(3) if a != axis])
            assert float((marginal * k).sum()) == pytest.approx(0.0, abs=1e-12)
            var = float((marginal * k**2).sum())
            # Truncation at 4σ removes < 1e-3 relative variance.
            assert var == pytest.approx(expected, rel=1e-3), (kernel, axis)
        assert kernel_variance(sigma, kernel=kernel) == pytest.approx(expected, rel=1e-3)


def test_integrated_kernel_taps_are_gaussian_mass_of_each_voxel():
    from scipy.stats import norm

    w = gaussian_kernel1d(1.7)
    r = blur_radius(1.7)
    raw = norm.cdf((np.arange(-r, r + 1) + 0.5) / 1.7) - norm.cdf((np.arange(-r, r + 1) - 0.5) / 1.7)
    np.testing.assert_allclose(w, raw / raw.sum(), rtol=1e-12)
    assert len(w) == 2 * r + 1 and r == int(4 * 1.7 + 0.5)


def test_zero_padding_treats_outside_as_empty():
    sigma = 1.5
    g = torch.ones(20, 20, 20, dtype=torch.float64)
    out = gaussian_blur3d(g, sigma)
    w = gaussian_kernel1d(sigma)
    r = blur_radius(sigma)
    half = w[: r + 1].sum()  # taps that land inside at a border voxel
    assert float(out[10, 10, 10]) == pytest.approx(1.0, abs=1e-12)
    assert float(out[0, 10, 10]) == pytest.approx(half, abs=1e-12)
    assert float(out[0, 0, 0]) == pytest.approx(half**3, abs=1e-12)


@pytest.mark.parametrize("method", ["matmul", "slices"])
def test_gradcheck_float64_tiny_grid(method):
    g = torch.rand(2, 4, 5, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: gaussian_blur3d(x, 0.8, method=method), (g,))
    assert torch.autograd.gradgradcheck(lambda x: gaussian_blur3d(x, 0.8, method=method), (g,))


def test_leading_dims_blur_independently():
    g = torch.rand(2, 3, 6, 7, 8)
    out = gaussian_blur3d(g, 1.0)
    for i in range(2):
        for j in range(3):
            torch.testing.assert_close(out[i, j], gaussian_blur3d(g[i, j], 1.0))


def test_dtype_and_device_pass_through():
    for dtype in (torch.float32, torch.float64):
        g = torch.rand(5, 6, 7, dtype=dtype)
        assert gaussian_blur3d(g, 1.0).dtype == dtype
    b = gaussian_blur3d(torch.zeros(5, 5, 5, dtype=torch.bool), 1.0)
    assert b.dtype == torch.get_default_dtype()
    assert GaussianBlur3d(1.0)(torch.rand(4, 4, 4)).shape == (4, 4, 4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    g = torch.rand(2, 40, 300, 20)
    out = gaussian_blur3d(g.cuda(), 2.0)
    assert out.device.type == "cuda"
    torch.testing.assert_close(out.cpu(), gaussian_blur3d(g, 2.0), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("sigma", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_sigma_is_a_user_error(sigma):
    with pytest.raises(UserError, match="sigma"):
        gaussian_blur3d(torch.zeros(4, 4, 4), sigma)


def test_bad_shape_is_a_user_error():
    with pytest.raises(UserError, match="shape"):
        gaussian_blur3d(torch.zeros(4, 4), 1.0)


def test_nan_is_refused_with_count_and_position_not_spread():
    g = torch.zeros(9, 9, 9)
    g[2, 3, 4] = float("nan")
    with pytest.raises(UserError, match=r"grid contains 1 NaN/inf value\(s\) \(first at index \(2, 3, 4\)"):
        gaussian_blur3d(g, 1.0)
    g[2, 3, 4] = float("inf")
    with pytest.raises(UserError, match="NaN/inf"):
        gaussian_blur3d_naive(g, 1.0)
    # huge but finite values whose sum overflows are not a false alarm
    big = torch.full((4, 4, 4), 3e38)
    assert torch.isfinite(gaussian_blur3d(big, 0.5)).all()


@pytest.mark.parametrize("method", ["matmul", "slices"])
def test_result_does_not_depend_on_the_thread_count(method):
    # The per-call thread policy may run a call on 1 thread or on several: the output must be the same
    # bit for bit (BLAS splits rows/columns among threads, never a dot product).
    g = torch.rand(70, 64, 50)
    n = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = gaussian_blur3d(g, 1.7, method=method)
        torch.set_num_threads(2)
        two = gaussian_blur3d(g, 1.7, method=method)
    finally:
        torch.set_num_threads(n)
    assert torch.equal(one, two)


def test_thread_policy_keeps_the_faster_option_and_retries_the_other_with_backoff():
    from geo_rs.blur_threads import ThreadPolicy

    cost = {1: 1.0, 2: 5.0}  # seconds per call: 2 threads lose (a loaded machine)
    policy = ThreadPolicy(idle_cores=lambda: 2.0)
    voxels = 1 << 20
    picks = []
    for _ in range(400):
        k = policy.choose(voxels, 2)
        picks.append(k)
        policy.record(voxels, k, cost[k], 2)
    assert picks[0] == 2  # idle by the load average: the first call tries the caller's setting
    tries = [i for i, k in enumerate(picks) if k == 2]
    gaps = [b - a for a, b in zip(tries, tries[1:])]
    assert gaps == sorted(gaps) and gaps[-1] >= 128  # retries back off while they keep losing
    assert sum(cost[k] for k in picks) <= 1.1 * 400 * cost[1]  # never much worse than 1 thread
    cost[2] = 0.4  # the load went away: the next retry switches over and stays
    for _ in range(300):
        k = policy.choose(voxels, 2)
        policy.record(voxels, k, cost[k], 2)
        picks.append(k)
    assert picks[-100:].count(2) >= 90
    # small grids, one requested thread, or a disabled policy: torch's setting as it is
    assert policy.choose(1000, 2) == 2 and policy.choose(voxels, 1) == 1
    policy.enabled = False
    assert policy.choose(voxels, 2) == 2


def test_thread_policy_starts_on_one_thread_when_the_machine_is_busy():
    from geo_rs.blur_threads import ThreadPolicy

    assert ThreadPolicy(idle_cores=lambda: 0.3).choose(1 << 20, 2) == 1
    assert ThreadPolicy(idle_cores=lambda: 2.0).choose(1 << 20, 2) == 2
