"""Shared fixtures: AppTest pages, a live app server on loopback, and headless Chromium."""

from __future__ import annotations

import atexit
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import warnings
from pathlib import Path

import pytest

import dgm  # noqa: F401  (first: pins the CPU kernels before any test runs a torch op; dgm/core/kernels.py)

ROOT = Path(__file__).resolve().parents[1]
# the runs pages save for a server restart and the fast-forwards they open at (dgm/ui/persist.py): not the user's,
# and a fresh folder per test session (xdist's workers inherit it), so that nothing an earlier session left there
# (or a server that ran while the code changed) is read back
if not os.environ.get("DGM_RUN_DIR"):
    os.environ["DGM_RUN_DIR"] = tempfile.mkdtemp(prefix="dgm-test-runs-")
    atexit.register(shutil.rmtree, os.environ["DGM_RUN_DIR"], ignore_errors=True)
CHROMIUM = os.environ.get("DGM_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--font-render-hinting=none",
                 "--force-color-profile=srgb", "--hide-scrollbars"]


def pytest_addoption(parser):
    parser.addoption("--update-screenshots", action="store_true", default=False,
                     help="rewrite the screenshot baselines in tests/screenshots/ instead of comparing")


@pytest.fixture
def update_screenshots(request) -> bool:
    return bool(request.config.getoption("--update-screenshots"))


# ---- AppTest ----------------------------------------------------------------------------------

def charts(at) -> list[dict]:
    """The plotly figures an AppTest run shows (``dgm.ui.plotly_live`` charts), as plotly JSON dicts."""
    return [json.loads(json.loads(e.proto.json)["spec"]) for e in at.get("bidi_component")
            if e.proto.component_name == "dgm.plotly_live"]


def text(markdown: str) -> str:
    """What a markdown source with backslash escapes and word joiners (``dgm.ui.common.plain``) shows as
    text, less the invisible joiners."""
    import re

    return re.sub(r"\\(.)", r"\1", markdown).replace("\u2060", "")


SIDEBAR_PARAMS = {"seed", "device", "presenter"}  # read by the shared sidebar, on every page


def open_page(page: str | None = None, params: dict[str, str] | None = None, timeout: float = 120):
    """Run app.py in AppTest, then switch to ``page`` (e.g. "pages/gan.py") with URL ``params``. The first
    run shows the home page, which would drop a model page's parameters as unknown: those are set after
    it, the sidebar's before."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=timeout)
    params = params or {}
    for k, v in params.items():
        if page is None or k in SIDEBAR_PARAMS:
            at.query_params[k] = v
    at.run()
    if page is not None:
        for k, v in params.items():
            at.query_params[k] = v
        at.switch_page(page).run()
    return at


def settled(at, name: str):
    """An AppTest page after a Step that met a slow evaluation (``Trainer.slow_eval``), which a worker does
    while the page shows the trained model: the evaluated run taken and the page drawn again, as the page's
    fragment does when the worker's state comes. (Whether a Step goes to a worker depends on one being ready.)"""
    from dgm.ui import scheduling

    s = at.session_state[f"_live.{name}"]
    if s.tail is not None:
        with s.lock:
            assert scheduling.collect_tail(s, 120) and s.error is None
        at.run()
    return at


# ---- a live server and a browser --------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class AppServer:
    def __init__(self, env: dict[str, str] | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.env = env or {}

    def start(self, timeout: float = 60) -> "AppServer":
        cmd = [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.address", "127.0.0.1",
               "--server.port", str(self.port), "--server.headless", "true", "--browser.gatherUsageStats", "false"]
        self.log_path = ROOT / ".pytest_cache" / f"streamlit-{self.port}.log"
        self.log = open(self.log_path, "a") if self.log_path.parent.exists() else subprocess.DEVNULL
        env = {**os.environ, "MALLOC_ARENA_MAX": "2", **self.env}  # as `make run` starts the server
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env=env)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"streamlit exited with {self.proc.returncode}")
            try:
                with urllib.request.urlopen(self.url + "/_stcore/health", timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.3)
        raise RuntimeError("streamlit did not become healthy in time")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, 15)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, 9)
                self.proc.wait()


@pytest.fixture(scope="session")
def app_server():
    (ROOT / ".pytest_cache").mkdir(exist_ok=True)
    server = AppServer().start()
    yield server
    server.stop()
    assert server.proc.poll() is not None, "the app server is still running after stop()"


def chromium_available() -> bool:
    return Path(CHROMIUM).exists() or shutil.which("chromium") is not None


@pytest.fixture(scope="session")
def browser():
    if not chromium_available():
        if os.environ.get("CI"):
            pytest.fail(f"Chromium is missing at {CHROMIUM}; `make test` should have installed it")
        pytest.skip(f"Chromium is not installed at {CHROMIUM} (run `make browser`)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000}, device_scale_factor=1,
                              reduced_motion="reduce")
    pg = ctx.new_page()
    _record_events(pg)
    yield pg
    ctx.close()


def _record_events(pg) -> None:
    """Keep the page's uncaught errors, console errors and crashes, for ``shown``."""
    pg.dgm_events = []
    pg.on("pageerror", lambda e: pg.dgm_events.append(f"pageerror: {e}"))
    pg.on("console", lambda m: m.type == "error" and pg.dgm_events.append(f"console: {m.text[:300]}"))
    pg.on("crash", lambda _: pg.dgm_events.append("the page crashed"))


def wait_for_app(pg, timeout_ms: int = 60_000) -> None:
    """Wait until the app is connected, the script has finished and no skeleton remains."""
    try:
        pg.wait_for_selector('[data-testid="stApp"]', timeout=timeout_ms)
    except Exception:  # a blank page: the browser's app crashed (its error is among the page's events)
        raise AssertionError(f"no app on the page in {timeout_ms / 1000:.0f} s: {shown(pg, 'no-app')}") from None
    try:
        pg.wait_for_function(
            """() => {
                const app = document.querySelector('[data-testid="stApp"]');
                if (!app) return false;
                const skeleton = document.querySelector('[data-testid="stSkeleton"]');
                return app.getAttribute('data-test-script-state') === 'notRunning'
                    && app.getAttribute('data-test-connection-state') === 'CONNECTED' && !skeleton;
            }""",
            timeout=timeout_ms,
        )
    except Exception:  # say what kept it busy (a CI machine's files are gone afterwards)
        try:
            state = pg.evaluate("""() => { const a = document.querySelector('[data-testid="stApp"]');
                return a && [a.getAttribute('data-test-script-state'), a.getAttribute('data-test-connection-state'),
                             document.querySelectorAll('[data-testid="stSkeleton"]').length]; }""")
        except Exception as e:  # the page itself may be what failed
            state = f"unreadable: {str(e)[:200]}"
        raise AssertionError(f"the app never went idle in {timeout_ms / 1000:.0f} s (script state, connection, "
                             f"skeletons: {state}); the page shows {shown(pg, 'not-idle')}") from None
    pg.wait_for_timeout(500)


_GEOMETRY = """() => {
  const f = document.querySelector('[data-testid=stMain] [data-testid=dgmPlot]');
  const b = [...document.querySelectorAll('[data-testid=stMain] button')].find(x => x.checkVisibility() && /Play|Pause/.test(x.innerText));
  const r = (e) => { const q = e.getBoundingClientRect(); return [q.top, q.bottom, q.left, q.right]; };
  return {fig: f && r(f), play: b && r(b), scroll: window.scrollY};
}"""


def figure_geometry(pg) -> dict:
    """Where the page's main figure and its Play (or Pause) button are in the window, as [top, bottom, left,
    right] (None if absent), and how far the page is scrolled."""
    return pg.evaluate(_GEOMETRY)


# every chart title's edges against its chart's width (plotly draws titles as SVG text, unclipped)
_TITLES = """() => [...document.querySelectorAll('[data-testid=stMain] [data-testid=dgmPlot]')].flatMap(p => {
  const svg = p.querySelector('svg.main-svg'); if (!svg) return [];
  const w = svg.getBoundingClientRect();
  const box = (e) => { const b = e.getBoundingClientRect(); return {left: b.left, right: b.right, top: b.top, bottom: b.bottom}; };
  const legend = p.querySelector('.legend');
  return [...p.querySelectorAll('.gtitle, .xtitle')].map(t => { const b = t.getBoundingClientRect();
    return {text: t.textContent, left: b.left - w.left, right: b.right - w.left, width: w.width, box: box(t),
            legend: legend && t.classList.contains('xtitle') ? box(legend) : null}; });
})"""


def overflowing_titles(pg) -> list[dict]:
    """The chart titles and x-axis titles that run past their chart's left or right edge (by more than a pixel),
    and the x-axis titles that a legend overlaps."""
    def hit(a, b) -> bool:
        return b is not None and a["left"] < b["right"] - 1 and b["left"] < a["right"] - 1 \
            and a["top"] < b["bottom"] - 1 and b["top"] < a["bottom"] - 1

    return [t for t in pg.evaluate(_TITLES) if t["left"] < -1 or t["right"] > t["width"] + 1 or hit(t["box"], t["legend"])]


# every note drawn on a chart (plotly's annotations: a "12% of samples outside" note, a line's label) against
# the same chart's tick labels
_COVERED_TICKS = """() => [...document.querySelectorAll('[data-testid=stMain] [data-testid=dgmPlot]')].flatMap(p => {
  const boxes = (sel) => [...p.querySelectorAll(sel)].filter(e => e.textContent.trim())
    .map(e => ({text: e.textContent, r: e.getBoundingClientRect()})).filter(b => b.r.width > 0);
  const hit = (a, b) => a.left < b.right - 1 && b.left < a.right - 1 && a.top < b.bottom - 1 && b.top < a.bottom - 1;
  const ticks = boxes('.xtick text, .ytick text');
  return boxes('.annotation').flatMap(a => ticks.filter(t => hit(a.r, t.r)).map(t => a.text + ' covers ' + t.text));
})"""


def covered_ticks(pg) -> list[str]:
    """The notes on charts (annotations) that cover one of their chart's tick labels, as "note covers tick"."""
    return pg.evaluate(_COVERED_TICKS)


# the control bar (dgm.ui.view.loop's row, keyed "dgm-bar"): its shown buttons whose label the button cuts off
_CUT_LABELS = """() => { const bar = document.querySelector('[data-testid=stMain] .st-key-dgm-bar');
  return bar ? [...bar.querySelectorAll('button')].filter(b => b.checkVisibility())
    .filter(b => [...b.querySelectorAll('*')].some(e => e.scrollWidth > e.clientWidth + 1))
    .map(b => b.innerText.replace(/\\s+/g, ' ')) : ['no control bar']; }"""


def cut_labels(pg) -> list[str]:
    """The control bar's buttons (those shown) whose label is cut off (drawn with an ellipsis)."""
    return pg.evaluate(_CUT_LABELS)


def flat_numbers(v, prefix: str = "") -> dict[str, float]:
    """Every number in a nest of dicts and lists, by path (``a.b``, ``a[0]``); booleans and text left out."""
    if isinstance(v, dict):
        return {k2: v2 for k, x in v.items() for k2, v2 in flat_numbers(x, f"{prefix}.{k}" if prefix else str(k)).items()}
    if isinstance(v, (list, tuple)):
        return {k2: v2 for i, x in enumerate(v) for k2, v2 in flat_numbers(x, f"{prefix}[{i}]").items()}
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return {}
    return {prefix: float(v)}


def at_iteration(at) -> int:
    """The iteration in an AppTest page's status line."""
    for c in at.caption:
        m = re.search(r"Iteration ([\d,]+)", c.value)
        if m:
            return int(m.group(1).replace(",", ""))
    raise AssertionError("no status line")


def shown(pg, name: str) -> str:
    """What the page shows (its main text, for a failure message), with a full-page screenshot saved as
    .pytest_cache/NAME.png."""
    shot = ROOT / ".pytest_cache" / f"{name}.png"
    shot.parent.mkdir(exist_ok=True)
    events = f"; its events: {getattr(pg, 'dgm_events', [])[-8:]}"
    try:
        pg.screenshot(path=str(shot), full_page=True)
        return f"{shot}: " + repr(pg.locator('[data-testid="stMain"]').inner_text(timeout=5000)[:1500]) + events
    except Exception as e:  # the page itself may be what failed
        return f"(the page could not be read: {str(e)[:200]}; {pg.url}; html {pg.content()[:600]!r}){events}"


def iteration(pg) -> int:
    """The iteration the page's status line shows."""
    try:
        status = pg.locator('[data-testid="stCaptionContainer"]', has_text="Iteration").first.inner_text()
    except Exception:
        raise AssertionError(f"no status line; the page shows {shown(pg, 'no-status-line')}") from None
    return int(status.split("Iteration", 1)[1].split()[0].replace(",", ""))


_STATUS = "[...document.querySelectorAll('[data-testid=stCaptionContainer]')]"
# the buttons shown (Play and Pause are both on the page, the one that does not apply hidden)
_BUTTONS = "[...document.querySelectorAll('[data-testid=stMain] button')].filter(b => b.checkVisibility())"
_PLAYING = f"{_STATUS}.some(e => e.textContent.includes('Iteration') && e.textContent.includes('playing'))"
_PAUSED = f"{_STATUS}.some(e => e.textContent.includes('Iteration') && e.textContent.includes('paused'))"


def pause(pg, tries: int = 2) -> None:
    """Press Pause during play and wait until the status line says "paused" (a click taken while a frame is
    on its way shows with the frame after it). A click not taken is clicked again, but only after a minute and
    only while the page still says it plays (a click taken late is still a Pause: Play and Pause are two
    widgets). If the page shows no Pause button, the failure says what it shows instead."""
    _press(pg, "Pause", f"() => {_PAUSED} || {_BUTTONS}.some(b => b.innerText.includes('Play'))", tries,
           still=f"() => {_PLAYING}")


def play(pg, tries: int = 2) -> None:
    """Press Play and wait until the status line says "playing" (or the page shows Pause): as ``pause``, a
    click not taken is clicked again only after a minute and only while the page does not say it plays."""
    _press(pg, "Play", f"() => {_PLAYING} || {_BUTTONS}.some(b => b.innerText.includes('Pause'))", tries)


def _press(pg, button: str, reached: str, tries: int, still: str | None = None) -> None:
    """Click ``button`` until the JS predicate ``reached`` holds (each click given a minute); a further click
    only while ``still`` (the state before the first click) holds, where given."""
    for attempt in range(tries):
        if pg.evaluate(reached) or (attempt and still is not None and not pg.evaluate(still)):
            return
        try:
            pg.get_by_role("button", name=button).click(timeout=60_000)
        except Exception:
            if pg.evaluate(reached):
                return
            raise AssertionError(f"no {button} button to click; the page shows "
                                 f"{shown(pg, f'no-{button.lower()}-button')}") from None
        try:
            pg.wait_for_function(reached, timeout=60_000)
            return
        except Exception:
            if attempt == tries - 1:
                raise AssertionError(f"{button} never took effect ({tries} clicks): "
                                     f"{shown(pg, f'{button.lower()}-not-taken')}") from None
            # a click the page did not take in a minute (seen in loaded CIs: a timer tick behind a Pause blanked the
            # page, until common.timed_fragment; kept for any other cause): the warning summary says where
            warnings.warn(f"{button} not taken in 60 s on {pg.url}; clicked again", stacklevel=3)


def wait_for_charts(pg, timeout_ms: int = 60_000) -> None:
    """Wait until the page shows at least one chart and plotly.js has drawn every one of them. (At least
    one: between the script's first run and the one that draws the charts there may be none, and "every
    chart drawn" holds of no charts.)"""
    pg.wait_for_function(
        """() => {
            const charts = [...document.querySelectorAll('[data-testid=dgmPlot]')];
            return charts.length > 0 && charts.every(e => e.dataset.drawn === 'true' && e._fullLayout);
        }""",
        timeout=timeout_ms,
    )


# ---- running in parallel, and what is slow ---------------------------------------------------------

def browser_groups(workers: int) -> int:
    """How many xdist groups the browser tests form: one (one app server and one Chromium, shared) up to
    three workers; then one per two workers, at most four. Each group starts its own server and browser (the
    fixtures are per worker), which pays on a machine with the cores to run them side by side."""
    return max(1, min(4, workers // 2)) if workers >= 4 else 1


def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist (`make test` runs `-n WORKERS --dist loadgroup`), the browser tests of one file stay
    on one worker, and the files are dealt to ``browser_groups`` groups, heaviest first, so that the groups
    take about the same time; the other tests spread over every worker."""
    workers = getattr(config.option, "numprocesses", None)
    n = browser_groups(workers if isinstance(workers, int) else 0)
    files = dict.fromkeys(item.nodeid.split("::")[0] for item in items if item.get_closest_marker("browser"))
    load, group = [0.0] * n, {}
    for f in sorted(files, key=lambda f: (-BROWSER_WEIGHT.get(f, 30), f)):  # each file to the lightest group
        i = load.index(min(load))
        group[f], load[i] = f"browser{i}", load[i] + BROWSER_WEIGHT.get(f, 30)
    for item in items:
        if item.get_closest_marker("browser"):
            item.add_marker(pytest.mark.xdist_group(group[item.nodeid.split("::")[0]]))


#: seconds of test time per browser file (a `make test` on 2 cores): how the files are dealt to the groups
BROWSER_WEIGHT = {"tests/test_screenshots.py": 277, "tests/test_browser_classroom.py": 210,
                  "tests/test_browser_faults.py": 159, "tests/test_browser.py": 123}


_FILE_SECONDS: dict[str, float] = {}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed test that used a live server reports the end of that server's log with it (the CI runs on a
    machine whose files are gone afterwards: what the server logged is only where the report says it)."""
    outcome = yield
    rep = outcome.get_result()
    server = getattr(item, "funcargs", {}).get("app_server")
    path = getattr(server, "log_path", None)
    if rep.failed and path is not None and path.exists():
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
        rep.sections.append((f"the server's log, its last lines ({path.name})", "\n".join(lines[-60:])))


def pytest_runtest_logreport(report):
    path = report.nodeid.split("::")[0]
    _FILE_SECONDS[path] = _FILE_SECONDS.get(path, 0.0) + report.duration


def pytest_terminal_summary(terminalreporter):
    """Seconds spent per test file (setup, call and teardown; summed over workers), slowest first."""
    if not _FILE_SECONDS:
        return
    terminalreporter.section("seconds per test file")
    total = sum(_FILE_SECONDS.values())
    for path, sec in sorted(_FILE_SECONDS.items(), key=lambda kv: -kv[1])[:12]:
        terminalreporter.write_line(f"{sec:7.1f} s  {100 * sec / total:4.1f}%  {path}")
    terminalreporter.write_line(f"{total:7.1f} s  in all (the wall time is less with several workers)")
