"""The divergences between the target p and the batched model q (``QBatch``: Q mixtures of K Gaussians,
one row per fitted q).

Every divergence but MMD is an integral of a pointwise F(p(x), q(x)) >= 0 (``integrand``), computed by the
midpoint rule on a quadrature grid (``targets.QuadGrid``: regular cells, cut finer near narrow modes) from
the exact densities at the nodes: ``divergence``. The grid is part of the result; the page shows beside
each value the change from halving its cells, and no value whose estimated error exceeds 1%.

MMD needs no quadrature: with Gaussian components and a Gaussian kernel every term is a Gaussian integral
(``mixture_kernel_mean``), exact.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dgm.families.divergences.targets import gauss_log_prob, mixture_moments


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


def gaussian_kl(m0: Tensor, c0: Tensor, m1: Tensor, c1: Tensor) -> float:
    """Closed-form KL(N(m0, c0) || N(m1, c1))."""
    m0, c0, m1, c1 = (t.double() for t in (m0, c0, m1, c1))
    d = m0.shape[0]
    inv = torch.linalg.inv(c1)
    diff = m1 - m0
    return float(0.5 * (torch.trace(inv @ c0) + diff @ inv @ diff - d + torch.logdet(c1) - torch.logdet(c0)))


# ---- the integrands ------------------------------------------------------------------------------
#
# Each divergence is ∫ F(p, q) dx with F >= 0 pointwise (the terms -p + q and the like integrate to 0 and
# make F vanish where p = q, so a value near 0 is not a difference of large numbers). Written in the log
# densities lp, lq with d = lp - lq, without overflow where one density is far below the other.

SMALL = 0.5  # |d| below which the series-safe forms are used


def _phi(d: Tensor) -> Tensor:
    """e^d (d - 1) + 1 >= 0 (~ d^2 / 2 near 0), for |d| <= SMALL."""
    return d * torch.exp(d) - torch.expm1(d)


def _kl_integrand(lp: Tensor, lq: Tensor) -> Tensor:
    """p log(p / q) - p + q."""
    d = lp - lq
    near = d.abs() < SMALL
    small = torch.exp(lq) * _phi(d.clamp(-SMALL, SMALL))
    large = torch.exp(lp) * (d - 1) + torch.exp(lq)
    return torch.where(near, small, large)


def integrand(name: str, lp: Tensor, lq: Tensor, alpha: float = 0.5) -> Tensor:
    """F(p(x), q(x)) >= 0 of the divergence ``name`` at the points where lp, lq were evaluated."""
    if name == "forward_kl" or (name == "alpha" and abs(alpha - 1) < 1e-6):
        return _kl_integrand(lp, lq)
    if name == "reverse_kl" or (name == "alpha" and abs(alpha) < 1e-6):
        return _kl_integrand(lq, lp)
    d = lp - lq
    near = d.abs() < SMALL
    dc = d.clamp(-SMALL, SMALL)  # the near forms see only small d (no overflow in the branch not taken)
    if name == "js":  # (p log(2p / (p + q)) + q log(2q / (p + q))) / 2
        ln2 = math.log(2.0)
        return 0.5 * (torch.exp(lp) * (ln2 - F.softplus(-d)) + torch.exp(lq) * (ln2 - F.softplus(d))).clamp_min(0)
    if name == "hellinger":  # (sqrt p - sqrt q)^2 / 2
        return 0.5 * torch.where(near, torch.exp(lq) * torch.expm1(0.5 * dc).pow(2),
                                 (torch.exp(0.5 * lp) - torch.exp(0.5 * lq)).pow(2))
    if name == "tv":  # |p - q| / 2
        return 0.5 * torch.where(near, torch.exp(lq) * torch.expm1(dc).abs(), (torch.exp(lp) - torch.exp(lq)).abs())
    if name == "alpha":  # (a p + (1 - a) q - p^a q^(1 - a)) / (a (1 - a))
        a = alpha
        small = torch.exp(lq) * (a * torch.expm1(dc) - torch.expm1(a * dc))
        # outside 0 < a < 1 the last term can overflow where one density is far below the other: capped
        # at e^60 (the value is then astronomically large either way, and its gradient stays finite)
        large = a * torch.exp(lp) + (1 - a) * torch.exp(lq) - torch.exp((a * lp + (1 - a) * lq).clamp_max(60.0))
        return torch.where(near, small, large) / (a * (1 - a))
    raise ValueError(f"no integrand for {name!r}")


def divergence(log_vol: Tensor, lp: Tensor, lq: Tensor, name: str, alpha: float = 0.5) -> Tensor:
    """The divergence ``name`` by the midpoint rule: sum over nodes of cell volume times F. log_vol (N,),
    lp (N,) or (..., N), lq (..., N) log densities at the nodes -> (...)."""
    return (torch.exp(log_vol) * integrand(name, lp, lq, alpha)).sum(-1)


def alpha_finite(p_covs: Tensor, q_covs: Tensor, alpha: float) -> Tensor:
    """Whether the Amari divergence between Gaussian mixtures p (M, D, D) and each q (Q, K, D, D) is finite.
    For 0 <= alpha <= 1 it always is. For alpha > 1 the integrand p^a q^(1-a) decays in every direction when,
    for every component k of p, some component j of q has a P_k + (1 - a) Q_j positive definite (P, Q the
    precision matrices); for alpha < 0, the same with p and q swapped. Exact for a one-component q and
    alpha > 1; the page marks the others as possibly infinite. -> (Q,) bool."""
    if 0 <= alpha <= 1:
        return torch.ones(q_covs.shape[0], dtype=torch.bool, device=q_covs.device)
    pp = torch.linalg.inv(p_covs.double())[None, :, None]  # (1, M, 1, D, D)
    qq = torch.linalg.inv(q_covs.double())[:, None, :]  # (Q, 1, K, D, D)
    ok = torch.linalg.eigvalsh(alpha * pp + (1 - alpha) * qq).min(-1).values > 0  # (Q, M, K)
    return ok.any(2).all(1) if alpha > 1 else ok.any(1).all(1)


# ---- MMD in closed form --------------------------------------------------------------------------

def mixture_kernel_mean(loc_a: Tensor, cov_a: Tensor, lw_a: Tensor, loc_b: Tensor, cov_b: Tensor, lw_b: Tensor,
                        bandwidth: float) -> Tensor:
    """E k(x, y) for x ~ mixture a, y ~ mixture b, k(x, y) = exp(-|x - y|^2 / (2 h^2)): every pair of
    components gives h^D / sqrt(det S) exp(-diff^T S^-1 diff / 2) with S = C_a + C_b + h^2 I.
    loc (..., A, D), cov (..., A, D, D), lw (..., A) log weights; b likewise -> (...)."""
    d = loc_a.shape[-1]
    s = cov_a[..., :, None, :, :] + cov_b[..., None, :, :, :] + bandwidth**2 * torch.eye(d, dtype=cov_a.dtype,
                                                                                          device=cov_a.device)
    diff = loc_a[..., :, None, :] - loc_b[..., None, :, :]  # (..., A, B, D)
    if d == 1:  # scalars: no matrix solve
        v = s[..., 0, 0]
        log_k = math.log(bandwidth) - 0.5 * torch.log(v) - 0.5 * diff[..., 0] ** 2 / v
        return torch.exp(torch.logsumexp((log_k + lw_a[..., :, None] + lw_b[..., None, :]).flatten(-2), -1))
    chol = torch.linalg.cholesky(s)
    sol = torch.cholesky_solve(diff[..., None], chol)[..., 0]
    log_det = 2 * torch.log(chol.diagonal(dim1=-2, dim2=-1)).sum(-1)
    log_k = d * math.log(bandwidth) - 0.5 * log_det - 0.5 * (diff * sol).sum(-1)
    return torch.exp(torch.logsumexp((log_k + lw_a[..., :, None] + lw_b[..., None, :]).flatten(-2), -1))
