"""The live training loop every page uses.

    state = live.loop(exp, cfg, view)

Play / Pause / Step / Reset are buttons with callbacks. While playing, a fragment with
``run_every`` redraws the page's main view (see ``View``) up to six times a second, and a second
fragment its panels (side figures, curves, captions) once a second, so that a frame sends and
re-renders only the main view. At the "auto" speed the run trains meanwhile in a
worker process (``dgm.worker``): each redraw first copies the run's current state into the
session's trainer, which stays a replica that the figures read, and Pause brings the whole state
back. Where no worker process is available (none ready yet, a CUDA run, ``DGM_WORKERS=0``) a thread
of the session trains instead, in chunks of about 30 ms under a lock that the redraw also takes, so
every figure sees a consistent model. Redraws are paced so that drawing takes at most
``DRAW_SHARE`` of the server's time, shared among the sessions playing at once. The worker stops by
itself when no redraw has come for 10 s (a closed or hidden tab), and the next redraw, if one comes,
starts it again. At a fixed speed (1, 10, 100 or 1000 steps per frame) each redraw trains exactly
that many steps first. The trainer lives in ``st.session_state`` under a per-page key, so every
browser session has its own. A change of settings or seed starts a new run. A link with
``?steps=N`` replays: the page trains exactly N steps on the CPU and stops. Divergence (NaN) shows
a message with Reset and "back to the last good state"; no traceback ever reaches the page.
"""

from __future__ import annotations

import atexit
import gc
import json
import os
import logging
import threading
import time
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable

import streamlit as st

from dgm import config as cfglib
from dgm import experiments, worker
from dgm.experiments import Experiment
from dgm.train import Trainer, TrainingDiverged
from dgm.ui import common, share
from dgm.ui.controls import STEPS

log = logging.getLogger(__name__)

CHUNK_SECONDS = 0.03  # the worker's training chunk: how long a redraw may wait for the lock
FRAME_INTERVAL = 0.17  # seconds between redraws of the main view while playing, at most
# While the auto speed plays, redraws take at most this share of the server's time, so that training
# keeps the rest: a page whose figures take 80 ms to draw redraws at most every 200 ms, and with ten
# sessions playing at once, every two seconds each.
DRAW_SHARE = 0.4
IDLE_STOP_SECONDS = 10.0  # the worker stops when no redraw came for this long (tab closed or hidden)
SPEEDS = ["auto", 1, 10, 100, 1000]
# At most one training chunk per core at a time, across all sessions of the server: many threads
# all running small torch ops would spend their time handing the GIL to one another.
_CPU_SLOTS = threading.BoundedSemaphore(max(1, os.cpu_count() or 1))


@dataclass(eq=False)  # identity semantics: held in a WeakSet
class LiveState:
    trainer: Trainer
    fingerprint: str
    playing: bool = False
    error: str | None = None
    steps_per_s: float = 0.0  # training rate while training (per chunk), smoothed
    burst: int = 1  # steps per chunk, adapted to CHUNK_SECONDS
    frames: list[tuple[float, int]] = field(default_factory=list)  # recent (time, iteration) of redraws
    lock: threading.RLock = field(default_factory=threading.RLock)  # held while training or drawing
    worker: threading.Thread | None = None
    last_seen: float = 0.0  # time.monotonic() of the last redraw
    draw_seconds: float = 0.0  # CPU seconds a redraw of the main view takes, smoothed
    panel_seconds: float = 0.0  # CPU seconds a redraw of the panels takes, smoothed
    remote: worker.RemoteRun | None = None  # the worker process training the run while it plays
    runtime: dict[str, Any] = field(default_factory=dict)  # settings applied before every burst


def _key(exp: Experiment) -> str:
    return f"_live.{exp.name}"


def state(exp: Experiment) -> LiveState | None:
    return st.session_state.get(_key(exp))


def _fingerprint(cfg: Any, seed: int, device: str, replay: int | None) -> str:
    return json.dumps([cfglib.to_dict(cfg), seed, device, replay], sort_keys=True, default=str)


def _replay_steps() -> int | None:
    raw = st.query_params.get(STEPS)
    return int(float(raw)) if raw is not None else None


def _train(s: LiveState, n: int) -> None:
    """n steps, timed; divergence becomes a message, not an exception."""
    t0 = time.perf_counter()
    try:
        s.trainer.step(n)
    except Exception as e:  # divergence, or any other failure: a message, never a traceback
        if not isinstance(e, TrainingDiverged):
            log.exception("training failed")
        s.error, s.playing = worker.error_text(e), False
        return
    dt = max(time.perf_counter() - t0, 1e-6)
    rate = n / dt
    s.steps_per_s = rate if s.steps_per_s == 0 else 0.7 * s.steps_per_s + 0.3 * rate
    s.burst = int(min(max(CHUNK_SECONDS * s.steps_per_s, 1), 5000))


def _work(s: LiveState) -> None:
    """The worker thread: train in short chunks while playing and someone is watching, until a
    worker process takes the run over."""
    while s.playing and s.error is None and s.remote is None:
        if time.monotonic() - s.last_seen > IDLE_STOP_SECONDS:
            break  # nobody has redrawn for a while (tab closed or hidden); the next redraw restarts it
        with _CPU_SLOTS, s.lock:
            if s.playing and s.error is None and s.remote is None:
                _train(s, s.burst)
        time.sleep(0.001)  # let a waiting redraw take the lock


_WORKERS: "weakref.WeakSet[LiveState]" = weakref.WeakSet()  # sessions that have played (pacing, exit)


def _start_worker(s: LiveState) -> None:
    if s.worker is None or not s.worker.is_alive():
        s.worker = threading.Thread(target=_work, args=(s,), name="dgm-live-trainer", daemon=True)
        _WORKERS.add(s)
        s.worker.start()


def _thread_alive(s: LiveState) -> bool:
    return s.worker is not None and s.worker.is_alive()


def _start_training(exp: Experiment, s: LiveState) -> None:
    """Auto speed: a worker process continues the run if one is ready; until then, a thread. (The
    first frame of a play trains a burst here, so that it shows progress at once.)"""
    first = s.remote is None and not _thread_alive(s)
    with s.lock:
        if first:
            _train(s, s.burst)
        if s.playing and s.error is None:
            s.remote = worker.start(exp.name, s.trainer, s.runtime)
    _WORKERS.add(s)
    if s.remote is None and s.playing and not _thread_alive(s):
        _start_worker(s)


def _sync(s: LiveState) -> None:
    """The session's trainer takes the worker's current state (call holding the lock). A run that
    diverged there comes back whole, with its message; a lost worker leaves the run at its last
    good state (at most about a second old), from where a new worker or thread continues."""
    try:
        s.remote.sync(s.trainer, s.runtime)
        s.steps_per_s = s.remote.steps_per_s
        if s.remote.error is not None:
            s.error, s.playing = s.remote.error, False
            _stop_remote(s)
    except worker.WorkerLost as e:
        log.warning("training worker lost: %s", e)
        s.remote = None
        s.trainer.restore_last_good()


def _stop_remote(s: LiveState) -> None:
    """Bring the whole run back from its worker process (call holding the lock)."""
    if s.remote is None:
        return
    try:
        s.remote.stop(s.trainer)
    except worker.WorkerLost as e:
        log.warning("training worker lost: %s", e)
        s.trainer.restore_last_good()
    s.remote = None


@atexit.register
def _stop_workers() -> None:
    """At interpreter exit, let running workers finish their chunk: a thread killed inside a torch
    op aborts the process."""
    for s in list(_WORKERS):
        s.playing = False
    for s in list(_WORKERS):
        if s.worker is not None:
            s.worker.join(timeout=5)


GC_EVERY_SECONDS = 30.0
_gc_thread: threading.Thread | None = None
_gc_lock = threading.Lock()


def _collect_garbage() -> None:
    """Streamlit's full collection after every script run is off (.streamlit/config.toml: it
    starved training); closed sessions' cyclic garbage is collected here instead, every 30 s, and
    on glibc the freed memory is handed back to the system (malloc_trim)."""
    try:
        import ctypes

        trim = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        trim = None
    while True:
        time.sleep(GC_EVERY_SECONDS)
        gc.collect()
        if trim is not None:
            trim(0)


def _start_gc() -> None:
    global _gc_thread
    with _gc_lock:
        if _gc_thread is None:
            _gc_thread = threading.Thread(target=_collect_garbage, name="dgm-gc", daemon=True)
            _gc_thread.start()


def _playing_sessions() -> int:
    """How many sessions of this server play at the auto speed and have redrawn in the last 5 s."""
    now = time.monotonic()
    return max(1, sum(1 for s in list(_WORKERS) if s.playing and now - s.last_seen < 5.0))


def _interaction_pending() -> bool | None:
    """Whether this session has asked for more than the frame timer's rerun: a click or a widget
    change (a full rerun), or a stop (the tab closed). Reads Streamlit's request queue, which is not
    public API: None when that cannot be read."""
    try:
        from streamlit.runtime.scriptrunner_utils.script_requests import ScriptRequestType
        from streamlit.runtime.scriptrunner_utils.script_run_context import get_script_run_ctx

        req = get_script_run_ctx().script_requests
        return req._state == ScriptRequestType.STOP or (
            req._state == ScriptRequestType.RERUN and not req._rerun_data.fragment_id_queue)
    except Exception:
        return None


def _pace(until: float) -> None:
    """Wait, holding nothing, until ``time.perf_counter()`` reaches ``until``: at most 10 s, and not
    past a click (at most 2 s where a click cannot be seen coming)."""
    start = now = time.perf_counter()
    while now < until:
        pending = _interaction_pending()
        if pending or now - start > (2.0 if pending is None else 10.0):
            return
        time.sleep(min(0.02, until - now))
        now = time.perf_counter()


def _speed_key(exp: Experiment) -> str:
    return f"{exp.name}.speed"


def _steps_per_frame(exp: Experiment, s: LiveState) -> int:
    v = st.session_state.get(_speed_key(exp), "auto")
    return s.burst if v == "auto" else int(v)


# -- button callbacks (they run before the script reruns) -----------------------------------------

def _play(exp: Experiment) -> None:
    s = state(exp)
    s.playing = not s.playing and s.error is None
    if not s.playing:
        with s.lock:
            _stop_remote(s)


def _step(exp: Experiment) -> None:
    s = state(exp)
    s.playing = False
    v = st.session_state.get(_speed_key(exp), "auto")
    with s.lock:
        _stop_remote(s)
        _train(s, 10 if v == "auto" else int(v))


def _reset(exp: Experiment) -> None:
    s = state(exp)
    s.playing = False
    with s.lock:
        if s.remote is not None:
            s.remote.close()  # its state is not wanted
            s.remote = None
        s.trainer.reset()
        s.error, s.frames = None, []


def _restore(exp: Experiment) -> None:
    s = state(exp)
    with s.lock:
        _stop_remote(s)
        s.trainer.restore_last_good()
        s.error = None


@st.cache_resource(max_entries=32, show_spinner=False)
def _pretrained(exp_name: str, cfg_json: str, seed: int, steps: int) -> dict:
    """The state after ``steps`` steps of a run, shared read-only by every session that opens the
    same lesson or replay link: thirty students opening one link cost one training. Sessions copy
    it (``restore_last_good`` deep-copies), so nothing mutable is shared."""
    exp = experiments.get(exp_name)
    trainer = exp.make(exp.config(**json.loads(cfg_json)), seed=seed, device="cpu")
    trainer.step(steps)
    return trainer._last_good


def ensure(exp: Experiment, cfg: Any, *, autoplay: bool = False, warm_steps: int = 0) -> LiveState:
    """The page's LiveState, built anew when the settings, seed or device change."""
    replay = _replay_steps()
    device = "cpu" if replay is not None else common.device()
    fp = _fingerprint(cfg, common.seed(), device, replay)
    s = state(exp)
    if s is None or s.fingerprint != fp:
        if s is not None:
            s.playing = False  # the old run's worker thread stops at its next chunk
            if s.remote is not None:
                s.remote.close()
        trainer = exp.make(cfg, seed=common.seed(), device=device)
        trainer.checkpoint_every_s = 1.0
        s = LiveState(trainer=trainer, fingerprint=fp, playing=autoplay and replay is None)
        st.session_state[_key(exp)] = s
        n = replay if replay is not None else warm_steps
        if n and trainer.device.type != "cpu":
            _train(s, n)  # the shared cache holds CPU runs only
        elif n:
            cfg_json = json.dumps(cfglib.to_dict(cfg), sort_keys=True)
            t0 = time.perf_counter()
            try:
                with st.spinner(f"Training {n:,} steps…"):
                    good = _pretrained(exp.name, cfg_json, common.seed(), n)
            except TrainingDiverged as e:
                s.error = str(e)
                return s
            trainer._last_good = good
            trainer.restore_last_good()  # deep copies: this session owns its state
            trainer._last_good = trainer._capture()
            s.steps_per_s = 0.0 if time.perf_counter() - t0 < 1e-2 else n / (time.perf_counter() - t0)
    return s


def controls(exp: Experiment, s: LiveState) -> None:
    c1, c2, c3, c4, c5 = st.columns([1, 1, 1, 1.4, 3], vertical_alignment="bottom")
    c1.button("⏸ Pause" if s.playing else "▶ Play", key=f"{exp.name}.play", on_click=_play, args=(exp,),
              type="primary", use_container_width=True, disabled=s.error is not None)
    v = st.session_state.get(_speed_key(exp), "auto")
    c2.button(f"Step ×{10 if v == 'auto' else v}", key=f"{exp.name}.step", on_click=_step, args=(exp,),
              use_container_width=True, disabled=s.error is not None)
    c3.button("↺ Reset", key=f"{exp.name}.reset", on_click=_reset, args=(exp,), use_container_width=True)
    c4.selectbox("Steps per frame", SPEEDS, key=_speed_key(exp), bind="query-params",
                 help="auto: as many steps as fit in about 0.1 s; Step does this many (10 in auto).")


def _status(s: LiveState) -> None:
    fps, rate = "", f" · {s.steps_per_s:,.0f} steps/s" if s.steps_per_s else ""
    if s.playing and len(s.frames) > 2:
        (t0, i0), (t1, i1) = s.frames[0], s.frames[-1]
        if t1 > t0:  # what the page really achieves, drawing included
            fps = f" · {(len(s.frames) - 1) / (t1 - t0):.1f} frames/s"
            rate = f" · {(i1 - i0) / (t1 - t0):,.0f} steps/s"
    st.caption(f"**Iteration {s.trainer.iteration:,}**{rate}{fps} · {'playing' if s.playing else 'paused'}"
               f" · {s.trainer.device.type.upper()}")


def _error_panel(exp: Experiment, s: LiveState) -> None:
    st.error(s.error, icon=":material/warning:")
    a, b, _ = st.columns([1, 2, 3])
    a.button("↺ Reset", key=f"{exp.name}.reset_err", on_click=_reset, args=(exp,), type="primary")
    last = s.trainer._last_good["iteration"]
    b.button(f"Back to the last good state (step {last:,})", key=f"{exp.name}.restore", on_click=_restore,
             args=(exp,))


def _safely(fn: Callable, *args: Any) -> Any:
    try:
        return fn(*args)
    except Exception as e:  # a figure must never take the page down
        log.exception("drawing failed")
        st.error(f"Could not draw the figures: {e}", icon=":material/warning:")
        return None


class View:
    """What a page shows of its run, in parts drawn at different rates.

    ``layout(trainer)`` runs in every full run of the page, before any figure: it places the
    containers the other two fill (and any widget that changes what they show, e.g. a timeline).
    ``main(trainer)`` draws the main view at every frame; ``panels(trainer)`` draws the rest (side
    panels, curves, captions) about once a second while the run plays, in a fragment of its own, so
    that a frame sends, and the browser re-renders, only the main view. Both run holding the run's
    lock and may return a function that builds and shows the figures after the lock is released."""

    def layout(self, trainer: Trainer) -> None:
        pass

    def main(self, trainer: Trainer) -> Callable[[], None] | None:
        raise NotImplementedError

    def panels(self, trainer: Trainer) -> Callable[[], None] | None:
        return None


def loop(exp: Experiment, cfg: Any, view: View, *, autoplay: bool = False, warm_steps: int = 0,
         runtime: dict[str, Any] | None = None) -> LiveState:
    """Controls, status line and the live figures for ``exp`` with config ``cfg``, shown by ``view``
    (see ``View``). ``warm_steps`` trains that many steps when a run starts, so the
    page opens on a fitted model. ``runtime`` holds settings that change how the next steps run
    without restarting the run (e.g. the GAN's "train only D"): each is set as an attribute of the
    trainer before every burst."""
    _start_gc()
    worker.prepare()  # a worker process ready for when Play is pressed
    s = ensure(exp, cfg, autoplay=autoplay, warm_steps=warm_steps)
    s.runtime = dict(runtime or {})
    for k, v in s.runtime.items():
        setattr(s.trainer, k, v)
    controls(exp, s)
    share.bar(exp, s, _key(exp))
    status = st.container()
    with s.lock:
        _safely(view.layout, s.trainer)

    timed = s.playing

    @st.fragment(run_every=FRAME_INTERVAL if timed else None)
    def frame() -> None:
        cur = state(exp)
        if cur is None:
            return
        cur.last_seen = time.monotonic()
        auto = st.session_state.get(_speed_key(exp), "auto") == "auto"
        if cur.playing and cur.error is None:
            if not auto:  # a fixed number of steps per frame, here
                with cur.lock:
                    _stop_remote(cur)
                    _train(cur, _steps_per_frame(exp, cur))
            elif cur.remote is None:
                _start_training(exp, cur)
        if cur.playing and auto and cur.frames:  # leave training its share of the time
            draw = cur.draw_seconds + cur.panel_seconds * FRAME_INTERVAL / common.PANELS_EVERY
            _pace(cur.frames[-1][0] + _playing_sessions() * draw / DRAW_SHARE)
        if cur.remote is not None:
            with cur.lock:
                _sync(cur)
        if timed and not cur.playing:
            st.rerun(scope="app")  # paused by divergence: stop the timer, show why
        cpu0 = time.thread_time()  # the redraw's CPU time (its wall time grows with the GIL's queue)
        with cur.lock:  # a consistent model for the status line and every figure
            if cur.playing:
                cur.frames = (cur.frames + [(time.perf_counter(), cur.trainer.iteration)])[-20:]
            with status:
                if cur.error:
                    _error_panel(exp, cur)
                _status(cur)
            show = _safely(view.main, cur.trainer)
        if callable(show):  # the figures, built from what view.main took, while training goes on
            _safely(show)
        dt = time.thread_time() - cpu0
        cur.draw_seconds = dt if cur.draw_seconds == 0 else 0.7 * cur.draw_seconds + 0.3 * dt

    frame()
    if type(view).panels is View.panels:
        return s

    @st.fragment(run_every=common.PANELS_EVERY if timed else None)
    def panels() -> None:
        cur = state(exp)
        if cur is None:
            return
        cpu0 = time.thread_time()
        with cur.lock:
            show = _safely(view.panels, cur.trainer)
        if callable(show):
            _safely(show)
        dt = time.thread_time() - cpu0
        cur.panel_seconds = dt if cur.panel_seconds == 0 else 0.7 * cur.panel_seconds + 0.3 * dt

    panels()
    return s
