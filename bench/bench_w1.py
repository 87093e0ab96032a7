"""How long exact W1 (dgm.core.metrics.wasserstein1, POT's network simplex) takes, by set size.

    .venv/bin/python bench/bench_w1.py [--repeats 3]

For n = 250 ... 2,500 points of ring8 against n generated-like points (ring8 blurred), prints the median
seconds of one exact W1 and its ratio to n = 1,000 (metrics.W1_SAMPLES, what the live pages use). The GAN
evaluates every 1,000 steps and the flows every 100: the figures say what one evaluation adds."""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import dgm.core.data  # noqa: E402
from dgm.core.metrics import W1_SAMPLES, wasserstein1  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    p = dgm.core.data.get("ring8")
    g = torch.Generator().manual_seed(0)
    wasserstein1(torch.zeros(2, 2), torch.ones(2, 2))  # import POT outside the timing
    times, values = {}, {}
    for n in (250, 500, 1000, 2500):
        x = p.sample(n, g)
        y = p.sample(n, g) + 0.1 * torch.randn(n, 2, generator=g)
        ts = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            w = wasserstein1(x, y)
            ts.append(time.perf_counter() - t0)
        times[n], values[n] = statistics.median(ts), w
    print(f"{'n':>6}{'W1':>10}{'seconds':>10}{'vs n=' + str(W1_SAMPLES):>12}")
    for n, t in times.items():
        print(f"{n:>6}{values[n]:>10.4f}{t:>10.3f}{t / times[W1_SAMPLES]:>12.2f}")


if __name__ == "__main__":
    main()
