"""A study on a real local Ray instance of 2 CPUs: a task's worker is killed while it trains, Ray runs the task
again, and the study ends with every run stored exactly once; resuming the finished study runs nothing.
Select with ``-m ray`` (these are the only tests that start Ray)."""

from __future__ import annotations

import os
import signal

import pytest

from dgm.studies import engine
from dgm.studies.spec import StudySpec, key
from dgm.studies.store import Store

pytestmark = pytest.mark.ray


def test_a_killed_worker_loses_no_run_and_duplicates_none(tmp_path, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    spec = StudySpec.make("gan", {"loss": ["hinge", "lsgan"]}, seeds=2, steps=100)
    killed: list[tuple[str, int]] = []

    def on_progress(p: engine.Progress) -> None:
        if not killed and p.event.startswith("start "):
            task, pid = p.event[len("start "):].rsplit(" ", 1)
            assert int(pid) != os.getpid()  # a worker process, not this one
            os.kill(int(pid), signal.SIGKILL)  # mid-task: it has just reported and not yet trained
            killed.append((task, int(pid)))

    result = engine.run_study(spec, str(tmp_path), num_cpus=2, on_progress=on_progress)
    assert killed and result.retried >= 1
    runs = Store.read(str(tmp_path)).runs()
    got = sorted((r["setting"], r["seed"]) for r in runs)
    assert got == sorted((key(s), k) for s in spec.settings() for k in (0, 1))  # every run, each once
    assert result.runs_new == 4 and result.runs_total == 4
    task, pid = killed[0]
    again = [r for r in runs if task.startswith(r["setting"])]
    assert len(again) == 2 and all(r["pid"] != pid and r["status"] == "finished" and r["steps"] == 100 for r in again)
    assert all(r["batched"] == 2 for r in runs)  # each task trained its setting's seeds as one batch
    resumed = engine.run_study(spec, str(tmp_path), num_cpus=2)
    assert (resumed.runs_new, resumed.runs_total, resumed.retried) == (0, 4, 0)
