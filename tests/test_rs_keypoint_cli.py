"""``geo-rs keypoint certify-rs`` / ``pose-bound`` / ``make-data --posed`` and ``box verify --certifier
median-smoothing``: end to end on tiny data, resumable and partition-independent, and one-line errors."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from geo_rs.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")


def _one_error_line(capsys, *needles):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    for needle in needles:
        assert needle in err[0], (needle, err[0])


@pytest.fixture(scope="module")
def posed(tmp_path_factory):
    """4 posed images (runway + cuboid, 64 px) and a 1-epoch heatmap checkpoint trained on them."""
    from keypoint.train import train

    root = tmp_path_factory.mktemp("posed")
    data = root / "data"
    assert main(["keypoint", "make-data", str(data), "--posed", "runway", "cuboid", "--num-images", "4",
                 "--image-size", "64"]) == 0
    assert (data / "cameras.json").is_file() and (data / "annotations.json").is_file()
    torch.set_num_threads(1)
    model = {"type": "heatmap", "width": 4, "context_levels": 0}
    cfg = {"name": "t", "out_dir": str(root / "run"), "model": model,
           "data": {"source": "coco", "train_json": str(data / "annotations.json"),
                    "val_json": str(data / "annotations.json"), "input_size": 32},
           "train": {"epochs": 1, "batch_size": 4, "noise_sigma": 0.1, "diagnostics": False}}
    train(cfg, quiet=True, evaluate_after=False)
    return {"data": data, "ckpt": root / "run" / "last.pt"}


def _rs(posed, out, *extra):
    return ["keypoint", "certify-rs", str(posed["ckpt"]), "--data", str(posed["data"]), "--n", "40",
            "--sigma", "0.05", "--alpha", "0.01", "--batch-size", "16", "--out", str(out), "--quiet", *extra]


def test_certify_rs_end_to_end_resume_and_partition(posed, tmp_path, capsys):
    assert main(_rs(posed, tmp_path / "a", "--eps", "0", "0.01", "1")) == 0
    for name in ("results.json", "table.md", "table.csv", "fig_certified.png"):
        assert (tmp_path / "a" / name).is_file(), name
    res = json.loads((tmp_path / "a" / "results.json").read_text())
    assert [r["eps"] for r in res["rows"]] == [0.0, 0.01, 1.0] and len(res["instances"]) == 4
    first = res["instances"][0]
    lo0, hi0 = np.array(first["eps"]["0.0"]["lower"], float), np.array(first["eps"]["0.0"]["upper"], float)
    med = np.array(first["median"])
    assert (lo0 <= med).all() and (med <= hi0).all()
    lo1 = np.array(first["eps"]["0.01"]["lower"], float)
    assert (lo1 <= lo0).all()  # a larger ball never gives a tighter box
    # ε = 1 > max certifiable radius at n = 40: every bound is unbounded (null), nothing certified
    assert res["rows"][2]["bounded"] == 0.0 and all(v == 0.0 for v in res["rows"][2]["within"].values())
    assert all(v is None for row in first["eps"]["1.0"]["lower"] for v in row)
    # resume: nothing recomputed; the first 2 images in a separate run give the same boxes (per-unit seeds)
    assert main(_rs(posed, tmp_path / "a", "--eps", "0", "0.01", "1")) == 0
    assert "0 instances computed, 4 resumed" in capsys.readouterr().out
    assert main(_rs(posed, tmp_path / "b", "--eps", "0", "0.01", "1", "--images", "2")) == 0
    part = json.loads((tmp_path / "b" / "results.json").read_text())["instances"]
    assert [p["eps"] for p in part] == [p["eps"] for p in res["instances"][:2]]


def test_pose_bound_median_smoothing(posed, tmp_path, capsys):
    args = ["keypoint", "pose-bound", str(posed["ckpt"]), "--data", str(posed["data"]), "--images", "2",
            "--n", "40", "--sigma", "0.05", "--alpha", "0.01", "--eps", "0", "1", "--time-limit", "3",
            "--max-rot-deg", "90", "--figures", "1", "--out", str(tmp_path), "--quiet"]
    assert main(args) == 0
    res = json.loads((tmp_path / "results.json").read_text())
    assert (tmp_path / "summary.md").is_file() and len(list((tmp_path / "figures").glob("*.png"))) == 1
    for image in res["images"]:
        at0, at1 = image["records"]
        assert at1["verdict"] == "abstain"  # unbounded boxes: no pose statement
        if at0["verdict"] != "abstain":
            assert at0["rotation_deg"] >= 0 and at0["translation"] >= 0
            if at0["solver_covered"]:  # the solved pose is one the proof covers
                assert at0["pose_rotation_error_deg"] <= at0["rotation_deg"] + 1e-9
                assert at0["pose_translation_error"] <= at0["translation"] + 1e-9
            ok = at0["rotation_deg"] <= 90 and at0["translation"] <= at0["max_trans"]
            proved = at0["solver_covered"] and not any(at0["outside_region"])
            covered = "certified" if proved else "not covered"
            assert at0["verdict"] == (covered if ok else "not certified")
    assert [r["eps"] for r in res["summary"]] == [0.0, 1.0] and res["summary"][1]["abstain"] == 1.0


def _candidates(posed, half: float = 1.0) -> dict:
    """Hand-made candidate sets: every keypoint's ground truth and two pixels ±half px beside it."""
    from keypoint.data.posed import load_posed

    data, cameras, points = load_posed(posed["data"], load_images=False)
    images = []
    for s in data.samples[:2]:
        kp = s.annotations[0].keypoints.astype(float)
        images.append({"image_id": s.image_id, "candidates": [[[x, y], [x - half, y], [x + half, y + half]]
                                                              for x, y in kp.tolist()]})
    return {"eps": 0.01, "images": images}


def test_pose_bound_milp_candidate_file_is_sound_on_enumerated_configurations(posed, tmp_path):
    from geo_rs import rotation_error_deg, solve_pnp
    from keypoint.data.posed import load_posed

    cand = _candidates(posed)
    path = tmp_path / "cands.json"
    path.write_text(json.dumps(cand))
    args = ["keypoint", "pose-bound", str(posed["ckpt"]), "--data", str(posed["data"]), "--certifier", "milp",
            "--candidates", str(path), "--time-limit", "5", "--figures", "1", "--out", str(tmp_path / "o"),
            "--quiet"]
    assert main(args) == 0
    res = json.loads((tmp_path / "o" / "results.json").read_text())
    assert len(res["images"]) == 2 and res["summary"][0]["eps"] == 0.01
    data, cameras, points = load_posed(posed["data"], load_images=False)
    rec = res["images"][0]["records"][0]
    cam = cameras[0]
    pts = points[cam.category_id]
    cands = [np.array(c) for c in cand["images"][0]["candidates"]]
    rng = np.random.default_rng(0)
    for _ in range(30):  # configurations of the finite set (3^K of them; sampled), solved as a user would
        config = np.stack([c[rng.integers(len(c))] for c in cands])
        pose = solve_pnp(pts, config, cam.K)
        assert rotation_error_deg(pose.R, cam.R) <= rec["rotation_deg"] + 1e-9
        assert np.linalg.norm(pose.t - cam.t) <= rec["translation"] + 1e-9


def _pose_bound_milp(posed, tmp_path, doc: dict, *extra: str) -> dict:
    """Run ``pose-bound --certifier milp`` on the candidate file ``doc``; its first record per image id."""
    path = tmp_path / "cands.json"
    path.write_text(json.dumps(doc))
    args = ["keypoint", "pose-bound", str(posed["ckpt"]), "--data", str(posed["data"]), "--certifier", "milp",
            "--candidates", str(path), "--out", str(tmp_path / "o"), "--quiet", *extra]
    assert main(args) == 0
    res = json.loads((tmp_path / "o" / "results.json").read_text())
    return {im["image_id"]: im["records"][0] for im in res["images"]}


def test_pose_bound_milp_sets_beyond_the_region_or_degenerate_are_never_certified(posed, tmp_path):
    from keypoint.data.posed import load_posed

    data, _, _ = load_posed(posed["data"], load_images=False)
    s0, s1 = data.samples[:2]
    grid = [(dx, dy) for dx in (-12, 0, 12) for dy in (-12, 0, 12)]
    wide = [[[x + dx, y + dy] for dx, dy in grid] for x, y in s0.annotations[0].keypoints.tolist()]
    same = [[[30.0, 30.0], [31.0, 31.0]] for _ in s1.annotations[0].keypoints]  # centres coincide
    doc = {"eps": 0.01, "images": [{"image_id": s0.image_id, "candidates": wide},
                                   {"image_id": s1.image_id, "candidates": same}]}
    by_id = _pose_bound_milp(posed, tmp_path, doc, "--time-limit", "3", "--max-rot-deg", "180",
                             "--max-trans", "1e9")
    wide_rec, same_rec = by_id[s0.image_id], by_id[s1.image_id]
    assert max(wide_rec["outside_region"]) > 0 and wide_rec["verdict"] == "not covered"
    assert same_rec["verdict"] == "abstain" and "2D spread" in same_rec["reason"]


def test_box_verify_median_smoothing_row(tmp_path, capsys):
    model = tmp_path / "m.pt"
    assert main(["box", "train", "--out", str(model), "--epochs", "1", "--n-train", "16", "--n-eval", "2",
                 "--batch-size", "8", "--quiet"]) == 0
    coco = tmp_path / "coco"
    assert main(["box", "export-mnist", "--images", "2", "--out", str(coco)]) == 0
    out = tmp_path / "v"
    args = ["box", "verify", "--model", str(model), "--data", str(coco), "--images", "2", "--perturbation",
            "noise", "contrast", "--eps", "0", "0.001", "--method", "IBP", "--certifier", "bounds",
            "median-smoothing", "--n", "30", "--sigma", "0.1", "--alpha", "0.01", "--l2-eps", "0", "5",
            "--workers", "1", "--quiet", "--out", str(out)]
    assert main(args) == 0
    md = (out / "cba.md").read_text()
    assert "| optimal | median-smoothing |" in md and "| optimal | IBP |" in md
    assert "L∞ ball inside (ε/√d)" in md and "r = ε·√d = 90·ε" in md
    res = json.loads((out / "results.json").read_text())
    rs = [r for r in res["records"] if r["method"] == "median-smoothing"]
    assert len(rs) == 2 * (2 + 2 + 2)  # images × (noise, contrast, l2) × 2 ε
    for r in rs:
        if r["perturbation"] == "noise":
            assert r["l2_radius"] == pytest.approx(r["eps"] * 90)
        if r["perturbation"] == "l2" and r["eps"] == 5:  # beyond the largest certifiable radius at n = 30
            assert r["abstain"] and not r["optimal"]["stable"] and r["box_lower"] == [None] * 4
        if not r["abstain"]:
            assert all(a <= m <= b for a, m, b in zip(r["box_lower"], r["median_box"], r["box_upper"]))
            assert r["optimal"]["lower"] <= r["optimal"]["upper"]
    capsys.readouterr()
    assert main(args) == 0  # resumed
    assert "0 units computed" in capsys.readouterr().out


def test_l2_balls_contain_the_perturbation_sets():
    """The L2 radius median smoothing certifies contains every (clamped) image of the L∞-type sets."""
    from keypoint.box.rs import l2_radius

    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 12, 12, generator=g)
    for _ in range(200):
        eps = float(torch.rand(1, generator=g)) * 0.3
        noise = (torch.rand(x.shape, generator=g) * 2 - 1) * eps
        b = (float(torch.rand(1, generator=g)) * 2 - 1) * eps
        c = 1 + (float(torch.rand(1, generator=g)) * 2 - 1) * eps
        for name, moved in (("noise", x + noise), ("brightness", x + b), ("contrast", c * x)):
            assert float((moved.clamp(0, 1) - x).norm()) <= l2_radius(name, eps, x) + 1e-6
    assert l2_radius("l2", 0.3, x) == 0.3 and math.isclose(l2_radius("noise", 1.0, x), 12.0)


@pytest.mark.parametrize(
    "extra, needles",
    [
        (["--certifier", "magic"], ["unknown certifier 'magic'"]),
        (["--l2-eps", "0.1"], ["--l2-eps", "median-smoothing"]),
        (["--certifier", "median-smoothing", "--sigma", "0"], ["sigma"]),
        (["--certifier", "median-smoothing", "--alpha", "1.5"], ["alpha"]),
        (["--certifier", "median-smoothing", "--l2-eps", "-1"], ["eps must be finite and >= 0"]),
    ],
)
def test_box_rs_bad_input_is_one_line(extra, needles, tmp_path, capsys):
    rc = main(["box", "verify", "--images", "1", "--workers", "1", "--quiet", "--out", str(tmp_path)] + extra)
    assert rc == 2
    _one_error_line(capsys, *needles)


def _edit_cameras(posed, tmp_path, edit):
    import shutil

    folder = tmp_path / "d"
    shutil.copytree(posed["data"], folder)
    doc = json.loads((folder / "cameras.json").read_text())
    edit(doc)
    (folder / "cameras.json").write_text(json.dumps(doc))
    return folder


def _cam_K_2x2(doc):
    doc["cameras"][0]["K"] = [[1, 0], [0, 1]]


def _first_category(doc) -> dict:
    cat = doc["cameras"][0]["category_id"]
    return next(c for c in doc["categories"] if c["id"] == cat)


def _collinear_runway(doc):
    c = _first_category(doc)
    c["points_3d"] = [[float(i), 0.0, 0.0] for i in range(len(c["points_3d"]))]


def _three_3d_points(doc):
    c = _first_category(doc)
    c["points_3d"] = c["points_3d"][:3]


@pytest.mark.parametrize(
    "edit, extra, needles",
    [
        (None, ["--certifier", "milp"], ["--certifier milp needs --candidates FILE"]),
        (None, ["--candidates", "x.json"], ["--candidates goes with --certifier milp"]),
        (None, ["--eps", "-0.1"], ["--eps"]),
        (None, ["--sigma", "0"], ["--sigma"]),
        (None, ["--n", "0"], ["--n"]),
        (None, ["--alpha", "1"], ["--alpha"]),
        (None, ["--max-rot-deg", "-1"], ["--max-rot-deg"]),
        (_cam_K_2x2, [], ["cameras[0] needs K (3, 3)"]),
        (_collinear_runway, ["--images", "1"], ["degenerate"]),
        (_three_3d_points, [], ["3 3D keypoints", "annotations have"]),
    ],
)
def test_pose_bound_bad_input_is_one_line(posed, tmp_path, capsys, edit, extra, needles):
    data = _edit_cameras(posed, tmp_path, edit) if edit else posed["data"]
    args = ["keypoint", "pose-bound", str(posed["ckpt"]), "--data", str(data), "--n", "20", "--eps", "0",
            "--time-limit", "2", "--figures", "0", "--out", str(tmp_path / "o"), "--quiet", *extra]
    assert main(args) == 2
    _one_error_line(capsys, *needles)


def _write(tmp_path, doc) -> str:
    path = tmp_path / "c.json"
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return str(path)


@pytest.mark.parametrize(
    "make, needles",
    [
        (lambda c: {"images": []}, ["'images' is empty"]),
        (lambda c: "{not json", ["not valid JSON"]),
        (lambda c: {"images": [{**c["images"][0], "candidates": c["images"][0]["candidates"][:3]}]},
         ["candidate lists (one per keypoint), got 3"]),
        (lambda c: {"images": [{**c["images"][0], "candidates": [[]] + c["images"][0]["candidates"][1:]}]},
         ["candidates[0]", "non-empty"]),
        (lambda c: {"images": [{"image_id": 999, "candidates": []}]}, ["image_id 999 is not in --data"]),
        (lambda c: {"eps": -1, "images": c["images"]}, ["'eps' must be a finite number"]),
        (lambda c: {"images": c["images"][:1] * 2}, ["images[1]", "listed twice"]),
        (lambda c: {"images": c["images"], "omitted": {}}, ["'omitted' must be a list"]),
        (lambda c: {"images": c["images"], "omitted": [{"image_id": c["images"][0]["image_id"]}]},
         ["omitted[0]", "also has a candidate set"]),
    ],
)
def test_candidate_file_bad_input_is_one_line(posed, tmp_path, capsys, make, needles):
    path = _write(tmp_path, make(_candidates(posed)))
    args = ["keypoint", "pose-bound", str(posed["ckpt"]), "--data", str(posed["data"]), "--certifier", "milp",
            "--candidates", path, "--figures", "0", "--out", str(tmp_path / "o"), "--quiet"]
    assert main(args) == 2
    _one_error_line(capsys, *needles)


@pytest.mark.parametrize(
    "points, kset, K, needle",
    [
        (np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0.0]]), None, None, "4"),
        (np.random.default_rng(0).normal(size=(5, 3)), None, None, "6"),
        (np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0.0]]), "swapped", None, "lower"),
        (np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0.0]]), "empty", None, "empty"),
        (np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0.0]]), None, np.eye(2), "3"),
    ],
)
def test_pose_bound_api_bad_input_is_one_user_error(points, kset, K, needle):
    from geo_rs import UserError, pose_error_bound

    n = len(points)
    u = np.tile([[64.0, 64.0]], (n, 1)) + np.arange(n)[:, None]
    sets = {None: (u - 1, u + 1), "swapped": (u + 1, u - 1), "empty": [np.zeros((0, 2))] * n}[kset]
    K = np.array([[100, 0, 64], [0, 100, 64], [0, 0, 1.0]]) if K is None else K
    with pytest.raises(UserError) as info:
        pose_error_bound(points, sets, K, (np.eye(3), np.array([0, 0, 5.0])), time_limit_s=1)
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_huge_radius_abstains_instead_of_failing():
    """ε ≫ σ makes Φ(−ε/σ) underflow to 0: every bound is ±inf (abstain), for fast and naive alike."""
    from geo_rs.median_smoothing import certify_from_samples

    samples = torch.randn(2, 50, 3, generator=torch.Generator().manual_seed(0))
    for naive in (False, True):
        cert = certify_from_samples(samples, 5.0, 0.1, 0.01, naive=naive)
        assert torch.isinf(cert.lower).all() and torch.isinf(cert.upper).all() and cert.index_lower == 0


# ----------------------------------------------------------------- keypoint verify → pose-bound --candidates
def _verify_to_candidates(posed, out) -> dict:
    """``geo-rs keypoint verify`` on the posed folder (2 instances, a tiny brightness ε, interval level)."""
    args = ["keypoint", "verify", str(posed["ckpt"]), "--data", str(posed["data"]), "--images", "2",
            "--perturbation", "brightness", "--eps", "1e-6", "--reachable", "interval", "--bounds-method",
            "IBP", "--spec", "l1:0", "--method", "coupled", "--time-limit", "1", "--attack-random", "0",
            "--quiet", "--out", str(out)]
    assert main(args) == 0
    files = sorted((out / "candidates").glob("*.json"))
    assert [f.name for f in files] == ["brightness_1e-06_interval_cbc.json"]
    return json.loads(files[0].read_text())


def test_verify_candidate_sets_map_to_image_pixels_by_hand(posed, tmp_path):
    """The exported sets are the verifier's heatmap cells mapped by the crop geometry computed by hand:
    x = left + (j + ½)·side / heatmap width − ½, side = padding · max(w, h) of the COCO box, centred on it
    (the − ½: COCO pixel j spans [j, j + 1); pose-bound and cameras.json put pixel centres at integers)."""
    doc = _verify_to_candidates(posed, tmp_path / "v")
    ck = torch.load(posed["ckpt"], map_location="cpu", weights_only=False)
    coco = json.loads((posed["data"] / "annotations.json").read_text())
    recs = json.loads((tmp_path / "v" / "results.json").read_text())["records"]
    assert doc["eps"] == 1e-6 and doc["perturbation"] == "brightness" and doc["omitted"] == []
    assert [e["image_id"] for e in doc["images"]] == [im["id"] for im in coco["images"][:2]]
    from keypoint.data.dataset import KeypointLayout

    layout = KeypointLayout.from_dict(ck["layout"])
    for entry, rec in zip(doc["images"], recs, strict=True):
        ann = next(a for a in coco["annotations"] if a["image_id"] == entry["image_id"])
        assert (rec["image_id"], rec["annotation"]) == (ann["image_id"], 0)
        assert rec["category_id"] == ann["category_id"]
        x, y, w, h = ann["bbox"]
        side = max(w, h) * float(ck["padding"])
        cell = side / (int(ck["input_size"]) / rec["stride"])  # image pixels per heatmap cell
        left, top = x + w / 2 - side / 2 - 0.5, y + h / 2 - side / 2 - 0.5
        channels = layout.channels(ann["category_id"])
        assert len(entry["candidates"]) == len(channels) == len(ann["keypoints"]) // 3
        for k, ch in enumerate(channels):
            cells = np.asarray(rec["candidates"][ch], float)
            expect = np.stack([left + (cells[:, 0] + 0.5) * cell, top + (cells[:, 1] + 0.5) * cell], 1)
            assert np.allclose(entry["candidates"][k], expect, atol=1e-9)
    # the clean argmax cell contains the detector's own (sub-pixel refined) keypoint: same convention
    from keypoint.checkpoints import load_checkpoint
    from keypoint.data.coco import load_coco
    from keypoint.data.dataset import KeypointCropDataset, apply_affine, crop_affine

    model, _ = load_checkpoint(posed["ckpt"])
    ds = KeypointCropDataset(load_coco(posed["data"] / "annotations.json"), int(ck["input_size"]),
                             float(ck["padding"]))
    for n, entry in enumerate(doc["images"]):
        item = ds[n]
        with torch.no_grad():
            kp, _ = model.decode(model(item["image"][None]))
        i, j = ds.items[n]
        ann = ds.data.samples[i].annotations[j]
        affine = crop_affine(ann.box, ds.input_size, ds.padding)
        decoded = apply_affine(kp[0, layout.channels(ann.category_id)].double().numpy(), affine)
        first = np.array([c[0] for c in entry["candidates"]])
        half_cell = 0.5 * recs[n]["stride"] * affine[0, 0]
        assert (np.abs(decoded - first) <= half_cell + 1e-4).all()


def test_verify_candidates_drive_pose_bound_and_omitted_images_abstain(posed, tmp_path):
    from geo_rs import rotation_error_deg, solve_pnp
    from keypoint.data.posed import load_posed

    doc = _verify_to_candidates(posed, tmp_path / "v")
    first, second = doc["images"]
    # an image the verifier gave no set (as it lists one whose stride is not integral): no pose statement
    doc["images"] = [first]
    doc["omitted"] = [{"image_id": second["image_id"], "annotation": 0, "reason": "stride not integral"}]
    by_id = _pose_bound_milp(posed, tmp_path, doc, "--time-limit", "2", "--max-rot-deg", "90",
                             "--figures", "2")
    assert set(by_id) == {first["image_id"], second["image_id"]}
    omitted = by_id[second["image_id"]]
    assert omitted["verdict"] == "abstain"
    assert "no certified keypoint set: stride not integral" in omitted["reason"]
    rec = by_id[first["image_id"]]
    assert rec["candidates"] == first["candidates"] and rec["eps"] == 1e-6
    assert rec["set_notes"] == first["notes"]  # e.g. float32 bounded heuristically: carried along
    res = json.loads((tmp_path / "o" / "results.json").read_text())
    assert res["summary"][0]["abstain"] == 0.5
    summary = (tmp_path / "o" / "summary.md").read_text()
    assert "ε (brightness)" in summary
    data, cameras, points = load_posed(posed["data"], load_images=False)
    cam = next(c for c in cameras if c.image_id == first["image_id"])
    pts = points[cam.category_id]
    cands = [np.array(c) for c in first["candidates"]]
    rng = np.random.default_rng(0)
    for _ in range(20):  # configurations of the finite set, solved as a user would: inside the bound
        pose = solve_pnp(pts, np.stack([c[rng.integers(len(c))] for c in cands]), cam.K)
        assert rotation_error_deg(pose.R, cam.R) <= rec["rotation_deg"] + 1e-9
        assert np.linalg.norm(pose.t - cam.t) <= rec["translation"] + 1e-9


def test_candidate_export_omits_what_it_cannot_map():
    """Records without input-pixel candidates, or with fewer heatmaps than the category uses, are omitted
    with a reason; spec × method records of one unit give one entry; synthetic crops name no image."""
    from keypoint.verify.export import InstanceRef, candidate_documents

    affine = np.array([[2.0, 0, 1.5], [0, 2.0, -0.5]])
    head = {"perturbation": "noise", "eps": 0.01, "reachable": "linear", "solver": "CBC", "notes": []}
    recs = [
        {**head, "image": 0, "candidates_input": [[[0.0, 0.0], [1.0, 2.0]], [[3.0, 3.0]]], "spec": "a"},
        {**head, "image": 0, "candidates_input": [[[0.0, 0.0], [1.0, 2.0]], [[3.0, 3.0]]], "spec": "b"},
        {**head, "image": 1, "candidates_input": None},
        {**head, "image": 2, "candidates_input": [[[0.0, 0.0]]]},
        {**head, "image": 3, "candidates_input": [[[0.0, 0.0]], [[1.0, 1.0]]]},
    ]
    refs = [InstanceRef(10 + i, 0, 1, (1, 0), affine) for i in range(3)] + [None]
    (stem, doc), = candidate_documents(recs, refs).items()
    assert stem == "noise_0.01_linear_cbc" and doc["eps"] == 0.01
    assert [e["image_id"] for e in doc["images"]] == [10]
    assert doc["images"][0]["candidates"] == [[[7.5, 5.5]], [[1.5, -0.5], [3.5, 3.5]]]  # channels (1, 0)
    reasons = {o.get("image_id", o.get("image")): o["reason"] for o in doc["omitted"]}
    assert set(reasons) == {11, 12, 3}
    assert "stride" in reasons[11] and "1 heatmaps" in reasons[12] and "COCO" in reasons[3]
