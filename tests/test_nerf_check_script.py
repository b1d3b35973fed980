"""scripts/gpu_check.sh fails fast and clearly where there is no GPU (it cannot run here otherwise)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "gpu_check.sh"


def _run(tmp_path, fake_smi: str | None) -> subprocess.CompletedProcess:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    if fake_smi is not None:
        (bin_dir / "nvidia-smi").write_text(f"#!/bin/sh\n{fake_smi}\n")
        (bin_dir / "nvidia-smi").chmod(0o755)
    # a PATH without the real nvidia-smi (if any): only the shell's own tools and the fake
    path = f"{bin_dir}:/usr/bin:/bin"
    return subprocess.run(
        ["bash", str(SCRIPT)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={**os.environ, "PATH": path},
    )


def test_no_driver_fails_at_once_with_one_clear_line(tmp_path):
    out = _run(tmp_path, None)
    assert out.returncode == 1
    assert out.stdout.strip().splitlines() == [
        "GPU CHECK: FAILED — no NVIDIA GPU here (nvidia-smi not found): this check needs a machine with a "
        "CUDA GPU and its driver"
    ]
    assert len(out.stderr.strip().splitlines()) == 1  # stopped before looking for Python or building


def test_driver_without_gpu_or_broken_driver_fails_at_once(tmp_path):
    out = _run(tmp_path, "exit 0")  # lists nothing
    assert out.returncode == 1 and out.stdout.strip() == "GPU CHECK: FAILED — nvidia-smi lists no GPU"
    other = tmp_path / "other"
    other.mkdir()
    out = _run(
        other, 'echo "NVIDIA-SMI has failed because it couldn\'t communicate with the NVIDIA driver"; exit 9'
    )
    assert out.returncode == 1
    assert out.stdout.startswith("GPU CHECK: FAILED — nvidia-smi failed: NVIDIA-SMI has failed")
    assert len(out.stderr.strip().splitlines()) == 1
