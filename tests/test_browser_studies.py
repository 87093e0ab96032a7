"""A real browser on the Studies page: a small study runs in the background while the page shows its
progress, its chart appears with a point per seed, and a click on a point opens that run replayed on its page."""

import re

import pytest

from conftest import wait_for_app

pytestmark = pytest.mark.browser


def test_a_study_plays_and_a_seed_point_opens_its_run(app_server, page):
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(app_server.url + "/studies?seed=3")
    wait_for_app(page, 180_000)
    main = page.locator('[data-testid="stMain"]')
    main.get_by_test_id("stSelectbox").first.click()
    page.get_by_role("option", name="demo", exact=True).click()
    wait_for_app(page)
    for label, value in (("Seeds per setting", "2"), ("Steps per run", "20")):
        box = main.get_by_role("spinbutton", name=label)
        box.fill(value)
        box.press("Enter")
        wait_for_app(page)
    main.get_by_role("button", name="Run the study").click()
    main.get_by_text(re.compile(r"done: 4/4 runs, 100% of steps")).wait_for(timeout=120_000)
    wait_for_app(page)
    chart = main.locator('[data-testid="stVegaLiteChart"]')
    chart.first.wait_for(timeout=30_000)
    points = chart.locator('[aria-roledescription="circle"]')
    assert points.count() == 4, points.count()  # two settings x two seeds
    point = chart.locator('[aria-roledescription="circle"][aria-label*="seed: 4"][aria-label*="lr=0.1"]')
    point.first.click()
    page.wait_for_url(re.compile(r"/demo\?"), timeout=60_000)
    assert "lr=0.1" in page.url and "seed=4" in page.url and "steps=20" in page.url
    wait_for_app(page, 180_000)
    page.get_by_text("Iteration 20", exact=False).first.wait_for(timeout=60_000)
    assert page.locator('[data-testid="stException"]').count() == 0
    assert not errors, errors
