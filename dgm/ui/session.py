"""A page's live run in a browser session: its state, the buttons that drive it and the status line.

The trainer lives in ``st.session_state`` under a per-page key, so every browser session has its own.
A change of settings, seed or device starts a new run. A link with ``?steps=N`` replays: the page
trains exactly N steps on the CPU and stops (or, when that would take too long, stops early and says
so). Play / Pause / Step / Reset are buttons with callbacks (they run before the script reruns).
Divergence (NaN) shows a message with Reset and "back to the last good state"; anything else that
happened to the run (a lost worker process, a replay cut short) is a notice under the status line; no
traceback ever reaches the page. Resuming from a weights file stops the run first (``resume``).
"""

from __future__ import annotations

import functools
import json
import logging
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import streamlit as st

from dgm.core import config as cfglib
from dgm.core import export, registry, worker
from dgm.core.registry import Experiment
from dgm.core.train import Trainer, TrainingDiverged
from dgm.ui import common, persist, scheduling
from dgm.ui.controls import STEPS, view_param

SPEEDS = ["auto", 1, 10, 100, 1000]
log = logging.getLogger(__name__)


def _speed_label(v: str | int) -> str:
    return "auto" if v == "auto" else f"{v}/frame"


#: the speed selector's URL value is its label ("100/frame"), as the bound widget writes it
view_param("{exp}.speed", lambda raw: raw in {_speed_label(v) for v in SPEEDS})


@dataclass(eq=False)  # identity semantics: held in a WeakSet
class LiveState:
    trainer: Trainer
    fingerprint: str
    playing: bool = False
    error: str | None = None
    steps_per_s: float = 0.0  # training rate while training (per chunk), smoothed
    burst: int = 1  # steps per chunk in a thread, adapted to scheduling.CHUNK_SECONDS
    frames: list[tuple[float, int]] = field(default_factory=list)  # recent (time, iteration) of redraws
    lock: threading.RLock = field(default_factory=threading.RLock)  # held while training or drawing
    thread: threading.Thread | None = None  # the thread training the run, if any
    last_seen: float = 0.0  # time.monotonic() of the last redraw
    draw_seconds: float = 0.0  # CPU seconds a redraw of the main view takes, smoothed
    panel_seconds: float = 0.0  # CPU seconds a redraw of the panels takes, smoothed
    remote: worker.RemoteRun | None = None  # the worker process training the run while it plays
    tail: worker.RemoteRun | None = None  # a paused run's worker finishing the evaluation it was in (or a Step's)
    tail_base: dict[str, Any] | None = None  # a Step's start, while the trainer shows its preview (scheduling.step)
    view_state: dict[str, Any] = field(default_factory=dict)  # what a page's view keeps over the run
    notice: str | None = None  # what happened to the run that the page should say (not an error)
    in_process: bool = False  # a worker process was lost: this run trains in the server from now on
    resumed: bool = False  # weights were loaded: the run is no longer its seed's (no GIF replay)
    run_id: str | None = None  # the run's name on the server's disk (dgm.ui.persist); None for a replay
    saved: tuple[float, int] = (0.0, 0)  # time.monotonic() and iteration of the last save to disk


def _key(exp: Experiment) -> str:
    return f"_live.{exp.name}"


def state(exp: Experiment) -> LiveState | None:
    return st.session_state.get(_key(exp))


def _fingerprint(cfg: Any, seed: int, device: str, replay: int | None) -> str:
    return json.dumps([cfglib.to_dict(cfg), seed, device, replay], sort_keys=True, default=str)


def replay_steps() -> int | None:
    raw = st.query_params.get(STEPS)
    return None if raw is None else cfglib.run_setting("replay", raw)[0]


def speed(exp: Experiment) -> str | int:
    return st.session_state.get(_speed_key(exp), "auto")


def _speed_key(exp: Experiment) -> str:
    return f"{exp.name}.speed"


# -- button callbacks (they run before the script reruns) -----------------------------------------

def _callback(fn: Callable[..., None]) -> Callable[..., None]:
    """A button's callback that never takes the page down: a failure is logged, and the page says it as the
    run's error (with Reset and "back to the last good state"). Streamlit would show its error page instead."""
    @functools.wraps(fn)
    def run(exp: Experiment, *args: Any) -> None:
        try:
            fn(exp, *args)
        except Exception as e:  # a bug of ours: say it, keep the session
            log.exception("%s failed", fn.__name__)
            s = state(exp)
            if s is not None:
                s.playing, s.error = False, f"{fn.__name__.strip('_').capitalize()} failed: {e!r}"
    return run


@_callback
def _play(exp: Experiment, play: bool) -> None:
    """Play (``play``) or Pause, as the clicked button said."""
    s = state(exp)
    s.playing = play and s.error is None
    if not s.playing:
        with s.lock:
            scheduling.pause_remote(s)


@_callback
def _step(exp: Experiment) -> None:
    s = state(exp)
    s.playing = False
    v = speed(exp)
    with s.lock:
        scheduling.step(exp, s, 10 if v == "auto" else int(v))


@_callback
def _reset(exp: Experiment) -> None:
    s = state(exp)
    s.playing = False
    with s.lock:
        scheduling.drop_remote(s)
        s.trainer.reset()
        s.error, s.frames, s.view_state, s.notice, s.resumed = None, [], {}, None, False
        s.steps_per_s = 0.0  # the old run's rate is not this one's


@_callback
def _restore(exp: Experiment) -> None:
    s = state(exp)
    with s.lock:
        scheduling.stop_remote(s)
        s.trainer.restore_last_good()
        s.error = None


@st.cache_resource(max_entries=32, show_spinner=False)
def _pretrained(exp_name: str, cfg_json: str, seed: int, steps: int, runtime_json: str = "") -> tuple[dict, float]:
    """The checkpoint after ``steps`` steps of a run, shared read-only by every session that opens the
    same lesson or replay link: thirty students opening one link cost one training. Sessions restore a
    copy of it, so nothing mutable is shared. Also the seconds its training took here (0: read from disk)."""
    return fast_forward(exp_name, cfg_json, seed, steps, runtime_json=runtime_json)


def fast_forward(exp_name: str, cfg_json: str, seed: int, steps: int, seconds: float | None = None,
                 runtime_json: str = "") -> tuple[dict, float]:
    """The state ``steps`` steps into the CPU run of ``exp_name`` with settings ``cfg_json`` (sorted JSON of
    the config) and ``seed``, and the seconds it took to train now (0: read from the server's disk, where
    the first visit, or ``python -m dgm prepare``, left it: a lesson opens at once in class if its teacher
    opened it the day before). Raises ReplayCut, and keeps nothing, when the training would take longer than
    ``seconds`` (a page's REPLAY_SECONDS when None). ``runtime_json`` (``runtime_json()``): the runtime settings
    it is trained with, where the page's config holds some (``Experiment.split``: diffusion's sampling, which
    its evaluations measure)."""
    key = persist.warm_key(exp_name, cfg_json, seed, steps, runtime_json)
    kept = persist.load_warm(key)
    if kept is not None:
        return kept, 0.0
    exp = registry.get(exp_name)
    trainer = exp.make(exp.config(**json.loads(cfg_json)), seed=seed, device="cpu")
    if runtime_json:
        trainer.set_runtime(json.loads(runtime_json))
    t0 = time.perf_counter()
    scheduling.replay(trainer, steps, seconds)  # a ReplayCut is not kept: the next visit tries again
    took = time.perf_counter() - t0
    persist.save_warm(key, trainer.last_good)
    return trainer.last_good, took


def config_json(cfg: Any) -> str:
    """A config as the key of its fast-forward."""
    return json.dumps(cfglib.to_dict(cfg), sort_keys=True)


def runtime_json(runtime: dict[str, Any] | None) -> str:
    """Runtime settings as part of a fast-forward's key ("" for none)."""
    return json.dumps(runtime, sort_keys=True) if runtime else ""


def resume(exp: Experiment, s: LiveState, raw: bytes) -> int:
    """Load a weights file into the run: the run stops first (a worker would otherwise overwrite the
    weights with its next update) and keeps its whole state if the file is refused. Returns the step the
    file was saved at; raises export.WeightsError."""
    with s.lock:
        s.playing = False
        scheduling.stop_remote(s)
        it = export.load_weights(s.trainer, raw, exp.name)
        s.error, s.resumed, s.frames = None, True, []
    return it


def _run_id() -> str:
    """The run id in the page's address, or a new one written there."""
    rid = st.query_params.get(persist.PARAM)
    if not persist.valid_id(rid):
        rid = persist.new_id()
        common.fix_url({persist.PARAM: rid})
    return rid


def due_save(exp: Experiment, s: LiveState) -> Callable[[], None] | None:
    """What writes the run to the server's disk if it moved since the last save (while it plays, its last good
    state every persist.SAVE_EVERY seconds; stopped, its exact state), else None. Call holding the lock; call
    what it returns after releasing it (the state is a copy: training goes on meanwhile)."""
    if s.run_id is None or s.tail_base is not None:  # (a Step's preview is no state to go on from)
        return None
    stopped = not s.playing and s.remote is None and s.error is None
    good = s.trainer.last_good
    it = s.trainer.iteration if stopped else good["iteration"] if good else None
    now = time.monotonic()
    if it is None or it == s.saved[1] or (not stopped and now - s.saved[0] < persist.SAVE_EVERY):
        return None
    s.saved = (now, it)
    state = s.trainer.checkpoint() if stopped else good  # last_good is replaced, never changed: no copy needed
    return lambda: persist.save(s.run_id, exp.name, s.fingerprint, state)


def ensure(exp: Experiment, cfg: Any, *, autoplay: bool = False, warm_steps: int = 0,
           runtime: dict[str, Any] | None = None) -> LiveState:
    """The page's LiveState, built anew when the settings, seed or device change. A new run's first
    ``warm_steps`` (or a replay link's steps) are trained with the runtime settings ``runtime``."""
    replay = replay_steps()
    device = "cpu" if replay is not None else common.device()
    fp = _fingerprint(cfg, common.seed(), device, replay)
    s = state(exp)
    if s is None or s.fingerprint != fp:
        if s is not None:
            s.playing = False  # the old run's training thread stops at its next chunk
            scheduling.drop_remote(s)
        with st.spinner("Preparing the data and the model…"):  # a new data set can take a moment
            trainer = exp.make(cfg, seed=common.seed(), device=device)
        if runtime:
            trainer.set_runtime(runtime)
        trainer.checkpoint_every_s = 1.0
        s = LiveState(trainer=trainer, fingerprint=fp, playing=autoplay and replay is None)
        st.session_state[_key(exp)] = s
        if replay is None:  # a replay is its link: nothing to keep
            s.run_id = _run_id()
            kept = persist.load(s.run_id, exp.name, fp)
            if kept is not None:  # the server restarted (or the address was opened again): go on from there
                trainer.restore(kept, copy_=False)
                trainer.mark_good()
                # under a new id, saved at the first frame: tabs opened with one copied address each go their
                # own way and never overwrite the run they started from
                s.run_id, s.saved, s.playing = persist.new_id(), (0.0, -1), False
                common.fix_url({persist.PARAM: s.run_id})
                s.notice = (f"This run continues from step {trainer.iteration:,}, where the server last saved it "
                            "(the address names the run: a server restart loses nothing but the last seconds).")
                return s
        n = replay if replay is not None else warm_steps
        if n and trainer.device.type != "cpu":
            scheduling.train(s, n)  # the shared cache holds CPU runs only
        elif n:
            t0, took = time.perf_counter(), 0.0
            try:
                with st.spinner(f"Training {n:,} steps…"):
                    good, took = _pretrained(exp.name, config_json(cfg), common.seed(), n, runtime_json(runtime))
            except TrainingDiverged as e:
                s.error = str(e)
                return s
            except scheduling.ReplayCut as e:
                s.notice, good, took = str(e), e.state, time.perf_counter() - t0
            trainer.restore(good)  # a copy: this session owns its state
            trainer.mark_good()
            s.steps_per_s = good["iteration"] / took if took > 1e-2 else 0.0  # the rate it was trained at, here
    return s


#: the Play and Pause buttons' width (pixels; presenter mode's larger font included), the same for both: the
#: controls after them do not move when one replaces the other
PLAY_WIDTH = 112
SPEED_WIDTH = 120  # the speed's selector ("100/frame" whole, in presenter mode too)


def controls(exp: Experiment, s: LiveState, cols=None) -> None:
    """Play, Step, Reset and the speed, in four slots of the control bar (``cols``, e.g. one row four times;
    a row of their own if None), each as wide as its label."""
    c1, c2, c3, c4 = cols or [st.container(horizontal=True, vertical_alignment="center", gap="small")] * 4
    # Play and Pause are two widgets, both on the page at all times, the one that does not apply hidden by a
    # style: a click names what it wants (a second click on Pause that reaches the server after the first
    # has drawn Play still pauses), and no widget comes or goes between runs (a widget made new by a run lost
    # the browser's first click on it)
    hide = f"{exp.name}.play" if s.playing else f"{exp.name}.pause"
    st.html(f"<style>.st-key-{re.sub(r'[^a-zA-Z0-9_-]', '-', hide)} {{display: none !important;}}</style>")
    # (Material icons, which Streamlit serves itself: "⏸" drew as an empty box where no emoji font is installed)
    for label, icon, play in (("Play", "play_arrow", True), ("Pause", "pause", False)):
        c1.button(label, icon=f":material/{icon}:", key=f"{exp.name}.{label.lower()}", on_click=_play,
                  args=(exp, play), type="primary", width=PLAY_WIDTH, disabled=s.error is not None)
    v = speed(exp)
    c2.button(f"Step ×{10 if v == 'auto' else v}", key=f"{exp.name}.step", on_click=_step, args=(exp,),
              width="content", disabled=s.error is not None)
    c3.button("Reset", icon=":material/restart_alt:", key=f"{exp.name}.reset", on_click=_reset, args=(exp,),
              width="content")
    c4.selectbox("Steps per frame", SPEEDS, key=_speed_key(exp), bind="query-params", label_visibility="collapsed",
                 format_func=_speed_label, width=SPEED_WIDTH,
                 help="Steps per frame. auto: as many steps as fit in about 0.1 s; Step does this many (10 in auto).")


def status(s: LiveState, line=None, extra: str = "") -> None:
    """The status line (in ``line``, a slot of the control bar, if given; ``extra`` ends it)."""
    fps, rate = "", f" · {s.steps_per_s:,.{0 if s.steps_per_s >= 10 else 1}f} steps/s" if s.steps_per_s else ""
    if s.playing and len(s.frames) > 2:
        (t0, i0), (t1, i1) = s.frames[0], s.frames[-1]
        if t1 > t0:  # what the page really achieves, drawing included
            fps = f" · {(len(s.frames) - 1) / (t1 - t0):.1f} frames/s"
            rate = f" · {(i1 - i0) / (t1 - t0):,.0f} steps/s"
    state = "playing" if s.playing else "paused" + (" · evaluating this step" if s.tail is not None else "")
    (line or st).caption(f"**Iteration {s.trainer.iteration:,}**{rate}{fps} · {state}"
               f" · {s.trainer.device.type.upper()}{extra}")


def notices(exp: Experiment, s: LiveState) -> None:
    """The run's error panel (a divergence) and its notice (anything else that happened to it), if any."""
    if s.error:
        error_panel(exp, s)
    if s.notice:
        st.warning(common.plain(s.notice), icon=":material/info:")


def error_panel(exp: Experiment, s: LiveState) -> None:
    st.error(common.plain(s.error), icon=":material/warning:")
    a, b, _ = st.columns([1, 2, 3])
    a.button("Reset", icon=":material/restart_alt:", key=f"{exp.name}.reset_err", on_click=_reset, args=(exp,),
             type="primary")
    last = s.trainer.last_good["iteration"]
    b.button(f"Back to the last good state (step {last:,})", key=f"{exp.name}.restore", on_click=_restore,
             args=(exp,))
