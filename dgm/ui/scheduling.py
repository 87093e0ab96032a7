"""Where and when a live run trains: in a worker process or a thread of the server, in chunks, paced
against the redraws of every session, with the server's garbage collected in the background.

At the "auto" speed a playing run trains in a worker process (``dgm.core.worker``): each redraw copies
the run's current state into the session's trainer, which stays a replica that the figures read, and
Pause brings the whole state back. Where no worker process is available (none ready yet, a CUDA run,
``DGM_WORKERS=0``) a thread of the session trains instead, in chunks of about ``CHUNK_SECONDS`` under
the run's lock, which the redraw also takes, so every figure sees a consistent model. Redraws are paced
so that drawing takes at most ``DRAW_SHARE`` of the server's time, shared among the sessions playing
at once. The thread stops by itself when no redraw has come for ``IDLE_STOP_SECONDS`` (a closed or
hidden tab); the next redraw, if one comes, starts it again.
"""

from __future__ import annotations

import atexit
import gc
import logging
import os
import threading
import time
import weakref
from typing import TYPE_CHECKING

from dgm.core import worker
from dgm.core.registry import Experiment
from dgm.core.train import TrainingDiverged

if TYPE_CHECKING:
    from dgm.ui.session import LiveState

log = logging.getLogger(__name__)

CHUNK_SECONDS = 0.03  # a training chunk in a thread: how long a redraw may wait for the lock
FRAME_INTERVAL = 0.17  # seconds between redraws of the main view while playing, at most
# While the auto speed plays, redraws take at most this share of the server's time, so that training
# keeps the rest: a page whose figures take 80 ms to draw redraws at most every 200 ms, and with ten
# sessions playing at once, every two seconds each.
DRAW_SHARE = 0.4
IDLE_STOP_SECONDS = 10.0  # the thread stops when no redraw came for this long (tab closed or hidden)
GC_EVERY_SECONDS = 30.0
# At most one training chunk per core at a time, across all sessions of the server: many threads
# all running small torch ops would spend their time handing the GIL to one another.
_CPU_SLOTS = threading.BoundedSemaphore(max(1, os.cpu_count() or 1))
_PLAYED: "weakref.WeakSet[LiveState]" = weakref.WeakSet()  # sessions that have played (pacing, exit)


def train(s: LiveState, n: int) -> None:
    """n steps in this thread, timed; a failure becomes the run's message, never an exception."""
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
    """The training thread: short chunks while playing and someone is watching, until a worker process
    takes the run over."""
    while s.playing and s.error is None and s.remote is None:
        if time.monotonic() - s.last_seen > IDLE_STOP_SECONDS:
            break  # nobody has redrawn for a while (tab closed or hidden); the next redraw restarts it
        with _CPU_SLOTS, s.lock:
            if s.playing and s.error is None and s.remote is None:
                train(s, s.burst)
        time.sleep(0.001)  # let a waiting redraw take the lock


def _thread_alive(s: LiveState) -> bool:
    return s.thread is not None and s.thread.is_alive()


def start(exp: Experiment, s: LiveState) -> None:
    """Auto speed: a worker process continues the run if one is ready; until then, a thread. (The first
    frame of a play trains a chunk here, so that it shows progress at once.)"""
    first = s.remote is None and not _thread_alive(s)
    with s.lock:
        if first:
            train(s, s.burst)
        if s.playing and s.error is None:
            s.remote = worker.start(exp.name, s.trainer, s.trainer.runtime_dict())
    _PLAYED.add(s)
    if s.remote is None and s.playing and not _thread_alive(s):
        s.thread = threading.Thread(target=_work, args=(s,), name="dgm-live-trainer", daemon=True)
        s.thread.start()


def sync(s: LiveState) -> None:
    """The session's trainer takes the worker's current state (call holding the lock). A run that
    diverged there comes back whole, with its message; a lost worker leaves the run at its last good
    state (at most about a second old), from where a new worker or thread continues."""
    try:
        s.remote.sync(s.trainer, s.trainer.runtime_dict())
        s.steps_per_s = s.remote.steps_per_s
        if s.remote.error is not None:
            s.error, s.playing = s.remote.error, False
            stop_remote(s)
    except worker.WorkerLost as e:
        log.warning("training worker lost: %s", e)
        s.remote = None
        s.trainer.restore_last_good()


def stop_remote(s: LiveState) -> None:
    """Bring the whole run back from its worker process (call holding the lock)."""
    if s.remote is None:
        return
    try:
        s.remote.stop(s.trainer)
    except worker.WorkerLost as e:
        log.warning("training worker lost: %s", e)
        s.trainer.restore_last_good()
    s.remote = None


def drop_remote(s: LiveState) -> None:
    """Close the run's worker process without taking its state (a reset or a new run)."""
    if s.remote is not None:
        s.remote.close()
        s.remote = None


@atexit.register
def _stop_threads() -> None:
    """At interpreter exit, let training threads finish their chunk: a thread killed inside a torch op
    aborts the process."""
    for s in list(_PLAYED):
        s.playing = False
    for s in list(_PLAYED):
        if s.thread is not None:
            s.thread.join(timeout=5)


# ---- pacing ----------------------------------------------------------------------------------------

def playing_sessions() -> int:
    """How many sessions of this server play at the auto speed and have redrawn in the last 5 s."""
    now = time.monotonic()
    return max(1, sum(1 for s in list(_PLAYED) if s.playing and now - s.last_seen < 5.0))


def _interaction_pending() -> bool | None:
    """Whether this session has asked for more than the frame timer's rerun: a click or a widget change
    (a full rerun), or a stop (the tab closed). Streamlit offers no public way to ask, so this reads its
    request queue (a private attribute; tests/test_streamlit_internals.py guards it): None when that
    cannot be read."""
    try:
        from streamlit.runtime.scriptrunner_utils.script_requests import ScriptRequestType
        from streamlit.runtime.scriptrunner_utils.script_run_context import get_script_run_ctx

        req = get_script_run_ctx().script_requests
        return req._state == ScriptRequestType.STOP or (
            req._state == ScriptRequestType.RERUN and not req._rerun_data.fragment_id_queue)
    except Exception:
        return None


def pace(until: float) -> None:
    """Wait, holding nothing, until ``time.perf_counter()`` reaches ``until``: at most 10 s, and not past
    a click (at most 2 s where a click cannot be seen coming)."""
    start = now = time.perf_counter()
    while now < until:
        pending = _interaction_pending()
        if pending or now - start > (2.0 if pending is None else 10.0):
            return
        time.sleep(min(0.02, until - now))
        now = time.perf_counter()


# ---- garbage -----------------------------------------------------------------------------------------

_gc_thread: threading.Thread | None = None
_gc_lock = threading.Lock()


def _collect_garbage() -> None:
    """Streamlit's full collection after every script run is off (.streamlit/config.toml: it starved
    training); closed sessions' cyclic garbage is collected here instead, every 30 s, and on glibc the
    freed memory is handed back to the system (malloc_trim)."""
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


def start_gc() -> None:
    global _gc_thread
    with _gc_lock:
        if _gc_thread is None:
            _gc_thread = threading.Thread(target=_collect_garbage, name="dgm-gc", daemon=True)
            _gc_thread.start()
