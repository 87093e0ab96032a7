"""Diffusion and flow matching, the model side: noise schedules, the denoising network, the training
pairs of each objective, labelled mixture samples and the minibatch optimal-transport coupling.

Every model here noises data the same way, x_t = alpha(t) x_0 + sigma(t) eps with eps ~ N(0, I), for t in
[0, 1] (t = 0: data, t = 1: noise); they differ in the schedule and in what the network predicts:

    DDPM ("ddpm"):        variance preserving, alpha^2 + sigma^2 = 1 (linear or cosine); predicts eps
    score model ("score"): variance exploding, alpha = 1, sigma geometric; predicts eps = -sigma * score
    flow matching ("flow"): the straight path alpha = 1 - t, sigma = t; predicts the velocity eps - x_0

``Denoised`` turns any of them into the pair (eps, x0) = (E[eps | x_t], E[x_0 | x_t]) that the samplers use.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn

from dgm.core import nets

MODELS = ("ddpm", "score", "flow")
SCHEDULES = ("linear", "cosine")
ALPHA_END = math.exp(-5.025)  # alpha(1) of DDPM's linear schedule (beta from 1e-4 to 0.02 over 1,000 steps)


# ---- schedules ---------------------------------------------------------------------------------

class Schedule:
    """x_t = alpha(t) x0 + sigma(t) eps. ``levels``: the times (ascending) the network is trained on, or
    None (any t in [0, 1]). Methods take a tensor t and return tensors of its shape."""

    name = ""
    levels: Tensor | None = None

    def alpha(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def sigma(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def dalpha(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def dsigma(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def t_of_lambda(self, lam: Tensor) -> Tensor:
        """The time at which log(alpha^2 / sigma^2) = lam (samplers space their steps evenly in it)."""
        raise NotImplementedError

    def at(self, t: float) -> tuple[float, float]:
        tt = torch.tensor(float(t), dtype=torch.float64)
        return float(self.alpha(tt)), float(self.sigma(tt))

    @property
    def prior_std(self) -> float:
        """Samples start from N(0, sigma(1)^2 I)."""
        return self.at(1.0)[1]

    def log_snr(self, t: Tensor) -> Tensor:
        return 2 * (torch.log(self.alpha(t)) - torch.log(self.sigma(t)))

    def snap(self, t: Tensor) -> Tensor:
        """Times moved to the nearest training level (unchanged without levels)."""
        if self.levels is None:
            return t
        lv = self.levels.to(t.dtype)
        return lv[(t[:, None] - lv[None, :]).abs().argmin(1)]


class VPLinear(Schedule):
    """DDPM's linear schedule in continuous time (Song et al. 2021): alpha^2 = exp(-B(t)),
    B(t) = b0 t + (b1 - b0) t^2 / 2, the limit of Ho et al.'s beta_k from 1e-4 to 0.02 over 1,000 steps (on
    the levels t = k/1000 its alpha^2 is within 7% of their prod(1 - beta))."""

    name = "linear"
    B0, B1 = 0.1, 20.0

    def __init__(self, T: int):
        self.levels = torch.arange(1, T + 1, dtype=torch.float64) / T

    def _B(self, t):
        return self.B0 * t + 0.5 * (self.B1 - self.B0) * t * t

    def alpha(self, t):
        return torch.exp(-0.5 * self._B(t))

    def sigma(self, t):
        return torch.sqrt(-torch.expm1(-self._B(t)))

    def dalpha(self, t):
        return -0.5 * (self.B0 + (self.B1 - self.B0) * t) * self.alpha(t)

    def dsigma(self, t):
        a = self.alpha(t)
        return 0.5 * (self.B0 + (self.B1 - self.B0) * t) * a * a / self.sigma(t)

    def t_of_lambda(self, lam):
        B = torch.nn.functional.softplus(-lam)  # alpha^2 = sigmoid(lam)  =>  B = log(1 + e^-lam)
        a, b = 0.5 * (self.B1 - self.B0), self.B0
        return (-b + torch.sqrt(b * b + 4 * a * B)) / (2 * a)


class VPCosine(Schedule):
    """Nichol & Dhariwal's cosine schedule: alpha = cos(theta), sigma = sin(theta) with theta growing
    linearly in t, up to the linear schedule's alpha(1)."""

    name = "cosine"
    THETA_MAX = math.acos(ALPHA_END)

    def __init__(self, T: int):
        self.levels = torch.arange(1, T + 1, dtype=torch.float64) / T

    def alpha(self, t):
        return torch.cos(self.THETA_MAX * t)

    def sigma(self, t):
        return torch.sin(self.THETA_MAX * t)

    def dalpha(self, t):
        return -self.THETA_MAX * torch.sin(self.THETA_MAX * t)

    def dsigma(self, t):
        return self.THETA_MAX * torch.cos(self.THETA_MAX * t)

    def t_of_lambda(self, lam):
        return torch.atan(torch.exp(-0.5 * lam)) / self.THETA_MAX


class VE(Schedule):
    """Variance exploding (Song & Ermon): alpha = 1, sigma geometric from sigma_min (t = 0) to sigma_max
    (t = 1) over L levels t = i / (L - 1)."""

    name = "ve"

    def __init__(self, L: int, sigma_min: float, sigma_max: float):
        self.levels = torch.linspace(0, 1, L, dtype=torch.float64)
        self.smin, self.log_r = sigma_min, math.log(sigma_max / sigma_min)

    def alpha(self, t):
        return torch.ones_like(t)

    def sigma(self, t):
        return self.smin * torch.exp(self.log_r * t)

    def dalpha(self, t):
        return torch.zeros_like(t)

    def dsigma(self, t):
        return self.log_r * self.sigma(t)

    def t_of_lambda(self, lam):
        return (-0.5 * lam - math.log(self.smin)) / self.log_r


class Straight(Schedule):
    """Flow matching's straight path from data to noise: alpha = 1 - t, sigma = t (continuous t)."""

    name = "straight"

    def alpha(self, t):
        return 1 - t

    def sigma(self, t):
        return t

    def dalpha(self, t):
        return -torch.ones_like(t)

    def dsigma(self, t):
        return torch.ones_like(t)

    def t_of_lambda(self, lam):
        return torch.sigmoid(-0.5 * lam)  # sigma / alpha = t / (1 - t) = exp(-lam / 2)


def make_schedule(model: str, schedule: str = "linear", T: int = 1000, levels: int = 100, sigma_min: float = 0.01,
                  sigma_max: float = 1.0) -> Schedule:
    if model == "ddpm":
        return {"linear": VPLinear, "cosine": VPCosine}[schedule](T)
    if model == "score":
        return VE(levels, sigma_min, sigma_max)
    if model == "flow":
        return Straight()
    raise ValueError(f"unknown model {model!r}; choose one of {', '.join(MODELS)}")


# ---- the network -------------------------------------------------------------------------------

class Net(nn.Module):
    """An MLP on (x, Fourier features of x, sinusoidal features of t, a class embedding): (B, D), (B,), (B,)
    -> (B, D). The x features are sin and cos of ``n_fourier`` random projections of x / ``x_scale`` with
    frequencies of standard deviation ``fourier`` (Tancik et al. 2020: they let an MLP resolve narrow
    modes); 0 turns them off. Class ``n_classes`` is the empty label of classifier-free guidance."""

    def __init__(self, dim: int, width: int = 128, depth: int = 3, n_classes: int = 0, fourier: float = 0.0,
                 x_scale: float = 1.0, n_fourier: int = 32, t_features: int = 32):
        super().__init__()
        self.register_buffer("freqs", torch.exp(torch.linspace(0.0, math.log(1000.0), t_features // 2)))
        self.register_buffer("proj", torch.randn(dim, n_fourier if fourier else 0) * (fourier / x_scale))  # (D, F)
        self.n_classes = n_classes
        self.embed = nn.Embedding(n_classes + 1, 16) if n_classes else None
        d_in = dim + 2 * self.proj.shape[1] + t_features + (16 if n_classes else 0)
        self.mlp = nets.mlp(d_in, dim, width, depth, act="silu")

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        ang = t.to(x.dtype)[:, None] * self.freqs  # (B, T/2)
        parts = [x, torch.sin(ang), torch.cos(ang)]
        if self.proj.shape[1]:
            xp = x @ self.proj  # (B, F)
            parts += [torch.sin(xp), torch.cos(xp)]
        if self.embed is not None:
            if y is None:
                y = torch.full((x.shape[0],), self.n_classes, dtype=torch.long, device=x.device)
            parts.append(self.embed(y))
        return self.mlp(torch.cat(parts, 1))


class Denoised:
    """A denoiser: (x_t (B, D), t: float, y (B,) or None) -> (eps, x0), the network's estimates of
    E[eps | x_t] and E[x_0 | x_t] whatever it predicts (eps or the velocity). With ``clip`` = (lo, hi), x0 is
    clipped to the data's range and eps made consistent with it, as DDPM does for images: near t = 1,
    x0 = (x - sigma eps) / alpha multiplies the network's error by 1 / alpha (about 150)."""

    def __init__(self, net: nn.Module, schedule: Schedule, predicts: str, clip: tuple[float, float] | None = None):
        self.net, self.schedule, self.predicts, self.clip = net, schedule, predicts, clip

    def __call__(self, x: Tensor, t: float, y: Tensor | None = None) -> tuple[Tensor, Tensor]:
        tt = torch.full((x.shape[0],), float(t), dtype=x.dtype, device=x.device)
        out = self.net(x, tt, y)
        if self.predicts == "velocity":  # v = eps - x0 on x = (1 - t) x0 + t eps
            eps, x0 = x + (1 - t) * out, x - t * out
        else:
            a, s = self.schedule.at(t)
            eps, x0 = out, (x - s * out) / a
        if self.clip is None:
            return eps, x0
        a, s = self.schedule.at(t)
        x0 = x0.clamp(*self.clip)
        return ((x - a * x0) / s if s > 0 else eps), x0


# ---- training pairs ----------------------------------------------------------------------------

def noised(schedule: Schedule, x0: Tensor, t: Tensor, eps: Tensor) -> Tensor:
    """x_t = alpha(t) x0 + sigma(t) eps for a batch of times t (B,)."""
    tt = t.double()
    a, s = schedule.alpha(tt).to(x0.dtype)[:, None], schedule.sigma(tt).to(x0.dtype)[:, None]
    return a * x0 + s * eps


OT_BLOCK = 256  # pairs per optimal-transport problem: the Hungarian method costs O(n^3)


def ot_pairing(x0: Tensor, x1: Tensor, block: int = OT_BLOCK) -> Tensor:
    """A permutation of x1 (B, D) that pairs it with x0 (B, D) at the least total squared distance within
    each block of ``block`` consecutive pairs (minibatch optimal transport, Tong et al. 2023; exact, by the
    Hungarian method)."""
    from scipy.optimize import linear_sum_assignment

    a, b = x0.detach().double().cpu().numpy(), x1.detach().double().cpu().numpy()
    perm = np.arange(len(b))
    for i in range(0, len(b), block):
        p, q = a[i:i + block], b[i:i + block]
        cost = (p * p).sum(1)[:, None] + (q * q).sum(1)[None, :] - 2 * p @ q.T  # squared distances
        perm[i:i + block] = i + linear_sum_assignment(cost)[1]
    return torch.from_numpy(perm).to(x1.device)


def sample_labelled(mix, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """n samples of a GaussianMixture2D with their components (the classes of guidance): (n, 2), (n,)."""
    dev = generator.device
    y = torch.multinomial(mix.weights.to(dev), n, replacement=True, generator=generator)  # (n,)
    eps = torch.randn(n, 2, 1, generator=generator, device=dev)
    return mix.means.to(dev)[y] + (mix.scale_tril.to(dev)[y] @ eps).squeeze(-1), y
