"""Redraws and training speed of one page while it plays in headless Chromium.

    .venv/bin/python bench/page_fps.py gan        # or: divergences, flows, vae, demo
    .venv/bin/python bench/page_fps.py gan --no-render

Starts the app on a free loopback port, opens the page, presses Play, and reads the page's status
line over 10 s: steps per second as the page achieves them (drawing included) and redraws per second.
The browser shares this machine's CPU with the server; ``--no-render`` keeps plotly.js out of the
page (the server still builds and sends every figure), as when the browser runs on another machine.
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from conftest import CHROMIUM, CHROMIUM_ARGS, AppServer, wait_for_app  # noqa: E402

ITER = re.compile(r"Iteration ([\d,]+)")


def main(page_name: str = "gan", seconds: float = 10.0, render: bool = True) -> None:
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
            t0, s0 = time.time(), status()
            seen = {s0}
            while time.time() - t0 < seconds:
                seen.add(status())
                pg.wait_for_timeout(20)
            t1, s1 = time.time(), status()
            it = [int(ITER.search(s).group(1).replace(",", "")) for s in (s0, s1)]
            print(f"{page_name}{'' if render else ' (no rendering)'}: {(it[1] - it[0]) / (t1 - t0):.0f} steps/s over {t1 - t0:.1f} s, "
                  f"{(len(seen) - 1) / (t1 - t0):.1f} redraws/s; last status: {s1}")
            browser.close()
    finally:
        server.stop()


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    main(args[0] if args else "gan", render="--no-render" not in sys.argv)
