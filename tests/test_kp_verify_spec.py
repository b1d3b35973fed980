"""KeypointSpec: constructors, semantics, files, one-line errors; the MILP encoding against brute force."""

import itertools
import json

import numpy as np
import pytest
from scipy.optimize import linprog

from geo_rs import UserError, Verdict
from keypoint import KeypointSpec
from keypoint.verify.milp import brute_force_violation, solve_rows, spec_rows
from keypoint.verify.reachable import KeypointReach, ReachableHeatmaps
from keypoint.verify.spec import violation_threshold

CLEAN = np.array([[4, 4], [10, 2], [0, 7]])


def test_norm_specs_semantics():
    moved = CLEAN + [[1, 1], [0, 1], [0, 0]]  # L1 deviations 2, 1, 0 (total 3, max 2)
    assert not KeypointSpec.l1(3).violated(CLEAN, moved)
    assert KeypointSpec.l1(2.5).violated(CLEAN, moved)
    assert not KeypointSpec.mean(1).violated(CLEAN, moved) and KeypointSpec.mean(0.9).violated(CLEAN, moved)
    assert KeypointSpec.linf(1).violated(CLEAN, moved) and not KeypointSpec.linf(2).violated(CLEAN, moved)
    assert not KeypointSpec.linf(1, distance="linf").violated(CLEAN, moved)  # max(|du|, |dv|) = 1
    w = KeypointSpec.weighted([0.5, 2, 7], 3)
    assert not w.violated(CLEAN, moved)  # 0.5·2 + 2·1 = 3
    assert KeypointSpec.weighted([0.5, 2.1, 7], 3).violated(CLEAN, moved)
    # input pixels: stride 4 turns a total of 3 heatmap pixels into 12 input pixels
    assert not KeypointSpec.l1(12, unit="input").violated(CLEAN, moved, scale=4)
    assert KeypointSpec.l1(11, unit="input").violated(CLEAN, moved, scale=4)


def test_polytope_matches_its_rows_and_files(tmp_path):
    A = [[1, 0, 1, 0, 0, 0], [0, -1, 0, -1, 0, 0]]  # du_0 + du_1 <= 1 and -(dv_0 + dv_1) <= 0
    spec = KeypointSpec.polytope(A, [1, 0])
    assert not spec.violated(CLEAN, CLEAN + [[1, 0], [0, 1], [5, 5]])
    assert spec.violated(CLEAN, CLEAN + [[1, 0], [1, 0], [0, 0]])
    assert spec.violated(CLEAN, CLEAN + [[0, -1], [0, 0], [0, 0]])
    (tmp_path / "p.yaml").write_text("A: [[1, 0, 1, 0, 0, 0], [0, -1, 0, -1, 0, 0]]\nb: [1, 0]\n")
    (tmp_path / "p.json").write_text(json.dumps({"A": A, "b": [1, 0], "unit": "input"}))
    assert KeypointSpec.from_file(tmp_path / "p.yaml") == spec
    assert KeypointSpec.from_file(tmp_path / "p.json").unit == "input"
    assert KeypointSpec.parse("l1:3") == KeypointSpec.l1(3)
    assert KeypointSpec.parse("mean:0.5:input") == KeypointSpec.mean(0.5, unit="input")


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: KeypointSpec.l1(-1), "delta"),
        (lambda: KeypointSpec.l1(float("nan")), "delta"),
        (lambda: KeypointSpec.l1(1, unit="mm"), "unit"),
        (lambda: KeypointSpec.weighted([1, -2], 1), "weights"),
        (lambda: KeypointSpec.polytope([[1, 2, 3]], [1]), r"\(m, 2K\)"),
        (lambda: KeypointSpec.polytope([[1, 2]], [1, 2]), "one per row"),
        (lambda: KeypointSpec.parse("l2:3"), "KIND"),
        (lambda: KeypointSpec.weighted([1, 1], 2).check(8), "written for 2 keypoints but the model has 8"),
    ],
)
def test_bad_specs_are_one_line(make, match):
    with pytest.raises(UserError, match=match) as info:
        make()
    assert "\n" not in str(info.value)


def test_bad_spec_file_names_the_file(tmp_path):
    (tmp_path / "bad.yaml").write_text("A: [[1, 0]]\nc: [1]\n")
    with pytest.raises(UserError, match="bad.yaml"):
        KeypointSpec.from_file(tmp_path / "bad.yaml")
    with pytest.raises(UserError, match="not found|does not exist|no such"):
        KeypointSpec.from_file(tmp_path / "missing.yaml")


def test_decoupled_shares_imply_the_joint_spec():
    rng = np.random.default_rng(0)
    specs = [
        KeypointSpec.l1(3),
        KeypointSpec.mean(1),
        KeypointSpec.weighted([1, 0, 2], 2),
        KeypointSpec.linf(1),
        KeypointSpec.polytope(rng.normal(size=(3, 6)), np.abs(rng.normal(size=3)) * 3),
    ]
    for spec in specs:
        g, b = spec.terms(3)
        for _ in range(300):
            d = rng.integers(-2, 3, size=(3, 2))
            ok_alone = all(
                g(j, kp, d[kp, 0], d[kp, 1]) <= share + 1e-12
                for kp in range(3)
                for j, share in zip(*spec.share(3, kp))
            )
            if ok_alone:
                assert not spec.violated(np.zeros((3, 2)), d), (spec, d)


def test_violation_threshold_integral_and_not():
    assert violation_threshold([np.array([0.0, 1, 2])], 3) == 4
    assert violation_threshold([np.array([0.0, 1, 2])], 2.5) == 3
    assert violation_threshold([np.array([0.0, 0.5])], 2.5) == pytest.approx(2.5, abs=1e-8)


# ----------------------------------------------------------------------------------- MILP vs brute force
def random_reach(rng, K, h, w, n_params=0):
    """Random difference bounds of every pixel (clean = pixel 0 of each heatmap's random argmax)."""
    clean = rng.integers(0, h * w, size=K)
    lows, highs, reach = [], [], []
    for k in range(K):
        centre = rng.normal(-1.0, 1.0, h * w)
        half = rng.uniform(0, 1.2, h * w)
        lo, hi = centre - half, centre + half
        lo[clean[k]] = hi[clean[k]] = 0.0
        lows.append(lo)
        highs.append(hi)
        order = np.concatenate([[clean[k]], np.setdiff1d(np.arange(h * w), [clean[k]])])
        r = KeypointReach(int(clean[k]), order, lo[order].copy(), hi[order].copy())
        r.keep(r.upper >= 0)
        reach.append(r)
    return ReachableHeatmaps("interval", "test", (K, h, w), reach), lows, highs, clean


SPECS = [
    KeypointSpec.l1(2),
    KeypointSpec.l1(0),
    KeypointSpec.mean(1),
    KeypointSpec.linf(1),
    KeypointSpec.weighted([0.5, 1.5, 1.0], 2.2),
    KeypointSpec.l1(3, distance="linf"),
    KeypointSpec.polytope([[1, 0, 1, 0, 1, 0], [0, 1, 0, 1, 0, 1]], [1, 1]),
    KeypointSpec.polytope([[1, -1, 0.5, 0, 0, 2]], [0.7]),
]


@pytest.mark.parametrize("seed", range(6))
def test_interval_milp_agrees_with_brute_force(seed):
    rng = np.random.default_rng(seed)
    reach, lows, highs, clean = random_reach(rng, 3, 3, 3)
    for spec in SPECS:
        truth, _ = brute_force_violation(lows, highs, (3, 3, 3), clean, spec)
        out = solve_rows(reach, spec_rows(reach, spec, 1.0), "CBC", 30)
        assert out.verdict is (Verdict.COUNTEREXAMPLE if truth else Verdict.CERTIFIED), (seed, spec)
        if truth:  # the assignment itself violates the spec and is realisable
            uv = np.stack([reach.uv(k)[out.selected[k]] for k in range(3)])
            cuv = np.stack([clean % 3, clean // 3], 1)
            assert spec.violated(cuv, uv)
        for kp in range(3):  # each keypoint alone against its share (the decoupled MILPs)
            rows, shares = spec.share(3, kp)
            if not rows:
                continue
            truth_k = _share_violated(spec, kp, rows, shares, lows[kp], highs[kp], clean[kp], 3)
            got = solve_rows(
                reach, spec_rows(reach, spec, 1.0, [kp], dict(zip(rows, shares)), rows), "HiGHS", 30
            )
            assert got.verdict is (Verdict.COUNTEREXAMPLE if truth_k else Verdict.CERTIFIED), (seed, spec, kp)


def _share_violated(spec, kp, rows, shares, lo, hi, c, w):
    """Brute force for keypoint kp alone: can a possible maximiser exceed its share of some row?"""
    from keypoint.verify.spec import tolerance

    g, _ = spec.terms(3)
    for i in np.flatnonzero(hi >= lo.max()):
        du, dv = i % w - c % w, i // w - c // w
        if any(g(j, kp, du, dv) > s + tolerance(np.array([s]))[0] for j, s in zip(rows, shares)):
            return True
    return False


def _lp_feasible(reach, choice, cell):
    """Brute-force reference for the linear level: is there t in the cell and w in all bounds/bands with the
    chosen candidate the maximum of every heatmap? (An LP per choice and cell.)"""
    P = reach.n_params
    idx, nvar = [], P
    for r in reach.keypoints:
        idx.append(list(range(nvar, nvar + len(r.survivors))))
        nvar += len(r.survivors)
    A, b, bounds = [], [], [tuple(reach.cells[cell, m]) for m in range(P)]
    for k, r in enumerate(reach.keypoints):
        for pos in range(len(r.survivors)):
            bounds.append((float(r.lower[pos]), float(r.upper[pos])))
            row = np.zeros(nvar)
            row[:P], row[idx[k][pos]] = r.band_coef[cell, pos], -1.0  # a·t + L <= w
            A.append(row)
            b.append(-float(r.band_lower[cell, pos]))
            A.append(-row)  # w <= a·t + U
            b.append(float(r.band_upper[cell, pos]))
            if pos != choice[k]:
                row = np.zeros(nvar)
                row[idx[k][pos]], row[idx[k][choice[k]]] = 1.0, -1.0
                A.append(row)
                b.append(0.0)
    res = linprog(np.zeros(nvar), A_ub=np.array(A), b_ub=np.array(b), bounds=bounds, method="highs")
    return res.status == 0


@pytest.mark.parametrize("seed", range(4))
def test_linear_milp_agrees_with_lp_brute_force(seed):
    """Shared parameters (and cells of them) couple the keypoints: the MILP must match an LP per pixel
    choice and cell."""
    from keypoint.verify.reachable import make_cells

    rng = np.random.default_rng(100 + seed)
    K, h, w, P = 3, 2, 3, 2
    reach, _, _, clean = random_reach(rng, K, h, w)
    reach.level, reach.n_params = "linear", P
    reach.cells = make_cells(P, 2) if seed % 2 else make_cells(P, 1)
    M = len(reach.cells)
    for r in reach.keypoints:
        n = len(r.survivors)
        r.band_coef = rng.normal(0, 1.5, (M, n, P))
        r.band_coef[:, 0] = 0
        mid = rng.normal(-0.5, 0.7, (M, n))
        r.band_lower, r.band_upper = mid - 0.1, mid + 0.1
        r.band_lower[:, 0] = r.band_upper[:, 0] = 0.0
    cuv = np.stack([clean % w, clean // w], 1)
    for spec in SPECS:
        truth = False
        for choice in itertools.product(*[range(len(r.survivors)) for r in reach.keypoints]):
            uv = np.stack([reach.uv(k)[c] for k, c in enumerate(choice)])
            if spec.violated(cuv, uv) and any(_lp_feasible(reach, choice, c) for c in range(M)):
                truth = True
                break
        out = solve_rows(reach, spec_rows(reach, spec, 1.0), "CBC", 30)
        assert out.verdict is (Verdict.COUNTEREXAMPLE if truth else Verdict.CERTIFIED), (seed, spec)
