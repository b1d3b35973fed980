"""`geo-rs nerf` / `geo-rs sdf` start-up and help, and the nerf config schema (no training here)."""

from __future__ import annotations

import argparse
import subprocess
import sys
import textwrap

import pytest

from geo_rs import UserError
from geo_rs.config import field_help
from nerf.config import BUILTIN_SCENE_NAMES, RESUMABLE_KEYS, NerfConfig, load_config, merge_for_resume

HEAVY = ("torch", "open3d", "auto_LiRPA", "trimesh", "skimage", "nerfacc", "scipy", "matplotlib")


def test_help_of_nerf_and_sdf_imports_no_heavy_module():
    # Only this package's commands are registered: the keypoint/box plugins are checked on their own.
    code = textwrap.dedent(f"""
        import argparse, contextlib, io, sys
        from geo_rs.commands import sdf
        import nerf.cli
        p = argparse.ArgumentParser(prog="geo-rs")
        sub = p.add_subparsers()
        sdf.register(sub)
        nerf.cli.register(sub)
        for argv in (["sdf"], ["nerf"], ["nerf", "train"], ["nerf", "make-scene"], ["nerf", "extract-mesh"],
                     ["nerf", "render"], ["nerf", "demo"]):
            with contextlib.redirect_stdout(io.StringIO()):
                try:
                    p.parse_args(argv + ["--help"])
                except SystemExit:
                    pass
        print(",".join(sorted(m for m in {HEAVY!r} if m in sys.modules)))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"--help imported {out.stdout.strip()}"


def _parsers():
    import nerf.cli
    from geo_rs.commands import sdf

    root = argparse.ArgumentParser(prog="geo-rs")
    sub = root.add_subparsers()
    sdf.register(sub)
    nerf.cli.register(sub)
    yield "sdf", sub.choices["sdf"]
    nerf_sub = next(a for a in sub.choices["nerf"]._actions if isinstance(a, argparse._SubParsersAction))
    for name, parser in nerf_sub.choices.items():
        yield f"nerf {name}", parser


def test_every_option_has_help_with_its_default():
    missing = []
    for command, parser in _parsers():
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction) or not action.option_strings:
                continue
            text = action.help or ""
            if action.required:
                ok = "required" in text
            else:
                ok = "default" in text
            if not ok or len(text) < 15:
                missing.append(f"{command} {action.option_strings[0]}: {text!r}")
    assert not missing, missing


def test_every_config_key_has_help_and_the_flags_show_schema_defaults():
    for name in NerfConfig.model_fields:
        text = field_help(NerfConfig, name)
        assert "default" in text and NerfConfig.model_fields[name].description, (name, text)
    parser = dict(_parsers())["nerf train"]
    steps = next(a for a in parser._actions if "--steps" in a.option_strings)
    assert field_help(NerfConfig, "steps") in steps.help


def test_config_types_are_strict_and_errors_name_the_key(tmp_path):
    for text, needle in [
        ("half_res: 'no'", "key 'half_res'"),
        ("steps: 5.7", "key 'steps'"),
        ("steps: abc", "key 'steps'"),
        ("lr_density: 1e-3\nsteps: 0", "key 'steps'"),
        ("grid_res: 100000", "grid_res 100000"),
        ("threads: 0", "key 'threads'"),
    ]:
        path = tmp_path / "c.yaml"
        path.write_text(text)
        with pytest.raises(UserError) as err:
            load_config(path)
        assert str(err.value).startswith(str(path)) and needle in str(err.value), str(err.value)
    assert load_config(None, lr_density=1e-3).lr_density == 1e-3
    with pytest.raises(UserError, match="^--steps \\(command line\\)"):
        load_config(None, flags={"steps": "--steps"}, steps=-1)
    cfg = load_config(None)
    with pytest.raises(Exception, match="time_limit_s"):
        cfg.time_limit_s = -1.0  # assignments are validated too


def test_merge_for_resume_allows_more_steps_and_refuses_model_changes():
    saved = NerfConfig(data="sphere", steps=400, grid_res=32, coarse_res=16).to_dict()
    cfg = merge_for_resume(saved, {"data": "sphere", "steps": 540}, {"steps": "--steps"}, "ck.pt")
    assert cfg.steps == 540 and cfg.grid_res == 32  # unset keys keep the saved value
    with pytest.raises(UserError, match=r"^--model: model 'plain' differs from 'smoothed' in ck.pt"):
        merge_for_resume(saved, {"model": "plain"}, {"model": "--model"}, "ck.pt")
    with pytest.raises(UserError, match=r"^c.yaml: grid_res 64 differs from 32"):
        merge_for_resume(
            saved, {"grid_res": 64, "steps": 400}, {"grid_res": "c.yaml", "steps": "c.yaml"}, "ck.pt"
        )
    with pytest.raises(UserError, match="not the data"):
        merge_for_resume(saved, {"data": "torus"}, {"data": "CONFIG_OR_SCENE"}, "ck.pt")
    assert {"steps", "time_limit_s", "threads"} <= RESUMABLE_KEYS and "model" not in RESUMABLE_KEYS


def test_builtin_scene_names_match_the_scenes():
    from nerf.scene import builtin_scene_names

    assert tuple(builtin_scene_names()) == tuple(sorted(BUILTIN_SCENE_NAMES))
