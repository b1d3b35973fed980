"""One execution layer for dataset-scale jobs: a local process pool or a Dask distributed cluster.

Every job that runs one computation over many inputs (``geo-rs smooth certify``, ``geo-rs box verify``,
keypoint verification) is written as a **unit function** plus an optional **per-worker setup**, and
handed to :func:`run_units`, which

* runs the units in the calling process (``workers=1``), in a local pool of ``spawn``-ed worker
  processes, or on a Dask distributed cluster (``cluster="tcp://host:8786"``, or ``"local"`` for a
  ``LocalCluster`` of ``workers`` processes; the environment variable ``GEO_RS_CLUSTER`` sets the
  default address);
* calls ``setup(*setup_args)`` **once per worker** (an initializer in the local pool, a Dask
  ``WorkerPlugin`` on a cluster: the arguments, e.g. model weights, travel once per worker, not once
  per unit) and runs every unit with **one torch thread** per worker;
* seeds torch, numpy and ``random`` before each unit from :func:`unit_seed` (base seed, unit id), and
  hands the seed to the unit as ``unit.seed``: results do not depend on the worker count, on which
  worker ran a unit, on the order of completion or on the engine (tested bit for bit);
* streams results back as they finish (``on_result``), with a progress bar, and stores each in one
  small JSON file ``OUT/parts/<unit id>.json`` (:class:`ResultStore`) so that a killed run resumes
  where it stopped; a folder holding results of a *different* job is refused with one line unless
  ``overwrite=True``;
* on SIGINT/SIGTERM stops submitting, cancels what is queued, terminates its worker processes and
  raises :class:`geo_rs.interrupt.Interrupted` (the CLI exits 130/143) within seconds; local workers
  also die with their parent if it is killed outright (``PR_SET_PDEATHSIG`` on Linux), so no process
  is left behind;
* maps a dead worker (out of memory, killed by the OS; Dask's ``KilledWorker``) to one
  :class:`geo_rs.UserError` line; finished units stay saved.

Writing a job (``geo-rs keypoint verify`` and RS keypoint certification plug in the same way): the
setup and unit functions must be importable module-level functions (they are pickled by reference),
the unit payload and ``setup_args`` picklable, and the unit result a JSON-serialisable dict::

    import io
    from geo_rs.parallel import ExecOptions, ResultStore, Task, Unit, fingerprint, run_units

    def load_model(model_bytes: bytes):            # once per worker process
        import torch
        return torch.jit.load(io.BytesIO(model_bytes)).eval()

    def verify_one(model, unit: Unit) -> dict:      # once per unit, in a worker
        image, eps = unit.payload                  # torch/numpy/random are seeded with unit.seed
        lower = float(model(image[None]).min()) - eps
        return {"lower": lower, "certified": lower > 0}

    model_bytes = open("model.ts", "rb").read()
    units = [Unit(f"img{i:06d}", payload=(images[i], 0.01), fingerprint=fingerprint(images[i], 0.01))
             for i in range(len(images))]
    store = ResultStore("runs/verify", job=fingerprint(model_bytes), describe={"model": "model.ts"})
    run = run_units(Task(verify_one, load_model, (model_bytes,)), units,
                    ExecOptions(workers=2, cluster=None), store=store, seed=0)
    run.results["img000003"]     # -> {"lower": ..., "certified": ...}; run.computed, run.resumed

GPU workers: with ``device="cuda"`` a Dask job asks every unit for the worker resource ``GPU=1``
(start workers with ``dask worker ADDRESS --resources GPU=1 --nthreads 1``); the local pool runs all
its workers on the default CUDA device. A Dask worker with several threads runs one unit at a time
(a per-worker lock): torch and the auto_LiRPA bound cache are not thread-safe.
"""
from __future__ import annotations

import concurrent.futures as cf
import hashlib
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

from .checks import count
from .errors import UserError
from .interrupt import Interrupted
from .parallel_engines import LocalPoolEngine, SerialEngine
from .parallel_store import ResultStore
from .parallel_units import Task, Unit

__all__ = [
    "ExecOptions",
    "ResultStore",
    "RunResult",
    "Task",
    "Unit",
    "fingerprint",
    "resolve_cluster",
    "run_units",
    "unit_seed",
]

CLUSTER_ENV = "GEO_RS_CLUSTER"
_SEED_MASK = 2**62 - 1


# ------------------------------------------------------------------------------------ units, seeds
def unit_seed(base_seed: int, unit_id: str) -> int:
    """The seed of unit ``unit_id`` in a job seeded with ``base_seed``: a hash of both, < 2⁶².

    Independent of how many units there are and of where or when the unit runs.

    Example:
        >>> unit_seed(0, "i000001") == unit_seed(0, "i000001") != unit_seed(1, "i000001")
        True
    """
    digest = hashlib.sha256(f"{int(base_seed)}\x00{unit_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & _SEED_MASK


def fingerprint(*parts: Any) -> str:
    """A short hex digest of arrays, tensors, bytes and JSON-able values (for job/unit fingerprints)."""
    h = hashlib.sha256()
    for part in parts:
        if hasattr(part, "detach"):  # torch tensor
            part = part.detach().cpu().contiguous().numpy()
        if hasattr(part, "tobytes") and hasattr(part, "dtype"):  # numpy array
            h.update(f"{part.dtype}{tuple(part.shape)}".encode())
            h.update(part.tobytes())
        elif isinstance(part, bytes | bytearray):
            h.update(bytes(part))
        else:
            h.update(json.dumps(part, sort_keys=True, default=str).encode())
        h.update(b"\x00")
    return h.hexdigest()[:20]


def _check_unit_id(unit_id: str) -> str:
    if not isinstance(unit_id, str) or not unit_id or not all(c.isalnum() or c in "._-" for c in unit_id):
        raise UserError(f"unit id must be a non-empty string of letters, digits, '.', '_', '-': {unit_id!r}")
    return unit_id


def resolve_cluster(cluster: str | None) -> str | None:
    """The Dask scheduler address to use: ``cluster`` if given, else ``$GEO_RS_CLUSTER``, else None.

    ``"none"`` (either place) means the local pool.
    """
    value = cluster if cluster is not None else os.environ.get(CLUSTER_ENV) or None
    if value is not None and value.strip().lower() in ("", "none"):
        return None
    return value.strip() if value is not None else None


@dataclass
class ExecOptions:
    """Where and how to run.

    Attributes:
        workers: worker processes (local pool, or the size of ``cluster="local"``); 1 runs the units
            in the calling process.
        cluster: Dask scheduler address (``tcp://host:8786``), ``"local"`` for a LocalCluster of
            ``workers`` processes, or None for the local pool (see :func:`resolve_cluster`).
        device: ``cpu`` or ``cuda[:k]``; on a cluster, CUDA units need the worker resource ``GPU``.
        progress: progress bar (None: only when stderr is a terminal).
        desc: progress-bar label.
        window: units in flight at once (None: 2 per worker); bounds memory and how much a
            signal has to cancel.
    """

    workers: int = 1
    cluster: str | None = None
    device: str = "cpu"
    progress: bool | None = None
    desc: str = "units"
    window: int | None = None

    def __post_init__(self) -> None:
        self.workers = count("workers", self.workers, minimum=1)


@dataclass
class RunResult:
    """Outcome of :func:`run_units`: ``results[unit id]`` and ``seconds[unit id]`` for every unit,
    how many were ``computed`` now or ``resumed`` from the store, the ``engine`` and ``wall`` seconds."""

    results: dict[str, dict]
    seconds: dict[str, float]
    computed: int
    resumed: int
    engine: str
    wall: float
    workers: int = 1


def _engine(task: Task, options: ExecOptions, n_todo: int):
    cluster = resolve_cluster(options.cluster)
    gpu = str(options.device).startswith("cuda")
    if cluster is not None:
        try:
            from .parallel_dask import DaskEngine
        except ImportError:
            raise UserError("--cluster needs Dask distributed: pip install 'geo-rs[cluster]'") from None
        return DaskEngine(task, cluster, options.workers, gpu)
    if options.workers == 1 or n_todo <= 1:
        return SerialEngine(task)
    return LocalPoolEngine(task, min(options.workers, n_todo))


# ------------------------------------------------------------------------------------ signals
@contextmanager
def _signals_raise():
    """SIGINT and SIGTERM raise :class:`Interrupted` in the main thread while the block runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise Interrupted(signum)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


@contextmanager
def _signals_ignored():
    """Hold further signals off while workers are being terminated (a second Ctrl-C must not cut
    the cleanup short and leave processes behind)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


# ------------------------------------------------------------------------------------ driver
def _dead_worker_error(exc: BaseException, done: int, total: int, store: ResultStore | None) -> UserError:
    where = f"; finished units are saved in {store.parts}: rerun to resume" if store else ""
    return UserError(
        f"a worker process died ({type(exc).__name__}: killed by the OS, likely out of memory) after "
        f"{done} of {total} units{where}; try fewer workers or smaller units")


def _is_dead_worker(exc: BaseException) -> bool:
    if isinstance(exc, BrokenProcessPool):
        return True
    return type(exc).__name__ == "KilledWorker"  # distributed.scheduler.KilledWorker, imported lazily


def run_units(task: Task, units: Sequence[Unit], options: ExecOptions | None = None, *,
              store: ResultStore | None = None, seed: int = 0,
              on_result: Callable[[Unit, dict, float], None] | None = None) -> RunResult:
    """Run ``task`` on every unit (see the module docstring); returns a :class:`RunResult`.

    Args:
        task: the unit function and its per-worker setup.
        units: the work; ids must be unique. Their ``seed`` is (re)set from ``seed`` and the id.
        options: engine, workers, device, progress (default: one worker, this process).
        store: resumable per-unit storage (None: results are only returned).
        seed: the job's base seed.
        on_result: called in this process as each unit finishes (also for resumed units), in
            completion order.

    Raises:
        UserError: bad ids, a dead worker, an unreachable cluster, a unit's own UserError (prefixed
            with the unit id).
        Interrupted: SIGINT/SIGTERM; finished units are stored, the workers are gone.
    """
    options = options or ExecOptions()
    t_start = time.perf_counter()
    units = [replace(u, id=_check_unit_id(u.id), seed=unit_seed(seed, u.id)) for u in units]
    ids = [u.id for u in units]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise UserError(f"unit ids must be unique; {dup!r} appears twice")
    results: dict[str, dict] = {}
    seconds: dict[str, float] = {}
    todo: list[Unit] = []
    for unit in units:
        stored = store.load(unit) if store is not None else None
        if stored is None:
            todo.append(unit)
        else:
            results[unit.id], seconds[unit.id] = stored
            if on_result is not None:
                on_result(unit, *stored)
    resumed = len(units) - len(todo)
    engine = _engine(task, options, len(todo))
    if todo:
        _drive(engine, todo, options, store, results, seconds, on_result, resumed)
    return RunResult(results={i: results[i] for i in ids}, seconds={i: seconds[i] for i in ids},
                     computed=len(todo), resumed=resumed, engine=engine.name,
                     wall=time.perf_counter() - t_start, workers=engine.workers)


def _drive(engine, todo: list[Unit], options: ExecOptions, store: ResultStore | None,
           results: dict, seconds: dict, on_result, resumed: int) -> None:
    from tqdm.auto import tqdm

    show = options.progress if options.progress is not None else sys.stderr.isatty()
    bar = tqdm(total=len(todo), desc=options.desc, unit="unit", disable=not show, dynamic_ncols=True,
               postfix={"resumed": resumed} if resumed else None)
    by_id = {u.id: u for u in todo}
    queue: Iterable[Unit] = iter(todo)
    pending: set[cf.Future] = set()
    done = 0
    with _signals_raise():
        try:
            engine.start()
            window = options.window or max(2, 2 * engine.workers)
            while True:
                for unit in queue:
                    pending.add(engine.submit(unit))
                    if len(pending) >= window:
                        break
                if not pending:
                    break
                finished, pending = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
                for future in finished:
                    unit_id, result, secs = future.result()
                    unit = by_id[unit_id]
                    if store is not None:
                        store.save(unit, result, secs)
                    results[unit_id], seconds[unit_id] = result, secs
                    done += 1
                    bar.update(1)
                    if on_result is not None:
                        on_result(unit, result, secs)
        except BaseException as exc:
            if _is_dead_worker(exc):
                try:  # SIGTERM sent to the whole process group kills the workers and us alike:
                    time.sleep(0.3)  # let ours arrive, so that it is reported as the signal it is
                except KeyboardInterrupt as signalled:
                    exc = signalled
            with _signals_ignored():
                bar.close()
                engine.abort()
            if isinstance(exc, KeyboardInterrupt):
                where = f" ({done + resumed} finished units saved in {store.parts}; rerun to resume)" \
                    if store is not None else ""
                print(f"stopped after {done} of {len(todo)} units{where}", file=sys.stderr)
                raise exc from None
            if _is_dead_worker(exc):
                raise _dead_worker_error(exc, done, len(todo), store) from None
            raise
        bar.close()
        engine.close()
