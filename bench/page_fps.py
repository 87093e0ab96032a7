"""Redraws and training speed of one page while it plays in headless Chromium.

    .venv/bin/python bench/page_fps.py gan        # or: divergences, flows, vae, demo
    .venv/bin/python bench/page_fps.py gan --no-render
    .venv/bin/python bench/page_fps.py gan --profile   # also py-spy the server (bench/out/*.txt)

Starts the app on a free loopback port, opens the page, presses Play, and reads the page's status
line over 10 s: steps per second as the page achieves them (drawing included) and redraws per second.
The browser shares this machine's CPU with the server; ``--no-render`` keeps plotly.js out of the
page (the server still builds and sends every figure), as when the browser runs on another machine.
``--profile`` samples the server with py-spy over the same 10 s and prints where each thread's time
goes (the training worker, the redraws, Streamlit's own threads); py-spy must be installed.
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
    (dgm.worker), the browser (every chromium process)."""
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
        kind = ("server" if "streamlit run" in cmd else "training workers" if "forkserver" in cmd
                else "browser" if "chromium" in cmd else None)
        if kind:
            out[kind] += (int(fields[11]) + int(fields[12])) / tick
    return out


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


def main(page_name: str = "gan", seconds: float = 10.0, render: bool = True, profile: bool = False) -> None:
    from playwright.sync_api import sync_playwright

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
            pg.wait_for_timeout(200)
            c0 = cpu_seconds()
            t0, s0 = time.time(), status()
            pg.wait_for_timeout(seconds * 1000)
            t1, s1 = time.time(), status()
            c1 = cpu_seconds()
            seen = pg.evaluate("() => window.__seen.filter(([t]) => t >= performance.now() - %d).length" % (1000 * (t1 - t0)))
            it = [int(ITER.search(s).group(1).replace(",", "")) for s in (s0, s1)]
            print(f"{page_name}{'' if render else ' (no rendering)'}: {(it[1] - it[0]) / (t1 - t0):.0f} steps/s over {t1 - t0:.1f} s, "
                  f"{seen / (t1 - t0):.1f} redraws/s; last status: {s1}")
            print("  CPU use (cores): " + ", ".join(f"{k} {(c1[k] - c0.get(k, 0)) / (t1 - t0):.2f}" for k in c1))
            browser.close()
            if spy is not None:
                spy.wait(30)
                summarise_profile(out)
    finally:
        server.stop()


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    main(args[0] if args else "gan", render="--no-render" not in sys.argv, profile="--profile" in sys.argv)
