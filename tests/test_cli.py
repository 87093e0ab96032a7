"""The headless CLI: python -m dgm EXPERIMENT ..."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


class Result:
    def __init__(self, returncode, stdout, stderr):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def cli(*args, check=True):
    """``python -m dgm ARGS`` in-process (fast); ``test_module_entry_point`` covers the real thing."""
    import contextlib
    import io

    from dgm.core.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
            if isinstance(e.code, str):
                err.write(e.code)
    r = Result(code, out.getvalue(), err.getvalue())
    if check:
        assert r.returncode == 0, r.stderr
    return r


def test_module_entry_point():
    r = subprocess.run([sys.executable, "-m", "dgm", "demo", "--steps", "5"], cwd=ROOT, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["steps"] == 5
    r = subprocess.run([sys.executable, "-m", "dgm", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "demo" in r.stdout


def test_help_lists_experiments():
    out = cli("--help").stdout
    assert "demo" in out
    sub = cli("demo", "--help").stdout
    for flag in ("--seed", "--steps", "--seconds", "--out", "--png", "--data", "--lr"):
        assert flag in sub


def test_prints_one_json_object_and_is_deterministic(tmp_path):
    r1 = json.loads(cli("demo", "--steps", "150", "--seed", "3").stdout)
    assert set(r1) >= {"config", "steps", "seconds", "final", "history"}
    assert r1["steps"] == 150 and r1["config"]["data"] == "bimodal"
    assert r1["final"]["heldout_nll"] > 0 and r1["history"][-1]["step"] == 150
    r2 = json.loads(cli("demo", "--steps", "150", "--seed", "3").stdout)
    assert r1["final"] == r2["final"]
    r3 = json.loads(cli("demo", "--steps", "150", "--seed", "4").stdout)
    assert r1["final"] != r3["final"]


def test_out_writes_files(tmp_path):
    cli("demo", "--steps", "50", "--data", "ring8", "--out", str(tmp_path))
    final = json.loads((tmp_path / "final.json").read_text())
    assert final["config"]["data"] == "ring8" and final["steps"] == 50
    header = (tmp_path / "history.csv").read_text().splitlines()[0].split(",")
    assert header[0] == "step" and "nll" in header
    s = np.load(tmp_path / "samples.npy")
    assert s.shape == (2500, 2) and np.isfinite(s).all()


def test_seconds_budget():
    r = json.loads(cli("demo", "--seconds", "0.5").stdout)
    assert r["steps"] > 0 and r["seconds"] >= 0.5


def test_bad_values_are_refused_with_a_message():
    r = cli("demo", "--lr", "abc", check=False)
    assert r.returncode != 0 and "lr" in r.stderr
    r = cli("demo", "--data", "nope", check=False)
    assert r.returncode != 0 and "invalid choice" in r.stderr
    r = cli("nope", check=False)
    assert r.returncode != 0


def test_divergence_exits_with_a_message():
    r = cli("demo", "--optimizer", "sgd", "--lr", "100", "--steps", "50", check=False)
    assert r.returncode == 3 and "diverged" in r.stderr


@pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="PNG export needs Chromium (kaleido)")
def test_png_export(tmp_path):
    cli("demo", "--steps", "20", "--png", str(tmp_path))
    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    assert pngs == ["demo_fit.png", "demo_loss.png"]
    assert (tmp_path / "demo_fit.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
