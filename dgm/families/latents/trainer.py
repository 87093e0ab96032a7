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

import dgm.core.data
import dgm.core.digits
from dgm.core.config import knob
from dgm.core.train import Trainer
from dgm.families.latents.model import (
    Decoder, Encoder, iwae_bound, iwae_log_weights, mc_estimates, mc_log_marginal,
)

DENSITY = "density_net"
MODELS = (DENSITY,)
DIGITS = "digits"
DATA_CHOICES = (DIGITS, *dgm.core.data.names("sampled"))
MC_KS = (1, 10, 100, 1000)  # the K of the reported Monte Carlo estimates
MC_REPEATS = 5  # independent estimates per K: their spread is the estimate's noise
IWAE_K = 100  # the encoder's importance-weighted bound
TEST_2D = 300  # test points for 2D data


def _density(c) -> bool:
    return c.model == DENSITY


def per_example(c) -> str:
    return "nats per image" if c.data == DIGITS or c.model != DENSITY else "nats per point"


@dataclass
class LatentsConfig:
    model: str = knob(DENSITY, "the model: a density network (a decoder and a prior, no encoder)",
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
    width: int = knob(128, "hidden units per layer (2 hidden layers)", choices=(32, 64, 128, 256), group="Model")
    lr: float = knob(1e-3, "Adam learning rate", label="learning rate", lo=1e-5, hi=1e-1, log=True, group="Training")
    batch: int = knob(64, "data points per step", label="batch size", choices=(16, 32, 64, 128, 256),
                      group="Training")


class _Base(Trainer):
    """The data: the digits' fixed split (train, test) or samples of a 2D distribution."""

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

    eval_every = 200

    def build(self):
        c = self.config
        self.load_data(c.data)
        d_in = self.test_x.shape[1]
        self.decoder = Decoder(d_in, c.latent, c.width, self.images).to(self.device)
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


def make_trainer(config: LatentsConfig, seed: int = 0, device: str = "auto") -> Trainer:
    """The trainer of ``config.model``."""
    return {DENSITY: DensityNetTrainer}[config.model](config, seed=seed, device=device)


def samples(trainer: Trainer, n: int) -> np.ndarray | None:
    """n model samples: 2D points x ~ p(x|z), z ~ p(z) (density network on 2D data); decoded means of
    the digits (n, 64) in [0, 1] otherwise."""
    gen = trainer.eval_generator(7)
    with torch.no_grad():
        if isinstance(trainer, DensityNetTrainer):
            z = torch.randn(n, trainer.config.latent, generator=gen, device=trainer.device)
            if trainer.images:
                return trainer.decoder.mean(z).cpu().numpy()
            m, log_std = trainer.decoder.gaussian(z)
            return (m + torch.exp(log_std) * torch.randn(m.shape, generator=gen, device=m.device)).cpu().numpy()
    return None


def k_curve(trainer: DensityNetTrainer) -> dict[str, Any]:
    """The latest evaluation's estimates against K, with the encoder's IWAE, for the K figure."""
    e = trainer.latest_eval
    if not e:
        return {}
    return {"ks": [k for k in MC_KS if f"mc_{k}" in e], "mean": [e[f"mc_{k}"] for k in MC_KS if f"mc_{k}" in e],
            "sd": [e[f"sd_{k}"] for k in MC_KS if f"sd_{k}" in e], "iwae": e["iwae"], "elbo": e["elbo"],
            "step": int(trainer.history.evals[-1]["step"]) if trainer.history.evals else trainer.iteration}

