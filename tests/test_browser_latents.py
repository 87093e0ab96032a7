"""A real browser on the latents page (issue 22): the density network steps, and its K figure shows the
Monte Carlo estimate against K beside the encoder's IWAE."""

import pytest

from conftest import wait_for_app

pytestmark = pytest.mark.browser


def test_density_network_steps_and_draws_the_estimate_against_k(app_server, page):
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(app_server.url + "/latents?seed=1&width=32&k=10")
    wait_for_app(page, 180_000)
    assert page.get_by_text("Iteration 0", exact=True).is_visible()
    page.get_by_role("button", name="Step ×10").click()
    page.get_by_text("Iteration 10", exact=False).wait_for(timeout=60_000)
    wait_for_app(page, 60_000)
    k_chart = page.locator('[data-testid="stMain"] [data-testid="dgmPlot"]', has_text="by Monte Carlo from the prior")
    k_chart.first.wait_for(timeout=30_000)
    traces = k_chart.first.evaluate("(root) => root._fullData.map(t => [t.name, t.x.length])")
    names = [n for n, _ in traces]
    assert any(n.startswith("log (1/K)") for n in names) and "IWAE(k = 100), encoder" in names, traces
    assert dict(traces)["log (1/K) Σ p(x|z_k), z_k ~ p(z) (bars: ±1 sd)"] == 4  # K = 1, 10, 100, 1000
    assert page.get_by_text("IWAE (k = 100)").first.is_visible()
    assert page.locator('[data-testid="stException"]').count() == 0
    assert "seed=1" in page.url
    assert not errors, errors
