"""Where and when a live run trains: in a worker process or a thread of the server, in chunks, paced
against the redraws of every session. (The server's garbage is collected in the background: dgm.ui.garbage.)

At the "auto" speed a playing run trains in a worker process (``dgm.core.worker``): each redraw copies the
run's current state into the session's trainer, which stays a replica that the figures read, and Pause brings
the whole state back at once (in an evaluation, the state before it: ``pause_remote``). Where no worker is
available (none ready yet, a CUDA run, ``DGM_WORKERS=0``) a thread of the session trains instead, in chunks
of about ``CHUNK_SECONDS`` under the run's lock, which the redraw also takes, so every figure sees a
consistent model. Redraws are paced so that drawing takes at most ``DRAW_SHARE`` of the server's time,
shared among the sessions playing at once. The thread stops by itself when no redraw has come for
``IDLE_STOP_SECONDS`` (a closed or hidden tab); the next redraw, if one comes, starts it again.

Every loop that trains in the server is bounded and stops when asked: a Step or a fixed-speed frame
trains at most ``MAX_TRAIN_SECONDS``, a replay link at most ``REPLAY_SECONDS`` (it stops at once when
its projected time is longer, and says so), and all of them end within a burst when the server stops
(``stopping``: SIGTERM or Ctrl-C) or the session goes away. A worker process that dies or stops
answering is reported on the page, and the run goes on in the server from its last full state.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref
from typing import TYPE_CHECKING

from dgm.core import worker
from dgm.core.registry import Experiment
from dgm.core.train import TrainingDiverged
from dgm.ui import shutdown

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
MAX_TRAIN_SECONDS = 10.0  # a Step, or a frame at a fixed speed, trains at most this long
REPLAY_SECONDS = 120.0  # a replay link trains at most this long in the server
REPLAY_MARGIN = 1.5  # ... and stops early only when its estimate is over this many times that
# At most one training chunk per core at a time, across all sessions of the server: many threads
# all running small torch ops would spend their time handing the GIL to one another.
_CPU_SLOTS = threading.BoundedSemaphore(max(1, os.cpu_count() or 1))
_PLAYED: "weakref.WeakSet[LiveState]" = weakref.WeakSet()  # sessions that have played (pacing, exit)


# ---- training here ------------------------------------------------------------------------------

def train(s: LiveState, n: int, evaluate: bool = True) -> None:
    """n steps in this thread, timed, in bursts; at most MAX_TRAIN_SECONDS (the page says so when that cuts
    it short), and less when the server stops. A failure becomes the run's message, never an exception.
    (``evaluate``: see ``Trainer.step``.)"""
    t0 = time.perf_counter()
    over = lambda: shutdown.stopping() or time.perf_counter() - t0 > MAX_TRAIN_SECONDS  # noqa: E731
    try:
        with shutdown.Busy():
            done = s.trainer.run(steps=n, burst=None, should_stop=over, evaluate=evaluate)
    except Exception as e:  # divergence, or any other failure: a message, never a traceback
        if shutdown.stopping():  # the server is going away: what breaks meanwhile (e.g. an import refused at the
            log.info("training ended by the server's stop: %s", e)  # interpreter's exit) is no failure of the run
            return
        if not isinstance(e, TrainingDiverged):
            log.exception("training failed")
        _stopped(s, worker.error_text(e))
        return
    if done < n and not shutdown.stopping():
        s.notice = (f"{n:,} steps at once take longer than {MAX_TRAIN_SECONDS:g} s here: this time it trained "
                    f"{done:,}. Choose fewer steps per frame, or a smaller model.")
    dt = max(time.perf_counter() - t0, 1e-6)
    rate = max(done, 1) / dt
    s.steps_per_s = rate if s.steps_per_s == 0 else 0.7 * s.steps_per_s + 0.3 * rate
    s.burst = int(min(max(CHUNK_SECONDS * s.steps_per_s, 1), 5000))


def step(exp: Experiment, s: LiveState, n: int) -> None:
    """A Step of n steps (call holding the lock). Steps are quick, some evaluations take seconds (the GAN
    lottery's eight runs: 3 s; ``Trainer.slow_eval``): a Step that meets one (the one still to do at its start,
    or one due on its way) goes whole to a worker process (``s.tail``, a job: ``worker.start(..., until=)``), and
    the same steps are trained here without evaluating, a preview of the model shown at once; the page says
    "evaluating this step" until the worker's state comes and replaces the preview (``collect_tail``; should it
    not come, the Step is trained again here from its start, ``s.tail_base``). A quick evaluation, or a run
    without a worker, is done here: a job ends later (a second redraw, the worker's start). A Pause's evaluation
    still running is not awaited there: the job does it again."""
    t = s.trainer
    slow = t.slow_eval and not s.in_process and worker.enabled() and t.device.type == "cpu"
    if slow and s.tail is not None and s.tail_base is None:
        collect_tail(s, drop=True)  # (a Step's own job, with a preview shown, is awaited: stop_remote)
    stop_remote(s)
    end = t.iteration + n
    meets = t.eval_pending() or any(t.eval_due(i) for i in range(t.iteration + 1, end + 1))
    if meets and slow:
        base = t.export_state(full=True)  # the Step's start: the job is sent it, and a lost job comes back to it
        s.tail = worker.start(exp.name, t, t.runtime_dict(), until=end, state=base)
        if s.tail is not None:
            s.tail_base = base
            train(s, n, evaluate=False)
            return
    train(s, n)


class ReplayCut(Exception):
    """A replay that stopped short: the state it reached, and why (a message for the page)."""

    def __init__(self, state: dict, message: str):
        super().__init__(message)
        self.state = state


def replay(trainer, steps: int, seconds: float | None = None) -> None:
    """Train a replay link's ``steps`` from the start, here (the session's script thread), in bursts. Raises
    ReplayCut with the state reached when the whole takes longer than ``seconds`` (None: REPLAY_SECONDS, a page's;
    ``python -m dgm prepare``, ahead of a class, takes all the time it needs), or when the session or the server
    stops. A replay that clearly cannot make it (its estimate over REPLAY_MARGIN times the limit) is cut as soon
    as the estimate is sound: the training rate measured over at least a second after the first
    burst (which carries one-time costs), evaluations apart, plus the evaluations the schedule still holds at
    the time they have taken so far. (Counting the early schedule's evaluations as training once made a 500-step
    diffusion link on a busy machine look like 2 minutes at step 20, and cut it there: it takes 25 s.)"""
    seconds = REPLAY_SECONDS if seconds is None else seconds
    t0 = time.perf_counter()
    start = (t0, trainer.iteration, trainer.eval_seconds, trainer.evals_timed)
    first: list[tuple[float, int, float, int]] = []  # after the first burst: time, steps, eval seconds, evals

    def estimate(since: tuple[float, int, float, int], now: float) -> tuple[float, float]:
        """The whole replay's seconds as measured from ``since``, and the seconds of training it rests on."""
        t1, d1, e1, n1 = since
        done = trainer.iteration
        training = max(now - t1 - (trainer.eval_seconds - e1), 1e-6)
        n, e = (trainer.evals_timed - n1, trainer.eval_seconds - e1) if trainer.evals_timed > n1 else \
            (trainer.evals_timed, trainer.eval_seconds)
        left = (steps - done) * training / max(done - d1, 1) + trainer.evals_between(done, steps) * e / max(n, 1)
        return now - t0 + left, training

    def over() -> bool:
        now = time.perf_counter()
        if shutdown.cancelled() or now - t0 > seconds:
            return True
        if not trainer.iteration:
            return False
        if not first:
            first.append((now, trainer.iteration, trainer.eval_seconds, trainer.evals_timed))
            return False
        eta, training = estimate(first[0], now)
        return training >= 1.0 and trainer.iteration > first[0][1] and eta > REPLAY_MARGIN * seconds

    with shutdown.Busy():
        done = trainer.run(steps=steps, burst=None, should_stop=over)
    if done < steps:
        now = time.perf_counter()
        took, training = estimate(first[0], now) if first and done > first[0][1] else (0.0, 0.0)
        if training < 1.0:
            took = estimate(start, now)[0]
        when = (f"{took / 3600:,.1f} hours" if took > 5400 else f"{took / 60:,.0f} minutes" if took > 90
                else f"{took:,.0f} seconds")
        raise ReplayCut(trainer.checkpoint(), (
            f"This link replays {steps:,} steps: at {steps / took:,.1f} steps/s here that would take about {when}, "
            f"and a replay trains at most {seconds / 60:g} minutes in the server. It stopped at step "
            f"{done:,}: press Play to go on from there, or open the link with fewer steps or a smaller model."))


def _work(s: LiveState) -> None:
    """The training thread: short chunks while playing and someone is watching, until a worker process
    takes the run over."""
    while s.playing and s.error is None and s.remote is None and not shutdown.stopping():
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
        # Play before the paused run's evaluation came: the new worker does it again; before a Step's job came:
        # its state is awaited (about a second), lest the shown model go back to the Step's start
        collect_tail(s, worker.FINISH_WAIT if s.tail_base is not None else 0.0, drop=True)
        if first and (s.trainer.iteration == 0 or not s.trainer.eval_pending()):  # (one a Pause left: the worker's)
            train(s, s.burst)
        if s.playing and s.error is None and not s.in_process:
            s.remote = worker.start(exp.name, s.trainer, s.trainer.runtime_dict())
    _PLAYED.add(s)
    if s.remote is None and s.playing and not _thread_alive(s):
        s.thread = threading.Thread(target=_work, args=(s,), name="dgm-live-trainer", daemon=True)
        s.thread.start()


def _lost(s: LiveState, e: worker.WorkerLost) -> None:
    """A worker died or stopped answering (it is killed): the run goes on here, in the server, from its last
    full state (at most about a second old), and the page says so."""
    log.warning("training worker lost: %s", e)
    s.remote = None
    s.trainer.restore_last_good()
    s.in_process = True
    s.notice = (f"The training process stopped ({e}); the run goes on in the server from step "
                f"{s.trainer.iteration:,}, its last saved state.")


def sync(s: LiveState) -> None:
    """The session's trainer takes the worker's current state (call holding the lock). A run that
    diverged there comes back whole, with its message; a lost worker is reported (``_lost``)."""
    try:
        s.remote.sync(s.trainer, s.trainer.runtime_dict())
        s.steps_per_s = s.remote.steps_per_s
        if s.remote.error is not None:
            _stopped(s, s.remote.error)
            stop_remote(s)
    except worker.WorkerLost as e:
        _lost(s, e)


def _stopped(s: LiveState, message: str) -> None:
    """Training stopped with ``message``: the run's end (a spent budget) is a notice; anything else an error."""
    s.playing = False
    if s.trainer.finished:
        s.notice = message
    else:
        s.error = message


def stop_remote(s: LiveState) -> None:
    """Bring the whole run back from its worker process, an evaluation it is in included (call holding the
    lock): what a Step, an export or a fixed speed trains on."""
    collect_tail(s, worker.FINISH_WAIT, drop=True)
    if s.remote is None:
        return
    try:
        s.remote.stop(s.trainer)
    except worker.WorkerLost as e:
        _lost(s, e)
    s.remote = None


def pause_remote(s: LiveState) -> None:
    """A Pause: the run's whole state back at once (call holding the lock); a worker in an evaluation gives the
    state before it and finishes the evaluation meanwhile (``s.tail``, taken by ``collect_tail``)."""
    if s.remote is None:
        return
    try:
        if s.remote.stop(s.trainer, early=True):
            s.tail = s.remote
    except worker.WorkerLost as e:
        _lost(s, e)
    s.remote = None


def collect_tail(s: LiveState, wait: float = 0.0, drop: bool = False) -> bool:
    """Take the paused run's evaluated state if it has come (within ``wait`` seconds; call holding the lock);
    else, with ``drop``, stop waiting for it: the trainer keeps the state before that evaluation, which its
    next step does first (``Trainer.eval_pending``), or a Step's preview is trained again here, evaluations
    included (``_redo_step``). Returns whether none is awaited any more."""
    if s.tail is None:
        return True
    if not s.tail.finish(s.trainer, wait):
        if drop:
            drop_tail(s, redo=True)
        return drop
    if s.tail.error is not None:
        _stopped(s, s.tail.error)
    if not s.tail.taken:  # the worker went away without its state (after a failure: the Step's start)
        drop_tail(s, redo=s.tail.error is None)
    s.tail, s.tail_base = None, None
    return True


def drop_tail(s: LiveState, redo: bool = False) -> None:
    """Stop waiting for the evaluated state. A Step's preview gives way to the Step's start (before a reset or a
    new run), or with ``redo`` (the run goes on) is trained again from there, evaluations included."""
    if s.tail is not None:
        s.tail.close()
        s.tail = None
    if redo:
        _redo_step(s)
    else:
        _back_to_base(s)


def _redo_step(s: LiveState) -> None:
    """A Step's job that did not bring its state (lost, or later than a Step, Play or export could wait): the
    Step is trained again here from its start, its evaluations included, which gives the state the job would
    have (evaluations never touch the training stream). Going back to the Step's start instead lost the Step:
    on a busy server two quick Steps showed 10 steps, not 20."""
    if s.tail_base is None:
        return
    end = s.trainer.iteration
    _back_to_base(s)
    train(s, end - s.trainer.iteration)


def _back_to_base(s: LiveState) -> None:
    """A Step's preview (trained without its evaluations: no state to go on from) gives way to the Step's start."""
    if s.tail_base is not None:
        s.trainer.import_state(s.tail_base)
        s.tail_base = None


def drop_remote(s: LiveState) -> None:
    """Close the run's worker process without taking its state (a reset or a new run)."""
    drop_tail(s)
    if s.remote is not None:
        s.remote.close()
        s.remote = None


@atexit.register
def _stop_threads() -> None:
    """At interpreter exit: no session plays any more, and the server waits for its training (shutdown.py)."""
    for s in list(_PLAYED):
        s.playing = False
    shutdown.wait_for_training([s.thread for s in list(_PLAYED)])


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

        req = shutdown.script_requests()
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
