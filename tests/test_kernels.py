"""A replay gives the same numbers whatever CPU kernels the caller's environment asks for
(dgm/core/kernels.py): the same command-line runs in subprocesses under several kernel settings, pinned
and not. Pinned, every run agrees exactly; unpinned (DGM_KERNELS=native), the same settings give
different numbers, which shows that this test would fail if the pinning were removed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from dgm.core import kernels

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not kernels.is_x86(), reason="the pinned tiers are x86-64 ones")

# What other machines would choose: torch's kernels for each instruction set, and MKL's code path
# for another processor (MKL_ENABLE_INSTRUCTIONS caps what MKL uses, as an older CPU would).
CALLER_SETTINGS = {
    "torch-default": {"ATEN_CPU_CAPABILITY": "default"},
    "torch-avx2+mkl-avx2": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
    "mkl-sse4.2": {"MKL_ENABLE_INSTRUCTIONS": "SSE4_2"},
}
if "avx512f" in kernels._cpu_flags():
    CALLER_SETTINGS["torch-avx512+mkl-avx512"] = {"ATEN_CPU_CAPABILITY": "avx512", "MKL_ENABLE_INSTRUCTIONS": "AVX512"}

def _env(extra: dict[str, str]) -> dict[str, str]:
    return kernels.unpinned_env(os.environ, **extra)


RUNS = (("gan", "--seed", "3", "--steps", "100"), ("vae", "--seed", "3", "--steps", "30"))


def replay(tmp: Path, extra: dict[str, str], runs=RUNS) -> tuple[list[dict], str]:
    """Each of ``runs`` as ``python -m dgm ARGS --out DIR``, in one subprocess under the ``extra``
    environment: their final.json numbers, and the capability torch reported in that process."""
    code = ("import json, sys, dgm.core.cli, torch\n"
            "for i, args in enumerate(json.loads(sys.argv[1])):\n"
            "    assert dgm.core.cli.main([*args, '--out', f'{sys.argv[2]}/{i}']) == 0\n"
            "print(torch.backends.cpu.get_cpu_capability())")
    out = Path(tempfile.mkdtemp(dir=tmp))
    r = subprocess.run([sys.executable, "-c", code, json.dumps(runs), str(out)], cwd=ROOT, env=_env(extra),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    finals = [json.loads((out / str(i) / "final.json").read_text())["final"] for i in range(len(runs))]
    return finals, r.stdout.split()[-1]


def replays(tmp: Path, settings: list[dict[str, str]], runs=RUNS) -> list[tuple[list[dict], str]]:
    with ThreadPoolExecutor(2) as pool:
        return list(pool.map(lambda s: replay(tmp, s, runs), settings))


def test_the_module_entry_point_pins_before_torch_runs():
    r = subprocess.run([sys.executable, "-c", "import dgm, torch; print(torch.backends.cpu.get_cpu_capability())"],
                       cwd=ROOT, env=_env({"ATEN_CPU_CAPABILITY": "default"}), capture_output=True, text=True,
                       timeout=120)
    assert r.stdout.strip() == kernels.CAPABILITY[kernels.tier()]


def test_the_avx2_tier_pins_mkl_by_the_processors_maker(monkeypatch):
    """MKL's AVX2 path is Intel's only (elsewhere MKL_CBWR=AVX2 silently falls back to its automatic choice):
    on other makers the tier runs that choice under reproducibility, capped at AVX2, whatever cap the caller set."""
    monkeypatch.setattr(kernels, "vendor", lambda: "intel")
    assert kernels.settings("avx2")["MKL_CBWR"] == "AVX2" and "MKL_ENABLE_INSTRUCTIONS" not in kernels.settings("avx2")
    monkeypatch.setattr(kernels, "vendor", lambda: "amd")
    assert {k: kernels.settings("avx2")[k] for k in ("MKL_CBWR", "MKL_ENABLE_INSTRUCTIONS")} == \
        {"MKL_CBWR": "AUTO", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}
    assert kernels.settings("sse2")["MKL_CBWR"] == "COMPATIBLE" and kernels.machine_class().endswith("-amd")
    monkeypatch.undo()
    code = "import os, dgm; print(os.environ.get('MKL_ENABLE_INSTRUCTIONS'), os.environ.get('MKL_CBWR'))"
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                       env=_env({"MKL_ENABLE_INSTRUCTIONS": "SSE4_2", "MKL_CBWR": "COMPATIBLE"}))
    want = kernels.settings(kernels.tier())
    assert r.stdout.split() == [str(want.get("MKL_ENABLE_INSTRUCTIONS")), str(want.get("MKL_CBWR"))], r.stderr


def test_a_replay_is_the_same_under_every_kernel_setting(tmp_path):
    names = list(CALLER_SETTINGS)
    pinned = replays(tmp_path, [CALLER_SETTINGS[n] for n in names])
    assert {cap for _, cap in pinned} == {kernels.CAPABILITY[kernels.tier()]}
    for name, (finals, _) in zip(names, pinned):
        assert finals == pinned[0][0], f"{name} changed the replay: {finals} vs {pinned[0][0]}"
    # the control: without the pin two of these settings give other numbers, so the pin is what holds them
    native = replays(tmp_path, [{**CALLER_SETTINGS[n], kernels.ENV: "native"} for n in names[:2]])
    assert native[0][0] != native[1][0], "these settings do not change the numbers on this machine"


def test_the_sse2_tier_is_the_same_under_every_kernel_setting(tmp_path):
    runs = [replays(tmp_path, [{**s, kernels.ENV: "sse2"} for s in list(CALLER_SETTINGS.values())[::2]], RUNS[:1])]
    (a, cap_a), (b, cap_b) = runs[0]
    assert cap_a == cap_b == "DEFAULT"
    assert a == b
