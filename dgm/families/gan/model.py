"""The GAN's maths: every loss of the lectures as a formula of the discriminator's outputs, the
gradient penalty, weight clipping, and the particle moves of the composite functional gradient (CFG,
Johnson & Zhang 2018).

The discriminator D is an MLP that outputs one real number per point, ``l = D(x)``. For the
classifier losses (minimax, non-saturating, CFG) ``l`` is a logit and sigmoid(l) is the probability
that x is real; for WGAN and hinge it is a critic value; for least squares a regression score.
Losses are written in terms of the logits (softplus), which is exact and never takes log(0):
log sigmoid(l) = -softplus(-l) and log(1 - sigmoid(l)) = -softplus(l).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LOSSES = ("minimax", "nonsaturating", "wgan", "wgan_gp", "lsgan", "hinge", "cfg")
#: losses whose D output is a logit, so that sigmoid(D(x)) is a probability of "real"
PROB_LOSSES = ("minimax", "nonsaturating", "cfg")


def d_loss(loss: str, real: Tensor, fake: Tensor) -> Tensor:
    """The discriminator's loss (to minimise) from its outputs on real (B,) and generated (B,) points.

    minimax / nonsaturating / cfg: -E log D(x) - E log(1 - D(G(z))), D = sigmoid(l) (cross entropy)
    wgan / wgan_gp:               E l(G(z)) - E l(x)                 (minus the critic's gap)
    lsgan:                        1/2 E (l(x) - 1)^2 + 1/2 E l(G(z))^2
    hinge:                        E max(0, 1 - l(x)) + E max(0, 1 + l(G(z)))"""
    if loss in PROB_LOSSES:
        return F.softplus(-real).mean() + F.softplus(fake).mean()
    if loss in ("wgan", "wgan_gp"):
        return fake.mean() - real.mean()
    if loss == "lsgan":
        return 0.5 * (real - 1).pow(2).mean() + 0.5 * fake.pow(2).mean()
    if loss == "hinge":
        return F.relu(1 - real).mean() + F.relu(1 + fake).mean()
    raise ValueError(f"unknown loss {loss!r}")


def g_loss_per_sample(loss: str, fake: Tensor) -> Tensor:
    """The generator's loss for each generated point (B,), from D's outputs on them.

    minimax:       log(1 - D(G(z)))      (saturating: flat where D(G(z)) is near 0)
    nonsaturating: -log D(G(z))          (the log D trick)
    wgan, hinge:   -l(G(z))
    lsgan:         1/2 (l(G(z)) - 1)^2
    cfg:           -l(G(z)): the direction the particles move (the generator itself is fitted by regression)"""
    if loss == "minimax":
        return -F.softplus(fake)
    if loss == "nonsaturating":
        return F.softplus(-fake)
    if loss in ("wgan", "wgan_gp", "hinge", "cfg"):
        return -fake
    if loss == "lsgan":
        return 0.5 * (fake - 1).pow(2)
    raise ValueError(f"unknown loss {loss!r}")


def g_loss(loss: str, fake: Tensor) -> Tensor:
    return g_loss_per_sample(loss, fake).mean()


def gradient_penalty(D: nn.Module, real: Tensor, fake: Tensor, eps: Tensor, create_graph: bool = True) -> Tensor:
    """WGAN-GP: E (||grad_x D(x_hat)|| - 1)^2 at x_hat = eps x + (1 - eps) G(z), eps (B, 1) in [0, 1]."""
    x_hat = (eps * real + (1 - eps) * fake).requires_grad_(True)  # (B, 2)
    out = D(x_hat).sum()
    (grad,) = torch.autograd.grad(out, x_hat, create_graph=create_graph)
    return (grad.norm(dim=1) - 1).pow(2).mean()


@torch.no_grad()
def clip_(module: nn.Module, c: float) -> None:
    """WGAN: clamp every parameter of ``module`` to [-c, c], in place."""
    for p in module.parameters():
        p.clamp_(-c, c)


def grad_d(D: nn.Module, x: Tensor) -> Tensor:
    """grad_x of D summed over points, i.e. each point's own gradient (N, 2)."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(D(x).sum(), x)
    return g


def cfg_move(D: nn.Module, x: Tensor, eta: float, T: int, trajectory: bool = False):
    """CFG particle steps: x <- x + eta grad D(x), T times (D is the logit, about log p*(x)/p_gen(x)).
    Returns the moved points (N, 2), or every position (T+1, N, 2) with ``trajectory``."""
    path = [x.detach()]
    for _ in range(int(T)):
        path.append(path[-1] + eta * grad_d(D, path[-1]))
    return torch.stack(path) if trajectory else path[-1]



def sample_prior(prior: str, n: int, dim: int, generator: torch.Generator, device) -> Tensor:
    """n latent codes: N(0, I) or uniform on [-1, 1]^dim."""
    if prior == "uniform":
        return torch.rand(n, dim, generator=generator, device=device) * 2 - 1
    return torch.randn(n, dim, generator=generator, device=device)
