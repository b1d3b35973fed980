"""nerf field: trilinear sampler vs naive, density activation, gradient flow blur → SDF → density."""

import math

import pytest
import torch

from nerf import GridSpec, PlainDensity, RadianceField, SHColor, SmoothedDensity, log_density, render_rays
from nerf.field import sample_grid, sample_grid_naive, sh_basis


def test_sample_grid_matches_naive():
    spec = GridSpec.from_bounds([-1, -0.5, 0], [1, 0.5, 0.7], 9)
    assert spec.shape == (9, 5, 4)
    values = torch.randn(3, *spec.shape, dtype=torch.float64)
    pts = torch.rand(500, 3, dtype=torch.float64) * torch.tensor([2, 1, 0.7]) + torch.tensor([-1, -0.5, 0])
    pts[:5] = spec.centres().reshape(-1, 3)[:5].double()  # exactly on centres too
    assert torch.allclose(sample_grid(values, spec, pts), sample_grid_naive(values, spec, pts), atol=1e-10)
    # at a voxel centre the sample is the voxel's own value (index convention)
    c = spec.centres()[4, 2, 1].double()[None]
    assert torch.allclose(sample_grid(values, spec, c)[0], values[:, 4, 2, 1])


def test_log_density_shape():
    g = torch.tensor([0.0, 0.5, 0.9, 1.0])
    d = log_density(g, scale=2.0, eps=1e-6)
    assert abs(float(d[0])) < 1e-6 and torch.all(d[1:] > d[:-1])  # ~0 for empty space, increasing
    assert d[1] == pytest.approx(2 * math.log(2), rel=1e-5)
    assert d[3] == pytest.approx(2 * math.log((1 + 1e-6) / 1e-6), rel=1e-5)  # the cap, in float32
    assert torch.isfinite(d).all()


def test_plain_density_initial_opacity():
    spec = GridSpec.from_bounds([0, 0, 0], [1, 1, 1], 11)
    geo = PlainDensity(spec, alpha_init=1e-3, step_voxels=0.5)
    sig = geo.density(geo.prepare(), torch.rand(10, 3))
    assert torch.allclose(1 - torch.exp(-sig * 0.5 * spec.voxel), torch.full((10,), 1e-3), rtol=1e-4)


def test_smoothed_field_sdf_is_weak_sdf_and_upsample_keeps_linear_fields():
    import geo_rs

    spec = GridSpec.from_bounds([-1, -1, -1], [1, 1, 1], 12)
    geo = SmoothedDensity(spec, sigma_world=1.5 * spec.voxel)
    geo.theta.data = torch.randn(spec.shape)
    ref = geo_rs.weak_sdf(torch.sigmoid(geo.theta.data), 1.5, spec.voxel)
    assert torch.allclose(geo.sdf_grid(), ref, atol=1e-6)
    # upsampling (trilinear) reproduces a linear θ exactly on the finer grid
    geo.theta.data = spec.centres() @ torch.tensor([0.3, -0.2, 0.5])
    fine = GridSpec.from_bounds([-1, -1, -1], [1, 1, 1], 23)
    geo.upsample(fine)
    assert geo.theta.shape == fine.shape
    assert torch.allclose(geo.theta.data, fine.centres() @ torch.tensor([0.3, -0.2, 0.5]), atol=1e-5)


def test_gradcheck_blur_sdf_density():
    """Gradients of the sampled density w.r.t. θ through blur → weak SDF → G → log density (float64)."""
    spec = GridSpec.from_bounds([0, 0, 0], [1, 1, 1], 6)
    geo = SmoothedDensity(spec, sigma_world=1.0 * spec.voxel, alpha=4.0).double()
    theta0 = (torch.randn(spec.shape, dtype=torch.float64) * 1.5).requires_grad_()
    pts = torch.rand(7, 3, dtype=torch.float64) * 0.8 + 0.1

    def fn(theta):  # the field's own path: θ → f → weak SDF grid → sample → G → density
        return torch.func.functional_call(geo, {"theta": theta}, (pts,))

    assert torch.autograd.gradcheck(fn, (theta0,), eps=1e-6, atol=1e-5, rtol=1e-3, fast_mode=True)
    # and the gradient is not trivially zero
    fn(theta0).sum().backward()
    assert theta0.grad.abs().max() > 0


def test_render_gradient_reaches_every_parameter():
    spec = GridSpec.from_bounds([-1, -1, -1], [1, 1, 1], 16)
    geo = SmoothedDensity(spec, sigma_world=spec.voxel, theta_init=-1.0)
    field = RadianceField(geo, SHColor(spec, 1))
    origins = torch.tensor([[0.0, 0.0, 3.0]]).repeat(8, 1)
    dirs = torch.nn.functional.normalize(torch.randn(8, 3) * 0.05 + torch.tensor([0.0, 0.0, -1.0]), dim=-1)
    out = render_rays(field, field.prepare(), origins, dirs, ([-1] * 3, [1] * 3), 0.5 * spec.voxel)
    assert out["rgb"].shape == (8, 3) and torch.all((out["opacity"] > 0) & (out["opacity"] < 1))
    (out["rgb"].sum() + out["depth"].sum()).backward()
    for p in (geo.theta, field.color.features):
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
    # the blur spreads gradient beyond the voxels the rays touch: more voxels than the plain grid's
    plain = RadianceField(PlainDensity(spec), SHColor(spec, 1))
    out = render_rays(plain, plain.prepare(), origins, dirs, ([-1] * 3, [1] * 3), 0.5 * spec.voxel)
    out["rgb"].sum().backward()
    assert (geo.theta.grad != 0).sum() > 2 * (plain.geometry.theta.grad != 0).sum() > 0


def test_sh_basis_orthonormal():
    d = torch.nn.functional.normalize(torch.randn(200_000, 3, dtype=torch.float64), dim=-1)
    y = sh_basis(d, 2)
    gram = 4 * math.pi * (y.T @ y) / d.shape[0]
    assert torch.allclose(gram, torch.eye(9, dtype=torch.float64), atol=0.03)


def test_fill_cavities_removes_only_enclosed_outside_regions():
    from nerf.evaluate import fill_cavities

    c = torch.stack(torch.meshgrid(*[torch.arange(20.0)] * 3, indexing="ij"), -1) - 9.5
    r = c.norm(dim=-1)
    shell = torch.minimum(r - 4.0, 7.0 - r)  # positive inside a hollow ball (4 < r < 7)
    filled, n = fill_cavities(shell)
    assert n == int((r <= 4.0).sum()) > 0
    assert torch.all(filled[r <= 4.0] >= 0) and torch.equal(filled[r > 4.0], shell[r > 4.0])
    # an open cavity (a tunnel to the border) is left alone
    shell[10:, 9:11, 9:11] = -1.0
    assert fill_cavities(shell)[1] == 0
