"""The autoregressive page in a real browser: Play draws the samples one pixel at a time, in place, every
frame, while the dependency check and the curves redraw about once a second; Pause stops it cleanly."""

import re

import pytest

from conftest import pause, wait_for_app

pytestmark = pytest.mark.browser


def test_sampling_is_animated_pixel_by_pixel_while_the_page_plays(app_server, page):
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(app_server.url + "/autoregressive?seed=5&hidden=64")
    wait_for_app(page, 180_000)
    page.wait_for_function("() => document.querySelectorAll('[data-testid=dgmPlot][data-drawn=true]').length == 5",
                           timeout=60_000)
    assert page.get_by_text("Measured here:").is_visible()  # the sampling time beside the VAE's and a flow's
    page.get_by_role("button", name="Play").click()
    page.wait_for_timeout(2000)  # the run moves to a worker process
    page.evaluate("""() => {
        window.__titles = [];
        window.__updates = {};
        document.querySelectorAll('[data-testid=stMain] [data-testid=dgmPlot]').forEach((el, i) => {
            window.__updates[i] = 0;
            el.on('plotly_afterplot', () => {
                window.__updates[i]++;
                if (i === 0) window.__titles.push(el._fullLayout.title.text);
            });
        });
    }""")
    # however loaded the machine, the samples redraw every frame and the curves only now and then
    page.wait_for_function("() => window.__updates[0] >= 8 && window.__updates[4] >= 1", timeout=120_000)
    titles, updates = page.evaluate("() => [window.__titles, window.__updates]")
    pause(page)
    wait_for_app(page)
    steps = [int(m.group(1)) for t in titles if (m := re.match(r"Sampling one pixel at a time: step (\d+) of 64", t.replace("<br>", " ")))]
    assert len(set(steps)) >= 4, titles  # the batch builds up step by step
    rises = sum(b > a for a, b in zip(steps, steps[1:]))
    assert rises >= len(steps) - 2, steps  # step by step, with at most one new batch begun
    samples, curves = updates["0"], updates["4"]
    assert curves < samples, (samples, curves)
    status = page.locator('[data-testid="stCaptionContainer"]', has_text="paused").first
    status.wait_for(timeout=30_000)
    assert "Iteration 0 " not in status.inner_text()
    assert page.locator('[data-testid="stException"]').count() == 0
    assert not errors, errors
