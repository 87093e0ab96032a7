"""A real browser on the latents page (issue 22): the density network steps, and its K figure shows the
Monte Carlo estimate against K beside the encoder's IWAE."""

import pytest

from conftest import pause, wait_for_app

pytestmark = pytest.mark.browser


def test_density_network_steps_and_draws_the_estimate_against_k(app_server, page):
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(app_server.url + "/latents?seed=1&width=32&k=10")
    wait_for_app(page, 180_000)
    assert page.get_by_text("Iteration 0", exact=True).is_visible()
    page.get_by_role("button", name="Step ×10").click()
    page.get_by_text("Iteration 10", exact=False).wait_for(timeout=60_000)
    # the Step's model shows at once; its evaluation (a worker's) follows
    page.wait_for_function("() => ![...document.querySelectorAll('[data-testid=stCaptionContainer]')]"
                           ".some(e => e.textContent.includes('evaluating this step'))", timeout=60_000)
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


@pytest.mark.parametrize("model,chart", [("gumbel", "KL(q(y|x)"), ("vqvae", "Codebook perplexity")])
def test_discrete_models_play_and_pause_in_the_browser(app_server, page, model, chart):
    """The Gumbel-softmax VAE and the VQ-VAE, chosen by the link: Play trains live, its chart follows the
    run, Pause stops it where it is."""
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(app_server.url + f"/latents?seed=2&model={model}")
    wait_for_app(page, 180_000)
    status = page.locator('[data-testid="stCaptionContainer"]', has_text="Iteration").first
    page.get_by_role("button", name="Play").click()
    page.wait_for_function("() => [...document.querySelectorAll('[data-testid=stCaptionContainer]')]"
                           ".some(e => /Iteration [1-9][0-9,]* .*playing/.test(e.textContent))", timeout=120_000)
    pause(page)
    page.get_by_role("button", name="Play").wait_for(timeout=120_000)
    wait_for_app(page, 120_000)
    shown = int(status.inner_text().split("Iteration", 1)[1].split()[0].replace(",", ""))
    assert shown > 0 and "paused" in status.inner_text()
    page.wait_for_timeout(1500)
    assert int(status.inner_text().split("Iteration", 1)[1].split()[0].replace(",", "")) == shown  # stopped
    assert page.locator('[data-testid="stMain"] [data-testid="dgmPlot"]', has_text=chart).count() >= 1
    assert page.locator('[data-testid="stException"]').count() == 0
    assert f"model={model}" in page.url
    assert not errors, errors
