"""Redraws and training speed of one page while it plays in headless Chromium.

    .venv/bin/python bench/page_fps.py gan                # or: divergences, flows, vae, demo
    .venv/bin/python bench/page_fps.py gan --no-render    # plotly.js kept out of the browser
    .venv/bin/python bench/page_fps.py gan --split-cores  # the browser and server on core 0 only
    .venv/bin/python bench/page_fps.py gan --profile      # also py-spy the server (bench/out/*.txt)

Starts the app on a free loopback port, opens the page, presses Play, and reads the page's status
line over 10 s: steps per second as the page achieves them (drawing included) and redraws per second,
and the CPU time that the server, its training workers and the browser used meanwhile. On the GAN and
diffusion pages it also times the naive PyTorch loop of ``bench_gan.py`` / ``bench_diffusion.py`` (same
networks, headless, in this process) before the server starts and after it stops: the issue's "same run"
comparison.

The browser shares this machine's CPU with the server and the training workers. Two ways to take it
out, as when students' browsers run on their own machines: ``--no-render`` keeps plotly.js out of
the page (the server still builds and sends every figure; Streamlit's own frontend still runs);
``--split-cores`` confines the browser and the server to core 0 and the training workers to the
other cores (needs two cores or more). ``--profile`` samples the server with py-spy over the
measured seconds and prints where each thread holds the interpreter lock; py-spy must be installed.
"""

from __future__ import annotations

import collections
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from conftest import CHROMIUM, CHROMIUM_ARGS, AppServer, wait_for_app  # noqa: E402

ITER = re.compile(r"Iteration ([\d,]+)")


def cpu_seconds() -> dict[str, float]:
    """CPU seconds used so far by each process of interest, by kind: the server, its training workers
    (dgm.core.worker), the browser (every chromium process)."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = collections.defaultdict(float)
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        kind = ("server" if "streamlit run" in cmd else "training workers" if "dgm.core.worker" in cmd
                else "browser" if "chromium" in cmd else None)
        if kind:
            out[kind] += (int(fields[11]) + int(fields[12])) / tick
    return out


def _tasks(match: str) -> list[int]:
    """Thread ids of every process whose command line contains ``match``."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if match in (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                    out += [int(t.name) for t in (d / "task").iterdir()]
            except OSError:
                pass
    return out


def split_cores() -> None:
    """Browser and server on core 0, training workers (and the zygote they fork from) on the
    others. Threads and processes started later inherit their parent's cores."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        raise SystemExit("--split-cores needs two cores or more")
    for match, where in (("chromium", cores[:1]), ("streamlit run", cores[:1]), ("dgm.core.worker", cores[1:])):
        for tid in _tasks(match):
            try:
                os.sched_setaffinity(tid, where)
            except OSError:
                pass  # a thread that has just ended


#: pages whose benchmark has a naive loop of the same model: page -> (bench module, naive class, config)
NAIVE = {"gan": ("bench_gan", "NaiveGAN", "dgm.families.gan.trainer:GANConfig"),
         "diffusion": ("bench_diffusion", "NaiveDiffusion", "dgm.families.diffusion.trainer:DiffusionConfig")}


def naive_rate(page_name: str = "gan", rounds: int = 3, n: int = 400) -> float:
    """Steps per second of the page's naive PyTorch loop (its bench script's) on the default config, here."""
    import importlib
    import statistics

    import torch

    sys.path.insert(0, str(ROOT / "bench"))
    mod_name, cls_name, cfg_path = NAIVE[page_name]
    mod = importlib.import_module(mod_name)
    cfg_mod, cfg_cls = cfg_path.split(":")
    config = getattr(importlib.import_module(cfg_mod), cfg_cls)

    torch.set_num_threads(1)
    naive, rate = getattr(mod, cls_name)(config(), seed=0), mod.rate
    naive.step(50)
    return statistics.median(rate(naive.step, n) for _ in range(rounds))


def summarise_profile(raw: Path, top: int = 12) -> None:
    """Print, per thread, the share of samples and the functions (leaf frames of our code, Streamlit's
    or torch's Python) where it spends them. ``raw`` is py-spy's --format raw output."""
    by_thread: collections.Counter = collections.Counter()
    by_frame: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        frames = stack.split(";")
        thread = re.sub(r"\(\d+\): ", "", frames[0])  # threads by name: each rerun has a thread of its own
        total += n
        by_thread[thread] += n
        inner = [f for f in frames[1:] if "idle" not in f]
        by_frame[thread][inner[-1] if inner else "(idle)"] += n
    for thread, n in by_thread.most_common():
        print(f"  {thread}: {n / total:.0%} of samples")
        for f, m in by_frame[thread].most_common(top if n / total > 0.05 else 0):
            print(f"      {m / n:5.1%}  {f}")


def main(page_name: str = "gan", seconds: float = 10.0, render: bool = True, profile: bool = False,
         split: bool = False) -> None:
    from playwright.sync_api import sync_playwright

    naive = [naive_rate(page_name)] if page_name in NAIVE else []
    server = AppServer().start()
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            pg = browser.new_page(viewport={"width": 1400, "height": 1000})
            if not render:
                pg.route("**/app/static/plotly.min.js", lambda route: route.abort())
            pg.goto(server.url + "/")
            wait_for_app(pg)
            pg.goto(f"{server.url}/{page_name}")
            wait_for_app(pg, 180_000)

            def status() -> str:
                return pg.locator('[data-testid="stCaptionContainer"]', has_text="Iteration").first.inner_text()

            pg.get_by_role("button", name="Play").click()
            pg.wait_for_timeout(3000)  # warm-up
            spy = None
            if profile:
                out = ROOT / "bench" / "out" / f"page_fps_{page_name}.txt"
                out.parent.mkdir(exist_ok=True)
                spy = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "-p", str(server.proc.pid),
                                        "-d", str(int(seconds)), "-f", "raw", "--threads", "--gil", "-r", "200", "-o", str(out)],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            # the page records each new status line itself (polling from here would cost the browser more)
            pg.evaluate("""() => { window.__seen = []; let last = null;
                setInterval(() => {
                    const el = [...document.querySelectorAll('[data-testid="stCaptionContainer"]')]
                        .find(e => e.textContent.includes('Iteration'));
                    const text = el ? el.textContent : null;
                    if (text !== null && text !== last) { window.__seen.push([performance.now(), text]); last = text; }
                }, 20); }""")
            if split:
                split_cores()
            pg.wait_for_timeout(200)
            c0 = cpu_seconds()
            t0, s0 = time.time(), status()
            pg.wait_for_timeout(seconds * 1000)
            t1, s1 = time.time(), status()
            c1 = cpu_seconds()
            seen = pg.evaluate("() => window.__seen.filter(([t]) => t >= performance.now() - %d).length" % (1000 * (t1 - t0)))
            it = [int(ITER.search(s).group(1).replace(",", "")) for s in (s0, s1)]
            how = ", ".join(["no rendering"] * (not render) + ["split cores"] * split)
            page_rate = (it[1] - it[0]) / (t1 - t0)
            print(f"{page_name}{f' ({how})' if how else ''}: {page_rate:.0f} steps/s over {t1 - t0:.1f} s, "
                  f"{seen / (t1 - t0):.1f} redraws/s; last status: {s1}")
            print("  CPU use (cores): " + ", ".join(f"{k} {(c1[k] - c0.get(k, 0)) / (t1 - t0):.2f}" for k in c1))
            browser.close()
            if spy is not None:
                spy.wait(30)
                summarise_profile(out)
    finally:
        server.stop()
    if naive:
        naive.append(naive_rate(page_name))
        print(f"  naive PyTorch loop, headless, before and after: {naive[0]:.0f} and {naive[1]:.0f} steps/s; "
              f"the page trained {page_rate / (sum(naive) / 2):.2f}x as fast")


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    main(args[0] if args else "gan", render="--no-render" not in sys.argv, profile="--profile" in sys.argv,
         split="--split-cores" in sys.argv)
