"""The GPU against the CPU, in one process (issue 24): the GAN's single run, K GAN seeds batched on the
GPU (K up to 1,024) against one CPU run, and every experiment's first 100 steps on each device.

    python bench/bench_gpu.py [--ks 1,16,64,256,1024] [--steps 200]

Needs a CUDA device. Run-steps/s = K x batch steps per second; evaluation is off for the GAN timings
(this measures training); the per-experiment times include what each trainer measures by default.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from dgm.core import registry
from dgm.families.gan.seeds import GANSeeds
from dgm.families.gan.config import GANConfig
from dgm.families.gan.trainer import GANTrainer


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def rate(trainer, k: int, steps: int, device: str) -> float:
    trainer.eval_every = 0
    trainer.step(10)  # warm up (first kernels, allocator)
    _sync(device)
    t0 = time.perf_counter()
    trainer.step(steps)
    _sync(device)
    return k * steps / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ks", default="1,16,64,256,1024")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--experiments", default="all", help="'all', 'none' or names separated by commas")
    a = ap.parse_args()
    assert torch.cuda.is_available(), "no CUDA device: this benchmark compares the GPU with the CPU"
    print(f"GPU {torch.cuda.get_device_name(0)}; CPU {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores; torch {torch.__version__}. GAN default preset (ring8, batch 256, G 4x64, D 3x64)")
    threads = os.cpu_count() or 1
    torch.set_num_threads(1)
    one = rate(GANTrainer(GANConfig(), seed=0, device="cpu"), 1, a.steps, "cpu")
    torch.set_num_threads(threads)
    every = rate(GANTrainer(GANConfig(), seed=0, device="cpu"), 1, a.steps, "cpu")
    gpu = rate(GANTrainer(GANConfig(), seed=0, device="cuda"), 1, a.steps, "cuda")
    print(f"\nsingle run, steps/s: CPU 1 thread {one:.0f}, CPU {threads} threads {every:.0f}, "
          f"GPU {gpu:.0f} ({gpu / one:.2f}x one CPU thread)")
    torch.set_num_threads(1)  # the CPU side of each comparison below: one thread, as in bench_seeds.py
    print(f"\nK GAN seeds batched on the GPU (against one run on one CPU thread, {one:.0f} steps/s):")
    print(f"{'K':>5} {'run-steps/s':>12} {'vs one CPU run':>15}")
    for k in (int(k) for k in a.ks.split(",")):
        r = rate(GANSeeds(GANConfig(), seeds=range(k), device="cuda"), k, a.steps, "cuda")
        print(f"{k:>5} {r:>12.0f} {r / one:>14.1f}x", flush=True)
    names = registry.names() if a.experiments == "all" else [] if a.experiments == "none" else a.experiments.split(",")
    if names:
        print("\nfirst 100 steps of each experiment (default config, seed 0), seconds; CPU on one thread:")
        print(f"{'experiment':>15} {'CPU':>7} {'GPU':>7} {'CPU/GPU':>8}")
    for name in names:
        exp, secs = registry.get(name), {}
        for device in ("cpu", "cuda"):
            t = exp.make(exp.config(), seed=0, device=device)
            _sync(device)
            t0 = time.perf_counter()
            t.step(100)
            _sync(device)
            secs[device] = time.perf_counter() - t0
        print(f"{name:>15} {secs['cpu']:>7.2f} {secs['cuda']:>7.2f} {secs['cpu'] / secs['cuda']:>7.2f}x", flush=True)


if __name__ == "__main__":
    main()
