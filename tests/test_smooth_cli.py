"""``geo-rs smooth certify|predict`` end to end (in-process): outputs in the reference layout, curves,
summary, the three data sources, TorchScript models, index slices; the report helpers against the
obvious computation."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from smoothing_fixtures import FACTORY, X, Y
from torch import nn

from geo_rs.certify_report import certified_accuracy, summary_radii, summary_rows
from geo_rs.cli import main
from geo_rs.smooth_data import load_dataset, parse_index

pytestmark = pytest.mark.usefixtures("one_thread")

@pytest.fixture(scope="module")
def npz(tmp_path_factory):
    path = tmp_path_factory.mktemp("smooth") / "points.npz"
    np.savez(path, x=X, y=Y)
    return path


COMMON = ["--n0", "20", "--n", "400", "--alpha", "0.01", "--batch-size", "128", "--quiet"]


def test_certify_writes_the_reference_tsv_curves_and_summary(npz, tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["smooth", "certify", "--model-factory", FACTORY, "--data", str(npz),
               "--sigma", "0.25", "0.5", *COMMON, "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "| σ | inputs | cert. acc. r=0 |" in printed
    assert "16 input(s) computed, 0 resumed" in printed
    results = json.loads((out / "results.json").read_text())
    for sigma in ("0.25", "0.5"):
        lines = (out / f"sigma_{sigma}" / "certify.tsv").read_text().splitlines()
        assert lines[0] == "idx\tlabel\tpredict\tradius\tcorrect\ttime"  # Cohen et al.'s columns
        rows = results["sigmas"][sigma]["rows"]
        assert len(lines) == 1 + len(Y) == 1 + len(rows)
        for line, row in zip(lines[1:], rows):
            idx, label, pred, radius, correct, when = line.split("\t")
            got = (int(idx), int(label), int(pred), int(correct))
            assert got == (row["idx"], row["label"], row["predict"], row["correct"])
            assert float(radius) == pytest.approx(row["radius"], rel=1e-5)
            assert when.startswith("0:00:")
            assert (row["predict"] == -1) == (row["radius"] == 0.0 and row["pa_lower"] < 0.5)
        summary = results["sigmas"][sigma]["summary"]
        assert summary["r=0"] == pytest.approx(np.mean([r["correct"] for r in rows]))
    with (out / "certified_accuracy.csv").open() as f:
        table = list(csv.DictReader(f))
    assert list(table[0]) == ["radius", "sigma=0.25", "sigma=0.5"]
    for key in ("sigma=0.25", "sigma=0.5"):
        curve = [float(r[key]) for r in table]
        assert all(a >= b for a, b in zip(curve, curve[1:])) and curve[-1] == 0.0  # falls to 0 past the end
    assert (out / "certified_accuracy.png").stat().st_size > 10_000
    assert "cert. acc. r=0.25" in (out / "summary.md").read_text()
    # a second run resumes everything and writes the same table
    assert main(["smooth", "certify", "--model-factory", FACTORY, "--data", str(npz),
                 "--sigma", "0.25", "0.5", *COMMON, "--out", str(out)]) == 0
    assert "0 input(s) computed, 16 resumed" in capsys.readouterr().out
    again = json.loads((out / "results.json").read_text())
    assert again["sigmas"]["0.5"]["rows"] == results["sigmas"]["0.5"]["rows"]


def test_predict_torchscript_image_folder_and_index(tmp_path, capsys):
    from PIL import Image

    scripted = torch.jit.script(nn.Sequential(nn.Flatten(), nn.Linear(16, 2)))
    scripted.save(str(tmp_path / "model.ts"))
    folder = tmp_path / "images"
    folder.mkdir()
    rows = ["file,label"]
    for i in range(4):
        Image.fromarray(np.full((4, 4), 60 * i, np.uint8)).save(folder / f"im{i}.png")
        rows.append(f"im{i}.png,{i % 2}")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "pred"
    assert main(["smooth", "predict", "--model", str(tmp_path / "model.ts"), "--data", str(folder),
                 "--index", "1:4:2", "--sigma", "0.1", "--n", "100", "--batch-size", "50", "--quiet",
                 "--out", str(out)]) == 0
    lines = (out / "predict.tsv").read_text().splitlines()
    assert lines[0] == "idx\tlabel\tpredict\tcorrect\ttime"
    assert [line.split("\t")[:2] for line in lines[1:]] == [["1", "1"], ["3", "1"]]
    assert not (out / "certified_accuracy.png").exists()
    assert "accuracy" in capsys.readouterr().out


def test_datasets_and_index_slices():
    mnist = load_dataset("mnist")
    assert len(mnist) == 1000 and mnist.input(0).shape == (1, 28, 28)
    assert 0.0 <= mnist.input(0).min() and mnist.input(0).max() <= 1.0
    train = load_dataset("mnist-train")
    assert len(train) == 4000 and set(np.bincount(train.labels)) != {0}
    assert parse_index("0:500:5", 1000)[:3] == [0, 5, 10] and len(parse_index("0:500:5", 1000)) == 100
    assert parse_index("3,7", 10) == [3, 7] and parse_index(None, 3) == [0, 1, 2]
    with pytest.raises(Exception, match="step must be > 0"):
        parse_index("0:10:0", 10)


def test_certified_accuracy_matches_the_obvious_count():
    rng = np.random.default_rng(0)
    rows = [{"radius": float(r) if c >= 0 else 0.0, "correct": int(c == 1), "predict": int(c), "time": 0.1}
            for r, c in zip(rng.random(50) * 2, rng.integers(-1, 2, 50))]
    radii = np.linspace(0, 2.2, 23)
    expected = [sum(r["correct"] and r["radius"] >= t for r in rows) / len(rows) for t in radii]
    assert certified_accuracy(rows, radii).tolist() == pytest.approx(expected)
    assert summary_radii({0.5: rows})[-1] >= max(r["radius"] for r in rows)
    summary = summary_rows({0.5: rows})[0]
    assert summary["abstain"] == pytest.approx(np.mean([r["predict"] == -1 for r in rows]))


def test_every_smooth_option_has_help_with_a_default_and_no_heavy_import():
    import argparse
    import subprocess
    import sys

    from geo_rs.commands.smooth import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    smooth = parser._subparsers._group_actions[0].choices["smooth"]
    for name, sub in smooth._subparsers._group_actions[0].choices.items():
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            text = sub._get_formatter()._expand_help(action) if action.help else ""
            assert "default" in text or "required" in text, (name, action.dest, text)
    code = ("import argparse, sys; from geo_rs.commands.smooth import register; "
            "p = argparse.ArgumentParser(); register(p.add_subparsers()); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'distributed')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
