"""Diffusion page benchmark (issue 21): speed against a naive PyTorch loop, and the quality targets.

    .venv/bin/python bench/bench_diffusion.py                  # everything (several minutes on 2 cores)
    .venv/bin/python bench/bench_diffusion.py --only speed     # or: modes, nll, reflow, nfe
    .venv/bin/python bench/bench_diffusion.py --seeds 5 --first-seed 0

speed: steps/s of ``DiffusionTrainer`` (default config: DDPM on ring8) and of a naive loop over the same
network (same sizes and initialisation), written the obvious way: a sampler call per batch, the noise level and
the noising per step, Adam's default implementation, the weight average by a Python loop over parameters and a
``.item()`` per step; measured alternately in one process.

modes: ring8 (target 8/8 modes, >= 95% high quality) and grid25 (25/25, >= 90%) with the default settings,
sampled as the page does by default (ancestral, 100 NFE); mode metrics on 2,500 samples after every 250 steps;
the steps and training seconds to the target, per seed.

nll: held-out NLL through the probability-flow ODE (2,500 points, exact divergence, 64 Heun steps) on
8gaussians after a fixed number of steps, against the entropy 2.832 and against the true density's NLL of the
same points (their sampling noise).

reflow: flow matching on 8gaussians with one reflow round (the lesson's settings), high quality at 1, 2 and 100
NFE (Euler) at the end, per seed; the same on ring8.

nfe: high quality against NFE for every sampler, for the network and for the exact denoiser (ring8, DDPM).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dgm.core.device import seeded
from dgm.core.metrics import EVAL_SAMPLES, mode_stats
from dgm.families.diffusion import sweeps
from dgm.families.diffusion.lessons import EXPERIMENT
from dgm.families.diffusion.model import Net
from dgm.families.diffusion.trainer import DiffusionConfig, DiffusionTrainer


class NaiveDiffusion:
    """The obvious PyTorch DDPM loop over the same network (same sizes, same initialisation)."""

    def __init__(self, cfg: DiffusionConfig, seed: int = 0):
        ref = DiffusionTrainer(cfg, seed=seed)  # the same data, schedule and network
        self.cfg, self.data, self.schedule = cfg, ref.data, ref.schedule
        with seeded(seed):
            self.net = Net(2, cfg.width, cfg.depth, 0, cfg.fourier, 1.0)
        self.net.load_state_dict(ref.net.state_dict())
        self.avg = copy.deepcopy(self.net)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=cfg.lr)
        self.gen = torch.Generator().manual_seed(seed)
        self.losses: list[float] = []

    def step(self, n: int) -> None:
        b, levels = self.cfg.batch, self.schedule.levels
        for _ in range(n):
            x0 = self.data.sample(b, self.gen)
            t = levels[torch.randint(0, len(levels), (b,), generator=self.gen)]
            eps = torch.randn(b, 2, generator=self.gen)
            a, s = self.schedule.alpha(t).float()[:, None], self.schedule.sigma(t).float()[:, None]
            loss = ((self.net(a * x0 + s * eps, t.float()) - eps) ** 2).sum(1).mean()
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()
            with torch.no_grad():
                for p_avg, p in zip(self.avg.parameters(), self.net.parameters()):
                    p_avg.mul_(self.cfg.ema).add_(p, alpha=1 - self.cfg.ema)
            self.losses.append(loss.item())


def rate(fn, n: int) -> float:
    t0 = time.perf_counter()
    fn(n)
    return n / (time.perf_counter() - t0)


def bench_speed(rounds: int = 5, n: int = 300) -> None:
    cfg = DiffusionConfig()
    ours = DiffusionTrainer(cfg, seed=0)
    ours.eval_every = 0
    ours_eval = DiffusionTrainer(cfg, seed=0)  # with its evaluation every eval_every steps, as the page and CLI run
    naive = NaiveDiffusion(cfg, seed=0)
    for f in (ours.step, naive.step):
        f(30)  # warm up
    r_ours, r_naive, r_eval = [], [], []
    for _ in range(rounds):  # alternate, so that the machine's load hits both alike
        r_naive.append(rate(naive.step, n))
        r_ours.append(rate(ours.step, n))
    r_eval.append(rate(ours_eval.step, 2000))
    med = statistics.median
    print(f"speed (default config: {cfg.model} on {cfg.data}, batch {cfg.batch}, MLP {cfg.depth}x{cfg.width}, "
          f"{torch.get_num_threads()} thread), median of {rounds} alternating rounds of {n} steps:")
    print(f"  naive PyTorch loop             {med(r_naive):7.0f} steps/s")
    print(f"  DiffusionTrainer               {med(r_ours):7.0f} steps/s   ({med(r_ours) / med(r_naive):.2f}x the naive loop)")
    print(f"  DiffusionTrainer + evaluation  {r_eval[0]:7.0f} steps/s   (2,000 steps, evaluate() every "
          f"{DiffusionTrainer.eval_every:,}: 2,500 samples at 100 NFE, score error, NLL)")


def steps_to_target(overrides: dict, seed: int, modes: int, hq: float, max_steps: int, chunk: int = 250):
    t = DiffusionTrainer(DiffusionConfig(**overrides), seed=seed)
    t.eval_every = 0
    train, s = 0.0, {}
    while t.iteration < max_steps:
        t0 = time.perf_counter()
        t.step(chunk)
        train += time.perf_counter() - t0
        x, nfe, _ = t.generate(EVAL_SAMPLES)
        s = mode_stats(x, t.data.centers, t.data.std) | {"nfe": nfe}
        if s["modes"] >= modes and s["high_quality"] >= hq:
            return t.iteration, train, s
    return None, train, s


def bench_modes(seeds: range, max_steps: int) -> None:
    for data, modes, hq in (("ring8", 8, 0.95), ("grid25", 25, 0.90)):
        print(f"\n{data}: default settings (DDPM, cosine, T = 1000; ancestral sampler, 100 NFE); target {modes}/{modes} "
              f"modes and >= {hq:.0%} high quality; checked every 250 steps, at most {max_steps:,}")
        hits = []
        for seed in seeds:
            it, secs, s = steps_to_target({"data": data}, seed, modes, hq, max_steps)
            status = f"reached after {it:,} steps ({secs:.1f} s of training)" if it else \
                f"NOT reached in {max_steps:,} steps"
            print(f"  seed {seed}: {status}; modes {s['modes']}, high quality {s['high_quality']:.1%}, mode KL "
                  f"{s['mode_kl']:.4f}, {s['nfe']} NFE", flush=True)
            hits.append(it)
        ok = [h for h in hits if h]
        print(f"  {len(ok)}/{len(hits)} seeds reached the target" + (f"; steps: max {max(ok):,}" if ok else ""))


def bench_nll(seeds: range, steps: int) -> None:
    print(f"\n8gaussians: held-out NLL through the probability-flow ODE after {steps:,} steps (2,500 points, 64 Heun "
          "steps, exact divergence)")
    for model in ("flow", "ddpm"):
        for seed in seeds:
            t = DiffusionTrainer(DiffusionConfig(data="8gaussians", model=model), seed=seed)
            t.eval_every = 0
            t.step(steps)
            nll = t.nll(EVAL_SAMPLES, 64)
            true = float(-t.data.log_prob(t.heldout).mean())
            print(f"  {model:5s} seed {seed}: NLL {nll:.3f} nats; entropy {t.entropy:.3f} (gap {nll - t.entropy:+.3f}); "
                  f"the true density's NLL of these points {true:.3f} (gap {nll - true:+.3f})", flush=True)


def bench_reflow(seeds: range, steps: int) -> None:
    les = EXPERIMENT.lesson("straight paths sample in one step").values
    for data in ("8gaussians", "ring8"):
        print(f"\nreflow on {data}: flow matching, reflow at step {les['reflow_at']:,}, {steps:,} steps; high quality "
              "(Euler) at 1, 2 and 100 NFE")
        for seed in seeds:
            t = DiffusionTrainer(DiffusionConfig(**{**les, "data": data}), seed=seed)
            t.eval_every = 0
            t.step(steps)
            hq = {}
            for k in (1, 2, 100):
                x, _, _ = t.generate(EVAL_SAMPLES, nfe=k, sampler="euler")
                hq[k] = mode_stats(x, t.data.centers, t.data.std)
            print(f"  seed {seed}: " + ", ".join(f"{k} NFE {s['high_quality']:.1%} ({s['modes']} modes)"
                                                 for k, s in hq.items())
                  + f"; 1 NFE vs 100: {100 * (hq[1]['high_quality'] - hq[100]['high_quality']):+.1f} points, "
                    f"2 NFE vs 100: {100 * (hq[2]['high_quality'] - hq[100]['high_quality']):+.1f} points", flush=True)


def bench_nfe(steps: int) -> None:
    t = DiffusionTrainer(DiffusionConfig(data="ring8"), seed=0)
    t.eval_every = 0
    t.step(steps)
    res = sweeps.nfe_sweep(t)
    print(f"\nhigh quality against NFE, ring8, DDPM after {steps:,} steps (seed 0); last row: the ancestral sampler "
          "with the exact denoiser")
    print("| sampler | " + " | ".join(str(n) for n in sweeps.NFES) + " |")
    print("|---" * (len(sweeps.NFES) + 1) + "|")
    for name, rows in [*res["rows"].items(), ("ancestral, exact", res["exact"])]:
        print(f"| {name} | " + " | ".join(f"{100 * r['high_quality']:.1f}% ({r['nfe']})" for r in rows) + " |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", choices=("speed", "modes", "nll", "reflow", "nfe"), default=None)
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--max-steps", type=int, default=4000, help="modes: give a seed up after this many steps")
    p.add_argument("--nll-steps", type=int, default=4000)
    p.add_argument("--reflow-steps", type=int, default=3000)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    seeds = range(a.first_seed, a.first_seed + a.seeds)
    if a.only in (None, "speed"):
        bench_speed()
    if a.only in (None, "modes"):
        bench_modes(seeds, a.max_steps)
    if a.only in (None, "nll"):
        bench_nll(seeds, a.nll_steps)
    if a.only in (None, "reflow"):
        bench_reflow(seeds, a.reflow_steps)
    if a.only in (None, "nfe"):
        bench_nfe(2000)


if __name__ == "__main__":
    main()
