"""field.clearance / is_free: a certified distance to the *smoothed* surface, attacked and compared
with closed forms (ball: non-central χ²; any voxel shape: the exact smoothing of its box voxels)."""

import numpy as np
import pytest
import torch
from scipy.optimize import brentq
from scipy.special import ndtr
from scipy.stats import ncx2

from geo_rs import UserError
from nerf import GridSpec, PlainDensity, RadianceField, SHColor, SmoothedDensity
from nerf.normalize import Similarity

pytestmark = pytest.mark.usefixtures("one_thread")


def _field(occ: torch.Tensor, spec: GridSpec, sigma_vox: float) -> RadianceField:
    """A smoothed field whose occupancy f is exactly ``occ`` (f_activation relu: f = clip(θ, 0, 1))."""
    geo = SmoothedDensity(spec, sigma_world=3 * sigma_vox * spec.voxel, f_activation="relu",
                          sigma_final=sigma_vox * spec.voxel)  # training σ ≠ final: clearance uses the final
    geo.theta.data = occ.float()
    return RadianceField(geo, SHColor(spec, 0))


def _ball(res=40, radius=0.5, sigma_vox=1.5):
    spec = GridSpec.from_bounds([-1.0] * 3, [1.0] * 3, res)
    occ = spec.centres().norm(dim=-1) <= radius
    return spec, _field(occ, spec, sigma_vox), radius, sigma_vox * spec.voxel


def test_ball_clearance_never_exceeds_distance_to_the_smoothed_sphere():
    spec, field, radius, sigma = _ball()
    # Smoothed ball: f̂(ρ) = P(χ'²₃(ρ²/σ²) ≤ R²/σ²); its surface is the sphere of radius R' < R.
    r_smooth = brentq(lambda rho: ncx2.cdf(radius**2 / sigma**2, 3, rho**2 / sigma**2) - 0.5, 0.0, radius)
    rng = np.random.default_rng(0)
    pts = np.concatenate([rng.uniform(-1, 1, (20000, 3)),
                          rng.normal(size=(3000, 3)) * [[1, 1, 1]]])  # some outside the box too
    dirs = rng.normal(size=(3000, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    pts = np.concatenate([pts, dirs * (r_smooth + rng.normal(0, sigma, (3000, 1)))])  # near the surface
    c = field.clearance(torch.from_numpy(pts)).numpy()
    in_box = np.all(np.abs(pts) <= spec.bmax[0] + 1e-12, axis=1)
    assert np.isnan(c[~in_box]).all() and np.isfinite(c[in_box]).all()
    rho = np.linalg.norm(pts[in_box], axis=1)
    signed = rho - r_smooth  # > 0 outside the smoothed sphere
    cb = c[in_box]
    tol = 0.5 * spec.voxel  # the grid holds the box-voxelised ball, not the ball (as in test_weak_sdf)
    assert np.all(np.abs(cb) <= np.abs(signed) + tol), float((np.abs(cb) - np.abs(signed)).max())
    assert np.all(signed[cb > tol] > 0) and np.all(signed[cb < -tol] < 0)
    assert (cb > 0).mean() > 0.5 and cb.max() > 2 * sigma  # and it is a useful bound, not all zeros
    margin = 1.5 * sigma
    free = field.is_free(torch.from_numpy(pts), margin).numpy()
    assert free[in_box].sum() > 1000 and not free[~in_box].any()
    assert np.all(signed[free[in_box]] > margin - tol)


def _exact_smoothed(occ: np.ndarray, spec: GridSpec, sigma: float, pts: np.ndarray) -> np.ndarray:
    """f̂(x) of the box-voxelised occupancy (voxels as boxes, empty outside), exactly: the Gaussian
    integral over a box factorises into 1-D Φ differences per axis."""
    out = []
    for x in np.array_split(pts, max(1, len(pts) // 2000)):
        factors = []
        for a in range(3):
            c = spec.origin[a] + spec.voxel * np.arange(spec.shape[a])
            hi = (c[None] + 0.5 * spec.voxel - x[:, a : a + 1]) / sigma
            lo = (c[None] - 0.5 * spec.voxel - x[:, a : a + 1]) / sigma
            factors.append(ndtr(hi) - ndtr(lo))
        out.append(np.einsum("ijk,pi,pj,pk->p", occ, *factors))
    return np.concatenate(out)


@pytest.mark.parametrize("sigma_vox", [0.8, 2.0])
def test_no_point_of_a_certified_ball_crosses_the_exact_smoothed_surface(sigma_vox):
    # Random blobs: for points with clearance c ≠ 0, attack the ball B(x, |c|) (its boundary and inside)
    # and check the exact f̂ keeps the side the sign certifies. Zero tolerance.
    gen = torch.Generator().manual_seed(1)
    from geo_rs import gaussian_blur3d

    blobs = gaussian_blur3d(torch.rand(18, 18, 18, generator=gen, dtype=torch.float64), 1.5)
    occ = (blobs > blobs.quantile(0.6)).double()
    spec = GridSpec.from_bounds([0.0] * 3, [1.7] * 3, 18)
    field = _field(occ, spec, sigma_vox)
    sigma = sigma_vox * spec.voxel
    rng = np.random.default_rng(2)
    x = rng.uniform(0, 1.7, (600, 3))
    c = field.clearance(torch.from_numpy(x)).numpy()
    keep = np.abs(c) > 0
    assert keep.sum() > 300
    x, c = x[keep], c[keep]
    k = 24
    d = rng.normal(size=(len(x), k, 3))
    d /= np.linalg.norm(d, axis=-1, keepdims=True)
    scale = np.concatenate([np.full((len(x), k // 2, 1), 1 - 1e-9), rng.uniform(0, 1, (len(x), k // 2, 1))],
                           1)
    y = (x[:, None] + d * scale * np.abs(c)[:, None, None]).reshape(-1, 3)
    f = _exact_smoothed(occ.numpy(), spec, sigma, np.concatenate([x, y])).reshape(-1)
    fx, fy = f[: len(x)], f[len(x):].reshape(len(x), k)
    outside = c > 0
    assert np.all(fx[outside] < 0.5) and np.all(fx[~outside] > 0.5)
    assert np.all(fy[outside] < 0.5) and np.all(fy[~outside] > 0.5)


def test_capture_frame_and_bad_use():
    spec, field, _, sigma = _ball(res=24)
    sim = Similarity(2.5, [[0, -1, 0], [1, 0, 0], [0, 0, 1]], [0.1, -0.2, 0.3])  # capture → field
    field.capture_to_field = sim
    x_cap = np.random.default_rng(3).uniform(-0.4, 0.4, (200, 3))
    a = field.clearance(torch.from_numpy(x_cap), capture_frame=True)
    b = field.clearance(torch.from_numpy(sim.apply(x_cap))) / 2.5
    torch.testing.assert_close(a, b, equal_nan=True)
    assert field.max_clearance(capture_frame=True) == pytest.approx(field.max_clearance() / 2.5)
    with pytest.raises(UserError, match="not certifiable"):
        field.is_free(torch.zeros(1, 3), margin=field.max_clearance())
    with pytest.raises(UserError, match="margin"):
        field.is_free(torch.zeros(1, 3), margin=-1.0)
    with pytest.raises(UserError, match="points"):
        field.clearance(torch.zeros(4, 2))
    assert torch.isnan(field.clearance(torch.tensor([[float("nan"), 0.0, 0.0]]))).all()
    plain = RadianceField(PlainDensity(spec), SHColor(spec, 0))
    with pytest.raises(UserError, match="smoothed model"):
        plain.clearance(torch.zeros(1, 3))
    # the certificate saturates at ~4 final σ: far from everything it reports that ceiling, no more
    far = float(field.clearance(torch.tensor([[0.95, 0.95, 0.95]])))
    assert field.max_clearance() - 0.87 * spec.voxel <= far <= field.max_clearance() < 4.5 * sigma
