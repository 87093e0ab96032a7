"""Studies without Ray: specs and their refusals, the store's keyed writes, the bootstrap, a study run in this
process (resumed after a stop, batched seeds equal to single runs), and the command line's messages."""

from __future__ import annotations

import json
import math
import sqlite3

import numpy as np
import pytest

from dgm.studies import cli, engine, summary
from dgm.studies.spec import StudyError, StudySpec, key, parse_grid
from dgm.studies.store import Store


def test_a_grid_from_flags_is_parsed_and_every_combination_runs():
    spec = StudySpec.make("demo", parse_grid(["lr=0.01,0.1", "optimizer=adam,sgd"]), seeds=3, steps=5)
    assert spec.grid == {"lr": (0.01, 0.1), "optimizer": ("adam", "sgd")}
    assert [tuple(s.values()) for s in spec.settings()] == [(0.01, "adam"), (0.01, "sgd"), (0.1, "adam"), (0.1, "sgd")]
    assert spec.seed_list() == [0, 1, 2]
    assert key({"b": 1, "a": 2}) == key({"a": 2, "b": 1})  # found again whatever the order of the grid
    assert spec.config(spec.settings()[3]).optimizer == "sgd"


def test_the_reference_study_specs_are_valid_and_the_reference_tables_name_them():
    """Every spec in docs/studies loads, each of its settings is a valid config, and docs/REFERENCE_TABLES.md gives
    the command for it (a table nobody can remake is an anecdote)."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    tables = (root / "docs" / "REFERENCE_TABLES.md").read_text()
    specs = sorted((root / "docs" / "studies").glob("*.toml"))
    assert len(specs) >= 8
    for f in specs:
        spec = StudySpec.from_file(str(f))
        assert spec.n_settings >= 1 and all(spec.config(s) is not None for s in spec.settings()), f.name
        assert f"docs/studies/{f.name}" in tables, f.name


@pytest.mark.parametrize("grid, seeds, steps, fixed, says", [
    (["nope=1,2"], 2, 5, {}, "demo has no such knob"),
    (["lr=0.1,fast"], 2, 5, {}, "lr: expected a number, got 'fast'"),
    (["lr=500"], 2, 5, {}, "lr=500 is outside"),
    (["optimizer=adam,lbfgs"], 2, 5, {}, "is not one of adam, sgd"),
    (["lr=0.1,0.1"], 2, 5, {}, "given twice"),
    (["lr"], 2, 5, {}, "write KNOB=v1,v2"),
    (["lr=0.1"], 0, 5, {}, "--seeds 0: give a whole number from 1"),
    (["lr=0.1"], "three", 5, {}, "--seeds three: give"),
    (["lr=0.1"], 2, 0, {}, "--steps 0"),
    (["lr=0.1"], 2, 5, {"lr": "0.2"}, "both in the grid and fixed"),
    (["lr=0.1"], 2, 5, {"batch": "huge"}, "batch: expected a number"),
])
def test_bad_knobs_and_values_are_refused_with_what_to_change(grid, seeds, steps, fixed, says):
    with pytest.raises(StudyError, match=None) as e:
        StudySpec.make("demo", parse_grid(grid), seeds, steps, fixed)
    assert says in str(e.value)


def test_spec_files_in_json_and_toml_give_the_same_study(tmp_path):
    doc = {"experiment": "demo", "grid": {"lr": [0.01, 0.1]}, "seeds": 2, "steps": 7, "fixed": {"batch": 64}}
    (tmp_path / "s.json").write_text(json.dumps(doc))
    (tmp_path / "s.toml").write_text('experiment = "demo"\nseeds = 2\nsteps = 7\n[grid]\nlr = [0.01, 0.1]\n'
                                     '[fixed]\nbatch = 64\n')
    a, b = StudySpec.from_file(str(tmp_path / "s.json")), StudySpec.from_file(str(tmp_path / "s.toml"))
    assert a == b and a.fixed == {"batch": 64} and a.steps == 7
    (tmp_path / "bad.toml").write_text('experiment = "demo"\nseeds = 2\nsteps = [\n')
    with pytest.raises(StudyError, match="not valid TOML"):
        StudySpec.from_file(str(tmp_path / "bad.toml"))
    (tmp_path / "extra.json").write_text(json.dumps({**doc, "sed": 3}))
    with pytest.raises(StudyError, match="unknown entries sed"):
        StudySpec.from_file(str(tmp_path / "extra.json"))


A = key({"lr": 0.1})


def _record(setting: str, seed: int, value: float, pid: int = 1) -> dict:
    return {"setting": setting, "seed": seed, "config": {}, "status": "finished", "final": {"x": value},
            "history": [{"step": 1, "x": value}], "steps": 5, "seconds": 0.1, "batched": 0, "pid": pid}


def test_the_store_keeps_the_first_write_of_a_run_and_refuses_another_study(tmp_path):
    spec = StudySpec.make("demo", {"lr": ["0.1"]}, 2, 5)
    store = Store.open(str(tmp_path), spec)
    assert store.add([_record(A, 0, 1.0), _record(A, 1, 2.0)]) == 2
    assert store.add([_record(A, 1, 9.0, pid=2), _record(A, 2, 3.0)]) == 1  # a retried task's run: kept as was
    runs = store.runs(history=True)
    assert [(r["seed"], r["final"]["x"], r["pid"]) for r in runs] == [(0, 1.0, 1), (1, 2.0, 1), (2, 3.0, 1)]
    assert runs[0]["history"] == [{"step": 1, "x": 1.0}]
    store.close()
    with pytest.raises(StudyError, match="holds another study .*steps 5 there, 6 here"):
        Store.open(str(tmp_path), StudySpec.make("demo", {"lr": ["0.1"]}, 2, 6))
    Store.open(str(tmp_path), StudySpec.make("demo", {"lr": ["0.1", "0.2"]}, 4, 5)).close()  # more values: continues
    (tmp_path / "file").write_text("")
    with pytest.raises(StudyError, match="a file of that name exists"):
        Store.open(str(tmp_path / "file"), spec)


def test_the_bootstrap_interval_is_a_percentile_bootstrap_of_the_median():
    x = [3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0]
    med, lo, hi = summary.median_interval(x, boot=500, seed=7)
    rng = np.random.default_rng(7)  # the reference, written out
    meds = [np.median(np.asarray(x)[rng.integers(0, 8, size=8)]) for _ in range(500)]
    assert med == 3.5 and (lo, hi) == pytest.approx((np.quantile(meds, 0.025), np.quantile(meds, 0.975)))
    assert summary.median_interval(x) == summary.median_interval(x)  # seeded: the same table every time
    assert summary.median_interval([2.0, 2.0, 2.0]) == (2.0, 2.0, 2.0)
    # coverage: over many samples of 25 standard normals, the interval holds the true median 0 about 95% of the time
    rng = np.random.default_rng(1)
    held = [lo <= 0 <= hi for lo, hi in (summary.median_interval(rng.normal(size=25), boot=400)[1:] for _ in range(300))]
    assert 0.88 <= np.mean(held) <= 0.995


def test_the_mean_and_its_standard_error_are_the_textbook_ones():
    import statistics

    x = [3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0]
    mean, se = summary.mean_se(x)
    assert mean == pytest.approx(statistics.fmean(x)) and se == pytest.approx(statistics.stdev(x) / len(x) ** 0.5)
    assert math.isnan(summary.mean_se([2.0])[1]) and all(math.isnan(v) for v in summary.mean_se([]))
    rows = summary.summarize([{"setting": "a", "values": {"lr": 1}, "status": "finished", "final": {"m": v}}
                              for v in x], ["m"])
    line = summary.table(rows, ["m"], markdown=True, stat="mean").splitlines()[2]
    assert line == f"| lr=1 | 8 | {mean:.3g} ± {se:.3g} |"
    with pytest.raises(ValueError, match="median or mean"):
        summary.table(rows, ["m"], stat="mode")


def test_a_study_stopped_after_its_first_task_continues_without_losing_or_repeating_a_run(tmp_path):
    spec = StudySpec.make("demo", {"lr": ["0.01", "0.1"]}, seeds=3, steps=20)
    events = []
    first = engine.run_study(spec, str(tmp_path), executor="inline", on_progress=lambda p: events.append(p.event),
                             should_stop=lambda: any(e.startswith("stored") for e in events))
    assert (first.runs_new, first.runs_total) == (3, 3)
    rest = engine.run_study(spec, str(tmp_path), executor="inline")
    assert (rest.runs_new, rest.runs_total) == (3, 6)
    assert engine.run_study(spec, str(tmp_path), executor="inline").runs_new == 0  # finished: nothing runs
    runs = Store.read(str(tmp_path)).runs(history=True)
    assert sorted((r["setting"], r["seed"]) for r in runs) == sorted((key(s), k) for s in spec.settings() for k in range(3))
    # each run is its seed's run: the same as training it alone
    from dgm.core import registry

    t = registry.get("demo").make(spec.config({"lr": 0.1}), seed=2)
    t.run(steps=20)
    r = next(r for r in runs if r["values"] == {"lr": 0.1} and r["seed"] == 2)
    assert r["final"]["heldout_nll"] == pytest.approx(t.final()["heldout_nll"], rel=1e-6)
    assert r["history"][-1]["step"] == 20 and r["status"] == "finished"


def test_batched_seeds_store_the_runs_that_single_runs_store(tmp_path):
    # the plain game: 30 steps of it leave only a few high-quality samples, and the page's default R1 penalty (a
    # second derivative) carries a batched product's rounding far enough to move one of them across a mode's line
    spec = StudySpec.make("gan", {"loss": ["hinge"]}, seeds=2, steps=30, fixed={"pack": 1, "r1": 0.0})
    engine.run_study(spec, str(tmp_path / "a"), executor="inline", batched=True)
    engine.run_study(spec, str(tmp_path / "b"), executor="inline", batched=False)
    a, b = (Store.read(str(tmp_path / d)).runs() for d in "ab")
    assert [r["batched"] for r in a] == [2, 2] and [r["batched"] for r in b] == [0, 0]
    for ra, rb in zip(a, b):
        assert ra["seed"] == rb["seed"]
        for m in ("modes", "high_quality", "mode_kl", "mmd"):
            assert ra["final"][m] == pytest.approx(rb["final"][m], rel=1e-3, abs=1e-5), m


def test_the_command_line_prints_the_table_and_resumes(tmp_path, capsys):
    argv = ["demo", "--grid", "lr=0.01,0.1", "--seeds", "3", "--steps", "20", "--out", str(tmp_path), "--local"]
    assert cli.main(argv) == 0
    out, err = capsys.readouterr()
    lines = out.strip().splitlines()
    assert lines[0].startswith("setting") and "heldout_nll median [95% CI]" in lines[0]
    assert [ln.split()[0] for ln in lines[2:]] == ["lr=0.01", "lr=0.1"]
    assert "study: 6/6 runs, 100% of steps" in err and "6 runs done now" in err
    assert cli.main(argv) == 0
    out2, err2 = capsys.readouterr()
    assert out2 == out and "0 runs done now, 6 in" in err2
    assert cli.main([*argv, "--markdown"]) == 0  # the same table, for a document
    md = capsys.readouterr()[0].splitlines()
    assert md[0].startswith("| setting | runs | heldout_nll median") and md[1].startswith("| --- |")
    import re

    assert [c.strip() for c in md[2].strip("|").split("|")] == re.split(r"\s{2,}", lines[2].strip())
    assert cli.main([*argv, "--stat", "mean"]) == 0  # mean ± standard error, as papers report their trials
    mean = capsys.readouterr()[0].splitlines()
    assert "heldout_nll mean ± s.e." in mean[0] and " ± " in mean[2]
    with sqlite3.connect(tmp_path / "study.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 6


@pytest.mark.parametrize("argv, says", [
    (["demo", "--grid", "lr=fast", "--seeds", "2", "--steps", "5"], "lr: expected a number, got 'fast'"),
    (["demo", "--grid", "wings=2", "--seeds", "2", "--steps", "5"], "demo has no such knob"),
    (["demo", "--grid", "lr=0.1", "--steps", "5"], "give --seeds"),
    (["nosuch", "--seeds", "2", "--steps", "5"], "unknown experiment 'nosuch'"),
    (["gan_seeds", "--seeds", "2", "--steps", "5"], "study gan instead"),
    (["--seeds", "2"], "give an EXPERIMENT"),
    (["demo", "--spec", "x.json"], "--spec FILE holds the whole study"),
    (["--spec", "/no/such/file.json"], "No such file"),
    (["demo", "--grid", "lr=0.1", "--seeds", "2", "--steps", "5", "--bogus"], "unrecognized arguments: --bogus"),
])
def test_bad_flags_are_one_line_and_exit_code_2(tmp_path, capsys, argv, says):
    assert cli.main([*argv, "--out", str(tmp_path / "o")]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1 and says in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()  # refused before anything is made
