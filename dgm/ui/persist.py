"""A page's run on the server's disk, so that a server restart does not lose it.

Each page of a browser tab gets a run id in its address (``?run=…``, a random token; share links leave it
out). While the run plays, every ``SAVE_EVERY`` seconds, and whenever it stops, its last good state
(``Trainer.last_good``: the whole run, optimiser and random state included) is written to
``<dir>/<id>.<experiment>.pt``. When the server has restarted and the tab reconnects, the page finds no
run in its session, finds the file its address names, and, if the file holds a run of the same settings,
continues from it under a new id and says so (so tabs opened with one copied address never overwrite each
other's runs, nor the one they started from).

A user's own data set is kept the same way (``<digest>.data.pt``), so that a shared link can name it.

The files are written with ``torch.save`` and read with ``torch.load(weights_only=True)``: tensors and plain
containers only, never a pickle. The folder is the user's cache (``$DGM_RUN_DIR``, else
``$XDG_CACHE_HOME/dgm-explorer/runs``, else ``~/.cache/dgm-explorer/runs``), private to the user; it keeps
the newest ``KEEP`` files and none older than ``MAX_AGE`` seconds. Writing is best effort: a full or
read-only disk costs the restart safety, never the run.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

PARAM = "run"  # the URL parameter
ENV = "DGM_RUN_DIR"
SAVE_EVERY = 15.0  # seconds between saves of a playing run
KEEP, MAX_AGE = 256, 7 * 24 * 3600.0
_ID = re.compile(r"[A-Za-z0-9_-]{8,32}")


def new_id() -> str:
    return secrets.token_urlsafe(9)


def valid_id(raw: str | None) -> bool:
    return raw is not None and _ID.fullmatch(raw) is not None


def folder() -> Path:
    if os.environ.get(ENV):
        return Path(os.environ[ENV])
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "dgm-explorer" / "runs"


def _path(run_id: str, exp_name: str) -> Path:
    return folder() / f"{run_id}.{exp_name}.pt"


def save(run_id: str, exp_name: str, fingerprint: str, state: dict[str, Any]) -> bool:
    """Write ``state`` (a ``Trainer.checkpoint``) as the run ``run_id`` of ``exp_name`` with settings
    ``fingerprint``, atomically. False (and a log line) if it could not be written."""
    return _write(_path(run_id, exp_name), {"experiment": exp_name, "fingerprint": fingerprint, "saved": time.time(),
                                            "state": state})


def _write(path: Path, obj: dict[str, Any]) -> bool:
    d = path.parent
    try:
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=d, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save(obj, f)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        _prune(d)
        return True
    except Exception as e:  # noqa: BLE001 - best effort: the run goes on in memory
        log.warning("could not write %s: %s", path, e)
        return False


# -- a user's own data, so that a link can name it (``data=custom:<digest>``) -------------------------------
_DATA = re.compile(r"custom:([0-9a-f]{10})")


def _data_path(name: str) -> Path | None:
    m = _DATA.fullmatch(name or "")
    return folder() / f"{m.group(1)}.data.pt" if m else None


def save_data(name: str, points: torch.Tensor, description: str, scaling: dict[str, Any]) -> bool:
    """Keep a user's data set (its name, the points its density is made of, where it came from and how it was
    scaled) with the runs, so that a link naming it opens it on this server for as long as runs are kept."""
    path = _data_path(name)
    return path is not None and _write(path, {"name": name, "points": points.detach().cpu().float().contiguous(),
                                              "description": str(description), "scaling": dict(scaling)})


def load_data(name: str) -> dict[str, Any] | None:
    """The data set ``save_data`` kept under ``name``, or None (no such file, a name that is not a data set's,
    or a file that cannot be read: logged)."""
    path = _data_path(name)
    try:
        if path is None or not path.is_file():
            return None
        saved = torch.load(path, map_location="cpu", weights_only=True)
        pts = saved.get("points")
        if saved.get("name") != name or not isinstance(pts, torch.Tensor) or pts.ndim != 2 or pts.shape[1] != 2:
            return None
        return saved
    except Exception as e:  # noqa: BLE001 - a damaged file is no data set
        log.warning("could not read the data set %s: %s", path, e)
        return None


def load(run_id: str, exp_name: str, fingerprint: str) -> dict[str, Any] | None:
    """The saved state of run ``run_id`` of ``exp_name`` if there is one with these settings, else None (also
    for a file that cannot be read: it is logged and ignored)."""
    if not valid_id(run_id):
        return None
    p = _path(run_id, exp_name)
    try:
        if not p.is_file():
            return None
        saved = torch.load(p, map_location="cpu", weights_only=True)
        if saved.get("experiment") != exp_name or saved.get("fingerprint") != fingerprint:
            return None  # the id's run had other settings: this is a new run
        return saved["state"]
    except Exception as e:  # noqa: BLE001 - a damaged file is no run
        log.warning("could not read the saved run %s: %s", p, e)
        return None


def _prune(d: Path) -> None:
    """Keep the newest KEEP files, none older than MAX_AGE (another server may prune the same folder)."""
    dated = []
    for p in d.glob("*.pt"):
        try:
            dated.append((p.stat().st_mtime, p))
        except OSError:
            continue
    now = time.time()
    for i, (mtime, p) in enumerate(sorted(dated, reverse=True)):
        if i >= KEEP or now - mtime > MAX_AGE:
            try:
                p.unlink()
            except OSError:
                pass
