"""The latents page's config and trainers, one per model: the density network (digits or 2D data), the
Gumbel-softmax VAE and the VQ-VAE (digits). ``make_trainer`` picks the trainer from ``config.model``.

Every likelihood is in nats per image (the digits: a categorical over the 17 grey levels per pixel) or
nats per point (2D), on the test split.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

import dgm.core.data
import dgm.core.digits
from dgm.core.config import knob
from dgm.core.train import Trainer
from dgm.families.latents.model import (
    Codebook, CodePrior, Decoder, Encoder, categorical_kl_uniform, perplexity, quantise, estimator_stats, exact_gradient, gumbel, gumbel_softmax, iwae_bound,
    iwae_log_weights, mc_estimates, mc_log_marginal, relaxed_grads, score_function_grads,
)
from dgm.core.nets import mlp

DENSITY, GUMBEL, VQ = "density_net", "gumbel", "vqvae"
MODELS = (DENSITY, GUMBEL, VQ)
DIGITS = "digits"
DATA_CHOICES = (DIGITS, *dgm.core.data.names("sampled"))
MC_KS = (1, 10, 100, 1000)  # the K of the reported Monte Carlo estimates
MC_REPEATS = 5  # independent estimates per K: their spread is the estimate's noise
IWAE_K = 100  # the encoder's importance-weighted bound
TEST_2D = 300  # test points for 2D data
ESTIMATOR_TAUS = (0.1, 0.5, 1.0)  # the temperatures of the gradient estimator table
ESTIMATOR_SAMPLES = 400  # gradient estimates per estimator and temperature
ESTIMATOR_IMAGES = 32  # test digits the gradient is taken at
EMA_DECAY = 0.99  # VQ-VAE: the moving averages of the codebook and of code usage
RESTART_EVERY = 20  # VQ-VAE: steps between checks for dead codes
DEAD_USAGE = 0.03  # ... a code is dead when fewer encoder outputs than this pick it per step, on average


def _density(c) -> bool:
    return c.model == DENSITY


def per_example(c) -> str:
    return "nats per image" if c.data == DIGITS or c.model != DENSITY else "nats per point"


@dataclass
class LatentsConfig:
    model: str = knob(DENSITY, "the model: a density network (a decoder and a prior, no encoder), a VAE "
                      "with categorical latents relaxed by Gumbel-softmax, or a VQ-VAE (a codebook)",
                      choices=MODELS, group="Model")
    data: str = knob(DIGITS, "data: the 8x8 digits (17 grey levels per pixel) or a 2D distribution",
                     choices=DATA_CHOICES, group="Data", show=_density)
    latent: int = knob(2, "dimension of z (the Monte Carlo estimate degrades fast as it grows)",
                       label="latent dimension", lo=1, hi=8, group="Model", show=_density)
    k: int = knob(100, "samples z_k ~ p(z) per data point in the training estimate log (1/K) Σ p(x|z_k)",
                  label="K (samples of z per x)", choices=(1, 10, 100, 1000), group="Model", show=_density)
    fit: str = knob("prior", "how the decoder is trained: by the Monte Carlo estimate with z from the prior "
                    "(the density network), or by the ELBO with an encoder (a VAE)", label="train the decoder with",
                    choices=("prior", "encoder"), group="Model", show=_density)
    noise: float = knob(0.0, "2D data: the decoder's noise σ, the same on both axes: learned as a function of z "
                        "(0), or fixed", label="decoder noise σ (0: learned)", choices=(0.0, 0.05, 0.1, 0.2),
                        group="Data", show=lambda c: c.model == DENSITY and c.data != DIGITS)  # (after the data)
    groups: int = knob(8, "categorical latent variables per image", label="categorical variables",
                       choices=(1, 2, 4, 8, 16), group="Model", show=lambda c: c.model == GUMBEL)
    categories: int = knob(10, "categories of each latent variable", choices=(2, 4, 8, 10, 16), group="Model",
                           show=lambda c: c.model == GUMBEL)
    tau: float = knob(1.0, "starting temperature τ of the Gumbel-softmax (small: close to one-hot, noisy gradients)",
                      label="temperature τ", choices=(0.1, 0.2, 0.5, 1.0, 2.0, 5.0), group="Model",
                      show=lambda c: c.model == GUMBEL)
    anneal: float = knob(0.0, "annealing: τ_t = max(τ_min, τ exp(-rate · t)) (0: a fixed τ)", label="annealing rate",
                         choices=(0.0, 1e-4, 3e-4, 1e-3, 3e-3), group="Model", show=lambda c: c.model == GUMBEL)
    tau_min: float = knob(0.5, "the temperature annealing stops at", label="τ_min", choices=(0.05, 0.1, 0.2, 0.5, 1.0),
                          group="Model", show=lambda c: c.model == GUMBEL and c.anneal > 0)
    hard: bool = knob(False, "straight-through: one-hot samples forward, the relaxed sample's gradient backward",
                      label="hard samples (straight-through)", group="Model", show=lambda c: c.model == GUMBEL)
    codes: int = knob(64, "VQ-VAE: vectors in the codebook", label="codebook size", choices=(8, 16, 32, 64, 128, 256),
                      group="Model", show=lambda c: c.model == VQ)
    code_dim: int = knob(8, "VQ-VAE: dimension of each code vector", label="code dimension", choices=(2, 4, 8, 16, 32),
                         group="Model", show=lambda c: c.model == VQ)
    positions: int = knob(4, "VQ-VAE: codes per image (the encoder outputs this many vectors)", label="codes per image",
                          choices=(1, 2, 4, 8, 16), group="Model", show=lambda c: c.model == VQ)
    beta: float = knob(0.25, "VQ-VAE: weight of the commitment loss ‖z_e − sg(e)‖²", label="β (commitment)",
                       choices=(0.05, 0.1, 0.25, 0.5, 1.0, 2.0), group="Model", show=lambda c: c.model == VQ)
    update: str = knob("loss", "VQ-VAE: codebook updated by the loss ‖sg(z_e) − e‖² or by moving averages (EMA)",
                       label="codebook update", choices=("loss", "ema"), group="Model", show=lambda c: c.model == VQ)
    restarts: bool = knob(False, "VQ-VAE: move dead codes onto random encoder outputs", label="dead-code restarts",
                          group="Model", show=lambda c: c.model == VQ)
    width: int = knob(128, "hidden units per layer (2 hidden layers)", choices=(32, 64, 128, 256), group="Model")
    lr: float = knob(1e-3, "Adam learning rate", label="learning rate", lo=1e-5, hi=1e-1, log=True, group="Training")
    batch: int = knob(64, "data points per step", label="batch size", choices=(16, 32, 64, 128, 256),
                      group="Training")


class _Base(Trainer):
    """The data: the digits' fixed split (train, test) or samples of a 2D distribution."""

    slow_eval = True  # log p(x) by 1 to 1,000 prior samples and IWAE on the test set: 0.3 s, ten steps 0.06 s

    def load_data(self, name: str) -> None:
        self.images = name == DIGITS
        if self.images:
            d = dgm.core.digits.digits()
            self.train_x, self.test_x = d.train.x.to(self.device), d.test.x.to(self.device)
            self.test_y = d.test.y.to(self.device)
            self.dist = None
        else:
            self.dist = dgm.core.data.get(name)
            self.train_x = None
            self.test_x = self.dist.sample(TEST_2D, self.eval_generator(13), device=self.device)
            self.test_y = None

    def batch(self) -> Tensor:
        if self.dist is not None:
            return self.dist.sample(self.config.batch, self.gen)
        idx = torch.randint(0, self.train_x.shape[0], (self.config.batch,), generator=self.gen, device=self.device)
        return self.train_x[idx]


class DensityNetTrainer(_Base):
    """A decoder p(x|z) with p(z) = N(0, I), trained by the Monte Carlo estimate (fit = prior) or as a
    VAE by the ELBO (fit = encoder). In the first case an encoder is still fitted, alongside, to the
    current decoder (the decoder does not see its gradients), so that IWAE(k = 100) can measure the
    same decoder."""

    eval_every = 100

    def build(self):
        c = self.config
        self.load_data(c.data)
        d_in = self.test_x.shape[1]
        self.decoder = Decoder(d_in, c.latent, c.width, self.images, sigma=c.noise).to(self.device)
        self.encoder = Encoder(d_in, c.latent, c.width, self.images).to(self.device)
        if c.fit == "prior":
            self.opt = torch.optim.Adam(self.decoder.parameters(), lr=c.lr)
            self.opt_enc = torch.optim.Adam(self.encoder.parameters(), lr=c.lr)
        else:
            self.opt = torch.optim.Adam([*self.decoder.parameters(), *self.encoder.parameters()], lr=c.lr)

    def train_step(self):
        c = self.config
        x = self.batch()
        if c.fit == "prior":
            est = mc_log_marginal(self.decoder, x, c.k, self.gen).mean()
            self.opt.zero_grad(set_to_none=True)
            (-est).backward()
            self.opt.step()
            elbo = iwae_log_weights(self.encoder, self.decoder, x, 1, self.gen).mean()
            self.opt_enc.zero_grad(set_to_none=True)
            (-elbo).backward(inputs=list(self.encoder.parameters()))  # the decoder stays as it is
            self.opt_enc.step()
            return {"loss": -est.detach(), "batch_mc": est.detach(), "batch_elbo": elbo.detach()}
        elbo = iwae_log_weights(self.encoder, self.decoder, x, 1, self.gen).mean()
        self.opt.zero_grad(set_to_none=True)
        (-elbo).backward()
        self.opt.step()
        return {"loss": -elbo.detach(), "batch_elbo": elbo.detach()}

    def evaluate(self) -> dict[str, float]:
        return self.measure(MC_KS, MC_REPEATS)

    @torch.no_grad()
    def measure(self, ks, repeats: int) -> dict[str, float]:
        """On the test split: for each K the mean of the estimates log p̂_K(x) and their spread (the
        per-example standard deviation over ``repeats`` independent estimates, averaged over the
        examples); the encoder's IWAE(k = 100) and ELBO of the same decoder."""
        est = mc_estimates(self.decoder, self.test_x, ks, repeats, self.eval_generator(1))
        out: dict[str, float] = {}
        for k, e in est.items():
            out[f"mc_{k}"] = float(e.mean())
            out[f"sd_{k}"] = float(e.std(0).mean()) if repeats > 1 else float("nan")
        gen = self.eval_generator(2)
        out["iwae"] = float(iwae_bound(self.encoder, self.decoder, self.test_x, IWAE_K, gen).mean())
        out["elbo"] = float(iwae_log_weights(self.encoder, self.decoder, self.test_x, 1, gen).mean())
        out["iwae_k"] = IWAE_K
        return out


class GumbelTrainer(_Base):
    """A VAE on the digits with ``groups`` categorical latents of ``categories`` classes each, a uniform
    prior, and relaxed (or straight-through) Gumbel-softmax samples. The test figures are of the discrete
    model: one-hot samples of q(y|x), the exact KL to the uniform prior."""

    eval_every = 200

    def build(self):
        c = self.config
        self.load_data(DIGITS)
        self.encoder = mlp(64, c.groups * c.categories, c.width, depth=2).to(self.device)
        self.decoder = Decoder(64, c.groups * c.categories, c.width, images=True).to(self.device)
        self.opt = torch.optim.Adam([*self.encoder.parameters(), *self.decoder.parameters()], lr=c.lr)
        self.estimators: tuple[int, list[dict[str, Any]]] | None = None  # the latest table, on request

    def measure_estimators(self) -> None:
        """The estimator table of the current model (seconds), kept with its step for the page and its lessons."""
        self.estimators = (self.iteration, self.estimator_table())

    def derived_state(self):
        return {"estimators": self.estimators}

    def load_derived_state(self, d) -> None:
        """The later of the two measurements: a worker's state can come back with one older than the page's."""
        theirs = d.get("estimators")
        if theirs is not None and (self.estimators is None or theirs[0] >= self.estimators[0]):
            self.estimators = theirs

    def logits(self, x: Tensor) -> Tensor:
        """q(y|x): (B, 64) levels -> (B, groups, categories) logits."""
        return self.encoder(x / 16.0).unflatten(-1, (self.config.groups, self.config.categories))

    def temperature(self, step: int | None = None) -> float:
        c = self.config
        t = self.iteration if step is None else step
        return max(c.tau_min, c.tau * float(np.exp(-c.anneal * t))) if c.anneal > 0 else c.tau

    def train_step(self):
        x = self.batch()
        logits = self.logits(x)
        tau = self.temperature()
        y = gumbel_softmax(logits, tau, gumbel(logits.shape, self.gen, self.device), self.config.hard)
        recon = self.decoder.log_lik(x, y.flatten(1))
        kl = categorical_kl_uniform(logits)
        loss = -(recon - kl).mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return {"loss": loss.detach(), "batch_recon": recon.mean().detach(), "batch_kl": kl.mean().detach(),
                "tau": torch.tensor(tau, device=self.device)}

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        x, gen = self.test_x, self.eval_generator(1)
        logits = self.logits(x)
        y = gumbel_softmax(logits.expand(4, *logits.shape), 1.0, gumbel((4, *logits.shape), gen, self.device), True)
        recon = self.decoder.log_lik(x, y.flatten(-2)).mean(0)
        kl = categorical_kl_uniform(logits)
        return {"elbo": float((recon - kl).mean()), "recon": float(recon.mean()), "kl": float(kl.mean())}

    def f(self, x: Tensor, logits: Tensor):
        """The function whose expectation the estimators differentiate: y (S, B, C) of the first latent
        variable -> log p(x|y, the others at their most likely class) (S, B)."""
        rest = F.one_hot(logits[:, 1:].argmax(-1), logits.shape[-1]).to(x.dtype).flatten(1)  # (B, (N-1) C)

        def f(y: Tensor) -> Tensor:
            return self.decoder.log_lik(x, torch.cat([y, rest.expand(*y.shape[:-1], -1)], -1))
        return f

    def estimator_table(self, taus=ESTIMATOR_TAUS, samples: int = ESTIMATOR_SAMPLES) -> list[dict[str, Any]]:
        """Bias and variance of the gradient estimators of ∇_θ E_q f(y) for the first latent variable at
        ``ESTIMATOR_IMAGES`` test digits, against the exact gradient by enumerating its categories."""
        x = self.test_x[:ESTIMATOR_IMAGES]
        with torch.no_grad():
            logits = self.logits(x)
        theta, f = logits[:, 0], self.f(x, logits)
        eye = torch.eye(theta.shape[-1], device=self.device)
        with torch.no_grad():
            table = f(eye[:, None].expand(-1, x.shape[0], -1)).T  # (B, C): f at each category
            base = f(torch.softmax(theta, -1)[None])[0]  # f at the mean of y: independent of the sample
        exact = exact_gradient(theta, table)
        gen = self.eval_generator(9)
        rows = [{"estimator": "score function + baseline", "tau": None,
                 **estimator_stats(score_function_grads(theta, f, base, samples, gen), exact)}]
        for tau in taus:
            for name, hard in (("Gumbel-softmax", False), ("straight-through", True)):
                rows.append({"estimator": name, "tau": tau,
                             **estimator_stats(relaxed_grads(theta, f, tau, hard, samples, gen), exact)})
        for r in rows:
            r["exact_norm2"] = float(exact.pow(2).sum(-1).mean())
        return rows

    def final(self) -> dict[str, float]:
        """All latest metrics and the estimator table, flattened: grad_<sf|gs|st>[_tau]_<bias2|variance|floor>
        (sf: score function + baseline; gs: Gumbel-softmax; st: straight-through)."""
        super().final()
        short = {"score function + baseline": "sf", "Gumbel-softmax": "gs", "straight-through": "st"}
        for r in self.estimator_table():
            name = short[r["estimator"]] + ("" if r["tau"] is None else f"_{r['tau']:g}")
            self.latest_eval.update({f"grad_{name}_{k}": r[k] for k in ("bias2", "variance", "floor")})
        return {**self.latest, **self.latest_eval}


class VQTrainer(_Base):
    """A VQ-VAE on the digits: the encoder's ``positions`` vectors are each replaced by the nearest of
    ``codes`` codebook vectors; the decoder (a categorical over 17 levels per pixel) gets the gradient
    straight through the quantiser. Loss per image: -log p(x|z_q) + ‖sg(z_e) − e‖² (unless EMA)
    + β ‖z_e − sg(e)‖². An autoregressive prior over the codes is fitted alongside to the codes the
    encoder gives (its loss does not reach the encoder)."""

    eval_every = 200

    def build(self):
        c = self.config
        self.load_data(DIGITS)
        self.encoder = mlp(64, c.positions * c.code_dim, c.width, depth=2).to(self.device)
        self.codebook = Codebook(c.codes, c.code_dim).to(self.device)
        self.decoder = Decoder(64, c.positions * c.code_dim, c.width, images=True).to(self.device)
        self.prior = CodePrior(c.positions, c.codes, c.width).to(self.device)
        params = [*self.encoder.parameters(), *self.decoder.parameters()]
        self.opt = torch.optim.Adam(params + ([self.codebook.weight] if c.update == "loss" else []), lr=c.lr)
        self.opt_prior = torch.optim.Adam(self.prior.parameters(), lr=c.lr)

    def encode(self, x: Tensor) -> Tensor:
        """z_e: (B, 64) levels -> (B, positions, code_dim)."""
        return self.encoder(x / 16.0).unflatten(-1, (self.config.positions, self.config.code_dim))

    def train_step(self):
        c, cb = self.config, self.codebook
        x = self.batch()
        ze = self.encode(x)
        zq, idx, e = quantise(ze, cb.weight)
        recon = self.decoder.log_lik(x, zq.flatten(1))
        commit = (ze - e.detach()).pow(2).sum((-2, -1))
        loss = -recon.mean() + c.beta * commit.mean()
        if c.update == "loss":
            loss = loss + (ze.detach() - e).pow(2).sum((-2, -1)).mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        counts = cb.track(idx, EMA_DECAY)
        if c.update == "ema":
            cb.ema_update(ze.detach(), idx, counts, EMA_DECAY)
        if c.restarts and (self.iteration + 1) % RESTART_EVERY == 0:
            cb.restart(ze.detach(), DEAD_USAGE, self.gen)
        prior_nll = -self.prior.log_prob(idx).mean()  # the prior learns the codes the encoder gives now
        self.opt_prior.zero_grad(set_to_none=True)
        prior_nll.backward()
        self.opt_prior.step()
        return {"loss": loss.detach(), "batch_recon": recon.mean().detach(), "commit": commit.mean().detach(),
                "batch_perplexity": perplexity(counts), "batch_prior_nll": prior_nll.detach()}

    @torch.no_grad()
    def codes(self, x: Tensor) -> tuple[Tensor, Tensor]:
        ze = self.encode(x)
        return ze, quantise(ze, self.codebook.weight)[1]

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        x = self.test_x
        ze, idx = self.codes(x)
        zq = self.codebook.weight[idx]
        counts = torch.bincount(idx.reshape(-1), minlength=self.config.codes).float()
        recon = self.decoder.log_lik(x, zq.flatten(1))
        mse = (self.decoder.mean(zq.flatten(1)) - x / 16.0).pow(2).mean()
        return {"recon": float(recon.mean()), "mse": float(mse), "perplexity": float(perplexity(counts)),
                "used": float((counts > 0).float().mean()), "prior_nll": float(-self.prior.log_prob(idx).mean()),
                "uniform_nll": self.config.positions * float(np.log(self.config.codes))}


def make_trainer(config: LatentsConfig, seed: int = 0, device: str = "auto") -> Trainer:
    """The trainer of ``config.model``."""
    return {DENSITY: DensityNetTrainer, GUMBEL: GumbelTrainer, VQ: VQTrainer}[config.model](config, seed=seed,
                                                                                        device=device)


def samples(trainer: Trainer, n: int) -> np.ndarray:
    """n model samples: 2D points x ~ p(x|z), z ~ p(z) (density network on 2D data); decoded means of
    the digits (n, 64) in [0, 1] otherwise (z, or codes, from the prior: the VQ-VAE's autoregressive one)."""
    gen = trainer.eval_generator(7)
    with torch.no_grad():
        if isinstance(trainer, DensityNetTrainer):
            z = torch.randn(n, trainer.config.latent, generator=gen, device=trainer.device)
            if trainer.images:
                return trainer.decoder.mean(z).cpu().numpy()
            m, log_std = trainer.decoder.gaussian(z)
            return (m + torch.exp(log_std) * torch.randn(m.shape, generator=gen, device=m.device)).cpu().numpy()
        c = trainer.config
        if isinstance(trainer, VQTrainer):
            idx = trainer.prior.sample(n, gen)
            return trainer.decoder.mean(trainer.codebook.weight[idx].flatten(1)).cpu().numpy()
        idx = torch.randint(0, c.categories, (n, c.groups), generator=gen, device=trainer.device)
        return trainer.decoder.mean(F.one_hot(idx, c.categories).float().flatten(1)).cpu().numpy()


def k_curve(trainer: DensityNetTrainer) -> dict[str, Any]:
    """The latest evaluation's estimates against K, with the encoder's IWAE, for the K figure."""
    e = trainer.latest_eval
    if not e:
        return {}
    return {"ks": [k for k in MC_KS if f"mc_{k}" in e], "mean": [e[f"mc_{k}"] for k in MC_KS if f"mc_{k}" in e],
            "sd": [e[f"sd_{k}"] for k in MC_KS if f"sd_{k}" in e], "iwae": e["iwae"], "elbo": e["elbo"],
            "step": int(trainer.history.evals[-1]["step"]) if trainer.history.evals else trainer.iteration}

