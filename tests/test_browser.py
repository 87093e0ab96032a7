"""A real browser: streamlit on a free loopback port, headless Chromium through Playwright."""

import pytest

from conftest import wait_for_app

pytestmark = pytest.mark.browser


def test_home_page_renders_in_chromium(app_server, page):
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(app_server.url + "/")
    wait_for_app(page)
    assert page.locator("h1").first.inner_text() == "DGM Explorer"
    assert page.locator('[data-testid="stException"]').count() == 0
    assert page.get_by_text("Four families, four trade-offs").is_visible()
    assert page.locator('[data-testid="stSidebarNav"]').get_by_text("GAN dynamics").is_visible()
    assert not errors, errors


def test_demo_page_step_in_chromium(app_server, page):
    page.goto(app_server.url + "/demo?seed=1")
    wait_for_app(page)
    assert page.get_by_text("Iteration 0").is_visible()
    page.get_by_role("button", name="Step ×10").click()
    page.get_by_text("Iteration 10", exact=False).wait_for(timeout=30_000)
    assert page.locator('[data-testid="stException"]').count() == 0
    assert "seed=1" in page.url


def test_fresh_server_serves_the_navigation_to_simultaneous_first_visitors(browser):
    """Until app.py first reaches st.navigation, Streamlit would serve new sessions in its legacy
    pages/ mode (file names in the sidebar, the page script run without app.py)."""
    from conftest import AppServer

    server = AppServer().start()
    try:
        ctx = browser.new_context(viewport={"width": 1200, "height": 800})
        pages = [ctx.new_page() for _ in range(3)]
        for pg, path in zip(pages, ["/demo", "/", "/demo?seed=2"]):
            pg.goto(server.url + path, wait_until="commit")
        for pg in pages:
            wait_for_app(pg)
            nav = pg.locator('[data-testid="stSidebarNav"]')
            assert nav.get_by_text("Live loop demo").count() == 1, nav.inner_text()
            assert nav.get_by_text("app", exact=True).count() == 0
        ctx.close()
    finally:
        server.stop()
    assert server.proc.poll() is not None
