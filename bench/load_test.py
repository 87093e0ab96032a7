"""Load test: N browser sessions play one page at once against one server on 127.0.0.1.

    .venv/bin/python bench/load_test.py                    # N = 10 and 30, 60 s each, the GAN page
    .venv/bin/python bench/load_test.py --sessions 5 --seconds 20 --page demo

For each N: headless Chromium opens N tabs (separate browser contexts, so separate Streamlit
sessions), each on the page with its own seed, and presses Play. After the run it reports errors
(exception elements, error messages, page errors), each session's iterations and steps/s as the
page shows them, the server's memory (RSS) before, during and after, and the memory once every tab
has closed and the server has released the sessions (server.disconnectedSessionTTL, 30 s).
It starts its own server, targets only loopback, and stops by itself.

All tabs render in one headless Chromium on the server's own machine: with 30 tabs on 2 cores the
browsers' plotly rendering, not the server, takes the CPU. ``--no-render`` keeps the plotly
library from loading in the tabs (the server still builds and sends every figure), which measures
the server as a classroom meets it, each student rendering on a laptop of their own.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from conftest import CHROMIUM, CHROMIUM_ARGS, AppServer, wait_for_app  # noqa: E402

STATUS = re.compile(r"Iteration ([\d,]+)(?: · ([\d,.]+) steps/s)?(?: · ([\d.]+) frames/s)?")


def rss_mb(pid: int) -> float:
    total = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            total = int(line.split()[1]) / 1024
    return total


def workers() -> tuple[int, float]:
    """The training worker processes (dgm.core.worker) and the zygote they fork from: how many,
    and their memory as PSS in MB (pages they share are split among them, so the sum is what they
    really take)."""
    count, pss = 0, 0.0
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and b"dgm.core.worker" in (d / "cmdline").read_bytes():
                for line in (d / "smaps_rollup").read_text().splitlines():
                    if line.startswith("Pss:"):
                        pss += int(line.split()[1]) / 1024
                count += 1
        except OSError:
            pass
    return count, pss


def sessions_alive(server: AppServer) -> int:
    """Sessions the server still holds, from its metrics endpoint (one session-state stat each)."""
    import urllib.request

    with urllib.request.urlopen(server.url + "/_stcore/metrics", timeout=10) as r:
        text = r.read().decode()
    return sum(1 for line in text.splitlines() if line.startswith("cache_memory_bytes") and "st_session_state" in line)


def status(page) -> tuple[int, float, float]:
    text = page.locator('[data-testid="stCaptionContainer"]', has_text="Iteration").first.inner_text(timeout=10_000)
    m = STATUS.search(text)
    if not m:
        return 0, 0.0, 0.0
    return (int(m.group(1).replace(",", "")), float((m.group(2) or "0").replace(",", "")), float(m.group(3) or 0))


PLOTLY_JS = "**/app/static/plotly.min.js"  # what dgm.ui.plotly_live charts load


def _expected(message: str, render: bool) -> bool:
    """With --no-render every chart reports that its (blocked) plotly.js failed to load."""
    return not render and "plotly" in message.lower()


def run(n: int, seconds: float, page_path: str, server: AppServer, browser, render: bool = True) -> dict:
    base = rss_mb(server.proc.pid)
    w_base = workers()
    contexts, pages, errors = [], [], []
    for i in range(n):
        ctx = browser.new_context(viewport={"width": 1200, "height": 900})
        if not render:
            ctx.route(PLOTLY_JS, lambda route: route.abort())
        pg = ctx.new_page()
        pg.on("pageerror", lambda e, i=i: None if _expected(str(e), render) else errors.append(f"session {i}: {e}"))
        contexts.append(ctx)
        pages.append(pg)
        pg.goto(f"{server.url}/{page_path}?seed={i}", wait_until="commit")
    for pg in pages:
        wait_for_app(pg, timeout_ms=300_000)
    start_iters = [status(pg)[0] for pg in pages]
    for pg in pages:
        pg.get_by_role("button", name="Play").click()
    t0 = time.time()
    peak, w_peak = base, w_base
    while time.time() - t0 < seconds:
        time.sleep(5)
        peak = max(peak, rss_mb(server.proc.pid))
        w_peak = max(w_peak, workers(), key=lambda w: w[1])
    elapsed = time.time() - t0
    stats = [status(pg) for pg in pages]
    for i, pg in enumerate(pages):
        if pg.locator('[data-testid="stException"]').count():
            errors.append(f"session {i}: exception element")
        for alert in pg.locator('[data-testid="stAlertContentError"]').all():
            text = alert.inner_text()
            if not _expected(text, render):
                errors.append(f"session {i}: {text[:120]}")
    during = rss_mb(server.proc.pid)
    for ctx in contexts:
        ctx.close()
    time.sleep(45)  # the server drops disconnected sessions after 30 s
    after = rss_mb(server.proc.pid)
    w_after = workers()
    alive = sessions_alive(server)
    rates = [(s[0] - s0) / elapsed for s, s0 in zip(stats, start_iters)]
    return {
        "sessions": n, "seconds": round(elapsed, 1), "errors": errors,
        "rss_before_mb": round(base), "rss_peak_mb": round(peak), "rss_during_mb": round(during),
        "rss_after_close_mb": round(after), "sessions_left_after_close": alive, "mb_per_session": round((peak - base) / n, 1),
        "steps_per_s_per_session": {"min": round(min(rates), 1), "mean": round(sum(rates) / n, 1),
                                    "max": round(max(rates), 1)},
        "frames_per_s_shown": round(sum(s[2] for s in stats) / n, 2), "browser_renders_plots": render,
        "worker_processes": {"before": w_base[0], "peak": w_peak[0], "after_close": w_after[0]},
        "workers_pss_mb": {"before": round(w_base[1]), "peak": round(w_peak[1]), "after_close": round(w_after[1])},
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sessions", type=int, nargs="+", default=[10, 30])
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--page", default="gan")
    ap.add_argument("--no-render", dest="render", action="store_false",
                    help="do not load plotly in the tabs (the server still builds and sends every figure)")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    server = AppServer().start()
    assert server.url.startswith("http://127.0.0.1:"), "the load test only ever targets loopback"
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            print(f"server pid {server.proc.pid}, fresh RSS {rss_mb(server.proc.pid):.0f} MB", flush=True)
            # warm-up: one session plays the page briefly, so one-off costs (imports, kernels, caches)
            # are paid before the baseline is taken
            warm = run(1, 10, args.page, server, browser, args.render)
            print(f"after a warm-up session: RSS {warm['rss_after_close_mb']} MB (the baseline)", flush=True)
            for n in args.sessions:
                r = run(n, args.seconds, args.page, server, browser, args.render)
                print(r, flush=True)
            browser.close()
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
