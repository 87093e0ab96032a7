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
independent optimisers). What every family's batch shares (each run's record, a run that diverges
stopping alone, evaluation by run, the summary) is dgm/core/many.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from dgm.core.config import knob
from dgm.core.many import ManySeeds
from dgm.core.stacked import StackedMLP
from dgm.families.gan.model import build_optimizers, cfg_move, clip_, d_loss, g_loss_per_sample, sample_prior
from dgm.families.gan.config import GANConfig
from dgm.families.gan.trainer import POOL, GANTrainer

PAGE_RUNS = 16  # at most this many on the page (small multiples of a 4 x 4 grid)
#: the per-run metrics the summary reports (median and range over the runs that did not diverge)
SUMMARY_METRICS = ("modes", "high_quality", "mmd", "w1", "js")


@dataclass
class GANSeedsConfig(GANConfig):
    """The GAN's settings, and how many seeds train at once (the page's "many seeds" view)."""

    # not (yet) batched: spectral normalisation, and the remedies that change D's layers or G's update
    # (unrolling, minibatch std; one seed at a time on the GAN page). Packing, R1/R2 and two timescales are.
    sn: bool = knob(False, "not available with many seeds at once", group="Loss", show=lambda c: False)
    unroll: int = knob(0, "not available with many seeds at once", group="Remedies", show=lambda c: False)
    mbstd: int = knob(0, "not available with many seeds at once", group="Remedies", show=lambda c: False)
    runs: int = knob(8, "seeds trained at once, with the same settings: the page's seed, seed + 1, …", lo=2,
                     hi=PAGE_RUNS, group="Seeds", label="runs (seeds at once)")


def make(config: GANSeedsConfig, seed: int = 0, device: str | torch.device = "auto") -> "GANSeeds":
    """The page's trainer: ``config.runs`` seeds from ``seed`` on."""
    return GANSeeds(config, seeds=range(seed, seed + config.runs), device=device)


class GANSeeds(ManySeeds):
    """K GAN runs of one config, one per seed, trained together (see the module docstring)."""

    single = GANTrainer
    stacked = ("G", "D", "G_avg")
    summary_metrics = SUMMARY_METRICS
    eval_every = GANTrainer.eval_every

    @classmethod
    def unsupported(cls, config: GANConfig) -> list[str]:
        if config.sn:
            return ["spectral normalisation of D"]
        return [f"{k}={getattr(config, k)}" for k, plain in (("unroll", 0), ("mbstd", 0)) if getattr(config, k) != plain]

    def build_stacked(self):
        c = self.config
        self.data = self.runs[0].data
        self.G = StackedMLP.from_mlps([r.G for r in self.runs])
        self.D = StackedMLP.from_mlps([r.D for r in self.runs])
        self.G_avg = StackedMLP.from_mlps([r.G for r in self.runs]).requires_grad_(False) if c.ema > 0 else None
        build_optimizers(self)  # the single run's optimisers, over the stacked weights
        self._g_params = list(self.G.parameters())
        self._pools: dict[str, Tensor | None] = {"real": None, "z": None}
        self._next = {"real": POOL, "z": POOL}

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
        return {**super().extra_state(), "pools": dict(self._pools), "next": dict(self._next)}

    def load_extra_state(self, extra):
        super().load_extra_state(extra)
        self._pools, self._next = dict(extra["pools"]), dict(extra["next"])

    # -- one step of every run -----------------------------------------------------------------------
    def _per_run(self, fn, *outs: Tensor) -> Tensor:
        """A loss written for one run's outputs (B,), for every run: (K,)."""
        return torch.func.vmap(fn)(*outs)

    def _packed(self, x: Tensor) -> Tensor:
        """Points (K, B, 2) as D's inputs: PacGAN's packs of m points, (K, B // m, 2m), or the points."""
        m = self.config.pack
        if m == 1:
            return x
        n = x.shape[1] // m
        return x[:, : n * m].reshape(x.shape[0], n, m * x.shape[2])

    def _d_step(self, x: Tensor, fake: Tensor) -> tuple[Tensor, Tensor]:
        c = self.config
        xr, xf = self._packed(x), self._packed(fake)
        b = xr.shape[1]
        out = self.D(torch.cat([xr, xf], 1))[..., 0]  # (K, 2B)
        real_out, fake_out = out[:, :b], out[:, b:]
        loss = self._per_run(lambda r, f: d_loss(c.loss, r, f), real_out, fake_out)  # (K,)
        total = loss
        if c.loss == "wgan_gp":
            eps = torch.stack([torch.rand(b, 1, generator=r.gen, device=self.device) for r in self.runs])
            total = loss + c.gp * self._gradient_penalty(xr, xf, eps)
        if c.r1:
            total = total + c.r1 / 2 * self._zero_centred(xr)
        if c.r2:
            total = total + c.r2 / 2 * self._zero_centred(xf)
        self.opt_d.zero_grad(set_to_none=True)
        total.sum().backward()
        self._mask_dead(self.D.parameters())
        self.opt_d.step()
        if c.loss == "wgan":
            clip_(self.D, c.clip)
        return loss.detach(), fake_out.detach()

    def _gradient_penalty(self, real: Tensor, fake: Tensor, eps: Tensor) -> Tensor:
        """Each run's WGAN-GP penalty E (||grad D(x_hat)|| - 1)^2: (K,)."""
        x_hat = (eps * real + (1 - eps) * fake).requires_grad_(True)  # (K, B, 2)
        (grad,) = torch.autograd.grad(self.D(x_hat).sum(), x_hat, create_graph=True)
        return (grad.norm(dim=-1) - 1).pow(2).mean(1)

    def _zero_centred(self, x: Tensor) -> Tensor:
        """Each run's R1 (data points) or R2 (generated points) penalty E ||grad D(x)||^2: (K,)."""
        x = x.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(self.D(x).sum(), x, create_graph=True)
        return grad.pow(2).sum(-1).mean(1)

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
        gl = g_loss_per_sample(c.loss, self.D(self._packed(fake))[..., 0]).mean(1)  # (K,)
        self.opt_g.zero_grad(set_to_none=True)
        gl.sum().backward(inputs=self._g_params)
        self._mask_dead(self._g_params)
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
        target = cfg_move(lambda x: self.D(self._packed(x)), fake.detach(), c.eta, c.T)  # (K, B, 2)
        gl = 0.5 * (fake - target).pow(2).sum(-1).mean(1)
        self.opt_g.zero_grad(set_to_none=True)
        gl.sum().backward()
        self._mask_dead(self._g_params)
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

    # -- evaluation: each run by its own trainer (dgm/core/many.py) -----------------------------------
    def before_eval(self) -> None:
        floors = self.runs[0].floors  # what true samples of p get: the data's, measured once for the batch
        for r in self.runs[1:]:
            r._floors = floors

    def summary(self) -> dict[str, float]:
        """The median and range of each metric over the runs that did not diverge, how many of them capture every
        mode (``every_mode``), and the fraction of all runs that do so with at least 90% of samples of high
        quality."""
        out = super().summary()
        if self.data.centers is not None:
            alive = [r.latest_eval for k, r in enumerate(self.runs) if k not in self.diverged and r.latest_eval]
            n = len(self.data.centers)
            every = [e for e in alive if e.get("modes") == n]
            out["every_mode"] = float(len(every))
            out["all_modes"] = sum(e.get("high_quality", 0.0) >= 0.9 for e in every) / self.k
        return out
