"""Quality of the VAE page (issue 6).

    .venv/bin/python bench/bench_vae.py                    # everything (about 3 minutes of CPU)
    .venv/bin/python bench/bench_vae.py --only default     # one part: default | latent16 | overfit | collapse

1. default: the default preset ("2D manifold of digits": categorical decoder, z = 2, 256-unit MLPs,
   Adam 1e-3, batch 64) trained for a wall-time budget (60 s); held-out (test) ELBO and IWAE(k = 100)
   in nats per image, from the best validation checkpoint; the manifold and latent-space PNGs in
   bench/out/ (vae_default_*.png) to look at.
2. latent16: the same with a 16-dimensional latent (PNGs bench/out/vae_z16_*.png).
3. overfit: 1,000 training digits for a fixed number of steps: the validation ELBO at its best and
   at the end (the drift a student sees on the curves), and the reported test ELBO, which comes
   from the best checkpoint and so does not drift.
4. collapse: the "posterior collapse" and "warm-up fixes it" presets: active units and held-out ELBO.

Timings are single-process CPU wall times with the torch threads set below, evaluation included;
the machine's load changes them, so take them as a rough guide.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from dgm.families.vae import figures as vae_figures  # noqa: E402
from dgm.families.vae import trainer as vae  # noqa: E402
from dgm.families.vae.lessons import EXPERIMENT  # noqa: E402
from dgm.families.vae.model import ACTIVE_THRESHOLD  # noqa: E402
from dgm.core import viz  # noqa: E402

OUT = ROOT / "bench" / "out"


def train(cfg: vae.VAEConfig, seconds: float | None = None, steps: int | None = None, seed: int = 0):
    t = EXPERIMENT.make(cfg, seed=seed, device="cpu")
    start = time.perf_counter()
    t.run(steps=steps, seconds=seconds)
    wall = time.perf_counter() - start
    return t, t.final(), wall


def report(label: str, t, f: dict, wall: float) -> None:
    print(f"{label}: {t.iteration} steps in {wall:.1f} s; best checkpoint at step {int(f['best_step'])}")
    print(f"  held-out test ELBO {f['elbo']:.2f}  IWAE(k={int(f['iwae_k'])}) {f['iwae']:.2f}  "
          f"recon {f['recon']:.2f}  KL {f['kl']:.2f}  active units {int(f['active_units'])}/{t.config.latent}  "
          "(nats per image)")


def pngs(t, prefix: str) -> None:
    figs = vae_figures.figures(t)
    for name in ("manifold", "latent", "samples", "elbo"):
        path = OUT / f"{prefix}_{name}.png"
        viz.write_png(figs[name], str(path))
    print(f"  figures: {OUT.relative_to(ROOT)}/{prefix}_{{manifold,latent,samples,elbo}}.png")


def part_default(seconds: float) -> None:
    t, f, wall = train(vae.VAEConfig(), seconds=seconds)
    report(f"## default preset, {seconds:.0f} s budget", t, f, wall)
    pngs(t, "vae_default")


def part_latent16(seconds: float) -> None:
    t, f, wall = train(vae.VAEConfig(latent=16), seconds=seconds)
    report(f"## 16-dimensional latent, {seconds:.0f} s budget", t, f, wall)
    pngs(t, "vae_z16")


def part_overfit(steps: int) -> None:
    t, f, wall = train(vae.VAEConfig(train_size=1000), steps=steps)
    evals = t.history.evals
    best = max(evals, key=lambda r: r["val_elbo"])
    last = evals[-1]
    report(f"## overfitting: 1,000 training digits, {steps} steps", t, f, wall)
    print(f"  validation ELBO: best {best['val_elbo']:.2f} at step {best['step']}, at the end {last['val_elbo']:.2f}; "
          f"train ELBO at the end {last['train_elbo']:.2f}")


def part_collapse(steps: int) -> None:
    for name in ("posterior collapse", "warm-up fixes it"):
        cfg = vae.VAEConfig(**EXPERIMENT.presets[name])
        t, f, wall = train(cfg, steps=steps)
        act = t.analysis["activity"]
        report(f"## preset {name!r}, {steps} steps", t, f, wall)
        print(f"  current model: active units {(act > ACTIVE_THRESHOLD).sum()}/{cfg.latent}, "
              f"validation KL {t.latest_eval['val_kl']:.2f}, validation ELBO {t.latest_eval['val_elbo']:.2f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", choices=("default", "latent16", "overfit", "collapse"), default=None)
    p.add_argument("--seconds", type=float, default=60.0, help="wall-time budget of the default and z=16 runs")
    p.add_argument("--overfit-steps", type=int, default=8000)
    p.add_argument("--collapse-steps", type=int, default=5000)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(a.threads))
    OUT.mkdir(parents=True, exist_ok=True)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    if a.only in (None, "default"):
        part_default(a.seconds)
    if a.only in (None, "latent16"):
        part_latent16(a.seconds)
    if a.only in (None, "overfit"):
        part_overfit(a.overfit_steps)
    if a.only in (None, "collapse"):
        part_collapse(a.collapse_steps)


if __name__ == "__main__":
    main()
