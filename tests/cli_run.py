"""Run ``geo-rs`` in a subprocess (the real CLI, as a user runs it) and check its bad-input answer;
start a run and wait for its first stored units, list and wait for its child processes (signal tests)."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path


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


def cli_env() -> dict:
    """The test's environment (PYTHONPATH passed along) for a CLI subprocess."""
    env = dict(os.environ)
    env.setdefault("PYTHONPATH", "")
    return env


def start_and_wait_for_parts(cmd: list[str], cwd: Path, parts: Path, n: int = 2,
                             new_session: bool = False, env: dict | None = None) -> subprocess.Popen:
    """Start ``cmd`` and return once ``parts`` holds ``n`` stored units (``*.json``) — a run in progress."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=env or cli_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=new_session)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        if parts.is_dir() and len(list(parts.glob("*.json"))) >= n:
            return proc
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"the run did not store {n} units in time: {proc.communicate()}")


def descendants(pid: int) -> list:
    """Every process below ``pid`` (psutil processes)."""
    import psutil

    return psutil.Process(pid).children(recursive=True)


def wait_gone(procs: list, seconds: float = 15.0) -> list:
    """Processes still alive (and not zombies) after waiting up to ``seconds``."""
    import psutil

    deadline = time.monotonic() + seconds
    alive = procs
    while alive and time.monotonic() < deadline:
        alive = []
        for p in procs:
            try:
                if p.status() != psutil.STATUS_ZOMBIE:
                    alive.append(p)
            except psutil.NoSuchProcess:
                pass
        time.sleep(0.1)
    return alive
