"""The diffusion page's config and trainer: DDPM, a denoising score model and flow matching (with minibatch
optimal transport and one reflow round), optionally class-conditional for classifier-free guidance.

    t = DiffusionTrainer(DiffusionConfig(data="ring8", model="ddpm"), seed=0)
    t.step(3000); t.final()   # {"loss", "nfe", "modes", "high_quality", "mode_kl", "mmd", "w1", "score_error", "nll",
                              #  and the floors of MMD² and W1: what true samples of p get}

How the run samples (sampler, NFE, guidance scale, Langevin's steps) is a runtime setting (``Sampling``): it
never changes training, so the page changes it without restarting the run. The config's sampling knobs are
its initial value (the CLI's flags).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
from dataclasses import dataclass

import torch
from torch import Tensor

import dgm.core.data
from dgm.core import quality
from dgm.core.config import knob
from dgm.core.digits import digits
from dgm.core.metrics import EVAL_SAMPLES, MMD, W1_SAMPLES, mode_stats, wasserstein1
from dgm.core.train import Trainer
from dgm.families.diffusion.exact import ExactDenoiser, NoisedMixture
from dgm.families.diffusion.model import (
    MODELS, SCHEDULES, Denoised, Net, make_schedule, noised, ot_pairing, sample_labelled,
)
from dgm.families.diffusion.samplers import SAMPLERS, guided, log_likelihood, sample

DIGITS = "digits"
DIGITS_EVAL_SAMPLES = 300  # the digits' samples per evaluation
POOL = 32  # batches of data, noise and times drawn per call to the samplers
REFLOW_PAIRS = 8192  # (noise, sample) pairs drawn by the first flow for the reflow round
REFLOW_NFE = 100  # Heun evaluations per reflow pair
NLL_POINTS, NLL_STEPS = 500, 32  # held-out points and Heun steps of the probability-flow likelihood
SCORE_TIMES = (0.02, 0.05, 0.1, 0.2, 0.35, 0.5, 0.7, 0.9)  # times at which the score error is averaged


def _is(*models):
    return lambda c: c.model in models


def is_mixture(name: str) -> bool:
    return name != DIGITS and isinstance(dgm.core.data.get(name), dgm.core.data.GaussianMixture2D)


@dataclass
class DiffusionConfig:
    data: str = knob("ring8", "the data: a 2D set (the Gaussian mixtures have exact scores) or the 8x8 digits",
                     choices=(*dgm.core.data.names(), DIGITS, "custom"), group="Data")
    conditional: bool = knob(False, "Gaussian mixtures: train with each component as a class label, dropped "
                             "with probability p_uncond, so that one network gives the conditional and the "
                             "unconditional scores (classifier-free guidance)", group="Data",
                             label="class-conditional (guidance)")
    p_uncond: float = knob(0.2, "probability of training without the label", lo=0.05, hi=0.5, step=0.05,
                           group="Data", label="p_uncond", show=lambda c: c.conditional)
    model: str = knob("ddpm", "ddpm: noise prediction, variance preserving; score: denoising score matching over "
                      "noise levels, variance exploding; flow: flow matching on straight paths",
                      choices=MODELS, label="model")
    schedule: str = knob("cosine", "DDPM's noise schedule", choices=SCHEDULES, show=_is("ddpm"))
    T: int = knob(1000, "DDPM's number of noise levels (diffusion steps)", choices=(10, 20, 50, 100, 200, 500, 1000),
                  label="steps T", show=_is("ddpm"))
    levels: int = knob(100, "noise levels of the score model, geometric from sigma_min to the data's diameter",
                       choices=(10, 20, 50, 100, 200, 500, 1000), label="noise levels L", show=_is("score"))
    sigma_min: float = knob(0.01, "the score model's smallest noise level", lo=0.002, hi=0.2, log=True,
                            label="σ_min", show=_is("score"))
    coupling: str = knob("independent", "flow matching: pair data and noise at random, or by optimal transport "
                         "within each batch (straighter paths)", choices=("independent", "ot"), show=_is("flow"))
    reflow_at: int = knob(0, "flow matching: at this step, draw pairs (noise, sample) with the model's ODE and train "
                          "on them from then on: one reflow round, which straightens the paths (0: never)",
                          lo=0, hi=20000, step=500, label="reflow at step", show=_is("flow"))
    fourier: float = knob(6.0, "Fourier features of the input: sin and cos of 32 random projections of x, with "
                          "frequencies of this standard deviation per standard deviation of the data (0: none)",
                          choices=(0.0, 1.0, 2.0, 4.0, 6.0, 8.0, 16.0), group="Network", label="Fourier features")
    width: int = knob(128, "hidden units per layer of the network", choices=(32, 64, 128, 256, 512), group="Network")
    depth: int = knob(3, "hidden layers of the network", lo=1, hi=6, group="Network")
    lr: float = knob(2e-3, "Adam learning rate", lo=1e-4, hi=2e-2, log=True, group="Training", label="learning rate")
    halflife: int = knob(2000, "halve the learning rate every this many steps, down to 1/20 of it (0: constant)",
                         lo=0, hi=20000, step=250, group="Training", label="learning-rate half-life")
    batch: int = knob(512, "training examples per step", lo=32, hi=4096, step=32, group="Training")
    ema: float = knob(0.999, "samples and metrics come from an exponential moving average of the weights with "
                      "this decay (0: the weights themselves)", choices=(0.0, 0.99, 0.999, 0.9999),
                      group="Training", label="weight average (EMA)")
    sampler: str = knob("ancestral", "ancestral: DDPM's stochastic steps; ddim: the same without noise; euler, heun: "
                        "the probability-flow ODE; langevin: annealed Langevin dynamics", choices=SAMPLERS,
                        group="Sampling")
    nfe: int = knob(100, "network evaluations per sample (NFE)", lo=1, hi=1000, group="Sampling", label="NFE")
    guidance: float = knob(1.0, "classifier-free guidance scale: 0 unconditional, 1 conditional, more sharpens",
                           lo=0.0, hi=10.0, step=0.5, group="Sampling", label="guidance scale",
                           show=lambda c: c.conditional)
    langevin_steps: int = knob(2, "Langevin steps at each noise level", lo=1, hi=20, group="Sampling",
                               label="Langevin steps per level", show=lambda c: c.sampler == "langevin")
    langevin_step: float = knob(0.5, "Langevin step size r: x <- x + r σ² score + sqrt(2r) σ z", lo=0.01, hi=2.0,
                                log=True, group="Sampling", label="Langevin step r",
                                show=lambda c: c.sampler == "langevin")


SAMPLING = ("sampler", "nfe", "guidance", "langevin_steps", "langevin_step")


@dataclass
class Sampling:
    """How samples are drawn (runtime: changing it never restarts training)."""

    sampler: str = "ancestral"
    nfe: int = 100
    guidance: float = 1.0
    langevin_steps: int = 2
    langevin_step: float = 0.5


def training_config(c: DiffusionConfig) -> DiffusionConfig:
    """The config with its sampling knobs at their defaults: what identifies a run's training."""
    d = DiffusionConfig()
    return dataclasses.replace(c, **{k: getattr(d, k) for k in SAMPLING})


def sampling_of(c: DiffusionConfig) -> dict:
    return {k: getattr(c, k) for k in SAMPLING}


def split(c: DiffusionConfig) -> tuple[DiffusionConfig, dict]:
    """What trains, and how it is sampled (``Experiment.split``)."""
    return training_config(c), sampling_of(c)


def lr_factor(step: int, halflife: int) -> float:
    return max(0.5 ** (step / halflife), 0.05) if halflife else 1.0


class DiffusionTrainer(Trainer):
    """Trains the denoising network of ``config.model`` on ``config.data``."""

    Runtime = Sampling
    eval_every = 500  # a 500-step link (the bench's steps to the mode targets) ends on an evaluation
    slow_eval = True  # samples by the reverse SDE and the ODE, and the exact score's error: about a second

    def build(self):
        c = self.config
        if c.model not in MODELS:
            raise ValueError(f"unknown model {c.model!r}; choose one of {', '.join(MODELS)}")
        self.runtime = Sampling(**sampling_of(c))
        dev = self.device
        self.images = c.data == DIGITS
        ge = self.eval_generator(5)
        if self.images:
            d = digits()
            self.train_x = (d.train.x01 * 2 - 1).to(dev)  # (1197, 64) in [-1, 1]
            self.heldout = (d.test.x01 * 2 - 1).to(dev)
            self.data = None
        else:
            self.data = dgm.core.data.get(c.data)
            self.heldout = self.data.sample(EVAL_SAMPLES, self.eval_generator(), device=dev)  # (N, 2)
        self.dim = self.heldout.shape[1]
        self.mixture = NoisedMixture.of(self.data) if not self.images and is_mixture(c.data) else None
        self.n_classes = self.mixture.k if (c.conditional and self.mixture is not None) else 0
        ref = self.train_x if self.images else self.data.sample(1000, ge, device=dev)
        diameter = float(torch.pdist(ref[:1000].double()).max())
        self.schedule = make_schedule(c.model, c.schedule, c.T, c.levels, c.sigma_min, max(diameter, 2 * c.sigma_min))
        x_scale = float(ref.std(0).pow(2).mean().sqrt())  # the data's standard deviation per coordinate
        self.net = Net(self.dim, c.width, c.depth, self.n_classes, c.fourier, x_scale).to(dev)
        self.net_avg = copy.deepcopy(self.net).requires_grad_(False) if c.ema > 0 else None
        self.opt = torch.optim.Adam(self.net.parameters(), lr=c.lr, fused=True)
        self.lr_sched = torch.optim.lr_scheduler.LambdaLR(self.opt, functools.partial(lr_factor, halflife=c.halflife))
        self._params = list(self.net.parameters())
        self._mmd = None if self.images else MMD(self.heldout)
        self.exact = ExactDenoiser(self.mixture, self.schedule) if self.mixture is not None else None
        self.entropy = None if self.images or not self.data.has_density else self.data.entropy
        self._floors: dict[str, float] | None = None
        self.pairs: tuple[Tensor, ...] | None = None  # the reflow round's (x0, x1[, y]) once drawn
        self.reflowed = False
        self._pool: tuple[Tensor, ...] | None = None
        self._i = POOL

    # -- batches: drawn POOL steps at a time, from self.gen -----------------------------------------
    def _draw(self) -> tuple[Tensor, ...]:
        c, n, dev, g = self.config, POOL * self.config.batch, self.device, self.gen
        if self.pairs is not None:  # after the reflow round: the first flow's pairs
            idx = torch.randint(0, self.pairs[0].shape[0], (n,), generator=g, device=dev)
            x0, x1 = self.pairs[0][idx], self.pairs[1][idx]
            y = self.pairs[2][idx] if self.n_classes else None
        else:
            if self.images:
                x0, y = self.train_x[torch.randint(0, self.train_x.shape[0], (n,), generator=g, device=dev)], None
            elif self.n_classes:
                x0, y = sample_labelled(self.data, n, g)
            else:
                x0, y = self.data.sample(n, g), None
            x1 = torch.randn(n, self.dim, generator=g, device=dev)
        if self.schedule.levels is None:
            t = torch.rand(n, generator=g, device=dev)
        else:
            t = self.schedule.levels.to(dev)[torch.randint(0, len(self.schedule.levels), (n,), generator=g, device=dev)]
        if self.n_classes:
            drop = torch.rand(n, generator=g, device=dev) < c.p_uncond
            y = torch.where(drop, torch.full_like(y, self.n_classes), y)
        tt = t.double()  # x_t = a x0 + s x1, the coefficients computed once per pool
        a, s = self.schedule.alpha(tt).float()[:, None], self.schedule.sigma(tt).float()[:, None]
        parts = [x0, x1, t.float(), a, s] + ([y] if self.n_classes else [])
        return tuple(p.reshape(POOL, c.batch, *p.shape[1:]) for p in parts)

    def _batch(self) -> tuple[Tensor, ...]:
        if self._i >= POOL:
            self._pool, self._i = self._draw(), 0
        out = tuple(p[self._i] for p in self._pool)
        self._i += 1
        return out

    def extra_state(self):
        return {"pool": (self._pool, self._i), "pairs": self.pairs, "reflowed": self.reflowed}

    def load_extra_state(self, extra):
        (self._pool, self._i), self.pairs, self.reflowed = extra["pool"], extra["pairs"], extra["reflowed"]

    def derived_state(self):
        return {"reflowed": self.reflowed}

    def load_derived_state(self, d):
        self.reflowed = d["reflowed"]

    # -- one step ------------------------------------------------------------------------------------
    # -- one step: its random inputs (``draw``) and the loss they give (``step_loss``), apart, so that
    # dgm.families.diffusion.seeds runs the same loss on many seeds' weights at once --------------------
    def reflow_due(self, step: int) -> bool:
        c = self.config
        return c.model == "flow" and bool(c.reflow_at) and step >= c.reflow_at and not self.reflowed

    def draw(self) -> tuple[Tensor, ...]:
        """The step's batch from ``self.gen``: (x0, x1, t, a, s[, y]), x_t = a x0 + s x1 (x1 the noise; with the
        OT coupling before a reflow, x1 permuted to the minibatch's optimal pairing)."""
        x0, x1, *rest = self._batch()
        if self.config.model == "flow" and self.config.coupling == "ot" and self.pairs is None:
            x1 = x1[ot_pairing(x0, x1)]
        return (x0, x1, *rest)

    def step_loss(self, net: Net, batch: tuple[Tensor, ...], step: int) -> dict[str, Tensor]:
        """The denoising (or velocity) loss of ``net`` on a drawn batch (a pure function of them)."""
        x0, x1, t, a, s, *y = batch
        target = x1 - x0 if self.config.model == "flow" else x1  # the velocity, or the noise
        return {"loss": (net(a * x0 + s * x1, t, y[0] if y else None) - target).pow(2).sum(1).mean()}

    def train_step(self) -> dict[str, Tensor]:
        if self.reflow_due(self.iteration):
            self._reflow()
        loss = self.step_loss(self.net, self.draw(), self.iteration)["loss"]
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.lr_sched.step()
        self.average(self.net_avg, self._params, self.iteration)
        return {"loss": loss.detach()}

    def average(self, avg: torch.nn.Module | None, params: list[Tensor], step: int) -> None:
        """The EMA of the weights (``config.ema``), after the update of ``step``: its rate ramps up from 0.1."""
        if avg is not None:
            beta = min(self.config.ema, (1 + step) / (10 + step))
            with torch.no_grad():
                torch._foreach_lerp_(list(avg.parameters()), params, 1 - beta)

    @torch.no_grad()
    def _reflow(self) -> None:
        """One reflow round: pairs (ODE sample, its noise) from the current flow become the training pairs."""
        x1 = torch.randn(REFLOW_PAIRS, self.dim, generator=self.gen, device=self.device)
        y = None
        if self.n_classes:
            y = torch.multinomial(self.data.weights.to(self.device), REFLOW_PAIRS, replacement=True, generator=self.gen)
        x0, _, _ = sample(guided(self.denoiser(), y, 1.0, self.n_classes), self.schedule, "heun", REFLOW_NFE,
                          REFLOW_PAIRS, self.dim, self.gen, x1=x1)
        self.pairs = (x0, x1) + ((y,) if y is not None else ())
        self.reflowed, self._i = True, POOL  # the next batch comes from the pairs

    # -- sampling and evaluation -----------------------------------------------------------------------
    @property
    def sampler_net(self) -> torch.nn.Module:
        return self.net if self.net_avg is None else self.net_avg

    def denoiser(self) -> Denoised:
        return Denoised(self.sampler_net, self.schedule, "velocity" if self.config.model == "flow" else "eps",
                        clip=(-1.0, 1.0) if self.images else None)

    def labels(self, n: int, generator: torch.Generator) -> Tensor | None:
        """Class labels for n conditional samples, drawn with the mixture's weights (None: unconditional)."""
        if not self.n_classes:
            return None
        return torch.multinomial(self.data.weights.to(self.device), n, replacement=True, generator=generator)

    @torch.no_grad()
    def generate(self, n: int, generator: torch.Generator | None = None, *, exact: bool = False, keep: int = 0,
                 **override) -> tuple[Tensor, int, list[Tensor]]:
        """n samples with the runtime's sampling settings (``override`` changes some): (samples, NFE, paths
        of the first ``keep``). ``exact``: with the closed-form denoiser instead of the network."""
        r = dataclasses.replace(self.runtime, **override)
        g = generator or self.eval_generator(2)
        y = self.labels(n, g)
        den = self.exact if exact else self.denoiser()
        f = guided(den, y, r.guidance if y is not None else 1.0, self.n_classes if not exact else self.mixture.k)
        return sample(f, self.schedule, r.sampler, r.nfe, n, self.dim, g, langevin_steps=r.langevin_steps,
                      langevin_step=r.langevin_step, keep=keep)

    @torch.no_grad()
    def score_error(self, n: int = 1000) -> float:
        """E_t E_{x ~ p_t} sigma_t^2 |s_theta(x, t) - grad log p_t(x)|^2 over SCORE_TIMES (the model's levels
        nearest to them): the denoising loss above its floor, in units of eps (unconditional model)."""
        g, den, total = self.eval_generator(4), self.denoiser(), 0.0
        times = self.schedule.snap(torch.tensor(SCORE_TIMES, dtype=torch.float64))
        null = torch.full((n,), self.n_classes, dtype=torch.long, device=self.device) if self.n_classes else None
        for t in times.tolist():
            a, s = self.schedule.at(t)
            x = a * self.heldout[:n] + s * torch.randn(n, self.dim, generator=g, device=self.device)
            eps, _ = den(x, t, null)
            eps_true, _ = self.exact(x, t)
            total += float((eps - eps_true).pow(2).sum(1).mean())
        return total / len(times)

    def nll(self, n: int = NLL_POINTS, steps: int = NLL_STEPS) -> float:
        """Held-out NLL (nats) of the probability-flow ODE's density, on n points with ``steps`` Heun steps."""
        null = self.n_classes or None
        den = self.denoiser()
        f = (lambda x, t: den(x, t, torch.full((x.shape[0],), null, dtype=torch.long, device=x.device))) if null \
            else (lambda x, t: den(x, t))
        return float(-log_likelihood(f, self.schedule, self.heldout[:n], steps).mean())

    @torch.no_grad()
    def test_loss(self) -> float:
        """The denoising loss on held-out data at fixed times and noise (the digits' measure of fit)."""
        g, n = self.eval_generator(6), self.heldout.shape[0]
        x0 = self.heldout
        lv = self.schedule.levels
        t = torch.rand(n, generator=g, device=self.device) if lv is None else \
            lv.to(self.device)[torch.randint(0, len(lv), (n,), generator=g, device=self.device)].float()
        x1 = torch.randn(x0.shape, generator=g, device=self.device)
        if self.config.model == "flow":
            xt, target = (1 - t[:, None]) * x0 + t[:, None] * x1, x1 - x0
        else:
            xt, target = noised(self.schedule, x0, t, x1), x1
        y = torch.full((n,), self.n_classes, dtype=torch.long, device=self.device) if self.n_classes else None
        return float((self.sampler_net(xt, t, y) - target).pow(2).sum(1).mean())

    @property
    def floors(self) -> dict[str, float]:
        """MMD² and W1 of true samples of p in place of the model's: what a perfect model gets (once per run)."""
        if self._floors is None:
            x = self.data.sample(EVAL_SAMPLES, self.eval_generator(11), device=self.device)
            self._floors = {"mmd_floor": self._mmd.mmd2(x),
                            "w1_floor": wasserstein1(x[:W1_SAMPLES], self.heldout[:W1_SAMPLES])}
        return self._floors

    def evaluate(self) -> dict[str, float]:
        """Mode metrics on 2,500 samples, MMD² (with its standard error) against 2,500 held-out points, W1 by
        exact optimal transport on the first 1,000 of each, with their floors; the score error and the NLL
        where the data is a Gaussian mixture (has a density); for the digits the held-out denoising loss, and
        how far 300 samples lie from the training digits against the test digits (dgm.core.quality)."""
        x, nfe, _ = self.generate(EVAL_SAMPLES if not self.images else DIGITS_EVAL_SAMPLES)
        out: dict[str, float] = {"nfe": float(nfe)}
        if self.images:
            out["test_loss"] = self.test_loss()
            out["nearest"] = quality.nearest_digit_ratio((x + 1) / 2)  # pixels in [-1, 1] -> [0, 1]
            return out
        if self.data.centers is not None and self.data.std is not None:
            out.update(mode_stats(x, self.data.centers, self.data.std))
        finite = x[torch.isfinite(x).all(1)]
        if finite.shape[0] > 1:
            out["mmd"], out["mmd_se"] = self._mmd.mmd2_se(finite)
        else:
            out["mmd"] = float("nan")
        out["w1"] = wasserstein1(x[:W1_SAMPLES], self.heldout[:W1_SAMPLES])
        out.update(self.floors)
        if self.mixture is not None:
            out["score_error"] = self.score_error()
        if self.data.has_density:
            out["nll"] = self.nll()
        return out
