"""Device and seed handling, in one place.

Every tensor in ``dgm`` is created on an explicit device, and every random draw takes an explicit
``torch.Generator``. ``resolve("auto")`` picks CUDA when it is present, else the CPU.
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterator

import warnings

import torch

from dgm.core import kernels

DEVICE_CHOICES = ("auto", "cpu", "cuda")

# PyTorch's CPU intra-op threads: 1 unless DGM_THREADS says otherwise. The models here are small: their
# ops take microseconds, and splitting each across threads costs more than it saves, many times more
# when the other cores are busy (README, "Benchmarks"); the cores serve more sessions instead. One
# thread also keeps sums in one order, which replays need (dgm/core/kernels.py).
torch.set_num_threads(max(1, int(os.environ.get("DGM_THREADS", "1"))))
# the same operations in the same order, wherever a kernel offers a choice (GPU kernels mostly)
torch.use_deterministic_algorithms(True, warn_only=True)
if (_mismatch := kernels.check()) is not None:
    warnings.warn(_mismatch, RuntimeWarning, stacklevel=2)


def cuda_available() -> bool:
    return torch.cuda.is_available()


def resolve(name: str | torch.device | None = "auto") -> torch.device:
    """Turn ``"auto" | "cpu" | "cuda" | torch.device | None`` into a concrete device."""
    if isinstance(name, torch.device):
        return name
    if name in (None, "auto"):
        return torch.device("cuda" if cuda_available() else "cpu")
    if name == "cuda" and not cuda_available():
        raise ValueError("CUDA was requested but no CUDA device is available; use 'cpu' or 'auto'")
    if name not in DEVICE_CHOICES:
        raise ValueError(f"unknown device {name!r}; choose one of {', '.join(DEVICE_CHOICES)}")
    return torch.device(name)


def describe(device: torch.device) -> str:
    """A short human label, e.g. 'CPU (2 threads)' or 'CUDA: NVIDIA H200'."""
    if device.type == "cuda":
        return f"CUDA: {torch.cuda.get_device_name(device)}"
    return f"CPU ({torch.get_num_threads()} threads)"


def generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A fresh generator on ``device`` seeded with ``seed``."""
    g = torch.Generator(device=resolve(device))
    g.manual_seed(int(seed))
    return g


@contextlib.contextmanager
def seeded(seed: int, device: torch.device | str = "cpu") -> Iterator[None]:
    """Run a block (typically ``nn.Module`` construction, whose initialisers use the global RNG)
    under a fixed seed, without disturbing the caller's global RNG state."""
    dev = resolve(device)
    devices = [dev.index or 0] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(int(seed))
        yield
