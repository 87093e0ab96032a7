"""The command line under bad input and faults: every refusal is one line on stderr with exit code 2,
no traceback ever; a run that diverges or is stopped keeps what it had (issue 16)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str) -> tuple[int, str, str]:
    """``python -m dgm ARGS`` in-process. An exception that escapes ``main`` is printed as the interpreter
    would print it, so a test sees the "Traceback" a user would."""
    from dgm.core.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as e:  # --help, or a bug of ours that exits
            code = e.code if isinstance(e.code, int) else 1
        except BaseException:  # noqa: BLE001 - what reaches the user as a traceback
            traceback.print_exc(file=err)
            code = 1
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("cli")
    made = {
        "empty.csv": b"",
        "binary.csv": b"\x89PNG\r\n\x1a\n\x00\x00binary",
        "onecol.csv": b"1\n2\n3\n" * 5,
        "degenerate.csv": b"0.1,0.7\n" * 10,
        "few.csv": b"1,2\n3,4\n",
        "nan.csv": b"x,y\n" + b"1,2\n" * 5 + b"nan,1\n" + b"2,3\n" * 5,
        "huge_values.csv": b"1e300,1\n" + b"1,2\n" * 20,
    }
    for name, raw in made.items():
        (d / name).write_bytes(raw)
    (d / "a_file").write_text("not a folder")
    (d / "out_with_folder" / "final.json").mkdir(parents=True)
    paths = {name.removesuffix(".csv"): str(d / name) for name in made}
    return paths | {"a_file": str(d / "a_file"), "out_with_folder": str(d / "out_with_folder"), "dir": str(d)}


# (arguments, the exit code, a fragment of the one-line message); "{name}" is a path from ``files``
BAD = [
    # budgets and seeds: the same ranges as the page (dgm.core.config.RunSettings)
    ("demo --steps -5", 2, "steps=-5 is outside 1..100,000,000"),
    ("demo --steps 0", 2, "steps=0 is outside"),
    ("demo --steps 1e20", 2, "steps=1e20 is outside"),
    ("demo --steps 2.5", 2, "expected a whole number"),
    ("demo --steps abc", 2, "expected a number"),
    ("demo --steps nan", 2, "expected a finite number"),
    ("demo --seconds -1", 2, "seconds=-1 is outside"),
    ("demo --seconds 0", 2, "seconds=0 is outside"),
    ("demo --seconds nan", 2, "expected a finite number"),
    ("demo --seconds inf", 2, "expected a finite number"),
    ("demo --seconds 1e999", 2, "expected a finite number"),
    ("demo --seconds 1e9", 2, "seconds=1e9 is outside 0.001..604800"),
    ("demo --steps 10 --seconds 1", 2, "not allowed with"),
    ("demo --seed -1", 2, "seed=-1 is outside 0..2,147,483,647"),
    ("demo --seed 1e23", 2, "seed=1e23 is outside"),
    ("demo --seed 2147483648", 2, "is outside 0..2,147,483,647"),
    ("demo --seed 1.5", 2, "expected a whole number"),
    ("demo --seed abc", 2, "expected a number"),
    # the page's knobs
    ("demo --lr nan", 2, "refused: lr: expected a finite number"),
    ("demo --lr 1e308", 2, "refused: lr=1e308 is outside 0.0001..100"),
    ("demo --lr -0.1", 2, "refused: lr=-0.1 is outside"),
    ("demo --lr abc", 2, "lr: expected a number"),
    ("demo --batch 0", 2, "batch=0 is outside 8..4,096"),
    ("demo --batch 1e9", 2, "batch=1e9 is outside"),
    ("demo --data nope", 2, "invalid choice: 'nope'"),
    ("demo --optimizer ''", 2, "invalid choice"),
    ("demo --lr", 2, "expected one argument"),
    ("demo --bogus-flag 1", 2, "unrecognized arguments"),
    ("gan --lr-d inf", 2, "lr_d: expected a finite number"),
    ("gan --d-steps 0", 2, "d_steps=0 is outside"),
    ("flow --objective reverse_kl --data moons", 2, "reverse KL needs a log density"),
    ("demo --lr " + "1" * 10_000, 2, "(10,000 characters)"),
    ("demo --data ring8\nrm", 2, "invalid choice"),
    # your own data
    ("demo --data custom", 2, "--data custom needs --data-file"),
    ("divergence --target custom", 2, "--target custom needs --data-file"),
    ("demo --data-file {dir}/missing.csv", 2, "No such file"),
    ("demo --data-file {dir}", 2, "a folder, not a file"),
    ("demo --data-file {empty}", 2, "The file is empty"),
    ("gan --data-file {binary}", 2, "not a text file"),
    ("flow --data-file {onecol}", 2, "exactly two columns"),
    ("vae --data-file {degenerate}", 2, "All the points are the same"),
    ("demo --data-file {few}", 2, "at least 10"),
    ("demo --data-file {nan}", 2, "NaN and infinity are not allowed"),
    ("demo --data-file {huge_values}", 2, "values must lie within"),
    ("demo --data ring8 --data-file {nan}", 2, "--data ring8 asks for another data set"),
    # the device
    ("demo --device tpu", 2, "invalid choice: 'tpu'"),
    # where results go
    ("demo --out {a_file} --seconds 600", 2, "a file of that name exists"),
    ("demo --png {a_file} --seconds 600", 2, "a file of that name exists"),
    ("demo --out /proc/self/dgm-out --seconds 600", 2, "cannot write there"),
    ("demo --out /sys/kernel --seconds 600", 2, "cannot write there"),
    ("demo --out {out_with_folder} --seconds 600", 2, "final.json is a folder there"),
    # the experiment and presets
    ("nope", 2, "invalid choice: 'nope'"),
    ("", 2, "the following arguments are required: EXPERIMENT"),
    ("demo --preset anything", 2, "this experiment has no lesson presets"),
    ("gan --preset nope", 2, "invalid choice: 'nope'"),
]


def _args(spec: str, files: dict[str, str]) -> list[str]:
    if spec.startswith("demo --data ring8\n"):
        return ["demo", "--data", "ring8\nrm"]
    if spec == "demo --optimizer ''":
        return ["demo", "--optimizer", ""]
    return [a.format(**files) for a in spec.split(" ") if a]


@pytest.mark.parametrize("spec,code,fragment", BAD, ids=[b[0][:50] for b in BAD])
def test_a_bad_input_gets_one_line_and_an_exit_code(files, spec, code, fragment):
    rc, out, err = run_cli(*_args(spec, files))
    assert "Traceback" not in err, err
    assert rc == code, (rc, err)
    assert err.endswith("\n") and err.count("\n") == 1, f"not one line: {err!r}"
    assert err.startswith("python -m dgm") and fragment in err, err
    assert len(err) < 400, "a long value is cut, not echoed"
    assert out == "", "nothing is printed on stdout when a run is refused"


def test_the_table_is_long_enough():
    assert len(BAD) >= 40


def test_no_cuda_is_a_message_not_a_traceback():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    rc, _, err = run_cli("demo", "--device", "cuda", "--steps", "5")
    assert rc == 2 and err.count("\n") == 1 and "no CUDA device is available" in err and "Traceback" not in err


def test_a_refused_out_leaves_nothing_behind_and_dots_make_no_stray_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, out, _ = run_cli("demo", "--steps", "20", "--out", "a/../b")
    assert rc == 0 and json.loads(out)["steps"] == 20
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"], "no stray 'a'"
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["final.json", "history.csv", "samples.npy"]


def test_a_diverged_run_writes_what_it_had(tmp_path):
    rc, out, err = run_cli("demo", "--optimizer", "sgd", "--lr", "100", "--steps", "50", "--out", str(tmp_path))
    assert rc == 3 and err.count("\n") == 1 and "diverged at step 2" in err and "Traceback" not in err
    final = json.loads((tmp_path / "final.json").read_text())
    assert final["status"] == "diverged" and final["diverged_at"] == 2 and final["steps"] == 1
    assert json.loads(out)["status"] == "diverged"
    rows = (tmp_path / "history.csv").read_text().splitlines()
    assert rows[0].startswith("step,") and [r.split(",")[0] for r in rows[1:]] == ["0", "1"]
    assert np.load(tmp_path / "samples.npy").shape == (2500, 2)  # of the last good state (step 1)


def test_your_own_data_from_a_csv(tmp_path):
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(300, 2)) * [3.0, 0.5] + [10.0, -2.0]
    path = tmp_path / "points.csv"
    path.write_text("x,y\n" + "\n".join(f"{a},{b}" for a, b in pts))
    rc, out, err = run_cli("demo", "--data-file", str(path), "--steps", "30")
    assert rc == 0, err
    r = json.loads(out)
    assert r["config"]["data"].startswith("custom:") and r["data_file"] == str(path) and r["steps"] == 30
    rc, out, _ = run_cli("divergence", "--data-file", str(path), "--steps", "5")
    assert rc == 0 and json.loads(out)["config"]["target"].startswith("custom:")


def _start(args: list[str], tmp_path: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "dgm", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_stop_writes_what_exists_and_exits_130(tmp_path, sig):
    """Ctrl-C (or SIGTERM) during a run that would last a minute: history.csv grows while it trains; the
    stop writes final.json and the samples, prints the result and exits 130, without a traceback."""
    out = tmp_path / "out"
    proc = _start(["demo", "--seconds", "60", "--out", str(out)], tmp_path)
    history = out / "history.csv"
    deadline = time.monotonic() + 120
    while not (history.exists() and len(history.read_text().splitlines()) > 50):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.poll() else "slow"
        time.sleep(0.2)
    assert not (out / "final.json").exists(), "final.json comes at the end or at the stop"
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and stderr.count("\n") == 1 and f"stopped by {sig.name}" in stderr
    final = json.loads((out / "final.json").read_text())
    result = json.loads(stdout)
    assert final["status"] == result["status"] == "interrupted" and final["steps"] == result["steps"] > 0
    steps = [int(r.split(",")[0]) for r in history.read_text().splitlines()[1:]]
    assert steps == sorted(steps) and steps[-1] >= final["steps"] - 1
    assert np.isfinite(np.load(out / "samples.npy")).all()
    assert not [p for p in os.listdir(out) if p.startswith(".dgm")], "no temporary files left"


def test_ctrl_c_while_starting_up_exits_quietly(tmp_path):
    """Ctrl-C in the first fraction of a second (torch still importing, or the run being built): exit code
    130 and no traceback."""
    proc = _start(["demo", "--seconds", "60"], tmp_path)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr
