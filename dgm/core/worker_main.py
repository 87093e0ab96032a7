"""The worker side of ``dgm.core.worker``: the zygote process (``python -m dgm.core.worker_main SOCKET``)
and the workers it forks, each of which trains one run and answers the server's syncs between short
bursts. Everything the server does with them is in ``dgm.core.worker``."""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import shutil
import signal
import socket
import sys
import threading
import time
from multiprocessing.connection import Connection
from typing import Any

from dgm.core.train import Trainer, TrainingDiverged
from dgm.core.wire import recv, send

log = logging.getLogger(__name__)

BURST_SECONDS = 0.005  # a worker answers a sync within about this long (plus an evaluation, if one is due)
BUSY_AFTER = 0.25  # a sync still waiting after this long (the loop is in an evaluation) is answered "busy"
IDLE_STOP_SECONDS = 10.0  # a worker stops training when no sync came for this long
EXIT_AFTER_SECONDS = 20.0  # ... and exits when nothing more came for this long after that (the
# session's trainer then continues from the last checkpoint it received, at most a second older)


# ---- the worker process ------------------------------------------------------------------------

#: experiments that train many models at once (the lottery's GAN seeds, the arena's families)
COMPOSITES = ("gan_seeds", "arena")


#: modules the families import on first use only (in an evaluation, an OT pairing): imported by the warm-up, so
#: that a worker does not import them anew at its run's first evaluation (POT and SciPy's parts: about a second)
LAZY_IMPORTS = ("ot", "scipy.spatial.distance", "scipy.optimize")


def warm_up() -> None:
    """Build each model family once, train it a few steps and copy its state: the imports, lazy torch kernels
    and data sets that every worker would otherwise load on its own are then shared by all of them (called
    once, in the zygote). No evaluation: the initial ones took half the warm-up (3.5 of 6.6 s of CPU, the
    GAN's and the diffusion model's 2 s each, beside a first visit on two cores) and made a worker's later
    steps and evaluations no faster; what they alone import is ``LAZY_IMPORTS``
    (tests/test_worker.py checks that an evaluation after the warm-up imports nothing new)."""
    import importlib

    from dgm.core import registry

    for name in registry.names():
        try:
            exp = registry.get(name)  # the imports, at least
            if name in COMPOSITES:
                continue  # made of the families' models, warmed up by theirs: building one costs seconds
            t = exp.make(seed=0, device="cpu")
            t.step(3, evaluate=False)
            t.import_state(t.export_state())
        except Exception:  # a warm-up is an optimisation only
            log.exception("warming up %s failed", name)
    for mod in LAZY_IMPORTS:
        try:
            importlib.import_module(mod)
        except ImportError:
            log.exception("warming up: could not import %s", mod)


def error_text(e: Exception) -> str:
    """What a page shows when training stops with ``e`` (never a traceback)."""
    return str(e) if isinstance(e, TrainingDiverged) else f"Training stopped with an error: {e}"


def serve(conn: Connection) -> None:
    """A worker's life: say it is ready, wait for a run, train it while someone syncs; or, given a step to
    reach (``until``), train to it and send the run's whole state unasked (a Step's evaluation: ``_job``)."""
    send(conn, ("ready", os.getpid()))
    try:
        msg = recv(conn)
    except (EOFError, OSError):
        return
    try:
        _, exp_name, config, seed, datasets, state, runtime, until = msg
        import dgm.core.data
        from dgm.core import registry

        for dist in datasets:
            dgm.core.data.register(dist)
        trainer = registry.get(exp_name).make(config, seed=seed, device="cpu")
        trainer.import_state(state)
        trainer.checkpoint_every_s = 1.0
        trainer.set_runtime(runtime)
    except Exception as e:
        log.exception("worker could not start the run")
        send(conn, ("failed", repr(e)))
        return
    send(conn, ("started",))  # the setup is done: from now on every sync is answered within a burst
    if until is None:
        _train_loop(conn, trainer)
    else:
        _job(conn, trainer, until)


def _step(trainer: Trainer, n: int) -> str | None:
    """n steps; a failure as the page's message (a divergence, or anything else, logged), else None."""
    try:
        trainer.step(n)
    except Exception as e:
        if not isinstance(e, TrainingDiverged):
            log.exception("training failed")
        return error_text(e)
    return None


def _job(conn: Connection, trainer: Trainer, until: int) -> None:
    """Train to step ``until`` (an evaluation left pending first), then send ("state", the whole state, rate,
    error) and exit. A failure is sent with the state it left, as a sync would."""
    t0, done = time.perf_counter(), trainer.iteration
    error = _step(trainer, max(0, until - trainer.iteration))
    rate = (trainer.iteration - done) / max(time.perf_counter() - t0, 1e-6)
    with contextlib.suppress(OSError):
        send(conn, ("state", trainer.export_state(full=True), rate, error))


class _Inbox:
    """The server's messages, read by a thread of their own: a message the training loop has not taken
    within BUSY_AFTER (it is in a long evaluation) is answered ("busy",) at once, so that the server can
    tell a busy worker from a hung one. A stop that comes during an evaluation (or just before one starts) is
    answered at once with the run's whole state from before it (("early", state, rate, None): see
    ``evaluating``), a Pause that does not wait for the evaluation. The loop still takes the message afterwards: it applies a sync's settings
    without answering again, and answers a stop with the run's whole state (after an early answer: the same
    run with the evaluation done, which the server takes if it still waits for it)."""

    def __init__(self, conn: Connection):
        self.conn = conn
        self.send_lock = threading.Lock()
        self.cv = threading.Condition()
        self.msg: Any = None
        self.answered = False
        self.closed = False
        self.before_eval: dict[str, Any] | None = None  # the run's whole state before the evaluation now running
        self.rate = 0.0  # the loop's training rate (steps/s), for an early answer
        # the training loop's thread id (the kernel's; in a forked process threading.main_thread().native_id is
        # still the parent's: lowering that one slowed every worker the zygote forked afterwards)
        self.loop_thread = 0
        threading.Thread(target=self._read, name="dgm-worker-inbox", daemon=True).start()

    @contextlib.contextmanager
    def evaluating(self, trainer: Trainer):
        """The trainer's ``eval_guard``: keeps its whole state from before the evaluation for an early answer
        (a copy: a few ms, against an evaluation's tenths of a second or seconds)."""
        state = trainer.export_state(full=True)
        with self.cv:
            self.before_eval = state
            self.cv.notify_all()  # a stop waiting to be taken is answered with it now
        try:
            yield
        finally:
            with self.cv:
                self.before_eval = None

    def send(self, obj: Any) -> None:
        with self.send_lock:
            send(self.conn, obj)

    def _read(self) -> None:
        while True:
            try:
                msg = recv(self.conn)
            except (EOFError, OSError):
                with self.cv:
                    self.closed = True
                    self.cv.notify_all()
                return
            with self.cv:
                self.msg, self.answered = msg, False
                self.cv.notify_all()
                stop = msg[0] == "stop"
                # taken by the loop, or (a stop) the loop in an evaluation, now or once it starts one: a stop that
                # came just before an evaluation once got "busy", and its server then gave the run up
                if not self.cv.wait_for(lambda: self.msg is not msg or (stop and self.before_eval is not None),
                                        timeout=BUSY_AFTER):
                    reply = ("busy",)
                elif self.msg is not msg:
                    continue
                else:  # the loop is in an evaluation: it takes the message after it
                    reply = ("early", self.before_eval, self.rate, None)
                self.answered = True
            if reply[0] == "early" and self.loop_thread:  # the paused page redraws now: the rest of the
                _lower_priority(self.loop_thread)  # evaluation gives it the CPU (lowered before the answer)
            try:
                self.send(reply)
            except OSError:
                return

    def take(self, timeout: float) -> tuple[Any, bool] | None:
        """The next message and whether it was answered "busy" already; None if none came within
        ``timeout`` seconds. Raises EOFError when the server has gone."""
        with self.cv:
            self.cv.wait_for(lambda: self.msg is not None or self.closed, timeout=timeout)
            if self.msg is None:
                if self.closed:
                    raise EOFError
                return None
            msg, answered, self.msg = self.msg, self.answered, None
            self.cv.notify_all()
            return msg, answered


def _lower_priority(tid: int) -> None:
    """The lowest CPU priority for thread ``tid`` (a kernel thread id) of this process (Linux: a priority is a
    thread's, and a process forked later inherits its forking thread's)."""
    try:
        os.setpriority(os.PRIO_PROCESS, tid, 19)
    except (OSError, AttributeError):
        pass


def _train_loop(conn: Connection, trainer: Trainer) -> None:
    inbox = _Inbox(conn)
    inbox.loop_thread = threading.get_native_id()
    trainer.eval_guard = lambda: inbox.evaluating(trainer)
    error: str | None = None
    burst, rate = 1, 0.0
    sent_last_good = None
    last_msg = time.monotonic()
    while True:
        idle = error is not None or time.monotonic() - last_msg > IDLE_STOP_SECONDS
        try:
            got = inbox.take(EXIT_AFTER_SECONDS if idle else 0)
        except EOFError:
            return  # the server went away
        if got is not None:
            msg, answered = got
            kind = msg[0]
            last_msg = time.monotonic()
            if kind == "sync":
                trainer.set_runtime(msg[1])
                if answered:
                    continue  # "busy" went back already; the next sync gets the state
            # a sync gets what the figures need (and the checkpoint when it is new); a stop, everything
            fresh = trainer.last_good is not sent_last_good
            try:
                inbox.send(("state", trainer.export_state(full=kind == "stop", last_good=fresh), rate, error))
            except (BrokenPipeError, OSError):
                return
            sent_last_good = trainer.last_good
            if kind == "stop":
                return
            continue
        if idle:
            return  # nobody has asked for this run for a long while
        t0 = time.perf_counter()
        error = _step(trainer, burst)
        if error is not None:  # divergence, or any other failure: kept for the next sync
            continue
        r = burst / max(time.perf_counter() - t0, 1e-6)
        rate = r if rate == 0 else 0.8 * rate + 0.2 * r
        inbox.rate = rate
        burst = int(min(max(BURST_SECONDS * rate, 1), 1000))


def zygote_main(path: str) -> None:
    """``python -m dgm.core.worker_main SOCKET``: see ``dgm.core.worker._Zygote``. The objects made by the warm-up are then
    frozen out of the garbage collector's passes, which would otherwise touch (and so copy into every
    worker) all of their memory pages. When the server goes away (its end of our stdin closes, even if
    it was killed) or stops us, the zygote kills the workers it forked that are still alive and
    removes the socket's folder: nothing is left behind."""
    # A SIGTERM that comes while we fork must not raise inside the fork's Python hooks (logging's lock release),
    # where its SystemExit is printed as an ignored traceback and lost: it is noted, and raised after the fork.
    # (Blocking the signal in this thread does not do it: the process has a second thread, which then takes it.)
    term = {"forking": False, "asked": False}

    def on_term(*_) -> None:
        if term["forking"]:
            term["asked"] = True
        else:
            sys.exit(0)

    signal.signal(signal.SIGTERM, on_term)
    children: set[int] = set()
    try:
        warm_up()
        gc.collect()
        gc.freeze()
        signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # workers that exit are reaped at once
        for _ in sys.stdin:  # until the server closes our stdin (or goes away)
            term["forking"] = True
            pid = os.fork()
            if pid == 0:
                try:
                    signal.signal(signal.SIGTERM, signal.SIG_DFL)
                    if term["asked"]:  # the zygote was being stopped: so is this worker, before it starts
                        return
                    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    sock.connect(path)
                    serve(Connection(sock.detach()))
                finally:
                    os._exit(0)
            children = {c for c in children if _is_child(c)} | {pid}  # before a SIGTERM can stop us: it kills them
            term["forking"] = False
            if term["asked"]:
                sys.exit(0)
    finally:
        for pid in children:
            if _is_child(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        shutil.rmtree(os.path.dirname(path), ignore_errors=True)


def _is_child(pid: int) -> bool:
    """Whether ``pid`` is still a live child of this process (not a reused number)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return int(fields[1]) == os.getpid() and fields[0] != "Z"


if __name__ == "__main__":
    zygote_main(sys.argv[1])
