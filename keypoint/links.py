"""Conditional link prediction among category-implicit keypoints (KLPNet §3.3, "CLPGM").

A graph auto-encoder (Kipf & Welling 2016) over the keypoints of detected objects:

* **Nodes** are keypoints. Node features ``x`` (N, D) are whatever the caller provides — in
  :mod:`keypoint.models.klpnet` they are heatmap-stage features sampled at the keypoint plus its
  position normalised by the object box and its heatmap score.
* **Condition**: every node carries the category ``c`` (N,) of the object it is proposed for. A
  learned category embedding is concatenated to the input features and added (FiLM-style bias) in
  every layer, so the same geometry can mean different skeletons for different categories.
* **Encoder**: ``h_{l+1} = tanh(Â h_l W_l + h_l R_l + b_c)`` (paper: "each layer is defined as tanh(AXW)"),
  with ``Â`` the symmetrically normalised adjacency *with self loops* (paper: "the diagonal elements
  of A are set to 1"). At inference no edges are known, so the encoder graph is *block diagonal*:
  each object's nodes are fully connected among themselves (weighted by a Gaussian of their
  box-normalised distance) and disconnected from other objects ("A consists of several A_C").
* **Decoder**: inner product, ``Â_pred = sigmoid(Z Zᵀ)`` (paper eq. 7). Optionally variational
  (VGAE: ``z = μ + σ·ε`` with a KL term), the paper's eq. 6; the non-probabilistic variant is default.
* **Training**: binary cross-entropy on positive edges (the category skeleton) and sampled negative
  edges (non-skeleton pairs of the same object and pairs with foreign / outlier nodes).
* **Evaluation**: ROC-AUC and average precision over scored pairs, :func:`roc_auc` and
  :func:`average_precision` (same definitions as scikit-learn's ``roc_auc_score`` and
  ``average_precision_score``; ties handled identically).

Example::

    >>> import torch
    >>> from keypoint.links import ConditionalGraphAutoEncoder, object_adjacency
    >>> gae = ConditionalGraphAutoEncoder(in_dim=4, num_categories=2)
    >>> x, cat = torch.randn(5, 4), torch.tensor([0, 0, 0, 1, 1])
    >>> graph = torch.tensor([0, 0, 0, 1, 1]); xy = torch.rand(5, 2)
    >>> out = gae(x, object_adjacency(graph, xy), cat)
    >>> gae.edge_logits(out.z, torch.tensor([[0, 1], [3, 4]])).shape
    torch.Size([2])
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from geo_rs.errors import UserError

__all__ = [
    "ConditionalGraphAutoEncoder",
    "GAEOutput",
    "average_precision",
    "average_precision_naive",
    "link_loss",
    "normalized_adjacency",
    "object_adjacency",
    "roc_auc",
    "roc_auc_naive",
    "sample_negative_edges",
    "skeleton_edges_for_graph",
]


# ----------------------------------------------------------------------------------------- metrics
def _as_scores_labels(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = np.asarray(labels).reshape(-1)
    if s.shape != y.shape:
        raise UserError(f"link metrics: scores has {s.size} entries but labels has {y.size}")
    if not np.all(np.isfinite(s)):
        raise UserError("link metrics: scores contain NaN or inf")
    if not np.all((y == 0) | (y == 1)):
        raise UserError("link metrics: labels must be 0 or 1")
    return s, y.astype(bool)


def roc_auc(scores, labels) -> float:
    """Area under the ROC curve = P(score of a random positive > score of a random negative), ties ½.

    Args:
        scores: (M,) real scores (higher = more likely a link).
        labels: (M,) 0/1.
    Returns:
        AUC in [0, 1]; NaN when there are no positives or no negatives.

    Uses the Mann–Whitney rank formula with average ranks for ties (O(M log M)).
    """
    s, y = _as_scores_labels(scores, labels)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    sorted_s = s[order]
    ranks = np.empty(len(s), dtype=np.float64)
    # average rank (1-based) over each tie group
    _, start, counts = np.unique(sorted_s, return_index=True, return_counts=True)
    avg = start + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def roc_auc_naive(scores, labels) -> float:
    """Reference O(P·N) AUC by comparing every positive with every negative (ties count ½)."""
    s, y = _as_scores_labels(scores, labels)
    pos, neg = s[y], s[~y]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(wins / (len(pos) * len(neg)))


def average_precision(scores, labels) -> float:
    """Average precision AP = Σ_n (R_n − R_{n−1}) P_n over distinct score thresholds (descending).

    Same definition as ``sklearn.metrics.average_precision_score`` (no interpolation; tied scores
    form one threshold). NaN when there are no positives.
    """
    s, y = _as_scores_labels(scores, labels)
    n_pos = int(y.sum())
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    tp = np.cumsum(y_sorted)
    # last index of each group of tied scores = one threshold
    last = np.r_[np.nonzero(np.diff(s_sorted))[0], len(s) - 1]
    tp_t = tp[last].astype(np.float64)
    precision = tp_t / (last + 1)
    recall = tp_t / n_pos
    prev_recall = np.r_[0.0, recall[:-1]]
    return float(np.sum((recall - prev_recall) * precision))


def average_precision_naive(scores, labels) -> float:
    """Reference AP: loop over every distinct threshold t, precision/recall of ``score >= t``."""
    s, y = _as_scores_labels(scores, labels)
    n_pos = int(y.sum())
    if n_pos == 0:
        return float("nan")
    ap, prev_r = 0.0, 0.0
    for t in sorted(set(s.tolist()), reverse=True):
        sel = s >= t
        r = (sel & y).sum() / n_pos
        p = (sel & y).sum() / sel.sum()
        ap += (r - prev_r) * p
        prev_r = r
    return float(ap)


# ------------------------------------------------------------------------------------------ graphs
def normalized_adjacency(adj: torch.Tensor) -> torch.Tensor:
    """``D^{-1/2} (A + I) D^{-1/2}`` for a dense symmetric non-negative (N, N) adjacency."""
    if adj.dim() != 2 or adj.shape[0] != adj.shape[1]:
        raise UserError(f"adjacency must be (N, N), got {tuple(adj.shape)}")
    a = adj + torch.eye(adj.shape[0], dtype=adj.dtype, device=adj.device)
    d = a.sum(1).clamp_min(1e-12).rsqrt()
    return d[:, None] * a * d[None, :]


def object_adjacency(graph_id: torch.Tensor, xy_norm: torch.Tensor, bandwidth: float = 0.5) -> torch.Tensor:
    """Encoder graph for inference-time nodes: block diagonal, one dense block per object.

    Args:
        graph_id: (N,) long, the object each node is proposed for.
        xy_norm: (N, 2) node positions normalised by their object's box (≈ [-0.5, 0.5]).
        bandwidth: σ of the Gaussian weight on the normalised distance.
    Returns:
        (N, N) normalised adjacency (self loops included), ready for the encoder.
    """
    if graph_id.dim() != 1 or xy_norm.shape != (graph_id.shape[0], 2):
        raise UserError(f"object_adjacency: graph_id (N,) and xy_norm (N, 2) expected, got "
                        f"{tuple(graph_id.shape)} and {tuple(xy_norm.shape)}")
    same = graph_id[:, None] == graph_id[None, :]
    d2 = (xy_norm[:, None, :] - xy_norm[None, :, :]).pow(2).sum(-1)
    w = torch.exp(-d2 / (2 * bandwidth**2)) * same.to(xy_norm.dtype)
    w = w * (1 - torch.eye(len(graph_id), dtype=w.dtype, device=w.device))
    return normalized_adjacency(w)


def skeleton_edges_for_graph(slot: torch.Tensor, graph_id: torch.Tensor, category: torch.Tensor,
                             skeletons: list[list[tuple[int, int]]]) -> torch.Tensor:
    """Positive edges: node pairs of the same object whose keypoint slots form a skeleton link.

    Args:
        slot: (N,) long keypoint index of each node within its object, −1 for foreign/outlier nodes.
        graph_id: (N,) object id of each node.
        category: (N,) category of each node's object.
        skeletons: per category, list of 0-based (i, j) keypoint-index links.
    Returns:
        (P, 2) long, each undirected edge once with the smaller node index first.
    """
    n = len(slot)
    if n == 0:
        return torch.zeros(0, 2, dtype=torch.long)
    edges = []
    s, g, c = slot.tolist(), graph_id.tolist(), category.tolist()
    by_key = {(g[i], s[i]): i for i in range(n) if s[i] >= 0}
    for gid in sorted(set(g)):
        cat = next(c[i] for i in range(n) if g[i] == gid)
        for a, b in skeletons[cat]:
            ia, ib = by_key.get((gid, a)), by_key.get((gid, b))
            if ia is not None and ib is not None:
                edges.append((min(ia, ib), max(ia, ib)))
    if not edges:
        return torch.zeros(0, 2, dtype=torch.long)
    return torch.tensor(sorted(set(edges)), dtype=torch.long)


def sample_negative_edges(graph_id: torch.Tensor, pos_edges: torch.Tensor, num: int,
                          generator: torch.Generator | None = None,
                          cross_graph_fraction: float = 0.0) -> torch.Tensor:
    """Sample up to ``num`` distinct non-edges (i < j).

    Most negatives are drawn inside objects (same ``graph_id``: the hard ones — same object, not
    linked); ``cross_graph_fraction`` of them between different objects. Pairs in ``pos_edges`` are
    never returned. Returns (M, 2) long with M ≤ num (fewer when the graph has fewer non-edges).
    """
    n = len(graph_id)
    if n < 2 or num <= 0:
        return torch.zeros(0, 2, dtype=torch.long)
    iu = torch.triu_indices(n, n, 1)
    is_pos = torch.zeros(n, n, dtype=torch.bool)
    if len(pos_edges):
        is_pos[pos_edges[:, 0], pos_edges[:, 1]] = True
        is_pos[pos_edges[:, 1], pos_edges[:, 0]] = True
    cand = ~is_pos[iu[0], iu[1]]
    same = graph_id[iu[0]] == graph_id[iu[1]]
    out = []
    n_cross = int(round(num * cross_graph_fraction))
    for mask, k in ((cand & same, num - n_cross), (cand & ~same, n_cross)):
        idx = torch.nonzero(mask).flatten()
        if k <= 0 or len(idx) == 0:
            continue
        pick = idx[torch.randperm(len(idx), generator=generator)[:k]]
        out.append(iu[:, pick].T)
    if not out:
        return torch.zeros(0, 2, dtype=torch.long)
    return torch.cat(out)


# ------------------------------------------------------------------------------------------- model
@dataclass
class GAEOutput:
    """Encoder outputs for N nodes: ``z`` (N, F) embedding used by the inner-product decoder,
    ``hidden`` (N, H) last hidden layer (used for keypoint identification), ``mu``/``logvar`` (N, F)
    for the variational variant (``logvar`` is None otherwise)."""

    z: torch.Tensor
    hidden: torch.Tensor
    mu: torch.Tensor
    logvar: torch.Tensor | None


class ConditionalGraphAutoEncoder(nn.Module):
    """Category-conditioned GCN encoder + inner-product decoder (see module docstring).

    Args:
        in_dim: node feature size D.
        num_categories: number of object categories (the condition).
        hidden: GCN hidden width; ``num_layers`` GCN layers with tanh.
        latent: embedding size F of ``z``.
        variational: VGAE encoder (μ, log σ²) with reparameterisation during training.
    """

    def __init__(self, in_dim: int, num_categories: int, hidden: int = 64, latent: int = 32,
                 num_layers: int = 2, variational: bool = False, category_dim: int = 16):
        super().__init__()
        if in_dim < 1 or num_categories < 1 or num_layers < 1:
            raise UserError(f"ConditionalGraphAutoEncoder: bad sizes in_dim={in_dim}, "
                            f"num_categories={num_categories}, num_layers={num_layers}")
        self.num_categories = num_categories
        self.variational = variational
        self.category_embedding = nn.Embedding(num_categories, category_dim)
        dims = [in_dim + category_dim] + [hidden] * num_layers
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        # root weight (GraphSAGE / GraphConv style): keeps each node's own identity separate from the
        # neighbourhood average, which plain Â·H·W washes out on small dense graphs
        self.root = nn.ModuleList(nn.Linear(a, b, bias=False) for a, b in zip(dims[:-1], dims[1:]))
        # per-layer category bias: the condition acts in every layer, not only at the input
        self.category_bias = nn.ModuleList(nn.Embedding(num_categories, hidden) for _ in range(num_layers))
        for emb in self.category_bias:
            nn.init.zeros_(emb.weight)
        self.to_mu = nn.Linear(hidden, latent)
        self.to_logvar = nn.Linear(hidden, latent) if variational else None

    def forward(self, x: torch.Tensor, adj_norm: torch.Tensor, category: torch.Tensor) -> GAEOutput:
        """x (N, D), adj_norm (N, N) normalised adjacency, category (N,) long → :class:`GAEOutput`."""
        if x.dim() != 2 or adj_norm.shape != (x.shape[0], x.shape[0]) or category.shape != (x.shape[0],):
            raise UserError(f"GAE: expected x (N, D), adj (N, N), category (N,); got {tuple(x.shape)}, "
                            f"{tuple(adj_norm.shape)}, {tuple(category.shape)}")
        if len(category) and (int(category.min()) < 0 or int(category.max()) >= self.num_categories):
            raise UserError(f"GAE: category ids must lie in [0, {self.num_categories}), got "
                            f"[{int(category.min())}, {int(category.max())}]")
        h = torch.cat([x, self.category_embedding(category)], dim=1)
        for layer, root, bias in zip(self.layers, self.root, self.category_bias):
            h = torch.tanh(adj_norm @ layer(h) + root(h) + bias(category))
        mu = self.to_mu(h)
        if self.variational:
            logvar = self.to_logvar(h).clamp(-10, 10)
            z = mu + torch.randn_like(mu) * (0.5 * logvar).exp() if self.training else mu
            return GAEOutput(z=z, hidden=h, mu=mu, logvar=logvar)
        return GAEOutput(z=mu, hidden=h, mu=mu, logvar=None)

    @staticmethod
    def edge_logits(z: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
        """Inner-product decoder logits ``z_i · z_j`` for (E, 2) edges → (E,)."""
        if len(edges) == 0:
            return z.new_zeros(0)
        return (z[edges[:, 0]] * z[edges[:, 1]]).sum(-1)

    @staticmethod
    def decode_dense(z: torch.Tensor) -> torch.Tensor:
        """Reconstructed adjacency probabilities ``sigmoid(Z Zᵀ)`` (N, N)."""
        return torch.sigmoid(z @ z.T)


def link_loss(model_out: GAEOutput, pos_edges: torch.Tensor, neg_edges: torch.Tensor,
              kl_weight: float = 1.0) -> torch.Tensor:
    """BCE on positive and negative edges (each class averaged separately, then summed, so the
    balance does not depend on how many negatives were sampled) + KL to N(0, I) for a VGAE."""
    z = model_out.z
    loss = z.new_zeros(())
    if len(pos_edges):
        lp = ConditionalGraphAutoEncoder.edge_logits(z, pos_edges)
        loss = loss + F.binary_cross_entropy_with_logits(lp, torch.ones_like(lp))
    if len(neg_edges):
        ln = ConditionalGraphAutoEncoder.edge_logits(z, neg_edges)
        loss = loss + F.binary_cross_entropy_with_logits(ln, torch.zeros_like(ln))
    if model_out.logvar is not None and len(z):
        mu, lv = model_out.mu, model_out.logvar
        kl = -0.5 * torch.mean(torch.sum(1 + lv - mu.pow(2) - lv.exp(), dim=1))
        loss = loss + kl_weight * kl / max(len(z), 1)
    return loss
