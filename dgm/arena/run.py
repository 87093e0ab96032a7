"""The arena's run: one model of every registered family on the same data, trained in turn (round-robin) under
one budget per family, and measured on the same held-out points and the same number of samples.

A family enters by giving its ``Experiment`` an ``arena`` record (dgm.core.registry.Arena); the arena takes the
family's page defaults with ``data`` set, and skips a family whose data knob does not offer the data set.
Measurements (the taxonomy table's columns, ``MEASURES``):

- likelihood: the held-out NLL in nats per example (exact, a bound, or none; the record says which), on
  ``NLL_POINTS`` points of the data (the test split for the digits), the same for every family;
- sample quality, on ``EVAL_SAMPLES`` samples: precision, recall, density, coverage (k = 5) against
  ``EVAL_SAMPLES`` data points; on 2D data also MMD², W1 (on the first ``W1_SAMPLES``) and, for mixtures,
  the mode metrics; on the digits the same four in the classifier's feature space, Digits-FID and -IS;
- sampling speed: samples per second, timed on the ``EVAL_SAMPLES`` samples of the measurement;
- compression: the size of the code a sample is made from;
- stability: the spread (standard deviation) of the final figures over the seeds;
- time to quality: the training wall time at the first measurement with precision and recall both at least
  ``QUALITY_LEVEL`` (its resolution is the measurement's cadence).

Training time is counted per family (building and measuring are not); the families share the machine in turn.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable, ContextManager

import numpy as np
import torch

import dgm.core.data
from dgm.core import config as cfglib
from dgm.core import quality, registry
from dgm.core.digits import digits
from dgm.core.metrics import EVAL_SAMPLES, MMD, W1_SAMPLES, mode_stats, wasserstein1
from dgm.core.train import TrainingDiverged

DIGITS = "digits"
DATASETS = ("ring8", "grid25", "8gaussians", DIGITS)  # the page's choices (any 2D set by name works too)
NLL_POINTS = 500
QUALITY_LEVEL = 0.7
EARLY = (10, 100)  # a steps budget also measures at these steps (before its first equal part ends)
MAX_STEPS, MAX_SECONDS = 100_000, 3_600.0
MAX_SEEDS = 10
SHOWN, SHOWN_IMAGES = 500, 8  # samples kept for the figures (2D points, digits)
REFERENCE_SEED = 123_456  # the arena's own data draws (held-out points, reference set): the same for every run
MEASURES = ("nll", "precision", "recall", "density", "coverage", "mmd", "w1", "modes", "high_quality",
            "digits_fid", "digits_is", "confident", "samples_per_s")


@dataclass(frozen=True)
class Budget:
    """Per family: ``steps`` optimisation steps, or ``seconds`` of training wall time."""

    steps: int | None = None
    seconds: float | None = None

    @classmethod
    def parse(cls, text: str | int | float) -> "Budget":
        """'3000' (steps) or '60s' (seconds); a clear ValueError otherwise."""
        s = str(text).strip().lower()
        m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(s|sec|seconds?)", s)
        if m:
            v = float(m.group(1))
            if not 0 < v <= MAX_SECONDS:
                raise ValueError(f"a budget in seconds must be above 0 and at most {MAX_SECONDS:.0f}s, not {text!r}")
            return cls(seconds=v)
        if re.fullmatch(r"\d+", s):
            v = int(s)
            if not 1 <= v <= MAX_STEPS:
                raise ValueError(f"a budget in steps must be 1 to {MAX_STEPS:,}, not {text!r}")
            return cls(steps=v)
        raise ValueError(f"budget {text!r}: give steps (3000) or seconds (60s)")

    def __str__(self) -> str:
        return f"{self.steps} steps" if self.steps is not None else f"{self.seconds:g}s"


@dataclass
class Entrant:
    """One family's run of one seed."""

    exp: registry.Experiment
    seed: int
    trainer: Any
    seconds: float = 0.0  # training wall time so far
    failed: str | None = None
    rows: list[dict[str, Any]] = field(default_factory=list)  # one per measurement
    shown: np.ndarray | None = None  # the first ``SHOWN`` samples of the last measurement (the figures')

    @property
    def family(self) -> str:
        return self.exp.arena.label


def accepts(exp: registry.Experiment, data: str) -> bool:
    """Does the family's data knob offer ``data``? (A user's set needs the "custom" choice.)"""
    k = cfglib.knob_map(exp.config).get("data")
    return k is not None and (data in k.choices or (data.startswith("custom:") and "custom" in k.choices))


class ArenaRun:
    """Build with the data set's name, a ``Budget``, the number of seeds and ``rounds`` (the measurements
    along the way); call ``round()`` until it returns False (or ``run()``), reading ``rows()`` and ``table()``
    between rounds."""

    def __init__(self, data: str, budget: Budget, seeds: int = 1, seed: int = 0, rounds: int = 8,
                 families: list[str] | None = None, device: str = "cpu", samples: int = EVAL_SAMPLES):
        if data != DIGITS:
            dgm.core.data.get(data)  # an unknown name fails here, with the valid names
        if not 1 <= seeds <= MAX_SEEDS:
            raise ValueError(f"seeds must be 1 to {MAX_SEEDS}")
        self.data, self.budget, self.rounds, self.done_rounds = data, budget, max(1, int(rounds)), 0
        self.measuring: Callable[[], ContextManager] = contextlib.nullcontext  # entered around each measurement
        # (the arena's trainer passes its ``eval_guard``: a worker keeps the state before it for a Pause)
        self.iteration = 0  # a steps budget: the steps every family has trained
        self.images, self.n_samples = data == DIGITS, int(samples)
        entries = [e for e in registry.arena_entries() if families is None or e.name in families]
        self.skipped = {e.arena.label: "its page does not train on this data" for e in entries if not accepts(e, data)}
        self.entrants: list[Entrant] = []
        for exp in (e for e in entries if accepts(e, data)):
            cfg = dataclasses.replace(exp.config(), data=data)
            for k in range(seeds):
                t = exp.make(cfg, seed=seed + k, device=device)
                t.eval_every = 0  # the arena measures every family the same way, on its own schedule
                # no "last good state" of its own: the arena's run holds the families' (ArenaTrainer's checkpoint);
                # a copy after every burst cost the flow 13 ms a time, a tenth of the page's Step
                t.checkpoint_every_s = math.inf
                self.entrants.append(Entrant(exp, seed + k, t))
        self._reference()

    # -- the shared evaluation material --------------------------------------------------------------
    def _reference(self) -> None:
        g = torch.Generator().manual_seed(REFERENCE_SEED)
        if self.images:
            d = digits()
            self.heldout = d.test.x  # grey levels 0..16
            self.real_features = quality.digits_features(d.test.x01).double()
            self.dist, self.mmd = None, None
            return
        self.dist = dgm.core.data.get(self.data)
        self.heldout = self.dist.sample(NLL_POINTS, g)
        self.real = self.dist.sample(self.n_samples, g)
        self.mmd = MMD(self.real)

    # -- training --------------------------------------------------------------------------------------
    def _train(self, e: Entrant, steps: int | None = None, seconds: float | None = None) -> None:
        if e.failed or not ((steps or 0) > 0 or (seconds or 0) > 0):
            return
        t0 = time.perf_counter()
        try:
            e.trainer.run(steps=steps, seconds=seconds, burst=None)
        except TrainingDiverged as err:
            e.failed = f"diverged at step {err.step}"
        e.seconds += time.perf_counter() - t0

    def _measure_all(self) -> None:
        self.done_rounds += 1
        for e in self.entrants:
            if not e.failed:
                e.rows.append(self.measure(e))

    @property
    def points(self) -> list[int]:
        """A steps budget: the steps of the measurements, the budget split into ``rounds`` equal parts, after
        early ones (``EARLY``) before the first part's end, so that the curves start soon."""
        parts = [math.ceil(self.budget.steps * k / self.rounds) for k in range(1, self.rounds + 1)]
        return sorted({p for p in EARLY if p < parts[0]} | set(parts))

    def next_measurement(self) -> int:
        return self.points[min(self.done_rounds, len(self.points) - 1)]

    def measure_pending(self) -> bool:
        """Whether the measurement due now has not been made (a run taken from just before it, see
        ``measuring``): the next ``advance`` makes it first."""
        if self.budget.steps is not None:
            return self.done_rounds < len(self.points) and self.iteration == self.next_measurement()
        return (self.done_rounds < self.rounds
                and all(e.failed or e.seconds >= self.marks[self.done_rounds] for e in self.entrants))

    def advance(self, n: int, measure: bool = True) -> int:
        """A steps budget: every family (and seed) trains up to n more steps in turn, stopping at each
        measurement on the way and at the budget; returns the steps done. ``measure=False`` makes none (a
        preview: see ``Trainer.step``'s ``evaluate``)."""
        target, start = min(self.iteration + max(int(n), 0), self.budget.steps), self.iteration
        if measure and self.measure_pending():
            with self.measuring():
                self._measure_all()
        while self.iteration < target:
            stop = min(target, self.next_measurement() if measure else target)
            for e in self.entrants:
                self._train(e, steps=stop - e.trainer.iteration)
            self.iteration = stop
            if not measure:
                break
            if stop == self.next_measurement() and self.done_rounds < len(self.points):
                with self.measuring():
                    self._measure_all()
        return self.iteration - start

    @property
    def marks(self) -> list[float]:
        """A seconds budget: each family's training seconds at the measurements (equal parts of the budget)."""
        return [self.budget.seconds * k / self.rounds for k in range(1, self.rounds + 1)]

    def advance_time(self, n: int) -> bool:
        """A seconds budget, a slice at a time (what a playing page asks): every family (and seed) short of the
        next measurement's training time trains up to n more steps, cut at that time; once every one has
        reached it, all are measured. Steps are offered, not counted (``iteration`` grows by n a slice): each
        family trains what this machine does in its time. Returns False once the budget is spent."""
        if self.done_rounds >= self.rounds:
            return False
        mark = self.marks[self.done_rounds]
        for e in self.entrants:
            if e.seconds < mark:
                self._train(e, steps=max(int(n), 1), seconds=mark - e.seconds)
        self.iteration += max(int(n), 1)
        if all(e.failed or e.seconds >= mark for e in self.entrants):
            with self.measuring():
                self._measure_all()
        return True

    def round(self) -> bool:
        """Every family (and seed) trains its share of the budget in turn, then every one is measured.
        Returns True while rounds remain."""
        total = self.rounds if self.budget.steps is None else len(self.points)
        if self.done_rounds >= total:
            return False
        if self.budget.steps is not None:
            self.advance(self.next_measurement() - self.iteration)
        else:
            for e in self.entrants:
                self._train(e, seconds=(self.budget.seconds - e.seconds) / (self.rounds - self.done_rounds))
            self._measure_all()
        return self.done_rounds < total

    def run(self) -> list[dict[str, Any]]:
        while self.round():
            pass
        return self.table()

    # -- measuring -------------------------------------------------------------------------------------
    def measure(self, e: Entrant) -> dict[str, Any]:
        t, rec = e.trainer, e.exp.arena
        row: dict[str, Any] = {"family": e.family, "seed": e.seed, "step": t.iteration, "seconds": e.seconds}
        t0 = time.perf_counter()
        x = torch.as_tensor(np.asarray(rec.samples(t, self.n_samples)), dtype=torch.float32)
        row["samples_per_s"] = self.n_samples / max(time.perf_counter() - t0, 1e-9)
        e.shown = x[: SHOWN_IMAGES if self.images else SHOWN].numpy()
        if rec.likelihood is not None:
            v = rec.likelihood(t, self.heldout)
            row["nll"] = float("nan") if v is None else v
        row.update(self.quality(x))
        return row

    def quality(self, x: torch.Tensor) -> dict[str, float]:
        """The sample-quality figures of samples x (N, D) on this arena's data."""
        if self.images:
            out = quality.prdc(self.real_features, quality.digits_features(x))
            out.update({k: v for k, v in quality.digits_scores(x).items() if k != "fid_n"})
            return out
        finite = x[torch.isfinite(x).all(1)]
        out = quality.prdc(self.real, x)
        out["mmd"] = self.mmd.mmd2(finite) if len(finite) else float("nan")
        out["w1"] = wasserstein1(x[:W1_SAMPLES], self.real[:W1_SAMPLES])
        if getattr(self.dist, "centers", None) is not None:
            ms = mode_stats(x, self.dist.centers, self.dist.std)
            out["modes"], out["high_quality"] = float(ms["modes"]), ms["high_quality"]
        return out

    # -- results ---------------------------------------------------------------------------------------
    def rows(self) -> list[dict[str, Any]]:
        """Every measurement so far, one row per family, seed and round."""
        return [r for e in self.entrants for r in e.rows]

    def table(self) -> list[dict[str, Any]]:
        """The measured taxonomy table: one row per family, its figures' mean (and sd over the seeds)."""
        out = []
        for label in dict.fromkeys(e.family for e in self.entrants):
            es = [e for e in self.entrants if e.family == label]
            rec, t = es[0].exp.arena, es[0].trainer
            finals = [e.rows[-1] for e in es if e.rows]
            measured = any(math.isfinite(f.get("nll", math.nan)) for f in finals)
            kind = rec.kind if measured else ("none on this data" if rec.likelihood and finals else "none")
            row: dict[str, Any] = {"family": label, "likelihood": kind,
                                   "latent": rec.latent(t), "seeds": len(es),
                                   "steps": int(np.mean([e.trainer.iteration for e in es])),
                                   "train_s": float(np.mean([e.seconds for e in es]))}
            for m in MEASURES:
                vals = [f[m] for f in finals if m in f and f[m] is not None and math.isfinite(f[m])]
                if vals:
                    row[m] = float(np.mean(vals))
                    if len(es) > 1:
                        row[m + "_sd"] = float(np.std(vals, ddof=1)) if len(vals) > 1 else float("nan")
            reached = [next((r["seconds"] for r in e.rows if min(r.get("precision", 0), r.get("recall", 0))
                             >= QUALITY_LEVEL), None) for e in es]
            hit = [s for s in reached if s is not None]
            row["seconds_to_quality"] = float(np.median(hit)) if hit else None
            row["reached_quality"] = f"{len(hit)}/{len(es)}"
            fails = [e.failed for e in es if e.failed]
            if fails:
                row["failed"] = "; ".join(fails)
            out.append(row)
        for label, why in self.skipped.items():
            out.append({"family": label, "skipped": why})
        return out
