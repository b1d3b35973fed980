"""Keypoint verification end to end on a small trained detector: soundness (no CERTIFIED instance is
contradicted by an attack), coupled ⊇ decoupled, linear ⊇ interval, exact ⊇ linear on the same instances,
confirmed counterexamples violate the spec through the network, one-line errors on bad input."""

import numpy as np
import pytest
import torch
from torch import nn

from geo_rs import Brightness, Contrast, UnsupportedModelError, UserError, Verdict, WhiteNoise
from keypoint import KeypointSpec, KeypointVerification, verify_keypoints, verify_keypoints_decoupled
from keypoint.verify import verify_instance
from keypoint.verify.attack import argmax_uv, pgd_toward
from keypoint.verify.detector import build_detector
from keypoint.verify.toy import K, toy_images, train_toy

pytestmark = pytest.mark.usefixtures("one_thread")

@pytest.fixture(scope="module")
def toy():
    return train_toy_checked()


def train_toy_checked():
    """A plain Sequential detector (the exact level can encode it), trained for a couple of seconds."""
    net = train_toy(250, 0)
    x, kp = toy_images(6, torch.Generator().manual_seed(1))
    pred = argmax_uv(net(x))
    assert np.abs(pred - (kp.numpy() // 2)).max() <= 1  # it learned the task
    return net, x


def attack_hard(net, x, pert, spec, clean, candidates, n=1000, seed=0):
    """Stronger than the verifier's own attack: many random points and PGD toward every candidate."""
    gen = torch.Generator().manual_seed(seed)
    pts = pert.sample(x[None], n, generator=gen)[:, 0]
    uv = argmax_uv(net(pts))
    if any(spec.violated(clean, uv[i]) for i in range(n)):
        return True
    for k, cands in enumerate(candidates):
        for c in cands[1:]:
            targets = clean.copy()
            targets[k] = c
            if pgd_toward(net, x[None], pert, targets, spec, clean, 1.0, steps=15) is not None:
                return True
    return False


CASES = [(0, Brightness(0.4)), (1, Contrast(0.6)), (2, WhiteNoise(0.05))]
SPECS = [KeypointSpec.l1(0), KeypointSpec.l1(1), KeypointSpec.l1(2)]


def check_result(net, img, pert, spec, r, counts):
    counts[r.verdict] += 1
    if r.certified:
        assert not attack_hard(net, img, pert, spec, r.keypoints, r.candidates), (pert, r)
    if r.verdict is Verdict.COUNTEREXAMPLE:
        check_counterexample(net, img, pert, spec, r)


@pytest.mark.slow
def test_certified_is_never_contradicted_and_levels_nest(toy):
    net, xs = toy
    counts = {v: 0 for v in Verdict}
    for i, pert in CASES:
        by_level = {}
        for level in ("interval", "linear"):
            res = verify_instance(
                net,
                xs[i],
                pert,
                SPECS,
                reachable=level,
                bounds_method="CROWN",
                time_limit=10,
                attack={"restarts": 1, "n_random": 32},
            )
            by_level[level] = res
            for j in range(0, len(res), 2):
                coupled, decoupled = res[j], res[j + 1]
                assert coupled.method == "coupled" and decoupled.method == "decoupled"
                # coupled ⊇ decoupled (by construction)
                assert coupled.certified or not decoupled.certified, (level, pert, coupled.spec)
                for r in (coupled, decoupled):
                    check_result(net, xs[i], pert, SPECS[j // 2], r, counts)
        # coupling only helps: linear ⊇ interval
        for a, b in zip(by_level["interval"], by_level["linear"]):
            assert b.certified or not a.certified, (pert, a.spec, a.method)
        assert sum(r.certified for r in by_level["linear"]) >= sum(r.certified for r in by_level["interval"])
    # the exact level (whole network in the MILP) where the linear one is not enough
    i, pert = CASES[1]
    lin, ex = (
        verify_keypoints(net, xs[i], pert, SPECS[2], reachable=lvl, time_limit=10)
        for lvl in ("linear", "exact")
    )
    assert ex.certified or not lin.certified
    check_result(net, xs[i], pert, SPECS[2], ex, counts)
    # the instances are a real mix, so the assertions above could fail
    assert counts[Verdict.CERTIFIED] >= 5 and counts[Verdict.COUNTEREXAMPLE] >= 3, counts


def check_counterexample(net, img, pert, spec, r: KeypointVerification):
    """A confirmed counterexample lies in the set and violates the spec through the network."""
    x2 = r.counterexample
    assert x2.shape == img.shape
    assert float(x2.min()) >= 0 and float(x2.max()) <= 1
    fam = pert.family(img[None])
    radius = fam.noise + float(fam.theta_hi.abs().max() if fam.n_params else 0.0)
    assert float((x2 - img).abs().max()) <= radius + 1e-6
    with torch.no_grad():
        uv = argmax_uv(net(x2[None]))[0]
    assert spec.violated(r.keypoints, uv)
    np.testing.assert_array_equal(uv, r.counterexample_keypoints)


def test_fast_path_and_result_fields(toy, tmp_path):
    net, xs = toy
    r = verify_keypoints(
        net,
        xs[0],
        Brightness(0.08),
        KeypointSpec.l1(0),
        reachable="linear",
        bounds_method="CROWN",
        solver="highs",
        time_limit=20,
        out_dir=tmp_path,
    )
    assert r.keypoints.shape == (K, 2) and len(r.candidates) == K and r.n_candidates[0] >= 1
    assert r.reachable == "linear" and r.solver == "HiGHS" and r.seconds > 0
    if r.verdict is Verdict.COUNTEREXAMPLE:
        check_counterexample(net, xs[0], Brightness(0.08), KeypointSpec.l1(0), r)
        assert (tmp_path / "counterexample.png").is_file() and (tmp_path / "counterexample.pt").is_file()
        saved = torch.load(tmp_path / "counterexample.pt", weights_only=False)
        assert torch.equal(saved["image"], r.counterexample)
    assert (tmp_path / "counterexample.json").is_file()
    d = verify_keypoints_decoupled(
        net, xs[0], Brightness(0.0), KeypointSpec.l1(0), reachable="interval", bounds_method="IBP"
    )
    assert d.verdict is Verdict.CERTIFIED and d.method == "decoupled" and d.per_keypoint == ["CERTIFIED"] * K


def test_a_counterexample_is_found_and_confirmed(toy):
    """ε large enough that the keypoints must move: the verifier returns a confirmed input."""
    net, xs = toy
    spec = KeypointSpec.l1(0)
    r = verify_keypoints(
        net, xs[1], WhiteNoise(0.3), spec, reachable="interval", bounds_method="IBP", time_limit=20
    )
    assert r.verdict is Verdict.COUNTEREXAMPLE
    check_counterexample(net, xs[1], WhiteNoise(0.3), spec, r)


class BoxHead(nn.Module):
    def forward(self, x):
        return x.mean((2, 3))[:, :1].repeat(1, 4)


class DictModel(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return {"heatmaps": self.net(x), "offsets": torch.zeros(1)}


def test_keypoint_models_with_dict_outputs_use_their_heatmaps(toy):
    net, xs = toy
    r = verify_keypoints(
        DictModel(net), xs[0], Brightness(0.01), KeypointSpec.l1(1), reachable="interval", bounds_method="IBP"
    )
    r2 = verify_keypoints(
        net, xs[0], Brightness(0.01), KeypointSpec.l1(1), reachable="interval", bounds_method="IBP"
    )
    np.testing.assert_array_equal(r.keypoints, r2.keypoints)


@pytest.mark.parametrize(
    "call, match",
    [
        (
            lambda net, x: verify_keypoints(net, x, Brightness(0.01), KeypointSpec.weighted([1, 1, 1], 1)),
            "written for 3 keypoints but the model has 2",
        ),
        (
            lambda net, x: verify_keypoints(net, x, Brightness(-0.01), KeypointSpec.l1(1)),
            "eps must be finite and >= 0",
        ),
        (
            lambda net, x: verify_keypoints(BoxHead(), x, Brightness(0.01), KeypointSpec.l1(1)),
            r"heatmaps \(1, K, h, w\)",
        ),
        (lambda net, x: verify_keypoints(DictModel(net), x, 0.01, KeypointSpec.l1(1)), "geo_rs Perturbation"),
        (lambda net, x: verify_keypoints(net, x * 3, Brightness(0.01), KeypointSpec.l1(1)), r"\[0, 1\]"),
        (lambda net, x: verify_keypoints(net, x[None], Brightness(0.01), KeypointSpec.l1(1)), r"\(C, H, W\)"),
        (
            lambda net, x: verify_keypoints(net, x, Brightness(0.01), KeypointSpec.l1(1), reachable="tight"),
            "reachable",
        ),
        (
            lambda net, x: verify_keypoints(net, x, Brightness(0.01), KeypointSpec.l1(1), solver="gurobi"),
            "solver",
        ),
        (
            lambda net, x: verify_keypoints(net, x, Brightness(0.01), KeypointSpec.l1(1), time_limit=0),
            "time_limit",
        ),
        (
            lambda net, x: verify_keypoints(
                net, x, Brightness(0.01), KeypointSpec.l1(1), bounds_method="DeepPoly"
            ),
            "bounds_method",
        ),
        (
            lambda net, x: verify_keypoints(
                net, x[:, :, :15], Brightness(0.01), KeypointSpec.l1(1, unit="input")
            ),
            "integral stride",
        ),
        (lambda net, x: verify_keypoints(net, x[:2], Brightness(0.01), KeypointSpec.l1(1)), "model failed"),
    ],
)
def test_bad_input_is_one_line(toy, call, match):
    net, xs = toy
    with pytest.raises(UserError, match=match) as info:
        call(net, xs[0])
    assert "\n" not in str(info.value)


def test_unsupported_layer_and_exact_on_residual_nets_are_one_line(toy):
    net, xs = toy
    odd = nn.Sequential(nn.Conv2d(3, 4, 3, 1, 1), nn.GELU(), nn.Conv2d(4, K, 3, 2, 1)).eval()
    with pytest.raises(UnsupportedModelError) as info:
        verify_keypoints(odd, xs[0], Brightness(0.01), KeypointSpec.l1(1), reachable="interval")
    assert "\n" not in str(info.value) and "GELU" in str(info.value)
    res = build_detector(num_keypoints=2, heatmap_size=8, width=4, blocks=1, input_size=16, kernel=3).eval()
    with pytest.raises(UserError, match="does not support layer Residual") as info:
        verify_keypoints(res, xs[0], Brightness(0.05), KeypointSpec.l1(0), reachable="exact")
    assert "\n" not in str(info.value)


def test_input_pixel_specs_scale_by_the_stride(toy):
    net, xs = toy
    a = verify_keypoints(
        net, xs[2], WhiteNoise(0.02), KeypointSpec.l1(1), reachable="interval", bounds_method="IBP"
    )
    b = verify_keypoints(
        net,
        xs[2],
        WhiteNoise(0.02),
        KeypointSpec.l1(2, unit="input"),
        reachable="interval",
        bounds_method="IBP",
    )
    assert a.stride == b.stride == 2 and a.verdict == b.verdict
    np.testing.assert_allclose(a.keypoints_input, a.keypoints * 2 + 0.5)


# ----------------------------------------------------------------------------------- bound-engine bugs
class Flat(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x).flatten(1)


def test_bounds_on_a_wrapper_that_reshapes_its_sequential():
    from geo_rs import output_bounds

    net = nn.Sequential(nn.Conv2d(1, 2, 3, 1, 1), nn.ReLU(), nn.Conv2d(2, 2, 1)).eval()
    x = torch.rand(1, 1, 8, 8)
    lo, hi = output_bounds(Flat(net), x, Brightness(0.01), "IBP")
    assert lo.shape == (1, 128)
    for b in torch.linspace(-0.01, 0.01, 21):  # brightness shifts inside the set stay inside the bounds
        y = Flat(net)(x + b)
        assert (y >= lo - 1e-6).all() and (y <= hi + 1e-6).all()


@pytest.mark.parametrize("method", ["CROWN", "CROWN-IBP", "IBP"])
def test_crown_through_nearest_upsample_with_image_output(method):
    from geo_rs import output_bounds

    net = nn.Sequential(
        nn.Conv2d(1, 2, 3, 2, 1), nn.ReLU(), nn.Upsample(scale_factor=2), nn.Conv2d(2, 2, 3, 1, 1)
    ).eval()
    x = torch.rand(1, 1, 8, 8)
    lo, hi = output_bounds(net, x, Brightness(0.01), method)
    assert lo.shape == (1, 128)
    for b in torch.linspace(-0.01, 0.01, 21):  # brightness shifts inside the set stay inside the bounds
        y = net(x + b).flatten(1)
        assert (y >= lo - 1e-6).all() and (y <= hi + 1e-6).all()


def test_float_deviation_bounds_float32_against_float64_on_the_set():
    """The float32 margin (issue 9: output_bounds has none) is a real bound: float32 outputs on sampled
    points of the set stay within ``dev`` of the float64 network's, and the analysis covers Residual."""
    import copy

    from keypoint.verify.float_margin import float_deviation
    from keypoint.verify.reachable import flat_model

    torch.manual_seed(0)
    net = build_detector(num_keypoints=2, heatmap_size=8, width=4, blocks=1, input_size=16, kernel=3).eval()
    with torch.no_grad():  # non-trivial BN statistics
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    flat = flat_model(net)
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    for pert in (Brightness(0.1), Contrast(0.2), WhiteNoise(0.05)):
        fm = float_deviation(flat, x, pert)
        assert fm is not None and fm.rigorous and (fm.dev > 0).all()
        pts = pert.sample(x, 64, generator=torch.Generator().manual_seed(1))[:, 0]
        f64 = copy.deepcopy(flat).double()
        with torch.no_grad():
            gap = (flat(pts).double() - f64(pts.double())).abs().numpy()
        assert (gap <= fm.dev[None]).all()
        assert fm.dev.max() < 1e-3  # and small enough to be useful
    assert float_deviation(nn.Sequential(nn.Conv2d(3, 2, 3), nn.GELU()), x, WhiteNoise(0.01)) is None


@pytest.mark.parametrize("status", ["Not Solved", "Undefined", "Infeasible-at-time-limit"])
def test_no_certificate_unless_the_solver_proved_it(toy, monkeypatch, status):
    """A MILP that did not prove infeasibility (time-out, solver error, an 'infeasible' at the time
    limit) never becomes CERTIFIED: only bound-only proofs remain."""
    import geo_rs
    from geo_rs.bounds.milp_result import MilpResult

    def unproved(prob, solver="CBC", time_limit=None, msg=False):
        return MilpResult(Verdict.UNKNOWN, False, None, None, solver, status, "No Solution Found", 1.0, 0, 0,
                          0)

    monkeypatch.setattr(geo_rs, "solve_milp", unproved)
    net, xs = toy
    solved = 0
    for spec in (KeypointSpec.l1(0), KeypointSpec.l1(2)):
        for method in ("coupled", "decoupled"):
            (r,) = verify_instance(net, xs[0], Brightness(0.4), [spec], "linear", "IBP", (method,), "cbc", 5,
                                   attack={"n_random": 4, "restarts": 0, "steps": 2})
            solved += status in r.status
            assert r.proof != "milp", (spec, method, r.proof, r.status)
            assert not r.certified or "milp" not in r.proof
    assert solved  # the MILP path was exercised
