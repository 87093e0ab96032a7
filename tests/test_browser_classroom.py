"""In front of a class (issue 18), in headless Chromium: every page shows its main figure and its Play button
without scrolling on a 1280×720 projector in presenter mode (and starts it in the top third at 1400×900:
tests/test_screenshots.py); no chart title runs past its chart; lessons that watch a number reach their point after Play; Pause,
Step and Reset take effect while a page plays (how fast: bench/classroom.py)."""

from __future__ import annotations

import pytest

from conftest import (covered_ticks, cut_labels, figure_geometry, iteration, overflowing_titles, pause, play, shown,
                      wait_for_app, wait_for_charts)
from dgm.core import registry
from dgm.ui.pages import all_pages

pytestmark = pytest.mark.browser

PAGES = [p for p in all_pages() if p.experiment in registry.names()]

def _open(page, url: str) -> None:
    page.goto(url)
    wait_for_app(page, 240_000)
    wait_for_charts(page)


def test_the_figure_comes_first_and_chart_titles_fit(app_server, browser):
    """On a 1280×720 projector in presenter mode, every page shows its whole main figure and its Play button
    without scrolling, no chart title runs past its chart, no note on a chart covers its tick labels, the About box
    is not under the header and no label of the control bar is cut off. (At 1400×900
    without presenter mode the figure starts in the top third: tests/test_screenshots.py checks that on each page it
    opens, at no extra load.)"""
    width, height = 1280, 720
    ctx = browser.new_context(viewport={"width": width, "height": height}, reduced_motion="reduce")
    pg = ctx.new_page()
    for info in PAGES:
        _open(pg, f"{app_server.url}/{info.url}?presenter=true")
        g = figure_geometry(pg)
        where = f"{info.url} at {width}×{height}"
        assert g["scroll"] == 0 and g["play"] is not None and g["fig"] is not None, where
        assert 0 <= g["play"][0] and g["play"][1] <= height, where
        assert 0 <= g["fig"][0] and g["fig"][1] <= height, (where, g)  # the whole main figure on the projector
        assert not overflowing_titles(pg), where
        assert not covered_ticks(pg), (where, covered_ticks(pg))
        assert not cut_labels(pg), (where, cut_labels(pg))  # the control bar's labels whole
        header, about = pg.evaluate("""() => [document.querySelector('[data-testid=stHeader]'),
            document.querySelector('[data-testid=stMain] [data-testid=stExpander] details')]
            .map(e => e.getBoundingClientRect()).map(r => [r.top, r.bottom])""")
        assert about[0] >= header[1], (where, "the About box's top under the header", header, about)
    # a flow 20 steps in: some samples outside the view, and a note on the plane that says so, clear of its ticks
    _open(pg, f"{app_server.url}/flows?presenter=true&seed=0&steps=20")
    notes = pg.evaluate("() => [...document.querySelectorAll('.annotation')].map(e => e.textContent)")
    assert any("outside" in n for n in notes), notes
    assert not covered_ticks(pg), covered_ticks(pg)
    ctx.close()


#: lessons played to their point here: four pages, each lesson 5-20 s of the suite (the watch, its status line and
#: a fast-forward are one mechanism on every page); `make test-lessons` plays every lesson that watches a number,
#: and bench/classroom.py times them
PLAYED = ("vanilla GAN collapses", "posterior collapse", "2D: p(x1) p(x2|x1)", "mode covering vs seeking")
WATCHED = [(info, les) for info in PAGES for les in registry.get(info.experiment).lessons
           if les.watch is not None and les.name in PLAYED]
#: every lesson that watches a number: the others run with `make test-lessons` (pytest -m every_lesson; about
#: ten minutes on two cores, too long for every `make test`)
EVERY = [pytest.param(info, les, id=f"{info.url}-{les.name}",
                      marks=() if les.name in PLAYED else pytest.mark.every_lesson)
         for info in PAGES for les in registry.get(info.experiment).lessons if les.watch is not None]


@pytest.mark.parametrize("info,les", EVERY)
def test_a_lesson_reaches_its_point_after_play(app_server, page, info, les):
    from urllib.parse import quote

    _open(page, f"{app_server.url}/{info.url}?preset={quote(les.name)}")
    status = page.locator('[data-testid="stCaptionContainer"]', has_text="Iteration").first
    assert les.watch.label in status.inner_text()
    if les.watch.first:  # compares with another page's run: play that one first (sidebar), as the lesson says
        first = next(p for p in PAGES if p.url == les.watch.first)
        assert f"play the {first.title} page first" in status.inner_text()
        page.get_by_role("link", name=first.title, exact=True).first.click()
        wait_for_app(page)
        play(page)
        page.wait_for_timeout(10_000)
        pause(page)
        page.get_by_role("link", name=info.title, exact=True).first.click()
        wait_for_app(page)
        assert les.watch.label in status.inner_text(), shown(page, "back-to-the-lesson")  # the lesson is open again
    # a number measured on request: the status line says which button, and from which step the measurement counts
    # (``after``) where the page is not there yet; the lesson presses it before Play where the page opens there (a
    # fast-forward), else once the run gets there
    early = False
    if les.watch.press:
        text = status.inner_text()
        assert f"press {les.watch.press}" in text
        if les.watch.after:
            early = iteration(page) >= les.watch.after
            assert (f"from step {les.watch.after:,} on" in text) is not early, text
    if early:
        page.get_by_role("button", name=les.watch.press).click()
    play(page)
    if les.watch.press and not early:
        if les.watch.after:  # the student plays that far first, as the status line says
            _until(page, f"parseInt((t.match(/Iteration ([\\d,]+)/) || [0, '-1'])[1].replace(/,/g, '')) >= "
                   f"{les.watch.after}", f"Play: step {les.watch.after}", timeout_ms=120_000)
        page.get_by_role("button", name=les.watch.press).click()
    # the page says when its number reaches the lesson's point (how soon: bench/classroom.py). A lesson that opens
    # at a fast-forward its server has not prepared trains it at most two minutes, then plays on: the PacGAN
    # lottery's 6,000 steps, with another lesson beside it (make test-lessons), got 18 steps in those two minutes
    # and was 22 steps short of its point after four
    minutes = 8 if les.start else 4
    try:
        page.wait_for_function("() => [...document.querySelectorAll('[data-testid=stCaptionContainer]')]"
                               ".some(e => e.textContent.includes(\"the lesson's point\"))",
                               timeout=minutes * 60_000)
    except Exception:
        raise AssertionError(f"the lesson's point not shown after {minutes} minutes of play: "
                             f"{shown(page, 'no-point')}") from None
    pause(page)


#: the pages whose controls issue 18 found slow, and the GAN lottery (many runs in one trainer: its Reset once
#: crashed the page). The others share the same control bar and live loop; timing every page in the browser
#: costs the suite minutes: bench/classroom.py measures them all
CONTROLLED = [p for p in PAGES if p.url in ("demo", "gan", "gan_seeds", "flows", "vae")]


def _until(page, status_js: str, what: str, timeout_ms: int = 60_000) -> None:
    """Wait until some status line satisfies ``status_js`` (a JS expression of its text ``t``); a failure says
    which wait it was and what the page shows."""
    try:
        page.wait_for_function("() => [...document.querySelectorAll('[data-testid=stCaptionContainer]')]"
                               f".some(e => {{ const t = e.textContent; return {status_js}; }})", timeout=timeout_ms)
    except Exception:
        raise AssertionError(f"{what}: not seen in {timeout_ms / 1000:.0f} s; the page shows "
                             f"{shown(page, what.split()[0].lower() + '-' + page.url.split('/')[-1][:20])}") from None


@pytest.mark.parametrize("info", CONTROLLED, ids=[p.url for p in CONTROLLED])
def test_pause_step_and_reset_take_effect_during_play(app_server, page, info):
    _open(page, f"{app_server.url}/{info.url}")
    status = lambda: page.locator('[data-testid="stCaptionContainer"]', has_text="Iteration").first  # noqa: E731
    boxes = lambda: [page.get_by_role("button", name=n, exact=True).bounding_box()  # noqa: E731
                     for n in ("Play" if "paused" in status().inner_text() else "Pause", "Reset")]
    paused = boxes()
    page.get_by_role("button", name="Play").click()
    _until(page, "t.includes('playing')", "Play: the status line saying playing")
    page.wait_for_timeout(2000)
    assert boxes() == paused  # Pause takes Play's place, at Play's size: the bar does not move under the pointer
    assert not cut_labels(page), cut_labels(page)  # Pause's label whole at 1400 px, the sidebar open
    page.set_viewport_size({"width": 1280, "height": 720})  # a projector's, the sidebar still open
    page.wait_for_timeout(300)
    assert not cut_labels(page), ("at 1280×720", cut_labels(page))
    page.set_viewport_size({"width": 1400, "height": 900})
    pause(page)
    page.get_by_role("button", name="Play").wait_for(timeout=120_000)
    # (seen twice in a loaded CI: Play back but no status saying paused. A timer tick that reached the server
    # behind the Pause dropped the full run's status line; common.timed_fragment)
    _until(page, "t.includes('paused')", "Pause: Play is back, the status line saying paused")
    wait_for_app(page)
    before = status().inner_text()
    page.get_by_role("button", name="Step ×10").click()
    _until(page, f"t.includes('Iteration') && !t.startsWith({before[:20]!r})", "Step: the iteration moving",
           120_000)  # a Step can end in an evaluation (the lottery's: eight runs)
    page.get_by_role("button", name="Play").click()
    page.wait_for_timeout(1500)
    page.get_by_role("button", name="Reset", exact=True).click()
    _until(page, "t.includes('Iteration 0 ') && t.includes('paused')", "Reset: Iteration 0, paused")


def test_a_step_shows_its_model_at_once_and_its_slow_evaluation_when_it_comes(app_server, page):
    """The GAN lottery evaluates eight runs (seconds): a Step that meets an evaluation (the initial one, or those
    at steps 20 and 50) shows that step at once, saying "evaluating this step" while a worker does it, then
    shows the evaluated run; every Step still trains its 10 steps (dgm.ui.scheduling.step). (On a server just started,
    the first Steps may find no worker ready yet and evaluate in the server: the later ones must not.)"""
    _open(page, f"{app_server.url}/gan_seeds")
    status = ("([...document.querySelectorAll('[data-testid=stCaptionContainer]')]"
              ".find(e => e.textContent.includes('Iteration')) || {textContent: ''}).textContent")
    page.evaluate(f"""() => {{ window.__seen = [];
        setInterval(() => {{ const s = {status} + ' | charts ' + document.querySelectorAll('[data-testid=dgmPlot]').length;
                             if (window.__seen.at(-1) !== s) window.__seen.push(s); }}, 20); }}""")
    for k in range(1, 7):
        page.get_by_role("button", name="Step ×10").click()
        page.wait_for_function(f"() => {{ const s = {status}; return s.includes('Iteration {10 * k} ') && "
                               "!s.includes('evaluating'); }", timeout=120_000)
        wait_for_app(page)
    seen = page.evaluate("() => window.__seen")
    met = [s for s in seen if "evaluating this step" in s]
    assert any("Iteration 50 " in s for s in met) or any("Iteration 20 " in s for s in met), seen
    # the page shows that step meanwhile: its figures stay (a timed frame that drew nothing while it waited for
    # the evaluation took the main figure away)
    charts = seen[-1].rsplit(" ", 1)[1]
    assert all(s.endswith(f"charts {charts}") for s in met), seen
