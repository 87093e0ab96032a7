"""Where a command-line run writes its results, as they come, so that no run is lost.

    out = Outputs(out_dir, png_dir)     # makes and checks both folders, before any training
    out.add(trainer)                    # after every burst: the new history rows, appended
    out.finish(result, trainer, exp)    # final.json, history.csv (whole), samples.npy, the PNGs

``Outputs`` raises ``OutputError`` (one line, naming the folder and the reason) when a folder cannot
be made or written: an existing file in its place, no permission, a read-only file system. It does so
before any training, so a run never fails at its end for want of a place to put it. history.csv grows
row by row while the run trains (every row the trainer recorded; its bounded history later thins the
early ones), and is written whole, merged by step, at the end or at a stop; final.json says how the
run ended (``status``: finished, diverged or interrupted).
"""

from __future__ import annotations

import csv
import json
import math
import os
import tempfile
from typing import Any

import numpy as np

from dgm.core.metrics import EVAL_SAMPLES

FILES = ("final.json", "history.csv", "samples.npy")


class OutputError(ValueError):
    """A results folder that cannot be used; the message says which and why."""


def prepare_dir(flag: str, path: str, names: tuple[str, ...] = ()) -> str:
    """Make ``path`` (normalised first, so ``a/../b`` makes no stray ``a``) and check that files can be
    written in it; ``names`` must not be folders there. Returns the normalised path."""
    norm = os.path.normpath(path)
    if os.path.exists(norm) and not os.path.isdir(norm):
        raise OutputError(f"{flag} {path}: a file of that name exists; give a folder")
    try:
        os.makedirs(norm, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=norm, prefix=".dgm-probe-")
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        raise OutputError(f"{flag} {path}: cannot write there ({e.strerror or e})") from None
    for name in names:
        if os.path.isdir(os.path.join(norm, name)):
            raise OutputError(f"{flag} {path}: {name} is a folder there")
    return norm


def _write_atomic(path: str, data: bytes) -> None:
    """Write a whole file by a rename, so a reader never sees half of it."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", prefix=".dgm-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _csv_text(keys: list[str], rows: list[dict]) -> str:
    import io

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["step", *keys])
    for r in rows:
        w.writerow([r["step"], *("" if r.get(k) is None else r[k] for k in keys)])
    return buf.getvalue()


class Outputs:
    """The results folder (``--out``) and the figures folder (``--png``) of one run; see the module
    docstring."""

    def __init__(self, out: str | None, png: str | None):
        self.out = prepare_dir("--out", out, FILES) if out else None
        self.png = prepare_dir("--png", png) if png else None
        self.rows: dict[int, dict[str, Any]] = {}  # every row recorded, by step
        self.keys: list[str] = []
        self._history = None
        if self.out:
            for name in FILES:
                path = os.path.join(self.out, name)
                if os.path.exists(path) and not os.access(path, os.W_OK):
                    raise OutputError(f"--out {out}: {name} there cannot be overwritten")

    def add(self, trainer) -> None:
        """Append the history rows recorded since the last call."""
        last = max(self.rows, default=-1)
        new = [r for r in trainer.history.merged() if r["step"] > last]
        if not new:
            return
        for r in new:
            self.rows[int(r["step"])] = dict(r)
        if self.out is None:
            return
        if self._history is None:  # opened with the first rows: a run refused before training leaves none
            self._history = open(os.path.join(self.out, "history.csv"), "w", newline="")
        keys = sorted({k for r in self.rows.values() for k in r} - {"step"})
        if keys != self.keys:  # a metric appeared (an evaluation): the header changes, write it whole
            self.keys = keys
            self._history.seek(0)
            self._history.truncate()
            self._history.write(_csv_text(keys, [self.rows[s] for s in sorted(self.rows)]))
        else:
            self._history.write(_csv_text(keys, new).split("\n", 1)[1])
        self._history.flush()

    def finish(self, result: dict[str, Any], trainer, exp) -> list[str]:
        """Write everything the run has (at its end, or where it stopped); returns the files written."""
        written: list[str] = []
        if self.out:
            self.add(trainer)
            for r in trainer.history.merged():  # the final evaluation, at a step already written
                self.rows.setdefault(int(r["step"]), {}).update(r)
            if self._history is not None:
                self._history.close()
                self._history = None
            keys = sorted({k for r in self.rows.values() for k in r} - {"step"})
            rows = [self.rows[s] for s in sorted(self.rows)]
            _write_atomic(os.path.join(self.out, "history.csv"), _csv_text(keys, rows).encode())
            summary = {k: v for k, v in result.items() if k != "history"}
            _write_atomic(os.path.join(self.out, "final.json"), json.dumps(summary, indent=2).encode())
            written += ["final.json", "history.csv"]
            if exp.samples is not None:
                import io

                buf = io.BytesIO()
                np.save(buf, np.asarray(exp.samples(trainer, EVAL_SAMPLES), dtype=np.float32))
                _write_atomic(os.path.join(self.out, "samples.npy"), buf.getvalue())
                written.append("samples.npy")
        if self.png and exp.figures:
            from dgm.core import export

            written += export.write_pngs(exp.figures(trainer), self.png, exp.name)
        return written

    def close(self) -> None:
        if self._history is not None:
            self._history.close()
            self._history = None


def jsonable(v: Any) -> Any:
    """``v`` as plain JSON values: non-finite floats become None (JSON has no NaN), numpy scalars Python
    numbers, tuples lists; dicts and lists are walked."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if isinstance(v, (np.floating, np.integer)):
        return jsonable(v.item())
    return v
