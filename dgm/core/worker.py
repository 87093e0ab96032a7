"""Training runs in worker processes, so that a live page's training never waits for its drawing.

    run = worker.start("gan", trainer, runtime={"mode": "both"})  # None: no worker ready yet
    run.sync(trainer, runtime)    # the trainer (a replica) takes the worker's current state
    run.stop(trainer)             # the same, and the worker stops; the trainer can go on in-process

Why: the Streamlit server runs every session's redraws in Python threads of one process. A training
thread beside them shares one interpreter lock with them: on the GAN page, building and sending the
figures held it about half the time, and the training thread trained at 0.6x its own speed. In a
process of its own, a run trains at its full speed on a core of its own, and the page only copies
its state (a few hundred kB) once per redraw.

How: worker processes fork from a "zygote", a process that has imported torch and every model
family and warmed them up (``warm_up``), so a worker starts in milliseconds and shares those
memory pages with the others. One spare worker is kept ready. A worker receives the run (experiment,
config, seed, the state from ``Trainer.export_state``, and the user's data set if the config names
one), then trains in short bursts, answering ``sync`` between them with its state (a light one:
the modules' tensors, history and metrics, plus the full "last good" checkpoint when it is new). It
stops training when no sync has come for ``IDLE_STOP_SECONDS`` (a closed or hidden tab) and exits
after ``EXIT_AFTER_SECONDS`` more, or at once if its server goes away. A run that diverges keeps the
message and its state for the next sync, and stops. Training is deterministic whatever the process
(``tests/test_worker.py``). The worker side lives in ``dgm.core.worker_main``.

Faults: a worker that dies, or does not answer a sync within ``REPLY_TIMEOUT`` once it has set its run
up (a hung or stopped process), is killed and raises ``WorkerLost``; the page then says so and trains
the run in the server from its last full state. When the server goes away, even killed, the zygote
kills the workers still alive and removes the socket's folder.

Only CPU runs move to a worker, on Linux; ``DGM_WORKERS=0`` turns them off. The live loop then trains
in a thread of the server, as it does while no worker is ready and beyond ``_max_workers()``.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from multiprocessing.connection import Connection
from typing import Any

from dgm.core.train import Trainer
from dgm.core.worker_main import error_text  # noqa: F401  (part of this module's API: what a page shows)
from dgm.core.wire import recv as _recv
from dgm.core.wire import send as _send

log = logging.getLogger(__name__)

REPLY_TIMEOUT = 2.0  # a worker that does not answer a sync in this time is given up (killed; the run goes on
# in the server from its last full state). It answers between bursts of BURST_SECONDS, and "busy" during a
# long evaluation (its inbox thread answers within BUSY_AFTER): a hung or stopped worker answers neither.
STOP_WAIT = 1.0  # a stop waits this long for a busy worker's state, then takes the run's last checkpoint
# (at most about a second old) instead. A worker in an evaluation answers a stop at once with the state
# from before it (``RemoteRun.stop``): a Pause does not wait for the evaluation
FINISH_WAIT = 10.0  # a stop that needs the run after that evaluation (a Step, an export) waits this long for it
START_TIMEOUT = 120.0  # the zygote's warm-up (the first worker) takes a few seconds, more on a busy machine;
# a run's setup in a worker (building its trainer) may take this long before the worker says "started"
WORKER_MB = 150  # memory to allow per worker: about 50 MB of its own, plus its share of the zygote's


def _max_workers() -> int:
    """At most this many worker processes (spare included): 64, or fewer where the memory available
    now would not hold them. Further runs train in threads of the server (slower, but they run)."""
    try:
        avail_mb = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (ValueError, OSError, AttributeError):
        avail_mb = 4096
    return int(max(2, min(64, avail_mb // WORKER_MB)))


class WorkerLost(RuntimeError):
    """The worker process died or stopped answering; the run goes on from the last synced state."""


def enabled() -> bool:
    """Workers fork from a warmed-up process: Linux only (fork is unsafe after some macOS frameworks
    have loaded, and Windows has none); ``DGM_WORKERS=0`` turns them off."""
    return os.environ.get("DGM_WORKERS", "1") != "0" and sys.platform.startswith("linux")


# ---- the server's side ---------------------------------------------------------------------------

class _Zygote:
    """The process that workers fork from: ``python -m dgm.core.worker_main SOCKET`` imports torch and every
    family and warms them up (``warm_up``), then forks one worker per line it reads on stdin.
    Each worker connects back to the server's Unix socket (in a private temporary folder).

    (multiprocessing's fork server would do this, but it re-runs the parent's main module in every
    child, and under Streamlit that module is the page script being run.)"""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="dgm-workers-")  # mode 0700: only this user connects
        self.path = os.path.join(self.dir, "socket")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(self.path)
        self.sock.listen(8)
        self.sock.settimeout(START_TIMEOUT)
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
        self.proc = subprocess.Popen([sys.executable, "-m", "dgm.core.worker_main", self.path], stdin=subprocess.PIPE, env=env,
                                     cwd=root, start_new_session=True)  # Ctrl-C reaches the server, which ends it

    def fork(self) -> tuple[Connection, int]:
        """A new worker: its connection and pid. Waits for the zygote's warm-up the first time."""
        if self.proc.poll() is not None:
            raise WorkerLost(f"the zygote exited ({self.proc.returncode})")
        self.proc.stdin.write(b"fork\n")
        self.proc.stdin.flush()
        sock, _ = self.sock.accept()
        sock.settimeout(None)
        conn = Connection(sock.detach())
        if not conn.poll(START_TIMEOUT):
            raise WorkerLost("the worker did not start")
        _, pid = _recv(conn)
        return conn, pid

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # its workers notice their connections close and exit
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class _Process:
    """A worker process, seen from the server."""

    def __init__(self, zygote: _Zygote):
        self.conn, self.pid = zygote.fork()

    def alive(self) -> bool:
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return not self.conn.closed

    def close(self, kill: bool = False) -> None:
        """Close the connection and end the process (``kill``: SIGKILL, which also ends a stopped or hung
        one; a SIGTERM would wait for it to run again)."""
        try:
            self.conn.close()
        except OSError:
            pass
        try:
            os.kill(self.pid, signal.SIGKILL if kill else signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass


class _Pool:
    """Starts worker processes, one spare ahead, at most ``max_workers`` alive."""

    def __init__(self):
        self.lock = threading.Lock()
        self.spare: _Process | None = None
        self.starting = False
        self.live: "weakref.WeakSet[RemoteRun]" = weakref.WeakSet()
        self.zygote: _Zygote | None = None
        self.max_workers = _max_workers()

    def prepare(self) -> None:
        """Start a spare worker in the background (the first one also starts the zygote)."""
        with self.lock:
            if self.spare is not None or self.starting or not enabled():
                return
            if sum(1 for r in list(self.live) if r.proc.alive()) + 1 > self.max_workers:
                return
            self.starting = True
        threading.Thread(target=self._start_spare, name="dgm-worker-start", daemon=True).start()

    def _start_spare(self) -> None:
        p = None
        try:
            if self.zygote is None or self.zygote.proc.poll() is not None:
                self.zygote = _Zygote()
            p = _Process(self.zygote)
        except Exception:
            log.exception("could not start a worker process")
        with self.lock:
            self.spare, self.starting = p, False

    def take(self) -> _Process | None:
        with self.lock:
            p, self.spare = self.spare, None
        if p is not None and not p.alive():
            p = None
        self.prepare()
        return p

    def close(self) -> None:
        if self.spare is not None:
            self.spare.close()
        if self.zygote is not None:
            self.zygote.close()


_POOL = _Pool()
atexit.register(_POOL.close)


def prepare() -> None:
    """Have a worker ready for the next run (non-blocking)."""
    _POOL.prepare()


def _datasets(trainer: Trainer) -> list:
    """The user's data sets that the config names ("custom:<hash>"): workers do not have them."""
    import dgm.core.data

    out = []
    for v in vars(trainer.config).values():
        if isinstance(v, str) and ":" in v:
            try:
                out.append(dgm.core.data.get(v))
            except Exception:
                pass
    return out


class RemoteRun:
    """A run training in a worker process; see the module docstring. Until the worker says it has set the
    run up (``started``), a sync leaves the trainer as it is (it still holds the state that was sent);
    after that, a worker that does not answer within REPLY_TIMEOUT is lost."""

    def __init__(self, proc: _Process):
        self.proc = proc
        self.steps_per_s = 0.0
        self.error: str | None = None
        self.started = False
        self.taken = False  # a state of the run's came back
        self.busy = 0  # syncs answered "busy" (the worker was in an evaluation)
        self.sent_at = time.monotonic()
        weakref.finalize(self, proc.close)

    def _lost(self, why: str) -> WorkerLost:
        self.proc.close(kill=True)
        return WorkerLost(why)

    def _await_start(self, wait: float) -> bool:
        """Whether the worker has set the run up (reading its word if it came within ``wait`` seconds)."""
        if self.started:
            return True
        try:
            if not self.proc.conn.poll(wait):
                if time.monotonic() - self.sent_at > START_TIMEOUT:
                    raise self._lost(f"the worker did not set the run up in {START_TIMEOUT:.0f} s")
                return False
            reply = _recv(self.proc.conn)
        except (EOFError, OSError) as e:
            raise self._lost(f"the worker is gone ({e!r})") from None
        if reply[0] != "started":  # ("failed", why): the run could not be set up there
            raise self._lost(f"the worker could not start the run: {reply[1]}")
        self.started = True
        return True

    def _ask(self, kind: str, runtime: dict[str, Any], trainer: Trainer, early: bool = False) -> bool:
        """A sync or a stop. A sync answered "busy" (the worker is in an evaluation) leaves the trainer as
        it is. A stop during an evaluation is answered at once with the state from before it ("early"): with
        ``early`` that is the answer (returns True: the worker goes on to finish the evaluation, see
        ``finish``); else the stop waits up to FINISH_WAIT for the state after it, keeping the one from
        before if it does not come. A stop answered "busy" (no such state) waits STOP_WAIT for the state,
        then ends the worker and takes the run's last checkpoint (which the syncs keep fresh)."""
        try:
            _send(self.proc.conn, (kind, runtime))
            if not self.proc.conn.poll(REPLY_TIMEOUT):
                raise self._lost(f"the worker did not answer within {REPLY_TIMEOUT:g} s")
            reply = _recv(self.proc.conn)
            if reply[0] == "early":
                self._take(reply, trainer)
                if not early:
                    self.finish(trainer, FINISH_WAIT)  # if it does not come, the state from before stays
                return early
            if reply[0] == "busy" and kind == "stop":
                self.busy += 1
                if not self.proc.conn.poll(STOP_WAIT):
                    self.proc.close(kill=True)
                    trainer.restore_last_good()
                    return False
                reply = _recv(self.proc.conn)
        except (EOFError, OSError) as e:
            raise self._lost(f"the worker is gone ({e!r})") from None
        if reply[0] == "busy":
            self.busy += 1
            return False
        self._take(reply, trainer)
        return False

    def _take(self, reply: tuple, trainer: Trainer) -> None:
        """A state answer ("state" or "early", state, rate, error): the trainer takes the state."""
        _, state, self.steps_per_s, self.error = reply
        trainer.import_state(state)
        self.taken = True

    def finish(self, trainer: Trainer, wait: float) -> bool:
        """After an early answer to a stop, or for a job (``start(..., until=)``): the trainer takes the run's
        state after the evaluation if it comes within ``wait`` seconds, and the worker exits; False if it has
        not come yet (the trainer then still holds the state from before the evaluation, which a run can go
        on from: it evaluates first)."""
        deadline = time.monotonic() + wait
        try:
            if not self._await_start(wait) or not self.proc.conn.poll(max(0.0, deadline - time.monotonic())):
                return False
            reply = _recv(self.proc.conn)
            if reply[0] == "state":
                self._take(reply, trainer)
        except (EOFError, OSError, WorkerLost):
            pass  # gone: the state from before the evaluation stays
        self.close()
        return True

    def sync(self, trainer: Trainer, runtime: dict[str, Any]) -> None:
        """``trainer`` takes the run's current state; ``runtime`` settings apply from now on.
        Raises WorkerLost (the trainer is then unchanged)."""
        if self._await_start(0):
            self._ask("sync", runtime, trainer)

    def stop(self, trainer: Trainer, early: bool = False) -> bool:
        """The last state, and the worker exits. (Before the worker has set the run up, the trainer
        already holds the run's whole state.) With ``early``, a worker in the middle of an evaluation gives
        the state from before it at once and goes on to finish it: returns True, and ``finish`` takes the
        rest (or ``close`` drops it)."""
        finishing = False
        try:
            if self._await_start(0):
                finishing = self._ask("stop", {}, trainer, early=early)
        finally:
            if not finishing:
                self.close()
        return finishing

    def close(self) -> None:
        """Drop the run without its state."""
        self.proc.close()


def start(exp_name: str, trainer: Trainer, runtime: dict[str, Any], until: int | None = None,
          state: dict[str, Any] | None = None) -> RemoteRun | None:
    """Continue ``trainer``'s run in a worker; None when none is ready (or workers are off, or
    the run is not on the CPU). The trainer then stays the replica that ``sync`` updates. With ``until``, a
    job instead: the worker trains to that step (an evaluation left pending first) and sends the run's whole
    state unasked, which ``finish`` takes; nothing else is asked of it. ``state``: the trainer's
    ``export_state()`` where the caller has it already."""
    if not enabled() or trainer.device.type != "cpu":
        return None
    proc = _POOL.take()
    if proc is None:
        return None
    try:
        _send(proc.conn, ("start", exp_name, trainer.config, trainer.seed, _datasets(trainer),
                        trainer.export_state() if state is None else state, runtime, until))
    except (OSError, ValueError):
        proc.close()
        return None
    run = RemoteRun(proc)
    _POOL.live.add(run)
    return run

