"""The arena's targets (issue 23): every family on ring8 under a budget per family, and on the digits.

    .venv/bin/python bench/bench_arena.py [--budget 60s] [--seeds 1] [--rounds 6] [--digits-budget 2000]
                                          [--skip-ring8] [--skip-digits]

ring8: the measured taxonomy table (python -m dgm arena prints the same as JSON), one line per family.
Digits: Digits-FID (the Fréchet distance of the digits classifier's penultimate features, against the test
split) of the train split, of every model after its budget (2,500 samples) and of uniform noise (2,500
images), and each family's sampling speed (samples per second, and its ratio to the slowest family).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from dgm.arena.run import ArenaRun, Budget  # noqa: E402
from dgm.core import quality  # noqa: E402
from dgm.core.digits import digits  # noqa: E402

COLUMNS = ("likelihood", "nll", "precision", "recall", "density", "coverage", "mmd", "w1", "modes",
           "digits_fid", "digits_is", "confident", "samples_per_s", "latent", "steps", "train_s",
           "seconds_to_quality", "reached_quality")


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "—" if v is None else str(v)


def show(table) -> None:
    for r in table:
        if "skipped" in r:
            print(f"  {r['family']:<15} skipped: {r['skipped']}")
            continue
        cells = [f"{c}={_fmt(r[c])}" + (f"±{r[c + '_sd']:.2g}" if f"{c}_sd" in r else "") for c in COLUMNS if c in r]
        print(f"  {r['family']:<15} " + ", ".join(cells) + (f", FAILED {r['failed']}" if "failed" in r else ""))


def run(data: str, budget: Budget, seeds: int, rounds: int):
    t0 = time.perf_counter()
    arena = ArenaRun(data, budget, seeds=seeds, rounds=rounds)
    while arena.round():
        print(f"  ... measurement {arena.done_rounds} ({time.perf_counter() - t0:.0f}s)", flush=True)
    print(f"  ({arena.done_rounds} measurements, {time.perf_counter() - t0:.0f}s in all)")
    return arena.table()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--budget", default="60s", help="ring8: per family, steps (3000) or seconds (60s)")
    ap.add_argument("--digits-budget", default="2000", help="digits: per family, steps or seconds")
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--skip-ring8", action="store_true")
    ap.add_argument("--skip-digits", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if not args.skip_ring8:
        b = Budget.parse(args.budget)
        print(f"ring8, {b} per family, {args.seeds} seed(s):")
        show(run("ring8", b, args.seeds, args.rounds))
    if not args.skip_digits:
        b = Budget.parse(args.digits_budget)
        d = digits()
        print(f"digits, {b} per family, {args.seeds} seed(s):")
        table = run("digits", b, args.seeds, args.rounds)
        show(table)
        real = quality.digits_scores(d.train.x01)["digits_fid"]
        noise = quality.digits_scores(torch.rand(2500, 64, generator=torch.Generator().manual_seed(0)))["digits_fid"]
        models = {r["family"]: r["digits_fid"] for r in table if "digits_fid" in r}
        print(f"Digits-FID against the test split (classifier test accuracy {quality.digits_accuracy():.3f}):")
        print(f"  train split (1,197 real digits): {real:.3f}")
        for fam, v in models.items():
            print(f"  {fam:<15} {v:.3f}")
        print(f"  uniform noise (2,500):           {noise:.3f}")
        print(f"  real below every model: {all(real < v for v in models.values())}; "
              f"noise above every model: {all(noise > v for v in models.values())}")
        speeds = {r["family"]: r["samples_per_s"] for r in table if "samples_per_s" in r}
        slowest = min(speeds, key=speeds.get)
        print("sampling speed on the digits (2,500 samples, one measurement):")
        for fam, v in sorted(speeds.items(), key=lambda kv: kv[1]):
            print(f"  {fam:<15} {v:10.0f} samples/s  ({v / speeds[slowest]:.1f}x the slowest)")
        print(f"  slowest per sample: {slowest}")


if __name__ == "__main__":
    main()
