"""KLPNet: category-implicit keypoints + conditional link prediction (Yi-Ge et al., KLPNet §3).

Pipeline (``KLPNet.infer``)::

    image ─ Backbone ─┬─ CKLM (1–3 stages, kernels 7/5/3) ─ ONE class-agnostic heatmap + offsets ─ peaks
                      └─ CentreDetectorHead (stand-in for DPAD) ─ boxes + categories (or given boxes)
    peaks × objects ─ conditional GAE (pass 1) ─ per (node, object) slot log-probs
                    ─ grouping: LIS (keypoint.instability) or naive top-K ─ each object's nodes
                    ─ conditional GAE (pass 2) ─ inner-product decoder ─ links sigmoid(z_i·z_j)

Node features: last-stage CKLM features bilinearly sampled at the node, the node position
normalised by its object's box (``(p − box centre) / max(w, h)``) and its heatmap score; the
category is the GAE's condition. Keypoint identity ("which keypoint of the category is this?") comes
from per-category prototype vectors on the GAE hidden layer — the paper's "nearest canonical
feature as keypoint identification" — with one extra "not this object" class.

Training (``KLPNet.loss``): ``α·L_kd + β·L_link + γ·L_id (+ L_det)`` (paper eq. 8 plus the
identification and detector terms): L_kd = Σ_stages weighted BCE(heatmap, coarse-to-fine target) +
Smooth-L1(offsets) (eq. 1); L_link = BCE on skeleton edges vs sampled negative edges of graphs built
from the ground-truth keypoints (jittered) of each object; L_id = cross-entropy of the keypoint
identity on graphs that also hold the foreign keypoints inside each box (class "not this object").

Example::

    >>> import torch
    >>> from keypoint.data.synth import CATEGORIES
    >>> net = KLPNet(CATEGORIES, {"num_stages": 2, "width": 8})
    >>> out = net(torch.zeros(1, 3, 64, 64))
    >>> len(out["heatmaps"]), tuple(out["heatmaps"][-1].shape)
    (2, (1, 1, 16, 16))
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from geo_rs.errors import UserError

from ..instability import (
    boxes_membership,
    fit_templates,
    group_nodes_lis,
    group_nodes_naive,
    relocalise_missing,
)
from ..links import (
    ConditionalGraphAutoEncoder,
    link_loss,
    object_adjacency,
    sample_negative_edges,
    skeleton_edges_for_graph,
)
from .backbone import Backbone
from .base import parse_options
from .klpnet_heads import (
    CKLM,
    CentreDetectorHead,
    coarse_to_fine_targets,
    detector_targets,
    find_peaks,
    focal_heatmap_loss,
    stage_kernels,
)
from .options import KLPNetOptions


def parse_klpnet_options(cfg: dict | None) -> dict:
    """The typed options (:class:`keypoint.models.options.KLPNetOptions`) as a dict; unknown keys and
    bad values raise one UserError naming the key."""
    return parse_options(dict(cfg or {}), KLPNetOptions, "klpnet").to_dict()


@dataclass
class ObjectPrediction:
    """One object: ``category_id`` (dataset id), ``box`` xywh, ``keypoints (K, 2)`` image pixels (NaN
    = not found), ``scores (K,)``, ``link_prob (K, K)`` (NaN where a slot is empty), ``edges`` list of
    predicted links (slot pairs), ``box_score``, ``relocalised (K,)`` slots filled by the LIS feedback."""

    category_id: int
    box: np.ndarray
    keypoints: np.ndarray
    scores: np.ndarray
    link_prob: np.ndarray
    edges: list[tuple[int, int]]
    box_score: float = 1.0
    relocalised: np.ndarray | None = None


@dataclass
class ImagePrediction:
    """All objects of one image plus the raw nodes: ``nodes (M, 2)``, ``node_scores (M,)``,
    ``roles (M,)`` (see :class:`keypoint.instability.Grouping`), ``heatmap (h, w)`` probabilities."""

    objects: list[ObjectPrediction]
    nodes: np.ndarray
    node_scores: np.ndarray
    roles: np.ndarray
    heatmap: np.ndarray


class KLPNet(nn.Module):
    """See module docstring. ``categories``: sequence of :class:`keypoint.data.synth.Category`."""

    def __init__(self, categories, cfg: dict | None = None):
        super().__init__()
        self.config = parse_klpnet_options(cfg)
        o = self.config
        self.categories = tuple(categories)
        if not self.categories:
            raise UserError("KLPNet needs at least one category")
        self.cat_index = {c.id: i for i, c in enumerate(self.categories)}
        self.num_kp = [c.num_keypoints for c in self.categories]
        self.kmax = max(self.num_kp)
        self.skeletons = [list(c.skeleton) for c in self.categories]
        self.kernels = stage_kernels(int(o["num_stages"]), tuple(int(k) for k in o["kernels"]))
        self.backbone = Backbone(width=int(o["width"]), stride=int(o["stride"]),
                                 context_levels=int(o["context_levels"]), blocks=int(o["blocks"]))
        self.stride = int(o["stride"])
        self.cklm = CKLM(self.backbone.out_channels, int(o["cklm_channels"]), int(o["num_stages"]))
        self.detector = (CentreDetectorHead(self.backbone.out_channels, len(self.categories))
                         if o["detector"] else None)
        node_dim = int(o["cklm_channels"]) + 3
        self.gae = ConditionalGraphAutoEncoder(node_dim, len(self.categories), hidden=int(o["gae_hidden"]),
                                               latent=int(o["gae_latent"]), num_layers=int(o["gae_layers"]),
                                               variational=bool(o["variational"]))
        # canonical keypoint features: one prototype per (category, slot) + one "not this object"
        self.prototypes = nn.Parameter(torch.randn(len(self.categories), self.kmax + 1, int(o["gae_hidden"]))
                                       * 0.1)
        slot_mask = torch.full((len(self.categories), self.kmax + 1), float("-inf"))
        for i, k in enumerate(self.num_kp):
            slot_mask[i, :k] = 0.0
            slot_mask[i, self.kmax] = 0.0
        self.register_buffer("slot_mask", slot_mask)
        # category mean shapes for LIS (set by fit_templates_from / loaded from checkpoints)
        self.register_buffer("templates", torch.zeros(len(self.categories), self.kmax, 2))
        self.register_buffer("has_template", torch.zeros(len(self.categories), dtype=torch.bool))

    @property
    def codec(self):
        """KLPNet has no per-instance codec: it trains on whole images (clear error for generic code)."""
        raise UserError("KLPNet trains and evaluates on whole images: use keypoint.klpnet_train "
                        "(train_klpnet / evaluate_klpnet); `geo-rs keypoint train` dispatches there")

    # ------------------------------------------------------------------------------------ forward
    def forward(self, images: Tensor) -> dict:
        feats = self.backbone(images)
        out = self.cklm(feats)
        if self.detector is not None:
            out.update(self.detector(feats))
        return out

    def fit_templates_from(self, annotations) -> None:
        """Category mean shapes from an iterable of annotations (``category_id``, ``keypoints``)."""
        shapes: list[list[np.ndarray]] = [[] for _ in self.categories]
        for a in annotations:
            if a.category_id in self.cat_index and np.all(np.isfinite(a.keypoints)):
                shapes[self.cat_index[a.category_id]].append(np.asarray(a.keypoints, np.float64))
        for i, t in enumerate(fit_templates(shapes)):
            if t is not None:
                self.templates[i, : len(t)] = torch.as_tensor(t, dtype=torch.float32)
                self.has_template[i] = True

    # ----------------------------------------------------------------------------------- targets
    def encode_image(self, keypoints: list[np.ndarray], visibility: list[np.ndarray], boxes: np.ndarray,
                     category_ids: list[int], image_size: tuple[int, int]) -> dict[str, Tensor]:
        """Dense training targets of one image (objects as lists of (K_o, 2) / (K_o,) arrays)."""
        w, h = image_size
        mw, mh = w // self.stride, h // self.stride
        pts, wts = [], []
        for kp, vis in zip(keypoints, visibility):
            kp = np.asarray(kp, np.float64)
            inside = (kp[:, 0] >= -0.5) & (kp[:, 0] < w - 0.5) & (kp[:, 1] >= -0.5) & (kp[:, 1] < h - 0.5)
            use = (vis >= (1 if self.config["heatmap_invisible"] else 2)) & inside & np.isfinite(kp).all(1)
            pts.append(np.nan_to_num(kp))
            wts.append(use.astype(np.float32))
        if pts:
            kp_t = torch.as_tensor(np.concatenate(pts), dtype=torch.float32)[None]
            w_t = torch.as_tensor(np.concatenate(wts))[None]
        else:
            kp_t, w_t = torch.zeros(1, 0, 2), torch.zeros(1, 0)
        t = coarse_to_fine_targets(kp_t, w_t, (mw, mh), self.stride, self.kernels,
                                   float(self.config["sigma_scale"]), float(self.config["offset_radius"]))
        out = {"heatmaps": torch.stack(t["heatmaps"]), "offsets": t["offsets"],
               "offset_mask": t["offset_mask"]}
        if self.detector is not None:
            ci = torch.tensor([self.cat_index.get(int(c), -1) for c in category_ids], dtype=torch.long)
            d = detector_targets(torch.as_tensor(np.asarray(boxes, np.float32).reshape(-1, 4)), ci,
                                 len(self.categories), (mw, mh), self.stride)
            out.update({"centre": d["centre"], "log_size": d["log_size"], "size_mask": d["size_mask"]})
        return out

    # ------------------------------------------------------------------------------------- graphs
    def _node_inputs(self, node_features: Tensor, xy: Tensor, box: Tensor, score: Tensor) -> Tensor:
        """Features of nodes of one image: (P, ch) sampled + (P, 2) box-normalised position + score."""
        _, h, w = node_features.shape
        u = (xy + 0.5) / self.stride - 0.5
        grid = torch.stack([(u[:, 0] + 0.5) / w * 2 - 1, (u[:, 1] + 0.5) / h * 2 - 1], -1)
        f = F.grid_sample(node_features[None], grid[None, :, None], mode="bilinear", padding_mode="border",
                          align_corners=False)[0, :, :, 0].T
        # ×4: puts the box-normalised position (|·| ≲ 0.6) on the scale of the CNN features
        return torch.cat([f, 4.0 * self._norm_xy(xy, box), score[:, None]], 1)

    @staticmethod
    def _norm_xy(xy: Tensor, box: Tensor) -> Tensor:
        """(P, 2) positions relative to (P, 4) xywh boxes' centres, divided by max(w, h)."""
        centre = box[:, :2] + box[:, 2:] / 2
        size = box[:, 2:].amax(1, keepdim=True).clamp_min(1.0)
        return (xy - centre) / size

    def _slot_logp(self, hidden: Tensor, cat: Tensor) -> Tensor:
        """(P, K_max + 1) log-probabilities over the category's slots + "not this object" (last)."""
        logits = torch.einsum("ph,pkh->pk", hidden, self.prototypes[cat]) + self.slot_mask[cat]
        return torch.log_softmax(logits, 1)

    def _run_gae(self, feats: Tensor, xy_norm: Tensor, gid: Tensor, cat: Tensor):
        adj = object_adjacency(gid, xy_norm)
        return self.gae(feats, adj, cat)

    # --------------------------------------------------------------------------------------- loss
    def loss(self, outputs: dict, targets: dict[str, Tensor], objects: list[list[dict]],
             generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, float]]:
        """Training loss.

        Args:
            outputs: ``forward`` outputs for B images.
            targets: stacked :meth:`encode_image` targets (each (B, ...)).
            objects: per image, list of ``{"category_id", "keypoints" (K,2), "visibility" (K,),
                "box" (4,)}`` (numpy) — used to build the link-prediction graphs.
        """
        o = self.config
        logs: dict[str, float] = {}
        hm_loss = outputs["heatmaps"][0].new_zeros(())
        tgt_hm = targets["heatmaps"]  # (B, S, h, w)
        for s, logit in enumerate(outputs["heatmaps"]):
            t = tgt_hm[:, s : s + 1]
            weight = 1.0 + float(o["heatmap_pos_weight"]) * t
            hm_loss = hm_loss + F.binary_cross_entropy_with_logits(logit, t, weight=weight)
        mask = targets["offset_mask"][:, None]
        off_loss = sum(
            (F.smooth_l1_loss(off, targets["offsets"], reduction="none") * mask).sum()
            / mask.sum().clamp_min(1)
            for off in outputs["offsets"])
        kd = hm_loss + float(o["offset_weight"]) * off_loss
        logs["heatmap"], logs["offset"] = hm_loss.item(), float(off_loss.detach())
        total = float(o["kd_weight"]) * kd
        if self.detector is not None and "centre" in targets:
            det = focal_heatmap_loss(outputs["centre"], targets["centre"])
            sm = targets["size_mask"][:, None]
            det = det + (F.l1_loss(outputs["log_size"], targets["log_size"], reduction="none") * sm).sum() \
                / sm.sum().clamp_min(1)
            total = total + float(o["detector_weight"]) * det
            logs["detector"] = det.item()
        # links are learned on each object's own nodes (the graph after grouping); the identification
        # head also sees the foreign nodes inside the box, as in inference pass 1, and learns to flag them
        own = self.training_graph(outputs, objects, generator, include_foreign=False)
        if own is not None:
            enc = self._run_gae(own["x"], own["xy_norm"], own["gid"], own["cat"])
            ll = link_loss(enc, own["pos"], own["neg"])
            total = total + float(o["link_weight"]) * ll
            logs["link"] = ll.item()
        mixed = self.training_graph(outputs, objects, generator, include_foreign=True)
        if mixed is not None:
            hidden = self._run_gae(mixed["x"], mixed["xy_norm"], mixed["gid"], mixed["cat"]).hidden
            id_loss = F.nll_loss(self._slot_logp(hidden, mixed["cat"]), mixed["id_target"])
            total = total + float(o["id_weight"]) * id_loss
            logs["id"] = id_loss.item()
        logs["total"] = total.item()
        return total, logs

    def training_graph(self, outputs: dict, objects: list[list[dict]],
                       generator: torch.Generator | None = None, jitter: bool = True,
                       include_foreign: bool = True) -> dict | None:
        """Block-diagonal graph over all objects of a batch from ground truth (see module docstring).

        Each object's graph holds its labelled in-image keypoints (slot = index) and, with
        ``include_foreign``, every other object's labelled keypoint inside its enlarged box (slot −1,
        the "not this object" class).
        """
        feats_map = outputs["node_features"]
        heat = torch.sigmoid(outputs["heatmaps"][-1]).detach()
        h_img = feats_map.shape[-2] * self.stride
        w_img = feats_map.shape[-1] * self.stride
        xs, boxes, slots, gids, cats, img_of = [], [], [], [], [], []
        gid = 0
        for b, objs in enumerate(objects):
            for i, ob in enumerate(objs):
                if ob["category_id"] not in self.cat_index:
                    continue
                box = np.asarray(ob["box"], np.float64)
                for j, other in enumerate(objs):
                    if j != i and not include_foreign:
                        continue
                    kp = np.asarray(other["keypoints"], np.float64)
                    vis = np.asarray(other["visibility"])
                    ok = (vis > 0) & np.isfinite(kp).all(1) & (kp[:, 0] >= -0.5) & (kp[:, 0] < w_img - 0.5) \
                        & (kp[:, 1] >= -0.5) & (kp[:, 1] < h_img - 0.5)
                    if j != i:
                        margin = float(self.config["box_margin"])
                        ok &= boxes_membership(np.nan_to_num(kp), box[None], margin)[:, 0]
                    for k in np.flatnonzero(ok):
                        xs.append(kp[k])
                        slots.append(k if j == i else -1)
                        gids.append(gid)
                        cats.append(self.cat_index[ob["category_id"]])
                        boxes.append(box)
                        img_of.append(b)
                gid += 1
        if not xs:
            return None
        dev = feats_map.device
        xy = torch.as_tensor(np.array(xs), dtype=torch.float32, device=dev)
        if jitter and float(self.config["node_jitter_px"]) > 0:
            noise = torch.randn(xy.shape, generator=generator) * float(self.config["node_jitter_px"])
            xy = xy + noise.to(dev)
        box_t = torch.as_tensor(np.array(boxes), dtype=torch.float32, device=dev)
        img_t = torch.as_tensor(img_of, device=dev)
        parts = []
        for b in img_t.unique().tolist():
            sel = torch.nonzero(img_t == b).flatten()
            u = (xy[sel] + 0.5) / self.stride - 0.5
            score = heat[b, 0][u[:, 1].round().long().clamp(0, heat.shape[-2] - 1),
                               u[:, 0].round().long().clamp(0, heat.shape[-1] - 1)]
            parts.append((sel, self._node_inputs(feats_map[b], xy[sel], box_t[sel], score)))
        x = torch.zeros(len(xs), parts[0][1].shape[1], device=dev, dtype=parts[0][1].dtype)
        for sel, val in parts:
            x = x.index_copy(0, sel, val)
        slot_t = torch.as_tensor(slots, dtype=torch.long)
        gid_t = torch.as_tensor(gids, dtype=torch.long)
        cat_t = torch.as_tensor(cats, dtype=torch.long)
        pos = skeleton_edges_for_graph(slot_t, gid_t, cat_t, self.skeletons)
        neg = sample_negative_edges(gid_t, pos, int(self.config["negatives_per_positive"]) * max(len(pos), 1),
                                    generator)
        id_target = torch.where(slot_t >= 0, slot_t, torch.full_like(slot_t, self.kmax))
        return {"x": x, "xy_norm": self._norm_xy(xy, box_t), "gid": gid_t.to(dev), "cat": cat_t.to(dev),
                "slot": slot_t, "pos": pos.to(dev), "neg": neg.to(dev), "id_target": id_target.to(dev)}

    # ---------------------------------------------------------------------------------- inference
    def detect_objects(self, outputs: dict, b: int, image_size: tuple[int, int]
                       ) -> tuple[np.ndarray, list[int], np.ndarray]:
        """Boxes (O, 4) xywh, category ids, scores from the centre detector of image ``b``."""
        if self.detector is None:
            raise UserError("this KLPNet has no detector (model.detector: false): pass boxes and categories")
        heat = torch.sigmoid(outputs["centre"][b])  # (C, h, w)
        c, h, w = heat.shape
        is_max = F.max_pool2d(heat[None], 3, 1, 1)[0] == heat
        cand = torch.nonzero(is_max & (heat >= float(self.config["detector_threshold"])))
        scores = heat[cand[:, 0], cand[:, 1], cand[:, 2]]
        order = scores.argsort(descending=True)[: int(self.config["max_objects"])]
        boxes, cats, sc = [], [], []
        for ci, yy, xx in cand[order].tolist():
            bw, bh = (outputs["log_size"][b, :, yy, xx].exp() * self.stride).tolist()
            cx, cy = (xx + 0.5) * self.stride - 0.5, (yy + 0.5) * self.stride - 0.5
            boxes.append([cx - bw / 2, cy - bh / 2, bw, bh])
            cats.append(self.categories[ci].id)
            sc.append(float(heat[ci, yy, xx]))
        return np.array(boxes, np.float64).reshape(-1, 4), cats, np.array(sc)

    @torch.no_grad()
    def infer(self, images: Tensor, boxes: list[np.ndarray] | None = None,
              category_ids: list[list[int]] | None = None, lis: bool = True,
              outputs: dict | None = None, feedback: bool | None = None) -> list[ImagePrediction]:
        """Keypoints and links for a batch of images.

        Args:
            images: (B, 3, H, W) in [0, 1].
            boxes / category_ids: per image the objects (xywh image pixels, dataset category ids);
                None → use the model's detector.
            lis: group nodes with the Location Instability Strategy (else naive top-K per box).
            outputs: precomputed ``forward(images)`` (eval mode) to reuse between LIS on/off.
            feedback: LIS feedback into CKLM (re-localise the slots LIS left empty from the heatmap
                around the template prediction, :func:`keypoint.instability.relocalise_missing`);
                None → the model's ``feedback`` option; only with ``lis``.
        """
        was = self.training
        self.eval()
        feedback = bool(self.config["feedback"]) if feedback is None else feedback
        try:
            if outputs is None:
                outputs = self(images)
            preds = []
            for b in range(images.shape[0]):
                if boxes is None:
                    bx, cats, bscore = self.detect_objects(outputs, b, (images.shape[-1], images.shape[-2]))
                else:
                    bx = np.asarray(boxes[b], np.float64).reshape(-1, 4)
                    cats = [int(c) for c in category_ids[b]]
                    bscore = np.ones(len(bx))
                    unknown = [c for c in cats if c not in self.cat_index]
                    if unknown:
                        raise UserError(f"category id(s) {unknown} unknown to this model "
                                        f"(knows {sorted(self.cat_index)})")
                preds.append(self._infer_one(outputs, b, bx, cats, bscore, lis, feedback and lis))
            return preds
        finally:
            self.train(was)

    def _nodes(self, outputs: dict, b: int) -> tuple[Tensor, Tensor, Tensor]:
        """Heatmap peaks of image ``b``: probabilities (h, w), node positions (P, 2) px, scores (P,)."""
        o = self.config
        heat = torch.sigmoid(outputs["heatmaps"][-1][b, 0])
        cells, scores = find_peaks(heat, float(o["peak_threshold"]), int(o["max_peaks"]))
        off = outputs["offsets"][-1][b][:, cells[:, 1], cells[:, 0]].T  # (P, 2)
        return heat, (cells.float() + off + 0.5) * self.stride - 0.5, scores

    def _slot_log_probs(self, feats_map: Tensor, xy: Tensor, scores: Tensor, bx: np.ndarray,
                        ci: list[int], kps: list[int]) -> np.ndarray:
        """Pass 1: (M, O, K_max + 1) log-probabilities of node j being slot k of object o (last column:
        "not this object"); −1e6 where node j lies outside object o's box."""
        o = self.config
        node_xy = xy.cpu().numpy().astype(np.float64)
        n_obj = len(bx)
        member = boxes_membership(node_xy, bx, float(o["box_margin"])) if len(node_xy) and n_obj else \
            np.zeros((len(node_xy), n_obj), bool)
        logp = np.full((len(node_xy), n_obj, self.kmax + 1), -1e6)
        pj, po = np.nonzero(member)
        if len(pj):
            dev = feats_map.device
            box_t = torch.as_tensor(bx[po], dtype=torch.float32, device=dev)
            x = self._node_inputs(feats_map, xy[pj], box_t, scores[pj])
            cat_t = torch.as_tensor([ci[p] for p in po], dtype=torch.long, device=dev)
            out = self._run_gae(x, self._norm_xy(xy[pj], box_t), torch.as_tensor(po, device=dev), cat_t)
            lp = self._slot_logp(out.hidden, cat_t).cpu().numpy()
            for r, (j, ob) in enumerate(zip(pj, po)):
                k = kps[ob]
                logp[j, ob, :k] = lp[r, :k]
                logp[j, ob, k] = lp[r, self.kmax]
        return np.maximum(logp, -1e6)

    def _links(self, feats_map: Tensor, kp: list[np.ndarray], sc: list[np.ndarray], bx: np.ndarray,
               ci: list[int]) -> list[np.ndarray]:
        """Pass 2: per object (K_o, K_o) link probabilities over its final keypoints (NaN: empty slot)."""
        dev = feats_map.device
        sel_o, sel_s = [], []
        for ob, pts in enumerate(kp):
            for s_ in np.flatnonzero(np.isfinite(pts).all(1)):
                sel_o.append(ob)
                sel_s.append(int(s_))
        link = [np.full((len(p), len(p)), np.nan) for p in kp]
        if not sel_o:
            return link
        xy = torch.as_tensor(np.array([kp[o_][s_] for o_, s_ in zip(sel_o, sel_s)]), dtype=torch.float32,
                             device=dev)
        score = torch.as_tensor([sc[o_][s_] for o_, s_ in zip(sel_o, sel_s)], dtype=torch.float32, device=dev)
        box_t = torch.as_tensor(bx[sel_o], dtype=torch.float32, device=dev)
        x = self._node_inputs(feats_map, xy, box_t, score)
        cat_t = torch.as_tensor([ci[p] for p in sel_o], dtype=torch.long, device=dev)
        z = self._run_gae(x, self._norm_xy(xy, box_t), torch.as_tensor(sel_o, device=dev), cat_t).z
        prob = torch.sigmoid(z @ z.T).cpu().numpy()
        for a in range(len(sel_o)):
            for c in range(len(sel_o)):
                if sel_o[a] == sel_o[c] and a != c:
                    link[sel_o[a]][sel_s[a], sel_s[c]] = prob[a, c]
        return link

    def _infer_one(self, outputs, b, bx, cats, bscore, lis, feedback=False) -> ImagePrediction:
        o = self.config
        heat, xy, scores = self._nodes(outputs, b)
        node_xy = xy.cpu().numpy().astype(np.float64)
        node_sc = scores.cpu().numpy().astype(np.float64)
        ci = [self.cat_index[c] for c in cats]
        kps = [self.num_kp[c] for c in ci]
        feats_map = outputs["node_features"][b]
        logp = self._slot_log_probs(feats_map, xy, scores, bx, ci, kps)
        tpl = [self.templates[c, : self.num_kp[c]].cpu().numpy().astype(np.float64)
               if bool(self.has_template[c]) else None for c in ci]
        if lis:
            grouping = group_nodes_lis(node_xy, node_sc, bx, logp, kps, tpl, float(o["box_margin"]),
                                       float(o["lis_geo_weight"]), float(o["lis_geo_sigma"]),
                                       float(o["lis_outlier_cost"]))
        else:
            grouping = group_nodes_naive(node_xy, node_sc, bx, logp, kps, float(o["box_margin"]))
        kp = grouping.keypoints(node_xy)
        sc = []
        for idx in grouping.node_index:
            v = np.zeros(len(idx))
            v[idx >= 0] = node_sc[idx[idx >= 0]]
            sc.append(v)
        moved = [np.zeros(k, bool) for k in kps]
        if feedback:
            off = outputs["offsets"][-1][b].cpu().numpy().astype(np.float64)
            hm = heat.cpu().numpy().astype(np.float64)
            kp, sc, moved = relocalise_missing(hm, off, self.stride, kp, sc, tpl, bx,
                                               float(o["feedback_radius"]), float(o["feedback_min_score"]))
        link = self._links(feats_map, kp, sc, bx, ci)
        thr = float(o["link_threshold"])
        objects = []
        for ob in range(len(bx)):
            lp_ = link[ob]
            edges = [(a, c) for a in range(kps[ob]) for c in range(a + 1, kps[ob])
                     if np.isfinite(lp_[a, c]) and lp_[a, c] > thr]
            objects.append(ObjectPrediction(category_id=int(cats[ob]), box=bx[ob], keypoints=kp[ob],
                                            scores=sc[ob], link_prob=lp_, edges=edges,
                                            box_score=float(bscore[ob]), relocalised=moved[ob]))
        return ImagePrediction(objects=objects, nodes=node_xy, node_scores=node_sc, roles=grouping.role,
                               heatmap=heat.cpu().numpy())


def build_klpnet(cfg: dict, *, num_keypoints: int, input_size: int) -> KLPNet:
    """Registry builder (``model: {type: klpnet}``) over the synthetic categories.

    KLPNet is multi-instance and category-implicit, so it trains on whole images with
    :mod:`keypoint.klpnet_train` (``num_keypoints`` must equal the categories' total keypoints).
    """
    from ..data.synth import CATEGORIES

    total = sum(c.num_keypoints for c in CATEGORIES)
    if num_keypoints != total:
        raise UserError(f"klpnet: num_keypoints={num_keypoints} does not match the synthetic categories' "
                        f"total {total}")
    if input_size % (int(cfg.get("stride", 4)) * 2 ** int(cfg.get("context_levels", 2))):
        raise UserError(f"klpnet: input_size {input_size} must be divisible by stride·2^context_levels")
    return KLPNet(CATEGORIES, cfg)

