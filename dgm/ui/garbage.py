"""The server's garbage, collected by a thread of its own (``start_gc``)."""

from __future__ import annotations

import gc
import threading
import time

GC_EVERY_SECONDS = 30.0

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
