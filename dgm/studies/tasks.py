"""One task of a study: the runs of one setting on some of its seeds, trained in the process it lands in.

    records = run_unit(unit, reporter)   # unit: experiment, values, setting key, seeds, steps, evals, batched

Where the experiment trains many seeds at once (``Experiment.seeds``, e.g. ``GANSeeds``) and accepts the
setting, the task trains its seeds as one batched model; otherwise one run after the other. Each run of a
batch is its seed's single run (the batched trainer's contract), so the store holds the same numbers either
way. The task tells ``reporter`` its process id when it starts and its steps as it goes (progress, the ETA,
and the tests that end a worker mid-study); it returns its runs' records, which the driver stores.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any, Protocol

from dgm.core import config as cfglib
from dgm.core import registry
from dgm.core.outputs import jsonable
from dgm.core.train import TrainingDiverged


@dataclass(frozen=True)
class Unit:
    experiment: str
    values: dict[str, Any]  # the knob values of the setting (fixed and grid)
    setting: str  # its key in the store
    seeds: tuple[int, ...]
    steps: int
    evals: str = "end"
    batched: bool = True  # train the seeds as one batch where the experiment can

    @property
    def name(self) -> str:
        return f"{self.setting} seeds {self.seeds[0]}..{self.seeds[-1]}"


class Reporter(Protocol):
    def report(self, unit: str, pid: int, steps: int) -> None: ...



def _quiet(trainer) -> None:
    """Evaluate at the end only (``evals="end"``): the final metrics are the same, since evaluation never
    draws from the training stream; only the evaluated curves in the history are left out."""
    trainer.eval_every = 0
    trainer.eval_early = ()


def run_unit(unit: Unit, reporter: Reporter | None = None) -> list[dict[str, Any]]:
    exp = registry.get(unit.experiment)
    cfg = cfglib.from_raw(exp.config, unit.values, strict=True)[0]
    pid = os.getpid()
    if reporter is not None:
        reporter.report(unit.name, pid, 0)
    base = {"setting": unit.setting, "config": cfglib.to_dict(cfg), "pid": pid, "error": None}
    batch = None
    if unit.batched and exp.seeds is not None and len(unit.seeds) > 1:
        try:
            batch = exp.seeds(cfg, seeds=unit.seeds, device="cpu")
        except ValueError:  # a setting the batched trainer does not take: one seed at a time
            batch = None
    if batch is not None:
        return _run_batch(unit, batch, base, reporter)
    out, done = [], 0
    for seed in unit.seeds:
        out.append(_run_one(exp, cfg, unit, seed, base, reporter, done))
        done += unit.steps
    return out


def _progress(unit: Unit, reporter: Reporter | None, pid: int, offset: int, mult: int = 1):
    if reporter is None:
        return None
    return lambda done: reporter.report(unit.name, pid, offset + done * mult)


def _run_one(exp, cfg, unit: Unit, seed: int, base: dict, reporter, offset: int) -> dict[str, Any]:
    start = time.perf_counter()
    try:
        t = exp.make(cfg, seed=seed, device="cpu")
    except ValueError as e:  # settings that do not go together
        return {**base, "seed": seed, "status": "refused", "final": {}, "history": [], "steps": 0, "seconds": 0.0,
                "batched": 0, "error": str(e)}
    if unit.evals == "end":
        _quiet(t)
    status, error = "finished", None
    try:
        t.run(steps=unit.steps, burst=None, after_burst=_progress(unit, reporter, base["pid"], offset))
    except TrainingDiverged as e:
        status, error = "diverged", f"diverged at step {e.step:,}"
        t.restore_last_good()
    final = t.final()
    return {**base, "seed": seed, "status": status, "final": jsonable(final), "history": jsonable(t.history.merged()),
            "steps": t.iteration, "seconds": time.perf_counter() - start, "batched": 0, "error": error}


def _run_batch(unit: Unit, batch, base: dict, reporter) -> list[dict[str, Any]]:
    start = time.perf_counter()
    if unit.evals == "end":
        _quiet(batch)
        for r in batch.runs:
            _quiet(r)
    try:
        batch.run(steps=unit.steps, burst=None, after_burst=_progress(unit, reporter, base["pid"], 0, batch.k))
    except TrainingDiverged as e:  # every run diverged
        batch.restore_last_good()
        for k in range(batch.k):
            batch.diverged.setdefault(k, e.step)
    finals = batch.finals()
    seconds = (time.perf_counter() - start) / batch.k
    out = []
    for k, (seed, run) in enumerate(zip(unit.seeds, batch.runs)):
        final = {m: v for m, v in finals[k].items() if m not in ("seed", "diverged_at")}
        div = batch.diverged.get(k)
        out.append({**base, "seed": seed, "status": "diverged" if div is not None else "finished",
                    "final": jsonable(final), "history": jsonable(run.history.merged()),
                    "steps": run.iteration if div is not None else batch.iteration, "seconds": seconds,
                    "batched": batch.k, "error": None if div is None else f"diverged at step {div:,}"})
    return out
