"""Does a replay link stop short on a busy machine? A replay's time estimate against its real time.

    .venv/bin/python bench/replay_estimate.py                      # diffusion, 500 steps, 3 busy processes
    .venv/bin/python bench/replay_estimate.py --busy 0 --steps 1500 gan

Runs ``scheduling.replay`` (what a `?seed=S&steps=N` link runs in the server) beside ``--busy`` processes that
spin on the CPU (a classroom server with other sessions; a CI runner with other tests), then trains the same
run in one go for its real time. Prints whether the replay ran through or was cut, at which step, the time
its notice named, and the real time. With ``--limit`` below the real time a cut is right, and its estimate
can be read against the real time. The figures are of this machine and its load: compare the two columns of
one run, not runs on different machines.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dgm.core import registry  # noqa: E402
from dgm.ui import scheduling  # noqa: E402


def _spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("experiment", nargs="?", default="diffusion")
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--busy", type=int, default=3, help="processes spinning beside the replay")
    ap.add_argument("--limit", type=float, default=scheduling.REPLAY_SECONDS, help="the replay's time limit, s")
    args = ap.parse_args()
    scheduling.REPLAY_SECONDS = args.limit
    exp = registry.get(args.experiment)
    busy = [mp.Process(target=_spin, args=(3600,), daemon=True) for _ in range(args.busy)]
    for p in busy:
        p.start()
    try:
        t = exp.make(exp.config(), seed=args.seed, device="cpu")
        t0 = time.perf_counter()
        try:
            scheduling.replay(t, args.steps)
            said, outcome = "", "ran through"
        except scheduling.ReplayCut as e:
            m = re.search(r"take about ([\d.,]+ \w+)", str(e))
            said, outcome = (m.group(1) if m else "?"), f"cut at step {t.iteration:,}"
        took = time.perf_counter() - t0
        t = exp.make(exp.config(), seed=args.seed, device="cpu")
        t1 = time.perf_counter()
        t.step(args.steps)
        t.final()
        real = time.perf_counter() - t1
    finally:
        for p in busy:
            p.terminate()
    print(f"{args.experiment}, {args.steps:,} steps, seed {args.seed}, {args.busy} busy processes, limit "
          f"{args.limit:g} s: replay {outcome} after {took:.1f} s" + (f" (its notice: about {said})" if said else "")
          + f"; the same steps in one go: {real:.1f} s")


if __name__ == "__main__":
    main()
