"""The CPU kernels every computation runs on, pinned so that a seed gives the same numbers on every
machine (this module imports no torch: ``dgm/__init__`` calls ``pin()`` before torch runs an op).

torch, MKL (its matrix products) and oneDNN each pick their CPU code by the processor's instruction
set: plain SSE, AVX2 or AVX-512. Each choice adds floating-point numbers in another order, so the same
seed used to train to different numbers on an AVX2 and an AVX-512 machine, and a training run
amplifies a difference in the last bit into a different picture within a few hundred steps. Pinned,
every machine of a tier (and of one maker, below) runs the same instructions in the same order:

- ``avx2`` (every x86-64 processor with AVX2 and FMA: Intel since 2013, AMD since 2015): torch's AVX2
  kernels, oneDNN capped at AVX2 and MKL under its conditional numerical reproducibility (``MKL_CBWR``):
  on Intel processors MKL's AVX2 code path; on others MKL has no fixed path but its slow ``COMPATIBLE`` one
  (1.5x slower training here), so it runs its own choice (``AUTO``: fixed cache sizes and reductions) capped
  at AVX2 (``MKL_ENABLE_INSTRUCTIONS``), so that a processor with AVX-512 runs the path of one without (on
  an AMD EPYC with AVX-512 the cap changes no number and no speed: MKL had chosen its AVX2 path already).
- ``sse2`` (older x86-64, or ``DGM_KERNELS=sse2`` anywhere): torch's portable kernels and MKL's
  compatible path; about half the speed.
- ``native`` (other processors, e.g. ARM; or ``DGM_KERNELS=native``): whatever the platform picks.
  ARM builds of torch use other libraries altogether, so their numbers agree with x86 only to within
  a tolerance (see the README, "Same seed, same run").

A pinned tier gives the same numbers on every processor of one maker (``machine_class``: the tier and the
maker, e.g. ``avx2-intel``). Between makers the numbers of a replay differ in their last bits, and a training
run makes more of that as it goes (measured: the same GAN replay on an Intel Xeon and an AMD EPYC, both
``avx2``, ends with its discriminator's loss 1.306 against 1.325 at step 300), so the screenshot baselines are
kept per class (tests/screenshots).

The settings are environment variables that the libraries read when they first run, so ``pin``
overrides any the caller's environment carries (a replay's numbers do not depend on it) and child
processes (the worker zygote) inherit them.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys

ENV = "DGM_KERNELS"  # auto (default) | avx2 | sse2 | native
SETTINGS = {
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2", "DNNL_MAX_CPU_ISA": "AVX2",
             "ONEDNN_MAX_CPU_ISA": "AVX2"},
    "sse2": {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE", "DNNL_MAX_CPU_ISA": "SSE41",
             "ONEDNN_MAX_CPU_ISA": "SSE41"},
    "native": {},
}
#: a caller's caps on MKL's instruction set would change the numbers too: dropped under a pinned tier
DROPPED = ("MKL_ENABLE_INSTRUCTIONS", "MKL_DEBUG_CPU_TYPE")
#: torch.backends.cpu.get_cpu_capability() under each pinned tier
CAPABILITY = {"avx2": "AVX2", "sse2": "DEFAULT"}
#: cuBLAS needs this for deterministic matrix products on a GPU (read when CUDA starts)
CUDA_SETTINGS = {"CUBLAS_WORKSPACE_CONFIG": ":4096:8"}


def _cpu_flags() -> set[str]:
    try:
        if sys.platform.startswith("linux"):
            with open("/proc/cpuinfo") as f:
                for line in f:
                    if line.startswith("flags"):
                        return set(line.split(":", 1)[1].split())
        elif sys.platform == "darwin":
            out = subprocess.run(["sysctl", "-n", "machdep.cpu.features", "machdep.cpu.leaf7_features"],
                                 capture_output=True, text=True, timeout=2).stdout
            return set(out.lower().split())
    except (OSError, subprocess.SubprocessError):
        pass
    return set()


def vendor() -> str:
    """The processor's maker: ``intel``, ``amd``, another maker's name in lower case, or ``unknown``."""
    try:
        if sys.platform.startswith("linux"):
            with open("/proc/cpuinfo") as f:
                for line in f:
                    if line.startswith("vendor_id"):
                        return _MAKERS.get(line.split(":", 1)[1].strip(), line.split(":", 1)[1].strip().lower())
        elif sys.platform == "darwin":
            out = subprocess.run(["sysctl", "-n", "machdep.cpu.vendor"], capture_output=True, text=True,
                                 timeout=2).stdout.strip()
            if out:
                return _MAKERS.get(out, out.lower())
    except (OSError, subprocess.SubprocessError):
        pass
    return "unknown"


_MAKERS = {"GenuineIntel": "intel", "AuthenticAMD": "amd", "HygonGenuine": "hygon"}


def settings(t: str) -> dict[str, str]:
    """The environment that pins tier ``t`` on this processor."""
    out = dict(SETTINGS[t])
    if t == "avx2" and vendor() != "intel":  # MKL's AVX2 path is Intel's only (see the module's docstring)
        out.update(MKL_CBWR="AUTO", MKL_ENABLE_INSTRUCTIONS="AVX2")
    return out


def machine_class() -> str:
    """What a replay's numbers are the same across: the tier and the processor's maker (``avx2-intel``,
    ``avx2-amd``, ``sse2-intel``), or ``native-`` and the architecture off x86-64."""
    t = tier()
    return f"native-{platform.machine().lower() or 'unknown'}" if t == "native" else f"{t}-{vendor()}"


def unpinned_env(env: dict[str, str], **extra: str) -> dict[str, str]:
    """``env`` without any kernel setting (this module's or a caller's), plus ``extra``: for a child process
    that should choose its kernels afresh (benchmarks and tests of other tiers)."""
    keys = {k for s in SETTINGS.values() for k in s} | set(DROPPED) | {ENV}
    return {**{k: v for k, v in env.items() if k not in keys}, **extra}


def is_x86() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64", "x64")


def tier() -> str:
    """The tier this process runs on: ``DGM_KERNELS`` if it names one, else the best pinned tier of
    this processor (``native`` off x86-64)."""
    asked = os.environ.get(ENV, "auto").strip().lower()
    if asked == "native":
        return "native"
    if not is_x86():
        return "native"
    if asked == "sse2":
        return "sse2"
    flags = _cpu_flags()
    has_avx2 = {"avx2", "fma"} <= flags
    if asked == "avx2" and not has_avx2:
        return "sse2"  # this processor cannot run the AVX2 tier
    return "avx2" if has_avx2 else "sse2"


def pin() -> str:
    """Set the environment for this process's tier (before torch runs its first op); returns the tier."""
    t = tier()
    if t != "native":
        for k in DROPPED:
            os.environ.pop(k, None)
    os.environ.update(settings(t))
    for k, v in CUDA_SETTINGS.items():
        os.environ.setdefault(k, v)
    return t


def check() -> str | None:
    """After torch is imported: a warning when torch already chose other kernels (it had run an op
    before ``dgm`` was imported, e.g. in a notebook); None when the pin holds."""
    import torch

    want = CAPABILITY.get(tier())
    got = torch.backends.cpu.get_cpu_capability()
    if want is None or got == want:
        return None
    return (f"torch runs its {got} CPU kernels, not the pinned {want}: import dgm before torch runs anything, "
            "or set DGM_KERNELS=native; seeds reproduce runs on this machine class only")


def describe() -> str:
    t = tier()
    maker = {"intel": "Intel", "amd": "AMD"}.get(vendor(), vendor())
    return {"avx2": f"AVX2 (pinned: the same numbers on every {maker} x86-64 machine with AVX2)",
            "sse2": f"SSE2 (pinned: the same numbers on every {maker} x86-64 machine in this tier)",
            "native": "this platform's own (not pinned: numbers agree with x86 to a tolerance)"}[t]
