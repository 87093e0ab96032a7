"""The diffusion page in a real browser: it plays live (the learned field every frame, the samples about once a
second, the exact field not at all: it does not change), its arrows go to the canvas, and a view option redraws
it."""

import pytest

from conftest import pause, wait_for_app

pytestmark = pytest.mark.browser


def test_diffusion_page_plays_live_and_switches_its_field(app_server, page):
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(app_server.url + "/diffusion?seed=2&width=32&depth=2&batch=64&nfe=5")
    wait_for_app(page, 180_000)
    page.wait_for_function("() => [...document.querySelectorAll('[data-testid=stMain] [data-testid=dgmPlot]')]"
                           ".filter(e => e.dataset.drawn === 'true').length >= 6", timeout=60_000)
    charts = page.locator('[data-testid="stMain"] [data-testid="dgmPlot"]')
    learned = charts.filter(has_text="Learned score").first
    # the arrows are dense line segments on axes of fixed range: drawn on the canvas, not as SVG paths
    assert learned.evaluate("(root) => !!root.querySelector('canvas.dgm-dense')")
    page.evaluate("""() => {
        window.__updates = {learned: 0, samples: 0, exact: 0};
        for (const el of document.querySelectorAll('[data-testid=stMain] [data-testid=dgmPlot]')) {
            const title = el.querySelector('.gtitle') ? el.querySelector('.gtitle').textContent : '';
            if (title.startsWith('Learned')) el.on('plotly_afterplot', () => window.__updates.learned++);
            if (title.startsWith('Exact')) el.on('plotly_afterplot', () => window.__updates.exact++);
            if (title.startsWith('Samples')) el.on('plotly_afterplot', () => window.__updates.samples++);
        }
    }""")
    page.get_by_role("button", name="Play").click()
    # the first frame carries the run's first evaluation (seconds on a busy machine): wait for frames, not a time
    page.wait_for_function("() => window.__updates.learned >= 5 && window.__updates.samples >= 1", timeout=90_000)
    updates = page.evaluate("() => window.__updates")  # while it plays (Pause reruns the whole page)
    pause(page)
    wait_for_app(page)
    status = page.locator('[data-testid="stCaptionContainer"]', has_text="Iteration").first.inner_text()
    assert "Iteration 0" not in status
    assert updates["learned"] >= 5, updates  # every frame
    assert 1 <= updates["samples"] <= updates["learned"], updates  # about once a second (as often when frames are slow)
    assert updates["exact"] == 0, updates  # the same figure at every redraw: nothing for plotly to do
    page.get_by_text("velocity", exact=True).click()
    wait_for_app(page)
    assert "diffusion.field=velocity" in page.url
    page.wait_for_function("() => [...document.querySelectorAll('.gtitle')].some(e => e.textContent.startsWith("
                           "'Learned velocity'))", timeout=30_000)
    assert page.locator('[data-testid="stException"]').count() == 0
    assert not errors, errors
