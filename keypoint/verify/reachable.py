"""Reachable heatmaps of a detector over a perturbation set, at three levels of coupling.

All levels describe, per keypoint k, the *differences* ``w_i = f_i(x') − f_c(x')`` between each pixel i
of heatmap k and the clean argmax c (``w_c ≡ 0``): the argmax of the heatmap is the argmax of ``w``, and a
difference is bounded much more tightly than two pixels separately (the common mode cancels).

* ``interval``: per-pixel IBP bounds (:func:`geo_rs.output_bounds`) prefilter the pixels that can beat c
  at all (``u_i >= l_c``); the survivors' differences are then bounded by the chosen method (IBP /
  CROWN-IBP / CROWN / alpha-CROWN) with the specification matrix ``C`` (rows ``e_i − e_c``), and a pixel
  survives only if ``max w_i >= 0``. (CROWN over every pixel — the identity specification — costs
  ~2,000 rows' worth; the prefilter usually leaves tens to hundreds.)
* ``linear``: additionally, each surviving difference gets a *band* linear in the perturbation
  parameters ``t ∈ [0, 1]^P`` — brightness/contrast: their 1–2 parameters; white noise: every pixel —
  shared by all keypoints, which is what couples them in the MILP. A band ``a·t + L <= w <= a·t + U`` is
  sound for *any* slope ``a``: the slope is fitted (least squares on samples, or the input gradient for
  white noise) and ``L, U`` are sound bounds of ``w − a·t`` from the bound engine, through a network that
  takes ``t`` as its input and also outputs it (``C`` rows ``e_i − e_c − a·e_t``). With 1–2 parameters
  the box is cut into cells with a band each (the MILP picks the cell). The interval bounds are kept
  (and tightened by the bands), so this level is never looser than ``interval``.
* ``exact``: the whole network encoded by :func:`geo_rs.encode_network` (plain ``nn.Sequential``
  detectors of supported layers, small inputs only).

Floating point: the bound engine runs on a float64 copy of the detector (bounds of the real-arithmetic
network, :func:`geo_rs.layer_bounds` with ``dtype=torch.float64``); every bound is then widened by the
deployed model's rigorous deviation from it plus the engine's float64 rounding
(:func:`~keypoint.verify.float_margin.float_deviation`), so the sets hold for the model a user runs:
``float32="rigorous"`` the float32 model, ``float32="float64"`` the model run in float64
(``model.double()``, whose margin is ~10^9 times smaller). For model structures that analysis does not
know, or with ``float32="heuristic"``, a heuristic margin is used and a note says so (certificates then
hold for the real-arithmetic network only).
At the exact level the argmax bounds are intersected with the encoder's own (float-sound) output bounds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from geo_rs.errors import UserError

from .wrappers import FlatHeatmaps

LEVELS = ("interval", "linear", "exact")
# Specification rows × batch per bound call: the backward pass holds (rows × batch × activations) float64
# values, ~GBs beyond a few hundred rows on a 64x64 detector (4096 rows × 8 cells ran a 23 GB machine out
# of memory).
MAX_ROWS = 256


def widen(lo, hi, extra: np.ndarray | float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Real-arithmetic float64 bounds → bounds of the float32 model: ``extra`` (the float margin of each
    bounded quantity) either way."""
    lo = np.asarray(lo, np.float64)
    hi = np.asarray(hi, np.float64)
    return lo - extra, hi + extra


@dataclass
class KeypointReach:
    """Reachable differences of one heatmap (``n`` = surviving candidates, the clean argmax first).

    Attributes:
        clean: flat index of the clean argmax. survivors: ``(n,)`` flat pixel indices.
        lower, upper: ``(n,)`` sound bounds of ``w_i = f_i − f_c`` (0, 0 for the clean pixel).
        band_coef: ``(M, n, P)`` slopes in the parameters per cell (None below the linear level).
        band_lower, band_upper: ``(M, n)`` offsets: on cell m, ``a·t + L <= w <= a·t + U``.
    """

    clean: int
    survivors: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    band_coef: np.ndarray | None = None
    band_lower: np.ndarray | None = None
    band_upper: np.ndarray | None = None

    def keep(self, mask: np.ndarray) -> None:
        mask = np.asarray(mask, bool)
        mask[0] = True  # the clean pixel always stays (w_c = 0 is in every set)
        self.survivors, self.lower, self.upper = self.survivors[mask], self.lower[mask], self.upper[mask]
        if self.band_coef is not None:
            self.band_coef = self.band_coef[:, mask]
            self.band_lower, self.band_upper = self.band_lower[:, mask], self.band_upper[:, mask]


@dataclass
class ReachableHeatmaps:
    """Per-keypoint reachable differences plus what the MILP needs to couple them.

    Attributes:
        level: "interval" | "linear" | "exact". method: the bound method. shape: ``(K, h, w)``.
        keypoints: one :class:`KeypointReach` per heatmap. n_params: P (linear level).
        cells: ``(M, P, 2)`` boxes of ``t`` with their own bands (linear level).
        encoding: the :class:`geo_rs.NetworkEncoding` (exact level) and ``outputs`` its expressions.
        params: how ``t`` maps to the set (see :class:`ParamNet`). seconds: time per stage.
        notes: what deviated from the request (e.g. a bound-method fallback).
        margin: the :class:`~keypoint.verify.float_margin.FloatMargin` the bounds were widened by.
        arithmetic: which model the sets hold for: "float32", "float64" (rigorous margins of the model in
            that dtype) or "real" (heuristic margin: the real-arithmetic network only).
    """

    level: str
    method: str
    shape: tuple[int, int, int]
    keypoints: list[KeypointReach]
    n_params: int = 0
    cells: np.ndarray | None = None
    encoding: object | None = None
    params: ParamNet | None = None
    seconds: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    margin: object | None = None
    arithmetic: str = "float32"

    @property
    def n_candidates(self) -> list[int]:
        return [len(r.survivors) for r in self.keypoints]

    def uv(self, k: int) -> np.ndarray:
        """``(n, 2)`` heatmap pixels (u = column, v = row) of keypoint k's candidates."""
        w = self.shape[2]
        s = self.keypoints[k].survivors
        return np.stack([s % w, s // w], 1)


# ------------------------------------------------------------------------------------------ the model
def flat_model(model: nn.Module) -> nn.Module:
    """The detector with flattened outputs, as the bound engine wants it. A ``Sequential`` stays one
    (``Sequential(*layers, Flatten())``), so its first layer is fused with brightness/contrast."""
    if isinstance(model, nn.Sequential):
        return nn.Sequential(*model, nn.Flatten()).eval()
    return FlatHeatmaps(model).eval()


FLOAT32 = ("rigorous", "heuristic", "float64")


def float_margin(net: nn.Module, x: Tensor, perturbation, notes: list[str], float32: str = "rigorous"):
    """The rounding margin per flat output (see :mod:`~keypoint.verify.float_margin`): ``rigorous`` /
    ``float64`` (the forward-error analysis of the model in ``x``'s dtype) or, when asked or for structures
    the analysis does not know, a heuristic ``1e-5·(1 + |f|)`` with a note (certificates then hold for the
    real-arithmetic network)."""
    from .float_margin import float_deviation, heuristic_margin

    m = float_deviation(net, x, perturbation, engine_pre_activations(net, x, perturbation)) \
        if float32 != "heuristic" else None
    if m is None:
        with torch.no_grad():
            out = net(x).double().flatten().numpy()
        m = heuristic_margin(out.size, out)
        why = "asked" if float32 != "rigorous" else "the model's structure is not one the analysis knows"
        notes.append(
            f"float32 rounding bounded heuristically (1e-5 relative + absolute; {why}): certificates hold "
            "for the real-arithmetic network, not rigorously for float32"
        )
    return m


def engine_pre_activations(net: nn.Module, x: Tensor, perturbation) -> list | None:
    """IBP bounds of every ReLU input of the real-arithmetic network (execution order; brightness /
    contrast fused with the first layer), for the rounding analysis; None if the engine cannot."""
    from geo_rs import layer_bounds

    try:
        lb = layer_bounds(net, x.double(), perturbation, "IBP", dtype=torch.float64)
    except UserError:
        return None
    return [(b.lower, b.upper) for b in lb.pre_activations]


# ------------------------------------------------------------------------------------------ engine calls
FALLBACK = {"CROWN": "CROWN-IBP", "alpha-CROWN": "CROWN-IBP"}


def engine_bounds(
    net: nn.Module, x: Tensor, perturbation, method: str, C: Tensor | None, notes: list[str]
) -> tuple[Tensor, Tensor, str]:
    """Bounds of ``C · net`` for the real-arithmetic network (:func:`geo_rs.layer_bounds` on a float64
    copy), with a documented fallback: when CROWN / alpha-CROWN cannot be computed for this model
    (``UnsupportedModelError``: auto_LiRPA 0.3 trips on some trained conv nets under brightness,
    contrast or our parameter networks), CROWN-IBP is used instead and a note says so. A failure of the
    fallback is one UserError line."""
    from geo_rs import UnsupportedModelError, layer_bounds

    x64 = x.double()
    C64 = None if C is None else C.double()
    try:
        out = layer_bounds(net, x64, perturbation, method, C64, dtype=torch.float64).output
        return out.lower, out.upper, method
    except UnsupportedModelError as exc:
        if method not in FALLBACK:
            raise
        msg = " ".join(str(exc).split())[:120]
        note = f"{method} failed ({msg}); used {FALLBACK[method]}"
        if note not in notes:
            notes.append(note)
    return engine_bounds(net, x, perturbation, FALLBACK[method], C, notes)


# ------------------------------------------------------------------------------------------ interval
def interval_reach(
    model: nn.Module,
    x: Tensor,
    perturbation,
    method: str,
    clean: np.ndarray,
    shape: tuple[int, int, int],
    float32: str = "rigorous",
) -> ReachableHeatmaps:
    """The interval level (see module docstring). ``clean`` ``(K,)`` flat argmax indices per heatmap."""
    t0 = time.perf_counter()
    k, h, w = shape
    net = flat_model(model)
    notes: list[str] = []
    fm = float_margin(net, x, perturbation, notes, float32)
    pix = fm.output()
    # Per-pixel bounds only choose which differences to bound: IBP is enough for that and ~100x cheaper
    # than CROWN's identity specification over every pixel (the differences below use ``method``).
    lo, hi, _ = engine_bounds(net, x, perturbation, "IBP", None, notes)
    lo, hi = widen(lo[0].numpy(), hi[0].numpy(), pix)
    lo, hi = lo.reshape(k, h * w), hi.reshape(k, h * w)
    pre = [np.flatnonzero(hi[j] >= lo[j, clean[j]]) for j in range(k)]
    pre = [np.concatenate([[clean[j]], p[p != clean[j]]]) for j, p in enumerate(pre)]
    t1 = time.perf_counter()
    rows = [(j, i) for j in range(k) for i in pre[j][1:]]
    reach = [
        KeypointReach(int(clean[j]), pre[j], np.zeros(len(pre[j])), np.zeros(len(pre[j]))) for j in range(k)
    ]
    if rows:
        C = torch.zeros(len(rows), k * h * w, dtype=x.dtype)
        for r, (j, i) in enumerate(rows):
            C[r, j * h * w + i] += 1.0
            C[r, j * h * w + clean[j]] -= 1.0
        parts = [
            engine_bounds(net, x, perturbation, method, C[s : s + MAX_ROWS], notes)
            for s in range(0, len(C), MAX_ROWS)
        ]
        method = parts[-1][2]
        out_i = np.array([j * h * w + i for j, i in rows])
        out_c = np.array([j * h * w + clean[j] for j, _ in rows])
        dlo, dhi = widen(
            torch.cat([p[0] for p in parts], 1)[0].numpy(),
            torch.cat([p[1] for p in parts], 1)[0].numpy(),
            pix[out_i] + pix[out_c],
        )
        # Intersect with the per-pixel bounds (both sound): w_i in [l_i − u_c, u_i − l_c].
        pos = 0
        for j in range(k):
            n = len(pre[j]) - 1
            ii = pre[j][1:]
            c = clean[j]
            reach[j].lower[1:] = np.maximum(dlo[pos : pos + n], lo[j, ii] - hi[j, c])
            reach[j].upper[1:] = np.minimum(dhi[pos : pos + n], hi[j, ii] - lo[j, c])
            pos += n
            reach[j].keep(reach[j].upper >= 0)
    arith = str(x.dtype).replace("torch.", "") if fm.rigorous else "real"
    out = ReachableHeatmaps("interval", method, shape, reach, notes=notes, margin=fm, arithmetic=arith)
    out.seconds.update({"pixel_bounds": t1 - t0, "difference_bounds": time.perf_counter() - t1})
    return out


# ------------------------------------------------------------------------------------------ linear
class ParamNet(nn.Module):
    """``t ∈ [0, 1]^P`` → ``[model(x'(t)).flatten(), t]`` with ``x'(t) = clamp(x + Σ θ_m A_m + δ, 0, 1)``,
    ``θ = lo + t_θ (hi − lo)`` and ``δ = η (2 t_δ − 1)`` (white-noise pixels are parameters too).

    The clamp is ``relu(z) − relu(z − 1)``; the θ map is a Linear layer (P_θ small), the noise map
    elementwise. Input: ``(B, P)`` (flat)."""

    def __init__(self, model: nn.Module, x: Tensor, perturbation) -> None:
        super().__init__()
        fam = perturbation.family(x)
        self.model = model
        self.image_shape = tuple(x.shape[1:])
        n_pix = x[0].numel()
        self.n_theta = fam.n_params
        self.noise = float(fam.noise)
        self.n_noise = n_pix if self.noise > 0 else 0
        self.theta_lo, self.theta_hi = fam.theta_lo.double(), fam.theta_hi.double()
        base = x[0].flatten().clone()
        if self.n_theta:
            dirs = fam.directions[0].reshape(self.n_theta, n_pix)
            span = (fam.theta_hi - fam.theta_lo).reshape(-1, 1)
            self.theta_map = nn.Linear(self.n_theta, n_pix, dtype=x.dtype)
            with torch.no_grad():
                self.theta_map.weight.copy_((dirs * span).T)
                self.theta_map.bias.copy_(base + (dirs * fam.theta_lo.reshape(-1, 1)).sum(0))
            self.theta_map.requires_grad_(False)
        self.register_buffer("base", base - self.noise)
        self.to(x.dtype)  # a float64 deployment: the slopes are fitted on the float64 model

    @property
    def n_params(self) -> int:
        return self.n_theta + self.n_noise

    def perturb(self, t: Tensor) -> Tensor:
        """The perturbed images ``(B, *image)`` for parameters ``t (B, P)``."""
        if self.n_theta and self.n_noise:
            z = self.theta_map(t[:, : self.n_theta]) - self.noise + 2 * self.noise * t[:, self.n_theta :]
        elif self.n_theta:
            z = self.theta_map(t)
        else:
            z = self.base + 2 * self.noise * t
        # Image-shaped before the clamp: auto_LiRPA 0.3's sparse intermediate bounds index channel
        # dimensions of unstable ReLUs and fail (IndexError) on flat ones.
        z = z.reshape(-1, *self.image_shape)
        return torch.relu(z) - torch.relu(z - 1.0)

    def forward(self, t: Tensor) -> Tensor:
        return torch.cat([self.model(self.perturb(t)).flatten(1), t], 1)

    def to_theta_delta(self, t: Tensor) -> tuple[Tensor | None, Tensor | None]:
        """``(θ (1, k) or None, δ (1, *image) or None)`` of one parameter vector ``t (P,)``."""
        t = t.reshape(-1).clamp(0, 1)
        theta = delta = None
        if self.n_theta:
            lo, hi = self.theta_lo.to(t), self.theta_hi.to(t)
            theta = (lo + t[: self.n_theta] * (hi - lo)).reshape(1, -1)
        if self.n_noise:
            delta = (self.noise * (2 * t[self.n_theta :] - 1)).reshape(1, *self.image_shape)
        return theta, delta


def make_cells(n_params: int, splits: int) -> np.ndarray:
    """An even grid of ``splits`` per parameter over ``[0, 1]^P`` → boxes ``(M, P, 2)``."""
    edges = np.linspace(0.0, 1.0, splits + 1)
    grid = np.array(np.meshgrid(*[np.arange(splits)] * n_params, indexing="ij")).reshape(n_params, -1).T
    return np.stack([edges[grid], edges[grid + 1]], -1)


def _rows(reach: list[KeypointReach], hw: int) -> tuple[Tensor, Tensor]:
    """Output indices of every non-clean survivor and of its clean pixel (keypoint order)."""
    rows = [(j, i) for j, r in enumerate(reach) for i in r.survivors[1:]]
    return (
        torch.tensor([j * hw + i for j, i in rows], dtype=torch.long),
        torch.tensor([j * hw + reach[j].clean for j, _ in rows], dtype=torch.long),
    )


def _fit_slopes(pnet: ParamNet, out_idx: Tensor, ref_idx: Tensor, n_out: int, cells: np.ndarray) -> Tensor:
    """Slopes ``(M, R, P)`` of every row's difference in ``t``, per cell.

    Few parameters: least squares on each cell's corners, centre and random points. White noise (one cell):
    the gradient at the clean image (t = 1/2), batched over rows."""
    p = pnet.n_params
    if pnet.n_noise == 0:
        gen = torch.Generator().manual_seed(0)
        unit = torch.cat(
            [
                torch.cartesian_prod(*[torch.tensor([0.0, 1.0])] * p).reshape(-1, p),
                torch.full((1, p), 0.5),
                torch.rand(8, p, generator=gen),
            ]
        )
        out = []
        dt = pnet.base.dtype
        unit = unit.to(dt)
        for cell in torch.as_tensor(cells, dtype=dt):
            pts = cell[:, 0] + unit * (cell[:, 1] - cell[:, 0])
            with torch.no_grad():
                y = pnet(pts)[:, :n_out]
            wd = (y[:, out_idx] - y[:, ref_idx]).double()
            design = torch.cat([pts.double(), torch.ones(len(pts), 1, dtype=torch.float64)], 1)
            out.append(torch.linalg.lstsq(design, wd).solution[:p].T.float())
        return torch.stack(out)
    grads = []
    t0 = torch.full((1, p), 0.5, dtype=pnet.base.dtype)
    for s in range(0, len(out_idx), 64):
        oi, ri = out_idx[s : s + 64], ref_idx[s : s + 64]
        t = t0.expand(len(oi), p).clone().requires_grad_(True)
        y = pnet(t)
        sel = y.gather(1, oi[:, None]) - y.gather(1, ri[:, None])
        (g,) = torch.autograd.grad(sel.sum(), t)
        grads.append(g.detach())
    return torch.cat(grads)[None]


def _sparsify(a: Tensor, max_terms: int | None) -> Tensor:
    if max_terms is None or a.shape[-1] <= max_terms:
        return a
    keep = a.abs().topk(max_terms, dim=-1).indices
    return torch.zeros_like(a).scatter_(-1, keep, a.gather(-1, keep))


def add_linear_bands(
    reach: ReachableHeatmaps,
    model: nn.Module,
    x: Tensor,
    perturbation,
    max_terms: int | None = 256,
    splits: int | None = None,
) -> ReachableHeatmaps:
    """Upgrade an interval-level reach to the linear level (in place; returns it).

    With 1–2 parameters the box ``[0, 1]^P`` is cut into ``splits`` per parameter (default 8 for one, 3 for
    two): each cell gets its own bands (tighter: fewer unstable ReLUs, a better slope), and the MILP picks
    the cell with one binary per cell. White noise: one cell, bands over all pixels (``max_terms`` largest
    slopes kept per band; the rest of the slope is zero, which is still sound)."""
    from geo_rs import WhiteNoise

    t0 = time.perf_counter()
    k, h, w = reach.shape
    hw = h * w
    pnet = ParamNet(model, x, perturbation).eval()
    p = pnet.n_params
    if splits is None:
        splits = {1: 8, 2: 3}.get(p, 1) if pnet.n_noise == 0 else 1
    cells = (
        make_cells(p, splits) if p and pnet.n_noise == 0 else np.stack([np.zeros(p), np.ones(p)], -1)[None]
    )
    m = len(cells)
    reach.level, reach.params, reach.n_params, reach.cells = "linear", pnet, p, cells
    out_idx, ref_idx = _rows(reach.keypoints, hw)
    for r in reach.keypoints:
        n = len(r.survivors)
        r.band_coef = np.zeros((m, n, p))
        r.band_lower, r.band_upper = np.repeat(r.lower[None], m, 0), np.repeat(r.upper[None], m, 0)
    if not len(out_idx) or p == 0:
        reach.seconds["linear_bands"] = time.perf_counter() - t0
        return reach
    slopes = _fit_slopes(pnet, out_idx, ref_idx, k * hw, cells)
    slopes = _sparsify(slopes, max_terms if pnet.n_noise else None).to(torch.float32)
    C = torch.zeros(m, len(out_idx), k * hw + p)
    rng = torch.arange(len(out_idx))
    C[:, rng, out_idx] += 1.0
    C[:, rng, ref_idx] -= 1.0
    C[:, :, k * hw :] = -slopes
    centres = torch.as_tensor(cells.mean(-1), dtype=torch.float32)
    radius = float((cells[0, 0, 1] - cells[0, 0, 0]) / 2)
    try:
        step = max(MAX_ROWS // m, 1)
        parts = [
            engine_bounds(pnet, centres, WhiteNoise(radius), reach.method, C[:, s : s + step], reach.notes)
            for s in range(0, C.shape[1], step)
        ]
        lo, hi = torch.cat([q[0] for q in parts], 1), torch.cat([q[1] for q in parts], 1)
        used = parts[-1][2]
    except UserError as exc:
        raise UserError(
            f"the linear reachable level failed on this model and perturbation ({exc}); "
            "use reachable='interval'"
        ) from exc
    reach.method = used
    a = slopes.double().numpy()  # (M, R, P): exactly the float32 slopes the bounds were computed for
    # Float32 model vs real arithmetic (both pixels of a row) + float64 rounding of the slope terms.
    pix = reach.margin.output()
    extra = pix[out_idx.numpy()] + pix[ref_idx.numpy()] + 1e-12 * (1 + np.abs(a).sum(-1))
    lo, hi = widen(lo.numpy(), hi.numpy(), extra)
    # Over its own cell a band also bounds w: a·t + L >= L + Σ min(a·lo_cell, a·hi_cell).
    c_lo, c_hi = cells[:, None, :, 0], cells[:, None, :, 1]
    w_lo = (lo + np.minimum(a * c_lo, a * c_hi).sum(-1)).min(0)
    w_hi = (hi + np.maximum(a * c_lo, a * c_hi).sum(-1)).max(0)
    pos = 0
    for r in reach.keypoints:
        n = len(r.survivors) - 1
        sl = slice(pos, pos + n)
        r.band_coef[:, 1:] = a[:, sl]
        r.band_lower[:, 1:], r.band_upper[:, 1:] = lo[:, sl], hi[:, sl]
        r.lower[1:] = np.maximum(r.lower[1:], w_lo[sl])
        r.upper[1:] = np.minimum(r.upper[1:], w_hi[sl])
        r.lower[1:] = np.minimum(r.lower[1:], r.upper[1:])  # never cross (rounding)
        pos += n
        r.keep(r.upper >= 0)
    reach.seconds["linear_bands"] = time.perf_counter() - t0
    return reach


# ------------------------------------------------------------------------------------------ exact
def check_exact_supported(model: nn.Module) -> None:
    """Refuse (one line) a detector :func:`geo_rs.encode_network` cannot encode, before any work."""
    from geo_rs.bounds.milp_relu import AFFINE_LAYERS

    if not isinstance(model, nn.Sequential):
        raise UserError(
            "reachable='exact' needs an nn.Sequential detector of Conv2d / BatchNorm2d / ReLU / "
            f"pooling / Linear layers; got {type(model).__name__} (use 'linear' or 'interval')"
        )
    for layer in model:
        if isinstance(layer, nn.Sequential):
            check_exact_supported(layer)
        elif not isinstance(layer, (*AFFINE_LAYERS, nn.ReLU, nn.MaxPool2d)):
            raise UserError(
                f"reachable='exact': the MILP encoding does not support layer {type(layer).__name__} "
                "(supported: affine layers, ReLU, MaxPool2d in an nn.Sequential; use 'linear' or 'interval')"
            )


def add_exact_encoding(
    reach: ReachableHeatmaps, model: nn.Module, x: Tensor, perturbation, prob
) -> ReachableHeatmaps:
    """Encode the whole network into ``prob`` (exact level; in place; returns ``reach``)."""
    from geo_rs import encode_network

    t0 = time.perf_counter()
    check_exact_supported(model)
    enc = encode_network(
        nn.Sequential(*model, nn.Flatten()), x, perturbation, reach.method, prob=prob, name="net"
    )
    reach.level, reach.encoding = "exact", enc
    # The encoder's output bounds hold for every float32 evaluation (the engine's raw output_bounds have
    # no float32 margin): the argmax gadget's bounds of w_i = f_i − f_c are intersected with them.
    e_lo, e_hi = (np.asarray(b, np.float64) for b in enc.output_bounds)
    hw = reach.shape[1] * reach.shape[2]
    for k, r in enumerate(reach.keypoints):
        ii, c = k * hw + r.survivors[1:], k * hw + r.clean
        r.lower[1:] = np.maximum(r.lower[1:], e_lo[ii] - e_hi[c])
        r.upper[1:] = np.minimum(r.upper[1:], e_hi[ii] - e_lo[c])
        r.lower[1:] = np.minimum(r.lower[1:], r.upper[1:])
    reach.seconds["exact_encoding"] = time.perf_counter() - t0
    return reach


def compute_reach(
    model: nn.Module,
    x: Tensor,
    perturbation,
    level: str,
    method: str,
    clean: np.ndarray,
    shape: tuple[int, int, int],
    max_terms: int | None = 256,
    splits: int | None = None,
    float32: str = "rigorous",
) -> ReachableHeatmaps:
    """Interval reach, upgraded to ``linear`` if asked (``exact`` is encoded into the MILP later)."""
    reach = interval_reach(model, x, perturbation, method, clean, shape, float32)
    if level == "linear":
        add_linear_bands(reach, model, x, perturbation, max_terms, splits)
    return reach
