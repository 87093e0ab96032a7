"""The study's store: one SQLite file in the study's folder, one row per run keyed by (setting, seed).

    store = Store.open(out_dir, spec)      # makes study.sqlite, or checks that it holds this study
    store.done()                           # {(setting key, seed), ...} already finished
    store.add(records)                     # one transaction per finished task; a run already there is kept

A row is written whole in one transaction when its task finishes (the driver writes, never a worker, so a
cluster's workers need no access to the folder); ``INSERT OR IGNORE`` on the key makes writing a retried
task's runs a second time change nothing, so no run is duplicated, and a study stopped at any point loses
only the runs of the tasks still going.
"""

from __future__ import annotations

import json
import os
import sqlite3
from typing import Any, Iterable

from dgm.studies.spec import StudyError, StudySpec

FILE = "study.sqlite"
SCHEMA = """
CREATE TABLE IF NOT EXISTS study (id INTEGER PRIMARY KEY CHECK (id = 1), identity TEXT NOT NULL, spec TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    setting TEXT NOT NULL, seed INTEGER NOT NULL, config TEXT NOT NULL, status TEXT NOT NULL,
    final TEXT NOT NULL, history TEXT NOT NULL, steps INTEGER NOT NULL, seconds REAL NOT NULL,
    batched INTEGER NOT NULL, pid INTEGER NOT NULL, error TEXT, PRIMARY KEY (setting, seed));
"""
COLUMNS = ("setting", "seed", "config", "status", "final", "history", "steps", "seconds", "batched", "pid", "error")


class Store:
    def __init__(self, path: str):
        self.path = path
        self.db = sqlite3.connect(path, timeout=30, check_same_thread=False)
        self.db.executescript(SCHEMA)

    @classmethod
    def open(cls, out: str, spec: StudySpec) -> "Store":
        """The store of ``spec`` in ``out`` (made if new). A folder that holds a study of another experiment,
        budget or fixed settings is refused; the same study with more grid values or seeds continues it."""
        norm = os.path.normpath(out)
        if os.path.exists(norm) and not os.path.isdir(norm):
            raise StudyError(f"--out {out}: a file of that name exists; give a folder")
        try:
            os.makedirs(norm, exist_ok=True)
            store = cls(os.path.join(norm, FILE))
        except (OSError, sqlite3.Error) as e:
            raise StudyError(f"--out {out}: cannot keep a study there ({getattr(e, 'strerror', None) or e})") from None
        ident = json.dumps(spec.identity(), sort_keys=True)
        row = store.db.execute("SELECT identity FROM study").fetchone()
        if row is not None and row[0] != ident:
            store.close()
            raise StudyError(f"--out {out} holds another study ({_differs(json.loads(row[0]), spec.identity())}); "
                             "give another folder")
        with store.db:
            store.db.execute("INSERT OR REPLACE INTO study VALUES (1, ?, ?)", (ident, json.dumps(spec.to_dict())))
        return store

    @classmethod
    def read(cls, out: str) -> "Store | None":
        """An existing study's store, to read (None when ``out`` holds none)."""
        path = os.path.join(os.path.normpath(out), FILE)
        return cls(path) if os.path.isfile(path) else None

    def spec(self) -> dict[str, Any]:
        row = self.db.execute("SELECT spec FROM study").fetchone()
        return json.loads(row[0]) if row else {}

    def done(self) -> set[tuple[str, int]]:
        return {(s, int(k)) for s, k in self.db.execute("SELECT setting, seed FROM runs")}

    def add(self, records: Iterable[dict[str, Any]]) -> int:
        """Write a task's runs in one transaction; returns how many were new."""
        rows = [(r["setting"], int(r["seed"]), json.dumps(r["config"]), r["status"], json.dumps(r["final"]),
                 json.dumps(r["history"]), int(r["steps"]), float(r["seconds"]), int(r["batched"]), int(r["pid"]),
                 r.get("error")) for r in records]
        with self.db:
            before = self.db.total_changes
            self.db.executemany(f"INSERT OR IGNORE INTO runs VALUES ({','.join('?' * len(COLUMNS))})", rows)
            return self.db.total_changes - before

    def runs(self, history: bool = False) -> list[dict[str, Any]]:
        """Every stored run (without its history unless asked), ordered by setting and seed."""
        cols = [c for c in COLUMNS if history or c != "history"]
        out = []
        for row in self.db.execute(f"SELECT {','.join(cols)} FROM runs ORDER BY setting, seed"):
            r = dict(zip(cols, row))
            for c in ("config", "final", "history"):
                if c in r:
                    r[c] = json.loads(r[c])
            r["values"] = json.loads(r["setting"])
            out.append(r)
        return out

    def close(self) -> None:
        self.db.close()


def _differs(old: dict[str, Any], new: dict[str, Any]) -> str:
    return "; ".join(f"{k} {json.dumps(old.get(k))} there, {json.dumps(new.get(k))} here"
                     for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k))
