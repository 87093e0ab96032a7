"""Many GAN runs at once: the same settings on K seeds, trained as one batched model.

    from dgm.families.gan.seeds import GANSeeds
    b = GANSeeds(GANConfig(data="ring8"), seeds=range(8))
    b.step(2000); b.summary()   # {"runs", "all_modes", "modes_median", ...}; b.runs[k] is run k

Run k is the single-run trainer (``GANTrainer``) of seed ``seeds[k]``: its networks start from that
trainer's initial weights, its real samples, latent codes and penalty draws come from that trainer's
random stream in the same order, and it is evaluated by that trainer's ``evaluate`` on its own
evaluation material (the floors, what true samples of p get, are measured once, on the first seed's
stream). What is batched is the arithmetic: G and D are ``StackedMLP``s, one batched matrix
product per layer for all runs, and one optimiser over the stacked weights (element-wise, so it is K
independent optimisers). Each run's loss is its own batch mean; their sum is differentiated, so each
run's gradient is exactly its own. A run whose loss or metrics become NaN or infinite stops where it
last stood whole (its weights restored, its updates masked) and the others go on.
"""

from __future__ import annotations

import contextlib
import math
import statistics
from typing import Any, Sequence

import torch
from torch import Tensor

from dataclasses import dataclass

from dgm.core.config import knob
from dgm.core.stacked import StackedMLP
from dgm.core.train import Trainer, TrainingDiverged
from dgm.families.gan.model import build_optimizers, cfg_move, clip_, d_loss, g_loss_per_sample, sample_prior
from dgm.families.gan.trainer import POOL, GANConfig, GANTrainer

MAX_SEEDS = 1024
PAGE_RUNS = 16  # at most this many on the page (small multiples of a 4 x 4 grid)
#: the per-run metrics the summary reports (median and range over the runs that did not diverge)
SUMMARY_METRICS = ("modes", "high_quality", "mmd", "w1", "js")


@dataclass
class GANSeedsConfig(GANConfig):
    """The GAN's settings, and how many seeds train at once (the page's "many seeds" view)."""

    # not (yet) batched: spectral normalisation and the mode-collapse remedies that change D's inputs or
    # G's update (one seed at a time on the GAN page); two timescales (lr_d, lr_g) are batched
    sn: bool = knob(False, "not available with many seeds at once", group="Loss", show=lambda c: False)
    pack: int = knob(1, "not available with many seeds at once", group="Remedies", show=lambda c: False)
    unroll: int = knob(0, "not available with many seeds at once", group="Remedies", show=lambda c: False)
    r1: float = knob(0.0, "not available with many seeds at once", group="Remedies", show=lambda c: False)
    r2: float = knob(0.0, "not available with many seeds at once", group="Remedies", show=lambda c: False)
    mbstd: int = knob(0, "not available with many seeds at once", group="Remedies", show=lambda c: False)
    runs: int = knob(8, "seeds trained at once, with the same settings: the page's seed, seed + 1, …", lo=2,
                     hi=PAGE_RUNS, group="Seeds", label="runs (seeds at once)")


def make(config: GANSeedsConfig, seed: int = 0, device: str | torch.device = "auto") -> "GANSeeds":
    """The page's trainer: ``config.runs`` seeds from ``seed`` on."""
    return GANSeeds(config, seeds=range(seed, seed + config.runs), device=device)


class GANSeeds(Trainer):
    """K GAN runs of one config, one per seed, trained together (see the module docstring)."""

    eval_every = GANTrainer.eval_every

    def __init__(self, config: GANConfig, seeds: Sequence[int] = (0, 1, 2, 3), device: str | torch.device = "auto"):
        seeds = [int(s) for s in seeds]
        if not 1 <= len(seeds) <= MAX_SEEDS or len(set(seeds)) != len(seeds):
            raise ValueError(f"give 1 to {MAX_SEEDS} distinct seeds")
        if config.sn:
            raise ValueError("many seeds at once do not support spectral normalisation of D (train one seed at a time)")
        off = [f"{k}={getattr(config, k)}" for k, plain in (("pack", 1), ("unroll", 0), ("r1", 0.0), ("r2", 0.0),
                                                              ("mbstd", 0)) if getattr(config, k) != plain]
        if off:
            raise ValueError(f"many seeds at once do not support {', '.join(off)} yet (train one seed at a time)")
        self.seeds = seeds
        super().__init__(config, seed=seeds[0], device=device)

    def build(self):
        c = self.config
        self.runs = [GANTrainer(c, seed=s, device=self.device) for s in self.seeds]
        self.data = self.runs[0].data
        self.G = StackedMLP.from_mlps([r.G for r in self.runs])
        self.D = StackedMLP.from_mlps([r.D for r in self.runs])
        self.G_avg = StackedMLP.from_mlps([r.G for r in self.runs]).requires_grad_(False) if c.ema > 0 else None
        build_optimizers(self)  # the single run's optimisers, over the stacked weights
        self._g_params = list(self.G.parameters())
        self._pools: dict[str, Tensor | None] = {"real": None, "z": None}
        self._next = {"real": POOL, "z": POOL}
        self.diverged: dict[int, int] = {}  # run index -> the step at which it diverged
        self._alive: Tensor | None = None  # (K,) mask while some run has diverged, else None

    @property
    def k(self) -> int:
        return len(self.seeds)

    @torch.no_grad()
    def samples(self, n: int = 600) -> Tensor:
        """(K, n, 2): each run's samples from the first n of its fixed evaluation codes, in one call."""
        z = torch.stack([r.z_eval[:n] for r in self.runs])
        return (self.G if self.G_avg is None else self.G_avg)(z)

    # -- batches: each run's pool drawn from its own stream, as its single-run trainer draws it ------
    def _draw(self, kind: str) -> Tensor:
        if self._next[kind] >= POOL:
            c = self.config
            if kind == "real":
                pools = [r.data.sample(POOL * c.batch, r.gen).view(POOL, c.batch, 2) for r in self.runs]
            else:
                pools = [sample_prior(c.prior, POOL * c.batch, c.z_dim, r.gen, self.device).view(POOL, c.batch, c.z_dim)
                         for r in self.runs]
            self._pools[kind] = torch.stack(pools, 1)  # (POOL, K, B, d)
            self._next[kind] = 0
        x = self._pools[kind][self._next[kind]]
        self._next[kind] += 1
        return x

    def extra_state(self):
        return {"pools": dict(self._pools), "next": dict(self._next), "gens": [r.gen.get_state() for r in self.runs],
                "diverged": dict(self.diverged), "runs": [self._run_record(r) for r in self.runs]}

    def load_extra_state(self, extra):
        self._pools, self._next = dict(extra["pools"]), dict(extra["next"])
        for r, g, rec in zip(self.runs, extra["gens"], extra["runs"]):
            r.gen.set_state(g)
            self._load_run_record(r, rec)
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
    def _run_record(r: GANTrainer) -> dict[str, Any]:
        return {"iteration": r.iteration, "history": r.history.state_dict(), "latest": dict(r.latest),
                "latest_eval": dict(r.latest_eval)}

    @staticmethod
    def _load_run_record(r: GANTrainer, rec: dict[str, Any]) -> None:
        r.iteration = rec["iteration"]
        r.history.load_state_dict(rec["history"])
        r.latest, r.latest_eval = dict(rec["latest"]), dict(rec["latest_eval"])

    # -- one step of every run -----------------------------------------------------------------------
    def _per_run(self, fn, *outs: Tensor) -> Tensor:
        """A loss written for one run's outputs (B,), for every run: (K,)."""
        return torch.func.vmap(fn)(*outs)

    def _d_step(self, x: Tensor, fake: Tensor) -> tuple[Tensor, Tensor]:
        c = self.config
        b = x.shape[1]
        out = self.D(torch.cat([x, fake], 1))[..., 0]  # (K, 2B)
        real_out, fake_out = out[:, :b], out[:, b:]
        loss = self._per_run(lambda r, f: d_loss(c.loss, r, f), real_out, fake_out)  # (K,)
        total = loss
        if c.loss == "wgan_gp":
            eps = torch.stack([torch.rand(b, 1, generator=r.gen, device=self.device) for r in self.runs])
            total = loss + c.gp * self._gradient_penalty(x, fake, eps)
        self.opt_d.zero_grad(set_to_none=True)
        total.sum().backward()
        self._mask_dead(self.D)
        self.opt_d.step()
        if c.loss == "wgan":
            clip_(self.D, c.clip)
        return loss.detach(), fake_out.detach()

    def _gradient_penalty(self, real: Tensor, fake: Tensor, eps: Tensor) -> Tensor:
        """Each run's WGAN-GP penalty E (||grad D(x_hat)|| - 1)^2: (K,)."""
        x_hat = (eps * real + (1 - eps) * fake).requires_grad_(True)  # (K, B, 2)
        (grad,) = torch.autograd.grad(self.D(x_hat).sum(), x_hat, create_graph=True)
        return (grad.norm(dim=-1) - 1).pow(2).mean(1)

    def train_step(self) -> dict[str, Tensor]:
        c = self.config
        if c.loss == "cfg":
            return self._cfg_step()
        for i in range(c.d_steps):
            z = self._draw("z")
            if i == c.d_steps - 1:
                fake = self.G(z)  # (K, B, 2), keeps its graph for the G step
            else:
                with torch.no_grad():
                    fake = self.G(z)
            dl, _ = self._d_step(self._draw("real"), fake.detach())
        gl = g_loss_per_sample(c.loss, self.D(fake)[..., 0]).mean(1)  # (K,)
        self.opt_g.zero_grad(set_to_none=True)
        gl.sum().backward(inputs=self._g_params)
        self._mask_dead(self.G)
        self.opt_g.step()
        self._decay()
        return {"d_loss": dl, "g_loss": gl.detach()}

    def _cfg_step(self) -> dict[str, Tensor]:
        c = self.config
        for _ in range(c.d_steps):
            with torch.no_grad():
                fake = self.G(self._draw("z"))
            dl, _ = self._d_step(self._draw("real"), fake)
        fake = self.G(self._draw("z"))
        target = cfg_move(self.D, fake.detach(), c.eta, c.T)  # (K, B, 2)
        gl = 0.5 * (fake - target).pow(2).sum(-1).mean(1)
        self.opt_g.zero_grad(set_to_none=True)
        gl.sum().backward()
        self._mask_dead(self.G)
        self.opt_g.step()
        self._decay()
        return {"d_loss": dl, "g_loss": gl.detach()}

    def _decay(self) -> None:
        if self.config.decay < 1.0:
            self.sched_d.step()
            self.sched_g.step()
        if self.G_avg is not None:
            beta = min(self.config.ema, (1 + self.iteration) / (10 + self.iteration))
            with torch.no_grad():
                torch._foreach_lerp_(list(self.G_avg.parameters()), self._g_params, 1 - beta)

    # -- runs that diverge stop; the others go on --------------------------------------------------------
    def _set_alive(self) -> None:
        if not self.diverged:
            self._alive = None
            return
        alive = torch.ones(self.k, dtype=torch.bool, device=self.device)
        alive[list(self.diverged)] = False
        self._alive = alive

    def _mask_dead(self, net: StackedMLP) -> None:
        """Zero the stopped runs' gradients: with their optimiser state zeroed too, Adam (and SGD,
        RMSprop) leave their weights exactly where they are."""
        if self._alive is None:
            return
        for p in net.parameters():
            if p.grad is not None:
                p.grad = torch.where(self._alive.view(-1, *[1] * (p.dim() - 1)), p.grad, 0.0)

    @torch.no_grad()
    def _stop_run(self, k: int, step: int) -> None:
        """Run k diverged at ``step``: back to its weights in the last good state, its updates masked."""
        self.diverged[k] = step
        good = self.last_good["objects"]
        for name in ("G", "D", "G_avg"):
            net = getattr(self, name)
            if net is None:
                continue
            for key, p in net.state_dict().items():
                p[k] = good[name][key][k]
        for opt in (self.opt_g, self.opt_d):
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
        values = torch.stack([torch.stack([o[key].detach().float() for key in keys]) for _, o in pending]).cpu()
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
        self.G.load_into(k, r.G)
        self.D.load_into(k, r.D)
        if self.G_avg is not None:
            self.G_avg.load_into(k, r.G_avg)
        yield r

    def _eval(self) -> dict[str, float]:
        floors = self.runs[0].floors  # what true samples of p get: the data's, measured once for the batch
        for r in self.runs[1:]:
            r._floors = floors
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
        """Over the runs that did not diverge: the median and range of each metric, and the fraction of
        all runs that capture every mode with at least 90% of samples of high quality."""
        alive = [r.latest_eval for k, r in enumerate(self.runs) if k not in self.diverged and r.latest_eval]
        out: dict[str, float] = {"runs": float(self.k), "diverged": float(len(self.diverged))}
        for m in SUMMARY_METRICS:
            vals = [e[m] for e in alive if m in e and math.isfinite(e[m])]
            if vals:
                out[f"{m}_median"] = float(statistics.median(vals))
                out[f"{m}_min"], out[f"{m}_max"] = float(min(vals)), float(max(vals))
        if self.data.centers is not None:
            n = len(self.data.centers)
            full = [e for e in alive if e.get("modes") == n and e.get("high_quality", 0.0) >= 0.9]
            out["all_modes"] = len(full) / self.k
        return out

    def final(self) -> dict[str, float]:
        evals = self.history.evals
        if not evals or evals[-1]["step"] != self.iteration:
            self._eval()
        return {**self.latest, **self.latest_eval}

    def finals(self) -> list[dict[str, Any]]:
        """Each run's final metrics (evaluated now), with its seed (and the step it diverged at, if it did)."""
        self.final()
        out = []
        for k, r in enumerate(self.runs):
            row: dict[str, Any] = {"seed": self.seeds[k], **r.latest, **r.latest_eval}
            if k in self.diverged:
                row["diverged_at"] = self.diverged[k]
            out.append(row)
        return out
