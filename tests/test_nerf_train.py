"""nerf training: loss goes down, checkpoint/resume continues identically, CLI end to end."""

import json

import pytest
import torch

from geo_rs.cli import main
from nerf import Trainer, load_config, make_scene
from nerf.train import alpha_at, load_field, sigma_at

TINY = dict(
    scene_views=6,
    scene_res=16,
    grid_res=20,
    coarse_res=12,
    upsample_at=[0.5],
    rays_per_batch=256,
    eval_every=1000,
    ckpt_every=1000,
    eval_views=1,
    lr_final_ratio=0.5,
    metric_points=2000,
)


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    root = tmp_path_factory.mktemp("nerf_train") / "torus"
    make_scene("torus", root, views=6, res=16, val_views=1, test_views=1, gt_res=32)
    return root


def test_tiny_training_lowers_loss(scene, tmp_path):
    cfg = load_config(None, data=str(scene), steps=50, **TINY)
    trainer = Trainer(cfg, tmp_path, quiet=True)
    losses = [trainer.train_step()["loss"] for _ in range(cfg.steps)]
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.5 * first, (first, last)
    assert trainer.field.spec.shape[0] == 20  # coarse-to-fine happened


@pytest.mark.parametrize("model", ["smoothed", "plain"])
def test_resume_continues_identically(scene, tmp_path, model):
    # 8 steps straight vs 3 + save + resume + 5; the upsample (step 4) falls after the resume.
    cfg = load_config(None, data=str(scene), steps=8, model=model, tv_weight=1e-4, **TINY)
    straight = Trainer(cfg, tmp_path / "a", quiet=True)
    ref_losses = [straight.train_step()["loss"] for _ in range(8)]

    first = Trainer(cfg, tmp_path / "b", quiet=True)
    losses = [first.train_step()["loss"] for _ in range(3)]
    first.save(tmp_path / "b" / "ckpt.pt")
    torch.manual_seed(123)  # clobber global RNG: resume must restore it
    resumed = Trainer.resume(tmp_path / "b" / "ckpt.pt", quiet=True)
    assert resumed.step == 3
    losses += [resumed.train_step()["loss"] for _ in range(5)]
    assert losses == ref_losses
    for (name, p), (_, q) in zip(straight.field.named_parameters(), resumed.field.named_parameters()):
        assert torch.equal(p, q), name


def test_cli_train_outputs_and_extract_mesh(scene, tmp_path, capsys):
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(json.dumps({"data": str(scene), "steps": 40, **TINY}))  # JSON is valid YAML
    out = tmp_path / "run"
    assert main(["nerf", "train", str(cfg_path), "--out", str(out), "--quiet"]) == 0
    report = json.loads((out / "report.json").read_text())
    for key in ("test_psnr", "test_ssim", "train_time_s", "mesh_metrics", "chamfer_l1_over_diag"):
        assert key in report, key
    assert report["mesh_metrics"]["fscore"] >= 0 and report["test_psnr"] > 10
    for name in ("mesh.ply", "sdf_slices.png", "renders/r_0.png", "renders/r_0_depth.png", "checkpoint.pt"):
        assert (out / name).exists(), name
    assert "results in" in capsys.readouterr().out
    from PIL import Image

    width, height = Image.open(out / "renders" / "r_0_compare.png").size
    assert width >= 900 and height >= 300  # three labelled panels of >= 300 px and a colour bar

    ext = tmp_path / "ext"
    assert main(["nerf", "extract-mesh", str(out / "checkpoint.pt"), "--out", str(ext)]) == 0
    assert (ext / "mesh.ply").exists() and (ext / "sdf_slices.png").exists()
    assert json.loads((ext / "mesh_report.json").read_text())["mesh_faces"] == report["mesh_faces"]


def test_cli_bad_config(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: lego\nno_such_key: 3\n")
    assert main(["nerf", "train", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "bad.yaml: key 'no_such_key': unknown key" in capsys.readouterr().err
    assert main(["nerf", "extract-mesh", str(tmp_path / "missing.pt")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_occgrid_estimator_training_lowers_loss(scene, tmp_path):
    # The CUDA path: nerfacc's OccGridEstimator (packed samples, empty-space skipping); scripts/gpu_check.sh
    cfg = load_config(None, data=str(scene), steps=80, **TINY)
    trainer = Trainer(cfg, tmp_path, device="cuda", quiet=True)
    assert trainer.renderer == "occgrid", "nerfacc's CUDA extension did not load (nvcc/ninja?)"
    losses = [trainer.train_step()["loss"] for _ in range(cfg.steps)]
    assert sum(losses[-5:]) < 0.7 * sum(losses[:5]), losses
    report = trainer.finalize()
    assert report["renderer"] == "nerfacc OccGridEstimator" and report["device"].startswith("cuda")
    assert report["test_psnr"] > 10


def test_sigma_schedule_goes_coarse_to_fine_and_outputs_use_the_final_sigma(scene, tmp_path):
    cfg = load_config(None, data=str(scene), steps=10, sigma_vox=0.5, sigma_start_vox=4.0, sigma_ramp=0.5,
                      **TINY)
    trainer = Trainer(cfg, tmp_path, quiet=True)
    voxel = trainer.final_voxel
    sigmas = [sigma_at(cfg, p / 10, voxel) for p in range(11)]
    assert sigmas[0] == pytest.approx(4.0 * voxel) and sigmas[5] == pytest.approx(0.5 * voxel)
    assert all(a >= b for a, b in zip(sigmas, sigmas[1:])) and sigmas[-1] == pytest.approx(0.5 * voxel)
    geo = trainer.field.geometry
    trainer.train_step()
    assert geo.sigma_world > geo.sigma_final == pytest.approx(0.5 * voxel)
    # mid-training, the mesh's level field is still the weak SDF at the final σ, not the training σ
    import geo_rs

    ref = geo_rs.weak_sdf(geo.occupancy_grid().detach(), geo.sigma_final / geo.spec.voxel, geo.spec.voxel)
    torch.testing.assert_close(geo.level_grid().detach(), ref)
    assert not torch.allclose(geo.sdf_grid().detach(), ref)
    # a checkpoint loads with the σ and α of its step (not the schedule's start): renders match training
    trainer.save()
    loaded = load_field(trainer.checkpoint_path)[0].geometry
    expected = (sigma_at(cfg, trainer.progress(), voxel), alpha_at(cfg, trainer.progress()))
    assert (loaded.sigma_world, loaded.alpha) == pytest.approx(expected)
    assert 0.5 * voxel < loaded.sigma_world < 4.0 * voxel
    trainer.run()
    assert trainer.field.geometry.sigma_world == pytest.approx(geo.sigma_final)
    report = trainer.finalize()
    assert report["sigma_world"] == pytest.approx(0.5 * voxel) == report["sigma_world_rendered"]
    loaded = load_field(trainer.checkpoint_path)[0].geometry
    assert (loaded.sigma_world, loaded.alpha) == pytest.approx((geo.sigma_final, cfg.alpha_end))
    assert report["capture"]["normalization"]["method"] == "none"
    with pytest.raises(Exception, match="sigma_start_vox"):
        load_config(None, sigma_vox=1.0, sigma_start_vox=0.5)
