"""The CUDA path (issue 24), run on a machine with a GPU: every experiment trains on ``cuda`` and agrees
with the CPU. Skipped where torch sees no CUDA device (CI has none); on a GPU machine:

    python -m pytest -m cuda tests/test_cuda.py

A GPU run is not the CPU run to the last bit (other kernels, other summation orders; 100 steps of a GAN
amplify any difference), so "agrees" is statistical: over three seeds, every number in the final
metrics has a CUDA mean within three standard errors of the CPU mean (plus 2 % of its size, for numbers
that hardly vary between seeds)."""

from __future__ import annotations

import math
import statistics

import pytest
import torch

from dgm.core import registry
from conftest import flat_numbers

needs_cuda = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]


def on_cuda(test):
    for mark in needs_cuda:
        test = mark(test)
    return test

SEEDS, STEPS = (0, 1, 2), 100
#: every experiment but the arena, which is the families' runs again (it gets its own test below)
COMPARED = [n for n in registry.names() if n != "arena"]


def finals(name: str, device: str, seed: int) -> dict[str, float]:
    """Every number of the run's final metrics after STEPS steps, but measured times and rates."""
    exp = registry.get(name)
    t = exp.make(exp.config(), seed=seed, device=device)
    assert t.device.type == device
    t.step(STEPS)
    return {k: v for k, v in flat_numbers(t.final()).items() if "seconds" not in k and "per_s" not in k}


def disagreements(cpu: list[dict], gpu: list[dict]) -> list[str]:
    """The numbers whose CUDA mean lies outside the CPU mean's band (see the module's docstring)."""
    out = []
    for key in cpu[0]:
        a, b = [r[key] for r in cpu], [r.get(key, math.nan) for r in gpu]
        if not all(map(math.isfinite, a)):
            continue  # undefined on the CPU too (a metric not measured yet)
        if not all(map(math.isfinite, b)):
            out.append(f"{key}: CPU {a}, CUDA {b}")
            continue
        ma, mb = statistics.fmean(a), statistics.fmean(b)
        se = math.sqrt((statistics.pvariance(a) + statistics.pvariance(b)) / (len(a) - 1))
        if abs(ma - mb) > 3 * se + 0.02 * max(abs(ma), abs(mb)) + 1e-6:
            out.append(f"{key}: CPU {ma:.4g} ± {se:.2g} (se), CUDA {mb:.4g}")
    return out


@on_cuda
@pytest.mark.parametrize("name", COMPARED)
def test_every_experiment_trains_on_cuda_and_agrees_with_the_cpu(name):
    # a batch of K runs (the lottery) trains seeds s..s+K-1: its samples are batches that share no run (three
    # overlapping batches agreed with each other too well, and with the GPU's batches not at all: H200, 2026-11-28)
    k = getattr(registry.get(name).config(), "runs", 1)
    seeds = tuple(s * k for s in SEEDS)
    cpu = [finals(name, "cpu", s) for s in seeds]
    gpu = [finals(name, "cuda", s) for s in seeds]
    assert set(gpu[0]) == set(cpu[0])
    bad = disagreements(cpu, gpu)
    assert not bad, f"{name}, {STEPS} steps, seeds {seeds}: " + "; ".join(bad)


@on_cuda
def test_the_arena_trains_every_family_on_cuda():
    f = finals("arena", "cuda", 0)
    assert f["measurements"] >= 1
    assert all(math.isfinite(v) for k, v in f.items() if k.endswith((".mmd", ".w1", ".modes"))), f


def test_the_band_rejects_a_shifted_run():
    """The comparison can fail: a CUDA mean 10 standard errors off is reported, one inside is not."""
    cpu = [{"x": 1.0}, {"x": 1.2}, {"x": 0.8}]
    assert disagreements(cpu, [{"x": 1.05}, {"x": 1.15}, {"x": 0.95}]) == []
    assert disagreements(cpu, [{"x": 3.0}, {"x": 3.1}, {"x": 2.9}]) != []
    assert disagreements(cpu, [{"x": math.nan}] * 3) != []
