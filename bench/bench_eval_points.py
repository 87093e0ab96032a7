"""How soon the metric curves fill: evaluated points in the first seconds of a run (issue 17).

    .venv/bin/python bench/bench_eval_points.py                 # GAN, VAE and flows, 10 s each
    .venv/bin/python bench/bench_eval_points.py --seconds 5 gan

Each family's default preset trains in bursts of ``--burst`` steps (a live page trains in bursts too),
evaluation included, on one thread, for ``--seconds`` of wall time; prints the wall time at which each
evaluation landed (step and seconds) and how many points the curves hold at 10 s. The schedule is the
trainer's own (``Trainer.eval_schedule``): by steps, so the wall time depends on the machine and its load
(print ``uptime`` beside it).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from dgm.core import registry  # noqa: E402


def measure(name: str, seconds: float, burst: int) -> None:
    exp = registry.get(name)
    t = exp.make(seed=0, device="cpu")
    start = time.perf_counter()
    landed: list[tuple[int, float]] = []
    while time.perf_counter() - start < seconds:
        t.step(burst)
        landed += [(r["step"], time.perf_counter() - start) for r in t.history.evals[len(landed):]]
    elapsed = time.perf_counter() - start
    within = [s for s, w in landed if w <= 10.0]
    print(f"\n{name}: evaluated {t.eval_schedule()}; {t.iteration:,} steps in {elapsed:.1f} s "
          f"({t.iteration / elapsed:.0f} steps/s with evaluation)")
    print("  evaluations (step @ s): " + ", ".join(f"{s:,} @ {w:.1f}" for s, w in landed))
    print(f"  points on the curves within 10 s: {len(within)}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("families", nargs="*", default=["gan", "vae", "flow"])
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--burst", type=int, default=10, help="steps per call of Trainer.step")
    a = p.parse_args()
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, 1 thread; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    for name in a.families:
        measure(name, a.seconds, a.burst)


if __name__ == "__main__":
    main()
