"""A page's run on the server's disk, so that a server restart does not lose it.

Each page of a browser tab gets a run id in its address (``?run=…``, a random token; share links leave it
out). While the run plays, every ``SAVE_EVERY`` seconds, and whenever it stops, its last good state
(``Trainer.last_good``: the whole run, optimiser and random state included) is written to
``<dir>/<id>.<experiment>.pt``. When the server has restarted and the tab reconnects, the page finds no
run in its session, finds the file its address names, and, if the file holds a run of the same settings,
continues from it under a new id and says so (so tabs opened with one copied address never overwrite each
other's runs, nor the one they started from).

A user's own data set is kept the same way (``<digest>.data.pt``), so that a shared link can name it, and so
is the state a lesson or replay link opens at (``<key>.warm.pt``: its fast-forward, trained once per machine and
code version; ``python -m dgm prepare`` trains every lesson's ahead of a class).

The files are written with ``torch.save`` and read with ``torch.load(weights_only=True)``: tensors and plain
containers only, never a pickle. The folder is the user's cache (``$DGM_RUN_DIR``, else
``$XDG_CACHE_HOME/dgm-explorer/runs``, else ``~/.cache/dgm-explorer/runs``), private to the user; it keeps
the newest ``KEEP`` files and none older than ``MAX_AGE`` seconds. Writing is best effort: a full or
read-only disk costs the restart safety, never the run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import re
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from dgm.core import kernels

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


# -- a link's fast-forward, trained once on this machine (``<key>.warm.pt``) ----------------------------------
WARM_KEEP = 64  # the newest fast-forwards kept (each up to a few MB: the arena's holds every family)


def _code_digest() -> str:
    """A digest of the package's source files: a fast-forward trained by other code is another run."""
    h = hashlib.sha256()
    root = Path(__file__).resolve().parents[1]
    for p in sorted(root.rglob("*.py")):
        h.update(p.relative_to(root).as_posix().encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


# the digest of the code this process started with (3 ms), kept in its environment: that survives Streamlit's
# re-import of modules whose files changed under a running server, so a server keys what it trains by the code it
# started with, never a new version's key for a state its older modules trained
_CODE = [os.environ.setdefault("_DGM_CODE_DIGEST", _code_digest())]


def warm_key(exp_name: str, cfg_json: str, seed: int, steps: int, runtime_json: str = "") -> str:
    """The name of the state ``steps`` steps into the CPU run of ``exp_name`` with these settings (and runtime
    settings, where it has some) and seed: everything its numbers depend on (the code, torch, the pinned kernels
    and the processor's maker, its architecture)."""
    what = [exp_name, cfg_json, int(seed), int(steps), torch.__version__, kernels.machine_class(), platform.machine(), _CODE[0]]
    if runtime_json:
        what.append(runtime_json)
    return hashlib.sha256(json.dumps(what).encode()).hexdigest()[:24]


def save_warm(key: str, state: dict[str, Any]) -> bool:
    """Keep a fast-forward's state (a ``Trainer.checkpoint``) under its ``warm_key``."""
    ok = _write(folder() / f"{key}.warm.pt", {"key": key, "state": state})
    _prune(folder(), "*.warm.pt", WARM_KEEP)
    return ok


def load_warm(key: str) -> dict[str, Any] | None:
    """The state ``save_warm`` kept under ``key``, or None (none kept, pruned, or unreadable: logged)."""
    p = folder() / f"{key}.warm.pt"
    try:
        if not p.is_file():
            return None
        saved = torch.load(p, map_location="cpu", weights_only=True)
        return saved["state"] if saved.get("key") == key else None
    except Exception as e:  # noqa: BLE001 - a damaged file is trained again
        log.warning("could not read the fast-forward %s: %s", p, e)
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


def _prune(d: Path, pattern: str = "*.pt", keep: int | None = None) -> None:
    """Keep the newest ``keep`` (KEEP) files, none older than MAX_AGE (another server may prune the same folder)."""
    keep = KEEP if keep is None else keep
    dated = []
    for p in d.glob(pattern):
        try:
            dated.append((p.stat().st_mtime, p))
        except OSError:
            continue
    now = time.time()
    for i, (mtime, p) in enumerate(sorted(dated, reverse=True)):
        if i >= keep or now - mtime > MAX_AGE:
            try:
                p.unlink()
            except OSError:
                pass
