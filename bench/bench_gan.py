"""GAN benchmark: speed against a plain PyTorch loop, and seed tables of mode coverage on ring8 and grid25.

    .venv/bin/python bench/bench_gan.py --only speed
    .venv/bin/python bench/bench_gan.py --only tables --table "ring8 default" --seeds 100-102,1000-1009
    .venv/bin/python bench/bench_gan.py --only tables --table "grid25 preset" --steps 15000 --jobs 2

Speed: training steps per second of ``GANTrainer`` (default config) and of a naive loop over the same
networks, written the obvious way (a fresh sampler call per batch, BCE on sigmoid outputs, a full
backward through D for the G step, per-step ``.item()`` logging, Adam's default implementation),
measured alternately in the same process. Also the page's rate while playing, simulated: the run
trains in a worker process as on the live page, and each frame (at most 6 a second) syncs its state,
takes a snapshot and serialises every figure to JSON (what Streamlit sends).

Quality: seed tables (``seedtable.py``): each setting of ``TABLES`` trained for a fixed number of steps
on every seed, the mode metrics (docs/ARCHITECTURE.md) on the trainer's 2,500 evaluation samples checked
every ``--every`` steps; one row per seed at the fixed step count (the seeds used for tuning marked),
the median and spread, and the step at which the median run first meets the target (ring8: 8/8 modes
and >= 90% high quality; grid25: >= 24/25 modes and >= 80%)."""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import dgm.core.data
from dgm.core import nets
from dgm.core.config import knob_map
from dgm.core.device import seeded
from dgm.families.gan.lessons import EXPERIMENT
from dgm.families.gan.config import GANConfig
from dgm.families.gan.trainer import GANTrainer
from dgm.core.metrics import mode_stats
from seedtable import TUNING_SEEDS, UNSEEN_SEEDS, Run, parse_seeds, report, run_seeds

#: the remedies' lessons: each is the collapse lesson's setting plus one remedy
REMEDIES = ("PacGAN: D judges packs", "unrolled GAN: G looks ahead", "R1 penalty: D flat on the data",
            "minibatch std: D sees the spread", "two-timescale learning rates")
#: the tables: name -> knob values (the presets' own, so the tables follow the lessons); each remedy on ring8
#: (its lesson) and on grid25 (the same knobs with data=grid25), and the collapse lesson as the contrast
TABLES = {
    "ring8 default": {},
    "grid25 preset": EXPERIMENT.presets["grid25"],
    "ring8 vanilla GAN collapses": EXPERIMENT.presets["vanilla GAN collapses"],
    **{f"ring8 {name}": EXPERIMENT.presets[name] for name in REMEDIES},
    **{f"grid25 {name}": EXPERIMENT.presets[name] | {"data": "grid25"} for name in REMEDIES},
}


class NaiveGAN:
    """The obvious PyTorch GAN loop over the same networks (same sizes, same initialisation)."""

    def __init__(self, cfg: GANConfig, seed: int = 0):
        self.cfg = cfg
        self.data = dgm.core.data.get(cfg.data)
        with seeded(seed):
            self.G = nets.mlp(cfg.z_dim, 2, cfg.g_width, cfg.g_depth, act="leaky_relu")
            self.D = nn.Sequential(nets.mlp(2, 1, cfg.d_width, cfg.d_depth, act="leaky_relu"), nn.Sigmoid())
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=cfg.lr_g, betas=(cfg.beta1, cfg.beta2))
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=cfg.lr_d, betas=(cfg.beta1, cfg.beta2))
        self.bce = nn.BCELoss()
        self.gen = torch.Generator().manual_seed(seed)
        self.losses: list[tuple[float, float]] = []

    def step(self, n: int) -> None:
        b, zd = self.cfg.batch, self.cfg.z_dim
        ones, zeros = torch.ones(b, 1), torch.zeros(b, 1)
        for _ in range(n):
            for _ in range(self.cfg.d_steps):  # k D steps per G step, as the trainer
                x = self.data.sample(b, self.gen)
                z = torch.randn(b, zd, generator=self.gen)
                fake = self.G(z)
                d_loss = self.bce(self.D(x), ones) + self.bce(self.D(fake.detach()), zeros)
                self.opt_d.zero_grad()
                d_loss.backward()
                self.opt_d.step()
            z = torch.randn(b, zd, generator=self.gen)
            g_loss = self.bce(self.D(self.G(z)), ones)
            self.opt_g.zero_grad()
            g_loss.backward()
            self.opt_g.step()
            self.losses.append((d_loss.item(), g_loss.item()))


def rate(fn, n: int) -> float:
    t0 = time.perf_counter()
    fn(n)
    return n / (time.perf_counter() - t0)


def bench_speed(rounds: int = 5, n: int = 400) -> None:
    cfg = GANConfig()
    ours = GANTrainer(cfg, seed=0, device="cpu")
    ours.eval_every = 0
    ours_eval = GANTrainer(cfg, seed=0, device="cpu")  # with its periodic evaluation, as the CLI runs
    naive = NaiveGAN(cfg, seed=0)
    for f in (ours.step, ours_eval.step, naive.step):
        f(50)  # warm up
    r_ours, r_eval, r_naive = [], [], []
    for _ in range(rounds):  # alternate, so that machine load hits all alike
        r_naive.append(rate(naive.step, n))
        r_ours.append(rate(ours.step, n))
        r_eval.append(rate(ours_eval.step, n))
    med = statistics.median
    print(f"speed (default config: batch {cfg.batch}, k = {cfg.d_steps} D steps per G step, G {cfg.g_depth}x{cfg.g_width}, "
          f"D {cfg.d_depth}x{cfg.d_width}, "
          f"{torch.get_num_threads()} threads), median of {rounds} rounds of {n} steps:")
    print(f"  naive PyTorch loop        {med(r_naive):8.0f} steps/s")
    print(f"  GANTrainer                {med(r_ours):8.0f} steps/s   ({med(r_ours) / med(r_naive):.2f}x the naive loop)")
    print(f"  GANTrainer + evaluation   {med(r_eval):8.0f} steps/s   (evaluate() every {GANTrainer.eval_every} steps)")
    # the page while playing: the run trains in a worker process (dgm.core.worker, as the live pages do);
    # each frame syncs its state, takes a snapshot and serialises the game plane, at most 6 frames/s,
    # and once a second the other figures too (the page's panels, dgm.ui.gan.GameView)
    from dgm.core import worker
    from dgm.families.gan import figures as vg
    from dgm.ui.gan import Timeline

    page, timeline = GANTrainer(cfg, seed=0, device="cpu"), Timeline()
    deadline = time.perf_counter() + 120
    while (run := worker.start("gan", page, {"mode": "both"})) is None:
        if time.perf_counter() > deadline or not worker.enabled():
            print("  page playing (simulated)  no worker process available")
            return
        time.sleep(0.05)
    frames, draw, sync, it0, t0 = 0, 0.0, 0.0, page.iteration, time.perf_counter()
    panels_at = t0
    while time.perf_counter() - t0 < 6.0:
        t1 = time.perf_counter()
        run.sync(page, {"mode": "both"})
        t2 = time.perf_counter()
        snap = vg.snapshot(page)
        timeline.add(page.iteration, snap)
        figs = vg.main_figures(snap, page.history.merged(), page.data)
        figs["game"].to_json()
        if t2 >= panels_at:
            panels_at = t2 + 1.0
            for name, fig in figs.items():
                if name != "game":
                    fig.to_json()
        t3 = time.perf_counter()
        sync, draw, frames = sync + t2 - t1, draw + t3 - t2, frames + 1
        time.sleep(max(0.0, 1 / 6 - (t3 - t1)))
    dt = time.perf_counter() - t0
    run.stop(page)
    print(f"  page playing (simulated)  {(page.iteration - it0) / dt:8.0f} steps/s   {frames / dt:.1f} frames/s "
          f"(training in a worker process; per frame {1000 * sync / frames:.1f} ms to sync, "
          f"{1000 * draw / frames:.0f} ms to draw)")


def gan_run(overrides: dict, steps: int, every: int, seed: int) -> Run:
    """One seed: train ``steps`` steps, checking the mode metrics (on the trainer's 2,500 fixed evaluation
    codes, as the page) every ``every`` steps."""
    t = GANTrainer(GANConfig(**overrides), seed=seed, device="cpu")
    t.eval_every = 0  # the checks below are all the evaluation this needs
    checks, train = {}, 0.0
    while t.iteration < steps:
        t0 = time.perf_counter()
        t.step(min(every, steps - t.iteration))
        train += time.perf_counter() - t0
        checks[t.iteration] = mode_stats(t.generate(), t.data.centers, t.data.std)
    return Run(seed, checks, train)


TARGETS = {"ring8": (8, 0.90), "grid25": (24, 0.80)}


def table(title: str, overrides: dict, seeds: list[int], steps: int, every: int, jobs: int, trace: int = 0) -> dict:
    data = overrides.get("data", "ring8")
    modes, hq = TARGETS[data]
    runs = run_seeds(functools.partial(gan_run, overrides, steps, every), seeds, jobs)
    cfg = {k: v for k, v in overrides.items()}
    return report(f"{title}: {cfg}", runs, steps, {"modes": "d", "high_quality": ".1%", "mode_kl": ".3f"},
                  lambda m: m["modes"] >= modes and m["high_quality"] >= hq,
                  f">= {modes} modes and >= {hq:.0%} high quality (mode metrics on 2,500 samples, checked every "
                  f"{every} steps)", trace=trace)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", choices=("speed", "tables"), default=None)
    p.add_argument("--table", nargs="*", default=None, metavar="NAME",
                   help=f"which tables (default: all): {', '.join(TABLES)}")
    p.add_argument("--seeds", default=None, help="seeds, e.g. 1000-1009,100 (default: the tuning and unseen seeds)")
    p.add_argument("--steps", type=int, default=15000, help="the fixed step count of the tables")
    p.add_argument("--every", type=int, default=500, help="check the mode metrics every this many steps")
    p.add_argument("--trace", type=int, default=0, help="also print each seed's metrics every this many steps")
    p.add_argument("--jobs", type=int, default=2, help="processes running seeds in parallel (one thread each)")
    p.add_argument("--set", nargs="*", default=[], metavar="KNOB=VALUE",
                   help="override knobs of every benchmarked config, e.g. --set ema=0.999 lr_g=3e-3")
    a = p.parse_args()
    knobs = knob_map(GANConfig)
    extra = {k: knobs[k].parse(v) for k, v in (kv.split("=", 1) for kv in a.set)}
    torch.set_num_threads(1)
    if a.only in (None, "speed"):
        bench_speed()
    if a.only in (None, "tables"):
        seeds = parse_seeds(a.seeds) if a.seeds else [*TUNING_SEEDS, *UNSEEN_SEEDS]
        for name in a.table or TABLES:
            table(name, TABLES[name] | extra, seeds, a.steps, a.every, a.jobs, a.trace)


if __name__ == "__main__":
    main()
