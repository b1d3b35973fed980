"""The shared mechanisms of geo_rs: checks, config schema, atomic writes, signals, the training loop,
and the lazy flat API."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import types

import pytest

import geo_rs
from geo_rs import UserError, checks
from geo_rs.atomic import json_safe, write_json, write_text
from geo_rs.config import Schema, check_memory, field_help, load_config, setting
from geo_rs.interrupt import Interrupted, StopSignal
from geo_rs.training import Hook, TrainingLoop


# -- checks --------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf"), "0.5", None, True])
def test_positive_finite_refuses_and_names_the_argument(bad):
    with pytest.raises(UserError, match=r"^sigma must be a finite number > 0"):
        checks.positive_finite("sigma", bad)


def test_count_refuses_floats_bools_and_out_of_range():
    assert checks.count("n", 5) == 5
    for bad in (5.7, 5.0, True, "5", 0):
        with pytest.raises(UserError, match="^n must be an integer"):
            checks.count("n", bad)
    with pytest.raises(UserError, match=r"in \[1, 3\]"):
        checks.count("n", 4, maximum=3)


def test_probability_and_open_unit():
    assert checks.probability("p", 1) == 1.0
    with pytest.raises(UserError, match="probability"):
        checks.probability("p", 1.01)
    with pytest.raises(UserError, match="strictly between"):
        checks.in_open_unit("alpha", 0.0)


def test_tensor_checks_name_shape_and_bad_entries():
    import torch

    checks.tensor_shape("pts", torch.zeros(4, 3), ("N", 3))
    with pytest.raises(UserError, match=r"pts must have shape \(N, 3\), got \(4, 2\)"):
        checks.tensor_shape("pts", torch.zeros(4, 2), ("N", 3))
    with pytest.raises(UserError, match=r"pair must have shape \(K, K\)"):
        checks.tensor_shape("pair", torch.zeros(2, 3), ("K", "K"))
    grid = torch.zeros(3, 3, 3)
    grid[1, 2, 0] = float("nan")
    with pytest.raises(UserError, match=r"grid contains 1 NaN/inf value\(s\) \(first at index \(1, 2, 0\)"):
        checks.finite_tensor("grid", grid)
    with pytest.raises(UserError, match=r"occ must lie in \[0, 1\]"):
        checks.probabilities("occ", torch.tensor([0.0, 1.5]))


# -- config schema -------------------------------------------------------------------------------
class _Train(Schema):
    steps: int = setting(100, "optimisation steps", ge=1)
    lr: float = setting(0.1, "learning rate", gt=0)
    half_res: bool = setting(False, "half-resolution images")
    upsample_at: list[float] = setting([0.3], "fractions of the steps")


class _Cfg(Schema):
    name: str = setting("run", "run name")
    train: _Train = setting(_Train(), "training settings")


@pytest.mark.parametrize(("text", "needle"), [
    ("train: {steps: 5.7}", "key 'train.steps': Input should be a valid integer (got 5.7)"),
    ("train: {steps: abc}", "key 'train.steps': Input should be a valid integer (got 'abc')"),
    ('train: {half_res: "no"}', "key 'train.half_res': Input should be a valid boolean (got 'no')"),
    ("train: {stepz: 3}", "key 'train.stepz': unknown key"),
    ("train: {lr: -1}", "key 'train.lr': Input should be greater than 0"),
    ("- 1\n- 2", "expected a mapping of config keys"),
    ("a: : b", "malformed YAML"),
])
def test_config_errors_name_file_key_and_value(tmp_path, text, needle):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(UserError) as err:
        load_config(_Cfg, path)
    assert str(err.value).startswith(str(path)) and needle in str(err.value), str(err.value)


def test_config_reads_exponent_floats_and_overrides_with_flag_names(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train: {lr: 1e-3, steps: 7}")
    cfg = load_config(_Cfg, path, {"train.steps": 9, "name": None})
    assert cfg.train.lr == 1e-3 and cfg.train.steps == 9 and cfg.name == "run"
    with pytest.raises(UserError, match=r"^--steps \(command line\): Input should be greater"):
        load_config(_Cfg, path, {"train.steps": 0}, flags={"train.steps": "--steps"})
    with pytest.raises(UserError, match="config file not found"):
        load_config(_Cfg, tmp_path / "missing.yaml")


def test_config_defaults_are_not_shared_and_help_shows_default():
    a, b = _Cfg(), _Cfg()
    a.train.upsample_at.append(0.9)
    assert b.train.upsample_at == [0.3]
    assert field_help(_Train, "steps") == "optimisation steps (default 100)"


def test_check_memory_refuses_absurd_allocations():
    check_memory(1e6, "small")
    with pytest.raises(UserError, match=r"grid_res 100000 .* needs about .* PiB"):
        check_memory(4.0 * 1e15, "grid_res 100000 (a 100000³ float32 grid)")


# -- atomic writes -------------------------------------------------------------------------------
def test_atomic_write_leaves_old_file_when_writer_fails(tmp_path):
    from geo_rs.atomic import atomic_write

    path = tmp_path / "r.txt"
    write_text(path, "old")

    def broken(f):
        f.write(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(path, broken)
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.txt"]  # no temporary file left


def test_json_safe_makes_strict_json(tmp_path):
    import numpy as np

    out = json_safe({"a": float("nan"), "b": np.float32(2.5), "c": np.arange(2), "d": (1, float("inf"))})
    assert out == {"a": None, "b": 2.5, "c": [0, 1], "d": [1, None]}
    write_json(tmp_path / "x.json", {"v": float("-inf")})
    assert (tmp_path / "x.json").read_text() == '{"v": null}'


# -- signals and the training loop ---------------------------------------------------------------
def test_stop_signal_defers_first_signal_and_raises_on_second():
    with StopSignal() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.requested and stop.signum == signal.SIGTERM
        with pytest.raises(Interrupted):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL or callable(signal.getsignal(signal.SIGTERM))


class FakeClock:
    """The loop's injected clock (``clock=``): the loop tests check its arithmetic on simulated seconds
    that the test advances, never the machine's time."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_loop_checkpoints_by_steps_and_time_and_stops_on_signal():
    clock = FakeClock()
    saves: list[int] = []
    evals: list[int] = []

    def step(i):
        clock.now += 1.0  # each step takes one simulated second
        if i == 6:
            os.kill(os.getpid(), signal.SIGTERM)
        return {"loss": 1.0}

    loop = TrainingLoop(20, checkpoint_every_steps=4, checkpoint_every_s=2.5, quiet=True, clock=clock)
    res = loop.run(step, lambda: saves.append(loop.step), hooks=[Hook(5, lambda s, st: evals.append(s))])
    assert res.reason == "signal" and res.signum == signal.SIGTERM and res.step == 7
    assert saves == [3, 4, 7]  # by time at 3 (3 s > 2.5 s), by steps at 4, once at the signal (7)
    assert evals == [5]
    with pytest.raises(Interrupted):
        res.raise_if_interrupted()


def test_loop_resumes_and_stops_at_its_budget_of_simulated_seconds():
    clock = FakeClock()

    def step(i):
        clock.now += 2.0  # each step takes two simulated seconds
        return {}

    loop = TrainingLoop(100, step=10, elapsed=20.0, time_limit_s=27.0, quiet=True, clock=clock)
    res = loop.run(step, lambda: None)
    # 20 simulated s already spent; steps of 2: 22, 24, 26, then 28 would overrun 27
    assert res.reason == "time_limit" and res.step == 13
    assert res.elapsed == 20.0 + clock.now == 26.0  # resumed at 20, plus three simulated steps


# -- the flat public API -------------------------------------------------------------------------
def test_every_public_name_resolves_to_its_object_not_a_module():
    for name in geo_rs.__all__:
        value = getattr(geo_rs, name)
        assert not isinstance(value, types.ModuleType), name


def test_cli_help_imports_no_heavy_module():
    code = textwrap.dedent("""
        import sys, contextlib, io
        from geo_rs.cli import main
        for argv in ([], ["nerf"], ["keypoint"], ["box"], ["sdf"], ["smooth"]):
            argv = argv + ["--help"]
            with contextlib.redirect_stdout(io.StringIO()):
                try:
                    main(argv)
                except SystemExit:
                    pass
        names = ("torch", "open3d", "auto_LiRPA", "trimesh", "skimage", "scipy", "pulp", "cv2", "dask",
                 "distributed", "matplotlib", "nerfacc")
        heavy = sorted(m for m in names if m in sys.modules)
        print(",".join(heavy))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"--help imported {out.stdout.strip()}"


def _all_parsers(parser, prefix="geo-rs"):
    import argparse

    yield prefix, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _all_parsers(sub, f"{prefix} {name}")


def test_every_option_of_every_command_has_help_with_its_default():
    """Issue 14: every option of every command (core and plugins) says what it does and its default."""
    import argparse

    from geo_rs.cli import build_parser

    missing, commands = [], 0
    for command, parser in _all_parsers(build_parser()):
        commands += 1
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            text = parser._get_formatter()._get_help_string(action) or ""  # as --help renders it
            if action.option_strings and not action.required:
                ok = "default" in text
            else:
                ok = len(text) >= 10
            if not ok or len(text) < 10:
                missing.append(f"{command} {action.option_strings[:1] or action.dest}: {text!r}")
    assert commands >= 15
    assert not missing, missing


def test_json_object_names_the_file_for_every_failure(tmp_path):
    from geo_rs.checks import json_object

    good = tmp_path / "good.json"
    good.write_text('{"a": 1}')
    assert json_object(good) == {"a": 1}
    cases = {"bad.json": ('{"a": 1,', "not valid JSON"),
             "list.json": ("[1, 2]", "expected a JSON object with"),
             "bin.json": (b"\xff\xfe\x00", "not UTF-8")}
    for name, (content, message) in cases.items():
        path = tmp_path / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        with pytest.raises(UserError, match=message) as info:
            json_object(path, expected="with 'x'")
        assert str(path) in str(info.value)
    with pytest.raises(UserError, match="not found"):
        json_object(tmp_path / "missing.json")
    with pytest.raises(UserError, match="got a folder"):
        json_object(tmp_path)
