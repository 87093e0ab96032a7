"""Benchmark of the Divergences page's trainer (CPU).

    .venv/bin/python bench/bench_divergences.py [--target bimodal] [--res 128] [--threads N]

For each objective alone (a Gaussian q on a 2D target) and for the all-objectives trainer, prints
the steps until the objective has converged, the seconds that took, and steps/s. Converged: the
relative change of the objective over the last 10 steps is below 1e-4 (for every grid objective, in
the all-objectives run). MMD is fitted from samples, so it keeps moving with the sampling noise: for
it the criterion is applied to the exact grid MMD^2 of its q every 10 steps (outside the timing) and
is usually not met; the all-objectives run checks the six grid objectives and times all seven."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from dgm.families.divergences.trainer import OBJECTIVES, DivergenceConfig, DivergenceTrainer  # noqa: E402

TOL, WINDOW, MAX_STEPS = 1e-4, 10, 1500


def converge(cfg: DivergenceConfig, objectives, seed: int = 0, check=None) -> tuple[int | None, float, float]:
    """(steps to converge or None, seconds for them, steps/s over the whole run)."""
    t = DivergenceTrainer(cfg, seed=seed, device="cpu", objectives=objectives)
    check = objectives if check is None else check
    hist: dict[str, list[float]] = {o: [] for o in objectives}
    done_at, spent, steps = None, 0.0, 0
    grid_mmd = "mmd" in objectives
    while steps < MAX_STEPS:
        t0 = time.perf_counter()
        t.step(WINDOW)
        spent += time.perf_counter() - t0
        steps += WINDOW
        rows = t.history.rows[-WINDOW - 1:]
        ok = True
        for o in check:
            if o == "mmd" and grid_mmd:
                v = t.table()["mmd"]["mmd"]  # exact, outside the timed steps
                hist[o].append(v)
                series = hist[o]
                ok &= len(series) >= 2 and abs(series[-1] - series[-2]) <= TOL * abs(series[-1])
            else:
                a, b = rows[0][f"fit_{o}"], rows[-1][f"fit_{o}"]
                ok &= len(rows) == WINDOW + 1 and abs(b - a) <= TOL * abs(b)
        if ok:
            done_at = steps
            break
    return done_at, spent, steps / spent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--target", default="bimodal")
    ap.add_argument("--family", default="gaussian")
    ap.add_argument("--res", type=int, default=DivergenceConfig.res)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = DivergenceConfig(target=args.target, family=args.family, res=args.res, starts=1)
    print(f"target={args.target} family={args.family} grid {DivergenceTrainer(cfg, device='cpu').grid.describe()}"
          f" threads={torch.get_num_threads()}")
    print("one objective, one start (a Gaussian q):")
    print(f"{'objective':<16}{'steps to converge':>18}{'seconds':>10}{'steps/s':>10}")
    for o in OBJECTIVES:
        n, s, rate = converge(cfg, (o,))
        print(f"{o:<16}{n if n is not None else '>' + str(MAX_STEPS):>18}{s:>10.3f}{rate:>10.0f}")
    grid_objectives = tuple(o for o in OBJECTIVES if o != "mmd")
    for starts in (1, DivergenceConfig.starts):
        print(f"all objectives at once, {starts} start(s) each ({len(OBJECTIVES) * starts} q's in one batch):")
        _all(dataclasses.replace(cfg, starts=starts), grid_objectives)


def _all(cfg, grid_objectives) -> None:
    n, s, rate = converge(cfg, OBJECTIVES, check=grid_objectives)
    print(f"{'all 7 (batched)':<16}{n if n is not None else '>' + str(MAX_STEPS):>18}{s:>10.3f}{rate:>10.0f}")
    n, s, rate = converge(cfg, grid_objectives)
    print(f"{'6 grid (batched)':<16}{n if n is not None else '>' + str(MAX_STEPS):>18}{s:>10.3f}{rate:>10.0f}")


if __name__ == "__main__":
    main()
