"""The Dask distributed engine of :mod:`geo_rs.parallel` (imported only when a cluster is used).

The per-worker state travels in a ``WorkerPlugin``: registered once, it carries the setup function
and its arguments (e.g. model weights) to every worker, present and future, and builds the state on
the worker's first unit. Units are submitted through ``Client.get_executor`` (a
``concurrent.futures`` executor), with ``resources={"GPU": 1}`` for CUDA jobs.
"""
from __future__ import annotations

import concurrent.futures as cf
import logging
import os
import threading
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import dask
from distributed import Client, LocalCluster, get_worker
from distributed.diagnostics.plugin import WorkerPlugin

from .errors import UserError
from .parallel_engines import build_state, execute, one_thread, worker_allocator

if TYPE_CHECKING:  # pragma: no cover
    from .parallel_units import Task, Unit

__all__ = ["DaskEngine"]

CLUSTER_TIMEOUT_ENV = "GEO_RS_CLUSTER_TIMEOUT"  # seconds to reach a scheduler (default 10)


#: Dask settings that keep a worker's event loop from interrupting the unit it computes (see start()).
QUIET_WORKER_CONFIG = {
    "distributed.worker.profile.enabled": False,
    "distributed.admin.system-monitor.gil.enabled": False,
    "distributed.admin.tick.interval": "1s",
    "distributed.admin.tick.limit": "10s",
    "distributed.admin.system-monitor.interval": "5s",
    "distributed.worker.memory.monitor-interval": "5s",
}


class StatePlugin(WorkerPlugin):
    """Carries the setup arguments to every worker once; builds the state on first use."""

    def __init__(self, name: str, setup: Callable | None, setup_args: tuple) -> None:
        self.name, self.setup_fn, self.setup_args = name, setup, setup_args
        self.state: Any = None
        self.ready = False
        self.lock = threading.Lock()

    def __getstate__(self) -> dict:  # the lock and a built state stay where they are
        return {"name": self.name, "setup_fn": self.setup_fn, "setup_args": self.setup_args}

    def __setstate__(self, d: dict) -> None:
        self.__init__(d["name"], d["setup_fn"], d["setup_args"])

    def setup(self, worker) -> None:
        one_thread()
        worker_allocator()

    def teardown(self, worker) -> None:
        self.state, self.ready = None, False

    def get_state(self) -> Any:
        if not self.ready:
            self.state = build_state(self.setup_fn, self.setup_args)
            self.ready = True
        return self.state


def run_dask_unit(plugin_name: str, fn: Callable, unit: Unit) -> tuple[str, dict, float]:
    plugin = get_worker().plugins[plugin_name]
    with plugin.lock:  # one unit at a time per worker process, whatever its thread count
        # OpenMP's thread count is per calling thread: the plugin's setup ran in another thread than
        # this task thread, which would otherwise use every core (1.35x the compute per unit measured).
        import torch

        torch.set_num_threads(1)
        return execute(fn, plugin.get_state(), unit)


class DaskEngine:
    """Units as tasks of a Dask distributed cluster (``concurrent.futures`` executor)."""

    name = "dask"

    def __init__(self, task: Task, address: str, workers: int, gpu: bool) -> None:
        self.task, self.address, self.gpu = task, address, gpu
        self.local_workers = workers
        self.workers = workers
        self.client = self.cluster = self.executor = None
        self._children_before: set[int] = set()
        self.plugin_name = f"geo-rs-{uuid.uuid4().hex[:12]}"

    def start(self) -> None:
        timeout = float(os.environ.get(CLUSTER_TIMEOUT_ENV, "10"))
        if self.address == "local":
            self._children_before = _children()
            # Each wake-up of a worker's event loop takes the GIL from the unit's thread: the profiler
            # (every 10 ms), the tick monitor (20 ms), the system and memory monitors (0.5 s, 0.1 s)
            # cost 1.68x the compute per 1-s unit against the local pool on 2 cores, 1.29x without
            # them (bench_parallel at 1000-sample batches). Remote workers: the same keys in their own
            # Dask config (README).
            with dask.config.set(QUIET_WORKER_CONFIG):
                self.cluster = LocalCluster(n_workers=self.local_workers, threads_per_worker=1,
                                            processes=True, dashboard_address=None,
                                            silence_logs=logging.ERROR,
                                            resources={"GPU": 1} if self.gpu else None)
            self.client = Client(self.cluster)
        else:
            try:
                self.client = Client(self.address, timeout=timeout)
            except (OSError, TimeoutError, ValueError) as exc:
                reason = " ".join(str(exc).split()) or type(exc).__name__
                raise UserError(f"cannot reach the Dask scheduler at {self.address!r} within {timeout:g} s "
                                f"({reason[:200]})") from None
        self._check_workers(timeout)
        self.client.register_plugin(StatePlugin(self.plugin_name, self.task.setup, self.task.setup_args),
                                    name=self.plugin_name)
        extra = {"resources": {"GPU": 1}} if self.gpu else {}
        self.executor = self.client.get_executor(pure=False, **extra)

    def _check_workers(self, timeout: float) -> None:
        try:
            self.client.wait_for_workers(1, timeout=timeout)
        except (TimeoutError, OSError):
            raise UserError(f"the Dask scheduler at {self.address} has no workers "
                            f"(waited {timeout:g} s); start some with `dask worker {self.address}`") from None
        info = self.client.scheduler_info(n_workers=-1)["workers"]
        self.workers = max(1, sum(int(w.get("nthreads", 1)) for w in info.values()))
        if self.gpu and not any(w.get("resources", {}).get("GPU") for w in info.values()):
            raise UserError(f"no worker of the Dask cluster at {self.address} offers the resource GPU; start "
                            f"GPU workers with `dask worker {self.address} --resources GPU=1 --nthreads 1`")

    def submit(self, unit: Unit) -> cf.Future:
        return self.executor.submit(run_dask_unit, self.plugin_name, self.task.fn, unit)

    def close(self) -> None:
        if self.executor is not None:
            self.executor.shutdown(wait=False)
        if self.client is not None:
            try:
                self.client.unregister_worker_plugin(self.plugin_name)
            except Exception:  # a worker that went away meanwhile: nothing left to free there
                pass
        self._disconnect(timeout=30)

    def abort(self) -> None:
        if self.executor is not None:
            self.executor.shutdown(wait=False)  # cancels every queued and running task
        if self.cluster is not None:  # ours: stop its workers now, not after their units end
            logging.getLogger("distributed").setLevel(logging.CRITICAL)  # no tracebacks of the kill
            for nanny in list(self.cluster.workers.values()):
                if hasattr(nanny, "close_gracefully"):  # a killed worker must stay dead, not restart
                    nanny.close_gracefully(reason="geo-rs: interrupted")
            _kill_new_children(self._children_before)
        self._disconnect(timeout=2)

    def _disconnect(self, timeout: float) -> None:
        """Close the client and, for ``local``, our cluster; worker processes of our cluster that are
        still alive after ``timeout`` (a unit cannot be interrupted inside a thread) are killed."""
        client, cluster = self.client, self.cluster
        self.client = self.cluster = self.executor = None
        for closable in (client, cluster):
            if closable is not None:
                try:
                    closable.close(timeout=timeout)
                except Exception:  # timeouts, connections already gone: the processes are handled below
                    pass
        if cluster is not None:
            _kill_new_children(self._children_before)


def _children() -> set[int]:
    import psutil

    return {p.pid for p in psutil.Process().children(recursive=True)}


def _kill_new_children(before: set[int]) -> None:
    """Terminate (then kill) the processes this process started since ``before`` was taken."""
    import psutil

    procs = []
    for p in psutil.Process().children(recursive=True):
        try:
            # multiprocessing's resource tracker is shared with the rest of this process: keep it
            if p.pid not in before and "resource_tracker" not in " ".join(p.cmdline()):
                procs.append(p)
        except psutil.Error:
            pass
    for p in procs:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=1.5)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=1.0)
