"""Link predictor (conditional graph auto-encoder) and link AUC / AP."""
import math

import numpy as np
import pytest
import torch

from geo_rs.errors import UserError
from keypoint.links import (
    ConditionalGraphAutoEncoder,
    average_precision,
    average_precision_naive,
    link_loss,
    normalized_adjacency,
    object_adjacency,
    roc_auc,
    roc_auc_naive,
    sample_negative_edges,
    skeleton_edges_for_graph,
)

pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------------------ hand-computed metrics


def test_auc_ap_hand_computed():
    scores, labels = [0.9, 0.8, 0.3, 0.1], [1, 0, 1, 0]
    # positives 0.9 beats both negatives, 0.3 beats one → 3 of 4 pairs
    assert roc_auc(scores, labels) == pytest.approx(0.75)
    # ranked: 1 (P=1, R=.5), 0, 1 (P=2/3, R=1) → .5·1 + .5·2/3
    assert average_precision(scores, labels) == pytest.approx(0.5 + 1 / 3)
    assert roc_auc([1, 2, 3], [0, 1, 1]) == 1.0
    assert average_precision([3, 2, 1], [1, 1, 0]) == 1.0
    # all tied: AUC 1/2, AP = prevalence
    assert roc_auc([0.5] * 4, [1, 0, 0, 1]) == 0.5
    assert average_precision([0.5] * 4, [1, 0, 0, 0]) == pytest.approx(0.25)
    assert math.isnan(roc_auc([0.1, 0.2], [1, 1]))


def test_auc_ap_match_naive_and_sklearn_with_ties():
    from sklearn.metrics import average_precision_score, roc_auc_score

    rng = np.random.default_rng(0)
    for _ in range(20):
        n = int(rng.integers(5, 60))
        s = rng.integers(0, 6, n) / 5.0  # many ties
        y = rng.integers(0, 2, n)
        if y.min() == y.max():
            continue
        assert roc_auc(s, y) == pytest.approx(roc_auc_naive(s, y))
        assert roc_auc(s, y) == pytest.approx(roc_auc_score(y, s))
        assert average_precision(s, y) == pytest.approx(average_precision_naive(s, y))
        assert average_precision(s, y) == pytest.approx(average_precision_score(y, s))


def test_metric_input_errors():
    with pytest.raises(UserError, match="labels"):
        roc_auc([0.1, 0.2], [0, 2])
    with pytest.raises(UserError, match="entries"):
        average_precision([0.1, 0.2, 0.3], [0, 1])
    with pytest.raises(UserError, match="NaN"):
        roc_auc([float("nan"), 0.2], [0, 1])


# ------------------------------------------------------------------------------------- graph pieces


def test_normalized_adjacency_and_object_blocks():
    gid = torch.tensor([0, 0, 1, 1, 1])
    xy = torch.rand(5, 2) - 0.5
    a = object_adjacency(gid, xy)
    assert torch.allclose(a, a.T)
    assert torch.all(a[:2, 2:] == 0) and torch.all(a.diagonal() > 0)
    # normalised: the largest eigenvalue of D^-1/2 (A+I) D^-1/2 is 1
    assert torch.linalg.eigvalsh(a).max().item() == pytest.approx(1.0, abs=1e-5)
    eye = normalized_adjacency(torch.zeros(3, 3))
    assert torch.allclose(eye, torch.eye(3))


def test_skeleton_edges_and_negative_sampling():
    slot = torch.tensor([0, 1, 2, 0, 1, -1])
    gid = torch.tensor([0, 0, 0, 1, 1, 1])
    cat = torch.tensor([0, 0, 0, 1, 1, 1])
    pos = skeleton_edges_for_graph(slot, gid, cat, [[(0, 1), (1, 2)], [(0, 1)]])
    assert pos.tolist() == [[0, 1], [1, 2], [3, 4]]
    neg = sample_negative_edges(gid, pos, 100, torch.Generator().manual_seed(0))
    got = {tuple(e) for e in neg.tolist()}
    # all same-object non-edges: (0,2), (3,5), (4,5) — and nothing positive
    assert got == {(0, 2), (3, 5), (4, 5)}
    neg2 = sample_negative_edges(gid, pos, 4, torch.Generator().manual_seed(0), cross_graph_fraction=0.5)
    assert len(neg2) == 4 and sum(gid[i] != gid[j] for i, j in neg2.tolist()) == 2


# ------------------------------------------------------------------ learns a known skeleton (hand-made)
SQUARE = torch.tensor([[-0.5, -0.5], [0.5, -0.5], [0.5, 0.5], [-0.5, 0.5]])
# same four corners, different skeleton per category: only the condition tells them apart
SKELETONS = [[(0, 1), (1, 2), (2, 3), (3, 0)], [(0, 2), (1, 3), (0, 1)]]


def _make_objects(n_obj: int, gen: torch.Generator):
    """n_obj squares with random rotation (±40°), scale and noise; category alternates."""
    ang = (torch.rand(n_obj, generator=gen) - 0.5) * math.radians(80)
    c, s = ang.cos(), ang.sin()
    rot = torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)  # (n,2,2)
    scale = 0.7 + 0.3 * torch.rand(n_obj, 1, 1, generator=gen)
    pts = (SQUARE[None] @ rot.transpose(1, 2)) * scale + 0.03 * torch.randn(n_obj, 4, 2, generator=gen)
    xy = pts.reshape(-1, 2)
    gid = torch.arange(n_obj).repeat_interleave(4)
    cat = (gid % 2).long()
    slot = torch.arange(4).repeat(n_obj)
    return xy, gid, cat, slot


def _train_and_score(conditional: bool, steps: int = 200):
    """Train on freshly sampled objects each step, score every same-object pair of held-out ones."""
    gen = torch.Generator().manual_seed(1)
    gae = ConditionalGraphAutoEncoder(in_dim=2, num_categories=2, hidden=32, latent=16)
    opt = torch.optim.Adam(gae.parameters(), lr=2e-2)
    losses = []
    for _ in range(steps):
        xy, gid, cat, slot = _make_objects(32, gen)
        pos = skeleton_edges_for_graph(slot, gid, cat, SKELETONS)
        neg = sample_negative_edges(gid, pos, 3 * len(pos), gen)
        cond = cat if conditional else torch.zeros_like(cat)
        loss = link_loss(gae(xy, object_adjacency(gid, xy), cond), pos, neg)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    xy_t, gid_t, cat_t, slot_t = _make_objects(40, torch.Generator().manual_seed(7))
    pos_t = {tuple(e) for e in skeleton_edges_for_graph(slot_t, gid_t, cat_t, SKELETONS).tolist()}
    gae.eval()
    with torch.no_grad():
        z = gae(xy_t, object_adjacency(gid_t, xy_t), cat_t if conditional else torch.zeros_like(cat_t)).z
    pairs = [(i, j) for i in range(len(gid_t)) for j in range(i + 1, len(gid_t)) if gid_t[i] == gid_t[j]]
    scores = gae.edge_logits(z, torch.tensor(pairs)).numpy()
    labels = np.array([p in pos_t for p in pairs], dtype=int)
    return losses, roc_auc(scores, labels), average_precision(scores, labels)


def test_conditional_gae_recovers_known_skeleton_and_needs_the_condition():
    losses, auc, ap = _train_and_score(conditional=True)
    assert np.mean(losses[-10:]) < 0.3 * np.mean(losses[:10])
    assert auc > 0.97 and ap > 0.95, (auc, ap)
    # without the category the two skeletons on identical squares cannot both be recovered
    _, auc_uncond, ap_uncond = _train_and_score(conditional=False)
    assert auc_uncond < auc - 0.15 and ap_uncond < ap - 0.1, (auc_uncond, ap_uncond)


def test_variational_variant_trains_and_is_deterministic_in_eval():
    gen = torch.Generator().manual_seed(0)
    xy, gid, cat, slot = _make_objects(8, gen)
    gae = ConditionalGraphAutoEncoder(2, 2, hidden=16, latent=8, variational=True)
    adj = object_adjacency(gid, xy)
    out = gae(xy, adj, cat)
    pos = skeleton_edges_for_graph(slot, gid, cat, SKELETONS)
    loss = link_loss(out, pos, sample_negative_edges(gid, pos, 20, gen))
    loss.backward()
    assert torch.isfinite(loss)
    gae.eval()
    assert torch.equal(gae(xy, adj, cat).z, gae(xy, adj, cat).z)


def test_gae_input_errors():
    gae = ConditionalGraphAutoEncoder(2, 2)
    with pytest.raises(UserError, match="category ids"):
        gae(torch.zeros(3, 2), torch.eye(3), torch.tensor([0, 1, 2]))
    with pytest.raises(UserError, match="expected"):
        gae(torch.zeros(3, 2), torch.eye(2), torch.tensor([0, 1, 1]))
