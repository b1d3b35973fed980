"""nerf — a smoothed voxel radiance field whose geometry is a certified (weak) SDF.

Pipeline (the paper's Fig. 2): density grid θ → f = sigmoid(θ) → f̂ = gaussian_blur3d(f, σ) →
weak SDF s = σ·Φ⁻¹(f̂) → occupancy G = sigmoid(α·s/σ) → density −log(1 + ε − G) → nerfacc volume
rendering. The mesh is the zero level of s (marching cubes), a certified-distance surface.
"""

from .cameras import (
    c2w_to_open3d_extrinsic,
    focal_from_angle,
    look_at,
    orbit_cameras,
    pixel_rays,
    ray_box_intersect,
    sphere_directions,
)
from .checkpoint import load_checkpoint, save_checkpoint
from .config import NerfConfig, load_config
from .dataset import SceneInfo, Views, load_blender, load_scene_info
from .evaluate import extract_and_score, fill_cavities, psnr, render_test_views, ssim
from .field import (
    GridSpec,
    PlainDensity,
    RadianceField,
    SHColor,
    SmoothedDensity,
    log_density,
    sample_grid,
    sample_grid_naive,
    sh_basis,
)
from .render import make_estimator, render_image, render_rays
from .scene import builtin_scene_names, load_scene_mesh, make_scene, render_views
from .train import Trainer, build_field, resolution_schedule, total_variation

__all__ = [
    "GridSpec",
    "NerfConfig",
    "PlainDensity",
    "RadianceField",
    "SHColor",
    "SceneInfo",
    "SmoothedDensity",
    "Trainer",
    "Views",
    "build_field",
    "builtin_scene_names",
    "c2w_to_open3d_extrinsic",
    "extract_and_score",
    "fill_cavities",
    "focal_from_angle",
    "load_blender",
    "load_checkpoint",
    "load_config",
    "load_scene_info",
    "load_scene_mesh",
    "log_density",
    "look_at",
    "make_estimator",
    "make_scene",
    "orbit_cameras",
    "pixel_rays",
    "psnr",
    "ray_box_intersect",
    "render_image",
    "render_rays",
    "render_test_views",
    "render_views",
    "resolution_schedule",
    "sample_grid",
    "sample_grid_naive",
    "save_checkpoint",
    "sh_basis",
    "sphere_directions",
    "ssim",
    "total_variation",
]
