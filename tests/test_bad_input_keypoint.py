"""Bad input to `geo-rs keypoint ...`, through the real CLI in subprocesses: every case exits 2 with
no traceback and names the offending file, key or value. Plus: `--help` of the group and of every
sub-command imports no torch, open3d or auto_LiRPA."""
import json
import subprocess
import sys

import pytest
import torch
import yaml

pytestmark = pytest.mark.usefixtures("one_thread")

TINY_MODEL = {"type": "adaanchor", "width": 8, "context_levels": 1, "blocks": 0}


def _cli(*argv, cwd):
    return subprocess.run([sys.executable, "-m", "geo_rs.cli", "keypoint", *map(str, argv)], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A folder with a tiny trained checkpoint, a 48×48 image and a COCO file of one other category."""
    from keypoint.data.coco import save_coco
    from keypoint.data.synth import SynthConfig, generate_dataset
    from keypoint.train import train

    work = tmp_path_factory.mktemp("badkp")
    mp = pytest.MonkeyPatch()
    mp.chdir(work)
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg = {"name": "tiny", "out_dir": str(work / "run"),
               "data": {"synth": {"image_size": 48, "max_objects": 2}, "train_images": 4, "val_images": 2,
                        "input_size": 32}, "model": TINY_MODEL, "train": {"epochs": 1, "batch_size": 8}}
        train(cfg, quiet=True, evaluate_after=False)
    finally:
        torch.set_num_threads(n)
        mp.undo()
    save_coco(generate_dataset(2, 0, SynthConfig(image_size=48, max_objects=1)), work / "set")
    coco = json.loads((work / "set" / "annotations.json").read_text())
    coco["categories"][0]["keypoints"] = ["a", "b", "c", "d"][: len(coco["categories"][0]["keypoints"])]
    coco["categories"][0]["keypoints"] += ["x"] * 10
    (work / "set" / "renamed.json").write_text(json.dumps(coco))
    (work / "notes.txt").write_text("hello")
    torch.save({"hello": 1}, work / "foreign.pt")
    (work / "cfgdir").mkdir()
    return work


def _yaml(work, name, cfg):
    path = work / name
    path.write_text(yaml.safe_dump(cfg) if not isinstance(cfg, str) else cfg)
    return path


def _cfg(**sections):
    base = {"name": "x", "data": {"synth": {"image_size": 48}, "train_images": 4, "val_images": 2,
                                  "input_size": 32}, "model": dict(TINY_MODEL), "train": {"epochs": 1}}
    for key, value in sections.items():
        base[key] = {**base[key], **value} if isinstance(base.get(key), dict) else value
    return base


def _bad_configs(work):
    """(name, config, what the error must name)."""
    return [
        ("epochs_word.yaml", _cfg(train={"epochs": "one"}), ["epochs_word.yaml", "train.epochs", "'one'"]),
        ("steps_float.yaml", _cfg(train={"steps": 5.7}), ["steps_float.yaml", "train.steps", "unknown key"]),
        ("epochs_float.yaml", _cfg(train={"epochs": 5.7}), ["epochs_float.yaml", "train.epochs", "5.7"]),
        ("lr.yaml", _cfg(train={"lr": -1}), ["lr.yaml", "train.lr", "-1"]),
        ("type.yaml", _cfg(model={"type": "nope"}), ["type.yaml", "model.type", "'nope'"]),
        ("topk.yaml", _cfg(model={"top_k": 0}), ["topk.yaml", "model.top_k", "0"]),
        ("fusion.yaml", _cfg(model={"fusion": "max"}), ["fusion.yaml", "model.fusion", "'max'"]),
        ("occl.yaml", _cfg(data={"synth": {"occlusion_rate": 2}}),
         ["occl.yaml", "data.synth.occlusion_rate", "2"]),
        ("coco.yaml", _cfg(data={"source": "coco"}), ["coco.yaml", "data.train_json"]),
        ("klp.yaml", _cfg(model={"type": "klpnet"}), ["klp.yaml", "data.input_size", "unknown key"]),
        ("list.yaml", "- 1\n- 2\n", ["list.yaml", "mapping"]),
        ("broken.yaml", "model: {type: adaanchor\n", ["broken.yaml", "malformed YAML"]),
        ("half_res.yaml", _cfg(train={"diagnostics": "no"}), ["half_res.yaml", "train.diagnostics", "'no'"]),
    ]


CASES = [
    # (id, argv builder(work) -> list, substrings the one-line error must contain)
    ("missing config", lambda w: ["train", "missing.yaml"], ["config file not found", "missing.yaml"]),
    ("config is a folder", lambda w: ["train", w / "cfgdir"], ["cfgdir", "folder"]),
    ("--epochs 0", lambda w: ["train", _yaml(w, "ok.yaml", _cfg()), "--epochs", "0"],
     ["--epochs", "(got 0)"]),
    ("another model in the run folder",
     lambda w: ["train", _yaml(w, "hm.yaml", _cfg(model={"type": "heatmap", "width": 8, "context_levels": 1,
                                                         "blocks": 0})), "--out-dir", w / "run"],
     ["last.pt", "different model", "model.type: 'adaanchor' → 'heatmap'", "--fresh"]),
    ("corrupt last.pt", lambda w: ["train", _yaml(w, "ok.yaml", _cfg()), "--out-dir", _corrupt_run(w)],
     ["last.pt", "not a readable checkpoint", "--fresh"]),
    ("eval missing checkpoint", lambda w: ["eval", "missing.pt"], ["checkpoint not found", "missing.pt"]),
    ("eval text file", lambda w: ["eval", w / "notes.txt"], ["notes.txt", "not a readable torch checkpoint"]),
    ("eval foreign torch file", lambda w: ["eval", w / "foreign.pt"],
     ["foreign.pt", "not a geo-rs keypoint"]),
    ("eval other categories", lambda w: ["eval", w / "run" / "last.pt", "--data", w / "set" / "renamed.json"],
     ["renamed.json", "categories"]),
    ("predict box outside", lambda w: ["predict", _image(w), "--checkpoint", w / "run" / "last.pt",
                                       "--box", "100,100,5,5"],
     ["--box 100,100,5,5", "outside", "48x48"]),
    ("predict box 3 numbers", lambda w: ["predict", _image(w), "--checkpoint", w / "run" / "last.pt",
                                         "--box", "1,2,3"], ["--box", "'1,2,3'"]),
    ("predict box nan", lambda w: ["predict", _image(w), "--checkpoint", w / "run" / "last.pt",
                                   "--box", "nan,1,2,3"], ["--box", "finite", "nan,1,2,3"]),
    ("predict missing image", lambda w: ["predict", "nope.png", "--checkpoint", w / "run" / "last.pt"],
     ["image not found", "nope.png"]),
    ("predict text as image", lambda w: ["predict", w / "notes.txt", "--checkpoint", w / "run" / "last.pt"],
     ["notes.txt", "not a readable image"]),
    ("predict unknown category", lambda w: ["predict", _image(w), "--checkpoint", w / "run" / "last.pt",
                                            "--category", "9"], ["category_id 9"]),
    ("predict word category", lambda w: ["predict", _image(w), "--checkpoint", w / "run" / "last.pt",
                                         "--category", "chair"], ["--category", "'chair'"]),
    ("predict missing checkpoint", lambda w: ["predict", _image(w), "--checkpoint", "no.pt"],
     ["checkpoint not found", "no.pt"]),
    ("make-data 0 images", lambda w: ["make-data", w / "o", "--num-images", "0"], ["--num-images", "0"]),
    ("make-data occlusion 2", lambda w: ["make-data", w / "o", "--occlusion-rate", "2"],
     ["occlusion_rate", "2"]),
    ("make-data tiny image", lambda w: ["make-data", w / "o", "--image-size", "8"], ["image_size", "8"]),
]


def _image(work):
    return next((work / "set" / "images").glob("*.png"))


def _corrupt_run(work):
    run = work / "corrupt"
    run.mkdir(exist_ok=True)
    (run / "last.pt").write_bytes(b"\x80\x04truncated")
    return run


def _check(proc, needles):
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


# the rest of CASES (and the config files below) also run in-process through the same `main`
IN_PROCESS = {"predict word category", "make-data tiny image", "eval text file"}


@pytest.mark.parametrize("case", [c for c in CASES if c[0] not in IN_PROCESS],
                         ids=[c[0] for c in CASES if c[0] not in IN_PROCESS])
def test_bad_cli_input(work, case):
    _, argv, needles = case
    _check(_cli(*argv(work), cwd=work), needles)


@pytest.mark.parametrize("case", [c for c in CASES if c[0] in IN_PROCESS],
                         ids=[c[0] for c in CASES if c[0] in IN_PROCESS])
def test_bad_cli_input_in_process(work, case, capsys, monkeypatch):
    from geo_rs.cli import main

    monkeypatch.chdir(work)
    _, argv, needles = case
    capsys.readouterr()
    assert main(["keypoint", *map(str, argv(work))]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and all(n in err[0] for n in needles), err


@pytest.mark.parametrize("index", range(13))
def test_bad_config_files(work, index, capsys, monkeypatch):
    """Config mistakes (the same `main` in-process: they fail before torch is needed)."""
    from geo_rs.cli import main

    monkeypatch.chdir(work)
    name, cfg, needles = _bad_configs(work)[index]
    capsys.readouterr()
    assert main(["keypoint", "train", str(_yaml(work, name, cfg))]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    for needle in needles:
        assert needle in err[0], (needle, err[0])


def test_argparse_errors_name_the_value(work):
    proc = _cli("train", _yaml(work, "ok.yaml", _cfg()), "--epochs", "one", cwd=work)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "'one'" in proc.stderr


HELP = [[], ["make-data"], ["train"], ["eval"], ["predict"]]


_PROBE = """
import sys, argparse, contextlib, io
{setup}
heavy = sorted({{m.split(".")[0] for m in sys.modules}} & {{"torch", "open3d", "auto_LiRPA"}})
print("HEAVY", heavy)
"""
_HELP = """
parser = {build}
for sub in {subs!r}:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        try:
            parser.parse_args(["keypoint", *sub, "--help"])
        except SystemExit:
            pass
    assert "usage: geo-rs keypoint" in buf.getvalue(), sub
"""


def _heavy(setup: str, cwd) -> list[str]:
    proc = subprocess.run([sys.executable, "-c", _PROBE.format(setup=setup)], capture_output=True, text=True,
                          timeout=300, cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    return eval(proc.stdout.split("HEAVY", 1)[1])  # noqa: S307 - our own printed list


def test_help_imports_no_heavy_module(tmp_path):
    """`geo-rs keypoint [SUB] --help` (every sub-command, one process) imports no torch / open3d /
    auto_LiRPA: the keypoint plugin alone imports none, and in the whole `geo-rs` parser keypoint adds
    none to what the other plugins import."""
    plugin = _HELP.format(build="argparse.ArgumentParser(prog='geo-rs')\n"
                                "from keypoint.cli import register\nregister(parser.add_subparsers())",
                          subs=HELP)
    assert _heavy(plugin, cwd=tmp_path) == []
    others = _heavy("from importlib.metadata import entry_points\n"
                    "[ep.load() for ep in entry_points(group='geo_rs.commands') if ep.name != 'keypoint']",
                    cwd=tmp_path)
    whole = _HELP.format(build="__import__('geo_rs.cli').cli.build_parser()", subs=HELP)
    assert set(_heavy(whole, cwd=tmp_path)) <= set(others)


def test_every_option_has_help_with_its_default():
    import argparse

    from keypoint.cli import register

    parser = argparse.ArgumentParser(prog="geo-rs")
    register(parser.add_subparsers())
    group = parser._subparsers._group_actions[0].choices["keypoint"]
    subs = group._subparsers._group_actions[0].choices
    assert set(subs) == {"make-data", "train", "eval", "predict", "certify-rs", "pose-bound", "verify"}
    for name, sub in subs.items():
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help, (name, action.dest)
            if action.option_strings:  # options state their default
                assert "default" in action.help or action.required, (name, action.dest, action.help)
