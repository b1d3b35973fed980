"""Run ``geo-rs`` in a subprocess (the real CLI, as a user runs it) and check its bad-input answer."""
from __future__ import annotations

import os
import subprocess
import sys


def run_cli(*args: str, cwd=None, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m geo_rs.cli ARGS`` with one torch thread (a busy 2-core machine)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "geo_rs.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, cwd=cwd, env=env)


def assert_user_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit status 2, no traceback, and one error line that names every needle; returns that line."""
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-4000:]
    line = err[-1] if err else ""
    assert "error" in line, err
    for needle in needles:
        assert needle in line, (needle, line)
    return line
