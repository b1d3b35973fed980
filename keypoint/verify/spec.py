"""Joint specifications on keypoint deviations (all linear, so verification stays a MILP).

A detector maps an image to K heatmaps; keypoint k is the argmax pixel ``p_k = (u_k, v_k)`` (u =
column, v = row). For a perturbed input x' the deviation is ``Δ_k = p_k(x') − p_k(x)``. A spec is a set
of *rows*; row j is *met* when ``Σ_k g_jk(Δ_k) <= b_j`` and the spec is violated when some row has
``Σ_k g_jk(Δ_k) > b_j`` (up to a relative tolerance :data:`SPEC_TOL`, identical in the MILP, the attack
and the checks). Every ``g_jk`` is evaluated per candidate pixel, so it may be any function of the
deviation — the MILP only needs ``Σ_i a_ki · g_jk(Δ of pixel i)``, which is linear in the binaries.

* :meth:`KeypointSpec.l1` (``Σ_k d(Δ_k) <= δ``), :meth:`~KeypointSpec.mean` (``(1/K) Σ_k d(Δ_k) <= δ``),
  :meth:`~KeypointSpec.weighted` (``Σ_k w_k d(Δ_k) <= δ``), with the per-keypoint distance ``d`` the L1
  (``|du| + |dv|``, default) or the L∞ (``max(|du|, |dv|)``) norm;
* :meth:`~KeypointSpec.linf` (``d(Δ_k) <= δ`` for every k: K rows, one keypoint each — the decoupled form);
* :meth:`~KeypointSpec.polytope` ``(A, b)``: ``A · vec(Δ) <= b`` with ``vec(Δ) = (du_0, dv_0, du_1, …)``,
  also from a YAML/JSON file (:meth:`~KeypointSpec.from_file`: keys ``A``, ``b``, optional ``unit``).

Deviations are in heatmap pixels (``unit="heatmap"``) or input pixels (``unit="input"``: the heatmap
deviation times the stride, which the verifier knows from the image and heatmap sizes).

The *decoupled* form (:meth:`KeypointSpec.share`) splits every row's budget evenly over the keypoints the
row involves: keypoint k alone must meet ``g_jk(Δ_k) <= b_j / n_j``. Meeting all shares implies the joint
spec, so a decoupled certificate is a (conservative) certificate of the joint spec.

Example::

    >>> import numpy as np
    >>> spec = KeypointSpec.l1(3)
    >>> clean = np.array([[4, 4], [10, 2]])
    >>> spec.violated(clean, clean + [[1, 1], [0, 1]]), spec.violated(clean, clean + [[2, 1], [0, 1]])
    (False, True)
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from geo_rs.errors import UserError

SPEC_TOL = 1e-9  # a row is violated when its value exceeds b_j + SPEC_TOL · (1 + |b_j|)
KINDS = ("l1", "mean", "weighted", "linf", "polytope")
UNITS = ("heatmap", "input")
DISTANCES = ("l1", "linf")


def _number(name: str, value, allow_negative: bool = False) -> float:
    from geo_rs.checks import finite_number, non_negative_finite

    return finite_number(name, value) if allow_negative else non_negative_finite(name, value)


@dataclass(frozen=True)
class KeypointSpec:
    """A joint specification (build it with the class methods; see the module docstring).

    Attributes:
        kind: "l1" | "mean" | "weighted" | "linf" | "polytope".
        delta: the budget δ (norm kinds). weights: per-keypoint weights (weighted).
        A, b: the polytope (rows of 2K entries; b per row). unit: "heatmap" | "input".
        distance: per-keypoint distance of the norm kinds: "l1" or "linf".
    """

    kind: str
    delta: float | None = None
    weights: tuple[float, ...] | None = None
    A: tuple[tuple[float, ...], ...] | None = None
    b: tuple[float, ...] | None = None
    unit: str = "heatmap"
    distance: str = "l1"

    # ------------------------------------------------------------------------------ constructors
    @classmethod
    def l1(cls, delta: float, unit: str = "heatmap", distance: str = "l1") -> KeypointSpec:
        """Total deviation of all keypoints ``Σ_k d(Δ_k) <= δ``."""
        return cls("l1", _number("spec delta", delta), unit=unit, distance=distance)._validated()

    @classmethod
    def mean(cls, delta: float, unit: str = "heatmap", distance: str = "l1") -> KeypointSpec:
        """Mean deviation ``(1/K) Σ_k d(Δ_k) <= δ``."""
        return cls("mean", _number("spec delta", delta), unit=unit, distance=distance)._validated()

    @classmethod
    def weighted(cls, weights, delta: float, unit: str = "heatmap", distance: str = "l1") -> KeypointSpec:
        """Weighted deviation ``Σ_k w_k d(Δ_k) <= δ`` (``w_k >= 0``; e.g. from a PnP sensitivity analysis)."""
        w = np.asarray(weights, dtype=np.float64).reshape(-1)
        if not w.size or not np.isfinite(w).all() or (w < 0).any():
            raise UserError(f"spec weights must be a non-empty list of finite numbers >= 0, got {list(w)}")
        return cls(
            "weighted",
            _number("spec delta", delta),
            weights=tuple(float(v) for v in w),
            unit=unit,
            distance=distance,
        )._validated()

    @classmethod
    def linf(cls, delta: float, unit: str = "heatmap", distance: str = "l1") -> KeypointSpec:
        """Every keypoint within δ: ``d(Δ_k) <= δ`` for all k (the decoupled form)."""
        return cls("linf", _number("spec delta", delta), unit=unit, distance=distance)._validated()

    @classmethod
    def polytope(cls, A, b, unit: str = "heatmap") -> KeypointSpec:
        """``A · vec(Δ) <= b``: ``A`` is ``(m, 2K)`` (columns du_0, dv_0, du_1, …), ``b`` is ``(m,)``."""
        try:
            a = np.asarray(A, dtype=np.float64)
            bb = np.asarray(b, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            raise UserError("polytope spec: A and b must be numeric arrays") from None
        if a.ndim == 1:
            a = a[None]
        if a.ndim != 2 or a.shape[0] < 1 or a.shape[1] < 2 or a.shape[1] % 2:
            raise UserError(f"polytope spec: A must be (m, 2K) with m >= 1, K >= 1; got shape {a.shape}")
        if bb.shape != (a.shape[0],):
            raise UserError(
                f"polytope spec: b must have {a.shape[0]} entries (one per row of A), got {bb.size}"
            )
        if not (np.isfinite(a).all() and np.isfinite(bb).all()):
            raise UserError("polytope spec: A and b must be finite")
        return cls(
            "polytope",
            A=tuple(tuple(float(v) for v in r) for r in a),
            b=tuple(float(v) for v in bb),
            unit=unit,
        )._validated()

    @classmethod
    def from_file(cls, path: str | Path) -> KeypointSpec:
        """A polytope from YAML/JSON: ``{A: [[...], ...], b: [...], unit: heatmap}``."""
        from geo_rs.checks import existing_file
        from geo_rs.config import read_yaml

        p = existing_file(path, "spec file")
        if p.suffix.lower() == ".json":
            try:
                d = json.loads(p.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise UserError(f"{p}: malformed JSON ({exc})") from None
            if not isinstance(d, dict):
                raise UserError(f"{p}: expected a mapping with keys A, b")
        else:
            d = read_yaml(p)
        unknown = sorted(set(d) - {"A", "b", "unit"})
        if unknown or "A" not in d or "b" not in d:
            raise UserError(f"{p}: a polytope spec needs keys A and b (optional unit); got {sorted(d)}")
        try:
            return cls.polytope(d["A"], d["b"], unit=d.get("unit", "heatmap"))
        except UserError as exc:
            raise UserError(f"{p}: {exc}") from None

    @classmethod
    def parse(cls, text: str) -> KeypointSpec:
        """``"l1:3"``, ``"mean:0.5"``, ``"linf:1"``, ``"l1:6:input"`` (kind:delta[:unit])."""
        parts = str(text).split(":")
        if len(parts) not in (2, 3) or parts[0] not in ("l1", "mean", "linf"):
            raise UserError(f"spec {text!r}: expected KIND:DELTA[:UNIT] with KIND l1, mean or linf")
        try:
            delta = float(parts[1])
        except ValueError:
            raise UserError(f"spec {text!r}: delta {parts[1]!r} is not a number") from None
        return getattr(cls, parts[0])(delta, unit=parts[2] if len(parts) == 3 else "heatmap")

    def _validated(self) -> KeypointSpec:
        if self.kind not in KINDS:
            raise UserError(f"unknown spec kind {self.kind!r}; choose one of {', '.join(KINDS)}")
        if self.unit not in UNITS:
            raise UserError(f"spec unit must be one of {', '.join(UNITS)}, got {self.unit!r}")
        if self.distance not in DISTANCES:
            raise UserError(f"spec distance must be one of {', '.join(DISTANCES)}, got {self.distance!r}")
        return self

    # ------------------------------------------------------------------------------ shape
    @property
    def num_keypoints(self) -> int | None:
        """K the spec is written for (None: any K)."""
        if self.kind == "weighted":
            return len(self.weights)
        if self.kind == "polytope":
            return len(self.A[0]) // 2
        return None

    def check(self, k: int) -> KeypointSpec:
        """Raise a one-line UserError unless the spec applies to K = ``k`` keypoints."""
        need = self.num_keypoints
        if need is not None and need != k:
            raise UserError(
                f"the {self.kind} spec is written for {need} keypoints but the model has {k} heatmaps"
            )
        return self

    def describe(self) -> str:
        if self.kind == "polytope":
            return f"polytope({len(self.b)} rows, {self.unit} px)"
        dist = "" if self.distance == "l1" else ", per-keypoint linf"
        w = f"w={list(self.weights)}, " if self.kind == "weighted" else ""
        return f"{self.kind}({w}delta={self.delta:g}, {self.unit} px{dist})"

    # ------------------------------------------------------------------------------ rows
    def rows(self, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The spec as rows: ``(W (m, K), P (m, 2K), b (m,))``; row j's value is
        ``Σ_k W[j, k] · d(Δ_k) + P[j] · vec(Δ)`` (norm rows use W, polytope rows use P)."""
        self.check(k)
        if self.kind == "polytope":
            p = np.asarray(self.A, np.float64)
            return np.zeros((len(p), k)), p, np.asarray(self.b, np.float64)
        if self.kind == "linf":
            return np.eye(k), np.zeros((k, 2 * k)), np.full(k, self.delta)
        w = {"l1": np.ones(k), "mean": np.full(k, 1.0 / k), "weighted": np.asarray(self.weights)}[self.kind]
        if self.kind == "mean":  # Σ d <= K δ keeps integer coefficients (an exact MILP threshold)
            w, b = np.ones(k), k * self.delta
        else:
            b = self.delta
        return w[None], np.zeros((1, 2 * k)), np.array([b])

    def distance_of(self, du: np.ndarray, dv: np.ndarray) -> np.ndarray:
        """Per-keypoint distance ``d`` of deviations (same unit as given)."""
        du, dv = np.abs(du), np.abs(dv)
        return du + dv if self.distance == "l1" else np.maximum(du, dv)

    def terms(self, k: int, scale: float = 1.0):
        """``terms(j, kp, du, dv)`` → ``g_jk`` of heatmap-pixel deviations (arrays), and ``b (m,)``.

        ``scale`` converts heatmap pixels to the spec's unit (the stride for ``unit="input"``)."""
        W, P, b = self.rows(k)

        def g(j: int, kp: int, du: np.ndarray, dv: np.ndarray) -> np.ndarray:
            du = np.asarray(du, np.float64) * scale
            dv = np.asarray(dv, np.float64) * scale
            return W[j, kp] * self.distance_of(du, dv) + P[j, 2 * kp] * du + P[j, 2 * kp + 1] * dv

        return g, b

    def participants(self, k: int) -> list[list[int]]:
        """Per row, the keypoints whose deviation enters it."""
        W, P, _ = self.rows(k)
        return [
            [kp for kp in range(k) if W[j, kp] != 0 or P[j, 2 * kp] != 0 or P[j, 2 * kp + 1] != 0]
            for j in range(len(W))
        ]

    # ------------------------------------------------------------------------------ evaluation
    def row_values(self, clean_uv, new_uv, scale: float = 1.0) -> np.ndarray:
        """Row values ``(m,)`` of the deviation ``new_uv − clean_uv`` (both ``(K, 2)`` heatmap pixels)."""
        c = np.asarray(clean_uv, np.float64)
        n = np.asarray(new_uv, np.float64)
        if c.shape != n.shape or c.ndim != 2 or c.shape[1] != 2:
            raise UserError(f"keypoints must be two (K, 2) arrays, got {c.shape} and {n.shape}")
        k = len(c)
        g, b = self.terms(k, scale)
        d = n - c
        return np.array([sum(float(g(j, kp, d[kp, 0], d[kp, 1])) for kp in range(k)) for j in range(len(b))])

    def margin(self, clean_uv, new_uv, scale: float = 1.0) -> float:
        """``max_j (value_j − b_j − tol_j)``: > 0 iff the spec is violated."""
        k = len(np.asarray(clean_uv))
        _, b = self.terms(k, scale)
        return float(np.max(self.row_values(clean_uv, new_uv, scale) - b - tolerance(b)))

    def violated(self, clean_uv, new_uv, scale: float = 1.0) -> bool:
        return self.margin(clean_uv, new_uv, scale) > 0

    # ------------------------------------------------------------------------------ decoupled form
    def share(self, k: int, kp: int) -> tuple[list[int], np.ndarray]:
        """Rows that involve keypoint ``kp`` and its even share of their budgets ``b_j / n_j``."""
        _, b = self.terms(k)
        parts = self.participants(k)
        rows = [j for j in range(len(b)) if kp in parts[j]]
        return rows, np.array([b[j] / len(parts[j]) for j in rows])


def tolerance(b: np.ndarray) -> np.ndarray:
    return SPEC_TOL * (1.0 + np.abs(np.asarray(b, np.float64)))


def violation_threshold(coefs: list[np.ndarray], b: float) -> float:
    """Smallest value that counts as a violation of a row with budget ``b`` in a MILP ``value >= thr``.

    If every coefficient the row can take is an integer, the row value is an integer and a violation
    (``value > b + tol``) means ``value >= floor(b + tol) + 1`` — exact and far from solver tolerances.
    Otherwise ``thr = b + tol`` (sound: every violation satisfies ``value >= thr``)."""
    tol = float(tolerance(np.array([b]))[0])
    allc = np.concatenate([np.asarray(c, np.float64).reshape(-1) for c in coefs]) if coefs else np.zeros(0)
    if np.all(np.abs(allc - np.round(allc)) <= 1e-12):
        return float(math.floor(b + tol) + 1)
    return b + tol
