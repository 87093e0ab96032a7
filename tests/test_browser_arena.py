"""A real browser on the arena page (issue 23): Step trains every family and fills the measured table, the
small multiples draw one panel per family, and the altair chart that links the table to the curves is drawn."""

import pytest

from conftest import wait_for_app

pytestmark = pytest.mark.browser


def test_step_fills_the_table_and_the_linked_charts(app_server, page):
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(app_server.url + "/arena?seed=0&budget=10&measures=1")
    wait_for_app(page, 180_000)
    assert page.get_by_text("Iteration 0", exact=True).is_visible()
    page.get_by_role("button", name="Step ×10").click()
    page.get_by_text("Iteration 10", exact=False).wait_for(timeout=120_000)
    wait_for_app(page, 120_000)
    multiples = page.locator('[data-testid="stMain"] [data-testid="dgmPlot"]', has_text="Samples at step")
    multiples.first.wait_for(timeout=60_000)
    panels = multiples.first.evaluate("(root) => root._fullLayout.annotations.map(a => a.text)")
    assert [p.split(" (")[0] for p in panels] == ["GAN", "flow", "VAE", "autoregressive", "diffusion"]
    table = page.locator('[data-testid="stDataFrame"]').first
    table.wait_for(timeout=60_000)
    chart = page.locator('[data-testid="stVegaLiteChart"]').first
    chart.wait_for(timeout=60_000)
    view = chart.locator("canvas, svg").first
    view.wait_for(timeout=60_000)
    assert view.bounding_box()["height"] > 400  # the table, precision vs recall and two rows of curves
    assert page.locator('[data-testid="stException"]').count() == 0
    assert "budget=10" in page.url
    assert not errors, errors
