"""What each live figure costs the browser to redraw, in headless Chromium.

    .venv/bin/python bench/browser_figures.py            # every page
    .venv/bin/python bench/browser_figures.py gan flow   # some experiments
    .venv/bin/python bench/browser_figures.py --bundles  # plotly.js itself: full bundle against the partial one

A live page's frame rate is limited by the browser redrawing its plotly charts (one JavaScript
thread), not by the server. For each page this trains a run, takes the figures at two points of the
run, and times ``Plotly.react`` switching between them (a real update of every trace, as when the
page plays), with plotly.js from the plotly package. Prints the median milliseconds per figure: the script alone, and up
to the next painted frame (which rounds up to the display's 16.7 ms frames).
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from conftest import CHROMIUM, CHROMIUM_ARGS  # noqa: E402

STEPS = {"demo": 50, "divergence": 100, "gan": 1000, "flow": 200, "vae": 200}  # experiments
REPEATS = 12


def figure_pairs(name: str) -> dict[str, tuple[str, str]]:
    """The page's figures as plotly JSON at two points of one run."""
    from dgm.core import registry

    exp = registry.get(name)
    trainer = exp.make(exp.config(), seed=0, device="cpu")
    trainer.step(STEPS[name])
    a = {k: f.to_json() for k, f in exp.figures(trainer).items()}
    trainer.step(max(10, STEPS[name] // 10))
    b = {k: f.to_json() for k, f in exp.figures(trainer).items()}
    return {k: (a[k], b[k]) for k in a if k in b}


def main(pages: list[str]) -> None:
    import plotly
    from playwright.sync_api import sync_playwright

    js = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        pg = browser.new_page(viewport={"width": 1400, "height": 1000})
        pg.set_content("<html><body><div id='fig' style='width:560px'></div></body></html>")
        pg.add_script_tag(path=str(js))
        for page in pages:
            for fig_name, (a, b) in figure_pairs(page).items():
                times = pg.evaluate("""async ([a, b, n]) => {
                    const el = document.getElementById('fig');
                    Plotly.purge(el);
                    const specs = [JSON.parse(a), JSON.parse(b)];
                    await Plotly.newPlot(el, specs[0].data, specs[0].layout, {displaylogo: false});
                    const js = [], painted = [];
                    for (let i = 0; i < n; i++) {
                        const s = JSON.parse(i % 2 ? a : b);  // fresh arrays, as a new message gives
                        const t0 = performance.now();
                        await Plotly.react(el, s.data, s.layout, {displaylogo: false});
                        js.push(performance.now() - t0);
                        await new Promise(r => requestAnimationFrame(() => setTimeout(r, 0)));
                        painted.push(performance.now() - t0);
                    }
                    return [js, painted];
                }""", [a, b, REPEATS])
                js_ms, paint_ms = (statistics.median(t) for t in times)
                print(f"{page:12s} {fig_name:14s} {js_ms:7.1f} ms script {paint_ms:7.1f} ms to paint "
                      f"({len(a) / 1e3:,.0f} kB JSON)")
        browser.close()


def bundles(repeats: int = 6) -> None:
    """Loading and starting plotly.js (evaluating the bundle, then a first small chart) in a fresh page, the full
    bundle against the partial one that setup fetches (dgm/ui/plotlyjs.py): what a first visit waits for."""
    from playwright.sync_api import sync_playwright

    from dgm.ui import plotlyjs

    paths = {"full": plotlyjs.FULL_DIR / plotlyjs.FILE, "partial": plotlyjs.PARTIAL_DIR / plotlyjs.FILE}
    if plotlyjs.bundle_dir() != plotlyjs.PARTIAL_DIR:
        sys.exit("the partial bundle is not there: make setup fetches it")
    times: dict[str, list[float]] = {k: [] for k in paths}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        for _ in range(repeats):
            for name, path in paths.items():  # alternating, so that both meet the same machine load
                ctx = browser.new_context()
                pg = ctx.new_page()
                pg.set_content("<html><body><div id='f'></div></body></html>")
                times[name].append(pg.evaluate("""(src) => { const t0 = performance.now(); (0, eval)(src);
                    Plotly.newPlot('f', [{x: [1, 2, 3], y: [1, 3, 2], type: 'scatter'}]);
                    return performance.now() - t0; }""", path.read_text()))
                ctx.close()
        browser.close()
    for name, t in times.items():
        print(f"plotly.js {name:8s} {statistics.median(t):7.0f} ms to load and start (median of {repeats}; "
              f"{paths[name].stat().st_size / 1e6:.1f} MB)")
    print(f"full / partial: {statistics.median(times['full']) / statistics.median(times['partial']):.2f}x")


if __name__ == "__main__":
    if sys.argv[1:] == ["--bundles"]:
        bundles()
    else:
        main(sys.argv[1:] or list(STEPS))
