"""Many runs of one family at once: K seeds of one config, trained as one batched model.

    batch = FlowSeeds(FlowConfig(), seeds=range(8))   # a family's ManySeeds subclass
    batch.step(2000); batch.summary()                  # {"runs", "diverged", "nll_median", "nll_min", ...}
    with batch.as_run(3) as run: ...                   # run 3's weights in its own single-run trainer

Run k is the family's single-run trainer of seed ``seeds[k]`` (``runs[k]``): its networks start from that
trainer's initial weights, its batches come from that trainer's random stream in the same order, and it is
evaluated by that trainer's ``evaluate``. What is batched is the arithmetic: the networks are stacked
(``dgm.core.stacked``: weights with a leading K dimension, one batched product per layer for all runs), the
optimiser runs over the stacked weights (element-wise, so it is K independent optimisers), and each run's
loss is its own batch mean, their sum differentiated, so each run's gradient is exactly its own.

A run whose loss becomes NaN or infinite stops where it last stood whole: its slices of the weights go back
to the last good state, its optimiser state is zeroed and its gradients are masked from then on (an
element-wise optimiser then leaves it exactly where it is); the others go on. Only when every run has
diverged does the batch raise ``TrainingDiverged``.

A subclass names the single-run trainer (``single``), the attributes that hold stacked modules (``stacked``,
the same names as the single run's modules they stack, so that ``as_run`` can load run k's slices into
them), builds them (``build_stacked``) and writes ``train_step`` over all runs.
"""

from __future__ import annotations

import contextlib
import math
import statistics
from typing import Any, Iterable, Sequence

import torch
from torch import Tensor

from dgm.core.train import Trainer, TrainingDiverged

MAX_SEEDS = 1024


class ManySeeds(Trainer):
    """K runs of ``single`` on one config, one per seed, trained together (see the module docstring)."""

    #: the family's single-run trainer
    single: type[Trainer] = Trainer
    #: attributes holding stacked modules (StackedMLP, FuncStack), named as the single run's modules
    stacked: tuple[str, ...] = ()
    #: the per-run metrics the summary reports (median and range over the runs that did not diverge)
    summary_metrics: tuple[str, ...] = ()
    slow_eval = True  # K runs' evaluations (the GAN lottery's eight: 3 s)

    def __init__(self, config: Any, seeds: Sequence[int] = (0, 1, 2, 3), device: str | torch.device = "auto"):
        seeds = [int(s) for s in seeds]
        if not 1 <= len(seeds) <= MAX_SEEDS or len(set(seeds)) != len(seeds):
            raise ValueError(f"give 1 to {MAX_SEEDS} distinct seeds")
        off = self.unsupported(config)
        if off:
            raise ValueError(f"many seeds at once do not support {', '.join(off)} yet (train one seed at a time)")
        self.seeds = seeds
        super().__init__(config, seed=seeds[0], device=device)

    def reset(self) -> None:
        """Start over from the same config, seeds and runtime settings (the base class's passes one seed)."""
        runtime = self.runtime
        self.__init__(self.config, self.seeds, self.device)
        self.runtime = runtime

    @classmethod
    def unsupported(cls, config: Any) -> list[str]:
        """The settings of ``config`` that the batch cannot train (shown as ``name=value``)."""
        return []

    def build(self):
        self.runs = [self.single(self.config, seed=s, device=self.device) for s in self.seeds]
        self.diverged: dict[int, int] = {}  # run index -> the step at which it diverged
        self._alive: Tensor | None = None  # (K,) mask while some run has diverged, else None
        self.build_stacked()

    def build_stacked(self) -> None:
        """Stack the runs' networks (attributes named in ``stacked``) and build the optimisers over them."""
        raise NotImplementedError

    @property
    def k(self) -> int:
        return len(self.seeds)

    def stacked_loss(self, net) -> dict[str, Tensor]:
        """Every run's own step for families whose single run splits its step into ``draw()`` and a pure
        ``step_loss(model, batch, step)``: each run's batch from its own stream, the loss on its own weights in
        ``net`` (a ``FuncStack``), all at once. Each value (K,)."""
        batch = tuple(torch.stack(parts) for parts in zip(*(r.draw() for r in self.runs)))
        first, step = self.runs[0], self.iteration
        return net.vmap(lambda m, *b: first.step_loss(m, b, step))(*batch)

    # -- state: each run's stream and record travel with the batch --------------------------------------
    def _run_modules(self, r: Trainer) -> dict[str, Any]:
        """A run's own modules that are not stacked (e.g. the VAE's best checkpoint): saved with the batch."""
        return {name: m for name, m in r.modules().items() if name not in self.stacked}

    def extra_state(self):
        return {"gens": [r.gen.get_state() for r in self.runs], "diverged": dict(self.diverged),
                "runs": [self._run_record(r) for r in self.runs],
                "run_extra": [r.extra_state() for r in self.runs],
                "run_modules": [{n: {k: v.clone() for k, v in m.state_dict().items()}
                                 for n, m in self._run_modules(r).items()} for r in self.runs]}

    def load_extra_state(self, extra):
        for r, g, rec, ex, mods in zip(self.runs, extra["gens"], extra["runs"], extra["run_extra"],
                                       extra["run_modules"]):
            r.gen.set_state(g)
            self._load_run_record(r, rec)
            r.load_extra_state(ex)
            for n, m in self._run_modules(r).items():
                m.load_state_dict(mods[n])
            r.on_restore()
        self.diverged = dict(extra["diverged"])
        self._set_alive()

    # what figures read of each run travels between processes with the batch's light state
    def derived_state(self):
        return {"runs": [self._run_record(r) for r in self.runs], "diverged": dict(self.diverged)}

    def load_derived_state(self, d):
        for r, rec in zip(self.runs, d["runs"]):
            self._load_run_record(r, rec)
        self.diverged = dict(d["diverged"])

    @staticmethod
    def _run_record(r: Trainer) -> dict[str, Any]:
        return {"iteration": r.iteration, "history": r.history.state_dict(), "latest": dict(r.latest),
                "latest_eval": dict(r.latest_eval)}

    @staticmethod
    def _load_run_record(r: Trainer, rec: dict[str, Any]) -> None:
        r.iteration = rec["iteration"]
        r.history.load_state_dict(rec["history"])
        r.latest, r.latest_eval = dict(rec["latest"]), dict(rec["latest_eval"])

    # -- runs that diverge stop; the others go on --------------------------------------------------------
    def _set_alive(self) -> None:
        if not self.diverged:
            self._alive = None
            return
        alive = torch.ones(self.k, dtype=torch.bool, device=self.device)
        alive[list(self.diverged)] = False
        self._alive = alive

    def _mask_dead(self, params: Iterable[Tensor]) -> None:
        """Zero the stopped runs' gradients: with their optimiser state zeroed too, Adam (and SGD,
        RMSprop) leave their weights exactly where they are."""
        if self._alive is None:
            return
        for p in params:
            if p.grad is not None:
                p.grad = torch.where(self._alive.view(-1, *[1] * (p.dim() - 1)), p.grad, 0.0)

    @torch.no_grad()
    def _stop_run(self, k: int, step: int) -> None:
        """Run k diverged at ``step``: back to its weights in the last good state, its updates masked."""
        self.diverged[k] = step
        good = self.last_good["objects"]
        for name in self.stacked:
            net = getattr(self, name)
            if net is None:
                continue
            for key, p in net.state_dict().items():
                p[k] = good[name][key][k]
        for opt in self.stateful().values():
            if isinstance(opt, torch.optim.Optimizer):
                for state in opt.state.values():
                    for key, v in state.items():
                        if torch.is_tensor(v) and v.dim() > 0 and v.shape[0] == self.k:
                            v[k] = 0
        self._set_alive()

    def _flush(self, pending: list[tuple[int, dict[str, Tensor]]]) -> None:
        """One sync per burst; each run's rows go to its own history; a run with a non-finite value stops."""
        if not pending:
            return
        keys = list(pending[0][1])
        values = torch.stack([torch.stack([o[key].detach().float().expand(self.k) for key in keys])
                              for _, o in pending]).cpu()
        for k, r in enumerate(self.runs):
            if k in self.diverged:
                continue
            for (it, _), row in zip(pending, values[:, :, k].tolist()):
                metrics = dict(zip(keys, row))
                if not all(math.isfinite(v) for v in row):
                    r.latest = metrics
                    self._stop_run(k, it)
                    break
                r.history.record(it, metrics)
                r.latest, r.iteration = metrics, it
        alive = [k for k in range(self.k) if k not in self.diverged]
        if not alive:
            first = min(self.diverged.values())
            raise TrainingDiverged(first, self.runs[0].latest)
        self.latest = {key: statistics.median(self.runs[k].latest[key] for k in alive) for key in keys}

    # -- evaluation: each run by its own trainer ----------------------------------------------------
    @contextlib.contextmanager
    def as_run(self, k: int):
        """Run k's weights in its single-run trainer (``self.runs[k]``), for evaluation and figures."""
        r = self.runs[k]
        for name in self.stacked:
            net = getattr(self, name)
            if net is not None:
                net.load_into(k, getattr(r, name))
        yield r

    def before_eval(self) -> None:
        """Share what every run's evaluation needs and need not measure again (e.g. the GAN's floors)."""

    def _eval(self) -> dict[str, float]:
        self.before_eval()
        for k in range(self.k):
            if k in self.diverged and self.runs[k].latest_eval:
                continue
            with self.as_run(k) as r:
                r.iteration = self.iteration if k not in self.diverged else r.iteration
                r._eval()
        summary = self.summary()
        self.latest_eval = summary
        self.history.record_eval(self.iteration, summary)
        return summary

    def summary(self) -> dict[str, float]:
        """Over the runs that did not diverge: the median and range of each of ``summary_metrics``."""
        alive = [r.latest_eval for k, r in enumerate(self.runs) if k not in self.diverged and r.latest_eval]
        out: dict[str, float] = {"runs": float(self.k), "diverged": float(len(self.diverged))}
        for m in self.summary_metrics:
            vals = [e[m] for e in alive if m in e and math.isfinite(e[m])]
            if vals:
                out[f"{m}_median"] = float(statistics.median(vals))
                out[f"{m}_min"], out[f"{m}_max"] = float(min(vals)), float(max(vals))
        return out

    def finals(self) -> list[dict[str, Any]]:
        """Each run's final metrics (evaluated now), with its seed (and the step it diverged at, if it did)."""
        self.final()
        out = []
        for k, r in enumerate(self.runs):
            with self.as_run(k) as run:
                run_final = run.final()  # already evaluated at this step: what the single run adds at its end
            row: dict[str, Any] = {"seed": self.seeds[k], **run_final}
            if k in self.diverged:
                row["diverged_at"] = self.diverged[k]
            out.append(row)
        return out
