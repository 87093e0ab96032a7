"""The server's stop as the live runs see it: whether the server (SIGTERM, Ctrl-C) or this script run (its tab
closed) is going away, so that every loop training in the server ends within a burst (``stopping``,
``cancelled``), and, at the interpreter's exit, a wait for those loops (``Busy`` counts them): a thread still
inside a torch op when the interpreter finalises aborts the process ("terminate called without an active
exception"), so a server that cannot wait leaves at once with ``os._exit`` instead.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Iterable

log = logging.getLogger(__name__)

SCRIPT_THREAD = "ScriptRunner.scriptThread"  # a session's script thread (tests/test_streamlit_internals.py)
EXIT_WAIT_SECONDS = 20.0  # at exit, how long to wait for training in the server to reach a burst's end (a
# burst is at least one step: about 3 s for the largest GAN the controls allow, more on a busy laptop)

_EXITING = threading.Event()  # set at interpreter exit
_BUSY = [0]  # loops training in the server now (replays, steps, chunks); exit waits for them
_BUSY_LOCK = threading.Condition()


def stopping() -> bool:
    """Whether the server is shutting down (SIGTERM, Ctrl-C): every loop of ours then ends within a burst.
    (Streamlit's runtime state; tests/test_streamlit_internals.py guards it.)"""
    if _EXITING.is_set():
        return True
    try:
        from streamlit.runtime import Runtime, RuntimeState

        return Runtime.exists() and Runtime.instance().state in (RuntimeState.STOPPING, RuntimeState.STOPPED)
    except Exception:
        return False


def script_requests():
    """This script run's request queue (a private attribute: tests/test_streamlit_internals.py guards it)."""
    from streamlit.runtime.scriptrunner_utils.script_run_context import get_script_run_ctx

    return get_script_run_ctx(suppress_warning=True).script_requests  # None outside a script run (the CLI)


def cancelled() -> bool:
    """Whether the work of this script run should end now: the server stops, or the session does (its tab
    closed)."""
    if stopping():
        return True
    try:
        from streamlit.runtime.scriptrunner_utils.script_requests import ScriptRequestType

        return script_requests()._state == ScriptRequestType.STOP
    except Exception:
        return False


class Busy:
    """Counts a loop that trains in the server, so that the interpreter's exit can wait for it to end."""

    def __enter__(self) -> None:
        with _BUSY_LOCK:
            _BUSY[0] += 1

    def __exit__(self, *exc) -> None:
        with _BUSY_LOCK:
            _BUSY[0] -= 1
            _BUSY_LOCK.notify_all()


def wait_for_training(threads: Iterable[threading.Thread | None]) -> None:
    """At interpreter exit: say that the server stops, then let training in the server (the sessions' training
    ``threads`` and every ``Busy`` loop) finish its burst, up to EXIT_WAIT_SECONDS; leave at once where it did not,
    or where a script thread is still drawing."""
    _EXITING.set()
    threads = [t for t in threads if t is not None]
    deadline = time.monotonic() + EXIT_WAIT_SECONDS
    for t in threads:
        t.join(timeout=max(0.0, deadline - time.monotonic()))
    with _BUSY_LOCK:
        idle = _BUSY_LOCK.wait_for(lambda: _BUSY[0] == 0, timeout=max(0.0, deadline - time.monotonic()))
    # Streamlit's script threads are daemons: one still drawing a page (a large model's figures are torch ops
    # of seconds) when the interpreter finalises aborts the process the same way, so a server that has one
    # leaves at once too (waiting for it held a restart past its caller's patience)
    drawing = any(t.name == SCRIPT_THREAD and t.is_alive() and t is not threading.current_thread()
                  for t in threading.enumerate())
    if drawing and idle:
        logging.shutdown()
        os._exit(0)
    if not idle or any(t.is_alive() for t in threads):
        # a thread still inside a torch op when the interpreter finalises would abort the process:
        # end it now instead (the worker processes and the zygote clean up after themselves)
        log.warning("training in the server did not stop within %g s; exiting now", EXIT_WAIT_SECONDS)
        logging.shutdown()
        os._exit(0)
