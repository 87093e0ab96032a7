"""Many seeds at once against one run at a time: training throughput in run-steps per second.

    python bench/bench_seeds.py [--family gan] [--ks 1,4,16,64] [--steps 200] [--threads 1,2]

For each thread count: the family's single-run trainer at the page's defaults and batches of K seeds (the
experiment's batched trainer: GANSeeds, FlowSeeds, VAESeeds, DiffusionSeeds), all timed in this one
process, so the ratios hold whatever the machine; and K runs split across two processes of one thread each
(every core in use without threads). Evaluation is off: this measures training. Run-steps/s = K x batch
steps per second. ``--family`` takes gan, flow, vae, diffusion (or several, comma-separated).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from dgm.core import registry

PRESETS = {"gan": "ring8, batch 256, G 4x64, D 3x64, 2 D steps per G step",
           "flow": "RealNVP, 8 coupling blocks of width 64 with ActNorm, batch 1024",
           "vae": "digits, 2 latents, 2x256 encoder and decoder, batch 64",
           "diffusion": "DDPM on ring8, a 3x128 network, batch 512, weight average 0.999"}


def rate(trainer, k: int, steps: int) -> float:
    trainer.eval_every = 0
    trainer.step(10)  # warm up (first pools, allocator)
    t0 = time.perf_counter()
    trainer.step(steps)
    return k * steps / (time.perf_counter() - t0)


def in_two_processes(family: str, k: int, steps: int) -> float:
    """K runs as two batches of K/2 in two one-thread processes at once: run-steps/s of both together."""
    code = ("import sys, time, torch; torch.set_num_threads(1);"
            "from dgm.core import registry; e = registry.get(sys.argv[4]);"
            "k, s, first = map(int, sys.argv[1:4]); b = e.seeds(e.config(), seeds=range(first, first + k), device='cpu');"
            "b.eval_every = 0; b.step(10); print('go', flush=True); sys.stdin.readline(); t0 = time.perf_counter(); b.step(s);"
            "print(time.perf_counter() - t0, flush=True)")
    half = k // 2
    procs = [subprocess.Popen([sys.executable, "-c", code, str(half), str(steps), str(i * half), family], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True) for i in range(2)]
    for p in procs:  # both built and warm: start them together
        assert p.stdout.readline().strip() == "go"
    for p in procs:
        p.stdin.write("\n")
        p.stdin.flush()
    secs = [float(p.stdout.readline()) for p in procs]
    for p in procs:
        p.wait()
    return 2 * half * steps / max(secs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--family", default="gan", help="gan, flow, vae, diffusion, or several (comma-separated)")
    ap.add_argument("--ks", default="1,4,16,64")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--threads", default="1,2")
    a = ap.parse_args()
    ks = [int(k) for k in a.ks.split(",")]
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; torch {torch.__version__}; "
          f"{a.steps} steps per timing (fewer for large K)")
    for family in a.family.split(","):
        exp = registry.get(family)
        print(f"\n== {family}: the page's defaults ({PRESETS.get(family, '')})")
        for threads in (int(t) for t in a.threads.split(",")):
            torch.set_num_threads(threads)
            one = rate(exp.make(device="cpu"), 1, a.steps)
            print(f"\n{threads} thread(s): single-run trainer {one:.1f} steps/s")
            print(f"{'K':>4} {'run-steps/s':>12} {'vs one run':>11}")
            for k in ks:
                r = rate(exp.seeds(exp.config(), seeds=range(k), device="cpu"), k, max(10, a.steps // max(1, k // 8)))
                print(f"{k:>4} {r:>12.1f} {r / one:>10.2f}x")
        torch.set_num_threads(1)
        one = rate(exp.make(device="cpu"), 1, a.steps)
        print("\nK runs as two one-thread processes of K/2 each, at once (against one run on one thread):")
        for k in (k for k in ks if k >= 2):
            r = in_two_processes(family, k, max(10, a.steps // max(1, k // 8)))
            print(f"{k:>4} {r:>12.1f} {r / one:>10.2f}x")


if __name__ == "__main__":
    main()
