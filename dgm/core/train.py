"""The trainer contract shared by every model family (docs/ARCHITECTURE.md, "The contracts").

A trainer is built from a config dataclass and a seed. ``step(n)`` runs n optimisation steps and
returns the latest metrics; ``history`` holds a bounded, downsampled record of them. A non-finite loss
raises ``TrainingDiverged``; the trainer stays usable: ``reset()`` starts over and
``restore_last_good()`` goes back to the state after the last finite burst.

Subclasses implement ``build()`` (models and optimisers) and ``train_step() -> dict[str, Tensor]``
(scalar tensors, left on the device: the base class syncs once per burst, not once per step), and
optionally ``evaluate()`` (held-out or sample-based metrics, run at the steps of the evaluation schedule
and at the end). The schedule (``eval_due``) is geometric early, at the steps of ``eval_early`` below
``eval_every`` (10, 20, 50, 100, 200, 500), then every ``eval_every`` steps, so that metric curves fill
from the first seconds of a run; it depends on steps only, never on time, so a replay evaluates at the
same steps and gets the same curves (and the same best-checkpoint choices that depend on them). Steps draw their randomness from ``self.gen``, never from the global RNG, so that a seed fixes
a run whatever the grouping of steps into bursts. What the figures show is prepared by the family's
``figures`` module, from the trainer, without changing it.

Checkpoints: ``checkpoint()`` is the whole run as a dict (modules, optimisers, the random stream,
history), ``restore(ckpt)`` goes back to one, and ``last_good`` is the one taken after the last finite
burst (at most every ``checkpoint_every_s``). Runtime settings (``Runtime``, a small dataclass per
trainer) change how the next steps run without restarting the run: ``set_runtime(mode="d")``.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import time
from typing import Any, Callable, ContextManager, Mapping

import torch
from torch import Tensor, nn

from dgm.core import device as devlib


RUN_BURST_SECONDS = 0.25  # ``Trainer.run`` with burst=None: bursts of about this long


class TrainingDiverged(FloatingPointError):
    """A loss (or metric) became NaN or infinite. ``step`` is the iteration at which it was seen."""

    def __init__(self, step: int, metrics: dict[str, float]):
        bad = ", ".join(k for k, v in metrics.items() if not math.isfinite(v))
        self.step, self.metrics = step, metrics
        super().__init__(
            f"Training diverged at step {step}: {bad or 'a value'} became NaN or infinite. "
            "Lower the learning rate, or reset."
        )


class History:
    """A bounded record of metric rows, downsampled evenly as it grows.

    Rows are recorded every ``stride`` steps; when more than ``max_rows`` are held, every other
    row is dropped and the stride doubles, so the record always spans the whole run with between
    max_rows/2 and max_rows rows. Evaluation rows (``record_eval``) are kept apart and thinned
    the same way past ``max_rows``."""

    def __init__(self, max_rows: int = 1000):
        self.max_rows = max_rows
        self.stride = 1
        self.rows: list[dict[str, float]] = []
        self.evals: list[dict[str, float]] = []

    def record(self, step: int, metrics: dict[str, float]) -> None:
        if step % self.stride:
            return
        self.rows.append({"step": step, **metrics})
        if len(self.rows) > self.max_rows:
            self.stride *= 2
            self.rows = [r for r in self.rows if r["step"] % self.stride == 0]

    def record_eval(self, step: int, metrics: dict[str, float]) -> None:
        self.evals.append({"step": step, **metrics})
        if len(self.evals) > self.max_rows:
            self.evals = self.evals[::2] + ([self.evals[-1]] if len(self.evals) % 2 == 0 else [])

    def __len__(self) -> int:
        return len(self.rows)

    def merged(self) -> list[dict[str, float]]:
        """Training rows and evaluation rows, merged by step and sorted."""
        by_step: dict[int, dict[str, float]] = {}
        for r in self.rows + self.evals:
            by_step.setdefault(int(r["step"]), {}).update(r)
        return [by_step[s] for s in sorted(by_step)]

    def state_dict(self) -> dict[str, Any]:
        return {"max_rows": self.max_rows, "stride": self.stride, "rows": list(self.rows), "evals": list(self.evals)}

    def load_state_dict(self, s: dict[str, Any]) -> None:
        self.max_rows, self.stride = s["max_rows"], s["stride"]
        self.rows, self.evals = list(s["rows"]), list(s["evals"])


@dataclasses.dataclass
class NoRuntime:
    """A trainer without runtime settings."""


class Trainer:
    """Base class; see the module docstring."""

    #: the runtime settings' dataclass (its fields and their defaults)
    Runtime: type = NoRuntime
    #: evaluate() every this many steps (0: only when asked) ...
    eval_every: int = 0
    #: ... and, before the first of those, at these steps: a readable curve from the first seconds of a run
    eval_early: tuple[int, ...] = (10, 20, 50, 100, 200, 500)
    #: keep the "last good" copy of the state at most this often (0: after every burst). The live
    #: loop trains in many short chunks and sets 1 s, so copying the state does not eat the chunks.
    checkpoint_every_s: float = 0.0
    #: wall seconds spent in evaluate() and how many evaluations took them (what a replay's time estimate
    #: leaves out of the training rate: the early schedule puts several evaluations in the first few steps)
    eval_seconds: float = 0.0
    evals_timed: int = 0
    #: what ``step`` enters around each evaluation: a worker process keeps the run's state from before it
    #: there, so that a Pause in the middle of a long evaluation is answered at once (dgm.core.worker_main);
    #: a run continued from that state evaluates first (``eval_pending``)
    eval_guard: Callable[[], ContextManager] = contextlib.nullcontext
    #: its evaluation is slow (many runs; sampling by an ODE; the GAN's exact W1 and MMD): a Step that meets one
    #: shows its model at once and has a worker do the Step whole (dgm.ui.scheduling.step); a quick one is done
    #: in place
    slow_eval: bool = False

    def __init__(self, config: Any, seed: int = 0, device: str | torch.device = "auto"):
        self.config = config
        self.seed = int(seed)
        self.device = devlib.resolve(device)
        self.iteration = 0
        self.history = History()
        self.latest: dict[str, float] = {}
        self.latest_eval: dict[str, float] = {}
        self.gen = devlib.generator(self.seed, self.device)
        self.runtime = self.Runtime()
        with devlib.seeded(self.seed, self.device):
            self.build()
        self.last_good, self._captured_at = self.checkpoint(), time.monotonic()

    # -- to implement ----------------------------------------------------------------------------
    def build(self) -> None:
        """Create models and optimisers (runs under a fixed global seed)."""

    def train_step(self) -> dict[str, Tensor]:
        """One optimisation step; returns scalar tensors (no .item(): stay on the device)."""
        raise NotImplementedError

    def evaluate(self) -> dict[str, float]:
        """Metrics worth a sync (held-out likelihoods, sample-based metrics)."""
        return {}

    def extra_state(self) -> dict[str, Any]:
        """State beyond the modules, optimisers and random stream that a checkpoint must hold."""
        return {}

    def load_extra_state(self, extra: dict[str, Any]) -> None:
        pass

    def derived_state(self) -> dict[str, Any]:
        """State computed from the model that is worth carrying along with it between processes."""
        return {}

    def load_derived_state(self, d: dict[str, Any]) -> None:
        pass

    def on_restore(self) -> None:
        """Called after a checkpoint is restored: drop caches derived from the model."""

    @property
    def finished(self) -> bool:
        """Has the run reached its planned end (an arena's budget)? A step then raises TrainingDiverged's kind
        with what happened, and a page says it as news, not as an error."""
        return False

    def on_weights_loaded(self, iteration: int) -> None:
        """Called after a weights file was loaded into the modules (dgm.core.export.load_weights): the run goes
        on from the step the file was saved at."""
        self.iteration = iteration
        self.on_restore()

    # -- runtime settings ------------------------------------------------------------------------------
    def set_runtime(self, values: Mapping[str, Any] | None = None, **kw: Any) -> None:
        """Change runtime settings (names of ``Runtime``'s fields); unknown names raise ValueError."""
        values = {**(values or {}), **kw}
        fields = {f.name for f in dataclasses.fields(self.Runtime)}
        unknown = set(values) - fields
        if unknown:
            raise ValueError(f"unknown runtime settings {sorted(unknown)} (known: {sorted(fields)})")
        self.runtime = dataclasses.replace(self.runtime, **values)

    def runtime_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self.runtime)

    # -- the loop --------------------------------------------------------------------------------
    def step(self, n: int = 1, evaluate: bool = True) -> dict[str, float]:
        """Run n steps; return the latest metrics. Raises TrainingDiverged on a non-finite value.
        ``evaluate=False`` trains the same steps (an evaluation never touches the training stream) without any
        evaluation or checkpoint: a preview of the model, not a state to go on from (a Step shows it at once
        while a worker trains the Step whole: dgm.ui.scheduling.step)."""
        pending: list[tuple[int, dict[str, Tensor]]] = []
        if evaluate and self.eval_pending():  # the initial model's (curves start there), or one a Pause left
            with self.eval_guard():
                self._eval()
        for i in range(int(n)):
            out = self.train_step()
            self.iteration += 1
            pending.append((self.iteration, out))
            if evaluate and self.eval_due(self.iteration):
                self._flush(pending)
                pending = []
                with self.eval_guard():
                    self._eval()
        self._flush(pending)
        now = time.monotonic()
        if evaluate and now - self._captured_at >= self.checkpoint_every_s:
            self.mark_good()
        return dict(self.latest)

    def eval_due(self, step: int) -> bool:
        """Is ``step`` on the evaluation schedule? Geometric early (``eval_early``), then every ``eval_every``."""
        if not self.eval_every:
            return False
        return step % self.eval_every == 0 or (step < self.eval_every and step in self.eval_early)

    def eval_pending(self) -> bool:
        """Whether the evaluation of this step (the initial one at step 0, else one the schedule puts here) has
        not run: a run taken from before an evaluation (``eval_guard``) does it before its next step. An
        evaluation is a function of the model alone (``eval_generator``), so doing it later gives the same."""
        if not self.eval_every or not (self.iteration == 0 or self.eval_due(self.iteration)):
            return False
        evals = self.history.evals
        return not evals or evals[-1]["step"] != self.iteration

    def evals_between(self, a: int, b: int) -> int:
        """How many evaluations the schedule puts after step ``a``, up to and including step ``b``."""
        if not self.eval_every or b <= a:
            return 0
        early = sum(1 for s in self.eval_early if a < s <= b and s < self.eval_every)
        return early + b // self.eval_every - a // self.eval_every

    def eval_schedule(self) -> str:
        """The schedule in words, for the figures: 'at steps 10, 20, 50, 100, 200 and 500, then every 1,000'."""
        if not self.eval_every:
            return "at the end only"
        early = [f"{s:,}" for s in sorted(self.eval_early) if s < self.eval_every]
        every = f"every {self.eval_every:,} steps"
        if not early:
            return every
        steps = early[0] if len(early) == 1 else ", ".join(early[:-1]) + " and " + early[-1]
        return f"at step{'s' if len(early) > 1 else ''} {steps}, then {every}"

    def _flush(self, pending: list[tuple[int, dict[str, Tensor]]]) -> None:
        """Move a burst's metrics to the host in one sync; check every step; record the rows."""
        if not pending:
            return
        keys = list(pending[0][1])
        stacked = torch.stack([torch.stack([o[k].detach().float().reshape(()) for k in keys]) for _, o in pending])
        values = stacked.cpu().tolist()
        for (it, _), row in zip(pending, values):
            metrics = dict(zip(keys, row))
            if not all(math.isfinite(v) for v in row):
                self.latest = metrics
                raise TrainingDiverged(it, metrics)
            self.history.record(it, metrics)
        self.latest = dict(zip(keys, values[-1]))

    def _eval(self) -> dict[str, float]:
        t0 = time.perf_counter()
        with torch.no_grad():
            metrics = self.evaluate()
        self.eval_seconds += time.perf_counter() - t0
        self.evals_timed += 1
        if metrics:
            self.latest_eval = metrics
            self.history.record_eval(self.iteration, metrics)
        return metrics

    def final(self) -> dict[str, float]:
        """Evaluate now (unless already evaluated at this iteration) and return all latest metrics."""
        evals = self.history.evals
        if not evals or evals[-1]["step"] != self.iteration:
            self._eval()
        return {**self.latest, **self.latest_eval}

    def eval_generator(self, offset: int = 1) -> torch.Generator:
        """A generator for evaluation, seeded afresh from the run's seed each call, so metrics
        never consume the training stream and are a deterministic function of the model."""
        return devlib.generator(self.seed + 1_000_003 * offset, self.device)

    def run(self, steps: int | None = None, seconds: float | None = None, burst: int | None = 50, *,
            should_stop: Callable[[], bool] | None = None, after_burst: Callable[[int], None] | None = None,
            evaluate: bool = True) -> int:
        """Train ``steps`` steps, or for a wall-time budget of ``seconds``, or until whichever of the two
        comes first; returns the steps done. Steps go in bursts of ``burst`` (None: bursts sized to take
        about ``RUN_BURST_SECONDS``, and cut so as not to overrun ``seconds``). Between bursts,
        ``should_stop()`` can end the run early (a cancelled export, a stopping server) and
        ``after_burst(done)`` sees it (results written as they come). ``evaluate``: as in ``step``."""
        if steps is None and seconds is None:
            raise ValueError("give steps or seconds")
        start, done, k = time.perf_counter(), 0, burst or 1
        while steps is None or done < steps:
            elapsed = time.perf_counter() - start
            if (seconds is not None and elapsed >= seconds) or (should_stop is not None and should_stop()):
                break
            n = k if steps is None else min(k, steps - done)
            t0, e0 = time.perf_counter(), self.eval_seconds
            self.step(n, evaluate=evaluate)
            done += n
            if after_burst is not None:
                after_burst(done)
            if burst is None:  # sized by the training's rate: an evaluation in the burst is not training
                rate = n / max(time.perf_counter() - t0 - (self.eval_seconds - e0), 1e-6)
                left = float("inf") if seconds is None else seconds - (time.perf_counter() - start)
                k = int(min(max(1.0, rate * min(RUN_BURST_SECONDS, left)), 10_000))
        return done

    # -- state ------------------------------------------------------------------------------------
    def stateful(self) -> dict[str, Any]:
        """Everything with a state_dict: modules, optimisers, schedulers (found by attribute)."""
        return {k: v for k, v in vars(self).items()
                if isinstance(v, (nn.Module, torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler))}

    def modules(self) -> dict[str, nn.Module]:
        return {k: v for k, v in vars(self).items() if isinstance(v, nn.Module)}

    def checkpoint(self) -> dict[str, Any]:
        """The whole run now, as a dict of copies: ``restore`` continues it exactly from here."""
        return {
            "iteration": self.iteration,
            "gen": self.gen.get_state(),
            "history": self.history.state_dict(),
            "latest": dict(self.latest),
            "latest_eval": dict(self.latest_eval),
            "objects": {k: copy.deepcopy(v.state_dict()) for k, v in self.stateful().items()},
            "extra": self.extra_state(),
        }

    def restore(self, ckpt: dict[str, Any], copy_: bool = True) -> None:
        """Go back to a checkpoint; ``copy_=False`` when ``ckpt`` is not shared (it is then taken over)."""
        own = copy.deepcopy if copy_ else (lambda x: x)
        self.iteration = ckpt["iteration"]
        self.gen.set_state(ckpt["gen"])
        self.history.load_state_dict(own(ckpt["history"]))
        self.latest, self.latest_eval = dict(ckpt["latest"]), dict(ckpt["latest_eval"])
        for k, obj in self.stateful().items():
            obj.load_state_dict(own(ckpt["objects"][k]))
        self.load_extra_state(ckpt["extra"])
        self.on_restore()

    def mark_good(self) -> None:
        """Take the current state as the one that "back to the last good state" returns to."""
        self.last_good, self._captured_at = self.checkpoint(), time.monotonic()

    def restore_last_good(self) -> None:
        """Go back to the state after the last burst whose values were all finite."""
        self.restore(self.last_good)

    # -- moving a run between processes (dgm.core.worker trains the live pages' runs) ----------------
    def export_state(self, full: bool = True, last_good: bool = True) -> dict[str, Any]:
        """The run, picklable. ``full``: everything ``import_state`` needs to continue it exactly,
        anywhere; otherwise only what figures read (the modules' tensors as numpy arrays, history and
        metrics), which is several times cheaper to move. ``last_good``: also the checkpoint that
        "back to the last good state" returns to."""
        if full:
            out = {"state": self.checkpoint()}
        else:
            out = {"iteration": self.iteration, "history": self.history.state_dict(), "latest": dict(self.latest),
                   "latest_eval": dict(self.latest_eval),
                   "modules": {k: [t.detach().cpu().numpy().copy() for t in m.state_dict().values()]
                               for k, m in self.modules().items()}}
        return {**out, "derived": self.derived_state(), "last_good": self.last_good if last_good else None}

    def import_state(self, s: dict[str, Any]) -> None:
        """Take over ``export_state``'s dict (unpickled, not shared): a full state continues the run
        from there; a light one only updates what the figures read (a replica's view of a run)."""
        if "state" in s:
            self.restore(s["state"], copy_=False)
        else:
            self.iteration = s["iteration"]
            self.history.load_state_dict(s["history"])
            self.latest, self.latest_eval = s["latest"], s["latest_eval"]
            with torch.no_grad():
                for k, m in self.modules().items():
                    for t, a in zip(m.state_dict().values(), s["modules"][k]):
                        t.copy_(torch.from_numpy(a))
        self.load_derived_state(s["derived"])
        if s["last_good"] is not None:
            self.last_good = s["last_good"]

    def reset(self) -> None:
        """Start over from the same config, seed and runtime settings."""
        runtime = self.runtime
        self.__init__(self.config, self.seed, self.device)
        self.runtime = runtime
