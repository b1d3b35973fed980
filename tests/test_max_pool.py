"""geo_rs.max_pool: the branch-free pool equals PyTorch's pooling; the module falls back where it must."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from geo_rs import WhiteNoise, output_bounds
from geo_rs.max_pool import FastMaxPool2d, max_pool2d_branch_free, max_pool2d_naive

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("shape", "kernel"), [((2, 3, 8, 8), 2), ((1, 2, 9, 7), 2), ((4, 1, 12, 12), 3),
                                               ((2, 5, 10, 9), (2, 3)), ((3, 6, 6), 2)])
def test_branch_free_equals_reference(dtype, shape, kernel):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=gen, dtype=dtype)
    x.view(-1)[::7] = 0.0  # ties
    x.view(-1)[3] = float("nan")
    x.view(-1)[11] = float("inf")
    x.view(-1)[17] = float("-inf")
    fast, ref = max_pool2d_branch_free(x, kernel), max_pool2d_naive(x, kernel)
    assert fast.shape == ref.shape and fast.dtype == ref.dtype
    assert torch.equal(torch.isnan(fast), torch.isnan(ref))
    assert torch.equal(torch.nan_to_num(fast), torch.nan_to_num(ref))


def test_module_paths_and_fallbacks():
    x = torch.rand(2, 3, 8, 8)
    pool = FastMaxPool2d(2)
    assert isinstance(pool, nn.MaxPool2d)
    with torch.no_grad():
        assert pool._branch_free(x) and torch.equal(pool(x), nn.MaxPool2d(2)(x))
    leaf = x.clone().requires_grad_(True)
    assert not pool._branch_free(leaf)  # autograd: the pool's own gradient (no tie splitting)
    pool(leaf).sum().backward()
    ref = x.clone().requires_grad_(True)
    nn.MaxPool2d(2)(ref).sum().backward()
    assert torch.equal(leaf.grad, ref.grad)
    for pool in (FastMaxPool2d(3, stride=2), FastMaxPool2d(2, padding=1), FastMaxPool2d(2, ceil_mode=True)):
        plain = nn.MaxPool2d(pool.kernel_size, pool.stride, pool.padding, ceil_mode=pool.ceil_mode)
        with torch.no_grad():
            assert not pool._branch_free(x)
            assert torch.equal(pool(x), plain(x))


def test_bounds_engine_sees_a_max_pool():
    """auto_LiRPA traces the module: it must parse a MaxPool node and give the plain pool's bounds."""
    torch.manual_seed(0)
    convs = nn.Conv2d(1, 4, 3, padding=1), nn.Linear(4 * 4 * 4, 3)

    def net(pool):
        return nn.Sequential(convs[0], nn.ReLU(), pool, nn.Flatten(), convs[1]).eval()

    x = torch.rand(1, 1, 8, 8)
    for method in ("IBP", "CROWN"):
        lo_f, hi_f = output_bounds(net(FastMaxPool2d(2)), x, WhiteNoise(0.02), method)
        lo_r, hi_r = output_bounds(net(nn.MaxPool2d(2)), x, WhiteNoise(0.02), method)
        assert torch.equal(lo_f, lo_r) and torch.equal(hi_f, hi_r)
