"""What pinning the CPU kernels costs (dgm/core/kernels.py): training steps per second of every experiment
under each kernel tier, as a ratio to the processor's own (unpinned, "native") kernels, measured in
one run with the tiers interleaved (the host's speed drifts).

    .venv/bin/python bench/bench_kernels.py [--rounds 2] [--seconds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dgm.core import registry, kernels  # noqa: E402

CHILD = """
import json, sys, time
from dgm.core import registry
import torch
out = {"capability": torch.backends.cpu.get_cpu_capability()}
for name in json.loads(sys.argv[1]):
    t = registry.get(name).make(seed=0, device="cpu")
    t.step(5)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < float(sys.argv[2]):
        t.step(10)
        n += 10
    out[name] = n / (time.perf_counter() - t0)
print(json.dumps(out))
"""


def measure(tier: str, names: list[str], seconds: float) -> dict:
    env = kernels.unpinned_env(os.environ, **{kernels.ENV: tier})
    r = subprocess.run([sys.executable, "-c", CHILD, json.dumps(names), str(seconds)], cwd=ROOT, env=env,
                       capture_output=True, text=True, check=True)
    return json.loads(r.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=2.0, help="per experiment and tier, each round")
    args = ap.parse_args()
    names = registry.names()
    tiers = ["native", "avx2", "sse2"] if kernels.is_x86() else ["native"]
    totals: dict[str, dict[str, float]] = {t: {n: 0.0 for n in names} for t in tiers}
    caps = {}
    for r in range(args.rounds):
        for t in (tiers if r % 2 == 0 else tiers[::-1]):
            res = measure(t, names, args.seconds)
            caps[t] = res.pop("capability")
            for n in names:
                totals[t][n] += res[n] / args.rounds
    print(f"processor: {platform.processor() or platform.machine()}; this machine's tier: {kernels.tier()}")
    print(f"{'tier':<8}{'torch kernels':<15}" + "".join(f"{n:>14}" for n in names))
    for t in tiers:
        print(f"{t:<8}{caps[t]:<15}" + "".join(f"{totals[t][n]:>9.0f} st/s" for n in names))
    for t in tiers[1:]:
        print(f"{t + ' / native':<23}" + "".join(f"{totals[t][n] / totals['native'][n]:>13.2f}x" for n in names))


if __name__ == "__main__":
    main()
