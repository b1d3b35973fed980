"""Certified keypoints: ``verify_keypoints`` (coupled) and ``verify_keypoints_decoupled`` (baseline).

Given a heatmap detector, one image, a perturbation set and a joint specification on the keypoint
deviations, decide whether every input of the set meets the specification:

1. reachable heatmaps at the chosen level (:mod:`keypoint.verify.reachable`);
2. the falsification MILP (:mod:`keypoint.verify.milp`): infeasible ⇒ ``CERTIFIED``;
3. a feasible assignment is attacked on the real network (:mod:`keypoint.verify.attack`): a confirmed
   violating input ⇒ ``COUNTEREXAMPLE``; otherwise (or on a time-out) ``UNKNOWN``.

*Coupled* solves one MILP over all keypoints (they share the perturbation parameters at the linear and
exact levels, and the spec sums their deviations). *Decoupled* verifies each keypoint alone against its
even share of every row's budget — sound, conservative. Coupled also accepts a decoupled proof (one
exists only when the joint MILP timed out or its point was spurious), so at the same level its
verified set always contains the decoupled one.

Example::

    >>> import torch
    >>> from geo_rs import Brightness
    >>> from keypoint import KeypointSpec, verify_keypoints
    >>> from keypoint.verify.detector import build_detector
    >>> net = build_detector(num_keypoints=8, heatmap_size=16, width=4, blocks=1).eval()
    >>> r = verify_keypoints(net, torch.rand(3, 64, 64), Brightness(1e-4), KeypointSpec.l1(3),
    ...                      reachable="interval", bounds_method="IBP")
    >>> r.verdict.name in ("CERTIFIED", "COUNTEREXAMPLE", "UNKNOWN"), r.keypoints.shape
    (True, (8, 2))
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from geo_rs.errors import UserError

from .attack import Hit, argmax_uv, attack_assignment
from .milp import MilpOutcome, solve_rows, spec_rows
from .reachable import LEVELS, ReachableHeatmaps, add_exact_encoding, check_exact_supported, compute_reach
from .spec import KeypointSpec
from .wrappers import HeatmapsOf, in_dtype

METHODS = ("coupled", "decoupled")
BOUND_METHODS = ("IBP", "CROWN-IBP", "CROWN", "alpha-CROWN")


@dataclass
class KeypointVerification:
    """Outcome of one verification (coupled or decoupled).

    Attributes:
        verdict: :class:`geo_rs.Verdict` — CERTIFIED (proved), COUNTEREXAMPLE (confirmed by a forward
            pass) or UNKNOWN.
        keypoints: ``(K, 2)`` clean argmax keypoints, heatmap pixels (u = column, v = row).
        candidates: per keypoint ``(n_k, 2)`` heatmap pixels that survived pruning (clean first).
        assignment: ``(K, 2)`` the MILP's candidate keypoints (None if it had none).
        counterexample: ``(C, H, W)`` a confirmed violating input of the set, or None.
        counterexample_keypoints: ``(K, 2)`` the network's keypoints on it.
        seconds: wall time of the whole call. n_binaries: binaries of the MILP(s) solved.
        method, reachable, bounds_method, solver: what ran. solve_seconds: time inside the solver.
        proof: how CERTIFIED was proved: "bounds" (no MILP needed), "milp", or "decoupled".
        status: solver status strings. stride: input pixels per heatmap pixel (None if not integral).
        spec: the spec's description. per_keypoint: decoupled verdict names per keypoint.
        timings: seconds per stage. notes: deviations from the request (e.g. a bound-method fallback).
        arithmetic: which model a CERTIFIED verdict is proved for: "float32" (the model as given, float32),
            "float64" (the model run in float64, ``model.double()``; the attack ran that model too) or
            "real" (heuristic rounding margin: the real-arithmetic network only, not a proof for floats).
    """

    verdict: object
    keypoints: np.ndarray
    candidates: list[np.ndarray]
    assignment: np.ndarray | None
    counterexample: Tensor | None
    seconds: float
    n_binaries: int
    method: str = "coupled"
    reachable: str = "linear"
    bounds_method: str = "CROWN"
    solver: str = "cbc"
    solve_seconds: float = 0.0
    proof: str = ""
    status: str = ""
    stride: int | None = None
    spec: str = ""
    counterexample_keypoints: np.ndarray | None = None
    per_keypoint: list[str] | None = None
    timings: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    arithmetic: str = "float32"

    @property
    def n_candidates(self) -> list[int]:
        """Surviving candidates per keypoint."""
        return [len(c) for c in self.candidates]

    @property
    def certified(self) -> bool:
        return self.verdict.name == "CERTIFIED"

    @property
    def keypoints_input(self) -> np.ndarray | None:
        """Clean keypoints in input pixels (cell j is centred on ``(j + 0.5)·stride − 0.5``)."""
        return None if self.stride is None else (self.keypoints + 0.5) * self.stride - 0.5

    def to_dict(self) -> dict:
        """JSON-ready summary (without the counterexample tensor)."""
        arr = lambda a: None if a is None else np.asarray(a).tolist()  # noqa: E731
        return {
            "verdict": self.verdict.name,
            "method": self.method,
            "reachable": self.reachable,
            "bounds_method": self.bounds_method,
            "solver": self.solver,
            "arithmetic": self.arithmetic,
            "spec": self.spec,
            "proof": self.proof,
            "status": self.status,
            "seconds": self.seconds,
            "solve_seconds": self.solve_seconds,
            "n_binaries": self.n_binaries,
            "n_candidates": self.n_candidates,
            "keypoints": arr(self.keypoints),
            "assignment": arr(self.assignment),
            "counterexample_keypoints": arr(self.counterexample_keypoints),
            "per_keypoint": self.per_keypoint,
            "stride": self.stride,
            "timings": self.timings,
            "notes": self.notes,
        }

    def save(self, out_dir: str | Path, name: str = "counterexample") -> list[Path]:
        """Write ``name.json`` and, for a counterexample, ``name.png`` and ``name.pt`` under ``out_dir``."""
        from geo_rs.atomic import torch_save, write_bytes, write_json

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = [write_json(out / f"{name}.json", self.to_dict(), indent=2)]
        if self.counterexample is not None:
            import imageio.v3 as iio

            img = self.counterexample.detach().cpu().clamp(0, 1)
            arr = (img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
            buf = io.BytesIO()
            iio.imwrite(buf, arr[..., 0] if arr.shape[2] == 1 else arr, extension=".png")
            paths.append(write_bytes(out / f"{name}.png", buf.getvalue()))
            paths.append(torch_save(out / f"{name}.pt", {"image": img, "result": self.to_dict()}))
        return paths


# ------------------------------------------------------------------------------------------ inputs
@dataclass
class Instance:
    """A checked verification instance: the heatmap network, ``x (1, C, H, W)``, the clean argmax."""

    net: nn.Module
    x: Tensor
    perturbation: object
    clean_uv: np.ndarray
    shape: tuple[int, int, int]
    stride: int | None

    @property
    def clean_flat(self) -> np.ndarray:
        return self.clean_uv[:, 1] * self.shape[2] + self.clean_uv[:, 0]

    def scale(self, spec: KeypointSpec) -> float:
        if spec.unit == "heatmap":
            return 1.0
        if self.stride is None:
            raise UserError(
                f"spec in input pixels needs an integral stride; image {tuple(self.x.shape[2:])} "
                f"and heatmaps {self.shape[1:]} do not give one"
            )
        return float(self.stride)


def prepare(model: nn.Module, image: Tensor, perturbation, dtype: torch.dtype = torch.float32) -> Instance:
    """Check the inputs (one-line UserErrors) and run the clean forward pass. ``dtype`` float64: the
    instance is a float64 copy of the model (``model.double()``) on the image in float64 — what a float64
    deployment runs, and what its certificates cover."""
    from geo_rs import Perturbation
    from geo_rs.checks import image_batch

    if not isinstance(model, nn.Module):
        raise UserError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(perturbation, Perturbation):
        raise UserError(
            f"perturbation must be a geo_rs Perturbation (WhiteNoise, Brightness, Contrast or a sum), "
            f"got {type(perturbation).__name__}"
        )
    if not isinstance(image, Tensor) or image.dim() != 3:
        shape = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
        raise UserError(f"image must be a (C, H, W) tensor, got {shape}")
    model, (x,) = in_dtype(model.eval(), [image_batch("image", image.detach().float()[None].cpu())], dtype)
    try:
        with torch.no_grad():
            out = model(x)
    except Exception as exc:  # a user's model failing on the image: one line
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"the model failed on an image of shape {tuple(x.shape)}: {msg}") from None
    net = model
    if isinstance(out, dict):
        if "heatmaps" not in out:
            raise UserError(
                f"the model returns a dict without 'heatmaps' (keys {sorted(out)}): not a heatmap detector"
            )
        net, out = HeatmapsOf(model).eval(), out["heatmaps"]
    if not isinstance(out, Tensor) or out.dim() != 4 or out.shape[0] != 1:
        shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise UserError(f"the model must map (1, C, H, W) to heatmaps (1, K, h, w); got {shape}")
    k, h, w = out.shape[1:]
    if h * w < 1 or k < 1:
        raise UserError(f"the model's heatmaps are empty: {tuple(out.shape)}")
    H, W = x.shape[2:]
    stride = H // h if (H % h == 0 and W % w == 0 and H // h == W // w) else None
    return Instance(net, x, perturbation, argmax_uv(out)[0], (int(k), int(h), int(w)), stride)


def _check_options(
    reachable: str, bounds_method: str, solver: str, time_limit: float
) -> tuple[str, str, str]:
    from geo_rs.checks import choice, positive_finite

    choice("reachable", reachable, LEVELS)
    bm = {m.upper(): m for m in BOUND_METHODS}.get(str(bounds_method).upper())
    if bm is None:
        raise UserError(f"bounds_method must be one of {', '.join(BOUND_METHODS)}; got {bounds_method!r}")
    sv = {"cbc": "CBC", "highs": "HiGHS"}.get(str(solver).lower())
    if sv is None:
        raise UserError(f"solver must be cbc or highs; got {solver!r}")
    positive_finite("time_limit", time_limit, "seconds")
    return reachable, bm, sv


def reachable_heatmaps(
    inst: Instance,
    reachable: str = "linear",
    bounds_method: str = "CROWN",
    max_terms: int | None = 256,
    float32: str = "rigorous",
) -> ReachableHeatmaps:
    """The reachable heatmaps of an instance (reusable across specs and methods)."""
    return compute_reach(
        inst.net, inst.x, inst.perturbation, reachable, bounds_method, inst.clean_flat, inst.shape, max_terms,
        float32=float32,
    )


# ------------------------------------------------------------------------------------------ solving
@dataclass
class _Budget:
    time_limit: float
    start: float = field(default_factory=time.perf_counter)

    def left(self) -> float:
        return max(self.time_limit - (time.perf_counter() - self.start), 0.05)


CASCADE = {"interval": ("interval",), "linear": ("linear", "interval"), "exact": ("linear", "exact")}


def _solve(inst: Instance, reach: ReachableHeatmaps, rows, solver: str, budget: _Budget) -> MilpOutcome:
    """The MILP at the reach's level, after (exact) or before (linear, on a time-out) the next weaker one:
    each is a proof on its own, so a higher level never verifies fewer instances than a lower one, even
    when its bigger MILP runs out of time. The attack gets the most precise assignment found."""
    import pulp

    def make():
        prob = pulp.LpProblem("keypoint_exact", pulp.LpMaximize)
        add_exact_encoding(reach, inst.net, inst.x, inst.perturbation, prob)
        return prob

    outs: list[MilpOutcome] = []
    for mode in CASCADE[reach.level]:
        if mode == "interval" and outs and outs[-1].verdict.name != "UNKNOWN":
            break  # the linear MILP finished: the interval one cannot prove more
        outs.append(solve_rows(reach, rows, solver, budget.left(), make, mode))
        if outs[-1].verdict.name == "CERTIFIED":
            break
    best = outs[-1]
    if best.selected is None:
        best = next((o for o in reversed(outs) if o.selected is not None), best)
    if len(outs) > 1:
        best = MilpOutcome(
            outs[-1].verdict if outs[-1].verdict.name == "CERTIFIED" else best.verdict,
            best.keypoints,
            best.selected,
            best.t,
            best.theta_delta,
            sum(o.n_binaries for o in outs),
            sum(o.seconds for o in outs),
            "; ".join(f"{o.extra.get('mode', o.proof)}: {o.status}" for o in outs),
            outs[-1].proof,
            {"solve_seconds": sum(o.extra.get("solve_seconds", 0.0) for o in outs)},
        )
    return best


def _decoupled(inst, reach, spec, scale, solver, budget) -> list[MilpOutcome]:
    k = inst.shape[0]
    outs = []
    for kp in range(k):
        row_ids, shares = spec.share(k, kp)
        if not row_ids:
            from geo_rs import Verdict

            outs.append(MilpOutcome(Verdict.CERTIFIED, [kp], proof="bounds", status="not constrained"))
            continue
        rows = spec_rows(reach, spec, scale, [kp], dict(zip(row_ids, shares)), row_ids)
        outs.append(_solve(inst, reach, rows, solver, budget))
    return outs


def _targets(inst: Instance, reach: ReachableHeatmaps, selected: dict[int, int]) -> np.ndarray:
    t = inst.clean_uv.copy()
    for k, pos in selected.items():
        t[k] = reach.uv(k)[pos]
    return t


def _start(inst: Instance, reach: ReachableHeatmaps, out: MilpOutcome) -> tuple | None:
    if out.t is not None and reach.params is not None:
        return reach.params.to_theta_delta(torch.as_tensor(out.t, dtype=inst.x.dtype))
    if out.theta_delta is not None:
        theta, delta = out.theta_delta
        return (
            None if theta is None else torch.tensor([theta], dtype=inst.x.dtype),
            None if delta is None else torch.tensor(delta, dtype=inst.x.dtype).reshape(inst.x.shape),
        )
    return None


def _attack(inst, spec, scale, targets, start, attack: dict) -> Hit | None:
    return attack_assignment(
        inst.net, inst.x, inst.perturbation, spec, inst.clean_uv, targets, scale, start, **attack
    )


def _result(
    inst,
    reach,
    spec,
    method,
    solver,
    t0,
    outs: list[MilpOutcome],
    verdict,
    proof,
    hit,
    assignment,
    per_keypoint=None,
) -> KeypointVerification:
    return KeypointVerification(
        verdict=verdict,
        keypoints=inst.clean_uv.copy(),
        candidates=[reach.uv(k) for k in range(inst.shape[0])],
        assignment=assignment,
        counterexample=None if hit is None else hit.image[0],
        seconds=time.perf_counter() - t0,
        n_binaries=sum(o.n_binaries for o in outs),
        method=method,
        reachable=reach.level,
        bounds_method=reach.method,
        solver=solver,
        solve_seconds=sum(o.extra.get("solve_seconds", 0.0) for o in outs),
        proof=proof,
        status="; ".join(o.status for o in outs if o.status)[:500],
        stride=inst.stride,
        spec=spec.describe(),
        counterexample_keypoints=None if hit is None else hit.keypoints,
        per_keypoint=per_keypoint,
        timings=dict(reach.seconds),
        notes=list(reach.notes),
        arithmetic=reach.arithmetic,
    )


def verify_reach(
    inst: Instance,
    reach: ReachableHeatmaps,
    spec: KeypointSpec,
    method: str = "coupled",
    solver: str = "CBC",
    time_limit: float = 60.0,
    attack: dict | None = None,
    t0: float | None = None,
) -> KeypointVerification:
    """Verify ``spec`` on precomputed reachable heatmaps (coupled or decoupled)."""
    from geo_rs import Verdict

    t0 = time.perf_counter() if t0 is None else t0
    spec.check(inst.shape[0])
    scale = inst.scale(spec)
    attack = {} if attack is None else attack
    budget = _Budget(time_limit)
    if method == "decoupled":
        outs = _decoupled(inst, reach, spec, scale, solver, budget)
        names = [o.verdict.name for o in outs]
        if all(o.verdict is Verdict.CERTIFIED for o in outs):
            proof = "bounds" if all(o.proof == "bounds" for o in outs) else "decoupled"
            return _result(
                inst, reach, spec, method, solver, t0, outs, Verdict.CERTIFIED, proof, None, None, names
            )
        selected = {k: pos for o in outs if o.selected for k, pos in o.selected.items()}
        targets = _targets(inst, reach, selected) if selected else None
        first = next((o for o in outs if o.selected), None)
        start = _start(inst, reach, first) if first is not None else None
        hit = _attack(inst, spec, scale, targets, start, attack)
        verdict = Verdict.COUNTEREXAMPLE if hit is not None else Verdict.UNKNOWN
        return _result(inst, reach, spec, method, solver, t0, outs, verdict, "", hit, targets, names)
    if method != "coupled":
        raise UserError(f"method must be one of {', '.join(METHODS)}; got {method!r}")
    out = _solve(inst, reach, spec_rows(reach, spec, scale), solver, budget)
    if out.verdict is Verdict.CERTIFIED:
        return _result(inst, reach, spec, method, solver, t0, [out], Verdict.CERTIFIED, out.proof, None, None)
    targets = _targets(inst, reach, out.selected) if out.selected else None
    hit = _attack(inst, spec, scale, targets, _start(inst, reach, out), attack)
    if hit is not None:
        return _result(inst, reach, spec, method, solver, t0, [out], Verdict.COUNTEREXAMPLE, "", hit, targets)
    # A joint MILP that timed out or whose point was spurious: a decoupled proof is still a proof.
    dec = _decoupled(inst, reach, spec, scale, solver, budget)
    if all(o.verdict is Verdict.CERTIFIED for o in dec):
        return _result(
            inst, reach, spec, method, solver, t0, [out, *dec], Verdict.CERTIFIED, "decoupled", None, targets
        )
    return _result(inst, reach, spec, method, solver, t0, [out, *dec], Verdict.UNKNOWN, "", None, targets)


def verify_instance(
    model: nn.Module,
    image: Tensor,
    perturbation,
    specs: list[KeypointSpec],
    reachable: str = "linear",
    bounds_method: str = "CROWN",
    methods=("coupled", "decoupled"),
    solver: str = "cbc",
    time_limit: float = 60.0,
    *,
    max_terms: int | None = 256,
    attack: dict | None = None,
    float32: str = "rigorous",
) -> list[KeypointVerification]:
    """The per-instance unit of a dataset run: reachable heatmaps computed once, then every spec (e.g. a
    sweep of δ) × method. Returns results in ``specs``-major order; each result's ``seconds`` includes
    the shared reachability time. ``float32``: "rigorous" (bounds widened by the float32 model's
    forward-error bound, :mod:`~keypoint.verify.float_margin`), "float64" (the model is verified, and
    attacked, as run in float64 — ``model.double()`` — with the same analysis at unit roundoff 2^-53:
    certificates hold for that deployment, not for float32) or "heuristic" (1e-5 relative: a certificate
    for the real-arithmetic network; a note says so). Each result's ``arithmetic`` says which."""
    from geo_rs.checks import choice

    from .reachable import FLOAT32

    choice("float32", float32, FLOAT32)
    reachable, bounds_method, solver = _check_options(reachable, bounds_method, solver, time_limit)
    for m in methods:
        if m not in METHODS:
            raise UserError(f"method must be one of {', '.join(METHODS)}; got {m!r}")
    t0 = time.perf_counter()
    inst = prepare(model, image, perturbation, torch.float64 if float32 == "float64" else torch.float32)
    if reachable == "exact":
        check_exact_supported(inst.net)
    for s in specs:
        if not isinstance(s, KeypointSpec):
            raise UserError(f"spec must be a keypoint.KeypointSpec, got {type(s).__name__}")
        s.check(inst.shape[0])
        inst.scale(s)
    reach = reachable_heatmaps(
        inst, "linear" if reachable == "exact" else reachable, bounds_method, max_terms, float32
    )
    if reachable == "exact":
        reach.level = "exact"  # the exact MILP runs after the linear one (see _solve)
    shared = time.perf_counter() - t0
    results = []
    for s in specs:
        for m in methods:
            ts = time.perf_counter()
            r = verify_reach(inst, reach, s, m, solver, time_limit, attack, t0=ts)
            r.seconds += shared
            results.append(r)
    return results


def _verify_one(
    method: str,
    model,
    image,
    perturbation,
    spec,
    reachable,
    bounds_method,
    solver,
    time_limit,
    out_dir,
    max_terms,
    attack,
    float32="rigorous",
) -> KeypointVerification:
    (r,) = verify_instance(
        model,
        image,
        perturbation,
        [spec],
        reachable,
        bounds_method,
        (method,),
        solver,
        time_limit,
        max_terms=max_terms,
        attack=attack,
        float32=float32,
    )
    if out_dir is not None:
        r.save(out_dir)
    return r


def verify_keypoints(
    model: nn.Module,
    image: Tensor,
    perturbation,
    spec: KeypointSpec,
    reachable: str = "linear",
    bounds_method: str = "CROWN",
    solver: str = "cbc",
    time_limit: float = 60,
    *,
    out_dir: str | Path | None = None,
    max_terms: int | None = 256,
    attack: dict | None = None,
    float32: str = "rigorous",
) -> KeypointVerification:
    """Coupled verification of ``spec`` for every input of ``perturbation`` around ``image (C, H, W)``.

    Args:
        model: an ``nn.Module`` mapping ``(1, C, H, W)`` to heatmaps ``(1, K, h, w)`` (or a keypoint model
            returning a dict with ``"heatmaps"``).
        image: ``(C, H, W)`` in [0, 1]. perturbation: WhiteNoise / Brightness / Contrast or a sum.
        spec: a :class:`KeypointSpec` for K keypoints.
        reachable: "interval" | "linear" | "exact". bounds_method: IBP, CROWN-IBP, CROWN, alpha-CROWN.
        solver: "cbc" | "highs". time_limit: seconds for the MILP(s).
        out_dir: where to save the result JSON and a counterexample (PNG + .pt).
        max_terms: white noise at the linear level: coefficients kept per band (None: all pixels).
        attack: options of :func:`keypoint.verify.attack.attack_assignment` (steps, restarts, n_random, seed).
        float32: "rigorous" (default: certificates for the float32 model), "float64" (for the model run in
            float64) or "heuristic" (real arithmetic only) (see :func:`verify_instance`).
    """
    return _verify_one(
        "coupled",
        model,
        image,
        perturbation,
        spec,
        reachable,
        bounds_method,
        solver,
        time_limit,
        out_dir,
        max_terms,
        attack,
        float32,
    )


def verify_keypoints_decoupled(
    model: nn.Module,
    image: Tensor,
    perturbation,
    spec: KeypointSpec,
    reachable: str = "linear",
    bounds_method: str = "CROWN",
    solver: str = "cbc",
    time_limit: float = 60,
    *,
    out_dir: str | Path | None = None,
    max_terms: int | None = 256,
    attack: dict | None = None,
    float32: str = "rigorous",
) -> KeypointVerification:
    """The decoupled baseline: each keypoint alone against its even share of the budget (same arguments
    and result type as :func:`verify_keypoints`)."""
    return _verify_one(
        "decoupled",
        model,
        image,
        perturbation,
        spec,
        reachable,
        bounds_method,
        solver,
        time_limit,
        out_dir,
        max_terms,
        attack,
        float32,
    )
