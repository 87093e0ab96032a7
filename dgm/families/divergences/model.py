"""Divergences between distributions given by their cell probabilities on a grid, and the batched
model q (``QBatch``: Q mixtures of K Gaussians, one row per fitted q).

Everything is exact up to quadrature: p and every q are evaluated at the cell centres of a regular
grid over a box (the *quadrature box*, the plotting box widened by ``pad``), turned into cell
probabilities (each renormalised on the grid) and compared there. So the divergences are those
between two discrete distributions on the same cells; with a fine grid and a wide box they equal
the continuous ones.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from dgm.families.divergences.targets import QuadGrid, gauss_log_prob, mixture_moments


class QBatch(nn.Module):
    """Q mixtures of K Gaussians in D dimensions, one row per fitted q.

    Each component is N(loc, L L^T) with L = [[a, 0], [c, b]], a = exp(log_scale[0]),
    b = exp(log_scale[1]) and c = ``off`` (kept at 0 for the diagonal family). K = 1 is a Gaussian."""

    def __init__(self, loc: Tensor, log_scale: Tensor, full: bool = True):
        super().__init__()
        q, k, d = loc.shape
        self.full = bool(full and d == 2)
        self.loc = nn.Parameter(loc.clone())  # (Q, K, D)
        self.log_scale = nn.Parameter(log_scale.clone())  # (Q, K, D)
        self.off = nn.Parameter(torch.zeros(q, k, device=loc.device, dtype=loc.dtype), requires_grad=self.full)
        self.logits = nn.Parameter(torch.zeros(q, k, device=loc.device, dtype=loc.dtype), requires_grad=k > 1)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.loc.shape)

    def tril(self) -> Tensor:
        """(Q, K, D, D)"""
        q, k, d = self.shape
        s = self.log_scale.exp()
        if d == 1:
            return s[..., None]
        zero = torch.zeros_like(self.off)
        off = self.off if self.full else zero
        row0 = torch.stack([s[..., 0], zero], -1)
        row1 = torch.stack([off, s[..., 1]], -1)
        return torch.stack([row0, row1], -2)

    def log_weights(self) -> Tensor:
        return torch.log_softmax(self.logits, -1)  # (Q, K)

    def log_prob(self, x: Tensor, rows: slice | None = None) -> Tensor:
        """x (N, D) or (Q, N, D) -> (Q, N); ``rows`` restricts to some of the q's."""
        rows = rows or slice(None)
        if x.dim() == 2:
            x = x[None]
        return gauss_log_prob(x.to(self.loc.dtype), self.loc[rows], self.tril()[rows], self.log_weights()[rows])

    def rsample(self, m: int, generator: torch.Generator, rows: slice | None = None) -> tuple[Tensor, Tensor]:
        """m reparameterised draws from every component: points (Q, K*m, D) and their weights (Q, K*m)
        (the component weight over m), so sums against them are unbiased expectations under q."""
        rows = rows or slice(None)
        loc, tril, lw = self.loc[rows], self.tril()[rows], self.log_weights()[rows]
        q, k, d = loc.shape
        eps = torch.randn(q, k, m, d, 1, generator=generator, device=loc.device, dtype=loc.dtype)
        x = loc[:, :, None, :] + (tril[:, :, None] @ eps).squeeze(-1)  # (Q, K, m, D)
        w = (lw.exp() / m)[..., None].expand(q, k, m)
        return x.reshape(q, k * m, d), w.reshape(q, k * m)

    @torch.no_grad()
    def moments(self) -> tuple[Tensor, Tensor]:
        """Mean (Q, D) and covariance (Q, D, D) of each q."""
        t = self.tril().double()
        return mixture_moments(self.loc.double(), t @ t.transpose(-1, -2), self.log_weights().double().exp())


# ---- divergences between cell probabilities ------------------------------------------------------
#
# Every function takes log cell probabilities lp, lq of shape (..., N), each normalised over the last
# axis (log_softmax of the log density at the cell centres), and returns (...). They are >= 0 and 0
# for p = q; JS <= log 2, Hellinger^2 <= 1, TV <= 1.

def kl(lp: Tensor, lq: Tensor) -> Tensor:
    """KL(p || q) = sum p log(p / q)."""
    return (lp.exp() * (lp - lq)).sum(-1)


def js(lp: Tensor, lq: Tensor) -> Tensor:
    """JS = (KL(p || m) + KL(q || m)) / 2 with m = (p + q) / 2."""
    lm = torch.logaddexp(lp, lq) - math.log(2.0)
    return 0.5 * (kl(lp, lm) + kl(lq, lm))


def amari(lp: Tensor, lq: Tensor, alpha: float) -> Tensor:
    """Amari alpha-divergence (1 - sum p^a q^(1-a)) / (a (1 - a)): KL(q||p) at a = 0, KL(p||q) at a = 1."""
    if abs(alpha) < 1e-6:
        return kl(lq, lp)
    if abs(alpha - 1) < 1e-6:
        return kl(lp, lq)
    lse = torch.logsumexp(alpha * lp + (1 - alpha) * lq, -1)
    return -torch.expm1(lse) / (alpha * (1 - alpha))


def hellinger2(lp: Tensor, lq: Tensor) -> Tensor:
    """Squared Hellinger distance 1 - sum sqrt(p q) (the Amari divergence at alpha = 1/2, over 4)."""
    return -torch.expm1(torch.logsumexp(0.5 * (lp + lq), -1))


def tv(lp: Tensor, lq: Tensor) -> Tensor:
    """Total variation sum |p - q| / 2."""
    return 0.5 * (lp.exp() - lq.exp()).abs().sum(-1)


def kernel_matrix(xs: Tensor, bandwidth: float) -> Tensor:
    d = xs[:, None] - xs[None, :]
    return torch.exp(-0.5 * (d / bandwidth) ** 2)


def grid_mmd2(lp: Tensor, lq: Tensor, grid: QuadGrid, bandwidth: float) -> Tensor:
    """Exact MMD^2 between the two cell distributions with the kernel exp(-|x - y|^2 / (2 bw^2)):
    (p - q)^T K (p - q). The kernel is a product over the axes, so in 2D this is tr(D^T Ky D Kx)
    with D the (R, R) image of p - q: two small matrix products instead of an N x N matrix."""
    diff = lp.exp() - lq.exp()  # (..., N)
    ks = [kernel_matrix(a.to(diff.dtype), bandwidth) for a in grid.axes]
    if grid.dim == 1:
        return (diff * (diff @ ks[0])).sum(-1)
    r = grid.shape[0]
    img = diff.reshape(*diff.shape[:-1], r, r)  # rows y, columns x
    return (img * (ks[1] @ img @ ks[0])).sum((-1, -2)).clamp_min(0.0)


def sample_mmd2(x: Tensor, y: Tensor, wy: Tensor, bandwidth: float, sxx: Tensor | None = None) -> Tensor:
    """Unbiased MMD^2 between samples x (Q, n, D) of p (equal weights) and weighted draws y (Q, m, D)
    of q with weights wy (Q, m) summing to 1 (diagonal terms dropped and renormalised).
    ``sxx``: E k(x, x') under p when it is known exactly (it does not depend on q)."""
    def k(a, b):
        return torch.exp(-0.5 * torch.cdist(a, b).pow(2) / bandwidth**2)

    n = x.shape[1]
    if sxx is None:
        kxx = k(x, x)
        sxx = (kxx.sum((-1, -2)) - kxx.diagonal(dim1=-2, dim2=-1).sum(-1)) / (n * (n - 1))
    kyy = k(y, y)
    ww = wy[..., :, None] * wy[..., None, :]
    syy = ((ww * kyy).sum((-1, -2)) - (ww.diagonal(dim1=-2, dim2=-1) * kyy.diagonal(dim1=-2, dim2=-1)).sum(-1))
    syy = syy / (1 - (wy * wy).sum(-1))
    sxy = (k(x, y) * wy[..., None, :]).sum((-1, -2)) / n
    return sxx + syy - 2 * sxy


def all_divergences(lp: Tensor, lq: Tensor, grid: QuadGrid, alpha: float, bandwidth: float) -> dict[str, Tensor]:
    """Every divergence (name -> (...)) between p and q given as log cell probabilities."""
    return {
        "forward_kl": kl(lp, lq),
        "reverse_kl": kl(lq, lp),
        "js": js(lp, lq),
        "alpha": amari(lp, lq, alpha),
        "hellinger": hellinger2(lp, lq),
        "tv": tv(lp, lq),
        "mmd": grid_mmd2(lp, lq, grid, bandwidth),
    }


def gaussian_kl(m0: Tensor, c0: Tensor, m1: Tensor, c1: Tensor) -> float:
    """Closed-form KL(N(m0, c0) || N(m1, c1))."""
    m0, c0, m1, c1 = (t.double() for t in (m0, c0, m1, c1))
    d = m0.shape[0]
    inv = torch.linalg.inv(c1)
    diff = m1 - m0
    return float(0.5 * (torch.trace(inv @ c0) + diff @ inv @ diff - d + torch.logdet(c1) - torch.logdet(c0)))

