"""Quality and speed of the autoregressive page (issue 20).

    .venv/bin/python bench/bench_autoregressive.py                       # everything (about 40 min on 2 cores)
    .venv/bin/python bench/bench_autoregressive.py --only table          # one part: table | overfit | sampling | speed
    .venv/bin/python bench/bench_autoregressive.py --only table --seeds 5 --jobs 2 --data digits
    .venv/bin/python bench/bench_autoregressive.py --only table --data digits --models "PixelCNN, gated"  # one row

1. table: the held-out (test) exact NLL of every model, in nats per image, from its best validation
   checkpoint, after a fixed number of steps per model (the same for every seed), on the digits (17 grey
   levels: the VAE page's split and categorical likelihood) and on the binarised digits (another data
   set); seeds 0..4, mean ± standard deviation and the range; the CPU seconds of one run on this machine
   (evaluation included); for the MADE ensemble also its first ordering alone.
2. overfit: MADE (natural order) on 200 training digits: the validation NLL at its best and at the end,
   the training NLL at the end, per seed.
3. sampling: seconds per image of each model's sampling (one pixel at a time, a batch of 100 images)
   against one pass of a VAE decoder (the VAE page's default) and of a RealNVP flow (the flows page's
   default configuration, built on the same 64 dimensions), measured in one run; ratios.
4. speed: steps/s of ARTrainer against a naive PyTorch loop over the same model (the obvious loop: a
   cross-entropy on the logits, `.item()` every step), alternating rounds in one process.

Runs are single-threaded processes, ``--jobs`` of them at once, each printing its figures to stderr as
it ends; the table and overfit parts are about 75 CPU-minutes, so give them the cores you have. CPU
seconds are process time, so they change little with the machine's load; wall times (parts 3 and 4)
change with it, so compare figures taken in one run on an idle machine.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import dgm  # noqa: E402, F401  (first: pins the CPU kernels)
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from dgm.families.autoregressive.trainer import ARConfig, ARTrainer, build_model  # noqa: E402

#: (label, config, steps): a fixed number of steps per model, each run at most about 60 s of CPU on the
#: 2-core test machine (evaluation every 100 steps included)
MODELS = (
    ("FVSBN", dict(model="fvsbn"), 8000),
    ("NADE (H = 256)", dict(model="nade"), 2500),
    ("MADE, natural order", dict(model="made"), 3000),
    ("MADE, random order", dict(model="made", ordering="random"), 3000),
    ("MADE, 8 orderings (ensemble)", dict(model="made", ordering="random", orderings=8), 6000),
    ("PixelCNN, plain", dict(model="pixelcnn"), 1500),
    ("PixelCNN, gated", dict(model="pixelcnn", stack="gated"), 450),
)


def _run(job: tuple) -> dict:
    """One training run in a worker process: (label, config, steps, seed) -> its figures."""
    label, kw, steps, seed = job
    t = ARTrainer(ARConfig(**kw), seed=seed, device="cpu")
    c0, w0 = time.process_time(), time.perf_counter()
    t.step(steps)
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    f = t.final()
    evals = t.history.evals
    return {"label": label, "kw": kw, "data": kw.get("data", "digits"), "seed": seed, "nll": f["nll"], "nll_one": f.get("nll_one"),
            "best_step": f["best_step"], "cpu": cpu, "wall": wall, "steps": steps,
            "val_best": f["best_val_nll"], "val_end": evals[-1]["val_nll"], "train_end": evals[-1]["train_nll"]}


def _pool(jobs: list[tuple], n: int) -> list[dict]:
    """The runs, in ``n`` processes; each run's figures go to stderr as it ends."""
    out = []
    with mp.get_context("spawn").Pool(n) as pool:
        for r in pool.imap_unordered(_run, jobs, chunksize=1):
            print(f"  done: {r['label']}, {r['data']}, seed {r['seed']}: test NLL {r['nll']:.2f} (best step "
                  f"{r['best_step']}), {r['cpu']:.0f} CPU s", file=sys.stderr, flush=True)
            out.append(r)
    return sorted(out, key=lambda r: jobs.index((r["label"], r["kw"], r["steps"], r["seed"])))


def _stats(v: list[float]) -> str:
    sd = statistics.stdev(v) if len(v) > 1 else 0.0
    return f"{statistics.mean(v):6.2f} ± {sd:4.2f} [{min(v):.2f}..{max(v):.2f}]"


def part_table(seeds: int, jobs: int, datas: list[str], models=MODELS) -> None:
    runs = _pool([(label, {**kw, "data": d}, steps, s) for d in datas for label, kw, steps in models
                  for s in range(seeds)], jobs)
    for d in datas:
        print(f"\n## test NLL, nats per image, {d} ({'17 grey levels' if d == 'digits' else 'binarised: another data set'}), "
              f"best validation checkpoint, seeds 0..{seeds - 1}")
        print(f"{'model':32s} {'steps':>6s} {'test NLL: mean ± sd [range]':>30s} {'best step (median)':>19s} "
              f"{'CPU s/run':>10s}")
        for label, _, steps in models:
            rs = [r for r in runs if r["label"] == label and r["data"] == d]
            print(f"{label:32s} {steps:6d} {_stats([r['nll'] for r in rs]):>30s} "
                  f"{statistics.median(r['best_step'] for r in rs):19.0f} {statistics.mean(r['cpu'] for r in rs):10.1f}")
            if rs[0]["nll_one"] is not None:
                print(f"{'  its first ordering alone':32s} {'':6s} {_stats([r['nll_one'] for r in rs]):>30s}")
        best = min(models, key=lambda m: statistics.mean(r["nll"] for r in runs if r["label"] == m[0] and r["data"] == d))
        print(f"best: {best[0]}; per seed: " + ", ".join(f"{r['nll']:.2f}" for r in runs
                                                        if r["label"] == best[0] and r["data"] == d))


def part_overfit(seeds: int, jobs: int, steps: int = 3000) -> None:
    runs = _pool([("MADE, 200 digits", dict(model="made", train_size=200), steps, s) for s in range(seeds)], jobs)
    print(f"\n## overfitting: MADE (natural order, H = 256) on 200 training digits, {steps} steps")
    for r in runs:
        print(f"  seed {r['seed']}: validation NLL best {r['val_best']:.2f} at step {r['best_step']}, at the end "
              f"{r['val_end']:.2f}; training NLL at the end {r['train_end']:.2f}; test (best checkpoint) {r['nll']:.2f}")


@torch.no_grad()
def part_sampling(n: int = 100, rounds: int = 3) -> None:
    from dgm.core import registry
    from dgm.core.device import seeded
    from dgm.families.flows.trainer import FlowConfig, build_flow

    def per_image(fn) -> float:
        fn()
        times = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return statistics.median(times) / n

    vae = registry.get("vae")
    vt = vae.make(seed=0, device="cpu")
    with seeded(0):
        flow = build_flow(FlowConfig(), dim=64)
    g = torch.Generator().manual_seed(0)
    ref = {"VAE decoder (z = 2, width 256)": per_image(lambda: vae.samples(vt, n)),
           "RealNVP flow (8 coupling layers, width 64)": per_image(lambda: flow.sample(n, g))}
    print(f"\n## sampling: seconds per image, batches of {n}, median of {rounds} (one run, {torch.get_num_threads()} "
          "thread)")
    for name, sec in ref.items():
        print(f"  {name:44s} {sec * 1e3:8.3f} ms per image (1 pass)")
    (vname, vsec), (fname, fsec) = ref.items()
    for label, kw, _ in MODELS:
        with seeded(0):
            model = build_model(ARConfig(**kw), 17, torch.Generator().manual_seed(1))
        sec = per_image(lambda: model.sample(n, g))
        print(f"  {label:44s} {sec * 1e3:8.3f} ms per image (64 passes): {sec / vsec:6.0f}x the VAE, "
              f"{sec / fsec:5.0f}x the flow")


class NaiveLoop:
    """The obvious PyTorch loop over the same model (same initialisation): a batch of training digits,
    the cross-entropy of the logits, backward, Adam, and the loss as a Python float every step."""

    def __init__(self, cfg: ARConfig, seed: int = 0):
        from dgm.core.device import seeded
        from dgm.core.digits import digits

        self.cfg, self.x = cfg, digits().train.x.long()
        with seeded(seed):
            self.model = build_model(cfg, 17, torch.Generator().manual_seed(seed))
        self.opt = torch.optim.Adam(self.model.parameters(), lr=cfg.lr)
        self.gen, self.losses = torch.Generator().manual_seed(seed), []

    def step(self, n: int) -> None:
        m, b = self.model, self.cfg.batch
        for _ in range(n):
            x = self.x[torch.randint(0, len(self.x), (b,), generator=self.gen)]
            logits = m(m.embed(x))
            loss = F.cross_entropy(logits.reshape(-1, m.L), x.reshape(-1), reduction="sum") / b
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()
            self.losses.append(loss.item())


def part_speed(rounds: int = 5) -> None:
    def rate(fn, n: int) -> float:
        t0 = time.perf_counter()
        fn(n)
        return n / (time.perf_counter() - t0)

    print(f"\n## speed: steps/s, median of {rounds} alternating rounds, {torch.get_num_threads()} thread")
    for label, kw, n in (("MADE (page default)", {}, 200), ("PixelCNN, plain", dict(model="pixelcnn"), 60)):
        cfg = ARConfig(**kw)
        ours = ARTrainer(cfg, seed=0, device="cpu")
        ours.eval_every = 0
        with_eval = ARTrainer(cfg, seed=0, device="cpu")  # with its evaluation every 100 steps, as the page runs
        naive = NaiveLoop(cfg)
        for f in (ours.step, with_eval.step, naive.step):
            f(10)
        r_naive, r_ours, r_eval = [], [], []
        for _ in range(rounds):
            r_naive.append(rate(naive.step, n))
            r_ours.append(rate(ours.step, n))
            r_eval.append(rate(with_eval.step, n))
        med = statistics.median
        print(f"  {label}: naive loop {med(r_naive):6.1f}, ARTrainer {med(r_ours):6.1f} "
              f"({med(r_ours) / med(r_naive):.2f}x), with evaluation {med(r_eval):6.1f} "
              f"({med(r_eval) / med(r_naive):.2f}x)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", choices=("table", "overfit", "sampling", "speed"), default=None)
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--jobs", type=int, default=2, help="training runs at once (one process each)")
    p.add_argument("--data", choices=("digits", "digits_binary", "both"), default="both")
    p.add_argument("--models", default=None, help="table: only these rows (labels, separated by ';')")
    a = p.parse_args()
    models = MODELS
    if a.models:
        wanted = [m.strip() for m in a.models.split(";")]
        models = tuple(m for m in MODELS if m[0] in wanted)
        if len(models) != len(wanted):
            p.error(f"--models: choose among {'; '.join(m[0] for m in MODELS)}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s) per process")
    if a.only in (None, "table"):
        part_table(a.seeds, a.jobs, ["digits", "digits_binary"] if a.data == "both" else [a.data], models)
    if a.only in (None, "overfit"):
        part_overfit(a.seeds, a.jobs)
    if a.only in (None, "sampling"):
        part_sampling()
    if a.only in (None, "speed"):
        part_speed()


if __name__ == "__main__":
    main()
