"""Samplers and the probability-flow likelihood, for any denoiser (x, t, y) -> (eps, x0) and schedule.

    x, nfe, path = sample(denoise, schedule, "heun", 50, n=2500, generator=g)
    log_p = log_likelihood(denoise, schedule, x_data, steps=40)

Samplers walk a grid of times from t = 1 (noise, x ~ N(0, sigma(1)^2 I)) to clean data; ``nfe`` is the
number of network evaluations allowed, and the one actually used is returned:

- ``ancestral``: DDPM's sampler, a draw from the Gaussian q(x_s | x_t, x0) with x0 the network's estimate;
- ``ddim``: the same without noise (DDIM, eta = 0): x_s = alpha_s x0 + sigma_s eps;
- ``euler`` / ``heun``: the probability-flow ODE dx/dt = u(x, t) = alpha'(t) x0 + sigma'(t) eps, whose
  solution has the marginals p_t of the forward process, by Euler's or Heun's method in t;
- ``langevin``: annealed Langevin dynamics (Song & Ermon 2019), a few steps
  x <- x + r sigma_t^2 score + sqrt(2 r) sigma_t z at each of a decreasing sequence of noise levels.

Discrete models (DDPM's T steps, the score model's L levels) are evaluated on their levels only; the grid
is spaced evenly in log(alpha^2 / sigma^2) and moved to the nearest levels; flow matching uses an even grid
in t. The last step goes to the network's estimate of x0 (for DDIM, ancestral sampling and flow matching's
Euler step that is their own last step; near t = 0 the ODE is too stiff for Heun's corrector).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from dgm.families.diffusion.model import Schedule

SAMPLERS = ("ancestral", "ddim", "euler", "heun", "langevin")
Denoise = Callable[..., tuple[Tensor, Tensor]]


def guided(denoise: Denoise, y: Tensor | None, scale: float, null: int) -> Callable[[Tensor, float], tuple]:
    """(x, t) -> (eps, x0) under classifier-free guidance: eps_u + scale (eps_c - eps_u) for labels y (and
    the same for x0); scale 1 is the conditional model, 0 the unconditional one. Both in one batch."""
    if y is None or scale == 0:
        return lambda x, t: denoise(x, t, None if y is None else torch.full_like(y, null))
    if scale == 1:
        return lambda x, t: denoise(x, t, y)

    def f(x: Tensor, t: float) -> tuple[Tensor, Tensor]:
        eps, x0 = denoise(torch.cat([x, x]), t, torch.cat([y, torch.full_like(y, null)]))
        n = x.shape[0]
        return eps[n:] + scale * (eps[:n] - eps[n:]), x0[n:] + scale * (x0[:n] - x0[n:])

    return f


def grid(schedule: Schedule, n: int) -> list[float]:
    """n times from t = 1 down, n >= 1, the network's estimate of x0 at the last one giving the sample: for
    flow matching 1, (n-1)/n, ..., 1/n; for discrete models n distinct levels (all of them when n exceeds
    their number), the lowest included from n = 2 on."""
    if schedule.levels is None:
        return [1 - i / n for i in range(n)]
    lv = schedule.levels
    L = len(lv)
    n = min(n, L)
    if n == 1:
        return [float(lv[-1])]
    # even in log(alpha^2 / sigma^2), as level indices, kept distinct (from the clean end up)
    lam = torch.linspace(float(schedule.log_snr(lv[:1])), float(schedule.log_snr(lv[-1:])), n, dtype=torch.float64)
    pos = (schedule.t_of_lambda(lam) - lv[0]) / (lv[-1] - lv[0]) * (L - 1)
    idx = [0]
    for j in range(1, n):
        idx.append(min(max(int(round(float(pos[j]))), idx[-1] + 1), L - n + j))
    return [float(lv[i]) for i in reversed(idx)]


def steps_for(method: str, nfe: int, schedule: Schedule, langevin_steps: int = 2) -> int:
    """Grid steps that fit in ``nfe`` network evaluations."""
    nfe = max(1, int(nfe))
    if method == "heun":
        return max(1, (nfe + 1) // 2)
    if method == "langevin":
        return max(1, (nfe - 1) // max(1, langevin_steps))
    return nfe


@torch.no_grad()
def sample(denoise: Callable[[Tensor, float], tuple], schedule: Schedule, method: str, nfe: int, n: int, dim: int,
           generator: torch.Generator, *, langevin_steps: int = 2, langevin_step: float = 0.5,
           keep: int = 0, x1: Tensor | None = None) -> tuple[Tensor, int, list[Tensor]]:
    """n samples (n, dim) with ``method`` in about ``nfe`` evaluations of ``denoise`` (x, t) -> (eps, x0).
    Returns (samples, evaluations used, the first ``keep`` samples after every step: a list of (keep, dim))."""
    if method not in SAMPLERS:
        raise ValueError(f"unknown sampler {method!r}; choose one of {', '.join(SAMPLERS)}")
    dev = generator.device
    k = steps_for(method, nfe, schedule, langevin_steps)
    ts = grid(schedule, k)
    x = x1 if x1 is not None else schedule.prior_std * torch.randn(n, dim, generator=generator, device=dev)
    path = [x[:keep].clone()] if keep else []
    evals = 0

    at = schedule.at
    if method == "langevin":
        levels = grid(schedule, k + 1)[1:]  # t = 1 left out: x ~ N(0, sigma(1)^2 I) is p_1 already
        for t in levels:
            _, s = at(t)
            for _ in range(max(1, langevin_steps)):
                eps, _ = denoise(x, t)
                evals += 1
                z = torch.randn(x.shape, generator=generator, device=dev)
                x = x - langevin_step * s * eps + math.sqrt(2 * langevin_step) * s * z
            if keep:
                path.append(x[:keep].clone())
        _, x = denoise(x, levels[-1])
        evals += 1
        if keep:
            path.append(x[:keep].clone())
        return x, evals, path

    for i, t in enumerate(ts):
        eps, x0 = denoise(x, t)
        evals += 1
        if i == len(ts) - 1:  # the last step: to the estimate of x0
            x = x0
            if keep:
                path.append(x[:keep].clone())
            break
        s = ts[i + 1]
        a_t, s_t = at(t)
        a_s, s_s = at(s)
        if method == "ddim":
            x = a_s * x0 + s_s * eps
        elif method == "ancestral":  # q(x_s | x_t, x0) for x_t = alpha_t x0 + sigma_t eps
            a_ts = a_t / a_s
            var_ts = s_t * s_t - a_ts * a_ts * s_s * s_s
            mean = (a_ts * s_s * s_s / (s_t * s_t)) * x + (a_s * var_ts / (s_t * s_t)) * x0
            std = math.sqrt(max(var_ts, 0.0) * s_s * s_s / (s_t * s_t))
            x = mean + std * torch.randn(x.shape, generator=generator, device=dev)
        else:
            u = velocity(schedule, t, eps, x0)
            x_next = x + (s - t) * u
            if method == "heun":
                eps2, x02 = denoise(x_next, s)
                evals += 1
                x_next = x + (s - t) * 0.5 * (u + velocity(schedule, s, eps2, x02))
            x = x_next
        if keep:
            path.append(x[:keep].clone())
    return x, evals, path


def velocity(schedule: Schedule, t: float, eps: Tensor, x0: Tensor) -> Tensor:
    """The probability-flow velocity u = alpha'(t) x0 + sigma'(t) eps."""
    tt = torch.tensor(t, dtype=torch.float64)
    return float(schedule.dalpha(tt)) * x0 + float(schedule.dsigma(tt)) * eps


def log_likelihood(denoise: Callable[[Tensor, float], tuple], schedule: Schedule, x: Tensor,
                   steps: int = 40) -> Tensor:
    """log p(x) (N,) of the model's probability-flow ODE: x, scaled to the model's first time t0 (x_t0 =
    alpha(t0) x), is carried to t = 1 by Heun's method while the exact divergence of u (D backward passes)
    is integrated along; log p(x) = log N(x_1; 0, sigma(1)^2 I) + integral of div u dt + D log alpha(t0)."""
    ts = grid(schedule, steps)[::-1]  # t0 .. 1
    if schedule.levels is None:
        ts = [0.0] + ts
    a0, _ = schedule.at(ts[0])
    d = x.shape[1]
    z = (a0 * x).detach()
    integral = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)

    def field(z: Tensor, t: float) -> tuple[Tensor, Tensor]:
        with torch.enable_grad():
            zz = z.detach().requires_grad_(True)
            eps, x0 = denoise(zz, t)
            u = velocity(schedule, t, eps, x0)
            div = sum(torch.autograd.grad(u[:, i].sum(), zz, retain_graph=i < d - 1)[0][:, i] for i in range(d))
        return u.detach(), div.detach()

    u, div = field(z, ts[0])
    for t, s in zip(ts[:-1], ts[1:]):
        h = s - t
        z_pred = z + h * u
        u2, div2 = field(z_pred, s)
        z = z + 0.5 * h * (u + u2)
        integral = integral + 0.5 * h * (div + div2)
        u, div = field(z, s) if s != ts[-1] else (u2, div2)
    std = schedule.prior_std
    log_prior = -0.5 * (z * z).sum(1) / std**2 - d * math.log(std) - 0.5 * d * math.log(2 * math.pi)
    return log_prior + integral + d * math.log(a0)
