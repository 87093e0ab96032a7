"""Variational autoencoders: the ELBO, the IWAE bound, beta, warm-up, free bits, learned priors.

    from dgm.families.vae.lessons import EXPERIMENT
    from dgm.families.vae.trainer import VAEConfig
    t = EXPERIMENT.make(VAEConfig(latent=2), seed=0)
    t.step(2000)
    t.final()        # held-out elbo, iwae, recon, kl, active_units (nats per image)

Model: an MLP encoder q(z|x) = N(mu(x), diag sigma^2(x)) and an MLP decoder p(x|z) with one of
three likelihoods for the 8x8 digits (grey levels 0..16):

- ``categorical17``: a categorical over the 17 grey levels of each pixel, an exact discrete
  likelihood (nats per image are a true log-probability);
- ``bernoulli``: a Bernoulli "probability of ink" per pixel, for the *binarised* digits only (pixels 0 or 1,
  ``binarise``): an exact likelihood of a different data set, in nats per binarised image, not comparable
  with the grey-level figures;
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

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

import dgm.core.digits
from dgm.core.nets import mlp

LEVELS = dgm.core.digits.DIGIT_LEVELS  # 17 grey levels
INK = 8  # binarised digits: a pixel is 1 (ink) when its grey level is at least INK (half of 16), else 0
LOG2PI = math.log(2 * math.pi)
ACTIVE_THRESHOLD = 0.01  # a unit is active if Cov_x(E_q[z_d]) exceeds this
IWAE_CURVE_K = (1, 2, 5, 10, 20, 50)  # the IWAE(k) curve of the current model, nested samples


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
    return shift(mu, logvar, eps)


def shift(mu: Tensor, logvar: Tensor, eps: Tensor) -> Tensor:
    """z = mu + sigma * eps for given standard-normal draws eps (broadcast: (B, D) or (n, B, D))."""
    return mu + torch.exp(0.5 * logvar) * eps


def binarise(x: Tensor) -> Tensor:
    """Grey levels 0..16 -> binarised pixels: 1.0 where the level is at least INK, else 0.0."""
    return (x >= INK).to(x.dtype)


# ---- the model ------------------------------------------------------------------------------------

class VAE(nn.Module):
    """Encoder, decoder and prior. ``x`` is always the raw data: grey levels 0..16 (B, 64) for the
    digits, binary pixels 0/1 (B, 64) for the binarised digits (the Bernoulli decoder), points (B, 2) for
    2D data. ``target(x)`` turns it into what the likelihood scores."""

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
    @property
    def binary(self) -> bool:
        return self.images and self.decoder_kind == "bernoulli"

    def encoder_input(self, x: Tensor) -> Tensor:
        """Pixel intensities in [0, 1] (grey levels / 16; binary pixels as they are), or 2D points."""
        return x / 16.0 if self.images and not self.binary else x

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """q(z|x): (B, d_in) -> mu (B, D), logvar (B, D)."""
        h = self.encoder(self.encoder_input(x))
        mu, logvar = h.chunk(2, -1)
        return mu, logvar

    def encode_pseudo(self) -> tuple[Tensor, Tensor]:
        """The VampPrior's components: the posteriors at the pseudo-inputs (levels scale)."""
        h = self.encoder(self.encoder_input(self.pseudo))
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
        """What the likelihood scores: levels (categorical), the binary pixels (Bernoulli), dequantised
        (x+u)/17 (Gaussian on digits; u ~ U(0,1) from ``gen``, 0.5 without one), or x itself (2D)."""
        if not self.images:
            return x
        if self.decoder_kind == "categorical17":
            return x.round().clamp(0, LEVELS - 1).long()
        if self.decoder_kind == "bernoulli":
            if bool(((x != 0) & (x != 1)).any()):
                raise ValueError("the Bernoulli decoder scores binary pixels: binarise the digits first (binarise)")
            return x
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
        return self._log_weights(target, z, mu, logvar)

    def log_weights_at(self, x: Tensor, target: Tensor, eps: Tensor) -> Tensor:
        """``log_weights`` at given standard-normal draws eps (k, B, D) (drawn by the caller)."""
        mu, logvar = self.encode(x)
        return self._log_weights(target, shift(mu, logvar, eps), mu, logvar)

    def _log_weights(self, target: Tensor, z: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
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
    information estimate is at most log N (it cannot tell apart more than N data points).
    ``marginal_kl_standard``: KL(q(z) || N(0, I)) from the same draws, what the marginal KL would be under
    the standard prior (equal to ``marginal_kl`` for it; a learned prior shows how much closer it sits)."""
    n = mu.shape[0]
    z = reparameterize(mu, logvar, samples, gen)  # (S, N, D)
    log_q_own = diag_normal_log_prob(z, mu, logvar)  # (S, N)
    logw = torch.full((n,), -math.log(n), device=mu.device)
    log_q_agg = mixture_log_prob(z, mu, logvar, logw)  # (S, N)
    log_p = model.prior_log_prob(z)
    log_std = diag_normal_log_prob(z, torch.zeros_like(mu[:1]), torch.zeros_like(logvar[:1]))  # N(0, I)
    if model.prior_kind == "standard":
        avg_kl = float(gaussian_kl(mu, logvar).sum(-1).mean())
    else:
        avg_kl = float((log_q_own - log_p).mean())
    return {"kl_avg": avg_kl, "mi": float((log_q_own - log_q_agg).mean()),
            "marginal_kl": float((log_q_agg - log_p).mean()), "log_n": math.log(n),
            "marginal_kl_standard": float((log_q_agg - log_std).mean())}


def unit_activity(mu: Tensor) -> Tensor:
    """Cov_x(E_q[z_d]) per latent dimension: (N, D) -> (D,)."""
    return mu.var(0, unbiased=True) if mu.shape[0] > 1 else torch.zeros(mu.shape[1], device=mu.device)


@torch.no_grad()
def heldout_metrics(model: VAE, x: Tensor, gen: torch.Generator, k: int, samples: int = 4) -> dict[str, float]:
    """The reported held-out figures (nats per example): elbo, iwae (k samples), recon, kl,
    active_units; and elbo_se, iwae_se: the standard errors of the two Monte Carlo means, sd / sqrt(N) of the
    per-example estimates (their spread over the held-out examples and the draws of z together)."""
    parts = elbo_parts(model, x, gen, samples)
    act = unit_activity(parts["mu"])
    iw = iwae_bound(model, x, k, gen)
    se = lambda v: float(v.std() / math.sqrt(v.shape[0])) if v.shape[0] > 1 else float("nan")  # noqa: E731
    return {"elbo": float(parts["elbo"].mean()), "iwae": float(iw.mean()), "elbo_se": se(parts["elbo"]),
            "iwae_se": se(iw), "recon": float(parts["recon"].mean()), "kl": float(parts["kl"].mean()),
            "active_units": int((act > ACTIVE_THRESHOLD).sum())}


# ---- gradient estimators --------------------------------------------------------------------------

def gradient_variance(model: VAE, x: Tensor, gen: torch.Generator, repeats: int = 64) -> dict[str, dict[str, float]]:
    """Per estimator of ``gradient_estimates``: the total variance (the trace of the covariance, summed over
    parameters), the squared norm of the mean gradient, and their ratio (signal-to-noise)."""
    out = {}
    for name, gs in gradient_estimates(model, x, gen, repeats).items():
        G = gs.double()  # (repeats, P)
        var = float(G.var(0, unbiased=True).sum())
        m2 = float(G.mean(0).pow(2).sum())
        out[name] = {"variance": var, "mean_norm2": m2, "snr": m2 / var if var > 0 else math.inf}
    return out


def gradient_estimates(model: VAE, x: Tensor, gen: torch.Generator, repeats: int = 64) -> dict[str, Tensor]:
    """``repeats`` single-sample estimates of the gradient of the batch-mean ELBO with respect to
    the ENCODER's parameters, on the same model and batch, for three estimators:

    - ``reparameterisation``: differentiate log p(x | mu + sigma * eps) through z;
    - ``score function``: E_q[f(z) grad log q(z|x)] with f = log p(x|z) (REINFORCE);
    - ``score function + baseline``: (f(z) - b) grad log q with b = f(mu), f at the posterior mean
      z = mu(x) of the same data point (for the standard prior the reconstruction log p(x | mu)). b does not
      depend on the sample z, so E_q[b grad log q] = b E_q[grad log q] = 0: the estimator stays unbiased
      (tests/test_vae.py checks it against a baseline that does depend on the sample).

    With the standard prior the KL is exact (its gradient is the same for every estimator); with a
    learned prior log p(z) - log q(z|x) joins f. Returns, per estimator, the estimates (repeats, P)."""
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
            base = model.log_lik(target, model.decode(mu))  # f at z = mu: independent of the sample
            if not standard:
                base = base + model.prior_log_prob(mu) - diag_normal_log_prob(mu, mu, logvar)
        logq = diag_normal_log_prob(zs, mu, logvar)
        for name, weight in (("score function", fs), ("score function + baseline", fs - base)):
            g = torch.autograd.grad((weight * logq - kl).mean(), params, retain_graph=True)
            grads[name].append(torch.cat([t.reshape(-1) for t in g]))
    return {name: torch.stack(gs) for name, gs in grads.items()}


# ---- the trainer ----------------------------------------------------------------------------------
