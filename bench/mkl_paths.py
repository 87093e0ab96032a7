"""Which MKL code path a processor runs under each reproducibility setting, and what it costs: training
steps/s and a digest of the trained parameters of a few experiments, each setting in its own process
(MKL reads its settings once), torch's kernels held at AVX2.

    .venv/bin/python bench/mkl_paths.py [--steps 200]

Equal digests mean the same path (the same numbers); this is how dgm/core/kernels.py's choice for non-Intel
processors was made (README, "Same seed, same run"). Compare the rates of one run, not of runs on different
machines.
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

from dgm.core import kernels  # noqa: E402

CHILD = r"""
import hashlib, json, sys, time
import dgm
from dgm.core import registry
out = {}
for name, steps in json.loads(sys.argv[1]):
    t = registry.get(name).make(seed=0, device="cpu")
    t.eval_every, t.eval_early = 0, ()  # training alone
    t.step(5)
    t0 = time.perf_counter()
    t.step(steps)
    dt = time.perf_counter() - t0
    params = b"".join(p.detach().numpy().tobytes() for m in t.modules().values() for p in m.parameters())
    out[name] = [steps / dt, hashlib.sha1(params).hexdigest()[:10]]
print(json.dumps(out))
"""

SETTINGS = {
    "CBWR=AVX2 (Intel's path)": {"MKL_CBWR": "AVX2"},
    "CBWR=AUTO": {"MKL_CBWR": "AUTO"},
    "CBWR=AUTO, capped at AVX2": {"MKL_CBWR": "AUTO", "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
    "CBWR=COMPATIBLE": {"MKL_CBWR": "COMPATIBLE"},
    "no CBWR": {},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=200)
    args = ap.parse_args()
    runs = [("vae", args.steps), ("gan", args.steps), ("latents", args.steps // 2)]
    print(f"processor: {kernels.vendor()} {platform.machine()}; torch kernels AVX2, oneDNN capped at AVX2")
    print(f"{'MKL setting':28s}" + "".join(f"{n:>24s}" for n, _ in runs))
    for label, extra in SETTINGS.items():
        env = kernels.unpinned_env(os.environ, **{kernels.ENV: "native", "ATEN_CPU_CAPABILITY": "avx2",
                                                  "DNNL_MAX_CPU_ISA": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}, **extra)
        r = subprocess.run([sys.executable, "-c", CHILD, json.dumps(runs)], cwd=ROOT, env=env, capture_output=True,
                           text=True, check=True)
        res = json.loads(r.stdout.strip().splitlines()[-1])
        print(f"{label:28s}" + "".join(f"{res[n][0]:>9.1f} st/s {res[n][1]:>10s}" for n, _ in runs))


if __name__ == "__main__":
    main()
