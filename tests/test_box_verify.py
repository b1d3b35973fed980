"""Box-stability verification: soundness against attacks, resume, worker pool, input errors.

The detector here is a tiny CNN on 24x24 canvases with one 6x6 block of intensity 0.5: an identity conv
channel feeds an exact centroid regressor (linear, the block's mass is constant), and a random conv
channel + ReLU features add a small nonlinear offset, so the clean IoU is high but not 1 and the bounds
go through unstable ReLUs.
"""
import json

import pytest
import torch
from torch import nn

from geo_rs import UserError, box_iou
from keypoint.box.attack import attack_min_iou
from keypoint.box.verify import VerifyConfig, check_detector, make_perturbation, run_verification

SIDE, BLOCK, VALUE = 24, 6, 0.5


def tiny_detector(seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    conv = nn.Conv2d(1, 2, 3, padding=1)
    hidden = nn.Linear(2 * SIDE * SIDE, 6)
    head = nn.Linear(6, 4)
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.zero_()
        conv.weight[0, 0, 1, 1] = 1.0  # channel 0: the image itself (ReLU is the identity on [0, 1])
        conv.weight[1] = torch.randn(1, 3, 3, generator=g) * 0.5
        conv.bias[1] = -0.05
        mass = BLOCK * BLOCK * VALUE
        cols = (torch.arange(SIDE) + 0.5).repeat(SIDE)  # flattened row-major: x = column
        rows = (torch.arange(SIDE) + 0.5).repeat_interleave(SIDE)
        hidden.weight.zero_()
        hidden.weight[0, : SIDE * SIDE] = cols / mass  # centroid x
        hidden.weight[1, : SIDE * SIDE] = rows / mass  # centroid y
        hidden.weight[2:, SIDE * SIDE:] = torch.randn(4, SIDE * SIDE, generator=g) * 0.1
        hidden.bias.zero_()
        hidden.bias[2:] = 0.1
        half = BLOCK / 2
        head.weight.zero_()
        head.weight[[0, 2], 0] = 1.0
        head.weight[[1, 3], 1] = 1.0
        head.weight[:, 2:] = torch.randn(4, 4, generator=g) * 0.3
        head.bias.copy_(torch.tensor([-half, -half, half, half]))
    return nn.Sequential(conv, nn.ReLU(), nn.Flatten(), hidden, nn.ReLU(), head).eval()


def block_images(positions):
    images, boxes = [], []
    for col, row in positions:
        img = torch.zeros(1, SIDE, SIDE)
        img[0, row:row + BLOCK, col:col + BLOCK] = VALUE
        images.append(img)
        boxes.append([col, row, col + BLOCK, row + BLOCK])
    return images, torch.tensor(boxes, dtype=torch.float32)


POSITIONS = [(3, 4), (14, 11)]
CONFIG = VerifyConfig(
    perturbations=["noise", "brightness", "contrast"],
    eps={"noise": [0.0005, 0.003], "brightness": [0.01, 0.05], "contrast": [0.05, 0.3]},
    methods=["IBP", "CROWN-IBP", "CROWN"],
    workers=1,
)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    model = tiny_detector()
    images, boxes = block_images(POSITIONS)
    out = tmp_path_factory.mktemp("box_run")
    results = run_verification(model, images, boxes, CONFIG, out, progress=False)
    return model, images, boxes, out, results


def test_no_attack_beats_a_certified_lower_bound(study):
    model, images, boxes, _, results = study
    clean = box_iou(torch.tensor(results["clean_boxes"]).double(), boxes.double())
    assert 0.7 < float(clean.min()) and float(clean.max()) < 1.0  # a good, imperfect detector
    worst: dict = {}
    for rec in results["records"]:
        key = (rec["image"], rec["perturbation"], rec["eps"])
        if key not in worst:
            pert = make_perturbation(rec["perturbation"], rec["eps"])
            worst[key] = attack_min_iou(model, images[rec["image"]], boxes[rec["image"]], pert,
                                        n_random=32, pgd_steps=10, pgd_restarts=2).iou
        for ext in ("vanilla", "optimal"):
            lo, hi = rec[ext]["lower"], rec[ext]["upper"]
            assert lo - 1e-5 <= float(clean[rec["image"]]) <= hi + 1e-5
            assert worst[key] >= lo - 1e-5, (key, rec["method"], ext, worst[key], lo)
            if rec[ext]["stable"]:
                assert worst[key] >= CONFIG.threshold
    stable = [r["optimal"]["stable"] for r in results["records"]]
    assert any(stable) and not all(stable)  # the check above is not vacuous


def test_optimal_never_certifies_less_than_vanilla(study):
    rows = {(r["extension"], r["method"], r["perturbation"], r["eps"]): r["cba"] for r in study[4]["cba"]}
    for (ext, m, p, e), cba in rows.items():
        if ext == "optimal":
            assert cba >= rows[("vanilla", m, p, e)]
    assert any(cba > rows[("vanilla",) + k[1:]] for k, cba in rows.items() if k[0] == "optimal")


def test_results_json_holds_every_bound_and_timing(study):
    _, images, _, out, results = study
    saved = json.loads((out / "results.json").read_text())
    n_expected = len(images) * sum(len(CONFIG.eps[p]) for p in CONFIG.perturbations) * len(CONFIG.methods)
    assert len(saved["records"]) == n_expected
    rec = saved["records"][-1]
    assert len(rec["box_lower"]) == 4 and rec["time_box"] > 0 and rec["optimal"]["time"] > 0
    assert len(rec["optimal"]["lower_box"]) == 4
    # the box bounds contain the clean box
    for r in saved["records"]:
        clean = saved["clean_boxes"][r["image"]]
        assert all(lo - 1e-4 <= c <= hi + 1e-4 for lo, c, hi in zip(r["box_lower"], clean, r["box_upper"]))


def test_resume_reuses_finished_units_and_recomputes_missing_or_broken_ones(tmp_path):
    model = tiny_detector()
    images, boxes = block_images(POSITIONS[:2])
    cfg = VerifyConfig(perturbations=["noise", "brightness"], eps={"noise": [0.001], "brightness": [0.01]},
                       methods=["IBP"], workers=1)
    first = run_verification(model, images, boxes, cfg, tmp_path, progress=False)
    assert first["computed_units"] == 4
    again = run_verification(model, images, boxes, cfg, tmp_path, progress=False)
    assert again["computed_units"] == 0 and again["records"] == first["records"]
    (tmp_path / "parts" / "img000001_noise.json").unlink()
    (tmp_path / "parts" / "img000000_brightness.json").write_text("{ broken")
    third = run_verification(model, images, boxes, cfg, tmp_path, progress=False)
    assert third["computed_units"] == 2
    # another threshold is another configuration: its folder is refused, never silently replaced
    cfg2 = VerifyConfig(**{**cfg.__dict__, "threshold": 0.6})
    with pytest.raises(UserError, match=r"another job \(threshold: 0.5 then, 0.6 now\).*--overwrite"):
        run_verification(model, images, boxes, cfg2, tmp_path, progress=False)
    replaced = run_verification(model, images, boxes, cfg2, tmp_path, progress=False, overwrite=True)
    assert replaced["computed_units"] == 4
    # so is another detector
    with pytest.raises(UserError, match="another job"):
        run_verification(tiny_detector(seed=1), images, boxes, cfg2, tmp_path, progress=False)


def test_worker_pool_gives_the_same_bounds(tmp_path):
    model = tiny_detector()
    images, boxes = block_images(POSITIONS[:1])
    cfg = VerifyConfig(perturbations=["noise", "brightness"], eps={"noise": [0.002], "brightness": [0.02]},
                       methods=["CROWN"], workers=2)
    pooled = run_verification(model, images, boxes, cfg, tmp_path / "pool", progress=False)
    cfg.workers = 1
    serial = run_verification(model, images, boxes, cfg, tmp_path / "serial", progress=False)
    assert pooled["computed_units"] == 2 and len(pooled["records"]) == 2
    assert pooled["engine"]["name"] == "local pool" and serial["engine"]["name"] == "serial"
    strip = ("time_box", "time")
    for a, b in zip(pooled["records"], serial["records"]):  # one torch thread everywhere: bit-identical
        assert {k: v for k, v in a.items() if k not in strip and k not in ("vanilla", "optimal")} == \
            {k: v for k, v in b.items() if k not in strip and k not in ("vanilla", "optimal")}
        assert a["optimal"]["lower"] == b["optimal"]["lower"]


class DiesInWorkers(nn.Module):
    """Works in the main process; a worker process running it exits at once (like an OOM kill)."""

    def __init__(self):
        super().__init__()
        self.net = tiny_detector()

    def forward(self, x):
        import multiprocessing
        import os

        if multiprocessing.current_process().name != "MainProcess":
            os._exit(1)
        return self.net(x)


def test_a_dying_worker_gives_a_clear_error_not_a_hang(tmp_path):
    images, boxes = block_images(POSITIONS[:1])
    cfg = VerifyConfig(perturbations=["noise", "brightness"], eps={"noise": [0.002], "brightness": [0.02]},
                       methods=["IBP"], workers=2)
    with pytest.raises(UserError, match="worker process died"):
        run_verification(DiesInWorkers().eval(), images, boxes, cfg, tmp_path, progress=False)


def test_bad_detectors_and_ground_truths_are_rejected(tmp_path):
    images, boxes = block_images(POSITIONS[:1])
    ten = nn.Sequential(nn.Flatten(), nn.Linear(SIDE * SIDE, 10))
    with pytest.raises(UserError, match="4 numbers"):
        check_detector(ten, images[0])
    with pytest.raises(UserError, match="x2 <= x1"):
        run_verification(tiny_detector(), images, torch.tensor([[10.0, 2, 4, 8]]), CONFIG, tmp_path)
    with pytest.raises(UserError, match="unknown method"):
        run_verification(tiny_detector(), images, boxes, VerifyConfig(methods=["DeepPoly"]), tmp_path)
    with pytest.raises(UserError, match="eps"):
        VerifyConfig(perturbations=["noise"], eps={"noise": [-0.1]}).validate()


def test_an_unsupported_method_is_recorded_and_the_run_goes_on(tmp_path):
    """auto_LiRPA 0.3 bounds an overlapping average pool wrongly in its backward (CROWN) pass, so the
    bounds engine refuses it: those (image, method) pairs are recorded as unsupported and never
    certified; IBP still runs on every image."""
    from keypoint.box.report import write_report

    m = tiny_detector()
    pooled = nn.Sequential(m[0], m[1], nn.AvgPool2d(3, stride=1, padding=1), *list(m)[2:]).eval()
    images, boxes = block_images(POSITIONS)
    cfg = VerifyConfig(perturbations=["brightness"], eps={"brightness": [0.01, 0.05]},
                       methods=["IBP", "CROWN"], workers=1)
    results = run_verification(pooled, images, boxes, cfg, tmp_path, progress=False)
    assert sorted((u["image"], u["method"]) for u in results["unsupported"]) == [(0, "CROWN"), (1, "CROWN")]
    assert "AvgPool2d" in results["unsupported"][0]["reason"]
    ibp = [r for r in results["records"] if r["method"] == "IBP"]
    assert len(ibp) == 4 and all("optimal" in r for r in ibp)
    rows = [r for r in results["cba"] if r["method"] == "CROWN"]
    assert rows and all(r["cba"] == 0.0 and r["n_unsupported"] == 2 and r["mean_lower"] is None for r in rows)
    paths = write_report(tmp_path)
    assert "| optimal | CROWN | unsupported | unsupported |" in paths["markdown"].read_text()
