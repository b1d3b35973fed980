"""Train, evaluate and run KLPNet (whole images, all instances; :mod:`keypoint.models.klpnet`).

KLPNet does not fit the generic top-down trainer (:mod:`keypoint.train`): its heatmap holds the
keypoints of *every* object of the image on one channel and its link predictor works on graphs of
objects, so it trains on whole images. Config layout (``configs/keypoint/klpnet*.yaml``)::

    name: klpnet_s3
    seed: 0
    out_dir: runs/keypoint/klpnet_s3          # last.pt, metrics.json, loss.png
    data: {source: synth, synth: {image_size: 96, ...}, train_images: 300, val_images: 100,
           train_seed: 0, val_seed: 1000, train_json: null, val_json: null}
    model: {type: klpnet, num_stages: 3, ...}   # keypoint.models.klpnet.KLPNET_DEFAULTS
    train: {epochs: 12, batch_size: 8, lr: 0.002, weight_decay: 0.0001, num_threads: 1,
            max_minutes: null, log_every: 10, graph_lr_mult: 5.0}   # GAE lr = lr × graph_lr_mult
    eval: {alpha: 0.1, boxes: gt}             # gt = oracle boxes (paper's PCK protocol) | detector

Checkpoint: ``format`` = ``"geo-rs-klpnet/1"``, ``config``, ``categories``, ``state_dict``,
``optimizer``, ``scheduler``, ``epoch``, ``history``. Training resumes from ``out_dir/last.pt`` when
it was written for the same config.

Metrics (:func:`evaluate_klpnet`), each with and without the Location Instability Strategy:

* ``pck`` — PCK@α (box-normalised, :func:`keypoint.metrics.pck`) of each object's keypoints, with
  keypoint identities from the model (a missing keypoint counts as wrong), over labelled keypoints
  inside the image; ``pck_vis`` / ``pck_inv`` split by visibility; ``pck_oracle_id`` with the
  identities matched to the ground truth (the paper's "OracleId" protocol);
* ``link_auc`` / ``link_ap`` — over every pair of nodes in each object's final graph; a pair is
  positive iff both nodes match (within α·box size, Hungarian) ground-truth keypoints of that object
  that the category's skeleton links; ``edge_recall`` / ``edge_precision`` of the thresholded links
  against the skeleton edges whose both ends are labelled in the image;
* ``gt_link_auc`` / ``gt_link_ap`` — the link predictor alone on each object's ground-truth
  keypoints (every non-skeleton pair a negative);
* ``debatable_nodes`` and ``debatable_correct`` — nodes in several boxes and the fraction attributed
  to the right object (or rejected when they match no object).

Example::

    >>> from keypoint.klpnet_train import load_klpnet_config, train_klpnet  # doctest: +SKIP
    >>> summary = train_klpnet(load_klpnet_config("configs/keypoint/klpnet.yaml"))
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from geo_rs.errors import UserError

from .data.synth import Category, KeypointData, SynthConfig
from .draw import save_figure
from .links import average_precision, object_adjacency, roc_auc
from .metrics import pck
from .models.klpnet import ImagePrediction, KLPNet, parse_klpnet_options
from .train import json_safe, merge_config, prepare_run, read_config

CHECKPOINT_FORMAT = "geo-rs-klpnet/1"

DEFAULT_CONFIG: dict[str, Any] = {
    "name": "klpnet",
    "seed": 0,
    "out_dir": None,
    "data": {"source": "synth", "synth": {"image_size": 96}, "train_images": 300, "val_images": 100,
             "train_seed": 0, "val_seed": 1000, "train_json": None, "val_json": None},
    "model": {"type": "klpnet"},
    "train": {"epochs": 12, "batch_size": 8, "lr": 2e-3, "weight_decay": 1e-4, "num_threads": None,
              "max_minutes": None, "log_every": 10, "graph_lr_mult": 5.0},
    "eval": {"alpha": 0.1, "boxes": "gt"},
}


# ------------------------------------------------------------------------------------------ config
def resolve_klpnet_config(cfg: dict) -> dict:
    """Defaults filled in, field names and values checked (clear :class:`UserError` otherwise)."""
    if not isinstance(cfg, dict):
        raise UserError(f"config must be a mapping, got {type(cfg).__name__}")
    out = merge_config(DEFAULT_CONFIG, cfg)
    if out["model"].get("type", "klpnet") != "klpnet":
        raise UserError(f"config: model.type must be 'klpnet' for this trainer, "
                        f"got '{out['model'].get('type')}'")
    parse_klpnet_options(out["model"])
    if out["data"]["source"] not in ("synth", "coco"):
        raise UserError(f"config: data.source must be 'synth' or 'coco', got '{out['data']['source']}'")
    SynthConfig.from_dict(out["data"]["synth"] or {})
    t = out["train"]
    if int(t["epochs"]) < 1 or int(t["batch_size"]) < 1 or not float(t["lr"]) > 0:
        raise UserError(f"config: train needs epochs >= 1, batch_size >= 1, lr > 0; got {t}")
    if out["eval"]["boxes"] not in ("gt", "detector"):
        raise UserError(f"config: eval.boxes must be 'gt' or 'detector', got '{out['eval']['boxes']}'")
    if not 0 < float(out["eval"]["alpha"]) <= 1:
        raise UserError(f"config: eval.alpha must be in (0, 1], got {out['eval']['alpha']}")
    if out["out_dir"] is None:
        out["out_dir"] = f"runs/keypoint/{out['name']}"
    return out


def load_klpnet_config(path: str | Path) -> dict:
    """Read and resolve a YAML config."""
    return read_config(path, resolve_klpnet_config)


def load_klpnet_split(data_cfg: dict, split: str, cache: bool = True) -> KeypointData:
    """Train/val data via the shared loader (synthetic data cached as COCO under runs/)."""
    from .train import load_split

    d = {"input_size": 64, "padding": 1.25, **data_cfg}
    return load_split(d, split, cache_root=None if not cache else Path("runs/keypoint/cache"))


# ------------------------------------------------------------------------------------- batches
def _objects_of(sample) -> list[dict]:
    return [{"category_id": int(a.category_id), "keypoints": np.asarray(a.keypoints, np.float64),
             "visibility": np.asarray(a.visibility), "box": np.asarray(a.box, np.float64)}
            for a in sample.annotations]


def materialize_klpnet(model: KLPNet, data: KeypointData) -> dict:
    """Images (N, 3, H, W), stacked dense targets and per-image object lists."""
    if not data.samples:
        raise UserError("dataset has no image")
    h, w = data.samples[0].image.shape[:2]
    div = model.backbone.divisor
    if h % div or w % div:
        raise UserError(f"images are {w}x{h}; KLPNet needs sides divisible by {div} "
                        "(stride·2^context_levels)")
    images, targets, objects = [], [], []
    for s in data.samples:
        if s.image.shape[:2] != (h, w):
            raise UserError(f"image {s.image_id} is {s.image.shape[1]}x{s.image.shape[0]}, expected {w}x{h}")
        objs = [o for o in _objects_of(s) if o["category_id"] in model.cat_index]
        images.append(torch.from_numpy(np.ascontiguousarray(s.image)).permute(2, 0, 1))
        targets.append(model.encode_image([o["keypoints"] for o in objs], [o["visibility"] for o in objs],
                                          np.array([o["box"] for o in objs]).reshape(-1, 4),
                                          [o["category_id"] for o in objs], (w, h)))
        objects.append(objs)
    return {"images": torch.stack(images).float(),
            "targets": {k: torch.stack([t[k] for t in targets]) for k in targets[0]},
            "objects": objects}


# ------------------------------------------------------------------------------------------- train
def _save_loss_plot(history: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    steps = [h["step"] for h in history]
    for key in ("total", "heatmap", "offset", "link", "id", "detector"):
        if history and key in history[0]:
            ax.plot(steps, [h.get(key, np.nan) for h in history], label=key)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _categories_to_list(categories) -> list[dict]:
    return [{"id": c.id, "name": c.name, "keypoints": list(c.keypoint_names),
             "skeleton": [list(p) for p in c.skeleton], "sigmas": list(c.sigmas)} for c in categories]


def _categories_from_list(d: list[dict]) -> tuple[Category, ...]:
    return tuple(Category(int(c["id"]), c["name"], tuple(c["keypoints"]),
                          tuple(tuple(p) for p in c["skeleton"]),
                          tuple(c["sigmas"])) for c in d)


def train_klpnet(cfg: dict, resume: bool = True, progress: bool = True, evaluate_after: bool = True,
                 data: tuple[KeypointData, KeypointData] | None = None) -> dict:
    """Train per the (resolved or raw) config; writes ``last.pt``, ``loss.png``, ``metrics.json``.

    ``data`` = (train, val) overrides the config's data section (tests use tiny in-memory sets).
    """
    from tqdm import tqdm

    cfg = resolve_klpnet_config(cfg)
    t_cfg = cfg["train"]
    out_dir, device = prepare_run(cfg)
    train_data = data[0] if data else load_klpnet_split(cfg["data"], "train")
    model = KLPNet(train_data.categories, cfg["model"])
    model.fit_templates_from(a for s in train_data.samples for a in s.annotations)
    model.to(device)
    batch = materialize_klpnet(model, train_data)
    n = len(batch["images"])
    bs = min(int(t_cfg["batch_size"]), n)
    steps_per_epoch = max(1, n // bs)
    epochs = int(t_cfg["epochs"])
    total_steps = epochs * steps_per_epoch
    # the small graph auto-encoder learns from few nodes per step: it gets a larger learning rate
    graph_params = list(model.gae.parameters()) + [model.prototypes]
    graph_ids = {id(p) for p in graph_params}
    lr = float(t_cfg["lr"])
    opt = torch.optim.AdamW(
        [{"params": [p for p in model.parameters() if id(p) not in graph_ids], "lr": lr},
         {"params": graph_params, "lr": lr * float(t_cfg["graph_lr_mult"])}],
        weight_decay=float(t_cfg["weight_decay"]))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total_steps) / total_steps)))
    ckpt_path = out_dir / "last.pt"
    start_epoch, history, elapsed = 0, [], 0.0
    if resume and ckpt_path.is_file():
        ck = torch.load(ckpt_path, map_location=device, weights_only=False)
        if ck.get("format") == CHECKPOINT_FORMAT and ck.get("config") == cfg:
            model.load_state_dict(ck["state_dict"])
            opt.load_state_dict(ck["optimizer"])
            sched.load_state_dict(ck["scheduler"])
            start_epoch, history, elapsed = ck["epoch"], ck["history"], ck.get("train_seconds", 0.0)
            print(f"resuming {ckpt_path} at epoch {start_epoch}/{epochs}")
        else:
            print(f"{ckpt_path} was written for a different config: starting afresh")
    gen = torch.Generator().manual_seed(int(cfg["seed"]))
    for _ in range(start_epoch):  # same shuffling sequence after a resume
        torch.randperm(n, generator=gen)
    deadline = None if not t_cfg["max_minutes"] else time.time() + 60 * float(t_cfg["max_minutes"])
    model.train()
    epoch, stopped = start_epoch - 1, False
    for epoch in range(start_epoch, epochs):
        t0 = time.time()
        perm = torch.randperm(n, generator=gen)
        bar = tqdm(range(steps_per_epoch), desc=f"{cfg['name']} epoch {epoch + 1}/{epochs}",
                   disable=not progress, leave=False)
        for it in bar:
            idx = perm[it * bs:(it + 1) * bs]
            images = batch["images"][idx].to(device)
            targets = {k: v[idx].to(device) for k, v in batch["targets"].items()}
            objects = [batch["objects"][i] for i in idx.tolist()]
            loss, parts = model.loss(model(images), targets, objects, gen)
            if not torch.isfinite(loss):
                raise RuntimeError(f"non-finite loss at epoch {epoch}, step {it}: {parts}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
            opt.step()
            sched.step()
            step = epoch * steps_per_epoch + it
            if step % int(t_cfg["log_every"]) == 0 or it == steps_per_epoch - 1:
                history.append({"step": step, "epoch": epoch, **parts})
                bar.set_postfix(loss=f"{parts['total']:.3f}")
            if deadline is not None and time.time() > deadline:
                stopped = True
                break
        elapsed += time.time() - t0
        save_klpnet_checkpoint(ckpt_path, cfg, model, opt, sched, epoch + 1, history, elapsed)
        if stopped:
            print(f"time budget of {t_cfg['max_minutes']} min reached after epoch {epoch + 1}")
            break
    if history:
        _save_loss_plot(history, out_dir / "loss.png", cfg["name"])
    summary = {"name": cfg["name"], "model": model.config, "train_images": n, "epochs_run": epoch + 1,
               "train_seconds": round(elapsed, 1), "first_loss": history[0]["total"] if history else None,
               "final_loss": history[-1]["total"] if history else None, "checkpoint": str(ckpt_path)}
    if evaluate_after:
        val = data[1] if data else load_klpnet_split(cfg["data"], "val")
        summary["val"] = {f"lis_{'on' if lis else 'off'}": evaluate_klpnet(
            model, val, alpha=float(cfg["eval"]["alpha"]), lis=lis, use_gt_boxes=cfg["eval"]["boxes"] == "gt")
            for lis in (False, True)}
    (out_dir / "metrics.json").write_text(json.dumps(json_safe(summary), indent=2))
    return summary


def save_klpnet_checkpoint(path: Path, cfg, model: KLPNet, opt, sched, epoch, history, elapsed) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save({"format": CHECKPOINT_FORMAT, "config": cfg, "model_config": model.config,
                "categories": _categories_to_list(model.categories), "state_dict": model.state_dict(),
                "optimizer": opt.state_dict() if opt else None,
                "scheduler": sched.state_dict() if sched else None,
                "epoch": epoch, "history": history, "train_seconds": elapsed}, tmp)
    tmp.replace(path)  # atomic


def load_klpnet_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[KLPNet, dict]:
    """Rebuild a KLPNet from a checkpoint; clear :class:`UserError` for a missing/foreign/mismatched file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    try:
        ck = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a user-facing bad file
        raise UserError(f"{path}: not a readable torch checkpoint ({type(exc).__name__})") from None
    if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT_FORMAT:
        fmt = ck.get("format") if isinstance(ck, dict) else type(ck).__name__
        raise UserError(f"{path}: not a KLPNet checkpoint (format {fmt!r}, expected {CHECKPOINT_FORMAT!r})")
    model = KLPNet(_categories_from_list(ck["categories"]), ck["model_config"])
    try:
        model.load_state_dict(ck["state_dict"])
    except RuntimeError as exc:
        first = str(exc).splitlines()
        detail = next((ln.strip() for ln in first[1:] if ln.strip()), first[0])[:200]
        raise UserError(f"{path}: weights do not fit the recorded model config ({detail})") from None
    model.eval()
    return model, ck


# ---------------------------------------------------------------------------------------- evaluate
def _match_nodes_to_gt(pred_xy: np.ndarray, gt_xy: np.ndarray, gt_ok: np.ndarray, thr: float) -> np.ndarray:
    """Hungarian match of points (P, 2) to usable GT keypoints within ``thr`` → (P,) GT slot or −1."""
    out = np.full(len(pred_xy), -1)
    cols = np.flatnonzero(gt_ok)
    if len(pred_xy) == 0 or len(cols) == 0:
        return out
    d = np.linalg.norm(pred_xy[:, None] - gt_xy[None, cols], axis=-1)
    d = np.where(np.isfinite(d), d, 1e9)
    r, c = linear_sum_assignment(d)
    ok = d[r, c] <= thr
    out[r[ok]] = cols[c[ok]]
    return out


@torch.no_grad()
def evaluate_klpnet(model: KLPNet, data: KeypointData, alpha: float = 0.1, lis: bool = True,
                    use_gt_boxes: bool = True, batch_size: int = 16,
                    predictions: list[ImagePrediction] | None = None) -> dict[str, float]:
    """Metrics of the module docstring on ``data`` (ground-truth boxes = the paper's PCK protocol)."""
    device = next(model.parameters()).device
    model.eval()
    if predictions is None:
        predictions = predict_dataset(model, data, lis=lis, use_gt_boxes=use_gt_boxes, batch_size=batch_size)
    h, w = data.samples[0].image.shape[:2] if data.samples else (0, 0)
    kmax = model.kmax
    rows_pred, rows_oracle, rows_gt, rows_mask, rows_vis, norms = [], [], [], [], [], []
    link_scores, link_labels = [], []
    n_gt_edges = n_found_edges = n_pred_edges = n_true_pred_edges = 0
    n_deb = n_deb_ok = 0
    for sample, pred in zip(data.samples, predictions):
        gts = [o for o in _objects_of(sample) if o["category_id"] in model.cat_index]
        if use_gt_boxes:
            pairs = list(zip(gts, pred.objects))
        else:  # detector boxes: match each GT to the same-category detection of highest IoU
            pairs = _pair_detections(gts, pred.objects)
        for gt, po in pairs:
            kp_gt = gt["keypoints"]
            k = len(kp_gt)
            inside = (kp_gt[:, 0] >= -0.5) & (kp_gt[:, 0] < w - 0.5) & (kp_gt[:, 1] >= -0.5) \
                & (kp_gt[:, 1] < h - 0.5)
            usable = (gt["visibility"] > 0) & inside & np.isfinite(kp_gt).all(1)
            size = float(max(gt["box"][2], gt["box"][3], 1.0))
            thr = alpha * size
            pk = np.full((kmax, 2), 1e9)
            ok_ = np.zeros(kmax, bool)
            gk = np.zeros((kmax, 2))
            vis = np.zeros(kmax, int)
            gk[:k] = np.nan_to_num(kp_gt)
            ok_[:k] = usable
            vis[:k] = gt["visibility"]
            oracle = np.full((kmax, 2), 1e9)
            if po is not None:
                found = np.isfinite(po.keypoints).all(1)
                pk[:k][found] = po.keypoints[found]
                # OracleId: the object's found points matched to its GT keypoints by distance
                pts = po.keypoints[found]
                m = _match_nodes_to_gt(pts, kp_gt, usable, np.inf)
                for p_i, g_i in enumerate(m):
                    if g_i >= 0:
                        oracle[g_i] = pts[p_i]
                # links over the object's final graph
                slots = np.flatnonzero(found)
                match = _match_nodes_to_gt(po.keypoints[slots], kp_gt, usable, thr)
                skel = {tuple(sorted(e)) for e in model.skeletons[model.cat_index[gt["category_id"]]]}
                for a in range(len(slots)):
                    for b in range(a + 1, len(slots)):
                        ga, gb = match[a], match[b]
                        label = ga >= 0 and gb >= 0 and tuple(sorted((int(ga), int(gb)))) in skel
                        link_scores.append(po.link_prob[slots[a], slots[b]])
                        link_labels.append(int(label))
                        if po.link_prob[slots[a], slots[b]] > float(model.config["link_threshold"]):
                            n_pred_edges += 1
                            n_true_pred_edges += int(label)
                gt_edges = [e for e in skel if usable[e[0]] and usable[e[1]]]
                n_gt_edges += len(gt_edges)
                pos_of = {int(g): slots[i] for i, g in enumerate(match) if g >= 0}
                for a, b in gt_edges:
                    if a in pos_of and b in pos_of:
                        p = po.link_prob[pos_of[a], pos_of[b]]
                        n_found_edges += int(p > float(model.config["link_threshold"]))
            else:
                n_gt_edges += sum(1 for a, b in model.skeletons[model.cat_index[gt["category_id"]]]
                                  if usable[a] and usable[b])
            rows_pred.append(pk)
            rows_oracle.append(oracle)
            rows_gt.append(gk)
            rows_mask.append(ok_)
            rows_vis.append(vis)
            norms.append(size)
        n_deb_i, ok_i = _debatable_accuracy(pred, gts, alpha, use_gt_boxes)
        n_deb += n_deb_i
        n_deb_ok += ok_i
    if not rows_pred:
        raise UserError("evaluation data has no annotated object of a known category")
    P, O, G = np.array(rows_pred), np.array(rows_oracle), np.array(rows_gt)
    M, V, N = np.array(rows_mask), np.array(rows_vis), np.array(norms)
    res = {
        "objects": int(len(P)),
        "pck": pck(P, G, M, N, alpha),
        "pck_vis": pck(P, G, M & (V == 2), N, alpha) if (M & (V == 2)).any() else float("nan"),
        "pck_inv": pck(P, G, M & (V == 1), N, alpha) if (M & (V == 1)).any() else float("nan"),
        "pck_oracle_id": pck(O, G, M, N, alpha),
        "link_auc": roc_auc(link_scores, link_labels) if link_scores else float("nan"),
        "link_ap": average_precision(link_scores, link_labels) if link_scores else float("nan"),
        "link_pairs": len(link_scores),
        "edge_recall": n_found_edges / max(n_gt_edges, 1),
        "edge_precision": n_true_pred_edges / n_pred_edges if n_pred_edges else float("nan"),
        "debatable_nodes": int(n_deb),
        "debatable_correct": n_deb_ok / n_deb if n_deb else float("nan"),
    }
    res.update(gt_node_link_metrics(model, data, batch_size=batch_size, device=device))
    return {k: (round(v, 5) if isinstance(v, float) else v) for k, v in res.items()}


def _pair_detections(gts: list[dict], objects) -> list[tuple[dict, Any]]:
    def iou(a, b):
        x0, y0 = max(a[0], b[0]), max(a[1], b[1])
        x1, y1 = min(a[0] + a[2], b[0] + b[2]), min(a[1] + a[3], b[1] + b[3])
        inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
        return inter / max(a[2] * a[3] + b[2] * b[3] - inter, 1e-9)
    used, out = set(), []
    for g in gts:
        best, bi = 0.5, None
        for i, o in enumerate(objects):
            if i not in used and o.category_id == g["category_id"] and iou(g["box"], o.box) > best:
                best, bi = iou(g["box"], o.box), i
        if bi is not None:
            used.add(bi)
        out.append((g, objects[bi] if bi is not None else None))
    return out


def _debatable_accuracy(pred: ImagePrediction, gts: list[dict], alpha: float, use_gt_boxes: bool
                        ) -> tuple[int, int]:
    """(#debatable nodes, #attributed to the right object or correctly rejected); GT boxes only."""
    if not use_gt_boxes or len(pred.nodes) == 0 or not gts:
        return 0, 0
    from .instability import boxes_membership

    member = boxes_membership(pred.nodes, np.array([g["box"] for g in gts]))
    deb = np.flatnonzero(member.sum(1) > 1)
    ok = 0
    for j in deb:
        # the true owner: the object with a labelled keypoint nearest the node, within α·size
        best, owner = np.inf, -1
        for o, g in enumerate(gts):
            d = np.linalg.norm(np.nan_to_num(g["keypoints"], nan=1e9) - pred.nodes[j], axis=1)
            d[g["visibility"] == 0] = np.inf
            size = max(g["box"][2], g["box"][3], 1.0)
            if d.min() <= alpha * size and d.min() < best:
                best, owner = d.min(), o
        claimed = {o for o, ob in enumerate(pred.objects) if j in set(_node_ids(pred, o))}
        ok += int(claimed == ({owner} if owner >= 0 else set()))
    return len(deb), ok


def _node_ids(pred: ImagePrediction, o: int) -> list[int]:
    ob = pred.objects[o]
    ids = []
    for kp in ob.keypoints:
        if np.isfinite(kp).all():
            d = np.linalg.norm(pred.nodes - kp, axis=1)
            ids.append(int(d.argmin()))
    return ids


@torch.no_grad()
def gt_node_link_metrics(model: KLPNet, data: KeypointData, batch_size: int = 16,
                         device: torch.device | None = None) -> dict[str, float]:
    """The link predictor alone: graphs from ground-truth keypoints (no jitter), all same-object pairs."""
    device = device or next(model.parameters()).device
    scores, labels = [], []
    samples = data.samples
    for i in range(0, len(samples), batch_size):
        chunk = samples[i:i + batch_size]
        imgs = torch.stack([torch.from_numpy(np.ascontiguousarray(s.image)).permute(2, 0, 1) for s in chunk])
        out = model(imgs.float().to(device))
        objs = [[o for o in _objects_of(s) if o["category_id"] in model.cat_index] for s in chunk]
        g = model.training_graph(out, objs, jitter=False, include_foreign=False)
        if g is None:
            continue
        z = model.gae(g["x"], object_adjacency(g["gid"], g["xy_norm"]), g["cat"]).z
        gid = g["gid"].cpu().numpy()
        pos = {tuple(e) for e in g["pos"].cpu().tolist()}
        iu, ju = np.triu_indices(len(gid), 1)
        same = gid[iu] == gid[ju]
        iu, ju = iu[same], ju[same]
        s = (z[iu] * z[ju]).sum(-1).cpu().numpy()
        scores.extend(s.tolist())
        labels.extend(int((a, b) in pos) for a, b in zip(iu.tolist(), ju.tolist()))
    if not scores:
        return {"gt_link_auc": float("nan"), "gt_link_ap": float("nan")}
    return {"gt_link_auc": roc_auc(scores, labels), "gt_link_ap": average_precision(scores, labels)}


@torch.no_grad()
def predict_dataset(model: KLPNet, data: KeypointData, lis: bool = True, use_gt_boxes: bool = True,
                    batch_size: int = 16) -> list[ImagePrediction]:
    """:meth:`KLPNet.infer` over a dataset (ground-truth boxes/categories or the model's detector)."""
    device = next(model.parameters()).device
    preds: list[ImagePrediction] = []
    for i in range(0, len(data.samples), batch_size):
        chunk = data.samples[i:i + batch_size]
        imgs = torch.stack([torch.from_numpy(np.ascontiguousarray(s.image)).permute(2, 0, 1) for s in chunk])
        imgs = imgs.float().to(device)
        if use_gt_boxes:
            objs = [[o for o in _objects_of(s) if o["category_id"] in model.cat_index] for s in chunk]
            boxes = [np.array([o["box"] for o in ob]).reshape(-1, 4) for ob in objs]
            cats = [[o["category_id"] for o in ob] for ob in objs]
            preds.extend(model.infer(imgs, boxes, cats, lis=lis))
        else:
            preds.extend(model.infer(imgs, None, None, lis=lis))
    return preds


# ------------------------------------------------------------------------------------------- draw
def draw_klpnet_prediction(image: np.ndarray, pred: ImagePrediction, path: str | Path,
                           categories=None, show_heatmap: bool = True) -> Path:
    """PNG of the image with each object's box, keypoints and predicted links (+ the heatmap).

    ``image`` (H, W, 3) in [0, 1]. Outlier nodes (rejected by LIS) are drawn as red crosses.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = {c.id: c.name for c in (categories or [])}
    ncol = 2 if show_heatmap else 1
    fig, axes = plt.subplots(1, ncol, figsize=(4.2 * ncol, 4.2))
    axes = np.atleast_1d(axes)
    ax = axes[0]
    ax.imshow(np.clip(image, 0, 1))
    colours = plt.cm.tab10(np.arange(10))
    for i, ob in enumerate(pred.objects):
        c = colours[i % 10]
        x, y, w, h = ob.box
        ax.add_patch(plt.Rectangle((x, y), w, h, fill=False, ec=c, lw=1, ls="--"))
        ax.text(x, y - 1, f"{names.get(ob.category_id, ob.category_id)}", color=c, fontsize=7)
        for a, b in ob.edges:
            ax.plot([ob.keypoints[a, 0], ob.keypoints[b, 0]], [ob.keypoints[a, 1], ob.keypoints[b, 1]], "-",
                    color=c, lw=1.5)
        ok = np.isfinite(ob.keypoints).all(1)
        ax.plot(ob.keypoints[ok, 0], ob.keypoints[ok, 1], "o", color=c, ms=3.5, mec="k", mew=0.5)
    out = pred.roles == "outlier" if len(pred.roles) else np.zeros(0, bool)
    if out.any():
        ax.plot(pred.nodes[out, 0], pred.nodes[out, 1], "x", color="red", ms=6, mew=1.5)
    ax.set_axis_off()
    ax.set_title("keypoints + links")
    if show_heatmap:
        axes[1].imshow(pred.heatmap, cmap="magma", vmin=0, vmax=1)
        axes[1].set_title("category-implicit heatmap")
        axes[1].set_axis_off()
    return save_figure(fig, path)


def predict_image_klpnet(checkpoint: str | Path, image: np.ndarray, out_png: str | Path, lis: bool = True,
                         boxes: np.ndarray | None = None, category_ids: list[int] | None = None
                         ) -> ImagePrediction:
    """CLI hook for ``geo-rs keypoint predict`` on a KLPNet checkpoint.

    ``image`` (H, W, 3) float in [0, 1] (H, W divisible by the backbone divisor); objects from the
    model's detector unless ``boxes`` (O, 4) xywh and ``category_ids`` are given. Draws to ``out_png``.
    """
    model, _ = load_klpnet_checkpoint(checkpoint)
    img = np.asarray(image, np.float32)
    if img.ndim != 3 or img.shape[2] != 3:
        raise UserError(f"image must be (H, W, 3), got {img.shape}")
    div = model.backbone.divisor
    if img.shape[0] % div or img.shape[1] % div:
        raise UserError(f"image is {img.shape[1]}x{img.shape[0]}; this KLPNet needs sides divisible by {div}")
    t = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None]
    if boxes is not None:
        pred = model.infer(t, [np.asarray(boxes, np.float64)], [list(category_ids or [])], lis=lis)[0]
    else:
        pred = model.infer(t, None, None, lis=lis)[0]
    draw_klpnet_prediction(img, pred, out_png, model.categories)
    return pred
