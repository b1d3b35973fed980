"""MILP encodings: exact extrema inside the bounds and attained by a concrete input; verdicts never
confused; the argmax gadget selects exactly the possible maximisers (ties included)."""

from __future__ import annotations

import itertools

import pulp
import pytest
import torch
from torch import nn

from geo_rs import (
    Brightness,
    Contrast,
    UserError,
    Verdict,
    WhiteNoise,
    add_argmax,
    add_bounded_variables,
    encode_network,
    output_bounds,
    output_extremum,
    prune_candidates,
    solve_milp,
    verify_linear,
)
from geo_rs.bounds.milp_relu import dense_affine

pytestmark = pytest.mark.usefixtures("one_thread")


def small_cnn() -> nn.Sequential:
    torch.manual_seed(4)
    return nn.Sequential(
        nn.Conv2d(1, 2, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(2 * 3 * 3, 6),
        nn.ReLU(),
        nn.Linear(6, 3),
    ).eval()


def image() -> torch.Tensor:
    x = torch.rand(1, 1, 6, 6, generator=torch.Generator().manual_seed(2))
    x[..., :2, :] = 0.0  # exact zeros and ones: clamping is active
    x[..., -1, :3] = 1.0
    return x


@pytest.mark.parametrize(
    "pert",
    [WhiteNoise(0.05), Brightness(0.1), Contrast(0.2) + Brightness(0.05)],
    ids=["noise", "brightness", "contrast+brightness"],
)
def test_exact_extremum_is_attained_and_inside_the_bounds(pert):
    net, x = small_cnn(), image()
    bounds = {m: output_bounds(net, x, pert, m) for m in ["IBP", "CROWN"]}
    with torch.no_grad():
        samples = net(pert.sample(x, 4000, generator=torch.Generator().manual_seed(0)).flatten(0, 1))
    for sense in ["max", "min"]:
        r = output_extremum(net, x, pert, output=1, sense=sense)
        assert r.exact and r.milp.verdict is Verdict.COUNTEREXAMPLE
        # attained: the recovered input really gives that value, and it lies in the set
        assert abs(r.model_value - r.value) <= 1e-4 * max(1.0, abs(r.value))
        lo_box, hi_box = pert.input_box(x)
        assert bool((r.input >= lo_box - 1e-6).all() and (r.input <= hi_box + 1e-6).all())
        for m, (lo, hi) in bounds.items():
            assert float(lo[0, 1]) - 1e-5 <= r.value <= float(hi[0, 1]) + 1e-5, (m, sense)
        if sense == "max":
            assert r.value >= float(samples[:, 1].max()) - 1e-5
        else:
            assert r.value <= float(samples[:, 1].min()) + 1e-5


def test_cbc_and_highs_agree_and_crown_prunes_binaries():
    net, x, pert = small_cnn(), image(), WhiteNoise(0.05)
    cbc = output_extremum(net, x, pert, c=torch.tensor([1.0, -1.0, 0.0]), sense="max", solver="CBC")
    highs = output_extremum(net, x, pert, c=torch.tensor([1.0, -1.0, 0.0]), sense="max", solver="HiGHS")
    assert cbc.exact and highs.exact
    assert abs(cbc.value - highs.value) <= 1e-5
    ibp_only = encode_network(net, x, pert, bounds_method=None)
    crown = encode_network(net, x, pert, bounds_method="CROWN")
    assert crown.n_binaries <= ibp_only.n_binaries


def test_verify_linear_certifies_or_returns_a_confirmed_counterexample():
    net, x, pert = small_cnn(), image(), Brightness(0.1)
    c = torch.tensor([0.0, 0.0, 1.0])
    low = output_extremum(net, x, pert, c=c, sense="min").value
    ok = verify_linear(net, x, pert, c, threshold=low - 1e-3)
    assert ok.verdict is Verdict.CERTIFIED and ok.certified and ok.counterexample is None
    bad = verify_linear(net, x, pert, c, threshold=low + 1e-3)
    assert bad.verdict is Verdict.COUNTEREXAMPLE and bad.confirmed is True
    with torch.no_grad():
        assert float(net(bad.counterexample)[0, 2]) <= low + 1e-3 + 1e-6


def test_dense_affine_matches_the_layers():
    torch.manual_seed(0)
    layers = [
        nn.Conv2d(2, 3, 3, stride=2, padding=1),
        nn.BatchNorm2d(3).eval(),
        nn.AvgPool2d(2),
        nn.Flatten(),
    ]
    W, b, shape = dense_affine(layers, (2, 8, 8))
    v = torch.rand(5, 2, 8, 8)
    with torch.no_grad():
        ref = nn.Sequential(*layers)(v)
    torch.testing.assert_close((v.flatten(1).double() @ W.T + b).float(), ref, atol=1e-5, rtol=1e-5)
    assert shape == (12,)


def _status_fake(monkeypatch, status, sol_status, seconds=0.0):
    def fake_solve(self, solver=None, **kw):
        self.status, self.sol_status = status, sol_status
        return status

    monkeypatch.setattr(pulp.LpProblem, "solve", fake_solve)


def test_verdicts_are_never_confused(monkeypatch):
    prob = pulp.LpProblem("p", pulp.LpMinimize)
    v = prob.add_variable("v", 0, 1)
    prob += v
    prob += v >= 2
    assert solve_milp(prob).verdict is Verdict.CERTIFIED
    assert solve_milp(prob, solver="HiGHS").verdict is Verdict.CERTIFIED
    feas = pulp.LpProblem("q", pulp.LpMaximize)
    w = feas.add_variable("w", 0, 3, cat=pulp.LpInteger)
    feas += w
    r = solve_milp(feas)
    assert r.verdict is Verdict.COUNTEREXAMPLE and r.optimal and r.objective == 3
    unb = pulp.LpProblem("u", pulp.LpMaximize)
    z = unb.add_variable("z", 0)
    unb += z
    assert solve_milp(unb).verdict is Verdict.UNKNOWN
    # time-outs: no solution -> UNKNOWN; incumbent -> COUNTEREXAMPLE but not optimal
    _status_fake(monkeypatch, pulp.LpStatusNotSolved, pulp.LpSolutionNoSolutionFound)
    assert solve_milp(feas, time_limit=1).verdict is Verdict.UNKNOWN
    _status_fake(monkeypatch, pulp.LpStatusNotSolved, pulp.LpSolutionIntegerFeasible)
    r = solve_milp(feas, time_limit=1)
    assert r.verdict is Verdict.COUNTEREXAMPLE and not r.optimal

    # "infeasible" reported when the time limit is hit is not trusted
    def slow_infeasible(self, solver=None, **kw):
        import time

        time.sleep(0.06)
        self.status, self.sol_status = pulp.LpStatusInfeasible, pulp.LpSolutionInfeasible

    monkeypatch.setattr(pulp.LpProblem, "solve", slow_infeasible)
    assert solve_milp(feas, time_limit=0.05).verdict is Verdict.UNKNOWN
    with pytest.raises(UserError, match="solver"):
        solve_milp(feas, solver="gurobi")


def _can_be_argmax(lower, upper, i) -> bool:
    # independent intervals: i can be a maximiser iff it can reach every other candidate's lower bound
    return all(upper[i] >= lower[j] for j in range(len(lower)) if j != i)


@pytest.mark.parametrize("solver", ["CBC", "HiGHS"])
def test_argmax_gadget_selects_exactly_the_possible_maximisers(solver):
    gen = torch.Generator().manual_seed(7)
    for trial in range(3):
        n = 5
        lo = (torch.rand(n, generator=gen) * 2).tolist()
        hi = [v + float(w) for v, w in zip(lo, torch.rand(n, generator=gen) * 1.2)]
        if trial == 2:  # exact tie: two identical point candidates that are both maximal
            lo[0] = hi[0] = lo[1] = hi[1] = max(hi) + 1.0
        survivors = prune_candidates(lo, hi)
        assert survivors == [i for i in range(n) if hi[i] >= max(lo)]
        for i in range(n):
            prob = pulp.LpProblem(f"am{trial}_{i}", pulp.LpMaximize)
            xs = add_bounded_variables(prob, lo, hi, name="x")
            g = add_argmax(prob, xs, lo, hi, name="am")
            if i not in g.binaries:
                assert not _can_be_argmax(lo, hi, i)
                continue
            if isinstance(g.binaries[i], int):  # lone survivor: always the argmax
                assert g.survivors == [i] and _can_be_argmax(lo, hi, i)
                continue
            prob += g.binaries[i] == 1
            r = solve_milp(prob, solver=solver)
            assert (r.verdict is Verdict.COUNTEREXAMPLE) == _can_be_argmax(lo, hi, i), (trial, i, lo, hi)
            if r.verdict is Verdict.COUNTEREXAMPLE:
                assert g.selected() == i
                # the selected candidate is a real maximiser (pruned ones stay below it whatever they are)
                vals = [xs[j].varValue for j in g.survivors]
                assert xs[i].varValue >= max(vals) - 1e-6
                assert all(hi[j] <= xs[i].varValue + 1e-9 for j in range(n) if j not in g.survivors)
                assert abs(pulp.value(g.maximum) - max(vals)) <= 1e-6


def test_argmax_over_network_outputs_agrees_with_sampling():
    """Classes reached as argmax by sampled inputs must be feasible in the MILP (soundness of the gadget
    on top of the network encoding)."""
    net, x, pert = small_cnn(), image(), WhiteNoise(0.08)
    with torch.no_grad():
        seen = set(net(pert.sample(x, 3000).flatten(0, 1)).argmax(1).tolist())
    lo, hi = output_bounds(net, x, pert, "CROWN")
    for k in range(3):
        prob = pulp.LpProblem(f"cls{k}", pulp.LpMaximize)
        enc = encode_network(net, x, pert, "CROWN", prob=prob)
        g = add_argmax(prob, enc.outputs, enc.output_bounds[0], enc.output_bounds[1], name="cls")
        assert set(g.survivors) <= set(range(3))
        if k not in g.binaries:
            assert k not in seen and float(hi[0, k]) >= -1e9
            continue
        prob += 0
        if not isinstance(g.binaries[k], int):
            prob += g.binaries[k] == 1
        r = solve_milp(prob)
        if k in seen:
            assert r.verdict is Verdict.COUNTEREXAMPLE
        if r.verdict is Verdict.COUNTEREXAMPLE:
            with torch.no_grad():
                out = net(enc.recover_input())[0]
            assert float(out[k]) >= float(out.max()) - 1e-4  # a real input where k is (tied) argmax


def test_milp_rejects_what_it_cannot_encode():
    net = nn.Sequential(nn.Flatten(), nn.Linear(36, 4), nn.Sigmoid(), nn.Linear(4, 2)).eval()
    with pytest.raises(UserError, match="Sigmoid"):
        encode_network(net, image(), WhiteNoise(0.01))
    with pytest.raises(UserError, match="one image"):
        encode_network(small_cnn(), torch.cat([image(), image()]), WhiteNoise(0.01))
    with pytest.raises(UserError, match="output index"):
        output_extremum(small_cnn(), image(), WhiteNoise(0.01), output=7)


def test_gadget_input_validation():
    with pytest.raises(UserError):
        prune_candidates([1.0, 0.0], [0.5, 1.0])
    prob = pulp.LpProblem("v", pulp.LpMaximize)
    with pytest.raises(UserError):
        add_argmax(prob, [1.0], [0.0, 1.0], [1.0, 2.0])
    assert list(itertools.islice(prune_candidates([0.0], [1.0]), 1)) == [0]


def test_heatmap_decoder_with_bilinear_upsample_is_encoded_exactly():
    """Upsample is linear, so the MILP is exact even where auto_LiRPA cannot bound it (interval fallback)."""
    torch.manual_seed(1)
    net = nn.Sequential(
        nn.Conv2d(1, 2, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
        nn.Conv2d(2, 1, 3, padding=1),
        nn.Flatten(),
    ).eval()
    x, pert = image(), Brightness(0.1)
    r = output_extremum(net, x, pert, output=14, sense="max")
    assert r.exact and "interval arithmetic" in r.milp.extra["bounds"]
    assert abs(r.model_value - r.value) <= 1e-4
    with torch.no_grad():
        assert r.value >= float(net(pert.sample(x, 2000).flatten(0, 1))[:, 14].max()) - 1e-5


@pytest.mark.parametrize("solver", ["CBC", "HiGHS"])
def test_every_real_input_is_feasible_in_the_encoding(solver):
    """Regression: float32 CROWN bounds ~1e-7 too tight once made the MILP exclude the maximiser at the
    edge of the brightness range. Fixing θ (boundaries included) must leave exactly the real output."""
    net, x, pert = small_cnn(), image(), Brightness(0.1)
    for theta in [-0.1, -0.037, 0.0, 0.061, 0.1]:
        prob = pulp.LpProblem("fix", pulp.LpMaximize)
        enc = encode_network(net, x, pert, "CROWN", prob=prob)
        prob += enc.outputs[1]
        prob += enc.theta[0] == theta
        r = solve_milp(prob, solver=solver)
        assert r.verdict is Verdict.COUNTEREXAMPLE and r.optimal, (theta, r.status)
        with torch.no_grad():
            real = float(net(pert.apply(x, torch.tensor([[theta]])))[0, 1])
        assert abs(r.objective - real) <= 1e-4, (theta, r.objective, real)
