"""What a class sees, timed in headless Chromium: per page, the time to the first chart and how fast the
controls answer while it plays; per lesson, the time from pressing Play to the lesson's point.

    .venv/bin/python bench/classroom.py                     # every page and every lesson
    .venv/bin/python bench/classroom.py gan vae             # these pages (and their lessons)
    .venv/bin/python bench/classroom.py --pages-only        # no lessons
    .venv/bin/python bench/classroom.py --pages-only --pauses 7 gan_seeds   # Pause 7 times: median and each
    .venv/bin/python bench/classroom.py --pages-only --steps 7 gan_seeds    # also 7 Steps from step 0: each
    .venv/bin/python bench/classroom.py --lessons-only --seconds 60
    .venv/bin/python bench/classroom.py --points-only       # each lesson's point, headless only (no browser)
    .venv/bin/python bench/classroom.py --app /path/to/other/checkout   # time another version's server

Per page (``dgm.ui.pages.all_pages()``, so new pages are measured too):

- *first chart*: a fresh browser profile (nothing cached) opens the page; the time from the navigation to the
  first drawn chart, and how long after the page's script first went idle it came (0 when before). Then a
  second tab of the same profile opens it again (plotly.js cached).
- *Pause*, *Step*, *Reset* and *data*: the page plays for a few seconds, then the button is clicked from
  inside the page and the page polls every 10 ms until the click shows: Pause until the button reads Play and
  the status line "paused"; Step until the iteration changes; Reset until the status shows iteration 0; a
  change of the data set (pages with a ``data`` knob) until a spinner or the new run's status line shows.

Per lesson (each ``Lesson`` with a ``watch``): the step at which the watched value first reaches the lesson's
point is found headless (seed 0, the same run the page trains: a seed fixes a run); then the page opens the
lesson, Play is pressed, and the time until the page's iteration reaches that step (or, where the page
shows the watch, until it says the point is reached) is the lesson's time to its point. The bench does what the
lesson asks, as a student would: a number measured on request has its button pressed right after Play, or once
the run reaches the step from which the measurement counts (``watch.after``), or before Play where the lesson
opens past that step (timed);
a lesson that compares with another page's run plays that page for 10 s first (untimed). The lessons' watches
come from this checkout even with ``--app`` (the "before" measurement of a version without them).

The browser shares this machine's CPUs with the server and the training workers, as a teacher's laptop does.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from conftest import CHROMIUM, CHROMIUM_ARGS, wait_for_app  # noqa: E402

# -- the server ---------------------------------------------------------------------------------------


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``streamlit run app.py`` of a checkout, on a free loopback port."""

    def __init__(self, app_dir: Path):
        self.dir, self.port = app_dir, _port()
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> "Server":
        cmd = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.address", "127.0.0.1", "--server.port",
               str(self.port), "--server.headless", "true", "--browser.gatherUsageStats", "false"]
        env = {**os.environ, "MALLOC_ARENA_MAX": "2", "PYTHONPATH": str(self.dir)}
        log = open(os.environ["DGM_BENCH_LOG"], "ab") if os.environ.get("DGM_BENCH_LOG") else subprocess.DEVNULL
        self.proc = subprocess.Popen(cmd, cwd=self.dir, env=env, stdout=log, stderr=log)  # DGM_BENCH_LOG: its log
        for _ in range(300):
            try:
                with urllib.request.urlopen(self.url + "/_stcore/health", timeout=1):
                    return self
            except OSError:
                time.sleep(0.3)
        raise RuntimeError("the server did not start")

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


# -- in the page ----------------------------------------------------------------------------------------

# Recorded from the navigation on: when the script first ran and went idle, and when the first chart was drawn.
TIMELINE = """() => {
  window.__t = {idle: null, chart: null, ran: false};
  const iv = setInterval(() => {
    const app = document.querySelector('[data-testid="stApp"]');
    const state = app && app.getAttribute('data-test-script-state');
    if (state === 'running') window.__t.ran = true;
    if (window.__t.idle === null && window.__t.ran && state === 'notRunning') window.__t.idle = performance.now();
    if (window.__t.chart === null && document.querySelector('[data-testid=dgmPlot][data-drawn=true]'))
      window.__t.chart = performance.now();
    if (window.__t.idle !== null && window.__t.chart !== null) clearInterval(iv);
  }, 10);
}"""

STATUS_JS = """() => { const el = [...document.querySelectorAll('[data-testid="stCaptionContainer"]')]
  .find(e => e.textContent.includes('Iteration')); return el ? el.textContent : ''; }"""

# Click a button whose label contains ``label`` and wait (polling every 10 ms) until ``until`` (a JS expression
# over ``status()``, the status line, and ``button(label)``) holds: the milliseconds, or -1 after ``limit`` ms.
CLICK_JS = """async ([label, until, limit]) => {
  const status = %s;
  const button = (l) => [...document.querySelectorAll('[data-testid=stMain] button')].find(b => b.checkVisibility() && b.innerText.includes(l));
  const check = new Function('status', 'button', 'return (' + until + ');');
  const b = button(label);
  if (!b) return -2;
  const t0 = performance.now();
  b.click();
  return await new Promise((resolve) => {
    const iv = setInterval(() => {
      let ok = false;
      try { ok = check(status, button); } catch (e) { ok = false; }
      if (ok) { clearInterval(iv); resolve(performance.now() - t0); }
      else if (performance.now() - t0 > limit) { clearInterval(iv); resolve(-1); }
    }, 10);
  });
}""" % STATUS_JS

ITERATION = "(parseInt((status().match(/Iteration ([\\d,]+)/) || [0, '-1'])[1].replace(/,/g, '')))"


def _ms(v: float) -> str:
    return "—" if v is None else ("not seen" if v < 0 else f"{v / 1000:.2f} s")


def first_chart(browser, url: str) -> dict:
    """A cold profile opens the page, then a second tab of the same profile (plotly.js cached)."""
    ctx = browser.new_context(viewport={"width": 1400, "height": 900})
    out = {}
    for visit in ("cold", "warm"):
        pg = ctx.new_page()
        pg.add_init_script(f"({TIMELINE})()")
        pg.goto(url)
        try:
            pg.wait_for_function("() => window.__t && window.__t.chart !== null && window.__t.idle !== null",
                                 timeout=180_000)
            t = pg.evaluate("() => window.__t")
            out[visit] = (t["chart"], max(0.0, t["chart"] - t["idle"]))
        except Exception:  # noqa: BLE001 - reported as not seen
            out[visit] = (-1, -1)
        pg.close()
    ctx.close()
    return out


def controls(browser, url: str, data: tuple[str, str] | None, warm_s: float = 5.0, pauses: int = 1,
             steps: int = 1) -> dict:
    """Pause, Step, Reset (and a data change: ``data`` is the data knob's label and another of its choices)
    clicked while the page plays; Pause ``pauses`` times (after plays of different lengths: a Pause lands
    in training or in an evaluation), its median reported and every time kept. Step is timed until the click
    shows (the iteration moves, or the status line says "evaluating this step"); with ``steps`` over 1, also
    ``steps`` Steps in a row from the fresh run after Reset, each until it shows and until it is done."""
    ctx = browser.new_context(viewport={"width": 1400, "height": 900})
    pg = ctx.new_page()
    pg.goto(url)
    wait_for_app(pg, 180_000)
    out = {}

    def click(label: str, until: str, limit: float = 60_000) -> float:
        return pg.evaluate(CLICK_JS, [label, until, limit])

    def play() -> None:
        click("Play", "button('Pause') && status().includes('playing')")
        pg.wait_for_timeout(warm_s * 1000)

    def step_once() -> tuple[float, float]:
        """A Step: ms until it shows its model (the iteration moves), and until it is done (its evaluation too).
        (Until the twelfth session "shows" also counted the status "evaluating this step" alone, which a Step
        from a step whose evaluation was still to do said long before it showed the Step's model.)"""
        it = pg.evaluate(f"() => {{ const status = {STATUS_JS}; return {ITERATION}; }}")
        t0 = time.perf_counter()
        answer = click("Step", f"{ITERATION} > {it}")
        pg.wait_for_function(f"() => {{ const status = {STATUS_JS}; return {ITERATION} > {it} && "
                             "!status().includes('evaluating'); }", timeout=60_000, polling=10)
        done = 1000 * (time.perf_counter() - t0)
        wait_for_app(pg)
        return answer, done

    times = []
    for k in range(pauses):
        play()
        if k:
            pg.wait_for_timeout(370 * k)
        times.append(click("Pause", "button('Play') && status().includes('paused')"))
        wait_for_app(pg)
    out["pause"], out["pauses"] = sorted(times)[len(times) // 2], times
    out["step"] = step_once()[0]
    play()
    out["reset"] = click("Reset", "status().includes('Iteration 0 ') && button('Play')")
    wait_for_app(pg)
    if steps > 1:  # Steps through a fresh run's start, where its evaluations come every few Steps
        both = [step_once() for _ in range(steps)]
        out["steps"], out["steps_done"] = [a for a, _ in both], [d for _, d in both]
    if data is not None:
        play()
        label, option = data
        box = pg.locator('[data-testid="stSidebar"] [data-testid="stSelectbox"]', has_text=label).first
        t0 = time.perf_counter()
        try:
            box.click()
            pg.keyboard.type(option)  # the list is virtual: an option far down it is not in the page until typed
            pg.keyboard.press("Enter")
            clicked = time.perf_counter()
            pg.wait_for_function(f"""() => {{ const status = {STATUS_JS};
                return document.querySelector('[data-testid=stSpinner]') || status().includes('Iteration 0 '); }}""",
                                 timeout=120_000, polling=10)
            out["data"] = 1000 * (time.perf_counter() - clicked)
        except Exception:  # noqa: BLE001
            out["data"] = -1
        del t0
    ctx.close()
    return out


def lesson_time(browser, url: str, target: int, seconds: float, watch, first_title: str = "",
                title: str = "") -> dict:
    """Open a lesson, do what it asks and time it to its point from pressing Play: until the page's status line
    says the point is reached, or, on a page that does not show the lesson's number (``watch.label``), until
    its iteration reaches ``target``, the step at which the point is reached headless. As the lesson says (and
    the browser lesson test does): a lesson that compares with another page's run (``watch.first``) plays that
    page (``first_title`` in the sidebar) for 10 s first, untimed; a number measured on request has its button
    (``watch.press``) pressed right after Play, or from step ``watch.after`` on (before Play where the lesson opens
    there), timed."""
    ctx = browser.new_context(viewport={"width": 1400, "height": 900})
    pg = ctx.new_page()
    t0 = time.perf_counter()
    pg.goto(url)
    wait_for_app(pg, 300_000)
    opened = time.perf_counter() - t0
    if watch.first:
        pg.get_by_role("link", name=first_title, exact=True).first.click()
        wait_for_app(pg, 300_000)
        pg.evaluate(CLICK_JS, ["Play", "button('Pause')", 30_000])
        pg.wait_for_timeout(10_000)
        pg.evaluate(CLICK_JS, ["Pause", "button('Play')", 30_000])
        wait_for_app(pg)
        pg.get_by_role("link", name=title, exact=True).first.click()
        wait_for_app(pg, 300_000)
    start = pg.evaluate(f"() => {{ const status = {STATUS_JS}; return {ITERATION}; }}")
    reached = ("status().includes(\"the lesson's point\") || "
               f"({ITERATION} >= {target} && !status().includes({json.dumps(' · ' + watch.label)}))")
    # also when the iteration first reaches the target step, whatever the page shows (the measure a version
    # without the lesson's watch gets: its "before")
    pg.evaluate(f"""() => {{ const status = {STATUS_JS}; const t0 = performance.now(); window.__toStep = -1;
        const iv = setInterval(() => {{ if ({ITERATION} >= {target}) {{ window.__toStep = performance.now() - t0;
        clearInterval(iv); }} }}, 10); }}""")
    if not watch.press:
        ms = pg.evaluate(CLICK_JS, ["Play", reached, seconds * 1000])
    else:
        t0 = time.perf_counter()
        early = 0 < watch.after <= start  # the lesson opens where the measurement counts: pressed before Play
        if early:
            pg.get_by_role("button", name=watch.press).click()
        pg.evaluate(CLICK_JS, ["Play", "button('Pause')", seconds * 1000])
        try:
            if watch.after and not early:  # the status line asks for the measurement from that step on
                pg.wait_for_function(f"() => {{ const status = {STATUS_JS}; return {ITERATION} >= {watch.after}; }}",
                                     timeout=seconds * 1000, polling=10)
            if not early:
                pg.get_by_role("button", name=watch.press).click()
            pg.wait_for_function(f"() => {{ const status = {STATUS_JS}; return {reached}; }}",
                                 timeout=seconds * 1000, polling=10)
            ms = 1000 * (time.perf_counter() - t0)
        except Exception:  # noqa: BLE001
            ms = -1
    last = pg.evaluate(f"() => {{ const status = {STATUS_JS}; return {ITERATION}; }}")
    to_step = pg.evaluate("() => window.__toStep")
    ctx.close()
    return {"open": opened, "start": start, "play_to_point": ms, "to_step": to_step, "last": last}


# -- the lessons' points, headless -----------------------------------------------------------------------------

def point_step(exp, les, max_steps: int, max_seconds: float = 300, seed: int = 0) -> int | None:
    """The first step (from the lesson's opening step ``start`` on, in multiples of the watch's ``every``) at
    which ``seed`` of the lesson (a lesson link's seed is 0) reaches its point."""
    t = exp.make(exp.config(**les.values), seed=seed, device="cpu")
    t.step(les.start)  # the page's fast-forward
    w = les.watch
    t0 = time.perf_counter()
    while t.iteration <= max_steps and time.perf_counter() - t0 < max_seconds:
        if w.measure is not None:
            w.measure(t)  # what the lesson's button (``press``) does on the page
        if w.reached(t):
            return t.iteration
        t.step(w.every)
    return None


def _data_change(exp) -> tuple[str, str] | None:
    """The data knob's label as the sidebar shows it, and a choice other than its default (a 2D set where the
    default is one), or None where the page has no data knob."""
    from dgm.core import config as cfglib

    k = cfglib.knob_map(exp.config).get("data")
    if k is None or not k.choices:
        return None
    others = [c for c in k.choices if c not in (k.default, "custom")]
    pick = next((c for c in ("moons", "ring8", "8gaussians") if c in others), others[0] if others else None)
    return None if pick is None else (k.label[:1].upper() + k.label[1:], pick)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("pages", nargs="*")
    ap.add_argument("--app", type=Path, default=ROOT)
    ap.add_argument("--pages-only", action="store_true")
    ap.add_argument("--pauses", type=int, default=1, help="Pause this many times per page (the median is shown)")
    ap.add_argument("--steps", type=int, default=1, help="Step this many times per page (the median is shown)")
    ap.add_argument("--lessons-only", action="store_true")
    ap.add_argument("--points-only", action="store_true", help="find each lesson's point headless; no browser")
    ap.add_argument("--seconds", type=float, default=60.0, help="at most this long per lesson after Play")
    ap.add_argument("--seeds", default="", help="with --points-only: also each lesson's point on these seeds "
                    "(e.g. 1-4: a link with another seed), found the same way")
    ap.add_argument("--lesson", default="", help="only the lessons whose name contains this")
    ap.add_argument("--seed", type=int, default=0, help="play the lesson links with this seed (`&seed=N`; a lesson "
                    "link's own is 0): each lesson's slower seeds, timed in the browser")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()

    import dgm  # noqa: F401  (pins the kernels)
    from dgm.core import registry
    from dgm.ui.pages import all_pages

    infos = [p for p in all_pages() if p.experiment in registry.names() and (not args.pages or p.url in args.pages)]
    results: dict = {"app": str(args.app), "pages": {}, "lessons": {}}
    targets = {}
    if not args.pages_only:
        for info in infos:
            exp = registry.get(info.experiment)
            for les in exp.lessons:
                if getattr(les, "watch", None) is None or args.lesson.lower() not in les.name.lower():
                    continue
                t0 = time.perf_counter()
                targets[(info.url, les.name)] = step = point_step(exp, les, les.watch.max_steps, seed=args.seed)
                print(f"  {info.url} / {les.name}: point ({les.watch.label} {les.watch.goal}) at step {step}"
                      + (f" on seed {args.seed}" if args.seed else "") + ", "
                      f"the page opens at {les.start:,} (headless, {time.perf_counter() - t0:.0f} s)", flush=True)
                if args.points_only and args.seeds:
                    lo, _, hi = args.seeds.partition("-")
                    steps = {s: point_step(exp, les, les.watch.max_steps, seed=s) for s in range(int(lo), int(hi or lo) + 1)}
                    print("    other seeds: " + ", ".join(f"seed {s} at {v}" for s, v in steps.items()), flush=True)
    if args.points_only:
        return
    from playwright.sync_api import sync_playwright

    with Server(args.app) as server, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        warm = browser.new_page()
        warm.goto(server.url + "/")
        wait_for_app(warm, 180_000)  # the server's first run (imports) is not any page's
        warm.close()
        if not args.lessons_only:
            print("page          first chart (cold: from navigation / after idle)  warm     Pause    Step     "
                  "Reset    data")
            for info in infos:
                exp = registry.get(info.experiment)
                fc = first_chart(browser, f"{server.url}/{info.url}")
                c = controls(browser, f"{server.url}/{info.url}", _data_change(exp), pauses=args.pauses,
                             steps=args.steps)
                results["pages"][info.url] = {"first_chart": fc, "controls": c}
                print(f"{info.url:13s} {_ms(fc['cold'][0]):>8s} / {_ms(fc['cold'][1]):>8s}"
                      f"{'':30s}{_ms(fc['warm'][1]):>8s} {_ms(c['pause']):>8s} {_ms(c['step']):>8s} "
                      f"{_ms(c['reset']):>8s} {_ms(c.get('data')):>8s}"
                      + (f"   Pauses: {' '.join(_ms(x) for x in c['pauses'])}" if args.pauses > 1 else "")
                      + (f"   Steps from 0 (shown/done): "
                         f"{' '.join(f'{_ms(a)}/{_ms(d)}' for a, d in zip(c['steps'], c['steps_done']))}"
                         if args.steps > 1 else ""), flush=True)
        if not args.pages_only:
            print("lesson                                         point at   opens at  open     Play to point")
            for (url, name), step in targets.items():
                if step is None:
                    print(f"{url}/{name}: the point is not reached headless")
                    continue
                from urllib.parse import quote

                les = next(x for i in infos if i.url == url for x in registry.get(i.experiment).lessons if x.name == name)
                info = next(i for i in infos if i.url == url)
                first = next((i.title for i in all_pages() if i.url == les.watch.first), "")
                seed = f"&seed={args.seed}" if args.seed else ""
                r = lesson_time(browser, f"{server.url}/{url}?preset={quote(name)}{seed}", step, args.seconds, les.watch,
                                first, info.title)
                results["lessons"][f"{url}/{name}"] = {"step": step, **r}
                to = (_ms(r["play_to_point"]) if r["play_to_point"] >= 0 else
                      f"> {args.seconds:.0f} s (step {r['last']:,})")
                print(f"{(url + ' / ' + name)[:46]:46s} {step:>8,} {r['start']:>9,}  {r['open']:5.1f} s  {to}"
                      f"   (step {step:,} shown after {_ms(r['to_step'])})", flush=True)
        browser.close()
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
