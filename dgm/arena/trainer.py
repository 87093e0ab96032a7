"""The arena as a trainer, so that its page plays, replays, links and exports like every page: one step of
the arena is one step of every family (and seed) in turn; measurements come at ``measures`` equal parts of
the budget (dgm.arena.run)."""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Any

import torch

from dgm.arena.run import DATASETS, MEASURES, ArenaRun, Budget
from dgm.core.config import knob
from dgm.core.userdata import CUSTOM
from dgm.core.train import Trainer, TrainingDiverged


class BudgetSpent(TrainingDiverged):
    """Raised by a step after the budget is spent, so that a playing page stops (with this message) instead of
    asking a finished arena for steps in a loop; the run is whole and its figures stay."""

    def __init__(self, step: int, budget: str):
        FloatingPointError.__init__(self, f"The arena's budget is spent: every family has trained its budget "
                                          f"({budget}) and been measured. Raise the budget to see more, or Reset.")
        self.step, self.metrics = step, {}


UNITS = ("steps", "seconds")


@dataclass
class ArenaConfig:
    data: str = knob("ring8", "the data every family trains on (each with its page's default settings; your own "
                     "2D data: the families whose pages take it)", choices=(*DATASETS, CUSTOM), group="Arena")
    unit: str = knob("steps", "the budget in optimisation steps (a replay: the same run on every machine) or in "
                     "seconds of training (what this machine does in that time: a link gives the same settings, not "
                     "the same numbers)", choices=UNITS, label="budget in", group="Arena")
    budget: int = knob(1000, "steps each family trains", lo=10, hi=20_000, step=10, label="budget (steps per family)",
                       group="Arena", show=lambda c: c.unit == "steps")
    budget_s: int = knob(30, "seconds of training for each family (building and measuring not counted)", lo=2, hi=600,
                        label="budget (seconds per family)", group="Arena", show=lambda c: c.unit == "seconds")
    seeds: int = knob(1, "runs of each family, seeds 0, 1, ...: their spread is the stability column", lo=1, hi=5,
                      group="Arena")
    measures: int = knob(4, "measurements at equal parts of the budget (the curves' points; also at steps 10 and "
                         "100 when they come before the first, with a steps budget)", lo=1, hi=20, group="Arena")

    @property
    def limit(self) -> Budget:
        return Budget(seconds=float(self.budget_s)) if self.unit == "seconds" else Budget(steps=self.budget)


class ArenaTrainer(Trainer):
    eval_every = 0  # the arena measures on its own schedule (``measures`` along the budget)
    slow_eval = True  # a measurement samples every family and scores its likelihood: seconds

    def build(self) -> None:
        c = self.config
        self.arena = ArenaRun(c.data, c.limit, seeds=c.seeds, seed=self.seed, rounds=c.measures,
                              device=str(self.device))
        self.arena.measuring = self._measuring

    def _measuring(self):
        """The arena's measurements are this trainer's evaluations (``eval_guard``), at the arena's step."""
        self.iteration = self.arena.iteration
        return self.eval_guard()

    def eval_pending(self) -> bool:
        return self.arena.measure_pending()

    def eval_due(self, step: int) -> bool:
        """A steps budget's measurements are its evaluation schedule (a Step that reaches one shows its models at
        once and leaves the measuring to a worker: dgm.ui.scheduling.step); a seconds budget measures by the
        clock, at no step known in advance."""
        return self.config.unit == "steps" and step in self.arena.points

    def step(self, n: int = 1, evaluate: bool = True) -> dict[str, float]:
        """n steps of every family in turn (fewer at the end of the budget; with a seconds budget, each family's
        n steps are cut at its next measurement's time); ``BudgetSpent`` once the budget is spent. ``evaluate``
        (a steps budget): as in ``Trainer.step``, for the measurements."""
        if self.finished and n > 0:
            raise BudgetSpent(self.iteration, str(self.config.limit))
        rounds = self.arena.done_rounds
        done = (self.arena.advance(n, measure=evaluate) if self.config.unit == "steps"
                else self.arena.advance_time(n))
        self.iteration = self.arena.iteration
        if done or self.arena.done_rounds != rounds:  # (a measurement left to do by a Pause counts)
            self.latest = self.summary()
            self.history.record(self.iteration, self.latest)
            if evaluate and time.monotonic() - self._captured_at >= self.checkpoint_every_s:
                self.mark_good()
        return dict(self.latest)

    @property
    def finished(self) -> bool:
        if self.config.unit == "seconds":
            return self.arena.done_rounds >= self.arena.rounds
        return self.iteration >= self.config.budget and not self.arena.measure_pending()

    def summary(self) -> dict[str, float]:
        """Each family's latest figures, flattened (``GAN.precision``), and the measurements done; not the
        sampling speeds (measurements of this machine, not of the run)."""
        out: dict[str, float] = {"measurements": float(self.arena.done_rounds)}
        for row in self.arena.table():
            for m in MEASURES:
                if m in row and m != "samples_per_s":
                    out[f"{row['family']}.{m}"] = row[m]
        return out

    def evaluate(self) -> dict[str, float]:
        return self.summary()

    def on_weights_loaded(self, iteration: int) -> None:
        """Every family goes on from the file's step (a steps budget counts from there) and is measured at once,
        so that the table shows the loaded models."""
        self.iteration = self.arena.iteration = iteration
        for e in self.arena.entrants:
            e.trainer.on_weights_loaded(iteration)
            e.failed = None
            e.rows.append(self.arena.measure(e))
        self.latest = self.summary()
        self.history.record(self.iteration, self.latest)

    # -- state: the families' runs travel with the arena's -------------------------------------------------
    def _meta(self) -> dict[str, Any]:
        # the shown samples as a tensor: a checkpoint holds tensors and plain containers only (a saved run is read
        # back with torch.load(weights_only=True), which refuses numpy arrays)
        return {"iteration": self.arena.iteration, "rounds": self.arena.done_rounds,
                "entrants": [(e.seconds, e.failed, copy.deepcopy(e.rows), None if e.shown is None else
                              torch.from_numpy(e.shown.copy())) for e in self.arena.entrants]}

    def _load_meta(self, meta: dict[str, Any]) -> None:
        self.arena.iteration, self.arena.done_rounds = meta["iteration"], meta["rounds"]
        for e, (seconds, failed, rows, shown) in zip(self.arena.entrants, meta["entrants"]):
            e.seconds, e.failed, e.rows = seconds, failed, copy.deepcopy(rows)
            e.shown = None if shown is None else shown.numpy().copy()

    def stateful(self):
        """Every family's modules, optimisers and schedulers, by entrant and name (``0.G``): checkpoints and
        the weights export hold them all."""
        return {f"{i}.{k}": v for i, e in enumerate(self.arena.entrants) for k, v in e.trainer.stateful().items()}

    def modules(self):
        """Every family's modules, by entrant and name: what a replica's figures read."""
        return {f"{i}.{k}": m for i, e in enumerate(self.arena.entrants) for k, m in e.trainer.modules().items()}

    def extra_state(self) -> dict[str, Any]:
        """Each family's run beyond its modules and optimisers (``stateful``): step, random stream, history."""
        runs = [{"iteration": t.iteration, "gen": t.gen.get_state(), "history": t.history.state_dict(),
                 "latest": dict(t.latest), "latest_eval": dict(t.latest_eval), "extra": t.extra_state()}
                for t in (e.trainer for e in self.arena.entrants)]
        return {"runs": copy.deepcopy(runs), **self._meta()}

    def load_extra_state(self, extra: dict[str, Any]) -> None:
        for e, r in zip(self.arena.entrants, extra["runs"]):
            t = e.trainer
            t.iteration = r["iteration"]
            t.gen.set_state(r["gen"])
            t.history.load_state_dict(copy.deepcopy(r["history"]))
            t.latest, t.latest_eval = dict(r["latest"]), dict(r["latest_eval"])
            t.load_extra_state(r["extra"])
            t.on_restore()
        self._load_meta(extra)

    def derived_state(self) -> dict[str, Any]:
        """Beyond the modules (``modules``): what the figures read, for a replica of the run (a worker process's
        light state)."""
        return {"runs": [(e.trainer.iteration, e.trainer.derived_state()) for e in self.arena.entrants], **self._meta()}

    def load_derived_state(self, d: dict[str, Any]) -> None:
        for e, (iteration, derived) in zip(self.arena.entrants, d["runs"]):
            e.trainer.iteration = iteration
            e.trainer.load_derived_state(derived)
        self._load_meta(d)
