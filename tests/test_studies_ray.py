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

pytestmark = [pytest.mark.ray, pytest.mark.xdist_group("ray")]  # one Ray at a time under xdist


def test_a_killed_worker_loses_no_run_and_duplicates_none(tmp_path, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    spec = StudySpec.make("gan", {"loss": ["hinge", "lsgan"]}, seeds=2, steps=100)
    killed: list[tuple[str, int]] = []

    def on_progress(p: engine.Progress) -> None:
        if not killed and p.event.startswith("steps "):  # a task has trained some steps and reported them
            task = p.event[len("steps "):]
            pid = p.started[task]  # the process id it reported when it started
            assert pid != os.getpid()  # a worker process, not this one
            os.kill(pid, signal.SIGKILL)
            killed.append((task, pid))

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


def test_a_study_reaches_a_ray_cluster_by_its_address_unchanged(tmp_path, monkeypatch):
    """A real Ray cluster (a head started with ``ray start``) reached through RAY_ADDRESS=ray://HOST:PORT, as a
    remote one is: the dgm package travels with the tasks, and the runs are those of a study in this process."""
    import shutil
    import socket
    import subprocess
    import sys
    import tempfile
    import time
    from pathlib import Path

    from conftest import free_port

    client, gcs = free_port(), free_port()
    base = 20000 + (os.getpid() % 200) * 100  # the workers' ports: a range of their own, clear of the two above
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # Ray's socket paths must stay short
    ray = str(Path(sys.executable).with_name("ray"))
    head = subprocess.Popen([ray, "start", "--head", "--block", "--num-cpus", "2", "--port", str(gcs),
                             "--ray-client-server-port", str(client), "--min-worker-port", str(base),
                             "--max-worker-port", str(base + 99), "--include-dashboard", "false",
                             "--disable-usage-stats", "--temp-dir", temp],
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 90
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", client)) == 0:
                    break
            assert head.poll() is None and time.monotonic() < deadline, "the Ray head did not start"
            time.sleep(0.5)
        monkeypatch.setenv("RAY_ADDRESS", f"ray://127.0.0.1:{client}")
        spec = StudySpec.make("demo", {"lr": ["0.01", "0.1"]}, seeds=2, steps=30)
        result = engine.run_study(spec, str(tmp_path / "cluster"))
        assert (result.runs_new, result.runs_total) == (4, 4)
    finally:
        os.killpg(head.pid, signal.SIGTERM)  # the head and every process it started (one process group)
        head.wait(60)
        shutil.rmtree(temp, ignore_errors=True)
    engine.run_study(spec, str(tmp_path / "here"), executor="inline")
    there, here = (Store.read(str(tmp_path / d)).runs() for d in ("cluster", "here"))
    assert all(r["pid"] != os.getpid() for r in there)  # trained by the cluster's workers
    assert [(r["setting"], r["seed"], r["final"]) for r in there] == [(r["setting"], r["seed"], r["final"]) for r in here]
