"""weak_sdf soundness: a certified lower bound on the distance to the *smoothed* shape's surface.

Where that surface is known exactly: a half-space (smoothing keeps its surface; weak SDF = exact
SDF) and a ball (smoothed occupancy in closed form via the non-central χ²). On arbitrary random
occupancy: no two voxel centres of opposite sign are closer than the sum of their radii (the
surface between them would otherwise be closer than certified).
"""
import math

import numpy as np
import pytest
import torch
from scipy.optimize import brentq
from scipy.special import ndtri
from scipy.stats import ncx2

from geo_rs import UserError, VoxelGrid, WeakSDF, certified_radius, gaussian_blur3d, weak_sdf
from geo_rs.sdf import blur_slack, certified_sdf_at, weak_sdf_max_radius


def _halfspace(n=40, plane=19.5, dtype=torch.float64):
    occ = torch.zeros(n, n, n, dtype=dtype)
    occ[: int(plane + 0.5)] = 1.0  # voxel boxes i ≤ 19 are full: the surface is the plane x = 19.5
    return occ


@pytest.mark.parametrize("sigma,truncate", [(1.0, 8.0), (2.5, 6.5)])
def test_halfspace_weak_sdf_equals_exact_sdf(sigma, truncate):
    # With voxels as boxes the blurred half-space is exactly Φ((19.5 − i)/σ) (telescoping sum of the
    # integrated taps), so weak SDF = exact SDF up to truncation: with a ≥ 6.5σ kernel, to 1e-9.
    h = 0.1
    occ = _halfspace()
    r = int(truncate * sigma + 0.5)
    inner = slice(r, 40 - r)  # away from the grid's own borders (zero padding ends the half-space)
    exact = (19.5 - torch.arange(40, dtype=torch.float64))[:, None, None].expand(40, 40, 40) * h
    w = weak_sdf(occ, sigma, h, truncate=truncate)
    near = (exact.abs() < 3 * sigma * h)[inner, inner, inner]
    diff = (w - exact)[inner, inner, inner][near]
    assert diff.abs().max() < 1e-9
    # Default 4σ truncation: still equal up to the soundness margin, and never larger in magnitude.
    r4 = int(4 * sigma + 0.5)
    in4 = slice(r4, 40 - r4)
    w4, e4 = weak_sdf(occ, sigma, h)[in4, in4, in4], exact[in4, in4, in4]
    assert (w4.abs() <= e4.abs() + 1e-12).all()
    near4 = e4.abs() < 2 * sigma * h
    assert ((w4 - e4)[near4].abs() < 1e-3 * sigma * h).all()


def test_halfspace_float32_matches_float64_within_rounding():
    w32 = weak_sdf(_halfspace(dtype=torch.float32), 1.5, 0.1)
    w64 = weak_sdf(_halfspace(), 1.5, 0.1)
    near = w64.abs() < 0.3
    assert (w32.double() - w64)[near].abs().max() < 1e-4


def _smoothed_ball(radius, sigma):
    """f̂(ρ) = P(|ρ e + σZ| ≤ R) = P(χ'²₃(λ = ρ²/σ²) ≤ R²/σ²) and the smoothed surface radius R'."""
    def fhat(rho):
        return ncx2.cdf(radius**2 / sigma**2, 3, np.asarray(rho) ** 2 / sigma**2)

    r_smooth = brentq(lambda rho: fhat(rho) - 0.5, 0.0, radius)
    return fhat, r_smooth


@pytest.mark.parametrize("radius,sigma", [(1.0, 0.1), (1.0, 0.3), (0.5, 0.2)])
def test_ball_closed_form_certificate_never_exceeds_distance_to_smoothed_surface(radius, sigma):
    fhat, r_smooth = _smoothed_ball(radius, sigma)
    assert r_smooth < radius  # smoothing shrinks convex shapes
    rng = np.random.default_rng(0)
    rho = np.concatenate([rng.uniform(0, radius + 4 * sigma, 4000),
                          r_smooth + rng.normal(0, 0.05 * sigma, 500)])
    # Exact certificate σΦ⁻¹(f̂): inside from the survival function (f̂ rounds to 1 deep inside).
    cdf = fhat(rho)
    sf = ncx2.sf(radius**2 / sigma**2, 3, rho**2 / sigma**2)
    cert = sigma * np.where(cdf < 0.5, ndtri(cdf), -ndtri(sf))
    dist = np.abs(rho - r_smooth)
    assert np.all(np.abs(cert) <= dist + 1e-9)
    assert np.all(np.sign(cert[dist > 1e-6]) == np.sign(r_smooth - rho[dist > 1e-6]))
    # geo_rs.certified_radius agrees wherever f̂ is representable away from 1.
    mid = np.abs(cert) < 6 * sigma
    lib = certified_radius(torch.from_numpy(cdf), sigma).numpy()
    np.testing.assert_allclose(lib[mid], cert[mid], rtol=0, atol=1e-6 * sigma)


@pytest.mark.parametrize("radius_vox,sigma", [(8.0, 2.0), (6.3, 1.0)])
def test_ball_grid_pipeline_within_discretisation_tolerance(radius_vox, sigma):
    # The grid blurs the *voxelised* ball (boxes of side h), which differs from the true ball by up to
    # about half a voxel; measured worst overshoot 0.03–0.12 voxels. Tolerance: 0.5 voxel.
    n = int(2 * (radius_vox + 4 * sigma)) + 4
    h = 0.05
    c = (n - 1) / 2
    i = torch.arange(n, dtype=torch.float64) - c
    rho = torch.stack(torch.meshgrid(i, i, i, indexing="ij")).norm(dim=0)
    occ = (rho <= radius_vox).double()
    _, r_smooth = _smoothed_ball(radius_vox, sigma)
    w = weak_sdf(occ, sigma, h) / h  # in voxels
    dist = (rho - r_smooth).abs()
    assert (w.abs() <= dist + 0.5).all()
    # Trilinear queries at random world points: the weak SDF is 1-Lipschitz, so interpolation adds
    # at most √3/2 voxel on top of the discretisation tolerance.
    grid = VoxelGrid(w * h, origin=(-c * h,) * 3, voxel_size=h)
    pts = torch.from_numpy(np.random.default_rng(1).uniform(-c * h, c * h, (5000, 3)))
    q = grid.sample(pts) / h
    d = (pts.norm(dim=1) / h - r_smooth).abs()
    assert (q.abs() <= d + 0.5 + math.sqrt(3) / 2).all()
    # certified_sdf_at needs no interpolation allowance, even for points outside the grid.
    far = torch.cat([pts, 3 * pts[:200]])
    cq = certified_sdf_at(grid, far) / h
    assert (cq.abs() <= (far.norm(dim=1) / h - r_smooth).abs() + 0.5).all()
    assert (cq[:5000].abs() <= q.abs() + math.sqrt(3)).all() and (cq != 0).float().mean() > 0.5
    # And it is a useful bound: within a voxel of the smoothed surface's true signed distance nearby.
    near = dist < 3 * sigma
    assert (w - (r_smooth - rho))[near].abs().max() < 1.0


@pytest.mark.parametrize("sigma,method", [(0.7, "slices"), (1.5, "matmul")])
def test_no_opposite_sign_pair_closer_than_its_radii_on_random_soft_occupancy(sigma, method):
    # For the exact smoothing of the box-voxelised field, σΦ⁻¹(f̂) is 1-Lipschitz (Salman et al. 2019),
    # so an inside point c and an outside point y satisfy r(c) + |r(y)| ≤ |c − y|: the surface lies
    # between them. This attacks the truncation/rounding margin on arbitrary shapes, at all pairs.
    gen = torch.Generator().manual_seed(0)
    blobs = gaussian_blur3d(torch.rand(14, 14, 14, generator=gen, dtype=torch.float64), 1.5)
    occ = ((blobs > blobs.median()).double() * 0.8 + 0.2 * torch.rand(14, 14, 14, generator=gen,
                                                                        dtype=torch.float64)).clamp(0, 1)
    for dtype in (torch.float64, torch.float32):
        w = weak_sdf(occ.to(dtype), sigma, 1.0, method=method).double().reshape(-1)
        idx = torch.stack(torch.meshgrid(*[torch.arange(14.0, dtype=torch.float64)] * 3, indexing="ij"),
                          dim=-1).reshape(-1, 3)
        pos, neg = w > 0, w < 0
        assert pos.any() and neg.any()
        dist = torch.cdist(idx[pos], idx[neg])
        slack = w[pos][:, None] + w[neg].abs()[None, :] - dist
        assert slack.max() <= 1e-9, (dtype, float(slack.max()))


def test_weak_sdf_matches_certified_radius_away_from_the_margin():
    occ = (torch.rand(12, 12, 12, dtype=torch.float64) > 0.5).double()
    w = weak_sdf(occ, 1.2, 0.1)
    ref = certified_radius(gaussian_blur3d(occ, 1.2), 1.2 * 0.1)
    # The soundness margin moves f̂ by ε ≈ 4e-5: ≤ ε/φ(2) ≈ 1e-3 σ in radius within 2σ of the surface.
    mid = ref.abs() < 2 * 0.12
    torch.testing.assert_close(w[mid], ref[mid], rtol=0, atol=1e-3 * 0.12)
    assert (w.abs() <= ref.abs() + 1e-12).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_finite_and_bounded_on_full_and_empty_grids(dtype):
    for fill in (0.0, 1.0):
        w = weak_sdf(torch.full((10, 10, 10), fill, dtype=dtype), 1.5, 0.2)
        assert torch.isfinite(w).all()
        assert w.abs().max() <= weak_sdf_max_radius(1.5, 0.2, dtype=dtype)
    full = weak_sdf(torch.ones(30, 30, 30, dtype=dtype), 1.0, 1.0)
    assert float(full[15, 15, 15]) == weak_sdf_max_radius(1.0, 1.0, dtype=dtype)
    assert 3.5 < weak_sdf_max_radius(1.0) < 4.2 and blur_slack(1.0) < 1e-4
    # ≈ σΦ⁻¹(1 − ε): the margin, not the dtype, sets the ceiling.
    nominal = -ndtri(blur_slack(1.0, dtype=dtype))
    assert weak_sdf_max_radius(1.0, dtype=dtype) == pytest.approx(nominal, rel=1e-3)


def test_gradients_flow_and_gradcheck():
    occ = (0.2 + 0.6 * torch.rand(3, 4, 3, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(lambda x: weak_sdf(x, 0.9, 0.1), (occ,))
    occ32 = torch.rand(2, 8, 8, 8, requires_grad=True)
    out = WeakSDF(1.0, 0.05)(occ32)
    out.sum().backward()
    assert out.shape == occ32.shape and torch.isfinite(occ32.grad).all() and occ32.grad.abs().sum() > 0


def test_no_grad_path_leaves_input_untouched_and_equals_grad_path():
    occ = torch.rand(9, 9, 9)
    before = occ.clone()
    a = weak_sdf(occ, 1.0, 0.1)
    torch.testing.assert_close(occ, before, rtol=0, atol=0)
    b = weak_sdf(occ.clone().requires_grad_(), 1.0, 0.1).detach()
    torch.testing.assert_close(a, b)


def test_bad_input_is_a_user_error():
    with pytest.raises(UserError, match="NaN"):
        weak_sdf(torch.full((4, 4, 4), float("nan")), 1.0, 0.1)
    with pytest.raises(UserError, match=r"\[0, 1\]"):
        weak_sdf(torch.full((4, 4, 4), 1.5), 1.0, 0.1)
    with pytest.raises(UserError, match="voxel_size"):
        weak_sdf(torch.zeros(4, 4, 4), 1.0, 0.0)
    with pytest.raises(UserError, match="sigma"):
        weak_sdf(torch.zeros(4, 4, 4), -1.0, 0.1)


def test_certified_sdf_at_a_nan_point_is_nan():
    g = VoxelGrid(torch.linspace(-1, 1, 27, dtype=torch.float64).reshape(3, 3, 3), (0, 0, 0), 1.0)
    out = certified_sdf_at(g, torch.tensor([[0.2, 0.1, 0.0], [float("nan"), 0, 0], [float("inf"), 0, 0]],
                                            dtype=torch.float64))
    assert torch.isfinite(out[0]) and torch.isnan(out[1:]).all()


def test_weak_sdf_unchecked_still_refuses_nan():
    occ = torch.zeros(6, 6, 6)
    occ[1, 2, 3] = float("nan")
    with pytest.raises(UserError, match=r"NaN/inf value\(s\) \(first at index \(1, 2, 3\)"):
        weak_sdf(occ, 1.0, 0.1, check=False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_weak_sdf_matches_cpu_and_extracts_a_mesh():
    from geo_rs import extract_mesh

    occ = torch.zeros(40, 40, 40)
    occ[10:30, 12:28, 8:32] = 1
    cpu = weak_sdf(occ, 1.5, 0.05)
    gpu = weak_sdf(occ.cuda(), 1.5, 0.05)
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=0, atol=1e-5)
    mesh = extract_mesh(VoxelGrid(gpu, (0, 0, 0), 0.05), 0.0)
    assert mesh.is_watertight and mesh.volume > 0
