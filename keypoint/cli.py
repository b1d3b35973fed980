"""``geo-rs keypoint`` — make-data | train | eval | predict | certify-rs | pose-bound.

* ``geo-rs keypoint make-data OUT_DIR [--num-images N] [--seed S] [--image-size P] [--preset coco-like]
  [--occlusion-rate R] [--truncation-rate R] [--max-objects M]`` — synthetic COCO keypoint set
  (+ ``preview.png`` with a legend).
* ``geo-rs keypoint train CONFIG [--out-dir D] [--epochs N] [--max-minutes M] [--fresh] [--quiet]`` —
  train from a YAML config; resumes ``D/last.pt`` (raise ``--epochs`` to extend a run); a folder
  holding another model is refused unless ``--fresh``; prints the validation metrics.
* ``geo-rs keypoint eval CHECKPOINT [--data COCO_JSON] [--out JSON]`` — metrics on the checkpoint's
  validation split (or the given COCO file).
* ``geo-rs keypoint certify-rs CHECKPOINT --data DIR --sigma S --eps E... --n N --alpha A --out DIR`` —
  median-smoothing keypoint boxes over a dataset; table and plot of keypoints certified within r px vs ε.
* ``geo-rs keypoint pose-bound CHECKPOINT --data DIR --certifier median-smoothing|milp --max-rot-deg D
  --max-trans T --out DIR`` — certified pose-error bounds per image, verdicts, PNGs, a summary table.
* ``geo-rs keypoint predict IMAGE --checkpoint CKPT [--box x,y,w,h ...] [--annotations COCO_JSON]
  [--category ID|auto] [--out PNG]`` — keypoints and links drawn on the image, JSON on stdout.
* ``geo-rs keypoint verify CHECKPOINT --data synth|COCO_JSON --perturbation noise brightness contrast
  --eps ... --spec l1:3 ... [--spec-file A_b.yaml] --reachable interval linear exact --method coupled
  decoupled --solver cbc highs --workers N [--cluster ADDR] --out DIR [--overwrite]`` — certified
  keypoints (issue 10) over a dataset on the execution layer; resumable per unit.

Adding a sub-command is one entry in :data:`SUBCOMMANDS`: a function adding its arguments here
(parsers only: this module imports no torch) and a command module ``keypoint.commands.<name>``
with ``run(args) -> int``, imported only when the sub-command runs.
"""
from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from dataclasses import dataclass

from geo_rs.config import field_help

__all__ = ["SUBCOMMANDS", "Subcommand", "register"]


@dataclass(frozen=True)
class Subcommand:
    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    module: str  # keypoint.commands.<module> with run(args) -> int


def _lazy(module: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        return importlib.import_module(f"keypoint.commands.{module}").run(args)

    return run


def _make_data_args(p: argparse.ArgumentParser) -> None:
    from .data.synth import PRESETS, SynthConfig

    p.add_argument("out_dir", help="folder to write annotations.json, images/ and preview.png into")
    p.add_argument("--num-images", type=int, default=200, help="images to generate (images; default 200)")
    p.add_argument("--seed", type=int, default=0, help="seed; image i depends on (seed, i) only (default 0)")
    p.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="named generator settings (coco-like: no labels outside the image, large "
                        "occluders); flags below override it (default: none)")
    for name, flag in (("image_size", "--image-size"), ("occlusion_rate", "--occlusion-rate"),
                       ("truncation_rate", "--truncation-rate"), ("max_objects", "--max-objects")):
        kind = int if name in ("image_size", "max_objects") else float
        p.add_argument(flag, type=kind, default=None, help=field_help(SynthConfig, name).replace(
            "; default", "; default: the preset's value, else"))
    p.add_argument("--posed", nargs="+", choices=["runway", "cuboid"], default=None, metavar="OBJECT",
                   help="instead: posed images of a known 3D object (runway: planar, 6 keypoints; cuboid: "
                        "8 corners) with ground-truth camera K, R, t in cameras.json, for pose-bound; takes "
                        "--num-images, --seed, --image-size (default: none, the multi-class synthetic set)")


def _override_help(schema, name: str, section: str = "train") -> str:
    """Help of a flag that overrides a config key: what it is, its unit, the fallback default."""
    info = schema.model_fields[name]
    unit = (info.json_schema_extra or {}).get("unit") if isinstance(info.json_schema_extra, dict) else None
    unit = f"{unit}; " if unit else ""
    default = info.get_default(call_default_factory=True)
    return (f"override the config's {section}.{name}: {info.description} ({unit}default: the config's "
            f"value, else {'none' if default is None else default})")


def _train_args(p: argparse.ArgumentParser) -> None:
    from .config import TrainSection

    p.add_argument("config", help="YAML config (see configs/keypoint/)")
    p.add_argument("--out-dir", default=None,
                   help="run folder: last.pt, metrics.json, loss.png, history.json (default: the config's "
                        "out_dir, else runs/keypoint/<name>)")
    p.add_argument("--epochs", type=int, default=None, help=_override_help(TrainSection, "epochs"))
    p.add_argument("--max-minutes", type=float, default=None,
                   help=_override_help(TrainSection, "max_minutes"))
    p.add_argument("--fresh", "--no-resume", action="store_true", dest="fresh",
                   help="ignore and overwrite a checkpoint in the run folder (default: resume it)")
    p.add_argument("--quiet", action="store_true", help="no progress bars or progress notes (default: shown)")


def _eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="last.pt written by 'geo-rs keypoint train'")
    p.add_argument("--data", default=None,
                   help="COCO keypoint JSON to evaluate on (default: the checkpoint's validation split)")
    p.add_argument("--out", default=None,
                   help="also write the metrics JSON to this file (default: stdout only)")


def _predict_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("image", help="image file (PNG/JPEG)")
    p.add_argument("--checkpoint", required=True,
                   help="last.pt written by 'geo-rs keypoint train' (required)")
    p.add_argument("--box", action="append", default=[],
                   help="object box x,y,w,h in image pixels (pixel centres at integers; must overlap the "
                        "image); repeatable (default: the --annotations boxes, else the whole image; KLPNet: "
                        "its detector)")
    p.add_argument("--annotations", default=None,
                   help="COCO JSON whose boxes for this file name are used (default: none)")
    p.add_argument("--category", default="auto",
                   help="category id of the boxes, or 'auto' = the category with the highest mean score "
                        "(default auto; KLPNet needs an id with --box)")
    p.add_argument("--out", default=None, help="output PNG (default runs/keypoint/predict/<image name>.png)")


def _verify_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint",
                   help="verification-detector checkpoint (detector_16.pt / detector_32.pt from 'python -m "
                        "keypoint.verify.detector') or a 'geo-rs keypoint train' last.pt (its heatmaps)")
    p.add_argument("--data", default="synth",
                   help="'synth' (the detector's synthetic validation crops), a COCO keypoint JSON or its "
                        "folder (instances cropped at the model's input size and padding; then also "
                        "OUT/candidates/*.json for 'pose-bound --certifier milp') (default synth)")
    p.add_argument("--images", type=int, default=20,
                   help="instances to verify, the first N (instances; default 20)")
    p.add_argument("--perturbation", nargs="+", default=["brightness"],
                   help="perturbation sets: noise (|δ| <= ε per pixel), brightness (+ε uniform), contrast "
                        "(×(1 ± ε)) (default brightness)")
    p.add_argument("--eps", nargs="+", default=None,
                   help="ε values for every perturbation ('0.001 0.002'), or per perturbation "
                        "('noise=0.001,0.002 contrast=0.01'); pixel intensity (0..1) for noise and "
                        "brightness, relative factor for contrast (default: noise 0.001, brightness 0.002, "
                        "contrast 0.01)")
    p.add_argument("--spec", nargs="+", default=None,
                   help="joint specs KIND:DELTA[:UNIT], KIND l1 | mean | linf, UNIT heatmap | input "
                        "(pixels; default: l1:0 l1:1 l1:2 l1:4 l1:8 l1:16)")
    p.add_argument("--spec-file", nargs="+", default=[],
                   help="polytope specs A·vec(Δ) <= b from YAML/JSON files {A, b, unit} (default: none)")
    p.add_argument("--reachable", nargs="+", default=["linear"],
                   help="reachable-heatmap levels: interval, linear, exact (default linear)")
    p.add_argument("--method", nargs="+", default=["coupled", "decoupled"],
                   help="coupled (one joint MILP) and/or decoupled (per keypoint, even budget share) "
                        "(default: both)")
    p.add_argument("--bounds-method", default="CROWN-IBP",
                   help="bound method of the reachable heatmaps: IBP, CROWN-IBP, CROWN, alpha-CROWN "
                        "(default CROWN-IBP)")
    p.add_argument("--solver", nargs="+", default=["cbc"], help="MILP solvers: cbc, highs (default cbc)")
    p.add_argument("--float32", default="rigorous",
                   help="float32 rounding of the detector: rigorous (forward-error bound; sound for the "
                        "float32 model) or heuristic (1e-5 relative; sound for the real-arithmetic network "
                        "only) (default rigorous)")
    p.add_argument("--time-limit", type=float, default=60.0,
                   help="MILP time per instance (seconds; default 60); a time-out is 'unknown'")
    p.add_argument("--attack-random", type=int, default=64,
                   help="random samples of the set the attack tries after PGD (samples; default 64)")
    p.add_argument("--workers", type=int, default=1, help="worker processes (1: in this process; default 1)")
    p.add_argument("--cluster", default=None,
                   help="Dask scheduler address or 'local' (default: $GEO_RS_CLUSTER, else the local pool)")
    p.add_argument("--seed", type=int, default=0, help="base seed of the per-unit attack seeds (default 0)")
    p.add_argument("--out", required=True,
                   help="run folder: results.json/.tsv, summary.md/.csv/.json, fig_verified_rate.png, "
                        "counterexamples/, candidates/ (COCO data: per perturbation and ε, the candidate "
                        "pixels pose-bound reads), parts/ (finished units are resumed) (required)")
    p.add_argument("--overwrite", action="store_true",
                   help="discard a run folder holding results of a different job (default: refuse)")
    p.add_argument("--quiet", action="store_true", help="no progress bar (default: shown on a terminal)")


def _rs_args(p: argparse.ArgumentParser, eps_default: list[float]) -> None:
    """Checkpoint, data, median-smoothing and execution options shared by certify-rs and pose-bound."""
    p.add_argument("checkpoint", help="last.pt of a top-down model written by 'geo-rs keypoint train'")
    p.add_argument("--data", required=True, metavar="DIR",
                   help="COCO folder with annotations.json and images/ (pose-bound: also cameras.json, "
                        "from 'geo-rs keypoint make-data DIR --posed') (required)")
    p.add_argument("--images", type=int, default=None,
                   help="use the first N images (images; default: all)")
    p.add_argument("--sigma", type=float, default=0.1,
                   help="median smoothing: std of the Gaussian noise on the image (pixel intensity in "
                        "[0, 1]; default 0.1)")
    p.add_argument("--eps", type=float, nargs="+", default=eps_default,
                   help=f"L2 radii to certify, one sample set for all (pixel intensity; default "
                        f"{eps_default})")
    p.add_argument("--n", type=int, default=1000,
                   help="noisy forward passes per instance (samples; default 1000)")
    p.add_argument("--alpha", type=float, default=0.001,
                   help="failure probability per instance, joint over its keypoints (default 0.001)")
    p.add_argument("--batch-size", type=int, default=1000,
                   help="noisy images per forward batch (images; default 1000)")
    p.add_argument("--seed", type=int, default=0,
                   help="base seed; each instance's noise depends on (seed, its id) only (default 0)")
    p.add_argument("--workers", type=int, default=1,
                   help="worker processes (processes; default 1: this process)")
    p.add_argument("--cluster", default=None, metavar="ADDRESS",
                   help="Dask scheduler address or 'local' (default: $GEO_RS_CLUSTER, else the local pool)")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="run folder (finished units resume) (required)")
    p.add_argument("--overwrite", action="store_true",
                   help="delete results of a different earlier run in --out (default: resume or refuse)")
    p.add_argument("--quiet", action="store_true", help="no progress bar (default: shown on a terminal)")


def _certify_rs_args(p: argparse.ArgumentParser) -> None:
    _rs_args(p, [0.0, 0.05, 0.1, 0.2])
    p.add_argument("--radii", type=float, nargs="+", default=[1.0, 2.0, 4.0, 8.0],
                   help="table columns: certified within r pixels of the truth (pixels; default 1 2 4 8)")


def _pose_bound_args(p: argparse.ArgumentParser) -> None:
    _rs_args(p, [0.0, 0.05, 0.1])
    p.add_argument("--certifier", choices=["median-smoothing", "milp"], default="median-smoothing",
                   help="where the keypoint sets come from: median smoothing of the detector (boxes) or the "
                        "MILP argmax verifier's candidate pixels (--candidates) (default median-smoothing)")
    p.add_argument("--candidates", default=None, metavar="JSON",
                   help="milp: candidate-set file {\"eps\": ε, \"images\": [{\"image_id\": id, "
                        "\"candidates\": [[[x, y], ...] per keypoint]}]} in image pixels (centres at "
                        "integers), e.g. OUT/candidates/*.json of 'geo-rs keypoint verify --data DIR'; "
                        "images under its 'omitted' are reported as abstain (default: none)")
    p.add_argument("--max-rot-deg", type=float, default=5.0,
                   help="tolerance on the rotation error (degrees, geodesic; default 5)")
    p.add_argument("--max-trans", type=float, default=None,
                   help="tolerance on the translation error ‖t − t_gt‖ (world units, e.g. m; default: "
                        "10 %% of the distance to the object)")
    p.add_argument("--time-limit", type=float, default=20.0,
                   help="budget of one pose bound; when it ends the bound is sound but looser "
                        "(seconds; default 20)")
    p.add_argument("--rtol", type=float, default=0.25,
                   help="stop refining a bound within this factor of the worst error found (default 0.25)")
    p.add_argument("--figures", type=int, default=12,
                   help="per-image PNGs to draw (images; default 12, 0: none)")


SUBCOMMANDS: list[Subcommand] = [
    Subcommand("make-data", "generate a synthetic COCO keypoint dataset", _make_data_args, "make_data"),
    Subcommand("train", "train a model from a YAML config (resumable)", _train_args, "train"),
    Subcommand("eval", "evaluate a checkpoint", _eval_args, "evaluate"),
    Subcommand("predict", "draw predicted keypoints and links on an image", _predict_args, "predict"),
    Subcommand("verify", "certify keypoints against joint specs over a dataset (coupled MILP)", _verify_args,
               "verify"),
    Subcommand("certify-rs", "median-smoothing certificates of keypoints over a dataset (resumable)",
               _certify_rs_args, "certify_rs"),
    Subcommand("pose-bound", "certified camera-pose error from certified keypoints (resumable)",
               _pose_bound_args, "pose_bound"),
]


def register(subparsers) -> None:
    """Add ``keypoint`` and its sub-commands (parsers only; commands import torch when they run)."""
    p = subparsers.add_parser("keypoint", help="keypoint detection: synthetic data, training, evaluation",
                              description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="keypoint_command", metavar="SUBCOMMAND")
    sub.required = True
    for cmd in SUBCOMMANDS:
        q = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help)
        cmd.add_arguments(q)
        q.set_defaults(func=_lazy(cmd.module))
