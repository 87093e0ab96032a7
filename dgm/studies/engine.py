"""Running a study: its pending runs cut into tasks, the tasks run on Ray (or in this process), each finished
task's runs stored at once.

    result = run_study(spec, out_dir)                          # a local Ray instance, one CPU per task
    result = run_study(spec, out_dir, address="ray://host:10001")   # a Ray cluster, the same code path
    result = run_study(spec, out_dir, executor="inline")       # in this process (the page, tests without Ray)

Ray is imported only here, and only when a study runs on it. Without an address (and without RAY_ADDRESS) a
local instance starts with one CPU per core of this machine and stops when the study ends; with one, the
study connects to that cluster and ships the ``dgm`` package with its tasks (the cluster's Python needs the
requirements installed). A task whose worker dies is run again by Ray (``max_retries``); the store's keyed
writes make that idempotent. Progress: ``on_progress(Progress)`` after every report of a task (its process
id when it starts, its steps as it goes) and every stored task, with an ETA from the steps done so far.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from dgm.studies.spec import StudySpec, key
from dgm.studies.store import Store
from dgm.studies.tasks import Unit, run_unit

log = logging.getLogger(__name__)
MAX_BATCH = 64  # seeds of one setting per task (the batched trainer's sweet spot on a CPU core is far below)
RETRIES = 3  # a task whose worker dies is run again up to this many times
CONNECT_TRIES = 2  # connections to a cluster's client server (one that failed to set up the session is retried)
POLL_S = 0.25
OBJECT_STORE = 256 * 2**20  # a local instance's object store: results are small (finals and histories)


@dataclass
class Progress:
    runs_total: int  # runs this invocation has to do (those stored before are not counted)
    runs_done: int = 0
    steps_total: int = 0
    steps_done: int = 0  # of finished runs and of the tasks going
    elapsed: float = 0.0
    started: dict[str, int] = field(default_factory=dict)  # task -> the process id it last reported
    event: str = ""  # "start TASK PID", "stored TASK", "done"

    @property
    def eta(self) -> float | None:
        if self.steps_done <= 0 or self.elapsed <= 0:
            return None
        return self.elapsed / self.steps_done * max(self.steps_total - self.steps_done, 0)

    def line(self) -> str:
        pct = 100 * self.steps_done / self.steps_total if self.steps_total else 100.0
        eta = self.eta
        return (f"{self.runs_done}/{self.runs_total} runs, {pct:.0f}% of steps, {_clock(self.elapsed)} elapsed, "
                + ("ETA --" if eta is None else f"ETA {_clock(eta)}"))


def _clock(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def units(spec: StudySpec, done: set[tuple[str, int]], batched: bool = True, max_batch: int = MAX_BATCH) -> list[Unit]:
    """The tasks of the runs not yet in the store: per setting, its pending seeds in chunks of ``max_batch``."""
    out = []
    for s in spec.settings():
        k = key(s)
        pending = [seed for seed in spec.seed_list() if (k, seed) not in done]
        for i in range(0, len(pending), max_batch if batched else 1):
            chunk = tuple(pending[i:i + (max_batch if batched else 1)])
            out.append(Unit(spec.experiment, spec.values(s), k, chunk, spec.steps, spec.evals, batched))
    return out


@dataclass
class StudyResult:
    runs_new: int  # runs stored by this invocation
    runs_total: int  # runs of the study in the store
    seconds: float
    retried: int  # tasks Ray ran again after a worker died


class _LocalReporter:
    def __init__(self):
        self.lock = threading.Lock()
        self.events: list[tuple[str, int, int]] = []

    def report(self, unit: str, pid: int, steps: int) -> None:
        with self.lock:
            self.events.append((unit, pid, steps))

    def drain(self) -> list[tuple[str, int, int]]:
        with self.lock:
            out, self.events = self.events, []
        return out


def run_study(spec: StudySpec, out: str, *, address: str | None = None, executor: str = "ray",
              num_cpus: int | None = None, batched: bool = True, max_batch: int = MAX_BATCH,
              on_progress: Callable[[Progress], None] | None = None,
              should_stop: Callable[[], bool] | None = None) -> StudyResult:
    """Run every run of ``spec`` not yet in ``out``'s store (see the module docstring). ``should_stop()``
    ends the study early: stored runs stay, the tasks still going are dropped (a later call runs them)."""
    store = Store.open(out, spec)
    try:
        todo = units(spec, store.done(), batched, max_batch)
        n_runs = sum(len(u.seeds) for u in todo)
        progress = Progress(runs_total=n_runs, steps_total=n_runs * spec.steps)
        start = time.perf_counter()
        new = retried = 0
        running: dict[str, int] = {}  # task -> steps reported so far

        def tick(event: str) -> None:
            progress.elapsed = time.perf_counter() - start
            progress.steps_done = progress.runs_done * spec.steps + sum(running.values())
            progress.event = event
            if on_progress is not None:
                on_progress(progress)

        def take(events) -> None:
            for name, pid, steps in events:
                if steps == 0:
                    progress.started[name] = pid
                    running[name] = 0
                    tick(f"start {name} {pid}")
                elif name in running:
                    running[name] = steps
                    tick(f"steps {name}")

        def stored(u: Unit, records: list[dict[str, Any]]) -> None:
            nonlocal new
            new += store.add(records)
            running.pop(u.name, None)
            progress.runs_done += len(records)
            tick(f"stored {u.name}")

        if todo:
            run = _run_ray if executor == "ray" else _run_inline
            retried = run(todo, take, stored, should_stop, address=address, num_cpus=num_cpus)
        tick("done")
        return StudyResult(new, len(store.done()), time.perf_counter() - start, retried)
    finally:
        store.close()


def _run_inline(todo, take, stored, should_stop, **_) -> int:
    rep = _LocalReporter()

    class Forward:  # progress as it comes, in this thread
        def report(self, unit, pid, steps):
            rep.report(unit, pid, steps)
            take(rep.drain())

    for u in todo:
        if should_stop is not None and should_stop():
            break
        stored(u, run_unit(u, Forward()))
    return 0


# -- Ray ----------------------------------------------------------------------------------------------
def ray_address(address: str | None) -> str | None:
    """The cluster to use: ``address``, else RAY_ADDRESS, else None (a local instance)."""
    return address or os.environ.get("RAY_ADDRESS") or None


def _ray_init(address: str | None, num_cpus: int | None):
    # tasks train on the CPU: keep Ray from rewriting the workers' visible GPUs (and from warning that it will stop)
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    import ray

    root = str(Path(__file__).resolve().parents[2])
    if address is None:
        env = {"env_vars": {"PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}}
        # "local": a new instance of our own, never one that another program started on this machine
        ray.init(address="local", num_cpus=num_cpus or os.cpu_count() or 1, include_dashboard=False,
                 log_to_driver=False, object_store_memory=OBJECT_STORE, configure_logging=False, runtime_env=env)
    else:  # a cluster: its workers get the dgm package with the tasks
        for attempt in range(CONNECT_TRIES):
            try:
                ray.init(address=address, log_to_driver=False, configure_logging=False,
                         runtime_env={"py_modules": [str(Path(root) / "dgm")]})
                break
            except ConnectionAbortedError as e:  # the cluster's client server failed to set up our session
                if attempt == CONNECT_TRIES - 1:  # (seen once: the process it starts for it died at once)
                    raise
                log.warning("the Ray cluster at %s refused the session (%s); trying again", address,
                            str(e).splitlines()[0])
                ray.shutdown()
                time.sleep(2.0)
    return ray


def _run_ray(todo, take, stored, should_stop, *, address=None, num_cpus=None) -> int:
    ray = _ray_init(ray_address(address), num_cpus)
    try:
        @ray.remote(num_cpus=0)
        class Reports(_LocalReporter):
            pass

        class Remote:  # what a task holds: the reports actor's handle (picklable)
            def __init__(self, handle):
                self.handle = handle

            def report(self, unit, pid, steps):
                self.handle.report.remote(unit, pid, steps)

        reports = Reports.remote()
        task = ray.remote(num_cpus=1, max_retries=RETRIES, retry_exceptions=False)(run_unit)
        refs = {task.remote(u, Remote(reports)): u for u in todo}
        pids: dict[str, set[int]] = {}
        while refs:
            if should_stop is not None and should_stop():
                for r in refs:
                    ray.cancel(r, force=True)
                break
            ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=POLL_S)
            events = ray.get(reports.drain.remote())
            for name, pid, _steps in events:
                pids.setdefault(name, set()).add(pid)
            take(events)
            for r in ready:
                stored(refs.pop(r), ray.get(r))
        return sum(len(p) - 1 for p in pids.values())
    finally:
        ray.shutdown()
