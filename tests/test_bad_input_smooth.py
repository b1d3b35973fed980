"""Bad input to ``geo-rs smooth certify|predict`` through the real CLI (subprocesses): exit 2, no
traceback, one line naming the file / flag / value at fault."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from cli_run import assert_user_error, run_cli

MODELS = '''
from torch import nn

def linear():
    """(2,) inputs -> 3 logits."""
    return nn.Linear(2, 3)

def flat():
    """Returns one number per batch, not logits (batch, classes)."""
    return nn.Sequential(nn.Linear(2, 1), nn.Flatten(0))

def broken():
    raise RuntimeError("factory exploded")
'''


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    r = tmp_path_factory.mktemp("bad_smooth")
    (r / "models.py").write_text(MODELS)
    np.savez(r / "points.npz", x=np.zeros((4, 2), np.float32), y=np.array([0, 1, 2, 0]))
    np.savez(r / "noy.npz", x=np.zeros((4, 2), np.float32))
    np.savez(r / "biglabel.npz", x=np.zeros((2, 2), np.float32), y=np.array([0, 7]))
    torch.save({"weight": torch.zeros(5, 2), "bias": torch.zeros(5)}, r / "wide.pt")
    torch.save({"weight": torch.zeros(3, 2), "bias": torch.zeros(3)}, r / "fits.pt")
    (r / "garbage.pt").write_bytes(b"\x80\x04 definitely not torch")
    (r / "text.ts").write_text("not TorchScript")
    images = r / "images"
    images.mkdir()
    from PIL import Image

    for name in ("a.png", "b.png", "c.png"):
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(images / name)
    (images / "labels.csv").write_text("file,label\na.png,0\nb.png,1\n")  # c.png has no row
    badlabels = r / "badlabels"
    badlabels.mkdir()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(badlabels / "a.png")
    (badlabels / "labels.csv").write_text("file,label\na.png,cat\n")
    (r / "afile").write_text("x")
    return r


BASE = ["--model-factory", "models:linear", "--sigma", "0.5", "--n0", "10", "--n", "50", "--batch-size", "50",
        "--quiet"]


CASES = [
    ("unknown_module", lambda r: ["--model-factory", "nosuchmodule:make", "--data", r / "points.npz",
                                  *BASE[2:]], ["nosuchmodule"]),
    ("missing_function", lambda r: ["--model-factory", "models:nope", "--data", r / "points.npz", *BASE[2:]],
     ["models:nope", "'nope'"]),
    ("factory_raises", lambda r: ["--model-factory", "models:broken", "--data", r / "points.npz", *BASE[2:]],
     ["models:broken", "factory exploded"]),
    ("weights_do_not_fit", lambda r: [*BASE, "--weights", r / "wide.pt", "--data", r / "points.npz"],
     ["wide.pt", "does not fit", "weight", "(5, 2)"]),
    ("corrupt_weights", lambda r: [*BASE, "--weights", r / "garbage.pt", "--data", r / "points.npz"],
     ["garbage.pt", "corrupt or truncated"]),
    ("weights_per_sigma_count", lambda r: [*BASE, "--weights", r / "fits.pt", r / "fits.pt", r / "fits.pt",
                                           "--data", r / "points.npz"], ["--weights", "3"]),
    ("not_torchscript", lambda r: ["--model", r / "text.ts", *BASE[2:], "--data", r / "points.npz"],
     ["text.ts", "not a TorchScript file"]),
    ("model_gives_no_logits", lambda r: ["--model-factory", "models:flat", *BASE[2:], "--data",
                                         r / "points.npz"], ["models:flat", "logits"]),
    ("labels_missing_rows", lambda r: [*BASE, "--data", r / "images"], ["labels.csv", "no row", "c.png"]),
    ("labels_not_integers", lambda r: [*BASE, "--data", r / "badlabels"], ["labels.csv:2", "'cat'"]),
    ("label_outside_classes", lambda r: [*BASE, "--data", r / "biglabel.npz"], ["label 7", "3 classes"]),
    ("npz_without_y", lambda r: [*BASE, "--data", r / "noy.npz"], ["noy.npz", "'y'"]),
    ("sigma_zero", lambda r: [*BASE[:2], "--sigma", "0", "--data", r / "points.npz"], ["--sigma", "0"]),
    ("n0_above_n", lambda r: [*BASE, "--n0", "80", "--data", r / "points.npz"], ["--n0 80", "--n 50"]),
    ("alpha_above_one", lambda r: [*BASE, "--alpha", "1.5", "--data", r / "points.npz"], ["--alpha", "1.5"]),
    ("index_out_of_range", lambda r: [*BASE, "--data", r / "points.npz", "--index", "9"], ["--index", "9"]),
    ("no_cuda", lambda r: [*BASE, "--data", r / "points.npz", "--device", "cuda"], ["--device cuda"]),
    ("unreachable_cluster", lambda r: [*BASE, "--data", r / "points.npz", "--cluster", "tcp://127.0.0.1:9",
                                       "--out", r / "cluster_run"], ["127.0.0.1:9", "cannot reach"]),
]


@pytest.mark.parametrize("name, args, needles", CASES, ids=[c[0] for c in CASES])
def test_bad_smooth_input_is_one_line(root, name, args, needles, monkeypatch):
    if name == "no_cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    monkeypatch.setenv("GEO_RS_CLUSTER_TIMEOUT", "2")
    proc = run_cli("smooth", "certify", *args(root), cwd=root)
    assert_user_error(proc, *needles)


def test_another_job_in_the_output_folder_is_refused(root):
    out = root / "job"
    common = ["--model-factory", "models:linear", "--sigma", "0.5", "--n0", "10", "--batch-size", "50",
              "--quiet", "--data", root / "points.npz", "--out", out]
    first = run_cli("smooth", "certify", *common, "--n", "50", cwd=root)
    assert first.returncode == 0, first.stderr
    assert_user_error(run_cli("smooth", "certify", *common, "--n", "60", cwd=root),
                      str(out), "n: 50 then, 60 now", "--overwrite")
    again = run_cli("smooth", "certify", *common, "--n", "60", "--overwrite", cwd=root)
    assert again.returncode == 0, again.stderr
