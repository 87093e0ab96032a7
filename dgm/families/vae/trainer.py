"""The VAE page's config and trainer: ELBO or IWAE training on the digits or 2D data, held-out figures
from the best validation checkpoint, and the analysis panels (IWAE(k), ELBO surgery, unit activity).

Held-out figures (``evaluate``) come from the best validation checkpoint, so they cannot get worse with
longer training; the curves show the current model on train and validation data, so overfitting is
visible.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

import dgm.core.data
import dgm.core.digits
from dgm.core.config import knob
from dgm.core.train import Trainer
from dgm.families.vae.model import (
    INK, IWAE_CURVE_K, VAE, binarise, elbo_parts, elbo_surgery, gaussian_kl, heldout_metrics, iwae_curve, log_mean_exp,
    shift, unit_activity,
)

DIGITS = "digits"
BINARISED = "binarised_digits"  # the digits with pixels 1 where the grey level is at least INK (8), else 0
DATA_CHOICES = (DIGITS, BINARISED, *dgm.core.data.names("sampled"), "custom")
DECODERS = ("categorical17", "gaussian")  # for the grey-level digits; the binarised ones get a Bernoulli
PRIORS = ("standard", "mog", "vamp")

IWAE_LIVE_K = 10  # importance samples for the held-out IWAE bound during training (cheap)
IWAE_FINAL_K = 100  # ... and in final() (the reported figure)
HELDOUT_2D = 1000  # validation / test points for 2D data


def _is_digits(c) -> bool:
    return c.data in (DIGITS, BINARISED)


def _is_gaussian(c) -> bool:
    return not _is_digits(c) or (c.data == DIGITS and c.decoder == "gaussian")


def data_label(c) -> str:
    """What the likelihoods are of: 'digits', 'binarised digits' (a different data set) or a 2D set."""
    return {DIGITS: "digits", BINARISED: f"binarised digits (pixel = 1 where grey level ≥ {INK})"}.get(c.data, c.data)


def per_example(c) -> str:
    """The unit of every likelihood figure."""
    return {DIGITS: "nats per image", BINARISED: "nats per binarised image"}.get(c.data, "nats per point")


@dataclass
class VAEConfig:
    data: str = knob(DIGITS, "data: the 8x8 digits (17 grey levels), the binarised digits (pixel 1 where the grey "
                     f"level is at least {INK}: a different data set, with a Bernoulli decoder) or a 2D distribution",
                     choices=DATA_CHOICES, group="Data")
    train_size: int = knob(1197, "how many training digits to use (fewer overfit sooner)", label="training digits",
                           choices=(100, 200, 500, 1000, 1197), group="Data", show=_is_digits)
    latent: int = knob(2, "latent dimension (2 shows the manifold directly)", label="latent dimension",
                       lo=1, hi=16, group="Model")
    decoder: str = knob("categorical17", "decoder likelihood p(x|z) for the grey-level digits (the binarised "
                        "digits always have a Bernoulli decoder)", label="decoder",
                        choices=DECODERS, group="Model", show=lambda c: c.data == DIGITS)
    learn_var: bool = knob(True, "Gaussian decoder: learn a per-pixel variance (else it is fixed)",
                           label="learned decoder variance", group="Model", show=_is_gaussian)
    sigma: float = knob(0.1, "Gaussian decoder: the fixed standard deviation", label="fixed decoder std",
                        choices=(0.02, 0.05, 0.1, 0.2, 0.5, 1.0), group="Model",
                        show=lambda c: _is_gaussian(c) and not c.learn_var)
    prior: str = knob("standard", "prior p(z): N(0, I), a learned mixture of Gaussians, or a VampPrior",
                      choices=PRIORS, group="Model")
    components: int = knob(10, "components of the learned prior", label="prior components",
                           choices=(2, 5, 10, 20, 50), group="Model", show=lambda c: c.prior != "standard")
    width: int = knob(256, "hidden units per layer (encoder and decoder: 2 hidden layers each)",
                      choices=(32, 64, 128, 256, 512), group="Model")
    objective: str = knob("elbo", "training objective: the ELBO or the importance-weighted bound",
                          choices=("elbo", "iwae"), group="Objective")
    k: int = knob(5, "importance samples per data point for the IWAE objective", label="IWAE samples k",
                  choices=(1, 2, 5, 10, 20, 50), group="Objective", show=lambda c: c.objective == "iwae")
    beta: float = knob(1.0, "weight of the KL term (beta-VAE); 1 is the ELBO", label="β (KL weight)",
                       choices=(0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0), group="Objective",
                       show=lambda c: c.objective == "elbo")
    warmup: int = knob(0, "KL warm-up: the KL weight grows linearly from 0 to β over this many steps (0: off)",
                       label="KL warm-up steps", choices=(0, 500, 1000, 2000, 5000, 10000), group="Objective",
                       show=lambda c: c.objective == "elbo")
    free_bits: float = knob(0.0, "free bits: nats per latent dimension that the KL is not penalised below",
                            label="free bits (nats/dim)", choices=(0.0, 0.1, 0.25, 0.5, 1.0, 2.0),
                            group="Objective", show=lambda c: c.objective == "elbo")
    lr: float = knob(1e-3, "Adam learning rate", label="learning rate", lo=1e-5, hi=1e-1, log=True, group="Training")
    batch: int = knob(64, "data points per step", label="batch size", choices=(16, 32, 64, 128, 256, 512),
                      group="Training")


class VAETrainer(Trainer):
    eval_every = 200

    def build(self):
        c = self.config
        self.images = _is_digits(c)
        if self.images:
            d = dgm.core.digits.digits()
            pix = binarise if c.data == BINARISED else (lambda x: x)
            self.train_x = pix(d.train.x[: c.train_size]).to(self.device)  # (N, 64) levels (or 0/1 pixels)
            self.val_x = pix(d.val.x).to(self.device)
            self.test_x, self.test_y = pix(d.test.x).to(self.device), d.test.y.to(self.device)
            self.dist = None
        else:
            self.dist = dgm.core.data.get(c.data)
            self.train_x = self.dist.sample(HELDOUT_2D, self.eval_generator(11), device=self.device)  # for train_elbo
            self.val_x = self.dist.sample(HELDOUT_2D, self.eval_generator(12), device=self.device)
            self.test_x = self.dist.sample(HELDOUT_2D, self.eval_generator(13), device=self.device)
            self.test_y = None
        d_in = self.train_x.shape[1]
        pseudo = None
        if c.prior == "vamp":
            # pseudo-inputs start at random training points (build runs under a fixed seed)
            idx = torch.randperm(self.train_x.shape[0])[: c.components].to(self.device)
            pseudo = self.train_x[idx]
        decoder = "bernoulli" if c.data == BINARISED else c.decoder
        self.model = VAE(d_in, c.latent, c.width, decoder, c.learn_var, c.sigma, c.prior, c.components,
                         images=self.images, pseudo_init=pseudo).to(self.device)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=c.lr)
        # the best validation checkpoint (a module, so restore_last_good and reset keep it consistent)
        self.best_model = copy.deepcopy(self.model)
        self.best_model.register_buffer("best_val", torch.tensor(-math.inf, device=self.device))
        self.best_model.register_buffer("best_step", torch.tensor(0, device=self.device))
        self._test_cache: dict[tuple, dict[str, float]] = {}
        self.analysis: dict[str, Any] = {}
        n_fixed = min(300, self.train_x.shape[0])
        self.train_probe = self.train_x[:n_fixed]  # a fixed slice of the training data, for train_elbo

    # -- training --------------------------------------------------------------------------------
    def _batch(self) -> Tensor:
        if self.dist is not None:
            return self.dist.sample(self.config.batch, self.gen)
        idx = torch.randint(0, self.train_x.shape[0], (self.config.batch,), generator=self.gen, device=self.device)
        return self.train_x[idx]

    def kl_weight(self, step: int) -> float:
        c = self.config
        if c.warmup > 0:
            return c.beta * min(1.0, step / c.warmup)
        return c.beta

    # -- one step: its random inputs (``draw``) and the loss they give (``step_loss``), apart, so that
    # dgm.families.vae.seeds runs the same loss on many seeds' weights at once --------------------------
    def draw(self) -> tuple[Tensor, ...]:
        """The step's random inputs, from ``self.gen`` in the order the step uses them: the batch x (B, d), what
        the likelihood scores of it (the decoder's target; dequantised with noise for the Gaussian digits) and
        the reparameterisation noise eps, (B, D) for the ELBO or (k, B, D) for the IWAE bound."""
        c, m = self.config, self.model
        x = self._batch()  # (B, d)
        target = m.target(x, self.gen)
        shape = (x.shape[0], c.latent) if c.objective == "elbo" else (c.k, x.shape[0], c.latent)
        return x, target, torch.randn(shape, generator=self.gen, device=x.device, dtype=x.dtype)

    def step_loss(self, m: VAE, batch: tuple[Tensor, ...], step: int) -> dict[str, Tensor]:
        """The negative bound of model ``m`` on a drawn batch at ``step`` (a pure function of them), and the
        batch's bound and its parts."""
        c = self.config
        x, target, eps = batch
        if c.objective == "iwae":
            lw = m.log_weights_at(x, target, eps)  # (k, B)
            bound = log_mean_exp(lw, 0).mean()
            return {"loss": -bound, "batch_iwae": bound.detach(), "batch_elbo": lw.mean().detach()}
        mu, logvar = m.encode(x)
        z = shift(mu, logvar, eps)  # (B, D)
        recon = m.log_lik(target, m.decode(z))  # (B,)
        if m.prior_kind == "standard":
            kl_d = gaussian_kl(mu, logvar)  # (B, D)
            kl = kl_d.sum(-1)
            penalty = kl_d.mean(0).clamp(min=c.free_bits).sum() if c.free_bits > 0 else kl.mean()
        else:
            kl = m.kl_terms(z, mu, logvar)
            penalty = kl.mean().clamp(min=c.free_bits * c.latent) if c.free_bits > 0 else kl.mean()
        loss = -(recon.mean() - self.kl_weight(step + 1) * penalty)
        return {"loss": loss, "batch_elbo": (recon - kl).mean().detach(), "batch_recon": recon.mean().detach(),
                "batch_kl": kl.mean().detach()}

    def train_step(self):
        out = self.step_loss(self.model, self.draw(), self.iteration)
        self.opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        self.opt.step()
        out["loss"] = out["loss"].detach()
        return out

    # -- evaluation ------------------------------------------------------------------------------
    def _test_metrics(self, k: int) -> dict[str, float]:
        """Held-out (test) figures of the best checkpoint, cached per checkpoint and k."""
        key = (int(self.best_model.best_step), float(self.best_model.best_val), k)
        if key not in self._test_cache:
            self._test_cache = {key: heldout_metrics(self.best_model, self.test_x, self.eval_generator(3), k)}
        return dict(self._test_cache[key])

    def evaluate(self) -> dict[str, float]:
        m = self.model
        val = elbo_parts(m, self.val_x, self.eval_generator(1), samples=2)
        train = elbo_parts(m, self.train_probe, self.eval_generator(2), samples=2)
        val_elbo = float(val["elbo"].mean())
        # the checkpoint follows the model during the KL warm-up (another objective), then keeps the best
        eligible = self.iteration >= (self.config.warmup if self.config.objective == "elbo" else 0)
        if not eligible or val_elbo > float(self.best_model.best_val):
            self.best_model.load_state_dict({**m.state_dict(),
                                             "best_val": torch.tensor(val_elbo if eligible else -math.inf),
                                             "best_step": torch.tensor(self.iteration)})
        test = self._test_metrics(IWAE_LIVE_K)
        self.analysis = self.analyse()
        best_val = float(self.best_model.best_val)
        return {
            "train_elbo": float(train["elbo"].mean()), "val_elbo": val_elbo,
            "val_recon": float(val["recon"].mean()), "val_kl": float(val["kl"].mean()),
            **test, "iwae_k": IWAE_LIVE_K, "best_step": int(self.best_model.best_step),
            **({"best_val_elbo": best_val} if math.isfinite(best_val) else {}),
            "mi": self.analysis["surgery"]["mi"], "marginal_kl": self.analysis["surgery"]["marginal_kl"],
        }

    def on_restore(self) -> None:
        self.analysis, self._test_cache = {}, {}  # derived from the model: recomputed on demand

    def derived_state(self):
        return {"analysis": self.analysis, "test_cache": self._test_cache}

    def load_derived_state(self, d) -> None:
        self.analysis, self._test_cache = d["analysis"], d["test_cache"]

    @torch.no_grad()
    def analyse(self) -> dict[str, Any]:
        """The analysis panels of the CURRENT model, on the test set: IWAE(k), ELBO surgery, KL and
        activity per dimension."""
        m, gen = self.model, self.eval_generator(4)
        tp = elbo_parts(m, self.test_x, gen, samples=1)
        return {
            "step": self.iteration,
            "iwae_curve": iwae_curve(m, self.test_x[:100], IWAE_CURVE_K, gen),
            "surgery": elbo_surgery(m, tp["mu"], tp["logvar"], gen),
            "activity": unit_activity(tp["mu"]).cpu().numpy(),
            "kl_dim": gaussian_kl(tp["mu"], tp["logvar"]).mean(0).cpu().numpy(),
        }

    def final(self) -> dict[str, float]:
        """All latest metrics; the held-out iwae here uses k = IWAE_FINAL_K importance samples."""
        super().final()
        with torch.no_grad():
            self.latest_eval.update(self._test_metrics(IWAE_FINAL_K), iwae_k=IWAE_FINAL_K)
        return {**self.latest, **self.latest_eval}


def samples(trainer: VAETrainer, n: int) -> np.ndarray:
    """n model samples: points (n, 2) for 2D data (z ~ prior, x ~ p(x|z)); for the digits, the
    decoded means (n, 64), intensities in [0, 1]."""
    m = trainer.model
    with torch.no_grad():
        gen = trainer.eval_generator(7)
        zs = m.sample_prior(n, gen)
        out = m.decode(zs)
        if not trainer.images:
            mean, log_std = m.gaussian_params(out)
            eps = torch.randn(mean.shape, generator=gen, device=mean.device)
            return (mean + torch.exp(log_std) * eps).cpu().numpy()
        return m.mean(out).cpu().numpy()
