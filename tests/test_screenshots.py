"""Screenshot regression: every model page in replay mode (?seed=0&steps=N), its figures compared
with the baselines in tests/screenshots/. Rewrite them with `make screenshots`
(pytest tests/test_screenshots.py --update-screenshots)."""

from __future__ import annotations

import json

import pytest

from conftest import wait_for_app
from dgm import experiments
from dgm.ui.pages import all_pages
from screenshots import BASELINES, ScreenshotMismatch, compare

pytestmark = pytest.mark.browser

#: replay length per page: enough to show the phenomenon, short enough for CI
STEPS = {"demo": 60, "divergences": 150, "gan": 300, "flows": 200, "vae": 150}
CASES = [(p, STEPS[p.url]) for p in all_pages() if p.experiment in experiments.names() and p.url in STEPS]


def chart_pngs(page, url: str) -> list[bytes]:
    page.goto(url)
    wait_for_app(page, timeout_ms=180_000)
    page.mouse.move(0, 0)
    charts = page.locator('[data-testid="stMain"] [data-testid="dgmPlot"]')
    # every chart drawn by plotly.js (it loads once per page, then draws after the script has finished)
    page.wait_for_function("() => [...document.querySelectorAll('[data-testid=dgmPlot]')]"
                           ".every(e => e.dataset.drawn === 'true')", timeout=60_000)
    page.wait_for_timeout(300)
    return [charts.nth(i).screenshot(animations="disabled", caret="hide") for i in range(charts.count())]


def _flat(prefix: str, v) -> dict:
    if isinstance(v, dict):
        return {k2: v2 for k, x in v.items() for k2, v2 in _flat(f"{prefix}.{k}", x).items()}
    if isinstance(v, (list, tuple)):
        return {k2: v2 for i, x in enumerate(v) for k2, v2 in _flat(f"{prefix}[{i}]", x).items()}
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return {}
    return {prefix: round(float(v), 6)}


def replay_final(exp_name: str, steps: int, seed: int = 0) -> dict:
    """Every number in the replayed run's final metrics, flattened (name, name.key, name[i])."""
    exp = experiments.get(exp_name)
    t = exp.make(exp.config(), seed=seed, device="cpu")
    t.step(steps)
    return {k2: v2 for k, v in t.final().items() for k2, v2 in _flat(k, v).items()}


@pytest.mark.parametrize("info,steps", CASES, ids=[c[0].url for c in CASES])
def test_page_figures_match_baselines(app_server, page, update_screenshots, info, steps):
    pngs = chart_pngs(page, f"{app_server.url}/{info.url}?seed=0&steps={steps}")
    assert pngs, "the page shows no figures"
    assert page.locator('[data-testid="stException"]').count() == 0
    counts = BASELINES / f"{info.url}.json"
    # the figures' data: the same replay, headless, must give the same numbers
    final = replay_final(info.experiment, steps)
    if update_screenshots:
        counts.write_text(json.dumps({"figures": len(pngs), "final": final}, indent=1, sort_keys=True))
    expected = json.loads(counts.read_text())
    assert len(pngs) == expected["figures"]
    for k, v in expected["final"].items():
        assert final[k] == pytest.approx(v, rel=1e-4, abs=1e-6), k
    for i, png in enumerate(pngs):
        compare(png, f"{info.url}_{i}", update_screenshots)


def test_a_different_seed_fails_the_comparison(app_server, page, update_screenshots):
    if update_screenshots:
        pytest.skip("baselines are being rewritten")
    pngs = chart_pngs(page, f"{app_server.url}/demo?seed=1&steps={STEPS['demo']}")
    with pytest.raises(ScreenshotMismatch):
        compare(pngs[0], "demo_0", update=False)
