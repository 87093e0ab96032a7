"""Variational autoencoders: the ELBO, the IWAE bound, beta, warm-up, free bits, learned priors.

    from dgm.vae import EXPERIMENT, VAEConfig
    t = EXPERIMENT.make(VAEConfig(latent=2), seed=0)
    t.step(2000)
    t.final()        # held-out elbo, iwae, recon, kl, active_units (nats per image)

Model: an MLP encoder q(z|x) = N(mu(x), diag sigma^2(x)) and an MLP decoder p(x|z) with one of
three likelihoods for the 8x8 digits (grey levels 0..16):

- ``categorical17``: a categorical over the 17 grey levels of each pixel, an exact discrete
  likelihood (nats per image are a true log-probability);
- ``bernoulli``: a Bernoulli "probability of ink" per pixel, scored on intensities x/16 in [0, 1]
  (the usual cross-entropy; for non-binary pixels this is not a normalised likelihood);
- ``gaussian``: a Gaussian density on dequantised pixels (x + u)/17, u ~ U(0, 1), with a learned
  (per-pixel, z-dependent) or a fixed variance. Adding -64 log 17 turns the density into a lower
  bound on the discrete log-probability of the grey levels, so its figures compare with the
  categorical decoder's.

On 2D data the decoder is a Gaussian on the plane (learned or fixed variance).
The prior p(z) is a standard Gaussian, a learned mixture of Gaussians, or a VampPrior (a mixture
of the encoder's posteriors at K learned pseudo-inputs); every prior is held as a diagonal
Gaussian mixture (means, log-variances, log-weights), which makes sampling, densities and their
2D marginals one piece of code.

Held-out figures (``evaluate``) come from the best validation checkpoint, so they cannot get worse
with longer training; the curves show the current model on train and validation data, so
overfitting is visible.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

import dgm.data
from dgm.config import knob
from dgm.experiments import Experiment
from dgm.nets import mlp
from dgm.train import Trainer

DIGITS = "digits"
DATA_CHOICES = (DIGITS, *dgm.data.names("sampled"), "custom")
DECODERS = ("categorical17", "bernoulli", "gaussian")
PRIORS = ("standard", "mog", "vamp")
LEVELS = dgm.data.DIGIT_LEVELS  # 17 grey levels
LOG2PI = math.log(2 * math.pi)

IWAE_LIVE_K = 10  # importance samples for the held-out IWAE bound during training (cheap)
IWAE_FINAL_K = 100  # ... and in final() (the reported figure)
IWAE_CURVE_K = (1, 2, 5, 10, 20, 50)  # the IWAE(k) curve of the current model, nested samples
ACTIVE_THRESHOLD = 0.01  # a unit is active if Cov_x(E_q[z_d]) exceeds this
HELDOUT_2D = 1000  # validation / test points for 2D data


def _is_digits(c) -> bool:
    return c.data == DIGITS


def _is_gaussian(c) -> bool:
    return not _is_digits(c) or c.decoder == "gaussian"


@dataclass
class VAEConfig:
    data: str = knob(DIGITS, "data: the 8x8 digits or a 2D distribution", choices=DATA_CHOICES, group="Data")
    train_size: int = knob(1197, "how many training digits to use (fewer overfit sooner)", label="training digits",
                           choices=(100, 200, 500, 1000, 1197), group="Data", show=_is_digits)
    latent: int = knob(2, "latent dimension (2 shows the manifold directly)", label="latent dimension",
                       lo=1, hi=16, group="Model")
    decoder: str = knob("categorical17", "decoder likelihood p(x|z) for the digits", label="decoder",
                        choices=DECODERS, group="Model", show=_is_digits)
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


# ---- maths ----------------------------------------------------------------------------------------

def gaussian_kl(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, diag e^logvar) || N(0, I)) per dimension, in closed form: (..., D) -> (..., D)."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)


def diag_normal_log_prob(z: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
    """log N(z; mu, diag e^logvar), summed over the last dimension (broadcasting)."""
    return -0.5 * ((z - mu).pow(2) * torch.exp(-logvar) + logvar + LOG2PI).sum(-1)


def mixture_log_prob(z: Tensor, means: Tensor, logvars: Tensor, logw: Tensor) -> Tensor:
    """log sum_k w_k N(z; m_k, diag v_k): z (..., D), means/logvars (K, D), logw (K,) -> (...)."""
    lp = diag_normal_log_prob(z.unsqueeze(-2), means, logvars)  # (..., K)
    return torch.logsumexp(lp + logw, -1)


def log_mean_exp(x: Tensor, dim: int = 0) -> Tensor:
    return torch.logsumexp(x, dim) - math.log(x.shape[dim])


def reparameterize(mu: Tensor, logvar: Tensor, n: int | None, gen: torch.Generator) -> Tensor:
    """z = mu + sigma * eps, eps ~ N(0, I) from ``gen``: (B, D) -> (B, D), or (n, B, D) with n."""
    shape = mu.shape if n is None else (n, *mu.shape)
    eps = torch.randn(shape, generator=gen, device=mu.device, dtype=mu.dtype)
    return mu + torch.exp(0.5 * logvar) * eps


# ---- the model ------------------------------------------------------------------------------------

class VAE(nn.Module):
    """Encoder, decoder and prior. ``x`` is always the raw data: grey levels 0..16 (B, 64) for the
    digits, points (B, 2) for 2D data. ``target(x)`` turns it into what the likelihood scores."""

    def __init__(self, d_in: int, latent: int, width: int = 256, decoder: str = "categorical17",
                 learn_var: bool = True, sigma: float = 0.1, prior: str = "standard", components: int = 10,
                 images: bool = True, pseudo_init: Tensor | None = None):
        super().__init__()
        self.d_in, self.latent, self.images = d_in, latent, images
        self.decoder_kind = decoder if images else "gaussian"
        self.learn_var, self.sigma = learn_var, sigma
        self.prior_kind, self.components = prior, components
        out = {"categorical17": d_in * LEVELS, "bernoulli": d_in}.get(self.decoder_kind, d_in * (2 if learn_var else 1))
        self.encoder = mlp(d_in, 2 * latent, width, depth=2)
        self.decoder = mlp(latent, out, width, depth=2)
        self.sigma_min = 0.005 if images else 0.01
        if prior == "mog":
            self.prior_means = nn.Parameter(torch.randn(components, latent))
            self.prior_logvars = nn.Parameter(torch.zeros(components, latent))
            self.prior_logits = nn.Parameter(torch.zeros(components))
        elif prior == "vamp":
            init = pseudo_init if pseudo_init is not None else torch.randn(components, d_in)
            self.pseudo = nn.Parameter(init.clone().float())

    # -- encoder ---------------------------------------------------------------------------------
    def encoder_input(self, x: Tensor) -> Tensor:
        return x / 16.0 if self.images else x

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """q(z|x): (B, d_in) -> mu (B, D), logvar (B, D)."""
        h = self.encoder(self.encoder_input(x))
        mu, logvar = h.chunk(2, -1)
        return mu, logvar

    def encode_pseudo(self) -> tuple[Tensor, Tensor]:
        """The VampPrior's components: the posteriors at the pseudo-inputs (levels scale)."""
        h = self.encoder(self.pseudo / 16.0 if self.images else self.pseudo)
        return h.chunk(2, -1)

    # -- prior -----------------------------------------------------------------------------------
    def prior_mixture(self) -> tuple[Tensor, Tensor, Tensor]:
        """The prior as a diagonal Gaussian mixture: means (K, D), logvars (K, D), log-weights (K,)."""
        if self.prior_kind == "mog":
            return self.prior_means, self.prior_logvars, torch.log_softmax(self.prior_logits, 0)
        if self.prior_kind == "vamp":
            m, lv = self.encode_pseudo()
            return m, lv, torch.full((m.shape[0],), -math.log(m.shape[0]), device=m.device)
        dev = next(self.parameters()).device
        zeros = torch.zeros(1, self.latent, device=dev)
        return zeros, zeros, torch.zeros(1, device=dev)

    def prior_log_prob(self, z: Tensor) -> Tensor:
        if self.prior_kind == "standard":
            return -0.5 * (z.pow(2) + LOG2PI).sum(-1)
        return mixture_log_prob(z, *self.prior_mixture())

    def sample_prior(self, n: int, gen: torch.Generator) -> Tensor:
        means, logvars, logw = self.prior_mixture()
        idx = torch.multinomial(logw.exp(), n, replacement=True, generator=gen)
        eps = torch.randn(n, self.latent, generator=gen, device=means.device)
        return means[idx] + torch.exp(0.5 * logvars[idx]) * eps

    # -- decoder ---------------------------------------------------------------------------------
    def target(self, x: Tensor, gen: torch.Generator | None = None) -> Tensor:
        """What the likelihood scores: levels (categorical), x/16 (Bernoulli), dequantised (x+u)/17
        (Gaussian on digits; u ~ U(0,1) from ``gen``, 0.5 without one), or x itself (2D)."""
        if not self.images:
            return x
        if self.decoder_kind == "categorical17":
            return x.round().clamp(0, LEVELS - 1).long()
        if self.decoder_kind == "bernoulli":
            return x / 16.0
        u = torch.rand(x.shape, generator=gen, device=x.device) if gen is not None else torch.full_like(x, 0.5)
        return (x + u) / LEVELS

    def decode(self, z: Tensor) -> Tensor:
        return self.decoder(z)

    def gaussian_params(self, out: Tensor) -> tuple[Tensor, Tensor]:
        """(mean, log std) of the Gaussian decoder."""
        if self.learn_var:
            m, s = out.chunk(2, -1)
            log_std = torch.log(self.sigma_min + F.softplus(s))
        else:
            m, log_std = out, torch.full_like(out, math.log(self.sigma))
        return (torch.sigmoid(m) if self.images else m), log_std

    def log_lik(self, target: Tensor, out: Tensor) -> Tensor:
        """log p(x|z) summed over pixels (nats): target (B, d) against decoder output (..., B, d_out)."""
        kind = self.decoder_kind
        if kind == "categorical17":
            logits = out.unflatten(-1, (self.d_in, LEVELS))
            idx = target.expand(logits.shape[:-1]).unsqueeze(-1)
            return torch.log_softmax(logits, -1).gather(-1, idx).squeeze(-1).sum(-1)
        if kind == "bernoulli":
            t = target.expand(out.shape)
            return -F.binary_cross_entropy_with_logits(out, t, reduction="none").sum(-1)
        mean, log_std = self.gaussian_params(out)
        lp = -0.5 * ((target - mean) * torch.exp(-log_std)).pow(2) - log_std - 0.5 * LOG2PI
        offset = -self.d_in * math.log(LEVELS) if self.images else 0.0  # density on [0,1] -> levels
        return lp.sum(-1) + offset

    def mean(self, out: Tensor) -> Tensor:
        """The decoder's mean: intensities in [0, 1] for digits, points for 2D data."""
        kind = self.decoder_kind
        if kind == "categorical17":
            p = torch.softmax(out.unflatten(-1, (self.d_in, LEVELS)), -1)
            levels = torch.arange(LEVELS, device=out.device, dtype=out.dtype)
            return (p * levels).sum(-1) / 16.0
        if kind == "bernoulli":
            return torch.sigmoid(out)
        m, _ = self.gaussian_params(out)
        return (m * LEVELS - 0.5).clamp(0, 16) / 16.0 if self.images else m

    # -- bounds ----------------------------------------------------------------------------------
    def kl_terms(self, z: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
        """KL(q(z|x) || p(z)) per data point: closed form for N(0, I), else the single-sample
        Monte-Carlo estimate log q(z|x) - log p(z) at the given z."""
        if self.prior_kind == "standard":
            return gaussian_kl(mu, logvar).sum(-1)
        return diag_normal_log_prob(z, mu, logvar) - self.prior_log_prob(z)

    def log_weights(self, x: Tensor, target: Tensor, k: int, gen: torch.Generator) -> Tensor:
        """Importance log-weights log p(x, z_i) - log q(z_i|x), z_i ~ q(z|x): (k, B)."""
        mu, logvar = self.encode(x)
        z = reparameterize(mu, logvar, k, gen)  # (k, B, D)
        return self.log_lik(target, self.decode(z)) + self.prior_log_prob(z) - diag_normal_log_prob(z, mu, logvar)


# ---- estimates on held-out data -----------------------------------------------------------------

@torch.no_grad()
def elbo_parts(model: VAE, x: Tensor, gen: torch.Generator, samples: int = 1) -> dict[str, Tensor]:
    """Per-example ELBO pieces (B,): recon = E_q log p(x|z), kl, elbo = recon - kl (Monte Carlo
    over ``samples`` draws of z; the KL is exact for the standard prior)."""
    mu, logvar = model.encode(x)
    target = model.target(x, gen)
    z = reparameterize(mu, logvar, samples, gen)  # (S, B, D)
    recon = model.log_lik(target, model.decode(z)).mean(0)
    kl = model.kl_terms(z, mu, logvar).mean(0)
    return {"recon": recon, "kl": kl, "elbo": recon - kl, "mu": mu, "logvar": logvar}


@torch.no_grad()
def iwae_bound(model: VAE, x: Tensor, k: int, gen: torch.Generator, chunk: int = 4096) -> Tensor:
    """IWAE(k) per example (B,): log (1/k) sum_i p(x, z_i) / q(z_i|x), batched to ``chunk`` decodes."""
    per = max(1, chunk // k)
    out = []
    for xb in x.split(per):
        lw = model.log_weights(xb, model.target(xb, gen), k, gen)
        out.append(log_mean_exp(lw, 0))
    return torch.cat(out)


@torch.no_grad()
def iwae_curve(model: VAE, x: Tensor, ks=IWAE_CURVE_K, gen: torch.Generator | None = None) -> dict[int, float]:
    """IWAE(k) for each k, from ONE set of max(ks) samples, nested (IWAE(k) uses the first k):
    the mean over the batch is a proper bound for each k, and the estimates share their noise."""
    lw = model.log_weights(x, model.target(x, gen), max(ks), gen)  # (K, B)
    return {k: float(log_mean_exp(lw[:k], 0).mean()) for k in ks}


@torch.no_grad()
def elbo_surgery(model: VAE, mu: Tensor, logvar: Tensor, gen: torch.Generator, samples: int = 4) -> dict[str, float]:
    """Average KL = KL(q(z) || p(z)) + I(x; z), with q(z) the aggregated posterior: the mixture of
    the N posteriors q(z|x_n) given. Monte Carlo over ``samples`` z per posterior. The mutual
    information estimate is at most log N (it cannot tell apart more than N data points)."""
    n = mu.shape[0]
    z = reparameterize(mu, logvar, samples, gen)  # (S, N, D)
    log_q_own = diag_normal_log_prob(z, mu, logvar)  # (S, N)
    logw = torch.full((n,), -math.log(n), device=mu.device)
    log_q_agg = mixture_log_prob(z, mu, logvar, logw)  # (S, N)
    log_p = model.prior_log_prob(z)
    if model.prior_kind == "standard":
        avg_kl = float(gaussian_kl(mu, logvar).sum(-1).mean())
    else:
        avg_kl = float((log_q_own - log_p).mean())
    return {"kl_avg": avg_kl, "mi": float((log_q_own - log_q_agg).mean()),
            "marginal_kl": float((log_q_agg - log_p).mean()), "log_n": math.log(n)}


def unit_activity(mu: Tensor) -> Tensor:
    """Cov_x(E_q[z_d]) per latent dimension: (N, D) -> (D,)."""
    return mu.var(0, unbiased=True) if mu.shape[0] > 1 else torch.zeros(mu.shape[1], device=mu.device)


@torch.no_grad()
def heldout_metrics(model: VAE, x: Tensor, gen: torch.Generator, k: int, samples: int = 4) -> dict[str, float]:
    """The reported held-out figures (nats per example): elbo, iwae (k samples), recon, kl,
    active_units."""
    parts = elbo_parts(model, x, gen, samples)
    act = unit_activity(parts["mu"])
    return {"elbo": float(parts["elbo"].mean()), "iwae": float(iwae_bound(model, x, k, gen).mean()),
            "recon": float(parts["recon"].mean()), "kl": float(parts["kl"].mean()),
            "active_units": int((act > ACTIVE_THRESHOLD).sum())}


# ---- gradient estimators --------------------------------------------------------------------------

def gradient_variance(model: VAE, x: Tensor, gen: torch.Generator, repeats: int = 64) -> dict[str, dict[str, float]]:
    """Variance of single-sample estimates of the gradient of the batch-mean ELBO with respect to
    the ENCODER's parameters, on the same model and batch, for three estimators:

    - ``reparameterisation``: differentiate log p(x | mu + sigma * eps) through z;
    - ``score function``: E_q[f(z) grad log q(z|x)] with f = log p(x|z) (REINFORCE);
    - ``score function + baseline``: f(z) - log p(x | mu) (the decoded posterior mean, which
      does not depend on the sample, so the estimator stays unbiased).

    With the standard prior the KL is exact (its gradient is the same for every estimator); with a
    learned prior log p(z) - log q(z|x) joins f. Returns, per estimator, the total variance (the
    trace of the covariance, summed over parameters), the squared norm of the mean gradient, and
    their ratio (signal-to-noise)."""
    params = [p for p in model.encoder.parameters() if p.requires_grad]
    target = model.target(x, gen)
    standard = model.prior_kind == "standard"
    grads: dict[str, list[Tensor]] = {"reparameterisation": [], "score function": [], "score function + baseline": []}
    for _ in range(repeats):
        eps = torch.randn(x.shape[0], model.latent, generator=gen, device=x.device)
        mu, logvar = model.encode(x)
        std = torch.exp(0.5 * logvar)
        kl = gaussian_kl(mu, logvar).sum(-1) if standard else 0.0
        # reparameterisation: the sample moves with the encoder's output
        z = mu + std * eps
        f = model.log_lik(target, model.decode(z))
        if not standard:
            f = f + model.prior_log_prob(z) - diag_normal_log_prob(z, mu, logvar)
        g = torch.autograd.grad((f - kl).mean(), params, retain_graph=True)
        grads["reparameterisation"].append(torch.cat([t.reshape(-1) for t in g]))
        # score function: the same sample, held fixed; the encoder enters through log q(z|x)
        zs = z.detach()
        with torch.no_grad():
            fs = model.log_lik(target, model.decode(zs))
            if not standard:
                fs = fs + model.prior_log_prob(zs) - diag_normal_log_prob(zs, mu, logvar)
            base = model.log_lik(target, model.decode(mu)) if standard else fs.mean()
        logq = diag_normal_log_prob(zs, mu, logvar)
        for name, weight in (("score function", fs), ("score function + baseline", fs - base)):
            g = torch.autograd.grad((weight * logq - kl).mean(), params, retain_graph=True)
            grads[name].append(torch.cat([t.reshape(-1) for t in g]))
    out = {}
    for name, gs in grads.items():
        G = torch.stack(gs).double()  # (repeats, P)
        var = float(G.var(0, unbiased=True).sum())
        m2 = float(G.mean(0).pow(2).sum())
        out[name] = {"variance": var, "mean_norm2": m2, "snr": m2 / var if var > 0 else math.inf}
    return out


# ---- the trainer ----------------------------------------------------------------------------------

class VAETrainer(Trainer):
    eval_every = 200

    def build(self):
        c = self.config
        self.images = _is_digits(c)
        if self.images:
            d = dgm.data.digits()
            self.train_x = d.train.x[: c.train_size].to(self.device)  # (N, 64) levels
            self.train_y = d.train.y[: c.train_size].to(self.device)
            self.val_x = d.val.x.to(self.device)
            self.test_x, self.test_y = d.test.x.to(self.device), d.test.y.to(self.device)
            self.dist = None
        else:
            self.dist = dgm.data.get(c.data)
            self.train_x = self.dist.sample(HELDOUT_2D, self.eval_generator(11), device=self.device)  # for train_elbo
            self.train_y = None
            self.val_x = self.dist.sample(HELDOUT_2D, self.eval_generator(12), device=self.device)
            self.test_x = self.dist.sample(HELDOUT_2D, self.eval_generator(13), device=self.device)
            self.test_y = None
        d_in = self.train_x.shape[1]
        pseudo = None
        if c.prior == "vamp":
            # pseudo-inputs start at random training points (build runs under a fixed seed)
            idx = torch.randperm(self.train_x.shape[0])[: c.components].to(self.device)
            pseudo = self.train_x[idx]
        self.model = VAE(d_in, c.latent, c.width, c.decoder, c.learn_var, c.sigma, c.prior, c.components,
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

    def train_step(self):
        c, m = self.config, self.model
        x = self._batch()  # (B, d)
        target = m.target(x, self.gen)
        if c.objective == "iwae":
            lw = m.log_weights(x, target, c.k, self.gen)  # (k, B)
            bound = log_mean_exp(lw, 0).mean()
            loss = -bound
            out = {"loss": loss, "batch_iwae": bound.detach(), "batch_elbo": lw.mean().detach()}
        else:
            mu, logvar = m.encode(x)
            z = reparameterize(mu, logvar, None, self.gen)  # (B, D)
            recon = m.log_lik(target, m.decode(z))  # (B,)
            if m.prior_kind == "standard":
                kl_d = gaussian_kl(mu, logvar)  # (B, D)
                kl = kl_d.sum(-1)
                penalty = kl_d.mean(0).clamp(min=c.free_bits).sum() if c.free_bits > 0 else kl.mean()
            else:
                kl = m.kl_terms(z, mu, logvar)
                penalty = kl.mean().clamp(min=c.free_bits * c.latent) if c.free_bits > 0 else kl.mean()
            w = self.kl_weight(self.iteration + 1)
            loss = -(recon.mean() - w * penalty)
            out = {"loss": loss, "batch_elbo": (recon - kl).mean().detach(), "batch_recon": recon.mean().detach(),
                   "batch_kl": kl.mean().detach()}
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        out["loss"] = loss.detach()
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
        self.analysis = self._analyse()
        best_val = float(self.best_model.best_val)
        return {
            "train_elbo": float(train["elbo"].mean()), "val_elbo": val_elbo,
            "val_recon": float(val["recon"].mean()), "val_kl": float(val["kl"].mean()),
            **test, "iwae_k": IWAE_LIVE_K, "best_step": int(self.best_model.best_step),
            **({"best_val_elbo": best_val} if math.isfinite(best_val) else {}),
            "mi": self.analysis["surgery"]["mi"], "marginal_kl": self.analysis["surgery"]["marginal_kl"],
        }

    def _restore(self, s, copy_=True) -> None:
        super()._restore(s, copy_)
        self.analysis, self._test_cache = {}, {}  # derived from the model: recomputed on demand

    def _derived(self):
        return {"analysis": self.analysis, "test_cache": self._test_cache}

    def _load_derived(self, d) -> None:
        self.analysis, self._test_cache = d["analysis"], d["test_cache"]

    @torch.no_grad()
    def _analyse(self) -> dict[str, Any]:
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

    # -- figures' data ---------------------------------------------------------------------------
    def top_dims(self) -> tuple[int, int]:
        """The two latent dimensions whose posterior means vary most over the test set."""
        if self.config.latent == 1:
            return (0, 0)
        with torch.no_grad():
            mu, _ = self.model.encode(self.test_x)
        order = torch.argsort(unit_activity(mu), descending=True).tolist()
        return tuple(sorted(order[:2]))

    def default_pair(self) -> tuple[int, int]:
        """Two test digits of different classes for the interpolation (the first 4 and first 0)."""
        if self.test_y is None:
            return (0, 1)
        y = self.test_y.tolist()
        return (y.index(4) if 4 in y else 0, y.index(0) if 0 in y else 1)

    @torch.no_grad()
    def snapshot(self, interp: tuple[int, int] | None = None, n_grid: int = 15) -> dict[str, Any]:
        m = self.model
        if not self.analysis and self.history.evals:  # e.g. after restore_last_good (a replay link)
            self.analysis = self._analyse()
        gen = self.eval_generator(5)
        D = self.config.latent
        mu, logvar = m.encode(self.test_x)
        dims = self.top_dims()
        # the manifold: decoded means over a grid of z spaced by the prior's quantiles (the inverse normal
        # CDF for N(0, I), as in Kingma & Welling; empirical quantiles of prior samples for a learned prior),
        # in the two most active dims; the other dims sit at the prior's centre
        if m.prior_kind == "standard":
            quantile = lambda d, p: torch.distributions.Normal(0.0, 1.0).icdf(p)  # noqa: E731
            centre = torch.zeros(D, device=self.device)
        else:
            pz = m.sample_prior(4000, self.eval_generator(8))
            quantile = lambda d, p: torch.quantile(pz[:, d], p)  # noqa: E731
            centre = pz.median(0).values
        q = torch.linspace(0.05, 0.95, n_grid, device=self.device)
        ticks, ticks_y = quantile(dims[0], q), quantile(dims[1], q)  # (n,) each
        if D == 1:
            zg = ticks[:, None]
        else:
            zg = centre.repeat(n_grid * n_grid, 1)
            zg[:, dims[0]] = ticks.repeat(n_grid)
            zg[:, dims[1]] = ticks_y.flip(0).repeat_interleave(n_grid)  # rows: z2 from the top
        manifold = m.mean(m.decode(zg))
        out: dict[str, Any] = {"dims": dims, "ticks": ticks.cpu().numpy(), "ticks_y": ticks_y.cpu().numpy(),
                               "latent": D,
                               "mu": mu.cpu().numpy(), "logvar": logvar.cpu().numpy(),
                               "labels": self.test_y.cpu().numpy() if self.test_y is not None else None,
                               "analysis": self.analysis, "images": self.images}
        prior = m.prior_mixture()
        out["prior"] = tuple(t.detach().cpu().numpy() for t in prior)
        zs = m.sample_prior(100 if self.images else 1000, gen)
        if self.images:
            out["manifold"] = manifold.reshape(-1, 8, 8).cpu().numpy()
            rx = self.test_x[:12]
            out["recon_in"] = (rx / 16.0).reshape(-1, 8, 8).cpu().numpy()
            out["recon_out"] = m.mean(m.decode(mu[:12])).reshape(-1, 8, 8).cpu().numpy()
            out["samples"] = m.mean(m.decode(zs)).reshape(-1, 8, 8).cpu().numpy()
            a, b = (int(i) % self.test_x.shape[0] for i in (interp or self.default_pair()))
            t = torch.linspace(0, 1, 10, device=self.device)[:, None]
            zi = (1 - t) * mu[a] + t * mu[b]
            out["interp"] = np.concatenate([(self.test_x[[a]] / 16.0).cpu().numpy(),
                                            m.mean(m.decode(zi)).cpu().numpy(),
                                            (self.test_x[[b]] / 16.0).cpu().numpy()]).reshape(-1, 8, 8)
            out["interp_labels"] = (int(self.test_y[a]), int(self.test_y[b]))
        else:
            # the decoder's mean map: lines of constant z mapped into the data plane
            pf = torch.linspace(0.01, 0.99, 60, device=self.device)
            lines = []
            step = max(1, n_grid // 9)
            for axis in ((0, 1) if D > 1 else (0,)):
                fine = quantile(dims[axis], pf)
                others = (ticks_y if axis == 0 else ticks)[::step] if D > 1 else centre[:1]
                for fixed in others:
                    z = centre.repeat(fine.shape[0], 1)
                    z[:, dims[axis]] = fine
                    if D > 1:
                        z[:, dims[1 - axis]] = fixed
                    lines.append((axis, m.mean(m.decode(z)).cpu().numpy()))
            out["mean_lines"] = lines
            mean, log_std = m.gaussian_params(m.decode(zs))
            xs = mean + torch.exp(log_std) * torch.randn(mean.shape, generator=gen, device=self.device)
            out["model_samples"] = xs.cpu().numpy()
            out["data"] = self.test_x.cpu().numpy()
            out["box"] = self.dist.box
        return out

    def gradient_panel(self, repeats: int = 64, batch: int = 64) -> dict[str, dict[str, float]]:
        """The gradient-estimator comparison on the current model and a fixed validation batch."""
        x = self.val_x[:batch]
        return gradient_variance(self.model, x, self.eval_generator(6), repeats)


# ---- experiment -----------------------------------------------------------------------------------

def figures(trainer: VAETrainer, interp: tuple[int, int] | None = None) -> dict:
    from dgm.viz import vae as vviz

    entropy = trainer.dist.entropy if trainer.dist is not None and trainer.dist.has_density else None
    return vviz.figures(trainer.snapshot(interp=interp), trainer.history.merged(), trainer.config, entropy)


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


_COLLAPSE = {"decoder": "gaussian", "learn_var": True, "latent": 8, "beta": 4.0, "lr": 0.005}

PRESETS = {
    "2D manifold of digits": {},
    "beta = 4: blurry but disentangled": {"beta": 4.0},
    "posterior collapse": dict(_COLLAPSE),
    "warm-up fixes it": {**_COLLAPSE, "warmup": 2000},
    "learned prior": {"prior": "vamp", "components": 20},
}

LESSONS = {
    "2D manifold of digits": "a 2D latent space: watch the grid of decoded digits organise itself",
    "beta = 4: blurry but disentangled": "a heavier KL: smoother, blurrier digits and a latent space closer to "
                                         "the prior",
    "posterior collapse": "a decoder that learns its own variance, with β = 4: the KL wins early, most latent "
                          "units switch off and stay off",
    "warm-up fixes it": "the same model with the KL weight ramped up over 2,000 steps: more units stay active "
                        "and the held-out ELBO is far better",
    "learned prior": "a VampPrior moves towards the aggregated posterior: the marginal KL shrinks",
}

EXPERIMENT = Experiment(
    name="vae",
    help="variational autoencoder on the 8x8 digits or 2D data: ELBO, IWAE, beta, learned priors",
    config=VAEConfig,
    trainer=VAETrainer,
    figures=figures,
    samples=samples,
    presets=PRESETS,
    lessons=LESSONS,
)
