"""Targets of the latents page (issue 22).

    .venv/bin/python bench/bench_latents.py                  # everything
    .venv/bin/python bench/bench_latents.py --only density   # one part: density | gumbel | vqvae

1. density: the density network on the digits (the page's defaults: z = 2, K = 100 in training,
   128-unit MLPs, Adam 1e-3, batch 64), trained a fixed number of steps over 5 seeds; on the 300 test
   digits, the Monte Carlo estimate log (1/K) Σ p(x|z_k), z_k ~ p(z), for K = 1, 10, 100, 1000 (mean,
   and its spread: the per-example sd over 5 independent estimates) against IWAE(k = 100) of an
   encoder fitted to the same decoder, nats per image (categorical over 17 grey levels). The K figure
   of seed 0 is written to bench/out/latents_k.png.
2. gumbel: the Gumbel-softmax VAE on the digits (8 variables of 10 categories, τ = 1, soft samples),
   trained a fixed number of steps over 5 seeds; then, for its first variable at 32 test digits, 400
   draws of each gradient estimator of ∇_θ E_q log p(x|y) (score function with the baseline f(softmax θ),
   Gumbel-softmax, straight-through) at τ = 0.1, 0.5, 1: bias² against the exact gradient by
   enumeration, variance, and the noise floor of the measured bias² (variance / 400); mean over seeds.
   The figure of seed 0 is written to bench/out/latents_estimators.png.
3. vqvae: the VQ-VAE on the digits (64 codes of dimension 8, 4 codes per image, β = 0.25) for a wall-time
   budget of 60 s (``--seconds``), each codebook update (loss, EMA) without and with dead-code restarts,
   5 seeds: on the 300 test digits the share of the 64 codes in use, the perplexity of their frequencies,
   the reconstruction log p(x|z_q) in nats per image and the squared error of the decoded means
   (intensities in [0, 1]); and the steps the budget allowed on this machine.

Timings are single-process CPU wall times; the machine's load changes them.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dgm.core import viz  # noqa: E402
from dgm.families.latents import figures as lfig  # noqa: E402
from dgm.families.latents.lessons import EXPERIMENT  # noqa: E402
from dgm.families.latents.trainer import MC_KS, LatentsConfig  # noqa: E402
from dgm.families.latents.trainer import ESTIMATOR_SAMPLES  # noqa: E402

OUT = ROOT / "bench" / "out"
SEEDS = (0, 1, 2, 3, 4)


def _ms(values, fmt: str = ".4g") -> str:
    return f"{statistics.mean(values):{fmt}} ± {statistics.stdev(values):.2g}"


def density(steps: int) -> None:
    for fit in ("prior", "encoder"):
        rows, start = [], time.perf_counter()
        for seed in SEEDS:
            t = EXPERIMENT.make(LatentsConfig(fit=fit), seed=seed, device="cpu")
            t.step(steps)
            rows.append(t.final())
            if seed == 0 and fit == "prior":
                OUT.mkdir(parents=True, exist_ok=True)
                viz.write_png(lfig.figures(t)["k"], str(OUT / "latents_k.png"))
        print(f"density network on the digits, decoder trained by {fit!r}: {steps} steps, seeds {SEEDS} "
              f"({time.perf_counter() - start:.0f} s); test nats per image, mean ± sd over seeds")
        for k in MC_KS:
            print(f"  MC from the prior, K = {k:5d}: {_ms([r[f'mc_{k}'] for r in rows])}   "
                  f"spread (per-example sd over 5 estimates) {_ms([r[f'sd_{k}'] for r in rows])}")
        print(f"  IWAE(k = 100), encoder:    {_ms([r['iwae'] for r in rows])}")
        print(f"  gap IWAE - MC(K = 1000):   {_ms([r['iwae'] - r['mc_1000'] for r in rows])}")


def gumbel(steps: int) -> None:
    tables, start, elbos = [], time.perf_counter(), []
    for seed in SEEDS:
        t = EXPERIMENT.make(LatentsConfig(model="gumbel"), seed=seed, device="cpu")
        t.step(steps)
        elbos.append(t.final()["elbo"])
        tables.append(t.estimator_table())
        if seed == 0:
            OUT.mkdir(parents=True, exist_ok=True)
            viz.write_png(lfig.estimator_figure(tables[0]), str(OUT / "latents_estimators.png"))
    print(f"Gumbel-softmax VAE on the digits: {steps} steps, seeds {SEEDS} ({time.perf_counter() - start:.0f} s); "
          f"test ELBO (one-hot samples) {_ms(elbos)} nats per image")
    print(f"  gradient of E_q log p(x|y) w.r.t. the first variable's logits, {ESTIMATOR_SAMPLES} draws; per image, "
          "mean over seeds (± sd)")
    print(f"  {'estimator':28s} {'tau':>5s} {'bias²':>20s} {'variance':>20s} {'noise floor':>12s}")
    for i, r in enumerate(tables[0]):
        col = lambda key: [tab[i][key] for tab in tables]  # noqa: E731
        tau = "any" if r["tau"] is None else f"{r['tau']:g}"
        print(f"  {r['estimator']:28s} {tau:>5s} {_ms(col('bias2')):>20s} {_ms(col('variance')):>20s} "
              f"{statistics.mean(col('floor')):12.5f}")


def vqvae(seconds: float) -> None:
    for update in ("loss", "ema"):
        for restarts in (False, True):
            rows, steps = [], []
            for seed in SEEDS:
                t = EXPERIMENT.make(LatentsConfig(model="vqvae", update=update, restarts=restarts), seed=seed, device="cpu")
                steps.append(t.run(seconds=seconds, burst=None))
                rows.append(t.final())
            col = lambda key: [r[key] for r in rows]  # noqa: E731
            print(f"VQ-VAE, codebook update {update!r}, restarts {restarts}: {seconds:g} s each, steps "
                  f"{min(steps)}..{max(steps)}, seeds {SEEDS}; test digits, mean ± sd over seeds")
            print(f"  codes in use {_ms([100 * u for u in col('used')], '.1f')} % of 64   perplexity "
                  f"{_ms(col('perplexity'), '.1f')}   reconstruction {_ms(col('recon'), '.2f')} nats per image   "
                  f"squared error {_ms(col('mse'), '.4f')}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", choices=("density", "gumbel", "vqvae"), default=None)
    ap.add_argument("--seconds", type=float, default=60.0, help="the VQ-VAE's wall-time budget per run")
    ap.add_argument("--steps", type=int, default=1000)
    a = ap.parse_args()
    if a.only in (None, "density"):
        density(a.steps)
    if a.only in (None, "gumbel"):
        gumbel(a.steps)
    if a.only in (None, "vqvae"):
        vqvae(a.seconds)


if __name__ == "__main__":
    main()
