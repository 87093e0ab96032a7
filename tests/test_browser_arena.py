"""A real browser on the arena page (issue 23): Step trains every family and fills the measured table, the
small multiples draw one panel per family, and a click on a family in the altair chart (its row in the table or its
legend entry) picks it in every chart."""

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
    # the selection links the charts: a click on a family's row or its legend entry leaves only that
    # family's points opaque (the rest dimmed to 0.15); a double click shows every family again
    fams = ["GAN", "flow", "VAE", "autoregressive", "diffusion"]
    assert sorted(_opaque(chart)) == sorted(fams)
    _click(page, chart.locator('g.mark-rect.role-mark path[aria-label$="family: flow"]').first)
    assert _opaque(chart) == ["flow"]
    _click(page, chart.locator('g.mark-rect.role-mark path[aria-label$="family: flow"]').first, double=True)
    assert sorted(_opaque(chart)) == sorted(fams)
    _click(page, chart.locator(".role-legend-symbol path").nth(fams.index("VAE")))  # the legend is in their order
    assert _opaque(chart) == ["VAE"]
    assert page.locator('[data-testid="stException"]').count() == 0
    assert "budget=10" in page.url
    assert not errors, errors


def _opaque(chart) -> list[str]:
    """The families whose precision-vs-recall points are drawn opaque (vega's SVG: one path per point)."""
    return chart.evaluate("""e => [...new Set([...e.querySelectorAll('g.mark-symbol.role-mark path[aria-label*="family: "]')]
        .filter(p => p.getAttribute('opacity') == '1').map(p => p.getAttribute('aria-label').match(/family: ([^;]+)/)[1]))]""")


def _click(page, target, double: bool = False) -> None:
    """A real mouse click at the middle of an SVG mark (vega picks the mark under the pointer)."""
    target.scroll_into_view_if_needed()
    box = target.bounding_box()
    (page.mouse.dblclick if double else page.mouse.click)(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.wait_for_timeout(500)
