"""The maths of the latents family: the density network's Monte Carlo marginal likelihood and its
decoders, the Gumbel-softmax relaxation and the vector quantiser.

Density network: p(x) = ∫ p(x|z) p(z) dz with p(z) = N(0, I), estimated by
log p̂_K(x) = log (1/K) Σ_k p(x|z_k), z_k ~ p(z), in log-sum-exp form. The estimate of p(x) is unbiased;
its logarithm is biased low (Jensen), by less as K grows.

Digits: a categorical over the 17 grey levels per pixel (nats per image are a true log-probability);
2D data: a Gaussian on the plane with a z-dependent standard deviation.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

import dgm.core.digits
from dgm.core.nets import mlp

LEVELS = dgm.core.digits.DIGIT_LEVELS  # 17 grey levels
LOG2PI = math.log(2 * math.pi)
SIGMA_MIN = 0.02  # the 2D decoder's smallest standard deviation


def log_mean_exp(x: Tensor, dim: int = 0) -> Tensor:
    """log (1/n) Σ exp(x) along ``dim``, without overflow or underflow (log-sum-exp)."""
    return torch.logsumexp(x, dim) - math.log(x.shape[dim])


def diag_normal_log_prob(z: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
    """log N(z; mu, diag e^logvar), summed over the last dimension (broadcasting)."""
    return -0.5 * ((z - mu).pow(2) * torch.exp(-logvar) + logvar + LOG2PI).sum(-1)


def standard_normal_log_prob(z: Tensor) -> Tensor:
    return -0.5 * (z.pow(2) + LOG2PI).sum(-1)


# ---- decoders p(x|z) that score a batch of x against a batch of z at once --------------------------

class Decoder(nn.Module):
    """p(x|z) for the digits (``images``: categorical over 17 levels per pixel) or for 2D points
    (Gaussian, mean and log std from z). ``pair_log_lik(x, z)`` is the (K, B) matrix of log p(x_b|z_k).

    The 2D noise is isotropic, one σ for both coordinates: learned as a function of z, or fixed (``sigma`` >
    0), as in MacKay's density network. With a σ per axis the decoder can leave one axis to the noise (σ ≈ 2
    across the ring) and use z for the other only, and a one-dimensional z then never bends into a curve
    through the modes; a learned σ can still grow over the whole ring early on and keep z unused."""

    def __init__(self, d_in: int, latent: int, width: int, images: bool, sigma: float = 0.0):
        super().__init__()
        self.d_in, self.latent, self.images, self.sigma = d_in, latent, images, sigma
        self.net = mlp(latent, d_in * LEVELS if images else d_in + (sigma <= 0), width, depth=2)

    def log_probs(self, z: Tensor) -> Tensor:
        """Digits: per-pixel log-probabilities of each level (..., 64, 17)."""
        return torch.log_softmax(self.net(z).unflatten(-1, (self.d_in, LEVELS)), -1)

    def gaussian(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """2D: mean (..., 2) and log std (..., 2), the same for both coordinates."""
        out = self.net(z)
        m = out[..., :self.d_in]
        if self.sigma > 0:
            return m, torch.full_like(m, math.log(self.sigma))
        return m, torch.log(SIGMA_MIN + F.softplus(out[..., self.d_in:])).expand_as(m)

    def pair_log_lik(self, x: Tensor, z: Tensor) -> Tensor:
        """log p(x_b | z_k) for every pair: x (B, d) raw data (levels or points), z (K, D) -> (K, B).
        Digits: one matrix product of the (K, 64*17) log-probabilities with the one-hot levels of x."""
        if self.images:
            lp = self.log_probs(z).flatten(1)  # (K, 64*17)
            onehot = F.one_hot(x.round().clamp(0, LEVELS - 1).long(), LEVELS).flatten(1).to(lp.dtype)  # (B, 64*17)
            return lp @ onehot.T
        m, log_std = self.gaussian(z)  # (K, 2)
        d = (x.unsqueeze(0) - m.unsqueeze(1)) * torch.exp(-log_std).unsqueeze(1)  # (K, B, 2)
        return (-0.5 * d.pow(2) - log_std.unsqueeze(1) - 0.5 * LOG2PI).sum(-1)

    def log_lik(self, x: Tensor, z: Tensor) -> Tensor:
        """log p(x|z) for z (..., B, D) paired with x (B, d): -> (..., B)."""
        if self.images:
            idx = x.round().clamp(0, LEVELS - 1).long()
            lp = self.log_probs(z)
            return lp.gather(-1, idx.expand(lp.shape[:-1]).unsqueeze(-1)).squeeze(-1).sum(-1)
        m, log_std = self.gaussian(z)
        return (-0.5 * ((x - m) * torch.exp(-log_std)).pow(2) - log_std - 0.5 * LOG2PI).sum(-1)

    def mean(self, z: Tensor) -> Tensor:
        """The decoder's mean: intensities in [0, 1] (digits) or points (2D)."""
        if self.images:
            levels = torch.arange(LEVELS, device=z.device, dtype=z.dtype)
            return (self.log_probs(z).exp() * levels).sum(-1) / 16.0
        return self.gaussian(z)[0]


def mc_log_marginal(decoder: Decoder, x: Tensor, k: int, gen: torch.Generator) -> Tensor:
    """The density network's estimate log (1/K) Σ_k p(x_b|z_k), z_k ~ N(0, I) shared by the batch: (B,)."""
    z = torch.randn(k, decoder.latent, generator=gen, device=x.device)
    return log_mean_exp(decoder.pair_log_lik(x, z), 0)


@torch.no_grad()
def mc_estimates(decoder: Decoder, x: Tensor, ks, repeats: int, gen: torch.Generator) -> dict[int, Tensor]:
    """For each K: (repeats, B) independent estimates log p̂_K(x_b)."""
    return {k: torch.stack([mc_log_marginal(decoder, x, k, gen) for _ in range(repeats)]) for k in ks}


class Encoder(nn.Module):
    """q(z|x) = N(mu(x), diag e^logvar(x)); the input is scaled (levels / 16) for the digits."""

    def __init__(self, d_in: int, latent: int, width: int, images: bool):
        super().__init__()
        self.images = images
        self.net = mlp(d_in, 2 * latent, width, depth=2)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mu, logvar = self.net(x / 16.0 if self.images else x).chunk(2, -1)
        return mu, logvar.clamp(-12, 6)


def iwae_log_weights(encoder: Encoder, decoder: Decoder, x: Tensor, k: int, gen: torch.Generator) -> Tensor:
    """log p(x|z_i) + log p(z_i) - log q(z_i|x), z_i ~ q(z|x) reparameterised: (k, B)."""
    mu, logvar = encoder(x)
    z = mu + torch.exp(0.5 * logvar) * torch.randn((k, *mu.shape), generator=gen, device=x.device)
    return decoder.log_lik(x, z) + standard_normal_log_prob(z) - diag_normal_log_prob(z, mu, logvar)


@torch.no_grad()
def iwae_bound(encoder: Encoder, decoder: Decoder, x: Tensor, k: int, gen: torch.Generator, chunk: int = 50) -> Tensor:
    """IWAE(k) per example (B,), ``chunk`` examples at a time."""
    return torch.cat([log_mean_exp(iwae_log_weights(encoder, decoder, xb, k, gen), 0) for xb in x.split(chunk)])


# ---- Gumbel-softmax ---------------------------------------------------------------------------------

def gumbel(shape, gen: torch.Generator, device=None) -> Tensor:
    """Standard Gumbel noise -log(-log u), u ~ U(0, 1)."""
    u = torch.rand(shape, generator=gen, device=device).clamp(1e-10, 1 - 1e-10)
    return -torch.log(-torch.log(u))


def gumbel_softmax(logits: Tensor, tau: float, g: Tensor, hard: bool) -> Tensor:
    """The relaxed sample softmax((logits + g) / tau) over the last dimension; ``hard``: the one-hot
    argmax in the forward pass with the relaxed sample's gradient (straight-through)."""
    soft = torch.softmax((logits + g) / tau, -1)
    if not hard:
        return soft
    onehot = F.one_hot(soft.argmax(-1), soft.shape[-1]).to(soft.dtype)
    return onehot + soft - soft.detach()


def categorical_kl_uniform(logits: Tensor) -> Tensor:
    """KL(Cat(softmax(logits)) || uniform) summed over groups: (..., N, C) -> (...)."""
    logq = torch.log_softmax(logits, -1)
    return (logq.exp() * (logq + math.log(logits.shape[-1]))).sum((-2, -1))


# ---- vector quantisation -----------------------------------------------------------------------------

def nearest_code(ze: Tensor, codebook: Tensor) -> Tensor:
    """Index of the nearest codebook vector (squared Euclidean distance): ze (..., D), codebook (K, D) -> (...)."""
    flat = ze.reshape(-1, ze.shape[-1])
    d = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ codebook.T + codebook.pow(2).sum(1)
    return d.argmin(1).reshape(ze.shape[:-1])


def quantise(ze: Tensor, codebook: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(z_q with the straight-through gradient to ze, the codes' indices, the selected codes e).
    Forward: z_q = e; backward: dL/dze = dL/dz_q (the quantiser is skipped)."""
    idx = nearest_code(ze, codebook)
    e = codebook[idx]
    return ze + (e - ze).detach(), idx, e


def perplexity(counts: Tensor) -> Tensor:
    """exp(entropy) of the code usage frequencies: 1 when one code is used, K when all are used equally."""
    p = counts / counts.sum().clamp(min=1e-12)
    return torch.exp(-(p * torch.log(p.clamp(min=1e-12))).sum())


# ---- gradient estimators for one categorical variable, against enumeration ------------------------------

def exact_gradient(logits: Tensor, f_table: Tensor) -> Tensor:
    """∇_θ E_{y ~ Cat(softmax θ)} f(y) by enumerating the C categories: logits (B, C), f_table (B, C) the
    value at each one-hot -> (B, C). In closed form, p_j (f_j - Σ_c p_c f_c)."""
    theta = logits.detach().requires_grad_(True)
    return torch.autograd.grad((torch.softmax(theta, -1) * f_table.detach()).sum(), theta)[0]


def score_function_grads(logits: Tensor, f, baseline: Tensor, samples: int, gen: torch.Generator) -> Tensor:
    """Score-function (REINFORCE) estimates with a baseline: (f(y) - b) ∇_θ log q(y), y ~ Cat exactly
    (Gumbel-max); ∇_θ log q(y) = onehot(y) - softmax(θ). ``f`` maps one-hots (S, B, C) to (S, B);
    ``baseline`` (B,) must not depend on y. -> (S, B, C), one estimate per sample."""
    p = torch.softmax(logits, -1)
    g = gumbel((samples, *logits.shape), gen, logits.device)
    y = F.one_hot((logits + g).argmax(-1), logits.shape[-1]).to(logits.dtype)
    with torch.no_grad():
        w = f(y) - baseline
    return w.unsqueeze(-1) * (y - p)


def relaxed_grads(logits: Tensor, f, tau: float, hard: bool, samples: int, gen: torch.Generator) -> Tensor:
    """Gumbel-softmax (``hard`` False) or straight-through Gumbel (``hard`` True) estimates ∇_θ f(y),
    y = gumbel_softmax(θ, τ): -> (S, B, C), one estimate per sample (each sample has its own copy of θ)."""
    theta = logits.detach().expand(samples, *logits.shape).clone().requires_grad_(True)
    g = gumbel(theta.shape, gen, logits.device)
    return torch.autograd.grad(f(gumbel_softmax(theta, tau, g, hard)).sum(), theta)[0]  # leaves the decoder's .grad alone


def estimator_stats(grads: Tensor, exact: Tensor) -> dict[str, float]:
    """Bias and variance of estimates (S, B, C) against the exact gradient (B, C), per example: bias² =
    ‖E ĝ − g‖², variance = Σ_c Var ĝ_c (over the S samples), both averaged over the B examples; and the
    relative bias ‖E ĝ − g‖ / ‖g‖; ``floor`` = variance / S, what the measured bias² of an unbiased
    estimator averages to (the noise of the mean of S samples)."""
    mean = grads.mean(0)
    bias2 = (mean - exact).pow(2).sum(-1)
    var = float(grads.var(0).sum(-1).mean())
    return {"bias2": float(bias2.mean()), "variance": var, "floor": var / grads.shape[0],
            "rel_bias": float((bias2.sqrt() / exact.norm(dim=-1).clamp(min=1e-12)).mean())}


class Codebook(nn.Module):
    """K code vectors of dimension D (``weight``), updated by the loss or by exponential moving averages
    of the encoder outputs assigned to each (``ema_count``, ``ema_sum``); ``usage``: a moving average of
    how many encoder outputs pick each code per step, which finds the dead codes."""

    def __init__(self, codes: int, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(codes, dim).uniform_(-1.0 / codes, 1.0 / codes))
        self.register_buffer("ema_count", torch.ones(codes))
        self.register_buffer("ema_sum", self.weight.detach().clone())
        self.register_buffer("usage", torch.zeros(codes))

    @torch.no_grad()
    def track(self, idx: Tensor, decay: float) -> Tensor:
        """Update the usage average with one step's assignments; return the step's counts (K,)."""
        counts = torch.bincount(idx.reshape(-1), minlength=self.weight.shape[0]).to(self.usage.dtype)
        self.usage.mul_(decay).add_(counts, alpha=1 - decay)
        return counts

    @torch.no_grad()
    def ema_update(self, ze: Tensor, idx: Tensor, counts: Tensor, decay: float, eps: float = 1e-5) -> None:
        """e_k = (moving average of the sum of the z_e assigned to k) / (moving average of their count),
        the count Laplace-smoothed so that an unused code does not divide by zero."""
        flat, k = ze.reshape(-1, ze.shape[-1]), self.weight.shape[0]
        sums = torch.zeros_like(self.ema_sum).index_add_(0, idx.reshape(-1), flat)
        self.ema_count.mul_(decay).add_(counts, alpha=1 - decay)
        self.ema_sum.mul_(decay).add_(sums, alpha=1 - decay)
        n = self.ema_count.sum()
        smoothed = (self.ema_count + eps) / (n + k * eps) * n
        self.weight.copy_(self.ema_sum / smoothed.unsqueeze(1))

    @torch.no_grad()
    def restart(self, ze: Tensor, threshold: float, gen: torch.Generator) -> int:
        """Move every code whose usage fell below ``threshold`` onto a random encoder output of the
        batch; returns how many were moved."""
        dead = (self.usage < threshold).nonzero().squeeze(1)
        if dead.numel() == 0:
            return 0
        flat = ze.reshape(-1, ze.shape[-1])
        pick = flat[torch.randint(0, flat.shape[0], (dead.numel(),), generator=gen, device=ze.device)]
        self.weight[dead] = pick
        self.ema_sum[dead], self.ema_count[dead] = pick, 1.0
        self.usage[dead] = 0.0  # picked often enough before the next check, or moved again
        return int(dead.numel())


class CodePrior(nn.Module):
    """An autoregressive prior over the G codes of an image: p(c) = Π_i p(c_i | c_<i), each factor an MLP
    of the earlier codes (one-hot, later positions zeroed) and the position (one-hot)."""

    def __init__(self, positions: int, codes: int, width: int):
        super().__init__()
        self.positions, self.codes = positions, codes
        self.net = mlp(positions * codes + positions, codes, width, depth=2)
        # mask[i]: the inputs position i may see (the codes before it)
        mask = torch.zeros(positions, positions, codes)
        for i in range(positions):
            mask[i, :i] = 1.0
        self.register_buffer("mask", mask.flatten(1))

    def logits(self, codes: Tensor) -> Tensor:
        """codes (B, G) -> logits of every position given the codes before it (B, G, K)."""
        b, g = codes.shape
        onehot = F.one_hot(codes, self.codes).to(self.mask.dtype).flatten(1)  # (B, G*K)
        pos = torch.eye(g, device=codes.device).expand(b, g, g)
        return self.net(torch.cat([onehot.unsqueeze(1) * self.mask, pos], -1))

    def log_prob(self, codes: Tensor) -> Tensor:
        """log p(c) per image: (B, G) -> (B,)."""
        lp = torch.log_softmax(self.logits(codes), -1)
        return lp.gather(-1, codes.unsqueeze(-1)).squeeze(-1).sum(-1)

    @torch.no_grad()
    def sample(self, n: int, gen: torch.Generator) -> Tensor:
        """n code grids (n, G), one position at a time."""
        codes = torch.zeros(n, self.positions, dtype=torch.long, device=self.mask.device)
        for i in range(self.positions):
            p = torch.softmax(self.logits(codes)[:, i], -1)
            codes[:, i] = torch.multinomial(p, 1, generator=gen).squeeze(1)
        return codes
