"""``geo-rs box ...`` in-process: a tiny end-to-end run, merge, and one-line errors for bad input."""
import json

import pytest

from geo_rs.cli import main
from keypoint.box.cli import parse_eps


def _one_error_line(capsys, needle):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err
    assert "Traceback" not in err[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("box_cli") / "m.pt"
    rc = main(["box", "train", "--out", str(out), "--epochs", "1", "--n-train", "32", "--n-eval", "4",
               "--batch-size", "16", "--quiet"])
    assert rc == 0 and out.is_file() and out.with_suffix(".json").is_file()
    return out


def test_train_verify_report_and_merge_end_to_end(trained, tmp_path, capsys):
    coco = tmp_path / "coco"
    assert main(["box", "export-mnist", "--images", "2", "--out", str(coco)]) == 0
    common = ["box", "verify", "--model", str(trained), "--data", str(coco), "--images", "1",
              "--perturbation", "brightness", "--workers", "1", "--quiet"]
    assert main(common + ["--eps", "0:0.002:2", "--method", "IBP", "--out", str(tmp_path / "a")]) == 0
    assert main(common + ["--eps", "0.001", "--method", "CROWN-IBP", "--out", str(tmp_path / "b")]) == 0
    for name in ("results.json", "cba.md", "cba.csv", "cba_long.csv", "fig_iou_envelope.png", "fig_time.png"):
        assert (tmp_path / "a" / name).is_file(), name
    results = json.loads((tmp_path / "a" / "results.json").read_text())
    assert [r["eps"] for r in results["records"]] == [0.0, 0.002]
    assert "| optimal | IBP |" in (tmp_path / "a" / "cba.md").read_text()
    capsys.readouterr()
    assert main(["box", "report", str(tmp_path / "a"), "--merge", str(tmp_path / "b"),
                 "--out", str(tmp_path / "ab")]) == 0
    merged = json.loads((tmp_path / "ab" / "results.json").read_text())
    assert merged["config"]["methods"] == ["IBP", "CROWN-IBP"] and len(merged["records"]) == 3
    assert merged["config"]["eps"]["brightness"] == [0.0, 0.001, 0.002]
    assert "| optimal | CROWN-IBP | – | " in capsys.readouterr().out  # no CROWN-IBP run at ε = 0


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--method", "DeepPoly"], "--method (command line): unknown method 'DeepPoly'"),
        (["--eps", "-0.1"], "eps must be finite and >= 0"),
        (["--eps", "abc"], "cannot read 'abc'"),
        (["--perturbation", "blur"], "--perturbation (command line): unknown perturbation 'blur'"),
        (["--extension", "exact"], "unknown extension 'exact'"),
        (["--model-factory", "torch.nn:Identity"], "must output 4 numbers"),
        (["--model-factory", "torch.nn"], "package.module:function"),
        (["--model", "missing.pt"], "weights file not found"),
    ],
)
def test_bad_verify_input_is_one_clear_line(extra, needle, tmp_path, capsys):
    rc = main(["box", "verify", "--images", "1", "--workers", "1", "--quiet", "--out", str(tmp_path)] + extra)
    assert rc == 2
    _one_error_line(capsys, needle)


def test_ground_truth_with_x2_below_x1_is_one_clear_line(trained, tmp_path, capsys):
    assert main(["box", "export-mnist", "--images", "1", "--out", str(tmp_path)]) == 0
    spec = json.loads((tmp_path / "annotations.json").read_text())
    spec["annotations"][0]["bbox"] = [40, 10, 30, 28]
    spec["bbox_format"] = "xyxy"
    (tmp_path / "annotations.json").write_text(json.dumps(spec))
    capsys.readouterr()
    rc = main(["box", "verify", "--model", str(trained), "--data", str(tmp_path), "--images", "1", "--quiet",
               "--out", str(tmp_path / "run")])
    assert rc == 2
    _one_error_line(capsys, "x2 <= x1")


def test_config_file_supplies_defaults(tmp_path, capsys):
    cfg = tmp_path / "box.yaml"
    cfg.write_text("verify:\n  method: [NotAMethod]\n")
    assert main(["box", "verify", "--config", str(cfg), "--out", str(tmp_path)]) == 2
    _one_error_line(capsys, f"{cfg}: key 'verify.method': unknown method 'NotAMethod'")
    cfg.write_text("verify:\n  colour: red\n")
    assert main(["box", "verify", "--config", str(cfg), "--out", str(tmp_path)]) == 2
    _one_error_line(capsys, f"{cfg}: key 'verify.colour': unknown key")
    cfg.write_text("train:\n  epochs: one\n")
    assert main(["box", "train", "--config", str(cfg)]) == 2
    _one_error_line(capsys, f"{cfg}: key 'train.epochs'")
    cfg.write_text("verify:\n  images: 2\n  method: [IBP]\n")  # flags win over the file
    assert main(["box", "verify", "--config", str(cfg), "--images", "0", "--out", str(tmp_path)]) == 2
    _one_error_line(capsys, "--images (command line)")


def test_parse_eps():
    assert parse_eps(["0:0.002:3"]) == [0.0, 0.001, 0.002]
    assert parse_eps(["0.1,0.2", "0.3"]) == [0.1, 0.2, 0.3]
    assert parse_eps(None) is None


def test_register_builds_the_parsers_without_importing_torch():
    """keypoint/box/cli.py alone (the package __init__ files are stubbed): parsers and --help are light."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    packages = [("keypoint", str(root / "keypoint")), ("keypoint.box", str(root / "keypoint" / "box"))]
    code = f"""
import argparse, sys, types
for name, path in {packages!r}:
    module = types.ModuleType(name)
    module.__path__ = [path]
    sys.modules[name] = module
import keypoint.box.cli as cli
parser = argparse.ArgumentParser()
cli.register(parser.add_subparsers())
for cmd in ("train", "verify", "report", "export-mnist"):
    parser._subparsers._group_actions[0].choices["box"]._subparsers._group_actions[0].choices[cmd].format_help()
parser.parse_args(["box", "verify", "--images", "3", "--method", "IBP"])
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "open3d", "auto_LiRPA"))
print("HEAVY", heavy)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "HEAVY []" in out.stdout, out.stdout


def test_every_box_option_has_help_with_a_default():
    import argparse

    from keypoint.box.cli import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    box = parser._subparsers._group_actions[0].choices["box"]
    for name, sub in box._subparsers._group_actions[0].choices.items():
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction) or not action.option_strings:  # positionals: required
                assert action.help, (name, action.dest)
                continue
            text = action.help or ""
            assert text and ("default" in text or "required" in text), (name, action.dest, text)
