"""Quality and speed of the normalizing-flows page (issue 5).

    .venv/bin/python bench/bench_flows.py                 # everything
    .venv/bin/python bench/bench_flows.py --only default  # one part: default | table | energies

1. default: a seed table of the default preset ("RealNVP learns 8gaussians") at its step budget
   (``STEP_BUDGET``): the held-out NLL of every seed against the target, within 0.1 nats of the true
   entropy of 8gaussians (~2.83 nats), on the seeds used for tuning (marked) and 10 never used for it;
   the median and spread, and the step at which the median run first passes (checked every 250 steps).
2. table: held-out NLL and time on moons, checkerboard and 2spirals, for RealNVP and the spline flow,
   after a fixed number of steps each.
3. energies: reverse-KL fits of the "planar flow on U1-U4" preset on U1..U4 through the CLI, writing PNGs
   (`python -m dgm flow ... --png bench/out/flows_U*`) to compare with Rezende & Mohamed's figure 3.

Timings are single-process wall times with one torch thread, evaluation included; the process CPU time
is printed too (on a busy machine it is the better estimate of the wall time on a quiet one).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch

from dgm.families.flows import trainer as flows
from dgm.families.flows.lessons import EXPERIMENT
from seedtable import TUNING_SEEDS, UNSEEN_SEEDS, Run, parse_seeds, report, run_seeds

OUT = ROOT / "bench" / "out"
STEP_BUDGET = 4000  # the step count of the default preset's seed table


def flow_run(cfg, steps: int, every: int, seed: int) -> Run:
    """One seed: train ``steps`` steps, checking the held-out NLL (the trainer's 2,500 held-out points, as the
    page) every ``every`` steps; the final metrics (KL on the grid too) at the end."""
    t = flows.FlowTrainer(cfg, seed=seed, device="cpu")
    t.eval_every = 0
    checks, train = {}, 0.0
    while t.iteration < steps:
        t0 = time.perf_counter()
        t.step(min(every, steps - t.iteration))
        train += time.perf_counter() - t0
        with torch.no_grad():
            checks[t.iteration] = {"nll": float(-t.model.log_prob(t.heldout).mean())}
    final = t.final()
    checks[t.iteration].update(forward_kl=final["forward_kl"], reverse_kl=final["reverse_kl"])
    return Run(seed, checks, train)


def part_default(steps: int, seeds: list[int], jobs: int) -> None:
    cfg = flows.FlowConfig(**EXPERIMENT.presets["RealNVP learns 8gaussians"])
    h = flows.true_entropy(cfg.data)
    runs = run_seeds(functools.partial(flow_run, cfg, steps, 250), seeds, jobs)
    print(f"\n## default preset: RealNVP learns 8gaussians ({cfg.layers} layers, hidden {cfg.hidden}, batch {cfg.batch}, "
          f"lr {cfg.lr}, half-life {cfg.halflife}); true entropy {h:.3f} nats")
    report("held-out NLL at the step budget", runs, steps,
           {"nll": ".3f", "forward_kl": ".3f", "reverse_kl": ".3f"}, lambda m: m["nll"] <= h + 0.1,
           f"held-out NLL <= entropy + 0.1 = {h + 0.1:.3f} nats (2,500 held-out points, checked every 250 steps; "
           f"KL(p||q), KL(q||p) on a {flows.FlowTrainer.GRID_RES}^2 grid at the end)")


def part_table(steps: int, which: tuple[str, ...] = ("realnvp", "spline")) -> None:
    print(f"\n## held-out NLL (nats) after {steps} steps of the default preset's settings (seed 0)")
    print("| data | flow | layers | steps | wall s | CPU s | held-out NLL | true entropy | gap |")
    print("|---|---|---|---|---|---|---|---|---|")
    for data in ("moons", "checkerboard", "2spirals"):
        for flow, extra in (("realnvp", {}), ("spline", {"layers": 6})):
            if flow not in which:
                continue
            cfg = flows.FlowConfig(**{**EXPERIMENT.presets["RealNVP learns 8gaussians"], "data": data, "flow": flow,
                                      **extra})
            h = flows.true_entropy(data)
            t = flows.FlowTrainer(cfg, seed=0)
            w0, c0 = time.perf_counter(), time.process_time()
            t.step(steps)
            final = t.final()
            wall, cpu = time.perf_counter() - w0, time.process_time() - c0
            gap = f"{final['nll'] - h:.3f}" if h is not None else "n/a"
            hs = f"{h:.3f}" if h is not None else "unknown"
            print(f"| {data} | {flow} | {cfg.layers} | {steps} | {wall:.1f} | {cpu:.1f} | {final['nll']:.3f} | "
                  f"{hs} | {gap} |", flush=True)


def part_energies(steps: int) -> None:
    print(f"\n## reverse KL, preset 'planar flow on U1-U4' ({steps} steps each), PNGs in {OUT}")
    print("| target | seconds | KL(q||p) | KL(p||q) | loss | png |")
    print("|---|---|---|---|---|---|")
    for u in ("U1", "U2", "U3", "U4"):
        png = OUT / f"flows_{u}"
        cmd = [sys.executable, "-m", "dgm", "flow", "--preset", "planar flow on U1-U4", "--data", u,
               "--steps", str(steps), "--seed", "0", "--png", str(png)]
        res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True)
        r = json.loads(res.stdout)
        f = r["final"]
        print(f"| {u} | {r['seconds']:.1f} | {f['reverse_kl']:.3f} | {f['forward_kl']:.3f} | {f['loss']:.3f} | "
              f"{png.relative_to(ROOT)}/flow_density.png |", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", choices=("default", "table", "energies"), default=None)
    p.add_argument("--steps", type=int, default=STEP_BUDGET, help="the default preset's step budget")
    p.add_argument("--seeds", default=None, help="seeds, e.g. 1000-1009,100 (default: the tuning and unseen seeds)")
    p.add_argument("--jobs", type=int, default=2, help="processes running seeds in parallel (one thread each)")
    p.add_argument("--table-steps", type=int, default=2000, help="training steps per row of the table")
    p.add_argument("--table-flows", default="realnvp,spline", help="flows in the table (comma-separated)")
    p.add_argument("--energy-steps", type=int, default=3000)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(a.threads))
    OUT.mkdir(parents=True, exist_ok=True)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    if a.only in (None, "default"):
        part_default(a.steps, parse_seeds(a.seeds) if a.seeds else [*TUNING_SEEDS, *UNSEEN_SEEDS], a.jobs)
    if a.only in (None, "table"):
        part_table(a.table_steps, tuple(a.table_flows.split(",")))
    if a.only in (None, "energies"):
        part_energies(a.energy_steps)


if __name__ == "__main__":
    main()
