"""What setting a model up on your own data costs, by upload size: seconds to build each 2D trainer on an
upload of N points, and the same as a ratio to the cost at MODEL_POINTS points (issue 16: it used to grow
with N, 32 s for the GAN at 20,000 points). A second build of the same run (a reset, a new seed, a worker
process) reuses the grid evaluations the data set remembers.

    .venv/bin/python bench/bench_userdata.py [N ...]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

import dgm  # noqa: E402, F401  (pins the kernels first)
from dgm.core import registry, userdata  # noqa: E402

FAMILIES = (("gan", "data"), ("flow", "data"), ("demo", "data"), ("vae", "data"), ("divergence", "target"))


def build_seconds(n: int, seed: int = 0) -> dict[str, float]:
    pts = np.random.default_rng(seed).normal(size=(n, 2)) * [2.0, 0.7]
    t0 = time.perf_counter()
    dist, _ = userdata.make_distribution(pts)
    out = {"register": time.perf_counter() - t0}
    for name, knob in FAMILIES:
        exp = registry.get(name)
        cfg = exp.config(**{knob: dist.name})
        t0 = time.perf_counter()
        exp.make(cfg, seed=0, device="cpu")
        out[name] = time.perf_counter() - t0
        t0 = time.perf_counter()
        exp.make(cfg, seed=1, device="cpu")
        out[name + " again"] = time.perf_counter() - t0
    return out


def main() -> None:
    sizes = [int(a) for a in sys.argv[1:]] or [500, userdata.MODEL_POINTS, 20_000, 100_000]
    ref_n = userdata.MODEL_POINTS
    rows = {n: build_seconds(n, seed=i) for i, n in enumerate(sorted(set(sizes) | {ref_n}))}
    keys = list(rows[ref_n])
    print(f"build seconds by upload size (models use at most {ref_n:,} points); ratio to {ref_n:,} points")
    print(f"{'':>16}" + "".join(f"{n:>18,}" for n in rows))
    for k in keys:
        cells = "".join(f"{rows[n][k]:9.3f} ({rows[n][k] / max(rows[ref_n][k], 1e-9):4.2f}x)" for n in rows)
        print(f"{k:>16}{cells}")


if __name__ == "__main__":
    main()
