"""What a study is: an experiment, a grid of knob values, seeds and steps; read from flags or a spec file.

    spec = StudySpec.make("gan", grid={"loss": ["wgan_gp", "hinge"]}, seeds=3, steps=500)
    for setting in spec.settings(): spec.config(setting)   # every value checked like a page's link

A setting is one combination of the grid's values, named by ``key(setting)`` (canonical JSON), so that a run
is found again by (setting, seed) whatever order the grid was given in. Every value is checked by the knob's
own rules (``dgm.core.config.check``) before anything runs: a bad knob or value is a ``StudyError`` with one
line saying which and why.
"""

from __future__ import annotations

import itertools
import json
import tomllib
from dataclasses import dataclass, field
from typing import Any

from dgm.core import config as cfglib
from dgm.core import registry

MAX_RUNS = 100_000  # settings x seeds in one study
MAX_SEEDS = 1024
#: experiments whose one run is already many seeds (a page's view): a study of the experiment they batch does that
MANY_SEEDS = {"gan_seeds": "gan"}
EVALS = ("end", "schedule")  # evaluate at the end only, or on the family's schedule too (costs time)


class StudyError(ValueError):
    """A study that cannot run as given; the message says what to change (one line)."""


def key(setting: dict[str, Any]) -> str:
    """A setting's name in the store: canonical JSON of its values."""
    return json.dumps(setting, sort_keys=True, separators=(",", ":"))


def parse_grid(items: list[str]) -> dict[str, list[str]]:
    """``["loss=wgan_gp,hinge", "lr_d=1e-3,1e-4"]`` -> {"loss": ["wgan_gp", "hinge"], ...} (raw strings)."""
    grid: dict[str, list[str]] = {}
    for item in items:
        name, eq, values = item.partition("=")
        name = name.strip()
        vals = [v.strip() for v in values.split(",") if v.strip()]
        if not eq or not name or not vals:
            raise StudyError(f"--grid {cfglib.shown(item)}: write KNOB=v1,v2,... (for example --grid loss=wgan_gp,hinge)")
        if name in grid:
            raise StudyError(f"--grid {name} is given twice; put all its values in one --grid {name}=v1,v2")
        grid[name] = vals
    return grid


@dataclass(frozen=True)
class StudySpec:
    experiment: str
    grid: dict[str, tuple]  # knob -> its values (parsed), in the order given
    seeds: int  # seeds seed0 .. seed0 + seeds - 1 for every setting
    steps: int
    fixed: dict[str, Any] = field(default_factory=dict)  # knob values shared by every setting
    seed0: int = 0
    evals: str = "end"
    metrics: tuple[str, ...] = ()  # the summary's metrics (empty: the experiment's usual ones)

    @classmethod
    def make(cls, experiment: str, grid: dict[str, list], seeds: int, steps: int, fixed: dict[str, Any] | None = None,
             seed0: int = 0, evals: str = "end", metrics: tuple[str, ...] | list[str] = ()) -> "StudySpec":
        """A checked spec from raw values (strings from flags, or JSON/TOML values)."""
        if experiment not in registry.names():
            raise StudyError(f"unknown experiment {cfglib.shown(experiment)}; choose one of {', '.join(registry.names())}")
        if experiment in MANY_SEEDS:
            raise StudyError(f"{experiment} trains many seeds as one run; study {MANY_SEEDS[experiment]} instead (a study "
                             "trains each setting's seeds as one batch where it can)")
        exp = registry.get(experiment)
        kmap = cfglib.knob_map(exp.config)
        parsed: dict[str, tuple] = {}
        for name, values in (grid or {}).items():
            if name not in kmap:
                raise StudyError(f"--grid {cfglib.shown(name)}: {experiment} has no such knob; its knobs are "
                                 f"{', '.join(kmap)}")
            if not isinstance(values, (list, tuple)) or not values:
                raise StudyError(f"--grid {name}: give a list of values")
            out = []
            for raw in values:
                vals, notes = cfglib.check(exp.config, {name: raw})
                if name in notes:
                    raise StudyError(f"--grid {name}: {notes[name]}")
                if vals[name] in out:
                    raise StudyError(f"--grid {name}: {cfglib.shown(raw)} is given twice")
                out.append(vals[name])
            parsed[name] = tuple(out)
        fixed_vals, notes = cfglib.check(exp.config, dict(fixed or {}))
        if notes:
            raise StudyError(f"fixed settings: {'; '.join(notes.values())}")
        both = sorted(set(parsed) & set(fixed_vals))
        if both:
            raise StudyError(f"{', '.join(both)}: both in the grid and fixed; give each knob once")
        seeds, steps, seed0 = _whole("seeds", seeds, 1, MAX_SEEDS), _whole("steps", steps, 1, cfglib.STEPS_MAX), \
            _whole("seed", seed0, 0, cfglib.SEED_MAX)
        if evals not in EVALS:
            raise StudyError(f"evals: {cfglib.shown(evals)} is not one of {', '.join(EVALS)}")
        spec = cls(experiment, parsed, seeds, steps, fixed_vals, seed0, evals, tuple(metrics))
        if spec.n_settings * seeds > MAX_RUNS:
            raise StudyError(f"{spec.n_settings:,} settings x {seeds} seeds is over {MAX_RUNS:,} runs; split the study")
        for s in spec.settings():  # knobs that are fine one by one can still clash (none do today; checked anyway)
            spec.config(s)
        return spec

    @classmethod
    def from_file(cls, path: str) -> "StudySpec":
        """A spec file, JSON or TOML: experiment, grid {knob: [values]}, seeds, steps, and optionally fixed
        {knob: value}, seed, evals, metrics."""
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            raise StudyError(f"--spec {cfglib.shown(path)}: {e.strerror or e}") from None
        try:
            doc = tomllib.loads(data.decode()) if path.endswith(".toml") else json.loads(data)
        except (ValueError, UnicodeDecodeError) as e:
            raise StudyError(f"--spec {cfglib.shown(path)}: not valid {'TOML' if path.endswith('.toml') else 'JSON'} "
                             f"({cfglib.shown(e, 120, quote=False)})") from None
        if not isinstance(doc, dict):
            raise StudyError(f"--spec {cfglib.shown(path)}: expected a table of experiment, grid, seeds, steps")
        known = {"experiment", "grid", "seeds", "steps", "fixed", "seed", "evals", "metrics"}
        extra = sorted(set(doc) - known)
        if extra:
            raise StudyError(f"--spec {cfglib.shown(path)}: unknown entries {', '.join(extra)}; "
                             f"known are {', '.join(sorted(known))}")
        missing = [k for k in ("experiment", "seeds", "steps") if k not in doc]
        if missing:
            raise StudyError(f"--spec {cfglib.shown(path)}: missing {', '.join(missing)}")
        grid = doc.get("grid", {})
        if not isinstance(grid, dict):
            raise StudyError(f"--spec {cfglib.shown(path)}: grid is a table of knob = [values]")
        return cls.make(str(doc["experiment"]), grid, doc["seeds"], doc["steps"], doc.get("fixed") or {},
                        doc.get("seed", 0), doc.get("evals", "end"), doc.get("metrics", ()))

    # -- what it runs ----------------------------------------------------------------------------------
    @property
    def n_settings(self) -> int:
        n = 1
        for v in self.grid.values():
            n *= len(v)
        return n

    def settings(self) -> list[dict[str, Any]]:
        names = list(self.grid)
        return [dict(zip(names, combo)) for combo in itertools.product(*self.grid.values())]

    def seed_list(self) -> list[int]:
        return list(range(self.seed0, self.seed0 + self.seeds))

    def values(self, setting: dict[str, Any]) -> dict[str, Any]:
        """All knob values of a setting that differ from the experiment's defaults' (fixed ones, then the grid's)."""
        return {**self.fixed, **setting}

    def config(self, setting: dict[str, Any]) -> Any:
        exp = registry.get(self.experiment)
        try:
            return cfglib.from_raw(exp.config, self.values(setting), strict=True)[0]
        except (TypeError, ValueError) as e:
            raise StudyError(f"setting {key(setting)}: {e}") from None

    def identity(self) -> dict[str, Any]:
        """What must agree for two studies to share a store (the grid and the seeds may grow)."""
        return {"experiment": self.experiment, "steps": self.steps, "fixed": self.fixed, "evals": self.evals}

    def to_dict(self) -> dict[str, Any]:
        return {"experiment": self.experiment, "grid": {k: list(v) for k, v in self.grid.items()}, "seeds": self.seeds,
                "steps": self.steps, "fixed": self.fixed, "seed": self.seed0, "evals": self.evals,
                "metrics": list(self.metrics)}


def _whole(name: str, raw: Any, lo: int, hi: int) -> int:
    try:
        v = int(str(raw).strip()) if not isinstance(raw, bool) else None
    except ValueError:
        v = None
    if v is None or not lo <= v <= hi:
        raise StudyError(f"--{name} {cfglib.shown(raw, quote=False)}: give a whole number from {lo:,} to {hi:,}")
    return v
