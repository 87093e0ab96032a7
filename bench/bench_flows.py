"""Quality and speed of the normalizing-flows page (issue 5).

    .venv/bin/python bench/bench_flows.py                 # everything
    .venv/bin/python bench/bench_flows.py --only default  # one part: default | table | energies

1. default: the default preset ("RealNVP learns 8gaussians") trained until its held-out NLL is within
   0.1 nats of the true entropy of 8gaussians (~2.83 nats); prints the CPU wall time it took (target <= 60 s).
2. table: held-out NLL and time on moons, checkerboard and 2spirals, for RealNVP and the spline flow,
   after a fixed number of steps each.
3. energies: reverse-KL fits of the "planar flow on U1-U4" preset on U1..U4 through the CLI, writing PNGs
   (`python -m dgm flow ... --png bench/out/flows_U*`) to compare with Rezende & Mohamed's figure 3.

Timings are single-process wall times with one torch thread, evaluation included; the process CPU time
is printed too (on a busy machine it is the better estimate of the wall time on a quiet one).
"""

from __future__ import annotations

import argparse
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

OUT = ROOT / "bench" / "out"


def train_until(cfg, target: float | None, budget: float, seed: int = 0, chunk: int = 100):
    """Train in chunks of ``chunk`` steps (one evaluation each) until the held-out NLL <= target or the
    time budget is spent. Returns (steps, seconds, final metrics, seconds to reach the target or None)."""
    t = flows.FlowTrainer(cfg, seed=seed)
    t.eval_every = chunk
    start, cpu0 = time.perf_counter(), time.process_time()
    reached = None
    while time.perf_counter() - start < budget:
        t.step(chunk)
        if reached is None and target is not None and t.latest_eval.get("nll", 1e9) <= target:
            reached = (time.perf_counter() - start, time.process_time() - cpu0)
            break
    return t.iteration, (time.perf_counter() - start, time.process_time() - cpu0), t.final(), reached


def part_default(budget: float) -> None:
    cfg = flows.FlowConfig(**EXPERIMENT.presets["RealNVP learns 8gaussians"])
    h = flows.true_entropy(cfg.data)
    steps, secs, final, reached = train_until(cfg, h + 0.1, budget)
    print(f"\n## default preset: RealNVP learns 8gaussians ({cfg.layers} layers, hidden {cfg.hidden}, "
          f"batch {cfg.batch}, lr {cfg.lr}, half-life {cfg.halflife})")
    print(f"true entropy {h:.3f} nats; target NLL <= {h + 0.1:.3f}")
    if reached is not None:
        print(f"REACHED: held-out NLL {final['nll']:.3f} after {steps} steps in {reached[0]:.1f} s wall time "
              f"({reached[1]:.1f} s of process CPU time)")
    else:
        print(f"NOT reached within {budget:.0f} s wall: held-out NLL {final['nll']:.3f} after {steps} steps "
              f"({secs[1]:.1f} s of process CPU time)")
    print(f"KL(p||q) {final['forward_kl']:.3f}, KL(q||p) {final['reverse_kl']:.3f} (grid {flows.FlowTrainer.GRID_RES}^2)")


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
    p.add_argument("--budget", type=float, default=120.0, help="seconds allowed for the default preset")
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
        part_default(a.budget)
    if a.only in (None, "table"):
        part_table(a.table_steps, tuple(a.table_flows.split(",")))
    if a.only in (None, "energies"):
        part_energies(a.energy_steps)


if __name__ == "__main__":
    main()
