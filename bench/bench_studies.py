"""Studies: what batching a setting's seeds in one task buys, and what Ray adds on this machine.

    python bench/bench_studies.py [--seeds 8] [--steps 500] [--settings 2]

A GAN study (ring8, the page's defaults, ``--settings`` losses x ``--seeds`` seeds, ``--steps`` steps, evaluated
at the end) is run four ways, each into a fresh store, all timed in this one process so that the ratios hold
whatever the machine: in this process with each setting's seeds batched (GANSeeds) and one by one, and on a
local Ray instance of every core with seeds batched and one by one (Ray's start-up included: it is what a
study pays). Figures: wall seconds and run-steps per second (runs x steps / wall seconds, final evaluations
included).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from dgm.studies import engine
from dgm.studies.spec import StudySpec

LOSSES = ("nonsaturating", "hinge", "lsgan", "wgan_gp")


def timed(spec: StudySpec, **kw) -> float:
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        res = engine.run_study(spec, out, **kw)
        seconds = time.perf_counter() - t0
        assert res.runs_new == spec.n_settings * spec.seeds
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--settings", type=int, default=2)
    a = ap.parse_args()
    spec = StudySpec.make("gan", {"loss": list(LOSSES[:a.settings])}, seeds=a.seeds, steps=a.steps,
                          fixed={"data": "ring8"})
    runs = spec.n_settings * spec.seeds
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores; GAN ring8, "
          f"{spec.n_settings} settings x {spec.seeds} seeds x {spec.steps} steps, evaluated at the end")
    rows = [("in-process, seeds one by one", dict(executor="inline", batched=False)),
            ("in-process, seeds batched", dict(executor="inline", batched=True)),
            ("local Ray, seeds one by one", dict(executor="ray", batched=False)),
            ("local Ray, seeds batched", dict(executor="ray", batched=True))]
    base = None
    print(f"{'how':32s} {'seconds':>8s} {'run-steps/s':>12s} {'ratio':>6s}")
    for name, kw in rows:
        s = timed(spec, **kw)
        base = base or s
        print(f"{name:32s} {s:8.1f} {runs * spec.steps / s:12.0f} {base / s:6.2f}", flush=True)


if __name__ == "__main__":
    main()
