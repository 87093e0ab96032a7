"""The live loop every page uses, and the ``View`` API that says what a page draws of its run.

    state = view.loop(exp, cfg, MyView())

While playing, a fragment with ``run_every`` redraws the page's main view up to six times a second,
and a second fragment its panels (side figures, curves, captions) once a second, so that a frame sends
and re-renders only the main view. Training goes on meanwhile (``dgm.ui.scheduling``). At a fixed speed
(1, 10, 100 or 1000 steps per frame) each redraw trains exactly that many steps first.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

import streamlit as st

from dgm.core import registry
from dgm.core.registry import Experiment
from dgm.core.train import Trainer
from dgm.ui import common, garbage, pages, plotly_live, scheduling, session, share
from dgm.ui.session import LiveState

log = logging.getLogger(__name__)


def _safely(fn: Callable, *args: Any) -> Any:
    try:
        return fn(*args)
    except Exception as e:  # a figure must never take the page down
        log.exception("drawing failed")
        st.error(f"Could not draw the figures: {common.plain(e)}", icon=":material/warning:")
        return None


class View:
    """What a page shows of its run, in parts drawn at different rates.

    ``layout(trainer)`` runs in every full run of the page, before any figure: it places the
    containers the other two fill (and any widget that changes what they show, e.g. a timeline).
    ``main(trainer)`` draws the main view at every frame; ``panels(trainer)`` draws the rest (side
    panels, curves, captions) about once a second while the run plays, in a fragment of its own, so
    that a frame sends, and the browser re-renders, only the main view. Both run holding the run's
    lock and may return a function that builds and shows the figures after the lock is released.
    ``self.state`` is the page's LiveState (set by ``loop`` before ``layout``); ``self.timed`` is True in the
    panels' timed redraws while the run plays and False in a full run of the page (a click, a knob, a Pause)."""

    state: LiveState
    timed: bool = False

    def layout(self, trainer: Trainer) -> None:
        pass

    def main(self, trainer: Trainer) -> Callable[[], None] | None:
        raise NotImplementedError

    def panels(self, trainer: Trainer) -> Callable[[], None] | None:
        return None

    def held(self, fig: Callable[[], Any], key: str, seconds: float) -> None:
        """Show the figure ``fig()`` as ``common.plot`` does, but in the panels' timed redraws build it at most
        every ``seconds``: in between, the chart is sent the figure it already shows, which the browser skips. For
        a panel that costs the browser far more than the rest (the flows' nine layer panels: ~200 ms a redraw in
        headless Chromium on a 2-core Xeon, while the main view and a Pause wait for it). A full run builds it anew."""
        kept = self.state.view_state.setdefault("held", {})
        now = time.monotonic()
        built, spec = kept.get(key, (0.0, None))
        if not self.timed or spec is None or now - built >= seconds:
            spec = common.styled(fig).to_json()
            kept[key] = (now, spec)
        plotly_live.chart(spec, key)


def _is_lessons_run(exp: Experiment, les, cfg: Any) -> bool:
    """Whether ``cfg`` is the lesson's configuration (its knob values, the others at their defaults)."""
    from dgm.core import config as cfglib

    try:
        return cfglib.to_dict(cfg) == cfglib.to_dict(exp.config(**les.values))
    except (TypeError, ValueError):
        return False


def _watch_text(les, trainer: Trainer) -> str:
    """The lesson's number now, and whether it has reached the lesson's point ("modes captured 3, the point:
    = 8")."""
    if les is None or les.watch is None:
        return ""
    w = les.watch
    v = w.value(trainer)
    at = w.at(trainer) if w.measured is not None else None  # a measurement on request: the step it was taken at
    if v is None:
        press = f": press **{w.press}**" if w.press else ""
        if w.press and w.after:
            if at is not None and at < w.after:  # pressed in the run's first steps, before the number means anything
                return (f" · {w.label}: measured at step {at:,}, too early: press **{w.press}** again from step "
                        f"{w.after:,} on (the point: {w.goal})")
            if trainer.iteration < w.after:
                press += f" from step {w.after:,} on"
        first = next((p for p in pages.all_pages() if p.url == w.first), None) if w.first else None
        other = session.state(registry.get(first.experiment)) if first is not None else None
        if first is not None and (other is None or other.trainer.iteration == 0):
            press = f": play the **{first.title}** page first (in the sidebar), then come back"
        return f" · {w.label}: not measured yet{press} (the point: {w.goal})"
    shown = f"{v:,.0f}" if float(v).is_integer() else f"{v:,.3g}"
    when = f" (at step {at:,})" if at is not None else ""  # how old a measurement on request is
    return f" · {w.label} **{shown}**{when} " + ("✓ the lesson's point" if w.point(v) else f"(the point: {w.goal})")


def _await_tail(exp: Experiment) -> None:
    """A paused run whose last evaluation a worker still does (a Pause or a Step in a slow one): the page shows
    the run from before it, and this fragment, which draws nothing (a timed frame that drew nothing would blank
    the figures it drew), takes the evaluated run when it comes and redraws the page with it."""
    def tail() -> None:
        cur = session.state(exp)
        if cur is None:
            return
        with cur.lock:
            came = scheduling.collect_tail(cur)
        if came:
            st.rerun(scope="app")

    common.timed_fragment(tail, scheduling.FRAME_INTERVAL)()


def loop(exp: Experiment, cfg: Any, view: View, *, autoplay: bool = False, warm_steps: int = 0,
         runtime: dict[str, Any] | None = None) -> LiveState:
    """Controls, status line and the live figures for ``exp`` with config ``cfg``, shown by ``view``
    (see ``View``). ``warm_steps`` trains that many steps when a run starts, so the page opens on a
    fitted model. ``runtime`` holds the trainer's runtime settings (e.g. the GAN's "train only D"),
    which change how the next steps run without restarting the run; so do the knobs ``exp.split`` takes out
    of ``cfg`` (diffusion's sampling), with which a fast-forward is also trained."""
    garbage.start_gc()
    les = common.lesson(exp)
    if les is not None and not _is_lessons_run(exp, les, cfg):
        les = None  # a knob was changed: this run is no longer the lesson's
    cfg, sampling = exp.parts(cfg)
    runtime = {**sampling, **(runtime or {})}
    if les is not None and les.start:
        warm_steps = max(warm_steps, les.start)  # the lesson opens near its point (cached: session._pretrained)
    s = session.ensure(exp, cfg, autoplay=autoplay, warm_steps=warm_steps, runtime=sampling)
    if runtime:
        s.trainer.set_runtime(runtime)
    # one compact control bar, the status line under it: the figure next. (The status line at the bar's end wrapped
    # to four lines of a lesson's watch in presenter mode, pushing the figure down.) A row of controls at their own
    # widths: in columns of fixed shares their labels were cut ("R…", "Ex…") at 1280 px beside the open sidebar;
    # where even this row does not fit, it wraps
    bar = st.container(horizontal=True, vertical_alignment="center", gap="small", key="dgm-bar")
    session.controls(exp, s, [bar] * 4)
    share.bar(exp, s, [bar] * 3)
    # the status line, which the frame rewrites (one element in a slot), and under it the run's error panel
    # or notice, drawn by full runs only: a live frame that wrote blocks outside itself (a notice in a container
    # in a slot) crashed the browser's page now and then ("Cannot set a node at a delta path": a blank page)
    line = st.empty()
    session.status(s, line, _watch_text(les, s.trainer))  # at once (a Pause shows before any figure is drawn)
    shown = (s.notice, s.error)
    session.notices(exp, s)
    view.state = s
    with s.lock:
        _safely(view.layout, s.trainer)

    timed = s.playing

    def frame() -> None:
        cur = session.state(exp)
        if cur is None:
            return
        cur.last_seen = time.monotonic()
        speed = session.speed(exp)
        if cur.playing and cur.error is None:
            if speed != "auto":  # a fixed number of steps per frame, here
                with cur.lock:
                    scheduling.stop_remote(cur)
                    scheduling.train(cur, int(speed))
            elif cur.remote is None:
                scheduling.start(exp, cur)
        if cur.playing and speed == "auto" and cur.frames:  # leave training its share of the time
            draw = cur.draw_seconds + cur.panel_seconds * scheduling.FRAME_INTERVAL / common.PANELS_EVERY
            scheduling.pace(cur.frames[-1][0] + scheduling.playing_sessions() * draw / scheduling.DRAW_SHARE)
        if cur.remote is not None:
            with cur.lock:
                scheduling.sync(cur)
        if (timed and not cur.playing) or (cur.notice, cur.error) != shown:
            st.rerun(scope="app")  # paused by divergence (stop the timer), or news about the run: show it
        cpu0 = time.thread_time()  # the redraw's CPU time (its wall time grows with the GIL's queue)
        with cur.lock:  # a consistent model for the status line and every figure
            if cur.playing:
                cur.frames = (cur.frames + [(time.perf_counter(), cur.trainer.iteration)])[-20:]
            show = _safely(view.main, cur.trainer)  # first: what it measures (a sampling time) is in the status line
            session.status(cur, line, _watch_text(les, cur.trainer))
            save = session.due_save(exp, cur)  # for a server restart
        if callable(show):  # the figures, built from what view.main took, while training goes on
            _safely(show)
        if save is not None:  # written outside the lock
            save()
        dt = time.thread_time() - cpu0
        cur.draw_seconds = dt if cur.draw_seconds == 0 else 0.7 * cur.draw_seconds + 0.3 * dt

    common.timed_fragment(frame, scheduling.FRAME_INTERVAL if timed else None)()
    if s.tail is not None and not s.playing:
        _await_tail(exp)
    if type(view).panels is View.panels:
        return s

    first = [True]  # the panels' first call in this full run of the page is the full run's own

    def panels() -> None:
        cur = session.state(exp)
        if cur is None:
            return
        view.timed, first[0] = not first[0], False  # a timed redraw: the fragment's runs after the first
        cpu0 = time.thread_time()
        with cur.lock:
            show = _safely(view.panels, cur.trainer)
        if callable(show):
            _safely(show)
        dt = time.thread_time() - cpu0
        cur.panel_seconds = dt if cur.panel_seconds == 0 else 0.7 * cur.panel_seconds + 0.3 * dt

    common.timed_fragment(panels, common.PANELS_EVERY if s.playing else None)()
    return s
